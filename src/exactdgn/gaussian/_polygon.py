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

Pairs are processed in blocks grouped by their number of real (non-padding) rows.

Moments by the divergence theorem, in the stable weight form
``w_e = exp(log phi(c_e) + log Phi_1(edge) - log m)``::

    E[u] = -sum_e w_e n_e,     Cov[u] = I - sum_e w_e n_e (gbar_e - E[u])^T   (symmetrised)

with ``gbar_e = c_e n_e + E_1[t | t0 <= t <= t1] tau_e`` the edge's conditional mean.  Small
polygons use the cubature for the moments too (with the next rule up), since the divergence
form loses ``eps / R^4`` relative in the covariance there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, owens_t

from ._divergence import divergence_moments
from ._interval import TruncatedMoments, _interval_stats, _rowdot, log_phi
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
# Small-polygon cubature (mass and moments): R (|g| + R/2) <= _SMALL.
_SMALL = 1.0
# Pairs with an offset below -_FAST_CMIN skip the fast path (it cancels there).
_FAST_CMIN = 3.0
# Moments of polygons at distance >= _TAIL_D from the mean by slicing (see _tail_moments).
_TAIL_D = 8.0
# A facet nearly parallel to tau* (slope sig = |b/a|) sweeps its s-bound through [-40, 40]
# within an r-window of width 80 sig; where that window is narrower than the rule's first node
# offset in its panel (so it can fall between nodes), the row gets extra breakpoints where the
# bound crosses these s-values.  Other rows keep their panels (and their values, bitwise).
_SWEEP_S = np.array([-40.0, -8.0, 0.0, 8.0, 40.0])
_SWEEP_RATIO = 80.0 / _GL_X[0]
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


@dataclass
class MomentGeometry:
    """What the moments need from :func:`_integrate`: the edges and the pairs done by cubature
    (``cub_i`` (C,) with their ``cub_mean`` (C, 2) and ``cub_cov`` (C, 2, 2), or None)."""

    nu: np.ndarray
    cu: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    nonempty: np.ndarray
    cub_i: np.ndarray
    cub_mean: np.ndarray | None
    cub_cov: np.ndarray | None

    def rows(self, rows: np.ndarray) -> MomentGeometry:
        """The same restricted to ``rows`` of its block."""
        cub_i, cub_mean, cub_cov = self.cub_i, self.cub_mean, self.cub_cov
        if cub_i.size:
            pos = np.full(self.cu.shape[0], -1)
            pos[rows] = np.arange(rows.size)
            pc = pos[cub_i]
            ok = pc >= 0
            cub_i, cub_mean, cub_cov = pc[ok], cub_mean[ok], cub_cov[ok]
        return MomentGeometry(
            self.nu[rows],
            self.cu[rows],
            self.t0[rows],
            self.t1[rows],
            self.nonempty[rows],
            cub_i,
            cub_mean,
            cub_cov,
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
        pos = A > 0
        pos &= other
        neg = A < 0
        neg &= other
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
        par = A == 0
        par &= other
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

    NaN in any argument is an error (``ValueError`` naming it and the number of NaN).
    """
    h = np.asarray(h, dtype=np.float64)
    ta = np.asarray(ta, dtype=np.float64)
    tb = np.asarray(tb, dtype=np.float64)
    reject_nan(h, "h", "the distances of the lines from the mean, h > 0")
    reject_nan(ta, "ta", "the pieces' starts along the line, 0 <= ta < tb")
    reject_nan(tb, "tb", "the pieces' ends along the line, ta < tb <= inf")
    return _log_edge_pieces(h, ta, tb)


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


def _cubature(P0, P1, g, nonempty, R, moments: bool):
    """Mass (log) and optionally moments of N(0, I) on small bounded polygons by fan cubature.

    The polygon is the fan of triangles ``(g, P0_e, P1_e)`` around the vertex centroid ``g``;
    with ``v = u - g`` the density is ``phi_2(g) exp(q(v))``, ``q(v) = -g.v - |v|^2/2``, whose
    spread over the polygon is at most ``spread = R (|g| + R/2)`` (``R``: the largest vertex
    distance from ``g``).  Each triangle uses the collapsed ``n x n`` Gauss-Legendre rule of
    ``_CUB_LEVELS`` for that spread and for ``R^2/2`` (the moments: the next rule up).  All
    weights are positive: no cancellation.

    Returns ``logm (P,)``, ``cond (P,)`` (relative conditioning on the vertices), and if
    ``moments`` the mean ``(P, 2)`` and covariance ``(P, 2, 2)``, else ``None, None``.
    """
    P, F = nonempty.shape
    spread = R * (np.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    ne = nonempty[..., None]
    a0 = np.where(ne, P0 - g[:, None, :], 0.0)  # (P, F, 2)
    d10 = np.where(ne, P1 - P0, 0.0)
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
    size = np.max(np.where(nonempty, np.hypot(P0[..., 0], P0[..., 1]), 0.0), axis=1)
    cond = EPS * size * perim / (0.5 * det.sum(axis=1))
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
    between the vertices' ``r``-values, truncated where ``D r + r^2/2 = 45``.  All quantities are
    small positive numbers computed directly, so ``Var[r] ~ 1/D^2`` keeps its relative accuracy
    (the divergence form loses ``eps D^4``).

    Returns ``mean (P, 2)``, ``cov (P, 2, 2)``.
    """
    P = cu.shape[0]
    rows = np.arange(P)
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
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
    # A facet nearly parallel to tau* sweeps its s-bound through [-40, 40] within r0 +- 40 sig
    # (sig = |b/a|, r0 = dd/a); where that window can fall between the rule's nodes (a sliver
    # wedge: no node inside it at all), those rows only get breakpoints at s = 0, +-8, +-40.
    with np.errstate(all="ignore"):
        sig = np.abs(b / a)
        r0 = dd / a
    steep = act & (b != 0) & (a != 0) & (r0 + 40.0 * sig > 0) & (r0 - 40.0 * sig < rmax[:, None])
    steep &= _sweep_missed(bp, r0, sig)
    need = np.flatnonzero(steep.any(axis=1))
    if need.size == 0:
        return _slice_moments(bp, a, b, dd, act, D, pnt, nstar, tstar)
    mean = np.empty((P, 2))
    cov = np.empty((P, 2, 2))
    rest = np.flatnonzero(~steep.any(axis=1))
    if rest.size:
        mean[rest], cov[rest] = _slice_moments(
            bp[rest],
            a[rest],
            b[rest],
            dd[rest],
            act[rest],
            D[rest],
            pnt[rest],
            nstar[rest],
            tstar[rest],
        )
    j = need
    ex = r0[j, :, None] + sig[j, :, None] * _SWEEP_S
    ex = np.where(steep[j, :, None], ex, 0.0).reshape(j.size, -1)
    bpj = np.sort(np.clip(np.concatenate([bp[j], ex], axis=1), 0.0, rmax[j, None]), axis=1)
    mean[j], cov[j] = _slice_moments(
        bpj, a[j], b[j], dd[j], act[j], D[j], pnt[j], nstar[j], tstar[j]
    )
    return mean, cov


def _sweep_missed(bp, r0, sig):
    """(P, F) whether each facet's sweep window ``r0 +- 40 sig`` is narrower than the first
    node offset of the rule on the panel of ``bp`` that holds ``r0``."""
    with np.errstate(all="ignore"):
        j = np.clip(np.sum(bp[:, None, :] <= r0[..., None], axis=2), 1, bp.shape[1] - 1)
        L = np.take_along_axis(bp, j, 1) - np.take_along_axis(bp, j - 1, 1)
        return L > _SWEEP_RATIO * sig


def _slice_moments(bp, a, b, dd, act, D, pnt, nstar, tstar):
    """:func:`_tail_moments`' integrals over ``r`` on the panels between the sorted
    breakpoints ``bp (P, B)``; returns ``mean (P, 2)``, ``cov (P, 2, 2)``."""
    P = bp.shape[0]
    lo, ln = bp[:, :-1], np.diff(bp, axis=1)
    r = (lo[..., None] + ln[..., None] * _GL_X).reshape(P, -1)  # (P, K)
    wr = (ln[..., None] * _GL_W).reshape(P, -1)
    # s-range at each node
    ar = a[:, None, :] * r[..., None]
    bnd = (dd[:, None, :] - ar) / b[:, None, :]
    actb = act[:, None, :]
    shi = np.min(np.where(actb & (b[:, None, :] > 0), bnd, np.inf), axis=2)
    slo = np.max(np.where(actb & (b[:, None, :] < 0), bnd, -np.inf), axis=2)
    viol = np.any(actb & (b[:, None, :] == 0) & (ar > dd[:, None, :]), axis=2)
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


def _vertex_error(cu, t0, t1, nonempty, logm, ext=None):
    """(P,) first-order error of ``log m`` from the rounding of the polygons' vertices.

    A vertex where rows ``e`` and ``j`` meet at angle ``theta`` is computed with an error of
    ``~eps (|c_e| + |c_j| + |t|) / sin(theta)`` along the rows (their offsets and
    ``n_j . tau_e = sin(theta)`` are rounded), which is the effect of perturbing the offset
    ``c_e`` by ``~eps (|c_e| + |t|)`` (and ``c_j`` alike). The mass feels an offset through
    ``dm / dc_e = phi(c_e) (Phi(t1) - Phi(t0))`` (the edge's own mass), but only near the vertex;
    taken here as ``phi(c_e) phi(t) min(t1 - t0, sqrt(2 pi), 1 / |t|) eps (|c_e| + |t|)`` summed
    over the edge's finite ends ``t`` (the edge's mass within the decay length of the vertex).
    Not a proof: checked against mpmath on thin wedges (5 to 1e6 sd, openings 1e-9 to 1: the
    true error is <= 1e-3 of this) and random polygons (``tests/gaussian/test_adversarial.py``).
    For a sharp corner far out this is far above ``eps |log m|``; elsewhere it is ~eps. Edges
    without a vertex (lines of half-planes and strips) are taken exactly.
    """
    with np.errstate(all="ignore"):
        f0, f1 = np.isfinite(t0), np.isfinite(t1)
        if not (nonempty & (f0 | f1)).any():
            return np.zeros(cu.shape[0])
        ext = 0.0 if ext is None else (ext[:, None] if ext.ndim == 1 else ext)
        loc = np.minimum(np.log(t1 - t0), 0.5 * LOG_2PI)
        base = np.log(_T_ERR * EPS) - 0.5 * cu * cu - LOG_2PI
        ends = []
        for t in (t0, t1):  # each vertex: density x the edge's mass near it x its length scale
            at = np.abs(t)
            lv = base - 0.5 * t * t + np.minimum(loc, -np.log(at))
            ends.append(lv + np.log(np.abs(cu) + at + ext))
        ld = np.concatenate(ends, axis=1)
        has = np.concatenate([nonempty & f0, nonempty & f1], axis=1)
        out = np.exp(_lse(ld, has, 1) - logm)
    return np.where(np.isfinite(out), out, 0.0)


def _log_mass_core(normals, offsets, moments: bool, floor=None):
    nu, cu, active, bad = _prepare(normals, offsets)
    t0, t1, nonempty, degenerate = polygon_edges(nu, cu, active)
    has_rows = active.any(axis=1)
    empty = bad | degenerate | (has_rows & ~nonempty.any(axis=1))
    verts = _vertices(nu, cu, t0, t1, nonempty)
    return _integrate(Edges(nu, cu, active, t0, t1, nonempty, empty, verts), moments, floor)


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
    tail_i = np.flatnonzero(redo & ~cub)
    if tail_i.size:
        lm, rt, ends = _tail_mass(cu[tail_i], t0[tail_i], t1[tail_i], use[tail_i], omega[tail_i])
        logm[tail_i] = lm
        ratio[tail_i] = rt
        # the pieces' exponents -(h^2 + t^2)/2 are rounded (~eps |log m| relative each) and
        # cancel by the ratio: thin strips far out lose eps * ratio * |log m|, not eps * ratio
        quad_err[tail_i] = (
            1e-14 + np.where(np.isfinite(ends), ends, 0.0) + _T_EXP * EPS * rt * (1.0 + np.abs(lm))
        )
    logm = np.minimum(logm, 0.0)
    quad_err += _vertex_error(cu, t0, t1, nonempty & ~empty[:, None], logm, edges.ext)
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
    geo = MomentGeometry(nu, cu, t0, t1, nonempty, cub_i, cub_mean, cub_cov)
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
    res = _log_mass_core(normals, offsets, moments=False, floor=floor)
    return res.log_mass, res.error


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
    return _moments_finish(_log_mass_core(normals, offsets, moments=True, floor=floor))


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
        far_i = np.flatnonzero(far)
        if far_i.size:
            mean[far_i], cov[far_i] = _tail_moments(
                nu[far_i], cu[far_i], t0[far_i], t1[far_i], nonempty[far_i]
            )
    if cub_i.size:
        mean[cub_i] = cub_mean
        cov[cub_i] = cub_cov
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
    return Edges(nu, cu, active, t0, t1, nonempty, table.empty[m], verts, ext)


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
    return Edges(nu, cu, active, t0, t1, nonempty, table.empty[m], verts, ext)


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
        return TruncatedMoments(
            *_table_chunked(_table_moments, table, polygon, shift, floor, None, T)
        )
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
