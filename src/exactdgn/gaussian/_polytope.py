"""Exact standard-normal integrals over polyhedra in ``d >= 3``, in log space and tail-safe.

Whitened setting: ``u ~ N(0, I_d)`` and ``P = {u : n_i . u <= c_i}`` with unit normals
(``c_i`` is the signed distance of the mean from facet ``i``).  All masses are returned as logs,
accurate *relative to their own size*, together with an error estimate.

Facet recursion (scaling ``P`` about the mean; Stokes)::

    m_d(P) = omega - sum_F sgn(c_F) int_{h_F}^inf phi(t) m_{d-1}((t / h_F) F~) dt,   h_F = |c_F|

with ``F~`` the facet in orthonormal in-plane coordinates centred at its foot ``c_F n_F`` (the
in-plane rows are the other constraints projected onto the facet plane; scaling by ``s`` scales
the in-plane offsets) and ``omega`` = 1 (mean inside), 0 (outside) or the Gaussian mass of the
tangent cone at the mean (mean on the boundary).

**d = 3: edge formula.**  Inserting the 2-D edge formula with Owen's T for ``m_2`` and doing the
``t`` integral in closed form (``int_h^inf phi(t) exp(-k^2 t^2 (1+y^2)/2) dt = Q(h w)/w``) gives
a sum over the facets and their edges::

    m_3 = omega - sum_F sgn(c_F) omega_F Q(h_F)
                + sum_F sum_{e in F} sgn(c_F) sgn(b_e) int_{t0_e}^{t1_e} E(h_F, |b_e|, tau) dtau,
    E(h, b, tau) = (1 / 2 pi) Q(rho) / rho * h b / (b^2 + tau^2),   rho^2 = h^2 + b^2 + tau^2

where ``b_e`` is the in-plane distance of the edge line from the facet's foot, ``tau`` the
position along the edge measured from the edge's own foot, ``rho`` the distance of that point
from the mean, and ``omega_F`` the in-plane ``omega`` of the facet (1, 0 or an angle / 2 pi).
Each edge range is split at ``tau = 0`` into *pieces* with ``0 <= ta < tb <= inf``; each piece
is a positive integral evaluated in log space, with ``phi(rho(ta))`` pulled out
(``exp(-(tau - ta)(tau + ta)/2)`` stays in the integrand, no cancellation, no underflow):

* ``tau in [ta, min(b, 1)]``: ``tau = b tan(theta)`` (removes the Lorentzian ``b/(b^2+tau^2)``);
* ``tau in [b, 1]`` (``b < 1``): ``tau = e^w`` (panels ``log b + {0, 2, 6, 14}``);
* ``tau in [1, 4]``: plain ``tau`` (panels ``[1, 2], [2, 4]``);
* ``tau >= 4``: ``tau^2 = ts^2 + 2 s``; Gauss-Laguerre (20 and 28 nodes) for the tail, or
  Gauss-Legendre on ``[0, S]`` for a short end piece (``S <= 4``).

Every panel is integrated with the 21-node Gauss-Kronrod rule and checked against its embedded
10-node Gauss rule (the same 21 integrand values; 16- and 10-node Gauss-Legendre took 26, for
the same degree, 31, and the same check); panels whose difference exceeds ``1e-14`` of the
panel (plus ``1e-16`` of the piece) are bisected, in a vectorised adaptive loop.  The pieces
are summed with their signs by log-sum-exp (positive and negative separately) and
``log1p(-exp(.))``.

**d >= 4.**  The outer ``t``-integral is done numerically in ``mu = t / h_F``
(``int_1^inf h phi(h mu) m_{d-1}(mu F~) d mu``) by the same adaptive panels (log-``mu`` panels
up to ``mu_s = max(1, 4 / D_F)``, ``D_F`` the facet's distance from the mean, then
Gauss-Laguerre in ``sigma = (mu^2 - mu_s^2) D_F^2 / 2``), with the inner masses from the
``(d-1)``-dimensional evaluator at the nodes (log space, with their own errors).  The cost grows
like ``nodes^(d-3)``; ``d = 4`` is practical for moderate batches.

**Mean on the boundary.**  ``omega`` is the mass of the tangent cone ``K`` at the mean.  With an
interior point ``p`` of ``K`` (a small LP, HiGHS) and ``h'_F = -n_F . p > 0``, scaling about
``p`` gives ``m(K) = 1 - sum_F int_0^inf phi(t) m_{d-1}((t / h'_F) F~') dt`` (``F~'`` from the
offsets ``h'``); in 3-D the inner integrals are elementary,
``int_0^inf phi(t) T(t b / h, tau / b) dt = atan(tau h / (b rho)) / (4 pi)``.

**Small polyhedra** (``d = 3, 4``: bounded, spread ``R (|g| + R/2) <= 1`` with ``g`` the vertex
centroid and ``R`` the largest vertex distance from it) skip the edge formula and the divergence
form, whose signed terms are ``~1 / size`` times their mass (a simplex 1e-6 across near the mean
was 1.2 nats off, one 1e-9 across came out empty, a 1e-4 cube's covariance 1e3 of its own
variance off; in d = 4 a 1e-3 box around the mean 3e5): their mass and moments come from a
positive product cubature on a fan of tetrahedra (4-simplices in d = 4;
:mod:`._polytope_cubature`), relative-accurate at any size.

**Error estimate.**  ``error`` (absolute, of the log mass) is the sum over all signed terms of
their quadrature error (the differences between the two rules / node counts) plus their
rounding, ``eps (16 + 16 |log term|)`` relative (the exponents ``-rho^2/2`` are formed from
squares), each weighted by ``term / mass``, plus ``4 eps (1 + |log m|)``.  It grows automatically
when the signed terms cancel: thin polytopes lose about ``1 / (width * max(1, D))`` relative
(e.g. a 2e-6 x 2e-6 needle at distance 19: true error 4e-5, reported 1e-4).  In ``d = 3`` each
term also carries the rounding of the geometry it comes from (``_InPlane.b_rounding``: the
in-plane offsets ``b`` of nearly parallel facets are rounded at ``eps |c| / |c_j - c_F n_F .
n_j|``, and far out a term's log moves by ``b`` times ``b``'s error), ``_GEO_ERR`` times that
(without it the estimate was up to 3e3 times short on random squashed polyhedra near the mean,
1e-5 nats off, and 190 times far out, 3e-4 nats off).  Polyhedra (``d = 3, 4``) whose terms
cancel (``sum |terms| / mass > _THIN_RATIO``; in :func:`truncated_moments_nd` also those whose
smallest variance is below ``_THIN_VAR``) are redone, weight permitting, from slices across
their thin direction: log mass and moments without that loss (kept where their estimate is
the smaller: far out, ~100 sd, the slices can be worse).  Bounded ones in ``d = 3`` by fixed
panels between their vertices (:mod:`._polytope_thin`); needles and ``d = 4``, bounded or
not, nearer than ``TAIL_D`` by the adaptive slices of :func:`._polytope_tail.near_moments`,
whose cross-sections are thin-safe again (a 4-D needle 1e-5 thin through the mean had its
covariance 4e6 of its own variance off, a 3-D needle 3 sd out 882 times the floor ``16 eps
lambda_max / lambda_min``).  Unbounded ``d = 3`` ones only where they have an opposite pair of
rows (a slab's: the cones of one-layer decoders, whose mass sits in a corner, are many and
do not need it; sliced, they cost 0.2-0.4 s each).  Prisms (rows spanning fewer than ``d``
dimensions: unbounded boxes, wedges) never get here: :mod:`._api` reduces them exactly to
their rows' span first (:mod:`._prism`).

**Moments** (divergence theorem, stable weight form), with
``w_F = exp(log phi(c_F) + log m_{d-1}(F~) - log m)``::

    E[u] = -sum_F w_F n_F,    Cov[u] = I - sum_F w_F n_F (gbar_F - E[u])^T   (symmetrised)

``gbar_F = c_F n_F + U_F E[v | F~]`` (the facet's conditional mean; ``U_F`` its in-plane basis),
from :func:`~exactdgn.gaussian._polygon.truncated_moments_2d` for ``d = 3`` and recursively for
``d >= 4``.  The covariance is ``I`` minus ``O(|E u|^2)`` terms: its absolute error is about
``(error + eps) * |E u|^2`` (relative ``~ (error + eps) |E u|^4`` in the radial direction for a
polytope far from the mean; in ``d = 4``, whose facets are far 3-D polyhedra, ~1e-17 ``D^6``).
So polytopes at distance ``>= TAIL_D`` (8) from the mean take their mean and covariance from
slices instead (:mod:`._polytope_tail`: sums of positive terms about the closest point,
accurate to the input's own conditioning), where their weight makes that error visible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy.optimize import linprog
from scipy.special import erfcx, log_ndtr

from ._divergence import divergence_moments
from ._interval import EPS, TruncatedMoments, log_phi
from ._polygon import _omega, _truncated_moments_2d, polygon_edges
from ._polytope_cubature import (
    SMALL_SPREAD,
    SmallPolyhedra,
    small_polyhedra,
    small_polytopes_4d,
)
from ._polytope_tail import TAIL_D, near_moments, tail_moments
from ._polytope_thin import thin_polyhedra
from ._rules import (
    LOG_2PI,
    gauss_kronrod_01,
    gauss_laguerre,
    householder_basis,
    normalize_rows,
    row_norms,
)

__all__ = ["MAX_DIM", "dimension_limit", "log_mass_nd", "truncated_moments_nd"]

logger = logging.getLogger(__name__)

_SQRT2 = math.sqrt(2.0)
_SQRT_PI_2 = math.sqrt(0.5 * math.pi)


# adaptive panels: 21-node Gauss-Kronrod (accepted) with its embedded 10-node Gauss rule (check)
_NODES, _GK_W, _GG_W = gauss_kronrod_01()
_LAG_A = gauss_laguerre(28)  # accepted rule
_LAG_B = gauss_laguerre(20)  # check rule

# adaptive panels: accept when |K21 - G10| <= _RTOL * |K21| + _PTOL * (item estimate)
_RTOL = 1e-14
_PTOL = 1e-16
_MAX_ROUNDS = 40
_MAX_PANELS = 200_000
# Laguerre tail beyond this distance along the edge (or radial scale for d >= 4)
_T_LAG = 4.0
# short end pieces (S <= _S_SHORT) by Gauss-Legendre instead of the Laguerre difference
_S_SHORT = 4.0
# in-plane normals shorter than this are treated as parallel to the facet normal
_PAR_TOL = 1e-12
# pairs per block (d = 3; d >= 4 evaluates ~1e5 inner 3-D masses per pair, so smaller blocks)
_CHUNK = 2048
# Far d = 3 polyhedra: the divergence form's absolute (whitened) error in the mean and
# covariance stays below _DIV_ERR D^4 (measured on rotated boxes, closest point a facet, an edge
# or a vertex: 8e-11 at D = 8, 3e-9 at 32, 4e-7 at 128, 3e-3 at 1e3, 1e2 at 1e4); a polyhedron
# whose weight times that is below _WEIGHTED_ERR keeps it (see _sliced_rows).
_DIV_ERR = 1e-13
_DIV_ERR_4 = 1e-17
_WEIGHTED_ERR = 1e-16
# Near polytopes (d = 3, 4) thinner than this (smallest variance) are sliced (_thin_moments).
_THIN_VAR = 1e-4
_THIN_ERR = 1e-13
_THIN_COND = 16.0  # the vertices' rounding, in eps |P| / width (see _thin_axes)
_NEEDLE = 1e-4  # thin polytopes whose second principal variance is below this (relative) are
# needles (see _thin_direction)
# thin unbounded polytopes are sliced (over |z| <= ~11 about the mean) only nearer than this
_NEAR_SLICE = 6.0
_SNAP = 1e-6  # a thin polytope's row normal this close to its thin axis is its slicing axis
_OPPOSITE = 1e-3  # rows with n_i . n_j <= this - 1 are an opposite pair (see _thin_axes)
# d = 3 edge formula: each term's rounding from its geometry (_InPlane.b_rounding), in units of
# eps times that: covers the error on random polyhedra squashed 1e-5 to 0.3 along one or two
# directions, near (0-5 sd) and far (5-300 sd), against the 3-D oracle (error / estimate
# <= 0.16; without the term up to 3e3 near and 190 far)
_GEO_ERR = 4.0
# Polytopes whose terms cancel (sum |terms| / mass above this: thin ones) are sliced
# (_thin_moments), weight permitting.
_THIN_RATIO = 100.0
# ... where their weighted error estimate is above this: a mixture's log p(x) carries ~1e-12
# already from each pair's log kappa (the GEMM form's rounding; median 1.2e-12 on a
# [3,10,10,6] decoder), and a slice costs ~9 ms (20 points of that decoder: 230 of 16,000
# pairs above 1e-16, +45% time; 12 above 1e-12)
_MASS_VISIBLE = 1e-12
# Polytopes farther than this from the mean (whitened) get NaN moments: their offsets are
# rounded to ~eps D (2e-4 sd here) and the slices' range in x (~60 / D) to its own width; the
# slices ran for hours (a [3,6,4] decoder, a row 1e14 noise scales out) or gave a mean 0.3 D off
_MAX_MOMENT_D = 1e12
_CHUNK_ND = 8

# panel kinds
_K_THETA, _K_LOG, _K_TAU, _K_S = 0, 1, 2, 3

#: The largest dimension the facet recursion is run in. Its cost grows by the outer quadrature's
#: nodes (~300) times the facets per dimension above 3: one E-step pair (masses and moments)
#: took 0.11 s for [4,6,3] and 0.12 s for [4,8,3] (2-core machine), but a single polytope of
#: [5,6,3] 2 s (5 facets) and over 40 s (6 facets; another one over 150 s), not interruptible in
#: between: minutes to hours per point. Larger dimensions are refused up front.
MAX_DIM = 4


def dimension_limit(d: int, name: str = "latent_dim") -> str | None:
    """Why dimension ``d`` is beyond the exact Gaussian masses (None when it is not)."""
    if d <= MAX_DIM:
        return None
    return (
        f"{name}={d} is invalid: the exact Gaussian masses of regions in d >= 5 take from "
        "seconds to minutes per region and point (their facet recursion costs ~300 x facets "
        "more per dimension: d = 4 ~0.1 s per point-region pair, one 6-facet region of a "
        f"[5,6,3] decoder over 40 s), so exactdgn supports latent_dim <= {MAX_DIM}; use "
        f"latent_dim <= {MAX_DIM} (or the VAE of exactdgn.baselines for a larger latent space)"
    )


# ============================================================================================
# small helpers
# ============================================================================================
def _lse_groups(logv: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """log-sum-exp of ``logv`` within groups ``group`` (values in ``[0, n)``); -inf if none."""
    mx = np.full(n, -np.inf)
    if logv.size:
        np.maximum.at(mx, group, logv)
    mxs = np.where(np.isfinite(mx), mx, 0.0)
    s = np.bincount(group, weights=np.exp(logv - mxs[group]), minlength=n) if logv.size else 0.0
    with np.errstate(divide="ignore"):
        return mxs + np.log(s)


def _signed_log_sum(logv, sign, group, n):
    """``log(sum_+ - sum_-)`` per group, and ``log(sum_+ + sum_-)`` (the cancellation scale).

    Returns ``logm`` (``-inf`` where the difference is not positive), ``log_scale``.
    """
    pos = sign > 0
    Lp = _lse_groups(logv[pos], group[pos], n)
    Ln = _lse_groups(logv[~pos], group[~pos], n)
    with np.errstate(all="ignore"):
        diff = Ln - Lp
        logm = np.where(diff < 0, Lp + np.log1p(-np.exp(diff)), -np.inf)
        logm = np.where(np.isneginf(Ln), Lp, logm)
        scale = np.logaddexp(Lp, Ln)
    return logm, scale


def _prepare(normals, offsets):
    """Normalise rows; return unit normals, offsets, active mask (P, F), infeasible (P,)."""
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    nu, cu, active, bad = normalize_rows(n, c, row_norms(n))
    return nu, cu, _drop_repeated(nu, cu, active), bad


def _drop_repeated(nu, cu, active):
    """``active`` without the rows whose normal repeats another's (to ``_PAR_TOL``): of such
    rows only the tightest (smallest offset; the first on ties) constrains anything.

    A repeated row (also a scaled copy) is not the same row after normalisation: ``n . n`` and
    the offsets differ by rounding, so the copies' in-plane offsets ``c_j - c_f n_j . n_f`` are
    ``+-eps c`` (both facets kept, or both dropped) and their in-plane lines cross at an
    arbitrary point (0 / 0) in the other facets' polygons.
    """
    F = nu.shape[1]
    if F < 2:
        return active
    idx = np.arange(F)
    with np.errstate(invalid="ignore"):
        close = np.abs(nu[:, :, None, :] - nu[:, None, :, :]).max(axis=-1) <= _PAR_TOL
        close &= active[:, :, None] & active[:, None, :] & (idx[:, None] != idx[None, :])[None]
        ci, cj = cu[:, :, None], cu[:, None, :]
        beaten = close & ((cj < ci) | ((cj == ci) & (idx[None, :] < idx[:, None])[None]))
    return active & ~beaten.any(axis=2)


class _InPlane(NamedTuple):
    """:func:`_inplane`'s result (``Q`` polytopes, ``F`` rows, dimension ``k``).

    a : (Q, F, F, k-1)   unit in-plane normals of row j on facet F (0 if inactive)
    b : (Q, F, F)        in-plane offsets (distances from the facet's foot; +inf if inactive)
    act : (Q, F, F)      active in-plane rows
    U : (Q, F, k, k-1)   in-plane bases
    kill : (Q, F)        facets that are empty or duplicates (parallel rows)
    flat : (Q,)          polytopes inside a hyperplane (opposite rows with c_i + c_j <= 0)
    b_rounding : (Q, F, F)
        The rounding of ``b = B / s`` (``B = c_j - c_F n_F . n_j``, ``s`` the in-plane length of
        ``n_j``), in units of eps, as it moves a term's log: ``b`` is rounded at
        ``eps ((|c_j| + |c_F n_F . n_j|) / |B| + 1 / s)`` relative (nearly parallel facets:
        both large), and a term's log moves by ``(1 / b + b)`` times ``b``'s error, so by
        ``(1 + b^2)`` times its relative error (0 on inactive rows and where ``B = 0``).
    """

    a: np.ndarray
    b: np.ndarray
    act: np.ndarray
    U: np.ndarray
    kill: np.ndarray
    flat: np.ndarray
    b_rounding: np.ndarray


def _inplane(nu, cu, active) -> _InPlane:
    """In-plane rows of every facet (``nu`` (Q, F, k), ``cu`` (Q, F), ``active`` (Q, F))."""
    Q, F, k = nu.shape
    U = householder_basis(np.where(active[..., None], nu, np.eye(k)[0]).reshape(-1, k))
    U = U.reshape(Q, F, k, k - 1)
    A = np.einsum("qjk,qfkl->qfjl", nu, U)  # a_j on facet f
    NN = np.einsum("qjk,qfk->qfj", nu, nu)
    with np.errstate(all="ignore"):
        cF = np.where(active, cu, 0.0)[:, :, None] * NN
        B = cu[:, None, :] - cF
        s = np.sqrt(np.sum(A * A, axis=-1))
        idx = np.arange(F)
        other = active[:, :, None] & active[:, None, :] & (idx[:, None] != idx[None, :])[None]
        par = other & (s < _PAR_TOL)
        earlier = (idx[None, :] < idx[:, None])[None]  # j < f
        kill = np.any(par & (NN > 0) & ((B < 0) | ((B == 0) & earlier)), axis=2)
        flat = np.any(par & (NN < 0) & (B <= 0), axis=(1, 2))
        act = other & ~par
        safe = np.where(act, s, 1.0)
        a = np.where(act[..., None], A / safe[..., None], 0.0)
        b = np.where(act, B / safe, np.inf)
        rounding = ((np.abs(cu[:, None, :]) + np.abs(cF)) / np.abs(B) + 1.0 / s) * (1.0 + b * b)
    rounding = np.where(act & np.isfinite(rounding), rounding, 0.0)
    return _InPlane(a, b, act, U, kill & active, flat, rounding)


def _cone_point(nz: np.ndarray) -> tuple[np.ndarray, float]:
    """Interior point ``p`` of the cone ``{u : nz @ u <= 0}`` (rows unit) and its margin.

    Maximises ``r`` subject to ``nz @ p + r <= 0``, ``|p|_inf <= 1``, ``r <= 1`` (HiGHS).
    """
    m, k = nz.shape
    cost = np.zeros(k + 1)
    cost[-1] = -1.0
    A = np.concatenate([nz, np.ones((m, 1))], axis=1)
    bounds = [(-1.0, 1.0)] * k + [(None, 1.0)]
    res = linprog(cost, A_ub=A, b_ub=np.zeros(m), bounds=bounds, method="highs")
    if res.status != 0:  # pragma: no cover - HiGHS does not fail on this bounded LP
        return np.zeros(k), 0.0
    return res.x[:k], float(res.x[-1])


# ============================================================================================
# adaptive panel quadrature (vectorised over many integrals)
# ============================================================================================
def _omega_at_mean(nu, cu, active, cm, empty, cone):
    """``omega`` (1 inside, 0 outside, tangent-cone mass on the boundary) and its error."""
    err = np.zeros(len(cm))
    if cone:
        omega = np.where(active.any(axis=1), 1.0, 0.0)
    else:
        omega = np.where(cm > 0, 1.0, 0.0)
        onb = np.flatnonzero((cm == 0) & ~empty)
        if onb.size:
            omega[onb], err[onb] = _cone_mass(nu[onb], cu[onb], active[onb])
    return np.where(empty, 0.0, omega), err


class _Panels:
    """Panels ``[lo, hi]`` of integrals ``item``; ``kind`` and ``aux`` select the variable."""

    def __init__(self, item, kind, lo, hi, aux):
        keep = hi > lo
        self.item = item[keep]
        self.kind = kind[keep]
        self.lo = lo[keep]
        self.hi = hi[keep]
        self.aux = aux[keep]


def _adaptive(panels: _Panels, n_items: int, fun, extra=None):
    """Integrate ``fun`` over the panels, bisecting where the two rules disagree.

    ``fun(x, item, kind, aux)`` returns the integrand and an absolute error of it (or 0) at
    the nodes ``x`` (``(M, K)``) of panels with the given ``item``/``kind``/``aux`` (``(M,)``).

    Returns
    -------
    val, err : ndarray (n_items,)
        Integral and error estimate (sum over accepted panels of ``|K21 - G10|`` plus the
        propagated integrand error).
    """
    val = np.zeros(n_items)
    err = np.zeros(n_items)
    est = np.zeros(n_items)
    item, kind, lo, hi, aux = panels.item, panels.kind, panels.lo, panels.hi, panels.aux
    for rnd in range(_MAX_ROUNDS):
        if item.size == 0:
            break
        L = hi - lo
        x = lo[:, None] + L[:, None] * _NODES[None, :]
        f, fe = fun(x, item, kind, aux)
        qa = L * (f @ _GK_W)
        qb = L * (f @ _GG_W)
        qe = L * (np.abs(fe) @ _GK_W) if np.ndim(fe) else 0.0
        if rnd == 0:
            est = np.bincount(item, weights=qa, minlength=n_items)
            if extra is not None:
                est = est + extra
        d = np.abs(qa - qb)
        ok = (d <= _RTOL * np.abs(qa) + _PTOL * est[item] + 2.0 * qe) | ~np.isfinite(d)
        if rnd == _MAX_ROUNDS - 1 or item.size > _MAX_PANELS:
            ok[:] = True
        if np.any(ok):
            val += np.bincount(item[ok], weights=qa[ok], minlength=n_items)
            tot = d[ok] + (qe[ok] if np.ndim(qe) else 0.0)
            err += np.bincount(item[ok], weights=tot, minlength=n_items)
        bad = ~ok
        if not np.any(bad):
            break
        mid = 0.5 * (lo[bad] + hi[bad])
        item = np.repeat(item[bad], 2)
        kind = np.repeat(kind[bad], 2)
        aux = np.repeat(aux[bad], 2)
        lo, hi = np.stack([lo[bad], mid], 1).ravel(), np.stack([mid, hi[bad]], 1).ravel()
    return val, err


# ============================================================================================
# d = 3: edge pieces
# ============================================================================================
def _piece_integrand(h, b, ta):
    """Integrand of the edge pieces for :func:`_adaptive` (scaled by ``1 / phi(rho(ta))``)."""

    def fun(x, item, kind, aux):
        out = np.empty_like(x)
        for kd in np.unique(kind):
            r = np.flatnonzero(kind == kd)
            xr = x[r]
            hh = h[item[r]][:, None]
            bb = b[item[r]][:, None]
            a0 = ta[item[r]][:, None]
            if kd == _K_THETA:
                tau = bb * np.tan(xr)
            elif kd == _K_LOG:
                tau = np.exp(xr)
            elif kd == _K_TAU:
                tau = xr
            else:
                tau = np.sqrt(aux[r][:, None] ** 2 + 2.0 * xr)
            t2 = tau * tau
            rho = np.sqrt(hh * hh + bb * bb + t2)
            f = np.exp(-0.5 * (tau - a0) * (tau + a0)) * (_SQRT_PI_2 * erfcx(rho / _SQRT2) / rho)
            if kd == _K_THETA:  # d tau * h b / (b^2 + tau^2) = h d theta
                f *= hh
            elif kd == _K_LOG:
                f *= hh * bb * tau / (bb * bb + t2)
            elif kd == _K_TAU:
                f *= hh * bb / (bb * bb + t2)
            else:
                f *= hh * bb / ((bb * bb + t2) * tau)
            out[r] = f
        return out, 0.0

    return fun


def _laguerre_pieces(h, b, ta, ts, tb):
    """``int_ts^tb`` of the piece integrand (scaled by ``1/phi(rho(ta))``), ``ts >= 4``, ``S > 4``.

    ``tau^2 = ts^2 + 2 s``: ``e^{-(ts^2 - ta^2)/2} [I(ts) - e^{-S} I(tb)]``,
    ``I(x) = int_0^inf e^{-s} f_x(s) ds`` by Gauss-Laguerre (28 nodes, checked with 20).
    Returns value and error (n,).
    """

    def lag_f(base, xs, sel=slice(None)):
        hs, bs = h[sel][:, None], b[sel][:, None]
        tau = np.sqrt(base[:, None] ** 2 + 2.0 * xs[None, :])
        rho = np.sqrt(hs**2 + bs**2 + tau * tau)
        f = _SQRT_PI_2 * erfcx(rho / _SQRT2) / rho * hs * bs / ((bs**2 + tau * tau) * tau)
        return f

    out = []
    fi = np.flatnonzero(np.isfinite(tb))  # the far end's term only where there is one
    for xs, ws in (_LAG_A, _LAG_B):
        Ia = lag_f(ts, xs) @ ws
        back = np.zeros(ts.size)
        if fi.size:
            S = 0.5 * (tb[fi] - ts[fi]) * (tb[fi] + ts[fi])
            back[fi] = np.exp(-S) * (lag_f(tb[fi], xs, fi) @ ws)
        out.append(np.exp(-0.5 * (ts - ta) * (ts + ta)) * (Ia - back))
    return out[0], np.abs(out[0] - out[1])


def _log_pieces(h, b, ta, tb):
    """``log int_ta^tb E(h, b, tau) dtau`` and its relative error, for ``0 <= ta < tb <= inf``."""
    n = h.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    idx = np.arange(n)
    t1 = np.minimum(b, 1.0)
    # theta panel
    th_lo = np.arctan2(ta, b)
    th_hi = np.arctan2(np.minimum(tb, t1), b)
    # log panels
    lg_lo = np.log(np.maximum(ta, t1))
    lg_hi = np.log(np.minimum(tb, 1.0))
    lb = np.log(b)
    cuts = [lg_lo] + [np.clip(lb + s, lg_lo, lg_hi) for s in (2.0, 6.0, 14.0)] + [lg_hi]
    # tau panels
    tlo = np.maximum(ta, 1.0)
    tcuts = [tlo, np.clip(2.0, tlo, np.minimum(tb, _T_LAG)), np.minimum(tb, _T_LAG)]
    # tail
    ts = np.maximum(ta, _T_LAG)
    has_tail = tb > ts
    S = np.where(has_tail, 0.5 * (tb - ts) * (tb + ts), 0.0)
    short = has_tail & (S <= _S_SHORT)
    lag = has_tail & ~short

    items = [idx]
    kinds = [np.full(n, _K_THETA)]
    los = [th_lo]
    his = [np.where(ta < t1, th_hi, th_lo)]
    auxs = [np.zeros(n)]
    for i in range(len(cuts) - 1):
        items.append(idx)
        kinds.append(np.full(n, _K_LOG))
        los.append(cuts[i])
        his.append(np.where((b < 1.0) & (lg_hi > lg_lo), cuts[i + 1], cuts[i]))
        auxs.append(np.zeros(n))
    for i in range(2):
        items.append(idx)
        kinds.append(np.full(n, _K_TAU))
        los.append(tcuts[i])
        his.append(np.maximum(tcuts[i + 1], tcuts[i]))
        auxs.append(np.zeros(n))
    items.append(idx)
    kinds.append(np.full(n, _K_S))
    los.append(np.zeros(n))
    his.append(np.where(short, S, 0.0))
    auxs.append(ts)
    with np.errstate(all="ignore"):
        panels = _Panels(
            np.concatenate(items),
            np.concatenate(kinds),
            np.concatenate(los),
            np.concatenate(his),
            np.concatenate(auxs),
        )
    fun = _piece_integrand(h, b, ta)
    lv = np.zeros(n)
    le = np.zeros(n)
    li = np.flatnonzero(lag)
    if li.size:
        lv[li], le[li] = _laguerre_pieces(h[li], b[li], ta[li], ts[li], tb[li])
    val, err = _adaptive(panels, n, fun, extra=lv)
    val = val + lv
    err = err + le
    rho2 = h * h + b * b + ta * ta
    with np.errstate(divide="ignore"):
        logv = -0.5 * rho2 - 0.5 * LOG_2PI - LOG_2PI + np.log(val)
    rel = err / val
    return logv, rel


def _cone_pieces(h, b, ta, tb):
    """``int_0^inf phi(t) [T(t b/h, tb/b) - T(t b/h, ta/b)] dt`` (elementary; see module doc)."""

    def F(t):
        with np.errstate(all="ignore"):
            r = np.sqrt(h * h + b * b + t * t)
            return np.where(np.isinf(t), np.arctan2(h, b), np.arctan2(t * h, b * r))

    return (F(tb) - F(ta)) / (4.0 * np.pi)


class _Geo3:
    """Geometry of 3-D polytopes for :func:`_eval3` (all lengths at scale 1)."""

    def __init__(self, nu, cu, active, empty, cone: bool = False):
        Q, F, _ = nu.shape
        self.Q = Q
        self.cone = cone
        a, b, act, U, kill, flat, geo_rel = _inplane(nu, cu, active)
        R = Q * F
        a2 = a.reshape(R, F, 2)
        b2 = b.reshape(R, F)
        act2 = act.reshape(R, F)
        with np.errstate(all="ignore"):
            t0, t1, nonempty, degen = polygon_edges(a2, b2, act2)
        t0 = t0.reshape(Q, F, F)
        t1 = t1.reshape(Q, F, F)
        nonempty = nonempty.reshape(Q, F, F)
        degen = degen.reshape(Q, F)
        empty = empty | flat
        poly_empty = degen | (act.any(axis=2) & ~nonempty.any(axis=2))
        fac = active & ~kill & ~poly_empty & ~empty[:, None]
        self.empty = empty
        self.fac = fac
        self.a, self.b, self.act, self.U = a, b, act, U
        self.t0, self.t1, self.nonempty = t0, t1, nonempty
        omF = _omega(a2, b2, act2).reshape(Q, F)
        self.omF = np.where(fac, omF, 0.0)
        h = np.abs(np.where(active, cu, 0.0))
        sg = np.sign(np.where(active, cu, 0.0))
        self.h, self.sg = h, sg
        # Q-terms (one per facet)
        qi, fi = np.nonzero(fac & (h > 0) & (self.omF > 0))
        self.q_item, self.q_h, self.q_om, self.q_sg = qi, h[qi, fi], self.omF[qi, fi], -sg[qi, fi]
        q_fi = fi
        # edge pieces
        use = nonempty & fac[:, :, None] & (h > 0)[:, :, None] & (b != 0) & np.isfinite(b)
        qi, fi, ji = np.nonzero(use)
        T0, T1 = t0[qi, fi, ji], t1[qi, fi, ji]
        straddle = (T0 < 0) & (T1 > 0)
        pos = T0 >= 0
        a1 = np.where(straddle, 0.0, np.where(pos, T0, -T1))
        b1 = np.where(straddle, -T0, np.where(pos, T1, -T0))
        si = np.flatnonzero(straddle)
        it = np.concatenate([qi, qi[si]])
        ta = np.concatenate([a1, np.zeros(si.size)])
        tb = np.concatenate([b1, T1[si]])
        hh = np.concatenate([h[qi, fi], h[qi, fi][si]])
        bv = b[qi, fi, ji]
        gv = geo_rel[qi, fi, ji]
        gv = np.concatenate([gv, gv[si]])
        bb = np.abs(np.concatenate([bv, bv[si]]))
        ps = sg[qi, fi] * np.sign(bv)
        ps = np.concatenate([ps, ps[si]])
        keep = tb > ta
        order = np.argsort(it[keep], kind="stable")
        self.p_item = it[keep][order]
        self.p_h, self.p_b = hh[keep][order], bb[keep][order]
        self.p_ta, self.p_tb = ta[keep][order], tb[keep][order]
        self.p_sg = ps[keep][order]
        self.p_geo = gv[keep][order]
        self.q_geo = np.max(np.where(act, geo_rel, 0.0), axis=2, initial=0.0)[self.q_item, q_fi]
        self.p_count = np.bincount(self.p_item, minlength=Q)
        self.p_start = np.concatenate([[0], np.cumsum(self.p_count)[:-1]])
        # omega at the mean and the distance of the polytope from the mean
        cm = np.where(active, cu, np.inf).min(axis=1)
        self.has_rows = active.any(axis=1)
        self.omega, self.omega_err = _omega_at_mean(nu, cu, active, cm, empty, cone)
        tcl = np.clip(0.0, t0, t1)
        d2e = np.where(nonempty & (b < 0), b * b + tcl * tcl, np.inf).min(axis=2)
        d2f = np.where(self.omF > 0, 0.0, d2e)
        dist2 = np.where(fac & (cu < 0), cu * cu + d2f, np.inf).min(axis=1)
        self.dist = np.where(cm >= 0, 0.0, np.sqrt(dist2))


def _expand(counts, start, req_item):
    """Indices into the piece arrays for each request, and the request of each."""
    rc = counts[req_item]
    tot = int(rc.sum())
    req = np.repeat(np.arange(req_item.size), rc)
    first = np.repeat(start[req_item] - np.concatenate([[0], np.cumsum(rc)[:-1]]), rc)
    return first + np.arange(tot), req


def _eval3(g: _Geo3, req_item: np.ndarray, lam: np.ndarray):
    """Log masses and their error estimates of ``lam * P[req_item]`` (3-D edge formula)."""
    M = req_item.size
    logs, signs, groups, errs = [], [], [], []
    om = g.omega[req_item]
    with np.errstate(divide="ignore"):
        logs.append(np.log(om))
    signs.append(np.ones(M))
    groups.append(np.arange(M))
    errs.append(g.omega_err[req_item])
    # Q-terms
    qc = np.bincount(g.q_item, minlength=g.Q)
    qs = np.concatenate([[0], np.cumsum(qc)[:-1]])
    qi, qr = _expand(qc, qs, req_item)
    if qi.size:
        if g.cone:
            lq = np.log(g.q_om[qi]) + math.log(0.5)
        else:
            lq = np.log(g.q_om[qi]) + log_ndtr(-lam[qr] * g.q_h[qi])
        logs.append(lq)
        signs.append(g.q_sg[qi])
        groups.append(qr)
        errs.append(_GEO_ERR * EPS * g.q_geo[qi])
    pi, pr = _expand(g.p_count, g.p_start, req_item)
    if pi.size:
        s = lam[pr]
        if g.cone:
            v = _cone_pieces(g.p_h[pi] * s, g.p_b[pi] * s, g.p_ta[pi] * s, g.p_tb[pi] * s)
            with np.errstate(divide="ignore"):
                lp = np.log(v)
            rel = np.zeros(pi.size)
        else:
            lp, rel = _log_pieces(g.p_h[pi] * s, g.p_b[pi] * s, g.p_ta[pi] * s, g.p_tb[pi] * s)
        logs.append(lp)
        signs.append(g.p_sg[pi])
        groups.append(pr)
        errs.append(rel + _GEO_ERR * EPS * g.p_geo[pi])
    logv = np.concatenate(logs)
    sgn = np.concatenate(signs)
    grp = np.concatenate(groups)
    rel = np.concatenate(errs)
    return _combine(logv, sgn, grp, rel, M, g.empty[req_item])


class _SignedSum(NamedTuple):
    """A signed sum of terms: ``log_mass`` (M,), its ``error`` (absolute, of the log) and the
    cancellation ``ratio`` (M,) ``sum |terms| / |sum|`` (1 without cancellation; NaN where the
    sum is not finite)."""

    log_mass: np.ndarray
    error: np.ndarray
    ratio: np.ndarray


def _combine(logv, sgn, grp, rel, M, empty) -> _SignedSum:
    """Signed log-sum with the error estimate (absolute error of the log)."""
    fin = np.isfinite(logv)
    logv, sgn, grp, rel = logv[fin], sgn[fin], grp[fin], rel[fin]
    logm, _ = _signed_log_sum(logv, sgn, grp, M)
    with np.errstate(all="ignore"):
        lm_safe = np.where(np.isfinite(logm), logm, 0.0)
        share = np.exp(logv - lm_safe[grp])
        # quadrature error of every term, plus its rounding: a term exp(L) carries an absolute
        # error ~ eps |L| in L (the exponent -rho^2/2 is formed from squares).
        trel = rel + EPS * (16.0 + 16.0 * np.abs(logv))
        err = np.bincount(grp, weights=trel * share, minlength=M)
        err = err + 4.0 * EPS * (1.0 + np.abs(logm))
        ratio = np.bincount(grp, weights=share, minlength=M)
    logm = np.where(empty, -np.inf, np.minimum(logm, 0.0))
    fin = np.isfinite(logm)
    return _SignedSum(logm, np.where(fin, err, 0.0), np.where(fin, ratio, np.nan))


# ============================================================================================
# mean on the boundary: mass of the tangent cone
# ============================================================================================
def _cone_mass(nu, cu, active) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mass of the tangent cones ``{u : n_j u <= 0, c_j = 0}`` (Q items, k >= 3).

    Returns the masses and the error estimates of their logs.
    """
    Q, F, _ = nu.shape
    zero = active & (cu == 0)
    out = np.zeros(Q)
    oerr = np.zeros(Q)
    hp = np.full((Q, F), np.inf)
    ok = np.zeros(Q, dtype=bool)
    for q in range(Q):  # rare path: one small LP per pair whose mean is on the boundary
        rows = np.flatnonzero(zero[q])
        p, r = _cone_point(nu[q, rows])
        if r > 1e-12:
            hp[q, rows] = -(nu[q, rows] @ p)
            ok[q] = True
    if not np.any(ok):
        return out, oerr
    qi = np.flatnonzero(ok)
    act = zero[qi]
    nn = np.where(act[..., None], nu[qi], 0.0)
    geo = _build(nn, np.where(act, hp[qi], np.inf), act, np.zeros(qi.size, bool), cone=True)
    res = _evaluate(geo, np.arange(qi.size), np.ones(qi.size))
    out[qi] = np.exp(res.log_mass)
    oerr[qi] = res.error
    return out, oerr


# ============================================================================================
# d >= 4: outer quadrature over the facets' scale
# ============================================================================================
class _GeoN:
    """Geometry of ``k``-D polytopes (``k >= 4``) for :func:`_evaln`."""

    def __init__(self, nu, cu, active, empty, cone: bool = False):
        Q, F, k = nu.shape
        self.Q, self.F, self.k, self.cone = Q, F, k, cone
        a, b, act, U, kill, flat, _ = _inplane(nu, cu, active)
        empty = empty | flat
        R = Q * F
        sub_empty = (kill | ~active).reshape(R) | np.repeat(empty, F)
        self.sub = _build(
            a.reshape(R, F, k - 1), b.reshape(R, F), act.reshape(R, F), sub_empty, cone=False
        )
        fac = active & ~kill & ~empty[:, None] & ~self.sub.empty.reshape(Q, F)
        self.empty, self.fac = empty, fac
        self.a, self.b, self.act, self.U = a, b, act, U
        h = np.abs(np.where(active, cu, 0.0))
        sg = np.sign(np.where(active, cu, 0.0))
        use = fac & ((h > 0) | cone)
        qi, fi = np.nonzero(use)
        self.f_item, self.f_sub = qi, qi * F + fi
        self.f_h = h[qi, fi]
        # the facet terms enter with sign -sgn(c_F); for a cone (scaled about p) all are -1
        self.f_sg = -np.ones(qi.size) if cone else -sg[qi, fi]
        sd = self.sub.dist[self.f_sub]
        self.f_D = np.sqrt(self.f_h**2 + sd**2)
        self.f_count = np.bincount(qi, minlength=Q)
        self.f_start = np.concatenate([[0], np.cumsum(self.f_count)[:-1]])
        cm = np.where(active, cu, np.inf).min(axis=1)
        self.has_rows = active.any(axis=1)
        self.omega, self.omega_err = _omega_at_mean(nu, cu, active, cm, empty, cone)
        # distance of the polytope from the mean
        sdist = self.sub.dist.reshape(Q, F)
        dist2 = np.where(fac & (cu < 0), cu * cu + sdist**2, np.inf).min(axis=1)
        self.dist = np.where(cm >= 0, 0.0, np.sqrt(dist2))


def _build(nu, cu, active, empty, cone=False):
    k = nu.shape[2]
    if k == 3:
        return _Geo3(nu, cu, active, empty, cone=cone)
    return _GeoN(nu, cu, active, empty, cone=cone)


def _evaluate(geo, req_item, lam):
    if isinstance(geo, _Geo3):
        return _eval3(geo, req_item, lam)
    return _evaln(geo, req_item, lam)


def _evaln(g: _GeoN, req_item, lam):
    """Log masses and errors of ``lam * P[req_item]`` for ``k >= 4`` (see module doc)."""
    M = req_item.size
    fi, fr = _expand(g.f_count, g.f_start, req_item)
    n = fi.size
    h = g.f_h[fi]
    D = g.f_D[fi]
    sub = g.f_sub[fi]
    mu0 = np.zeros(n) if g.cone else lam[fr]
    # panels in mu: a linear first panel for cones, log panels up to mu_s, then Laguerre
    with np.errstate(divide="ignore"):
        mus = np.maximum(np.where(D > 0, _T_LAG / D, np.inf), mu0)
    mus = np.where(np.isfinite(mus), mus, np.maximum(mu0, 1.0) * 8.0)
    if g.cone:
        start = 0.25 * mus
        lin = (np.zeros(n), start)
    else:
        start = mu0
        lin = (mu0, mu0)
    L = np.log(mus) - np.log(start)
    npan = np.clip(np.ceil(L / 1.0), 1, 12).astype(int)
    idx = np.arange(n)
    rep = np.repeat(idx, npan)
    j = np.arange(rep.size) - np.repeat(np.cumsum(npan) - npan, npan)
    lo = np.log(start[rep]) + L[rep] * j / npan[rep]
    hi = np.log(start[rep]) + L[rep] * (j + 1) / npan[rep]
    items = np.concatenate([idx, rep])
    kinds = np.concatenate([np.full(n, _K_TAU), np.full(rep.size, _K_LOG)])
    los = np.concatenate([lin[0], lo])
    his = np.concatenate([lin[1], hi])
    panels = _Panels(items, kinds, los, his, np.zeros(items.size))

    # log scale per facet term: the integrand at mu_s (and at the start)
    def log_f(mu):
        lm, le, _ = _evaluate(g.sub, np.repeat(sub, mu.shape[1]), mu.ravel())
        lm = lm.reshape(mu.shape)
        le = le.reshape(mu.shape)
        with np.errstate(divide="ignore"):
            base = np.log(h)[:, None] + log_phi(h[:, None] * mu) + lm
        return base, le

    probe = np.stack([np.maximum(start, 1e-300), 0.5 * (start + mus), mus], axis=1)
    lp, _ = log_f(probe)
    scale = np.max(lp, axis=1)
    scale = np.where(np.isfinite(scale), scale, 0.0)

    def fun(x, item, kind, aux):
        mu = np.where(kind[:, None] == _K_LOG, np.exp(x), x)
        lm, le, _ = _evaluate(g.sub, np.repeat(sub[item], x.shape[1]), mu.ravel())  # inner masses
        lm = lm.reshape(x.shape)
        le = le.reshape(x.shape)
        hh = h[item][:, None]
        jac = np.where(kind[:, None] == _K_LOG, mu, 1.0)
        with np.errstate(all="ignore"):
            f = np.exp(np.log(hh) + log_phi(hh * mu) + lm - scale[item][:, None]) * jac
        f = np.where(np.isfinite(f), f, 0.0)
        return f, f * le

    val, err = _adaptive(panels, n, fun)
    # Laguerre tail: sigma = (mu^2 - mus^2) D^2 / 2, mu >= mus
    tail_v = []
    for xs, ws in (_LAG_A, _LAG_B):
        Dp = np.where(D > 0, D, 1.0)
        mu = np.sqrt(mus[:, None] ** 2 + 2.0 * xs[None, :] / Dp[:, None] ** 2)
        lm, le, _ = _evaluate(g.sub, np.repeat(sub, xs.size), mu.ravel())
        lm = lm.reshape(mu.shape)
        le = le.reshape(mu.shape)
        with np.errstate(all="ignore"):
            lf = (
                np.log(h)[:, None]
                + log_phi(h[:, None] * mu)
                + lm
                + xs[None, :]
                - np.log(mu * Dp[:, None] ** 2)
                - scale[:, None]
            )
            f = np.where(np.isfinite(lf), np.exp(lf), 0.0)
        tail_v.append((f @ ws, (f * le) @ ws))
    val = val + tail_v[0][0]
    err = err + np.abs(tail_v[0][0] - tail_v[1][0]) + tail_v[0][1]
    with np.errstate(divide="ignore"):
        lterm = scale + np.log(val)
        rel = err / val
    logs = np.concatenate([np.log(np.maximum(g.omega[req_item], 0.0)), lterm])
    sgn = np.concatenate([np.ones(M), g.f_sg[fi]])
    grp = np.concatenate([np.arange(M), fr])
    rels = np.concatenate([g.omega_err[req_item], np.where(np.isfinite(rel), rel, 0.0)])
    return _combine(logs, sgn, grp, rels, M, g.empty[req_item])


# ============================================================================================
# public functions
# ============================================================================================
def _check(normals, offsets):
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    if n.ndim != 3 or n.shape[2] < 3 or c.shape != n.shape[:2]:
        raise ValueError(
            f"normals must be (P, F, d) with d >= 3 and offsets (P, F); got {n.shape}, {c.shape}"
        )
    why = dimension_limit(n.shape[2], name="d")
    if why is not None:
        raise ValueError(why)
    return n, c


def _edge_points(nu, cu, geo: _Geo3, rows: np.ndarray):
    """End points ``(S, F, F, 3)`` of the facets' edges of polyhedra ``rows`` and which are
    real (``u = c_F n_F + U_F (b a + t tau)`` on facet ``F``'s in-plane edge line)."""
    a = geo.a[rows]
    tau = np.stack([-a[..., 1], a[..., 0]], axis=-1)
    ok = geo.nonempty[rows] & geo.fac[rows][:, :, None]
    b = np.where(ok, geo.b[rows], 0.0)[..., None]
    foot = np.where(geo.fac[rows], cu[rows], 0.0)[..., None] * nu[rows]
    U = geo.U[rows]
    P0, P1 = (
        foot[:, :, None, :]
        + np.einsum("qfkl,qfjl->qfjk", U, b * a + np.where(ok, t, 0.0)[..., None] * tau)
        for t in (geo.t0[rows], geo.t1[rows])
    )
    return P0, P1, ok


def _small_3d(nu, cu, geo: _Geo3, moments: bool) -> SmallPolyhedra:
    """Bounded small polyhedra (d = 3) by cubature: no cancellation (the edge formula loses
    ``~1 / size`` relative, the divergence moments ``eps / size^4``).

    Only polyhedra whose spread can be small are looked at: an edge of length ``L`` has both
    ends within ``R >= L / 2`` of the vertex centroid ``g``, and ``|g| >= `` the distance."""
    ok = geo.nonempty & geo.fac[:, :, None] & ~geo.empty[:, None, None]
    with np.errstate(invalid="ignore"):
        longest = np.where(ok, geo.t1 - geo.t0, 0.0).max(axis=(1, 2))  # inf where unbounded
        cand = ok.any(axis=(1, 2)) & (0.5 * longest * (geo.dist + 0.25 * longest) <= SMALL_SPREAD)
    cand = np.flatnonzero(cand)
    P0, P1, eok = _edge_points(nu, cu, geo, cand)
    small = small_polyhedra(P0, P1, eok, nu[cand], cu[cand], moments)
    return replace(small, rows=cand[small.rows])


def _face_edges_4d(geo: _GeoN) -> np.ndarray:
    """(Q, F, F, F) which edges of the 2-faces of the facets (``geo.sub``: each facet's own 3-D
    geometry) are real."""
    sub, Q, F = geo.sub, geo.Q, geo.F
    ok = sub.nonempty & sub.fac[:, :, None] & ~sub.empty[:, None, None]  # (Q F, F, F)
    return ok.reshape(Q, F, F, F) & geo.fac[:, :, None, None] & ~geo.empty[:, None, None, None]


def _edge_points_4d(nu, cu, geo: _GeoN, rows: np.ndarray, ok: np.ndarray):
    """End points ``(S, F, F, F, 4)`` of the edges of the 2-faces of the facets of polytopes
    ``rows`` and which are real (``ok``: :func:`_face_edges_4d`), from the facets' 3-D edges
    (:func:`_edge_points` on ``geo.sub``) mapped into 4-D."""
    Q, F = geo.Q, geo.F
    S = rows.size
    sub_rows = (rows[:, None] * F + np.arange(F)).ravel()  # their facets, in geo.sub
    p0, p1, eok = _edge_points(
        geo.a.reshape(Q * F, F, 3), geo.b.reshape(Q * F, F), geo.sub, sub_rows
    )
    U = geo.U[rows]  # (S, F, 4, 3): facet F's in-plane basis
    foot = np.where(geo.fac[rows], cu[rows], 0.0)[..., None] * nu[rows]
    P0, P1 = (
        foot[:, :, None, None, :] + np.einsum("sfkl,sfgjl->sfgjk", U, p.reshape(S, F, F, F, 3))
        for p in (p0, p1)
    )
    return P0, P1, eok.reshape(S, F, F, F) & ok[rows]


def _small_4d(nu, cu, geo: _GeoN, moments: bool) -> SmallPolyhedra:
    """Bounded small polytopes (d = 4) by cubature (:func:`small_polytopes_4d`), from the
    edges of their facets' 2-faces (:func:`_edge_points_4d`); the candidates as
    :func:`_small_3d`'s, from the longest such edge."""
    ok = _face_edges_4d(geo)
    with np.errstate(invalid="ignore"):
        span = (geo.sub.t1 - geo.sub.t0).reshape(ok.shape)
        longest = np.where(ok, span, 0.0).max(axis=(1, 2, 3))  # inf where unbounded
        cand = ok.any(axis=(1, 2, 3)) & (
            0.5 * longest * (geo.dist + 0.25 * longest) <= SMALL_SPREAD
        )
    cand = np.flatnonzero(cand)
    P0, P1, eok = _edge_points_4d(nu, cu, geo, cand, ok)
    face_normals = np.einsum("sfkl,sfgl->sfgk", geo.U[cand], geo.a[cand])
    small = small_polytopes_4d(P0, P1, eok, nu[cand], cu[cand], face_normals, geo.b[cand], moments)
    return replace(small, rows=cand[small.rows])


@dataclass(frozen=True)
class _MassBlock:
    """:func:`_log_mass_block`'s result: log masses and errors (P,), the prepared rows and
    geometry, the small polyhedra (d = 3, 4: cubature) and the thin ones sliced for their mass
    (d = 3, 4: ``thin_rows`` and their :class:`TruncatedMoments`)."""

    log_mass: np.ndarray
    error: np.ndarray
    nu: np.ndarray
    cu: np.ndarray
    active: np.ndarray
    geo: object
    small: SmallPolyhedra | None
    thin_rows: np.ndarray
    thin: TruncatedMoments | None
    ratio: np.ndarray  # (P,) sum |terms| / mass of the edge formula (d = 3, 4; NaN elsewhere)


def _log_mass_block(n, c, moments=False, log_weight=None, normalised=False) -> _MassBlock:
    """Log masses of one block (edge formula; d = 3, 4 also the cubature and thin slices).

    ``log_weight`` (P,), optional: the log of the factor each mass (``normalised=False``) or
    each polyhedron's already normalised weight (``normalised=True``, the moments path) enters
    a sum of total ~1 with; thin polyhedra whose error that hides keep the edge formula."""
    nu, cu, active, bad = _prepare(n, c)
    P, d = nu.shape[0], nu.shape[2]
    logm, err, ratio = np.full(P, -np.inf), np.zeros(P), np.full(P, np.nan)
    thin_rows, thin = np.zeros(0, dtype=np.intp), None
    with np.errstate(all="ignore"):
        geo = _build(nu, cu, active, bad)
        small = {3: _small_3d, 4: _small_4d}[d](nu, cu, geo, moments) if d in (3, 4) else None
        rest = np.arange(P)
        if small is not None and small.rows.size:
            rest = np.setdiff1d(rest, small.rows)
            logm[small.rows], err[small.rows] = small.log_mass, small.error
        if rest.size:
            res = _evaluate(geo, rest, np.ones(rest.size))
            logm[rest], err[rest] = res.log_mass, res.error
            if d >= 3:
                ratio[rest] = res.ratio
        if d in (3, 4):  # (kept where better: far out the slices' integrand can be too steep)
            rows = _cancelling_rows(logm, err, ratio, log_weight, normalised)
            rows, tm = _thin_moments(nu, cu, active, geo, rows)
            better = tm.error < err[rows]
            thin_rows, thin = rows[better], TruncatedMoments(*(v[better] for v in tm))
            logm[thin_rows], err[thin_rows] = thin.log_mass, thin.error
    return _MassBlock(logm, err, nu, cu, active, geo, small, thin_rows, thin, ratio)


def _cancelling_rows(logm, err, ratio, log_weight, normalised):
    """(S,) the polyhedra whose edge-formula terms cancel (``ratio > _THIN_RATIO``: thin ones)
    and whose error can show: above ``_MASS_VISIBLE`` once weighted by ``log_weight`` (all, if
    not given); see :func:`_log_mass_block`."""
    with np.errstate(invalid="ignore"):
        cand = np.isfinite(logm) & (ratio > _THIN_RATIO)
    if log_weight is not None and cand.any():
        with np.errstate(all="ignore"):
            lw = log_weight if normalised else log_weight + logm
            cand &= lw + np.log(err) > np.log(_MASS_VISIBLE)
    return np.flatnonzero(cand)


def log_mass_nd(
    normals: np.ndarray, offsets: np.ndarray, log_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log mass of ``N(0, I_d)`` on the polyhedra ``{u : n_i . u <= c_i}``, ``d >= 3``.

    Parameters
    ----------
    normals : ndarray, shape (P, F, d)
        Row normals (normalised internally); zero rows with ``+inf`` offsets are padding.
    offsets : ndarray, shape (P, F)
        Offsets ``c_i`` (``+inf``: no constraint; ``-inf``: empty).
    log_weight : ndarray, shape (P,), optional
        ``d = 3, 4``: the log of the factor each mass is multiplied by in a sum of total ~1 (in a
        mixture ``p(x) = sum_r kappa_r m_r``: ``log kappa_r - log p(x)``, or a lower bound of
        ``log p(x)`` in its place). Thin polyhedra (cancelling edge-formula terms) whose error
        that factor hides keep the edge formula; without it all are sliced.

    Returns
    -------
    log_mass : ndarray, shape (P,)
        ``log P(u in poly)``, relative-accurate far into the tails (``-inf`` for empty or
        measure-zero polyhedra, 0 for the whole space).
    error : ndarray, shape (P,)
        Estimated absolute error of ``log_mass`` (quadrature differences plus rounding floor).
    """
    n, c = _check(normals, offsets)
    P = n.shape[0]
    if P == 0:
        return np.zeros(0), np.zeros(0)
    ch = _CHUNK if n.shape[2] == 3 else _CHUNK_ND
    lw = None if log_weight is None else np.broadcast_to(np.asarray(log_weight, float), (P,))
    parts = [
        _log_mass_block(
            n[i : i + ch], c[i : i + ch], log_weight=None if lw is None else lw[i : i + ch]
        )
        for i in range(0, P, ch)
    ]
    return np.concatenate([p.log_mass for p in parts]), np.concatenate([p.error for p in parts])


def _facet_moments(nu, cu, active, geo, skip=None):
    """Log masses (Q, F) and in-plane means (Q, F, k-1) of the facets (not of the polyhedra
    ``skip``, optional: -inf and 0)."""
    Q, F, k = nu.shape
    a, b, act = geo.a, geo.b, geo.act
    R = Q * F
    A = np.where(act[..., None], a, 0.0).reshape(R, F, k - 1)
    B = np.where(act, b, np.inf).reshape(R, F)
    fac = geo.fac if isinstance(geo, _Geo3) else (active & ~geo.sub.empty.reshape(Q, F))
    fac = fac & ~geo.empty[:, None]
    if skip is not None:
        fac = fac.copy()
        fac[skip] = False
    sel = np.flatnonzero(fac.reshape(R))
    lmF = np.full(R, -np.inf)
    mF = np.zeros((R, k - 1))
    if sel.size:
        if k - 1 == 2:
            tm = _truncated_moments_2d(A[sel], B[sel])
        else:  # no slices for the facets: a far polytope's moments come from its own
            tm = truncated_moments_nd(A[sel], B[sel], np.full(sel.size, -np.inf))
        lmF[sel] = tm.log_mass
        mF[sel] = np.where(np.isfinite(tm.mean), tm.mean, 0.0)
    return lmF.reshape(Q, F), mF.reshape(Q, F, k - 1)


def _sliced_rows(ok, dist, log_weight, d):
    """(P,) which polytopes take their moments from :mod:`._polytope_tail`: those at distance
    ``>= TAIL_D`` whose weight (``log_weight``: the log of the weight the moments enter a sum
    with; all, if not given) times the divergence form's error there (absolute, whitened:
    ``_DIV_ERR D^4`` in ``d = 3``; in ``d = 4``, whose facets' moments carry their own loss,
    also ``_DIV_ERR_4 D^6``) is above ``_WEIGHTED_ERR``.  The slices cost ~0.01-2 s per
    polyhedron in ``d = 3`` (more in ``d = 4``); ordinary data have many far pairs of weight
    ``<= e^-32``, whose divergence-form moments move no sum."""
    far = ok & (dist >= TAIL_D)
    if log_weight is None:
        return far
    with np.errstate(all="ignore"):
        log_err = np.log(_DIV_ERR) + 4.0 * np.log(dist)
        if d == 4:
            log_err = np.maximum(log_err, np.log(_DIV_ERR_4) + 6.0 * np.log(dist))
        visible = log_weight + log_err > np.log(_WEIGHTED_ERR)
    return far & visible


def _near_moments_3d(n, c):
    """Log mass, mean, covariance and log-mass error of ``N(0, I_3)`` on 3-D polyhedra, and
    which were small (done by the cubature: relative-accurate at any size), without slices (the
    cross-sections of a far 4-D polytope, :mod:`._polytope_tail`: near the mean where their
    weight is; far ones are not sliced)."""
    parts = _moments_parts(n, c, np.full(n.shape[0], -np.inf))
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(5))


def _moments_block(n, c, log_weight=None):
    blk = _log_mass_block(n, c, moments=True, log_weight=log_weight, normalised=True)
    logm, err, nu, cu, active, geo = blk.log_mass, blk.error, blk.nu, blk.cu, blk.active, blk.geo
    small = blk.small
    done = np.zeros(logm.size, dtype=bool)  # by the cubature or sliced already: no facets
    is_small = np.zeros(logm.size, dtype=bool)
    if small is not None and small.rows.size:
        is_small[small.rows] = True
    done[blk.thin_rows] = True
    lmF, mF = _facet_moments(nu, cu, active, geo, np.flatnonzero(is_small | done))
    ok = np.isfinite(logm)
    with np.errstate(all="ignore"):
        lw = log_phi(np.where(active, cu, 0.0)) + lmF - np.where(ok, logm, 0.0)[:, None]
        w = np.where(active & ok[:, None] & np.isfinite(lmF), np.exp(lw), 0.0)
        gbar = np.where(
            (w > 0)[..., None],
            np.where(active, cu, 0.0)[..., None] * nu + np.einsum("pfkl,pfl->pfk", geo.U, mF),
            0.0,
        )
    mean, cov = divergence_moments(w, nu, gbar)
    if small is not None and small.rows.size:  # small polyhedra: from the cubature
        mean[small.rows], cov[small.rows] = small.mean, small.cov
    if blk.thin is not None and blk.thin_rows.size:  # thin ones sliced for their mass
        mean[blk.thin_rows], cov[blk.thin_rows] = blk.thin.mean, blk.thin.cov
    # far polytopes: the divergence form loses ~eps D^4 in the covariance; slice instead (also
    # the thin ones sliced for their mass: these slices are about the closest point)
    sliced = _sliced_rows(ok, geo.dist, log_weight, nu.shape[2]) & ~is_small
    beyond = sliced & (geo.dist > _MAX_MOMENT_D)  # (the caller names their rows)
    sliced &= ~beyond
    done |= is_small
    far = np.flatnonzero(sliced)
    if far.size:
        tmean, tcov, tok = tail_moments(
            nu[far], cu[far], active[far], geo.dist[far], near=_near_moments_3d
        )
        mean[far[tok]], cov[far[tok]] = tmean[tok], tcov[tok]
    # thin near polytopes (not small: those took the cubature; mean inside or not, bounded or
    # not): from slices across their thin direction; d = 4 also those whose mass terms cancel
    # (their covariance can look sound: a 1e-4 cube's came out 1e-2); only nearer than TAIL_D
    # (far ones: their gate, _sliced_rows)
    near = ok & ~sliced & ~done & (geo.dist < TAIL_D)
    force = None
    if nu.shape[2] == 4:
        force = np.where(np.isfinite(blk.ratio), blk.ratio, 0.0) > _THIN_RATIO
    rows = _thin_rows(near, mean, cov, err, log_weight, force=force)
    got, tm = _thin_moments(nu, cu, active, geo, rows)
    logm[got], mean[got], cov[got], err[got] = tm.log_mass, tm.mean, tm.cov, tm.error
    if nu.shape[2] == 4:  # (none expected) about their closest point, where there is one
        rest = np.setdiff1d(rows, got)
        rest = rest[geo.dist[rest] > 0]
        if rest.size:
            tmean, tcov, tok = tail_moments(
                nu[rest], cu[rest], active[rest], geo.dist[rest], near=_near_moments_3d
            )
            mean[rest[tok]], cov[rest[tok]] = tmean[tok], tcov[tok]
    mean[~ok | beyond] = np.nan
    cov[~ok | beyond] = np.nan
    return logm, mean, cov, err, is_small


def _thin_moments(nu, cu, active, geo, rows):
    """Slices of the thin polyhedra ``rows`` across their thin direction (:func:`_thin_axes`):
    the rows done and their results (a slab thinner than its vertices' rounding has nothing
    to slice and keeps its own).  Bounded ones in d = 3 (not needles near the mean) by
    :func:`._polytope_thin.thin_polyhedra` (fixed panels between the vertices: ~10 ms each at
    any distance), the others, nearer than ``TAIL_D``, by
    :func:`._polytope_tail.near_moments` (adaptive, any polytope: also needles, whose sections
    across the thin axis are thin again, the mean inside, d = 4, unbounded there; but 2 s
    for a section 50 sd out in the plane)."""
    k = nu.shape[2]
    S = rows.size
    lm, err = np.full(S, -np.inf), np.full(S, np.inf)
    mean, cov = np.full((S, k), np.nan), np.full((S, k, k), np.nan)
    if S:
        ax = _thin_axes(nu, cu, active, geo, rows)
        off = np.where(active[rows], cu[rows], np.inf)
        for sel, fixed in ((np.flatnonzero(ax.fixed), True), (np.flatnonzero(~ax.fixed), False)):
            sel = sel[np.isfinite(ax.cond[sel])]
            if sel.size == 0:
                continue
            r = rows[sel]
            if fixed:
                res = thin_polyhedra(nu[r], off[sel], ax.e[sel], ax.knots[sel])
            else:
                res = near_moments(
                    nu[r], off[sel], ax.e[sel], ax.shift[sel], ax.knots[sel], _near_moments_3d
                )
            lm[sel], mean[sel], cov[sel], err[sel] = res
            err[sel] += ax.cond[sel]
    tm = TruncatedMoments(lm, mean, cov, err)
    take = np.isfinite(tm.log_mass) & np.isfinite(tm.error)
    take &= np.isfinite(tm.mean).all(axis=1) & np.isfinite(tm.cov).all(axis=(1, 2))
    return rows[take], TruncatedMoments(*(v[take] for v in tm))


class _ThinAxes(NamedTuple):
    """:func:`_thin_axes`' result, per polyhedron (S,)."""

    e: np.ndarray  # (S, k) unit slicing directions
    shift: np.ndarray  # (S,) P in e . u >= shift >= 0 (near_moments only)
    knots: np.ndarray  # (S, J) the vertices' e . u, distinct, sorted (nan unused)
    cond: np.ndarray  # (S,) the input's conditioning (inf: not sliced)
    fixed: np.ndarray  # (S,) bool: by thin_polyhedra


def _thin_axes(nu, cu, active, geo, rows) -> _ThinAxes:
    """Slicing directions ``e`` of the polyhedra ``rows``, where along them they start
    (``shift``: ``P`` lies in ``e . u >= shift >= 0``, ``e`` flipped where needed; ``0``
    where ``P`` reaches ``e . u = 0``), their vertices' ``e . u`` (``knots``: the slices' panel
    ends), the input's conditioning there (``cond``, a log-mass error) and which are sliced
    by fixed panels (``fixed``, see :func:`_thin_moments`).

    Bounded ones: the smallest principal axis of their vertices (the divergence covariance,
    whose error is the reason for slicing, can be far off it; a needle's largest,
    :func:`_thin_direction`; for the adaptive slices a row's normal within ``_SNAP`` of it)
    and ``_THIN_COND eps |P| / width``, ``width`` along the smallest (the vertices, which end
    the panels, are rounded at ``eps |P|``; the mass is ~ the width; ``inf`` below the
    rounding: nothing to slice).  Unbounded ones: the normal of their most nearly opposite
    pair of rows (a slab's or a needle's; any direction gives the same integral, this one
    short ranges and wide sections), no shift (their extent along it is not known: those
    farther than ``_NEAR_SLICE`` are left alone, and in d = 3 those with no opposite pair) and
    ``_THIN_COND eps max |c| / (c_i + c_j)``.  Adaptive ones farther than ``TAIL_D`` are left
    alone (``cond = inf``)."""
    k = nu.shape[2]
    S = rows.size
    if k == 3:
        P0, P1, eok = _edge_points(nu, cu, geo, rows)
    else:
        P0, P1, eok = _edge_points_4d(nu, cu, geo, rows, _face_edges_4d(geo))
    P0, P1, eok = P0.reshape(S, -1, 1, k), P1.reshape(S, -1, 1, k), eok.reshape(S, -1, 1)
    fin = np.isfinite(P0) & np.isfinite(P1)
    bounded = eok.any(axis=(1, 2)) & np.all(~eok[..., None] | fin, axis=(1, 2, 3))
    dist = geo.dist[rows]
    e = np.empty((S, k))
    shift = np.zeros(S)
    knots = np.full((S, P0.shape[1]), np.nan)
    cond = np.empty(S)
    fixed = np.zeros(S, dtype=bool)
    b = np.flatnonzero(bounded)
    if b.size:
        P, ok = P0[b], eok[b]
        along, thin, needle = _thin_direction(P, ok)
        fixed[b] = (k == 3) & ~(needle & (dist[b] < TAIL_D))
        e[b] = np.where(fixed[b, None], thin, along)
        # (adaptive slices) a row's normal within _SNAP of the axis is taken instead: the
        # vertices' axis is tilted by ~eps |P| / width, and a facet tilted that much sweeps
        # through the sections in a window that narrow (a box 8e-5 thin lost 1e-9 of its mass)
        n, act = nu[rows[b]], active[rows[b]]
        dots = np.where(act, np.einsum("sfk,sk->sf", n, e[b]), 0.0)
        best = np.argmax(np.abs(dots), axis=1)
        top = dots[np.arange(b.size), best]
        snap = (np.abs(top) > 1.0 - _SNAP) & ~fixed[b]
        e[b] = np.where(snap[:, None], np.sign(top)[:, None] * n[np.arange(b.size), best], e[b])
        lo, hi = _extent(P, ok, e[b])
        flip = (hi < 0.0) & ~fixed[b]  # (P in e . u <= hi < 0: slice along -e from -hi)
        e[b] = np.where(flip[:, None], -e[b], e[b])
        shift[b] = np.where(fixed[b], 0.0, np.where(flip, -hi, np.maximum(lo, 0.0)))
        x = np.einsum("sfjk,sk->sfj", P, e[b]).reshape(b.size, -1)
        knots[b, : x.shape[1]] = np.where(ok.reshape(b.size, -1), x, np.nan)
        lo, hi = _extent(P, ok, thin)
        with np.errstate(all="ignore"):
            size = np.max(np.where(ok, np.sqrt(np.sum(P * P, axis=-1)), 0.0), axis=(1, 2))
            width = hi - lo
            cond[b] = _THIN_COND * EPS * size / width
            cond[b] = np.where(fixed[b] | (width > 64.0 * EPS * size), cond[b], np.inf)
    # unbounded: only near the mean; in d = 3 only those with an opposite pair (a slab's: the
    # cones of one-layer decoders, thin only in their corner, are many and their divergence
    # form agrees with the slices to 1e-6 of their smallest variance; sliced, they cost
    # 0.2-0.4 s each, a d = 3 [4] E-step 11.5 s instead of 1.3 s)
    u = np.flatnonzero(~bounded)
    e[u], cond[u] = np.eye(k)[0], np.inf
    u = u[dist[u] < _NEAR_SLICE]
    if u.size:
        n, act = nu[rows[u]], active[rows[u]]
        c = np.where(act, cu[rows[u]], 0.0)
        dots = np.einsum("sik,sjk->sij", n, n)
        pair = act[:, :, None] & act[:, None, :] & ~np.eye(n.shape[1], dtype=bool)
        gap = c[:, :, None] + c[:, None, :]
        # the narrowest of the opposite pairs (a half-open slab has two), else the most
        # nearly opposite one
        score = np.where(pair & (dots <= _OPPOSITE - 1.0), gap - np.abs(gap).max() - 1.0, dots)
        flat = np.argmin(np.where(pair, score, np.inf).reshape(u.size, -1), axis=1)
        i, j = np.divmod(flat, n.shape[1])
        idx = np.arange(u.size)
        e[u] = np.where(pair.any(axis=(1, 2))[:, None], n[idx, i], np.eye(k)[0])
        with np.errstate(all="ignore"):
            width = gap[idx, i, j]
            big = np.max(np.abs(c), axis=1)
            cond[u] = np.where(width > 0, _THIN_COND * EPS * (1.0 + big) / width, 0.0)
        if k == 3:
            opp = pair[idx, i, j] & (dots[idx, i, j] <= _OPPOSITE - 1.0)
            cond[u] = np.where(opp, cond[u], np.inf)
    cond = np.where(fixed | (dist < TAIL_D), cond, np.inf)
    return _ThinAxes(e, shift, _distinct(knots), cond, fixed)


def _distinct(vx):
    """(S, J) sorted coordinates with repeats (within ``64 eps`` of their size: one vertex
    reached from several facets) made ``nan``, and the columns that hold nothing dropped."""
    xs = np.sort(np.where(np.isnan(vx), np.inf, vx), axis=1)
    with np.errstate(invalid="ignore"):
        span = np.max(np.where(np.isfinite(xs), np.abs(xs), 0.0), axis=1, keepdims=True)
        rep = np.zeros_like(xs, dtype=bool)
        rep[:, 1:] = ~(xs[:, 1:] - xs[:, :-1] > 64.0 * EPS * span)
    xs = np.where(rep | ~np.isfinite(xs), np.inf, xs)
    xs = np.sort(xs, axis=1)
    width = max(int(np.isfinite(xs).sum(axis=1).max()), 2)
    return np.where(np.isfinite(xs[:, :width]), xs[:, :width], np.nan)


def _extent(P, ok, e):
    """(S,), (S,) the smallest and largest ``e . u`` over the vertices ``P`` (S, F, J, k)."""
    x = np.einsum("sfjk,sk->sfj", P, e).reshape(P.shape[0], -1)
    real = ok.reshape(P.shape[0], -1)
    return np.min(np.where(real, x, np.inf), axis=1), np.max(np.where(real, x, -np.inf), axis=1)


def _thin_rows(near, mean, cov, err, log_weight, force=None):
    """The ``near`` polyhedra (not far, not small) that are thin (smallest variance below
    ``_THIN_VAR``) and, with ``log_weight``, whose weight times the divergence form's covariance
    error there can show (above ``_WEIGHTED_ERR``; that error, measured on slabs, needles and
    cubes ``w`` wide near the mean, is ~1e-13 / w^3.4 of their own variance ``w^2`` in d = 3;
    in d = 4 below ``1e-2 eps / var^2`` (rotated cubes 0.1 to 1e-3 wide: 2-40x below it); and
    at least ``16 (error + eps) (1 + |mean|^2)``). ``force`` (P,), optional: rows taken as
    thin whatever their variance (whose mass terms cancel)."""
    rows = np.flatnonzero(near)
    if rows.size == 0:
        return rows
    d = cov.shape[-1]
    with np.errstate(all="ignore"):
        lam = np.linalg.eigvalsh(np.where(np.isfinite(cov[rows]), cov[rows], np.eye(d)))
        keep = lam[:, 0] < _THIN_VAR
        if force is not None:
            keep |= force[rows]
        if log_weight is not None:
            loss = 16.0 * (err[rows] + EPS) * (1.0 + np.sum(mean[rows] ** 2, axis=1))
            small = np.maximum(lam[:, 0], 1e-300)
            if d == 3:
                div = _THIN_ERR * small**-0.7
            else:  # (a covariance with a negative variance: off by about that much)
                div = np.where(lam[:, 0] > 0, 1e-2 * EPS * small**-2.0, 1.0 - lam[:, 0])
            bound = loss + div
            if force is not None:  # their computed covariance tells nothing: an O(1) error
                bound = np.where(force[rows], np.maximum(bound, 1.0), bound)
            keep &= log_weight[rows] + np.log(bound) > np.log(_WEIGHTED_ERR)
    return rows[keep]


def _thin_direction(P, ok):
    """(S, k) the slicing direction of thin polytopes with vertices ``P`` (S, F, J, k) (``ok``:
    real), (S, k) their smallest principal axis and (S,) which are needles: the slices go
    across that axis, or their largest where the second smallest is thin
    too (``_NEEDLE``: a needle, whose sections across its thinnest axis would be thin strips,
    sliced again, 200x slower; across its longest they are small, the kernels' cubature)."""
    cnt = ok.sum(axis=(1, 2))[:, None]
    g = np.where(ok[..., None], P, 0.0).sum(axis=(1, 2)) / cnt
    d = np.where(ok[..., None], P - g[:, None, None, :], 0.0)
    lam, vec = np.linalg.eigh(np.einsum("sfjk,sfjl->skl", d, d))
    needle = lam[:, 1] < _NEEDLE * lam[:, -1]
    return np.where(needle[:, None], vec[:, :, -1], vec[:, :, 0]), vec[:, :, 0], needle


def _moments_parts(n, c, log_weight):
    """:func:`_moments_block` over blocks of polyhedra: a list of its results."""
    P, d = n.shape[0], n.shape[2]
    ch = _CHUNK if d == 3 else _CHUNK_ND
    lw = None if log_weight is None else np.broadcast_to(np.asarray(log_weight, float), (P,))
    return [
        _moments_block(n[i : i + ch], c[i : i + ch], None if lw is None else lw[i : i + ch])
        for i in range(0, P, ch)
    ]


def truncated_moments_nd(
    normals: np.ndarray, offsets: np.ndarray, log_weight: np.ndarray | None = None
) -> TruncatedMoments:
    """Log mass, mean ``(P, d)`` and covariance ``(P, d, d)`` of ``N(0, I_d)`` on polyhedra.

    See :func:`log_mass_nd` for the inputs.  Moments by the divergence theorem in the stable
    weight form (module docstring); ``error`` is the error estimate of ``log_mass``.
    ``log_weight`` (P,), optional: the log of the weight (<= 0) each polyhedron's moments enter
    a mixture with; far polytopes whose weight hides the divergence form's error keep it
    instead of the slower slices (:func:`_sliced_rows`).  Without it all are sliced.
    """
    n, c = _check(normals, offsets)
    P = n.shape[0]
    d = n.shape[2]
    if P == 0:
        return TruncatedMoments(np.zeros(0), np.zeros((0, d)), np.zeros((0, d, d)), np.zeros(0))
    parts = _moments_parts(n, c, log_weight)
    return TruncatedMoments(*(np.concatenate([p[j] for p in parts]) for j in range(4)))
