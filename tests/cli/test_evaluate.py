"""``exactdgn evaluate``: exact log p(x) of a torch decoder trained elsewhere, loaded safely."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from exactdgn import ExactDGN
from exactdgn.baselines import GaussianEncoder
from exactdgn.cli import main


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    torch.manual_seed(0)
    dec = torch.nn.Sequential(
        torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU()
    )
    dec.append(torch.nn.Linear(8, 3))
    enc = GaussianEncoder(3, 1, (16,), "relu")
    exact = ExactDGN.from_torch(dec, 0.2)
    X = exact.sample(40, random_state=0)
    np.save(root / "x.npy", X)
    torch.save(dec.state_dict(), root / "dec.pt")
    save_file({k: v.contiguous() for k, v in dec.state_dict().items()}, root / "dec.safetensors")
    torch.save(enc.state_dict(), root / "enc.pt")
    torch.save(dec, root / "dec_module.pt")
    return root, exact, X


@pytest.mark.parametrize("name", ["dec.pt", "dec.safetensors"])
def test_state_dict_scores_exactly(parts, name):
    root, exact, X = parts
    out = root / f"{name}.csv"
    args = ["evaluate", str(root / name), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--layers", "1", "8", "8", "3", "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.allclose(table[:, 1], exact.score_samples(X), rtol=1e-12)


def _evaluate_with_encoder(root, k_is: int, name: str):
    """``exactdgn evaluate`` of the test decoder with its encoder: (CSV header, table)."""
    out = root / f"{name}.csv"
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    enc = ["--encoder", str(root / "enc.pt"), "--encoder-hidden", "16", "--k-is", str(k_is)]
    assert main([*args, *enc, "--out", str(out)]) == 0
    head = out.read_text().splitlines()[0].split(",")
    return head, np.loadtxt(out, delimiter=",", skiprows=1)


def test_encoder_estimates_sit_below_the_exact_value(parts, capsys):
    head, t = _evaluate_with_encoder(parts[0], 200, "enc")
    assert head == ["index", "log_px", "elbo", "iwae5", "is200", "gap", "is200_se"]
    # bounds in expectation: the mean ELBO and IWAE-5 sit below the exact mean log p(x)
    assert t[:, 2].mean() < t[:, 3].mean() < t[:, 1].mean()
    assert abs(t[:, 4].mean() - t[:, 1].mean()) < 0.05  # IS with 200 draws is close
    assert np.allclose(t[:, 5], t[:, 1] - t[:, 2])
    assert "exact - elbo" in capsys.readouterr().out


def test_pickled_module_needs_the_explicit_flag(parts, capsys):
    root, exact, X = parts
    args = ["evaluate", str(root / "dec_module.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "state dict" in err and "--unsafe-pickle" in err and "executes code" in err
    assert "\x1b" not in err  # torch's colour codes are stripped
    out = root / "mod.csv"
    assert main([*args, "--unsafe-pickle", "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.allclose(table[:, 1], exact.score_samples(X), rtol=1e-12)


def test_wrong_layer_sizes_are_named(parts, capsys):
    root, _, _ = parts
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--layers", "1", "4", "3"]) == 2
    assert "[1, 8, 8, 3]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, named",
    [
        (torch.nn.BatchNorm1d(8), "running_mean"),  # eval-mode normalisation: not an MLP
        (torch.nn.PReLU(), "1.weight"),  # learned slopes that --activation cannot carry
    ],
)
def test_state_dict_with_other_tensors_is_refused(parts, capsys, extra, named):
    """Tensors the MLP reading would drop (BatchNorm, PReLU slopes) are an error naming them,
    not a silently different decoder."""
    root = parts[0]
    dec = torch.nn.Sequential(torch.nn.Linear(1, 8), extra, torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.save(dec.state_dict(), root / "extra.pt")
    args = ["evaluate", str(root / "extra.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert named in err and "--unsafe-pickle" in err


def test_pickled_module_of_a_class_that_cannot_be_imported(tmp_path, capsys, monkeypatch):
    """A pickled module whose class is not importable here gets a message, not a traceback."""
    import importlib
    import sys

    (tmp_path / "gone_decoder_mod.py").write_text(
        "import torch\n\n\nclass Dec(torch.nn.Sequential):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("gone_decoder_mod")
    torch.save(mod.Dec(torch.nn.Linear(1, 2)), tmp_path / "m.pt")
    monkeypatch.delitem(sys.modules, "gone_decoder_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    args = ["evaluate", str(tmp_path / "m.pt"), str(tmp_path / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--unsafe-pickle"]) == 2
    err = capsys.readouterr().err
    assert "gone_decoder_mod" in err and "import" in err


@pytest.mark.parametrize("name", ["junk.safetensors", "junk.pt"])
@pytest.mark.parametrize("unsafe", [False, True])
def test_a_file_that_is_no_weights_file_is_named_as_such(parts, capsys, name, unsafe):
    """A text file named ``.safetensors`` ended in a SafetensorError traceback; one named
    ``.pt`` was said to be "not a plain state dict" with torch's advice about
    ``weights_only`` (and, with --unsafe-pickle, ``invalid literal for int()``)."""
    root = parts[0]
    (root / name).write_text("garbage\n")
    args = ["evaluate", str(root / name), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, *(["--unsafe-pickle"] if unsafe else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and "Traceback" not in err
    assert name in err and "garbage" in err and "weights_only" not in err


@pytest.mark.parametrize("fmt", ["npy", "csv"])
def test_per_coordinate_noise_from_a_file(tmp_path, fmt):
    # --noise-std took one number only: a decoder with one noise std per output (a VAE with a
    # learned diagonal noise) could not be scored from the command line
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    sigma = np.array([0.1, 0.3, 0.6])
    exact = ExactDGN.from_torch(dec, sigma)
    X = exact.sample(20, random_state=0)
    np.save(tmp_path / "x.npy", X)
    torch.save(dec.state_dict(), tmp_path / "dec.pt")
    if fmt == "npy":
        np.save(tmp_path / "sigma.npy", sigma)
    else:
        np.savetxt(tmp_path / "sigma.csv", sigma[None, :], delimiter=",")
    out = tmp_path / "out.csv"
    args = ["evaluate", str(tmp_path / "dec.pt"), str(tmp_path / "x.npy")]
    assert main([*args, "--noise-std", str(tmp_path / f"sigma.{fmt}"), "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.allclose(table[:, 1], exact.score_samples(X), rtol=1e-12)


def test_noise_std_that_is_neither_a_number_nor_a_file(parts, capsys):
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "nope.npy"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--noise-std" in err and "nope.npy" in err and "number" in err


def test_is_estimate_comes_with_its_standard_error(parts, capsys):
    # the IS estimate and its gap to the exact value were printed without an error bar: a gap
    # of Monte Carlo noise could not be told from a bias
    head, t = _evaluate_with_encoder(parts[0], 400, "se")
    assert head == ["index", "log_px", "elbo", "iwae5", "is400", "gap", "is400_se"]
    assert (t[:, 6] > 0).all()
    z = (t[:, 4] - t[:, 1]) / t[:, 6]
    assert np.abs(z).max() < 4.5  # each point's exact value is within its error bar
    se_mean = np.sqrt(np.sum(t[:, 6] ** 2)) / len(t)
    assert f"+/- {se_mean:.6f}" in capsys.readouterr().out


def test_negative_n_samples_is_refused(parts, capsys):
    # --n-samples -1 kept all rows but the last (X[:-1]) without a word
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--n-samples", "-1"])
    assert info.value.code == 2 and "--n-samples" in capsys.readouterr().err


def test_key_with_a_built_in_data_set_is_refused(parts, capsys):
    # an option that does not apply is an error (README); evaluate ignored --key with 'wave'
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), "wave", "--noise-std", "0.2", "--key", "X"]
    assert main(args) == 2
    assert "--key applies to file data, not wave" in capsys.readouterr().err


def test_help_says_the_data_are_scored_as_given(capsys):
    # the shared epilog says image data are standardized by default (--standardize), which
    # evaluate does not do (nor have): a VAE is scored in the units it was trained on
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "scored as given (not standardized" in out
