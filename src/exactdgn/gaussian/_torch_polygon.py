"""Torch (float64, any device) kernels for d = 2: Owen's T, tail-safe edge pieces, polygon masses.

The math is that of :mod:`._polygon` (edge formula ``m = ω - Σ_e sgn(c_e) [T(h, t1/h) -
T(h, t0/h)]``, each Owen's-T difference split at the foot of the perpendicular into pieces
``B(h, ta, tb) = e^{-h²/2}/(2π) ∫_ta^tb e^{-t²/2} h/(h² + t²) dt`` with ``0 <= ta < tb``; small
polygons by fan cubature). Torch has no Owen's T, so every piece is a quadrature with fixed
nodes (static shapes):

* ``ta >= 4``: the Gauss-Laguerre / short Gauss-Legendre forms of ``_polygon._laguerre_part``;
* ``ta < 4``, ``h >= 1`` or a short piece (``tc - ta <= max(h, ta)``, ``tc = min(tb, 4)``):
  32-node Gauss-Legendre on ``[ta, tc]`` (as ``_polygon._gl_near_foot``), plus the Laguerre
  tail beyond 4;
* ``ta < 4``, ``h < 1``, long (numpy uses scipy's ``owens_t`` there): ``[ta, tc]`` is split at
  ``τ = 0.01``. Below ``τ``, ``e^{-t²/2} = 1 - t²/2 + t⁴/8 - t⁶/48`` (next term ``< 3e-19``
  relative) against ``h/(h² + t²)`` integrates in closed form (``atan`` and polynomials); above
  ``τ``, ``t = h sinh s`` turns the integrand into ``e^{-t(s)²/2} / cosh s``, analytic within
  ``π/2`` of the real axis, over an ``s``-range of length ``<= asinh(4/h) - asinh(τ/h) <=
  log(400) ≈ 6``: 8 panels of 16-node Gauss-Legendre (panel length <= 0.75; checked against
  mpmath to ~1e-15 relative in the tests, where numpy's ``owens_t`` difference loses up to
  1e-2 for ``h ~ 1e-12``).

With every piece exact to rounding, all non-small pairs take the tail-safe combination (the
pieces summed with their signs in log space) on the device: no fast path to validate and redo,
and the result is at least as accurate as the numpy path's (which accepts the plain Owen's-T
sum where it does not cancel). :func:`owens_t_t` is ``T(h, a) = e^{-h²/2}/(2π) V(h, 0, h a)``
from the same pieces.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from ._polygon import (
    _CUB_BOUNDS,
    _CUB_QBOUNDS,
    _CUB_RULES,
    _FAST_CMIN,
    _FAST_ERR,
    _FAST_MIN,
    _FAST_RATIO,
    _GL16S_W,
    _GL16S_X,
    _GL_W,
    _GL_X,
    _LAG_W,
    _LAG_X,
    _OMEGA_ERR,
    _S_SPLIT,
    _SLICE_ERR,
    _SLICE_RATIO,
    _SMALL,
    _SWEEP_K,
    _SWEEP_S,
    _T_ERR,
    _T_EXP,
    _T_LAG,
    _T_TURN,
    Edges,
    Vertices,
    _fast_mass,
    _local_frame,
    _slice_pairs,
    _vertex_error,
)
from ._rules import EPS, LOG_2PI, gauss_legendre
from ._torch_interval import log_interval_mass_t, log_phi_t, nodes

__all__ = ["log_edge_pieces_t", "owens_t_t", "polygon_log_mass_t"]

_TAU = 0.01  # series / sinh split of the small-h pieces
_NPAN = 8
_GL16_X, _GL16_W = gauss_legendre(16)
_PAN_X = ((np.arange(_NPAN)[:, None] + 0.5 * (_GL16_X[None, :] + 1.0)) / _NPAN).ravel()
_PAN_W = np.tile(0.5 * _GL16_W / _NPAN, _NPAN)


def _gather_apply(out, mask, fn, *args):
    """``out[mask] = fn(*(a[mask] ...))`` by gathering on every device (heavy branches)."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        out[idx] = fn(*(a[idx] for a in args))
    return out


def _rho_rows(two_s, t2, hh):
    """``sqrt(t2) hh / (sqrt(t2 + 2s) (hh + 2s))`` at (n, K) nodes."""
    return (torch.sqrt(t2) * hh)[:, None] / (
        torch.sqrt(two_s + t2[:, None]) * (two_s + hh[:, None])
    )


def _laguerre_part(h, ta, tb):
    """Torch twin of ``_polygon._laguerre_part`` (``ta > 0``, ``tb > ta``): log of
    ``∫_ta^tb e^{-(t² - ta²)/2} h/(h² + t²) dt``."""
    ta2 = ta * ta
    ha = h * h + ta2
    logf0 = torch.log(h) - torch.log(ta) - torch.log(ha)
    S = 0.5 * (tb - ta) * (tb + ta)
    out = torch.empty_like(ta)

    def short(S_, ta2_, ha_):
        x, w = nodes("gl16s_x", _GL16S_X, S_), nodes("gl16s_w", _GL16S_W, S_)
        s = S_[:, None] * x
        f = _rho_rows(2.0 * s, ta2_, ha_) * torch.exp(-s)
        return torch.log(S_ * (f * w).sum(1))

    def long(S_, ta2_, ha_, h_, tb_):
        x, w = nodes("lag_x", _LAG_X, S_), nodes("lag_w", _LAG_W, S_)
        qa = (_rho_rows(2.0 * x[None, :], ta2_, ha_) * w).sum(1)
        fin = torch.isfinite(tb_)
        tbs = torch.where(fin, tb_, 1.0)
        tb2 = tbs * tbs
        qb = (_rho_rows(2.0 * x[None, :], tb2, h_ * h_ + tb2) * w).sum(1)
        Si = torch.where(fin, S_, 0.0)
        rho = 1.0 / (torch.sqrt(1.0 + 2.0 * Si / ta2_) * (1.0 + 2.0 * Si / ha_))
        back = torch.where(fin, torch.exp(-Si) * rho * qb, 0.0)
        return torch.log(qa - back)

    sh = S <= _S_SPLIT
    out = _gather_apply(out, sh, short, S, ta2, ha)
    out = _gather_apply(out, ~sh, long, S, ta2, ha, h, tb)
    return logf0 + out


def _gl_near_foot(h, ta, tc):
    x, w = nodes("gl32x", _GL_X, h), nodes("gl32w", _GL_W, h)
    L = tc - ta
    t = ta[:, None] + L[:, None] * x
    t2 = t * t
    e = torch.exp(-0.5 * t2) / (t2 + (h * h)[:, None])
    return (L * h) * (e * w).sum(1)


def _asinh_ratio(t, h):
    """``asinh(t / h)`` for ``t >= 0``, ``h > 0`` without overflow of ``t / h``."""
    big = t > 1e8 * h
    return torch.where(
        big, math.log(2.0) + torch.log(t) - torch.log(h), torch.asinh(t / torch.where(big, 1.0, h))
    )


def _small_h_long(h, ta, tc):
    """``∫_ta^tc e^{-t²/2} h/(h² + t²) dt`` for ``h < 1``, ``0 <= ta < tc <= 4`` (module doc)."""
    # series part on [ta, min(tc, τ)]
    u = torch.clamp(tc, max=_TAU)
    has = ta < u
    a0, a1 = torch.where(has, ta, 0.0), torch.where(has, u, 0.0)
    # atan(a1/h) - atan(a0/h) without cancellation
    at = torch.atan((a1 - a0) * h / (h * h + a0 * a1))
    h2 = h * h

    def poly(t):  # ∫ h/(h²+t²) (-t²/2 + t⁴/8 - t⁶/48) dt minus its atan part
        t2 = t * t
        p2 = h * t
        p4 = h * t * t2 / 3.0 - h2 * h * t
        p6 = h * t * t2 * t2 / 5.0 - h2 * h * t * t2 / 3.0 + h2 * h2 * h * t
        return -0.5 * p2 + p4 / 8.0 - p6 / 48.0

    coef = 1.0 + 0.5 * h2 + h2 * h2 / 8.0 + h2 * h2 * h2 / 48.0  # atan coefficient
    series = torch.where(has, coef * at + (poly(a1) - poly(a0)), 0.0)
    # sinh part on [max(ta, τ), tc]
    lo = torch.clamp(ta, min=_TAU)
    has2 = lo < tc
    s0 = _asinh_ratio(lo, h)
    s1 = _asinh_ratio(torch.where(has2, tc, lo), h)
    x, w = nodes("pan_x", _PAN_X, h), nodes("pan_w", _PAN_W, h)
    L = s1 - s0
    s = s0[:, None] + L[:, None] * x
    lh = torch.log(h)[:, None]
    t = 0.5 * (torch.exp(s + lh) - torch.exp(lh - s))  # h sinh s
    f = torch.exp(-0.5 * t * t - s) * 2.0 / (1.0 + torch.exp(-2.0 * s))  # e^{-t²/2} / cosh s
    sinh_part = torch.where(has2, L * (f * w).sum(1), 0.0)
    return series + sinh_part


def log_edge_pieces_t(h: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    """``log B(h, ta, tb)`` (torch twin of :func:`exactdgn.gaussian.log_edge_pieces`).

    ``h > 0``, ``0 <= ta < tb <= inf``, all (n,).
    """
    out = torch.empty_like(h)

    def far(h_, a_, b_):
        return -0.5 * (h_ * h_ + a_ * a_) - LOG_2PI + _laguerre_part(h_, a_, b_)

    def near(h_, a_, b_):
        tc = torch.clamp(b_, max=_T_LAG)
        V = torch.empty_like(h_)
        gl = (h_ >= 1.0) | (tc - a_ <= torch.maximum(h_, a_))
        V = _gather_apply(V, gl, _gl_near_foot, h_, a_, tc)
        V = _gather_apply(V, ~gl, _small_h_long, h_, a_, tc)
        tail = torch.zeros_like(h_)
        four = torch.full_like(h_, _T_LAG)
        tail = _gather_apply(
            tail,
            b_ > _T_LAG,
            lambda hh, ff, bb: torch.exp(-0.5 * _T_LAG**2 + _laguerre_part(hh, ff, bb)),
            h_,
            four,
            b_,
        )
        return -0.5 * h_ * h_ - LOG_2PI + torch.log(V + tail)

    f = ta >= _T_LAG
    out = _gather_apply(out, f, far, h, ta, tb)
    out = _gather_apply(out, ~f, near, h, ta, tb)
    return out


def owens_t_t(h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Owen's ``T(h, a)`` (float64 tensors, any shapes that broadcast), by the edge pieces.

    ``T(h, a) = sgn(a) B(|h|, 0, |h a|)``; ``T(0, a) = atan(a)/(2π)``. Relative-accurate where
    it does not underflow (``h <~ 37``; beyond, ``exp(log B)`` is 0 or subnormal).
    """
    h, a = torch.broadcast_tensors(
        torch.as_tensor(h, dtype=torch.float64).abs(), torch.as_tensor(a, dtype=torch.float64)
    )
    shape = h.shape
    h, a = h.reshape(-1), a.reshape(-1)
    out = torch.zeros_like(h)
    pos = (h > 0) & (a != 0)
    out = _gather_apply(
        out,
        pos,
        lambda hh, aa: torch.exp(
            log_edge_pieces_t(
                hh, torch.zeros_like(hh), torch.where(torch.isinf(aa), aa.abs(), hh * aa.abs())
            )
        ),
        h,
        a,
    )
    out = torch.where(h == 0, torch.atan(a.abs()) / (2.0 * math.pi), out)
    return (torch.sign(a) * out).reshape(shape)


# ------------------------------------------------------------------------------ polygons
def _omega(nu, cu, active):
    """Torch twin of ``_polygon._omega`` (dense)."""
    cm = torch.where(active, cu, math.inf)
    cmin = cm.min(dim=1).values
    omega = torch.where(cmin > 0, 1.0, 0.0).to(cu.dtype)
    onb = (cmin == 0).nonzero().squeeze(1)
    if onb.numel():
        z = active[onb] & (cu[onb] == 0)
        beta = torch.atan2(-nu[onb, :, 1], -nu[onb, :, 0])
        ref = beta[torch.arange(onb.numel(), device=cu.device), z.to(cu.dtype).argmax(dim=1)]
        delta = torch.remainder(beta - ref[:, None] + math.pi, 2.0 * math.pi) - math.pi
        lo = torch.clamp(
            torch.where(z, delta - 0.5 * math.pi, -math.inf).max(dim=1).values, min=-0.5 * math.pi
        )
        hi = torch.clamp(
            torch.where(z, delta + 0.5 * math.pi, math.inf).min(dim=1).values, max=0.5 * math.pi
        )
        omega[onb] = torch.clamp(hi - lo, min=0.0) / (2.0 * math.pi)
    return omega


def distance_bound_t(cu, t0, t1, nonempty):
    """(P,) ``log Q(δ)``, ``δ`` the distance from the mean to the polygon (0 inside)."""
    tst = torch.minimum(torch.maximum(torch.zeros_like(t0), t0), t1)
    d2 = torch.where(nonempty, cu * cu + tst * tst, math.inf).min(dim=1).values
    outside = torch.where(nonempty, cu, math.inf).min(dim=1).values < 0
    ok = outside & torch.isfinite(d2)
    return torch.where(ok, torch.special.log_ndtr(-torch.sqrt(torch.where(ok, d2, 0.0))), 0.0)


def _lse_masked(x, mask):
    xm = torch.where(mask, x, -math.inf)
    mx = xm.max(dim=1, keepdim=True).values
    mxs = torch.where(torch.isfinite(mx), mx, 0.0)
    s = torch.where(mask, torch.exp(xm - mxs), 0.0).sum(dim=1)
    return mxs.squeeze(1) + torch.log(s)


def _tail_mass(cu, t0, t1, use, omega):
    """Torch twin of ``_polygon._tail_mass``: log mass and the cancellation ratio (P,)."""
    h = cu.abs()
    straddle = (t0 < 0) & (t1 > 0)
    pos = t0 >= 0
    zero = torch.zeros_like(t0)
    a1 = torch.where(straddle, zero, torch.where(pos, t0, -t1))
    b1 = torch.where(straddle, -t0, torch.where(pos, t1, -t0))
    la = torch.cat([a1, zero], dim=1)
    lb = torch.cat([b1, t1], dim=1)
    hh = torch.cat([h, h], dim=1)
    valid = torch.cat([use, use & straddle], dim=1) & (la < lb)
    sg = torch.sign(torch.cat([cu, cu], dim=1))
    logB = torch.full_like(la, -math.inf)
    idx = valid.nonzero(as_tuple=True)
    if idx[0].numel():
        logB[idx] = log_edge_pieces_t(hh[idx], la[idx], lb[idx])
    front = valid & (sg < 0)
    back = valid & (sg > 0)
    lom = torch.log(omega)[:, None]
    Lf = _lse_masked(torch.cat([logB, lom], dim=1), torch.cat([front, omega[:, None] > 0], dim=1))
    Lb = _lse_masked(logB, back)
    diff = Lb - Lf
    logm = torch.where(
        diff < 0, Lf + torch.log1p(-torch.exp(torch.clamp(diff, max=0.0))), -math.inf
    )
    logm = torch.where(torch.isneginf(Lb), Lf, logm)
    ratio = torch.exp(torch.logaddexp(Lf, Lb) - logm)
    # end-point rounding term of the error (see _polygon._tail_mass); feet are exact
    real = valid & torch.cat([~straddle, torch.zeros_like(straddle)], dim=1)
    t = torch.cat([la, lb], dim=1)
    h2 = torch.cat([hh, hh], dim=1)
    r2 = h2 * h2 + t * t
    ld = -0.5 * r2 - LOG_2PI + torch.log(h2 / r2) + torch.log(_T_ERR * EPS * (h2 + t.abs()))
    ends = torch.exp(_lse_masked(ld, torch.cat([real, valid & torch.isfinite(lb)], dim=1)) - logm)
    return logm, ratio, ends


def _fan(P0, P1, g, nonempty, R):
    """Fan triangles ``(g, P0_e, P1_e)`` of small polygons: ``a0 = P0 - g``, ``d10 = P1 - P0``
    (P, F, 2), ``det`` (P, F) (twice the areas), the exponent coefficients ``coef`` (P, F, 5)
    and the cubature level (P,) for the mass (``_polygon._cubature``)."""
    spread = R * (torch.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    ne = nonempty[..., None]
    a0 = torch.where(ne, P0 - g[:, None, :], 0.0)
    d10 = torch.where(ne, P1 - P0, 0.0)
    det = a0[..., 0] * d10[..., 1] - a0[..., 1] * d10[..., 0]
    gb = g[:, None, :]

    def dot(u, v):  # over the last axis (size 2), without a slow tiny reduction
        return u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1]

    coef = torch.stack([dot(a0, gb), dot(d10, gb), dot(a0, a0), dot(a0, d10), dot(d10, d10)], -1)
    level = torch.maximum(
        torch.searchsorted(nodes("cub_b", _CUB_BOUNDS, g), spread.contiguous()),
        torch.searchsorted(nodes("cub_qb", _CUB_QBOUNDS, g), (0.5 * R * R).contiguous()),
    )
    return a0, d10, det, coef, level


def _cub_node_sums(coef, level, cols, nonempty):
    """(P, F, len(cols)) node sums of ``e^q`` times the monomials ``cols`` per fan triangle,
    with the rule ``level`` (P,) of each pair (``_polygon._cub_sums``); only the rows of real
    edges (``nonempty`` (P, F)) are computed, the padding rows are 0."""
    out = coef.new_zeros((*coef.shape[:2], len(cols)))
    pi, fi = nonempty.nonzero(as_tuple=True)
    lev = level[pi]
    for lv in torch.unique(lev).tolist():
        expo, sums = _CUB_RULES[lv]
        E = nodes(f"cub_e{lv}", expo, coef)
        Wt = nodes(f"cub_s{lv}", sums, coef)[:, cols]
        k = (lev == lv).nonzero().squeeze(1)
        p, f = pi[k], fi[k]
        out[p, f] = torch.exp(coef[p, f] @ E) @ Wt
    return out


def _cubature_mass(P0, P1, g, nonempty, R):
    """Torch twin of ``_polygon._cubature`` (mass only): log mass and conditioning (P,)."""
    _, d10, det, coef, level = _fan(P0, P1, g, nonempty, R)
    S = _cub_node_sums(coef, level, [0], nonempty)[..., 0] * det
    Z = torch.where(nonempty, S, 0.0).sum(1)
    logm = -0.5 * (g[:, 0] ** 2 + g[:, 1] ** 2) - LOG_2PI + torch.log(Z)
    perim = torch.where(nonempty, torch.hypot(d10[..., 0], d10[..., 1]), 0.0).sum(1)
    size = torch.where(nonempty, torch.hypot(P0[..., 0], P0[..., 1]), 0.0).max(dim=1).values
    cond = EPS * size * perim / (0.5 * det.sum(dim=1))
    return logm, cond


# Owen's-T fast path of the numpy kernel (``_polygon._fast_mass``: scipy's ``owens_t`` on the
# tensors' memory) before the tail-safe pieces, by device type. On the CPU it pays: MNIST t10k
# [2,32,32,784], 2,000 images, one core, the polygon masses took 3.2 s of 4.8 s with every
# non-small pair on the pieces; numpy accepts most pairs with two scipy calls per edge. On a GPU
# it would mean a host round trip per block, so the uniform tail-safe path stays.
FAST_PATH = {"cpu": True}


def _fast_path(cu, t0, t1, use, omega, active, tail, logm, ratio, qerr):
    """Numpy's fast path on CPU tensors: the Owen's-T edge formula for the ``tail`` pairs whose
    mean is not far outside a line, accepted where numpy accepts it (no cancellation); returns
    the pairs left for the tail-safe pieces and the updated ``ratio`` / ``qerr`` (``logm``
    is filled in place)."""
    cmin = torch.where(active, cu, math.inf).min(dim=1).values
    fi = (tail & (cmin >= -_FAST_CMIN)).nonzero().squeeze(1)
    if not fi.numel():
        return tail, ratio, qerr
    with np.errstate(all="ignore"):
        mass, scale = _fast_mass(
            cu[fi].numpy(), t0[fi].numpy(), t1[fi].numpy(), use[fi].numpy(), omega[fi].numpy()
        )
        ok = (mass >= _FAST_RATIO * scale) & (mass >= _FAST_MIN)
        lm = np.log(np.minimum(mass, 1.0))
        rt = scale / mass
    acc = fi[torch.from_numpy(ok)]
    okt = torch.from_numpy(ok)
    logm[acc] = torch.from_numpy(lm)[okt]
    ratio[acc] = torch.from_numpy(rt)[okt]
    qerr[acc] = _FAST_ERR * ratio[acc]
    tail = tail.clone()
    tail[acc] = False
    return tail, ratio, qerr


def polygon_log_mass_t(edges: Edges, floor=None):
    """Log mass and its error (P,) of translated polygons (``_polygon._integrate``, mass only).

    Inputs as produced by ``shifted_t`` (edges padded to the table's width). Small polygons
    by fan cubature; on devices with :data:`FAST_PATH` (the CPU) numpy's Owen's-T edge formula
    where it does not cancel; all others by the tail-safe pieces. With ``floor`` (P,), pairs
    whose closest-point bound is below it get ``-inf`` (exact pruning).
    """
    nu, cu, active, t0, t1 = edges.nu, edges.cu, edges.active, edges.t0, edges.t1
    nonempty, empty, verts = edges.nonempty, edges.empty, edges.verts
    P = cu.shape[0]
    omega = _omega(nu, cu, active)
    if floor is not None:
        empty = empty | (distance_bound_t(cu, t0, t1, nonempty) < floor)
    use = nonempty & (cu != 0) & ~empty[:, None]
    P0, P1, g, R, bounded = verts.P0, verts.P1, verts.g, verts.radius, verts.bounded
    spread = R * (torch.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    small = bounded & (spread <= _SMALL) & ~empty
    tail = ~small & ~empty
    logm = torch.full((P,), -math.inf, dtype=cu.dtype, device=cu.device)
    ratio = torch.ones_like(logm)
    qerr = torch.zeros_like(logm)
    i = small.nonzero().squeeze(1)
    if i.numel():
        lm, cond = _cubature_mass(P0[i], P1[i], g[i], nonempty[i], R[i])
        logm[i] = lm
        qerr[i] = 1e-14 + 4.0 * cond
    if FAST_PATH.get(cu.device.type, False):
        tail, ratio, qerr = _fast_path(cu, t0, t1, use, omega, active, tail, logm, ratio, qerr)
    i = tail.nonzero().squeeze(1)
    if i.numel():
        lm, rt, ends = _tail_mass(cu[i], t0[i], t1[i], use[i], omega[i])
        logm[i] = lm
        ratio[i] = rt
        qerr[i] = (
            1e-14
            + torch.where(torch.isfinite(ends), ends, 0.0)
            + _T_EXP * EPS * rt * (1.0 + lm.abs())
        )
    # pairs whose pieces cancel beyond their resolution (or leave nothing): numpy's slicing
    # (``_polygon._slice_pairs``), on the host; they are few (slivers, thin strips, means on a
    # vertex whose rows' offsets came out +-eps instead of 0)
    cancel = (
        tail & (ratio > _SLICE_RATIO) & (_T_EXP * EPS * ratio * (1.0 + logm.abs()) > _SLICE_ERR)
    )
    resc = ~empty & ~small & active.any(dim=1) & (~torch.isfinite(logm) | cancel)
    ri = resc.nonzero().squeeze(1)
    local_rows = lens = None
    if ri.numel():
        host = ri.cpu().numpy()
        e_np = Edges(
            *(q[ri].cpu().numpy() for q in (nu, cu, active, t0, t1, nonempty, empty)), None
        )
        fr = None if edges.local is None else edges.local(host)
        rows = np.arange(host.size)
        sl = _slice_pairs(e_np, rows, fr, False)
        lm_cur, qerr_cur = logm[ri].cpu().numpy(), qerr[ri].cpu().numpy()
        take = np.isfinite(sl.log_mass) & (~np.isfinite(lm_cur) | (sl.error < qerr_cur))
        if take.any():
            sel = ri[torch.as_tensor(np.flatnonzero(take), device=ri.device)]
            logm[sel] = torch.as_tensor(sl.log_mass[take], dtype=logm.dtype, device=logm.device)
            qerr[sel] = torch.as_tensor(sl.error[take], dtype=qerr.dtype, device=qerr.device)
            ratio[sel] = 1.0
            lt = take & sl.local
            if lt.any():
                local_rows = ri[torch.as_tensor(np.flatnonzero(lt), device=ri.device)]
                lens = (fr.len0[lt], fr.len1[lt])
    logm = torch.clamp(logm, max=0.0)
    # mean on the boundary: omega from rounded directions (``_polygon._integrate``)
    cmin = torch.where(active, cu, math.inf).min(dim=1).values
    onb = (cmin == 0) & ~small & ~empty & (omega > 0) & (omega < 1)
    qerr = torch.where(onb, qerr + _OMEGA_ERR * EPS * torch.exp(-logm), qerr)
    ve = _vertex_error_t(cu, t0, t1, nonempty & ~empty[:, None], logm, edges.ext)
    if local_rows is not None:  # those kept the table's precision (numpy's local frame)
        li = local_rows
        ve_l = _vertex_error(
            *(q[li].cpu().numpy() for q in (cu, t0, t1, nonempty, logm)), None, lens
        )
        ve[li] = torch.as_tensor(ve_l, dtype=ve.dtype, device=ve.device)
    qerr = qerr + ve
    if edges.ext is not None:  # the translation's rounding (``_polygon._shift_error``)
        common = small.clone()
        if local_rows is not None:
            common[local_rows] = True
        reach = torch.hypot(g[:, 0], g[:, 1]) + R
        ne = nonempty & ~empty[:, None]
        qerr = qerr + _shift_error_t(cu, t0, t1, ne, logm, edges.ext, common, reach)
    err = 8.0 * EPS * torch.where(torch.isfinite(ratio), ratio, 1.0) + 4.0 * EPS * (
        1.0 + logm.abs()
    )
    err = torch.where(torch.isfinite(logm), err + qerr, 0.0)
    return logm, err


def _vertex_error_t(cu, t0, t1, nonempty, logm, ext=None):
    """Torch twin of ``_polygon._vertex_error`` (the rounding of the vertices, see there)."""
    f0, f1 = torch.isfinite(t0), torch.isfinite(t1)
    ext = 0.0 if ext is None else ext[:, None]
    loc = torch.clamp(torch.log(t1 - t0), max=0.5 * LOG_2PI)
    base = math.log(EPS) - 0.5 * cu * cu - LOG_2PI
    near = [torch.minimum(loc, -torch.log(t.abs())) for t in (t0, t1)]
    ld = torch.cat(
        [
            base - 0.5 * t * t + nr + torch.log(
                _T_ERR * (cu.abs() + t.abs() + ext) + _T_TURN * torch.clamp(torch.exp(nr), max=1.0)
            )
            for t, nr in zip((t0, t1), near, strict=True)
        ],
        dim=1,
    )  # fmt: skip
    has = torch.cat([nonempty & f0, nonempty & f1], dim=1)
    ld = torch.where(has, ld, -math.inf)
    out = torch.exp(torch.logsumexp(ld, dim=1) - logm)
    return torch.where(torch.isfinite(out), out, 0.0)


def _shift_error_t(cu, t0, t1, nonempty, logm, ext, common, reach):
    """Torch twin of ``_polygon._shift_error`` (the rounding of the pairs' translation, see
    there); ``common`` (P,) bool marks the pairs translated as a whole."""
    lem = _edge_mass_log_t(cu, t0, t1, nonempty)
    rel = torch.exp(lem - logm[:, None])
    loc = torch.clamp(torch.log(t1 - t0), max=0.5 * LOG_2PI)
    base = -0.5 * cu * cu - LOG_2PI - logm[:, None]
    for t in (t0, t1):
        near = base - 0.5 * t * t + torch.minimum(loc, -torch.log(t.abs()))
        rel = rel - torch.where(torch.isfinite(t), torch.exp(near), 0.0)
    rel = torch.where(nonempty & torch.isfinite(rel), torch.clamp(rel, min=0.0), 0.0)
    ext2 = ext[:, None] if ext.dim() == 1 else ext
    out = 4.0 * EPS * torch.sum((cu.abs() + ext2) * rel, dim=1)
    whole = 4.0 * EPS * ext2.max(dim=1).values * reach
    out = torch.where(common, whole, out)
    return torch.where(torch.isfinite(out), out, 0.0)


def _edge_mass_log_t(cu, t0, t1, nonempty):
    """Torch twin of ``_polygon._edge_mass_log``: (P, F) ``log(phi(c) (Phi(t1) - Phi(t0)))``."""
    a = torch.where(nonempty, t0, 0.0)
    b = torch.where(nonempty, t1, 1.0)
    c = torch.where(nonempty, cu, 0.0)
    lm = log_interval_mass_t(a.reshape(-1), b.reshape(-1))[0].reshape(a.shape)  # (1-D kernel)
    out = log_phi_t(c) + lm
    return torch.where(nonempty, out, -math.inf)


def table_to_device(table, device) -> dict:
    """The arrays of a :class:`PolygonTable` as tensors on ``device`` (a dict by field name)."""
    return {
        k: torch.tensor(np.asarray(getattr(table, k)), device=device)
        for k in (
            "normals",
            "offsets",
            "active",
            "nonempty",
            "p0",
            "p1",
            "fin0",
            "fin1",
            "empty",
            "bounded",
            "centroid",
            "radius",
        )
    }


def shifted_t(tab: dict, m: torch.Tensor, w: torch.Tensor):
    """Torch twin of ``_polygon._shifted``: polygons ``m`` (P,) seen from the means ``w`` (P, 2),
    with every table row (static width ``F``)."""
    nu = tab["normals"][m]
    active = tab["active"][m]
    nonempty = tab["nonempty"][m]
    f0, f1 = tab["fin0"][m], tab["fin1"][m]
    wb = w[:, None, :]
    P0 = tab["p0"][m] - wb
    P1 = tab["p1"][m] - wb
    n0, n1 = nu[..., 0], nu[..., 1]
    t0 = torch.where(f0, n0 * P0[..., 1] - n1 * P0[..., 0], -math.inf)
    t1 = torch.where(f1, n0 * P1[..., 1] - n1 * P1[..., 0], math.inf)
    c_line = tab["offsets"][m] - (n0 * w[:, None, 0] + n1 * w[:, None, 1])
    cu = torch.where(
        f0,
        n0 * P0[..., 0] + n1 * P0[..., 1],
        torch.where(f1, n0 * P1[..., 0] + n1 * P1[..., 1], c_line),
    )
    cu = torch.where(active, cu, math.inf)
    bounded = tab["bounded"][m]
    g = torch.where(bounded[:, None], tab["centroid"][m] - w, 0.0)
    verts = Vertices(P0, P1, g, tab["radius"][m], bounded)
    ext = torch.hypot(w[:, 0], w[:, 1])

    def local(rows):  # numpy's LocalFrame of pairs ``rows`` (host indices), on the host
        r = torch.as_tensor(rows, device=m.device)
        mm = m[r]
        sub = SimpleNamespace(**{k: tab[k][mm].cpu().numpy() for k in _LOCAL_KEYS})
        F = sub.p0.shape[1]
        return _local_frame(sub, np.arange(rows.size), None, w[r].cpu().numpy(), F)

    return Edges(nu, cu, active, t0, t1, nonempty, tab["empty"][m], verts, ext, local)


_LOCAL_KEYS = ("centroid", "fin0", "fin1", "normals", "p0", "p1", "offsets", "active")


def log_mass_2d_shifted_t(tab: dict, m: torch.Tensor, w: torch.Tensor, floor=None):
    """Torch twin of :func:`exactdgn.gaussian.log_mass_2d_shifted` (tables from
    :func:`table_to_device`): ``(log mass, error)`` (P,)."""
    return polygon_log_mass_t(shifted_t(tab, m, w), floor)


# ------------------------------------------------------------------------------ moments
def _cubature_moments(P0, P1, g, nonempty, R):
    """Mean (P, 2) and covariance (P, 2, 2) of small polygons by fan cubature with the next
    rule up (``_polygon._cubature`` with ``moments=True``)."""
    a0, d10, det, coef, level = _fan(P0, P1, g, nonempty, R)
    ne = nonempty[..., None]
    level = torch.clamp(level + 1, max=len(_CUB_RULES) - 1)
    S = _cub_node_sums(coef, level, [0, 1, 2, 3, 4, 5], nonempty) * det[..., None]
    S = torch.where(ne, S, 0.0)
    S = S / S[..., 0].sum(dim=1)[:, None, None]
    Ev = (S[..., 1:2] * a0).sum(1) + (S[..., 2:3] * d10).sum(1)
    outer = lambda u, v, wt: (wt[..., None, None] * u[..., :, None] * v[..., None, :]).sum(1)  # noqa: E731
    cross = outer(a0, d10, S[..., 4])
    M2 = outer(a0, a0, S[..., 3]) + cross + cross.transpose(1, 2) + outer(d10, d10, S[..., 5])
    cov = M2 - Ev[:, :, None] * Ev[:, None, :]
    return g + Ev, 0.5 * (cov + cov.transpose(1, 2))


def _tail_moments(nu, cu, t0, t1, nonempty):
    """Torch twin of ``_polygon._tail_moments`` (far polygons by slicing along the direction of
    the closest point): mean (P, 2), covariance (P, 2, 2)."""
    P = cu.shape[0]
    rows = torch.arange(P, device=cu.device)
    tau = torch.stack([-nu[..., 1], nu[..., 0]], dim=-1)
    tst = torch.where(t0 > 0, t0, torch.where(t1 < 0, t1, torch.zeros_like(t0)))
    d2 = torch.where(nonempty, cu * cu + tst * tst, math.inf)
    k = d2.argmin(dim=1)
    ck, tk = cu[rows, k], tst[rows, k]
    nk, tauk = nu[rows, k], tau[rows, k]
    on_edge = tk == 0.0
    pnt = ck[:, None] * nk + tk[:, None] * tauk
    D = torch.where(on_edge, -ck, torch.hypot(pnt[:, 0], pnt[:, 1]))
    nstar = torch.where(on_edge[:, None], -nk, pnt / D[:, None])
    pnt = D[:, None] * nstar
    tstar = torch.stack([-nstar[:, 1], nstar[:, 0]], dim=-1)

    def dotf(u, v):  # (P, F, 2) . (P, 2) -> (P, F)
        return u[..., 0] * v[:, None, 0] + u[..., 1] * v[:, None, 1]

    a = dotf(nu, nstar)
    b = dotf(nu, tstar)
    dd = cu - dotf(nu, pnt)
    act = nonempty | (torch.isfinite(cu) & (nu.abs().sum(-1) > 0))
    rmax = 90.0 / (D + torch.sqrt(D * D + 90.0))
    fin1 = torch.isfinite(t1)
    v = cu[..., None] * nu + torch.where(fin1, t1, 0.0)[..., None] * tau
    v = torch.where(torch.isfinite(cu)[..., None], v, 0.0)
    rv = dotf(v, nstar) - D[:, None]
    rpar = torch.where(act & (b == 0) & (a != 0), dd / a, 0.0)
    slot = torch.where(nonempty & fin1, rv, rpar)
    bp = torch.cat([torch.zeros_like(D)[:, None], slot, rmax[:, None]], dim=1)
    bp = torch.sort(torch.minimum(torch.clamp(bp, min=0.0), rmax[:, None]), dim=1).values
    # A facet nearly parallel to tau* sweeps its s-bound through [-8, 8] within r0 +- 8 sig
    # (sig = |b/a|, r0 = dd/a); where a panel there is long against that window (``_SWEEP_K``),
    # the row gets breakpoints where its bound crosses s = -8, 0, 8 (as _polygon._tail_moments).
    sig = (b / a).abs()
    r0 = dd / a
    lo, hi = bp[:, None, :-1], bp[:, None, 1:]
    over = (lo < (r0 + 8.0 * sig)[..., None]) & (hi > (r0 - 8.0 * sig)[..., None])
    # (a window outside [0, rmax] overlaps no panel)
    steep = act & (b != 0) & (a != 0)
    steep &= torch.where(over, hi - lo, 0.0).amax(dim=2) > _SWEEP_K * 16.0 * sig
    ex = r0[..., None] + sig[..., None] * nodes("sweep_s", _SWEEP_S, cu)
    ex = torch.where(steep[..., None], ex, 0.0).reshape(P, -1)
    bp = torch.cat([bp, torch.minimum(torch.clamp(ex, min=0.0), rmax[:, None])], dim=1)
    # repeated breakpoints to the end (as copies of rmax: empty panels), columns cut to the
    # most distinct values of any row (``_polygon._distinct``)
    bp = torch.sort(bp, dim=1).values
    rep = torch.zeros_like(bp, dtype=torch.bool)
    rep[:, 1:] = bp[:, 1:] == bp[:, :-1]
    width = max(int((~rep).sum(dim=1).max()), 2) if P else 2
    bp = torch.sort(torch.where(rep, math.inf, bp), dim=1).values[:, :width]
    bp = torch.where(torch.isinf(bp), rmax[:, None], bp)
    return _slice_moments_t(bp, a, b, dd, act, D, pnt, nstar, tstar)


def _slice_moments_t(bp, a, b, dd, act, D, pnt, nstar, tstar):
    """Torch twin of ``_polygon._slice_moments``: :func:`_tail_moments`' integrals over ``r``
    on the panels between the sorted breakpoints ``bp (P, B)``; mean (P, 2), cov (P, 2, 2)."""
    P = bp.shape[0]
    lo, ln = bp[:, :-1], bp[:, 1:] - bp[:, :-1]
    x, w = nodes("gl32x", _GL_X, bp), nodes("gl32w", _GL_W, bp)
    r = (lo[..., None] + ln[..., None] * x).reshape(P, -1)
    wr = (ln[..., None] * w).reshape(P, -1)
    ar = a[:, None, :] * r[..., None]
    bnd = (dd[:, None, :] - ar) / b[:, None, :]
    actb = act[:, None, :]
    bb = b[:, None, :]
    shi = torch.where(actb & (bb > 0), bnd, math.inf).min(dim=2).values
    slo = torch.where(actb & (bb < 0), bnd, -math.inf).max(dim=2).values
    viol = (actb & (bb == 0) & (ar > dd[:, None, :])).any(dim=2)
    from ._torch_interval import interval_stats_t

    lms, ms, vs = (q.reshape(r.shape) for q in interval_stats_t(slo.reshape(-1), shi.reshape(-1)))
    lf = -D[:, None] * r - 0.5 * r * r + torch.where(viol, -math.inf, lms)
    lf = torch.where(wr > 0, lf, -math.inf)
    mx = lf.max(dim=1, keepdim=True).values
    om = wr * torch.exp(lf - mx)
    ms = torch.where(om > 0, ms, 0.0)
    vs = torch.where(om > 0, vs, 0.0)
    Z = om.sum(1)
    Er = (om * r).sum(1) / Z
    Es = (om * ms).sum(1) / Z
    dr = r - Er[:, None]
    ds = ms - Es[:, None]
    Vr = (om * dr * dr).sum(1) / Z
    Crs = (om * dr * ds).sum(1) / Z
    Vs = (om * (vs + ds * ds)).sum(1) / Z
    Rm = torch.stack([nstar, tstar], dim=-1)
    mean = pnt + Er[:, None] * nstar + Es[:, None] * tstar
    C = torch.stack([torch.stack([Vr, Crs], -1), torch.stack([Crs, Vs], -1)], -2)
    cov = Rm @ C @ Rm.transpose(1, 2)
    return mean, 0.5 * (cov + cov.transpose(1, 2))


# far polygons per block of the slicing moments (their work arrays are (P, K, F))
_TAIL_BLOCK = {"cuda": 1 << 14, "cpu": 1 << 9}


def polygon_moments_t(edges: Edges, logm):
    """Mean (P, 2) and covariance (P, 2, 2) of translated polygons with known ``logm`` (P,)
    (``_polygon._moments_finish``): divergence-theorem weights; small polygons by cubature,
    far ones (mean outside, distance >= 8) by slicing. NaN where the mass is zero."""
    from ._polygon import _TAIL_D
    from ._torch_interval import interval_stats_t, log_phi_t

    nu, cu, t0, t1 = edges.nu, edges.cu, edges.t0, edges.t1
    nonempty, empty, verts = edges.nonempty, edges.empty, edges.verts
    P0, P1, g, R, bounded = verts.P0, verts.P1, verts.g, verts.radius, verts.bounded
    tau = torch.stack([-nu[..., 1], nu[..., 0]], dim=-1)
    ok = torch.isfinite(logm)
    spread = R * (torch.hypot(g[:, 0], g[:, 1]) + 0.5 * R)
    small = bounded & (spread <= _SMALL) & ~empty & ok
    tst = torch.where(t0 > 0, t0, torch.where(t1 < 0, t1, torch.zeros_like(t0)))
    dist2 = torch.where(nonempty, cu * cu + tst * tst, math.inf).min(dim=1).values
    cneg = torch.where(nonempty, cu, math.inf).min(dim=1).values < 0
    far = ok & cneg & (dist2 >= _TAIL_D**2) & ~small
    # divergence-theorem weights on the real edges of the pairs that keep them (the small and
    # far pairs are replaced below; the table's padding rows are no edges)
    edge = nonempty & (ok & ~small & ~far)[:, None]
    pi, ei = edge.nonzero(as_tuple=True)
    lphi1, tmean = torch.zeros_like(cu), torch.zeros_like(cu)
    lphi1[pi, ei], tmean[pi, ei], _ = interval_stats_t(t0[pi, ei], t1[pi, ei])
    logw = log_phi_t(torch.where(edge, cu, 0.0)) + lphi1 - torch.where(ok, logm, 0.0)[:, None]
    w = torch.where(edge, torch.exp(logw), 0.0)
    gbar = torch.where(
        edge[..., None], cu[..., None] * nu + torch.where(edge, tmean, 0.0)[..., None] * tau, 0.0
    )
    mean = -(w[..., None] * nu).sum(1)
    gm = gbar - mean[:, None, :]
    cov = torch.eye(2, dtype=cu.dtype, device=cu.device) - (
        w[..., None, None] * nu[..., :, None] * gm[..., None, :]
    ).sum(1)
    cov = 0.5 * (cov + cov.transpose(1, 2))
    fi = far.nonzero().squeeze(1)
    step = _TAIL_BLOCK.get(cu.device.type, 1 << 9)
    for s in range(0, fi.numel(), step):
        i = fi[s : s + step]
        mean[i], cov[i] = _tail_moments(nu[i], cu[i], t0[i], t1[i], nonempty[i])
    i = small.nonzero().squeeze(1)
    if i.numel():
        mean[i], cov[i] = _cubature_moments(P0[i], P1[i], g[i], nonempty[i], R[i])
    mean = torch.where(ok[:, None], mean, math.nan)
    cov = torch.where(ok[:, None, None], cov, math.nan)
    return mean, cov


def truncated_moments_2d_shifted_t(tab: dict, m: torch.Tensor, w: torch.Tensor, logm):
    """Torch twin of :func:`exactdgn.gaussian.truncated_moments_2d_shifted` for pairs whose log
    masses ``logm`` (P,) are known: ``(mean (P, 2), cov (P, 2, 2))`` in whitened coordinates."""
    return polygon_moments_t(shifted_t(tab, m, w), logm)
