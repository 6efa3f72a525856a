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
