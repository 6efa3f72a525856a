"""Independent reference for the mass and the first two moments of ``N(0, I_3)`` on a polyhedron,
also far in the tail (``10^4`` standard deviations out).

Shares no code and no formula with :mod:`exactdgn.gaussian` (no facet recursion, no edge
formula, no Owen's T, no divergence theorem, no polygon or interval kernels).  It does use the
same kind of local frame as :mod:`exactdgn.gaussian._polytope_tail` (slices perpendicular to the
closest-point direction ``n*``), which is why the tests also check both against closed forms
(rotated far boxes: products of 1-D mpmath intervals):

* the closest point ``p`` of ``P = {u : n_i . u <= c_i}`` to the mean is found by enumerating
  the active sets of one, two and three rows (least-norm point of their planes' intersection,
  kept if feasible) and recomputed in mpmath from the float inputs (``D = |p|``), together with
  the offsets ``dd_i = c_i - n_i . p >= 0`` of the rows as seen from ``p``, so that the rows
  touching ``p`` are at ``0`` up to the working precision and not up to ``eps |c|``;
* in the local frame ``u = p + (rho / D') n* + s1 t1 + s2 t2`` (``n* = p / D``, ``D' =
  max(D, 1)``; for a mean inside, ``p = 0``, ``n* = e1`` and ``rho`` runs over ``R``) the
  density is ``phi(D) e^{-rho D / D' - rho^2 / (2 D'^2)} phi(s1) phi(s2) / D'`` exactly, so the
  radial scale ``1 / D`` becomes ``rho = O(1)`` and nothing of size ``D^2`` is ever formed;
* the ``s2``-integral of ``{1, s2, s2^2}`` over the slice's interval is closed form
  (``ndtr``/``phi``, upper tails by ``ndtr(-x)``); the ``s1``-integral is an adaptive bisection
  of 24-point Gauss-Legendre panels checked against 16 points, split at the slice's vertices;
  the ``rho``-integral is adaptive Gauss-Kronrod (:func:`scipy.integrate.quad_vec`,
  vector-valued, all ten moment integrands together) split at the polyhedron's vertices;
* moments are formed about ``p`` in the local frame (``Var rho = E rho^2 - (E rho)^2`` loses at
  most a factor ~2, ``E rho ~ 1``) and rotated back.

Returns the local-frame covariance too, so a test can check the radial variance ``~ 1 / D^2``
at its own relative accuracy (the global matrix mixes it with ``O(1)`` entries).
Checked against closed forms (rotated far boxes, products of 1-D mpmath intervals) to ~1e-8
posterior sd at ``D = 1e4`` (``tests/gaussian/test_far_polytope_moments.py``).
Cost: ~1-5 s per polyhedron.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from scipy import integrate, special

__all__ = ["PolytopeRef", "polytope_ref"]

_SQ2PI = math.sqrt(2.0 * math.pi)
_TAIL = 60.0  # the radial integrand is cut where rho + rho^2 / (2 D'^2) = _TAIL (e^-60)
_SMAX = 40.0  # the in-slice integrals run over [-_SMAX, _SMAX]
# rounding noise of the closed-form slice integrands (``1 - ndtr(lo) - ndtr(-hi)`` is good to
# ~1e-16 absolute): no slice is resolved below it (a sliver of a slice, ~1e-16 wide, is noise)
_NOISE = 2e-16


@dataclass
class PolytopeRef:
    log_mass: float
    mean: np.ndarray  # (3,)
    cov: np.ndarray  # (3, 3)
    frame: np.ndarray  # (3, 3) columns n*, t1, t2
    local_cov: np.ndarray  # (3, 3) covariance of (r, s1, s2), r = rho / D' (unscaled)
    point: np.ndarray  # p (3,)
    dist: float  # D
    dist_sq: object  # D^2 (mpmath, exact for the float input to 40 digits)
    log_mass_local: float  # log mass + D^2 / 2 (O(log D): the part that is not D^2 / 2)


def _closest_point(n, c):
    """Least-norm feasible point by active-set enumeration (float; refined in mpmath)."""
    F = len(c)
    if np.all(c >= 0):
        return []
    best, best_set = math.inf, None
    for k in (1, 2, 3):
        for S in itertools.combinations(range(F), k):
            A = n[list(S)]
            if k > 1 and np.linalg.matrix_rank(A, tol=1e-12) < k:
                continue
            q = A.T @ np.linalg.solve(A @ A.T, c[list(S)])
            if np.all(n @ q <= c + 1e-9 * (1.0 + np.abs(c) + np.linalg.norm(q))):
                v = float(q @ q)
                if v < best * (1 - 1e-12):
                    best, best_set = v, S
    if best_set is None:
        raise ValueError("empty polyhedron")
    return list(best_set)


def _merge(xs, tol=1e-9):
    """Sorted breakpoints with near-duplicates merged (an interval of width ~eps between two
    roundings of one vertex makes the adaptive rule subdivide without end)."""
    out = []
    for x in sorted(xs):
        if not out or x - out[-1] > tol * (1.0 + abs(x)):
            out.append(x)
    return out


_GX, _GW = np.polynomial.legendre.leggauss(8)
# the in-slice adaptive rule: 24-point Gauss-Legendre, checked against 16 points
_RA = np.polynomial.legendre.leggauss(24)
_RB = np.polynomial.legendre.leggauss(16)


def _imoments(lo, hi):
    """``int_lo^hi phi(s) {1, s, s^2} ds`` (arrays; tail-safe; intervals thinner than 0.05 by an
    8-point Gauss rule on the interval itself, where the closed forms cancel)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
    ok = hi > lo
    with np.errstate(invalid="ignore", over="ignore"):
        m0 = np.where(
            lo > 0,
            special.ndtr(-lo) - special.ndtr(-hi),
            np.where(
                hi < 0,
                special.ndtr(hi) - special.ndtr(lo),
                1.0 - special.ndtr(lo) - special.ndtr(-hi),
            ),
        )
        fl, fh = np.isfinite(lo), np.isfinite(hi)
        plo = np.where(fl, np.exp(-0.5 * np.where(fl, lo, 0.0) ** 2) / _SQ2PI, 0.0)
        phi_ = np.where(fh, np.exp(-0.5 * np.where(fh, hi, 0.0) ** 2) / _SQ2PI, 0.0)
        m1 = plo - phi_
        m2 = m0 + np.where(fl, lo * plo, 0.0) - np.where(fh, hi * phi_, 0.0)
        thin = ok & (hi - lo < 0.05)
        if thin.any():
            h = 0.5 * (hi[thin] - lo[thin])[:, None]
            x = 0.5 * (hi[thin] + lo[thin])[:, None] + h * _GX
            w = h * _GW * np.exp(-0.5 * x * x) / _SQ2PI
            m0[thin], m1[thin], m2[thin] = w.sum(1), (w * x).sum(1), (w * x * x).sum(1)
    z = np.zeros_like(m0)
    return np.where(ok, m0, z), np.where(ok, m1, z), np.where(ok, m2, z)


def _slice_integrals(r, b1, b2, pts, rel, tol):
    """``int phi(s1) {1, s1, s1^2} x int_{slice} phi(s2) {1, s2, s2^2}`` over the slice
    ``{b1 s1 + b2 s2 <= r}`` (six values: 1, s1, s1^2, s2, s1 s2, s2^2), by adaptive bisection
    of Gauss-Legendre panels between the slice's vertices; ``tol`` absolute, ``rel`` relative."""
    up, dn = b2 > 1e-14, b2 < -1e-14
    fl = ~up & ~dn & (np.abs(b1) >= 1e-14)

    def f(x):  # x (M, K) -> (M, K, 6)
        rr = r[None, None, :] - b1[None, None, :] * x[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            hi = np.min(np.where(up, rr / np.where(up, b2, 1.0), np.inf), axis=-1)
            lo = np.max(np.where(dn, rr / np.where(dn, b2, 1.0), -np.inf), axis=-1)
        bad = np.any(fl & (rr < 0), axis=-1)
        m0, m1, m2 = _imoments(np.where(bad, 0.0, lo), np.where(bad, 0.0, hi))
        w = np.exp(-0.5 * x * x) / _SQ2PI
        return np.stack([w * m0, w * x * m0, w * x * x * m0, w * m1, w * x * m1, w * m2], -1)

    cuts = sorted(set([-_SMAX, _SMAX, *pts, *(s * t for s in (-1, 1) for t in (1, 2, 4, 8, 16))]))
    cuts = _merge([x for x in cuts if -_SMAX <= x <= _SMAX])
    lo = np.array(cuts[:-1])
    hi = np.array(cuts[1:])
    total = np.zeros(6)
    span = _SMAX * 2.0
    scale = None
    done_err = 0.0
    for _ in range(60):
        L = (hi - lo)[:, None]
        xa = 0.5 * (lo + hi)[:, None] + 0.5 * L * _RA[0]
        xb = 0.5 * (lo + hi)[:, None] + 0.5 * L * _RB[0]
        fa = f(xa)
        qa = 0.5 * L * np.einsum("mkj,k->mj", fa, _RA[1])
        qb = 0.5 * L * np.einsum("mkj,k->mj", f(xb), _RB[1])
        # the panel's rounding floor: 1e-13 of the integral of |f| over it (halving a panel
        # does not shrink the noise of its integrand)
        floor = 1e-13 * (0.5 * L * np.einsum("mkj,k->mj", np.abs(fa), _RA[1])).max(axis=1)
        if scale is None:
            scale = np.abs(qa.sum(0)).max()
        err = np.abs(qa - qb).max(axis=1)
        target = max(rel * scale, tol)
        if done_err + err.sum() <= target:  # the whole integral is within its tolerance
            return total + qa.sum(0), True
        ok = err <= np.maximum(target * (L[:, 0] / span), floor)
        total += qa[ok].sum(0)
        done_err += err[ok].sum()
        if ok.all():
            return total, True
        if lo.size > 20_000:
            break
        mid = 0.5 * (lo[~ok] + hi[~ok])
        lo, hi = np.concatenate([lo[~ok], mid]), np.concatenate([mid, hi[~ok]])
    return total + qa[~ok].sum(0), False


def polytope_ref(normals, offsets, *, epsrel: float = 1e-12) -> PolytopeRef:
    """Log mass, mean and covariance of ``N(0, I_3)`` on ``{u : normals @ u <= offsets}``."""
    n = np.asarray(normals, dtype=float)
    keep = np.array(
        [mp.isfinite(x) if isinstance(x, mp.mpf) else math.isfinite(x) for x in offsets]
    )
    n = n[keep]
    c = [x for x, k in zip(offsets, keep, strict=True) if k]
    with mp.workdps(40):
        N = [[mp.mpf(float(x)) for x in row] for row in n]
        nrm = [mp.sqrt(sum(x * x for x in row)) for row in N]
        N = [[x / s for x in row] for row, s in zip(N, nrm, strict=True)]
        C = [
            (x if isinstance(x, mp.mpf) else mp.mpf(float(x))) / s
            for x, s in zip(c, nrm, strict=True)
        ]
        S = _closest_point(
            np.array([[float(x) for x in r] for r in N]), np.array([float(x) for x in C])
        )
        if S:
            A = mp.matrix([N[i] for i in S])
            y = mp.lu_solve(A * A.T, mp.matrix([C[i] for i in S]))
            P = A.T * y
            D = mp.sqrt(sum(P[i] ** 2 for i in range(3)))
            nstar = [P[i] / D for i in range(3)]
        else:
            P = mp.matrix([0, 0, 0])
            D = mp.mpf(0)
            nstar = [mp.mpf(1), mp.mpf(0), mp.mpf(0)]
        # orthonormal complement (Gram-Schmidt in mpmath)
        basis = [nstar]
        for e in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):
            v = [mp.mpf(x) for x in e]
            for b in basis:
                dot = sum(x * z for x, z in zip(v, b, strict=True))
                v = [x - dot * z for x, z in zip(v, b, strict=True)]
            s = mp.sqrt(sum(x * x for x in v))
            if s > mp.mpf("0.1"):
                basis.append([x / s for x in v])
            if len(basis) == 3:
                break
        R = np.array([[float(b[i]) for b in basis] for i in range(3)])  # columns
        a = np.array([float(sum(x * z for x, z in zip(row, basis[0], strict=True))) for row in N])
        b1 = np.array([float(sum(x * z for x, z in zip(row, basis[1], strict=True))) for row in N])
        b2 = np.array([float(sum(x * z for x, z in zip(row, basis[2], strict=True))) for row in N])
        dd = np.array(
            [
                float(Ci - sum(x * P[i] for i, x in enumerate(row)))
                for row, Ci in zip(N, C, strict=True)
            ]
        )
        Df = float(D)
        d2 = D * D
        pf = np.array([float(P[i]) for i in range(3)])
    inside = not S
    Ds = max(Df, 1.0)
    dd = np.where(np.abs(dd) < 1e-30, 0.0, dd)
    # rows in (rho, s1, s2): (a / Ds) rho + b1 s1 + b2 s2 <= dd
    ar = a / Ds
    if inside:
        rlo, rhi = -_SMAX, _SMAX
    else:
        rlo = 0.0
        # rho + rho^2 / (2 Ds^2) = _TAIL
        rhi = _TAIL / (0.5 + math.sqrt(0.25 + _TAIL / (2.0 * Ds * Ds)))
    Lrows = np.stack([ar, b1, b2], axis=1)
    vr = []
    for i, j, k in itertools.combinations(range(len(dd)), 3):
        M = Lrows[[i, j, k]]
        if abs(np.linalg.det(M)) < 1e-13:
            continue
        v = np.linalg.solve(M, dd[[i, j, k]])
        if np.all(Lrows @ v <= dd + 1e-9 * (1 + np.abs(dd))) and rlo < v[0] < rhi:
            vr.append(v[0])
    rpts = _merge(vr)

    def radial(rho):
        return -rho * Df / Ds - 0.5 * rho * rho / (Ds * Ds) if not inside else -0.5 * rho * rho

    def slice_moments(rho, rel, tol):
        r = dd - ar * rho  # b1 s1 + b2 s2 <= r
        if np.any((np.abs(b1) < 1e-14) & (np.abs(b2) < 1e-14) & (r < 0)):
            return np.zeros(6)
        # vertices of the slice polygon (s1 values)
        pts = []
        for i, j in itertools.combinations(range(len(r)), 2):
            det = b1[i] * b2[j] - b1[j] * b2[i]
            if abs(det) < 1e-14:
                continue
            s1 = (r[i] * b2[j] - r[j] * b2[i]) / det
            s2 = (b1[i] * r[j] - b1[j] * r[i]) / det
            if np.all(b1 * s1 + b2 * s2 <= r + 1e-10 * (1 + np.abs(r))) and -_SMAX < s1 < _SMAX:
                pts.append(s1)
        val, conv = _slice_integrals(r, b1, b2, pts, rel, tol)
        if not conv:
            status[0] = math.inf
        return val

    def integrals(rel, tol):
        """The ten moment integrals (to ``rel``, or ``tol`` absolute: the integrand's rounding
        noise, ~1e-17 of a slice's mass in its tails, must not be chased)."""
        width = rhi - rlo

        def g(rho):
            e = math.exp(radial(rho))
            # a slice enters with weight e: its own absolute tolerance is tol / (e * width)
            sm = slice_moments(rho, rel, max(0.1 * tol / (max(e, 1e-300) * width), _NOISE))
            return e * np.array(
                [
                    sm[0],
                    rho * sm[0],
                    rho * rho * sm[0],
                    sm[1],
                    sm[3],
                    sm[2],
                    sm[5],
                    sm[4],
                    rho * sm[1],
                    rho * sm[3],
                ]
            )

        val, err = integrate.quad_vec(
            g,
            rlo,
            rhi,
            epsabs=tol,
            epsrel=rel,
            norm="max",
            points=[x for x in rpts if rlo < x < rhi] or None,
            limit=2000,
        )
        status[0] = max(status[0], err / max(tol, rel * np.abs(val).max(), 1e-300))
        return val

    status = [0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        rough = integrals(1e-6, 1e-13)
        status[0] = 0.0
        I = integrals(epsrel, epsrel * abs(rough[0]))
    if status[0] > 1.0:
        raise RuntimeError(f"the reference quadrature did not converge (error / tol {status[0]})")
    I0 = I[0]
    local = math.log(I0 / Ds) - 0.5 * math.log(2 * math.pi)  # log mass + D^2 / 2
    log_mass = float(local - d2 / 2)
    Er, Es1, Es2 = I[1] / I0, I[3] / I0, I[4] / I0
    Vr = I[2] / I0 - Er * Er
    V11 = I[5] / I0 - Es1 * Es1
    V22 = I[6] / I0 - Es2 * Es2
    V12 = I[7] / I0 - Es1 * Es2
    Cr1 = I[8] / I0 - Er * Es1
    Cr2 = I[9] / I0 - Er * Es2
    Cl = np.array([[Vr, Cr1, Cr2], [Cr1, V11, V12], [Cr2, V12, V22]])
    Sc = np.diag([1.0 / Ds, 1.0, 1.0])
    Cl = Sc @ Cl @ Sc
    mean = pf + R @ np.array([Er / Ds, Es1, Es2])
    cov = R @ Cl @ R.T
    return PolytopeRef(log_mass, mean, 0.5 * (cov + cov.T), R, Cl, pf, Df, d2, local)


def _closest_dist2(G, h):
    """Squared distance of ``{u : G u <= h}`` (float) from the origin (active-set enumeration)."""
    G = np.asarray(G, float)
    h = np.asarray(h, float)
    nrm = np.linalg.norm(G, axis=1)
    G, h = G / nrm[:, None], h / nrm
    S = _closest_point(G, h)
    if not S:
        return 0.0
    A = G[S]
    q = A.T @ np.linalg.solve(A @ A.T, h[S])
    return float(q @ q)


def posterior_moments_3d(decoder, x, sigma, *, nats: float = 40.0, epsrel: float = 1e-12):
    """Exact ``E[z | x]`` and ``Cov[z | x]`` of ``x = g(z) + N(0, diag(sigma^2))``,
    ``z ~ N(0, I_3)``, independently of :mod:`exactdgn` (regions by the LP oracle of
    :mod:`tests.oracles.enumerate`, their affine maps from the raw weights).

    Per region (``g(z) = A z + b`` on ``{G z <= h}``), in mpmath at 40 digits from the float
    inputs: the Gaussian ``N(mu, S)`` of ``z`` given ``x`` within the region
    (``S^-1 = I + A^T diag(sigma^-2) A``), ``log kappa = log N(x; b, diag(sigma^2) + A A^T)``
    and the whitened polyhedron ``{u : (G L) u <= h - G mu}`` (``S = L L^T``); its mass and moments
    from :func:`polytope_ref`. Regions whose bound ``log kappa - D^2 / 2`` (``D`` the whitened
    distance: the mass is at most ``Q(D)``) lies ``nats`` below the best region's weight are
    left out. The weights ``log kappa - D^2 / 2 + (log mass + D^2 / 2)`` are summed in mpmath
    (both halves are ~1e8 for 1e4-sigma outliers).

    Returns ``mean (3,)``, ``cov (3, 3)``, and the list of (region pattern, weight, mean, cov).
    """
    from .enumerate import enumerate_regions, pattern_output_map

    orc = enumerate_regions(decoder)
    sig = np.broadcast_to(np.asarray(sigma, float), np.shape(x))
    cand = []
    with mp.workdps(40):
        xm = mp.matrix([mp.mpf(float(v)) for v in x])
        s2 = [mp.mpf(float(v)) ** 2 for v in sig]
        for reg in orc.regions:
            A, b = pattern_output_map(decoder, reg.pattern)
            G, h = reg.normals, reg.offsets
            D_out, d = A.shape
            Am = mp.matrix(A.tolist())
            bm = mp.matrix([mp.mpf(float(v)) for v in b])
            Sinv = mp.eye(d) + Am.T * mp.diag([1 / v for v in s2]) * Am
            S = mp.inverse(Sinv)
            r = xm - bm
            mu = S * (Am.T * mp.matrix([r[i] / s2[i] for i in range(D_out)]))
            K = mp.diag(s2) + Am * Am.T
            quad = (r.T * mp.lu_solve(K, r))[0]
            logk = -quad / 2 - mp.log(mp.det(K)) / 2 - D_out * mp.log(2 * mp.pi) / 2
            L = mp.cholesky(S)
            Gm = mp.matrix(G.tolist())
            GL = Gm * L
            off = [
                mp.mpf(float(h[i])) - sum(Gm[i, j] * mu[j] for j in range(d)) for i in range(len(h))
            ]
            nrm = np.array([[float(GL[i, j]) for j in range(d)] for i in range(len(h))])
            D2 = _closest_dist2(nrm, np.array([float(v) for v in off]))
            cand.append((float(logk - D2 / 2), reg, logk, nrm, off, mu, L))
        cand.sort(key=lambda t: -t[0])
        best = -mp.inf
        terms = []
        for bound, reg, logk, nrm, off, mu, L in cand:
            if bound < float(best) - nats:
                break
            ref = polytope_ref(nrm, off, epsrel=epsrel)
            lw = logk - ref.dist_sq / 2 + ref.log_mass_local
            best = max(best, lw)
            Lf = np.array(L.tolist(), dtype=float)
            muf = np.array([float(v) for v in mu])
            terms.append((reg.pattern, lw, muf + Lf @ ref.mean, Lf @ ref.cov @ Lf.T))
        lws = [t[1] for t in terms]
        top = max(lws)
        w = np.array([float(mp.exp(v - top)) for v in lws])
    w /= w.sum()
    means = np.array([t[2] for t in terms])
    mean = w @ means
    cov = sum(
        wi * (t[3] + np.outer(t[2] - mean, t[2] - mean)) for wi, t in zip(w, terms, strict=True)
    )
    out = [(t[0], wi, t[2], t[3]) for wi, t in zip(w, terms, strict=True)]
    return mean, 0.5 * (cov + cov.T), out
