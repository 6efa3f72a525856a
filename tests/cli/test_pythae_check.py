"""``experiments/pythae_check.py`` scores pythae's VAEs with ``exactdgn evaluate``: its arguments
and the outputs it reads, without pythae (the script needs its own environment, so CI never
runs it: this keeps it in step with the command line)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from exactdgn import ExactDGN
from exactdgn.cli import main

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "pythae_check.py"


@pytest.fixture(scope="module")
def pythae_check():
    spec = importlib.util.spec_from_file_location("pythae_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports numpy and torch only (pythae inside functions)
    return mod


def test_parses_its_arguments_without_pythae(pythae_check, capsys):
    with pytest.raises(SystemExit) as exc:
        pythae_check.main(["--help"])
    assert exc.value.code == 0
    assert "--scales" in capsys.readouterr().out


def test_evaluate_call_gives_what_the_script_reads(pythae_check, tmp_path, capsys):
    """The files as ``run_scale`` writes them (its Decoder's ``net`` state dict, its Encoder's
    body and heads renamed), scored by the same arguments: the columns it reads and the exact
    values of ``N(x; g(z), I)``."""
    torch.manual_seed(0)
    args = argparse.Namespace(latent=2, hidden=[8, 8], encoder_hidden=[16], k=200, seed=0)
    D = 12
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, D))
    body = nn.Sequential(nn.Linear(D, 16), nn.ReLU())
    enc = {f"body.{k}": v for k, v in body.state_dict().items()}
    enc |= {f"mean_head.{k}": v for k, v in nn.Linear(16, 2).state_dict().items()}
    enc |= {f"log_var_head.{k}": v for k, v in nn.Linear(16, 2).state_dict().items()}
    dec_path, enc_path = tmp_path / "decoder_s1.pt", tmp_path / "encoder_s1.pt"
    torch.save(net.state_dict(), dec_path)
    torch.save(pythae_check.exactdgn_encoder_state(enc), enc_path)
    X = np.random.default_rng(0).random((25, D))
    np.save(tmp_path / "test_s1.npy", X)
    csv = tmp_path / "evaluate_s1.csv"

    argv = pythae_check.evaluate_args(dec_path, tmp_path / "test_s1.npy", enc_path, csv, args, D)
    assert "--no-progress" in argv
    assert main(argv) == 0
    out = capsys.readouterr()
    assert pythae_check.summ_regions(out.out).startswith("decoder [2, 8, 8, 12], ")
    assert pythae_check.summ_regions(out.out).endswith(" regions")
    assert "evaluate:" not in out.err  # no progress bar in the captured output

    cols = csv.read_text().splitlines()[0].split(",")
    assert {"log_px", "elbo", f"is{args.k}"} <= set(cols)
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    per = {c: table[:, j] for j, c in enumerate(cols)}
    exact = ExactDGN.from_torch(net.double(), 1.0).score_samples(X)
    assert np.allclose(per["log_px"], exact, rtol=1e-10)
    assert per["elbo"].mean() < per["log_px"].mean()
