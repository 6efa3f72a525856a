"""``marginal_pairs``: the fast d = 1 path, the folded GEMM and threading against plain formulas.

The references here are deliberately naive: ``log κ_r(x)`` from the D x D covariance
``Σ + A_r A_rᵀ`` with scipy's multivariate normal, and the d = 1 general path (polyhedron
masses from the facet rows) for the specialised interval path. The exact values themselves are
checked against quadrature oracles in ``tests/oracles``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, strategies
from scipy.stats import multivariate_normal

from exactdgn import Decoder, ExactDGN, partition
from exactdgn.inference import _marginal, log_kappa_all, marginal_pairs, region_geometry


def _model(sizes, seed, noise=0.3):
    return ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), noise)


@pytest.mark.parametrize(("sizes", "diag"), [([1, 5, 3], False), ([2, 4, 3], True)])
def test_log_kappa_all_matches_dense_gaussian(sizes, diag):
    m = _model(sizes, 3)
    D = sizes[-1]
    rng = np.random.default_rng(0)
    std = rng.uniform(0.2, 0.6, D) if diag else np.full(D, 0.3)
    geom = region_geometry(m.partition_, std)
    X = rng.normal(0, 2, (7, D))
    X[0] += 40.0  # far from the decoder's range
    lk, W = log_kappa_all(geom, X)
    for r in range(geom.n_regions):
        A, b = geom.A[r], geom.b[r]
        cov = np.diag(std**2) + A @ A.T
        ref = multivariate_normal(b, cov).logpdf(X)
        np.testing.assert_allclose(lk[:, r], ref, rtol=1e-11, atol=1e-11)
        v = ((X - b) / std**2) @ A  # v_r = A_rᵀ Λ (x - b_r)
        np.testing.assert_allclose(W[:, r] @ geom.K[r].T, v, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("sizes", "seed"), [([1, 6, 2], 0), ([1, 8, 8, 3], 1), ([1, 40, 4], 2)])
@pytest.mark.parametrize("moments", [False, True])
def test_interval_path_matches_general_path(sizes, seed, moments):
    m = _model(sizes, seed, noise=0.05)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = np.concatenate([m.sample(300, random_state=seed), [np.full(sizes[-1], 100.0)]])
    fast = marginal_pairs(geom, X, need_moments=moments)
    slow = marginal_pairs(dataclasses.replace(geom, interval=None), X, need_moments=moments)
    np.testing.assert_allclose(fast.log_px, slow.log_px, rtol=1e-13, atol=1e-12)
    # the pairs that carry mass agree (either path may keep a few more negligible ones)
    for st in (fast, slow):
        assert np.all(np.diff(st.point) >= 0)
    key = lambda st, w: set(zip(st.point[w > 1e-12], st.region[w > 1e-12], strict=True))  # noqa: E731
    wf, ws = np.exp(fast.log_weight), np.exp(slow.log_weight)
    assert key(fast, wf) == key(slow, ws)
    np.testing.assert_allclose(np.bincount(fast.point, wf), 1.0, atol=1e-12)
    if moments:
        idx_s = {(p, r): i for i, (p, r) in enumerate(zip(slow.point, slow.region, strict=True))}
        sel = [i for i in range(len(fast.point)) if wf[i] > 1e-9]
        j = [idx_s[(fast.point[i], fast.region[i])] for i in sel]
        np.testing.assert_allclose(fast.mean[sel], slow.mean[j], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(fast.cov[sel], slow.cov[j], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("sizes", [[1, 12, 5], [2, 6, 4]])
def test_threads_do_not_change_results(sizes, monkeypatch):
    m = _model(sizes, 4, noise=0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(3000, random_state=1)
    monkeypatch.setenv("EXACTDGN_NUM_THREADS", "1")
    one = marginal_pairs(geom, X, need_moments=True)
    monkeypatch.setenv("EXACTDGN_NUM_THREADS", "3")
    monkeypatch.setattr(_marginal, "_MIN_PARALLEL", 256)  # thread even this small input
    blocks = []
    real = _marginal._map_blocks
    monkeypatch.setattr(
        _marginal,
        "_map_blocks",
        lambda fn, st, parallel=True, **kw: (
            blocks.append((list(st), parallel)) or real(fn, blocks[-1][0], parallel, **kw)
        ),
    )
    many = marginal_pairs(geom, X, need_moments=True)
    assert len(blocks[0][0]) >= 3 and blocks[0][1]  # one block per thread at least
    np.testing.assert_allclose(many.log_px, one.log_px, rtol=1e-14, atol=1e-13)
    assert np.array_equal(many.point, one.point) and np.array_equal(many.region, one.region)
    np.testing.assert_allclose(many.mean, one.mean, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_thread_count_is_a_clear_error(bad, monkeypatch):
    m = _model([1, 4, 2], 0)
    geom = region_geometry(m.partition_, m.noise_std_)
    monkeypatch.setenv("EXACTDGN_NUM_THREADS", bad)
    with pytest.raises(ValueError, match="EXACTDGN_NUM_THREADS must be a positive integer"):
        marginal_pairs(geom, m.sample(10, random_state=0))


@pytest.mark.parametrize(("sizes", "diag"), [([2, 6, 3, 40], False), ([1, 5, 5, 30], True)])
def test_output_subspace_gemm_is_the_full_gemm(sizes, diag):
    """A last layer narrower than the output: ``X gemm_w`` through the basis of ``Λ W_L``."""
    m = _model(sizes, 4)
    D = sizes[-1]
    rng = np.random.default_rng(1)
    std = rng.uniform(0.2, 0.6, D) if diag else np.full(D, 0.3)
    geom = region_geometry(m.partition_, std)
    assert geom.gemm_basis is not None and geom.gemm_basis.shape == (D, sizes[-2])
    np.testing.assert_allclose(geom.gemm_basis.T @ geom.gemm_basis, np.eye(sizes[-2]), atol=1e-14)
    X = rng.normal(0, 2, (20, D))
    X[0] += 1e3  # far from the range: the component outside the subspace is large
    Xc = X - geom.center
    full = Xc @ geom.gemm_w
    np.testing.assert_allclose(geom.gemm(Xc), full, rtol=1e-12, atol=1e-12 * np.abs(full).max())
    plain = dataclasses.replace(geom, gemm_basis=None, gemm_w_basis=None)
    a, b = marginal_pairs(geom, X), marginal_pairs(plain, X)
    np.testing.assert_allclose(a.log_px, b.log_px, rtol=1e-12)


def test_output_subspace_not_used_when_it_does_not_pay():
    m = _model([2, 8, 3], 0)  # last hidden width 8 > output 3
    assert region_geometry(m.partition_, 0.3).gemm_basis is None


def test_distance_bound_prunes_only_negligible_pairs():
    """d = 2: the closest-point bound skips pairs, and log p(x) is the same as integrating all."""
    m = ExactDGN.from_decoder(Decoder.random([2, 16, 16, 5], seed=3), 0.05)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = np.concatenate([m.sample(200, random_state=0), [np.full(5, 30.0)]])
    st = marginal_pairs(geom, X, need_moments=True)
    # reference: every pair integrated, no pruning at all
    lk, W = log_kappa_all(geom, X)
    n, R = lk.shape
    p, r = np.repeat(np.arange(n), R), np.tile(np.arange(R), n)
    lk, w = lk.ravel(), W[p, r]
    geom.refine_log_kappa(X - geom.center, p, r, lk, w)  # as marginal_pairs: no cancellation
    v = np.einsum("pij,pj->pi", geom.K[r], w)
    from exactdgn.gaussian import log_mass

    lj = lk + log_mass(geom.normals[r], geom.offsets(v, r))
    ref = np.logaddexp.reduce(lj.reshape(n, R), axis=1)
    np.testing.assert_allclose(st.log_px, ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(st.log_joint)) and np.all(np.isfinite(st.mean))
    assert len(st.point) < n * R
    # the pairs that carry mass are all there
    w = np.exp(lj - ref[p])
    heavy = set(zip(p[w > 1e-15], r[w > 1e-15], strict=True))
    assert heavy <= set(zip(st.point, st.region, strict=True))


@pytest.mark.parametrize("sizes", [[2, 16, 16, 5], [3, 6, 4]])
def test_estep_moments_match_every_pair(sizes):
    """E-step pairs (moments only where the weight is visible; d = 2 through the polygon
    table) give the same posterior mean and second moment as every pair integrated directly."""
    from exactdgn.gaussian import log_mass, truncated_moments

    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=5), 0.05)
    geom = region_geometry(m.partition_, m.noise_std_)
    D = sizes[-1]
    X = np.concatenate([m.sample(60, random_state=1), [np.full(D, 30.0)]])
    st = marginal_pairs(geom, X, need_moments=True)
    lk, W = log_kappa_all(geom, X)
    n, R = lk.shape
    p, r = np.repeat(np.arange(n), R), np.tile(np.arange(R), n)
    lk, w = lk.ravel(), W[p, r]
    geom.refine_log_kappa(X - geom.center, p, r, lk, w)  # as marginal_pairs: no cancellation
    v = np.einsum("pij,pj->pi", geom.K[r], w)
    # every pair's weight first, so that far d = 3 polyhedra whose weight hides the divergence
    # form's error are not sliced (as the E-step does; slicing all 61 x R takes minutes)
    lj = lk + log_mass(geom.normals[r], geom.offsets(v, r))
    ref_px = np.logaddexp.reduce(lj.reshape(n, R), axis=1)
    tm = truncated_moments(geom.normals[r], geom.offsets(v, r), log_weight=lj - ref_px[p])
    lj = lk + tm.log_mass
    ref_px = np.logaddexp.reduce(lj.reshape(n, R), axis=1)
    tol = 1e-12 if sizes[0] == 2 else 1e-6  # d = 3: lattice rule with its error estimate
    np.testing.assert_allclose(st.log_px, ref_px, rtol=tol, atol=tol)
    ok = np.isfinite(lj)
    w = np.where(ok, np.exp(lj - ref_px[p]), 0.0)
    mu = geom.posterior_mean(v, r) + np.einsum("pij,pj->pi", geom.L[r], np.nan_to_num(tm.mean))
    Lr = geom.L[r]
    cov = Lr @ np.nan_to_num(tm.cov) @ np.swapaxes(Lr, 1, 2)
    d = sizes[0]
    ref_m1 = np.zeros((n, d))
    ref_m2 = np.zeros((n, d, d))
    np.add.at(ref_m1, p, w[:, None] * mu)
    np.add.at(ref_m2, p, w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :]))
    ws = np.exp(st.log_weight)
    np.testing.assert_allclose(np.bincount(st.point, ws, minlength=n), 1.0, atol=1e-12)
    m1 = np.zeros((n, d))
    m2 = np.zeros((n, d, d))
    np.add.at(m1, st.point, ws[:, None] * st.mean)
    np.add.at(
        m2, st.point, ws[:, None, None] * (st.cov + st.mean[:, :, None] * st.mean[:, None, :])
    )
    scale = 1.0 + np.abs(ref_m1).max(axis=1, keepdims=True)
    atol = 1e-9 if d == 2 else 1e-4
    assert np.all(np.abs(m1 - ref_m1) <= atol * scale)
    assert np.all(np.abs(m2 - ref_m2) <= atol * scale[:, :, None] ** 2)


@pytest.mark.parametrize("sizes", [[1, 12, 5], [1, 40, 40, 4]])  # dense and pruned d = 1 paths
def test_d1_block_size_does_not_change_results(sizes, monkeypatch):
    """Small single-thread calls run in small sequential blocks; any block size gives the same
    pairs and values (pairs are computed independently)."""
    m = _model(sizes, 2, noise=0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = np.concatenate([m.sample(700, random_state=3), [np.full(sizes[-1], 50.0)]])
    small = marginal_pairs(geom, X, need_moments=True)
    monkeypatch.setattr(_marginal, "_BLOCK_1D_SEQ", 2**30)  # one block
    one = marginal_pairs(geom, X, need_moments=True)
    assert np.array_equal(small.point, one.point) and np.array_equal(small.region, one.region)
    np.testing.assert_allclose(small.log_px, one.log_px, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(small.mean, one.mean, rtol=1e-15, atol=1e-15)


@given(
    N=strategies.integers(1, 100_000),
    cs=strategies.integers(1, 5_000),
    nt=strategies.integers(1, 64),
)
def test_block_size_covers_the_points_in_equal_shares(N, cs, nt):
    size = _marginal._block_size(N, cs, nt)
    n_blocks = len(range(0, N, size))
    assert 1 <= size <= cs and n_blocks * size >= N
    # as few rounds of the thread pool as the memory bound allows, and no fewer blocks
    need = math.ceil(N / cs)
    assert math.ceil(n_blocks / nt) == math.ceil(need / nt)
    assert n_blocks >= need


@pytest.mark.parametrize("threads", ["1", "2"])
def test_blocks_run_with_one_blas_thread(threads, monkeypatch):
    """BLAS is held to one thread in the blocks, also when they run one after the other."""
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("EXACTDGN_NUM_THREADS", threads)
    seen = []

    def fn(s):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return s

    assert _marginal._map_blocks(fn, range(4)) == [0, 1, 2, 3]
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("threads", ["1", "2"])
def test_blocks_report_their_rows_in_order_from_the_calling_thread(threads, monkeypatch):
    """The exact pass's progress (``exactdgn evaluate``'s bar over the points): each finished
    block's rows, in block order, reported from the thread that called (the listener is the
    caller's; the worker threads do not see it)."""
    import threading

    from exactdgn._progress import progress_to

    monkeypatch.setenv("EXACTDGN_NUM_THREADS", threads)
    seen = []
    caller = threading.get_ident()
    with progress_to(lambda n: seen.append((n, threading.get_ident()))):
        assert _marginal._map_blocks(lambda s: s, range(0, 10, 4), rows=10) == [0, 4, 8]
        assert _marginal._map_blocks(lambda s: s, range(3)) == [0, 1, 2]  # no rows: silent
    assert seen == [(4, caller), (4, caller), (2, caller)]


@pytest.mark.parametrize("sizes", [[1, 5, 3], [2, 5, 3]])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_marginal_pairs_bad_points_are_clear_errors(sizes, device):
    """Wrong shapes, NaN / inf and no rows: a ValueError saying what to do, on both paths
    (they crashed in numpy / torch, or returned NaN / -inf silently)."""
    geom = _model(sizes, 0).geometry_
    X = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match="2-D"):
        marginal_pairs(geom, X[0], device=device)
    with pytest.raises(ValueError, match="4 columns but 3"):
        marginal_pairs(geom, np.zeros((4, 4)), device=device)
    with pytest.raises(ValueError, match="no rows"):
        marginal_pairs(geom, np.zeros((0, 3)), device=device)
    Xn = X.copy()
    Xn[1, 0] = np.nan
    with pytest.raises(ValueError, match="observed_pairs"):
        marginal_pairs(geom, Xn, device=device)
    Xn[1, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        marginal_pairs(geom, Xn, device=device)
    # lists are accepted like arrays, with the same result
    ref = marginal_pairs(geom, X, device=device).log_px
    np.testing.assert_array_equal(marginal_pairs(geom, X.tolist(), device=device).log_px, ref)


def test_region_geometry_checks_noise_std():
    part = _model([1, 5, 3], 0).partition_
    for bad in (0.0, -0.3, np.nan, np.inf):
        with pytest.raises(ValueError, match="noise_std must be positive"):
            region_geometry(part, bad)
    with pytest.raises(ValueError, match="length 2 but 3"):
        region_geometry(part, [0.1, 0.2])
    g = region_geometry(part, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(g.inv_var, 1 / np.array([0.1, 0.2, 0.3]) ** 2)


def test_noise_std_outside_the_float64_range_is_refused():
    """σ = 1e-300 or 1e300 scored NaN (log σ² was -inf / inf), σ = 1e-100 a row with a NaN
    raised IndexError, and ``True`` was taken as 1.0:
    both are errors that say what to do. At the ends of the range the values are finite and
    match the closed form (a large σ: log p(x) = log N(x; 0, σ²I) to first order)."""
    dec = Decoder.random([1, 5, 3], seed=0)
    X = np.array([[0.3, -0.2, 1.0]])
    for bad in (1e-300, 1e300, [0.1, 1e200, 0.1], 1e-100):  # 1e-100: the NaN path overflowed
        with pytest.raises(ValueError, match=r"outside \[1e-50, 1e\+50\].*rescale the data"):
            ExactDGN.from_decoder(dec, bad)
    with pytest.raises(ValueError, match="noise_std must be a positive number, got the boolean"):
        ExactDGN.from_decoder(dec, True)
    Xn = np.array([[0.3, np.nan, 1.0]])
    for s in (1e-50, 1e50):
        lp = ExactDGN.from_decoder(dec, s).score_samples(np.concatenate([X, Xn]))
        assert np.all(np.isfinite(lp))
    big = ExactDGN.from_decoder(dec, 1e50).score_samples(X)[0]
    assert abs(big - 3 * (-np.log(1e50) - 0.5 * np.log(2 * np.pi))) < 1e-12 * abs(big)


@pytest.mark.parametrize("sizes", [[1, 5, 3], [2, 5, 3]])
def test_observed_pairs_checks_its_mask(sizes):
    """``obs=None`` (what check_missing returns without NaN) means every value observed; a
    mask of the wrong shape or one that marks a NaN as observed is a clear error (it gave
    silently wrong numbers or NaN)."""
    from exactdgn.inference import check_missing, observed_pairs

    geom = _model(sizes, 0).geometry_
    X = np.random.default_rng(0).normal(size=(4, 3))
    ref = marginal_pairs(geom, X).log_px
    np.testing.assert_array_equal(observed_pairs(geom, X, check_missing(X)).log_px, ref)
    X[1, 0] = np.nan
    obs = check_missing(X)
    with pytest.raises(ValueError, match="obs has shape"):
        observed_pairs(geom, X, obs[:, :2])
    with pytest.raises(ValueError, match="NaN where obs is True"):
        observed_pairs(geom, X, np.ones_like(obs))
    with pytest.raises(ValueError, match="2 columns but 3"):
        observed_pairs(geom, X[:, :2], obs[:, :2])


def test_facet_bound_kernel_is_the_row_minimum_of_the_whitened_offsets():
    """The compiled facet bound of the d = 2 candidates equals the numpy form it replaced,
    ``min_i (g_ri - n_ri · w)`` over the region's rows (``+inf`` for a region without rows)."""
    from exactdgn.inference._pair_kernels import facet_min_2d

    dec = Decoder.random([2, 10, 10, 5], activation="leaky_relu", seed=3)
    geom = region_geometry(partition(dec), np.full(5, 0.3))
    tab = geom.polygons
    rng = np.random.default_rng(0)
    n, R = 7, geom.n_regions
    W = rng.standard_normal((n, R, 2)) * 3.0
    p, r = rng.integers(0, n, 500), rng.integers(0, R, 500)
    out = np.empty(500)
    facet_min_2d(p, r, W, tab.normals, tab.offsets, tab.width, out)
    c = geom.g[r] - np.einsum("pfk,pk->pf", geom.normals[r], W[p, r])
    np.testing.assert_allclose(out, c.min(axis=1, initial=np.inf), rtol=1e-13, atol=1e-13)
    none = np.zeros_like(tab.width)
    facet_min_2d(p, r, W, tab.normals, tab.offsets, none, out)
    assert np.all(out == np.inf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qr_factor_whitened_mean_against_mpmath(seed):
    """``w = Q_topᵀ y`` of :func:`qr_factor` against 50-digit ``K⁻¹ Tᵀ y`` (``K`` the Cholesky
    factor of ``I + TᵀT``, mpmath: no QR). Flat rows (σ = 10) before a sharp one (σ = 1e-4),
    ``y`` 1e4 σ out: unsorted Householder QR left ε cond(K) |y| in ``w`` (1.2e-7 on |w| ~ 3e4,
    a d = 3 log p(x) 1.1e-4 nats off); rows sorted by size leave rounding."""
    import mpmath as mp

    from exactdgn.inference._geometry import qr_factor

    rng = np.random.default_rng(seed)
    sd = np.array([10.0, 10.0, 10.0, 1e-4])
    A = rng.standard_normal((4, 3))
    T = A / sd[:, None]
    y = 1e4 * rng.choice([-1.0, 1.0], 4)
    K, Q_top = qr_factor(T[None])
    w = Q_top[0].T @ y
    with mp.workdps(50):
        Tm = mp.matrix(T.tolist())
        Km = mp.cholesky(mp.eye(3) + Tm.T * Tm)
        ref = mp.lu_solve(Km, Tm.T * mp.matrix(y.tolist()))
        ref = np.array([float(v) for v in ref])
        Kref = np.array(Km.tolist(), dtype=float)
    assert np.linalg.cond(K[0]) > 1e3  # ill-conditioned: the case that needs the sorting
    np.testing.assert_allclose(K[0], Kref, rtol=0, atol=1e-13 * np.abs(Kref).max())
    assert np.abs(w - ref).max() <= 1e-13 * np.abs(ref).max(), w - ref


def test_d3_log_px_does_not_depend_on_the_output_order():
    """log p(x) is invariant to permuting the outputs (with their noise). A d = 3 row 1e4 σ
    out under mixed noise (sd 1e-4 and 10: every region QR-factored) moved by 1.1e-4 nats
    with the order (the unsorted QR's ``w``), 35x its error estimate; now within it."""
    dec = Decoder.random([3, 6, 5, 6], activation="abs", seed=3)
    noise = np.array([1e-4, 10, 1e-4, 10, 1.0, 1e-4])
    x = ExactDGN.from_decoder(dec, noise_std=noise).sample(2, random_state=5)[0]
    keep = np.array([1, 3, 5])  # sd 10, 10, 1e-4: the sharp output last
    x = x[keep] + 1e4 * noise[keep]
    values, errors = [], []
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        idx = keep[order]
        sub = Decoder(
            [*dec.weights[:-1], dec.weights[-1][idx]],
            [*dec.biases[:-1], dec.biases[-1][idx]],
            dec.activations,
        )
        m = ExactDGN.from_decoder(sub, noise_std=noise[idx])
        lp, err = m.score_samples(x[order][None], return_error=True)
        values.append(lp[0])
        errors.append(err[0])
    spread = max(values) - min(values)
    assert spread <= 2 * max(errors), (np.array(values) - values[0], errors)
