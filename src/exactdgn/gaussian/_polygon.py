"""Exact standard-normal integrals over convex polygons (d = 2), in log space and tail-safe.

Whitened setting: ``u ~ N(0, I_2)`` and ``P = {u : n_i . u <= c_i}`` with unit normals.  Each
facet (edge) ``e`` lies on the line ``n_e . u = c_e``, parametrised ``u = c_e n_e + t tau_e``
with ``tau_e = (-n_e[1], n_e[0])`` and ``t in [t0_e, t1_e]`` (``+-inf`` for rays).

Mass (edge formula with Owen's T, Stokes' theorem around the mean)::

    m = omega - sum_e sgn(c_e) [T(|c_e|, t1/|c_e|) - T(|c_e|, t0/|c_e|)]

with ``omega`` = 1 (mean inside), 0 (outside) or the interior angle / 2 pi (mean on the
boundary); edges with ``c_e = 0`` contribute nothing.  This *fast path* (scipy's Owen's T,
~4e-14 relative per term) is used whenever the result is not small next to its terms.  Pairs
are routed as follows:

* **small polygons** (bounded, spread ``R (|g| + R/2) <= 1`` with ``g`` the vertex centroid and
  ``R`` the largest vertex distance from it) always go to a collapsed ``n x n`` Gauss-Legendre
  rule on the fan triangles from ``g``, integrating ``phi(g) exp(-g.v - |v|^2/2)`` with no
  cancellation at all; ``n`` (3 to 12) is chosen per polygon from the spread and from
  ``R^2/2`` (``_CUB_LEVELS``).  The edge formula cancels for these (a small polygon far from
  or near the mean).
* pairs with an offset ``c_i < -3`` (mass below ``Q(3)``; the fast path nearly always cancels
  there) go straight to the **tail-safe edge pieces**: each edge is split at the foot of the
  perpendicular so that every piece is
  ``B(h, ta, tb) = e^{-h^2/2}/(2 pi) int_ta^tb e^{-t^2/2} h/(h^2 + t^2) dt`` with
  ``0 <= ta < tb <= inf`` (``h = |c_e|``); each piece is evaluated in log space by
  Gauss-Laguerre (``ta >= 4``, substitution ``t^2 = ta^2 + 2 s``), Gauss-Legendre near the foot
  (or Owen's T differences for ``h < 1``), and the pieces are combined with their signs by
  log-sum-exp.  Exact to ~1e-13 in log mass, also at log masses of -1e8, unless the pieces
  cancel (ratio = sum of |pieces| / mass): the error estimate then adds the rounding of the
  pieces' exponents (``eps * ratio * |log m|``) and of the edge end points (absolute
  ``~eps (|t| + h)``, times ``|dB/dt| / m``), which dominate for thin slivers far out.
* the others run the fast path; those whose result cancels are redone by the tail-safe pieces.
* pairs whose tail-safe pieces still cancel (ratio > 100 with a rounding error above 1e-10,
  or nothing left at all: a sliver of width 1e-9 seen from 1e4 sd has pieces 1e9 times its
  mass, each rounded at ~eps |log m|, and came out "empty", -inf) are redone by **slicing**
  (:func:`_slice_pairs`), which has no cancellation: with the mean outside, slices
  perpendicular to the direction ``n*`` of the closest point ``p`` (``D = |p|``),
  ``m = phi(D) int e^{-D r - r^2/2} m_s(r) dr`` with ``m_s`` the slice's interval mass; with the
  mean inside or on the boundary (thin strips through the mean), slices through the mean.
  Gauss-Legendre on panels between the vertices, the fixed exponent levels and where steep rows
  sweep their bound across the core, checked against the same rule on halved panels.

Pairs of a :class:`PolygonTable` (``log_mass_2d_shifted`` / ``_transformed``) are the table's
polygon translated (and mapped) to the mean ``w``; translating the vertices rounds them at the
scale ``|w|`` (2e-12 at 1e4 sd: more than a 1e-12 polygon). Where that rounding shows, the
cubature and the slicing take the polygon in its :class:`LocalFrame` instead: its shape at the
table's own precision, only the anchor point translated (a common shift, within the log mass's
own ``eps |log m|`` rounding).

Rows far from the mean (``log_mass_2d``): their vertices, computed about the mean, are rounded
at ``delta ~ eps (|c| + |t|) / sin(angle)`` (2e-12 at 1e4 sd), which loses a polygon smaller
than that (it came out -inf or NaN), a sliver narrower, or a sharp corner. Pairs left empty or
unresolved although they have real rows, or whose error estimate is beyond the log mass's own
rounding, are redone about one of their vertices (:func:`_reanchored`): the rows' offsets about
that point are formed exactly from the float input (error-free products and sums), which makes
the pair a table polygon near its origin seen from a far mean, as above. A polygon of 1e-12 at
1e3 sd given by its rows then keeps its digits; ``-inf`` with error 0 means that the rows, as
floats, leave no interior. The mean on the boundary: the tangent cone's angle comes from
rounded directions, ``~4 eps`` absolute, in the estimate.

Pairs are processed in blocks grouped by their number of real (non-padding) rows.

Moments by the divergence theorem, in the stable weight form
``w_e = exp(log phi(c_e) + log Phi_1(edge) - log m)``::

    E[u] = -sum_e w_e n_e,     Cov[u] = I - sum_e w_e n_e (gbar_e - E[u])^T   (symmetrised)

with ``gbar_e = c_e n_e + E_1[t | t0 <= t <= t1] tau_e`` the edge's conditional mean.  Small
polygons use the cubature for the moments too (with the next rule up), since the divergence
form loses ``eps / R^4`` relative in the covariance there; the pairs done by slicing take their
moments from the same slices (the divergence weights cancel for thin strips and slivers).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, owens_t

from ._divergence import divergence_moments
from ._interval import TruncatedMoments, _interval_stats, _log_interval_mass, _rowdot, log_phi
from ._rules import (
    EPS,
    LOG_2PI,
    gauss_laguerre,
    gauss_legendre_01,
    normalize_rows,
    reject_nan,
    reject_nonfinite,
)

__all__ = [
    "PolygonTable",
    "log_mass_2d",
    "log_mass_2d_shifted",
    "log_mass_2d_transformed",
    "polygon_edges",
    "polygon_table",
    "truncated_moments_2d",
    "truncated_moments_2d_shifted",
    "truncated_moments_2d_transformed",
]

logger = logging.getLogger(__name__)

_GL_X, _GL_W = gauss_legendre_01(32)
_LAG_X, _LAG_W = gauss_laguerre(16)
# 16-node Gauss-Legendre on [0, 1] for the short Laguerre pieces: there ta >= 4 and S <= 4, so
# the integrand's singularities (s = -ta²/2 and s = -(h² + ta²)/2) lie at s <= -8, outside the
# Bernstein ellipse of parameter 9.9 around [0, S]; the rule's error is below ~9^{-32}.
_GL16S_X, _GL16S_W = gauss_legendre_01(16)
# Collapsed (Duffy) product rules on a triangle: v = a (P0 - g) + a b (P1 - P0), Jacobian
# a * det, with n x n Gauss-Legendre nodes in (a, b).  Each rule is stored as the (5, K) map from
# the per-edge coefficients (g.a0, g.d10, |a0|^2, a0.d10, |d10|^2) to the exponent at the nodes,
# and the (K, 6) weights of the sums of e^q times (1, a, ab, a^2, a ab, (ab)^2).


def _cub_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = gauss_legendre_01(n)
    a = np.repeat(x, n)
    ab = a * np.tile(x, n)
    W = np.repeat(w, n) * np.tile(w, n) * a
    expo = np.stack([-a, -ab, -0.5 * a * a, -a * ab, -0.5 * ab * ab])
    sums = np.stack([W, W * a, W * ab, W * a * a, W * a * ab, W * ab * ab], axis=1)
    return np.ascontiguousarray(expo), np.ascontiguousarray(sums)


# Node count n: the smallest level whose bounds hold both for the spread s = R (|g| + R/2) of
# the exponent over the polygon and for its quadratic part beta = R^2 / 2 (which needs more
# nodes than a linear exponent of the same size).  Calibrated against a 24 x 24 rule on ~20k
# workload polygons (spread) and 20k random polygons at 0-1 sd from the mean (beta), with about
# a factor 2 of margin: the chosen rule's error is <= 4e-15 in log mass.
_CUB_LEVELS = (
    (0.002, 4e-5, 3),
    (0.015, 2e-3, 4),
    (0.04, 1.3e-2, 5),
    (0.15, 0.04, 6),
    (0.3, 0.1, 7),
    (0.5, 0.2, 8),
    (1.0, 0.5, 10),
    (1.0, 1.0, 12),  # beta <= 1 whenever spread <= 1
)
_CUB_BOUNDS = np.array([b for b, _, _ in _CUB_LEVELS])
_CUB_QBOUNDS = np.array([b for _, b, _ in _CUB_LEVELS])
# The moments need higher degree: they use the rule this many levels up.
_CUB_MOM_SHIFT = 1
_CUB_RULES = [_cub_rule(n) for _, _, n in _CUB_LEVELS]
# Edges x nodes per cubature block.
_CUB_BLOCK = 40000

# Fast path accepted when m >= _FAST_RATIO * (sum of |terms|) and m >= _FAST_MIN.  scipy's
# owens_t is accurate to ~4e-14 relative (measured against mpmath on ~3k workload polygons: the
# log-mass error was <= 4.2e-14 * ratio, up to 2e-12 at ratio 100), so the error estimate of
# the fast path is _FAST_ERR * ratio.  (A cap of 10 would keep it below 4e-13, but the tail-safe
# path is not yet reliable for lines at distances ~1e-200 from the mean, which the fast path
# handles.)
_FAST_RATIO = 1e-2
_FAST_ERR = 256.0 * EPS
_FAST_MIN = 1e-14
# Cut between Gauss-Legendre on [0, S] and the Laguerre difference in the tail pieces.
_S_SPLIT = 4.0
# Distance along an edge (from the foot) beyond which the Laguerre substitution is used.
_T_LAG = 4.0
# Rounding of the tail path's edge end points, in units of eps (|t| + h) (see _tail_mass).
_T_ERR = 8.0
# Rounding of the tail pieces' exponents, in units of eps * ratio * (1 + |log m|).
_T_EXP = 4.0
# The turn of a row's rounded direction, in units of eps (the vertex term of _vertex_error).
_T_TURN = 2.0
# Small-polygon cubature (mass and moments): R (|g| + R/2) <= _SMALL.
_SMALL = 1.0
# Pairs with an offset below -_FAST_CMIN skip the fast path (it cancels there).
_FAST_CMIN = 3.0
# Moments of polygons at distance >= _TAIL_D from the mean by slicing (see _tail_moments).
_TAIL_D = 8.0
# A facet nearly parallel to tau* (slope sig = |b/a|) sweeps its s-bound through [-8, 8] (where
# Phi of it goes from 0 to 1) within the r-window r0 +- 8 sig.  Where a panel overlapping that
# window is longer than _SWEEP_K times it, the 32-node rule cannot resolve the step (errors up
# to 1.6 posterior sd at D = 10 when a vertex is the closest point), so the row gets extra
# breakpoints where its bound crosses these s-values.  On 2,400 far rotated boxes (closed-form
# moments): K = 4 left errors of 1e-4 sd, K = 2 of 2e-8, K = 1 and 0.25 none above 1e-8.
_SWEEP_S = np.array([-8.0, 0.0, 8.0])
_SWEEP_K = 0.25
# Pairs whose edge-formula sum cancels (tail-safe pieces more than _SLICE_RATIO times the mass
# with a rounding error above _SLICE_ERR, or no mass left at all) are redone by slicing
# (_slice_pairs), which has no cancellation; the slicing's own s-levels for sweeping rows, its
# range through the mean and its fixed splits.
_SLICE_ERR = 1e-10
_SLICE_RATIO = 100.0
_SWEEP_S_MASS = np.array([-40.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 40.0])
_SLICE_R = 9.5
_SLICE_SPLITS = np.array([-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0])
# Absolute rounding of the tangent-cone fraction omega (mean on the boundary), in units of eps.
_OMEGA_ERR = 4.0
# polygons farther than this from the mean (``c^2`` overflows): log mass below -9e307, -inf as
# in d = 1, 3, 4 (the tail pieces' exponents were inf - inf: NaN)
_OVERFLOW_DIST = math.sqrt(np.finfo(np.float64).max)
# Pairs given by their rows whose error estimate exceeds the log mass's own rounding by this
# (or that came out empty or unresolved) are redone about one of their vertices (_reanchored).
_REANCHOR_ERR = 1e-9
# Dekker's splitter for the error-free products of _local_offsets.
_SPLIT = 134217729.0  # 2^27 + 1
# Table pairs done by cubature are redone in their local frame where the conditioning on the
# translated vertices (4 cond, eps |w| relative to the polygon's size) exceeds this.
_LOCAL_COND = 1e-10
# Pairs per block: about _CHUNK_F2 / F^2 (the edge search is O(F^2) per pair).
_CHUNK_F2 = 1 << 18
_CHUNK_MIN = 1024
_CHUNK_MAX = 32768


# --------------------------------------------------------------------------------------------
# records passed between the kernels (fields are numpy arrays here, tensors in _torch_polygon)
# --------------------------------------------------------------------------------------------
@dataclass
class Vertices:
    """Edge end points ``P0``, ``P1`` (P, F, 2), vertex centroid ``g`` (P, 2), largest vertex
    distance from it ``radius`` (P,) (``inf`` if unbounded), ``bounded`` (P,)."""

    P0: np.ndarray
    P1: np.ndarray
    g: np.ndarray
    radius: np.ndarray
    bounded: np.ndarray


@dataclass
class Edges:
    """The edges of ``P`` polygons seen from their means (the input of :func:`_integrate`).

    ``nu`` (P, F, 2) unit normals, ``cu`` (P, F) offsets, ``active`` / ``nonempty`` (P, F),
    ``t0``, ``t1`` (P, F) edge intervals, ``empty`` (P,) pairs known to have zero mass,
    ``verts`` their :class:`Vertices`.
    """

    nu: np.ndarray
    cu: np.ndarray
    active: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    nonempty: np.ndarray
    empty: np.ndarray
    verts: Vertices
    # (P,) or (P, F) length scale added to each vertex's own in :func:`_vertex_error`: the table
    # forms computed the vertices in the table's frame (``|w|``, ``|T| |p0|`` away); None: 0
    ext: np.ndarray | None = None
    # table forms: ``local(rows)`` gives those pairs' :class:`LocalFrame` (their geometry
    # before the translation); None for pairs given by their rows (log_mass_2d)
    local: Callable[[np.ndarray], LocalFrame] | None = None


@dataclass
class LocalFrame:
    """Pairs' polygons in a frame at an anchor point of the polygon (the table's vertex centroid,
    mapped): edge ends ``q0``, ``q1`` (P, F, 2) relative to the anchor (0 where absent), row
    offsets ``off`` (P, F) relative to the anchor (inf on inactive rows), the anchor seen from
    the mean ``anchor`` (P, 2), and the rounding length scale of each edge end ``len0``,
    ``len1`` (P, F) (the table vertex's own size, times ``|T|`` for mapped pairs).

    The translation by the mean ``w`` is the only step that rounds at the scale ``|w|``; here it
    is confined to ``anchor`` (a common shift of the whole polygon, which moves the log mass by
    ``~eps |w| D``, within its ``eps |log m|`` rounding), while the polygon's own shape keeps the
    table's precision. A polygon of size ``1e-12`` seen from ``1e4`` sd keeps all its digits.
    """

    q0: np.ndarray
    q1: np.ndarray
    off: np.ndarray
    anchor: np.ndarray
    len0: np.ndarray
    len1: np.ndarray


@dataclass
class MomentGeometry:
    """What the moments need from :func:`_integrate`: the edges, the pairs done by cubature
    (``cub_i`` (C,) with their ``cub_mean`` (C, 2) and ``cub_cov`` (C, 2, 2), or None) and those
    done by slicing (``slice_i``, ``slice_mean``, ``slice_cov`` alike)."""

    nu: np.ndarray
    cu: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    nonempty: np.ndarray
    cub_i: np.ndarray
    cub_mean: np.ndarray | None
    cub_cov: np.ndarray | None
    slice_i: np.ndarray | None = None
    slice_mean: np.ndarray | None = None
    slice_cov: np.ndarray | None = None

    def rows(self, rows: np.ndarray) -> MomentGeometry:
        """The same restricted to ``rows`` of its block."""
        pos = np.full(self.cu.shape[0], -1)
        pos[rows] = np.arange(rows.size)

        def keep(idx, *vals):
            if idx is None or idx.size == 0:
                return (idx, *vals)
            pc = pos[idx]
            ok = pc >= 0
            return (pc[ok], *(v[ok] for v in vals))

        return MomentGeometry(
            self.nu[rows],
            self.cu[rows],
            self.t0[rows],
            self.t1[rows],
            self.nonempty[rows],
            *keep(self.cub_i, self.cub_mean, self.cub_cov),
            *keep(self.slice_i, self.slice_mean, self.slice_cov),
        )


@dataclass
class Integrated:
    """:func:`_integrate`'s result: ``log_mass``, ``error`` (P,) and the moment geometry."""

    log_mass: np.ndarray
    error: np.ndarray
    geo: MomentGeometry


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def _prepare(normals, offsets):
    """Normalise rows; return unit normals, offsets, active mask (P, F), infeasible (P,)."""
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    if n.ndim != 3 or n.shape[-1] != 2 or c.shape != n.shape[:2]:
        raise ValueError(
            f"normals must be (P, F, 2) and offsets (P, F); got {n.shape} and {c.shape}"
        )
    with np.errstate(all="ignore"):
        norm = np.hypot(n[..., 0], n[..., 1])
    return normalize_rows(n, c, norm)


def polygon_edges(nu: np.ndarray, cu: np.ndarray, active: np.ndarray):
    """Edge intervals of each facet line.

    Parameters
    ----------
    nu : ndarray, shape (P, F, 2)
        Unit normals (0 on inactive rows).
    cu : ndarray, shape (P, F)
        Offsets (signed distances of the mean from the lines; +inf on inactive rows).
    active : ndarray of bool, shape (P, F)

    Returns
    -------
    t0, t1 : ndarray, shape (P, F)
        The facet ``e`` is ``{c_e n_e + t tau_e : t0 <= t <= t1}``.
    nonempty : ndarray of bool, shape (P, F)
        Facets with ``t0 < t1`` (duplicated lines are kept once, for the lowest index).
    degenerate : ndarray of bool, shape (P,)
        Pairs whose polygon lies within a line (two opposite rows with ``c_i + c_j <= 0``).
    """
    return _edge_search(nu, cu, active)[:4]


# |n_j x n_e| at or below this: the two unit normals are parallel up to their rounding; such
# rows whose crossing lies beyond _FAR_VERTEX are taken as parallel (see _edge_search).
_PARALLEL_SINE = 16 * np.finfo(float).eps
_FAR_VERTEX = 1e8


def _edge_search(nu, cu, active):
    """:func:`polygon_edges` plus the shared vertices ``(p, e, j)`` (index arrays): the end of
    edge ``e`` of pair ``p`` is the start of edge ``j`` (``t0[p, j]`` was set from it)."""
    Pn, F = cu.shape
    m0 = np.ascontiguousarray(nu[..., 0])
    m1 = np.ascontiguousarray(nu[..., 1])
    # tau_e = (-m1_e, m0_e); A[p, e, j] = n_j . tau_e, NN[p, e, j] = n_j . n_e
    m0e, m1e = m0[:, :, None], m1[:, :, None]
    m0j, m1j = m0[:, None, :], m1[:, None, :]
    A = m0j * -m1e
    A += m1j * m0e
    NN = m0j * m0e
    NN += m1j * m1e
    other = active[:, None, :] & ~np.eye(F, dtype=bool)
    with np.errstate(all="ignore"):
        r0 = cu[:, :, None] * NN
        np.subtract(cu[:, None, :], r0, out=r0)  # c_j - c_e (n_j . n_e)
        np.divide(r0, A, out=r0)
        # rows parallel up to the rounding of their unit normals (n_j x n_e within a few eps
        # of 0) whose crossing, known only to ~eps / |n_j x n_e| relative, lands beyond
        # _FAR_VERTEX: parallel. An exact-zero test let opposite normals 7e-18 apart make a
        # vertex 2.7e15 out, whose Owen's-T terms lost O(1) nats (a thin wedge's apex near
        # the origin stays a vertex)
        par = A == 0
        par |= (np.abs(A) <= _PARALLEL_SINE) & (np.abs(r0) > _FAR_VERTEX)
        par &= other
        pos = A > 0
        pos &= other
        pos &= ~par
        neg = A < 0
        neg &= other
        neg &= ~par
        r1 = np.where(pos, r0, np.inf)
        np.copyto(r0, -np.inf, where=~neg)
        j1 = np.argmin(r1, axis=2)
        j0 = np.argmax(r0, axis=2)
        flat = np.arange(Pn * F) * F
        t1 = r1.reshape(-1)[flat + j1.reshape(-1)].reshape(Pn, F)
        t0 = r0.reshape(-1)[flat + j0.reshape(-1)].reshape(Pn, F)
        # Share each vertex between its two edges: the end of edge e (on line e) is projected
        # onto line j = j1[e] instead of being recomputed there.  For nearly parallel lines the
        # vertex itself is ill-conditioned (error eps/angle along the lines), and two separate
        # computations would leave a gap or overlap in the angular tiling of the Owen's-T terms.
        fin = np.isfinite(t1)
        fin &= active
        pi_, ei = np.nonzero(fin)
        jj = j1[pi_, ei]
        cons = (j0[pi_, jj] == ei) & np.isfinite(t0[pi_, jj])
        pi_, ei, jj = pi_[cons], ei[cons], jj[cons]
        ce, te = cu[pi_, ei], t1[pi_, ei]
        a0, a1 = m0[pi_, ei], m1[pi_, ei]
        b0, b1 = m0[pi_, jj], m1[pi_, jj]
        v0 = ce * a0 + te * -a1  # the vertex c_e n_e + t1 tau_e
        v1 = ce * a1 + te * a0
        t0[pi_, jj] = v0 * -b1 + v1 * b0  # its position along line j
        nonempty = active & (t0 < t1)
        # parallel rows (n_j = +-n_e up to rounding of the norms): compare offsets directly
        if par.any():
            same = NN > 0
            Bp = np.where(same, cu[:, None, :] - cu[:, :, None], cu[:, None, :] + cu[:, :, None])
            idx = np.arange(F)
            earlier = idx[None, None, :] < idx[None, :, None]
            kill = par & ((Bp < 0) | ((Bp == 0) & same & earlier))
            degenerate = np.any(par & ~same & (Bp <= 0), axis=(1, 2))
            nonempty &= ~np.any(kill, axis=2)
        else:
            degenerate = np.zeros(Pn, dtype=bool)
    return t0, t1, nonempty, degenerate, (pi_, ei, jj)


def _omega(nu, cu, active):
    """1 if the mean is inside, 0 outside, tangent-cone angle / 2 pi on the boundary."""
    cm = np.where(active, cu, np.inf)
    cmin = cm.min(axis=1)
    zero = active & (cu == 0)
    omega = np.where(cmin > 0, 1.0, 0.0)
    onb = np.flatnonzero(cmin == 0)
    if onb.size:
        z = zero[onb]
        beta = np.arctan2(-nu[onb, :, 1], -nu[onb, :, 0])  # centre of each allowed half-circle
        ref = beta[np.arange(onb.size), np.argmax(z, axis=1)]
        delta = np.mod(beta - ref[:, None] + np.pi, 2.0 * np.pi) - np.pi
        lo = np.maximum(-0.5 * np.pi, np.max(np.where(z, delta - 0.5 * np.pi, -np.inf), axis=1))
        hi = np.minimum(0.5 * np.pi, np.min(np.where(z, delta + 0.5 * np.pi, np.inf), axis=1))
        omega[onb] = np.maximum(hi - lo, 0.0) / (2.0 * np.pi)
    return omega


# --------------------------------------------------------------------------------------------
# fast path
# --------------------------------------------------------------------------------------------
def _fast_mass(cu, t0, t1, use, omega):
    """Edge formula with scipy's Owen's T: mass and the sum of |terms| (P,)."""
    P = cu.shape[0]
    pi_, ei = np.nonzero(use)
    h = np.abs(cu[pi_, ei])
    with np.errstate(all="ignore"):
        T1 = owens_t(h, t1[pi_, ei] / h)
        T0 = owens_t(h, t0[pi_, ei] / h)
    sg = np.sign(cu[pi_, ei])
    mass = omega - np.bincount(pi_, weights=sg * (T1 - T0), minlength=P)
    scale = omega + np.bincount(pi_, weights=np.abs(T1) + np.abs(T0), minlength=P)
    return mass, scale


# --------------------------------------------------------------------------------------------
# tail-safe edge pieces
# --------------------------------------------------------------------------------------------
def _laguerre_part(h, ta, tb):
    """log of ``int_ta^tb e^{-(t^2 - ta^2)/2} h/(h^2 + t^2) dt`` for ``ta > 0`` (any ``tb > ta``).

    Substituting ``t^2 = ta^2 + 2 s``: ``f0 int_0^S e^{-s} rho(s) ds`` with
    ``f0 = h / (ta (h^2 + ta^2))``, ``rho(s) = 1 / (sqrt(1 + 2s/ta^2) (1 + 2s/(h^2 + ta^2)))``
    (singular at ``s = -ta^2/2``) and ``S = (tb - ta)(tb + ta)/2``.  ``S <= 4``: Gauss-Legendre
    on ``[0, S]``; else the Gauss-Laguerre difference ``I(ta) - e^{-S} rho(S) I(tb)`` (at most
    ``e^{-4}`` cancellation).
    """
    ta2 = ta * ta
    ha = h * h + ta2
    logf0 = np.log(h) - np.log(ta) - np.log(ha)
    S = 0.5 * (tb - ta) * (tb + ta)

    def rho(s, t2, hh):
        return 1.0 / (np.sqrt(1.0 + 2.0 * s / t2) * (1.0 + 2.0 * s / hh))

    def rho_rows(two_s, t2, hh):
        # rho at (n, K) nodes (two_s = 2 s: (n, K) or (K,)) for rows t2, hh (n,), written as
        # sqrt(t2) hh / (sqrt(t2 + 2s) (hh + 2s)) with in-place steps (fewer temporaries)
        a = two_s + t2[:, None]
        np.sqrt(a, out=a)
        a *= two_s + hh[:, None]
        np.divide((np.sqrt(t2) * hh)[:, None], a, out=a)
        return a

    out = np.empty_like(ta)
    short = S <= _S_SPLIT
    i = np.flatnonzero(short)
    if i.size:
        s = S[i, None] * _GL16S_X
        f = rho_rows(2.0 * s, ta2[i], ha[i])
        np.negative(s, out=s)
        np.exp(s, out=s)
        f *= s
        out[i] = np.log(S[i] * _rowdot(f, _GL16S_W))
    i = np.flatnonzero(~short)
    if i.size:
        qa = _rowdot(rho_rows(2.0 * _LAG_X, ta2[i], ha[i]), _LAG_W)
        tbi = tb[i]
        fin = np.isfinite(tbi)
        tb_safe = np.where(fin, tbi, 1.0)
        tb2 = tb_safe * tb_safe
        hb = h[i] * h[i] + tb2
        qb = _rowdot(rho_rows(2.0 * _LAG_X, tb2, hb), _LAG_W)
        Si = np.where(fin, S[i], 0.0)
        back = np.where(fin, np.exp(-Si) * rho(Si, ta2[i], ha[i]) * qb, 0.0)
        out[i] = np.log(qa - back)
    return logf0 + out


def _gl_near_foot(h, ta, tc):
    """``int_ta^tc e^{-t^2/2} h / (h^2 + t^2) dt`` by 32-node Gauss-Legendre."""
    L = tc - ta
    t2 = L[:, None] * _GL_X
    t2 += ta[:, None]
    t2 *= t2  # t^2 at the nodes
    e = np.multiply(t2, -0.5)
    np.exp(e, out=e)
    t2 += (h * h)[:, None]
    e /= t2  # e^{-t^2/2} / (h^2 + t^2), in place (fewer (n, 32) temporaries)
    return (L * h) * _rowdot(e, _GL_W)


def log_edge_pieces(h, ta, tb) -> np.ndarray:
    """``log B(h, ta, tb)``, ``B = e^{-h^2/2}/(2 pi) int_ta^tb e^{-t^2/2} h/(h^2+t^2) dt``.

    ``B`` is the Owen's-T difference ``T(h, tb/h) - T(h, ta/h)``, evaluated without
    cancellation and without underflow.

    Parameters
    ----------
    h : ndarray, shape (n,)
        Distances of the lines from the mean, ``h > 0``.
    ta, tb : ndarray, shape (n,)
        ``0 <= ta < tb <= inf`` (positions along the line, measured from the foot).

    NaN in any argument, arguments of different shapes and values outside those ranges are
    errors (``ValueError`` naming them); scalars broadcast.
    """
    h = np.asarray(h, dtype=np.float64)
    ta = np.asarray(ta, dtype=np.float64)
    tb = np.asarray(tb, dtype=np.float64)
    reject_nan(h, "h", "the distances of the lines from the mean, h > 0")
    reject_nan(ta, "ta", "the pieces' starts along the line, 0 <= ta < tb")
    reject_nan(tb, "tb", "the pieces' ends along the line, ta < tb <= inf")
    try:
        shape = np.broadcast_shapes(h.shape, ta.shape, tb.shape)
    except ValueError:
        raise ValueError(
            f"h, ta and tb must have one shape (n,) (or broadcast): got {h.shape}, {ta.shape} "
            f"and {tb.shape}"
        ) from None
    h, ta, tb = (np.broadcast_to(a, shape).ravel() for a in (h, ta, tb))
    for bad, what in (
        (~(h > 0) | ~np.isfinite(h), "h must be positive and finite (a line's distance)"),
        (~(ta >= 0) | ~(ta < tb), "the pieces need 0 <= ta < tb"),
    ):
        if bad.any():
            raise ValueError(f"{what}: {int(bad.sum())} values are not (first {np.argmax(bad)})")
    return _log_edge_pieces(h, ta, tb).reshape(shape)


def _log_edge_pieces(h, ta, tb) -> np.ndarray:
    """:func:`log_edge_pieces` without the NaN check (the tail-safe path's own pieces)."""
    out = np.empty_like(h)
    far = ta >= _T_LAG
    i = np.flatnonzero(far)
    if i.size:
        out[i] = -0.5 * (h[i] * h[i] + ta[i] * ta[i]) - LOG_2PI + _laguerre_part(h[i], ta[i], tb[i])
    i = np.flatnonzero(~far)
    if i.size:
        hh, aa, bb = h[i], ta[i], tb[i]
        tc = np.minimum(bb, _T_LAG)
        V = np.empty_like(hh)
        gl = (hh >= 1.0) | (tc - aa <= np.maximum(hh, aa))
        j = np.flatnonzero(gl)
        if j.size:
            V[j] = _gl_near_foot(hh[j], aa[j], tc[j])
        j = np.flatnonzero(~gl)
        if j.size:
            hj = hh[j]
            d = owens_t(hj, tc[j] / hj) - owens_t(hj, aa[j] / hj)
            V[j] = 2.0 * np.pi * np.exp(0.5 * hj * hj) * d
        tail = np.zeros_like(hh)
        j = np.flatnonzero(bb > _T_LAG)
        if j.size:
            four = np.full(j.size, _T_LAG)
            tail[j] = np.exp(-0.5 * _T_LAG**2 + _laguerre_part(hh[j], four, bb[j]))
        out[i] = -0.5 * hh * hh - LOG_2PI + np.log(V + tail)
    return out


def _lse(x, mask, axis):
    """log-sum-exp over ``axis`` of the entries where ``mask``; ``-inf`` if none."""
    xm = np.where(mask, x, -np.inf)
    mx = np.max(xm, axis=axis, keepdims=True)
    mxs = np.where(np.isfinite(mx), mx, 0.0)
    s = np.sum(np.where(mask, np.exp(xm - mxs), 0.0), axis=axis)
    return np.squeeze(mxs, axis=axis) + np.log(s)


def _tail_mass(cu, t0, t1, use, omega):
    """Tail-safe log mass and the ratio (sum of |pieces|) / mass, for the given pairs."""
    h = np.abs(cu)
    # two pieces per edge: [0, -t0] and [0, t1] if t0 < 0 < t1; else one piece.
    straddle = (t0 < 0) & (t1 > 0)
    pos = t0 >= 0
    a1 = np.where(straddle, 0.0, np.where(pos, t0, -t1))
    b1 = np.where(straddle, -t0, np.where(pos, t1, -t0))
    a2 = np.zeros_like(t0)
    b2 = t1
    valid1 = use
    valid2 = use & straddle
    la = np.concatenate([a1, a2], axis=1)
    lb = np.concatenate([b1, b2], axis=1)
    hh = np.concatenate([h, h], axis=1)
    valid = np.concatenate([valid1, valid2], axis=1) & (la < lb)
    sg = np.concatenate([np.sign(cu), np.sign(cu)], axis=1)
    logB = np.full(la.shape, -np.inf)
    with np.errstate(all="ignore"):
        logB[valid] = _log_edge_pieces(hh[valid], la[valid], lb[valid])
        front = valid & (sg < 0)
        back = valid & (sg > 0)
        lom = np.log(omega)[:, None]
        Lf = _lse(
            np.concatenate([logB, lom], axis=1), np.concatenate([front, omega[:, None] > 0], 1), 1
        )
        Lb = _lse(logB, back, axis=1)
        diff = Lb - Lf
        logm = np.where(diff < 0, Lf + np.log1p(-np.exp(diff)), -np.inf)
        logm = np.where(np.isneginf(Lb), Lf, logm)
        ratio = np.exp(np.logaddexp(Lf, Lb) - logm)
        # End points: their absolute rounding is ~eps (|t| + h) (a vertex is computed at
        # |u| ~ sqrt(h^2 + t^2) and shared by projection), which the mass feels through
        # |dB/dt| = phi2(h, t) h / (h^2 + t^2); relative to a thin polygon's width this is far
        # more than eps * ratio.  Split points (the feet, t = 0) are exact.
        real_a = np.concatenate([valid1 & ~straddle, np.zeros_like(valid2)], axis=1) & valid
        real_b = valid & np.isfinite(lb)
        t = np.concatenate([la, lb], axis=1)
        h2 = np.concatenate([hh, hh], axis=1)
        r2 = h2 * h2 + t * t
        ld = -0.5 * r2 - LOG_2PI + np.log(h2 / r2) + np.log(_T_ERR * EPS * (h2 + np.abs(t)))
        ends = np.exp(_lse(ld, np.concatenate([real_a, real_b], axis=1), 1) - logm)
    return logm, ratio, ends


# --------------------------------------------------------------------------------------------
# small-polygon cubature
# --------------------------------------------------------------------------------------------
def _vertices(nu, cu, t0, t1, nonempty) -> Vertices:
    """Edge end points, vertex centroid, radius and boundedness of polygons."""
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    with np.errstate(all="ignore"):
        foot = np.where(nonempty[..., None], cu[..., None] * nu, 0.0)
        P0 = foot + t0[..., None] * tau
        P1 = foot + t1[..., None] * tau
        bounded = np.all(~nonempty | (np.isfinite(t0) & np.isfinite(t1)), axis=1) & np.any(
            nonempty, axis=1
        )
        cnt = np.maximum(nonempty.sum(axis=1), 1)
        g = np.sum(np.where(nonempty[..., None] & bounded[:, None, None], P0, 0.0), axis=1)
        g = g / cnt[:, None]
        dist = np.hypot(P0[..., 0] - g[:, None, 0], P0[..., 1] - g[:, None, 1])
        R = np.max(np.where(nonempty, dist, 0.0), axis=1)
        R = np.where(bounded, R, np.inf)
    return Vertices(P0, P1, g, R, bounded)


def _cub_sums(coef, level, ncol):
    """Node sums ``(n_rows, ncol)`` of ``e^q`` times the first ``ncol`` monomials, per edge row.

    ``coef`` (n_rows, 5) are the exponent coefficients of each fan triangle and ``level`` the
    rule index of each row.
    """
    out = np.empty((coef.shape[0], ncol))
    for lv in np.unique(level):
        expo, sums = _CUB_RULES[lv]
        idx = np.flatnonzero(level == lv)
        # small blocks keep the two skinny products in cache (and single-threaded in BLAS)
        step = max(64, _CUB_BLOCK // expo.shape[1])
        Q = np.empty((min(step, idx.size), expo.shape[1]))
        for b in range(0, idx.size, step):
            ib = idx[b : b + step]
            q = Q[: ib.size]
            np.matmul(coef[ib], expo, out=q)  # exponents at the nodes
            np.exp(q, out=q)
            # per-row sums (no BLAS: a row's value must not depend on its block)
            for k in range(ncol):
                out[ib, k] = np.einsum("ij,j->i", q, sums[:, k])
    return out


def _cubature(P0, P1, g, nonempty, R, moments: bool, local=None):
    """Mass (log) and optionally moments of N(0, I) on small bounded polygons by fan cubature.

    The polygon is the fan of triangles ``(g, P0_e, P1_e)`` around the vertex centroid ``g``;
    with ``v = u - g`` the density is ``phi_2(g) exp(q(v))``, ``q(v) = -g.v - |v|^2/2``, whose
    spread over the polygon is at most ``spread = R (|g| + R/2)`` (``R``: the largest vertex
    distance from ``g``).  Each triangle uses the collapsed ``n x n`` Gauss-Legendre rule of
    ``_CUB_LEVELS`` for that spread and for ``R^2/2`` (the moments: the next rule up).  All
    weights are positive: no cancellation.

    ``local``, optional: ``(a0, d10, size)``, the fan triangles' edges ``P0 - g`` and
    ``P1 - P0`` (P, F, 2, zero on empty rows) formed in a :class:`LocalFrame` (``g`` its
    anchor; ``P0``, ``P1`` unused) and the rounding scale of their vertices (P,).

    Returns ``logm (P,)``, ``cond (P,)`` (relative conditioning on the vertices), and if
    ``moments`` the mean ``(P, 2)`` and covariance ``(P, 2, 2)``, else ``None, None``.
    """
    P, F = nonempty.shape
    spread = R * (np.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    ne = nonempty[..., None]
    if local is None:
        a0 = np.where(ne, P0 - g[:, None, :], 0.0)  # (P, F, 2)
        d10 = np.where(ne, P1 - P0, 0.0)
    else:
        a0, d10 = local[0], local[1]
    det = a0[..., 0] * d10[..., 1] - a0[..., 1] * d10[..., 0]  # 2 * area (>= 0)
    pi_, fi_ = np.nonzero(nonempty)
    ra, rd, rg = a0[pi_, fi_], d10[pi_, fi_], g[pi_]
    coef = np.empty((pi_.size, 5))
    coef[:, 0] = ra[:, 0] * rg[:, 0] + ra[:, 1] * rg[:, 1]
    coef[:, 1] = rd[:, 0] * rg[:, 0] + rd[:, 1] * rg[:, 1]
    coef[:, 2] = ra[:, 0] * ra[:, 0] + ra[:, 1] * ra[:, 1]
    coef[:, 3] = ra[:, 0] * rd[:, 0] + ra[:, 1] * rd[:, 1]
    coef[:, 4] = rd[:, 0] * rd[:, 0] + rd[:, 1] * rd[:, 1]
    level = np.maximum(
        np.searchsorted(_CUB_BOUNDS, spread), np.searchsorted(_CUB_QBOUNDS, 0.5 * R * R)
    )  # spread <= bound and beta <= qbound
    Srow = _cub_sums(coef, level[pi_], 1)
    if moments:  # one level up: the moments need a higher degree
        top = len(_CUB_RULES) - 1
        Srow = np.concatenate(
            [Srow, _cub_sums(coef, np.minimum(level + _CUB_MOM_SHIFT, top)[pi_], 6)], axis=1
        )
    S = np.zeros((P, F, Srow.shape[1]))
    S[pi_, fi_] = Srow
    S *= det[..., None]
    Z = S[..., 0].sum(axis=1)
    logm = -0.5 * (g[:, 0] ** 2 + g[:, 1] ** 2) - LOG_2PI + np.log(Z)
    # conditioning: one ulp of the offsets moves the vertices by ~eps |P0|, i.e. the mass by
    # ~eps |P0| * perimeter / area relative.
    perim = np.sum(np.hypot(d10[..., 0], d10[..., 1]), axis=1)
    if local is None:
        size = np.max(np.where(nonempty, np.hypot(P0[..., 0], P0[..., 1]), 0.0), axis=1)
    else:
        size = local[2]
    cond = EPS * size * perim / (0.5 * det.sum(axis=1))
    # A fan of no positive area is no polygon: vertices below their own rounding (a polygon of
    # ~1e-13 at 1e3 sd given by its rows, see log_mass_2d): -inf, not the NaN of log(Z < 0)
    ok = Z > 0
    logm = np.where(ok, logm, -np.inf)
    cond = np.where(ok, cond, np.inf)
    if not moments:
        return logm, cond, None, None
    # E[v] and E[v v^T] about g from the node sums of a, ab, a^2, a ab, (ab)^2
    S = S[..., 1:] / S[..., 1].sum(axis=1)[:, None, None]  # the higher rule's sums
    Ev = np.einsum("pf,pfd->pd", S[..., 1], a0) + np.einsum("pf,pfd->pd", S[..., 2], d10)
    cross = np.einsum("pf,pfd,pfe->pde", S[..., 4], a0, d10)
    M2 = (
        np.einsum("pf,pfd,pfe->pde", S[..., 3], a0, a0)
        + cross
        + np.swapaxes(cross, 1, 2)
        + np.einsum("pf,pfd,pfe->pde", S[..., 5], d10, d10)
    )
    cov = M2 - Ev[:, :, None] * Ev[:, None, :]
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return logm, cond, g + Ev, cov


def _tail_moments(nu, cu, t0, t1, nonempty):
    """Moments of far polygons (mean outside, distance ``D >= _TAIL_D``) by slicing.

    With ``p`` the closest point of the polygon, ``D = |p|``, ``n* = p / D`` and
    ``tau* = rot90(n*)``, write ``u = p + r n* + s tau*`` (``r >= 0`` on the polygon); then
    ``phi_2(u) = phi(D) e^{-D r - r^2/2} phi(s)`` and, for each ``r``, the polygon's ``s``-range is
    an interval.  The mass and moments are 1-D integrals over ``r`` of the interval's
    (mass, mean, variance) from :func:`interval_stats`, done by 32-node Gauss-Legendre on panels
    between the vertices' ``r``-values (and, for rows nearly along ``n*``, the ``r`` where their
    bound crosses ``s = -8, 0, 8``), truncated where ``D r + r^2/2 = 45``.  All quantities are
    small positive numbers computed directly, so ``Var[r] ~ 1/D^2`` keeps its relative accuracy
    (the divergence form loses ``eps D^4``).

    Returns ``mean (P, 2)``, ``cov (P, 2, 2)``.
    """
    P = cu.shape[0]
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    D, nstar, pnt, _, _ = _closest_point(nu, cu, t0, t1, nonempty, tau)
    tstar = np.stack([-nstar[:, 1], nstar[:, 0]], axis=-1)
    a = np.einsum("pfk,pk->pf", nu, nstar)
    b = np.einsum("pfk,pk->pf", nu, tstar)
    dd = cu - np.einsum("pfk,pk->pf", nu, pnt)
    act = nonempty | (np.isfinite(cu) & (np.abs(nu).sum(-1) > 0))
    # breakpoints: every finite vertex is the t1-end of one edge; a free slot (t1 = inf) takes
    # the r of a constraint parallel to tau* (the far side of a strip), if any.
    rmax = 90.0 / (D + np.sqrt(D * D + 90.0))
    v = cu[..., None] * nu + np.where(np.isfinite(t1), t1, 0.0)[..., None] * tau
    rv = np.einsum("pfk,pk->pf", v, nstar) - D[:, None]
    rpar = np.where(act & (b == 0) & (a != 0), dd / a, 0.0)
    slot = np.where(nonempty & np.isfinite(t1), rv, rpar)
    bp = np.concatenate([np.zeros((P, 1)), slot, rmax[:, None]], axis=1)
    bp = np.sort(np.clip(bp, 0.0, rmax[:, None]), axis=1)
    # A facet nearly parallel to tau* sweeps its s-bound through [-8, 8] within r0 +- 8 sig
    # (sig = |b/a|, r0 = dd/a); where a panel there is long against that window (_SWEEP_K),
    # the row gets breakpoints where its bound crosses s = -8, 0, 8.
    with np.errstate(all="ignore"):
        sig = np.abs(b / a)
        r0 = dd / a
    steep = act & (b != 0) & (a != 0) & _sweep_unresolved(bp, r0, sig)  # windows in range
    if steep.any():
        ex = np.where(steep[..., None], r0[..., None] + sig[..., None] * _SWEEP_S, 0.0)
        bp = np.concatenate([bp, np.clip(ex.reshape(P, -1), 0.0, rmax[:, None])], axis=1)
    return _by_width(_slice_moments, bp, a, b, dd, act, D, pnt, nstar, tstar)


def _distinct(bp):
    """Breakpoints ``bp`` (P, B) in [0, rmax] (each row holds its rmax): sorted, each row's
    repeated values moved to its end as copies of its rmax (empty panels); and the number of
    distinct values of each row (P,)."""
    bp = np.sort(bp, axis=1)
    rep = np.zeros(bp.shape, dtype=bool)
    rep[:, 1:] = bp[:, 1:] == bp[:, :-1]
    out = np.sort(np.where(rep, np.inf, bp), axis=1)
    return np.where(np.isinf(out), bp[:, -1:], out), (~rep).sum(axis=1)


def _by_width(fun, bp, *rows):
    """``fun(bp, *rows)`` on groups of rows of similar width: each group's breakpoints cut to
    its most distinct values (rounded up to a multiple of 4), so no rule nodes go to the empty
    panels a wider row would force on all.  Returns ``fun``'s outputs, in row order."""
    if bp.shape[0] == 0:
        return fun(bp, *rows)
    bp, count = _distinct(bp)
    width = np.minimum(-(-np.maximum(count, 2) // 4) * 4, bp.shape[1])
    outs = None
    for w in np.unique(width):
        i = np.flatnonzero(width == w)
        res = fun(bp[i, :w], *(r[i] for r in rows))
        if outs is None:
            outs = [np.empty((bp.shape[0], *o.shape[1:]), dtype=o.dtype) for o in res]
        for o, v in zip(outs, res, strict=True):
            o[i] = v
    return tuple(outs)


def _closest_point(nu, cu, t0, t1, nonempty, tau):
    """The polygon's closest point to the mean (outside it): distance ``D`` (P,), direction
    ``n*`` and point ``p = D n*`` (P, 2), the edge ``k`` (P,) it lies on and whether it is that
    edge's foot (P,) (else one of its ends)."""
    rows = np.arange(cu.shape[0])
    tst = np.clip(0.0, t0, t1)
    d2 = np.where(nonempty, cu * cu + tst * tst, np.inf)
    k = np.argmin(d2, axis=1)
    ck, tk = cu[rows, k], tst[rows, k]
    nk, tauk = nu[rows, k], tau[rows, k]
    on_edge = tk == 0.0
    pnt = ck[:, None] * nk + tk[:, None] * tauk
    D = np.where(on_edge, -ck, np.hypot(pnt[:, 0], pnt[:, 1]))
    nstar = np.where(on_edge[:, None], -nk, pnt / D[:, None])
    pnt = D[:, None] * nstar
    return D, nstar, pnt, k, on_edge


def _sweep_unresolved(bp, r0, sig):
    """(P, F) whether a panel of ``bp`` (P, B) overlapping a row's transition window
    ``r0 +- 8 sig`` is longer than ``_SWEEP_K`` times that window (the rule on it cannot
    resolve ``Phi`` of the row's bound); False where the window misses ``[0, rmax]`` (it then
    overlaps no panel)."""
    lo, hi = bp[:, None, :-1], bp[:, None, 1:]
    with np.errstate(all="ignore"):
        over = (lo < (r0 + 8.0 * sig)[..., None]) & (hi > (r0 - 8.0 * sig)[..., None])
        L = np.max(np.where(over, hi - lo, 0.0), axis=2)
        return L > _SWEEP_K * 16.0 * sig


def _slice_nodes(bp, a, b, dd, act):
    """The slices' Gauss-Legendre nodes ``r`` and weights ``wr`` (P, K) on the panels between
    the sorted breakpoints ``bp`` (P, B), and at each node the slice's ``s``-range
    ``[slo, shi]`` (P, K) and whether an ``s``-free row excludes it (``viol``)."""
    P = bp.shape[0]
    lo, ln = bp[:, :-1], np.diff(bp, axis=1)
    r = (lo[..., None] + ln[..., None] * _GL_X).reshape(P, -1)  # (P, K)
    wr = (ln[..., None] * _GL_W).reshape(P, -1)
    ar = a[:, None, :] * r[..., None]
    bnd = (dd[:, None, :] - ar) / b[:, None, :]
    actb = act[:, None, :]
    shi = np.min(np.where(actb & (b[:, None, :] > 0), bnd, np.inf), axis=2)
    slo = np.max(np.where(actb & (b[:, None, :] < 0), bnd, -np.inf), axis=2)
    viol = np.any(actb & (b[:, None, :] == 0) & (ar > dd[:, None, :]), axis=2)
    return r, wr, slo, shi, viol


def _slice_moments(bp, a, b, dd, act, D, pnt, nstar, tstar):
    """:func:`_tail_moments`' integrals over ``r`` on the panels between the sorted
    breakpoints ``bp (P, B)``; returns ``mean (P, 2)``, ``cov (P, 2, 2)``."""
    r, wr, slo, shi, viol = _slice_nodes(bp, a, b, dd, act)
    lms, ms, vs = _interval_stats(slo, shi)
    lf = -D[:, None] * r - 0.5 * r * r + np.where(viol, -np.inf, lms)
    lf = np.where(wr > 0, lf, -np.inf)
    mx = np.max(lf, axis=1, keepdims=True)
    om = wr * np.exp(lf - mx)
    ms = np.where(om > 0, ms, 0.0)
    vs = np.where(om > 0, vs, 0.0)
    Z = om.sum(axis=1)
    Er = (om * r).sum(axis=1) / Z
    Es = (om * ms).sum(axis=1) / Z
    dr = r - Er[:, None]
    ds = ms - Es[:, None]
    Vr = (om * dr * dr).sum(axis=1) / Z
    Crs = (om * dr * ds).sum(axis=1) / Z
    Vs = (om * (vs + ds * ds)).sum(axis=1) / Z
    Rm = np.stack([nstar, tstar], axis=-1)  # columns n*, tau*
    mean = pnt + Er[:, None] * nstar + Es[:, None] * tstar
    Crs_m = np.stack([np.stack([Vr, Crs], -1), np.stack([Crs, Vs], -1)], -2)
    cov = Rm @ Crs_m @ np.swapaxes(Rm, 1, 2)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return mean, cov


# --------------------------------------------------------------------------------------------
# slicing mass: pairs whose edge-formula sum cancels beyond its resolution
# --------------------------------------------------------------------------------------------
def _slice_logz(bp, a, b, dd, act, D):
    """log ``int e^{-D r - r^2/2} (Phi(shi(r)) - Phi(slo(r))) dr`` over the panels between the
    sorted breakpoints ``bp`` (P, B), 32-node Gauss-Legendre on each (rows as in
    :func:`_slice_moments`). Every term is positive: no cancellation."""
    with np.errstate(all="ignore"):
        r, wr, slo, shi, viol = _slice_nodes(bp, a, b, dd, act)
        lms, _ = _log_interval_mass(slo, shi)
        lf = -D[:, None] * r - 0.5 * r * r + np.log(wr) + np.where(viol, -np.inf, lms)
        return _lse(lf, wr > 0, 1)


def _slice_breakpoints(a, b, dd, act, rv, rlo, rhi, splits):
    """Sorted panel breakpoints (P, B) on ``[rlo, rhi]`` for slicing rows ``a r + b s <= dd``
    (P, F), and the same with every panel halved (the finer rule of :func:`_slice_mass`).

    Breakpoints: the vertices' ``r`` (``rv`` (P, V)), the rows parallel to the slices, the
    fixed ``splits`` (P, S) and, for each row that sweeps its ``s``-bound across the core
    (``|s| <= 40``) within the range, where the bound crosses ``s = 0, +-2, +-4, +-8, +-40``: on
    each panel the integrand is smooth and varies by a bounded factor.
    """
    P = a.shape[0]
    lo_, hi_ = rlo[:, None], rhi[:, None]
    with np.errstate(all="ignore"):
        rpar = np.where(act & (b == 0) & (a != 0), dd / a, lo_)
        sig = np.abs(b / a)
        r0 = dd / a
        sweep = act & (b != 0) & (a != 0) & (r0 + 40.0 * sig > lo_) & (r0 - 40.0 * sig < hi_)
        sweep &= 80.0 * sig < hi_ - lo_
        ex = r0[..., None] + sig[..., None] * _SWEEP_S_MASS
        ex = np.where(sweep[..., None], ex, lo_[..., None]).reshape(P, -1)
    bp = np.concatenate([lo_, rv, rpar, splits, ex, hi_], axis=1)
    bp = np.sort(np.clip(np.where(np.isfinite(bp), bp, lo_), lo_, hi_), axis=1)
    fine = np.sort(np.concatenate([bp, 0.5 * (bp[:, :-1] + bp[:, 1:])], axis=1), axis=1)
    return bp, fine


def _slice_mass(a, b, dd, act, D, bp, fine):
    """``log int e^{-D r - r^2/2} m_s(r) dr`` (``m_s``: the standard normal mass of the
    slice's ``s``-interval) on the panels of :func:`_slice_breakpoints`, and its quadrature
    error: the rule runs on the panels and on their halves; the finer sum is returned, the
    difference of the two is the error estimate (an embedded check, not a bound one has to
    trust)."""
    coarse = _slice_logz(bp, a, b, dd, act, D)
    lz = _slice_logz(fine, a, b, dd, act, D)
    with np.errstate(invalid="ignore"):
        qerr = np.abs(lz - coarse)
    return lz, np.where(np.isfinite(qerr), qerr, np.inf)


def _slice_rows(nu, off, p, nstar):
    """Rows ``n . x <= off`` (P, F) as ``a r + b s <= dd`` around the point ``p`` (P, 2) (same
    frame as ``off``) with ``x = p + r n* + s tau*``; also ``tau*``."""
    tstar = np.stack([-nstar[:, 1], nstar[:, 0]], axis=-1)
    a = np.einsum("pfk,pk->pf", nu, nstar)
    b = np.einsum("pfk,pk->pf", nu, tstar)
    with np.errstate(invalid="ignore"):
        dd = off - np.einsum("pfk,pk->pf", nu, p)
    return a, b, dd, tstar


def _far_splits(D):
    """``rmax`` where ``D r + r^2/2 = 45`` and splits where it is 1, 3, 8, 20 (P,), (P, 4)."""
    E = np.array([1.0, 3.0, 8.0, 20.0, 45.0])
    r = 2.0 * E / (D[:, None] + np.sqrt(D[:, None] ** 2 + 2.0 * E))
    return r[:, -1], r[:, :-1]


def _edge_mass_log(cu, t0, t1, nonempty):
    """(P, F) ``log(phi(c) (Phi(t1) - Phi(t0)))``, each edge's line integral of the density
    (``-inf`` off the edges)."""
    with np.errstate(all="ignore"):
        lm1, _ = _log_interval_mass(np.where(nonempty, t0, 0.0), np.where(nonempty, t1, 1.0))
        out = log_phi(np.where(nonempty, cu, 0.0)) + lm1
    return np.where(nonempty, out, -np.inf)


@dataclass
class Sliced:
    """:func:`_slice_pairs`' result for ``n`` pairs: ``log_mass``, ``error`` (n,), ``local``
    (n,) which used their :class:`LocalFrame`, ``mean`` (n, 2) and ``cov`` (n, 2, 2) (None
    unless asked for)."""

    log_mass: np.ndarray
    error: np.ndarray
    local: np.ndarray
    mean: np.ndarray | None
    cov: np.ndarray | None


def _slice_pairs(edges: Edges, rows: np.ndarray, local: LocalFrame | None, moments: bool):
    """Log mass (and moments) of pairs ``rows`` by slicing, with no cancellation.

    Mean outside the polygon: slices perpendicular to the direction ``n*`` of the closest point
    ``p`` (``D = |p|``), ``u = p + r n* + s tau*``, ``r`` in ``[0, rmax]`` (as
    :func:`_tail_moments`); the rows are taken about ``p`` in the pairs' :class:`LocalFrame`
    if they have one (``p`` an exact local point), else about the mean. Mean inside (or on the
    boundary): slices through the mean (``D = 0``) perpendicular to the nearest row,
    ``r`` in ``[-9.5, 9.5]`` (where ``e^{-r^2/2} < e^{-45}``). The moments as in
    :func:`_slice_moments`, on the finer panels.

    The error estimate: quadrature (the embedded check of :func:`_slice_mass`) plus the
    rounding of the rows about ``p`` (each edge's line mass times ``eps`` times the rows'
    length scale, relative to ``m``) and, with a local frame, the shift of the whole polygon by
    the rounding of its anchor.
    """
    nu, cu, t0, t1 = edges.nu[rows], edges.cu[rows], edges.t0[rows], edges.t1[rows]
    ne, act = edges.nonempty[rows], edges.active[rows]
    n = rows.size
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    with np.errstate(all="ignore"):
        cmin = np.min(np.where(act, cu, np.inf), axis=1)
    outside = cmin < 0
    if outside.any():  # a closest point at distance 0 (the mean on the boundary, rounded
        i = np.flatnonzero(outside)  # outside): slices through the mean
        with np.errstate(all="ignore"):
            D = _closest_point(nu[i], cu[i], t0[i], t1[i], ne[i], tau[i])[0]
        outside[i[~(D > 0)]] = False
    logm, err = np.full(n, -np.inf), np.full(n, np.inf)
    mean = np.full((n, 2), np.nan) if moments else None
    cov = np.full((n, 2, 2), np.nan) if moments else None
    lem = _edge_mass_log(cu, t0, t1, ne)
    fin1 = np.isfinite(t1)
    with np.errstate(all="ignore"):  # padding rows (inf offsets, zero normals) give NaN
        for inner in (False, True):
            i = np.flatnonzero(outside != inner)
            if i.size == 0:
                continue
            nui, cui, tui = nu[i], cu[i], tau[i]
            if inner:  # through the mean, perpendicular to the nearest row
                k = np.argmin(np.where(act[i], np.abs(cui), np.inf), axis=1)
                nstar = -nui[np.arange(i.size), k]
                D = np.zeros(i.size)
                p = pnt = np.zeros((i.size, 2))
                off = cui
                v = cui[..., None] * nui + np.where(fin1[i], t1[i], 0.0)[..., None] * tui
                vlen = np.abs(off)
                shift = np.zeros(i.size)
                rhi = np.full(i.size, _SLICE_R)
                rlo, splits = -rhi, np.broadcast_to(_SLICE_SPLITS, (i.size, _SLICE_SPLITS.size))
            else:
                with np.errstate(all="ignore"):
                    D, nstar, pnt, k, on_edge = _closest_point(nui, cui, t0[i], t1[i], ne[i], tui)
                if local is None:
                    p, off = pnt, cui
                    v = cui[..., None] * nui + np.where(fin1[i], t1[i], 0.0)[..., None] * tui
                    vlen = np.abs(off) + D[:, None]
                    shift = np.zeros(i.size)
                else:
                    fr, j = local, np.arange(i.size)
                    m = -fr.anchor[i]  # the mean seen from the anchor
                    nk, tk_, offk = nui[j, k], tui[j, k], fr.off[i, k]
                    with np.errstate(invalid="ignore"):
                        tm = np.einsum("pk,pk->p", tk_, m)  # the mean's foot on row k, along it
                        foot = offk[:, None] * nk + tm[:, None] * tk_
                        at1 = t1[i, k] == np.clip(0.0, t0[i, k], t1[i, k])
                        end = np.where(at1[:, None], fr.q1[i, k], fr.q0[i, k])
                        p = np.where(on_edge[:, None], foot, end)
                        pnt = p - m  # the closest point seen from the mean
                        D = np.where(on_edge, np.einsum("pk,pk->p", nk, m) - offk, np.hypot(*pnt.T))
                        nstar = np.where(on_edge[:, None], -nk, pnt / D[:, None])
                    off = fr.off[i]
                    v = np.where(fin1[i][..., None], fr.q1[i], 0.0)
                    vlen = np.abs(off) + np.hypot(p[:, 0], p[:, 1])[:, None]
                    shift = np.hypot(fr.anchor[i, 0], fr.anchor[i, 1]) * (D + 2.0)
                rhi, splits = _far_splits(D)
                rlo = np.zeros(i.size)
            a, b, dd, tstar = _slice_rows(nui, off, p, nstar)
            with np.errstate(invalid="ignore"):
                rv = np.einsum("pfk,pk->pf", v - p[:, None, :], nstar)
            rv = np.where(ne[i] & fin1[i], rv, rlo[:, None])
            bp, fine = _slice_breakpoints(a, b, dd, act[i], rv, rlo, rhi, splits)
            lz, qe = _slice_mass(a, b, dd, act[i], D, bp, fine)
            good = inner | (D > 0)
            with np.errstate(all="ignore"):
                lm = np.where(good, -0.5 * D * D - 0.5 * LOG_2PI + lz, -np.inf)
                # an edge's line mass is at most phi(D) (1 + 1/D) sqrt(2) (the polygon lies in
                # r >= 0, where phi_2 = phi(D) e^{-D r - r^2/2} phi(s)): a bound that keeps the
                # mean-frame edge masses (rounded at ~eps |log m| in their exponents) from
                # overflowing the ratio far out
                cap = np.where(
                    inner, np.inf, -0.5 * D * D - 0.5 * LOG_2PI + np.log1p(1.0 / D) + 0.35
                )
                lem_i = np.minimum(lem[i], cap[:, None])
                rnd = _T_ERR * EPS * np.exp(_lse(lem_i + np.log(vlen), ne[i], 1) - lm)
            logm[i] = lm
            with np.errstate(invalid="ignore"):
                err[i] = np.where(good, 1e-14 + 2.0 * qe + rnd + 4.0 * EPS * shift, np.inf)
            if moments:
                with np.errstate(all="ignore"):
                    mean[i], cov[i] = _slice_moments(fine, a, b, dd, act[i], D, pnt, nstar, tstar)
    with np.errstate(invalid="ignore"):
        err = np.where(np.isfinite(logm) & np.isfinite(err), err, np.inf)
    return Sliced(logm, err, outside & (local is not None), mean, cov)


# --------------------------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------------------------
def _distance_bound(cu, t0, t1, nonempty):
    """(P,) ``log Q(δ)`` with ``δ`` the distance from the mean (origin) to the polygon (0 inside).

    The polygon lies in the half-plane beyond its closest point, so its mass is at most
    ``Q(δ)``: a tighter bound than any single facet's ``Φ(c_i)``. The closest point of edge ``e``
    is ``c_e n_e + clip(0, t0, t1) τ_e``.
    """
    with np.errstate(all="ignore"):
        d2 = np.min(np.where(nonempty, cu * cu + np.clip(0.0, t0, t1) ** 2, np.inf), axis=1)
        outside = np.min(np.where(nonempty, cu, np.inf), axis=1) < 0
        return np.where(outside & np.isfinite(d2), log_ndtr(-np.sqrt(d2)), 0.0)


def _vertex_error(cu, t0, t1, nonempty, logm, ext=None, lengths=None):
    """(P,) first-order error of ``log m`` from the rounding of the polygons' vertices.

    A vertex where rows ``e`` and ``j`` meet at angle ``theta`` is computed with an error of
    ``~eps (|c_e| + |c_j| + |t|) / sin(theta)`` along the rows (their offsets and
    ``n_j . tau_e = sin(theta)`` are rounded), which is the effect of perturbing the offset
    ``c_e`` by ``~eps (|c_e| + |t|)`` (and ``c_j`` alike). The mass feels an offset through
    ``dm / dc_e = phi(c_e) (Phi(t1) - Phi(t0))`` (the edge's own mass), but only near the vertex;
    taken here as ``phi(c_e) phi(t) l eps (8 (|c_e| + |t|) + 2 min(l, 1))``, ``l = min(t1 - t0,
    sqrt(2 pi), 1 / |t|)``, summed over the edge's finite ends ``t``: the edge's mass within the
    decay length ``l`` of the vertex, moved by the vertex's rounding and by the rounding of the
    row's direction (a turn by ``<= 2 eps`` about the vertex, whose lever arm to that mass is
    ``min(l, 1)``: ``int_0^inf u phi(u) du = phi(0)``; thin spikes near the mean, two rows
    ``1e-8`` from antiparallel, were 67 times their estimate without it).
    Not a proof: checked against mpmath on thin wedges (5 to 1e6 sd, openings 1e-9 to 1: the
    true error is <= 1e-3 of this) and random polygons (``tests/gaussian/test_adversarial.py``).
    For a sharp corner far out this is far above ``eps |log m|``; elsewhere it is ~eps. Edges
    without a vertex (lines of half-planes and strips) are taken exactly. ``lengths``, optional:
    the ends' own length scales (P, F) x 2 in place of ``|c_e| + |t| + ext`` (the pairs done in
    their :class:`LocalFrame`, whose vertices keep the table's precision).
    """
    with np.errstate(all="ignore"):
        f0, f1 = np.isfinite(t0), np.isfinite(t1)
        if not (nonempty & (f0 | f1)).any():
            return np.zeros(cu.shape[0])
        ext = 0.0 if ext is None else (ext[:, None] if ext.ndim == 1 else ext)
        loc = np.minimum(np.log(t1 - t0), 0.5 * LOG_2PI)
        base = np.log(EPS) - 0.5 * cu * cu - LOG_2PI
        ends = []
        for e, t in enumerate((t0, t1)):  # each vertex: density x its edge's mass near it x
            at = np.abs(t)  # its length scale, and the turn's lever arm to that mass
            near = np.minimum(loc, -np.log(at))
            arm = np.minimum(np.exp(near), 1.0)
            lv = base - 0.5 * t * t + near
            size = np.abs(cu) + at + ext if lengths is None else lengths[e]
            ends.append(lv + np.log(_T_ERR * size + _T_TURN * arm))
        ld = np.concatenate(ends, axis=1)
        has = np.concatenate([nonempty & f0, nonempty & f1], axis=1)
        out = np.exp(_lse(ld, has, 1) - logm)
    return np.where(np.isfinite(out), out, 0.0)


def _shift_error(cu, t0, t1, nonempty, logm, ext, local=None, reach=None):
    """(P,) first-order error of ``log m`` from the rounding of the pairs' translation.

    A pair's polygon is its region's tabulated one moved by the whitened mean ``w``: each row's
    offset ``c_e = c_table - n_e . w`` is rounded by ``~eps (|c_e| + |w|)`` (``ext``, (P,) or
    (P, F), is ``|w|`` or more, with the mapped table vertices' size for mapped pairs; the
    table's own offsets, of that size, carry ``eps`` of it too: a kink's rounding). An
    offset's shift ``δ`` moves the mass by ``δ`` times the edge's line mass
    ``L_e = phi(c_e) (Phi(t1) - Phi(t0))``: ``4 eps Σ_e (|c_e| + |w|) L_e / m``. Near the mean
    of a narrow posterior ``|w|`` is huge (``μ / sd``, 3e8 at a kink's image with
    ``σ = 1e-8``): a half-plane through the mean is then off by ~3e-8, where an edge with no
    vertex near the mass had no term at all (4e-11 estimated, 5e-8 off); MNIST
    [2,32,32,784] pairs (``|w| ~ 1e4``) grew their points' estimates by 0.6%. The edge's
    mass within the decay length of a vertex is left
    out: :func:`_vertex_error` counts it, with this rounding in its size. The pairs
    integrated from their translated vertices (the cubature, and the pairs done in their
    :class:`LocalFrame`: ``local``, indices) keep the table's shape and move as a whole by
    ``δ ~ eps |w|``: ``4 eps |w| |∇_w log m|``, and ``∇_w log m`` is the truncated mean, at
    most ``reach`` (P,) (the vertex centroid's distance plus the radius) away. (Not
    ``Σ_e n_e L_e / m`` from the rounded rows: for a triangle 1e-12 wide 1e4 sd out those are
    dominated by their own rounding.)

    Cost: one compiled pass per pair (``_polygon_kernels.shift_rows``; the edges' masses in
    linear space, on the side of the tail: an estimate needs no more), skipping the edges no
    longer than their ends' decay length (they leave nothing); in numpy over every edge the
    term cost 15% of an MNIST [2,32,32,784] call.
    """
    from ._polygon_kernels import shift_rows  # numba: imported on first use

    P = cu.shape[0]
    ext2 = ext[:, None] if ext.ndim == 1 else ext  # (P,) or per row (P, F)
    out = np.empty(P)
    c = np.ascontiguousarray
    shift_rows(
        c(cu), c(t0), c(t1), c(nonempty), c(logm), c(ext2, dtype=float), ext2.shape[1] > 1, out
    )
    out *= 4.0 * EPS
    if local is not None and local.size:
        with np.errstate(all="ignore"):
            out[local] = 4.0 * EPS * np.max(ext2[local], axis=1) * reach[local]
    return np.where(np.isfinite(out), out, 0.0)


def _log_mass_core(normals, offsets, moments: bool, floor=None):
    """:func:`_integrate` of pairs given by their rows, and which of them to re-anchor (P,):
    those left empty or unresolved although their rows are real, or whose error estimate is
    beyond the log mass's own rounding (see :func:`_reanchored`)."""
    nu, cu, active, bad = _prepare(normals, offsets)
    t0, t1, nonempty, degenerate = polygon_edges(nu, cu, active)
    has_rows = active.any(axis=1)
    empty = bad | degenerate | (has_rows & ~nonempty.any(axis=1))
    verts = _vertices(nu, cu, t0, t1, nonempty)
    res = _integrate(Edges(nu, cu, active, t0, t1, nonempty, empty, verts), moments, floor)
    lm, err = res.log_mass, res.error
    with np.errstate(all="ignore"):
        skipped = (
            np.zeros_like(bad)
            if floor is None
            else (~empty & (_distance_bound(cu, t0, t1, nonempty) < floor))
        )
        loose = err > _REANCHOR_ERR + 8.0 * EPS * (1.0 + np.abs(lm))
    redo = has_rows & ~bad & ~skipped & (~np.isfinite(lm) | loose)
    return res, redo


def _two_prod(x, y):
    """``x * y = p + e`` exactly (Dekker's split; no FMA in numpy)."""
    p = x * y
    sx = _SPLIT * x
    xh = sx - (sx - x)
    xl = x - xh
    sy = _SPLIT * y
    yh = sy - (sy - y)
    yl = y - yh
    e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
    return p, e


def _two_sum(a, b):
    """``a + b = s + e`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _local_offsets(n, c, a):
    """``c - n . a`` (P, F) for raw rows ``n`` (P, F, 2), ``c`` (P, F) and points ``a`` (P, 2),
    without the cancellation of the plain form: the products and the sum are error-free
    transformations, so the result is exact to ``~eps |c - n . a| + eps^2 |c|``."""
    p0, e0 = _two_prod(n[..., 0], a[:, None, 0])
    p1, e1 = _two_prod(n[..., 1], a[:, None, 1])
    s1, r1 = _two_sum(c, -p0)
    s2, r2 = _two_sum(s1, -p1)
    return s2 + ((r1 + r2) - (e0 + e1))


def _anchor_points(nu, cu, active):
    """(P, 2) a point on each polygon's boundary from its float rows: of the rows' pairwise
    intersections the one that violates the rows least (a vertex where the polygon has one);
    rows without an intersection (strips, half-planes): the foot of the first row."""
    P, F = cu.shape
    best = np.where(active[:, :1], cu[:, :1] * nu[:, 0], 0.0)  # the foot of row 0
    score = np.full(P, np.inf)
    with np.errstate(all="ignore"):
        for e, j in itertools.combinations(range(F), 2):
            a, b = nu[:, e], nu[:, j]
            det = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
            v = np.stack(
                [
                    (cu[:, e] * b[:, 1] - cu[:, j] * a[:, 1]) / det,
                    (a[:, 0] * cu[:, j] - b[:, 0] * cu[:, e]) / det,
                ],
                axis=1,
            )
            viol = np.max(np.where(active, np.einsum("pfk,pk->pf", nu, v) - cu, -np.inf), 1)
            ok = active[:, e] & active[:, j] & (det != 0) & np.isfinite(viol) & (viol < score)
            best = np.where(ok[:, None], v, best)
            score = np.where(ok, viol, score)
    return np.where(np.isfinite(best), best, 0.0)


def _reanchored(normals, offsets, floor, redo, out, moments: bool):
    """Redo pairs ``redo`` (P,) given by their rows in a frame at one of their vertices.

    Rows ``n . u <= c`` far from the mean (``|c|`` large) locate a polygon only to
    ``~eps |c|``: its vertices, and with them a polygon smaller than that, a sliver narrower,
    or a sharp corner, are lost in their rounding (-inf, NaN or a huge error estimate). Moving
    the origin to a point ``a`` on the polygon, the rows become ``n . x <= c - n . a``, which
    :func:`_local_offsets` forms exactly from the float input; the polygon is then a
    :class:`PolygonTable` near its origin (exact to the local scale), seen from the mean at
    ``-a`` (:func:`log_mass_2d_shifted`, whose cubature and slicing keep the table's
    precision). Taken where it is finite with a smaller error estimate (or the first was not
    finite); ``out`` (log mass, error[, mean, cov]) is updated in place.
    """
    i = np.flatnonzero(redo)
    if i.size == 0:
        return out
    n = np.asarray(normals, dtype=np.float64)[i]
    c = np.asarray(offsets, dtype=np.float64)[i]
    nu, cu, active, _ = _prepare(n, c)
    a = _anchor_points(nu, cu, active)
    with np.errstate(all="ignore"):
        cl = np.where(np.isfinite(c), _local_offsets(n, c, a), c)
    ok = np.all(np.isfinite(cl) | (cl == np.inf), axis=1)
    if not ok.all():  # overflow in the split (|a| or |n| beyond ~1e300): keep the first result
        i, n, cl, a = i[ok], n[ok], cl[ok], a[ok]
        if i.size == 0:
            return out
    table = polygon_table(n, cl)
    fl = None if floor is None else floor[i]
    fun = _table_moments if moments else _table_mass
    new = _table_chunked(fun, table, np.arange(i.size), -a, fl)
    lm_new, err_new = new[0], new[-1]
    lm_old, err_old = out[0][i], out[-1][i]
    take = np.isfinite(lm_new) & (~np.isfinite(lm_old) | (err_new < err_old))
    for o, v in zip(out, new, strict=True):
        o[i[take]] = v[take]
    return out


def _integrate(edges: Edges, moments: bool, floor=None) -> Integrated:
    """Log mass, its error and the geometry for the moments, from the polygons' edges."""
    nu, cu, active, t0, t1 = edges.nu, edges.cu, edges.active, edges.t0, edges.t1
    nonempty, empty = edges.nonempty, edges.empty
    P = cu.shape[0]
    omega = _omega(nu, cu, active)
    if floor is not None:  # pairs provably below their floor are skipped (mass reported 0)
        empty = empty | (_distance_bound(cu, t0, t1, nonempty) < floor)
    use = nonempty & (cu != 0) & ~empty[:, None]
    logm = np.full(P, -np.inf)
    ratio = np.ones(P)
    quad_err = np.zeros(P)

    v = edges.verts
    P0, P1, g, R, bounded = v.P0, v.P1, v.g, v.radius, v.bounded
    with np.errstate(all="ignore"):
        spread = R * (np.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    small = bounded & (spread <= _SMALL) & ~empty
    # Small polygons go straight to the cubature (about as cheap as the Owen's-T terms, and it
    # never cancels); polygons with the mean far outside a line (mass < Q(_FAST_CMIN)) almost
    # always cancel in the fast path and go straight to the tail-safe pieces.
    cmin = np.min(np.where(active, cu, np.inf), axis=1)
    tail_first = ~small & ~empty & (cmin < -_FAST_CMIN)
    fast_i = np.flatnonzero(~empty & ~small & ~tail_first)
    redo = tail_first.copy()
    if fast_i.size:
        with np.errstate(all="ignore"):
            mass, scale = _fast_mass(cu[fast_i], t0[fast_i], t1[fast_i], use[fast_i], omega[fast_i])
            ok = (mass >= _FAST_RATIO * scale) & (mass >= _FAST_MIN)
            logm[fast_i] = np.log(np.minimum(mass, 1.0))
            ratio[fast_i] = scale / mass
        redo[fast_i[~ok]] = True
        acc = fast_i[ok]
        quad_err[acc] = _FAST_ERR * ratio[acc]
    cub = small
    cub_i = np.flatnonzero(cub)
    cub_mean = cub_cov = None
    if cub_i.size:
        with np.errstate(all="ignore"):
            lm, cond, cub_mean, cub_cov = _cubature(
                P0[cub_i], P1[cub_i], g[cub_i], nonempty[cub_i], R[cub_i], moments
            )
        logm[cub_i] = lm
        ratio[cub_i] = 1.0
        quad_err[cub_i] = 1e-14 + 4.0 * cond
    local_i = np.zeros(0, dtype=np.intp)  # pairs done in their LocalFrame
    local_len = []
    if cub_i.size and edges.local is not None:
        # table pairs: the translated vertices are rounded at the scale |w|; where that shows
        # next to the polygon's size, the cubature again on the table's own vertices
        j = np.flatnonzero(~(4.0 * cond <= _LOCAL_COND))
        if j.size:
            rows = cub_i[j]
            fr = edges.local(rows)
            ne = nonempty[rows]
            a0 = np.where(ne[..., None], fr.q0, 0.0)
            d10 = np.where(ne[..., None], fr.q1 - fr.q0, 0.0)
            size = np.max(np.where(ne, np.maximum(fr.len0, fr.len1), 0.0), axis=1)
            with np.errstate(all="ignore"):
                lm, cond_l, mn, cv = _cubature(
                    None, None, fr.anchor, ne, R[rows], moments, (a0, d10, size)
                )
            logm[rows] = lm
            quad_err[rows] = 1e-14 + 4.0 * cond_l
            if moments:
                cub_mean[j], cub_cov[j] = mn, cv
            local_i = rows
            local_len = [(fr.len0, fr.len1)]
    tail_i = np.flatnonzero(redo & ~cub)
    excess = np.zeros(P)  # the tail-safe pieces' rounding where they cancel (ratio > _SLICE_RATIO)
    if tail_i.size:
        lm, rt, ends = _tail_mass(cu[tail_i], t0[tail_i], t1[tail_i], use[tail_i], omega[tail_i])
        logm[tail_i] = lm
        ratio[tail_i] = rt
        # the pieces' exponents -(h^2 + t^2)/2 are rounded (~eps |log m| relative each) and
        # cancel by the ratio: thin strips far out lose eps * ratio * |log m|, not eps * ratio
        quad_err[tail_i] = (
            1e-14 + np.where(np.isfinite(ends), ends, 0.0) + _T_EXP * EPS * rt * (1.0 + np.abs(lm))
        )
        with np.errstate(invalid="ignore"):
            cancel = _T_EXP * EPS * rt * (1.0 + np.abs(lm))
            excess[tail_i] = np.where(rt > _SLICE_RATIO, cancel, 0.0)
    # Slivers and thin strips (far out, or through the mean) cancel in the edge formula beyond
    # its resolution (a sliver of width 1e-9 at 1e4 sd: pieces ~1e9 times the mass, rounded at
    # ~eps |log m| each, so nothing was left: "empty", -inf): slicing, where it is better.
    resc = ~empty & ~cub & active.any(axis=1) & ~(np.isfinite(logm) & (excess <= _SLICE_ERR))
    resc_i = np.flatnonzero(resc)
    slice_i = np.zeros(0, dtype=np.intp)
    slice_mean = slice_cov = None
    if resc_i.size:
        fr = None if edges.local is None else edges.local(resc_i)
        sl = _slice_pairs(edges, resc_i, fr, moments)
        lm_s, err_s = sl.log_mass, sl.error
        take = np.isfinite(lm_s) & (~np.isfinite(logm[resc_i]) | (err_s < quad_err[resc_i]))
        slice_i = resc_i[take]
        logm[slice_i] = lm_s[take]
        quad_err[slice_i] = err_s[take]
        ratio[slice_i] = 1.0
        if moments:
            slice_mean, slice_cov = sl.mean[take], sl.cov[take]
        lt = take & sl.local
        if lt.any():
            local_i = np.concatenate([local_i, resc_i[lt]])
            local_len.append((fr.len0[lt], fr.len1[lt]))
    logm = np.minimum(logm, 0.0)
    logm[cmin < -_OVERFLOW_DIST] = -np.inf
    # mean on the boundary: the tangent cone's angle (omega) comes from differences of the rows'
    # directions, rounded to ~4 eps absolute: 4 eps / m relative (a wedge of opening 1e-9 at
    # the mean: 5e-8 in log mass, where the estimate said 1e-13)
    onb = np.flatnonzero((cmin == 0.0) & ~cub & ~empty & (omega > 0.0) & (omega < 1.0))
    if onb.size:
        with np.errstate(over="ignore"):
            quad_err[onb] += _OMEGA_ERR * EPS * np.exp(-logm[onb])
    ve = _vertex_error(cu, t0, t1, nonempty & ~empty[:, None], logm, edges.ext)
    if local_i.size:  # those pairs' vertices kept the table's precision
        lens = tuple(np.concatenate([q[e] for q in local_len]) for e in (0, 1))
        li = local_i
        ve[li] = _vertex_error(cu[li], t0[li], t1[li], nonempty[li], logm[li], None, lens)
    quad_err += ve
    if edges.ext is not None:
        ne = nonempty & ~empty[:, None]
        common = np.union1d(cub_i, local_i)  # vertices translated as a whole
        with np.errstate(all="ignore"):
            reach = np.hypot(g[:, 0], g[:, 1]) + R
        quad_err += _shift_error(cu, t0, t1, ne, logm, edges.ext, common, reach)
    with np.errstate(all="ignore"):
        err = 8.0 * EPS * np.where(np.isfinite(ratio), ratio, 1.0) + 4.0 * EPS * (
            1.0 + np.abs(logm)
        )
    err = np.where(np.isfinite(logm), err + quad_err, 0.0)
    logger.debug(
        "log_mass_2d: %d pairs, %d fast, %d tail-safe, %d cubature, %d empty",
        P,
        fast_i.size - int(redo.sum()) + int(tail_first.sum()),
        tail_i.size,
        cub_i.size,
        int(np.sum(empty)),
    )
    geo = MomentGeometry(
        nu, cu, t0, t1, nonempty, cub_i, cub_mean, cub_cov, slice_i, slice_mean, slice_cov
    )
    return Integrated(logm, err, geo)


def _real_rows_first(normals, offsets):
    """Checked float arrays with the real rows first (in order) and padding rows (``+inf``
    offset, finite normal) last; at least one row. Returns ``n (P, F, 2)``, ``c (P, F)`` and
    the number of real rows ``k (P,)``."""
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    if n.ndim != 3 or n.shape[-1] != 2 or c.shape != n.shape[:2]:
        raise ValueError(
            f"normals must be (P, F, 2) and offsets (P, F); got {n.shape} and {c.shape}"
        )
    P, F = c.shape
    if F == 0:
        n, c, F = np.zeros((P, 1, 2)), np.full((P, 1), np.inf), 1
    with np.errstate(invalid="ignore"):
        pad = (c == np.inf) & np.isfinite(n).all(axis=-1)
    if pad.any() and not np.all(pad[:, 1:] >= pad[:, :-1]):
        order = np.argsort(pad, axis=1, kind="stable")
        n = np.take_along_axis(n, order[..., None], axis=1)
        c = np.take_along_axis(c, order, axis=1)
    return n, c, (F - pad.sum(axis=1)).astype(np.int64)


def _chunked(fun, normals, offsets, floor=None):
    """Apply ``fun`` to blocks of pairs grouped by their number of real rows; reassemble.

    Padding rows (``+inf`` offset, finite normal) are dropped and the remaining rows keep
    their order, so each pair is processed with as few rows as it has (the edge search is
    ``O(F^2)``) and its result does not depend on the other pairs. ``floor`` (P,), if given,
    is passed on blockwise as ``fun(normals, offsets, floor)``.
    """
    n, c, k = _real_rows_first(normals, offsets)
    P = c.shape[0]
    out = None
    for kk in np.unique(k):
        width = max(int(kk), 1)
        idx = np.flatnonzero(k == kk)
        step = int(np.clip(_CHUNK_F2 // (width * width), _CHUNK_MIN, _CHUNK_MAX))
        for b in range(0, idx.size, step):
            ib = idx[b : b + step]
            if floor is None:
                res = fun(n[ib, :width], c[ib, :width])
            else:
                res = fun(n[ib, :width], c[ib, :width], floor[ib])
            if out is None:
                out = tuple(np.empty((P, *r.shape[1:]), dtype=r.dtype) for r in res)
            for o, r in zip(out, res, strict=True):
                o[ib] = r
    if out is None:  # P == 0
        return fun(n, c) if floor is None else fun(n, c, np.zeros(P))
    return out


def log_mass_2d(
    normals: np.ndarray, offsets: np.ndarray, floor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log mass of ``N(0, I_2)`` on the polygons ``{u : n_i . u <= c_i}``.

    Parameters
    ----------
    normals : ndarray, shape (P, F, 2)
        Row normals (normalised internally); zero rows with ``+inf`` offsets are padding;
        finite.
    offsets : ndarray, shape (P, F)
        Offsets ``c_i`` (``+inf``: no constraint; ``-inf``: empty polygon).  NaN here or in
        ``floor`` (or a NaN / infinite normal) is an error (``ValueError`` naming the argument
        and the count).

    Returns
    -------
    log_mass : ndarray, shape (P,)
        ``log P(u in polygon)``, relative-accurate (``-inf`` for empty or measure-zero
        polygons; 0 for the whole plane).
    error : ndarray, shape (P,)
        Estimated absolute error of ``log_mass``.

    ``floor`` (P,), optional: a pair whose mass is provably below ``exp(floor)`` (by the
    closest-point bound ``Q(δ)``, see :func:`_distance_bound`) is not integrated and gets
    ``log_mass = -inf`` and error 0 (for exact pruning, where such pairs cannot matter).

    Far from the mean, vertices computed about the mean are rounded at ``~eps (|c| + |t|) /
    sin(angle)`` (2e-12 at 1e4 sd): pairs where that shows (tiny polygons, slivers, sharp
    corners far out) are redone about one of their vertices with the rows' offsets formed
    exactly there (module docstring), so that they keep their digits. ``-inf`` with error 0
    means no interior: rows that, as floats, are infeasible or meet in a line.
    """
    normals, offsets = _checked_rows(normals, offsets)
    return _log_mass_2d(normals, offsets, floor)


def _log_mass_2d(normals, offsets, floor=None):
    """:func:`log_mass_2d` without the NaN checks (:func:`exactdgn.gaussian.log_mass` has
    checked its input)."""
    return _chunked(_log_mass_only, normals, offsets, _as_floor(floor, offsets))


# What to give instead of NaN (the messages of :func:`exactdgn.gaussian.log_mass`).
_NORMALS_HINT = "padding rows are zeros"
_OFFSETS_HINT = "+inf pads a row, -inf empties the polyhedron"


def _checked_rows(normals, offsets) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    reject_nonfinite(n, "normals", _NORMALS_HINT)
    reject_nan(c, "offsets", _OFFSETS_HINT)
    return n, c


def _as_floor(floor, offsets):
    if floor is None:
        return None
    P = np.shape(offsets)[0]
    f = np.asarray(floor, dtype=np.float64)
    reject_nan(f, "floor", "-inf or None integrates every pair")
    return np.broadcast_to(f, (P,))


def _log_mass_only(normals, offsets, floor=None):
    res, redo = _log_mass_core(normals, offsets, moments=False, floor=floor)
    return tuple(_reanchored(normals, offsets, floor, redo, [res.log_mass, res.error], False))


def truncated_moments_2d(
    normals: np.ndarray, offsets: np.ndarray, floor: np.ndarray | None = None
) -> TruncatedMoments:
    """Log mass, mean ``(P, 2)`` and covariance ``(P, 2, 2)`` of ``N(0, I_2)`` on polygons.

    See :func:`log_mass_2d` for the inputs (and ``floor``: skipped pairs get ``-inf`` and NaN
    moments).  Moments by the divergence theorem in the stable weight form (module docstring);
    small polygons by direct cubature, far polygons by slicing along the direction of the
    closest point.
    """
    normals, offsets = _checked_rows(normals, offsets)
    return _truncated_moments_2d(normals, offsets, floor)


def _truncated_moments_2d(normals, offsets, floor=None) -> TruncatedMoments:
    """:func:`truncated_moments_2d` without the NaN checks."""
    return TruncatedMoments(*_chunked(_moments_core, normals, offsets, _as_floor(floor, offsets)))


def _moments_core(normals, offsets, floor=None):
    res, redo = _log_mass_core(normals, offsets, moments=True, floor=floor)
    out = list(_moments_finish(res))
    return tuple(_reanchored(normals, offsets, floor, redo, out, True))


def _moments_finish(res: Integrated):
    """Mean and covariance from ``_integrate``'s output; returns ``(logm, mean, cov, err)``."""
    logm, err, geo = res.log_mass, res.error, res.geo
    nu, cu, t0, t1, nonempty = geo.nu, geo.cu, geo.t0, geo.t1, geo.nonempty
    cub_i, cub_mean, cub_cov = geo.cub_i, geo.cub_mean, geo.cub_cov
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    ok = np.isfinite(logm)
    edge = nonempty & ok[:, None]
    with np.errstate(all="ignore"):
        lphi1, tmean, _ = _interval_stats(np.where(edge, t0, 0.0), np.where(edge, t1, 1.0))
        logw = log_phi(np.where(edge, cu, 0.0)) + lphi1 - np.where(ok, logm, 0.0)[:, None]
        w = np.where(edge, np.exp(logw), 0.0)
        gbar = np.where(
            edge[..., None], cu[..., None] * nu + np.where(edge, tmean, 0.0)[..., None] * tau, 0.0
        )
    mean, cov = divergence_moments(w, nu, gbar)
    with np.errstate(all="ignore"):
        dist2 = np.min(np.where(nonempty, cu * cu + np.clip(0.0, t0, t1) ** 2, np.inf), axis=1)
        far = ok & (np.min(np.where(nonempty, cu, np.inf), axis=1) < 0) & (dist2 >= _TAIL_D**2)
        far[cub_i] = False
        if geo.slice_i is not None:
            far[geo.slice_i] = False
        far_i = np.flatnonzero(far)
        if far_i.size:
            mean[far_i], cov[far_i] = _tail_moments(
                nu[far_i], cu[far_i], t0[far_i], t1[far_i], nonempty[far_i]
            )
    if cub_i.size:
        mean[cub_i] = cub_mean
        cov[cub_i] = cub_cov
    if geo.slice_i is not None and geo.slice_i.size:  # the pairs whose mass is by slicing
        mean[geo.slice_i] = geo.slice_mean
        cov[geo.slice_i] = geo.slice_cov
    mean[~ok] = np.nan
    cov[~ok] = np.nan
    return logm, mean, cov, err


# --------------------------------------------------------------------------------------------
# many pairs per polygon: the geometry once, then shifted
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolygonTable:
    """Edge geometry of ``M`` polygons ``{u : n_i . u <= g_i}``, computed once.

    A pair ``(m, w)`` is polygon ``m`` seen from the mean ``w``: ``{u : n_i . u <= g_i - n_i . w}``
    (the polygon translated by ``-w``), which is how every point ``x`` sees region ``m`` in
    whitened coordinates (``w = w_m(x)``). Translation moves the vertices and nothing else, so
    the edge search (``O(F^2)`` per pair) and the vertex sharing are done here once per polygon.
    Shared vertices are stored bitwise equal in ``p0``/``p1`` and stay equal after the same
    translation, so the translated polygon closes exactly.

    Attributes
    ----------
    normals : (M, F, 2)   unit normals, real rows first (0 on padding)
    offsets : (M, F)      ``g`` (``+inf`` on padding)
    active, nonempty : (M, F) bool   rows with a constraint / with an edge of positive length
    p0, p1 : (M, F, 2)    edge ends at ``w = 0`` (0 where absent)
    fin0, fin1 : (M, F) bool         the edge has a finite start / end
    empty : (M,) bool     no interior (infeasible, degenerate)
    bounded : (M,) bool
    centroid : (M, 2), radius : (M,)   vertex centroid at ``w = 0`` and largest vertex distance
        from it (``inf`` if unbounded)
    width : (M,) int      number of real rows
    """

    normals: np.ndarray
    offsets: np.ndarray
    active: np.ndarray
    nonempty: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    fin0: np.ndarray
    fin1: np.ndarray
    empty: np.ndarray
    bounded: np.ndarray
    centroid: np.ndarray
    radius: np.ndarray
    width: np.ndarray


def polygon_table(normals: np.ndarray, offsets: np.ndarray) -> PolygonTable:
    """Precompute :class:`PolygonTable` for ``M`` polygons (shapes and checks as in
    :func:`log_mass_2d`)."""
    n, c, width = _real_rows_first(*_checked_rows(normals, offsets))
    nu, cu, active, bad = _prepare(n, c)
    t0, t1, nonempty, degenerate, (si, se, sj) = _edge_search(nu, cu, active)
    # Edge ends beyond _FAR_VERTEX times the polygon's own scale (1 + max |offset|) are
    # infinite, and an edge wholly beyond them is dropped: they are crossings of rows parallel
    # up to rounding that _edge_search kept (whitened rows keep ~eps cond(L) of their angle:
    # sines of 4e-15 to 2e-14, above _PARALLEL_SINE), and every shifted pair took its edge's
    # offset from such a vertex (n . (P - w), rounded at |P| eps: 0.1 at 1e15), a region's log
    # mass 0.1 nats off against an estimate of 4e-12 (ReLU [2,5,4,3], noise 0.01).
    scale = 1.0 + np.max(np.where(active & np.isfinite(cu), np.abs(cu), 0.0), axis=1, initial=0.0)
    far = _FAR_VERTEX * scale[:, None]
    with np.errstate(invalid="ignore"):
        t0 = np.where(np.isfinite(t0) & (np.abs(t0) > far), np.sign(t0) * np.inf, t0)
        t1 = np.where(np.isfinite(t1) & (np.abs(t1) > far), np.sign(t1) * np.inf, t1)
    nonempty = nonempty & (t0 < t1)
    empty = bad | degenerate | (active.any(axis=1) & ~nonempty.any(axis=1))
    v = _vertices(nu, cu, t0, t1, nonempty)
    P0, P1, g, R, bounded = v.P0, v.P1, v.g, v.radius, v.bounded
    fin0 = nonempty & np.isfinite(t0)
    fin1 = nonempty & np.isfinite(t1)
    p0 = np.where(fin0[..., None], P0, 0.0)
    p1 = np.where(fin1[..., None], P1, 0.0)
    # shared vertices: the start of edge j is stored as the very end point of edge e, so both
    # stay bitwise equal after any translation and the translated polygon closes exactly
    ok = fin1[si, se] & fin0[si, sj]
    p0[si[ok], sj[ok]] = p1[si[ok], se[ok]]
    return PolygonTable(
        normals=nu,
        offsets=np.where(active, cu, np.inf),
        active=active,
        nonempty=nonempty,
        p0=p0,
        p1=p1,
        fin0=fin0,
        fin1=fin1,
        empty=empty,
        bounded=bounded,
        centroid=np.where(bounded[:, None], g, 0.0),
        radius=R,
        width=width,
    )


def _edge_offsets(n0, n1, P0, P1, f0, f1, active, c_line):
    """Edge parameters of the mapped edges: ``t0`` / ``t1`` (ends along ``tau = (-n1, n0)``,
    -inf / inf where the edge has no vertex there) and ``cu`` (the offset ``n . u``, taken from
    a vertex of the edge where it has one, consistent with the mapped vertices, else the line's
    ``c_line``; inf on inactive rows)."""
    with np.errstate(invalid="ignore"):
        t0 = np.where(f0, n0 * P0[..., 1] - n1 * P0[..., 0], -np.inf)
        t1 = np.where(f1, n0 * P1[..., 1] - n1 * P1[..., 0], np.inf)
        cu = np.where(
            f0,
            n0 * P0[..., 0] + n1 * P0[..., 1],
            np.where(f1, n0 * P1[..., 0] + n1 * P1[..., 1], c_line),
        )
    return t0, t1, np.where(active, cu, np.inf)


def _shifted(table: PolygonTable, m: np.ndarray, w: np.ndarray, k: int):
    """Edges of polygons ``m`` (P,) (all of width <= ``k``) seen from the means ``w`` (P, 2)."""
    nu = table.normals[m, :k]
    active = table.active[m, :k]
    nonempty = table.nonempty[m, :k]
    f0, f1 = table.fin0[m, :k], table.fin1[m, :k]
    wb = w[:, None, :]
    P0 = table.p0[m, :k] - wb
    P1 = table.p1[m, :k] - wb
    n0, n1 = nu[..., 0], nu[..., 1]
    with np.errstate(invalid="ignore"):
        c_line = table.offsets[m, :k] - (n0 * w[:, None, 0] + n1 * w[:, None, 1])
    t0, t1, cu = _edge_offsets(n0, n1, P0, P1, f0, f1, active, c_line)
    bounded = table.bounded[m]
    g = np.where(bounded[:, None], table.centroid[m] - w, 0.0)
    verts = Vertices(P0, P1, g, table.radius[m], bounded)
    ext = np.hypot(w[:, 0], w[:, 1])

    def local(rows):
        return _local_frame(table, m[rows], None, w[rows], k)

    return Edges(nu, cu, active, t0, t1, nonempty, table.empty[m], verts, ext, local)


def _local_frame(table: PolygonTable, m, T, w, k) -> LocalFrame:
    """:class:`LocalFrame` of polygons ``m`` (n,) of the table mapped by ``u = T u0 - w``
    (``T`` (n, 2, 2), or None for the identity), anchored at the mapped vertex centroid ``c``
    (the table's origin for unbounded polygons): ``q = T (p - c)``, the offsets of the mapped rows
    about ``T c`` (from a vertex of the row where it has one, as :func:`_shifted` /
    :func:`_transformed` take ``cu``), ``anchor = T c - w``."""
    c = table.centroid[m]  # 0 for unbounded polygons
    f0, f1 = table.fin0[m, :k], table.fin1[m, :k]
    n0 = table.normals[m, :k]
    d0 = table.p0[m, :k] - c[:, None, :]
    d1 = table.p1[m, :k] - c[:, None, :]
    with np.errstate(invalid="ignore"):
        line = table.offsets[m, :k] - np.einsum("pfk,pk->pf", n0, c)
        L0 = np.hypot(table.p0[m, :k, 0], table.p0[m, :k, 1])
        L1 = np.hypot(table.p1[m, :k, 0], table.p1[m, :k, 1])
        if T is None:
            nu, anchor = n0, c - w
        else:  # normals adj(T)^T n / |adj(T)^T n| and line offsets g det T / |adj(T)^T n|
            a0 = T[:, None, 1, 1] * n0[..., 0] - T[:, None, 1, 0] * n0[..., 1]
            a1 = T[:, None, 0, 0] * n0[..., 1] - T[:, None, 0, 1] * n0[..., 0]
            nrm = np.hypot(a0, a1)
            act = table.active[m, :k]
            safe = np.where(act, nrm, 1.0)
            nu = np.where(act[..., None], np.stack([a0, a1], axis=-1) / safe[..., None], 0.0)
            det = T[:, 0, 0] * T[:, 1, 1] - T[:, 0, 1] * T[:, 1, 0]
            line = line * (det[:, None] / safe)
            d0 = np.einsum("pij,pfj->pfi", T, d0)
            d1 = np.einsum("pij,pfj->pfi", T, d1)
            scale = np.sqrt(np.sum(T * T, axis=(1, 2)))[:, None]
            L0, L1 = scale * L0, scale * L1
            anchor = np.einsum("pij,pj->pi", T, c) - w
        q0 = np.where(f0[..., None], d0, 0.0)
        q1 = np.where(f1[..., None], d1, 0.0)
        off = np.where(
            f0,
            np.einsum("pfk,pfk->pf", nu, q0),
            np.where(f1, np.einsum("pfk,pfk->pf", nu, q1), line),
        )
        off = np.where(table.active[m, :k], off, np.inf)
    return LocalFrame(q0, q1, off, anchor, np.where(f0, L0, 0.0), np.where(f1, L1, 0.0))


def _transformed(table: PolygonTable, m: np.ndarray, T: np.ndarray, w: np.ndarray, k: int):
    """Edges of polygons ``m`` (P,) (width <= ``k``) mapped by ``u = T u0 - w``.

    ``T`` (P, 2, 2) with ``det T > 0``: vertices map to ``T p - w`` (shared vertices stay
    bitwise shared), a line ``n . u0 = g`` to ``n' . u = g det(T) / |adj(T)ᵀ n| - n' . w`` with
    ``n' = adj(T)ᵀ n / |adj(T)ᵀ n|`` (``T^{-T} n`` up to the positive factor ``det T``; the
    orientation of the edges is kept), and the vertex centroid to ``T g - w``; the radius is
    recomputed from the mapped vertices. The edge structure (which rows carry edges, shared
    corners, boundedness) is invariant under the map, so no edge search is done.
    """
    from ._polygon_kernels import transformed_edges  # numba: imported on first use

    P = m.shape[0]
    nu, P0, P1 = np.empty((P, k, 2)), np.empty((P, k, 2)), np.empty((P, k, 2))
    cu, t0, t1 = np.empty((P, k)), np.empty((P, k)), np.empty((P, k))
    g, radius = np.empty((P, 2)), np.empty(P)
    tab = table
    transformed_edges(
        np.ascontiguousarray(m, dtype=np.intp), np.ascontiguousarray(T),
        np.ascontiguousarray(w), k, tab.normals, tab.active, tab.fin0, tab.fin1, tab.p0,
        tab.p1, tab.offsets, tab.centroid, tab.bounded, tab.nonempty,
        nu, cu, t0, t1, P0, P1, g, radius,
    )  # fmt: skip
    active, nonempty, bounded = tab.active[m, :k], tab.nonempty[m, :k], tab.bounded[m]
    verts = Vertices(P0, P1, g, radius, bounded)
    with np.errstate(invalid="ignore"):  # each row's table vertices, as mapped by |T|
        far = np.maximum(
            np.where(tab.fin0[m, :k], np.hypot(tab.p0[m, :k, 0], tab.p0[m, :k, 1]), 0.0),
            np.where(tab.fin1[m, :k], np.hypot(tab.p1[m, :k, 0], tab.p1[m, :k, 1]), 0.0),
        )
    ext = np.hypot(w[:, 0], w[:, 1])[:, None] + np.sqrt(np.sum(T * T, axis=(1, 2)))[:, None] * far

    def local(rows):
        return _local_frame(table, m[rows], T[rows], w[rows], k)

    return Edges(nu, cu, active, t0, t1, nonempty, table.empty[m], verts, ext, local)


def _table_chunked(fun, table: PolygonTable, m, w, floor, blocks: list | None = None, T=None):
    """Apply ``fun(edges, floor)`` (``edges`` an :class:`Edges`) to blocks of pairs
    grouped by their polygon's width; reassemble. The blocks' pair indices are appended to
    ``blocks`` (in call order) if it is given. ``T`` (P, 2, 2), optional: the pairs' linear
    maps (:func:`log_mass_2d_transformed`)."""
    m = np.asarray(m)
    w = np.asarray(w, dtype=np.float64)
    if T is not None:
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (m.shape[0], 2, 2):
            raise ValueError(f"T must be (P, 2, 2) for P = {m.shape[0]} pairs; got {T.shape}")
        reject_nonfinite(T, "T", "each pair's linear map, a finite 2 x 2 matrix with det T > 0")
        det = T[:, 0, 0] * T[:, 1, 1] - T[:, 0, 1] * T[:, 1, 0]
        if not np.all(det > 0):
            raise ValueError(
                f"T must be finite with a positive determinant; {int(np.sum(~(det > 0)))} of "
                "the maps have det T <= 0"
            )
    if m.ndim != 1 or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"polygon must be a 1-D integer array; got {m.dtype} {m.shape}")
    P = m.shape[0]
    M = table.width.shape[0]
    if P and (m.min() < 0 or m.max() >= M):
        raise ValueError(f"polygon indices must lie in [0, {M}); got {m.min()}..{m.max()}")
    if w.shape != (P, 2):
        raise ValueError(f"shift must be (P, 2) for P = {P} pairs; got {w.shape}")
    reject_nonfinite(w, "shift", "each pair's mean w, a finite point")
    k = table.width[m]
    out = None
    for kk in np.unique(k):
        width = max(int(kk), 1)
        idx = np.flatnonzero(k == kk)
        step = int(np.clip(_CHUNK_F2 // width, _CHUNK_MIN, _CHUNK_MAX))
        for b in range(0, idx.size, step):
            ib = idx[b : b + step]
            edges = (
                _shifted(table, m[ib], w[ib], width)
                if T is None
                else _transformed(table, m[ib], T[ib], w[ib], width)
            )
            res = fun(edges, None if floor is None else floor[ib])
            if blocks is not None:
                blocks.append(ib)
            if out is None:
                out = tuple(np.empty((P, *r.shape[1:]), dtype=r.dtype) for r in res)
            for o, r in zip(out, res, strict=True):
                o[ib] = r
    if out is None:  # P == 0
        z = np.zeros(0)
        return (z, z) if fun is _table_mass else (z, np.zeros((0, 2)), np.zeros((0, 2, 2)), z)
    return out


def _table_mass(edges: Edges, floor):
    res = _integrate(edges, False, floor)
    return res.log_mass, res.error


def _table_moments(edges: Edges, floor):
    return _moments_finish(_integrate(edges, True, floor))


def log_mass_2d_shifted(
    table: PolygonTable, polygon: np.ndarray, shift: np.ndarray, floor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_mass_2d` of the pairs ``{u : n_i . u <= g_i - n_i . w}``.

    Parameters
    ----------
    table : PolygonTable
        From :func:`polygon_table`.
    polygon : (P,) int
        Polygon of each pair.
    shift : (P, 2)
        ``w`` of each pair (the polygon is translated by ``-w``: the mean sits at ``w``).
    floor : (P,), optional
        As in :func:`log_mass_2d`.
    """
    return _table_chunked(_table_mass, table, polygon, shift, _as_floor(floor, polygon))


def truncated_moments_2d_shifted(
    table: PolygonTable,
    polygon: np.ndarray,
    shift: np.ndarray,
    floor: np.ndarray | None = None,
    select=None,
) -> TruncatedMoments:
    """:func:`truncated_moments_2d` of translated polygons (see :func:`log_mass_2d_shifted`).

    ``select``, optional: a function ``(log_mass (P,), error (P,)) -> mask (P,)`` called once
    every mass is known; only the pairs in the mask get moments (the others NaN). The masses
    and the geometry are computed once for all pairs, the moments (the costly part for far
    polygons) only where they are wanted, e.g. where the pair's posterior weight is visible.
    """
    return _selected_moments(table, polygon, shift, _as_floor(floor, polygon), select, None)


def _selected_moments(table, polygon, shift, floor, select, T) -> TruncatedMoments:
    """Moments of the (shifted or, with ``T``, transformed) table polygons; with ``select``
    the masses and geometry of every pair first, the moments only where ``select`` says."""
    P = np.shape(polygon)[0]
    if select is None or P == 0:
        parts = _table_chunked(_table_moments, table, polygon, shift, floor, None, T)
        tm = TruncatedMoments(*parts)
        if select is not None:  # no pairs: ``select`` is still called once (the caller's
            select(tm.log_mass, tm.error)  # step that runs in it, e.g. a merge, must run)
        return tm
    geos, blocks = [], []

    def phase1(edges, fl):
        res = _integrate(edges, True, fl)
        geos.append(res.geo)
        return res.log_mass, res.error

    logm, err = _table_chunked(phase1, table, polygon, shift, floor, blocks, T)
    mask = np.asarray(select(logm, err), dtype=bool)
    if mask.shape != (P,):
        raise ValueError(f"select must return a ({P},) mask; got {mask.shape}")
    mean = np.full((P, 2), np.nan)
    cov = np.full((P, 2, 2), np.nan)
    for ib, geo in zip(blocks, geos, strict=True):
        rows = np.flatnonzero(mask[ib])
        if rows.size:
            sub = Integrated(logm[ib][rows], err[ib][rows], geo.rows(rows))
            _, mn, cv, _ = _moments_finish(sub)
            mean[ib[rows]] = mn
            cov[ib[rows]] = cv
    return TruncatedMoments(logm, mean, cov, err)


def log_mass_2d_transformed(
    table: PolygonTable,
    polygon: np.ndarray,
    T: np.ndarray,
    shift: np.ndarray,
    floor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_mass_2d` of the polygons ``{T u0 - w : n_i . u0 <= g_i}`` (affine images).

    A region whitened with a point-dependent posterior covariance (missing values) is the
    table's polygon under a linear map and a translation: with ``u0 = K0ᵀ z`` (the table) and
    ``u = Kᵀ z - w`` (the pair), ``u = T u0 - w`` with ``T = Kᵀ K0^{-T}``. The edges, their
    shared corners and boundedness come from the table (no edge search).

    Parameters
    ----------
    table : PolygonTable
    polygon : (P,) int
    T : (P, 2, 2)
        Linear part of each pair's map, ``det T > 0``.
    shift : (P, 2)
        ``w`` of each pair.
    floor : (P,), optional
        As in :func:`log_mass_2d`.
    """
    return _table_chunked(_table_mass, table, polygon, shift, _as_floor(floor, polygon), None, T)


def truncated_moments_2d_transformed(
    table: PolygonTable,
    polygon: np.ndarray,
    T: np.ndarray,
    shift: np.ndarray,
    floor: np.ndarray | None = None,
    select=None,
) -> TruncatedMoments:
    """:func:`truncated_moments_2d` of the affine images of :func:`log_mass_2d_transformed`
    (moments of ``u``, in the mapped coordinates); ``select`` as in
    :func:`truncated_moments_2d_shifted`."""
    return _selected_moments(table, polygon, shift, _as_floor(floor, polygon), select, T)
