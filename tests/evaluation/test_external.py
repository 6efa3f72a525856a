"""Public functions of ``exactdgn.evaluation`` for VAE-type models and external decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from exactdgn import Decoder, ExactDGN
from exactdgn.baselines import VAE, GaussianEncoder
from exactdgn.evaluation import (
    evaluate_external,
    evaluate_vae,
    load_torch_decoder,
    load_torch_encoder,
    vae_to_exact,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _deep_sequential(width: int = 4, n_layers: int = 7):
    """An nn.Sequential MLP whose Linear layers have indices 0, 2, ..., 12 (two digits)."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(1, width)]
    for _ in range(n_layers - 1):
        layers += [torch.nn.ReLU(), torch.nn.Linear(width, width)]
    return torch.nn.Sequential(*layers).double()


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_deep_sequential_state_dict_keeps_its_layer_order(tmp_path, fmt):
    # safetensors stores the tensors sorted by name ("10.weight" before "2.weight"): read in
    # that order the layers of a square MLP chain, and the exact log p(x) was of another decoder
    dec = _deep_sequential()
    path = tmp_path / f"dec.{fmt}"
    sd = {k: v.contiguous() for k, v in dec.state_dict().items()}
    if fmt == "pt":
        torch.save(sd, path)
    else:
        save_file(sd, path)
    ref = ExactDGN.from_torch(dec, 0.2)
    X = ref.sample(20, random_state=0)
    loaded = load_torch_decoder(path, layers=[1] + [4] * 7)
    got = ExactDGN.from_decoder(loaded, 0.2).score_samples(X)
    np.testing.assert_allclose(got, ref.score_samples(X), rtol=0, atol=1e-10)


def _parts():
    dec = Decoder.random([1, 6, 2], seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = GaussianEncoder(2, 1, (8,)).to(torch.float64)
    X = ExactDGN.from_decoder(dec, 0.3).sample(8, random_state=0)
    return dec, enc, X


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"k_iwae": 0}, "k_iwae"),
        ({"k_is": 0}, "k_is"),
        ({"n_elbo": 0}, "n_elbo"),
        ({"k_iwae": 2.5}, "k_iwae"),
        ({"seed": None}, "seed"),
        ({"seed": -1}, "seed"),
    ],
)
def test_evaluate_external_names_its_bad_arguments(kwargs, name):
    # they were refused as "k must be an int >= 1" (which k?) or a TypeError on seed + 1
    dec, enc, X = _parts()
    with pytest.raises(ValueError, match=rf"^{name}="):
        evaluate_external(dec, 0.3, X, encoder=enc, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_elbo": 1}, "n_elbo"),  # the ELBO's standard error needs 2 samples
        ({"k_iwae": 0}, "k_iwae"),
        ({"k_is": 0}, "k_is"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_evaluate_vae_names_its_bad_arguments(kwargs, name):
    # n_elbo=1 was refused as "n_samples must be an int >= 2", a name the call does not have
    dec, enc, X = _parts()
    vae = VAE.from_parts(dec, enc, 0.3)
    with pytest.raises(ValueError, match=rf"^{name}="):
        evaluate_vae(vae, vae_to_exact(vae), X, **kwargs)


def test_load_torch_encoder_says_what_the_state_dict_holds(tmp_path):
    # the message ended at torch's first line, "Error(s) in loading state_dict for
    # GaussianEncoder:", without what differs
    enc = GaussianEncoder(2, 1, (16,))
    torch.save(enc.state_dict(), tmp_path / "enc.pt")
    with pytest.raises(ValueError, match=r"it holds GaussianEncoder\(2, 1, hidden=\[16\]\)"):
        load_torch_encoder(tmp_path / "enc.pt", n_features=2, latent_dim=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"it holds GaussianEncoder\(2, 1, hidden=\[16\]\)"):
        load_torch_encoder(tmp_path / "enc.pt", n_features=2, latent_dim=2, hidden=(16,))
    # another architecture: torch's own lines (which keys are missing or unexpected)
    torch.save({"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}, tmp_path / "o.pt")
    with pytest.raises(ValueError, match=r"Missing key\(s\).*mean_head\.weight.*fc\.weight"):
        load_torch_encoder(tmp_path / "o.pt", n_features=2, latent_dim=1, hidden=(8,))


def test_evaluate_vae_needs_the_exact_model_of_that_vae():
    # any object was taken as the exact model: evaluate_vae(vae, vae, X) reported exact ==
    # elbo (gap 0), another ExactDGN a gap of 5 nats, both without a word
    from exactdgn.model import NotFittedError

    dec, enc, X = _parts()
    vae = VAE.from_parts(dec, enc, 0.3)
    other = VAE.from_parts(Decoder.random([1, 6, 2], seed=9), enc, 0.3)
    with pytest.raises(TypeError, match="exact must be the ExactDGN of the VAE's decoder"):
        evaluate_vae(vae, vae, X)
    with pytest.raises(ValueError, match="exact is not the exact model of vae"):
        evaluate_vae(vae, vae_to_exact(other), X)
    with pytest.raises(ValueError, match="exact is not the exact model of vae"):
        evaluate_vae(vae, vae_to_exact(VAE.from_parts(dec, enc, 0.31)), X)  # other noise
    with pytest.raises(TypeError, match=r"vae must be a fitted exactdgn\.baselines\.VAE"):
        evaluate_vae(vae_to_exact(vae), vae_to_exact(vae), X)
    with pytest.raises(TypeError, match="got object"):
        vae_to_exact(object())
    with pytest.raises(NotFittedError):
        vae_to_exact(VAE([1, 4, 2]))
    # no rows: an empty result, but only for rows of the right width
    assert evaluate_vae(vae, vae_to_exact(vae), np.zeros((0, X.shape[1]))) == {}
    with pytest.raises(ValueError, match="features"):
        evaluate_vae(vae, vae_to_exact(vae), np.zeros((0, X.shape[1] + 1)))


def test_evaluate_vae_refuses_a_nan_row_before_the_exact_pass(monkeypatch):
    dec, enc, X = _parts()
    vae = VAE.from_parts(dec, enc, 0.3)
    exact = vae_to_exact(vae)
    res = evaluate_vae(vae, exact, X, n_elbo=5, k_is=20)
    assert set(res) == {
        "exact", "elbo", "iwae5", "is20", "gap_mean", "gap_median", "gap_p90", "gap_max",
        "elbo_stderr_mean",
    }  # fmt: skip
    X[0, 1] = np.nan

    def no_exact_pass(*args, **kwargs):
        raise AssertionError("the exact pass ran on rows the VAE refuses")

    monkeypatch.setattr(exact, "score_samples", no_exact_pass)
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        evaluate_vae(vae, exact, X)


def test_evaluate_external_refuses_a_nan_row_before_the_exact_pass(monkeypatch):
    # without an encoder a NaN is missing data (log p(x_obs)); the encoder's estimates need
    # complete rows, and the exact pass ran on all rows before they were refused
    dec, enc, X = _parts()
    X[0, 1] = np.nan
    per, _ = evaluate_external(dec, 0.3, X)
    assert np.isfinite(per["log_px"]).all()

    def no_exact_pass(*args, **kwargs):
        raise AssertionError("the exact pass ran on rows the estimates refuse")

    monkeypatch.setattr(ExactDGN, "score_samples", no_exact_pass)
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        evaluate_external(dec, 0.3, X, encoder=enc)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"n_features": 2, "latent_dim": 2}, "latent dimension 1, not the decoder's 2"),
        ({"n_features": 3, "latent_dim": 1}, "2 features, not the data's 3"),
    ],
)
def test_load_torch_encoder_names_a_latent_or_feature_mismatch(tmp_path, kwargs, named):
    # the message told to give the encoder's hidden sizes, which cannot fix an encoder of
    # another latent dimension (or another data dimension) than the decoder's
    torch.save(GaussianEncoder(2, 1, (16,)).state_dict(), tmp_path / "enc.pt")
    with pytest.raises(ValueError, match="it holds GaussianEncoder") as info:
        load_torch_encoder(tmp_path / "enc.pt", hidden=(16,), **kwargs)
    assert named in str(info.value) and "hidden sizes" not in str(info.value)


def test_log_var_encoder_keeps_small_variances(tmp_path):
    # the log-variance went through the log-std head's clamp [-12, 6]: a posterior std below
    # exp(-6) = 0.0025 (log var < -12, as a VAE with small noise has) was silently raised
    enc = GaussianEncoder(2, 1, (8,))
    with torch.no_grad():
        enc.log_std_head.weight.zero_()  # the log variance is the head's bias
    torch.save(enc.state_dict(), tmp_path / "enc.pt")
    dec, _, _ = _parts()
    loaded = load_torch_encoder(
        tmp_path / "enc.pt", n_features=2, latent_dim=1, hidden=(8,), output="log_var"
    )
    for log_var in (-16.0, -1.0, 11.0):
        loaded.inner.log_std_head.bias.data.fill_(log_var)
        _, std = VAE.from_parts(dec, loaded, 0.3).encode(np.zeros((1, 2)))
        np.testing.assert_allclose(std, np.exp(0.5 * log_var), rtol=1e-12)


@pytest.mark.parametrize("unsafe", [False, True])
def test_load_torch_encoder_file_errors_speak_of_the_encoder(tmp_path, unsafe):
    # a bad encoder file was answered with advice about "the decoder's state_dict()"
    (tmp_path / "enc.pt").write_text("garbage\n")
    with pytest.raises(ValueError, match="encoder's state_dict") as info:
        load_torch_encoder(tmp_path / "enc.pt", n_features=2, latent_dim=1, unsafe_pickle=unsafe)
    assert "decoder" not in str(info.value)


def test_load_torch_decoder_checks_the_layers_of_a_pickled_module(tmp_path):
    # layers= (--layers) was checked for a state dict only: a pickled module of other sizes
    # was scored without a word
    torch.save(_deep_sequential(width=4, n_layers=2), tmp_path / "dec.pt")
    with pytest.raises(ValueError, match=r"layer sizes \[1, 4, 4\], not \[1, 8, 4\]"):
        load_torch_decoder(tmp_path / "dec.pt", layers=[1, 8, 4], unsafe_pickle=True)
    dec = load_torch_decoder(tmp_path / "dec.pt", layers=[1, 4, 4], unsafe_pickle=True)
    assert dec.layer_sizes == [1, 4, 4]


@pytest.mark.parametrize("sizes", [[1, 6, 5], [2, 6, 5], [3, 4, 4]])
@pytest.mark.parametrize("missing", [False, True])
def test_exact_pass_reports_its_progress_over_the_points(sizes, missing):
    """The exact pass reports the rows of each block as it finishes it (d = 1, d = 2, the
    general path; complete and incomplete rows), so a bar over the points advances within it;
    the values are those without a listener."""
    from exactdgn._progress import progress_to

    model = ExactDGN.from_decoder(Decoder.random(sizes, seed=0), 0.2, chunk_bytes=2**14)
    X = model.sample(300, random_state=0)
    if missing:
        X[::3, 1] = np.nan
    ref = model.score_samples(X)
    seen: list[int] = []
    with progress_to(seen.append):
        got = model.score_samples(X)
    np.testing.assert_array_equal(got, ref)
    assert sum(seen) == len(X) and len(seen) >= 1, seen
    if sizes[0] == 2 and not missing:
        assert len(seen) > 1  # small blocks: the bar moves more than once
    model.score_samples(X)  # outside the context nothing listens
    assert sum(seen) == len(X)


def test_encoder_estimates_report_their_samples():
    from exactdgn._progress import progress_to

    dec, enc, X = _parts()
    vae = VAE.from_parts(dec, enc, 0.3)
    for call, total in (
        (lambda: vae.elbo(X, n_samples=7, random_state=0), 7),
        (lambda: vae.iwae_bound(X, k=3, n_repeats=2, random_state=0), 6),
        (lambda: vae.importance_log_likelihood(X, k=50, random_state=0, max_elements=64), 50),
    ):
        ref = call()
        seen: list[int] = []
        with progress_to(seen.append):
            got = call()
        np.testing.assert_array_equal(got, ref)
        assert sum(seen) == len(X) * total, (seen, total)
    assert len(seen) > 1  # IS in several chunks: reported chunk by chunk


def test_evaluate_external_checks_the_noise_std_before_anything_runs(caplog):
    """A bad noise std was found when the model was built, after the exact pass's estimate was
    logged and the bar had started; a vector of the wrong length said ``noise_std has length 4
    but 2 is expected`` (expected by what?)."""
    import logging

    dec, _, X = _parts()
    caplog.set_level(logging.INFO, logger="exactdgn")
    with pytest.raises(ValueError, match="noise_std has 4 values but the decoder has 2 outputs"):
        evaluate_external(dec, np.full(4, 0.3), X)
    with pytest.raises(ValueError, match="noise_std must be positive"):
        evaluate_external(dec, -0.3, X)
    assert not caplog.records


def test_evaluate_external_logs_each_stage(caplog):
    import logging

    dec, enc, X = _parts()
    caplog.set_level(logging.INFO, logger="exactdgn")
    _, summary = evaluate_external(dec, 0.3, X, encoder=enc, n_elbo=3, k_is=20)
    stages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluate [")]
    assert [s.split(":")[0] for s in stages] == [
        "evaluate [1/5] regions",
        "evaluate [2/5] exact log p(x)",
        "evaluate [3/5] ELBO",
        "evaluate [4/5] IWAE-5",
        "evaluate [5/5] IS-20",
    ]
    assert f"{summary['exact']:.6f}" in stages[1] and f"{summary['is20']:.6f}" in stages[4]
