"""Thin bounded polyhedra in ``d = 3``: mass and moments from slices across the thin direction.

The divergence form of :mod:`._polytope` gives the covariance as a difference of
``O(1 / width)`` terms, and the edge formula's terms are ``~1 / width`` times the mass: on 120
random slabs 1e-5 to 1e-3 thin near the mean (not small enough for the cubature of
:mod:`._polytope_cubature`), 65 had their moments more than 1e-9 of their own spread off, up
to 5e3, and 22 their log mass beyond its error estimate (1e-7 against 6e-9).

With ``e`` the thin direction and ``V`` an
orthonormal basis of ``e^perp``, write ``u = x e + V y``; then ``phi_3(u) = phi(x) phi_2(y)``
and the cross-section at ``x`` is the polygon ``{y : (V^T n_i) . y <= c_i - (n_i . e) x}``,
which is wide.  Between consecutive vertices' ``x`` the section's vertices move linearly, so
its mass and moments are smooth in ``x``: Gauss-Legendre on those panels (``_NODES`` nodes,
checked against ``_CHECK`` nodes for the error estimate), the sections' log mass, mean and
covariance from the 2-D kernel, and every moment a sum of positive terms about the weighted
mean (no ``E[x^2] - E[x]^2``)::

    m = int phi(x) m_s(x) dx,   E[x] = int x f / m,   E[y] = int mu_s f / m,
    Cov[y] = int (C_s + (mu_s - E y)(mu_s - E y)^T) f / m,   Cov[x, y] likewise.

The thin direction is the smallest principal axis of the vertices (the divergence covariance
can be far off it).  Measured against the 3-D quadrature oracle on the 120 random slabs: log
masses within 1.1e-11 (none beyond its estimate), moments within 2e-8 of their own spread (the
floor ``eps lambda_max / lambda_min`` of a covariance matrix that thin), at <= 0.03 s each.
Bounded polyhedra only, and not needles near the mean (their sections across the thin axis are
thin strips, which the 2-D kernel loses ``~eps / width`` on: moments 882 times the floor below
off): those and ``d = 4`` take the adaptive slices of
:func:`._polytope_tail.near_moments`, which are slower (~0.03 s near, seconds for sections far
out) but thin-safe at every level.  :mod:`._polytope` sends a polyhedron here when its
edge-formula terms cancel (the log mass alone, too) or, for moments, when its divergence
covariance's smallest variance is small; the first test also catches polyhedra so thin that
their divergence covariance is wrong by more than their variance (2e-6 thin, 5.8 sd out:
smallest variance 3e-4 instead of 3e-13).  Polyhedra thousands of sd out along ``e``, where
the integrand falls by more than ``_STEEP`` nats across a panel, are not summed
(:func:`_too_steep`: a two-node probe; no fixed rule resolves them, and their far 2-D sections
cost ~1 s each): they keep the edge formula and its estimate.
"""

from __future__ import annotations

import numpy as np

from ._interval import TruncatedMoments
from ._polygon import _truncated_moments_2d
from ._rules import LOG_SQRT_2PI, gauss_legendre_01, householder_basis

__all__ = ["thin_polyhedra"]

_NODES = 20
_CHECK = 12
_BLOCK = 32  # polyhedra per block
_STEEP = 1000.0  # nats: a fall across a panel that no rule here resolves (_too_steep)
_NEAR = 40.0  # nats: panels this far below the largest value cannot show (_too_steep)


def _sections(nu, cu, e, V, lo, hi, n):
    """The cross-sections at ``n`` Gauss-Legendre nodes of each panel ``[lo, hi]`` (S, K):
    nodes ``x`` and weights ``w`` (S, K n) and the sections' 2-D moments (S K n rows)."""
    S, F, _ = nu.shape
    K = lo.shape[1]
    xg, wg = gauss_legendre_01(n)
    x = (lo[..., None] + (hi - lo)[..., None] * xg).reshape(S, K * n)
    w = ((hi - lo)[..., None] * wg).reshape(S, K * n)
    a = np.einsum("sfk,sk->sf", nu, e)  # (S, F)
    B = np.einsum("sfk,skl->sfl", nu, V)  # (S, F, 2)
    M = K * n
    nrm = np.broadcast_to(B[:, None], (S, M, F, 2)).reshape(S * M, F, 2)
    off = (cu[:, None, :] - a[:, None, :] * x[..., None]).reshape(S * M, F)
    return x, w, _truncated_moments_2d(nrm, off)


def _too_steep(nu, cu, e, V, lo, hi):
    """(S,) bool: polyhedra whose integrand along ``e`` falls by more than ``_STEEP`` nats
    across a panel that holds mass (within ``_NEAR`` nats of the largest value), judged at the
    panels' two Gauss-Legendre nodes (a probe of ~1/16 of the sums' work).

    Far out (thousands of sd) the integrand along ``e`` can fall by thousands of nats across a
    panel: all but one of the rules' nodes underflow, the 20- and 12-node sums disagree by
    ~1e2-1e138 and the slices are never kept, after 0.5-1 s of far 2-D sections per polyhedron
    (10 s for one row of a d = 3 model 1e4 sd out). The integrand is log-concave in ``x`` (the
    marginal of a Gaussian on a convex set), so a fall of ``_STEEP`` nats between the probe's
    nodes (0.58 of the panel apart) means a rate of at least ``1.7 _STEEP`` per panel width
    beyond them: the 20-node rule's first node (at 0.0034 of the panel) already sees a factor
    ``e^{-5.9}``, and the sums are off by more than a factor of 20."""
    x, _, tm = _sections(nu, cu, e, V, lo, hi, 2)
    S, K = lo.shape
    with np.errstate(invalid="ignore"):
        lf = (-0.5 * x * x + tm.log_mass.reshape(x.shape)).reshape(S, K, 2)
        valid = (hi > lo) & np.isfinite(lf).all(axis=2)
        top = np.max(np.where(valid[..., None], lf, -np.inf), axis=(1, 2))
        near = np.max(lf, axis=2) > top[:, None] - _NEAR
        fall = np.abs(lf[..., 0] - lf[..., 1])
    return (valid & near & (fall > _STEEP)).any(axis=1)


def _slice_sums(nu, cu, e, V, lo, hi, n):
    """Log mass, mean (S, 3) in the frame ``(e, V)`` and covariance (S, 3, 3) from ``n``-node
    Gauss-Legendre on the panels ``[lo, hi]`` (S, K) (zero-width panels hold nothing)."""
    S = nu.shape[0]
    x, w, tm = _sections(nu, cu, e, V, lo, hi, n)
    M = x.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lf = (np.log(w) - 0.5 * x * x - LOG_SQRT_2PI + tm.log_mass.reshape(S, M)).reshape(S, M)
    ok = np.isfinite(lf)
    top = np.max(np.where(ok, lf, -np.inf), axis=1)
    f = np.exp(np.where(ok, lf - top[:, None], -np.inf))  # (the NaN rows of -inf tops: dropped)
    Z = f.sum(axis=1)
    my = np.where(ok[..., None], tm.mean.reshape(S, M, 2), 0.0)
    Cy = np.where(ok[..., None, None], tm.cov.reshape(S, M, 2, 2), 0.0)
    p = f / Z[:, None]
    Ex = np.sum(p * x, axis=1)
    Ey = np.einsum("sm,smk->sk", p, my)
    dx = x - Ex[:, None]
    dy = my - Ey[:, None, :]
    cov = np.empty((S, 3, 3))
    cov[:, 0, 0] = np.sum(p * dx * dx, axis=1)
    cov[:, 0, 1:] = np.einsum("sm,sm,smk->sk", p, dx, dy)
    cov[:, 1:, 0] = cov[:, 0, 1:]
    cov[:, 1:, 1:] = np.einsum("sm,smkl->skl", p, Cy + dy[..., :, None] * dy[..., None, :])
    err = np.sum(p * np.where(ok, tm.error.reshape(S, M), 0.0), axis=1)
    return top + np.log(Z), np.concatenate([Ex[:, None], Ey], axis=1), cov, err


def thin_polyhedra(nu, cu, e, vx):
    """Log mass, mean, covariance and log-mass error of ``N(0, I_3)`` on thin bounded polyhedra.

    Parameters
    ----------
    nu : ndarray, shape (S, F, 3)
        Unit normals (0 on inactive rows).
    cu : ndarray, shape (S, F)
        Offsets (``+inf`` on inactive rows).
    e : ndarray, shape (S, 3)
        The thin direction (unit).
    vx : ndarray, shape (S, J)
        The vertices' coordinates along ``e`` (``nan`` where unused).

    Blocks of ``_BLOCK`` polyhedra (each slices ~``_BLOCK * 2 F * 32`` cross-sections).

    Returns
    -------
    TruncatedMoments
        ``log_mass`` (S,), ``mean`` (S, 3), ``cov`` (S, 3, 3), ``error`` (S,).
    """
    parts = [
        _thin_block(nu[i : i + _BLOCK], cu[i : i + _BLOCK], e[i : i + _BLOCK], vx[i : i + _BLOCK])
        for i in range(0, nu.shape[0], _BLOCK)
    ]
    return TruncatedMoments(*(np.concatenate([p[j] for p in parts]) for j in range(4)))


def _thin_block(nu, cu, e, vx):
    """:func:`thin_polyhedra` on one block."""
    V = householder_basis(e)  # (S, 3, 2): an orthonormal basis of e's complement
    xs = np.sort(np.where(np.isnan(vx), np.inf, vx), axis=1)
    last = np.max(np.where(np.isfinite(xs), xs, -np.inf), axis=1)
    xs = np.where(np.isfinite(xs), xs, last[:, None])  # unused ends: zero-width panels
    lo, hi = xs[:, :-1], xs[:, 1:]
    # (a slab thinner than its vertices' rounding has no panel: NaN, which the caller drops;
    # one too steep to slice gets NaN too, and keeps the edge formula)
    S = nu.shape[0]
    lm, err = np.full(S, np.nan), np.full(S, np.inf)
    mean, cov = np.full((S, 3), np.nan), np.full((S, 3, 3), np.nan)
    with np.errstate(all="ignore"):
        k = np.flatnonzero(~_too_steep(nu, cu, e, V, lo, hi))
        if k.size:
            part = (nu[k], cu[k], e[k], V[k], lo[k], hi[k])
            lm[k], mean[k], cov[k], err[k] = _slice_sums(*part, _NODES)
            lm_c, mean_c, _, _ = _slice_sums(*part, _CHECK)
            scale = np.sqrt(np.maximum(np.einsum("sii->si", cov[k]), 1e-300))
            err[k] += np.abs(lm[k] - lm_c) + np.max(np.abs(mean[k] - mean_c) / scale, axis=1)
    R = np.concatenate([e[:, :, None], V], axis=2)  # (S, 3, 3): columns e, v1, v2
    mean = np.einsum("skl,sl->sk", R, mean)
    cov = R @ cov @ np.swapaxes(R, 1, 2)
    return TruncatedMoments(lm, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)), err)
