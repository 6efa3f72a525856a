"""Pure functions of exact EM: E-step sufficient statistics and closed-form M-step updates.

Notation: region ``r`` of the current partition has activation pattern ``p_r``; ``z̃ = [z; 1]``.
For the E-step posterior ``p(z | x_n)``, pair ``(n, r)`` has weight ``w_nr = P(r | x_n)``, mean
``m_nr = E[z | x_n, r]`` and covariance ``V_nr``. The M-step maximises the expected
complete-data log-likelihood with the activation patterns held at ``p_r`` on each region:

    Q = Σ_n Σ_r w_nr E[log N(x_n; F_r(θ) z̃, Σ)],   F_r(θ) = [A_r(θ), b_r(θ)],

which depends on the data only through the per-region statistics

    s_r = Σ_n w_nr,   Z2_r = Σ_n w_nr E[z̃ z̃ᵀ | x_n, r],   XZ_r = Σ_n w_nr x_n E[z̃ | x_n, r]ᵀ.

With the patterns fixed, ``F_r`` is linear in each layer's parameters ``W̃_l = [W_l, c_l]``:
``F_r = M_r W̃_l H_r + [0, β_r]``, where ``H_r`` maps ``z̃`` to ``[h_{l-1}; 1]`` and
``M_r = (∂g / ∂h_l) D_l`` (``D_l`` the slopes of layer ``l``). Setting the gradient to zero gives
the normal equations

    Σ_r (M_rᵀ Λ M_r) W̃ (H_r Z2_r H_rᵀ) = Σ_r M_rᵀ Λ (XZ_r - β_r z̄_rᵀ) H_rᵀ,   z̄_r = Z2_r[d, :],

a linear least-squares problem solved exactly (Kronecker form for hidden layers; the output
layer decouples row by row). A hidden layer of more than :data:`DIRECT_UNKNOWNS` unknowns is
solved by preconditioned conjugate gradients from its current weights instead
(:func:`layer_cg`: no (n, n) system, at most :data:`CG_MAXITER` iterations, ``Q`` rises).
The noise update is the weighted mean squared residual in the centred form
``||x - A m - b||² + tr(A V Aᵀ)`` (no cancellation when σ is small).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import sparse

from .._threads import blas_one_thread
from ..decoder import Decoder
from ..gaussian._rules import LOG_2PI

__all__ = [
    "RegionStats",
    "active_regions",
    "expected_complete_loglik",
    "m_step",
    "region_stats",
    "update_layer",
    "update_noise",
]


@dataclass
class RegionStats:
    """Per-region E-step sufficient statistics (see the module docstring).

    Attributes
    ----------
    patterns : (R, n_units) bool
    s : (R,), Z2 : (R, d+1, d+1), XZ : (R, D, d+1)
    point, region : (P,) int, w : (P,), mean : (P, d), cov : (P, d, d)
        The pairs themselves (for the centred noise update).
    n_points : int
    missing : MissingStats or None
        Set by :func:`exactdgn.em.missing_region_stats` when ``X`` has NaN.
    """

    patterns: np.ndarray
    s: np.ndarray
    Z2: np.ndarray
    XZ: np.ndarray
    point: np.ndarray
    region: np.ndarray
    w: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    n_points: int
    missing: object = None

    def residual_sq(self, A: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(D,) weighted squared residuals of the noise update (see :func:`update_noise`).

        ``A`` (R, D, d), ``b`` (R, D): the affine maps of the regions under the new decoder.
        A subclass whose pairs live elsewhere (``exactdgn.dask``) overrides this.
        """
        return _residual_sq(A, b, self, X)


def _region_sum(region: np.ndarray, values: np.ndarray, R: int) -> np.ndarray:
    """``out[r] = Σ_{p: region[p] = r} values[p]`` for (P, ...) values: (R, ...)."""
    flat = values.reshape(len(values), -1)
    out = np.stack(
        [np.bincount(region, weights=flat[:, i], minlength=R) for i in range(flat.shape[1])],
        axis=1,
    )
    return out.reshape((R, *values.shape[1:]))


def region_stats(
    X: np.ndarray,
    patterns: np.ndarray,
    point: np.ndarray,
    region: np.ndarray,
    log_weight: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
) -> RegionStats:
    """Reduce E-step pairs to per-region sufficient statistics.

    Parameters
    ----------
    X : (N, D)
    patterns : (R, n_units) the partition's patterns
    point, region : (P,) pair indices; log_weight : (P,) ``log w_nr``
    mean : (P, d), cov : (P, d, d) truncated posterior moments of each pair
    """
    N, D = X.shape
    R = patterns.shape[0]
    d = mean.shape[1]
    w = np.exp(log_weight)
    mt = np.concatenate([mean, np.ones((len(w), 1))], axis=1)  # E[z̃]
    second = cov + mean[:, :, None] * mean[:, None, :]
    ez2 = np.zeros((len(w), d + 1, d + 1))
    ez2[:, :d, :d] = second
    ez2[:, :d, d] = mean
    ez2[:, d, :d] = mean
    ez2[:, d, d] = 1.0
    s = np.bincount(region, weights=w, minlength=R)
    Z2 = _region_sum(region, w[:, None, None] * ez2, R)
    XZ = np.empty((R, D, d + 1))
    for k in range(d + 1):  # d + 1 sparse products (R x N) @ (N x D)
        Sk = sparse.csr_matrix((w * mt[:, k], (region, point)), shape=(R, N))
        XZ[:, :, k] = Sk @ X
    return RegionStats(patterns, s, Z2, XZ, point, region, w, mean, cov, N)


def active_regions(stats: RegionStats) -> RegionStats:
    """``stats`` restricted to the regions that hold at least one E-step pair.

    A region without pairs has ``s_r = 0``, ``Z2_r = 0`` and ``XZ_r = 0``: it adds exact zeros
    to every sum of the M-step (normal equations, noise update, expected complete-data
    log-likelihood), so dropping it changes no term; only the order of floating-point sums
    over regions can differ. Most regions of a wide d >= 2 decoder hold no pair once the
    posteriors are narrow (digits, [2,32,32,64]: ~6,000 regions, a few hundred pairs per
    point), and the M-step's per-region work (Kronecker systems, slope products) is the
    bulk of an iteration there. In-memory statistics without missing values only (a dask
    handle's sums and the missing-data statistics are returned unchanged).
    """
    if stats.region is None or stats.missing is not None or type(stats) is not RegionStats:
        return stats
    used = np.bincount(stats.region, minlength=stats.patterns.shape[0]) > 0
    if used.all():
        return stats
    idx = np.flatnonzero(used)
    new = np.full(used.shape[0], -1, dtype=np.intp)
    new[idx] = np.arange(idx.size)
    return RegionStats(
        stats.patterns[idx],
        stats.s[idx],
        stats.Z2[idx],
        stats.XZ[idx],
        stats.point,
        new[stats.region],
        stats.w,
        stats.mean,
        stats.cov,
        stats.n_points,
        stats.missing,
    )


def _slopes(decoder: Decoder, patterns: np.ndarray, layer: int) -> np.ndarray:
    sl = decoder.unit_slices[layer]
    pos, neg = decoder._pos[layer], decoder._neg[layer]
    return np.where(patterns[:, sl], pos, neg)  # (R, n_layer)


def _input_maps(decoder: Decoder, patterns: np.ndarray, layer: int) -> np.ndarray:
    """(R, n_{l-1}+1, d+1): ``H_r`` with ``[h_{l-1}; 1] = H_r z̃`` on each region."""
    R, d = patterns.shape[0], decoder.latent_dim
    if layer == 0:
        return np.broadcast_to(np.eye(d + 1), (R, d + 1, d + 1)).copy()
    M = decoder.layer_maps(patterns, layer - 1)  # pre-activations of layer-1: (R, n, d+1)
    h = _slopes(decoder, patterns, layer - 1)[:, :, None] * M
    last = np.zeros((R, 1, d + 1))
    last[:, 0, d] = 1.0
    return np.concatenate([h, last], axis=1)


def _output_maps(decoder: Decoder, patterns: np.ndarray, layer: int):
    """``M_r`` (R, D, n_l) = ∂g/∂(pre-activation of layer l) and ``β_r`` (R, D).

    ``g = M_r a_l + β_r`` on region ``r`` where ``a_l`` is the pre-activation of layer ``l``.
    """
    L = decoder.n_layers
    R = patterns.shape[0]
    n_l = decoder.weights[layer].shape[0]
    beta = np.zeros((R, n_l))
    for k in range(layer, L - 1):
        s = _slopes(decoder, patterns, k)  # (R, n_k)
        # a_{k+1} = W_{k+1} (s * a_k) + c_{k+1}
        beta = (s * beta) @ decoder.weights[k + 1].T + decoder.biases[k + 1]
    if R >= _GEMM_REGIONS and layer < L - 1:
        # one GEMM over all regions per layer, M kept as (n_k, R, n_l) between them (one
        # transposed copy at the end); the first product W_{l+1} S_l elementwise (the GEMM
        # against diag(s_l) it replaces has the same values: sums of exact zeros)
        s = _slopes(decoder, patterns, layer)
        if layer == L - 2:  # M = W_{L-1} S_{L-2}: no GEMM
            return decoder.weights[layer + 1] * s[:, None, :], beta
        Mt = decoder.weights[layer + 1][:, None, :] * s
        for k in range(layer + 1, L - 1):
            W = decoder.weights[k + 1]
            Mt *= _slopes(decoder, patterns, k).T[:, :, None]
            Mt = (W @ Mt.reshape(W.shape[1], -1)).reshape(W.shape[0], R, n_l)
        return np.ascontiguousarray(Mt.transpose(1, 0, 2)), beta
    M = np.broadcast_to(np.eye(n_l), (R, n_l, n_l)).copy()
    for k in range(layer, L - 1):
        M = np.matmul(decoder.weights[k + 1], _slopes(decoder, patterns, k)[:, :, None] * M)
    return M, beta


def _solve_psd(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``(A + εI) X = B`` for symmetric positive semi-definite ``A`` (normal equations).

    Cholesky with a tiny relative ridge ``ε = 1e-12 tr(A)/n`` (dead units make ``A``
    singular); the ridge grows by 100x until the factorisation succeeds. The M-step is guarded
    by the exact likelihood, so this regularisation cannot make the likelihood decrease.

    The ridge is a deliberate weak penalty, not only a safeguard: where ``A`` is
    ill-conditioned (cond ~ 3e11 on a random [1,6,3] start) it keeps the output layer's step
    short of the maximiser of ``Q`` (2.2e-5 nats/point there; 2.5e-3 with the hidden units
    scaled 1e6 and the output weights 1e-6, the same decoder: the penalty is not invariant to
    that rescaling), mostly in the weights of units active on little posterior mass. Solving
    the normal equations exactly instead (equilibrated Cholesky refined against ``A``, tried
    2026-12-07) made the demo's 40-iteration EM fits worse: training NLL 0.658 -> 0.807 nats
    on the wave, 61.55 -> 62.68 on digits class 3 (``exactdgn demo``). So the step stays the
    maximiser of ``Q(W) - ε ||W||² / 2`` in the normal equations' units.
    """
    n = A.shape[0]
    scale = max(float(np.trace(A)) / max(n, 1), 1e-300)
    eps = 1e-12 * scale
    for _ in range(8):
        Ae = A.copy()  # A + eps I, formed in place (one (n, n) copy: hidden layers' are large)
        np.einsum("ii->i", Ae)[:] += eps
        try:
            cf = scipy.linalg.cho_factor(Ae, lower=True, overwrite_a=True, check_finite=False)
            return scipy.linalg.cho_solve(cf, B, check_finite=False)
        except np.linalg.LinAlgError:
            eps *= 100.0
        del Ae
    return np.linalg.lstsq(A, B, rcond=None)[0]


# Hidden layers whose normal equations have more unknowns ``n = n_l (m + 1)`` than this are
# solved by conjugate gradients (:func:`layer_cg`), not directly: the direct solve holds two
# (n, n) float64 arrays and costs ~n³/3 flops (a 90 x 90 layer, n = 8,190: 1.1 GB, 1.8e11
# flops; a 200 x 200 layer, n = 40,200: 26 GB and 2.2e13 flops, which ran out of memory).
DIRECT_UNKNOWNS = 8192
# Conjugate-gradient iterations per hidden layer and M-step, and the relative residual that
# ends them sooner. Measured on a [1,64,64,5] PCA start (500 points, the 64 x 64 layer by CG):
# Q per point -1.3711 before, -1.19119 solved directly; CG -1.19305 after 10 iterations,
# -1.19146 after 100, -1.19126 after 1,000 (the blocks' couplings are ill-conditioned).
CG_MAXITER = 100
CG_RTOL = 1e-10


def layer_cg(MtLM, H, Z2, HZH, rhs, ridge, W0, inv_spd, *, factor=None, maxiter=None, rtol=None):
    """Solve a hidden layer's normal equations by block-Jacobi preconditioned CG, from ``W0``.

    The system is the direct path's (``update_layer``; ``W̃`` of shape (n_l, m+1)):

        Σ_r MtLM_r W̃ HZH_r + W̃ diag(ridge) + ε W̃ = rhs,   ε = 1e-12 tr(big) / n,

    with ``HZH_r = H_r Z2_r H_rᵀ``, ``tr(big) = Σ_r tr(MtLM_r) tr(HZH_r) + n_l Σ ridge`` and
    ``n = n_l (m + 1)`` (the ridge of :func:`_solve_psd`). No (n, n) array is formed, and each
    product goes through the rank-(d+1) factors: ``((MtLM_r (W̃ H_r)) (Z2_r H_rᵀ))`` summed as
    one GEMM, ``2 R (d+1) (2 n_l (m+1) + n_l²)`` flops (for a 200 x 200 layer in d = 1, 100x
    fewer than forming ``MtLM_r W̃ HZH_r``). Where the output is narrower than the layer,
    ``factor`` (R, D, n_l) ``= Λ^{1/2} M_r`` replaces ``MtLM_r`` by ``factorᵀ factor`` in the
    products (``n_l²`` -> ``2 D n_l``). The preconditioner is the system's diagonal blocks,
    one (m+1, m+1) block per unit ``k``: ``Σ_r MtLM_r[k, k] HZH_r + diag(ridge) + ε I``,
    inverted once by ``inv_spd`` (a backend's inverse of a batch of SPD matrices plus a
    diagonal). It stops after ``maxiter`` iterations (default :data:`CG_MAXITER`) or where the
    residual is below ``rtol`` (default :data:`CG_RTOL`) of ``rhs``.

    Started from the current weights, every CG iterate raises ``Q`` (CG minimises the
    quadratic ``-Q`` over growing Krylov spaces), so a step cut at ``maxiter`` is still a
    generalised EM step: ``Q`` does not decrease, though it may stop short of its maximiser.
    Written with operators both numpy arrays and torch tensors have (the torch M-step calls it
    too).

    Returns
    -------
    W : (n_l, m+1)
    n_iter : int
    """
    maxiter = CG_MAXITER if maxiter is None else maxiter
    rtol = CG_RTOL if rtol is None else rtol
    n_l, m1 = rhs.shape
    dM = MtLM.diagonal(0, 1, 2)  # (R, n_l)
    dH = HZH.diagonal(0, 1, 2)  # (R, m1)
    trace = float((dM.sum(1) * dH.sum(1)).sum()) + n_l * float(ridge.sum())
    eps = 1e-12 * max(trace / (n_l * m1), 1e-300)
    blocks = (dM.T @ HZH.reshape(HZH.shape[0], m1 * m1)).reshape(n_l, m1, m1)
    Binv = inv_spd(blocks, ridge + eps)

    R, k = H.shape[0], H.shape[2]
    G = (Z2 @ H.swapaxes(1, 2)).reshape(-1, m1)  # (R (d+1), m+1): Z2_r H_rᵀ stacked
    Hs = H.swapaxes(0, 1).reshape(m1, -1)  # (m+1, R (d+1)): H_r side by side

    def apply(V):
        VH = (V @ Hs).reshape(n_l, R, k).swapaxes(0, 1)  # (R, n_l, d+1): W̃ H_r
        T = MtLM @ VH if factor is None else factor.swapaxes(1, 2) @ (factor @ VH)
        return T.swapaxes(0, 1).reshape(n_l, -1) @ G + V * (ridge + eps)

    def precondition(V):
        return (Binv @ V[:, :, None])[:, :, 0]

    W = W0.clone() if hasattr(W0, "clone") else W0.copy()
    res = rhs - apply(W)
    bound = rtol * float((rhs * rhs).sum()) ** 0.5
    zr = precondition(res)
    p = zr
    rz = float((res * zr).sum())
    for it in range(maxiter):
        if float((res * res).sum()) ** 0.5 <= bound:
            return W, it
        Ap = apply(p)
        pAp = float((p * Ap).sum())
        if not pAp > 0.0:  # the direction lost its curvature to rounding: stop where it is
            return W, it
        alpha = rz / pAp
        W = W + alpha * p
        res = res - alpha * Ap
        zr = precondition(res)
        rz_new = float((res * zr).sum())
        p = zr + (rz_new / rz) * p
        rz = rz_new
    return W, maxiter


def _inv_spd(B: np.ndarray, add: np.ndarray) -> np.ndarray:
    """``(B_k + diag(add))⁻¹`` for a batch of symmetric PSD ``B`` (K, m, m) (the preconditioner
    of :func:`layer_cg`). A block that Cholesky finds not positive definite (a unit active on
    little mass) gets a jitter of 1e-12 of its mean diagonal, grown 100x until it is: a
    preconditioner need not be the exact block. (``_torch_steps._inv_spd_t``: the same rule.)

    LAPACK's ``potrf`` / ``potri`` block by block: numpy's batched ``cholesky`` took 3x as long
    as this loop for 200 blocks of 201 x 201 (2-core machine); the loop is over units, not data.
    """
    B = 0.5 * (B + np.swapaxes(B, 1, 2)) + np.diag(add)
    out = np.empty_like(B)
    m = B.shape[1]
    lower = np.tril_indices(m, -1)
    for k in range(B.shape[0]):
        block = B[k]
        jitter = 1e-12 * max(float(np.trace(block)) / m, 1e-300)
        for _ in range(12):
            c, info = scipy.linalg.lapack.dpotrf(block, lower=False, clean=False)
            if info == 0:
                inv, info = scipy.linalg.lapack.dpotri(c, lower=False)
                if info == 0:
                    inv[lower] = inv.T[lower]  # potri fills the upper triangle
                    out[k] = inv
                    break
            block = block + jitter * np.eye(m)
            jitter *= 100.0
        else:
            out[k] = np.linalg.pinv(block, hermitian=True)
    return out


# From this many regions on, the per-region products of ``update_layer`` run as batched GEMMs
# (digits [2,32,32,64], 5,775 regions: the all-layer M-step 8.6 s -> 5.9 s, loaded core); below
# it the einsum form, whose rounding the published d = 1 results were computed with.
_GEMM_REGIONS = 512


def _sym_index(n: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Upper-triangle indices of an ``n x n`` matrix and the (n, n) map to their position."""
    iu = np.triu_indices(n)
    pos = np.empty((n, n), dtype=np.intp)
    pos[iu] = np.arange(iu[0].size)
    pos[iu[1], iu[0]] = np.arange(iu[0].size)
    return iu, pos


def _sym_outer_sum(S: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``Σ_r vec(S_r) vec(T_r)ᵀ`` (m², n²) for symmetric ``S`` (R, m, m), ``T`` (R, n, n).

    One GEMM over the upper triangles (m(m+1)/2 x R x n(n+1)/2, ~4x fewer flops than the full
    vectors), then expanded by symmetry.
    """
    (iu, pu), (ju, pj) = _sym_index(S.shape[1]), _sym_index(T.shape[1])
    small = S[:, iu[0], iu[1]].T @ T[:, ju[0], ju[1]]
    m, n = S.shape[1], T.shape[1]
    return small[pu.reshape(-1)[:, None], pj.reshape(-1)[None, :]].reshape(m * m, n * n)


# Regions per block of :func:`_weighted_products` (a block is ~0.4 GFLOP on MNIST [2,32,32,784]:
# Ctrl-C is seen between blocks, and no (R, n_l, D) temporary is formed).
_REGION_BLOCK = 256


def _weighted_products(M: np.ndarray, inv_var: np.ndarray, Y: np.ndarray):
    """``M_rᵀ Λ M_r`` (R, n, n) and ``M_rᵀ Λ Y_r`` (R, n, k) for ``M`` (R, D, n), ``Y`` (R, D, k).

    One BLAS product per region, in blocks of :data:`_REGION_BLOCK` regions with BLAS held to
    one thread (:func:`exactdgn._threads.blas_one_thread`: each region's products are the same
    values as one batched call's).
    """
    R, _, n = M.shape
    MtLM = np.empty((R, n, n))
    MtLY = np.empty((R, n, Y.shape[2]))
    with blas_one_thread():
        for s in range(0, R, _REGION_BLOCK):
            sl = slice(s, s + _REGION_BLOCK)
            MtL = np.swapaxes(M[sl] * inv_var[None, :, None], 1, 2)  # (block, n, D)
            np.matmul(MtL, M[sl], out=MtLM[sl])
            np.matmul(MtL, Y[sl], out=MtLY[sl])
    return MtLM, MtLY


def update_layer(
    decoder: Decoder,
    stats: RegionStats,
    layer: int,
    inv_var: np.ndarray,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form least-squares update of layer ``layer`` with all patterns held fixed.

    Returns
    -------
    W : (n_l, n_{l-1}), c : (n_l,)
    """
    P = stats.patterns
    H = _input_maps(decoder, P, layer)  # (R, m+1, d+1)
    HZH = H @ stats.Z2 @ np.swapaxes(H, 1, 2)  # (R, m+1, m+1)
    m1 = H.shape[1]
    n_l = decoder.weights[layer].shape[0]
    ridge = np.full(m1, float(weight_decay))
    ridge[-1] = 0.0  # no penalty on the bias
    if layer == decoder.n_layers - 1:
        # output layer: rows decouple; W̃ (Σ H Z2 Hᵀ) = Σ XZ Hᵀ
        lhs = HZH.sum(axis=0) + np.diag(ridge * stats.n_points)
        if HZH.shape[0] >= _GEMM_REGIONS:
            rhs = np.tensordot(stats.XZ, H, axes=([0, 2], [0, 2]))
        else:
            rhs = np.einsum("rjk,rmk->jm", stats.XZ, H)  # Σ_r XZ_r H_rᵀ  (D, m+1)
        Wt = _solve_psd(lhs, rhs.T).T
        return Wt[:, :-1].copy(), Wt[:, -1].copy()
    M, beta_pre = _output_maps(decoder, P, layer)  # g = M a_l + beta_pre, a_l = W̃ h̃
    # Y_r = XZ_r - β_r z̄_rᵀ with β_r the part of g not through layer l's parameters
    zbar = stats.Z2[:, -1, :]  # (R, d+1) = Σ w E[z̃]
    Y = stats.XZ - beta_pre[:, :, None] * zbar[:, None, :]
    if M.shape[0] >= _GEMM_REGIONS:  # batched GEMMs (einsum's 3-operand loop is ~10x slower)
        MtLM, MtLY = _weighted_products(M, inv_var, Y)
        rhs = np.tensordot(MtLY, H, axes=([0, 2], [0, 2]))
    else:  # few regions (every d = 1 decoder): the einsum form, results kept bit for bit
        MtLM = np.einsum("rjk,j,rjl->rkl", M, inv_var, M)  # (R, n_l, n_l)
        MtLY = np.einsum("rjk,rjd->rkd", M * inv_var[None, :, None], Y)  # (R, n_l, d+1)
        rhs = np.einsum("rkd,rmd->km", MtLY, H)  # Σ_r M_rᵀ Λ Y_r H_rᵀ  (n_l, m+1)
    if n_l * m1 > DIRECT_UNKNOWNS:  # wide layer: CG, no (n, n) system formed
        W0 = np.concatenate([decoder.weights[layer], decoder.biases[layer][:, None]], axis=1)
        factor = M * np.sqrt(inv_var)[None, :, None] if M.shape[1] < n_l else None
        args = (MtLM, H, stats.Z2, HZH, rhs, ridge * stats.n_points, W0, _inv_spd)
        Wt, _ = layer_cg(*args, factor=factor)
        return Wt[:, :-1].copy(), Wt[:, -1].copy()
    # Σ_r (HZH_r)ᵀ ⊗ (MtLM_r) acting on vec(W̃) (column-major), as one GEMM over regions:
    # big[b, k, a, l] = Σ_r HZH[r, a, b] MtLM[r, k, l]
    R = HZH.shape[0]
    if R >= _GEMM_REGIONS:  # both factors symmetric: the GEMM over their upper triangles
        prod = _sym_outer_sum(HZH, MtLM)
    else:
        prod = HZH.reshape(R, m1 * m1).T @ MtLM.reshape(R, n_l * n_l)
    big = prod.reshape(m1, m1, n_l, n_l).transpose(1, 2, 0, 3).reshape(m1 * n_l, m1 * n_l)
    del prod
    np.add(big, big.T, out=big)  # 0.5 (big + bigᵀ) without a third (n, n) array
    big *= 0.5
    # + kron(diag(ridge n), I_{n_l}): on the diagonal only
    np.einsum("ii->i", big)[:] += np.repeat(ridge * stats.n_points, n_l)
    vec = _solve_psd(big, rhs.T.reshape(-1))
    Wt = vec.reshape(m1, n_l).T
    return Wt[:, :-1].copy(), Wt[:, -1].copy()


# Pairs per block of the centred residual sums (bounds the (pairs x D x d) temporaries).
_RES_BLOCK = 1 << 14


def _residual_sq(A: np.ndarray, b: np.ndarray, stats: RegionStats, X: np.ndarray) -> np.ndarray:
    """(D,) ``Σ_{n,r} w_nr [(x_n - A_r m_nr - b_r)_j² + (A_r V_nr A_rᵀ)_jj]``.

    The squared residuals are summed in the centred form (no cancellation when σ is small), in
    blocks of pairs; the trace term needs only the per-region sums ``Σ_n w_nr V_nr``
    (:func:`centred_sums` without the cross sums).
    """
    if stats.missing is not None:  # missing values: their conditional moments (em._missing)
        from ._missing import missing_residual_sq

        return missing_residual_sq(A, b, stats, X)
    return centred_sums(A, b, stats, X)[0]


def gradient_block_rows(D: int, d: int, chunk_bytes: int) -> int:
    """Pairs per block of :func:`centred_sums` with the cross sums, so that the block's
    (pairs x D) float64 arrays (residual, gather buffer, its ``(d+1)`` region sums and the
    observed mask) take about ``chunk_bytes``."""
    return int(max(1, int(chunk_bytes) // ((d + 5) * 8 * max(D, 1))))


def centred_sums(
    A: np.ndarray,
    b: np.ndarray,
    stats: RegionStats,
    X: np.ndarray,
    cross: bool = False,
    block: int = _RES_BLOCK,
):
    """The centred residual sums of the noise update and of the exact gradient (numpy).

    The numpy twin of :func:`._torch_steps._centred_sums_t` (same derivation). Returns ``rsq``
    (D,) ``= Σ_{n,r} w_nr [(x_n - A_r m_nr - b_r)_j² + (A_r V_nr A_rᵀ)_jj]`` and, with
    ``cross``, ``GA`` (R, D, d) ``= Σ_n w_nr [(x_n - A_r m_nr - b_r) m_nrᵀ - A_r V_nr]`` and
    ``Gb`` (R, D) ``= Σ_n w_nr (x_n - A_r m_nr - b_r)``: ``Λ GA_r`` and ``Λ Gb_r`` are the
    derivatives of the E-step objective ``Q`` in ``A_r`` and ``b_r`` (else ``(rsq, None,
    None)``). Residuals are formed per pair (no cancellation of expanded moments) in blocks of
    ``block`` pairs: no (pairs x D) array lives beyond one block; the cross sums of a block are
    one sparse product over the regions it touches.

    With ``cross``, NaN entries of ``X`` (missing) contribute nothing (every sum runs over the
    observed coordinates only, the trace term included: the terms of ``log p(x_obs)``); the
    noise update of missing data is :func:`exactdgn.em._missing.missing_residual_sq`.
    """
    R, D, d = A.shape
    out = np.zeros(D)
    w, pt, rg, m = stats.w, stats.point, stats.region, stats.mean
    if not cross:
        for s in range(0, len(w), block):
            sl = slice(s, s + block)
            r = rg[sl]
            res = X[pt[sl]] - b[r]
            for k in range(d):  # A_r m: d axpys of (block, D), no (block, D, d) gather
                res -= A[r, :, k] * m[sl, k : k + 1]
            out += w[sl] @ np.square(res)
        SV = _region_sum(rg, w[:, None, None] * stats.cov, R)
        out += np.einsum("rjk,rkl,rjl->j", A, SV, A)
        return out, None, None
    has_nan = bool(np.isnan(X).any())
    G = np.zeros((d + 1, R, D))  # G[k, r] = Σ_n w m̃_k res (m̃ = [m; 1])
    tri = [(k, kk) for k in range(d) for kk in range(k, d)]
    SVo = np.zeros((len(tri), R, D)) if has_nan else None  # Σ_n w V_kk' [x_nj observed]
    Ak = np.ascontiguousarray(A.transpose(2, 0, 1))  # (d, R, D): contiguous rows to gather
    n0 = min(block, len(w))
    buf_res, buf_tmp = np.empty((n0, D)), np.empty((n0, D))
    for s in range(0, len(w), block):
        sl = slice(s, s + block)
        r, n = rg[sl], len(rg[sl])
        res, tmp = buf_res[:n], buf_tmp[:n]
        np.take(X, pt[sl], axis=0, out=res)
        if has_nan:
            miss = np.isnan(res)
            res[miss] = 0.0
        np.take(b, r, axis=0, out=tmp)
        res -= tmp
        for k in range(d):
            np.take(Ak[k], r, axis=0, out=tmp)
            tmp *= m[sl, k : k + 1]
            res -= tmp
        if has_nan:
            res[miss] = 0.0
        np.multiply(res, res, out=tmp)
        out += w[sl] @ tmp
        u, inv = np.unique(r, return_inverse=True)  # the regions of this block
        U = len(u)
        wm = np.concatenate([m[sl], np.ones((n, 1))], axis=1) * w[sl, None]
        rows = (inv[None, :] + U * np.arange(d + 1)[:, None]).ravel()
        cols = np.tile(np.arange(n), d + 1)
        S = sparse.csr_matrix((wm.T.ravel(), (rows, cols)), shape=((d + 1) * U, n))
        G[:, u] += (S @ res).reshape(d + 1, U, D)
        if has_nan:
            o = (~miss).astype(np.float64)
            for i, (k, kk) in enumerate(tri):
                Sv = sparse.csr_matrix(
                    (w[sl] * stats.cov[sl, k, kk], (inv, np.arange(n))), shape=(U, n)
                )
                SVo[i, u] += Sv @ o
    if has_nan:  # per-coordinate trace sums: A_rj SVo_rj over the observed pairs
        SVf = np.empty((R, D, d, d))
        for i, (k, kk) in enumerate(tri):
            SVf[:, :, k, kk] = SVf[:, :, kk, k] = SVo[i]
        ASV = np.einsum("rjk,rjkl->rjl", A, SVf)
    else:
        SV = _region_sum(rg, w[:, None, None] * stats.cov, R)
        ASV = A @ SV
    out += (ASV * A).sum(axis=(0, 2))
    GA = G[:d].transpose(1, 2, 0) - ASV
    return out, GA, G[d]


def update_noise(
    decoder: Decoder,
    stats: RegionStats,
    diagonal: bool,
    X: np.ndarray,
    min_std: float,
) -> np.ndarray:
    """Closed-form noise update (centred residuals), floored at ``min_std``.

    ``σ_j² = (1/N) Σ_{n,r} w_nr [(x_nj - A_r m_nr - b_r)_j² + (A_r V_nr A_rᵀ)_jj]``; isotropic
    noise averages over ``j``. The Gaussian likelihood is unbounded as ``σ → 0`` (a decoder that
    passes through a data point), hence the floor.

    Returns
    -------
    (D,) standard deviations
    """
    A, b = decoder.affine_map(stats.patterns)
    var = stats.residual_sq(A, b, X) / stats.n_points
    if not diagonal:
        var = np.full_like(var, var.mean())
    return np.sqrt(np.maximum(var, min_std**2))


def expected_complete_loglik(
    decoder: Decoder, stats: RegionStats, noise_std: np.ndarray, X: np.ndarray
) -> float:
    """``Q / N``: the expected complete-data log-likelihood per point with fixed patterns.

    Excludes the prior term, which does not depend on the parameters.
    """
    A, b = decoder.affine_map(stats.patterns)
    inv_var = 1.0 / noise_std**2
    quad = (stats.residual_sq(A, b, X) * inv_var).sum() / stats.n_points
    D = X.shape[1]
    return float(-0.5 * (quad + D * LOG_2PI + np.log(noise_std**2).sum()))


def m_step(
    decoder: Decoder,
    stats: RegionStats,
    noise_std: np.ndarray,
    X: np.ndarray,
    *,
    diagonal: bool,
    min_std: float,
    weight_decay: float = 0.0,
    layers=None,
) -> tuple[Decoder, np.ndarray]:
    """One (conditional) M-step: the given layers in order by exact least squares, then the noise.

    ``layers=None`` updates every layer, first to last. Updating only the output layer (and the
    noise) leaves the partition unchanged, so that block is an exact EM step: the likelihood
    cannot decrease. Hidden-layer updates hold the activation patterns fixed and may move them.
    Statistics on a torch device (:class:`~._torch_steps.TorchRegionStats`) are solved there
    (:func:`~._torch_steps.m_step_t`, the same equations; ``X`` is then not read).
    """
    if getattr(stats, "device", None) is not None:
        from ._torch_steps import m_step_t

        return m_step_t(
            decoder,
            stats,
            noise_std,
            diagonal=diagonal,
            min_std=min_std,
            weight_decay=weight_decay,
            layers=layers,
        )
    dec = decoder.copy()
    inv_var = 1.0 / noise_std**2
    for layer in range(dec.n_layers) if layers is None else layers:
        W, c = update_layer(dec, stats, layer, inv_var, weight_decay)
        dec.weights[layer] = W
        dec.biases[layer] = c
    std = update_noise(dec, stats, diagonal, X, min_std)
    return dec, std
