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


def _evaluate_with_encoder(root, k_is: int, name: str, widths=("--encoder-hidden", "16")):
    """``exactdgn evaluate`` of the test decoder with its encoder: (CSV header, table)."""
    out = root / f"{name}.csv"
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    enc = ["--encoder", str(root / "enc.pt"), *widths, "--k-is", str(k_is)]
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


def test_encoder_widths_are_read_from_its_state_dict(parts):
    """Without --encoder-hidden the widths come from the weights (it asked for them, naming
    the widths it had found: 'it holds GaussianEncoder(2, 1, hidden=[16])')."""
    given = _evaluate_with_encoder(parts[0], 50, "given")
    read = _evaluate_with_encoder(parts[0], 50, "read", widths=())
    assert given[0] == read[0]
    np.testing.assert_array_equal(given[1], read[1])


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


@pytest.mark.parametrize("fmt", ["npy", "csv", "header.csv", "column.csv"])
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
    elif fmt == "csv":
        np.savetxt(tmp_path / "sigma.csv", sigma[None, :], delimiter=",")
    elif fmt == "header.csv":  # a header row of names, as DATA files may have (was an error)
        (tmp_path / "sigma.header.csv").write_text("x,y,z\n0.1,0.3,0.6\n")
    else:
        (tmp_path / "sigma.column.csv").write_text("sd\n0.1\n0.3\n0.6\n")
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
    # its epilog said the opposite ("standardized per pixel by default (--standardize)",
    # "reported in standardized units"): the epilog of fit and score, not of evaluate
    assert "--standardize" not in out and "standardized per pixel" not in out
    assert "exactdgn evaluate" in out and "exactdgn fit wave" not in out
    assert "DATA a .csv, .npy or .npz file" in out  # the positional argument says what it is


@pytest.mark.parametrize(
    "option",
    [
        ["--k-is", "10"],
        ["--k-iwae", "3"],
        ["--seed", "1"],
        ["--encoder-hidden", "16"],
        ["--encoder-activation", "tanh"],
        ["--encoder-output", "log_var"],
    ],
)
def test_encoder_options_without_an_encoder_are_refused(parts, capsys, option):
    """An option that does not apply is an error (README): without --encoder these were
    ignored, so ``--k-is 100000`` seemed to have been used."""
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, *option]) == 2
    err = capsys.readouterr().err
    assert f"{option[0]} applies with --encoder only" in err, err


def _no_evaluation(monkeypatch):
    """``evaluate_external`` replaced by a failure: the checks must come before the passes."""
    import exactdgn.evaluation

    def fail(*args, **kwargs):
        raise AssertionError("evaluate_external ran")

    monkeypatch.setattr(exactdgn.evaluation, "evaluate_external", fail)


def test_out_that_cannot_be_written_is_refused_before_the_passes(parts, capsys, monkeypatch):
    """``--out`` naming a folder failed after every pass had run ("[Errno 21] Is a directory:
    'out.tmp123' -> 'out'"): hours of IS lost on a typo."""
    root = parts[0]
    _no_evaluation(monkeypatch)
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"--out {root} is a folder" in err and "file" in err
    (root / "plain").write_text("")
    assert main([*args, "--out", str(root / "plain" / "o.csv")]) == 2
    assert "plain is a file, not a folder" in capsys.readouterr().err
    before = (root / "x.npy").read_bytes()  # --out onto DATA replaced it with CSV text
    assert main([*args, "--out", str(root / "." / "x.npy")]) == 2
    assert "is the DATA file" in capsys.readouterr().err
    assert (root / "x.npy").read_bytes() == before
    assert main([*args, "--out", str(root / "dec.pt")]) == 2
    assert "is the DECODER file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value, named",
    [
        ("-0.1", "positive"),
        ("0", "positive"),
        ("nan", "positive"),
        ("inf", "positive"),
        ("std4.npy", "4 values but the decoder has 3 outputs"),
        ("stdneg.npy", "positive"),
    ],
)
def test_bad_noise_std_is_named_before_the_passes(parts, capsys, monkeypatch, value, named):
    """A bad --noise-std was reported as ``noise_std must be positive and finite, got -0.1``
    (the Python name) after the progress bar had started; a file of the wrong length as
    ``noise_std has length 4 but 3 is expected``."""
    root = parts[0]
    np.save(root / "std4.npy", np.full(4, 0.2))
    np.save(root / "stdneg.npy", np.array([0.2, -0.1, 0.2]))
    _no_evaluation(monkeypatch)
    value = str(root / value) if value.endswith(".npy") else value
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"exactdgn: error: --noise-std {value}") and named in err, err
    assert "evaluate" not in err.split("error:")[0]  # no bar before the message


def test_decoder_path_that_is_a_folder_is_named(parts, capsys):
    # "[Errno 21] Is a directory: '.'" did not say which argument it was
    root = parts[0]
    assert main(["evaluate", str(root), str(root / "x.npy"), "--noise-std", "0.2"]) == 2
    err = capsys.readouterr().err
    assert f"{root} is a folder" in err and "decoder" in err
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--encoder", str(root), "--encoder-hidden", "16"]) == 2
    err = capsys.readouterr().err
    assert f"{root} is a folder" in err and "encoder" in err


def test_key_with_a_npy_file_is_refused(parts, capsys):
    # a .npy file holds one array: --key was silently ignored
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--key", "X"]) == 2
    assert "--key picks an array of a .npz file" in capsys.readouterr().err


def test_each_stage_has_its_progress_and_a_log_line(parts, capsys, caplog):
    """The bar named the step that ran but showed nothing within it (IS with 5,000 proposals
    per point is the long one) and left no trace: each stage now has its own bar over its
    work (points, or points x samples) and logs its time at INFO (-v)."""
    import logging

    root = parts[0]
    caplog.set_level(logging.INFO, logger="exactdgn")
    _evaluate_with_encoder(root, 50, "stages")
    err = capsys.readouterr().err
    for i, stage in enumerate(["regions", "exact log p(x)", "ELBO", "IWAE-5", "IS-50"], 1):
        assert f"evaluate [{i}/5] {stage}" in err, err
        assert any(
            r.getMessage().startswith(f"evaluate [{i}/5] {stage}: ") and " s" in r.getMessage()
            for r in caplog.records
        ), caplog.text
    assert "40/40" in err and "2.00k/2.00k" in err  # the exact pass's points, IS's samples
    caplog.clear()
    out = root / "stages_quiet.csv"
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    enc = ["--encoder", str(root / "enc.pt"), "--encoder-hidden", "16", "--k-is", "50"]
    assert main([*args, *enc, "--no-progress", "--out", str(out)]) == 0
    assert "evaluate [" not in capsys.readouterr().err  # no bars, the log lines stay
    assert sum(r.getMessage().startswith("evaluate [") for r in caplog.records) == 5
    assert out.read_bytes() == (root / "stages.csv").read_bytes()  # the values unchanged


class _Named(torch.nn.Module):
    """An MLP whose Linear layers have the given names, registered (and applied) in order."""

    def __init__(self, layers):
        super().__init__()
        self.order = [name for name, _, _ in layers]
        for name, n_in, n_out in layers:
            setattr(self, name, torch.nn.Linear(n_in, n_out))

    def forward(self, z):
        for k, name in enumerate(self.order):
            z = getattr(self, name)(z)
            z = torch.relu(z) if k < len(self.order) - 1 else z
        return z


def _save_both(tmp_path, layers):
    """``_Named(layers)`` saved as a .pt and a .safetensors state dict; the module itself."""
    torch.manual_seed(0)
    mod = _Named(layers).double()
    sd = {k: v.contiguous() for k, v in mod.state_dict().items()}
    torch.save(sd, tmp_path / "named.pt")
    save_file(sd, tmp_path / "named.safetensors")
    np.save(tmp_path / "x.npy", np.zeros((2, layers[-1][2])))
    return mod


def _same_function(dec, module):
    Z = np.random.default_rng(0).standard_normal((50, dec.latent_dim)) * 4
    with torch.no_grad():
        ref = module(torch.as_tensor(Z)).numpy()
    np.testing.assert_allclose(dec(Z), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "layers",
    [
        [("fc_in", 1, 8), ("fc_hidden", 8, 8), ("fc_out", 8, 3)],  # refused: "not a chain"
        [("a_in", 1, 8), ("c_mid", 8, 4), ("b_mid", 4, 8), ("z_out", 8, 3)],
        [("inp", 1, 8), ("hidden.1", 8, 8), ("hidden.0", 8, 8), ("out", 8, 3)],  # numbered
    ],
)
def test_safetensors_mlp_is_rebuilt_from_the_shapes(tmp_path, layers):
    """.safetensors keeps no order: its layers were taken in the (natural) order of their
    names, refusing fc_in, fc_hidden, fc_out as "not an MLP chain" (fc_hidden < fc_in < fc_out)
    and a_in, b_mid, c_mid, z_out alike. The chain now comes from the shapes, and from the
    names where these number the layers of equal shapes."""
    from exactdgn.evaluation import load_torch_decoder

    mod = _save_both(tmp_path, layers)
    if layers[1][0] == "hidden.1":  # the numbers give the order, not the registration
        mod.order = ["inp", "hidden.0", "hidden.1", "out"]
    _same_function(load_torch_decoder(tmp_path / "named.safetensors"), mod)
    args = ["evaluate", str(tmp_path / "named.safetensors"), str(tmp_path / "x.npy")]
    assert main([*args, "--noise-std", "0.2", "--no-progress"]) == 0


def test_safetensors_mlp_of_unnumbered_equal_layers_is_refused(tmp_path, capsys):
    """a_in (1 -> 8), c_mid, b_mid (8 -> 8), z_out: read in the order of the names (b_mid
    before c_mid), the decoder was another function and its log p(x) silently wrong (-2.274
    vs -2.372). The order cannot be known: refused, naming the layers and what to do; the
    .pt state dict (which keeps the module's order) is scored."""
    from exactdgn.evaluation import load_torch_decoder

    layers = [("a_in", 1, 8), ("c_mid", 8, 8), ("b_mid", 8, 8), ("z_out", 8, 3)]
    mod = _save_both(tmp_path, layers)
    args = ["evaluate", str(tmp_path / "named.safetensors"), str(tmp_path / "x.npy")]
    assert main([*args, "--noise-std", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "'c_mid'" in err and "'b_mid'" in err and "'a_in'" not in err, err
    assert "torch.save" in err and "index" in err
    _same_function(load_torch_decoder(tmp_path / "named.pt"), mod)


def test_safetensors_layers_that_chain_in_no_order_are_named(tmp_path, capsys):
    _save_both(tmp_path, [("a", 1, 8), ("b", 4, 3)])
    args = ["evaluate", str(tmp_path / "named.safetensors"), str(tmp_path / "x.npy")]
    assert main([*args, "--noise-std", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "'a' (1 -> 8), 'b' (4 -> 3) do not chain" in err, err


@pytest.mark.parametrize("which", ["decoder", "encoder"])
def test_truncated_file_with_unsafe_pickle_is_named(parts, capsys, which):
    """A truncated torch file with --unsafe-pickle was torch's raw ``RuntimeError:
    PytorchStreamReader failed ...`` traceback (exit 1); without the flag a clean error."""
    root = parts[0]
    src = root / ("dec_module.pt" if which == "decoder" else "enc.pt")
    bad = root / f"cut_{which}.pt"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    dec = bad if which == "decoder" else root / "dec.pt"
    args = ["evaluate", str(dec), str(root / "x.npy"), "--noise-std", "0.2", "--unsafe-pickle"]
    if which == "encoder":
        args += ["--encoder", str(bad), "--encoder-hidden", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and "Traceback" not in err
    assert str(bad) in err and "truncated or corrupt" in err and which in err, err


class _ResidualDecoder(torch.nn.Module):
    """2 -> 6, h + relu(m(h)), 6 -> 3: its imported hidden layer carries h too (12 units)."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(2, 6)
        self.m = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 3)

    def forward(self, z):
        h = torch.relu(self.inp(z))
        h = h + torch.relu(self.m(h))
        return self.out(h)


def test_layers_of_a_pickled_module_are_those_of_its_linear_layers(tmp_path, capsys):
    """--layers 2 6 6 3 of a residual module was refused as "layer sizes [2, 6, 12, 3]" (the
    importer's widths, with the units that carry h): its Linear layers' sizes are accepted."""
    torch.manual_seed(0)
    torch.save(_ResidualDecoder(), tmp_path / "res.pt")
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    args = ["evaluate", str(tmp_path / "res.pt"), str(tmp_path / "x.npy"), "--noise-std", "0.2"]
    args += ["--unsafe-pickle", "--no-progress"]
    assert main([*args, "--layers", "2", "6", "6", "3"]) == 0
    capsys.readouterr()
    assert main([*args, "--layers", "2", "6", "4"]) == 2
    err = capsys.readouterr().err
    assert "Linear layers have sizes [2, 6, 6, 3] (imported as [2, 6, 12, 3]" in err, err
    assert "not [2, 6, 4]" in err and "carry values" in err


@pytest.mark.parametrize(
    "decoder, option, named",
    [
        ("dec.pt", ["--negative-slope", "0.3"], "--negative-slope applies to --activation leaky"),
        ("dec_module.pt", ["--activation", "abs"], "activation='abs' (--activation) applies"),
        ("dec_module.pt", ["--activation", "leaky_relu"], "applies to a state dict only"),
        ("dec_module.pt", ["--activation", "relu"], "applies to a state dict only"),
        ("dec.pt", ["--negative-slope", "0.01"], "--negative-slope applies to --activation leaky"),
    ],
)
def test_options_that_do_not_apply_are_refused(parts, capsys, decoder, option, named):
    """--negative-slope with relu and --activation with a whole module were silently ignored
    (the README: an option that does not apply is an error); so were their default values
    given explicitly (``--activation relu``, ``--negative-slope 0.01``)."""
    root = parts[0]
    args = ["evaluate", str(root / decoder), str(root / "x.npy"), "--noise-std", "0.2"]
    assert main([*args, "--unsafe-pickle", *option]) == 2
    assert named in capsys.readouterr().err


def test_latent_dimension_is_refused_before_the_estimate(tmp_path, capsys, caplog):
    """A latent-dimension-5 decoder logged its estimated pass ("~2.84 h per E-step") before
    the refusal that latent_dim=5 is invalid."""
    import logging

    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.save(dec.state_dict(), tmp_path / "d5.pt")
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    caplog.set_level(logging.INFO, logger="exactdgn")
    args = ["evaluate", str(tmp_path / "d5.pt"), str(tmp_path / "x.npy"), "--noise-std", "0.2"]
    assert main(args) == 2
    assert "latent_dim=5 is invalid" in capsys.readouterr().err
    assert "estimated" not in caplog.text, caplog.text


def test_bias_of_the_wrong_shape_names_the_file_and_key(tmp_path, capsys):
    # "bias 0 has shape (5,), expected (8,)" named neither the file nor the tensor
    torch.manual_seed(0)
    sd = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    sd = sd.state_dict()
    sd["0.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "bad.pt")
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    args = ["evaluate", str(tmp_path / "bad.pt"), str(tmp_path / "x.npy"), "--noise-std", "0.2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "bad.pt") in err and "'0.bias' has shape (5,)" in err, err
    assert "'0.weight' has shape (8, 1)" in err


@pytest.mark.parametrize("value", [np.array([0.2]), np.array(0.2)], ids=["one", "0-d"])
def test_noise_std_file_of_one_value_is_one_std(parts, value):
    """A .npy of [0.2] (or a 0-d one) was refused: "has 1 values but the decoder has 3
    outputs: give one std per output, or a single number"."""
    root, exact, X = parts
    np.save(root / "one.npy", value)
    out = root / "one.csv"
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--no-progress"]
    assert main([*args, "--noise-std", str(root / "one.npy"), "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.allclose(table[:, 1], exact.score_samples(X), rtol=1e-12)


def test_an_exactdgn_model_or_a_numpy_archive_is_named(parts, capsys):
    """An exactdgn ``model.npz`` given as the decoder quoted torch's C++ error
    ("[enforce fail at inline_container.cc:180]") and advised --unsafe-pickle."""
    root, exact, _ = parts
    exact.save(root / "model.npz")
    np.savez(root / "arrays.npz", a=np.zeros(3))
    for name, said in (("model.npz", "is an exactdgn model file"), ("arrays.npz", "numpy .npz")):
        args = ["evaluate", str(root / name), str(root / "x.npy"), "--noise-std", "0.2"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert said in err and "enforce fail" not in err and "unsafe" not in err, err


def test_an_encoder_with_nan_outputs_is_refused_and_a_degenerate_is_flagged(parts, capsys):
    """A broken encoder printed ``nan`` estimates with rc 0 (NaN log std), or an IS estimate
    1e36 nats off "+/- 0.000000" (log std 50: one draw carries all the weight)."""
    root = parts[0]
    args = ["evaluate", str(root / "dec.pt"), str(root / "x.npy"), "--noise-std", "0.2"]
    for bias, rc, said in ((float("nan"), 2, "not finite for 40 rows"), (50.0, 0, "IS-50 is more")):
        enc = GaussianEncoder(3, 1, (16,), "relu", max_log_std=60.0)
        with torch.no_grad():
            enc.log_std_head.weight.zero_()
            enc.log_std_head.bias.fill_(bias)
        torch.save(enc, root / "bad_enc.pt")
        extra = ["--encoder", str(root / "bad_enc.pt"), "--unsafe-pickle", "--k-is", "50"]
        assert main([*args, *extra]) == rc
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err


def test_truncated_files_pickled_modules_and_a_missing_encoder_are_named(parts, capsys):
    """A truncated .pt quoted torch's "PytorchStreamReader ... internal miniz error" and advised
    --unsafe-pickle; a pickled module quoted torch's unfinished "... you have two options,";
    a missing --encoder file was "nonexist.pt does not exist" (which file?)."""
    root = parts[0]
    data = (root / "dec.pt").read_bytes()
    (root / "trunc.pt").write_bytes(data[: len(data) // 2])
    base = [str(root / "x.npy"), "--noise-std", "0.2"]
    assert main(["evaluate", str(root / "trunc.pt"), *base]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "--unsafe-pickle" not in err
    assert main(["evaluate", str(root / "dec_module.pt"), *base]) == 2
    err = capsys.readouterr().err
    assert "Python objects beyond tensors" in err and "two options" not in err
    assert "--unsafe-pickle" in err or "unsafe_pickle" in err
    assert main(["evaluate", str(root / "dec.pt"), *base, "--encoder", str(root / "no.pt")]) == 2
    assert "the encoder's file" in capsys.readouterr().err
