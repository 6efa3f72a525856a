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


def _output_step_case(k: float):
    """The output-layer M-step of one decoder written with its hidden units scaled by ``k``
    (hidden weights and biases x k, output weights / k: the same g, partition and likelihood),
    its region statistics, and the normal equations' matrices."""
    from exactdgn.em import m_step

    true = Decoder.random([1, 6, 3], seed=11)
    X = ExactDGN.from_decoder(true, 0.1).sample(300, random_state=1)
    dec = Decoder.random([1, 6, 3], seed=4)
    dec.weights[0], dec.biases[0] = dec.weights[0] * k, dec.biases[0] * k
    dec.weights[1] = dec.weights[1] / k
    std = np.full(3, 0.3)
    model = ExactDGN.from_decoder(dec, std)
    e = model._e_step(dec, std, X)
    rs = model._region_stats(X, e.partition, e.stats, e.decoder, e.std)
    new, new_std = m_step(dec, rs, std, X, diagonal=False, min_std=1e-3, layers=[1])
    H = _steps._input_maps(dec, rs.patterns, 1)
    lhs = (H @ rs.Z2 @ np.swapaxes(H, 1, 2)).sum(0)
    rhs = np.einsum("rjk,rmk->jm", rs.XZ, H)
    return X, dec, rs, new, new_std, lhs, rhs


def test_output_m_step_solves_its_normal_equations_exactly():
    """The ridge 1e-12 tr(A)/n was always added: with cond(A) ~ 3e11 (a plain random [1,6,3]
    start) the 'exact' M-step stopped 2.2e-5 nats/point short of the maximiser of Q, and with
    the hidden units scaled 1e3 / 1e6 (the same decoder) 2.0e-3 / 2.5e-3 short. Reference:
    the normal equations solved in 50-digit arithmetic (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    lls = []
    for k in (1.0, 1e3, 1e6):
        X, dec, rs, new, new_std, lhs, rhs = _output_step_case(k)
        with mpmath.workdps(50):
            A = mpmath.matrix(lhs.tolist())
            W = np.array(
                [[float(v) for v in mpmath.lu_solve(A, mpmath.matrix(row.tolist()))] for row in rhs]
            )
        ref = dec.copy()
        ref.weights[1], ref.biases[1] = W[:, :-1].copy(), W[:, -1].copy()
        ref_std = update_noise(ref, rs, False, X, 1e-3)
        ll = ExactDGN.from_decoder(new, new_std).score(X)
        ll_ref = ExactDGN.from_decoder(ref, ref_std).score(X)
        assert abs(ll - ll_ref) <= 1e-10 * abs(ll_ref), (k, ll, ll_ref)
        np.testing.assert_allclose(new_std, ref_std, rtol=1e-9)
        lls.append(ll)
    np.testing.assert_allclose(lls, lls[0], rtol=1e-10)  # the same decoder, the same step


def test_solve_psd_keeps_a_dead_units_zero_and_well_conditioned_solutions():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(40, 5))
    F[:, 2] = 0.0  # a dead unit: a zero row and column
    A, B = F.T @ F, F.T @ rng.normal(size=(40, 3))
    X = _steps._solve_psd(A, B)
    assert np.all(X[2] == 0.0)
    keep = [0, 1, 3, 4]
    ref = np.linalg.solve(A[np.ix_(keep, keep)], B[keep])
    np.testing.assert_allclose(X[keep], ref, rtol=1e-10)  # the ridge kept: below 1e-10
    # well conditioned: the ridged Cholesky solution itself (bit for bit)
    import scipy.linalg

    A2 = A[np.ix_(keep, keep)]
    eps = 1e-12 * np.trace(A2) / 4
    plain = scipy.linalg.cho_solve(
        scipy.linalg.cho_factor(A2 + eps * np.eye(4), lower=True), B[keep]
    )
    np.testing.assert_array_equal(_steps._solve_psd(A2, B[keep]), plain)
