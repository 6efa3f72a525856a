"""CLI leftovers: bad --n-samples, resuming with other stopping settings, --out protection,
evaluate's estimate and progress (tiny data, in-process ``main``)."""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn.cli import main

TINY = ["--n-samples", "60", "--no-progress"]


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("leftovers")
    argv = ["fit", "wave", "--method", "em", "--max-iter", "1", "--out", str(root / "em"), *TINY]
    assert main(argv) == 0
    return root


@pytest.mark.parametrize("n", ["-1", "0"])
@pytest.mark.parametrize("command", ["fit", "score"])
def test_n_samples_below_one_is_refused(em_run, tmp_path, capsys, command, n):
    # --n-samples -1 kept all rows but the last (X[:-1]) without a word; 0 kept none
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(10, 2)))
    head = {
        "fit": ["fit", str(data), "--out", str(tmp_path / "o")],
        "score": ["score", str(em_run / "em"), str(data)],
    }[command]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*head, "--n-samples", n])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--n-samples" in err and "expected an integer >= 1" in err
    assert not (tmp_path / "o").exists()
