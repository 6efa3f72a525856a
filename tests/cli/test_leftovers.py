"""CLI leftovers: bad --n-samples, resuming with other stopping settings, --out protection,
evaluate's estimate and progress (tiny data, in-process ``main``)."""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn import ExactDGN
from exactdgn.cli import build_parser, main

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


# ---------------------------------------------------------------------- audit (s12-cli)
def _units_csv(path, n=200, header=True):
    """3 columns in their own units (x100, x0.01, x3) of one latent curve."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 1))
    X = np.hstack([np.sin(z) + 0.05 * rng.normal(size=(n, 1)), z, z**2]) * [100, 0.01, 3]
    np.savetxt(path, X, delimiter=",", header="a,b,c" if header else "", comments="")
    return X


@pytest.fixture(scope="module")
def units_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    X = _units_csv(root / "w.csv")
    argv = ["fit", str(root / "w.csv"), "--max-iter", "2", "--out", str(root / "run"), *TINY]
    assert main([*argv, "--test-fraction", "0"]) == 0
    return root, X


def test_a_files_columns_are_each_scaled_by_their_own_std(units_run, tmp_path, capsys):
    # the image floor (0.1 x the largest std) scaled the x0.01 column (std 0.01) by 6.7: its
    # conditional std was then ~100x its imputation error
    root, X = units_run
    cfg = __import__("json").loads((root / "run" / "config.json").read_text())
    np.testing.assert_allclose(cfg["standardizer"]["scale"], X[:60].std(axis=0), rtol=1e-12)
    assert cfg["standardizer"]["rel_min_std"] == 1e-6
    # a constant column is floored, and said so
    Y = np.column_stack([X, np.full(len(X), 7.0)])
    np.save(tmp_path / "c.npy", Y)
    capsys.readouterr()
    assert (
        main(
            ["fit", str(tmp_path / "c.npy"), "--max-iter", "1", "--out", str(tmp_path / "o"), *TINY]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 columns of" in err and "first [3]" in err and "--std-floor" in err
    # an explicit --std-floor still applies; one outside [0, 1) is refused before the data load
    argv = ["fit", str(root / "w.csv"), "--max-iter", "1", *TINY, "--test-fraction", "0"]
    assert main([*argv, "--std-floor", "0.1", "--out", str(tmp_path / "f")]) == 0
    scale = __import__("json").loads((tmp_path / "f" / "config.json").read_text())
    assert scale["standardizer"]["scale"][1] == pytest.approx(0.1 * X[:60, 0].std())
    capsys.readouterr()
    assert main(["fit", "no/such.csv", "--std-floor", "1", "--out", str(tmp_path / "g")]) == 2
    assert "--std-floor must be in [0, 1)" in capsys.readouterr().err


def test_the_std_floor_rule_is_in_the_help():
    fit = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    text = " ".join(fit.split())
    assert "0.1 for image data" in text and "1e-06 for files and toy sets" in text


def test_image_data_keep_the_image_floor():
    from exactdgn.cli import _std_floor

    assert _std_floor(None, {"kind": "image"}) == 0.1  # digits, mnist: the demo's numbers
    assert _std_floor(None, {"kind": "file"}) == 1e-6
    assert _std_floor(0.5, {"kind": "image"}) == 0.5


def test_score_split_of_a_file_reuses_the_runs_n_samples(tmp_path, capsys):
    # the run's --n-samples was reused for toy data only: "--split test needs the data the
    # model was fit on (w.csv)" unless it was given again
    _units_csv(tmp_path / "w.csv", n=100)
    out = tmp_path / "fn"
    assert (
        main(
            [
                "fit",
                str(tmp_path / "w.csv"),
                "--n-samples",
                "40",
                "--max-iter",
                "1",
                "--out",
                str(out),
                *TINY[2:],
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["score", str(out), str(tmp_path / "w.csv"), "--split", "test"]) == 0
    cap = capsys.readouterr()
    assert "over 8 points" in cap.out and "the first 40 rows" in cap.err
    assert (
        main(["score", str(out), str(tmp_path / "w.csv"), "--n-samples", "90", "--split", "test"])
        == 2
    )
    err = capsys.readouterr().err
    assert "of shape [40, 3]), got" in err and "of shape [90, 3]" in err


def test_score_split_of_digits_reuses_the_runs_n_samples(tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["fit", "digits:3", "--n-samples", "30", "--max-iter", "1", "--hidden", "3"]
    assert main([*argv, "--init", "pca", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", str(out), "digits:3", "--split", "test"]) == 0
    assert "over 6 points" in capsys.readouterr().out


def _start_up_interrupt(tmp_path, module):
    """``python -m exactdgn`` with a Ctrl-C raised while ``module`` is imported."""
    import subprocess
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(
        "import runpy, sys\n"
        "import exactdgn\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['exactdgn', 'partition', '--layers', '1', '2', '2']\n"
        "runpy.run_module('exactdgn', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )


def test_ctrl_c_during_the_commands_imports_exits_130_without_a_traceback(tmp_path):
    # the command line's imports ran before main()'s Ctrl-C handling: a ~40-line traceback
    p = _start_up_interrupt(tmp_path, "exactdgn.evaluation")
    assert p.returncode == 130, p.stderr
    assert p.stderr == "exactdgn: interrupted\n" and p.stdout == ""


def test_ctrl_c_while_scikit_learn_is_imported_exits_130(tmp_path):
    # ``import exactdgn`` loaded scikit-learn, scipy and numpy (~2 s) before any handling:
    # the package's names are now imported on first use
    p = _start_up_interrupt(tmp_path, "sklearn")
    assert p.returncode == 130, p.stderr
    assert p.stderr == "exactdgn: interrupted\n" and p.stdout == ""


def test_the_package_imports_its_names_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys, exactdgn\n"
        "assert not {'numpy', 'sklearn', 'scipy'} & set(sys.modules), sys.modules.keys()\n"
        "import exactdgn.model\n"  # loads the subpackage exactdgn.partition on the way
        "from exactdgn import ExactDGN, partition\n"
        "assert callable(partition) and exactdgn.partition is partition\n"
        "from exactdgn.partition import Partition\n"
        "assert exactdgn.gaussian.log_mass and 'gaussian' in dir(exactdgn)\n"
        "import pickle, cloudpickle\n"  # by name, as a module (dask ships functions so)
        "assert pickle.loads(cloudpickle.dumps(exactdgn)) is exactdgn\n"
        "assert pickle.loads(cloudpickle.dumps(lambda: exactdgn.ExactDGN))() is ExactDGN\n"
        "try:\n"
        "    exactdgn.nothing\n"
        "except AttributeError as e:\n"
        "    assert 'nothing' in str(e)\n"
        "else:\n"
        "    raise SystemExit(1)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_ctrl_c_while_the_arguments_are_parsed_exits_130(tmp_path):
    import subprocess
    import sys

    code = (
        "import exactdgn.cli as c\n"
        "def parser():\n"
        "    raise KeyboardInterrupt\n"
        "c.build_parser = parser\n"
        "c.run()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 130 and p.stderr == "exactdgn: interrupted\n", p.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--layers", "3", "4", "5", "--plot", "p3.png"], "--plot draws latent dimension 1 or 2"),
        (["--layers", "2", "4", "5", "--plot", "p.xyz"], "matplotlib cannot write .xyz files"),
        (["MODEL3", "--plot", "p3.png"], "--plot draws latent dimension 1 or 2, not 3"),
        (["EM", "--plot", "p.xyz"], "use one of"),
        (["EM", "--plot", "FILE/p.png"], "cannot be made"),
    ],
)
def test_partition_plot_is_checked_before_the_partition(em_run, tmp_path, capsys, argv, message):
    # the partition was enumerated and printed, then --plot refused
    from exactdgn import Decoder

    model3 = tmp_path / "m3.npz"
    ExactDGN.from_decoder(Decoder.random([3, 4, 5], seed=0), 0.1).save(model3)
    (tmp_path / "FILE").write_text("")
    subst = {"MODEL3": str(model3), "EM": str(em_run / "em")}
    argv = [subst.get(a, a).replace("FILE", str(tmp_path / "FILE")) for a in argv]
    argv = [str(tmp_path / a) if a.startswith("p") else a for a in argv]
    capsys.readouterr()
    assert main(["partition", *argv]) == 2
    cap = capsys.readouterr()
    assert message in cap.err and cap.out == ""
    assert not list(tmp_path.glob("p*"))


def test_impute_keeps_a_csv_header(units_run, tmp_path):
    root, X = units_run
    holes = X[:20].copy()
    holes[::2, 1] = np.nan
    for header in (True, False):
        src = tmp_path / f"h{header}.csv"
        np.savetxt(src, holes, delimiter=",", header="a,b,c" if header else "", comments="")
        out, sd = tmp_path / f"f{header}.csv", tmp_path / f"s{header}.csv"
        argv = ["impute", str(root / "run"), str(src), "--out", str(out), "--std-out", str(sd)]
        assert main(argv) == 0
        for path in (out, sd):
            first = path.read_text().splitlines()[0]
            assert (first == "a,b,c") == header, (path, first)
        filled = np.loadtxt(out, delimiter=",", skiprows=int(header))
        assert filled.shape == (20, 3) and not np.isnan(filled).any()


@pytest.mark.parametrize("command", ["score", "impute"])
def test_a_data_file_of_another_width_is_named(units_run, tmp_path, capsys, command):
    root, _ = units_run
    two = tmp_path / "two.csv"
    two.write_text("1,2\n3,nan\n")
    argv = [command, str(root / "run"), str(two)]
    argv += ["--out", str(tmp_path / "o.csv")] if command == "impute" else []
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{two} has 2 columns but the model {root / 'run'} was fit on data with 3" in err


def test_fit_warnings_reach_stderr_when_issued_not_after_the_fit(capsys):
    # an up-front warning (cost estimate, latent_dim > D) was printed only once fit returned,
    # i.e. after the long run it warned about
    import warnings

    from exactdgn.cli import _run_quietly

    def long_fit():
        warnings.warn("this will be slow", UserWarning, stacklevel=1)
        during = capsys.readouterr().err
        warnings.warn("this will be slow", UserWarning, stacklevel=1)  # printed once
        warnings.warn("another", RuntimeWarning, stacklevel=1)
        return during

    during = _run_quietly(long_fit)
    assert during == "exactdgn: warning: UserWarning: this will be slow\n"
    assert capsys.readouterr().err == "exactdgn: warning: RuntimeWarning: another\n"
    with pytest.warns(UserWarning, match="after"):  # the filters and showwarning are restored
        warnings.warn("after", UserWarning, stacklevel=1)
