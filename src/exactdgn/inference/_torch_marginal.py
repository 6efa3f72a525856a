"""The exact marginal and E-step pairs on a torch device (float64): the backend behind
``marginal_pairs(..., device=...)``.

Same math, pruning rule and pair selection as :mod:`._marginal` (see there); the per-region
arrays of :class:`RegionGeometry` are copied to the device once and cached on the geometry.
Per-point log-sum-exp uses segment (scatter) reductions over the pairs, which come sorted by
point. Every quantity is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .._progress import report
from ..gaussian._torch_interval import interval_stats_t, log_interval_mass_t, log_phi_t
from ..gaussian._torch_polygon import (
    log_mass_2d_shifted_t,
    table_to_device,
    truncated_moments_2d_shifted_t,
)
from ._geometry import _EPS, _KAPPA_ROUND, _KAPPA_RTOL, RegionGeometry
from ._marginal import _DENSE_1D, WEIGHT_RENORM, _chunk_size

__all__ = [
    "DeviceGeometry",
    "TorchPairs",
    "as_data_tensor",
    "device_geometry",
    "pairs_torch",
    "resolve_device",
]


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``, checked for availability."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device={device!r} is not a torch device: use None (numpy), 'cpu', 'cuda' or a "
            "torch.device"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch sees no CUDA device: use device='cpu' "
            "or device=None (numpy)"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: only 'cpu' and 'cuda' devices are supported")
    return dev


def as_data_tensor(X, device) -> torch.Tensor:
    """``X`` (array or tensor) as a float64 tensor on ``device``, sharing a CPU array's memory
    where torch can; a read-only numpy array (a memory map, a frozen buffer) is copied: torch
    warns when it shares one (the backend never writes to the data)."""
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        return torch.tensor(X, dtype=torch.float64, device=device)
    return torch.as_tensor(X, dtype=torch.float64, device=device)


@dataclass
class Locator:
    """Region index of latent points on a device: the decoder's activation pattern, hashed.

    A pattern's key is ``Σ_i bit_i k_i`` (int64, wrapping) over the kink units with random
    64-bit ``k_i``; the regions' keys are sorted once. A point whose key matches no region gets
    ``-1``. Used only to seed the lower bound of ``log p(x)`` (any region gives a valid bound),
    so a (astronomically unlikely) key collision cannot change a result.
    """

    weights: list
    biases: list
    pos: list
    neg: list
    kink: torch.Tensor  # (H,) bool
    hash: torch.Tensor  # (H_kink,) int64
    keys: torch.Tensor  # (R,) sorted region keys
    order: torch.Tensor  # (R,) region of each sorted key

    @classmethod
    def build(cls, geom: RegionGeometry, device) -> Locator | None:
        part = getattr(geom.locate, "__self__", None)
        dec = getattr(part, "decoder", None)
        if dec is None or len(dec.weights) < 2:
            return None

        def t(a):
            return torch.tensor(np.asarray(a), device=device)

        kink = np.asarray(dec.kink_mask, dtype=bool)
        rnd = np.random.default_rng(0).integers(0, 2**62, size=int(kink.sum()), dtype=np.int64)
        pats = np.asarray(part.patterns, dtype=bool)[:, kink]
        keys = _hash(t(pats), t(rnd))
        keys, order = torch.sort(keys)
        return cls(
            weights=[t(W) for W in dec.weights[:-1]],
            biases=[t(c) for c in dec.biases[:-1]],
            pos=[
                t(np.broadcast_to(p, c.shape))
                for p, c in zip(dec._pos, dec.biases[:-1], strict=True)
            ],
            neg=[
                t(np.broadcast_to(q, c.shape))
                for q, c in zip(dec._neg, dec.biases[:-1], strict=True)
            ],
            kink=t(kink),
            hash=t(rnd),
            keys=keys,
            order=order,
        )

    def __call__(self, Z: torch.Tensor) -> torch.Tensor:
        h = Z
        bits = []
        for W, c, p, q in zip(self.weights, self.biases, self.pos, self.neg, strict=True):
            a = h @ W.T + c
            on = a > 0
            bits.append(on)
            h = a * torch.where(on, p, q)
        key = _hash(torch.cat(bits, dim=1)[:, self.kink], self.hash)
        pos = torch.clamp(torch.searchsorted(self.keys, key), max=self.keys.shape[0] - 1)
        return torch.where(self.keys[pos] == key, self.order[pos], -1)


def _hash(bits: torch.Tensor, rnd: torch.Tensor) -> torch.Tensor:
    return (bits.to(torch.int64) * rnd).sum(dim=1)


@dataclass
class DeviceGeometry:
    """The per-region arrays of a :class:`RegionGeometry` on one device (float64 tensors)."""

    device: torch.device
    center: torch.Tensor  # (D,)
    inv_var: torch.Tensor  # (D,)
    iso: float | None  # Λ's common diagonal value when the noise is isotropic
    gemm_w: torch.Tensor | None  # (D, M) (None when factored)
    gemm_basis: torch.Tensor | None  # (D, k)
    gemm_w_basis: torch.Tensor | None  # (k, M)
    w_shift: torch.Tensor  # (R, d)
    lk_const: torch.Tensor  # (R,)
    K: torch.Tensor  # (R, d, d)
    L: torch.Tensor  # (R, d, d)
    interval: tuple | None  # d = 1: (loS, hiS, sP, order, breaks) whitened ends at w = 0
    polygons: dict | None  # d = 2: the PolygonTable's arrays
    locator: Locator | None  # region of a latent point (d = 2 seeds)

    def gemm(self, Xc: torch.Tensor) -> torch.Tensor:
        if self.gemm_basis is None:
            return Xc @ self.gemm_w
        return (Xc @ self.gemm_basis) @ self.gemm_w_basis


def device_geometry(geom: RegionGeometry, device: torch.device) -> DeviceGeometry:
    """The cached :class:`DeviceGeometry` of ``geom`` on ``device``."""
    cache = geom.cache
    key = ("torch", str(device))
    if key in cache:
        return cache[key]

    def t(a):
        return None if a is None else torch.as_tensor(np.ascontiguousarray(a), device=device)

    interval = None
    if geom.interval is not None:
        lo_z, hi_z, order, breaks = geom.interval
        sP = geom.K[:, 0, 0]
        with np.errstate(invalid="ignore"):
            loS = np.where(np.isinf(lo_z), -np.inf, lo_z * sP)
            hiS = np.where(np.isinf(hi_z), np.inf, hi_z * sP)
        interval = (t(loS), t(hiS), t(sP), t(order), t(breaks))
    factored = geom.gemm_basis is not None
    dg = DeviceGeometry(
        device=device,
        center=t(geom.center),
        inv_var=t(geom.inv_var),
        iso=float(geom.inv_var[0]) if np.all(geom.inv_var == geom.inv_var[0]) else None,
        gemm_w=None if factored else t(geom.gemm_w),
        gemm_basis=t(geom.gemm_basis),
        gemm_w_basis=t(geom.gemm_w_basis),
        w_shift=t(geom.w_shift),
        lk_const=t(geom.lk_const),
        K=t(geom.K),
        L=t(geom.L),
        interval=interval,
        polygons=None if geom.polygons is None else table_to_device(geom.polygons, device),
        locator=Locator.build(geom, device),
    )
    cache[key] = dg
    return dg


@dataclass
class TorchPairs:
    """:class:`PairStats` as device tensors (see there for the fields)."""

    point: torch.Tensor
    region: torch.Tensor
    log_joint: torch.Tensor
    log_px: torch.Tensor
    log_px_error: torch.Tensor
    v: torch.Tensor
    mean: torch.Tensor | None
    cov: torch.Tensor | None
    n_candidates: int
    X: torch.Tensor | None = None  # the data (set by the training E-step: M-step, gradient)
    whitened_mean: torch.Tensor | None = None  # (P, d) (d = 2; see PairStats.whitened_mean)

    @property
    def log_weight(self) -> torch.Tensor:
        """(P,) log posterior probability of the region given the point (renormalised on
        far rows, as :func:`exactdgn.inference._marginal.renormalised_log_weight`)."""
        return _renormalised_log_weight_t(self.log_joint, self.log_px, self.point)

    def numpy(self):
        """The same as a numpy :class:`PairStats`."""
        from ._marginal import PairStats

        def a(x):
            return None if x is None else x.cpu().numpy()

        return PairStats(
            point=a(self.point),
            region=a(self.region),
            log_joint=a(self.log_joint),
            log_px=a(self.log_px),
            log_px_error=a(self.log_px_error),
            v=a(self.v),
            offsets=None,
            mean=a(self.mean),
            cov=a(self.cov),
            n_candidates=int(self.n_candidates),
            whitened_mean=a(self.whitened_mean),
        )


def _renormalised_log_weight_t(log_joint, log_px, point):
    """:func:`exactdgn.inference._marginal.renormalised_log_weight` on tensors."""
    lw = log_joint - log_px[point]
    if lw.numel() == 0:
        return lw
    s = torch.zeros(len(log_px), dtype=lw.dtype, device=lw.device).index_add_(0, point, lw.exp())
    fix = torch.isfinite(s) & (s > 0) & ((s - 1.0).abs() > WEIGHT_RENORM)
    return lw - torch.where(fix, s, torch.ones_like(s)).log()[point]  # log 1 = 0 elsewhere


def segment_lse(p: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) ``logsumexp`` of the entries of ``x`` (P,) grouped by ``p`` (P,) (-inf if none)."""
    mx = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    mx = mx.scatter_reduce(0, p, x, reduce="amax", include_self=True)
    mxs = torch.where(torch.isfinite(mx), mx, 0.0)
    tot = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, p, torch.exp(x - mxs[p]))
    return mxs + torch.log(tot)


def lse_by_point(p: torch.Tensor, lj: torch.Tensor, err: torch.Tensor, n: int, prune_nats):
    """Per point ``log p(x)`` (logsumexp of its pairs' ``lj``) and the error estimate (n,).

    Segment reductions by scatter: ``p`` (P,) the point of each pair (every point at least once).
    """
    log_px = segment_lse(p, lj, n)
    wts = torch.exp(lj - log_px[p])
    err_px = torch.zeros_like(log_px).index_add_(0, p, wts * err) + math.exp(-prune_nats)
    return log_px, err_px


def _chunk_points(N: int, R: int, device: torch.device, chunk_bytes: int | None) -> int:
    # points per chunk: (n, R) work arrays of ~2^18 elements on the CPU (measured on MNIST
    # [1,64,64,784], 2 cores: 2^15 pays torch's per-call overhead too often, 2^20 leaves cache)
    # and ~2^26 on a GPU (big kernels, a few host syncs per chunk); at most the numpy path's
    # points per chunk_bytes
    per = (1 << 26) if device.type == "cuda" else (1 << 18)
    cs = int(max(1, min(N, per // max(R, 1))))
    return cs if chunk_bytes is None else min(cs, _chunk_size(N, R, 1, chunk_bytes))


def pairs_1d_torch(
    geom: RegionGeometry,
    X: torch.Tensor,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int | None = None,
) -> TorchPairs:
    """``marginal_pairs`` for d = 1 on ``X``'s device (``X`` (N, D) float64 tensor).

    As ``_marginal._pairs_1d``: one GEMM gives ``t_r(x)`` and ``log κ_r(x)``; the lower bound
    is the exact term of the region with the largest ``κ`` and of the region holding its
    posterior mean; pairs with ``log κ_r > lower - prune_nats - log R`` are integrated (mass
    <= 1 bound; with at most ``_DENSE_1D`` regions every pair, as numpy), and with
    ``need_moments`` the moments are computed where the pair's weight is visible.
    """
    dg = device_geometry(geom, X.device)
    loS, hiS, sP, order, breaks = dg.interval
    N = X.shape[0]
    R = loS.shape[0]
    thr = prune_nats + math.log(max(R, 1))
    cs = _chunk_points(N, R, X.device, chunk_bytes)
    dense = R <= _DENSE_1D  # the numpy path's rule: few regions keep every pair
    parts = []
    for s in range(0, N, cs):
        Xc = X[s : s + cs] - dg.center
        n = Xc.shape[0]
        lk, Wt, hxq = _log_kappa(dg, Xc)
        t = Wt[..., 0]
        rows = torch.arange(n, device=X.device)
        if dense:  # few regions: every pair, as the numpy path (the same pairs and sums)
            p = rows.repeat_interleave(R)
            r = torch.arange(R, device=X.device).repeat(n)
            err_lk = _refine_log_kappa(geom, Xc, hxq, lk, Wt, p, r)
            tt, lk_p = t.reshape(-1), lk.reshape(-1)
        else:
            r1 = lk.argmax(dim=1)
            mu1 = t[rows, r1] / sP[r1]
            r2 = order[torch.searchsorted(breaks, mu1, right=True)]
            pr = torch.cat([r1, r2])
            tt = t[torch.cat([rows, rows]), pr]
            lm_seed, _ = log_interval_mass_t(loS[pr] - tt, hiS[pr] - tt)
            lj_seed = torch.cat([lk[rows, r1], lk[rows, r2]]) + lm_seed
            lower = torch.where(r1 == r2, lj_seed[:n], torch.logaddexp(lj_seed[:n], lj_seed[n:]))
            # in differences: at |log p| > ~2e17 nats `lower - thr` rounds to `lower`, and the
            # seed holding all the mass (log κ = lower) failed `>` (as numpy)
            room = _room(geom, hxq, thr, 2.0)  # the formed log κ's rounding (as numpy)
            p, r = torch.nonzero(lk - lower[:, None] > room[:, None], as_tuple=True)
            err_lk = _refine_log_kappa(geom, Xc, hxq, lk, Wt, p, r)
            tt = t[p, r]
            lk_p = lk[p, r]
        a, b = loS[r] - tt, hiS[r] - tt
        lm, err = log_interval_mass_t(a, b)
        err = err + _bound_rounding_t(a, b, lm, loS[r], hiS[r], tt)
        lj = lk_p + lm
        log_px, err_px = lse_by_point(p, lj, err + err_lk, n, prune_nats)
        n_cand = p.shape[0]
        mean = cov = None
        if need_moments:
            sel = (lj - log_px[p] > -thr) | ~torch.isfinite(log_px)[p]  # (in differences)
            idx = sel.nonzero().squeeze(1)
            p, r, lj, tt, a, b = p[idx], r[idx], lj[idx], tt[idx], a[idx], b[idx]
            _, um, uv = interval_stats_t(a, b)
            isP = 1.0 / sP[r]
            mean = ((tt + um) * isP)[:, None]
            cov = (uv * isP * isP)[:, None, None]
        v = (tt * sP[r])[:, None]
        parts.append(TorchPairs(p + s, r, lj, log_px, err_px, v, mean, cov, n_cand))
        report(n)
    return _cat_parts(parts)


def _room(geom: RegionGeometry, hxq: torch.Tensor, thr: float, factor: float) -> torch.Tensor:
    """(n,) ``-thr - factor * kappa_margin``: a pruning level with room for the formed log κ's
    rounding (:meth:`RegionGeometry.kappa_margin`, as the numpy path)."""
    margin = geom.kappa_margin(hxq.detach().cpu().numpy())
    return torch.as_tensor(-thr - factor * margin, dtype=hxq.dtype, device=hxq.device)


def _bound_rounding_t(a, b, lm, lo, hi, t) -> torch.Tensor:
    """:func:`exactdgn.inference._marginal.bound_rounding` on tensors."""
    out = torch.zeros_like(a)
    for end, pos in ((a, lo), (b, hi)):
        d = (4.0 * _EPS) * (pos.abs() + t.abs())
        term = d * torch.exp(log_phi_t(end) - lm)
        out = out + torch.where(torch.isfinite(end) & torch.isfinite(term), term, 0.0)
    return torch.where(torch.isfinite(lm), out, 0.0)


def _log_kappa(dg: DeviceGeometry, Xc: torch.Tensor):
    """(n, R) ``log κ`` and (n, R, d) whitened means ``w`` (as ``log_kappa_all``)."""
    R, d = dg.w_shift.shape
    prod = dg.gemm(Xc)
    W = prod[:, : R * d].reshape(-1, R, d) - dg.w_shift
    if dg.iso is not None:
        hxq = (Xc * Xc).sum(dim=1) * (-0.5 * dg.iso)
    else:
        hxq = (Xc * Xc) @ dg.inv_var * -0.5
    # explicit sum over the d (= 1, 2) columns: a reduction over a tiny last axis is slow
    ww = W[..., 0] * W[..., 0]
    for k in range(1, d):
        ww = ww + W[..., k] * W[..., k]
    lk = prod[:, R * d :] + dg.lk_const + hxq[:, None] + 0.5 * ww
    return lk, W, hxq


def _refine_log_kappa(geom: RegionGeometry, Xc, hxq, lk, W, p, r) -> torch.Tensor:
    """``RegionGeometry.refine_log_kappa`` for the pairs ``(p, r)`` of the (n, R) tables
    ``lk`` and ``W`` (n, R, d), in place: the pairs whose GEMM form of ``log κ`` may have lost
    accuracy (steep regions, tiny noise) are recomputed by the cancellation-free formula on
    the host (they are rare; the test is one reduction on the device). Returns the (P,)
    rounding estimate of each pair's ``log κ`` (added to its error)."""
    if p.shape[0] == 0:
        return torch.zeros(0, dtype=lk.dtype, device=lk.device)
    key = ("torch-kappa-scale", str(Xc.device))
    scale = geom.cache.get(key)
    if scale is None:
        scale = geom.cache[key] = torch.as_tensor(geom.kappa_scale(), device=Xc.device)
    key = ("torch-kappa-conditioning", str(Xc.device))
    conditioning = geom.cache.get(key)
    if conditioning is None:
        conditioning = geom.cache[key] = tuple(
            torch.as_tensor(a, device=Xc.device) for a in geom.kappa_conditioning()
        )
    cond, shift = conditioning
    Wp = W[p, r]
    lkp = lk[p, r]
    w2 = (Wp * Wp).sum(dim=1)
    size = scale[r] - 2.0 * hxq[p] + w2
    wn = torch.sqrt(w2)
    err = (_KAPPA_ROUND * _EPS) * size
    bad = err > _KAPPA_RTOL * torch.clamp(lkp.abs(), min=1.0)  # as the numpy twin
    err = err + cond[r] * (wn * (wn + 2.0 * shift[r]) + Wp.shape[1])
    idx = bad.nonzero().squeeze(1)
    if idx.shape[0] == 0:
        return err
    pi, ri = p[idx], r[idx]
    rn = ri.cpu().numpy()
    xc = Xc[pi].cpu().numpy()
    lk_n, _, w_n, err_n = geom._stable_log_kappa(xc - (geom.b[rn] - geom.center), rn, xc)
    lk[pi, ri] = torch.as_tensor(lk_n, device=lk.device)
    W[pi, ri] = torch.as_tensor(w_n, device=W.device)
    err[idx] = torch.as_tensor(err_n, device=err.device) + cond[ri] * Wp.shape[1]  # log|P_r|
    return err


# elements of the (n, 3R) GEMM output per chunk of points in d = 2
_CHUNK_2D = {"cuda": 1 << 27, "cpu": 1 << 21}
# pairs per block of the polygon kernels (their node arrays are (pieces, 32) and more)
_PAIR_BLOCK = {"cuda": 1 << 19, "cpu": 1 << 14}


def _blocked_mass(tab, r, w, floor, device):
    step = _PAIR_BLOCK.get(device.type, 1 << 14)
    if r.shape[0] <= step:
        return log_mass_2d_shifted_t(tab, r, w, floor)
    out = [
        log_mass_2d_shifted_t(tab, r[i : i + step], w[i : i + step], floor[i : i + step])
        for i in range(0, r.shape[0], step)
    ]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def pairs_2d_torch(
    geom: RegionGeometry,
    X: torch.Tensor,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int | None = None,
) -> TorchPairs:
    """``marginal_pairs`` for d = 2 on ``X``'s device: polygons translated by ``-w_r(x)``.

    As ``_marginal.marginal_pairs``: seeds (the largest ``κ`` and the regions located by
    following posterior means three times) give a lower bound; candidates by the mass <= 1
    bound, then the facet bound ``Φ(min_i c_i)``, then (inside the mass kernel) the
    closest-point bound ``Q(δ)``; exact masses of the rest by the torch polygon kernels.
    """
    dev = X.device
    dg = device_geometry(geom, dev)
    tab = dg.polygons
    N = X.shape[0]
    R = dg.lk_const.shape[0]
    thr = prune_nats + math.log(max(R, 1))
    per = _CHUNK_2D.get(dev.type, 1 << 21)  # elements of the (n, 3R) GEMM output
    cs = int(max(1, min(N, per // max(3 * R, 1))))
    if chunk_bytes is not None:  # at most the numpy path's points per chunk_bytes
        cs = min(cs, _chunk_size(N, R, 2, chunk_bytes))
    parts = []
    for s in range(0, N, cs):
        Xc = X[s : s + cs] - dg.center
        n = Xc.shape[0]
        lk, W, hxq = _log_kappa(dg, Xc)
        rows = torch.arange(n, device=dev)
        r = lk.argmax(dim=1)
        ps, rs = [rows], [r]
        if dg.locator is not None and R > 1:
            for _ in range(3):
                mu = (dg.L[r] @ W[rows, r][:, :, None])[..., 0]  # μ_r = L_r w_r
                r_new = dg.locator(mu)
                r = torch.where(r_new >= 0, r_new, r)
                ps.append(rows)
                rs.append(r)
        key = torch.unique(torch.cat(ps) * R + torch.cat(rs))
        p_top, r_top = key // R, key % R
        lk_err_top = _refine_log_kappa(geom, Xc, hxq, lk, W, p_top, r_top)
        lk_top, w_top = lk[p_top, r_top], W[p_top, r_top]
        lm_top, err_top = _blocked_mass(tab, r_top, w_top, None, dev)
        lower = segment_lse(p_top, lk_top + lm_top, n)
        room = _room(geom, hxq, thr, 1.0)  # the formed log κ's rounding (as numpy)
        mask = lk - lower[:, None] > room[:, None]  # in differences, as numpy
        mask[p_top, r_top] = False
        p_c, r_c = torch.nonzero(mask, as_tuple=True)
        n_cand = p_c.shape[0] + p_top.shape[0]
        lk_c, w_c = lk[p_c, r_c], W[p_c, r_c]
        # facet bound: Φ(min_i c_i), c = g - n·w (one log_ndtr per pair)
        nu = tab["normals"][r_c]
        off = tab["offsets"][r_c] - (nu[..., 0] * w_c[:, None, 0] + nu[..., 1] * w_c[:, None, 1])
        bound = lk_c + torch.clamp(torch.special.log_ndtr(off.min(dim=1).values), max=0.0)
        keep = (bound - lower[p_c] > room[p_c]).nonzero().squeeze(1)
        p_c, r_c = p_c[keep], r_c[keep]
        # the kept candidates' log κ without cancellation where needed (as numpy)
        lk_err_c = _refine_log_kappa(geom, Xc, hxq, lk, W, p_c, r_c)
        lk_c, w_c = lk[p_c, r_c], W[p_c, r_c]
        floor_c = (lower[p_c] - lk_c) - thr
        lm_c, err_c = _blocked_mass(tab, r_c, w_c, floor_c, dev)
        seed = torch.cat(
            [torch.ones_like(p_top, dtype=torch.bool), torch.zeros_like(p_c, dtype=torch.bool)]
        )
        p_all = torch.cat([p_top, p_c])
        order = torch.argsort(p_all, stable=True)
        p_all, seed = p_all[order], seed[order]
        r_all = torch.cat([r_top, r_c])[order]
        w_all = torch.cat([w_top, w_c])[order]
        lj = torch.cat([lk_top + lm_top, lk_c + lm_c])[order]
        err = torch.cat([err_top + lk_err_top, err_c + lk_err_c])[order]
        log_px, err_px = lse_by_point(p_all, lj, err, n, prune_nats)
        keep = torch.isfinite(lj) | seed
        if need_moments:  # moments only where the pair's weight is visible (as numpy)
            keep &= (lj - log_px[p_all] > -thr) | ~torch.isfinite(log_px)[p_all]
        keep = keep.nonzero().squeeze(1)
        p_all, r_all, w_all, lj = p_all[keep], r_all[keep], w_all[keep], lj[keep]
        v = (dg.K[r_all] @ w_all[:, :, None])[..., 0]
        mean = cov = None
        if need_moments:
            lm_k = lj - lk[p_all, r_all]
            step = _PAIR_BLOCK.get(dev.type, 1 << 14)
            tms = [
                truncated_moments_2d_shifted_t(
                    tab, r_all[i : i + step], w_all[i : i + step], lm_k[i : i + step]
                )
                for i in range(0, r_all.shape[0], step)
            ]
            um = torch.cat([t[0] for t in tms])
            uc = torch.cat([t[1] for t in tms])
            Lr = dg.L[r_all]
            mean = (Lr @ (w_all + um)[:, :, None])[..., 0]  # z = μ_r + L_r u, μ_r = L_r w_r
            cov = Lr @ uc @ Lr.transpose(1, 2)
        parts.append(
            TorchPairs(
                p_all + s, r_all, lj, log_px, err_px, v, mean, cov, n_cand, whitened_mean=w_all
            )
        )
        report(n)
    return _cat_parts(parts)


def _cat_parts(parts: list[TorchPairs]) -> TorchPairs:
    """Concatenate the chunks' pairs (point indices already global)."""
    if not parts:
        raise ValueError("X has no rows")
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        first = getattr(parts[0], name)
        return None if first is None else torch.cat([getattr(q, name) for q in parts])

    arrays = {
        f.name: cat(f.name) for f in fields(TorchPairs) if f.name not in ("n_candidates", "X")
    }
    return TorchPairs(**arrays, n_candidates=sum(q.n_candidates for q in parts))


def pairs_torch(
    geom: RegionGeometry,
    X,
    device,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int | None = None,
) -> TorchPairs:
    """Exact pairs on ``device`` for ``X`` ((N, D) numpy array or tensor), see ``marginal_pairs``
    (``chunk_bytes``: at most that many bytes of work arrays per chunk of points, as there).

    Raises ``ValueError`` for latent dimensions the torch backend does not cover (d >= 3).
    """
    dev = resolve_device(device)
    Xt = as_data_tensor(X, dev)
    d = geom.latent_dim
    if d == 1 and geom.interval is not None:
        return pairs_1d_torch(geom, Xt, prune_nats, need_moments, chunk_bytes)
    if d == 2 and geom.polygons is not None:
        return pairs_2d_torch(geom, Xt, prune_nats, need_moments, chunk_bytes)
    raise ValueError(
        f"the torch backend covers latent_dim 1 and 2; this model has latent_dim {d}: "
        "use device=None (the numpy path)"
    )
