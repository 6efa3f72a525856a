"""d = 2: polygon masses and moments against independent references.

References (none uses Owen's T, the edge formula, Gauss-Legendre/Laguerre or the divergence
theorem):

* ``mp_polygon``: slicing at ``x = const`` -- the inner integral over ``y`` is the closed form
  ``Phi(yhi(x)) - Phi(ylo(x))`` in mpmath, the outer one mpmath tanh-sinh quadrature split at
  every line intersection, with the integrand scaled by its maximum (mpmath has an unbounded
  exponent range, so far-tail polygons are fine).
* ``sp_polygon``: the same slicing with scipy's adaptive quad in double precision (fast; used
  only near the mean where the mass is not small).
* exact anchors: half-plane = Phi(c), wedge at the mean = angle / 2 pi, orthant at the mean =
  1/4 + asin(rho) / 2 pi, strips = Phi(w) - Phi(-w), arrangement cells sum to 1.
"""

from __future__ import annotations

import functools
import itertools
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from exactdgn.gaussian import (
    gaussian_polyhedron_moments,
    log_mass,
    log_mass_2d_shifted,
    log_mass_2d_transformed,
    polygon_table,
    truncated_moments,
    truncated_moments_2d_shifted,
    truncated_moments_2d_transformed,
    whiten,
)

EPS = np.finfo(float).eps


# ------------------------------------------------------------------------------------------
# helpers and references
# ------------------------------------------------------------------------------------------
def from_vertices(V):
    """Outward unit normals and offsets of the convex polygon with CCW vertices V."""
    V = np.asarray(V, dtype=float)
    d = np.roll(V, -1, axis=0) - V
    n = np.stack([d[:, 1], -d[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return n, np.einsum("fk,fk->f", n, V)


def rot(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def rand_polygon(rng, center, size, k=6):
    """A random convex polygon: k points on a circle, sheared/stretched (orientation kept)."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    M = np.eye(2) + 0.4 * rng.uniform(-1, 1, (2, 2))
    if np.linalg.det(M) < 0:
        M[:, 0] *= -1
    pts = size * np.c_[np.cos(ang), np.sin(ang)] @ M.T
    return from_vertices(np.asarray(center) + pts)


def _rows_mp(normals, offsets):
    return [
        (mp.mpf(float(a)), mp.mpf(float(b)), mp.mpf(float(c)))
        for (a, b), c in zip(normals, offsets, strict=True)
        if np.isfinite(c)
    ]


def _slices(rows):
    """x-range, breakpoints, and the y-interval function of the polygon (mpmath)."""
    xlo, xhi = mp.ninf, mp.inf
    for a, b, c in rows:
        if b == 0:
            if a > 0:
                xhi = min(xhi, c / a)
            elif a < 0:
                xlo = max(xlo, c / a)
    bps = {xlo, xhi}
    for (a1, b1, c1), (a2, b2, c2) in itertools.combinations(rows, 2):
        det = a1 * b2 - a2 * b1
        if det != 0:
            x = (c1 * b2 - c2 * b1) / det
            if xlo < x < xhi:
                bps.add(x)

    def yr(x):
        lo, hi = mp.ninf, mp.inf
        for a, b, c in rows:
            if b > 0:
                hi = min(hi, (c - a * x) / b)
            elif b < 0:
                lo = max(lo, (c - a * x) / b)
        return lo, hi

    return xlo, xhi, sorted(bps), yr


def _mass1(lo, hi):
    if lo >= hi:
        return mp.mpf(0)
    if lo > 0:
        return mp.ncdf(-lo) - mp.ncdf(-hi)
    return mp.ncdf(hi) - mp.ncdf(lo)


def mp_polygon(normals, offsets, moments=False, dps=30):
    """Reference log mass (and mean, cov) of N(0, I_2) on {n . u <= c} by slicing."""
    with mp.workdps(dps):
        rows = _rows_mp(normals, offsets)
        xlo, xhi, bps, yr = _slices(rows)
        if xlo >= xhi:
            return -math.inf, None, None

        def logf(x):
            m = _mass1(*yr(x))
            return -x * x / 2 + mp.log(m) if m > 0 else mp.ninf

        panels = []
        for a, b in itertools.pairwise(bps):
            if a == mp.ninf and b == mp.inf:
                sub = [a, -4, -1, 0, 1, 4, b]
            elif a == mp.ninf:
                sub = [a, b - 4, b - 1, b - mp.mpf(1) / 16, b]
            elif b == mp.inf:
                sub = [a, a + mp.mpf(1) / 16, a + 1, a + 4, b]
            else:
                sub = [a + (b - a) * k / 8 for k in range(9)]
            panels.append(sub)
        samples = [logf(p) for sub in panels for p in sub if p not in (mp.ninf, mp.inf)]
        samples += [
            logf((s0 + s1) / 2)
            for sub in panels
            for s0, s1 in itertools.pairwise(sub)
            if mp.isfinite(s0) and mp.isfinite(s1)
        ]
        K = max(samples)
        if K == mp.ninf:
            return -math.inf, None, None

        def quad(fun):
            return mp.fsum(mp.quad(fun, sub) for sub in panels)

        def w(x):
            lo, hi = yr(x)
            return mp.exp(-x * x / 2 - K) * _mass1(lo, hi)

        Z = quad(w)
        logm = K + mp.log(Z) - mp.log(2 * mp.pi) / 2
        if not moments:
            return float(logm), None, None

        def ymom(x):
            lo, hi = yr(x)
            if lo >= hi:
                return mp.mpf(0), mp.mpf(0), mp.mpf(0)
            e = mp.exp(-x * x / 2 - K)
            pl = mp.npdf(lo) if mp.isfinite(lo) else mp.mpf(0)
            ph = mp.npdf(hi) if mp.isfinite(hi) else mp.mpf(0)
            m0 = _mass1(lo, hi)
            m2 = m0 + (lo * pl if mp.isfinite(lo) else 0) - (hi * ph if mp.isfinite(hi) else 0)
            return e * m0, e * (pl - ph), e * m2

        Ex = quad(lambda x: x * ymom(x)[0]) / Z
        Ey = quad(lambda x: ymom(x)[1]) / Z
        Vx = quad(lambda x: (x - Ex) ** 2 * ymom(x)[0]) / Z
        Cxy = quad(lambda x: (x - Ex) * (ymom(x)[1] - Ey * ymom(x)[0])) / Z
        Vy = quad(lambda x: ymom(x)[2] - 2 * Ey * ymom(x)[1] + Ey**2 * ymom(x)[0]) / Z
        mean = np.array([float(Ex), float(Ey)])
        cov = np.array([[float(Vx), float(Cxy)], [float(Cxy), float(Vy)]])
        return float(logm), mean, cov


def sp_polygon(normals, offsets):
    """Mass by scipy nested slicing (double precision; only for masses that are not small)."""
    with mp.workdps(20):
        _, _, bps, _ = _slices(_rows_mp(normals, offsets))
    bps = [float(b) for b in bps]

    def yr(x):
        lo, hi = -np.inf, np.inf
        for (a, b), c in zip(normals, offsets, strict=True):
            if b > 0:
                hi = min(hi, (c - a * x) / b)
            elif b < 0:
                lo = max(lo, (c - a * x) / b)
        return lo, hi

    def f(x):
        lo, hi = yr(x)
        if lo >= hi:
            return 0.0
        return stats.norm.pdf(x) * (special.ndtr(hi) - special.ndtr(lo))

    tot = 0.0
    for a, b in itertools.pairwise(bps):
        val, _ = integrate.quad(f, a, b, epsabs=0.0, epsrel=2e-14, limit=200)
        tot += val
    return tot


def one(n, c):
    """Add the pair axis."""
    return np.asarray(n, float)[None], np.asarray(c, float)[None]


def check_logmass(n, c, ref, tol):
    tm = truncated_moments(*one(n, c))
    lm = log_mass(*one(n, c))
    assert lm[0] == tm.log_mass[0]
    err = abs(tm.log_mass[0] - ref)
    assert err <= tol, (tm.log_mass[0], ref, err)
    assert np.isfinite(tm.error[0]) and tm.error[0] >= 0
    return tm


# ------------------------------------------------------------------------------------------
# exact anchors
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [-1e4, -100.0, -40.0, -8.0, -1.0, 0.0, 1e-300, 0.5, 3.0, 10.0])
def test_half_plane_is_phi(c):
    rng = np.random.default_rng(abs(int(c * 7)) % 1000)
    th = rng.uniform(0, 2 * np.pi)
    n = np.array([[math.cos(th), math.sin(th)]])
    with mp.workdps(50):
        ref = float(mp.log(mp.ncdf(mp.mpf(c))))
    check_logmass(n, [c], ref, 1e-14 + 2e-16 * abs(ref))


@pytest.mark.parametrize("alpha", [0.01, 0.5, 1.0, np.pi / 2, 2.0, 3.0, np.pi - 1e-6])
def test_wedge_at_mean_is_angle_fraction(alpha):
    # wedge {theta in [0, alpha]}, rotated
    n = np.array([[0.0, -1.0], [-math.sin(alpha), math.cos(alpha)]])
    n = n @ rot(0.7).T
    # the rounded normals fix the angle to ~eps absolute: eps / alpha relative
    tm = check_logmass(n, [0.0, 0.0], math.log(alpha / (2 * np.pi)), 2e-15 + 4 * EPS / alpha)
    # E[u] of a wedge at the mean: sqrt(pi/2) * 2 sin(alpha/2) / alpha along the bisector
    bis = rot(0.7) @ np.array([math.cos(alpha / 2), math.sin(alpha / 2)])
    r = math.sqrt(np.pi / 2) * 2 * math.sin(alpha / 2) / alpha
    np.testing.assert_allclose(tm.mean[0], r * bis, rtol=0, atol=1e-14 + 8 * EPS / alpha)


@pytest.mark.parametrize("rho", [-0.95, -0.3, 0.0, 0.4, 0.9, 0.999])
def test_orthant_at_mean(rho):
    # X = n1.u, Y = n2.u with corr rho: P(X <= 0, Y <= 0) = 1/4 + asin(rho)/(2 pi)
    n1 = np.array([1.0, 0.0])
    n2 = np.array([rho, math.sqrt(1 - rho * rho)])
    ref = math.log(0.25 + math.asin(rho) / (2 * np.pi))
    check_logmass(np.stack([n1, n2]) @ rot(-1.3).T, [0.0, 0.0], ref, 2e-15)


def mp_bvn_cdf(a, b, rho, dps=40):
    """log P(X <= a, Y <= b), corr rho, as int_{-inf}^a phi(x) Phi((b - rho x)/s) dx, with
    the integrand scaled by its maximum over a grid and the range split around it."""
    with mp.workdps(dps):
        a, b, rho = mp.mpf(a), mp.mpf(b), mp.mpf(rho)
        s = mp.sqrt(1 - rho * rho)

        def logf(x):
            return -x * x / 2 + mp.log(mp.ncdf((b - rho * x) / s))

        grid = [a - mp.mpf(2) ** k for k in range(-12, 9)] + [a]
        K, xm = max((logf(x), x) for x in grid)
        pts = sorted(
            {mp.ninf, xm - 8, xm - 1, xm - mp.mpf(1) / 64, xm, a}
            - {x for x in [xm - 8, xm - 1, xm - mp.mpf(1) / 64] if x >= a}
        )
        val = mp.quad(lambda x: mp.exp(logf(x) - K), pts)
        return float(K + mp.log(val) - mp.log(2 * mp.pi) / 2)


@pytest.mark.parametrize(
    ("a", "b", "rho"),
    [
        (0.3, -0.7, 0.0),
        (1.0, 2.0, 0.5),
        (-2.0, -1.0, -0.6),
        (-6.0, -6.0, 0.0),
        (-6.0, -5.0, 0.8),
        (-40.0, -39.0, -0.3),
        (-40.0, -40.0, 0.0),
        (-100.0, -101.0, 0.2),
    ],
)
def test_orthant_off_mean(a, b, rho):
    n = np.array([[1.0, 0.0], [rho, math.sqrt(1 - rho * rho)]])
    ref = mp_bvn_cdf(a, b, rho)
    check_logmass(n @ rot(0.4).T, [a, b], ref, 1e-13 + 2e-16 * abs(ref))


def test_orthant_vs_scipy_multivariate_normal():
    # scipy's QMC cdf is only accurate to ~1e-6 relative here: a loose sanity check.
    rho, a, b = 0.35, 0.4, -0.9
    n = np.array([[1.0, 0.0], [rho, math.sqrt(1 - rho * rho)]])
    ref = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([a, b])
    assert abs(math.exp(log_mass(*one(n, [a, b]))[0]) / ref - 1) < 1e-5


@pytest.mark.parametrize("w", [1e-9, 1e-3, 0.5, 3.0])
@pytest.mark.parametrize("shift", [0.0, 2.0, 45.0])
def test_strips(w, shift):
    """Strip {shift - w <= n.u <= shift + w} (unbounded both ways)."""
    n = np.array([[1.0, 0.0], [-1.0, 0.0]]) @ rot(2.1).T
    c = np.array([shift + w, -(shift - w)])  # the rounded offsets define the strip
    with mp.workdps(60):
        ref = float(mp.log(_mass1(-mp.mpf(c[1]), mp.mpf(c[0]))))
    width = c[0] + c[1]
    # parallel lines: the edge formula's two terms cancel (documented limitation): absolute
    # accuracy ~eps * Q(|c|) in mass, i.e. relative eps * (shift + 1) / width
    tol = 1e-13 + 2e-16 * abs(ref) + 4 * EPS * (shift + 1.0) / width
    check_logmass(n, c, ref, tol)


# ------------------------------------------------------------------------------------------
# polygons against quadrature
# ------------------------------------------------------------------------------------------
def test_random_polygons_near_mean_vs_scipy_quadrature():
    rng = np.random.default_rng(11)
    for _ in range(14):
        center = rng.normal(size=2) * 1.2
        n, c = rand_polygon(rng, center, rng.uniform(0.3, 3.0), k=int(rng.integers(3, 8)))
        ref = sp_polygon(n, c)
        assert ref > 1e-4
        check_logmass(n, c, math.log(ref), 5e-13)


FAR_CASES = {
    # edge-closest, moderately far
    "edge_8": [(8, -1), (9, -1), (9, 1), (8, 1)],
    "edge_40": [(40, -1), (41, -0.5), (41, 0.5), (40, 1)],
    # vertex-closest with a sharp vertex (front and back edge meet at the closest point)
    "sharp_vertex_20": [(20, 0), (23, 0.8), (22.5, 1.0)],
    "sharp_vertex_100": [(100, 0), (103, 0.5), (102.5, 0.7)],
    "vertex_40_tilted": [(40, 0.5), (42, -1), (43, 3)],
    "far_1e4": [(1e4, -1.0), (1e4 + 2, -0.5), (1e4 + 1, 2.0)],
    "far_1e4_vertex": [(1e4, 0.0), (1e4 + 3, 0.2), (1e4 + 2.5, 0.4)],
    "tiny_far": [(30, 0), (30 + 1e-6, 0), (30, 1e-6)],
    "behind_mean_side": [(-5, 12), (5, 12), (0, 15)],
}


@pytest.mark.parametrize("name", sorted(FAR_CASES))
def test_far_tail_polygons_vs_mpmath(name):
    n, c = from_vertices(FAR_CASES[name])
    ref, _, _ = mp_polygon(n, c, dps=30)
    assert np.isfinite(ref)
    tol = 2e-13 + 4e-16 * abs(ref)
    if name == "tiny_far":  # vertex rounding: eps * |vertex| / size relative (conditioning)
        tol = 40 * EPS * 30.0 / 1e-6
    # rotate the whole problem: the mass is rotation invariant
    R = rot(0.37)
    check_logmass(n @ R.T, c, ref, tol)


@pytest.mark.parametrize(
    ("name", "verts"),
    [
        ("inside", [(-1.0, -0.5), (1.5, -0.7), (1.2, 1.1), (-0.4, 1.3)]),
        ("outside", [(0.5, 0.5), (2.5, 0.4), (2.0, 2.2)]),
        ("far_vertex", [(20, 0), (23, 0.8), (22.5, 1.0)]),
        ("far_edge", [(40, -1), (41, -0.5), (41, 0.5), (40, 1)]),
        ("small", [(0.3, 0.2), (0.3 + 2e-3, 0.2), (0.3, 0.2 + 3e-3)]),
    ],
)
def test_moments_vs_mpmath(name, verts):
    n, c = from_vertices(verts)
    ref, rmean, rcov = mp_polygon(n, c, moments=True, dps=25)
    tm = truncated_moments(*one(n, c))
    tol = 3e-10 if name == "small" else 1e-12
    assert abs(tm.log_mass[0] - ref) <= tol + 1e-15 * abs(ref)
    scale = math.sqrt(np.max(np.abs(rcov)))
    np.testing.assert_allclose(
        tm.mean[0], rmean, rtol=0, atol=1e-12 * scale + 1e-14 * np.abs(rmean).max()
    )
    np.testing.assert_allclose(tm.cov[0], rcov, rtol=0, atol=1e-11 * np.max(np.abs(rcov)))
    np.testing.assert_array_equal(tm.cov[0], tm.cov[0].T)


def test_unbounded_polygons_vs_mpmath():
    cases = [
        # wedge with apex outside the mean, opening away
        (np.array([[-1.0, -1.0], [-1.0, 1.0]]) / math.sqrt(2), np.array([-3.0, -3.0])),
        # wedge with apex outside, opening towards the mean
        (np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2), np.array([2.0, 1.0])),
        # half-strip far away
        (np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]]), np.array([1.0, 1.0, -30.0])),
        # three half-planes, unbounded region containing the mean
        (np.array([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]]), np.array([1.0, 2.0, 5.0])),
    ]
    for n, c in cases:
        ref, rmean, rcov = mp_polygon(n, c, moments=True, dps=25)
        tm = check_logmass(n, c, ref, 1e-13 + 2e-16 * abs(ref))
        np.testing.assert_allclose(tm.mean[0], rmean, rtol=0, atol=1e-12 * (1 + abs(rmean).max()))
        np.testing.assert_allclose(tm.cov[0], rcov, rtol=0, atol=1e-11)


@pytest.mark.parametrize("size", [1e-7, 1e-5, 1e-3, 3e-2])
@pytest.mark.parametrize("center", [(0.0, 0.0), (0.4, -0.2), (3.0, 1.0)])
def test_small_polygons(size, center):
    rng = np.random.default_rng(int(size * 1e9) % 97)
    n, c = rand_polygon(rng, center, size, k=5)
    ref, _, _ = mp_polygon(n, c, dps=30)
    # conditioning: an ulp of the offsets moves the vertices by eps |vertex|
    tol = 1e-13 + 20 * EPS * (np.linalg.norm(center) + size) / size
    tm = check_logmass(n, c, ref, tol)
    assert tm.error[0] >= abs(tm.log_mass[0] - ref) / 4


def test_means_on_the_boundary():
    rng = np.random.default_rng(5)
    cases = []
    # mean on an edge's interior
    cases.append(from_vertices([(-1.0, 0.0), (1.5, 0.0), (0.5, 2.0)]))
    # mean at a vertex (acute and obtuse)
    cases.append(from_vertices([(0.0, 0.0), (2.0, 0.3), (0.4, 1.8)]))
    cases.append(from_vertices([(0.0, 0.0), (2.0, -0.5), (1.0, 1.5), (-1.5, 1.0)]))
    # the mean on the extension of an edge line, outside the polygon
    cases.append(from_vertices([(1.0, 0.0), (2.0, 0.0), (1.5, 1.0)]))
    for n, c in cases:
        R = rot(rng.uniform(0, 2 * np.pi))
        c = np.where(np.abs(c) < 1e-15, 0.0, c)
        ref, _, _ = mp_polygon(n @ R.T, c, moments=False, dps=30)
        check_logmass(n @ R.T, c, ref, 2e-13)


# ------------------------------------------------------------------------------------------
# empty, degenerate and trivial polygons; padding
# ------------------------------------------------------------------------------------------
def test_empty_degenerate_and_whole_plane():
    n_tri, c_tri = from_vertices([(0, 0), (1, 0), (0, 1)])
    F = 4
    N = np.zeros((7, F, 2))
    C = np.full((7, F), np.inf)
    # 0: infeasible pair of half-planes u1 <= -1, u1 >= 1
    N[0, :2] = [[1, 0], [-1, 0]]
    C[0, :2] = [-1, -1]
    # 1: zero-width strip u1 = 2
    N[1, :2] = [[1, 0], [-1, 0]]
    C[1, :2] = [2, -2]
    # 2: triangle with a -inf offset row
    N[2, :3], C[2, :3] = n_tri, c_tri
    C[2, 3] = -np.inf
    N[2, 3] = [0, 1]
    # 3: zero normal with a negative offset
    N[3, :3], C[3, :3] = n_tri, c_tri
    C[3, 3] = -0.5
    # 4: whole plane (padding only)
    # 5: triangle plus padding; 6: triangle with a duplicated row
    N[5, :3], C[5, :3] = n_tri, c_tri
    N[6, :3], C[6, :3] = n_tri, c_tri
    N[6, 3], C[6, 3] = n_tri[1], c_tri[1]
    tm = truncated_moments(N, C)
    assert np.all(tm.log_mass[:4] == -np.inf)
    assert np.all(np.isnan(tm.mean[:4])) and np.all(np.isnan(tm.cov[:4]))
    assert np.all(tm.error[:4] == 0)
    assert tm.log_mass[4] == 0.0
    np.testing.assert_array_equal(tm.mean[4], [0.0, 0.0])
    np.testing.assert_array_equal(tm.cov[4], np.eye(2))
    ref, rmean, rcov = mp_polygon(n_tri, c_tri, moments=True, dps=25)
    for p in (5, 6):
        assert abs(tm.log_mass[p] - ref) < 1e-14
        np.testing.assert_allclose(tm.mean[p], rmean, atol=1e-14)
        np.testing.assert_allclose(tm.cov[p], rcov, atol=1e-13)
    np.testing.assert_array_equal(log_mass(N, C), tm.log_mass)


def test_vectorised_equals_single():
    rng = np.random.default_rng(3)
    polys = [
        rand_polygon(rng, rng.normal(size=2) * s, sz, k=6)
        for s, sz in [(0.5, 1.0), (30, 1.0), (0.5, 1e-3), (10, 5.0)] * 3
    ]
    N = np.stack([p[0] for p in polys])
    C = np.stack([p[1] for p in polys])
    tm = truncated_moments(N, C)
    for i, (n, c) in enumerate(polys):
        t1 = truncated_moments(*one(n, c))
        assert tm.log_mass[i] == t1.log_mass[0]
        np.testing.assert_array_equal(tm.mean[i], t1.mean[0])


# ------------------------------------------------------------------------------------------
# property tests
# ------------------------------------------------------------------------------------------
coords = st.floats(-60.0, 60.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(coords, coords, st.floats(0.05, 8.0), st.integers(0, 2**31), st.floats(0.0, np.pi))
def test_split_additivity(x, y, size, seed, phi):
    """Cut a polygon by a line through an interior point: logaddexp of the pieces = whole."""
    rng = np.random.default_rng(seed)
    n, c = rand_polygon(rng, (x, y), size, k=5)
    p = np.array([x, y]) + rng.uniform(-0.2, 0.2, 2) * size
    m = np.array([math.cos(phi), math.sin(phi)])
    z = np.zeros((1, 2))
    N = np.stack([np.vstack([n, m, z]), np.vstack([n, -m, z]), np.vstack([n, z, z])])
    C = np.stack([np.r_[c, m @ p, np.inf], np.r_[c, -(m @ p), np.inf], np.r_[c, np.inf, np.inf]])
    lm = log_mass(N, C)
    assert np.isfinite(lm[2])  # (a piece is empty when the line misses the polygon)
    whole = np.logaddexp(lm[0], lm[1])
    assert abs(whole - lm[2]) <= 1e-12 + 1e-15 * abs(lm[2])


@settings(max_examples=40, deadline=None)
@given(coords, coords, st.floats(0.01, 8.0), st.integers(0, 2**31), st.floats(0, 2 * np.pi))
def test_rotation_invariance(x, y, size, seed, theta):
    rng = np.random.default_rng(seed)
    n, c = rand_polygon(rng, (x, y), size, k=int(rng.integers(3, 8)))
    R = rot(theta)
    tm = truncated_moments(np.stack([n, n @ R.T]), np.stack([c, c]))
    scale = math.sqrt(abs(tm.cov[0]).max())
    tol_l = 1e-12 + 1e-15 * abs(tm.log_mass[0]) + 4 * (tm.error[0] + tm.error[1])
    assert abs(tm.log_mass[0] - tm.log_mass[1]) <= tol_l
    tol_m = 1e-11 * scale + 1e-14 * (1 + abs(tm.mean[0]).max())
    np.testing.assert_allclose(R @ tm.mean[0], tm.mean[1], rtol=0, atol=tol_m)
    np.testing.assert_allclose(R @ tm.cov[0] @ R.T, tm.cov[1], rtol=0, atol=1e-10 * scale**2)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31), st.floats(0.0, 3.0))
def test_arrangement_cells_sum_to_one(K, seed, spread):
    """All 2^K sign patterns of K random lines: masses sum to 1; nonempty cell count is
    1 + K + K(K-1)/2 (general position)."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, np.pi, K)
    m = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    b = rng.normal(size=K) * spread
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=K)))
    N = signs[:, :, None] * m[None]
    C = signs * b[None]
    lm = log_mass(N, C)
    total = math.fsum(np.exp(lm[np.isfinite(lm)]))
    assert abs(total - 1.0) < 1e-13
    # empty cells come out exactly -inf: count the nonempty ones
    nonempty = int(np.sum(np.isfinite(lm)))
    if spread == 0.0:  # all lines through the origin
        assert nonempty == 2 * K
    elif spread >= 0.5:
        angles = np.sort(ang)
        gaps = np.diff(np.r_[angles, angles[0] + np.pi])
        # distance from each pairwise intersection to every other line
        conc = np.inf
        for i, j in itertools.combinations(range(K), 2):
            x = np.linalg.solve(m[[i, j]], b[[i, j]])
            for k in set(range(K)) - {i, j}:
                conc = min(conc, abs(m[k] @ x - b[k]))
        if gaps.min() > 1e-3 and conc > 1e-3:
            assert nonempty == 1 + K + K * (K - 1) // 2


# ------------------------------------------------------------------------------------------
# z-space API
# ------------------------------------------------------------------------------------------
def test_gaussian_polyhedron_moments_box_diagonal():
    mean = np.array([[0.5, -1.0], [3.0, 2.0]])
    sd = np.array([2.0, 0.5])
    cov = np.diag(sd**2)
    C = np.array([[1.0, 0], [-1.0, 0], [0, 1.0], [0, -1.0]])
    e = np.array([1.0, 2.0, 0.0, 3.0])  # -2 <= z1 <= 1, -3 <= z2 <= 0
    tm = gaussian_polyhedron_moments(mean, cov, C, e)
    for p in range(2):
        lo = (np.array([-2.0, -3.0]) - mean[p]) / sd
        hi = (np.array([1.0, 0.0]) - mean[p]) / sd
        ref = np.sum(np.log(stats.norm.cdf(hi) - stats.norm.cdf(lo)))
        tn = stats.truncnorm(lo, hi, loc=mean[p], scale=sd)
        assert abs(tm.log_mass[p] - ref) < 1e-12
        np.testing.assert_allclose(tm.mean[p], tn.mean(), rtol=1e-11)
        np.testing.assert_allclose(np.diag(tm.cov[p]), tn.var(), rtol=1e-10)
        assert abs(tm.cov[p, 0, 1]) < 1e-13


def test_gaussian_polyhedron_moments_correlated_orthant():
    rho = 0.6
    cov = np.array([[4.0, 2 * 1.5 * rho], [2 * 1.5 * rho, 2.25]])
    mean = np.array([[1.0, -2.0]])
    C = np.array([[1.0, 0.0], [0.0, 1.0]])
    e = mean[0]  # orthant with apex at the mean
    tm = gaussian_polyhedron_moments(mean, cov, C, e)
    assert abs(tm.log_mass[0] - math.log(0.25 + math.asin(rho) / (2 * np.pi))) < 1e-14
    # whiten's offsets are the signed distances in whitened units
    L = np.linalg.cholesky(cov)
    n, o, s = whiten(mean, L, C, np.array([3.0, 1.0]))
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0)
    np.testing.assert_allclose(s[0], np.linalg.norm(C @ L, axis=1))
    np.testing.assert_allclose(o[0], (np.array([3.0, 1.0]) - C @ mean[0]) / s[0])


def test_throughput_smoke():
    """Many pairs in one call (vectorised, chunked): finite, and no per-pair Python loop."""
    rng = np.random.default_rng(0)
    P, F = 9000, 6
    ang = np.sort(rng.uniform(0, 2 * np.pi, (P, F)), axis=1)
    ctr = rng.normal(size=(P, 2)) * 3
    V = ctr[:, None, :] + np.stack([np.cos(ang), np.sin(ang)], -1)
    d = np.roll(V, -1, axis=1) - V
    n = np.stack([d[..., 1], -d[..., 0]], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    c = np.einsum("pfk,pfk->pf", n, V)
    tm = truncated_moments(n, c)
    assert np.all(np.isfinite(tm.log_mass)) and np.all(np.isfinite(tm.cov))
    assert np.all(np.linalg.eigvalsh(tm.cov) > 0)


# ------------------------------------------------------------------------------------------
# adaptive small-polygon cubature (node count chosen per polygon)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dist", "size", "moments"),
    [
        (0.0, 0.005, False),
        (0.0, 0.06, False),
        (0.0, 0.35, True),
        (0.1, 0.9, False),
        (5.0, 0.004, False),
        (5.0, 0.05, True),
        (9.0, 0.09, False),
    ],
)
def test_small_polygon_cubature_levels_vs_mpmath(dist, size, moments):
    """Polygons spanning the node-count levels of the cubature (spread R (|g| + R/2) from
    1e-5 to ~1, quadratic part R^2/2 up to ~0.5): mass (and moments) against slicing."""
    rng = np.random.default_rng(int(1000 * dist + 1e4 * size))
    th = rng.uniform(0, 2 * np.pi)
    n, c = rand_polygon(rng, (dist * math.cos(th), dist * math.sin(th)), size, k=5)
    ref, rmean, rcov = mp_polygon(n, c, moments=moments, dps=20)
    tm = truncated_moments(*one(n, c))
    lm = log_mass(*one(n, c))
    assert lm[0] == tm.log_mass[0]
    cond = 20 * EPS * (dist + size) / size  # vertex rounding, as in test_small_polygons
    err = abs(tm.log_mass[0] - ref)
    assert err <= 1e-13 + 1e-15 * abs(ref) + cond
    assert tm.error[0] >= err / 4
    if moments:
        scale = math.sqrt(np.max(np.abs(rcov)))
        np.testing.assert_allclose(
            tm.mean[0], rmean, rtol=0, atol=1e-11 * scale + 4 * EPS * np.abs(rmean).max()
        )
        np.testing.assert_allclose(tm.cov[0], rcov, rtol=0, atol=1e-10 * scale**2)


# ------------------------------------------------------------------------------------------
# the closest-point bound used for exact pruning (``floor``)
# ------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    dist=st.floats(0.0, 40.0),
    size=st.floats(0.05, 6.0),
    k=st.integers(3, 8),
)
def test_floor_skips_only_pairs_below_it(seed, dist, size, k):
    """With ``floor`` a pair is either integrated exactly as without it, or skipped, and only
    when its true mass is below ``exp(floor)``."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi)
    center = (dist + size) * np.array([math.cos(ang), math.sin(ang)])
    polys = [rand_polygon(rng, center, size, k) for _ in range(8)]
    n = np.stack([q[0] for q in polys])
    c = np.stack([q[1] for q in polys])
    ref = log_mass(n, c)
    floors = ref + rng.uniform(-3.0, 3.0, len(ref))
    got, err = log_mass(n, c, floor=floors, return_error=True)
    skipped = np.isneginf(got) & np.isfinite(ref)
    assert np.all(ref[skipped] < floors[skipped])
    np.testing.assert_array_equal(got[~skipped], ref[~skipped])
    assert np.all(err[skipped] == 0)
    tm = truncated_moments(n, c, floor=floors)
    np.testing.assert_array_equal(np.isneginf(tm.log_mass), np.isneginf(got))
    assert np.all(np.isnan(tm.mean[skipped]))


def test_floor_skips_far_polygons():
    n, c = from_vertices([[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 11.0]])
    # true log mass ~ -100 - log(...): the closest-point bound Q(10 sqrt 2) ~ e^{-102}
    assert np.isneginf(log_mass(*one(n, c), floor=np.array([-90.0]))[0])
    assert np.isfinite(log_mass(*one(n, c), floor=np.array([-200.0]))[0])


def test_floor_shape_is_checked():
    n, c = from_vertices([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="floor"):
        log_mass(*one(n, c), floor=np.zeros(3))
    with pytest.raises(ValueError, match="floor"):
        truncated_moments(*one(n, c), floor=np.array([np.nan]))


# ------------------------------------------------------------------------------------------
# one polygon, many means: the precomputed table translated by -w
# ------------------------------------------------------------------------------------------
def _table_case(rng, k_max=7):
    """Polygons of different row counts (bounded, unbounded, padded) in one padded array."""
    M, F = 6, k_max + 2
    N = np.zeros((M, F, 2))
    C = np.full((M, F), np.inf)
    for m in range(M):
        k = int(rng.integers(3, k_max + 1))
        n, c = rand_polygon(rng, rng.normal(0, 2, 2), rng.uniform(0.05, 4.0), k)
        if m % 3 == 1:  # unbounded: drop one or two edges
            keep = np.ones(k, bool)
            keep[rng.choice(k, 1 + (k > 4), replace=False)] = False
            n, c = n[keep], c[keep]
        N[m, : len(c)], C[m, : len(c)] = n * rng.uniform(0.5, 2.0, (len(c), 1)), c
        if m % 2:  # padding rows in the middle
            perm = rng.permutation(F)
            N[m], C[m] = N[m][perm], C[m][perm]
    return N, C


def _direct(N, C, m, w):
    return N[m], C[m] - np.einsum("pfk,pk->pf", N[m], w)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.3, 1.0, 3.0, 30.0, 1e3]))
def test_shifted_table_matches_direct(seed, scale):
    """Translating the tabulated polygon by -w equals integrating {n.u <= c - n.w} directly
    (same mass, error scale and moments), for bounded, unbounded and padded polygons."""
    rng = np.random.default_rng(seed)
    N, C = _table_case(rng)
    tab = polygon_table(N, C)
    m = rng.integers(0, len(C), 64)
    w = rng.normal(0, scale, (64, 2))
    ref, err = log_mass(*_direct(N, C, m, w), return_error=True)
    got, gerr = log_mass_2d_shifted(tab, m, w)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    fin = np.isfinite(ref)
    # inputs are rounded differently (c - n.w against vertices - w): conditioning |w| eps
    tol = 1e-12 * np.maximum(1.0, np.abs(ref)) + 4 * (err + gerr) + 1e-14 * (1 + scale) ** 2
    assert np.all(np.abs(got[fin] - ref[fin]) <= tol[fin])
    tm = truncated_moments(*_direct(N, C, m, w))
    tg = truncated_moments_2d_shifted(tab, m, w)
    np.testing.assert_array_equal(tg.log_mass, got)
    big = fin & (ref > -600)  # moments beyond that are asymptotic and tested elsewhere
    sc = 1.0 + np.abs(tm.mean[big])
    assert np.all(np.abs(tg.mean[big] - tm.mean[big]) <= 1e-8 * sc * (1 + scale))
    assert np.all(np.abs(tg.cov[big] - tm.cov[big]) <= 1e-8 * (1 + scale))


def _direct_mapped(N, C, m, T, w):
    """Rows of ``{T u0 - w : n . u0 <= c}`` (normals ``T^{-T} n``, not normalised)."""
    TiT = np.swapaxes(np.linalg.inv(T), 1, 2)
    n = np.einsum("pij,pfj->pfi", TiT, N[m])
    return n, C[m] - np.einsum("pfk,pk->pf", n, w)


def _rand_maps(rng, P, upper=False):
    T = rng.normal(0.0, 0.6, (P, 2, 2))
    T[:, 0, 0], T[:, 1, 1] = np.exp(rng.normal(0, 0.7, P)), np.exp(rng.normal(0, 0.7, P))
    if upper:
        T[:, 1, 0] = 0.0
    det = T[:, 0, 0] * T[:, 1, 1] - T[:, 0, 1] * T[:, 1, 0]
    T[det <= 0, 1, 0] = 0.0  # keep det > 0
    return T


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.3, 1.0, 3.0, 30.0, 1e3]))
def test_transformed_table_matches_direct(seed, scale):
    """Mapping the tabulated polygon by ``u = T u0 - w`` (missing data: the pair's own
    whitening) equals integrating the mapped rows directly, bounded, unbounded and padded
    polygons, near and far means; the moments are those of the mapped polygon."""
    rng = np.random.default_rng(seed)
    N, C = _table_case(rng)
    tab = polygon_table(N, C)
    m = rng.integers(0, len(C), 64)
    T = _rand_maps(rng, 64, upper=bool(seed % 2))
    w = rng.normal(0, scale, (64, 2))
    ref, err = log_mass(*_direct_mapped(N, C, m, T, w), return_error=True)
    got, gerr = log_mass_2d_transformed(tab, m, T, w)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    fin = np.isfinite(ref)
    tol = 1e-12 * np.maximum(1.0, np.abs(ref)) + 4 * (err + gerr) + 1e-14 * (1 + scale) ** 2
    assert np.all(np.abs(got[fin] - ref[fin]) <= tol[fin])
    tm = truncated_moments(*_direct_mapped(N, C, m, T, w))
    tg = truncated_moments_2d_transformed(tab, m, T, w)
    np.testing.assert_array_equal(tg.log_mass, got)
    big = fin & (ref > -600)
    sc = 1.0 + np.abs(tm.mean[big])
    assert np.all(np.abs(tg.mean[big] - tm.mean[big]) <= 1e-8 * sc * (1 + scale))
    assert np.all(np.abs(tg.cov[big] - tm.cov[big]) <= 1e-8 * (1 + scale))
    # the identity map is the translated table
    I2 = np.broadcast_to(np.eye(2), (64, 2, 2))
    np.testing.assert_allclose(
        log_mass_2d_transformed(tab, m, I2, w)[0], log_mass_2d_shifted(tab, m, w)[0], rtol=1e-14
    )


def test_transformed_table_far_polygon_vs_mpmath_and_checks():
    n, c = from_vertices([(0.0, 0.0), (2.0, 0.3), (1.5, 1.7), (-0.2, 1.0)])
    tab = polygon_table(n[None], c[None])
    T = np.array([[[2.0, 0.7], [0.0, 0.4]], [[0.5, -1.0], [0.3, 1.5]]])
    w = np.array([[-70.0, -15.0], [0.5, 0.6]])
    got, err = log_mass_2d_transformed(tab, np.zeros(2, dtype=int), T, w)
    for i in range(2):
        nn, cc = _direct_mapped(
            n[None], c[None], np.zeros(1, dtype=int), T[i : i + 1], w[i : i + 1]
        )
        scale = np.linalg.norm(nn[0], axis=1)
        ref = float(mp_polygon(nn[0] / scale[:, None], cc[0] / scale, dps=40)[0])
        assert abs(got[i] - ref) <= 1e-12 * max(1.0, abs(ref)) + 4 * err[i], (i, got[i], ref)
    with pytest.raises(ValueError, match="determinant"):
        log_mass_2d_transformed(
            tab, np.zeros(1, dtype=int), np.diag([1.0, -1.0])[None], np.zeros((1, 2))
        )
    with pytest.raises(ValueError, match="T must be"):
        log_mass_2d_transformed(tab, np.zeros(2, dtype=int), np.eye(2)[None], np.zeros((2, 2)))


def test_shifted_table_far_mean_vs_mpmath():
    """An independent check of the translation: a far polygon (log mass ~ -5e3) from a mean
    100 units away, against the mpmath slicing reference on the translated rows."""
    n, c = from_vertices([(0.0, 0.0), (2.0, 0.3), (1.5, 1.7), (-0.2, 1.0)])
    tab = polygon_table(n[None], c[None])
    w = np.array([[-70.0, -75.0], [0.5, 0.6], [1.0, -3.0]])
    got, err = log_mass_2d_shifted(tab, np.zeros(3, dtype=int), w)
    for i in range(3):
        ref = float(mp_polygon(n, c - n @ w[i], dps=40)[0])
        assert abs(got[i] - ref) <= 1e-12 * max(1.0, abs(ref)) + 4 * err[i], (i, got[i], ref)


def test_shifted_table_pairs_independent_of_batch():
    rng = np.random.default_rng(3)
    N, C = _table_case(rng)
    tab = polygon_table(N, C)
    m = rng.integers(0, len(C), 300)
    w = rng.normal(0, 4, (300, 2))
    full = truncated_moments_2d_shifted(tab, m, w)
    part = truncated_moments_2d_shifted(tab, m[7:19], w[7:19])
    np.testing.assert_array_equal(part.log_mass, full.log_mass[7:19])
    np.testing.assert_array_equal(part.mean, full.mean[7:19])
    lm, _ = log_mass_2d_shifted(tab, m[::-1], w[::-1])
    np.testing.assert_array_equal(lm[::-1], full.log_mass)


def test_shifted_table_empty_polygons_and_checks():
    N = np.zeros((3, 2, 2))
    C = np.full((3, 2), np.inf)
    N[0] = [[1, 0], [-1, 0]]  # infeasible strip u1 <= -1, u1 >= 1
    C[0] = [-1, -1]
    N[1] = [[1, 0], [-1, 0]]  # proper strip |u1| <= 1
    C[1] = [1, 1]
    tab = polygon_table(N, C)  # polygon 2: the whole plane
    w = np.array([[0.0, 0.0], [0.5, 9.0], [3.0, -2.0]])
    lm, _ = log_mass_2d_shifted(tab, np.arange(3), w)
    assert lm[0] == -np.inf and lm[2] == 0.0
    ref = math.log(special.ndtr(0.5) - special.ndtr(-1.5))
    assert abs(lm[1] - ref) < 1e-14
    lm0, err0 = log_mass_2d_shifted(tab, np.zeros(0, dtype=int), np.zeros((0, 2)))
    assert lm0.shape == err0.shape == (0,)
    with pytest.raises(ValueError, match="shift"):
        log_mass_2d_shifted(tab, np.arange(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shift"):
        log_mass_2d_shifted(tab, np.arange(3), np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="polygon"):
        log_mass_2d_shifted(tab, np.array([0, 3]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="polygon"):
        log_mass_2d_shifted(tab, np.array([0.0, 1.0]), np.zeros((2, 2)))


@pytest.mark.parametrize("mapped", [False, True])
def test_moments_only_where_selected(mapped):
    """``select`` sees every mass; the selected pairs get exactly the moments of a full call,
    the others NaN; a mask of the wrong shape is an error (translated and mapped polygons)."""
    rng = np.random.default_rng(11)
    N, C = _table_case(rng)
    tab = polygon_table(N, C)
    m = rng.integers(0, len(C), 400)
    w = rng.normal(0, 6, (400, 2))  # near and far (tail-moment) polygons
    T = _rand_maps(rng, 400, upper=True)
    floor = np.where(rng.random(400) < 0.2, -30.0, -np.inf)  # some pairs below their floor

    def moments(**kw):
        if mapped:
            return truncated_moments_2d_transformed(tab, m, T, w, floor, **kw)
        return truncated_moments_2d_shifted(tab, m, w, floor, **kw)

    full = moments()
    seen = {}

    def select(lm, err):
        seen["lm"] = lm.copy()
        return lm > np.median(lm[np.isfinite(lm)])

    part = moments(select=select)
    np.testing.assert_array_equal(seen["lm"], full.log_mass)
    np.testing.assert_array_equal(part.log_mass, full.log_mass)
    sel = full.log_mass > np.median(full.log_mass[np.isfinite(full.log_mass)])
    assert 50 < sel.sum() < 350
    np.testing.assert_array_equal(part.mean[sel], full.mean[sel])
    np.testing.assert_array_equal(part.cov[sel], full.cov[sel])
    assert np.all(np.isnan(part.mean[~sel])) and np.all(np.isnan(part.cov[~sel]))
    with pytest.raises(ValueError, match="select"):
        moments(select=lambda lm, err: lm[:3] > 0)


# ------------------------------------------------------------------------------------------
# error estimate of thin slivers far along their length
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a,w,k",
    [
        (0.5, 1e-9, 150.0),
        (0.5, 1e-9, 20.0),
        (5.0, 1e-9, 400.0),
        (2.0, 1e-7, 50.0),
        (-3.0, 1e-9, 50.0),
    ],
)
def test_thin_strip_cut_far_error_estimate_covers(a, w, k):
    """A strip ``a <= n.u <= a + w`` cut by the orthogonal line ``m.u >= k`` far along it: the
    exact mass is the product ``(Phi(a + w) - Phi(a)) Q(k)`` (n and m exactly orthogonal).  The
    polygon's short edge on the cut line sits at ``|u| ~ k``, where its end points carry an
    absolute rounding of ~eps k (the vertex is shared between its two edges by projection);
    relative to the width ``w`` that is up to ~1e-5 of the mass, and the reported error must
    cover it (it used to report ~1e-10)."""
    n, m = np.array([0.6, 0.8]), np.array([-0.8, 0.6])
    N = np.array([[n, -n, -m]])
    C = np.array([[a + w, -a, -k]])
    got, err = log_mass(N, C, return_error=True)
    with mp.workdps(50):
        nn = mp.sqrt(mp.mpf(0.6) ** 2 + mp.mpf(0.8) ** 2)  # |n| = |m|, normalised exactly
        lo, hi = mp.mpf(a) / nn, mp.mpf(a + w) / nn
        strip = mp.ncdf(-lo) - mp.ncdf(-hi) if a > 0 else mp.ncdf(hi) - mp.ncdf(lo)
        ref = float(mp.log(strip) + mp.log(mp.ncdf(-mp.mpf(k) / nn)))
    assert abs(got[0] - ref) <= err[0]
    assert err[0] <= 1e-2  # still informative (conservative by ~50x at most here)


@pytest.mark.parametrize("a", [-7.3, -15.2, -30.1])
@pytest.mark.parametrize("w", [1e-10, 1e-7, 1e-6])
def test_thin_far_strip_error_estimate_covers(a, w):
    """A strip ``a <= n.u <= a + w`` far from the mean: the tail pieces of its two lines cancel
    by ``ratio ~ 1/(w |a|)``, and each piece's exponent ``-(h^2 + t^2)/2`` is rounded by about
    ``eps |log m|``; the reported error must cover ``eps * ratio * |log m|`` (it covered only
    ``eps * ratio``: true errors up to 9x the estimate).  Reference: ``Phi(a + w) - Phi(a)``."""
    n = np.array([0.6, 0.8])
    got, err = log_mass(np.array([[n, -n]]), np.array([[a + w, -a]]), return_error=True)
    with mp.workdps(50):
        nn = mp.sqrt(mp.mpf(0.6) ** 2 + mp.mpf(0.8) ** 2)
        ref = float(mp.log(mp.ncdf(mp.mpf(a + w) / nn) - mp.ncdf(mp.mpf(a) / nn)))
    assert abs(got[0] - ref) <= err[0]
    assert err[0] <= 1e-3


@functools.cache  # the mpmath reference takes ~1 s; both tests share it
def _far_sliver_wedge():
    """A far, thin wedge {u1 >= D, u1 + beta u2 <= D + w} (D = 10, w = 2^-27, beta = 1e-12):
    the second facet's s-bound sweeps through all of R within ~1e-10 in r, far narrower than
    the slicing rule's first node (~5e-3), so the rule stepped over the wedge (mean ~ -5e9).
    Reference: u1 - D = v, the inner integral of v^k exp(-D v - v^2/2) over [0, W(u2)] is
    exact via incomplete gammas (the v^4/8 term is < 1e-33 relative), the outer one over u2
    by mpmath quadrature; the normals are unit in float, so the inputs are exact.

    Returns ``(n, c, check)`` with ``check(log_mass, mean, cov)`` for one pair's outputs."""
    D, beta, w = 10.0, 1e-12, 2.0**-27
    n = np.array([[-1.0, 0.0], [1.0, beta]])
    c = np.array([-D, D + w])
    with mp.workdps(40):
        Dm, bm, wm = mp.mpf(D), mp.mpf(beta), mp.mpf(w)

        def inner(k, u2):  # int_0^W v^k e^{-D v} (1 - v^2/2) dv
            x = Dm * (wm - bm * u2)
            return mp.gammainc(k + 1, 0, x) / Dm ** (k + 1) - mp.gammainc(k + 3, 0, x) / (
                2 * Dm ** (k + 3)
            )

        def mom(j, k):  # the wedge ends at u2 = w / beta ~ 7e3, beyond the +-60 cut
            return mp.quad(lambda s: mp.exp(-s * s / 2) * s**j * inner(k, s), [-60, -8, 0, 8, 60])

        m0 = mom(0, 0)
        e1, e2 = mom(0, 1) / m0, mom(1, 0) / m0
        rmean = np.array([D + float(e1), float(e2)])
        v12 = float(mom(1, 1) / m0 - e1 * e2)
        rcov = np.array(
            [[float(mom(0, 2) / m0 - e1**2), v12], [v12, float(mom(2, 0) / m0 - e2**2)]]
        )
        ref = float(mp.log(m0) - Dm**2 / 2 - mp.log(2 * mp.pi))

    # conditioning: one ulp of the offsets moves the width w by ~eps D / w ~ 3e-7 relative
    def check(log_mass, mean, cov):
        assert abs(log_mass - ref) <= 1e-6
        np.testing.assert_allclose(mean, rmean, rtol=1e-12, atol=1e-6 * abs(rmean[1]))
        np.testing.assert_allclose(np.diag(cov), np.diag(rcov), rtol=1e-6)
        assert abs(cov[0, 1] - v12) <= 1e-6 * abs(v12)

    return n, c, check


def test_far_sliver_wedge_moments_vs_closed_form():
    """The far sliver wedge of :func:`_far_sliver_wedge` through truncated_moments and
    truncated_moments_2d_shifted."""
    n, c, check = _far_sliver_wedge()
    for tm in (
        truncated_moments(*one(n, c)),
        truncated_moments_2d_shifted(polygon_table(n[None], c[None]), [0], np.zeros((1, 2))),
    ):
        check(tm.log_mass[0], tm.mean[0], tm.cov[0])


def test_far_sliver_wedge_moments_torch():
    """The same wedge through the torch backend's moments (``truncated_moments_2d_shifted_t``,
    CPU, float64), whose slicing rule had the same blind spot."""
    torch = pytest.importorskip("torch")
    from exactdgn.gaussian._torch_polygon import (
        log_mass_2d_shifted_t,
        table_to_device,
        truncated_moments_2d_shifted_t,
    )

    n, c, check = _far_sliver_wedge()
    tab = table_to_device(polygon_table(n[None], c[None]), "cpu")
    m = torch.zeros(1, dtype=torch.int64)
    w = torch.zeros((1, 2), dtype=torch.float64)
    logm, _ = log_mass_2d_shifted_t(tab, m, w)
    mean, cov = truncated_moments_2d_shifted_t(tab, m, w, logm)
    check(float(logm[0]), mean[0].numpy(), cov[0].numpy())
