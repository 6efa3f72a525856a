"""``marginal_pairs``: the fast d = 1 path, the folded GEMM and threading against plain formulas.

The references here are deliberately naive: ``log κ_r(x)`` from the D x D covariance
``Σ + A_r A_rᵀ`` with scipy's multivariate normal, and the d = 1 general path (polyhedron
masses from the facet rows) for the specialised interval path. The exact values themselves are
checked against quadrature oracles in ``tests/oracles``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from exactdgn import Decoder, ExactDGN
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
        _marginal, "_map_blocks", lambda fn, st: blocks.append(list(st)) or real(fn, blocks[-1])
    )
    many = marginal_pairs(geom, X, need_moments=True)
    assert len(blocks[0]) >= 3  # one block per thread at least
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
