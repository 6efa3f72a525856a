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
points or missingness patterns. The region ``{z : C_r z <= e_r}`` is unchanged; its whitened
form depends on the point through ``L_r(n) = K_r(n)^{-T}`` and ``μ_r(n) = L_r(n) K_r(n)^{-1}
v_r(n)``, so the retained pairs carry their own normals, ``L`` and ``μ`` (see
:class:`~exactdgn.inference.PairStats`). Pruning follows :mod:`._marginal` (mass <= 1 and the
facet bound ``Φ(min_i c_i)``, below the lower bound from seed regions).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from .. import gaussian
from ._geometry import LOG_2PI, RegionGeometry
from ._marginal import (
    _MIN_PARALLEL,
    PairStats,
    _block_size,
    _lse_by_point,
    _map_blocks,
    _n_threads,
    _pair_stats,
)

__all__ = ["check_missing", "observed_pairs"]


def check_missing(X: np.ndarray, *, name: str = "X", columns: bool = False) -> np.ndarray | None:
    """The (N, D) bool mask of observed entries of ``X``, or None when nothing is missing.

    Raises a ``ValueError`` naming the rows with nothing observed and, with ``columns=True``
    (fitting), the columns with nothing observed.
    """
    nan = np.isnan(X)
    if not nan.any():
        return None
    obs = ~nan
    empty = np.nonzero(~obs.any(axis=1))[0]
    if len(empty):
        raise ValueError(
            f"{name} has {len(empty)} rows with every value missing (NaN), first rows "
            f"{empty[:5].tolist()}: such rows carry no information; drop them"
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
    Mq = (m @ _mask_weights(geom)).reshape(n, R, T + d + 1)
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
        K = np.linalg.cholesky(P)
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


def observed_pairs(
    geom: RegionGeometry,
    X: np.ndarray,
    obs: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int = 4,
) -> PairStats:
    """Exact ``log p(x_obs)`` of each row and the pairs that carry the posterior ``p(z | x_obs)``.

    Parameters
    ----------
    geom : RegionGeometry
    X : (N, D) float64, NaN where missing (values there are ignored)
    obs : (N, D) bool, True where observed (every row has at least one)
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
        Kp = _K_pairs(K, p, r, d)
        L = np.swapaxes(np.linalg.inv(Kp), 1, 2) if len(p) else np.zeros((0, d, d))
        mu = _solve_upper_T(Kp, w[p, r])
        normals, offsets, _ = gaussian.whiten(mu, L, Cs[r], es[r])
        return normals, offsets, L, mu

    def block(s: int):
        sl = slice(s, min(N, s + cs))
        n = sl.stop - sl.start
        lk, K, W, V = _kappa_block(geom, X[sl], obs[sl])
        rows = np.arange(n)
        k = min(top_k, R)
        top = np.argpartition(-lk, k - 1, axis=1)[:, :k] if k < R else np.tile(np.arange(R), (n, 1))
        pts, regs = [np.repeat(rows, k)], [top.ravel()]
        if geom.locate is not None and R > k:
            r = np.argmax(lk, axis=1)
            for _ in range(3):
                mu = _solve_upper_T(_K_pairs(K, rows, r, d), W[rows, r])
                r_new = geom.locate(mu)
                r = np.where(r_new >= 0, r_new, r)
                pts.append(rows)
                regs.append(r)
        key = np.unique(np.concatenate(pts).astype(np.int64) * R + np.concatenate(regs))
        p_top, r_top = key // R, key % R
        nrm_t, off_t, L_t, mu_t = geometry(p_top, r_top, K, W)
        lm_t, err_t = gaussian.log_mass(nrm_t, off_t, return_error=True)
        lower = np.full(n, -np.inf)
        np.logaddexp.at(lower, p_top, lk[p_top, r_top] + lm_t)
        mask = lk > (lower - thr)[:, None]
        mask[p_top, r_top] = False
        p_c, r_c = np.nonzero(mask)
        nrm_c, off_c, L_c, mu_c = geometry(p_c, r_c, K, W)
        if len(p_c):  # facet bound: Φ_r <= Φ(min_i c_i)
            bound = lk[p_c, r_c] + np.minimum(0.0, log_ndtr(off_c.min(axis=1, initial=np.inf)))
            keep = bound > (lower - thr)[p_c]
            p_c, r_c, nrm_c, off_c, L_c, mu_c = (
                a[keep] for a in (p_c, r_c, nrm_c, off_c, L_c, mu_c)
            )
        floor = (lower - thr)[p_c] - lk[p_c, r_c]
        lm_c, err_c = gaussian.log_mass(nrm_c, off_c, return_error=True, floor=floor)
        seed = np.r_[np.ones(len(p_top), bool), np.zeros(len(p_c), bool)]
        p_all = np.concatenate([p_top, p_c])
        order = np.argsort(p_all, kind="stable")
        p_all, seed = p_all[order], seed[order]
        r_all, lm, err, nrm, off, L, mu = (
            np.concatenate(pair)[order]
            for pair in (
                (r_top, r_c),
                (lm_t, lm_c),
                (err_t, err_c),
                (nrm_t, nrm_c),
                (off_t, off_c),
                (L_t, L_c),
                (mu_t, mu_c),
            )
        )
        lj = lk[p_all, r_all] + lm
        log_px, err_px = _lse_by_point(p_all, lj, err, n, prune_nats)
        keep = np.isfinite(lj) | seed
        if need_moments:
            keep &= (lj > (log_px - thr)[p_all]) | ~np.isfinite(log_px)[p_all]
        p_all, r_all, lj, nrm, off, L, mu = (a[keep] for a in (p_all, r_all, lj, nrm, off, L, mu))
        v = V[p_all, r_all]
        K_p = _K_pairs(K, p_all, r_all, d)
        log_det_P = 2.0 * np.log(np.diagonal(K_p, axis1=1, axis2=2)).sum(axis=1)
        mean = cov = None
        if need_moments:
            tm = gaussian.truncated_moments(nrm, off)
            mean = mu + np.einsum("pij,pj->pi", L, tm.mean)
            cov = L @ tm.cov @ np.swapaxes(L, 1, 2)
        st = PairStats(p_all + s, r_all, lj, log_px, err_px, v, off, mean, cov, len(p_all))
        return st, (
            nrm,
            L,
            mu,
            log_det_P,
        )

    parts = _map_blocks(block, range(0, N, cs), parallel=parallel)
    st = _pair_stats([q[0] for q in parts])

    def cat(i):
        return parts[0][1][i] if len(parts) == 1 else np.concatenate([q[1][i] for q in parts])

    st.pair_normals, st.pair_L, st.pair_mu, st.pair_log_det_P = (cat(i) for i in range(4))
    return st
