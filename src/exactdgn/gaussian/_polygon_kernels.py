"""Compiled per-pair geometry of :mod:`._polygon` (numba, float64, no fast-math).

Why compiled: mapping a tabulated polygon by a pair's own affine map (``u = T u0 - w``, the
missing-data pairs of d = 2) is ~25 elementwise operations per (pair, row) that numpy runs as
as many passes over (pairs x rows) arrays; one loop per pair does them in registers (on MNIST
with half the pixels missing, d = 2: about a fifth of numpy's time for this step). The
operations and their order are those of the formulas in ``_polygon._transformed``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["shift_rows", "transformed_edges"]


@njit(nogil=True, cache=True)
def transformed_edges(
    m,
    T,
    w,
    k,
    normals,
    active,
    fin0,
    fin1,
    p0,
    p1,
    offsets,
    centroid,
    bounded,
    nonempty,
    nu,
    cu,
    t0,
    t1,
    P0,
    P1,
    g,
    radius,
):  # pragma: no cover - compiled
    """Edges of polygons ``m`` (P,) mapped by ``u = T u0 - w`` (``_polygon._transformed``).

    For pair ``i`` and row ``j < k`` of its polygon (table rows ``n . u0 <= g`` with edge ends
    ``p0``, ``p1``): the mapped unit normal ``n' = adj(T)ᵀ n / |adj(T)ᵀ n|`` (0 on inactive
    rows), the mapped ends ``T p - w``, the ends along ``tau = (-n'1, n'0)`` (``t0`` / ``t1``,
    -inf / inf where the edge has no vertex there), the offset ``cu = n' . u`` taken from a
    vertex where the edge has one, else the line's ``g det T / |adj(T)ᵀ n| - n' . w`` (inf on
    inactive rows), the mapped vertex centroid ``T c - w`` (0 for unbounded polygons) and the
    largest distance from it to a mapped vertex (inf for unbounded polygons). Outputs are
    written into the arrays passed: ``nu`` (P, k, 2), ``cu``, ``t0``, ``t1`` (P, k), ``P0``,
    ``P1`` (P, k, 2), ``g`` (P, 2), ``radius`` (P,).
    """
    for i in range(m.shape[0]):
        mi = m[i]
        t00 = T[i, 0, 0]
        t01 = T[i, 0, 1]
        t10 = T[i, 1, 0]
        t11 = T[i, 1, 1]
        w0 = w[i, 0]
        w1 = w[i, 1]
        det = t00 * t11 - t01 * t10
        bnd = bounded[mi]
        if bnd:
            g0 = t00 * centroid[mi, 0] + t01 * centroid[mi, 1] - w0
            g1 = t10 * centroid[mi, 0] + t11 * centroid[mi, 1] - w1
        else:
            g0 = 0.0
            g1 = 0.0
        g[i, 0] = g0
        g[i, 1] = g1
        rad = 0.0
        for j in range(k):
            n_0 = normals[mi, j, 0]
            n_1 = normals[mi, j, 1]
            a0 = t11 * n_0 - t10 * n_1
            a1 = t00 * n_1 - t01 * n_0
            act = active[mi, j]
            safe = np.hypot(a0, a1) if act else 1.0
            nn0 = a0 / safe if act else 0.0
            nn1 = a1 / safe if act else 0.0
            nu[i, j, 0] = nn0
            nu[i, j, 1] = nn1
            x0 = p0[mi, j, 0]
            y0 = p0[mi, j, 1]
            q00 = t00 * x0 + t01 * y0 - w0
            q01 = t10 * x0 + t11 * y0 - w1
            x1 = p1[mi, j, 0]
            y1 = p1[mi, j, 1]
            q10 = t00 * x1 + t01 * y1 - w0
            q11 = t10 * x1 + t11 * y1 - w1
            P0[i, j, 0] = q00
            P0[i, j, 1] = q01
            P1[i, j, 0] = q10
            P1[i, j, 1] = q11
            f0 = fin0[mi, j]
            f1 = fin1[mi, j]
            t0[i, j] = nn0 * q01 - nn1 * q00 if f0 else -np.inf
            t1[i, j] = nn0 * q11 - nn1 * q10 if f1 else np.inf
            if not act:
                cu[i, j] = np.inf
            elif f0:
                cu[i, j] = nn0 * q00 + nn1 * q01
            elif f1:
                cu[i, j] = nn0 * q10 + nn1 * q11
            else:
                cu[i, j] = offsets[mi, j] * (det / safe) - (nn0 * w0 + nn1 * w1)
            if nonempty[mi, j] and bnd:  # T (p - c): not the difference of the rounded
                # mapped points (a polygon of size 0.3 mapped 1e15 out had radius 0, went to
                # the small-polygon cubature and got log mass 0 for -4e29)
                dx = x0 - centroid[mi, 0]
                dy = y0 - centroid[mi, 1]
                dist = np.hypot(t00 * dx + t01 * dy, t10 * dx + t11 * dy)
                if dist > rad:
                    rad = dist
        radius[i] = rad if bnd else np.inf


_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_2PI = 2.5066282746310002


@njit(nogil=True, cache=True, error_model="numpy")  # (1 / 0 = inf: an end at the mean)
def shift_rows(cu, t0, t1, nonempty, logm, ext, per_row, out):  # pragma: no cover - compiled
    """``out_p = Σ_e (|c_e| + ext_pe) L'_e / m_p`` of ``_polygon._shift_error``, one loop per
    pair: ``L'_e = phi(c_e) (Phi(t1) - Phi(t0))`` (the interval mass on the side of its tail,
    by ``erfc``) less ``phi(t) min(t1 - t0, sqrt(2 pi), 1 / |t|)`` at each finite end, at
    least 0; edges no longer than their ends' larger decay length are skipped (they leave
    nothing). ``ext`` (P, F) when ``per_row``, else (P, 1)."""
    P, F = cu.shape
    for p in range(P):
        s = 0.0
        lm = logm[p]
        for e in range(F):
            if not nonempty[p, e]:
                continue
            a = t0[p, e]
            b = t1[p, e]
            fa = np.isfinite(a)
            fb = np.isfinite(b)
            if fa and fb:
                dec = min(_SQRT_2PI, 1.0 / min(abs(a), abs(b)))
                if b - a <= dec:
                    continue
            if a > 0.0:
                span = 0.5 * (math.erfc(a * _INV_SQRT2) - math.erfc(b * _INV_SQRT2))
            elif b < 0.0:
                span = 0.5 * (math.erfc(-b * _INV_SQRT2) - math.erfc(-a * _INV_SQRT2))
            else:
                span = 1.0 - 0.5 * (math.erfc(b * _INV_SQRT2) + math.erfc(-a * _INV_SQRT2))
            loc = min(b - a, _SQRT_2PI)
            if fa:
                span -= math.exp(-0.5 * a * a) * _INV_SQRT_2PI * min(loc, 1.0 / abs(a))
            if fb:
                span -= math.exp(-0.5 * b * b) * _INV_SQRT_2PI * min(loc, 1.0 / abs(b))
            if span <= 0.0:
                continue
            c = cu[p, e]
            rel = math.exp(-0.5 * c * c - lm) * _INV_SQRT_2PI * span
            x = ext[p, e] if per_row else ext[p, 0]
            v = (abs(c) + x) * rel
            if np.isfinite(v):
                s += v
        out[p] = s
