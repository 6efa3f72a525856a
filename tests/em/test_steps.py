"""M-step building blocks against naive per-pair formulas."""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN
from exactdgn.em import _steps, region_stats, update_noise


def _stats(sizes, seed, n=150):
    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), 0.2)
    X = m.sample(n, random_state=seed)
    st = m._pairs(X, need_moments=True)
    rs = region_stats(X, m.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
    return m, X, rs


@pytest.mark.parametrize(("sizes", "block"), [([1, 5, 3], 7), ([2, 4, 4, 3], 1 << 14)])
@pytest.mark.parametrize("diagonal", [False, True])
def test_update_noise_matches_per_pair_formula(sizes, block, diagonal, monkeypatch):
    m, X, rs = _stats(sizes, 2)
    monkeypatch.setattr(_steps, "_RES_BLOCK", block)  # several blocks, and one
    A, b = m.decoder_.affine_map(rs.patterns)
    ref = np.zeros(X.shape[1])
    for p in range(len(rs.w)):  # the definition, pair by pair
        r = rs.region[p]
        res = X[rs.point[p]] - A[r] @ rs.mean[p] - b[r]
        ref += rs.w[p] * (res**2 + np.diag(A[r] @ rs.cov[p] @ A[r].T))
    ref /= len(X)
    if not diagonal:
        ref = np.full_like(ref, ref.mean())
    got = update_noise(m.decoder_, rs, diagonal, X, min_std=1e-6) ** 2
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_region_stats_sums():
    m, X, rs = _stats([2, 5, 3], 4)
    R = len(m.partition_)
    s = np.zeros(R)
    Z2 = np.zeros_like(rs.Z2)
    for p in range(len(rs.w)):
        r, mu = rs.region[p], rs.mean[p]
        zt = np.append(mu, 1.0)
        second = np.outer(zt, zt)
        second[:-1, :-1] += rs.cov[p]
        s[r] += rs.w[p]
        Z2[r] += rs.w[p] * second
    np.testing.assert_allclose(rs.s, s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rs.Z2, Z2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rs.s.sum(), len(X), rtol=1e-12)


def _close_normwise(got, ref, rel):
    """``max |got - ref| <= rel * max |ref|``: the normwise relative error a solve of the normal
    equations guarantees. Summation order (dropped zero regions, GEMM against einsum) changes
    the rounding, which the conditioning amplifies in small entries: elementwise 1.4e-9 on an
    entry 0.025 beside entries ~7 on an AMD EPYC (OpenBLAS's Haswell kernel)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(got - ref), initial=0.0))
    assert err <= rel * scale, f"normwise relative difference {err / scale:.3g} > {rel:g}"


def test_m_step_on_active_regions_equals_the_full_one():
    """Regions without pairs add exact zeros: the M-step on the active regions alone gives the
    same parameters (to rounding) and the same expected complete-data log-likelihood."""
    m, X, rs = _stats([2, 8, 6, 3], 5, n=40)  # few points: many regions without a pair
    act = _steps.active_regions(rs)
    assert 0 < len(act.s) < len(rs.s)
    assert np.all(act.s > 0)
    np.testing.assert_array_equal(act.patterns[act.region], rs.patterns[rs.region])
    std = np.full(3, 0.2)
    for layers in (None, [2]):
        a = _steps.m_step(m.decoder_, rs, std, X, diagonal=True, min_std=1e-6, layers=layers)
        b = _steps.m_step(m.decoder_, act, std, X, diagonal=True, min_std=1e-6, layers=layers)
        for p, q in zip(a[0].weights + a[0].biases, b[0].weights + b[0].biases, strict=True):
            _close_normwise(q, p, 1e-9)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-12)
    q_full = _steps.expected_complete_loglik(m.decoder_, rs, std, X)
    assert np.isclose(_steps.expected_complete_loglik(m.decoder_, act, std, X), q_full, rtol=1e-13)
    assert _steps.active_regions(act) is act  # nothing left to drop


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_update_layer_gemm_form_matches_einsum_form(layer, monkeypatch):
    m, _, rs = _stats([2, 8, 6, 3], 7, n=200)
    inv_var = np.array([25.0, 16.0, 30.0])
    ref = _steps.update_layer(m.decoder_, rs, layer, inv_var, 1e-3)
    monkeypatch.setattr(_steps, "_GEMM_REGIONS", 1)
    got = _steps.update_layer(m.decoder_, rs, layer, inv_var, 1e-3)
    for a, b in zip(ref, got, strict=True):
        _close_normwise(b, a, 1e-9)


@pytest.mark.parametrize("block", [1, 7, 256, 10_000])
def test_weighted_products_in_blocks_equal_one_batched_call(block, monkeypatch):
    """The M-step's per-region ``M_rᵀ Λ M_r`` and ``M_rᵀ Λ Y_r``, formed in blocks of regions
    with BLAS on one thread (Ctrl-C is seen between blocks; with BLAS's threads the one
    batched call took tens of seconds on a busy 2-core machine), are bit for bit those of one
    batched call, and match an einsum of the definition."""
    rng = np.random.default_rng(0)
    R, D, n, k = 600, 40, 9, 3
    M, Y = rng.normal(size=(R, D, n)), rng.normal(size=(R, D, k))
    inv_var = rng.uniform(0.5, 50.0, D)
    monkeypatch.setattr(_steps, "_REGION_BLOCK", block)
    MtLM, MtLY = _steps._weighted_products(M, inv_var, Y)
    MtL = np.swapaxes(M * inv_var[None, :, None], 1, 2)
    np.testing.assert_array_equal(MtLM, np.matmul(MtL, M))
    np.testing.assert_array_equal(MtLY, np.matmul(MtL, Y))
    for got, B in [(MtLM, M), (MtLY, Y)]:  # to the rounding of the sums of |terms|
        ref = np.einsum("rjk,j,rjl->rkl", M, inv_var, B)
        bound = 1e-13 * np.einsum("rjk,j,rjl->rkl", np.abs(M), inv_var, np.abs(B))
        assert np.all(np.abs(got - ref) <= bound)


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("sizes", [[2, 5, 4, 3], [2, 4, 5, 4, 6], [3, 6, 3, 5, 2, 4]])
def test_output_maps_reproduce_the_decoder(sizes, gemm, monkeypatch):
    """g(z) = M_r a_l(z) + β_r at latent points of each region, for every layer l (the maps
    checked against the decoder's own forward pass, not against another form of the products),
    with LeakyReLU slopes so that no product is by 0 / 1 only."""
    if gemm:
        monkeypatch.setattr(_steps, "_GEMM_REGIONS", 1)
    dec = Decoder.random(sizes, seed=3, activation="leaky_relu")
    Z = np.random.default_rng(4).normal(size=(300, sizes[0])) * 2.0
    X, P = dec.forward(Z, return_pattern=True)
    pre = dec.preactivations(Z)
    start = np.cumsum([0, *dec.hidden_sizes])
    for layer in range(dec.n_layers - 1):
        M, beta = _steps._output_maps(dec, P, layer)
        assert M.shape == (len(Z), sizes[-1], sizes[layer + 1]) and M.flags.c_contiguous
        a = pre[:, start[layer] : start[layer + 1]]
        got = np.einsum("rjk,rk->rj", M, a) + beta
        np.testing.assert_allclose(got, X, rtol=1e-12, atol=1e-12 * np.abs(X).max())
