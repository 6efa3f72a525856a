"""Independent test oracle: ``log p(x)`` of a d = 2 decoder, region by region in mpmath.

Meant for small noise (``σ`` ~ 1e-3 - 1e-5), where the quadrature oracle of
:mod:`tests.oracles.likelihood` (adaptive lines over z) has to resolve a posterior ~σ wide and
takes minutes a point. Shares no code and no formula with :mod:`exactdgn.gaussian` or
:mod:`exactdgn.inference` (no polygon table, no edge formula, no Owen's T, no whitening by the
library's geometry):

* the regions, their affine maps and their facets come from the LP enumerator
  (:func:`tests.oracles.enumerate.enumerate_regions`, raw parameters only);
* on a region the integrand ``N(z; 0, I) N(x_obs; A z + b, diag σ²)`` is a Gaussian in ``z``:
  its peak ``μ`` and Hessian ``H = I + Aᵀ Σ⁻¹ A`` are formed in ``dps``-digit arithmetic from
  the residuals written out (no ``N(x; b, σ² I + A Aᵀ)`` and no Woodbury), and
  ``∫_P f = f(μ) 2π / sqrt(det H) · mass of N(0, I_2) on P'``, ``P'`` the polygon in
  ``u = Rᵀ (z - μ)``, ``H = R Rᵀ``;
* that mass is ``∫ φ(t) [Φ(hi(t)) - Φ(lo(t))] dt`` over vertical strips between the polygon's
  vertices (vertices by pairwise intersection of its lines, ``dps`` digits; the lower and upper
  boundaries ``lo``/``hi`` as the max/min of the lines), each strip by mpmath's tanh-sinh rule
  split at the polygon's closest point to the origin, ``Φ`` differences through ``erfc`` on the
  side where they do not cancel. Unbounded polygons are cut at ``|u_i| <= δ + 40`` around
  the origin, ``δ`` the polygon's distance to it (the mass beyond is below ``e^{-800}`` of the
  region's own).

``x`` may hold NaNs (an output's row is dropped). Checked against closed forms: a rotated box's
mass (a product of 1-D ``erfc`` differences) and a linear decoder's ``N(x; b, σ²I + AAᵀ)``
(``tests/model/test_missing.py``).
"""

from __future__ import annotations

import itertools

import mpmath as mp
import numpy as np

from .enumerate import enumerate_regions, pattern_output_map

__all__ = ["log_mass_polygon_mp", "log_px_2d_mp"]


def _inside(g, c, u0, u1, tol):
    """``g . u + c >= 0`` up to the rounding of its terms (vertices on the 1e12 helper box have
    terms ~1e12: a tolerance on ``|c|`` alone rejected them and dropped whole regions)."""
    a, b = g[0] * u0, g[1] * u1
    return a + b + c >= -tol * (1 + abs(c) + abs(a) + abs(b))


def _vertices(G, h, tol):
    """Vertices of ``{u : G u + h >= 0}`` (lists of mpf) by pairwise intersection."""
    out = []
    for i, j in itertools.combinations(range(len(G)), 2):
        det = G[i][0] * G[j][1] - G[i][1] * G[j][0]
        if abs(det) <= tol:
            continue
        u0 = (-h[i] * G[j][1] + h[j] * G[i][1]) / det
        u1 = (-G[i][0] * h[j] + G[j][0] * h[i]) / det
        if all(_inside(g, c, u0, u1, tol) for g, c in zip(G, h, strict=True)):
            out.append((u0, u1))
    return out


def _closest(verts, G, h, tol):
    """The point of the (bounded) polygon closest to the origin: the origin itself, a vertex or
    an edge's foot."""
    if all(c >= 0 for c in h):
        return (mp.mpf(0), mp.mpf(0))
    best = min(verts, key=lambda v: v[0] ** 2 + v[1] ** 2)
    for g, c in zip(G, h, strict=True):
        n2 = g[0] ** 2 + g[1] ** 2
        p = (-c * g[0] / n2, -c * g[1] / n2)  # foot of the line g.u + c = 0
        if all(_inside(gg, cc, p[0], p[1], tol) for gg, cc in zip(G, h, strict=True)):
            if p[0] ** 2 + p[1] ** 2 < best[0] ** 2 + best[1] ** 2:
                best = p
    return best


def log_mass_polygon_mp(G, h, *, dps: int = 40):
    """``(log P(G u + h >= 0), its relative error)`` for ``u ~ N(0, I_2)`` (the error: mpmath's
    estimates of its quadratures, summed); ``None`` for an empty or flat polygon.

    Parameters
    ----------
    G : (m, 2) array_like, h : (m,) array_like
        Half-planes ``G u + h >= 0`` (any scale; mpf entries kept as they are).
    """
    with mp.workdps(dps):
        tol = mp.mpf(10) ** (-(dps - 8))
        G = [[mp.mpf(v) for v in row] for row in G]
        h = [mp.mpf(v) for v in h]
        big = mp.mpf(10) ** 12
        box_G = [[1, 0], [-1, 0], [0, 1], [0, -1]]
        verts = _vertices(G + box_G, h + [big] * 4, tol)
        if len(verts) < 3:
            return None
        p = _closest(verts, G + box_G, h + [big] * 4, tol)
        delta = mp.sqrt(p[0] ** 2 + p[1] ** 2)
        if delta > 0:  # strips perpendicular to the closest point's direction: u = Q v
            cs, sn = p[0] / delta, p[1] / delta
            G = [[g[0] * cs + g[1] * sn, -g[0] * sn + g[1] * cs] for g in G]
            p = (delta, mp.mpf(0))
        box = delta + 40
        Gb, hb = G + box_G, h + [box] * 4
        verts = _vertices(Gb, hb, tol)
        if len(verts) < 3:
            return None
        xs = sorted({v[0] for v in verts} | {p[0]})
        xs = [t for t in xs if min(v[0] for v in verts) <= t <= max(v[0] for v in verts)]
        knots = [xs[0]]
        for t in xs[1:]:
            if t - knots[-1] > tol:
                knots.append(t)
        if len(knots) < 2:
            return None
        lower = [(g, c) for g, c in zip(Gb, hb, strict=True) if g[1] > tol]
        upper = [(g, c) for g, c in zip(Gb, hb, strict=True) if g[1] < -tol]
        r2 = mp.sqrt(2)

        # the integrand times e^{delta^2 / 2}, at most ~1: mpmath's error estimates have an
        # absolute floor (~10^-dps), which a polygon 11 sd out (mass 1e-27) was all below
        lift = delta**2 / 2

        def strip(t):
            lo = max(-(c + g[0] * t) / g[1] for g, c in lower)
            hi = min(-(c + g[0] * t) / g[1] for g, c in upper)
            if hi <= lo:
                return mp.mpf(0)
            if lo > 0:
                dphi = (mp.erfc(lo / r2) - mp.erfc(hi / r2)) / 2
            else:
                dphi = (mp.erfc(-hi / r2) - mp.erfc(-lo / r2)) / 2
            return mp.exp(lift - t * t / 2) / mp.sqrt(2 * mp.pi) * dphi

        # the integrand's scale near the closest point is 1 / max(delta, 1): extra knots there
        w = 1 / max(delta, mp.mpf(1))
        near = [p[0] + k * w for k in (-8, -1, 0, 1, 2, 4, 8, 16, 32, 64)]
        # mpmath's own error estimates are read (a strip 20 sd out in one call was 5e-4 off
        # with a reported error of 2%): a piece is bisected until its estimate is below 1e-16
        # of the whole (sized by a first pass), and what is left is returned
        pieces = []
        for a, c in itertools.pairwise(knots):
            pts = [a, *(t for t in near if a < t < c), c]
            pieces += [
                (u, v, *mp.quad(strip, [u, v], error=True)) for u, v in itertools.pairwise(pts)
            ]
        atol = mp.mpf(10) ** -16 * mp.fsum(abs(q[2]) for q in pieces)
        total, error = mp.mpf(0), mp.mpf(0)
        for _ in range(60):
            todo = []
            for u, v, val, err in pieces:
                if err <= atol or v - u <= tol * (1 + abs(u)):
                    total, error = total + val, error + err
                else:
                    m = (u + v) / 2
                    todo += [(u, m, *mp.quad(strip, [u, m], error=True))]
                    todo += [(m, v, *mp.quad(strip, [m, v], error=True))]
            pieces = todo
            if not pieces:
                break
        total += mp.fsum(q[2] for q in pieces)
        error += mp.fsum(q[3] for q in pieces)
        return (mp.log(total) - lift, error / total) if total > 0 else None


def log_px_2d_mp(decoder, x, sigma, *, dps: int = 30, oracle=None) -> float:
    """``log p(x_obs)`` of a d = 2 decoder under diagonal noise ``sigma`` (NaN = missing).

    Parameters
    ----------
    decoder : exactdgn.Decoder with ``latent_dim == 2`` (raw parameters only are read)
    x : (D,) array, NaN where missing
    sigma : float or (D,) array
    oracle : the result of ``enumerate_regions(decoder)``, to reuse across points
    """
    x = np.asarray(x, dtype=np.float64)
    o = ~np.isnan(x)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)[o]
    if oracle is None:
        oracle = enumerate_regions(decoder)
    terms = []
    with mp.workdps(dps):
        xo = [mp.mpf(v) for v in x[o]]
        s = [mp.mpf(v) for v in sig]
        n_obs = len(xo)
        const = -mp.log(2 * mp.pi) - sum(mp.log(v) for v in s) - n_obs * mp.log(2 * mp.pi) / 2
        peaks = []  # (log of the region's whole Gaussian, its polygon in u), largest first
        for reg in oracle.regions:
            A, b = pattern_output_map(decoder, reg.pattern)
            A, b = A[o], b[o]
            Am = mp.matrix([[mp.mpf(A[i, j]) / s[i] for j in range(2)] for i in range(n_obs)])
            r = mp.matrix([(xo[i] - mp.mpf(b[i])) / s[i] for i in range(n_obs)])
            H = mp.eye(2) + Am.T * Am
            mu = mp.lu_solve(H, Am.T * r)
            res = r - Am * mu
            log_f = const - (mu.T * mu)[0] / 2 - (res.T * res)[0] / 2
            log_norm = log_f + mp.log(2 * mp.pi) - mp.log(mp.det(H)) / 2
            if len(reg.normals) == 0:  # the whole plane
                peaks.append((log_norm, None))
                continue
            # facets n.z <= c  ->  -n.z + c >= 0, in u = R^T (z - mu), H = R R^T
            RinvT = mp.inverse(mp.cholesky(H).T)
            N = mp.matrix((-np.asarray(reg.normals)).tolist())
            Gu = N * RinvT
            hu = mp.matrix(np.asarray(reg.offsets).tolist()) + N * mu
            poly = ([[Gu[i, 0], Gu[i, 1]] for i in range(Gu.rows)], [hu[i] for i in range(hu.rows)])
            peaks.append((log_norm, poly))
        peaks.sort(key=lambda t: t[0], reverse=True)
        terms = []
        for log_norm, poly in peaks:
            # a polygon's mass is at most 1: a region whose whole Gaussian is e^-60 below the
            # largest term so far cannot move the sum by more than ~1e-26 relative
            if terms and log_norm < max(t for t, _ in terms) - 60:
                break
            got = (mp.mpf(0), mp.mpf(0)) if poly is None else log_mass_polygon_mp(*poly, dps=dps)
            if got is not None:
                terms.append((log_norm + got[0], got[1]))
        top = max(t for t, _ in terms)
        total = mp.fsum(mp.exp(t - top) for t, _ in terms)
        error = mp.fsum(mp.exp(t - top) * e for t, e in terms)
        if error > mp.mpf(10) ** -13 * total:  # a reference must be sure of its digits
            raise ArithmeticError(f"the strip integrals are only good to {error / total} here")
        return float(top + mp.log(total))
