"""Torch (float64, any device) twins of :mod:`._interval`: d = 1 masses and moments, tail-safe.

The formulas and branch thresholds are those of :func:`._interval.log_interval_mass` and
:func:`._interval.interval_stats` (see there for the math and the accuracy of each branch); only
the evaluation differs. Branches are evaluated with :func:`branch`: on a CUDA device every
branch runs on all elements and ``torch.where`` picks (no host synchronisation, static shapes);
on the CPU only the selected elements are gathered (as numpy does: less work).

Torch pitfalls avoided here: ``torch.special.ndtr(x)`` is ``0`` for ``x <= -9`` in float64 and
``log_ndtr``'s gradient is not finite far in the left tail, so tails are written with
``erfc`` / ``erfcx`` (``Q(x) = erfc(x / √2) / 2``, ``log Q(x) = log erfcx(x/√2) - x²/2 - log 2``)
and nothing here is differentiated.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._interval import (
    _CUT,
    _GL8_W,
    _GL8_X,
    _GL8U_W,
    _GL8U_X,
    _GL16_W,
    _GL16_X,
    _GL_W,
    _GL_X,
    _SERIES,
    _THIN,
    _UPPER_NDTR,
)
from ._rules import EPS, LOG_SQRT_2PI

__all__ = ["branch", "interval_stats_t", "log_interval_mass_t", "log_phi_t", "q_t"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / _SQRT2
_LOG2 = math.log(2.0)
_LOG_SQRT_PI_2 = 0.5 * math.log(0.5 * math.pi)

_NODES: dict = {}
# None: dense branches on accelerators, gathers on the CPU; True / False force one (tests run the
# CUDA-style dense evaluation on CPU tensors this way).
DENSE_BRANCHES: bool | None = None


def nodes(name: str, arr, like: torch.Tensor) -> torch.Tensor:
    """A quadrature rule (numpy array) as a float64 tensor on ``like``'s device, cached."""
    key = (name, like.device)
    t = _NODES.get(key)
    if t is None:
        t = torch.tensor(np.array(arr), dtype=torch.float64, device=like.device)
        _NODES[key] = t
    return t


def branch(out: torch.Tensor, mask: torch.Tensor, fn, *args: torch.Tensor) -> torch.Tensor:
    """``out[mask] = fn(*(a[mask] for a in args))`` (returns the updated ``out``).

    CUDA: ``fn`` runs on every element and ``torch.where`` selects (results outside the mask
    may be NaN or inf and are discarded); CPU: the selected elements are gathered first.
    """
    dense = out.device.type != "cpu" if DENSE_BRANCHES is None else DENSE_BRANCHES
    if dense:
        m = mask.reshape(mask.shape + (1,) * (out.dim() - mask.dim()))
        return torch.where(m, fn(*args), out)
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        out[idx] = fn(*(a[idx] for a in args))
    return out


def log_phi_t(x: torch.Tensor) -> torch.Tensor:
    """``log φ(x)``."""
    return -0.5 * x * x - LOG_SQRT_2PI


def q_t(x: torch.Tensor) -> torch.Tensor:
    """Upper tail ``Q(x) = 1 - Φ(x)`` by ``erfc`` (relative-accurate until it underflows)."""
    return 0.5 * torch.special.erfc(x * _INV_SQRT2)


def _rowdot(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (a * w).sum(dim=-1)


def _series(h, m, spread):
    m2, h2 = m * m, h * h
    rel = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 / 24.0 - 0.25 * m2 + 0.125) * h2 * h2 / 5.0
    return log_phi_t(m) + torch.log(2.0 * h) + torch.log1p(rel)


def _thin8(h, m):
    x = nodes("gl8x", _GL8_X, h)
    w = nodes("gl8w", _GL8_W, h)
    s = h[:, None] * x
    q = torch.exp(-(m[:, None] + 0.5 * s) * s)
    return log_phi_t(m) + torch.log(h * _rowdot(q, w))


def _moderate(a, b):
    return torch.log(q_t(a) - q_t(b))


def _upper(a, b):
    lma = torch.log(torch.special.erfcx(a * _INV_SQRT2))
    la = lma - 0.5 * a * a - _LOG2
    e = -0.5 * (b - a) * (b + a)
    r = e + torch.log(torch.special.erfcx(b * _INV_SQRT2)) - lma
    near = e >= -40.0  # beyond: Q(b)/Q(a) < 5e-18 is invisible (and b = inf gives NaN here)
    return torch.where(near, la + torch.log(-torch.expm1(torch.where(near, r, -1.0))), la)


def _central(a, b):
    return torch.log1p(-(q_t(b) + q_t(-a)))


def log_interval_mass_t(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`exactdgn.gaussian.log_interval_mass`: ``(log mass, error)`` (P,)."""
    a = torch.maximum(lo, -hi)
    b = torch.maximum(hi, -lo)
    h = 0.5 * (b - a)
    m = a + h
    spread = h * torch.clamp(m, min=1.0)  # NaN for (-inf, inf): fails every test below
    out = torch.full_like(lo, -math.inf)
    small = spread <= _THIN
    ser = small & (h > 0) & (spread <= _SERIES)
    thin = small & (h > 0) & ~(spread <= _SERIES)
    big = ~small & (lo < hi)
    out = branch(out, ser, _series, h, m, spread)
    out = branch(out, thin, _thin8, h, m)
    out = branch(out, big & (a >= 0.0) & (a < _UPPER_NDTR), _moderate, a, b)
    out = branch(out, big & (a >= _UPPER_NDTR), _upper, a, b)
    out = branch(out, big & (a < 0.0), _central, a, b)
    fin = torch.isfinite(out)
    err = torch.where(fin, 32.0 * EPS * (1.0 + out.abs()), torch.zeros_like(out))
    return out, err


# ------------------------------------------------------------------------- moments
def _quad_rule(a, W, x, w):
    scut = 2.0 * _CUT / (a + torch.sqrt(a * a + 2.0 * _CUT))
    S = torch.minimum(W, scut)
    s = S[:, None] * x
    wf = (S[:, None] * w) * torch.exp(-s * (a[:, None] + 0.5 * s))
    Z0 = wf.sum(dim=1)
    ms = (wf * s).sum(dim=1) / Z0
    var = (wf * (s - ms[:, None]) ** 2).sum(dim=1) / Z0
    return torch.stack([log_phi_t(a) + torch.log(Z0), a + ms, var], dim=1)


def _stats_upper(a, b):
    lma = _LOG_SQRT_PI_2 + torch.log(torch.special.erfcx(a * _INV_SQRT2))
    lmb = _LOG_SQRT_PI_2 + torch.log(torch.special.erfcx(b * _INV_SQRT2))
    e = 0.5 * (b - a) * (b + a)
    r = torch.where(torch.isinf(b), -math.inf, -e + lmb - lma)
    L1 = torch.log1p(-torch.exp(r))
    wa = torch.exp(-lma - L1)
    wb = torch.exp(-e - lma - L1)
    m1 = wa - wb
    var = 1.0 + wa * (a - m1) - torch.where(wb > 0, wb * (b - m1), 0.0)
    return torch.stack([log_phi_t(a) + lma + L1, m1, var], dim=1)


def _stats_central(a, b):
    lm = torch.log1p(-(q_t(b) + q_t(-a)))
    wa = torch.exp(log_phi_t(a) - lm)
    wb = torch.exp(log_phi_t(b) - lm)
    m1 = wa - wb
    var = 1.0 + torch.where(wa > 0, wa * (a - m1), 0.0) - torch.where(wb > 0, wb * (b - m1), 0.0)
    return torch.stack([lm, m1, var], dim=1)


def interval_stats_t(lo: torch.Tensor, hi: torch.Tensor):
    """Torch twin of :func:`exactdgn.gaussian.interval_stats` for 1-D ``lo``, ``hi`` (P,):
    ``(log mass, mean, variance)``, each (P,)."""
    valid = lo < hi
    flip = (lo + hi) < 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    W = b - a
    half = 0.5 * W
    mid = a + half
    spread = half * torch.clamp(mid.abs(), min=1.0)
    thin = spread <= 1.0
    quad = valid & (thin | (a >= 4.0))
    upper = valid & ~quad & (a >= 0.0)
    central = valid & ~quad & ~upper
    very = thin & (spread <= 0.5)
    nan = math.nan
    out = torch.full((lo.shape[0], 3), nan, dtype=lo.dtype, device=lo.device)
    out[:, 0] = -math.inf
    rules = (
        (valid & very, "gl8u", _GL8U_X, _GL8U_W),
        (valid & thin & ~very, "gl16", _GL16_X, _GL16_W),
        (quad & ~thin, "gl32", _GL_X, _GL_W),
    )
    for sel, name, x, w in rules:
        xt, wt = nodes(name + "x", x, lo), nodes(name + "w", w, lo)
        out = branch(out, sel, lambda a_, W_, xt=xt, wt=wt: _quad_rule(a_, W_, xt, wt), a, W)
    out = branch(out, upper, _stats_upper, a, b)
    out = branch(out, central, _stats_central, a, b)
    logm, mu, var = out.unbind(1)
    mean = torch.where(flip, -mu, mu)
    return logm, mean, var
