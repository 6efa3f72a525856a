"""End-to-end tests of the ``exactdgn`` command line on tiny data (in-process ``main``)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from exactdgn import ExactDGN
from exactdgn.cli import build_parser, main

TINY = ["--n-samples", "80", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rc_em = main(["fit", "wave", "--max-iter", "2", "--out", str(root / "em"), *TINY])
    rc_vae = main(
        [
            "fit",
            "wave",
            "--method",
            "vae",
            "--max-iter",
            "2",
            "--k-is",
            "50",
            "--out",
            str(root / "vae"),
            *TINY,
        ]
    )
    return root, rc_em, rc_vae


def test_fit_em_writes_model_config_history(runs, capsys):
    root, rc, _ = runs
    assert rc == 0
    d = root / "em"
    cfg = json.loads((d / "config.json").read_text())
    hist = json.loads((d / "history.json").read_text())
    res = json.loads((d / "results.json").read_text())
    assert cfg["method"] == "auto" and cfg["layer_sizes"] == [1, 12, 2]
    assert cfg["standardizer"] is None  # 2-D toy data are not standardized by default
    assert len(hist) == 3  # iteration 0 and two iterations
    model = ExactDGN.load(d / "model.npz")
    # the printed/recorded train log-likelihood is the model's exact one on the train split
    X = __import__("exactdgn.datasets", fromlist=["wave"]).wave(80, random_state=0)
    test = np.zeros(80, dtype=bool)
    test[cfg["test_index"]] = True
    assert res["train_loglik"] == pytest.approx(model.score(X[~test]), rel=1e-12)
    assert res["test_loglik"] == pytest.approx(model.score(X[test]), rel=1e-12)
    assert hist[-1]["loglik"] == pytest.approx(res["train_loglik"], rel=1e-12)


def test_fit_lbfgs_with_its_defaults(tmp_path):
    out = tmp_path / "lbd"
    assert main(["fit", "wave", "--method", "lbfgs", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["max_iter"] == ExactDGN().max_iter


def test_default_method_is_the_estimators():
    from exactdgn.cli import DEFAULT_METHOD

    assert DEFAULT_METHOD == ExactDGN().method


def test_ctrl_c_then_resume_from_checkpoint(tmp_path, capsys, monkeypatch):
    """Ctrl-C: exit 130, no traceback, no output folder; the same command resumes."""
    from exactdgn.training import EMTrainer

    ck = tmp_path / "ck" / "state.npz"
    args = ["fit", "wave", "--method", "em", "--max-iter", "12", "--tol", "0", *TINY]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    real, calls = EMTrainer.step, {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] == 10:  # after init="auto"'s 3 x 3 scouting steps (d = 1), then one more
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(EMTrainer, "step", step)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--checkpoint", str(ck)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and str(ck) in err
    assert not out.exists() and ck.exists()
    monkeypatch.setattr(EMTrainer, "step", real)
    assert main([*args, "--out", str(out), "--checkpoint", str(ck)]) == 0
    assert "resuming" in capsys.readouterr().err
    a, b = ExactDGN.load(tmp_path / "ref" / "model.npz"), ExactDGN.load(out / "model.npz")
    assert [h["loglik"] for h in a.history_] == [h["loglik"] for h in b.history_]
    np.testing.assert_array_equal(a.decoder_.weights[0], b.decoder_.weights[0])
    # results.json: the resumed command's own time and every iteration's, those before too
    res = json.loads((out / "results.json").read_text())
    hist = json.loads((out / "history.json").read_text())
    assert res["seconds_iterations"] == pytest.approx(sum(h["seconds"] for h in hist))
    assert len(hist) == 13  # the rows from before the Ctrl-C are in it


def test_ctrl_c_while_a_checkpoint_is_written_is_an_interrupt(tmp_path, capsys, monkeypatch):
    """A Ctrl-C that lands while zipfile closes a checkpoint member was reported as
    'exactdgn: error: Can't close the ZIP file ...' with exit 2 (seen in CI under load):
    exit 130, the earlier checkpoint intact, and the same command resumes to the
    uninterrupted result."""
    import signal
    import zipfile

    ck = tmp_path / "ck" / "state.npz"
    args = ["fit", "wave", "--method", "em", "--max-iter", "12", "--tol", "0", *TINY]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    real, fired = zipfile._ZipWriteFile.close, []

    def close(self):
        if ck.exists() and not fired:  # inside the second checkpoint's write
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
        return real(self)

    monkeypatch.setattr(zipfile._ZipWriteFile, "close", close)
    out = tmp_path / "run"
    capsys.readouterr()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        assert main([*args, "--out", str(out), "--checkpoint", str(ck)]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert fired and "interrupted" in err and "error" not in err and "Traceback" not in err
    assert not out.exists() and ck.exists() and not list(ck.parent.glob("*.tmp*"))
    monkeypatch.setattr(zipfile._ZipWriteFile, "close", real)
    assert main([*args, "--out", str(out), "--checkpoint", str(ck)]) == 0
    assert "resuming" in capsys.readouterr().err
    a, b = ExactDGN.load(tmp_path / "ref" / "model.npz"), ExactDGN.load(out / "model.npz")
    assert [h["loglik"] for h in a.history_] == [h["loglik"] for h in b.history_]


def test_an_error_raised_while_handling_a_ctrl_c_is_an_interrupt(tmp_path, capsys, monkeypatch):
    """Cleanup code that fails after a Ctrl-C replaces the KeyboardInterrupt with its own
    error (the interrupt its context): still 'interrupted', exit 130, not a data error."""
    import exactdgn.cli as cli

    def load_data(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("cleanup failed") from None

    monkeypatch.setattr(cli, "load_data", load_data)
    assert main(["fit", "wave", "--out", str(tmp_path / "run"), *TINY]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "cleanup failed" not in err
    monkeypatch.undo()
    assert main(["fit", "wave", "--out", str(tmp_path / "run"), "--max-iter", "1", *TINY]) == 0


def test_ctrl_c_before_the_first_checkpoint_promises_nothing(tmp_path, capsys, monkeypatch):
    """Ctrl-C while init="auto" scouts (nothing saved yet): no folder for the checkpoint is
    left behind, no claim that it keeps an iteration, one "interrupted" line."""
    from exactdgn.training import EMTrainer

    def step(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(EMTrainer, "step", step)
    ck, out = tmp_path / "ck" / "state.npz", tmp_path / "run"
    args = ["fit", "wave", "--method", "em", "--out", str(out), "--checkpoint", str(ck), *TINY]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("interrupted") == 1, err
    assert "keeps the last iteration" not in err and "no checkpoint" in err
    assert not out.exists() and not ck.parent.exists()


def test_fit_lbfgs(tmp_path):
    out = tmp_path / "lb"
    assert (
        main(["fit", "wave", "--method", "lbfgs", "--max-iter", "3", "--out", str(out), *TINY]) == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    hist = json.loads((out / "history.json").read_text())
    assert cfg["method"] == "lbfgs" and 2 <= len(hist) <= 4
    assert all(b["loglik"] >= a["loglik"] for a, b in itertools.pairwise(hist))
    assert ExactDGN.load(out / "model.npz").method == "lbfgs"


def test_fit_vae_saves_exact_model_and_estimates(runs):
    root, _, rc = runs
    assert rc == 0
    res = json.loads((root / "vae" / "results.json").read_text())
    model = ExactDGN.load(root / "vae" / "model.npz")
    assert model.decoder_.layer_sizes == [1, 12, 2]
    for k in ("train_elbo", "train_iwae5", "train_is50", "test_gap_mean"):
        assert np.isfinite(res[k])
    # the gap exact - ELBO is a KL divergence (up to the ELBO's Monte Carlo error)
    assert res["train_gap_mean"] > -3 * res["train_elbo_stderr_mean"]
    # history.json: the same rows as an exact run's, one per epoch after the start
    hist = json.loads((root / "vae" / "history.json").read_text())
    em_hist = json.loads((root / "em" / "history.json").read_text())
    assert [h["iter"] for h in hist] == [0, 1, 2] and res["n_iter"] == 2
    assert all(set(h) == set(em_hist[0]) for h in hist) and hist[-1]["method"] == "vae"


def test_score_sample_partition_report(runs, tmp_path, capsys):
    root, _, _ = runs
    capsys.readouterr()
    csv = tmp_path / "s.csv"
    assert main(["score", str(root / "em"), "wave", "--split", "test", "--out", str(csv)]) == 0
    out = capsys.readouterr().out
    res = json.loads((root / "em" / "results.json").read_text())
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert table.shape == (16, 3)
    assert table[:, 1].mean() == pytest.approx(res["test_loglik"], rel=1e-12)
    assert f"{res['test_loglik']:.6f}" in out

    npy = tmp_path / "x.npy"
    assert main(["sample", str(root / "em"), "-n", "7", "--seed", "1", "--out", str(npy)]) == 0
    S = np.load(npy)
    assert S.shape == (7, 2)
    ref = ExactDGN.load(root / "em" / "model.npz").sample(7, random_state=1)
    np.testing.assert_array_equal(S, ref)
    capsys.readouterr()
    assert main(["sample", str(root / "em"), "-n", "7", "--seed", "1"]) == 0  # CSV on stdout
    printed = np.loadtxt(io.StringIO(capsys.readouterr().out), delimiter=",")
    np.testing.assert_array_equal(printed, ref)  # every digit (it printed 10)

    png = tmp_path / "p.png"
    capsys.readouterr()
    assert main(["partition", str(root / "em"), "--plot", str(png)]) == 0
    got = capsys.readouterr()  # stdout: the JSON alone (| json.load), the status on stderr
    summ = json.loads(got.out)
    assert f"plot written to {png}" in got.err
    assert summ["n_regions"] == ExactDGN.load(root / "em" / "model.npz").n_regions_
    assert png.stat().st_size > 0
    assert main(["partition", "--layers", "2", "8", "3", "--seed", "1"]) == 0

    md = tmp_path / "t.md"
    capsys.readouterr()
    assert main(["report", str(root), "--out", str(md)]) == 0
    text = md.read_text()
    assert "em/results.json" in text and "vae/results.json" in text
    assert text.count("\n") == 4  # header, rule, two rows


def test_standardized_image_data(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(60, 5)) * [1, 2, 3, 4, 5] + 10
    f = tmp_path / "x.npy"
    np.save(f, X)
    out = tmp_path / "m"
    assert (
        main(
            [
                "fit",
                str(f),
                "--max-iter",
                "2",
                "--hidden",
                "4",
                "--out",
                str(out),
                "--no-progress",
                "--test-fraction",
                "0",
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["standardizer"] is not None  # a file with more than 2 columns
    res = json.loads((out / "results.json").read_text())
    scale = np.asarray(cfg["standardizer"]["scale"])
    assert res["train_loglik_data"] == pytest.approx(
        res["train_loglik"] - np.log(scale).sum(), rel=1e-12
    )
    # samples come back in data units
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "2000", "--seed", "0", "--out", str(npy)]) == 0
    S = np.load(npy)
    assert np.all(np.abs(S.mean(axis=0) - X.mean(axis=0)) < 0.3 * X.std(axis=0))
    assert np.all(S.std(axis=0) > 0.3 * X.std(axis=0))  # not left in standardized units


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "nosuchdata", "--out", "x"], "unknown data set 'nosuchdata'"),
        (["fit", "mnist", "--out", "x"], "mnist:PATH"),
        (["score", "no/such/dir", "wave"], "does not exist"),
        (["partition"], "either a MODEL"),
        (["fit", "wave", "--test-fraction", "1.5", "--out", "x"], "--test-fraction must be in"),
    ],
)
def test_errors_exit_nonzero_with_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and message in err
    assert not (tmp_path / "x").exists()  # no empty output folder is left behind


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "exactdgn fit wave" in text and "exactdgn demo" in text
    for cmd in ("fit", "score", "sample", "partition", "report", "demo"):
        assert cmd in text
    help_fit = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert "examples:" in help_fit and "--method" in help_fit


def test_missing_subcommand_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_sigint_stops_a_cli_fit_quickly_and_keeps_the_checkpoint(tmp_path):
    """A real Ctrl-C (SIGINT) in a running ``exactdgn fit``: exit 130, no traceback.

    The child is started with SIGINT at its default (so Python turns it into a
    KeyboardInterrupt): a test process started under ``make`` from a background shell has
    SIGINT ignored, which a child would inherit and then run to the end."""
    import signal
    import subprocess
    import sys
    import time

    ck, out = tmp_path / "ck.npz", tmp_path / "out"
    cmd = [sys.executable, "-m", "exactdgn.cli", "fit", "circle", "--hidden", "16", "16"]
    cmd += ["--max-iter", "200", "--tol", "0", "--n-samples", "400", "--no-progress"]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # exec resets it
    try:
        p = subprocess.Popen(
            [*cmd, "--out", str(out), "--checkpoint", str(ck)], stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    t0 = time.time()
    while not ck.exists() and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    t_int = time.time()
    err = p.communicate(timeout=60)[1]
    waited = time.time() - t_int
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert ck.exists() and not out.exists()
    assert waited < 30  # generous under load; typically well under a second


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_threads_below_one_is_a_usage_error(threads, capsys):
    """``--threads -1`` ended in torch's RuntimeError traceback; ``0`` was silently ignored."""
    with pytest.raises(SystemExit) as exc:
        main(["--threads", threads, "partition", "--layers", "1", "3", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threads" in err and "Traceback" not in err


def test_global_options_after_the_command():
    """``exactdgn fit ... --threads 2`` and ``exactdgn score ... -v`` were 'unrecognized
    arguments': the global options are taken after the command too, where they replace the
    ones given before it."""
    parser = build_parser()
    a = parser.parse_args(["partition", "--layers", "1", "3", "2", "--threads", "3", "-vv"])
    assert (a.threads, a.verbose) == (3, 2)
    b = parser.parse_args(["--threads", "2", "-v", "partition", "--layers", "1", "3", "2"])
    assert (b.threads, b.verbose) == (2, 1)
    c = parser.parse_args(["--threads", "2", "partition", "--layers", "1", "3", "--threads", "4"])
    assert c.threads == 4
    d = parser.parse_args(["partition", "--layers", "1", "3", "2"])
    assert (d.threads, d.verbose) == (1, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["partition", "--layers", "1", "3", "--threads", "0"])


def test_help_shows_every_default():
    """Options without a help text (partition --seed, evaluate --k-is, demo --seed, the
    top-level --threads) showed no default in ``--help``."""
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name, p in [("exactdgn", parser), *subs.items()]:
        for action in p._actions:
            if not action.option_strings or action.default in (None, False, "==SUPPRESS=="):
                continue
            if action.required or action.help == "==SUPPRESS==":
                continue
            shown = p._get_formatter()._get_help_string(action) or ""
            assert "%(default)" in shown and action.help, (name, action.option_strings)


@pytest.mark.parametrize(
    ("method", "option"),
    [
        ("vae", ["--checkpoint", "ck.npz"]),
        ("iwae", ["--tol", "0.1"]),
        ("vae", ["--n-init", "3"]),
        ("vae", ["--weight-decay", "0.1"]),
        ("em", ["--lr", "0.1"]),
        ("lbfgs", ["--k", "3"]),
        ("auto", ["--batch-size", "16"]),
    ],
)
def test_options_of_the_other_method_family_are_refused(method, option, capsys, tmp_path):
    """``--checkpoint`` with ``--method vae`` wrote no checkpoint (a Ctrl-C lost the run the
    user believed saved), and the exact methods ignored the VAE options (and back): each was
    accepted and silently ignored."""
    out = tmp_path / "o"
    argv = ["fit", "wave", "--method", method, "--out", str(out), *option, *TINY]
    assert main([*argv, "--max-iter", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and option[0] in err and method in err
    assert not out.exists() and not (tmp_path / "ck.npz").exists()


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_an_out_that_cannot_be_a_folder_is_refused_before_training(where, tmp_path, capsys):
    """``--out`` naming a file (or a path below one) failed with ``[Errno 17] File exists``
    only after the whole training had run."""
    from exactdgn.training import EMTrainer

    taken = tmp_path / "taken.csv"
    taken.write_text("1,2\n")
    out = taken if where == "file" else taken / "sub"
    calls = []
    real = EMTrainer.step
    argv = ["fit", "wave", "--method", "em", "--max-iter", "1", "--out", str(out), *TINY]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EMTrainer, "step", lambda self: calls.append(1) or real(self))
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error: --out") and "taken.csv" in err
    assert not calls  # refused before any training
    assert taken.read_text() == "1,2\n"


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_write_of_the_run_leaves_no_partial_folder(
    existing, tmp_path, capsys, monkeypatch
):
    """Ctrl-C (or an error) while ``fit`` wrote its files left ``--out`` with ``model.npz`` and
    no ``config.json`` (a run folder ``score`` then read without its split), or an earlier
    run's folder with a mix of both runs' files; also the parent folders made for it."""
    import exactdgn.cli as cli

    out = tmp_path / "new parent" / "run"
    if existing:
        assert main(["fit", "wave", "--max-iter", "1", "--out", str(out), *TINY]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real = cli.write_json

    def write_json(path, obj):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(cli, "write_json", write_json)
    argv = ["fit", "wave", "--max-iter", "2", "--seed", "1", "--out", str(out), *TINY]
    if existing:  # replacing the earlier run (without --overwrite it is refused)
        argv.append("--overwrite")
    assert main(argv) == 130
    assert "Traceback" not in capsys.readouterr().err
    if existing:  # the earlier run, whole
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert sorted(p.name for p in out.parent.iterdir()) == ["run"]
    else:
        assert not out.parent.exists()


def test_score_output_is_written_atomically(runs, tmp_path, monkeypatch, capsys):
    """An interrupted ``score --out`` left a half-written CSV in place of the earlier one."""
    root, _, _ = runs
    csv = tmp_path / "scores.csv"
    csv.write_text("earlier\n")

    def savetxt(fname, *args, **kwargs):  # half a file, then Ctrl-C
        if hasattr(fname, "write"):
            fname.write(b"index,log_px")
        else:
            Path(fname).write_text("index,log_px")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savetxt", savetxt)
    assert main(["score", str(root / "em"), "wave", "--n-samples", "20", "--out", str(csv)]) == 130
    assert csv.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


@pytest.mark.parametrize(
    ("data", "option"),
    [
        ("wave", ["--key", "X"]),
        ("wave", ["--classes", "3"]),
        ("two_moons", ["--downsample", "7"]),
        ("digits:3", ["--data-noise", "0.5"]),
        ("digits:3", ["--data-seed", "4"]),
        ("digits", ["--downsample", "4"]),
    ],
)
@pytest.mark.parametrize("command", ["fit", "score"])
def test_data_options_for_another_kind_of_data_are_refused(
    command, data, option, runs, tmp_path, capsys
):
    """``fit wave --key X``, ``fit digits:3 --data-noise 0.5`` ... ran, the option silently
    ignored (the user believed the data were changed by it)."""
    root, _, _ = runs
    head = ["fit", data, "--out", str(tmp_path / "o"), "--max-iter", "1", "--no-progress"]
    argv = head if command == "fit" else ["score", str(root / "em"), data]
    assert main([*argv, *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and option[0] in err and data in err
    assert not (tmp_path / "o").exists()


def test_split_of_a_model_without_its_run_config_says_what_is_missing(runs, tmp_path, capsys):
    """``score MODEL.npz DATA --split test`` for a model copied away from its run folder said
    "needs the data the model was fit on (None)"."""
    import shutil

    root, _, _ = runs
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(root / "em" / "model.npz", bare / "model.npz")
    assert main(["score", str(bare), "wave", "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "None" not in err and "config.json" in err


@pytest.mark.parametrize("text", ["5", '{"rows": 5}', b"\xff\xfe"])
def test_report_names_a_results_file_it_cannot_read(text, tmp_path, capsys):
    """A results JSON holding a number ended in an AttributeError traceback; ``{"rows": 5}``
    said "'int' object is not iterable" and undecodable bytes a codec error, neither naming
    the file."""
    f = tmp_path / "run" / "results.json"
    f.parent.mkdir()
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error:") and str(f) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["partition", "--layers", "1", "3", "2"],
        ["sample", "MODEL", "-n", "2"],
        ["demo", "--quick", "--no-progress", "--out", "OUT"],
        ["fit", "wave", "--out", "OUT", "--max-iter", "1", *TINY],
    ],
)
def test_a_negative_seed_is_a_usage_error_naming_the_option(argv, runs, tmp_path, capsys):
    """``sample --seed -1`` and ``partition --seed -1`` said numpy's "expected non-negative
    integer"; ``demo --seed -1`` also left an empty --out folder behind."""
    root, _, _ = runs
    out = tmp_path / "new" / "out"
    argv = [{"MODEL": str(root / "em"), "OUT": str(out)}.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--seed", "-1"])
    assert exc.value.code == 2
    assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_an_interrupted_demo_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """Ctrl-C during ``exactdgn demo`` left the --out folder it had made, with part of the
    report."""
    import exactdgn.cli as cli

    def run_demo(out, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "curves_wave.png").write_bytes(b"part")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_demo", run_demo)
    assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path / "a" / "r")]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_impute_refuses_a_seed_without_draws(runs, tmp_path, capsys):
    """``impute --seed 3`` with the default ``--method mean`` was silently accepted."""
    root, _, _ = runs
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2\nnan,1\n3,nan\n")
    out = tmp_path / "f.npy"
    argv = ["impute", str(root / "em"), str(holes), "--out", str(out), "--seed", "3"]
    assert main(argv) == 2
    assert "--seed is the seed of --method sample" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--method", "sample"]) == 0


def test_impute_refuses_std_out_onto_its_out(runs, tmp_path, capsys):
    """``impute RUN holes.csv --out f.npy --std-out f.npy`` wrote the std over the filled data
    (exit 0: "2 missing values filled ... f.npy", the file held the std)."""
    root, _, _ = runs
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2\nnan,1\n3,nan\n")
    out = tmp_path / "f.npy"
    argv = ["impute", str(root / "em"), str(holes), "--out", str(out)]
    assert main([*argv, "--std-out", str(tmp_path / "." / "f.npy")]) == 2
    assert "--std-out" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "command, option",
    [
        (["score", "EM", "wave", "--n-samples", "20"], "--out"),
        (["impute", "EM", "HOLES"], "--out"),
        (["impute", "EM", "HOLES", "--out", "OK.npy"], "--std-out"),
        (["sample", "EM", "-n", "3"], "--out"),
    ],
)
def test_an_output_file_that_is_a_folder_is_refused_before_the_work(
    runs, tmp_path, capsys, command, option
):
    """``--out`` naming a folder (``score ... --out results``) failed after the work, with
    ``[Errno 21] Is a directory: 'results.tmp123' -> 'results'``; ``impute --std-out`` naming
    one had written ``--out`` already."""
    root, _, _ = runs
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2\nnan,1\n3,nan\n")
    folder = tmp_path / "taken.npy"
    folder.mkdir()
    subst = {"EM": str(root / "em"), "HOLES": str(holes), "OK.npy": str(tmp_path / "ok.npy")}
    argv = [subst.get(a, a) for a in command] + [option, str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{option} {folder} is a folder: give a file path" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holes.csv", "taken.npy"]
    assert list(folder.iterdir()) == []


def test_a_checkpoint_below_a_file_is_refused_before_training(tmp_path, capsys):
    """``--checkpoint taken.csv/ck.npz`` failed with ``[Errno 17] File exists: 'taken.csv'``
    at the first save, after the scouting and first iteration had run."""
    from exactdgn.training import EMTrainer

    taken = tmp_path / "taken.csv"
    taken.write_text("1,2\n")
    calls = []
    real = EMTrainer.step
    argv = ["fit", "wave", "--method", "em", "--max-iter", "1", "--out", str(tmp_path / "o")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EMTrainer, "step", lambda self: calls.append(1) or real(self))
        assert main([*argv, "--checkpoint", str(taken / "ck.npz"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exactdgn: error: --checkpoint") and "taken.csv" in err
    assert not calls


@pytest.mark.parametrize("cmd", ["score", "impute", "fit"])
def test_chunk_rows_is_a_positive_integer_given_with_a_cluster(cmd, runs, tmp_path, capsys):
    """``--chunk-rows 0`` was a ZeroDivisionError traceback, ``-3`` "__len__() should return
    >= 0"; without --workers / --scheduler the option was silently ignored."""
    root, _, _ = runs
    data = tmp_path / "d.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(20, 2)), delimiter=",")
    argv = {
        "score": ["score", str(root / "em"), str(data)],
        "impute": ["impute", str(root / "em"), str(data), "--out", str(tmp_path / "f.csv")],
        "fit": ["fit", str(data), "--out", str(tmp_path / "run"), "--max-iter", "1", *TINY[2:]],
    }[cmd]
    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--workers", "1", "--chunk-rows", bad])
        assert exc.value.code == 2
        assert "--chunk-rows: expected an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--workers", "0"])
    assert exc.value.code == 2 and "--workers: expected an integer >= 1" in capsys.readouterr().err
    assert main([*argv, "--chunk-rows", "10"]) == 2
    err = capsys.readouterr().err
    assert "--chunk-rows" in err and "--workers N or --scheduler ADDRESS" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "f.csv").exists()


def test_a_reader_that_stops_ends_the_command_quietly(runs, tmp_path):
    """``exactdgn sample RUN -n 200000 | head -1`` printed ``exactdgn: error: [Errno 32]
    Broken pipe``; it ends quietly now, with the shell's code for SIGPIPE."""
    import subprocess
    import sys

    root, _, _ = runs
    cmd = [sys.executable, "-m", "exactdgn", "sample", str(root / "em"), "-n", "200000"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.readline()
        proc.stdout.close()  # the reader stops
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert code == 141 and err == "", (code, err)


def test_score_split_knows_the_file_not_its_spelling(tmp_path, monkeypatch, capsys):
    """``score RUN ./d.npy --split test`` (the run fit on ``d.npy``) was refused, an absolute
    path too; from another folder a different ``d.npy`` of the same shape was scored as the
    run's test split (rc 0, -21035 nats/point). The run records DATA's resolved path and a
    digest of its values."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(50, 2)))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "d.npy", "--out", "r", "--max-iter", "2", "--no-progress"]) == 0
    capsys.readouterr()
    scores = []
    for spelling in ("d.npy", "./d.npy", str(tmp_path / "d.npy")):
        assert main(["score", "r", spelling, "--split", "test"]) == 0, capsys.readouterr().err
        scores.append(capsys.readouterr().out)
    assert scores[0] == scores[1] == scores[2] and "over 10 points" in scores[0]
    # the same values in another file (a CSV copy of the data): its split, not a refusal
    X0 = np.load(tmp_path / "d.npy")
    np.savetxt(tmp_path / "d.csv", X0, delimiter=",", fmt="%.17g")
    assert main(["score", "r", "d.csv", "--split", "test"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == scores[0].replace("d.npy", "d.csv")
    (tmp_path / "other").mkdir()
    np.save(tmp_path / "other" / "d.npy", 100.0 + np.zeros((50, 2)))
    monkeypatch.chdir(tmp_path / "other")
    assert main(["score", "../r", "d.npy", "--split", "test"]) == 2
    assert "needs the data the model was fit on" in capsys.readouterr().err
    # the same file changed since the fit
    np.save(tmp_path / "d.npy", rng.normal(size=(50, 2)))
    assert main(["score", "../r", str(tmp_path / "d.npy"), "--split", "test"]) == 2
    assert "other values than" in capsys.readouterr().err


def test_fit_names_the_files_row_with_nothing_observed(tmp_path, capsys):
    """In memory, a row of DATA with every value missing was named by its row of the training
    split ("first rows [4]" for file row 7)."""
    X = np.random.default_rng(0).normal(size=(60, 3))
    X[7] = np.nan
    np.save(tmp_path / "d.npy", X)
    argv = ["fit", str(tmp_path / "d.npy"), "--out", str(tmp_path / "r"), "--max-iter", "1"]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "first rows [7] (numbered from 0 in the file)" in err and not (tmp_path / "r").exists()


def test_options_that_do_not_apply_and_empty_paths_are_errors(runs, tmp_path, capsys):
    """``fit --method vae --k 0``, ``--std-floor`` on data that is not standardized,
    ``sample --standardized`` of a model without standardization and ``--out ""`` (an unset
    shell variable: the run was written into the current folder) were silently taken."""
    root = runs[0]
    cases = [
        (["fit", "wave", "--method", "vae", "--k", "3"], "--k applies to --method iwae"),
        (["fit", "wave", "--std-floor", "0.5"], "--std-floor applies to standardized data"),
        (["sample", str(root / "em"), "-n", "3", "--standardized"], "has no standardization"),
    ]
    for argv, said in cases:
        out = [] if argv[0] == "sample" else ["--out", str(tmp_path / "r"), "--no-progress"]
        assert main([*argv, *out]) == 2
        assert said in capsys.readouterr().err
        assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as exc:
        main(["fit", "wave", "--out", "", "--max-iter", "1"])
    assert exc.value.code == 2 and "--out is empty" in capsys.readouterr().err


def test_noise_std_array_report_out_and_entries_are_checked(runs, tmp_path, capsys):
    """A (2, 2) --noise-std file was flattened into 4 stds; ``report --out FOLDER`` printed
    the table, then failed naming a temporary file; a results file ``[1, 2]`` was skipped."""
    root = runs[0]
    np.save(tmp_path / "s.npy", np.full((2, 2), 0.1))
    X = np.zeros((5, 4))
    np.save(tmp_path / "x.npy", X)
    dec = ExactDGN.load(root / "em" / "model.npz").decoder_
    torch = pytest.importorskip("torch")
    torch.save(dec.to_torch().state_dict(), tmp_path / "dec.pt")
    argv = ["evaluate", str(tmp_path / "dec.pt"), str(tmp_path / "x.npy")]
    assert main([*argv, "--noise-std", str(tmp_path / "s.npy")]) == 2
    assert "holds an array of shape (2, 2)" in capsys.readouterr().err
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "results.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path / "rep")]) == 2
    assert "holds a list with a int in it" in capsys.readouterr().err
    (tmp_path / "rep" / "results.json").write_text('{"a": 1}')
    assert main(["report", str(tmp_path / "rep"), "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "is a folder" in captured.err and captured.out == ""


def test_impute_takes_back_out_when_std_out_cannot_be_written(runs, tmp_path, capsys):
    """``impute --out new/deep/f.csv --std-out /proc/sd.csv``: the std's write failed after
    --out and its new folders were made, and the error named the temporary file."""
    root = runs[0]
    X = ExactDGN.load(root / "em" / "model.npz").sample(10, random_state=0)
    X[::2, 1] = np.nan
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "new" / "deep" / "f.csv"
    argv = ["impute", str(root / "em"), str(tmp_path / "x.npy"), "--out", str(out)]
    assert main([*argv, "--std-out", "/proc/sd.csv"]) == 2
    err = capsys.readouterr().err
    assert "cannot write /proc/sd.csv" in err and ".tmp" not in err
    assert not (tmp_path / "new").exists()


def test_outputs_never_replace_inputs_or_a_runs_files(runs, tmp_path, capsys):
    """``score`` / ``impute`` / ``report`` wrote over their own inputs (rc 0, the data or the
    model gone): ``--out`` naming DATA, MODEL, a run's model.npz / config.json or a results
    file that ``report`` reads is refused, and the file is left as it was."""
    root, _, _ = runs
    data = tmp_path / "w.npy"
    np.save(data, np.zeros((4, 2)))
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2\nnan,1\n")
    run = root / "em"
    cases = [
        (["score", str(run), str(data), "--out", str(data)], data, "is the DATA file"),
        (["score", str(run), "wave", "--out", str(run / "model.npz")], run / "model.npz", "run"),
        (["score", str(run), "wave", "--out", str(run / "config.json")], run / "config.json", ""),
        (["impute", str(run), str(holes), "--out", str(holes)], holes, "is the DATA file"),
        (["sample", str(run), "-n", "2", "--out", str(run / "model.npz")], run / "model.npz", ""),
        (["report", str(root), "--out", str(run / "results.json")], run / "results.json", ""),
    ]
    for argv, path, words in cases:
        before = path.read_bytes()
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "--out" in err and words in err, err
        assert path.read_bytes() == before
    # the per-point table is CSV: a .npy name would hold CSV text that np.load refuses
    assert main(["score", str(run), "wave", "--out", str(tmp_path / "s.npy")]) == 2
    assert "written as .csv" in capsys.readouterr().err
    assert main(["score", str(run), "wave", "--out", str(tmp_path / "dir") + "/"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "dir").exists()


def test_demo_refuses_a_fit_runs_folder(runs, capsys):
    """``demo --out RUN`` replaced a fit run's config.json and results.json (its model.npz and
    history.json left beside them: ``score`` then read the demo's config)."""
    root, _, _ = runs
    run = root / "em"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["demo", "--quick", "--no-progress", "--out", str(run)]) == 2
    assert "holds a fit run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_option_values_and_options_that_do_not_apply_are_named(runs, tmp_path, capsys):
    """Bad values were reported in the estimator's words (``hidden_sizes=(0,) is invalid``,
    ``min_noise_std=-1.0``), ``--tol auto`` (the default) was not accepted, and options that
    do not apply were ignored: ``partition MODEL --seed 3``, ``impute ... --key X`` on a CSV,
    ``fit --activation relu --negative-slope 0.3``, ``evaluate ... --encoder ""``."""
    from exactdgn.cli import FIT_DEFAULTS, build_parser

    root = runs[0]
    for argv, said in [
        (["--hidden", "0"], "argument --hidden: expected an integer >= 1, got 0"),
        (["--latent-dim", "0"], "argument --latent-dim: expected an integer >= 1"),
        (["--max-iter", "0"], "argument --max-iter: expected an integer >= 1"),
        (["--n-init", "0"], "argument --n-init"),
        (["--min-noise-std", "-1"], "argument --min-noise-std: expected a number > 0"),
        (["--tol", "-1"], "argument --tol: expected a number >= 0"),
        (["--data-noise", "-1"], "argument --data-noise"),
        (["--method", "vae", "--batch-size", "0"], "argument --batch-size"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "wave", "--out", str(tmp_path / "r"), *argv])
        assert exc.value.code == 2 and said in capsys.readouterr().err, argv
    args = build_parser().parse_args(["fit", "wave", "--out", "x", "--tol", "auto"])
    assert args.tol == "auto"
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2\nnan,1\n")
    for argv, said in [
        (["partition", str(root / "em"), "--seed", "3"], "--seed applies to a random decoder"),
        (["partition", str(root / "em"), "--activation", "relu"], "--activation applies"),
        (
            [
                "impute",
                str(root / "em"),
                str(holes),
                "--key",
                "X",
                "--out",
                str(tmp_path / "f.csv"),
            ],
            "--key picks an array of a .npz file",
        ),
        (
            ["fit", "wave", "--activation", "relu", "--negative-slope", "0.3", "--out", "r"],
            "--negative-slope applies to --activation leaky_relu and prelu",
        ),
    ]:
        assert main(argv) == 2, argv
        assert said in capsys.readouterr().err, argv
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "dec.pt", "x.npy", "--noise-std", "0.1", "--encoder", ""])
    assert exc.value.code == 2 and "--encoder is empty" in capsys.readouterr().err
    # --help shows ExactDGN's own defaults
    params = ExactDGN().get_params()
    assert FIT_DEFAULTS == {k: params[k] for k in FIT_DEFAULTS}
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert "(default: 1000)" in text and "ExactDGN's" not in text


def test_version_and_json_files_end_with_a_newline(runs, capsys):
    from exactdgn import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"exactdgn {__version__}"
    root = runs[0]
    assert (root / "em" / "results.json").read_text().endswith("}\n")


def test_same_data_reads_an_mnist_folder_not_its_spelling(tmp_path):
    """``score RUN mnist:/data/ --split test`` (the run fit on ``mnist:/data``) was refused."""
    from exactdgn.cli import _same_data

    (tmp_path / "m").mkdir()
    run = {"spec": f"mnist:{tmp_path / 'm'}"}
    assert _same_data(run, f"mnist:{tmp_path / 'm'}/")
    assert _same_data(run, f"mnist:{tmp_path / 'm' / '.'}")
    assert not _same_data(run, f"mnist:{tmp_path}")
    assert not _same_data(run, "wave")


def test_counts_in_messages_agree_with_their_number(runs, tmp_path, capsys):
    """'1 samples of dimension 2', '1 missing values filled ... in 1 rows', 'em: 1 iterations'."""
    root, rc, _ = runs
    assert rc == 0
    capsys.readouterr()
    assert main(["sample", str(root / "em"), "-n", "1", "--out", str(tmp_path / "s.csv")]) == 0
    assert capsys.readouterr().out.startswith("1 sample of dimension 2 written")
    holes = tmp_path / "h.csv"
    np.savetxt(holes, [[0.5, np.nan]], delimiter=",")
    assert main(["impute", str(root / "em"), str(holes), "--out", str(tmp_path / "f.csv")]) == 0
    assert capsys.readouterr().out.startswith("1 missing value filled (mean) in 1 row:")
    assert main(["sample", str(root / "em"), "-n", "2", "--out", str(tmp_path / "s.csv")]) == 0
    assert capsys.readouterr().out.startswith("2 samples of dimension 2 written")
