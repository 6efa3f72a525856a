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


def _same_run(a, b):
    from exactdgn import ExactDGN

    ma, mb = ExactDGN.load(a / "model.npz"), ExactDGN.load(b / "model.npz")
    for Wa, Wb in zip(ma.decoder_.weights, mb.decoder_.weights, strict=True):
        np.testing.assert_array_equal(Wa, Wb)
    np.testing.assert_array_equal(ma.noise_std_, mb.noise_std_)
    assert [h["loglik"] for h in ma.history_] == [h["loglik"] for h in mb.history_]
    assert (ma.n_iter_, ma.converged_) == (mb.n_iter_, mb.converged_)


def test_resume_with_more_iterations_equals_the_longer_run(tmp_path, capsys):
    # a finished checkpointed run resumed with a higher --max-iter was refused ("other data or
    # parameters"): continuing a run for more iterations is the common resume
    base = ["fit", "wave", "--method", "em", "--hidden", "4", "--tol", "0", *TINY]
    assert main([*base, "--max-iter", "8", "--out", str(tmp_path / "ref")]) == 0
    run, ck = tmp_path / "run", tmp_path / "ck.npz"
    assert main([*base, "--max-iter", "5", "--out", str(run), "--checkpoint", str(ck)]) == 0
    assert len(__import__("json").loads((run / "history.json").read_text())) == 6
    assert main([*base, "--max-iter", "8", "--out", str(run), "--checkpoint", str(ck)]) == 0
    _same_run(tmp_path / "ref", run)
    # fewer iterations than the checkpoint has run: that run is gone, refused
    capsys.readouterr()
    assert main([*base, "--max-iter", "6", "--out", str(run), "--checkpoint", str(ck)]) == 2
    err = capsys.readouterr().err
    assert "--max-iter 6" in err and "8 iterations" in err


def test_resume_with_a_tighter_tol_equals_the_run_with_it(tmp_path):
    base = ["fit", "wave", "--method", "em", "--hidden", "4", "--init", "pca", "--max-iter", "13"]
    base += TINY
    assert main([*base, "--tol", "0", "--out", str(tmp_path / "ref")]) == 0
    run, ck = tmp_path / "run", tmp_path / "ck.npz"
    # a huge tol stops at the rule's first chance (10 iterations); tol 0 goes on to 13
    assert main([*base, "--tol", "1e9", "--out", str(run), "--checkpoint", str(ck)]) == 0
    assert len(__import__("json").loads((run / "history.json").read_text())) == 11
    assert main([*base, "--tol", "0", "--out", str(run), "--checkpoint", str(ck)]) == 0
    _same_run(tmp_path / "ref", run)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--hidden", "5"], "--hidden"),
        (["--seed", "1"], "--seed"),
        (["--noise", "diagonal"], "--noise"),
        (["--method", "lbfgs"], "--method"),
        (["--n-samples", "50"], "DATA"),
    ],
)
def test_resume_of_another_run_is_refused_naming_the_option(tmp_path, capsys, change, named):
    base = ["fit", "wave", "--method", "em", "--hidden", "4", "--max-iter", "1", *TINY]
    ck = tmp_path / "ck.npz"
    assert main([*base, "--out", str(tmp_path / "a"), "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    assert main([*base, *change, "--out", str(tmp_path / "b"), "--checkpoint", str(ck)]) == 2
    err = capsys.readouterr().err
    assert f"exactdgn: error: --checkpoint {ck} is of another run" in err and named in err, err
    assert "--max-iter" in err and "--tol" in err  # what a resume may change
    assert not (tmp_path / "b").exists()


def test_evaluate_logs_its_estimate_and_shows_progress(tmp_path, capsys, caplog):
    # a large decoder ran silently for a long time: the estimate is logged before the exact
    # pass (a warning when it is long, as fit's) and a progress bar over its steps
    import logging

    import torch

    from exactdgn import ExactDGN
    from exactdgn.training import estimate_training_cost

    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    torch.save(dec.state_dict(), tmp_path / "dec.pt")
    X = ExactDGN.from_torch(dec, 0.2).sample(30, random_state=0)
    np.save(tmp_path / "x.npy", X)
    args = ["evaluate", str(tmp_path / "dec.pt"), str(tmp_path / "x.npy"), "--noise-std", "0.2"]
    caplog.set_level(logging.INFO, logger="exactdgn")
    assert main([*args, "--out", str(tmp_path / "a.csv")]) == 0
    est = estimate_training_cost(2, [6], 30, 3).describe()
    assert any(est in r.getMessage() for r in caplog.records), caplog.text
    assert "evaluate" in capsys.readouterr().err  # the bar
    assert main([*args, "--no-progress", "--out", str(tmp_path / "b.csv")]) == 0
    assert "evaluate:" not in capsys.readouterr().err
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
