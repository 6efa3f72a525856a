"""exactdgn.dask on a 2-worker LocalCluster(processes=True): scoring, distributed EM, lost worker.

References: the in-memory ``ExactDGN.score_samples`` / ``ExactDGN.fit`` on the same rows (the
exact values themselves are tested against quadrature elsewhere).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from exactdgn import Decoder, ExactDGN  # noqa: E402
from exactdgn import dask as edd  # noqa: E402
from exactdgn.em._init import data_moments  # noqa: E402
from tests.scaleout._cluster import local_client  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with local_client(2) as cl:
        yield cl


def _planted(sizes, n, seed, noise=0.2):
    model = ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), noise)
    return model, model.sample(n, random_state=seed + 100)


def _history(X, start, max_iter=3):
    m = ExactDGN.from_decoder(start, 0.5, warm_start=True, max_iter=max_iter, tol=0.0, method="em")
    m.progress = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X)
    return np.array([h["loglik"] for h in m.history_]), m


@pytest.mark.parametrize("sizes", [[1, 8, 8, 5], [2, 8, 6]])
def test_score_samples_equals_in_memory(client, sizes):
    model, X = _planted(sizes, 1500, 3)
    X[0] += 1e4 * model.noise_std_  # a far outlier
    ref, err_ref = model.score_samples(X, return_error=True)
    Xd = da.from_array(X, chunks=(400, 2))  # column chunks are merged
    out = edd.score_samples(model, Xd)
    assert isinstance(out, da.Array) and out.shape == (1500,)
    np.testing.assert_allclose(out.compute(), ref, rtol=1e-12, atol=0)
    lp, err = edd.score_samples(model, Xd, return_error=True)
    np.testing.assert_allclose(lp.compute(), ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(err.compute(), err_ref, rtol=1e-12, atol=0)


def test_read_npy_memmap_chunks(client, tmp_path):
    model, X = _planted([1, 6, 3], 1000, 0)
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    Xd = edd.read_npy(path, chunk_rows=300)
    assert Xd.chunks == ((300, 300, 300, 100), (3,)) and Xd.dtype == np.float64
    # the graph holds the path, not the data
    assert sum(isinstance(v, np.ndarray) for v in dict(Xd.dask).values()) == 0
    got = edd.score_samples(model, Xd).compute()
    np.testing.assert_allclose(got, model.score_samples(X.astype(np.float32)), rtol=1e-12)


def test_thread_budget_on_every_worker(client):
    edd.active_client()
    env = client.run(lambda: os.environ.get("EXACTDGN_NUM_THREADS"))
    assert set(env.values()) == {"1"} and len(env) == 2


def test_bad_chunk_names_its_rows(client):
    model, X = _planted([1, 6, 3], 500, 0)
    X[333, 1] = np.inf
    with pytest.raises(ValueError, match=r"rows 300:400"):
        edd.score_samples(model, da.from_array(X, chunks=100)).compute()
    with pytest.raises(ValueError, match="method='vae' does not take a dask array"):
        edd.remote_data(da.from_array(X, chunks=100), method="vae")


# [2,6,3] from a random start: a well-conditioned case (the in-memory EM itself moves by
# ~1e-14 when its rows are permuted; see the README for cases where it moves by 1e-5)
def test_em_history_equals_in_memory_for_two_chunkings(client):
    _, X = _planted([2, 6, 3], 600, 0)
    start = Decoder.random([2, 6, 3], seed=7)
    ref, m_ref = _history(X, start)
    for chunks in (250, 97):
        got, m = _history(da.from_array(X, chunks=chunks), start)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(m.noise_std_, m_ref.noise_std_, rtol=1e-9)
        for a, b in zip(m.decoder_.weights, m_ref.decoder_.weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9)
    assert ref[-1] > ref[0] + 0.5  # it learns


def test_remote_statistics_equal_in_memory(client):
    """The M-step's inputs from the workers: sums, noise residuals and the exact gradient."""
    from exactdgn.em import exact_gradient

    model, X = _planted([1, 6, 6, 4], 900, 4)
    st = model._pairs(X, need_moments=True)
    ref = model._region_stats(X, model.partition_, st)
    rem = edd.remote_data(da.from_array(X, chunks=200))
    pairs = rem.e_step(model.partition_, model.geometry_, prune_nats=40.0, chunk_bytes=2**26)
    got = pairs.region_stats()
    assert pairs.loglik == pytest.approx(st.log_px.mean(), rel=1e-14)
    for name in ("s", "Z2", "XZ"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    A, b = Decoder.random([1, 6, 6, 4], seed=9).affine_map(model.partition_.patterns)
    np.testing.assert_allclose(got.residual_sq(A, b, None), ref.residual_sq(A, b, X), rtol=1e-12)
    std = model.noise_std_[0]
    g_ref = exact_gradient(model.decoder_, std, ref, X)
    g_got = exact_gradient(model.decoder_, std, got, None)
    for a, b in zip(g_got, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_lbfgs_history_equals_in_memory(client):
    _, X = _planted([2, 6, 3], 500, 0)
    start = Decoder.random([2, 6, 3], seed=7)
    hist = []
    for data in (X, da.from_array(X, chunks=130)):
        m = ExactDGN.from_decoder(start, 0.5, warm_start=True, max_iter=2, tol=0.0)
        m.set_params(method="lbfgs", progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(data)
        hist.append(np.array([h["loglik"] for h in m.history_]))
    np.testing.assert_allclose(hist[1], hist[0], rtol=0, atol=1e-9)
    assert hist[0][-1] > hist[0][0] + 0.1


def test_init_moments_equal_in_memory(client):
    _, X = _planted([1, 6, 4], 700, 1)
    ref = data_moments(X)
    got = edd.remote_data(da.from_array(X, chunks=200)).moments()
    np.testing.assert_allclose(got.mu, ref.mu, rtol=1e-13)
    np.testing.assert_allclose(got.var, ref.var, rtol=1e-12)
    np.testing.assert_allclose(got.lam, ref.lam, rtol=1e-10, atol=1e-13 * ref.lam[0])
    for u, v in zip(got.Vt[:3], ref.Vt[:3], strict=True):  # the axes, up to sign
        np.testing.assert_allclose(u * np.sign(u @ v), v, atol=1e-10)
    # a full fit from the default (PCA) start runs and never decreases
    m = ExactDGN(hidden_sizes=(6,), max_iter=2, tol=0.0, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(da.from_array(X, chunks=200))
    ll = [h["loglik"] for h in m.history_]
    assert np.all(np.diff(ll) >= 0) and m.score(X) == pytest.approx(ll[-1], abs=1e-10)


def test_contamination_offset_from_the_cluster(client):
    """``contamination`` with a dask array: the offset is the quantile of log p(x) scored on
    the workers, equal to the one of the in-memory scores of the fitted model."""
    from exactdgn.outliers import contamination_offset

    _, X = _planted([1, 6, 3], 400, 5)
    m = ExactDGN(hidden_sizes=(6,), max_iter=1, random_state=0, progress=False)
    m.set_params(contamination=0.1, init="pca", method="em")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(da.from_array(X, chunks=150))
    ref = contamination_offset(m.score_samples(X), 0.1)
    assert m.offset_ == pytest.approx(ref, rel=1e-12)
    assert np.mean(m.predict(X) == -1) == pytest.approx(0.1, abs=0.01)


def test_cli_score_and_fit_on_the_cluster(client, tmp_path, capsys):
    from exactdgn.cli import main

    _, X = _planted([1, 6, 3], 800, 2)
    path = tmp_path / "x.npy"
    np.save(path, X)
    common = ["--hidden", "6", "--max-iter", "2", "--seed", "0", "--no-progress"]
    assert main(["fit", str(path), "--out", str(tmp_path / "mem"), *common]) == 0
    addr = ["--scheduler", client.scheduler.address, "--chunk-rows", "150"]
    assert main(["fit", str(path), "--out", str(tmp_path / "dsk"), *common, *addr]) == 0
    import json

    r_mem = json.loads((tmp_path / "mem" / "results.json").read_text())
    r_dsk = json.loads((tmp_path / "dsk" / "results.json").read_text())
    assert r_dsk["n_train"] == r_mem["n_train"] == 640
    # the same rows and standardization; the PCA start may differ by the signs of the axes
    # (test_init_moments_equal_in_memory), so the two fits are compared as fits
    hist = json.loads((tmp_path / "dsk" / "history.json").read_text())
    assert np.all(np.diff([h["loglik"] for h in hist]) >= 0)
    assert r_dsk["train_loglik"] == pytest.approx(hist[-1]["loglik"], abs=1e-10)
    assert r_dsk["train_loglik"] == pytest.approx(r_mem["train_loglik"], abs=0.1)
    out_m, out_d = tmp_path / "m.csv", tmp_path / "d.csv"
    assert main(["score", str(tmp_path / "mem"), str(path), "--out", str(out_m)]) == 0
    assert main(["score", str(tmp_path / "mem"), str(path), "--out", str(out_d), *addr]) == 0
    a, b = (np.loadtxt(f, delimiter=",", skiprows=1) for f in (out_m, out_d))
    np.testing.assert_allclose(b, a, rtol=1e-12)
    assert main(["fit", str(path), "--out", str(tmp_path / "v"), "--method", "vae", *addr]) == 2
    assert "--method em or lbfgs" in capsys.readouterr().err
    X[::7, 1] = np.nan  # missing values: fit in memory takes them, the cluster path refuses
    np.save(path, X)
    assert main(["fit", str(path), "--out", str(tmp_path / "nan"), *common, *addr]) == 2
    err = capsys.readouterr().err
    assert "missing values (NaN) in rows [0, 7, 14, 21, 28] (the first found; numbered" in err
    assert "in memory" in err
    assert main(["fit", str(path), "--out", str(tmp_path / "nan"), *common]) == 0
    # an infinite value: DATA's row (the workers named a row of a split); no cluster INFO
    X[::7, 1] = 0.0
    X[123, 0] = np.inf
    np.save(path, X)
    assert main(["fit", str(path), "--out", str(tmp_path / "inf"), *common, *addr]) == 2
    err = capsys.readouterr().err
    assert "infinite values in rows [123]" in err and "INFO" not in err


def test_killed_worker_changes_nothing(client):
    """Kill a worker mid-E-step (it holds finished chunks, others wait behind a gate)."""
    _, X = _planted([2, 6, 3], 600, 0)
    start = Decoder.random([2, 6, 3], seed=7)
    chunks = 150  # 4 chunks: 0 and 1 pass, 2 and 3 wait until a worker has been killed
    ref, _ = _history(da.from_array(X, chunks=chunks), start, max_iter=2)
    gate = distributed.Event("exactdgn-test-gate")

    def load(x, block_info=None):
        if block_info[0]["chunk-location"][0] >= 2:
            distributed.secede()  # wait without holding the worker's thread
            distributed.Event("exactdgn-test-gate").wait(60)
            distributed.rejoin()
        return x

    Xg = da.from_array(X, chunks=chunks).map_blocks(load, dtype=np.float64)

    def held_chunks(dask_scheduler):
        return {
            str(key): [ws.address for ws in ts.who_has]
            for key, ts in dask_scheduler.tasks.items()
            if str(key).startswith("_second") and ts.state == "memory"
        }

    # pairs of the reference run whose release has not reached the scheduler yet are not
    # this run's: only chunks that appear from now on count
    stale = set(client.run_on_scheduler(held_chunks))

    killed = {}

    def killer():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            held = [w for k, w in client.run_on_scheduler(held_chunks).items() if k not in stale]
            if len(held) >= 2:
                pids = client.run(os.getpid)
                victim = held[0][0]
                killed["pid"] = pids[victim]
                os.kill(pids[victim], signal.SIGKILL)
                break
            time.sleep(0.05)
        gate.set()

    th = threading.Thread(target=killer)
    th.start()
    try:
        got, _ = _history(Xg, start, max_iter=2)
    finally:
        gate.set()
        th.join()
    assert "pid" in killed  # the kill happened while chunks 2 and 3 were still waiting
    np.testing.assert_array_equal(got, ref)  # bit for bit: fixed tree, deterministic chunks
    client.wait_for_workers(2, timeout=60)
    assert killed["pid"] not in client.run(os.getpid).values()


def test_worker_lost_between_e_step_and_m_step_changes_nothing(client):
    """Kill a worker holding E-step pairs after the E-step (the callback runs before the next
    M-step reads them): its pairs are recomputed, which needs the E-step's scattered spec
    (it was dropped and the fit died with 'lost dependencies'), and the history is the same."""
    X = np.random.default_rng(0).normal(size=(400, 3))
    kw = dict(latent_dim=1, hidden_sizes=(4,), max_iter=3, tol=0.0, method="em", init="random")

    def fit(callback=None):
        m = ExactDGN(**kw, random_state=0)
        m.progress = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(da.from_array(X, chunks=(100, 3)), callback=callback)
        return np.array([h["loglik"] for h in m.history_])

    ref = fit()
    client.wait_for_workers(2, timeout=60)
    killed = {}

    def held_pairs(dask_scheduler):
        return [
            ws.address
            for key, ts in dask_scheduler.tasks.items()
            if str(key).startswith("_second") and ts.state == "memory"
            for ws in ts.who_has
        ]

    def kill_one(it, snapshot):
        if it == 1 and not killed:
            victim = client.run_on_scheduler(held_pairs)[0]
            pid = client.run(os.getpid)[victim]
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
            t0 = time.monotonic()  # the scheduler has seen it go before the M-step runs
            while victim in client.scheduler_info()["workers"] and time.monotonic() - t0 < 30:
                time.sleep(0.05)

    got = fit(kill_one)
    assert "pid" in killed
    np.testing.assert_array_equal(got, ref)
    client.wait_for_workers(2, timeout=60)


def test_impute_equals_in_memory(client):
    model, X = _planted([2, 8, 6], 900, 5)
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.5  # every row keeps an observed entry
    X[1, :-1] = np.nan
    X[1, -1] = 1e4 * model.noise_std_[-1]  # a far outlier with one observed entry
    Xd = da.from_array(X, chunks=(250, 6))
    for method in ("mean", "mode"):
        out = edd.impute(model, Xd, method=method)
        assert isinstance(out, da.Array) and out.shape == X.shape
        np.testing.assert_allclose(out.compute(), model.impute(X, method=method), rtol=1e-12)
    filled, std = edd.impute(model, Xd, return_std=True)
    ref, ref_std = model.impute(X, return_std=True)
    np.testing.assert_allclose(filled.compute(), ref, rtol=1e-12)
    np.testing.assert_allclose(std.compute(), ref_std, rtol=1e-12, atol=1e-300)
    # draws: observed entries kept, reproducible for a seed and chunking, other seeds differ
    a = edd.impute(model, Xd, method="sample", random_state=3).compute()
    b = edd.impute(model, Xd, method="sample", random_state=3).compute()
    c = edd.impute(model, Xd, method="sample", random_state=4).compute()
    obs = ~np.isnan(X)
    assert np.array_equal(a, b) and not np.isnan(a).any()
    np.testing.assert_array_equal(a[obs], X[obs])
    assert not np.allclose(a[~obs], c[~obs])
    # chunk i draws as model.impute with SeedSequence(3).spawn(...)[i]
    seed0 = np.random.SeedSequence(3).spawn(4)[0]
    first = model.impute(X[:250], method="sample", random_state=np.random.default_rng(seed0))
    np.testing.assert_array_equal(a[:250], first)
    with pytest.raises(ValueError, match="method='median' is invalid"):
        edd.impute(model, Xd, method="median")


def test_score_samples_in_data_units_with_the_models_standardization(client):
    from exactdgn.datasets import Standardizer

    model, Z = _planted([1, 6, 3], 600, 2)
    raw = Z * np.array([3.0, 0.5, 10.0]) + np.array([1.0, -2.0, 50.0])
    model.preprocessing_ = Standardizer().fit(raw)
    ref, err_ref = model.score_samples(raw, return_error=True)
    Xd = da.from_array(raw, chunks=(200, 3))
    np.testing.assert_allclose(edd.score_samples(model, Xd).compute(), ref, rtol=1e-12)
    lp, err = edd.score_samples(model, Xd, return_error=True)
    np.testing.assert_allclose(lp.compute(), ref, rtol=1e-12)
    np.testing.assert_allclose(err.compute(), err_ref, rtol=1e-12)
    assert model.preprocessing_ is not None  # the caller's model is not changed


def test_cli_impute_in_memory_and_on_the_cluster(client, tmp_path):
    from exactdgn.cli import main

    model, X = _planted([1, 6, 3], 500, 4)
    model.save(tmp_path / "model.npz")
    rng = np.random.default_rng(1)
    X[rng.random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    csv, npy = tmp_path / "holes.csv", tmp_path / "holes.npy"
    np.savetxt(csv, X, delimiter=",")
    np.save(npy, X)
    ref, ref_std = model.impute(X, return_std=True)
    args = ["impute", str(tmp_path / "model.npz")]
    out, sd = tmp_path / "f.npy", tmp_path / "sd.csv"
    assert main([*args, str(csv), "--out", str(out), "--std-out", str(sd)]) == 0
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-12)
    np.testing.assert_allclose(np.loadtxt(sd, delimiter=","), ref_std, rtol=1e-12)
    addr = ["--scheduler", client.scheduler.address, "--chunk-rows", "120"]
    out_d = tmp_path / "fd.csv"
    assert main([*args, str(npy), "--out", str(out_d), "--method", "mode", *addr]) == 0
    np.testing.assert_allclose(
        np.loadtxt(out_d, delimiter=","), model.impute(X, method="mode"), rtol=1e-12
    )
    # infinite values stay an error, named with the file
    X[0, 0] = np.inf
    np.save(npy, X)
    assert main([*args, str(npy), "--out", str(tmp_path / "bad.npy")]) == 2


def test_gradient_streams_chunks(client):
    """Adam on a dask array: with one chunk the in-memory run exactly; with several chunks a
    reproducible run whose epochs use every row once (its full-data E-step distributed)."""
    _, X = _planted([1, 6, 3], 600, 7)
    kw = dict(
        latent_dim=1,
        hidden_sizes=(6,),
        method="gradient",
        init="random",
        max_iter=3,
        tol=0.0,
        random_state=0,
    )

    def fit(data):
        m = ExactDGN(**kw)
        m.progress = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(data)
        return np.array([h["loglik"] for h in m.history_]), m

    ref, m_ref = fit(X)
    one, m_one = fit(da.from_array(X, chunks=(600, 3)))
    np.testing.assert_allclose(one, ref, rtol=0, atol=1e-9)
    for a, b in zip(m_one.decoder_.weights, m_ref.decoder_.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    many, _ = fit(da.from_array(X, chunks=(150, 3)))
    again, _ = fit(da.from_array(X, chunks=(150, 3)))
    np.testing.assert_array_equal(many, again)
    assert len(many) == len(ref) and np.all(np.isfinite(many))
    assert many[-1] > many[0]  # the minibatch steps improve the exact full-data likelihood
