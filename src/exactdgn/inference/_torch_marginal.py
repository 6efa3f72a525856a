"""The exact marginal and E-step pairs on a torch device (float64): the backend behind
``marginal_pairs(..., device=...)``.

Same math, pruning rule and pair selection as :mod:`._marginal` (see there); the per-region
arrays of :class:`RegionGeometry` are copied to the device once and cached on the geometry.
Per-point log-sum-exp uses segment (scatter) reductions over the pairs, which come sorted by
point. Every quantity is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..gaussian._torch_interval import interval_stats_t, log_interval_mass_t
from ._geometry import RegionGeometry

__all__ = ["DeviceGeometry", "TorchPairs", "device_geometry", "pairs_torch", "resolve_device"]


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


@dataclass
class DeviceGeometry:
    """The per-region arrays of a :class:`RegionGeometry` on one device (float64 tensors)."""

    device: torch.device
    center: torch.Tensor  # (D,)
    inv_var: torch.Tensor  # (D,)
    iso: bool
    gemm_w: torch.Tensor | None  # (D, M) (None when factored)
    gemm_basis: torch.Tensor | None  # (D, k)
    gemm_w_basis: torch.Tensor | None  # (k, M)
    w_shift: torch.Tensor  # (R, d)
    lk_const: torch.Tensor  # (R,)
    K: torch.Tensor  # (R, d, d)
    L: torch.Tensor  # (R, d, d)
    interval: tuple | None  # d = 1: (loS, hiS, sP, order, breaks) whitened ends at w = 0

    def gemm(self, Xc: torch.Tensor) -> torch.Tensor:
        if self.gemm_basis is None:
            return Xc @ self.gemm_w
        return (Xc @ self.gemm_basis) @ self.gemm_w_basis


def device_geometry(geom: RegionGeometry, device: torch.device) -> DeviceGeometry:
    """The cached :class:`DeviceGeometry` of ``geom`` on ``device``."""
    cache = geom.device_cache
    key = str(device)
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
        iso=bool(np.all(geom.inv_var == geom.inv_var[0])),
        gemm_w=None if factored else t(geom.gemm_w),
        gemm_basis=t(geom.gemm_basis),
        gemm_w_basis=t(geom.gemm_w_basis),
        w_shift=t(geom.w_shift),
        lk_const=t(geom.lk_const),
        K=t(geom.K),
        L=t(geom.L),
        interval=interval,
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
        )


def lse_by_point(p: torch.Tensor, lj: torch.Tensor, err: torch.Tensor, n: int, prune_nats):
    """Per point ``log p(x)`` (logsumexp of its pairs' ``lj``) and the error estimate (n,).

    Segment reductions by scatter: ``p`` (P,) the point of each pair (every point at least once).
    """
    mx = torch.full((n,), -math.inf, dtype=lj.dtype, device=lj.device)
    mx = mx.scatter_reduce(0, p, lj, reduce="amax", include_self=True)
    mxs = torch.where(torch.isfinite(mx), mx, 0.0)
    e = torch.exp(lj - mxs[p])
    tot = torch.zeros(n, dtype=lj.dtype, device=lj.device).index_add_(0, p, e)
    log_px = mxs + torch.log(tot)
    wts = torch.exp(lj - log_px[p])
    err_px = torch.zeros_like(tot).index_add_(0, p, wts * err) + math.exp(-prune_nats)
    return log_px, err_px


def _log_kappa_1d(dg: DeviceGeometry, Xc: torch.Tensor):
    """(n, R) whitened means ``t`` and ``log κ`` for d = 1 (as ``log_kappa_all``)."""
    R = dg.lk_const.shape[0]
    prod = dg.gemm(Xc)  # (n, 2R)
    if dg.iso:
        hxq = (Xc * Xc).sum(dim=1) * (-0.5 * float(dg.inv_var[0]))
    else:
        hxq = (Xc * Xc) @ dg.inv_var * -0.5
    t = prod[:, :R] - dg.w_shift[:, 0]
    lk = prod[:, R:] + dg.lk_const + hxq[:, None] + 0.5 * t * t
    return t, lk


def _chunk_points(N: int, R: int, device: torch.device) -> int:
    # points per chunk: (n, R) work arrays of ~2^15 elements on the CPU (cache-resident, as
    # the numpy path) and ~2^25 on a GPU (big kernels, a few host syncs per chunk)
    per = (1 << 25) if device.type == "cuda" else (1 << 15)
    return int(max(1, min(N, per // max(R, 1))))


def pairs_1d_torch(
    geom: RegionGeometry,
    X: torch.Tensor,
    prune_nats: float = 40.0,
    need_moments: bool = False,
) -> TorchPairs:
    """``marginal_pairs`` for d = 1 on ``X``'s device (``X`` (N, D) float64 tensor).

    As ``_marginal._pairs_1d``: one GEMM gives ``t_r(x)`` and ``log κ_r(x)``; the lower bound
    is the exact term of the region with the largest ``κ`` and of the region holding its
    posterior mean; pairs with ``log κ_r > lower - prune_nats - log R`` are integrated (mass
    <= 1 bound), and with ``need_moments`` the moments are computed where the pair's weight is
    visible.
    """
    dg = device_geometry(geom, X.device)
    loS, hiS, sP, order, breaks = dg.interval
    N = X.shape[0]
    R = loS.shape[0]
    thr = prune_nats + math.log(max(R, 1))
    cs = _chunk_points(N, R, X.device)
    parts = []
    for s in range(0, N, cs):
        Xc = X[s : s + cs] - dg.center
        n = Xc.shape[0]
        t, lk = _log_kappa_1d(dg, Xc)
        rows = torch.arange(n, device=X.device)
        r1 = lk.argmax(dim=1)
        mu1 = t[rows, r1] / sP[r1]
        r2 = order[torch.searchsorted(breaks, mu1, right=True)]
        pr = torch.cat([r1, r2])
        tt = t[torch.cat([rows, rows]), pr]
        lm_seed, _ = log_interval_mass_t(loS[pr] - tt, hiS[pr] - tt)
        lj_seed = torch.cat([lk[rows, r1], lk[rows, r2]]) + lm_seed
        lower = torch.where(r1 == r2, lj_seed[:n], torch.logaddexp(lj_seed[:n], lj_seed[n:]))
        p, r = torch.nonzero(lk > (lower - thr)[:, None], as_tuple=True)  # sorted by point
        tt = t[p, r]
        lk_p = lk[p, r]
        a, b = loS[r] - tt, hiS[r] - tt
        lm, err = log_interval_mass_t(a, b)
        lj = lk_p + lm
        log_px, err_px = lse_by_point(p, lj, err, n, prune_nats)
        n_cand = p.shape[0]
        mean = cov = None
        if need_moments:
            sel = (lj > (log_px - thr)[p]) | ~torch.isfinite(log_px)[p]
            idx = sel.nonzero().squeeze(1)
            p, r, lj, tt, a, b = p[idx], r[idx], lj[idx], tt[idx], a[idx], b[idx]
            _, um, uv = interval_stats_t(a, b)
            isP = 1.0 / sP[r]
            mean = ((tt + um) * isP)[:, None]
            cov = (uv * isP * isP)[:, None, None]
        v = (tt * sP[r])[:, None]
        parts.append((p + s, r, lj, log_px, err_px, v, mean, cov, n_cand))
    if not parts:
        raise ValueError("X has no rows")
    cat = [None if parts[0][i] is None else torch.cat([q[i] for q in parts]) for i in range(8)]
    return TorchPairs(*cat, n_candidates=sum(q[8] for q in parts))


def pairs_torch(
    geom: RegionGeometry,
    X,
    device,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
) -> TorchPairs:
    """Exact pairs on ``device`` for ``X`` ((N, D) numpy array or tensor), see ``marginal_pairs``.

    Raises ``NotImplementedError`` for latent dimensions the torch backend does not cover.
    """
    dev = resolve_device(device)
    Xt = torch.as_tensor(X, dtype=torch.float64, device=dev)
    d = geom.latent_dim
    if d == 1 and geom.interval is not None:
        return pairs_1d_torch(geom, Xt, prune_nats, need_moments)
    raise NotImplementedError(
        f"the torch backend covers latent_dim 1 (and 2 soon); this model has latent_dim {d}: "
        "use device=None (the numpy path)"
    )
