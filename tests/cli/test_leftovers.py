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


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_fit_into_another_runs_folder_is_refused_unless_overwrite(em_run, tmp_path, capsys):
    # a second fit into the same --out replaced the first run's model, config and results
    out = em_run / "em"
    before = _files(out)
    argv = ["fit", "wave", "--method", "em", "--max-iter", "2", "--out", str(out), *TINY]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a run (files " in err and "config.json" in err
    assert "choose another --out, or pass --overwrite to replace it" in err
    assert _files(out) == before
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in before.items():
        (copy / name).write_bytes(data)
    assert main([*argv[:-5], "--out", str(copy), *TINY, "--overwrite"]) == 0
    assert len(__import__("json").loads((copy / "history.json").read_text())) == 3


def test_fit_into_an_empty_folder_and_its_own_checkpointed_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["fit", "wave", "--method", "em", "--max-iter", "1", *TINY]
    assert main([*argv, "--out", str(empty)]) == 0
    # the same command again with its checkpoint: the run's own folder (a resume), not refused
    out, ck = tmp_path / "run", tmp_path / "run" / "ck.npz"
    assert main([*argv, "--out", str(out), "--checkpoint", str(ck)]) == 0
    assert main([*argv, "--out", str(out), "--checkpoint", str(ck)]) == 0
    # another checkpoint is another run
    assert main([*argv, "--out", str(out), "--checkpoint", str(tmp_path / "other.npz")]) == 2
