"""Exact ``log p(x_obs)`` and the posterior given only the observed coordinates.

With diagonal noise, marginalising output ``j`` drops its row from ``A_r``, ``b_r`` and ``Λ``.
For point ``n`` with observed mask ``m_n ∈ {0, 1}^D`` (NaN = missing) every per-region quantity
of :mod:`exactdgn.inference._geometry` becomes per point:

* ``P_r(n) = I + A_rᵀ Λ_obs A_r = I + Σ_j m_nj λ_j a_rj a_rjᵀ``,
* ``v_r(n) = A_rᵀ Λ_obs (x_n - b_r)``,
* ``s_r(n) = ||x_n - b_r||²_{Λ_obs}``,
* ``log κ_r(n) = -½ [D_n log 2π + Σ_obs log σ_j² + log|P_r(n)| + s_r(n)
  - v_r(n)ᵀ P_r(n)⁻¹ v_r(n)]``,

where ``D_n = Σ_j m_nj``. All masked sums over ``j`` are one GEMM of the (points x D) mask
against the per-region outer products ``λ_j a_rjk a_rjl``, ``λ_j a_rjk (b_rj - c_j)`` and
``λ_j (b_rj - c_j)²`` (``c`` the geometry's centre), and the ``x``-dependent ones are the
complete-data GEMM of :meth:`RegionGeometry.gemm` applied to ``m ∘ (x - c)``: no loop over
points or missingness patterns. When the decoder's last layer is narrow (``k`` inputs,
``k(k+1)/2`` well below ``D``) the mask GEMM goes through the points' Gram matrices
``Vᵀ Λ_obs V`` of the output subspace (:func:`_masked_sums`: MNIST [2,32,32,784], 528 inner
terms instead of 784). The region ``{z : C_r z <= e_r}`` is unchanged; its whitened
form depends on the point through ``L_r(n) = K_r(n)^{-T}`` and ``μ_r(n) = L_r(n) K_r(n)^{-1}
v_r(n)``, so the retained pairs carry their own ``L`` and ``μ`` (and normals, computed on first
use in d = 2; see :class:`~exactdgn.inference.PairStats`). Pruning follows :mod:`._marginal`
(mass <= 1 and the facet bound ``Φ(min_i c_i)``, below the lower bound from seed regions).

Paths (:func:`observed_pairs`): complete rows of a batch take the complete-data
:func:`~exactdgn.inference.marginal_pairs`; d = 1 rows the interval path
(:func:`_observed_1d`: elementwise on the (points x regions) arrays, the masked sums in the
chain form of :func:`_chain_1d` with ``2R + R/8`` GEMM columns, a tail bound before the
interval masses); d = 2 rows :func:`_observed_2d`, where a pair's whitened region is the
region's tabulated polygon under the affine map ``u = T u0 - w``, ``T = K_r(n)ᵀ K_r^{-T}``
(:func:`exactdgn.gaussian.log_mass_2d_transformed`: no per-pair edge search), ``log κ`` from
the (points x regions) masked sums without square roots (:func:`_kappa_2d`; ``K_r(n)`` and
``w`` only for the pairs gathered) and a disc bound (the table's vertex disc under the map,
O(1) a pair) before the facet bound; d >= 3 rows :func:`_observed_general`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from .. import gaussian

# the unchecked forms: no NaN scan of each chunk on this hot path
from ..gaussian._api import _whiten
from ..gaussian._interval import _interval_stats, _log_interval_mass
from ._geometry import (
    _COND_QR,
    _EPS,
    _KAPPA_ROUND,
    _KAPPA_RTOL,
    LOG_2PI,
    RegionGeometry,
    qr_factor,
    stable_kappa_rounding,
)
from ._marginal import (
    _BLOCK_1D,
    _BLOCK_1D_SEQ,
    _MIN_PARALLEL,
    PairStats,
    _block_size,
    _lse_by_point,
    _map_blocks,
    _n_threads,
    _pair_stats,
    bound_rounding,
    check_points,
    marginal_pairs,
)

__all__ = ["check_missing", "observed_pairs"]


def check_missing(
    X: np.ndarray, *, name: str = "X", columns: bool = False, first_row: int = 0
) -> np.ndarray | None:
    """The (N, D) bool mask of observed entries of ``X``, or None when nothing is missing.

    Raises a ``ValueError`` naming the rows with nothing observed (numbered from
    ``first_row``: a chunk of a larger array) and, with ``columns=True`` (fitting), the
    columns with nothing observed.
    """
    nan = np.isnan(X)
    if not nan.any():
        return None
    obs = ~nan
    empty = np.nonzero(~obs.any(axis=1))[0]
    if len(empty):
        raise ValueError(
            f"{name} has {len(empty)} rows with every value missing (NaN), first rows "
            f"{(first_row + empty[:5]).tolist()}: such rows carry no information; drop them"
        )
    if columns and X.shape[0]:
        cols = np.nonzero(~obs.any(axis=0))[0]
        if len(cols):
            raise ValueError(
                f"{name} has {len(cols)} columns with every value missing (NaN), first columns "
                f"{cols[:5].tolist()}: nothing can be learned about them; drop those columns"
            )
    return obs


def _mask_weights(geom: RegionGeometry) -> np.ndarray:
    """(D, R (T + d + 1)) the masked GEMM's columns, region-major, cached on ``geom``.

    Per region: ``λ_j a_rjk a_rjl`` (``k <= l``, ``T = d(d+1)/2`` columns), ``λ_j a_rjk b'_rj``
    (``d``) and ``λ_j b'^2_rj`` (1), with ``b' = b - c``.
    """
    cached = geom.cache.get("mask_w")
    if cached is not None:
        return cached
    R, D, d = geom.A.shape
    iu, ju = np.triu_indices(d)
    T = len(iu)
    lam = geom.inv_var
    bc = geom.b - geom.center  # (R, D)
    W = np.empty((D, R, T + d + 1))
    A = geom.A.transpose(1, 0, 2)  # (D, R, d)
    W[:, :, :T] = A[:, :, iu] * A[:, :, ju] * lam[:, None, None]
    W[:, :, T : T + d] = A * (bc.T * lam[:, None])[:, :, None]
    W[:, :, -1] = np.square(bc.T) * lam[:, None]
    W = W.reshape(D, -1)
    geom.cache["mask_w"] = W
    return W


def _masked_sums(geom: RegionGeometry, m: np.ndarray) -> np.ndarray:
    """(n, (T + d + 1) R) the masked sums of :func:`_mask_weights`'s columns for masks ``m``,
    quantity-major (:func:`_mask_weights_blocks`).

    When the decoder's output subspace is narrow the sums go through its Gram matrices: with
    ``V`` (D, k) an orthonormal basis of ``span(W_L)`` (``W_L`` the last weight), every column
    pair is ``a = V α``, ``a' = V α'`` (``a_rk``, ``b'_r``), so
    ``Σ_j m_j λ_j a_j a'_j = αᵀ G(m) α'`` with ``G(m) = Vᵀ Λ_m V``: one (n x D) @ (D x k(k+1)/2)
    product for the points' Gram matrices, then (n x k(k+1)/2) @ (k(k+1)/2 x R(T+d+1)) instead
    of the (n x D) @ (D x R(T+d+1)) GEMM (MNIST [2,32,32,784]: 528 inner terms, not 784).
    The rounding is relative to the complete-data sums (``ε Σ_j λ_j |a_j a'_j|``), not to the
    masked ones: far below the ``I`` of ``P`` and the rounding of the complete-data ``log κ``
    (rows with one observed value equal the rebuilt model to 1e-10, tests/model).
    """
    f = _mask_gram(geom)
    if f is None:
        return m @ _mask_weights_blocks(geom)
    Wg, Qc = f
    return (m @ Wg) @ Qc


def _mask_gram(geom: RegionGeometry):
    """``(Wg, Qc)`` of the Gram form of :func:`_masked_sums` (cached on ``geom``), or None.

    Used when it is at most 80% of the direct GEMM's work; the basis is checked on the actual
    columns (every ``a_rk`` and ``b'_r`` within 1e-12 of its projection, relative to its
    largest entry), else None.
    """
    if "mask_gram" in geom.cache:
        return geom.cache["mask_gram"]
    geom.cache["mask_gram"] = out = _gram_weights(geom)  # set once built (threads read it)
    return out


def _gram_weights(geom: RegionGeometry):
    """:func:`_mask_gram`'s arrays, or None where the Gram form does not apply or pay."""
    R, D, d = geom.A.shape
    U = geom.gemm_basis  # span(U) ⊇ span(Λ W_L), so Λ⁻¹ U spans W_L's columns
    if U is None or R == 0:
        return None
    k = U.shape[1]
    kk = k * (k + 1) // 2
    ncol = R * (d * (d + 1) // 2 + d + 1)
    if kk * (D + ncol) > 0.8 * D * ncol:
        return None
    V, _ = np.linalg.qr(U / geom.inv_var[:, None])
    vec = np.concatenate([geom.A, (geom.b - geom.center)[:, :, None]], axis=2)  # (R, D, d+1)
    coef = np.einsum("jk,rjc->rkc", V, vec)  # (R, k, d+1)
    resid = np.abs(vec - np.einsum("jk,rkc->rjc", V, coef)).max(axis=1)
    scale = np.maximum(np.abs(vec).max(axis=1), np.finfo(float).tiny)
    if np.any(resid > 1e-12 * scale):
        return None
    ia, ib = np.triu_indices(k)
    Wg = V[:, ia] * V[:, ib] * geom.inv_var[:, None]  # (D, kk)
    iu, ju = np.triu_indices(d)
    # column pairs per region, in _mask_weights' order: a_k a_l (k <= l), a_k b', b'²
    left = np.r_[iu, np.arange(d), d]
    right = np.r_[ju, np.full(d, d), d]
    x, y = coef[:, :, left], coef[:, :, right]  # (R, k, C)
    Qc = x[:, ia] * y[:, ib]
    off = ia != ib
    Qc[:, off] += x[:, ib[off]] * y[:, ia[off]]  # (R, kk, C)
    return Wg, np.ascontiguousarray(Qc.transpose(1, 2, 0).reshape(kk, -1))  # quantity-major


def _halfspaces(geom: RegionGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(R, F, d), (R, F): the regions' rows ``C_r z <= e_r`` (scaled rows, padding ``0 <= inf``).

    ``normals = C L / ||C L||`` and ``g = e / ||C L||`` with ``L = K^{-T}``, so
    ``normals Kᵀ = C / ||C L||``: the same half-spaces, rescaled by positive factors.
    """
    cached = geom.cache.get("halfspaces")
    if cached is None:
        cached = (geom.normals @ np.swapaxes(geom.K, 1, 2), geom.g)
        geom.cache["halfspaces"] = cached
    return cached


def _solve_upper_T(K: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``K^{-T} w`` for lower-triangular (..., d, d) ``K``."""
    d = K.shape[-1]
    if d == 1:
        return w / K[..., 0]
    if d == 2:
        u1 = w[..., 1] / K[..., 1, 1]
        u0 = (w[..., 0] - K[..., 1, 0] * u1) / K[..., 0, 0]
        return np.stack([u0, u1], axis=-1)
    return np.linalg.solve(np.swapaxes(K, -1, -2), w[..., None])[..., 0]


def _kappa_block(geom: RegionGeometry, X: np.ndarray, obs: np.ndarray):
    """``log κ_r(n)``, ``K_r(n)``, ``w_r(n) = K^{-1} v`` and ``v_r(n)`` of every point and region.

    Returns (n, R), K as (n, R, d, d) (d >= 3) or the tuple of its (n, R) entries
    ``(k00,)`` / ``(k00, k10, k11)`` (d = 1, 2: elementwise, no small-matrix arrays), and
    w, v of shape (n, R, d).
    """
    R, _, d = geom.A.shape
    n = X.shape[0]
    iu, ju = np.triu_indices(d)
    T = len(iu)
    m = obs.astype(np.float64)
    Xc0 = np.where(obs, X - geom.center, 0.0)
    Mq = _masked_sums(geom, m).reshape(n, T + d + 1, R).transpose(0, 2, 1)
    prod = geom.gemm(Xc0)  # x0ᵀ Λ A_r K_r^{-T} (R d) and x0ᵀ Λ b'_r (R)
    wf = prod[:, : R * d].reshape(n, R, d)
    # v = A_rᵀ Λ_obs (x - b_r) = K_r (K_r^{-1} A_rᵀ Λ x0) - Σ_j m_j λ_j a_rj b'_rj
    Kf = geom.K
    if d == 1:
        v = (Kf[:, 0, 0] * wf[..., 0] - Mq[..., 1])[..., None]
        k00 = np.sqrt(1.0 + Mq[..., 0])
        w = v / k00[..., None]
        log_det_P = 2.0 * np.log(k00)
        K = (k00,)
    elif d == 2:
        v0 = Kf[:, 0, 0] * wf[..., 0] - Mq[..., 3]
        v1 = Kf[:, 1, 0] * wf[..., 0] + Kf[:, 1, 1] * wf[..., 1] - Mq[..., 4]
        k00 = np.sqrt(1.0 + Mq[..., 0])
        k10 = Mq[..., 1] / k00
        k11 = np.sqrt(1.0 + Mq[..., 2] - k10 * k10)
        w0 = v0 / k00
        w = np.stack([w0, (v1 - k10 * w0) / k11], axis=-1)
        v = np.stack([v0, v1], axis=-1)
        log_det_P = 2.0 * (np.log(k00) + np.log(k11))
        K = (k00, k10, k11)
    else:
        v = np.einsum("rij,nrj->nri", Kf, wf)
        v -= Mq[:, :, T : T + d]
        P = np.empty((n, R, d, d))
        P[:, :, iu, ju] = Mq[:, :, :T]
        P[:, :, ju, iu] = Mq[:, :, :T]
        P[:, :, np.arange(d), np.arange(d)] += 1.0
        K = _cholesky_formed(geom, P, obs)
        w = np.linalg.solve(K, v[..., None])[..., 0]
        log_det_P = 2.0 * np.log(np.diagonal(K, axis1=2, axis2=3)).sum(axis=2)
    s = Mq[:, :, -1] - 2.0 * prod[:, R * d :]
    s += np.einsum("nj,nj,j->n", Xc0, Xc0, geom.inv_var)[:, None]
    const = m @ (LOG_2PI + np.log(1.0 / geom.inv_var))  # D_n log 2π + Σ_obs log σ²
    s += const[:, None]
    s += log_det_P
    s -= np.einsum("nri,nri->nr", w, w)
    s *= -0.5
    return s, K, w, v


def _cholesky_formed(geom: RegionGeometry, P: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(n, R, d, d) lower Cholesky factors of the formed ``P = I + Aᵀ Λ_obs A`` (d >= 3).

    ``P ⪰ I`` exactly, but formed with tiny noise (``λ = 1/σ²`` of 1e16 and more next to
    the identity) its rounding can make it indefinite (``LinAlgError`` from σ = 1e-8 with a
    few values observed). When that happens, the pairs whose ``trace(P)`` exceeds 1e12 (the
    entries' rounding, ``ε trace``, is then no longer far below the eigenvalue 1 it may
    hide; below it the formed factor is safe) get theirs from Householder QR of
    ``[Λ_obs^½ A_r; I]`` (:func:`qr_factor`, ``P`` never formed); their ``cond(P)`` is far
    above ``_COND_QR``, so :func:`_refine_observed` recomputes their ``log κ`` from ``A_r``
    if they are kept.
    """
    try:
        return np.linalg.cholesky(P)
    except np.linalg.LinAlgError:
        pass
    bad = np.trace(P, axis1=-2, axis2=-1) > 1e12
    P = np.where(bad[..., None, None], np.eye(P.shape[-1]), P)
    K = np.linalg.cholesky(P)
    pb, rb = np.nonzero(bad)
    sq = np.sqrt(geom.inv_var)
    step = 4096
    for s in range(0, len(pb), step):  # bounded memory: (step, D, d) at a time
        i, r = pb[s : s + step], rb[s : s + step]
        top = geom.A[r] * (sq * obs[i])[:, :, None]
        K[i, r] = qr_factor(top)[0]
    return K


def _K_pairs(K, p: np.ndarray, r: np.ndarray, d: int) -> np.ndarray:
    """(P, d, d) lower Cholesky factors of pairs from :func:`_kappa_block`'s ``K``."""
    if not isinstance(K, tuple):
        return K[p, r]
    out = np.zeros((len(p), d, d))
    out[:, 0, 0] = K[0][p, r]
    if d == 2:
        out[:, 1, 0] = K[1][p, r]
        out[:, 1, 1] = K[2][p, r]
    return out


def _chunk(n: int, R: int, d: int, chunk_bytes: int) -> int:
    per_point = 8 * R * ((d + 1) * (d + 2) // 2 + 3 * d * d + 4 * d + 6)
    return int(max(1, min(n, chunk_bytes // max(per_point, 1))))


@dataclass
class _Merged:
    """Seed and candidate pairs of a block merged by point (see :func:`_merge_seeds`)."""

    order: np.ndarray  # sorts the concatenated [seed, candidate] pairs by point
    keep: np.ndarray  # of the sorted pairs, those retained
    point: np.ndarray  # retained pairs' point, region and log p(x, r) (sorted, kept)
    region: np.ndarray
    log_joint: np.ndarray
    log_px: np.ndarray  # (n,) log p(x) of the block's points and its error bound
    err_px: np.ndarray


def _merge_seeds(lk, seeds, cands, n: int, prune_nats: float, thr: float, need_moments: bool):
    """Merge a block's seed pairs (always kept) with its integrated candidates.

    ``seeds`` and ``cands`` are ``(point, region, log mass, error)``; ``lk`` the block's
    (n, R) ``log κ``. Sorted by point (stable), ``log p(x)`` is the log-sum-exp of ``log κ +
    log mass``; a pair is kept when its joint is finite or it is a seed, and with
    ``need_moments`` also only within ``thr`` nats of its point's ``log p(x)`` (the moments'
    pruning of :mod:`._marginal`).
    """
    p_top, r_top, lm_t, err_t = seeds
    p_c, r_c, lm_c, err_c = cands
    seed = np.r_[np.ones(len(p_top), bool), np.zeros(len(p_c), bool)]
    p_all = np.concatenate([p_top, p_c])
    order = np.argsort(p_all, kind="stable")
    p_all, seed = p_all[order], seed[order]
    r_all, lm, err = (
        np.concatenate(pair)[order] for pair in ((r_top, r_c), (lm_t, lm_c), (err_t, err_c))
    )
    lj = lk[p_all, r_all] + lm
    log_px, err_px = _lse_by_point(p_all, lj, err, n, prune_nats)
    keep = np.isfinite(lj) | seed
    if need_moments:
        keep &= (lj - log_px[p_all] > -thr) | ~np.isfinite(log_px)[p_all]  # (in differences)
    return _Merged(order, keep, p_all[keep], r_all[keep], lj[keep], log_px, err_px)


def _seed_pairs(lk: np.ndarray, top_k: int, locate, mean_of) -> tuple[np.ndarray, np.ndarray]:
    """Seed pairs (p, r) of a block for the lower bound, sorted by point: each point's
    ``top_k`` regions by ``log κ`` and, with ``locate``, the regions holding its posterior mean
    followed three times from the best region (``mean_of(rows, r)`` gives the means (n, d))."""
    n, R = lk.shape
    rows = np.arange(n)
    k = min(top_k, R)
    top = np.argpartition(-lk, k - 1, axis=1)[:, :k] if k < R else np.tile(np.arange(R), (n, 1))
    pts, regs = [np.repeat(rows, k)], [top.ravel()]
    if locate is not None and R > k:
        r = np.argmax(lk, axis=1)
        for _ in range(3):
            r_new = locate(mean_of(rows, r))
            r = np.where(r_new >= 0, r_new, r)
            pts.append(rows)
            regs.append(r)
    key = np.unique(np.concatenate(pts).astype(np.int64) * R + np.concatenate(regs))
    return key // R, key % R


def _lower_bound(lk, p_top, r_top, lm_top) -> np.ndarray:
    """(n,) ``log Σ_seeds κ Φ``, a lower bound of each point's ``log p(x)``."""
    lower = np.full(lk.shape[0], -np.inf)
    np.logaddexp.at(lower, p_top, lk[p_top, r_top] + lm_top)
    return lower


def _formed_margin(geom: RegionGeometry, X: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(n,) room for the rounding of the formed (masked-sum) ``log κ_r(n)``, a bound over
    the regions, for the pruning tests that use it before :func:`_refine_observed`.

    As :meth:`RegionGeometry.kappa_margin` for the missing-data forms: the terms are at most
    ``S = 2 (||m (x - c)||²_Λ + max_r ||b_r - c||²_Λ)`` and ``|w|² <= S`` (each rounded to
    ``~ε`` of its size), and the formed ``P_r(n)`` carries ``~ε cond(P_r(n)) <= ε trace``
    relative error into ``|w|²`` and ``log|P|`` (``trace = d + Σ_j m_j λ_j max_r |a_rj|²``).
    With tiny noise (σ = 1e-9, d = 2) the formed value of the pair holding the mass was
    hundreds of nats low, it was pruned, and ``log p(x_obs)`` was 470 nats off; ordinary
    models: ~1e-9 nats, no effect on the pruning.
    """
    c = geom.cache.get("formed_margin")
    if c is None:
        bc = geom.b - geom.center
        bq = float(np.max(np.einsum("rj,rj,j->r", bc, bc, geom.inv_var), initial=0.0))
        a2 = np.max(np.einsum("rji,rji->rj", geom.A, geom.A), axis=0, initial=0.0)  # (D,)
        c = geom.cache["formed_margin"] = (bq, geom.inv_var * a2)
    bq, la2 = c
    lam = geom.inv_var
    xc = np.where(obs, X - geom.center, 0.0)
    big = 2.0 * ((xc * xc) @ lam + bq)
    d = geom.A.shape[2]
    trace = d + obs @ la2
    return (_KAPPA_ROUND * _EPS) * 2.0 * big + _EPS * trace * (3.0 * big + d)


def _candidates(lk, p_top, r_top, lm_top, thr: float, margin: np.ndarray):
    """A lower bound of ``log p(x)`` (n,): ``log Σ_seeds κ Φ`` less twice the formed values'
    rounding room ``margin`` (seeds and candidates alike are formed), and the other pairs
    (p, r) whose ``log κ`` alone does not prune them (``log κ > lower - thr``; ``Φ <= 1``)."""
    lower = _lower_bound(lk, p_top, r_top, lm_top) - 2.0 * margin
    # in differences: at |log p| > ~2e17 nats `lower - thr` rounds to `lower` (as _marginal)
    mask = lk - lower[:, None] > -thr
    mask[p_top, r_top] = False
    p_c, r_c = np.nonzero(mask)
    return lower, p_c, r_c


def _observed_general(
    geom: RegionGeometry,
    X: np.ndarray,
    obs: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int = 4,
) -> PairStats:
    """:func:`observed_pairs` for d >= 3 (and d = 2 without a polygon table): masked GEMM,
    per-pair whitening.

    Parameters
    ----------
    geom : RegionGeometry
    X : (N, D) array_like, NaN where missing (values there are ignored)
    obs : (N, D) bool or None
        True where observed (every row has at least one); None (what
        :func:`~exactdgn.inference.check_missing` returns when nothing is missing): every
        value observed.
    prune_nats, need_moments, chunk_bytes :
        As in :func:`exactdgn.inference.marginal_pairs`.
    top_k : int
        Seed regions per point for the lower bound (plus the regions located by following
        posterior means).

    Returns
    -------
    PairStats
        With the per-pair geometry ``pair_normals``, ``pair_L``, ``pair_mu`` and
        ``pair_log_det_P`` (the whitening depends on the point's observed coordinates).
    """
    N = X.shape[0]
    R, _, d = geom.A.shape
    thr = prune_nats + np.log(max(R, 1))
    Cs, es = _halfspaces(geom)
    nt = _n_threads()
    parallel = nt > 1 and N * R >= 2 * _MIN_PARALLEL
    # as in marginal_pairs: blocks within the memory bound (per thread), a multiple of threads
    cs = _block_size(N, _chunk(N, R, d, chunk_bytes), nt if parallel else 1)

    def geometry(p, r, K, w):
        """Per-pair whitened region for pairs (p, r): normals, offsets, L, μ."""
        if d == 2:
            return _whiten_2d(Cs[r], es[r], K[0][p, r], K[1][p, r], K[2][p, r], w[p, r])
        Kp = _K_pairs(K, p, r, d)
        L = np.swapaxes(np.linalg.inv(Kp), 1, 2) if len(p) else np.zeros((0, d, d))
        mu = _solve_upper_T(Kp, w[p, r])
        normals, offsets, _ = _whiten(mu, L, Cs[r], es[r])
        return normals, offsets, L, mu

    def block(s: int):
        sl = slice(s, min(N, s + cs))
        n = sl.stop - sl.start
        lk, K, W, V = _kappa_block(geom, X[sl], obs[sl])
        p_top, r_top = _seed_pairs(
            lk, top_k, geom.locate, lambda p, r: _solve_upper_T(_K_pairs(K, p, r, d), W[p, r])
        )
        nrm_t, off_t, L_t, mu_t = geometry(p_top, r_top, K, W)
        lm_t, err_t = gaussian.log_mass(nrm_t, off_t, return_error=True)
        margin = _formed_margin(geom, X[sl], obs[sl])
        lower, p_c, r_c = _candidates(lk, p_top, r_top, lm_t, thr, margin)
        nrm_c, off_c, L_c, mu_c = geometry(p_c, r_c, K, W)
        if len(p_c):  # facet bound: Φ_r <= Φ(min_i c_i)
            bound = lk[p_c, r_c] + np.minimum(0.0, log_ndtr(off_c.min(axis=1, initial=np.inf)))
            keep = bound - lower[p_c] > -thr
            p_c, r_c, nrm_c, off_c, L_c, mu_c = (
                a[keep] for a in (p_c, r_c, nrm_c, off_c, L_c, mu_c)
            )
        floor = (lower[p_c] - lk[p_c, r_c]) - thr
        lm_c, err_c = gaussian.log_mass(
            nrm_c, off_c, return_error=True, floor=floor, log_weight=lk[p_c, r_c] - lower[p_c]
        )
        m = _merge_seeds(
            lk,
            (p_top, r_top, lm_t, err_t),
            (p_c, r_c, lm_c, err_c),
            n,
            prune_nats,
            thr,
            need_moments,
        )
        order, keep, log_px, err_px = m.order, m.keep, m.log_px, m.err_px
        nrm, off, L, mu = (
            np.concatenate(pair)[order][keep]
            for pair in ((nrm_t, nrm_c), (off_t, off_c), (L_t, L_c), (mu_t, mu_c))
        )
        p_all, r_all, lj = m.point, m.region, m.log_joint
        v = V[p_all, r_all]
        K_p = _K_pairs(K, p_all, r_all, d)
        log_det_P = 2.0 * np.log(np.diagonal(K_p, axis1=1, axis2=2)).sum(axis=1)
        mean = cov = None
        if need_moments:
            tm = gaussian.truncated_moments(nrm, off, log_weight=lj - log_px[p_all])
            mean = mu + np.einsum("pij,pj->pi", L, tm.mean)
            cov = L @ tm.cov @ np.swapaxes(L, 1, 2)
        st = PairStats(p_all + s, r_all, lj, log_px, err_px, v, off, mean, cov, len(p_all))
        return st, (
            nrm,
            L,
            mu,
            log_det_P,
        )

    parts = _map_blocks(block, range(0, N, cs), parallel=parallel, rows=N)
    st = _pair_stats([q[0] for q in parts])

    def cat(i):
        return parts[0][1][i] if len(parts) == 1 else np.concatenate([q[1][i] for q in parts])

    st.pair_normals, st.pair_L, st.pair_mu, st.pair_log_det_P = (cat(i) for i in range(4))
    return st


def _mask_weights_blocks(geom: RegionGeometry) -> np.ndarray:
    """(D, (T + d + 1) R) :func:`_mask_weights`'s columns quantity-major (one block of R per
    sum: each sum of every region is a contiguous slice of the product), cached on ``geom``."""
    cached = geom.cache.get("mask_w_blocks")
    if cached is None:
        R = geom.A.shape[0]
        W = _mask_weights(geom)
        C = W.shape[1] // max(R, 1)
        cached = np.ascontiguousarray(W.reshape(-1, R, C).transpose(0, 2, 1).reshape(-1, C * R))
        geom.cache["mask_w_blocks"] = cached
    return cached


def _gemm_blocks(geom: RegionGeometry, Xc: np.ndarray) -> np.ndarray:
    """(n, 3R) :meth:`RegionGeometry.gemm` of d = 2 with its columns in blocks of R
    (``w⁰_0 | w⁰_1 | -2 x'ᵀΛb'``; the factor -2 is exact), cached on ``geom``."""
    cached = geom.cache.get("gemm_blocks")
    if cached is None:
        R = geom.A.shape[0]
        Wm = geom.gemm_w if geom.gemm_basis is None else geom.gemm_w_basis
        blocks = [Wm[:, 0 : 2 * R : 2], Wm[:, 1 : 2 * R : 2], -2.0 * Wm[:, 2 * R :]]
        cached = np.ascontiguousarray(np.concatenate(blocks, axis=1))
        geom.cache["gemm_blocks"] = cached
    if geom.gemm_basis is None:
        return Xc @ cached
    return (Xc @ geom.gemm_basis) @ cached


def _kappa_2d(geom: RegionGeometry, X: np.ndarray, obs: np.ndarray):
    """``log κ_r(n)`` (n, R) of d = 2 and the arrays the pairs' whitening is gathered from
    (:func:`_gather_2d`): the masked sums' buffer (n, 6R) with ``P00 = 1 + Σ mλ a_0²``,
    ``P01``, ``k11² = P11 - P01²/P00`` in its first three blocks of R, the GEMM's (n, 3R) with
    ``v0`` in its first block, and ``v1`` (n, R).

    ``vᵀP⁻¹v = v0²/P00 + (v1 - t v0)²/k11²`` with ``t = P01/P00`` and
    ``log|P| = log(P00 k11²)`` (the Cholesky factor's squares: no square roots, one log, on
    the (n, R) arrays; ``K`` and ``w`` only for the pairs gathered).
    """
    R = geom.A.shape[0]
    m, x0, c = _observed_part(X, obs, geom)
    Mq = _masked_sums(geom, m)  # (n, 6R) in blocks: Σ mλ a0a0 | a0a1 | a1a1 | a0b' | a1b' | b'²
    prod = _gemm_blocks(geom, x0)  # (n, 3R): x'ᵀΛ A_r K_r^{-T} (two blocks) | -2 x'ᵀΛ b'_r
    n = X.shape[0]
    k00, k10, k11 = geom.K[:, 0, 0], geom.K[:, 1, 0], geom.K[:, 1, 1]
    c += m @ (LOG_2PI + np.log(1.0 / geom.inv_var))  # ||x'||²_Λobs + D_n log 2π + Σ log σ²
    v1 = np.empty((n, R))
    from . import _missing_kernels as kernels  # numba: imported on first use

    kernels.kappa_rows_2d(Mq, prod, v1, c, k00, k10, k11)
    return Mq[:, 5 * R :], (Mq, prod, v1)


def _bounded_candidates(geom: RegionGeometry, lk, Q, lower, thr: float, seed_key):
    """The d = 2 pairs other than the seeds (sorted flat keys ``p R + r``) whose exact weight
    can be visible: the ``κ`` test ``log κ - lower > -thr``, then the disc and the facet
    bounds (O(1) and O(rows) a pair, from the polygon table), in one compiled pass
    (:func:`_missing_kernels.candidate_rows_2d`). The pairs the bounds drop are below their
    floor in the integrator too, so the pairs and values are those without them.

    Returns ``p, r, log κ`` (P,), ``w`` (P, 2) and the maps ``T`` (P, 2, 2).
    """
    from . import _missing_kernels as kernels

    tab = geom.polygons
    P = int(np.count_nonzero(lk - lower[:, None] > -thr))
    out = (np.empty(P, np.intp), np.empty(P, np.intp), np.empty(P))
    out += (np.empty((P, 2)), np.empty((P, 2, 2)))
    k = kernels.candidate_rows_2d(
        *Q, lower, thr, _BOUND_SLACK, seed_key, geom.L, tab.centroid, tab.radius, tab.width,
        tab.normals, tab.offsets, *out,
    )  # fmt: skip
    return tuple(a[:k] for a in out)


def _gather_2d(Q, p: np.ndarray, r: np.ndarray):
    """``k00, k10, k11`` (P,), ``w = K^{-1} v`` (P, 2) and ``v`` (P, 2) of pairs (p, r) from
    :func:`_kappa_2d`'s arrays (``K = [[k00, 0], [k10, k11]]`` the Cholesky factor of P).

    The arrays are column blocks of two row-major buffers (and one (n, R) array): one flat
    index per buffer, not a 2-D fancy index per array."""
    Mq, prod, v1 = Q
    R = v1.shape[1]
    fm = np.ravel(Mq)
    i = p * Mq.shape[1] + r
    p00 = fm[i]
    k00 = np.sqrt(p00)
    k10 = fm[i + R] / k00
    k11 = np.sqrt(fm[i + 2 * R])
    v0 = np.ravel(prod)[p * prod.shape[1] + r]
    v1 = np.ravel(v1)[p * R + r]
    w0 = v0 / k00
    w = np.stack([w0, (v1 - k10 * w0) / k11], axis=-1)
    return k00, k10, k11, w, np.stack([v0, v1], axis=-1)


def _observed_2d(
    geom: RegionGeometry,
    X: np.ndarray,
    obs: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int = 4,
) -> PairStats:
    """:func:`observed_pairs` for d = 2 (any rows): :func:`_observed_general`'s steps with
    the masses of the regions' tabulated polygons under each pair's affine map
    (:func:`exactdgn.gaussian.log_mass_2d_transformed`) and the per-pair whitening gathered
    only for the pairs that need it (:func:`_kappa_2d`, :func:`_gather_2d`). The pairs'
    whitened rows are left to :meth:`PairStats.geometry` (first use)."""
    N = X.shape[0]
    R = geom.A.shape[0]
    thr = prune_nats + np.log(max(R, 1))
    tab = geom.polygons
    nt = _n_threads()
    parallel = nt > 1 and N * R >= 2 * _MIN_PARALLEL
    cs = _block_size(N, _chunk(N, R, 2, chunk_bytes), nt if parallel else 1)

    def block(s: int):
        sl = slice(s, min(N, s + cs))
        n = sl.stop - sl.start
        lk, Q = _kappa_2d(geom, X[sl], obs[sl])

        def mean_of(p, r):  # μ = K^{-T} w (as _solve_upper_T)
            k00, k10, k11, w, _ = _gather_2d(Q, p, r)
            mu1 = w[:, 1] / k11
            return np.stack([(w[:, 0] - k10 * mu1) / k00, mu1], axis=-1)

        p_top, r_top = _seed_pairs(lk, top_k, geom.locate, mean_of)
        k00, k10, k11, w_top, _ = _gather_2d(Q, p_top, r_top)
        T = _map_2d_entries(geom, k00, k10, k11, r_top)
        lm_t, err_t = gaussian.log_mass_2d_transformed(tab, r_top, T, w_top)
        # room for the formed values' rounding (both the seeds' and the candidates')
        lower = _lower_bound(lk, p_top, r_top, lm_t) - 2.0 * _formed_margin(geom, X[sl], obs[sl])
        p_c, r_c, lk_c, w_c, T_c = _bounded_candidates(geom, lk, Q, lower, thr, p_top * R + r_top)
        seeds = (p_top, r_top, lm_t, err_t)
        merged = []

        def merge(lm_c, err_c):  # -> the candidates kept (their moments are wanted)
            merged.append(
                _merge_seeds(lk, seeds, (p_c, r_c, lm_c, err_c), n, prune_nats, thr, need_moments)
            )
            kept = np.zeros(len(p_top) + len(p_c), bool)
            kept[merged[0].order[merged[0].keep]] = True
            return kept[len(p_top) :]

        floor_c = (lower[p_c] - lk_c) - thr
        if need_moments:  # candidates' masses and geometry once, moments only where kept
            tm_c = gaussian.truncated_moments_2d_transformed(tab, r_c, T_c, w_c, floor_c, merge)
        else:
            merge(*gaussian.log_mass_2d_transformed(tab, r_c, T_c, w_c, floor_c))
        m = merged[0]
        log_px, err_px = m.log_px, m.err_px
        p_all, r_all, lj = m.point, m.region, m.log_joint
        k00, k10, k11, w, v = _gather_2d(Q, p_all, r_all)
        L, mu = _l_mu_2d(k00, k10, k11, w)
        log_det_P = 2.0 * (np.log(k00) + np.log(k11))
        mean = cov = None
        if need_moments:  # the seeds' moments (integrated again), then the kept pairs'
            tm_t = gaussian.truncated_moments_2d_transformed(tab, r_top, T, w_top)
            pick = m.order[m.keep]
            tm_mean = np.concatenate([tm_t.mean, tm_c.mean])[pick]
            tm_cov = np.concatenate([tm_t.cov, tm_c.cov])[pick]
            mean = mu + np.einsum("pij,pj->pi", L, tm_mean)
            cov = L @ tm_cov @ np.swapaxes(L, 1, 2)
        st = PairStats(p_all + s, r_all, lj, log_px, err_px, v, None, mean, cov, len(p_all))
        st.pair_L, st.pair_mu, st.pair_log_det_P = L, mu, log_det_P
        return st

    return _pair_stats(_map_blocks(block, range(0, N, cs), parallel=parallel, rows=N))


def _check_observed(geom: RegionGeometry, X, obs):
    """``X`` and its mask checked for :func:`observed_pairs` (``obs`` None: all observed)."""
    X = check_points(geom, X, allow_nan=True)
    if obs is None:
        obs = np.ones(X.shape, dtype=bool)
    obs = np.asarray(obs, dtype=bool)
    if obs.shape != X.shape:
        raise ValueError(
            f"obs has shape {obs.shape} but X has shape {X.shape}: give one flag per value "
            "(check_missing(X))"
        )
    bad = obs & np.isnan(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"X is NaN where obs is True in {len(rows)} rows (first rows {rows[:5].tolist()}): "
            "mark missing values False (obs = check_missing(X))"
        )
    return X, obs


def observed_pairs(
    geom: RegionGeometry,
    X: np.ndarray,
    obs: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int = 4,
    check_input: bool = True,
) -> PairStats:
    """Exact ``log p(x_obs)`` of each row and the pairs that carry the posterior ``p(z | x_obs)``.

    Rows with every value observed take the complete-data path
    (:func:`~exactdgn.inference.marginal_pairs`: the factored GEMM and the region's own
    whitening); the others the missing-data paths of this module (d = 1: intervals, elementwise
    on the (points x regions) arrays; d >= 2: per-pair whitening). The pairs come back grouped
    by point in row order, as from a single call.

    Parameters
    ----------
    geom : RegionGeometry
    X : (N, D) array_like, NaN where missing (values there are ignored)
    obs : (N, D) bool or None
        True where observed (every row has at least one); None (what
        :func:`~exactdgn.inference.check_missing` returns when nothing is missing): every
        value observed.
    prune_nats, need_moments, chunk_bytes :
        As in :func:`exactdgn.inference.marginal_pairs`.
    top_k : int
        Seed regions per point for the lower bound (d >= 2; plus the regions located by
        following posterior means).
    check_input : bool
        Check ``X`` and ``obs`` (shapes, rows, values: passes over them); ``False`` skips it
        for callers that have checked them already.

    Returns
    -------
    PairStats
        With the per-pair ``pair_L``, ``pair_mu`` and ``pair_log_det_P`` (the whitening
        depends on the point's observed coordinates); the whitened ``pair_normals`` and
        ``offsets`` are computed from them on first use (:meth:`PairStats.geometry`, d = 2 and
        complete rows) or come with the pairs (d = 1, d >= 3).

    Raises
    ------
    ValueError
        When ``X`` is not (N, D) with N >= 1, holds infinite values, ``obs`` is not (N, D),
        or ``X`` is NaN where ``obs`` is True.
    """
    if check_input:
        X, obs = _check_observed(geom, X, obs)
    elif obs is None:
        obs = np.ones(X.shape, dtype=bool)
    N = X.shape[0]
    d = geom.A.shape[2]
    kw = {"prune_nats": prune_nats, "need_moments": need_moments, "chunk_bytes": chunk_bytes}
    full = obs.all(axis=1)
    parts = []
    if full.any():
        rows = np.flatnonzero(full)
        st = marginal_pairs(geom, X[rows], check_input=False, **kw)
        parts.append((rows, _with_pair_geometry(geom, st)))
    if not full.all():
        rows = np.flatnonzero(~full) if full.any() else None
        Xm, om = (X, obs) if rows is None else (X[rows], obs[rows])
        if d == 1 and geom.interval is not None:
            st = _observed_1d(geom, Xm, om, **kw)
        elif d == 2 and geom.polygons is not None:
            st = _observed_2d(geom, Xm, om, top_k=top_k, **kw)
        else:
            st = _observed_general(geom, Xm, om, top_k=top_k, **kw)
        _refine_observed(geom, Xm, om, st, need_moments)
        if rows is None:
            return st
        parts.append((rows, st))
    return _merge(N, parts)


def _refine_observed(
    geom: RegionGeometry, X: np.ndarray, obs: np.ndarray, st: PairStats, need_moments: bool
) -> None:
    """Redo, in place, the missing-data pairs whose masked GEMM forms may have lost accuracy.

    The paths above form ``log κ_r(n)`` as ``s_r(n) - v_r(n)ᵀ P_r(n)⁻¹ v_r(n)`` from masked
    sums about the centre ``c`` (terms of size ``S = 2(||m (x - c)||²_Λ + ||b_r - c||²_Λ) +
    vᵀμ``, each rounded to ``~ε S``) and ``P_r(n)`` from its formed entries (``log|P|`` off by
    ``~ε cond(P)``): with steep regions or tiny noise ``S`` is 1e9 for a result of O(1) (the
    complete-data path's defect, :meth:`RegionGeometry.refine_log_kappa`). Pairs whose
    estimate ``8 ε S`` exceeds ``1e-10 max(1, |log p_r|)``, or with ``cond(P_r(n)) > 1e6``
    (d >= 2), are recomputed from ``A_r``'s observed rows: Householder QR of
    ``[Λ_obs^½ A_r; I] = Q Kᵀ`` (``P`` never formed), ``w = Q_topᵀ Λ_obs^½ (x - b_r)``,
    ``μ = K^{-T} w`` and ``log κ`` from ``||x - b_r - A_r μ||²_{Λ_obs} + ||μ||²`` (no
    cancellation); then the pair's mass (and moments) from its new whitening, and the
    ``log p(x_obs)`` of the points they belong to. The other pairs' estimate is added to
    ``log_px_error`` (weighted by the pairs' posterior probabilities). Ordinary models have
    no such pair (MNIST decoders, half the pixels missing: none).
    """
    P = len(st.point)
    if P == 0:
        return
    p, r = st.point, st.region
    d = geom.latent_dim
    from . import _missing_kernels as kernels  # numba: imported on first use

    n = len(st.log_px)
    xq = np.empty(X.shape[0])
    kernels.observed_quad(X, obs, geom.center, geom.inv_var, xq)
    bc = geom.b - geom.center
    bq = np.einsum("rj,rj,j->r", bc, bc, geom.inv_var)
    err, bad, extra = np.empty(P), np.empty(P, dtype=bool), np.zeros(n)
    unit = _KAPPA_ROUND * _EPS
    # cond(P_r(n)) = cond(L)² (d = 2: bounded inside the kernel; d = 1: one direction, none)
    cond = np.linalg.cond(st.pair_L) ** 2 if d >= 3 else np.zeros(P)
    kernels.pair_rounding(
        p, r, xq, bq, st.v, st.pair_mu, st.log_joint, st.log_px, st.pair_L, d == 2, cond,
        _KAPPA_RTOL, _COND_QR, unit, err, bad, extra,
    )  # fmt: skip
    if not bad.any():
        st.log_px_error = st.log_px_error + extra
        return
    i = np.flatnonzero(bad)
    pi, ri = p[i], r[i]
    m = obs[pi]
    sq = np.sqrt(geom.inv_var) * m  # (k, D) Λ_obs^½ of each pair's point
    A = geom.A[ri]
    K, Qt = qr_factor(A * sq[:, :, None])
    Kt = np.swapaxes(K, 1, 2)
    xc, bc = np.where(m, X[pi] - geom.center, 0.0), np.where(m, geom.b[ri] - geom.center, 0.0)
    diff = xc - bc
    w = np.einsum("pjk,pj->pk", Qt, diff * sq)  # K⁻¹ v
    L = np.linalg.inv(Kt)  # K^{-T}, upper triangular
    mu = np.einsum("pij,pj->pi", L, w)
    res = diff - np.einsum("pjk,pk->pj", A, mu) * m
    quad = np.einsum("pj,pj,j->p", res, res, geom.inv_var) + np.einsum("pi,pi->p", mu, mu)
    log_det_P = 2.0 * np.log(np.diagonal(Kt, axis1=1, axis2=2)).sum(axis=1)
    const = m @ (LOG_2PI + np.log(1.0 / geom.inv_var))
    lk = -0.5 * (const + log_det_P + quad)
    normals, offsets = pair_whitening(geom, ri, L, mu)
    # Each pair's weight exp(lk - log p) against a lower bound of its point's log p(x_obs)
    # (the value before this refinement, less its error and its pairs' rounding estimates, less
    # 1 nat), as the first pass and the complete path weigh theirs: thin d >= 3 polyhedra whose
    # edge-formula error cannot show once weighted are not sliced. Without it every thin one
    # was (a d = 3 row 1e4 sd out under mixed noise: 93 polyhedra, 53,216 cross-sections,
    # 135 s; now 2 s, the same value and estimate).
    slack = np.zeros(n)
    np.maximum.at(slack, p, err)
    ref = (st.log_px - st.log_px_error - slack - 1.0)[pi]
    with np.errstate(invalid="ignore"):
        lw = np.where(np.isfinite(ref), lk - ref, np.inf)
    lw = np.where(np.isnan(lw), np.inf, lw)  # (unknown: sliced, as without a weight)
    lm, lm_err = gaussian.log_mass(normals, offsets, return_error=True, log_weight=lw)
    if need_moments:  # weighted by the pair's share of p(x_obs) (<= 1, its error as slack)
        with np.errstate(invalid="ignore"):
            share = np.minimum(lw + lm + np.minimum(lm_err, 1e3), 0.0)
        share = np.where(np.isnan(share), 0.0, share)
        tm = gaussian.truncated_moments(normals, offsets, log_weight=share)
        lm, lm_err = tm.log_mass, tm.error
        st.mean[i] = mu + np.einsum("pij,pj->pi", L, tm.mean)
        st.cov[i] = L @ tm.cov @ np.swapaxes(L, 1, 2)
    st.log_joint[i] = lk + lm
    st.v[i] = np.einsum("pji,pj->pi", Kt, w)  # v = K w
    st.pair_L[i], st.pair_mu[i], st.pair_log_det_P[i] = L, mu, log_det_P
    st.pair_normals = st.offsets = None  # the whitened rows again on first use
    terms = np.abs(xc) + np.abs(bc) + np.einsum("pjk,pk->pj", np.abs(A), np.abs(mu)) * m
    err[i] = lm_err + stable_kappa_rounding(lk, res, terms, geom.inv_var)
    # log p(x_obs) and the rounding part of its error again for the points with a recomputed
    # pair (pairs grouped by point)
    pts = np.unique(pi)
    sel = np.flatnonzero(np.isin(p, pts))
    local = np.searchsorted(pts, p[sel])  # the points numbered 0 .. len(pts) - 1
    # (prune_nats = inf: the pruning term is in log_px_error already)
    st.log_px[pts], extra[pts] = _lse_by_point(local, st.log_joint[sel], err[sel], len(pts), np.inf)
    st.log_px_error = st.log_px_error + extra


def _with_pair_geometry(geom: RegionGeometry, st: PairStats) -> PairStats:
    """Complete-data pairs with their (the region's) ``L``, ``μ`` and ``log|P|`` as per-pair
    arrays; the whitened rows are computed on first use (:meth:`PairStats.geometry`)."""
    _, st.pair_L, st.pair_mu, st.pair_log_det_P = st.geometry(geom)
    st.pair_normals = st.offsets = None
    return st


def _merge(N: int, parts: list) -> PairStats:
    """One :class:`PairStats` of ``N`` rows from ``(rows, stats)`` parts over disjoint rows."""
    log_px = np.empty(N)
    err = np.empty(N)
    for rows, st in parts:
        log_px[rows] = st.log_px
        err[rows] = st.log_px_error
    point = np.concatenate([rows[st.point] for rows, st in parts])
    order = np.argsort(point, kind="stable")

    def cat(name):
        arrs = [getattr(st, name) for _, st in parts]
        if any(a is None for a in arrs):
            return None
        F = max(a.shape[1] for a in arrs) if arrs[0].ndim > 1 and name in _PADDED else None
        if F is not None:  # facet arrays of the paths may differ in padding width
            arrs = [_pad_facets(a, F, name) for a in arrs]
        return np.concatenate(arrs)[order]

    names = ("region", "log_joint", "v", "offsets", "mean", "cov")
    geo = ("pair_normals", "pair_L", "pair_mu", "pair_log_det_P")
    out = {n: cat(n) for n in names + geo}
    return PairStats(
        point=point[order],
        log_px=log_px,
        log_px_error=err,
        n_candidates=int(sum(st.n_candidates for _, st in parts)),
        **out,
    )


_PADDED = ("offsets", "pair_normals")


def _pad_facets(a: np.ndarray, F: int, name: str) -> np.ndarray:
    """Pad a facet array to ``F`` rows: offsets ``+inf``, normals 0 (no constraint)."""
    if a.shape[1] == F:
        return a
    pad = [(0, 0), (0, F - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, constant_values=np.inf if name == "offsets" else 0.0)


def _mask_weights_1d(geom: RegionGeometry) -> np.ndarray:
    """(D, 3R) the d = 1 masked GEMM's columns in three blocks of R, cached on ``geom``:
    ``λ_j a_rj²``, ``λ_j a_rj b'_rj`` and ``λ_j b'^2_rj`` (``b' = b - c``)."""
    return _mask_weights_blocks(geom)


# Points x regions per block of the missing-data d = 1 path, in units of the complete-data
# d = 1 blocks (its mask GEMM wants more rows than the elementwise work alone).
_MISSING_1D_BLOCKS = 4


def _observed_1d(
    geom: RegionGeometry,
    X: np.ndarray,
    obs: np.ndarray,
    *,
    prune_nats: float,
    need_moments: bool,
    chunk_bytes: int,
) -> PairStats:
    """:func:`observed_pairs` for d = 1, every row with a missing value.

    Region ``r`` is the interval ``[lo_r, hi_r]`` of ``z``. With the masked sums
    ``α_r(n) = Σ_j m_nj λ_j a_rj²``, ``β_r(n) = Σ_j m_nj λ_j a_rj b'_rj`` and
    ``γ_r(n) = Σ_j m_nj λ_j b'^2_rj`` (one (n x D) @ (D x 3R) GEMM of the mask) and the
    complete-data GEMM of ``x' = m ∘ (x - c)`` (``w⁰_r = x'ᵀΛ a_r / k⁰_r``, ``x'ᵀΛ b'_r``):

    * ``k_r(n) = sqrt(1 + α_r(n))`` (the posterior precision is ``k²``),
    * ``v_r(n) = k⁰_r w⁰_r - β_r(n)`` and the whitened mean shift ``t_r(n) = v_r(n) / k_r(n)``,
    * ``log κ_r(n) = -½ [D_n log 2π + Σ_obs log σ_j² + 2 log k_r + ||x'||²_Λ - 2 x'ᵀΛb'_r
      + γ_r(n) - t_r²]``,
    * the whitened interval ``[k_r lo_r - t_r, k_r hi_r - t_r]`` (mean ``μ = t / k``).

    Everything after the GEMMs is one compiled pass per row (:mod:`._missing_kernels`: the
    recurrence and ``q = -2 log κ`` of every pair, :func:`_chain_cost`, then the selection
    below with ``k``, ``t`` and the whitened intervals of the pairs kept); the pairs' whitened
    rows are built on first use (:meth:`PairStats.geometry`). Pruning as in the
    complete-data path (the exact terms of the region with the largest ``κ_r`` and of the
    region holding its posterior mean give the lower bound; pairs with
    ``log κ_r <= lower - prune_nats - log R`` are skipped: their mass is at most 1), then a
    tail bound on those candidates before their masses: the mass is at most
    ``Φ(-δ) <= exp(-δ²/2)``, ``δ`` the whitened distance from the pair's posterior mean to its
    interval (on MNIST [1,64,64,784] with half the pixels: 40.1 candidates per point, 27.7
    integrated, against 28.7 complete).
    """
    N = X.shape[0]
    R = geom.A.shape[0]
    lo_z, hi_z, order, breaks = geom.interval
    chain = _chain_1d(geom)
    Wm = _mask_weights_1d(geom) if chain is None else None
    log_var = LOG_2PI - np.log(geom.inv_var)  # (D,) log 2π + log σ_j²
    thr = prune_nats + np.log(max(R, 1))
    nt = _n_threads()
    parallel = nt > 1 and N * R >= 2 * _MIN_PARALLEL
    # the masked GEMM is most of the work: blocks of ~4x the complete-data d = 1 blocks
    # bytes per row of a block's buffers: the GEMMs' results and q (~5R), the pair buffers
    # (7R) and the pairs kept
    per_row = (13 * max(R, 1) + 16) * 8
    cs = int(
        max(1, min(N, _MISSING_1D_BLOCKS * (_BLOCK_1D if parallel else _BLOCK_1D_SEQ) // max(R, 1)))
    )
    cs = int(max(1, min(cs, chunk_bytes // per_row)))
    cs = _block_size(N, cs, nt if parallel else 1)

    # the kappa functions work on the regions in the order ``perm`` with reference points zr
    perm = np.arange(R) if chain is None else order
    zr = np.zeros(R) if chain is None else chain["zr"]
    pos = np.empty(R, dtype=np.int64)
    pos[perm] = np.arange(R)
    pos_of_rank = pos[order]  # permuted index of the region at each sorted position
    lo_abs, hi_abs = lo_z[perm], hi_z[perm]
    lo_p = _scaled_diff(lo_abs, zr)  # lo - ζ (±inf kept)
    hi_p = _scaled_diff(hi_abs, zr)

    from . import _missing_kernels as kernels  # numba: imported on first use

    local = threading.local()  # per-thread work buffers of ``cs`` rows, reused by every block

    def block(s: int):
        sl = slice(s, min(N, s + cs))
        ob = obs[sl]
        n = ob.shape[0]
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = _workspace_1d(geom, chain, cs)
        if chain is None:
            m, x0, xq = _observed_part(X[sl], ob, geom)
            k, tp, lk = _kappa_1d_direct(geom, Wm, m, x0, xq + m @ log_var)
            k2, u, q = k * k, tp * k, -2.0 * lk
            r1 = np.argmin(q, axis=1)
        else:
            Mq, prod, xq = _gemms_1d(geom, chain, X[sl], ob, ws)
            k2, u, q, r1 = _chain_cost(chain, Mq, prod, xq, ws)
        # q = -2 log κ (n, R); k = sqrt(k2), t' = u / k and log κ only on the pairs gathered
        rows = np.arange(n)
        mu1 = zr[r1] + u[rows, r1] / k2[rows, r1]
        r2 = pos_of_rank[np.searchsorted(breaks, mu1, side="right")]
        pr = np.concatenate([r1, r2])
        pp = np.concatenate([rows, rows])
        kk = np.sqrt(k2[pp, pr])
        tt = u[pp, pr] / kk
        # k >= 1 (finite): ±inf ends stay ±inf under the product
        lm_seed, _ = _log_interval_mass(lo_p[pr] * kk - tt, hi_p[pr] * kk - tt)
        lj_seed = -0.5 * q[pp, pr] + lm_seed
        lower = np.where(r1 == r2, lj_seed[:n], np.logaddexp(lj_seed[:n], lj_seed[n:]))
        lower -= 2.0 * _formed_margin(geom, X[sl], ob)  # room for the formed q's rounding
        # candidates by κ (sorted by point; the seeds r1, r2 always kept), then the tail
        # bound (the mass is at most Φ(-dist) <= exp(-dist² / 2), dist the whitened distance
        # from the posterior mean to the interval: the pairs whose κ alone does not prune them
        # but whose interval lies in the far tail, about a third here), in one pass
        # (select_rows)
        out = ws["pairs"] if chain is not None else _pair_buffers(n * R)
        c, n_cand = kernels.select_rows(q, k2, u, lower, thr, r1, r2, lo_p, hi_p, *out)
        p, r, kk, tt, lk_p, a, b = (x[:c].copy() for x in out)
        lm, err = _log_interval_mass(a, b)
        # the ends' rounding: the kinks' own (at their absolute position) and the whitened
        # mean's (its terms are ~|t| + k |ζ|), as the complete-data path carries
        err += bound_rounding(
            a, b, lm, lo_abs[r] * kk, hi_abs[r] * kk, np.abs(tt) + np.abs(kk * zr[r])
        )
        lj = lk_p + lm
        log_px, err_px = _lse_by_point(p, lj, err, n, prune_nats)
        keep = np.isfinite(lj) | (r == r1[p])
        if need_moments:  # moments only where the pair's exact weight is visible
            keep &= (lj - log_px[p] > -thr) | ~np.isfinite(log_px)[p]  # (in differences)
        if not keep.all():
            p, r, lj, kk, tt, a, b = (q_[keep] for q_ in (p, r, lj, kk, tt, a, b))
        p += s
        return (p, r, lj, kk, tt, a, b), log_px, err_px, n_cand

    parts = _map_blocks(block, range(0, N, cs), parallel=parallel, rows=N)
    # the pairs' arrays, written block by block into their final place (no concatenation of
    # the per-pair geometry, which is most of the bytes)
    ends = np.cumsum([len(q[0][0]) for q in parts])
    P = int(ends[-1]) if len(parts) else 0
    out = {
        "point": np.empty(P, dtype=np.intp),
        "region": np.empty(P, dtype=np.intp),
        "log_joint": np.empty(P),
        "v": np.empty((P, 1)),
        "pair_L": np.empty((P, 1, 1)),
        "pair_mu": np.empty((P, 1)),
        "pair_log_det_P": np.empty(P),
    }
    if need_moments:
        out["mean"], out["cov"] = np.empty((P, 1)), np.empty((P, 1, 1))

    def fill(i: int):
        p, r, lj, kk, tt, a, b = parts[i][0]
        sl = slice(int(ends[i]) - len(p), int(ends[i]))
        out["point"][sl] = p
        out["log_joint"][sl] = lj
        mu = out["pair_mu"][sl, 0]
        np.divide(tt, kk, out=mu)
        mu += zr[r]
        reg = out["region"][sl]
        np.take(perm, r, out=reg)  # region indices
        if need_moments:
            _, um, uv = _interval_stats(a, b)
            um /= kk
            um += mu
            out["mean"][sl, 0] = um  # z = μ + u / k
            uv /= kk
            uv /= kk
            out["cov"][sl, 0, 0] = uv
        v = out["v"][sl, 0]
        np.multiply(kk, kk, out=v)
        v *= mu  # P μ
        np.divide(1.0, kk, out=out["pair_L"][sl, 0, 0])
        lg = out["pair_log_det_P"][sl]
        np.log(kk, out=lg)
        lg *= 2.0

    _map_blocks(fill, range(len(parts)), parallel=parallel)

    def cat(j: int) -> np.ndarray:
        return parts[0][j] if len(parts) == 1 else np.concatenate([q[j] for q in parts])

    st = PairStats(
        out["point"],
        out["region"],
        out["log_joint"],
        cat(1),
        cat(2),
        out["v"],
        None,  # the whitened rows on first use (PairStats.geometry): scoring needs none
        out.get("mean"),
        out.get("cov"),
        int(sum(q[3] for q in parts)),
    )
    st.pair_L, st.pair_mu, st.pair_log_det_P = out["pair_L"], out["pair_mu"], out["pair_log_det_P"]
    return st


def _scaled_diff(z: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """``z - zr`` with ``±inf`` kept."""
    return np.where(np.isinf(z), z, z - zr)


def _scaled(z: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``z k`` with ``±inf`` kept (``k > 0``)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(z), z, z * k)


# Rows per sub-block of the d = 1 missing-data path's (points x D) arrays (mask and x').
_SUB_1D = 128


def _workspace_1d(geom: RegionGeometry, chain: dict | None, rows: int) -> dict:
    """Work buffers of :func:`_observed_1d`'s blocks (``rows`` points), reused block after block
    (fresh temporaries cost page faults and cache misses at every block)."""
    R, D, _ = geom.A.shape
    sub = max(1, min(rows, _SUB_1D))
    ws = {"m": np.empty((sub, D + 1)), "x0": np.empty((sub, D)), "xq": np.empty(rows)}
    ws["m"][:, D] = 1.0  # against the W1 row that makes the α block k² = 1 + α
    if chain is not None:
        ws["Mq"] = np.empty((rows, chain["W1"].shape[1]))
        if chain["factored"]:
            ws["xb"] = np.empty((rows, chain["xw"].shape[0]))
            ws["xb"][:, -1] = 1.0  # against the row of per-column constants
        ws["prod"] = np.empty((rows, chain["xw"].shape[1]))
        ws["q"] = np.empty((rows, R))
        ws["r1"] = np.empty(rows, dtype=np.intp)
        ws["pairs"] = _pair_buffers(rows * R)
    return ws


def _pair_buffers(size: int) -> tuple[np.ndarray, ...]:
    """Output buffers of :func:`_missing_kernels.select_rows` (``size`` pairs): point, region
    (intp), ``k``, ``t``, ``log κ`` and the whitened interval's ends (float64)."""
    return (np.empty(size, np.intp), np.empty(size, np.intp), *(np.empty(size) for _ in range(5)))


def _observed_part(
    X: np.ndarray,
    obs: np.ndarray,
    geom: RegionGeometry,
    m: np.ndarray | None = None,
    x0: np.ndarray | None = None,
    xq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask ``m`` (n, D) as 0 / 1, ``x' = m ∘ (x - c)`` (n, D) with the missing entries 0
    (NaN there) and ``||x'||²_Λ`` (n,), into the buffers given (``m`` may have more columns:
    only its first D are written) or new ones (:func:`_missing_kernels.observed_rows`, one
    pass)."""
    n, D = X.shape
    m = np.empty((n, D)) if m is None else m
    x0 = np.empty((n, D)) if x0 is None else x0
    xq = np.empty(n) if xq is None else xq
    from . import _missing_kernels as kernels  # numba: imported on first use

    kernels.observed_rows(
        np.ascontiguousarray(X, dtype=np.float64),
        np.ascontiguousarray(obs, dtype=np.bool_),
        geom.center,
        geom.inv_var,
        m,
        x0,
        xq,
    )
    return m, x0, xq


def _l_mu_2d(k00, k10, k11, w):
    """(P, 2, 2) ``L = K^{-T} = [[1/k00, -k10/(k00 k11)], [0, 1/k11]]`` and (P, 2) ``μ = L w``
    of d = 2 pairs (``K = [[k00, 0], [k10, k11]]``, ``w = K^{-1} v``), elementwise."""
    l00, l11 = 1.0 / k00, 1.0 / k11
    L = np.zeros((len(k00), 2, 2))
    L[:, 0, 0], L[:, 0, 1], L[:, 1, 1] = l00, -k10 * l00 * l11, l11
    mu = np.stack([w[:, 0] * l00 + L[:, 0, 1] * w[:, 1], w[:, 1] * l11], axis=-1)
    return L, mu


def pair_whitening(geom: RegionGeometry, region: np.ndarray, L: np.ndarray, mu: np.ndarray):
    """(P, F, d) whitened unit normals and (P, F) offsets of pairs with their own ``L`` (P, d, d)
    and ``μ`` (P, d): the region's rows ``C z <= e`` seen from ``N(μ, L Lᵀ)`` (the rows that
    :class:`~exactdgn.inference.PairStats` computes on first use for the missing-data pairs)."""
    Cs, es = _halfspaces(geom)
    if geom.latent_dim == 2:
        return _whiten_rows_2d(Cs[region], es[region], L, mu)
    normals, offsets, _ = _whiten(mu, L, Cs[region], es[region])
    return normals, offsets


def _whiten_2d(C, e, k00, k10, k11, w):
    """:func:`gaussian.whiten` for d = 2 pairs, elementwise (no (P, 2, 2) inverses).

    ``K = [[k00, 0], [k10, k11]]`` (P,) entries, ``w = K^{-1} v`` (P, 2), rows ``C`` (P, F, 2)
    and ``e`` (P, F). Returns normals (P, F, 2), offsets (P, F), L (P, 2, 2) and μ (P, 2)
    (:func:`_l_mu_2d`).
    """
    L, mu = _l_mu_2d(k00, k10, k11, w)
    normals, offsets = _whiten_rows_2d(C, e, L, mu)
    return normals, offsets, L, mu


def _whiten_rows_2d(C, e, L, mu):
    """Normals (P, F, 2) and offsets (P, F) of rows ``C z <= e`` under upper-triangular ``L``."""
    l00, l01, l11 = L[:, 0, 0], L[:, 0, 1], L[:, 1, 1]
    mu0, mu1 = mu[:, 0], mu[:, 1]
    c0, c1 = C[..., 0], C[..., 1]
    cl0 = c0 * l00[:, None]
    cl1 = c0 * l01[:, None] + c1 * l11[:, None]
    scale = np.hypot(cl0, cl1)
    with np.errstate(invalid="ignore"):
        raw = e - (c0 * mu0[:, None] + c1 * mu1[:, None])
        pos = scale > 0
        safe = np.where(pos, scale, 1.0)
        normals = np.stack([np.where(pos, cl0 / safe, 0.0), np.where(pos, cl1 / safe, 0.0)], -1)
        offsets = np.where(pos, raw / safe, raw)
    return normals, offsets


def _map_2d_entries(geom: RegionGeometry, k00, k10, k11, r: np.ndarray) -> np.ndarray:
    """(P, 2, 2) ``T = K_r(n)ᵀ L_r`` of pairs from their entries of ``K_r(n)`` (P,) and regions
    ``r``: the table's whitened polygon (``u0 = K_rᵀ z``) to the pair's (``u = K_r(n)ᵀ z - w``)
    is ``u = T u0 - w`` (upper triangular, ``det T > 0``)."""
    L0 = geom.L[r]  # upper triangular
    T = np.zeros((len(r), 2, 2))
    T[:, 0, 0] = k00 * L0[:, 0, 0]
    T[:, 0, 1] = k00 * L0[:, 0, 1] + k10 * L0[:, 1, 1]
    T[:, 1, 1] = k11 * L0[:, 1, 1]
    return T


# Nats by which the disc bound must fall below the pruning level (rounding of the bound).
_BOUND_SLACK = 1e-6


def _kappa_1d_direct(geom, Wm, m, x0, const):
    """``k``, ``t = k μ`` and ``log κ`` (n, R) of d = 1 pairs from the (D, 3R) masked GEMM."""
    R = geom.A.shape[0]
    Mq = m @ Wm  # (n, 3R): α | β | γ
    prod = geom.gemm(x0)  # (n, 2R): w⁰ | x'ᵀΛb'
    k = Mq[:, :R]
    k += 1.0
    np.sqrt(k, out=k)
    t = prod[:, :R]
    t *= geom.K[:, 0, 0]
    t -= Mq[:, R : 2 * R]  # v
    t /= k
    lk = prod[:, R:]
    lk *= -2.0
    lk += Mq[:, 2 * R :]
    lk += const[:, None]
    lk += 2.0 * np.log(k)
    lk -= np.square(t)
    lk *= -0.5
    return k, t, lk


# Breakpoints between two exact values of the chain recurrence (see _chain_1d).
_CHAIN_STRIDE = 8


def _chain_1d(geom: RegionGeometry):
    """Data-independent arrays of the d = 1 chain form of the masked sums (None if R < 2).

    The regions, sorted by position, are intervals joined at the breakpoints
    ``β_0 < ... < β_{B-1}`` (``B = R - 1``). The chain runs over the points ``E`` = the
    breakpoints and ``z = 0`` (added unless it is a breakpoint), ``y_e = g(E_e) - c``. Each
    region is written from its reference point ``ζ_i``, the point of ``E`` in it nearest
    ``z = 0`` (its left end right of 0, its right end left of 0, ``0`` for the region holding
    it): ``g(z) - c = y_ref + a_i (z - ζ_i)``, so its masked sums are ``α_i = Σ m λ a_i²``,
    ``η_i = Σ m λ a_i y_ref`` and ``Y_ref = Σ m λ y_ref²``. Continuity gives, walking away from
    0 through region ``ρ`` over a step of length ``Δ``,
    ``Y_next = Y_prev ± 2 Δ η_ρ + Δ² α_ρ`` (``+`` rightwards, ``-`` leftwards). The walk starts
    at 0 and goes right, then left; every ``_CHAIN_STRIDE``-th ``Y`` of each direction is a GEMM
    column and the others follow in at most ``_CHAIN_STRIDE - 1`` steps. The masked GEMM has
    ``2R + B/8`` columns instead of ``3R``. The ``x``-dependent sums ``x'ᵀΛ a_i`` and
    ``x'ᵀΛ y_e`` lie in the decoder's output subspace (``A_r = W_L (...)``,
    ``g(E_e) - c = W_L (...)``) and go through the factored complete-data GEMM.

    Why references near 0: the terms of ``-2 log κ`` are of the size of ``k² ζ² + ||y_ref||²_Λ``
    and cancel to the size of the prior cost at the posterior mean. Written from a far kink
    (``ζ = -1e4``, the first form) a point near ``z = 0`` lost 6e-5 nats of 4e7; from the point
    nearest 0 the rounding is that of the complete-data form (intercepts at ``z = 0``).

    Returns a dict (cached on ``geom``) or None. ``steps`` of the walk, in order: ``anchor``
    (GEMM column of ``Y`` or -1), ``src`` (region ``ρ`` of the step), ``c2 = Δ²``,
    ``c1 = ±2Δ``, ``restart`` (the step starts from 0's ``Y``: the first leftwards step), and
    the regions written from that point (``ra``, ``rb``; -1 for none).
    """
    if "chain_1d" in geom.cache:
        return geom.cache["chain_1d"]
    R, D, _ = geom.A.shape
    if R < 2 or geom.interval is None:
        geom.cache["chain_1d"] = None
        return None
    _, _, order, breaks = geom.interval
    S = _CHAIN_STRIDE
    lam = geom.inv_var
    a = geom.A[order, :, 0]  # (R, D), sorted by position
    b = geom.b[order] - geom.center
    # the walk's points E (the breakpoints and 0) and their values y_e = g(E_e) - c
    e0 = int(np.searchsorted(breaks, 0.0))  # breakpoints left of 0
    virtual = not (e0 < len(breaks) and breaks[e0] == 0.0)
    E = np.insert(breaks, e0, 0.0) if virtual else breaks
    seg = np.searchsorted(breaks, E, side="right")  # a region holding each point (its right)
    Y = a[seg] * E[:, None] + b[seg]  # (B', D)
    nE = len(E)
    # each region's reference: the point of E in it nearest 0
    i = np.arange(R)
    ref = np.where(i <= e0, i, i - 1) if not virtual else i
    # the walk: e0, e0 + 1, ..., nE - 1, then e0 - 1, ..., 0
    walk = np.r_[np.arange(e0, nE), np.arange(e0 - 1, -1, -1)]
    run = np.abs(walk - e0)  # steps from 0
    right = walk > e0
    prev = np.where(right, walk - 1, walk + 1)
    prev[0] = e0
    mid = 0.5 * (E[walk] + E[prev])
    src = np.searchsorted(breaks, mid)  # the region each step crosses
    src[0] = -1
    if not np.all(ref[src[1:]] == prev[1:]):  # pragma: no cover - the construction's own check
        raise AssertionError("d = 1 chain: a step's region is not written from its start")
    delta = np.abs(E[walk] - E[prev])
    anchor_at = run % S == 0
    nA = int(anchor_at.sum())
    anchor = np.full(nE, -1, dtype=np.int64)
    anchor[anchor_at] = np.arange(nA)
    restart = (~right) & (run == 1)
    restart[0] = False
    c2 = np.square(delta)
    c1 = np.where(right, 2.0, -2.0) * delta
    # the recurrence runs on k² = 1 + α (the GEMM's column, see W1): each step adds Δ² more
    # than the ``Δ² α`` term, summed since the last anchor; taken back per column (crow)
    excess = np.zeros(nE)
    for s in range(1, nE):  # data-independent, once per geometry
        if not anchor_at[s]:
            excess[s] = (0.0 if restart[s] else excess[s - 1]) + c2[s]
    # the regions written from each point of the walk
    at = np.full((nE, 2), -1, dtype=np.int64)
    pos_of = np.empty(nE, dtype=np.int64)
    pos_of[walk] = np.arange(nE)
    for r in range(R):
        s = pos_of[ref[r]]
        at[s, 0 if at[s, 0] < 0 else 1] = r
    W = np.empty((D, 2 * R + nA + 1))
    W[:, :R] = (a * a * lam).T
    W[:, R : 2 * R] = (a * Y[ref] * lam).T
    W[:, 2 * R : -1] = (Y[walk[anchor_at]] ** 2 * lam).T
    W[:, -1] = LOG_2PI - np.log(lam)  # D_n log 2π + Σ_obs log σ_j²
    xw = np.concatenate([(a * lam).T, (Y[walk] * lam).T], axis=1)  # x'ᵀΛ a_i | x'ᵀΛ y_e
    factored = False
    if geom.gemm_basis is not None:
        xw_b = geom.gemm_basis.T @ xw
        # the factorisation is exact for these columns too (checked as for the geometry)
        resid = np.abs(xw - geom.gemm_basis @ xw_b).max(axis=0)
        if np.all(resid <= 1e-12 * np.maximum(np.abs(xw).max(axis=0), np.finfo(float).tiny)):
            xw, factored = xw_b, True
    # the per-column constants of the cost (-ζ_i in u, ζ_e² in Z) ride on the GEMM as one
    # more row against a column of ones (factored form), and the -2 of Z is folded in (exact)
    xw = np.concatenate([xw[:, :R], -2.0 * xw[:, R:]], axis=1)
    zr = E[ref]
    crow = np.concatenate([-zr, np.square(E[walk]) - excess])
    # the same columns with one more row, against a column of ones in the mask: the α block
    # gives k² = 1 + α directly
    W1 = np.vstack([W, np.zeros((1, W.shape[1]))])
    W1[-1, :R] = 1.0
    out = {
        "W": W,
        "W1": W1,
        "xw": np.vstack([xw, crow]) if factored else xw,
        "crow": None if factored else crow,
        "factored": factored,
        "zr": zr,
        "anchor": anchor,
        "src": src.astype(np.int64),
        "c2": c2,
        "c1": c1,
        "restart": restart,
        "ra": np.ascontiguousarray(at[:, 0]),
        "rb": np.ascontiguousarray(at[:, 1]),
        "nA": nA,
    }
    geom.cache["chain_1d"] = out
    return out


def _kappa_1d_chain(geom, ch, m, x0, const):
    """``k``, ``t'`` and ``log κ`` (n, R) of d = 1 pairs, regions sorted by position, from the
    chain form (:func:`_chain_1d`) (:func:`_cost_1d_chain`, whose ``k²``, ``u = k t'`` and
    ``-2 log κ`` the interval path uses).

    ``const`` (n,) is ``||x'||²_Λ``.
    """
    k2, u, q = _cost_1d_chain(geom, ch, m, x0, const)
    k = np.sqrt(k2)
    return k, u / k, -0.5 * q


def _cost_1d_chain(geom, ch, m, x0, xq, ws=None):
    """``k²``, ``u = k t'`` and ``q = -2 log κ`` (n, R) of d = 1 pairs, regions sorted by
    position, from the chain form (:func:`_chain_1d`), for a given mask ``m`` and ``x' = m ∘
    (x - c)`` (:func:`_observed_1d` forms them in sub-blocks, :func:`_gemms_1d`).

    With ``s_i = Σ m λ (x' - y_ref)² = ||x'||²_Λ - 2 x'ᵀΛ y_ref + Y_ref``,
    ``k² = 1 + α_i`` and ``u = x'ᵀΛ a_i - η_i - ζ_i``: the minimum over ``z`` of
    ``||x'_obs - y_ref - a_i (z - ζ_i)||²_Λ + z²`` is ``s_i + ζ_i² - u²/k²``, at
    ``μ = ζ_i + u / k²``, and ``q = D_n log 2π + Σ_obs log σ_j² + log k² + s_i + ζ_i² - u²/k²``.
    ``xq`` (n,) is ``||x'||²_Λ``.
    """
    n, D = m.shape
    if ws is None:
        ws = _workspace_1d(geom, ch, n)
    Mq = ws["Mq"][:n]
    m1 = np.empty((n, D + 1))
    m1[:, :D] = m
    m1[:, D] = 1.0
    np.matmul(m1, ch["W1"], out=Mq)
    if ch["factored"]:
        xb = ws["xb"][:n]
        np.matmul(x0, geom.gemm_basis, out=xb[:, :-1])
        prod = np.matmul(xb, ch["xw"], out=ws["prod"][:n])
    else:
        prod = np.matmul(x0, ch["xw"], out=ws["prod"][:n])
        prod += ch["crow"]
    k2, u, q, _ = _chain_cost(ch, Mq, prod, xq, ws)
    return k2, u, q


def _gemms_1d(geom: RegionGeometry, ch: dict, X: np.ndarray, obs: np.ndarray, ws: dict):
    """The d = 1 chain form's GEMMs of a block (n points): ``Mq`` (n, 2R + nA + 1), ``prod``
    (n, R + B) and ``xq = ||x'||²_Λ`` (n,) (see :func:`_cost_1d_chain`).

    The mask ``[m, 1]`` and ``x' = m ∘ (x - c)`` are formed and multiplied in sub-blocks of
    ``_SUB_1D`` rows, so that they are still in cache for their GEMMs (fresh (points x D)
    arrays cost more in cache misses and page faults than their arithmetic).
    """
    n = X.shape[0]
    Mq, xq = ws["Mq"][:n], ws["xq"][:n]
    fac = ch["factored"]
    sub = ws["m"].shape[0]
    for s0 in range(0, n, sub):
        s1 = min(n, s0 + sub)
        m, x0 = ws["m"][: s1 - s0], ws["x0"][: s1 - s0]
        _observed_part(X[s0:s1], obs[s0:s1], geom, m, x0, xq[s0:s1])  # m's last column stays 1
        np.matmul(m, ch["W1"], out=Mq[s0:s1])
        if fac:
            np.matmul(x0, geom.gemm_basis, out=ws["xb"][s0:s1, :-1])
        else:
            np.matmul(x0, ch["xw"], out=ws["prod"][s0:s1])
    if fac:
        prod = np.matmul(ws["xb"][:n], ch["xw"], out=ws["prod"][:n])
    else:
        prod = ws["prod"][:n]
        prod += ch["crow"]
    return Mq, prod, xq


def _chain_cost(ch: dict, Mq: np.ndarray, prod: np.ndarray, xq: np.ndarray, ws: dict):
    """``k²``, ``u`` and ``q`` (n, R) and each row's region of smallest ``q`` (n,) from the
    GEMMs' results (:func:`_cost_1d_chain`): one compiled pass per row
    (:func:`_missing_kernels.chain_rows`; the per-row constants enter the recurrence through
    its anchors, the per-column ones through the GEMMs). ``u`` is written into ``prod``,
    ``q`` into the workspace; ``k²`` is ``Mq``'s first block.
    """
    n = Mq.shape[0]
    R = len(ch["zr"])
    q, r1 = ws["q"][:n], ws["r1"][:n]
    from . import _missing_kernels as kernels

    kernels.chain_rows(
        Mq,
        prod,
        xq,
        ch["anchor"],
        ch["src"],
        ch["c2"],
        ch["c1"],
        ch["restart"],
        ch["ra"],
        ch["rb"],
        q,
        r1,
    )
    return Mq[:, :R], prod[:, :R], q, r1
