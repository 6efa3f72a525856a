"""Exact marginal likelihood ``log p(x) = logsumexp_r [log κ_r(x) + log Φ_r(x)]`` and E-step pairs.

Exact pruning (no approximation beyond double precision): ``Φ_r(x) <= 1`` and, for every facet,
``Φ_r(x) <= Φ(c_i(x))`` (the region lies in the facet's half-space). A lower bound ``ℓ(x)`` of
``log p(x)`` comes from the few regions with the largest ``κ_r(x)``; a pair whose upper bound
``log κ_r + min(0, min_i log Φ(c_i))`` is below ``ℓ(x) - prune_nats - log R`` contributes less than
``e^{-prune_nats}`` in total relative terms and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from .. import gaussian
from ._geometry import LOG_2PI, RegionGeometry

__all__ = ["PairStats", "log_kappa_all", "marginal_pairs"]


@dataclass
class PairStats:
    """Point-region pairs that carry the posterior mass, with exact quantities.

    Attributes
    ----------
    point : (P,) int      index of the data point
    region : (P,) int     index of the region
    log_joint : (P,)      ``log κ_r(x) + log Φ_r(x)``
    log_px : (N,)         exact ``log p(x)``
    log_px_error : (N,)   estimated absolute error of ``log p(x)`` (integration + pruning)
    v : (P, d)            ``A_r^T Λ (x - b_r)``
    offsets : (P, F)      whitened facet offsets
    mean : (P, d) or None        ``E[z | x, r]`` (with ``need_moments``)
    cov : (P, d, d) or None      ``Cov[z | x, r]``
    n_candidates : int    pairs considered before the facet bound
    """

    point: np.ndarray
    region: np.ndarray
    log_joint: np.ndarray
    log_px: np.ndarray
    log_px_error: np.ndarray
    v: np.ndarray
    offsets: np.ndarray
    mean: np.ndarray | None = None
    cov: np.ndarray | None = None
    n_candidates: int = 0

    @property
    def log_weight(self) -> np.ndarray:
        """(P,) log posterior probability of the region given the point."""
        return self.log_joint - self.log_px[self.point]


def log_kappa_all(geom: RegionGeometry, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log κ_r(x)`` and ``v_r(x)`` for every point and region by one GEMM.

    ``||x - b_r||²_Λ = ||x'||²_Λ - 2 x'ᵀΛb'_r + ||b'_r||²_Λ`` with ``x' = x - c``,
    ``b'_r = b_r - c`` for the centre ``c`` (mean of the ``b_r``): the expansion is done about a
    point near the decoder's range, so its rounding error is ``~ε ||x - c||²_Λ`` and not
    ``ε ||x||²_Λ``. The work is one (N x D) @ (D x R(d+1)) product.

    Returns
    -------
    log_kappa : (N, R)
    v : (N, R, d)   ``A_r^T Λ (x - b_r)``
    """
    R, D, d = geom.A.shape
    c = geom.center
    Xc = X - c
    XL = Xc * geom.inv_var
    prod = XL @ geom.gemm_matrix.T  # (N, R*d + R)
    V = prod[:, : R * d].reshape(-1, R, d) - geom.beta_c[None]
    xb = prod[:, R * d :]
    xq = np.einsum("nj,nj->n", XL, Xc)
    quad = xq[:, None] - 2.0 * xb + geom.b_quad_c[None]
    W = np.einsum("rij,nrj->nri", geom.K_inv, V)
    lk = -0.5 * (
        D * LOG_2PI
        + geom.log_det_noise
        + geom.log_det_P[None]
        + quad
        - np.einsum("nri,nri->nr", W, W)
    )
    return lk, V


def _seed_pairs(geom: RegionGeometry, lk: np.ndarray, V: np.ndarray, top_k: int):
    """Pairs whose exact masses give a good lower bound of ``log p(x)``.

    The regions with the largest ``κ_r(x)`` (their affine extensions explain ``x`` best), plus
    the region that contains the posterior mean of the best one, followed twice (a region that
    contains its own posterior mean has a large mass). Returns unique (point, region) pairs.
    """
    n, R = lk.shape
    k = min(top_k, R)
    top = np.argpartition(-lk, k - 1, axis=1)[:, :k] if R > k else np.tile(np.arange(R), (n, 1))
    pts = [np.repeat(np.arange(n), k)]
    regs = [top.ravel()]
    if geom.locate is not None and R > k:
        rows = np.arange(n)
        r = np.argmax(lk, axis=1)
        for _ in range(3):
            mu = geom.posterior_mean(V[rows, r], r)
            r_new = geom.locate(mu)
            r = np.where(r_new >= 0, r_new, r)
            pts.append(rows)
            regs.append(r)
    p = np.concatenate(pts)
    r = np.concatenate(regs)
    key = np.unique(p.astype(np.int64) * R + r)
    return key // R, key % R


def _chunk_size(n: int, R: int, d: int, chunk_bytes: int) -> int:
    per_point = 8 * R * (3 * d + 6)
    return int(max(1, min(n, chunk_bytes // max(per_point, 1))))


def marginal_pairs(
    geom: RegionGeometry,
    X: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int = 4,
) -> PairStats:
    """Exact ``log p(x)`` for each row of ``X`` and the pairs that carry its mass.

    Parameters
    ----------
    geom : RegionGeometry
    X : (N, D) float64 (validated by the caller)
    prune_nats : float
        Pairs whose bound is this many nats (plus ``log R``) below the lower bound are skipped;
        their total relative contribution is below ``exp(-prune_nats)``.
    need_moments : bool
        Also compute the truncated posterior mean and covariance of each retained pair.
    chunk_bytes : int
        Memory bound of the per-chunk (points x regions) work arrays.
    """
    N = X.shape[0]
    R, _, d = geom.A.shape
    thr = prune_nats + np.log(max(R, 1))
    cs = _chunk_size(N, R, d, chunk_bytes)
    parts = []
    n_cand = 0
    two_stage = d >= 2  # a facet bound pays off where masses are expensive
    for s in range(0, N, cs):
        Xc = X[s : s + cs]
        n = Xc.shape[0]
        lk, V = log_kappa_all(geom, Xc)  # (n, R), (n, R, d)
        p_top, r_top = _seed_pairs(geom, lk, V, top_k)
        lk_top, v_top = lk[p_top, r_top], V[p_top, r_top]
        off_top = geom.offsets(v_top, r_top)
        lm_top, err_top = gaussian.log_mass(geom.normals[r_top], off_top, return_error=True)
        lower = np.full(n, -np.inf)
        np.logaddexp.at(lower, p_top, lk_top + lm_top)
        # candidates by the mass <= 1 bound, excluding the pairs already done
        mask = lk > (lower - thr)[:, None]
        mask[p_top, r_top] = False
        p_c, r_c = np.nonzero(mask)
        n_cand += len(p_c) + len(p_top)
        lk_c, v_c = lk[p_c, r_c], V[p_c, r_c]
        off_c = geom.offsets(v_c, r_c)
        if two_stage and len(p_c):
            bound = lk_c + np.minimum(0.0, log_ndtr(off_c).min(axis=1, initial=0.0))
            keep = bound > (lower - thr)[p_c]
            p_c, r_c, lk_c, v_c, off_c = p_c[keep], r_c[keep], lk_c[keep], v_c[keep], off_c[keep]
        p_all = np.concatenate([p_top, p_c])
        r_all = np.concatenate([r_top, r_c])
        lk_all = np.concatenate([lk_top, lk_c])
        v_all = np.concatenate([v_top, v_c])
        off_all = np.concatenate([off_top, off_c])
        if need_moments:
            tm = gaussian.truncated_moments(geom.normals[r_all], off_all)
            lm_all, err = tm.log_mass, tm.error
            mu = geom.posterior_mean(v_all, r_all)
            Lr = geom.L[r_all]
            mean = mu + np.einsum("pij,pj->pi", Lr, tm.mean)
            cov = Lr @ tm.cov @ np.swapaxes(Lr, 1, 2)
        else:
            lm_c, err_c = gaussian.log_mass(geom.normals[r_c], off_c, return_error=True)
            lm_all = np.concatenate([lm_top, lm_c])
            err = np.concatenate([err_top, err_c])
            mean = cov = None
        lj = lk_all + lm_all
        # group per point: logsumexp over the pairs of each point
        order = np.argsort(p_all, kind="stable")
        p_all, r_all, lj, v_all, off_all = (
            p_all[order],
            r_all[order],
            lj[order],
            v_all[order],
            off_all[order],
        )
        err = err[order]
        if need_moments:
            mean, cov = mean[order], cov[order]
        starts = np.searchsorted(p_all, np.arange(n))
        mx = np.maximum.reduceat(lj, starts)
        ssum = np.add.reduceat(np.exp(lj - mx[p_all]), starts)
        log_px = mx + np.log(ssum)
        wts = np.exp(lj - log_px[p_all])
        err_px = np.add.reduceat(wts * err, starts) + np.exp(-prune_nats)
        parts.append((p_all + s, r_all, lj, log_px, err_px, v_all, off_all, mean, cov))
    cat = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    mean = np.concatenate([p[7] for p in parts]) if need_moments else None
    cov = np.concatenate([p[8] for p in parts]) if need_moments else None
    return PairStats(
        point=cat[0],
        region=cat[1],
        log_joint=cat[2],
        log_px=cat[3],
        log_px_error=cat[4],
        v=cat[5],
        offsets=cat[6],
        mean=mean,
        cov=cov,
        n_candidates=n_cand,
    )
