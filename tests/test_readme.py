"""The README's quick example runs as written, without a warning (pytest turns them into errors)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_example_runs_without_warnings(monkeypatch, tmp_path):
    block = re.search(r"## Quick example\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has no quick example"
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(block.group(1), str(README), "exec"), env)  # our own README
    em, X = env["em"], env["Xt"]
    assert em.converged_ and np.all(np.diff([r["loglik"] for r in em.history_]) >= -1e-9)
    assert env["filled"].shape == env["X"].shape and not np.isnan(env["filled"]).any()
    assert np.isfinite(env["log_px"]).all() and em.score(X) > -1.0
