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


def _kron_system(MtLM, HZH, ridge):
    """The hidden layer's normal matrix written out: ``Σ_r HZH_r ⊗ MtLM_r`` acting on the
    column-major ``vec(W̃)`` (``vec(M W H) = (Hᵀ ⊗ M) vec(W)``), plus the ridge."""
    n_l, m1 = MtLM.shape[1], HZH.shape[1]
    big = sum(np.kron(h, m) for h, m in zip(HZH, MtLM, strict=True))
    return big + np.kron(np.diag(ridge), np.eye(n_l)), n_l * m1


def _spd_batch(rng, R, n, rank, scale=1.0):
    G = rng.standard_normal((R, n, rank)) * scale
    return G @ np.swapaxes(G, 1, 2)


def _input_side(rng, R, m1, k):
    """``H_r`` (R, m1, k), ``Z2_r`` (R, k, k) positive definite and ``HZH_r = H_r Z2_r H_rᵀ``."""
    H = rng.standard_normal((R, m1, k))
    Z2 = _spd_batch(rng, R, k, k) + 0.1 * np.eye(k)
    return H, Z2, H @ Z2 @ np.swapaxes(H, 1, 2)


def test_layer_cg_solves_the_written_out_system():
    """Converged CG is the solution of the Kronecker system written out and solved densely
    (np.linalg.solve; no product of the CG's form), ε ridge included."""
    rng = np.random.default_rng(0)
    R, n_l, m1 = 30, 5, 4
    MtLM = _spd_batch(rng, R, n_l, 3)
    H, Z2, HZH = _input_side(rng, R, m1, 2)
    rhs = rng.standard_normal((n_l, m1))
    ridge = np.array([0.1, 0.1, 0.1, 0.0])
    big, n = _kron_system(MtLM, HZH, ridge)
    big += 1e-12 * np.trace(big) / n * np.eye(n)
    ref = np.linalg.solve(big, rhs.T.reshape(-1)).reshape(m1, n_l).T
    W0 = np.zeros_like(rhs)
    W, it = _steps.layer_cg(MtLM, H, Z2, HZH, rhs, ridge, W0, _steps._inv_spd)
    assert 0 < it < _steps.CG_MAXITER
    _close_normwise(W, ref, 1e-8)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_layer_cg_cut_short_raises_q_at_every_iteration(seed):
    """CG from the current weights, stopped after any number of iterations, lowers the quadratic
    ``½ wᵀ A w - bᵀ w`` (``-Q`` up to a constant; A written out) at every iteration: the cut
    step is a generalised EM step. Ill-conditioned blocks (units on little mass, scales 1e-3
    to 1e3) and singular ones (a dead unit) included."""
    rng = np.random.default_rng(seed)
    R, n_l, m1 = 12, 6, 5
    MtLM = _spd_batch(rng, R, n_l, 2) * np.logspace(-3, 3, n_l)[None, :, None]
    MtLM = 0.5 * (MtLM + np.swapaxes(MtLM, 1, 2))
    MtLM[:, 2, :] = MtLM[:, :, 2] = 0.0  # a dead unit: its block is singular
    H, Z2, HZH = _input_side(rng, R, m1, 2)
    rhs = np.einsum("rkl,lm,rmn->kn", MtLM, rng.standard_normal((n_l, m1)), HZH)
    ridge = np.zeros(m1)
    big, n = _kron_system(MtLM, HZH, ridge)
    big += 1e-12 * np.trace(big) / n * np.eye(n)
    W0 = rng.standard_normal((n_l, m1))

    def loss(W):
        w = W.T.reshape(-1)
        return 0.5 * w @ big @ w - rhs.T.reshape(-1) @ w

    values = [loss(W0)]
    for k in range(1, 25):
        args = (MtLM, H, Z2, HZH, rhs, ridge, W0, _steps._inv_spd)
        W, _ = _steps.layer_cg(*args, maxiter=k, rtol=0.0)
        values.append(loss(W))
    steps = np.diff(values)
    assert np.all(steps <= 1e-12 * np.abs(values[:-1]).max()), steps
    assert values[-1] < values[0] - 1e-3 * abs(values[0])


def test_inv_spd_jitters_only_the_blocks_that_need_it():
    rng = np.random.default_rng(4)
    B = _spd_batch(rng, 3, 4, 4) + 4.0 * np.eye(4)
    B[1] = np.outer([1.0, 2.0, 0.0, 1.0], [1.0, 2.0, 0.0, 1.0])  # rank 1: not definite
    inv = _steps._inv_spd(B, np.zeros(4))
    for k in (0, 2):
        np.testing.assert_allclose(inv[k] @ B[k], np.eye(4), atol=1e-12)
    assert np.all(np.isfinite(inv[1])) and np.all(np.linalg.eigvalsh(inv[1]) > 0)


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("sizes", [[2, 8, 6, 3], [2, 4, 3, 6]])  # D < n_l (factor), D >= n_l
def test_update_layer_by_cg_equals_the_direct_solve(layer, sizes, monkeypatch):
    """A hidden layer solved by CG (as layers beyond ``DIRECT_UNKNOWNS`` unknowns are) gives
    the direct solve's parameters where the system is well conditioned (weight decay), and
    never a lower Q than the current weights where CG is cut short."""
    m, X, rs = _stats(sizes, 7, n=200)
    std = np.linspace(0.2, 0.3, sizes[-1])
    inv_var = 1.0 / std**2
    ref = _steps.update_layer(m.decoder_, rs, layer, inv_var, 1e-2)
    monkeypatch.setattr(_steps, "DIRECT_UNKNOWNS", 0)
    monkeypatch.setattr(_steps, "CG_MAXITER", 5000)
    got = _steps.update_layer(m.decoder_, rs, layer, inv_var, 1e-2)
    for a, b in zip(ref, got, strict=True):
        _close_normwise(b, a, 1e-7)

    def q(W, c):
        dec = m.decoder_.copy()
        dec.weights[layer], dec.biases[layer] = W, c
        return _steps.expected_complete_loglik(dec, rs, std, X)

    q0 = q(m.decoder_.weights[layer], m.decoder_.biases[layer])
    monkeypatch.setattr(_steps, "CG_MAXITER", 3)
    q3 = q(*_steps.update_layer(m.decoder_, rs, layer, inv_var, 0.0))
    monkeypatch.setattr(_steps, "DIRECT_UNKNOWNS", 10**9)
    q_direct = q(*_steps.update_layer(m.decoder_, rs, layer, inv_var, 0.0))
    assert q0 < q3 <= q_direct + 1e-12


def test_wide_hidden_layer_forms_no_square_system(monkeypatch):
    """A 100 x 100 hidden layer (10,100 unknowns, beyond ``DIRECT_UNKNOWNS``): the M-step's
    update holds no (n, n) array (0.8 GB here; a 200 x 200 layer's 13 GB ran out of memory)."""
    import tracemalloc

    m, _, rs = _stats([1, 100, 100, 2], 3, n=60)
    assert 100 * 101 > _steps.DIRECT_UNKNOWNS
    monkeypatch.setattr(_steps, "CG_MAXITER", 2)
    tracemalloc.start()
    try:
        W, c = _steps.update_layer(m.decoder_, rs, 1, np.full(2, 25.0), 0.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert W.shape == (100, 100) and c.shape == (100,)
    assert np.all(np.isfinite(W))
    assert peak < 0.1 * (100 * 101) ** 2 * 8, f"peak {peak / 2**20:.0f} MiB"
