"""Exact EM with missing values (NaN): the E-step conditions on ``x_obs``; the M-step's expected
statistics include the missing coordinates' conditional moments.

The complete data are ``(z, x_mis)``. Given ``x_obs`` and region ``r`` (current parameters
``F_r = [A_r, b_r]``, noise ``σ²``), ``x_mis | z ~ N(F_r,mis z̃, σ²_mis)`` with ``z̃ = [z; 1]``,
so the statistics of :func:`exactdgn.em.region_stats` become, for a missing coordinate ``j``,

    E[x_j z̃ᵀ | x_obs, r] = F_rj E[z̃ z̃ᵀ | x_obs, r],

and the noise update's expected squared residual under new parameters ``F'`` is

    E[(x_j - F'_rj z̃)² | x_obs, r] = σ_j² + (δ_rj m̃)² + δ_A,rj V δ_A,rjᵀ,   δ_r = F_r - F'_r

(``m̃ = [m; 1]``, ``m`` and ``V`` the pair's truncated posterior mean and covariance). With these
the output-layer block is a true EM step on the observed-data likelihood (it never decreases)
and the layer-wise least squares are unchanged in form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..decoder import Decoder
from ._steps import RegionStats, _region_sum, region_stats

__all__ = ["MissingStats", "missing_region_stats", "missing_residual_sq"]


@dataclass
class MissingStats:
    """What the missing coordinates add to :class:`RegionStats`.

    Attributes
    ----------
    obs : (N, D) bool            observed entries
    A_old : (R, D, d), b_old : (R, D)   the E-step's affine maps ``F_r``
    var_old : (D,)               the E-step's noise variances
    SV_mis : (R, D, d, d)        ``Σ_{n,r} w_nr V_nr [x_nj missing]``
    n_mis : (D,)                 ``Σ_{n,r} w_nr [x_nj missing]`` (missing entries per column)
    """

    obs: np.ndarray
    A_old: np.ndarray
    b_old: np.ndarray
    var_old: np.ndarray
    SV_mis: np.ndarray
    n_mis: np.ndarray


def missing_region_stats(
    X: np.ndarray,
    obs: np.ndarray,
    decoder: Decoder,
    noise_std: np.ndarray,
    patterns: np.ndarray,
    point: np.ndarray,
    region: np.ndarray,
    log_weight: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
) -> RegionStats:
    """:func:`exactdgn.em.region_stats` for ``X`` with NaN (see the module docstring).

    Parameters
    ----------
    X : (N, D) with NaN where missing; obs : (N, D) bool
    decoder, noise_std : the parameters of the E-step
    patterns, point, region, log_weight, mean, cov : as in :func:`region_stats` (pairs of
        ``p(z | x_obs)``)
    """
    N, D = X.shape
    R, d = patterns.shape[0], mean.shape[1]
    stats = region_stats(np.where(obs, X, 0.0), patterns, point, region, log_weight, mean, cov)
    A, b = decoder.affine_map(patterns)
    F = np.concatenate([A, b[:, :, None]], axis=2)  # (R, D, d+1)
    w = stats.w
    mis = (~obs).astype(np.float64)
    ez2 = np.ones((len(w), d + 1, d + 1))  # E[z̃ z̃ᵀ | x_obs, r]
    ez2[:, :d, :d] = cov + mean[:, :, None] * mean[:, None, :]
    ez2[:, :d, d] = ez2[:, d, :d] = mean

    def masked(values):  # (R, D): Σ_p values_p [x_{n_p, j} missing]
        return sparse.csr_matrix((values, (region, point)), shape=(R, N)) @ mis

    for k in range(d + 1):
        for kp in range(d + 1):
            stats.XZ[:, :, k] += F[:, :, kp] * masked(w * ez2[:, kp, k])
    SV_mis = np.empty((R, D, d, d))
    for k in range(d):
        for kk in range(k, d):
            SV_mis[:, :, k, kk] = SV_mis[:, :, kk, k] = masked(w * cov[:, k, kk])
    n_mis = np.bincount(point, weights=w, minlength=N) @ mis
    stats.missing = MissingStats(obs, A, b, np.asarray(noise_std) ** 2, SV_mis, n_mis)
    return stats


# Pairs per block of the residual sums (bounds the (pairs x D) temporaries).
_BLOCK = 1 << 14


def missing_residual_sq(A: np.ndarray, b: np.ndarray, stats: RegionStats, X: np.ndarray):
    """(D,) expected ``Σ_{n,r} w_nr (x_nj - A_r z - b_r)_j²`` with missing ``x_nj`` integrated.

    Centred as in :func:`exactdgn.em._steps._residual_sq`: observed entries contribute
    ``(x - A m - b)² + (A V Aᵀ)_jj``; missing ones ``σ_old,j² + (δ m̃)_j² + (δ_A V δ_Aᵀ)_jj``.
    """
    ms = stats.missing
    R, D, d = A.shape
    out = np.zeros(D)
    w, pt, rg, m = stats.w, stats.point, stats.region, stats.mean
    for s in range(0, len(w), _BLOCK):
        sl = slice(s, s + _BLOCK)
        r = rg[sl]
        o = ms.obs[pt[sl]]
        fill = ms.b_old[r].copy()  # E[x_mis | z = m, r] under the E-step parameters
        res = -b[r]
        for k in range(d):
            fill += ms.A_old[r, :, k] * m[sl, k : k + 1]
            res -= A[r, :, k] * m[sl, k : k + 1]
        res += np.where(o, X[pt[sl]], fill)
        out += w[sl] @ np.square(res)
    SV = _region_sum(rg, w[:, None, None] * stats.cov, R)  # (R, d, d)
    SV_obs = SV[:, None] - ms.SV_mis  # (R, D, d, d)
    delta = ms.A_old - A
    out += np.einsum("rjk,rjkl,rjl->j", A, SV_obs, A)
    out += np.einsum("rjk,rjkl,rjl->j", delta, ms.SV_mis, delta)
    out += ms.var_old * ms.n_mis
    return out
