"""Fixes of what a new user ran into: saved preprocessing, run directories, clear errors."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN
from exactdgn.cli import build_parser, main
from exactdgn.datasets import get_dataset
from exactdgn.io import ModelFileError, read_npz, write_npz_atomic

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    # EM from the PCA start (after one iteration a random start can win on likelihood with
    # prior mass mapped far from the data, which the sample-mean check below would flag)
    args = ["--method", "em", "--init", "pca", "--max-iter", "1", "--no-progress"]
    assert main(["fit", "digits:3", *args, "--out", str(out)]) == 0
    return out


def test_saved_model_carries_its_standardization(run, tmp_path):
    X = get_dataset("digits:3")
    m_dir, m_file = ExactDGN.load(run), ExactDGN.load(run / "model.npz")
    assert m_dir.preprocessing_ is not None
    raw = m_file.score_samples(X)
    assert np.array_equal(m_dir.score_samples(X), raw)
    # data units: the standardized model's density plus the map's Jacobian
    pre = m_file.preprocessing_
    bare = ExactDGN.from_decoder(m_file.decoder_, m_file.noise_std_)
    ref = bare.score_samples(pre.transform(X)) + pre.log_abs_det_jacobian()
    assert np.allclose(raw, ref, rtol=1e-12)
    assert raw.mean() > -1e3  # not the ~ -1e9 of raw data fed to a standardized decoder
    S = m_file.sample(200, random_state=0)  # samples in data units
    assert abs(S.mean() - X.mean()) < 2.0
    # a model saved without a standardization stays without, whatever config.json says
    d = tmp_path / "old"
    d.mkdir()
    (d / "config.json").write_text((run / "config.json").read_text())
    bare.save(d / "model.npz")
    assert getattr(ExactDGN.load(d), "preprocessing_", None) is None
    assert np.array_equal(ExactDGN.load(d).score_samples(X), bare.score_samples(X))
    # a file from before models carried it falls back to the run's config.json; a corrupt
    # one is named
    arrays, meta = read_npz(d / "model.npz")
    del meta["preprocessing"]  # the format of those files
    write_npz_atomic(d / "model.npz", arrays, meta)
    assert np.allclose(ExactDGN.load(d).score_samples(X), raw, rtol=1e-12)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"config\.json"):
        ExactDGN.load(d)
    with pytest.raises(ModelFileError, match=r"no model\.npz"):
        ExactDGN.load(tmp_path)


def test_empty_and_string_input_get_clear_errors():
    model = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=0), 0.2)
    for f in (model.score_samples, ExactDGN(progress=False).fit):
        with pytest.raises(ValueError, match="no rows"):
            f(np.zeros((0, 3)))
        with pytest.raises(ValueError, match="numeric"):
            f(np.array([["a", "b", "c"]]))
        with pytest.raises(ValueError, match="complex"):  # not the real part in silence
            f(np.ones((4, 3)) + 1j)


def test_npz_key_from_the_cli(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((60, 2))
    np.savez(tmp_path / "d.npz", train=X, other=X[:5])
    out = str(tmp_path / "r")
    assert main(["fit", str(tmp_path / "d.npz"), "--max-iter", "1", "--out", out]) == 2
    assert "key" in capsys.readouterr().err
    args = ["fit", str(tmp_path / "d.npz"), "--key", "train", "--max-iter", "1", "--out", out]
    assert main([*args, "--no-progress"]) == 0
    assert main(["score", out, str(tmp_path / "d.npz"), "--key", "train"]) == 0


def test_partition_plot_d1_shows_varying_outputs_with_a_label(tmp_path):
    import matplotlib.pyplot as plt

    from exactdgn import partition
    from exactdgn.plotting import plot_partition

    dec = Decoder.random([1, 6, 5], seed=0)
    dec.weights[-1][:3] = 0.0  # outputs 0-2 are flat
    _, ax = plt.subplots()
    plot_partition(partition(dec), ax=ax, outputs=2)
    labels = [line.get_label() for line in ax.get_lines() if line.get_label().startswith("g_")]
    assert labels == ["g_3(z)", "g_4(z)"]
    assert ax.get_ylabel()
    plt.close("all")


def test_fit_help_shows_defaults():
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    text = text[text.index("options:") :]
    for opt in ("--method", "--latent-dim", "--tol", "--n-init", "--init"):
        line = text[text.index(f"  {opt} ") :]
        nxt = line.find("\n  --", 1)
        assert "default:" in line[: nxt if nxt > 0 else 400], opt
    assert "output directory (required)" in text and "(default: None)" not in text


def test_fitted_attributes_as_documented(tmp_path):
    """``n_features_in_`` (scikit-learn) and ``preprocessing_`` (documented as "Standardizer
    or None") exist on every fitted model: fitted, built from a decoder, or loaded."""
    model = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=0), 0.2)
    X = model.sample(40, random_state=0)
    fitted = ExactDGN(hidden_sizes=(3,), max_iter=1, progress=False, random_state=0)
    with pytest.warns(Warning):
        fitted.fit(X)
    model.save(tmp_path / "m.npz")
    for m in (model, fitted, ExactDGN.load(tmp_path / "m.npz")):
        assert m.n_features_in_ == 3
        assert m.preprocessing_ is None


def test_score_command_takes_nan_as_missing(run, tmp_path, capsys):
    """``exactdgn score`` reads NaN as missing, as ``score_samples`` does: log p(x_obs), and in
    data units with the Jacobian of each row's observed coordinates."""
    X = get_dataset("digits:3")[:12].copy()
    X[::2, :20] = np.nan
    np.save(tmp_path / "holes.npy", X)
    csv = tmp_path / "s.csv"
    assert main(["score", str(run), str(tmp_path / "holes.npy"), "--out", str(csv)]) == 0
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    model = ExactDGN.load(run)
    assert np.allclose(table[:, 2], model.score_samples(X), rtol=1e-12)
    pre = model.preprocessing_
    bare = ExactDGN.from_decoder(model.decoder_, model.noise_std_)
    assert np.allclose(table[:, 1], bare.score_samples((X - pre.mean_) / pre.scale_), rtol=1e-12)
    assert "in data units" in capsys.readouterr().out


def test_fit_command_trains_on_data_with_nan(tmp_path, capsys):
    """``exactdgn fit`` on a file with NaN: exact training on log p(x_obs), standardized on the
    observed values; the results' data-unit log-likelihoods are the saved model's own
    ``score_samples`` of the raw rows (each row's Jacobian over its observed values). The VAE
    methods, which need complete rows, are refused with what to use instead."""
    rng = np.random.default_rng(0)
    X = get_dataset("wave", n_samples=300, random_state=0) * np.array([3.0, 0.5]) + 4.0
    X = np.column_stack([X, X[:, 0] - X[:, 1]])
    X[rng.random(X.shape) < 0.2] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 1.0
    np.save(tmp_path / "holes.npy", X)
    out = tmp_path / "run"
    argv = ["fit", str(tmp_path / "holes.npy"), "--latent-dim", "1", "--hidden", "4"]
    assert main([*argv, "--method", "em", "--max-iter", "3", "--out", str(out)]) == 0
    assert "missing values (NaN)" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    model = ExactDGN.load(out)
    test = np.zeros(len(X), dtype=bool)
    test[cfg["test_index"]] = True
    assert res["n_missing"] == int(np.isnan(X).sum()) and test.any()
    assert np.isclose(res["train_loglik_data"], model.score_samples(X[~test]).mean(), rtol=1e-10)
    assert np.isclose(res["test_loglik_data"], model.score_samples(X[test]).mean(), rtol=1e-10)
    assert np.allclose(model.preprocessing_.mean_, np.nanmean(X[~test], axis=0), rtol=1e-12)
    assert main([*argv, "--method", "vae", "--out", str(tmp_path / "vae")]) != 0
    assert "--method vae needs complete rows" in capsys.readouterr().err
    assert not (tmp_path / "vae").exists()


def test_module_entry_point_and_file_messages(tmp_path, capsys):
    """``python -m exactdgn`` is the ``exactdgn`` command; ``impute`` fills a row with nothing
    observed from the model's marginal, ``score`` names the file whose rows have nothing
    observed; a pickled .npy given as a model is refused without numpy's advice to load it
    with allow_pickle."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "exactdgn", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: exactdgn")
    model = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=0), 0.2)
    model.save(tmp_path / "m.npz")
    X = model.sample(4, random_state=0)
    X[1] = np.nan
    np.save(tmp_path / "holes.npy", X)
    args = ["impute", str(tmp_path / "m.npz"), str(tmp_path / "holes.npy")]
    assert main([*args, "--out", str(tmp_path / "f.npy")]) == 0  # filled from the marginal
    np.testing.assert_allclose(np.load(tmp_path / "f.npy")[1], model.mean(), rtol=1e-13)
    assert main(["score", str(tmp_path / "m.npz"), str(tmp_path / "holes.npy")]) == 2
    assert "holes.npy has 1 rows with every value missing" in capsys.readouterr().err
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFileError, match="pickled Python objects") as exc:
        ExactDGN.load(tmp_path / "obj.npy")
    assert "allow_pickle" not in str(exc.value)


def test_csv_columns_are_kept_and_checked(tmp_path, capsys):
    """A CLI fit kept no column names: ``score`` / ``impute`` of a CSV with its columns in
    another order gave -3.3e11 nats per point (``impute`` wrote the wrong header back) with no
    error. The fit's CSV header is the model's ``feature_names_in_`` now, and a CSV header
    that differs is named; a CSV without a header (or a .npy) is taken by position."""
    X = Decoder.random([1, 4, 3], seed=0)(np.random.default_rng(0).normal(size=(60, 1)))
    X += 0.1 * np.random.default_rng(1).normal(size=X.shape)
    full = tmp_path / "full.csv"
    np.savetxt(full, X, delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "run"
    args = ["--method", "em", "--max-iter", "1", "--no-progress", "--n-samples", "60"]
    assert main(["fit", str(full), *args, "--out", str(out)]) == 0
    assert ExactDGN.load(out).feature_names_in_.tolist() == ["a", "b", "c"]
    capsys.readouterr()
    assert main(["score", str(out), str(full)]) == 0
    swapped = tmp_path / "swapped.csv"
    np.savetxt(swapped, X[:, [1, 0, 2]], delimiter=",", header="b,a,c", comments="")
    holes = tmp_path / "holes.csv"
    np.savetxt(holes, np.where(np.eye(60, 3) > 0, np.nan, X[:, [1, 0, 2]]), delimiter=",",
               header="b,a,c", comments="")  # fmt: skip
    for cmd in (["score", str(out), str(swapped)],
                ["impute", str(out), str(holes), "--out", str(tmp_path / "f.csv")]):  # fmt: skip
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "has columns ['b', 'a', 'c'] but the model" in err and "['a', 'b', 'c']" in err
    assert not (tmp_path / "f.csv").exists()
    bare = tmp_path / "bare.csv"
    np.savetxt(bare, X, delimiter=",")
    assert main(["score", str(out), str(bare)]) == 0
    # sample writes the fit's header too (it wrote bare rows), so its CSV scores by name
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "3", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a,b,c" and len(lines) == 4
    drawn = tmp_path / "drawn.csv"
    assert main(["sample", str(out), "-n", "3", "--seed", "0", "--out", str(drawn)]) == 0
    assert drawn.read_text().splitlines() == lines
    assert main(["score", str(out), str(drawn)]) == 0
