"""exactdgn.dask on dask arrays a user may well hold: empty row chunks (e.g. after a boolean
filter and ``compute_chunk_sizes()``); an array without rows is an error, as in memory.

References: the in-memory ``ExactDGN`` methods on the same rows. Scoring and imputation run on
dask's synchronous scheduler; training on a one-worker ``LocalCluster`` (it needs a client).
"""

from __future__ import annotations

import collections
import os
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from exactdgn import Decoder, ExactDGN  # noqa: E402
from exactdgn import dask as edd  # noqa: E402
from tests.scaleout._cluster import local_client  # noqa: E402

SchedulerPlugin = distributed.diagnostics.plugin.SchedulerPlugin
key_split = distributed.utils.key_split

#: rows 0:400 in chunks of 0, 150, 0, 250 and 0 rows
EMPTY_CHUNKS = ((0, 150, 0, 250, 0), (3,))


@pytest.fixture(scope="module")
def client():
    with local_client(1, set_as_default=False) as cl:
        yield cl


@pytest.fixture
def planted():
    model = ExactDGN.from_decoder(Decoder.random([1, 8, 3], seed=0), 0.2)
    return model, model.sample(400, random_state=1)


def test_score_samples_with_empty_chunks(planted):
    model, X = planted
    ref, err_ref = model.score_samples(X, return_error=True)
    Xd = da.from_array(X, chunks=EMPTY_CHUNKS)
    with dask.config.set(scheduler="synchronous"):
        out = edd.score_samples(model, Xd)
        assert out.chunks == (EMPTY_CHUNKS[0],)
        np.testing.assert_allclose(out.compute(), ref, rtol=1e-12, atol=0)
        lp, err = edd.score_samples(model, Xd, return_error=True)
        np.testing.assert_allclose(lp.compute(), ref, rtol=1e-12, atol=0)
        np.testing.assert_allclose(err.compute(), err_ref, rtol=1e-12, atol=0)
        # a boolean filter leaves chunks without rows
        keep = X[:, 0] > np.sort(X[:, 0])[200]
        Xf = da.from_array(X, chunks=100)[da.from_array(keep, chunks=100)]
        Xf.compute_chunk_sizes()
        got = edd.score_samples(model, Xf).compute()
        np.testing.assert_allclose(got, ref[keep], rtol=1e-12, atol=0)
        # no rows at all: the in-memory call's error (it gave an empty result)
        with pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 3\)\)"):
            edd.score_samples(model, Xd[:0])


def test_impute_with_empty_chunks(planted):
    model, X = planted
    X = X.copy()
    X[np.random.default_rng(0).random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.1
    Xd = da.from_array(X, chunks=EMPTY_CHUNKS)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(edd.impute(model, Xd).compute(), model.impute(X), rtol=1e-12)
        filled, std = edd.impute(model, Xd, return_std=True)
        ref, ref_std = model.impute(X, return_std=True)
        np.testing.assert_allclose(filled.compute(), ref, rtol=1e-12)
        np.testing.assert_allclose(std.compute(), ref_std, rtol=1e-12, atol=1e-300)
        a = edd.impute(model, Xd, method="sample", random_state=3).compute()
        assert a.shape == X.shape and not np.isnan(a).any()
        with pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 3\)\)"):
            edd.impute(model, Xd[:0])


def _history(data, method):
    m = ExactDGN.from_decoder(Decoder.random([1, 8, 3], seed=7), 0.5, warm_start=True)
    m.set_params(max_iter=2, tol=0.0, method=method, progress=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(data)
    return np.array([h["loglik"] for h in m.history_])


@pytest.mark.parametrize("method", ["em", "lbfgs", "gradient"])
def test_fit_with_empty_chunks(client, planted, method):
    _, X = planted
    with client.as_current():
        got = _history(da.from_array(X, chunks=EMPTY_CHUNKS), method)
        ref = _history(da.from_array(X, chunks=((150, 250), (3,))), method)
    # the empty chunks are skipped: the run of the same non-empty chunks, bit for bit
    np.testing.assert_array_equal(got, ref)
    if method != "gradient":
        np.testing.assert_allclose(got, _history(X, method), rtol=0, atol=1e-7)


def test_fit_on_an_empty_array_says_so(client, planted):
    _, X = planted
    with client.as_current(), pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 3\)\)"):
        _history(da.from_array(X, chunks=100)[:0], "em")


class _Finished(SchedulerPlugin):
    """Counts the tasks that finished, by key prefix (``key_split``)."""

    def __init__(self):
        self.count = collections.Counter()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory":
            self.count[key_split(key)] += 1


def test_cli_impute_with_std_reads_and_imputes_each_chunk_once(client, planted, tmp_path):
    from exactdgn.cli import main

    model, X = planted
    X = X.copy()
    X[np.random.default_rng(1).random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.1
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "holes.npy", X)
    finished = _Finished()
    scheduler = client.cluster.scheduler  # the local cluster's scheduler runs in this process
    scheduler.add_plugin(finished, name="test-finished")
    try:
        args = [str(tmp_path / "model.npz"), str(tmp_path / "holes.npy")]
        out = ["--out", str(tmp_path / "f.npy"), "--std-out", str(tmp_path / "s.npy")]
        addr = ["--scheduler", client.scheduler.address, "--chunk-rows", "100"]
        assert main(["impute", *args, *out, *addr]) == 0
    finally:
        scheduler.remove_plugin(name="test-finished")
    ref, ref_std = model.impute(X, return_std=True)
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), ref, rtol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), ref_std, rtol=1e-12, atol=1e-300)
    # 4 chunks: each read and imputed once for both outputs (not once per output)
    assert finished.count["read-npy"] == 4
    assert sum(v for k, v in finished.count.items() if "impute_chunk" in k) == 4


def test_thread_budget_of_an_in_process_cluster_is_given_back(planted, monkeypatch):
    """Workers in this process (``processes=False``) hold this process's threads while they
    run; closing the cluster gives back the thread counts the process had before."""
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("EXACTDGN_NUM_THREADS", "2")
    before = [p["num_threads"] for p in threadpool_info()]
    model, X = planted
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        )
        with cluster, distributed.Client(cluster) as cl:
            got = edd.score_samples(model, da.from_array(X, chunks=100)).compute()
            assert set(cl.run(lambda: os.environ["EXACTDGN_NUM_THREADS"]).values()) == {"1"}
    np.testing.assert_allclose(got, model.score_samples(X), rtol=1e-12)
    assert os.environ["EXACTDGN_NUM_THREADS"] == "2"
    assert [p["num_threads"] for p in threadpool_info()] == before


def test_inputs_that_are_not_real_row_chunked_dask_arrays_are_refused_clearly(planted):
    model, X = planted
    # complex values: refused as in memory (their imaginary part was silently dropped)
    Xc = da.from_array(X + 1j, chunks=100)
    with pytest.raises(ValueError, match="X is complex; give real numbers"):
        edd.score_samples(model, Xc)
    with pytest.raises(ValueError, match="X is complex; give real numbers"):
        edd.impute(model, Xc)
    # an in-memory array: say how to get a dask array, or which in-memory method to call
    with pytest.raises(TypeError, match=r"dask\.array\.from_array.*model\.score_samples\(X\)"):
        edd.score_samples(model, X)
    with pytest.raises(TypeError, match=r"dask\.array\.from_array.*model\.impute\(X\)"):
        edd.impute(model, X)


def test_starting_points_reduce_the_data_once_per_fit(client, planted):
    """``init="auto"`` (three starts for d = 1) and ``n_init`` starts: the data moments do not
    depend on the seed, so the two passes over the chunks that reduce them run once per fit."""
    _, X = planted
    finished = _Finished()
    scheduler = client.cluster.scheduler
    scheduler.add_plugin(finished, name="test-finished")
    m = ExactDGN(hidden_sizes=(8,), max_iter=1, n_init=2, random_state=0, progress=False)
    try:
        with client.as_current(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(da.from_array(X, chunks=100))
    finally:
        scheduler.remove_plugin(name="test-finished")
    assert finished.count["moment_sums"] == 4 and finished.count["centred_sums"] == 4
    assert set(m.scout_logliks_) == {"pca", "random", "random-2"}


def test_bad_values_are_named_by_their_rows_in_X(planted):
    """Errors of a chunk name the rows of the whole array (not the chunk's own row numbers)."""
    model, X = planted
    Xb = X.copy()
    Xb[333, 1] = np.inf  # NaN is a missing value (log p(x_obs)), inf an error
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match=r"rows 300:400\) contains 1 infinite.*\[333\]"):
            edd.score_samples(model, da.from_array(Xb, chunks=100)).compute()
        Xb[333, 1], Xb[222] = 0.0, np.nan
        with pytest.raises(ValueError, match=r"every value missing \(NaN\), first rows \[222\]"):
            edd.score_samples(model, da.from_array(Xb, chunks=100)).compute()
        Xb[222] = X[222]
        Xb[np.random.default_rng(2).random(X.shape) < 0.3] = np.nan
        Xb[np.isnan(Xb).all(axis=1), 0] = 0.1
        Xb[250] = np.nan  # nothing observed: filled from the model's marginal, as in memory
        got = edd.impute(model, da.from_array(Xb, chunks=100)).compute()
        np.testing.assert_allclose(got, model.impute(Xb), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(got[250], model.mean(), rtol=1e-13)
        Xb[250, 0], Xb[260, 1] = 0.1, np.inf
        with pytest.raises(ValueError, match=r"1 infinite values \(first bad rows: \[260\]\)"):
            edd.impute(model, da.from_array(Xb, chunks=100)).compute()


def test_read_npy_refuses_complex_files(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, np.ones((10, 3)) + 1j)
    with pytest.raises(ValueError, match="complex128; real numbers are needed"):
        edd.read_npy(path)


def test_in_memory_methods_refuse_a_dask_array_larger_than_memory():
    """``model.score_samples(Xd)`` computed the dask array whole on the client, silently; one
    larger than half the available memory is refused before anything is computed."""
    from exactdgn.imputation import ExactDGNImputer

    model = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=0), 0.3)
    model.set_params(contamination=0.1)
    huge = da.zeros((10**12, 3), chunks=(10**6, 3))  # 24 TB, never computed
    imputer = ExactDGNImputer(model, prefit=True)
    for method in (
        model.score_samples,
        model.impute,
        model.posterior,
        model.score,
        model.set_offset,  # checks its rows for NaN first (it computed the array there)
        imputer.fit,
    ):
        with pytest.raises(ValueError, match=r"dask array of shape \(1000000000000, 3\)"):
            method(huge)
    small = da.from_array(model.sample(20, random_state=0), chunks=(7, 3))
    np.testing.assert_array_equal(model.score_samples(small), model.score_samples(small.compute()))


def test_boolean_data_is_taken_as_zeros_and_ones_as_in_memory(planted, tmp_path):
    """The in-memory methods take a boolean array as 0 / 1 (``check_array``); the chunked
    ones refused it ("dtype bool; a numeric array is needed"), dask arrays and .npy files."""
    model, _ = planted
    B = np.random.default_rng(0).random((30, 3)) > 0.5
    ref = model.score_samples(B)
    path = tmp_path / "b.npy"
    np.save(path, B)
    with dask.config.set(scheduler="synchronous"):
        got = edd.score_samples(model, da.from_array(B, chunks=10)).compute()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
        got = edd.score_samples(model, edd.read_npy(path, chunk_rows=7)).compute()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_the_model_device_reaches_every_chunk(planted, monkeypatch):
    """``device`` was ignored by exactdgn.dask: chunks were scored and E-stepped on the numpy
    path whatever the model said. Now the chunk tasks carry it (each worker's device)."""
    pytest.importorskip("torch")
    from exactdgn.dask._em import _estep_chunk, _EStepSpec
    from exactdgn.inference import _torch_marginal

    model, X = planted
    calls = []
    real = _torch_marginal.pairs_torch

    def counting(*args, **kw):
        calls.append(kw.get("need_moments"))
        return real(*args, **kw)

    monkeypatch.setattr(_torch_marginal, "pairs_torch", counting)
    on_cpu = ExactDGN.from_decoder(model.decoder_, model.noise_std_, device="cpu")
    with dask.config.set(scheduler="synchronous"):
        got = edd.score_samples(on_cpu, da.from_array(X, chunks=100)).compute()
    np.testing.assert_allclose(got, model.score_samples(X), rtol=1e-12, atol=0)
    assert calls == [False] * 4
    part, geom = on_cpu.partition_, on_cpu.geometry_
    spec = _EStepSpec(geom, part.patterns, 40.0, 2**24, "cpu")
    sums, _ = _estep_chunk(X, spec, 0)
    assert calls[-1] is True
    np.testing.assert_allclose(sums.log_px, model.score_samples(X).sum(), rtol=1e-12)

    class Handle:  # what exactdgn.dask hands the estimator: it takes the device along
        def e_step(self, part, geom, **kw):
            self.kw = kw

    h = Handle()
    on_cpu._marginal(part, geom, h)
    assert h.kw["device"] == "cpu"


def test_a_closed_client_is_named_in_the_error(planted):
    """A closed client made current (``client.as_current()``) gave "RuntimeError: IOLoop is
    closed" from deep in distributed; now the error says the client is closed."""
    model, X = planted
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        )
        with cluster, distributed.Client(cluster, set_as_default=False) as cl:
            pass
    Xd = da.from_array(X, chunks=100)
    with cl.as_current():
        for call in (
            lambda: edd.score_samples(model, Xd),
            lambda: edd.impute(model, Xd),
            lambda: edd.remote_data(Xd),
        ):
            with pytest.raises(ValueError, match=r"the active distributed\.Client is closed"):
                call()


def test_the_remote_gradient_keeps_the_chunk_bytes_of_the_e_step(planted, monkeypatch):
    """The workers' exact gradient (lbfgs, the generalized-EM fallback) ran its blocks of
    pairs at the library's default 256 MiB whatever the model's ``chunk_bytes`` (the memory
    budget of one block); now at the E-step's, as in memory."""
    from exactdgn.em import _gradient, exact_gradient

    seen = []
    real = _gradient.blocked_surrogate

    def spy(params, decoder, stats, X, chunk_bytes=_gradient.CHUNK_BYTES):
        seen.append(chunk_bytes)
        return real(params, decoder, stats, X, chunk_bytes)

    monkeypatch.setattr(_gradient, "blocked_surrogate", spy)
    model, X = planted
    budget = 2**12
    st = model._pairs(X, need_moments=True)
    ref = exact_gradient(
        model.decoder_, model.noise_std_, model._region_stats(X, model.partition_, st), X, budget
    )
    assert seen == [budget]
    seen.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        cluster = distributed.LocalCluster(  # workers in this process: they see the spy
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        )
        with cluster, distributed.Client(cluster, set_as_default=False) as cl, cl.as_current():
            rem = edd.remote_data(da.from_array(X, chunks=100))
            pairs = rem.e_step(
                model.partition_, model.geometry_, prune_nats=40.0, chunk_bytes=budget
            )
            got = exact_gradient(model.decoder_, model.noise_std_, pairs.region_stats(), None)
    assert seen == [budget] * 4  # one gradient per row chunk, each within the budget
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_read_npy_names_files_it_cannot_read(tmp_path):
    """An .npz archive gave "AttributeError: 'NpzFile' object has no attribute 'ndim'", a CSV
    numpy's advice to load pickles, an (N, 0) array a ZeroDivisionError."""
    X = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "x.npz", x=X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.save(tmp_path / "empty.npy", np.zeros((4, 0)))
    with pytest.raises(
        ValueError, match=r"x\.npz is an \.npz archive, not a \.npy file.*numpy\.save"
    ):
        edd.read_npy(tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"x\.csv is not a \.npy file \(its first bytes are"):
        edd.read_npy(tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"shape \(4, 0\).*no columns"):
        edd.read_npy(tmp_path / "empty.npy")
    with pytest.raises(FileNotFoundError, match=r"nothere\.npy"):
        edd.read_npy(tmp_path / "nothere.npy")


def _with_holes(X, seed=0):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.1  # every row keeps an observed value
    return X


def test_score_samples_of_rows_with_missing_values_equals_in_memory(planted):
    """``model.score_samples`` gives ``log p(x_obs)`` for rows with NaN; the chunked one
    refused them ("contains 1 NaN or infinite values"). Now the same values, with the model's
    standardization too (the Jacobian of each row's observed values)."""
    from exactdgn.datasets import Standardizer

    model, X = planted
    X = _with_holes(X)
    ref, err_ref = model.score_samples(X, return_error=True)
    with dask.config.set(scheduler="synchronous"):
        for chunks in (EMPTY_CHUNKS, ((1, 1, 1, 397), (2, 1))):
            lp, err = dask.compute(*edd.score_samples(model, da.from_array(X, chunks=chunks), True))
            np.testing.assert_allclose(lp, ref, rtol=1e-12, atol=0)
            np.testing.assert_allclose(err, err_ref, rtol=1e-12, atol=0)
        raw = X * np.array([3.0, 0.5, 10.0]) + np.array([1.0, -2.0, 50.0])
        model.preprocessing_ = Standardizer().fit(model.sample(100, random_state=2) * 3.0 + 1.0)
        ref = model.score_samples(raw)
        got = edd.score_samples(model, da.from_array(raw, chunks=100)).compute()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_cli_score_on_the_cluster_takes_missing_values_as_in_memory(client, planted, tmp_path):
    from exactdgn.cli import main
    from exactdgn.datasets import Standardizer

    model, X = planted
    raw = _with_holes(X, seed=3) * np.array([3.0, 0.5, 10.0]) + np.array([1.0, -2.0, 50.0])
    model.preprocessing_ = Standardizer().fit(model.sample(100, random_state=2) * 3.0 + 1.0)
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "holes.npy", raw)
    args = ["score", str(tmp_path / "model.npz"), str(tmp_path / "holes.npy"), "--out"]
    assert main([*args, str(tmp_path / "m.csv")]) == 0
    addr = ["--scheduler", client.scheduler.address, "--chunk-rows", "100"]
    assert main([*args, str(tmp_path / "d.csv"), *addr]) == 0
    mem, dsk = (np.loadtxt(tmp_path / f, delimiter=",", skiprows=1) for f in ("m.csv", "d.csv"))
    np.testing.assert_allclose(dsk, mem, rtol=1e-12, atol=0)
    np.testing.assert_allclose(mem[:, 2], model.score_samples(raw), rtol=1e-12, atol=0)


def test_training_on_a_dask_array_names_what_it_needs(client, planted):
    """NaN in a dask array given to fit was "contains 1 NaN or infinite values ...; remove or
    impute them first" (the in-memory fit takes NaN as missing values), an (N, 0) array
    "n_features=0 is invalid"; now each error says what to do."""
    _, X = planted
    Xn = X.copy()
    Xn[123, 1] = np.nan
    need = r"X \(rows 100:200\) has missing values \(NaN\), first rows \[123\]: training on a dask"
    with client.as_current():
        with pytest.raises(ValueError, match=need):  # the moments of the PCA start
            ExactDGN(hidden_sizes=(4,), max_iter=1, progress=False).fit(
                da.from_array(Xn, chunks=100)
            )
        with pytest.raises(ValueError, match=need):  # a warm start: the first E-step
            _history(da.from_array(Xn, chunks=100), "em")
        with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(10, 0\)\)"):
            _history(da.zeros((10, 0), chunks=5), "em")


@pytest.mark.parametrize("use_client", [False, True])
def test_write_rows_writes_what_compute_gives_block_by_block(planted, client, tmp_path, use_client):
    """``write_rows``: .npy and CSV files equal to the computed arrays (empty and uneven
    chunks, a window of one block), the outputs of one impute computed together."""
    model, X = planted
    X = X.copy()
    X[np.random.default_rng(2).random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    Xd = da.from_array(X, chunks=EMPTY_CHUNKS)
    ref, ref_std = model.impute(X, return_std=True)
    paths = [tmp_path / "f.npy", tmp_path / "s.csv"]
    cl = client if use_client else None
    with dask.config.set(scheduler="synchronous") if cl is None else client.as_current():
        filled, std = edd.impute(model, Xd, return_std=True)
        assert edd.write_rows([filled, std], paths, client=cl, window=1) == len(X)
    np.testing.assert_allclose(np.load(paths[0]), ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.loadtxt(paths[1], delimiter=","), ref_std, rtol=1e-12, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy", "s.csv"]  # no temporaries


def test_write_rows_leaves_no_file_when_a_block_fails(tmp_path):
    def boom(x):
        if x[0, 0] >= 100:
            raise RuntimeError("block failed")
        return x

    Xd = da.arange(300.0, chunks=50).reshape(100, 3).rechunk((20, 3)).map_blocks(boom)
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="failed"):
        edd.write_rows([Xd], [tmp_path / "out.npy"], window=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="same file"):
        edd.write_rows([Xd, Xd], [tmp_path / "a.csv", tmp_path / "a.csv"])


def test_cli_impute_on_the_cluster_never_gathers_the_output(client, tmp_path, monkeypatch):
    """The filled data (as large as the input) is written block by block: neither
    ``Array.compute`` nor ``dask.compute`` of the whole output runs on the client."""
    from exactdgn.cli import main

    model = ExactDGN.from_decoder(Decoder.random([1, 8, 3], seed=0), 0.2)
    X = model.sample(300, random_state=1)
    X[np.random.default_rng(3).random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "holes.npy", X)

    def gathered(*args, **kwargs):
        raise AssertionError("the whole output was gathered on the client")

    monkeypatch.setattr(da.Array, "compute", gathered)
    monkeypatch.setattr(dask, "compute", gathered)
    out, sd = tmp_path / "f.npy", tmp_path / "sd.npy"
    args = ["impute", str(tmp_path / "model.npz"), str(tmp_path / "holes.npy"), "--out", str(out)]
    addr = ["--scheduler", client.scheduler.address, "--chunk-rows", "70"]
    assert main([*args, "--std-out", str(sd), *addr]) == 0
    monkeypatch.undo()
    ref, ref_std = model.impute(X, return_std=True)
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.load(sd), ref_std, rtol=1e-12, atol=0)


def test_the_dask_benchmark_runs_and_counts_the_rows_it_scored_in_memory(tmp_path, capsys):
    """``benchmarks/dask.py`` with fewer rows than ``--n-ref``: the in-memory figure is of
    the rows it scored (it said 500,000 rows for 3,000), end to end on a one-worker cluster."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dask.py"
    spec = importlib.util.spec_from_file_location("exactdgn_benchmark_dask", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "res.json"
    args = ["--n", "300", "--no-scale", "--chunk-rows", "100", "--workers", "1"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        assert bench.main([*args, "--path", str(tmp_path / "x.npy"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["in_memory"]["rows"] == 300 and res["dask"]["rows"] == 300
    assert res["dask"]["max_rel_diff"] <= 1e-12
    assert "in memory (" in (text := capsys.readouterr().out) and ": 300 rows in" in text


def test_cli_fit_on_the_cluster_names_the_files_rows_with_missing_values(client, tmp_path, capsys):
    """NaN at file rows 3, 7, 50, 399 was "X (rows 0:320) has missing values (NaN), first rows
    [2, 5, 42, 319]": the rows of the training split given to the E-step, not of the file."""
    import pickle

    from exactdgn.cli import main
    from exactdgn.dask import MissingRowsError
    from exactdgn.evaluation import split_data

    X = np.random.default_rng(0).normal(size=(400, 3))
    _, _, test = split_data(X, 0.2, 0)
    holes = np.setdiff1d([3, 7, 50, 399], test)  # rows of the training split
    assert len(holes) >= 3
    X[holes, 1] = np.nan
    np.save(tmp_path / "holes.npy", X)
    argv = ["fit", str(tmp_path / "holes.npy"), "--out", str(tmp_path / "run"), "--no-progress"]
    argv += ["--standardize", "off", "--max-iter", "1", "--test-fraction", "0.2", "--seed", "0"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        assert main([*argv, "--scheduler", client.scheduler.address]) == 2
    err = capsys.readouterr().err
    assert f"has missing values (NaN) in rows {holes.tolist()} (the first found; " in err
    assert "numbered from 0 in the file" in err and not (tmp_path / "run").exists()
    # the rows travel with the error from a worker to the client
    assert pickle.loads(pickle.dumps(MissingRowsError("NaN", [2, 5]))).rows == [2, 5]


@pytest.mark.parametrize("standardize", ["auto", "off"])
def test_cli_fit_names_the_files_row_beyond_1e150(client, tmp_path, capsys, standardize):
    """A value of 1e200 at file row 200: with the standardization (on by default for > 2
    columns) the moments overflowed first ("std must be finite and >= 0"), naming nothing;
    without it the row of the training split was named (165). DATA's own row, in memory and
    on the cluster, and no run folder left."""
    from exactdgn.cli import main

    X = np.random.default_rng(0).normal(size=(500, 3))
    X[200, 2] = 1e200
    np.save(tmp_path / "big.npy", X)
    argv = ["fit", str(tmp_path / "big.npy"), "--out", str(tmp_path / "run"), "--no-progress"]
    argv += ["--standardize", standardize, "--max-iter", "1"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        for extra in ([], ["--scheduler", client.scheduler.address]):
            assert main([*argv, *extra]) == 2
            err = capsys.readouterr().err
            assert ("row 200, column 2 is 1e+200" in err) != bool(extra), err
            assert ("in rows [200] (the first found" in err) == bool(extra), err
            assert "numbered from 0 in the file" in err and "1e+150" in err
            assert not (tmp_path / "run").exists()


def test_impute_draws_with_a_generator_as_model_impute_takes_one(planted):
    """``random_state=np.random.default_rng(0)`` was a TypeError (``model.impute`` takes a
    Generator): its four drawn 64-bit words seed the chunks' SeedSequence, reproducibly."""
    model, X = planted
    X = _with_holes(X, seed=5)
    Xd = da.from_array(X, chunks=100)

    def draws(rs):
        return edd.impute(model, Xd, method="sample", random_state=rs).compute(scheduler="sync")

    gen = np.random.default_rng(0)
    a, b = draws(gen), draws(np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)  # a generator in the same state: the same draws
    assert not np.allclose(draws(gen)[np.isnan(X)], a[np.isnan(X)])  # it advanced
    words = np.random.default_rng(0).integers(2**64, size=4, dtype=np.uint64)
    child = np.random.SeedSequence([int(w) for w in words]).spawn(4)[1]
    ref = model.impute(X[100:200], method="sample", random_state=np.random.default_rng(child))
    np.testing.assert_array_equal(a[100:200], ref)
    obs = ~np.isnan(X)
    np.testing.assert_array_equal(a[obs], X[obs])
    with pytest.raises(TypeError, match=r"random_state='0' is invalid: .*numpy.random.Generator"):
        edd.impute(model, Xd, method="sample", random_state="0")
    with pytest.raises(ValueError, match=r"random_state=-1 is invalid"):
        edd.impute(model, Xd, method="sample", random_state=-1)


def test_cli_impute_on_the_cluster_keeps_the_csv_header(client, planted, tmp_path):
    """``impute data.csv --workers 1 --out x.csv`` dropped the header row of column names
    that the in-memory path keeps (both outputs, --out and --std-out)."""
    from exactdgn.cli import main

    model, X = planted
    model.save(tmp_path / "model.npz")
    X = _with_holes(X, seed=2)
    data = tmp_path / "named.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c", comments="")
    args = ["impute", str(tmp_path / "model.npz"), str(data)]
    for tag, extra in (("m", []), ("d", ["--scheduler", client.scheduler.address])):
        outs = ["--out", str(tmp_path / f"{tag}.csv"), "--std-out", str(tmp_path / f"{tag}s.csv")]
        assert main([*args, *outs, *extra]) == 0
    for name in ("{}.csv", "{}s.csv"):
        mem, dsk = (tmp_path / name.format(t) for t in "md")
        assert mem.read_text().splitlines()[0] == dsk.read_text().splitlines()[0] == "a,b,c"
        np.testing.assert_allclose(
            np.loadtxt(dsk, delimiter=",", skiprows=1),
            np.loadtxt(mem, delimiter=",", skiprows=1),
            rtol=1e-12,
            atol=1e-300,
        )
    with pytest.raises(ValueError, match=r"header has 2 names but the array for .* has 3 columns"):
        edd.write_rows([da.from_array(X, chunks=100)], [tmp_path / "w.csv"], header=["a", "b"])


def test_cli_score_of_a_split_names_the_rows_of_the_data(client, tmp_path, capsys):
    """``score RUN DATA --split test``: the CSV's index and an infinite value's error name the
    rows of DATA (on the cluster the workers' own check named rows of the split: row 3 for
    DATA's row 39), in memory and on the cluster alike."""
    import json

    from exactdgn.cli import main

    rng = np.random.default_rng(0)
    z = rng.standard_normal((120, 1))
    data = tmp_path / "d.npy"
    np.save(data, np.hstack([np.sin(2 * z), z]) + 0.05 * rng.standard_normal((120, 2)))
    run = tmp_path / "run"
    fit = ["fit", str(data), "--latent-dim", "1", "--hidden", "4", "--max-iter", "2"]
    assert main([*fit, "--no-progress", "--out", str(run)]) == 0
    test = sorted(json.loads((run / "config.json").read_text())["test_index"])
    cluster = ["--scheduler", client.scheduler.address]
    for tag, extra in (("m", []), ("d", cluster)):
        out = tmp_path / f"{tag}.csv"
        assert (
            main(["score", str(run), str(data), "--split", "test", "--out", str(out), *extra]) == 0
        )
        np.testing.assert_array_equal(np.loadtxt(out, delimiter=",", skiprows=1)[:, 0], test)
    X = np.load(data)
    X[test[3], 1] = np.inf
    np.save(data, X)
    capsys.readouterr()
    for extra in ([], cluster):
        assert main(["score", str(run), str(data), "--split", "test", *extra]) == 2
        err = capsys.readouterr().err
        assert f"1 infinite values (first bad rows, 0-based: [{test[3]}])" in err, err


def test_values_beyond_reach_name_the_row_of_x(client, planted):
    # dask impute named the row within its chunk (30 for row 70); a fit from scratch ended
    # with "layer 1 has non-finite weights", naming no row, in memory and on the cluster
    model, X = planted
    X = X[:120].copy()
    X[70, 0] = 1e160
    X[5, 1] = np.nan
    Xd = da.from_array(X, chunks=(40, -1))
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match=r"row 70, column 0 is 1e\+160"):
            edd.impute(model, Xd).compute()
    with pytest.raises(ValueError, match=r"X row 70, column 0 is 1e\+160: beyond 1e\+150"):
        ExactDGN(hidden_sizes=(4,), max_iter=2).fit(X)
    X[5, 1] = 0.0
    with distributed.Client(client.scheduler.address, set_as_default=False) as cl:
        with cl.as_current(), pytest.raises(ValueError, match=r"row 70, column 0 is 1e\+160"):
            ExactDGN(hidden_sizes=(4,), max_iter=2).fit(da.from_array(X, chunks=(40, -1)))


def test_cli_workers_data_error_is_one_line(tmp_path):
    """``score RUN DATA --workers 1`` on a row with nothing observed printed distributed's
    "Compute Failed" block with the worker's traceback (the worker processes log on their
    own) before the CLI's one-line error; hidden now unless -v."""
    import subprocess
    import sys

    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.2)
    model.save(tmp_path / "model.npz")
    X = model.sample(200, random_state=1)
    X[3] = np.nan
    np.save(tmp_path / "holes.npy", X)
    cmd = [sys.executable, "-m", "exactdgn", "score", str(tmp_path / "model.npz")]
    cmd += [str(tmp_path / "holes.npy"), "--out", str(tmp_path / "s.csv"), "--workers", "1"]
    env = {**os.environ, "EXACTDGN_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "every value missing" in lines[0], proc.stderr
    assert not (tmp_path / "s.csv").exists()


def test_impute_keeps_float32(planted):
    """``exactdgn.dask.impute`` of float32 data returned float64 (``model.impute`` keeps
    float32, as scikit-learn's imputers), both outputs."""
    model, X = planted
    X32 = _with_holes(X, seed=4).astype(np.float32)
    filled, std = edd.impute(model, da.from_array(X32, chunks=(70, -1)), return_std=True)
    filled, std = dask.compute(filled, std, scheduler="sync")
    ref, ref_std = model.impute(X32, return_std=True)
    assert filled.dtype == std.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(filled, ref)
    np.testing.assert_array_equal(std, ref_std)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_checkpoint_of_a_rebuilt_dask_array_says_how_it_is_known(client, tmp_path):
    """A dask fit's checkpoint is keyed by the array's graph name: the same values read again
    through impure ``dask.delayed`` tasks were refused as "other data" with no hint; the
    message now says how a dask array is known and how to resume (``pure=True`` does)."""
    from dask import delayed

    from exactdgn.io import CheckpointMismatchError

    rows = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.2).sample(300, random_state=1)

    def build(pure):
        parts = [
            delayed(rows.__getitem__, pure=pure)(slice(100 * i, 100 * (i + 1))) for i in range(3)
        ]
        return da.concatenate([da.from_delayed(p, (100, 3), dtype=float) for p in parts])

    kw = dict(latent_dim=1, hidden_sizes=(6,), max_iter=3, tol=0.0, method="em", random_state=3)

    def stop(it, snap):
        if it == 2:
            raise KeyboardInterrupt

    with client.as_current():
        for pure in (False, True):
            ck = tmp_path / f"ck-{pure}"
            with pytest.raises(KeyboardInterrupt):
                ExactDGN(**kw, progress=False).fit(build(pure), checkpoint=ck, callback=stop)
            if pure:
                resumed = ExactDGN(**kw, progress=False).fit(build(pure), checkpoint=ck)
                assert resumed.n_iter_ == 3
            else:
                with pytest.raises(CheckpointMismatchError, match=r"X\.name.*pure=True"):
                    ExactDGN(**kw, progress=False).fit(build(pure), checkpoint=ck)


@pytest.mark.slow
def test_cli_workers_ctrl_c_is_one_line(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group) in ``score --workers 2``: each
    worker process printed its ``KeyboardInterrupt`` traceback and asyncio logged "Task
    exception was never retrieved ... AllExit" beside ``exactdgn: interrupted``. The workers
    ignore it now (the client closes the cluster) and asyncio's record needs -v: exit 130,
    one line, no output file, no process left."""
    import signal
    import subprocess
    import sys
    import time

    model = ExactDGN.from_decoder(Decoder.random([1, 8, 8, 5], seed=0), 0.1)
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "big.npy", np.tile(model.sample(100_000, random_state=0), (20, 1)))
    out = tmp_path / "s.csv"
    cmd = [sys.executable, "-m", "exactdgn", "score", str(tmp_path / "model.npz")]
    cmd += [str(tmp_path / "big.npy"), "--out", str(out), "--workers", "2"]
    cmd += ["--chunk-rows", "4096"]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def group():
        ps = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
        return ps.stdout.split()

    t0 = time.time()
    while len(group()) < 3 and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.2)  # the client and its two workers
    time.sleep(8.0)  # the workers scoring
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert err.strip() == "exactdgn: interrupted", err
    assert not out.exists()
    time.sleep(2.0)
    assert group() == []


def test_a_standardized_models_bad_values_are_named_by_their_rows_in_X(planted, tmp_path):
    """With a standardization (a CLI run's model), ``score --workers`` checked each chunk in
    ``Standardizer.transform``, which counted the chunk's rows from 0: an infinite value in
    row 150 was 'first bad rows: [22]' (chunks of 64). Library and CLI name row 150 now."""
    import subprocess
    import sys

    from exactdgn.datasets import Standardizer

    model, X = planted
    model.preprocessing_ = Standardizer().fit(X * 3.0 + 1.0)
    Xb = X * 3.0 + 1.0
    Xb[150, 1] = np.inf
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match=r"rows 128:192\) contains 1 infinite.*\[150\]"):
            edd.score_samples(model, da.from_array(Xb, chunks=64)).compute()
        Xb[150, 1] = X[150, 1] * 3.0 + 1.0
        Xb[77, 0] = np.nan
        got = edd.score_samples(model, da.from_array(Xb, chunks=64)).compute()
        np.testing.assert_allclose(got, model.score_samples(Xb), rtol=1e-13)
    Xb[150, 1] = np.inf
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "inf.npy", Xb)
    cmd = [sys.executable, "-m", "exactdgn", "score", str(tmp_path / "model.npz")]
    cmd += [str(tmp_path / "inf.npy"), "--workers", "1", "--chunk-rows", "64"]
    env = {**os.environ, "EXACTDGN_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "infinite values (first bad rows: [150])" in proc.stderr, proc.stderr
