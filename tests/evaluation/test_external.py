"""Public functions of ``exactdgn.evaluation`` for decoders and encoders trained elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from exactdgn import ExactDGN
from exactdgn.evaluation import load_torch_decoder


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
