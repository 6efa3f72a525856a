"""Moments of ``N(0, I_k)`` on polytopes far from the mean, by slicing (``k = 3, 4``).

The divergence form of :mod:`._polytope` gives the covariance as ``I - sum_F w_F n_F (gbar_F -
E u)^T`` with weights ``w_F ~ D`` for a polyhedron at distance ``D`` from the mean: the radial
variance ``~ 1 / D^2`` is the difference of ``O(1)`` terms, each as accurate as the log masses
(absolute error ``~ eps D^2`` and the quadrature's), so the covariance loses ``~ eps D^4``
relative (at ``D = 1e4`` entries ~1e8 posterior variances off).  Here the moments are sums of
positive terms about the polyhedron's own location:

With ``p`` the closest point of ``P`` to the mean (``D = |p|``, ``n* = p / D``) and ``V`` an
orthonormal basis of ``n*^perp``, write ``u = p + x n* + V y``.  Then ``P`` lies in ``x >= 0``
and, exactly (``p . V y = 0``), ``phi_3(u) = phi(D) phi(x) e^{-D x} phi_2(y)``.  The
cross-section of ``P`` at ``x`` is the polygon ``{y : (V^T n_i) . y <= d_i - (n_i . n*) x}``
(``d_i = c_i - n_i . p >= 0``, ``0`` on the rows through ``p``); it lies *near* the mean of
``phi_2`` (it contains or nearly touches ``y = 0``, where the weight is), so its log mass
``l(x)``, mean ``m(x)`` and covariance ``C(x)`` come from a near kernel, and every moment is a
1-D integral over ``x`` of the positive weight ``f(x) = phi(x) e^{-D x + l(x)}``::

    E[x] = int x f / int f,   E[y] = int m f / int f,   Var x = int (x - E x)^2 f / int f,
    Cov[y] = int (C + (m - E y)(m - E y)^T) f / int f,   Cov[x, y] likewise,

summed about the accepted nodes' own weighted means (no ``E[x^2] - E[x]^2``); ``x`` is measured
from ``p``, so the radial variance keeps its own relative accuracy.  Only ``d_i`` carries the
input's conditioning (``eps |c_i|`` absolute: the floor of the problem itself).

The ``x``-integral (:func:`_sliced`) uses adaptive Gauss-Legendre panels (16 nodes, checked
against 10 on every component, in units of pilot means and spreads) on ``[0, x_max]``
(``D x + x^2 / 2 = 60``), split at the vertices' ``x`` (where the cross-sections change shape),
at ``2^j / D`` (the decay of ``e^{-D x}``; a cross-section that grows from a vertex is a
polynomial in ``x`` there) and, for rows nearly parallel to ``n*`` (their cross-section line
sweeps through the bulk within a narrow window), inside that window.

Cross-sections (:func:`_polygon_kernel`): the 2-D kernel where they are wide; where they are thin
(at an edge through ``p``: a strip of width ``~ x``) or tiny (at a vertex) its log mass loses
``~ eps / width`` relative, so they are sliced once more, along their thinnest direction, by the
same quadrature (``D = 0``, ``|z| <= sqrt(120)``) with the exact interval moments on the slices.

``k = 4`` is the same with 3-D cross-sections (:func:`_polyhedron_kernel`): the 3-D kernel of
:mod:`._polytope` (passed in as ``near``) where they are wide or small (its cubature, exact at
any size: tiny sections at a vertex of ``P`` are not sliced), slices with
:func:`_polygon_kernel` on them where they are thin.  A section thin in two directions and not
small (a needle at an edge of ``P``) is sliced along its longest direction,
into small polygons, which the 2-D kernel integrates by its cubature (kept: relative-accurate at
any size); one thin in one direction (a slab at a ridge) along its thinnest, into wide ones.

Thin polytopes *near* the mean (:func:`near_moments`, for :mod:`._polytope`): the same
slices with ``D = 0`` (no closest-point frame exists with the mean inside), across the thin
direction ``e`` over ``|z| <= x_max(0)``, or, for one lying in ``e . u >= s > 0``, from ``s`` on
(``phi(s + x) = phi(x) e^{-s x} e^{-s^2/2}``: ``D = s``); the caller's vertices are panel ends
too (a needle's rows meet at angles below :func:`_vertex_z`'s cut).  The sections' means are
known only to ``~eps |y|`` (their rows' rounding): panels are accepted once the 16- and
10-node rules agree to that, in units of the sections' spread (a needle 4 sd out, 1e-5 thin:
its panels had been halved 19 times, 67 s; now 0.05 s).

Cost: ~0.01-2 s per far polyhedron (218 from posteriors 10-1e4 data scales out: 0.2 s on
average) (a loop over blocks of them; far rows are rare); ``k = 4``: 0.06-9 s per polytope
(rotated boxes 1e2-1e4 out, closest point a facet, ridge, edge or vertex), 0.1-4 s for random
cones, but 145 s for one whose thin slab sections (closest point a ridge, 1e3 out) had thin
polygon slices again (~60,000 of them sliced into intervals).
"""

from __future__ import annotations

import itertools
import logging
from functools import cache, partial

import numpy as np

from ._interval import _interval_stats
from ._polygon import _SMALL, _truncated_moments_2d, _vertices, polygon_edges
from ._rules import EPS, LOG_SQRT_2PI, gauss_legendre_01, householder_basis, normalize_rows

__all__ = ["TAIL_D", "near_moments", "tail_moments", "thin_slices"]

_log = logging.getLogger(__name__)

#: Polyhedra at this distance from the mean (or more) take their moments from the slices.
#: At ``D = 8`` the divergence form is still good to ~1e-11 (its loss grows like ``D^4``).
TAIL_D = 8.0

_GA_X, _GA_W = gauss_legendre_01(16)  # accepted rule
_GB_X, _GB_W = gauss_legendre_01(10)  # check rule
_NODES = np.concatenate([_GA_X, _GB_X])
_TOL = 1e-11  # panel acceptance: every scaled component, relative to the panel's weight
_PTOL = 1e-13  # ... or relative to the whole weight (spread over the range by length)
# ... or, whatever its length, 1e-16 of the whole weight: a panel that holds next to nothing
# (at a kink a vertex's rounding left inside it) is not refined to its own relative _TOL (4x
# fewer slices in the thin cross-sections of a polyhedron 30 sd out)
_ATOL = 1e-16
_Y_NOISE = 16.0  # the sections' means' rounding, in eps (1 + |y|) (see _sliced)
_MAX_ROUNDS = 40
_MAX_PANELS = 20_000
_EXPO = 60.0  # the range ends where D x + x^2 / 2 = _EXPO (weight e^-60 of its start)
_PAR = 1e-12  # rows whose cross-section normal is shorter than this only bound x
_STEEP = 0.2  # rows with a cross-section normal shorter than this get sweep splits
_SWEEP = np.array([-8.0, -3.0, -1.0, 0.0, 1.0, 3.0, 8.0])
_FIXED = np.array([0.5, 1.0, 2.0, 4.0, 7.0])  # O(1) splits (the Gaussian's own scale)
_DECAY = 2.0 ** np.arange(-2, 14)  # splits at lo + _DECAY / D
# a candidate closest point is feasible when no row is violated by more than this times 1 + D
_FEAS = 1e-9
_MERGE = 64.0 * EPS  # panel ends closer than this (relative) are merged
# 2-D cross-sections whose kernel covariance may be off by more than this relative to their
# smallest variance are sliced again
_WIDE_TOL = 1e-9
# 3-D cross-sections (of far 4-D polytopes): the divergence form's covariance error, relative to
# the smallest variance, measured on rotated slabs, needles and cubes of width w near the mean,
# is ~1e-13 / w^3.4 (6e-11 at w = 0.1, 1e-7 at 0.01; the log-mass error estimate overstates its
# error ~100x there): sections with a variance below _THIN_VAR_3 (w ~ 0.1) or a loss above
# _WIDE_TOL_3 of it are sliced
_WIDE_TOL_3 = 1e-7
_THIN_VAR_3 = 1e-3
_THIN_BLOCK = 4096  # thin cross-sections sliced together (memory)
_NEAR = 6.0  # thin sections whose mean is farther than this from y = 0 are not sliced again
_SNAP = 1e-6  # thin_slices: a row's normal this close to the thin axis is taken instead
_BIG = 600.0  # a node this far (log) above the first round's largest gives the item up
_BLOCK = 64  # polyhedra per block (a block evaluates ~1e3 cross-sections each)
_BLOCK_4 = 8  # 4-D polytopes per block (their 3-D cross-sections are sliced again)


@cache
def _subsets(F: int, k: int) -> tuple[np.ndarray, ...]:
    """Index arrays of all row subsets of sizes ``1..k`` of ``F`` rows, one array per size."""
    return tuple(
        np.array(list(itertools.combinations(range(F), m)), dtype=np.intp).reshape(-1, m)
        for m in range(1, min(k, F) + 1)
    )


def _closest_points(nu, cu, active, dist):
    """Closest point ``p`` (Q, k) of each polyhedron, the rows of its active set (Q, F), and
    ``ok`` (Q,): False where no active set of at most ``k`` rows gives a feasible point within
    ``1e-6 (1 + D)`` of the known ``dist``."""
    Q, F, k = nu.shape
    best = np.full(Q, np.inf)
    P = np.zeros((Q, k))
    S = np.zeros((Q, F), dtype=bool)
    # rows whose plane passes within the distance of the mean (others cannot touch p)
    cand = active & (cu <= dist[:, None] * (1.0 + 1e-9) + 1e-9)
    scale = 1.0 + dist
    for sub in _subsets(F, k):
        use = np.all(cand[:, sub], axis=2)  # (Q, nS)
        if not use.any():
            continue
        qi, si = np.nonzero(use)
        rows = sub[si]  # (M, m)
        N = nu[qi[:, None], rows]  # (M, m, k)
        c = cu[qi[:, None], rows]  # (M, m)
        G = N @ np.swapaxes(N, 1, 2)
        good = np.linalg.det(G) > 1e-20
        if not good.any():
            continue
        qi, rows, N, c, G = qi[good], rows[good], N[good], c[good], G[good]
        lam = np.linalg.solve(G, c[..., None])[..., 0]
        p = np.einsum("mjk,mj->mk", N, lam)
        viol = np.max(np.einsum("mfk,mk->mf", nu[qi], p) - cu[qi], axis=1, initial=-np.inf)
        nrm2 = np.where(viol <= _FEAS * scale[qi], np.sum(p * p, axis=1), np.inf)
        # the least-norm feasible point wins (ties: the smaller set, enumerated first)
        low = np.full(Q, np.inf)
        np.minimum.at(low, qi, nrm2)
        win = np.isfinite(nrm2) & (nrm2 == low[qi]) & (nrm2 < best[qi] * (1.0 - 1e-13))
        j = np.flatnonzero(win)
        j = j[np.unique(qi[j], return_index=True)[1]]  # one winner per polyhedron
        q = qi[j]
        best[q] = nrm2[j]
        P[q] = p[j]
        S[q] = False
        S[q[:, None], rows[j]] = True
    D = np.sqrt(best)
    ok = np.isfinite(best) & (np.abs(D - dist) <= 1e-6 * scale)
    return P, S, ok


def _vertex_z(a, B, d, act, lo, hi):
    """(M, nS) first coordinates of the vertices of ``{(z, y) : a z + B y <= d}`` (every set of
    ``k`` rows meeting in a feasible point) inside ``(lo, hi)``; ``+inf`` elsewhere."""
    M, F, k1 = B.shape
    k = k1 + 1
    if F < k:
        return np.full((M, 1), np.inf)
    A = np.concatenate([a[..., None], B], axis=2)  # (M, F, k)
    sub = _subsets(F, k)[k - 1]
    As = A[:, sub]  # (M, nS, k, k)
    dz = np.where(act, d, 0.0)
    okr = np.all(act[:, sub], axis=2)
    with np.errstate(invalid="ignore", over="ignore"):
        okr &= np.abs(np.linalg.det(As)) > 1e-12
        As = np.where(okr[..., None, None], As, np.eye(k))
        v = np.linalg.solve(As, np.where(okr[..., None], dz[:, sub], 0.0)[..., None])[..., 0]
        slack = dz[:, None, :] - np.einsum("mfk,msk->msf", A, v)
        tol = 1e-9 * (1.0 + np.abs(dz))[:, None, :]
        feas = np.all(~act[:, None, :] | (slack >= -tol), axis=2)
    z = v[..., 0]
    keep = okr & feas & (z > lo[:, None]) & (z < hi[:, None])
    return np.where(keep, z, np.inf)


def _interval_kernel(nrm, off):
    """``N(0, 1)`` on the intervals ``{y : n_i y <= c_i}`` (nrm (M, F, 1)): exact moments."""
    n = nrm[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        lim = off / n
    hi = np.where(n > 0, lim, np.inf).min(axis=1)
    lo = np.where(n < 0, lim, -np.inf).max(axis=1)
    bad = np.any((n == 0) & (off < 0), axis=1)
    lm, mu, var = _interval_stats(np.where(bad, 0.0, lo), np.where(bad, 0.0, hi))
    err = 8.0 * EPS * (1.0 + np.abs(lm))
    return lm, mu[:, None], var[:, None, None], np.where(np.isfinite(lm), err, np.inf)


def _polygon_kernel(nrm, off):
    """Log mass, mean, covariance and log-mass error of ``N(0, I_2)`` on the cross-sections:
    the 2-D kernel where they are wide, slices along the thinnest direction (exact intervals on
    the slices) where they are thin (:func:`_thin_sliced`)."""
    tm = _truncated_moments_2d(nrm, off)
    return _thin_sliced(
        nrm,
        off,
        (tm.log_mass, tm.mean, tm.cov, tm.error),
        _interval_kernel,
        lambda i: _small_polygons(nrm[i], off[i]),
    )


def _small_polygons(nrm, off):
    """(M,) the sections the 2-D kernel integrates by its cubature (bounded, spread ``R (|g| +
    R / 2) <= 1``): relative-accurate at any size, so never sliced again (slices of a tiny one
    lost 1e-8 of its sd in the mean)."""
    nu, cu, active, _ = normalize_rows(nrm, off, np.sqrt(np.sum(nrm * nrm, axis=2)))
    t0, t1, nonempty, _ = polygon_edges(nu, cu, active)
    v = _vertices(nu, cu, t0, t1, nonempty)
    with np.errstate(all="ignore"):
        spread = v.radius * (np.hypot(v.g[:, 0], v.g[:, 1]) + 0.5 * v.radius)
    return v.bounded & (spread <= _SMALL)


def _polyhedron_kernel(nrm, off, near):
    """:func:`_polygon_kernel` one dimension up: ``N(0, I_3)`` on 3-D cross-sections (of a far
    4-D polytope), ``near(nrm, off) -> (log mass, mean, cov, error, small)`` (the 3-D kernel
    without slices, which :mod:`._polytope` passes in; ``small``: the sections its cubature
    did, relative-accurate at any size and never sliced) where they are wide or small, slices
    with :func:`_polygon_kernel` where they are thin (the divergence form's covariance is a
    difference of ``O(1 / width)`` terms there: a slab 1e-4 wide had its covariance 0.08 of
    its own variance off)."""
    lm, mean, cov, err, small = near(nrm, off)
    return _thin_sliced(nrm, off, (lm, mean, cov, err), _polygon_kernel, lambda i: small[i])


def _thin_sliced(nrm, off, wide, sub, trusted=None):
    """The near kernel's result ``wide`` (log mass, mean, cov, error) of ``N(0, I_m)`` on the
    sections ``{y : nrm_i . y <= off_i}``, with the thin ones replaced by slices along their
    thinnest direction (``sub``: the ``(m - 1)``-dimensional kernel on the slices; ``m = 3``
    sections thin in two directions along their longest).  ``trusted(i)``, optional: which of
    the sections ``i`` keep their ``wide`` result whatever its covariance (the small ones the
    near kernel did by its cubature).

    A section is thin where the kernel's covariance error, ``~ (error + eps) (1 + |mean|^2)``
    absolute, is not small against its smallest variance (thin sections at an edge, tiny ones
    at a vertex: the kernel's log mass loses ``~ eps / width`` there); sections whose mean is
    farther than ``_NEAR`` from ``y = 0`` keep the kernel's result (the slices span only
    ``|z| <= x_max(0)``, ~11, and such a section's mass, ``<= e^-18`` of one at the mean,
    hides its error)."""
    lm, mean, cov, err = wide
    m = nrm.shape[2]
    fin = np.isfinite(lm) & np.isfinite(mean).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    tol, floor = (_WIDE_TOL, 0.0) if m == 2 else (_WIDE_TOL_3, _THIN_VAR_3)
    with np.errstate(invalid="ignore"):
        lam, vec = np.linalg.eigh(np.where(fin[:, None, None], cov, np.eye(m)))
        loss = 16.0 * (err + EPS) * (1.0 + np.sum(mean * mean, axis=1))
        thin = ~(loss <= tol * lam[:, 0]) | ~(lam[:, 0] >= floor)
    thin &= ~(lm == -np.inf) | ~np.isfinite(err)  # empty sections stay empty
    with np.errstate(invalid="ignore"):
        thin &= ~fin | (np.sum(mean * mean, axis=1) <= _NEAR**2)
    if trusted is not None and thin.any():
        thin[thin] &= ~trusted(np.flatnonzero(thin))
    if not thin.any():
        return lm, mean, cov, err
    i = np.flatnonzero(thin)
    # frame: the thinnest direction first (any axis where the near kernel gave nothing); a 3-D
    # section thin in two directions (a needle at an edge, a tiny one at a vertex) is sliced
    # along its longest instead, into small polygons (the 2-D kernel's cubature, not slices)
    vec = vec[i]
    if m == 3:
        with np.errstate(invalid="ignore"):
            needle = ~(loss[i] <= tol * lam[i, 1]) | ~(lam[i, 1] >= floor)
        vec = np.where(needle[:, None, None], vec[:, :, ::-1], vec)
    R = np.where(fin[i, None, None], vec, np.eye(m))
    slm, smean, scov, serr = _slices_along(nrm[i], off[i], R, sub, _THIN_BLOCK)
    # where the slices gave nothing (no finite result) the kernel's own result stands
    take = ~fin[i] | (
        np.isfinite(slm) & np.isfinite(smean).all(axis=1) & np.isfinite(scov).all(axis=(1, 2))
    )
    i = i[take]
    lm, mean, cov, err = lm.copy(), mean.copy(), cov.copy(), err.copy()
    lm[i], mean[i], cov[i], err[i] = slm[take], smean[take], scov[take], serr[take]
    return lm, mean, cov, err


def thin_slices(nrm, off, cov):
    """Log mass, mean, covariance and log-mass error of ``N(0, I_2)`` on the thin polygons
    ``{y : nrm_i . y <= off_i}`` (``nrm`` (M, F, 2)) from slices across their thinnest
    direction (the smallest principal axis of ``cov`` (M, 2, 2), their kernel covariance, or
    a row's normal within ``_SNAP`` of it: a facet tilted by the axis' rounding sweeps
    through the slices in a window that narrow) with the exact interval moments on the slices
    (:mod:`._polygon_thin`); ``-inf`` / NaN where nothing was integrated."""
    _, vec = np.linalg.eigh(cov)
    e = vec[:, :, 0]
    norm = np.sqrt(np.sum(nrm * nrm, axis=2))
    act = np.isfinite(off) & (norm > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dots = np.where(act, np.einsum("mfk,mk->mf", nrm, e) / norm, 0.0)
    best = np.argmax(np.abs(dots), axis=1)
    idx = np.arange(e.shape[0])
    top = dots[idx, best]
    snap = np.abs(top) > 1.0 - _SNAP
    e = np.where(snap[:, None], np.sign(top)[:, None] * nrm[idx, best] / norm[idx, best, None], e)
    R = np.stack([e, np.stack([-e[:, 1], e[:, 0]], axis=1)], axis=2)
    lm, mean, c, err = _slices_along(nrm, off, R, _interval_kernel, _THIN_BLOCK)
    return lm, mean, 0.5 * (c + np.swapaxes(c, 1, 2)), err


def _slices_along(nrm, off, R, sub, block, shift=None, knots=None):
    """Log mass, mean, covariance and log-mass error (``-inf`` / NaN where nothing was
    integrated) of ``N(0, I_m)`` on ``{y : nrm_i . y <= off_i}`` (``nrm`` (M, F, m), ``off``
    (M, F), ``+inf`` on unused rows) from slices across ``R[:, :, 0]`` (``R`` (M, m, m)
    orthonormal columns), ``sub`` the ``(m - 1)``-dimensional kernel on the slices, ``block``
    items at a time; in the coordinates of ``nrm``.  :func:`_sliced` with ``D = 0`` over ``|z|
    <= x_max(0)``, or, with ``shift`` (M,) ``>= 0`` (the polyhedra lie in ``z >= shift``),
    from ``z = shift`` on: ``phi(shift + x) = phi(x) e^{-shift x} e^{-shift^2 / 2}``, the
    weight :func:`_sliced` integrates with ``D = shift`` over ``x >= 0``; ``knots`` (M, J),
    optional: more panel ends, in ``z``."""
    M = nrm.shape[0]
    nr = np.einsum("mfk,mkl->mfl", nrm, R)
    act = np.isfinite(off)
    D = np.zeros(M) if shift is None else shift
    lo = np.where(D > 0, 0.0, -_zmax(0.0))
    with np.errstate(invalid="ignore"):
        d = np.where(act, off - nr[:, :, 0] * D[:, None], off)
    parts = [
        _sliced(
            nr[s : s + block, :, 0],
            nr[s : s + block, :, 1:],
            d[s : s + block],
            act[s : s + block],
            D[s : s + block],
            lo[s : s + block],
            sub,
            None if knots is None else knots[s : s + block] - D[s : s + block, None],
        )
        for s in range(0, M, block)
    ]
    slm, sm, sc, serr = (np.concatenate([p[t] for p in parts]) for t in range(4))
    slm = slm - 0.5 * D * D
    sm[:, 0] += D
    mean = np.einsum("mkl,ml->mk", R, sm)
    return slm, mean, R @ sc @ np.swapaxes(R, 1, 2), serr


def near_moments(nu, off, e, shift=None, knots=None, near=None):
    """Log mass, mean, covariance and log-mass error of ``N(0, I_k)`` (``k = 3, 4``) on
    polytopes near the mean, bounded or not, from slices across the direction ``e``: the
    thin ones, whose divergence-form moments and edge-formula masses cancel (a 4-D needle
    1e-4 thin through the mean had its covariance 1e3 of its own variance off; an unbounded
    3-D one 1e-5 thin, 2e6).  The slices' weight is ``phi(z)`` (``D = 0``: the closest-point
    frame of :func:`tail_moments` does not exist at the mean); across the thin direction the
    range is short and the cross-sections wide, and where they are thin too (a needle) the
    cross-section kernel slices them again (:func:`_polygon_kernel`,
    :func:`_polyhedron_kernel`).

    Parameters
    ----------
    nu : ndarray, shape (S, F, k)
        Row normals.
    off : ndarray, shape (S, F)
        Offsets (``+inf`` on unused rows).
    e : ndarray, shape (S, k)
        Unit slicing directions (the thin ones; any direction gives the same integral).
    shift : ndarray, shape (S,), optional
        ``>= 0``: the polytopes lie in ``e . u >= shift`` (the slices start there, so a thin
        polytope away from the mean along ``e`` is not cut off by the range ``|z| <= x_max(0)``,
        ~11); without it ``0`` (the polytope within that range).
    knots : ndarray, shape (S, J), optional
        The vertices' ``e . u`` (``nan``: none): panel ends (:func:`_sliced`).
    near : callable, optional
        ``k = 4``: the 3-D near kernel, as for :func:`tail_moments`.

    Returns
    -------
    log_mass, mean (S, k), cov (S, k, k), error : ``-inf`` / NaN / ``inf`` where nothing was
        integrated (the caller keeps its own).
    """
    sub, block = _section_kernel(nu.shape[2], near, "near_moments")
    R = np.concatenate([e[:, :, None], householder_basis(e)], axis=2)
    lm, mean, cov, err = _slices_along(nu, off, R, sub, block, shift, knots)
    return lm, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)), err


def _zmax(D):
    """``x_max`` with ``D x + x^2 / 2 = _EXPO`` (arrays or floats)."""
    return 2.0 * _EXPO / (D + np.sqrt(D * D + 2.0 * _EXPO))


def _breakpoints(a, B, bn, d, act, par, D, lo, hi, knots=None):
    """Sorted panel ends (M, nb) on ``[lo, hi]`` (``+inf`` unused): vertices (and ``knots``
    (M, J), the caller's, ``nan`` unused), decay splits ``lo + 2^j / D``, O(1) splits and
    sweep windows of steep rows."""
    M = a.shape[0]
    vz = _vertex_z(a, B, d, act, lo, hi)
    if knots is not None:
        vz = np.concatenate([vz, np.where(np.isnan(knots), np.inf, knots)], axis=1)
    dec = lo[:, None] + _DECAY[None, :] / np.maximum(D, 1e-300)[:, None]
    dec = np.where((D > 0)[:, None], dec, np.inf)
    fx = np.concatenate([[0.0], _FIXED, -_FIXED])
    fx = np.broadcast_to(fx, (M, fx.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        steep = act & ~par & (bn < _STEEP) & (np.abs(a) > 0)
        sw = (d[..., None] - bn[..., None] * _SWEEP) / a[..., None]
        sw = np.where(steep[..., None], sw, np.inf).reshape(M, -1)
    bp = np.concatenate([lo[:, None], vz, dec, fx, sw, hi[:, None]], axis=1)
    bp = np.where((bp >= lo[:, None]) & (bp <= hi[:, None]), bp, np.inf)
    bp = np.sort(bp, axis=1)
    # ends closer than the rounding of a vertex are one (a panel ~1e-17 wide at a vertex holds
    # nothing but the kernels' noise on degenerate cross-sections)
    with np.errstate(invalid="ignore"):
        near = np.diff(bp, axis=1) <= _MERGE * (1.0 + np.abs(bp[:, 1:]))
    drop = np.concatenate([np.zeros((M, 1), dtype=bool), near], axis=1)
    bp = np.sort(np.where(drop, np.inf, bp), axis=1)
    # the range's end is exact where a vertex rounded next to it is not (a vertex on a far row
    # is off by ~eps |d|: 7e-15 on a strip 2e-5 wide is 4e-10 of its mass): the last kept end
    # is hi itself
    last = np.sum(np.isfinite(bp), axis=1) - 1
    m = np.flatnonzero(last >= 1)
    bp[m, last[m]] = hi[m]
    return bp


def _sliced(a, B, d, act, D, lo, kern, knots=None):
    """Mass and moments of ``phi(z) e^{-D z} phi_{k-1}(y)`` on ``{(z, y) : a z + B y <= d}``
    for ``z >= lo`` (up to ``x_max``), by adaptive quadrature over ``z`` of the cross-sections'
    moments (module doc).

    Parameters
    ----------
    a : ndarray, shape (M, F)
        Row coefficients of ``z``.
    B : ndarray, shape (M, F, k-1)
        Row coefficients of ``y`` (``k - 1 = 1, 2, 3``).
    d : ndarray, shape (M, F)
        Offsets (ignored on inactive rows).
    act : ndarray, shape (M, F)
        Active rows.
    D : ndarray, shape (M,)
        Decay rates (``0`` for a plain Gaussian).
    lo : float or ndarray
        Lower end of the ``z`` range.
    kern : callable
        The ``(k-1)``-dimensional cross-section kernel, ``(normals, offsets) -> (log mass,
        mean, cov, error)`` (:func:`_polygon_kernel`, :func:`_interval_kernel`).
    knots : ndarray, shape (M, J), optional
        More panel ends (``nan``: none), e.g. the vertices' ``z`` from the caller's geometry
        (``k`` rows of a needle meet at a vertex at an angle whose determinant is below
        :func:`_vertex_z`'s cut: without them its panels were refined 19 times, 67 s).

    Returns
    -------
    log_mass, mean (M, k), cov (M, k, k), error : the log of the weighted mass (with ``phi``
        and ``phi_{k-1}`` normalised), the moments in ``(z, y)`` coordinates, and the log
        mass's error estimate; ``-inf`` and NaN where nothing was integrated.
    """
    M, F, k1 = B.shape
    k = k1 + 1
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (M,)).copy()
    hi = np.broadcast_to(_zmax(D), (M,)).copy()
    bn = np.sqrt(np.sum(B * B, axis=2))
    par = act & (bn < _PAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        lim = d / a
        hi = np.minimum(hi, np.where(par & (a > 0), lim, np.inf).min(axis=1))
        lo = np.maximum(lo, np.where(par & (a < 0), lim, -np.inf).max(axis=1))
    bad = np.any(par & (np.abs(a) < _PAR) & (d < 0), axis=1)
    hi = np.where(bad, lo, hi)
    rows = act & ~par
    nB = np.where(rows[..., None], B / np.where(rows, bn, 1.0)[..., None], 0.0)
    bp = _breakpoints(a, B, bn, d, act, par, D, lo, hi, knots)
    pa, pb = bp[:, :-1], bp[:, 1:]
    use = np.isfinite(pb) & (pb > pa)
    item, jj = np.nonzero(use)
    zlo, zhi = pa[item, jj], pb[item, jj]
    iu = np.triu_indices(k1)

    def evaluate(item, z):
        """Cross-sections at the nodes ``z`` (m, K) of items ``item`` (m,)."""
        m_, K = z.shape
        off = (d[item][:, None, :] - a[item][:, None, :] * z[..., None]) / np.where(
            rows[item], bn[item], 1.0
        )[:, None, :]
        off = np.where(rows[item][:, None, :], off, np.inf).reshape(m_ * K, F)
        nrm = np.broadcast_to(nB[item][:, None], (m_, K, F, k1)).reshape(m_ * K, F, k1)
        lm, mn, cv, er = kern(nrm, off)
        fin = (
            np.isfinite(lm)
            & np.isfinite(mn).all(axis=1)
            & np.isfinite(cv).all(axis=(1, 2))
            & np.isfinite(er)
        )
        lm = np.where(fin, lm, -np.inf).reshape(m_, K)
        mn = np.where(fin[:, None], mn, 0.0).reshape(m_, K, k1)
        cv = np.where(fin[:, None, None], cv, 0.0).reshape(m_, K, k1, k1)
        er = np.where(fin, er, 0.0).reshape(m_, K)
        lf = -0.5 * z * z - D[item][:, None] * z + lm
        return lf, mn, cv, er

    nA = _GA_X.size
    ref = np.zeros(M)
    z0 = np.zeros(M)
    sz = np.ones(M)
    y0 = np.zeros((M, k1))
    sy = np.ones((M, k1))
    est = np.zeros(M)
    span = np.zeros(M)
    np.add.at(span, item, zhi - zlo)
    qerr = np.zeros(M)
    blown = np.zeros(M, dtype=bool)
    acc = {"item": [], "z": [], "w": [], "m": [], "c": [], "e": []}
    for rnd in range(_MAX_ROUNDS):
        if item.size == 0:
            break
        L = zhi - zlo
        z = zlo[:, None] + L[:, None] * _NODES[None, :]
        lf, mn, cv, er = evaluate(item, z)
        if rnd == 0:
            mx = np.full(M, -np.inf)
            np.maximum.at(mx, item, np.max(lf, axis=1))
            ref = np.where(np.isfinite(mx), mx, 0.0)
        # nodes far above the first round's peak (it missed where the weight is): the item
        # is given up (no finite result) rather than summed with overflowed terms
        with np.errstate(invalid="ignore"):
            big = lf - ref[item][:, None] > _BIG
        blown[item[big.any(axis=1)]] = True
        with np.errstate(under="ignore", invalid="ignore", over="ignore"):
            f = np.exp(np.where(big, -np.inf, lf - ref[item][:, None]))
        f = np.where(np.isfinite(f), f, 0.0)
        wA = L[:, None] * _GA_W[None, :] * f[:, :nA]
        if rnd == 0:
            # pilot location and spread of every coordinate (units of the acceptance test)
            def pilot(v, item=item, wA=wA):
                out = np.zeros((M, *v.shape[2:]))
                np.add.at(out, item, np.einsum("mk,mk...->m...", wA, v))
                return out

            est = pilot(np.ones_like(z[:, :nA]))
            W = np.where(est > 0, est, 1.0)
            z0 = pilot(z[:, :nA]) / W
            y0 = pilot(mn[:, :nA]) / W[:, None]
            vz = pilot((z[:, :nA] - z0[item][:, None]) ** 2) / W
            dy = mn[:, :nA] - y0[item][:, None, :]
            vy = pilot(np.diagonal(cv[:, :nA], axis1=2, axis2=3) + dy * dy) / W[:, None]
            # (a section's variance can come out negative where it is rounded away: no scale)
            sz = np.where(vz > 0, np.sqrt(np.maximum(vz, 0.0)), 1.0)
            sy = np.where(vy > 0, np.sqrt(np.maximum(vy, 0.0)), 1.0)
            # the sections are known to ~eps |y| only (their rows' rounding): in units of
            # their spread sy that is the floor of the Y components, and relative of their
            # masses (a needle 4 sd out, sy ~1e-5: 1e-10, above _TOL; its panels were halved
            # 19 times, 67 s), and of the second moments and Z Y through them
            yn = _Y_NOISE * EPS * (1.0 + np.abs(y0)) / sy  # (M, k1)
            zr = 1.0 + np.abs(z0) / sz
            mass_floor = yn.max(axis=1)
            floor = np.concatenate(
                [
                    np.stack([mass_floor, mass_floor * zr, mass_floor * zr * zr], axis=1),
                    yn,
                    4.0 * (yn[:, iu[0]] + yn[:, iu[1]]),
                    4.0 * yn * zr[:, None],
                ],
                axis=1,
            )
        Z = (z - z0[item][:, None]) / sz[item][:, None]
        Y = (mn - y0[item][:, None, :]) / sy[item][:, None, :]
        Cs = cv / (sy[item][:, None, :, None] * sy[item][:, None, None, :])
        sec = (Cs + Y[..., :, None] * Y[..., None, :])[..., iu[0], iu[1]]
        vals = f[..., None] * np.concatenate(
            [
                np.ones_like(Z)[..., None],
                Z[..., None],
                (Z * Z)[..., None],
                Y,
                sec,
                Z[..., None] * Y,
            ],
            axis=2,
        )
        qa = L[:, None] * np.einsum("mkv,k->mv", vals[:, :nA], _GA_W)
        qb = L[:, None] * np.einsum("mkv,k->mv", vals[:, nA:], _GB_W)
        # the cross-sections' own log-mass errors are relative errors of f
        qe = L[:, None] * np.einsum("mkv,k->mv", np.abs(vals[:, :nA]) * er[:, :nA, None], _GA_W)
        allow = (
            _TOL * qa[:, :1]
            + _PTOL * (est[item] * L / np.where(span[item] > 0, span[item], 1.0))[:, None]
            + _ATOL * est[item][:, None]
            + floor[item] * np.abs(qa[:, :1])
        )
        good = np.all(np.abs(qa - qb) <= allow + 2.0 * qe, axis=1)
        if rnd == _MAX_ROUNDS - 1 or item.size > _MAX_PANELS:
            if not good.all():
                _log.debug("far-polytope slices: %d panels accepted unconverged", (~good).sum())
            good[:] = True
        if good.any():
            g = np.flatnonzero(good)
            acc["item"].append(np.repeat(item[g], nA))
            acc["z"].append(z[g, :nA].ravel())
            acc["w"].append(wA[g].ravel())
            acc["m"].append(mn[g, :nA].reshape(-1, k1))
            acc["c"].append(cv[g, :nA].reshape(-1, k1, k1))
            acc["e"].append((wA[g] * er[g, :nA]).ravel())
            np.add.at(qerr, item[g], np.abs(qa[g, 0] - qb[g, 0]))
        bad = ~good & ~blown[item]
        if not bad.any():
            break
        mid = 0.5 * (zlo[bad] + zhi[bad])
        item = np.repeat(item[bad], 2)
        zlo, zhi = np.stack([zlo[bad], mid], 1).ravel(), np.stack([mid, zhi[bad]], 1).ravel()
    log_mass = np.full(M, -np.inf)
    mean = np.full((M, k), np.nan)
    cov = np.full((M, k, k), np.nan)
    error = np.full(M, np.inf)
    if not acc["item"]:
        return log_mass, mean, cov, error
    it = np.concatenate(acc["item"])
    z = np.concatenate(acc["z"])
    w = np.concatenate(acc["w"])
    mn = np.concatenate(acc["m"])
    cv = np.concatenate(acc["c"])
    ew = np.concatenate(acc["e"])

    def psum(v):
        v = v.reshape(v.shape[0], -1)
        out = np.zeros((M, v.shape[1]))
        np.add.at(out, it, v)
        return out

    W = psum(w)[:, 0]
    good = (W > 0) & np.isfinite(W) & ~blown
    Ws = np.where(good, W, 1.0)
    Ez = psum(w * z)[:, 0] / Ws
    Ey = psum(w[:, None] * mn) / Ws[:, None]
    dz = z - Ez[it]
    dy = mn - Ey[it]
    Vz = psum(w * dz * dz)[:, 0] / Ws
    Czy = psum((w * dz)[:, None] * dy) / Ws[:, None]
    Cy = psum(w[:, None, None] * (cv + dy[:, :, None] * dy[:, None, :])).reshape(M, k1, k1)
    Cy = Cy / Ws[:, None, None]
    mean = np.concatenate([Ez[:, None], Ey], axis=1)
    cov = np.empty((M, k, k))
    cov[:, 0, 0] = Vz
    cov[:, 0, 1:] = Czy
    cov[:, 1:, 0] = Czy
    cov[:, 1:, 1:] = 0.5 * (Cy + np.swapaxes(Cy, 1, 2))
    with np.errstate(divide="ignore"):
        log_mass = np.where(good, np.log(Ws) + ref - LOG_SQRT_2PI, -np.inf)
    error = (psum(ew)[:, 0] + qerr) / Ws + 8.0 * EPS * (1.0 + np.abs(ref))
    error = np.where(good, error, np.inf)
    mean[~good] = np.nan
    cov[~good] = np.nan
    return log_mass, mean, cov, error


def _section_kernel(k, near, name):
    """The cross-section kernel of ``k``-dimensional polytopes and how many go in a block."""
    if k == 3:
        return _polygon_kernel, _BLOCK
    if k == 4 and near is not None:
        return partial(_polyhedron_kernel, near=near), _BLOCK_4
    raise ValueError(f"{name} takes k = 3, or k = 4 with near=; got k = {k}")


def tail_moments(nu, cu, active, dist, near=None):
    """Mean (Q, k) and covariance (Q, k, k) of ``N(0, I_k)`` on far polytopes, ``k = 3, 4``
    (module doc).

    Parameters
    ----------
    nu : ndarray, shape (Q, F, k)
        Unit normals (0 on inactive rows).
    cu : ndarray, shape (Q, F)
        Offsets (``+inf`` on inactive rows).
    active : ndarray, shape (Q, F)
        Active rows.
    dist : ndarray, shape (Q,)
        The polyhedra's distances from the mean (``>= TAIL_D``).
    near : callable, optional
        ``k = 4``: the near kernel of the 3-D cross-sections, ``(normals (M, F, 3), offsets
        (M, F)) -> (log mass, mean, cov, log-mass error, small)`` (:mod:`._polytope`, which
        imports this module, without slices; ``small``: the sections done by its cubature).

    Returns
    -------
    mean, cov, ok : ndarray
        ``ok`` (Q,) is False where the closest point was not found or nothing was integrated
        (NaN moments there: the caller keeps its own).
    """
    Q, _, k = nu.shape
    mean = np.full((Q, k), np.nan)
    cov = np.full((Q, k, k), np.nan)
    ok = np.zeros(Q, dtype=bool)
    kern, ch = _section_kernel(k, near, "tail_moments")
    for s in range(0, Q, ch):
        sl = slice(s, s + ch)
        mean[sl], cov[sl], ok[sl] = _tail_block(nu[sl], cu[sl], active[sl], dist[sl], kern)
    return mean, cov, ok


def _tail_block(nu, cu, active, dist, kern):
    """:func:`tail_moments` on one block: the closest-point frame, then :func:`_sliced` with
    the cross-section kernel ``kern``."""
    k = nu.shape[2]
    P, S, ok = _closest_points(nu, cu, active, dist)
    D = np.sqrt(np.sum(P * P, axis=1))
    ok &= D > 0
    D = np.where(ok, D, 1.0)
    nstar = np.where(ok[:, None], P / D[:, None], np.eye(k)[0])
    V = householder_basis(nstar)  # (Q, k, k-1)
    a = np.einsum("qfk,qk->qf", nu, nstar)
    B = np.einsum("qfk,qkl->qfl", nu, V)
    with np.errstate(invalid="ignore"):
        dd = cu - np.einsum("qfk,qk->qf", nu, P)
    # the rows through p pass through it exactly; the others are outside it (p is feasible)
    dd = np.where(active & ~S, np.maximum(dd, 0.0), 0.0)
    act = active & ok[:, None]
    _, m, C, _ = _sliced(a, B, dd, act, D, 0.0, kern)
    R = np.concatenate([nstar[:, :, None], V], axis=2)  # (Q, k, k): columns n*, V
    mean = P + np.einsum("qkl,ql->qk", R, m)
    cov = R @ C @ np.swapaxes(R, 1, 2)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    fin = ok & np.isfinite(mean).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    mean[~fin] = np.nan
    cov[~fin] = np.nan
    return mean, cov, fin
