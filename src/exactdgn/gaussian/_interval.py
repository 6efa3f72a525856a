"""Exact standard-normal integrals over intervals (d = 1), in log space and tail-safe.

Everything here is in whitened coordinates: ``u ~ N(0, 1)`` and an interval ``[lo, hi]``
(either end may be infinite).  The mass, mean and variance are accurate relative to their own
size, also for intervals many standard deviations from the mean (masses far below 1e-300,
returned as logs) and for very thin intervals such as ``[30, 30 + 1e-9]``.

Branches (after reflecting the interval so that its midpoint is ``>= 0``):

* **quadrature** (``lo >= 4`` or thin, ``(hi - lo)/2 * max(1, |mid|) <= 1``): with
  ``u = lo + s`` the mass is ``phi(lo) * Z0``, ``Z0 = int_0^W exp(-lo*s - s^2/2) ds``, and the
  moments of ``s`` come from the same integrand.  A 32-node Gauss-Legendre rule on
  ``[0, min(W, s_cut)]`` (``s_cut`` where the exponent reaches 38) is accurate to ~1e-14
  relative and never cancels.
* **upper tail** (``0 <= lo < 4``, not thin): ``m = phi(lo) M(lo) (1 - exp(r))`` with the Mills
  ratio ``M(x) = Q(x)/phi(x) = sqrt(pi/2) erfcx(x/sqrt 2)`` and
  ``r = -(hi - lo)(hi + lo)/2 + log M(hi) - log M(lo) <= -2`` (no cancellation).
* **central** (``lo < 0 < hi``, not thin): ``m = 1 - Q(hi) - Phi(lo) >= 0.47``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erfcx, ndtr

from ._rules import EPS, LOG_SQRT_2PI, gauss_legendre, gauss_legendre_01, reject_nan

__all__ = [
    "TruncatedMoments",
    "bound_rounding_1d",
    "interval_stats",
    "log_interval_mass",
    "log_mass_1d",
    "log_phi",
    "truncated_moments_1d",
]

_LOG_SQRT_PI_2 = 0.5 * math.log(0.5 * math.pi)
_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)
# Exponent at which the quadrature branch truncates the integrand (exp(-38) ~ 3e-17).
_CUT = 38.0
_GL_X, _GL_W = gauss_legendre_01(32)
# Thin intervals: the exponent varies by at most 2 over the interval, 16 nodes are exact.
_GL16_X, _GL16_W = gauss_legendre_01(16)
_GL8U_X, _GL8U_W = gauss_legendre_01(8)


class TruncatedMoments(NamedTuple):
    """Mass and moments of a Gaussian restricted to a polyhedron.

    Attributes
    ----------
    log_mass : ndarray, shape (P,)
        ``log P(u in poly)``; ``-inf`` for empty (or measure-zero) polyhedra.
    mean : ndarray, shape (P, d)
        ``E[u | u in poly]`` (NaN where the mass is zero).
    cov : ndarray, shape (P, d, d)
        ``Cov[u | u in poly]``, symmetric (NaN where the mass is zero).
    error : ndarray, shape (P,)
        Estimate of the absolute error of ``log_mass``.
    """

    log_mass: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    error: np.ndarray


def log_phi(x: np.ndarray) -> np.ndarray:
    """``log phi(x) = -x^2/2 - log sqrt(2 pi)`` (``-inf`` at ``x = +-inf``)."""
    return -0.5 * np.square(x) - LOG_SQRT_2PI


def _log_mills(x: np.ndarray) -> np.ndarray:
    """``log(Q(x)/phi(x))`` for ``x >= 0`` (``-inf`` at ``+inf``)."""
    return _LOG_SQRT_PI_2 + np.log(erfcx(x / _SQRT2))


def _quad_branch(a: np.ndarray, W: np.ndarray, thin: bool | str):
    """Mass and moments of ``[a, a + W]`` by Gauss-Legendre in ``s = u - a`` (see module doc).

    ``thin="very"``: the exponent varies by at most ~1.5 over the interval, where 8 nodes
    already integrate ``e^q {1, s, s^2}`` to ~1e-19 relative.
    """
    scut = 2.0 * _CUT / (a + np.sqrt(a * a + 2.0 * _CUT))  # root of a*s + s^2/2 = _CUT
    S = np.minimum(W, scut)
    if thin == "very":
        x, w = _GL8U_X, _GL8U_W
    else:
        x, w = (_GL16_X, _GL16_W) if thin else (_GL_X, _GL_W)
    s = S[:, None] * x
    wf = (S[:, None] * w) * np.exp(-s * (a[:, None] + 0.5 * s))
    Z0 = wf.sum(axis=1)
    ms = (wf * s).sum(axis=1) / Z0
    var = (wf * np.square(s - ms[:, None])).sum(axis=1) / Z0
    logm = log_phi(a) + np.log(Z0)
    return logm, a + ms, var


# Hints of the NaN errors of the public interval functions (what to give instead).
_LO_HINT = "use -inf for an unbounded lower end; lo >= hi is an empty interval"
_HI_HINT = "use +inf for an unbounded upper end; lo >= hi is an empty interval"


def _checked_ends(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    reject_nan(lo, "lo", _LO_HINT)
    reject_nan(hi, "hi", _HI_HINT)
    return lo, hi


def interval_stats(lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log mass, mean and variance of ``N(0, 1)`` restricted to ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : array_like, broadcastable
        Interval ends, ``-inf <= lo``, ``hi <= +inf``; NaN is an error (``ValueError`` naming
        the argument and the number of NaN).

    Returns
    -------
    logm : ndarray
        ``log(Phi(hi) - Phi(lo))``, relative-accurate in the tails; ``-inf`` where
        ``lo >= hi``.
    mean : ndarray
        ``E[u | lo <= u <= hi] = (phi(lo) - phi(hi)) / m`` (NaN where empty).
    var : ndarray
        ``Var[u | lo <= u <= hi]`` (NaN where empty), computed without the cancellation of
        ``E[u^2] - E[u]^2`` in the tails.
    """
    return _interval_stats(*_checked_ends(lo, hi))


def _interval_stats(lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`interval_stats` without the NaN check (the library's own callers; a NaN end gives
    an empty interval here)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    shape = lo.shape
    lo = lo.ravel()
    hi = hi.ravel()
    logm = np.full(lo.shape, -np.inf)
    mean = np.full(lo.shape, np.nan)
    var = np.full(lo.shape, np.nan)
    with np.errstate(all="ignore"):
        valid = lo < hi
        flip = (lo + hi) < 0  # NaN (both ends infinite) compares False
        a = np.where(flip, -hi, lo)
        b = np.where(flip, -lo, hi)
        W = b - a
        half = 0.5 * W
        mid = a + half
        thin = half * np.maximum(1.0, np.abs(mid)) <= 1.0
        quad = valid & (thin | (a >= 4.0))
        upper = valid & ~quad & (a >= 0.0)
        central = valid & ~quad & ~upper
        mu = np.full(lo.shape, np.nan)

        very = thin & (half * np.maximum(1.0, np.abs(mid)) <= 0.5)
        for sel, is_thin in (
            (valid & very, "very"),
            (valid & thin & ~very, True),
            (quad & ~thin, False),
        ):
            idx = np.flatnonzero(sel)
            if idx.size:
                logm[idx], mu[idx], var[idx] = _quad_branch(a[idx], W[idx], is_thin)

        idx = np.flatnonzero(upper)
        if idx.size:
            aa, bb = a[idx], b[idx]
            lma = _log_mills(aa)
            lmb = _log_mills(bb)
            e = 0.5 * (bb - aa) * (bb + aa)
            r = np.where(np.isinf(bb), -np.inf, -e + lmb - lma)
            L1 = np.log1p(-np.exp(r))
            logm[idx] = log_phi(aa) + lma + L1
            wa = np.exp(-lma - L1)
            wb = np.exp(-e - lma - L1)
            m1 = wa - wb
            mu[idx] = m1
            var[idx] = 1.0 + wa * (aa - m1) - np.where(wb > 0, wb * (bb - m1), 0.0)

        idx = np.flatnonzero(central)
        if idx.size:
            aa, bb = a[idx], b[idx]
            lm = np.log1p(-(ndtr(-bb) + ndtr(aa)))
            logm[idx] = lm
            wa = np.exp(log_phi(aa) - lm)
            wb = np.exp(log_phi(bb) - lm)
            m1 = wa - wb
            mu[idx] = m1
            var[idx] = (
                1.0 + np.where(wa > 0, wa * (aa - m1), 0.0) - np.where(wb > 0, wb * (bb - m1), 0.0)
            )
        mean[:] = np.where(flip, -mu, mu)
    return logm.reshape(shape), mean.reshape(shape), var.reshape(shape)


def _rowdot(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n,) ``a @ w`` for (n, K) ``a``, each row summed in a fixed order: a BLAS product may
    change its summation order with ``n``, and a pair's result must not depend on its batch."""
    return np.einsum("ij,j->i", a, w)


# Half-width x max(1, |midpoint|) below which ``log_interval_mass`` uses its midpoint series.
_SERIES = 5e-4
_THIN = 0.5
# Lower ends below this (in sd) take the two-ndtr form in log_interval_mass's upper branch.
_UPPER_NDTR = 5.0
_GL8_X, _GL8_W = gauss_legendre(8)  # on [-1, 1]


def log_interval_mass(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log(Phi(hi) - Phi(lo))`` only (no moments): the fast path of exact d = 1 likelihoods.

    Same conventions and accuracy as :func:`interval_stats` (relative to the mass itself, in the
    tails and for thin intervals) with cheaper branches, after reflecting so that the midpoint
    ``m >= 0`` and with half-width ``h``:

    * **series** (``h max(1, m) <= 5e-4``): ``m = phi(m) 2h (1 + (m^2 - 1) h^2 / 6
      + (m^4/24 - m^2/4 + 1/8) h^4 / 5)``; the next term is below ``(h max(1, m))^6 / 100``
      (< 1e-21) relative.
    * **thin** (``5e-4 < h max(1, m) <= 0.5``): ``phi(m) h sum_i w_i exp(-m h x_i - h^2 x_i^2/2)``
      with 8 Gauss-Legendre nodes on [-1, 1]; the integrand is ``exp`` of a polynomial that
      varies by at most ~1, so the rule's error is below 1e-18 relative.
    * **moderate** (``0 <= lo < 5``): ``m = Q(lo) - Q(hi)`` by two ``ndtr`` calls; since
      ``h max(1, m) > 0.5`` here, ``Q(hi) <= 0.37 Q(lo)`` and the difference keeps ~3 eps.
    * **upper** (``lo >= 5``): ``m = phi(lo) M(lo) (-expm1(r))``,
      ``r = -(hi - lo)(hi + lo)/2 + log M(hi) - log M(lo)`` with the Mills ratio
      ``M(x) = sqrt(pi/2) erfcx(x / sqrt 2)``; relative error ``~ eps / (h max(1, m))``, a few
      eps since ``h max(1, m) > 0.5`` here.
    * **central** (``lo < 0 < hi``): ``m = 1 - Q(hi) - Phi(lo)`` (same bound).

    Parameters
    ----------
    lo, hi : ndarray, same shape
        Interval ends (``-inf <= lo``, ``hi <= +inf``); NaN is an error (``ValueError``
        naming the argument and the number of NaN).

    Returns
    -------
    log_mass : ndarray
        ``-inf`` where ``lo >= hi``.
    error : ndarray
        Estimated absolute error of ``log_mass``.
    """
    return _log_interval_mass(*_checked_ends(lo, hi))


def _log_interval_mass(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_interval_mass` without the NaN check: the hot path of the library's own
    callers (a NaN end gives ``-inf``, error 0 here)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {lo.shape} and {hi.shape}")
    shape = lo.shape  # any shape: the branches below work on the flattened arrays
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    out = np.full(lo.shape, -np.inf)
    with np.errstate(all="ignore"):
        # reflect so that the midpoint is >= 0: (a, b) = (lo, hi) or (-hi, -lo), whichever has
        # the larger lower end (both ends infinite: (-inf, inf); empty intervals stay empty)
        a = np.maximum(lo, -hi)
        b = np.maximum(hi, -lo)
        h = 0.5 * (b - a)
        m = a + h
        spread = h * np.maximum(1.0, m)  # NaN (both ends infinite) and -inf (empty) fail below
        small = spread <= _THIN
        if small.any():
            ism = np.flatnonzero(small & (h > 0))
            hs, ms_ = h[ism], m[ism]
            ser = spread[ism] <= _SERIES
            if ser.any():
                i = ism[ser]
                hh, mm = hs[ser], ms_[ser]
                m2, h2 = mm * mm, hh * hh
                rel = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 / 24.0 - 0.25 * m2 + 0.125) * h2 * h2 / 5.0
                out[i] = log_phi(mm) + np.log(2.0 * hh) + np.log1p(rel)
                ism, hs, ms_ = ism[~ser], hs[~ser], ms_[~ser]
            if ism.size:
                s_ = hs[:, None] * _GL8_X
                q = ms_[:, None] + 0.5 * s_
                q *= s_
                np.negative(q, out=q)
                np.exp(q, out=q)
                out[ism] = log_phi(ms_) + np.log(hs * _rowdot(q, _GL8_W))
            big = ~small & (lo < hi)
        else:
            big = lo < hi
        # moderate lower end (0 <= a < 5, Q(a) > 2.8e-7): Q(a) - Q(b) by two ndtr calls, no
        # cancellation (spread > 0.5 gives Q(b) <= 0.37 Q(a): relative error <= ~3 eps)
        mid = big & (a >= 0.0) & (a < _UPPER_NDTR)
        upper = big & (a >= _UPPER_NDTR)
        central = big & (a < 0.0)
        if mid.any():
            im = np.flatnonzero(mid)
            out[im] = np.log(ndtr(-a[im]) - ndtr(-b[im]))
        if upper.any():
            iu = np.flatnonzero(upper)
            aa, bb = a[iu], b[iu]
            # log phi(a) + log M(a) = log Q(a) = -a^2/2 + log erfcx(a/sqrt 2) - log 2
            lma = np.log(erfcx(aa * (1.0 / _SQRT2)))
            la = lma - 0.5 * np.square(aa) - _LOG2
            e = -0.5 * (bb - aa) * (bb + aa)  # r <= e since M decreases: where e < -40 (and
            near = np.flatnonzero(e >= -40.0)  # at b = inf) Q(b)/Q(a) < 5e-18 is invisible
            if near.size:
                r = e[near] + np.log(erfcx(bb[near] * (1.0 / _SQRT2))) - lma[near]
                la[near] += np.log(-np.expm1(r))
            out[iu] = la
        if central.any():
            out[central] = np.log1p(-(ndtr(-b[central]) + ndtr(a[central])))
        err = np.where(np.isfinite(out), 32.0 * EPS * (1.0 + np.abs(out)), 0.0)
    return out.reshape(shape), err.reshape(shape)


def _interval_from_rows(normals: np.ndarray, offsets: np.ndarray):
    """Intersect the 1-D constraints ``n_i u <= c_i`` of each pair into ``[lo, hi]``.

    Returns ``lo``, ``hi`` (P,) and ``empty`` (P,) for pairs with an infeasible row
    (``0 * u <= c < 0`` or ``c = -inf``).
    """
    n = normals[..., 0]
    c = offsets
    with np.errstate(all="ignore"):
        bound = c / n
        up = (n > 0) & (c < np.inf)
        down = (n < 0) & (c < np.inf)
        hi = np.min(np.where(up, bound, np.inf), axis=1)
        lo = np.max(np.where(down, bound, -np.inf), axis=1)
        bad = ((n == 0) & (c < 0)) | (c == -np.inf) | np.isnan(c) | np.isnan(n)
    return lo, hi, bad.any(axis=1)


def _error_1d(logm: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(logm), 32.0 * EPS * (1.0 + np.abs(logm)), 0.0)


def bound_rounding_1d(normals, offsets, logm, rounded=None) -> np.ndarray:
    """(P,) the error of ``log_mass`` (P,) of ``{u : n_i u <= c_i}`` from its bounds' rounding.

    Each bound ``b = c_i / n_i`` is off by ``eps |b|`` where rounded, which moves the log mass
    by ``eps |b| phi(b) / m`` (a slab 1e-6 wide at 12 sd with rows ``+-3``: 1.2e-9 nats, ~2e3
    times the kernel's own estimate). ``rounded`` (P,) bool: the pairs whose bounds are rounded
    (default: those with a row other than ``+-1``, whose division is inexact; a caller that
    rounded the offsets itself, e.g. by normalising rows, passes its own); 0 elsewhere.
    """
    n = normals[..., 0]
    lo, hi, _ = _interval_from_rows(normals, offsets)
    if rounded is None:
        rounded = ((np.abs(n) != 1.0) & (n != 0.0) & (offsets < np.inf)).any(axis=1)
    out = np.zeros(lo.shape)
    i = np.flatnonzero(rounded & np.isfinite(logm))
    if i.size:
        with np.errstate(all="ignore"):
            part = [
                np.where(np.isfinite(b), np.abs(b) * np.exp(log_phi(b) - logm[i]), 0.0)
                for b in (lo[i], hi[i])
            ]
        out[i] = 2.0 * EPS * (part[0] + part[1])
    return out


def log_mass_1d(normals: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log mass of ``{u : n_i u <= c_i}`` under ``N(0, 1)``, for ``P`` pairs.

    Parameters
    ----------
    normals : ndarray, shape (P, F, 1)
        Row normals (``+-1``; 0 for padding rows).
    offsets : ndarray, shape (P, F)
        Offsets (``+inf`` for padding, ``-inf`` makes the pair empty).

    Returns
    -------
    log_mass : ndarray, shape (P,)
    error : ndarray, shape (P,)
        Estimated absolute error of ``log_mass``.
    """
    lo, hi, bad = _interval_from_rows(normals, offsets)
    logm, err = _log_interval_mass(lo, hi)
    logm = np.where(bad, -np.inf, logm)
    err = err + bound_rounding_1d(normals, offsets, logm)
    return logm, np.where(bad, 0.0, err)


def truncated_moments_1d(normals: np.ndarray, offsets: np.ndarray) -> TruncatedMoments:
    """Log mass, mean and variance of ``N(0, 1)`` on ``{u : n_i u <= c_i}`` (see
    :func:`log_mass_1d` for the shapes); mean ``(P, 1)``, cov ``(P, 1, 1)``."""
    lo, hi, bad = _interval_from_rows(normals, offsets)
    logm, mean, var = _interval_stats(lo, hi)
    logm = np.where(bad, -np.inf, logm)
    mean = np.where(np.isfinite(logm), mean, np.nan)
    var = np.where(np.isfinite(logm), var, np.nan)
    err = _error_1d(logm) + bound_rounding_1d(normals, offsets, logm)
    return TruncatedMoments(logm, mean[:, None], var[:, None, None], err)
