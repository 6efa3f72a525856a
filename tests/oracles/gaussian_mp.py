"""Independent mpmath references for the standard normal over intervals and convex polygons.

Shares no formula with :mod:`exactdgn.gaussian` (no Owen's T, no edge formula, no divergence
theorem, no Gauss-Legendre / Laguerre rules):

* :func:`interval_ref`: ``erfc`` differences at ``dps`` digits (mpmath's exponent range is
  unbounded, so ``[1e6, 1e6 + 1e-9]`` is fine).
* :func:`polygon_ref`: slicing.  The plane is first rotated (in mpmath, by an angle chosen so that
  the polygon's closest-looking vertex direction lies on the ``+x`` axis; the rotation is exact
  to ``dps`` digits) and the mass is ``int phi(x) [Phi(yhi(x)) - Phi(ylo(x))] dx`` by mpmath's
  tanh-sinh quadrature, split at every vertex and, near a finite end ``a`` of a panel, at
  ``a +- 2^k / max(1, |a|)`` (the scale on which ``phi`` decays there).  The complement
  ``1 - m`` is integrated separately as a sum of positive terms
  (``Phi(xlo) + Q(xhi) + int phi(x) [Phi(ylo) + Q(yhi)] dx``), so ``log m = log1p(-(1 - m))``
  keeps its digits for huge polygons (``m = 1 - 1e-17``).  Moments: the same quadratures of
  ``z`` and of ``(z - E z)(z - E z)^T`` (the inner ``y``-moments in closed form), rotated back.

Inputs are taken exactly (each float converted to mpmath), so a reference is the true value of
the float input.  Cost: ~0.1-1 s per polygon for the mass, a few seconds with moments.
"""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np

__all__ = ["interval_ref", "polygon_ref"]


def _q(x):
    """Upper tail ``Q(x)``, accurate for any ``x`` (mpmath)."""
    if x == mp.inf:
        return mp.mpf(0)
    if x == mp.ninf:
        return mp.mpf(1)
    return mp.erfc(x / mp.sqrt(2)) / 2


def _mass1(lo, hi):
    """``Phi(hi) - Phi(lo)`` without cancellation beyond the working precision."""
    if lo >= hi:
        return mp.mpf(0)
    if lo > 0:
        return _q(lo) - _q(hi)
    if hi < 0:
        return _q(-hi) - _q(-lo)
    return 1 - _q(hi) - _q(-lo)


def _phi(x):
    return mp.npdf(x) if mp.isfinite(x) else mp.mpf(0)


def interval_ref(lo: float, hi: float, dps: int = 50):
    """(log mass, mean, var) of ``N(0, 1)`` on ``[lo, hi]`` (floats; ``-inf`` mass if empty)."""
    with mp.workdps(dps):
        lo, hi = mp.mpf(lo), mp.mpf(hi)
        m = _mass1(lo, hi)
        if m == 0:
            return -math.inf, math.nan, math.nan
        pl, ph = _phi(lo), _phi(hi)
        mean = (pl - ph) / m
        # E[(u - mean)^2] = 1 + (lo phi(lo) - hi phi(hi)) / m - mean^2 (exact at dps digits;
        # for very thin intervals the caller should raise dps)
        e2 = 1 + ((lo * pl if mp.isfinite(lo) else 0) - (hi * ph if mp.isfinite(hi) else 0)) / m
        return float(mp.log(m)), float(mean), float(e2 - mean * mean)


def _rows(normals, offsets, transform=None, shift=None):
    """Real rows as mpmath triples; None if empty (a -inf offset, or 0 . u <= c < 0).

    ``transform`` (2, 2) and ``shift`` (2,), optional: the rows of ``{T u0 - w : n . u0 <= c}``
    instead, formed exactly at the working precision (normal ``T^{-T} n``, offset
    ``c - (T^{-T} n) . w``) from the float inputs.
    """
    rows = []
    if transform is not None:
        T = [[mp.mpf(float(x)) for x in r] for r in np.asarray(transform, float)]
        det = T[0][0] * T[1][1] - T[0][1] * T[1][0]
        # T^{-T} = [[T11, -T10], [-T01, T00]] / det
        inv_t = [[T[1][1] / det, -T[1][0] / det], [-T[0][1] / det, T[0][0] / det]]
    w = None if shift is None else [mp.mpf(float(x)) for x in np.asarray(shift, float)]
    for (a, b), c in zip(np.asarray(normals, float), np.asarray(offsets, float), strict=True):
        if c == math.inf:
            continue
        if c == -math.inf:
            return None
        if a == 0 and b == 0:
            if c < 0:
                return None
            continue
        a, b, c = mp.mpf(float(a)), mp.mpf(float(b)), mp.mpf(float(c))
        if transform is not None:
            a, b = inv_t[0][0] * a + inv_t[0][1] * b, inv_t[1][0] * a + inv_t[1][1] * b
        if w is not None:
            c = c - (a * w[0] + b * w[1])
        rows.append((a, b, c))
    return rows


def _feasible(rows, x, y):
    tol = mp.mpf(10) ** -20
    return all(a * x + b * y <= c + tol * (1 + abs(c)) for a, b, c in rows)


def _candidates(rows):
    """Feasible vertices and feet of the perpendiculars from the mean (where the integrand in
    any slicing direction peaks), as (x, y) in the input frame."""
    pts = []
    for (a1, b1, c1), (a2, b2, c2) in itertools.combinations(rows, 2):
        det = a1 * b2 - a2 * b1
        if det != 0:
            pts.append(((c1 * b2 - c2 * b1) / det, (a1 * c2 - a2 * c1) / det))
    for a, b, c in rows:
        nn = a * a + b * b
        pts.append((c * a / nn, c * b / nn))
    return [p for p in pts if _feasible(rows, *p)]


def _angle(pts) -> float:
    """Rotation angle putting the closest candidate on the +x axis (any angle is exact)."""
    if not pts:
        return 0.0
    x, y = min(pts, key=lambda p: p[0] ** 2 + p[1] ** 2)
    if x == 0 and y == 0:
        return 0.0
    return float(mp.atan2(y, x))


def _panels(bps):
    out = []
    for a, b in itertools.pairwise(bps):
        if a == mp.ninf and b == mp.inf:
            out.append([a, -8, -4, -1, 0, 1, 4, 8, b])
            continue
        pts = {a, b}
        for end, sgn in ((a, 1), (b, -1)):
            if not mp.isfinite(end):
                continue
            sc = 1 / max(mp.mpf(1), abs(end))
            for k in range(-40, 7, 3):
                p = end + sgn * sc * mp.mpf(2) ** k
                if a < p < b:
                    pts.add(p)
        if a == mp.ninf:
            pts.add(b - 12)
        if b == mp.inf:
            pts.add(a + 12)
        out.append(sorted(pts))
    return out


def polygon_ref(
    normals, offsets, moments: bool = False, dps: int = 40, *, transform=None, shift=None
):
    """Reference (log mass, mean (2,), cov (2, 2)) of ``N(0, I_2)`` on ``{n . u <= c}``.

    ``normals`` (F, 2), ``offsets`` (F,) as floats; rows need not be unit; padding rows (zero
    normal, ``+inf`` offset) are skipped.  Mean / cov are None unless ``moments``.
    ``transform`` (2, 2), ``shift`` (2,), optional: the polygon ``{T u0 - w : n . u0 <= c}``
    (``T`` = identity if not given), mapped exactly in mpmath (as
    :func:`exactdgn.gaussian.log_mass_2d_transformed` / ``_shifted`` define their pairs).
    """
    with mp.workdps(dps + 10):
        rows = _rows(normals, offsets, transform, shift)
        if rows is None:
            return -math.inf, None, None
        cands = _candidates(rows)
        th = mp.mpf(_angle(cands))
        cs, sn = mp.cos(th), mp.sin(th)
        # rotated coordinates v = R^T u: row a u1 + b u2 = (a cs + b sn) v1 + (-a sn + b cs) v2
        rr = [(a * cs + b * sn, -a * sn + b * cs, c) for a, b, c in rows]
        xlo, xhi = mp.ninf, mp.inf
        for a, b, c in rr:
            if b == 0 and a > 0:
                xhi = min(xhi, c / a)
            elif b == 0 and a < 0:
                xlo = max(xlo, c / a)
        if xlo >= xhi:
            return -math.inf, None, None
        bps = {xlo, xhi}
        for (a1, b1, c1), (a2, b2, c2) in itertools.combinations(rr, 2):
            det = a1 * b2 - a2 * b1
            if det != 0:
                x = (c1 * b2 - c2 * b1) / det
                if xlo < x < xhi:
                    bps.add(x)
        for x, y in cands:
            xr = x * cs + y * sn
            if xlo < xr < xhi:
                bps.add(xr)
        bps = sorted(bps)

        def yr(x):
            lo, hi = mp.ninf, mp.inf
            for a, b, c in rr:
                if b > 0:
                    hi = min(hi, (c - a * x) / b)
                elif b < 0:
                    lo = max(lo, (c - a * x) / b)
            return lo, hi

        panels = _panels(bps)
        samples = []
        for sub in panels:
            for p in sub:
                if mp.isfinite(p):
                    m = _mass1(*yr(p))
                    if m > 0:
                        samples.append(-p * p / 2 + mp.log(m))
            for s0, s1 in itertools.pairwise(sub):
                if mp.isfinite(s0) and mp.isfinite(s1):
                    p = (s0 + s1) / 2
                    m = _mass1(*yr(p))
                    if m > 0:
                        samples.append(-p * p / 2 + mp.log(m))
        if not samples:
            return -math.inf, None, None
        K = max(samples)

        def quad(fun):
            return mp.fsum(mp.quad(fun, sub) for sub in panels)

        def w(x):
            return mp.exp(-x * x / 2 - K) * _mass1(*yr(x))

        Z = quad(w)
        logm = K + mp.log(Z) - mp.log(2 * mp.pi) / 2
        if logm > -1:  # complement as positive terms: log m = log1p(-(1 - m))

            def wc(x):
                lo, hi = yr(x)
                if lo >= hi:
                    return mp.npdf(x)
                return mp.npdf(x) * (_q(-lo) + _q(hi))

            comp = _q(-xlo) + _q(xhi)
            comp += mp.fsum(mp.quad(wc, sub) for sub in panels)
            logm = mp.log1p(-comp)
        if not moments:
            return float(logm), None, None

        def ym(x):
            lo, hi = yr(x)
            if lo >= hi:
                return mp.mpf(0), mp.mpf(0), mp.mpf(0)
            e = mp.exp(-x * x / 2 - K)
            pl, ph = _phi(lo), _phi(hi)
            m0 = _mass1(lo, hi)
            m2 = m0 + (lo * pl if mp.isfinite(lo) else 0) - (hi * ph if mp.isfinite(hi) else 0)
            return e * m0, e * (pl - ph), e * m2

        Ex = quad(lambda x: x * ym(x)[0]) / Z
        Ey = quad(lambda x: ym(x)[1]) / Z
        Vx = quad(lambda x: (x - Ex) ** 2 * ym(x)[0]) / Z
        Cxy = quad(lambda x: (x - Ex) * (ym(x)[1] - Ey * ym(x)[0])) / Z
        Vy = quad(lambda x: ym(x)[2] - 2 * Ey * ym(x)[1] + Ey**2 * ym(x)[0]) / Z
        R = mp.matrix([[cs, -sn], [sn, cs]])
        mean = R * mp.matrix([Ex, Ey])
        cov = R * mp.matrix([[Vx, Cxy], [Cxy, Vy]]) * R.T
        return (
            float(logm),
            np.array([float(mean[0]), float(mean[1])]),
            np.array([[float(cov[i, j]) for j in range(2)] for i in range(2)]),
        )
