"""Exact standard-normal integrals over convex polygons (d = 2), in log space and tail-safe.

Whitened setting: ``u ~ N(0, I_2)`` and ``P = {u : n_i . u <= c_i}`` with unit normals.  Each
facet (edge) ``e`` lies on the line ``n_e . u = c_e``, parametrised ``u = c_e n_e + t tau_e``
with ``tau_e = (-n_e[1], n_e[0])`` and ``t in [t0_e, t1_e]`` (``+-inf`` for rays).

Mass (edge formula with Owen's T, Stokes' theorem around the mean)::

    m = omega - sum_e sgn(c_e) [T(|c_e|, t1/|c_e|) - T(|c_e|, t0/|c_e|)]

with ``omega`` = 1 (mean inside), 0 (outside) or the interior angle / 2 pi (mean on the
boundary); edges with ``c_e = 0`` contribute nothing.  This *fast path* has absolute error
~1e-16 and is used whenever the result is not small next to its terms.  The other pairs are
redone by one of two relative-accurate methods:

* **tail-safe edge pieces**: each edge is split at the foot of the perpendicular so that every
  piece is ``B(h, ta, tb) = e^{-h^2/2}/(2 pi) int_ta^tb e^{-t^2/2} h/(h^2 + t^2) dt`` with
  ``0 <= ta < tb <= inf`` (``h = |c_e|``); each piece is evaluated in log space by
  Gauss-Laguerre (``ta >= 4``, substitution ``t^2 = ta^2 + 2 s``), Gauss-Legendre near the foot
  (or Owen's T differences for ``h < 1``), and the pieces are combined with their signs by
  log-sum-exp.  Exact to ~1e-13 in log mass, also at log masses of -1e8.
* **small polygons** (bounded, ``R (|g| + R/2) <= 1`` with ``g`` the vertex centroid and ``R``
  the largest vertex distance from it): a 10 x 10 collapsed Gauss-Legendre rule on the fan
  triangles from ``g`` integrates ``phi(g) exp(-g.v - |v|^2/2)`` with no cancellation at all
  (the edge formula cancels when a tiny polygon sits near the mean).

Moments by the divergence theorem, in the stable weight form
``w_e = exp(log phi(c_e) + log Phi_1(edge) - log m)``::

    E[u] = -sum_e w_e n_e,     Cov[u] = I - sum_e w_e n_e (gbar_e - E[u])^T   (symmetrised)

with ``gbar_e = c_e n_e + E_1[t | t0 <= t <= t1] tau_e`` the edge's conditional mean.  Small
polygons (as above, with ``R < 0.1`` or flagged) use the cubature for the moments too, since
the divergence form loses ``eps / R^4`` relative in the covariance there.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.special import owens_t

from ._interval import EPS, TruncatedMoments, interval_stats, log_phi

__all__ = ["log_mass_2d", "polygon_edges", "truncated_moments_2d"]

logger = logging.getLogger(__name__)

_LOG_2PI = math.log(2.0 * math.pi)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
_GL_X = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W
_LAG_X, _LAG_W = np.polynomial.laguerre.laggauss(16)
# Collapsed (Duffy) product rule on a triangle: v = a (P0 - g) + a b (P1 - P0), Jacobian a * det.
_CX, _CW = np.polynomial.legendre.leggauss(10)
_CX = 0.5 * (_CX + 1.0)
_CW = 0.5 * _CW
_CUB_A = np.repeat(_CX, _CX.size)
_CUB_AB = _CUB_A * np.tile(_CX, _CX.size)
_CUB_W = np.repeat(_CW, _CW.size) * np.tile(_CW, _CW.size) * _CUB_A

# Fast path accepted when m >= _FAST_RATIO * (sum of |terms|) and m >= _FAST_MIN.
_FAST_RATIO = 1e-3
_FAST_MIN = 1e-14
# Cut between Gauss-Legendre on [0, S] and the Laguerre difference in the tail pieces.
_S_SPLIT = 4.0
# Distance along an edge (from the foot) beyond which the Laguerre substitution is used.
_T_LAG = 4.0
# Small-polygon cubature: R (|g| + R/2) <= _SMALL; moments by cubature also when R < _MOM_R.
_SMALL = 1.0
_MOM_R = 0.1


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
        bad = (
            ((norm == 0) & (c < 0)) | (c == -np.inf) | np.isnan(c) | np.isnan(norm) | np.isinf(norm)
        )
        active = (norm > 0) & (c < np.inf) & ~bad
        safe = np.where(active, norm, 1.0)
        nu = np.where(active[..., None], n / safe[..., None], 0.0)
        cu = np.where(active, c / safe, np.inf)
    return nu, cu, active, bad.any(axis=1)


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
    P, F = cu.shape
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    A = np.einsum("pjk,pek->pej", nu, tau)  # n_j . tau_e
    NN = np.einsum("pjk,pek->pej", nu, nu)  # n_j . n_e
    idx = np.arange(F)
    other = active[:, None, :] & (idx[None, :, None] != idx[None, None, :])
    with np.errstate(all="ignore"):
        B = cu[:, None, :] - cu[:, :, None] * NN  # c_j - c_e (n_j . n_e)
        ratio = B / A
        t1 = np.min(np.where(other & (A > 0), ratio, np.inf), axis=2)
        t0 = np.max(np.where(other & (A < 0), ratio, -np.inf), axis=2)
        par = other & (A == 0)
        earlier = idx[None, None, :] < idx[None, :, None]
        kill = par & ((B < 0) | ((B == 0) & (NN > 0) & earlier))
        degenerate = np.any(par & (NN < 0) & (B <= 0), axis=(1, 2))
        nonempty = active & (t0 < t1) & ~np.any(kill, axis=2)
    return t0, t1, nonempty, degenerate


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
    P, F = cu.shape
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

    out = np.empty_like(ta)
    short = S <= _S_SPLIT
    i = np.flatnonzero(short)
    if i.size:
        s = S[i, None] * _GL_X
        q = S[i] * np.sum(_GL_W * np.exp(-s) * rho(s, ta2[i, None], ha[i, None]), axis=1)
        out[i] = np.log(q)
    i = np.flatnonzero(~short)
    if i.size:
        qa = np.sum(_LAG_W * rho(_LAG_X, ta2[i, None], ha[i, None]), axis=1)
        tbi = tb[i]
        fin = np.isfinite(tbi)
        tb_safe = np.where(fin, tbi, 1.0)
        tb2 = tb_safe * tb_safe
        hb = h[i] * h[i] + tb2
        qb = np.sum(_LAG_W * rho(_LAG_X, tb2[:, None], hb[:, None]), axis=1)
        Si = np.where(fin, S[i], 0.0)
        back = np.where(fin, np.exp(-Si) * rho(Si, ta2[i], ha[i]) * qb, 0.0)
        out[i] = np.log(qa - back)
    return logf0 + out


def _gl_near_foot(h, ta, tc):
    """``int_ta^tc e^{-t^2/2} h / (h^2 + t^2) dt`` by 32-node Gauss-Legendre."""
    L = tc - ta
    t = ta[:, None] + L[:, None] * _GL_X
    return L * np.sum(_GL_W * np.exp(-0.5 * t * t) * h[:, None] / (h[:, None] ** 2 + t * t), axis=1)


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
    """
    out = np.empty_like(h)
    far = ta >= _T_LAG
    i = np.flatnonzero(far)
    if i.size:
        out[i] = (
            -0.5 * (h[i] * h[i] + ta[i] * ta[i]) - _LOG_2PI + _laguerre_part(h[i], ta[i], tb[i])
        )
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
        out[i] = -0.5 * hh * hh - _LOG_2PI + np.log(V + tail)
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
    P, F = cu.shape
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
        logB[valid] = log_edge_pieces(hh[valid], la[valid], lb[valid])
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
    return logm, ratio


# --------------------------------------------------------------------------------------------
# small-polygon cubature
# --------------------------------------------------------------------------------------------
def _vertices(nu, cu, t0, t1, nonempty):
    """Edge end points (P, F, 2) each, centroid g (P, 2), radius R (P,), bounded (P,)."""
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
    return P0, P1, g, R, bounded


def _cubature(P0, P1, g, nonempty, moments: bool):
    """Mass (log) and optionally moments of N(0, I) on small bounded polygons by fan cubature."""
    a0 = np.where(nonempty[..., None], P0 - g[:, None, :], 0.0)  # (P, F, 2)
    d10 = np.where(nonempty[..., None], P1 - P0, 0.0)
    det = a0[..., 0] * d10[..., 1] - a0[..., 1] * d10[..., 0]  # 2 * area (>= 0)
    v = (
        _CUB_A[None, None, :, None] * a0[:, :, None, :]
        + _CUB_AB[None, None, :, None] * d10[:, :, None, :]
    )
    q = -(v @ g[:, None, :, None])[..., 0] - 0.5 * np.sum(v * v, axis=-1)  # (P, F, K)
    wq = (_CUB_W * det[..., None]) * np.exp(q)
    Z = wq.sum(axis=(1, 2))
    logm = -0.5 * (g[:, 0] ** 2 + g[:, 1] ** 2) - _LOG_2PI + np.log(Z)
    if not moments:
        return logm, None, None
    Ev = np.einsum("pfk,pfkd->pd", wq, v) / Z[:, None]
    vc = v - Ev[:, None, None, :]
    cov = np.einsum("pfk,pfkd,pfke->pde", wq, vc, vc) / Z[:, None, None]
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return logm, g + Ev, cov


# --------------------------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------------------------
def _log_mass_core(normals, offsets, moments: bool):
    nu, cu, active, bad = _prepare(normals, offsets)
    P, F = cu.shape
    t0, t1, nonempty, degenerate = polygon_edges(nu, cu, active)
    omega = _omega(nu, cu, active)
    has_rows = active.any(axis=1)
    empty = bad | degenerate | (has_rows & ~nonempty.any(axis=1))
    use = nonempty & (cu != 0) & ~empty[:, None]
    with np.errstate(all="ignore"):
        mass, scale = _fast_mass(cu, t0, t1, use, omega)
        ok = (mass >= _FAST_RATIO * scale) & (mass >= _FAST_MIN)
        logm = np.log(np.minimum(mass, 1.0))
        ratio = scale / mass
    kind = np.where(empty, 0, np.where(ok, 1, 2))  # 0 empty, 1 fast, 2 redo
    logm = np.where(empty, -np.inf, logm)
    quad_err = np.zeros(P)

    P0, P1, g, R, bounded = _vertices(nu, cu, t0, t1, nonempty)
    small = bounded & (R * (np.hypot(g[:, 0], g[:, 1]) + 0.5 * R) <= _SMALL) & ~empty
    cub = small & ((kind == 2) | (moments & (R < _MOM_R)))
    cub_i = np.flatnonzero(cub)
    cub_mean = cub_cov = None
    if cub_i.size:
        with np.errstate(all="ignore"):
            lm, cub_mean, cub_cov = _cubature(
                P0[cub_i], P1[cub_i], g[cub_i], nonempty[cub_i], moments
            )
        logm[cub_i] = lm
        ratio[cub_i] = 1.0
        quad_err[cub_i] = 1e-14
    tail_i = np.flatnonzero((kind == 2) & ~cub)
    if tail_i.size:
        lm, rt = _tail_mass(cu[tail_i], t0[tail_i], t1[tail_i], use[tail_i], omega[tail_i])
        logm[tail_i] = lm
        ratio[tail_i] = rt
        quad_err[tail_i] = 1e-14
    logm = np.minimum(logm, 0.0)
    with np.errstate(all="ignore"):
        err = 8.0 * EPS * np.where(np.isfinite(ratio), ratio, 1.0) + 4.0 * EPS * (
            1.0 + np.abs(logm)
        )
    err = np.where(np.isfinite(logm), err + quad_err, 0.0)
    logger.debug(
        "log_mass_2d: %d pairs, %d fast, %d tail-safe, %d cubature, %d empty",
        P,
        int(np.sum(kind == 1)),
        tail_i.size,
        cub_i.size,
        int(np.sum(empty)),
    )
    geo = (nu, cu, t0, t1, nonempty, cub_i, cub_mean, cub_cov)
    return logm, err, geo


def log_mass_2d(normals: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log mass of ``N(0, I_2)`` on the polygons ``{u : n_i . u <= c_i}``.

    Parameters
    ----------
    normals : ndarray, shape (P, F, 2)
        Row normals (normalised internally); zero rows with ``+inf`` offsets are padding.
    offsets : ndarray, shape (P, F)
        Offsets ``c_i`` (``+inf``: no constraint; ``-inf``: empty polygon).

    Returns
    -------
    log_mass : ndarray, shape (P,)
        ``log P(u in polygon)``, relative-accurate (``-inf`` for empty or measure-zero
        polygons; 0 for the whole plane).
    error : ndarray, shape (P,)
        Estimated absolute error of ``log_mass``.
    """
    logm, err, _ = _log_mass_core(normals, offsets, moments=False)
    return logm, err


def truncated_moments_2d(normals: np.ndarray, offsets: np.ndarray) -> TruncatedMoments:
    """Log mass, mean ``(P, 2)`` and covariance ``(P, 2, 2)`` of ``N(0, I_2)`` on polygons.

    See :func:`log_mass_2d` for the inputs.  Moments by the divergence theorem in the stable
    weight form (module docstring); small polygons by direct cubature.
    """
    logm, err, geo = _log_mass_core(normals, offsets, moments=True)
    nu, cu, t0, t1, nonempty, cub_i, cub_mean, cub_cov = geo
    P, F = cu.shape
    tau = np.stack([-nu[..., 1], nu[..., 0]], axis=-1)
    ok = np.isfinite(logm)
    edge = nonempty & ok[:, None]
    with np.errstate(all="ignore"):
        lphi1, tmean, _ = interval_stats(np.where(edge, t0, 0.0), np.where(edge, t1, 1.0))
        logw = log_phi(np.where(edge, cu, 0.0)) + lphi1 - np.where(ok, logm, 0.0)[:, None]
        w = np.where(edge, np.exp(logw), 0.0)
        gbar = np.where(
            edge[..., None], cu[..., None] * nu + np.where(edge, tmean, 0.0)[..., None] * tau, 0.0
        )
    mean = -np.einsum("pf,pfd->pd", w, nu)
    cov = np.eye(2)[None] - np.einsum("pf,pfd,pfe->pde", w, nu, gbar - mean[:, None, :])
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    if cub_i.size:
        mean[cub_i] = cub_mean
        cov[cub_i] = cub_cov
    mean[~ok] = np.nan
    cov[~ok] = np.nan
    return TruncatedMoments(logm, mean, cov, err)
