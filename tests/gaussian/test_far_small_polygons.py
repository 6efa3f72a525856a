"""Small and thin polygons far in the tail (and thin ones through the mean) against mpmath.

Defects these pin (each test fails on the code before the fix):

* a sliver (length 1, width 1e-9) seen from a mean 1e4 sd away came out "empty": log mass
  ``-inf`` with error 0 (its Owen's-T / tail-safe pieces were ~1e9 times the mass and rounded
  at ~eps |log m| each), through ``log_mass_2d``, ``log_mass_2d_shifted`` and
  ``log_mass_2d_transformed``; a strip ``|u1| <= 5e-18`` through the mean likewise; a mean
  exactly at a table polygon's vertex (its rows' offsets +-2e-16 instead of 0) too;
* a triangle of size 1e-12 at the table origin seen from 1e4 sd was integrated on its
  vertices translated to the mean (rounded at ``eps |w|`` ~ 2e-12, more than the triangle):
  error estimate 188 nats (covered, but no digit left) where the table holds all digits; given
  by its rows at 1e3 sd, 19.6 nats, and triangles of ~1e-12 at 1e2 to 1e3 sd gave NaN or -inf
  (their vertices, computed about the mean, fell within their rounding);
* a wedge with its apex at the mean and an opening of 1e-9 claimed an error of 1e-13 where it
  was 5e-8 (the cone's angle is a difference of rounded directions);
* ``log_interval_mass`` raised an IndexError for 2-D arrays.

References: :func:`tests.oracles.gaussian_mp.polygon_ref` (slicing in mpmath, with the pairs'
translation / map formed exactly there) and closed forms evaluated in mpmath.
"""

from __future__ import annotations

import functools
import itertools
import math

import mpmath as mp
import numpy as np
import pytest

from exactdgn import gaussian as G
from tests.oracles.gaussian_mp import interval_ref, polygon_ref

T_MAP = np.array([[1.3, 0.4], [-0.2, 0.8]])


def _rot(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def _rows(V):
    """Outward unit normals and offsets of the convex polygon with CCW vertices ``V``."""
    V = np.asarray(V, dtype=float)
    d = np.roll(V, -1, axis=0) - V
    n = np.stack([d[:, 1], -d[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return n, np.einsum("fk,fk->f", n, V)


def _sliver(width, angle):
    """A thin triangle: apex at (-0.5, 0), far side of length ``width`` at x = 0.5, rotated."""
    V = np.array([[-0.5, 0.0], [0.5, -width / 2], [0.5, width / 2]])
    return _rows(V @ _rot(angle).T)


def _tiny_triangle(size, angle):
    V = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.8]]) * size
    return _rows(V @ _rot(angle).T)


def _shift(dist, direction):
    return dist * np.array([math.cos(direction), math.sin(direction)])


@functools.cache
def _ref(shape, params, how, dist, direction):
    """Reference log mass of pair ``how`` (direct rows, shifted table, mapped table)."""
    n, c = shape(*params)
    w = _shift(dist, direction)
    if how == "direct":
        return polygon_ref(n, c - n @ w, dps=30)[0]
    T = T_MAP if how == "mapped" else None
    return polygon_ref(n, c, dps=30, transform=T, shift=w)[0]


def _got(shape, params, how, dist, direction):
    n, c = shape(*params)
    w = _shift(dist, direction)
    if how == "direct":
        lm, err = G.log_mass_2d(n[None], (c - n @ w)[None])
        tm = G.truncated_moments_2d(n[None], (c - n @ w)[None])
    else:
        tab = G.polygon_table(n[None], c[None])
        m0 = np.zeros(1, dtype=int)
        if how == "mapped":
            lm, err = G.log_mass_2d_transformed(tab, m0, T_MAP[None], w[None])
            tm = G.truncated_moments_2d_transformed(tab, m0, T_MAP[None], w[None])
        else:
            lm, err = G.log_mass_2d_shifted(tab, m0, w[None])
            tm = G.truncated_moments_2d_shifted(tab, m0, w[None])
    assert tm.log_mass[0] == lm[0] and tm.error[0] == err[0]
    return lm[0], err[0]


@pytest.mark.parametrize("how", ["shifted", "mapped", "direct"])
def test_far_sliver_is_not_declared_empty(how):
    """The sliver at 1e4 sd: -inf with error 0 before, on all three paths. Its shape is kept at
    the precision of its rows near the sliver (the table's, or the given rows' about one of
    their vertices): error estimate below 0.1 nat (its apex, the closest point, is a corner of
    1e-9), true error ~1e-4 or below."""
    params, dist, direction = (1e-9, 0.0), 1e4, 2.5
    ref = _ref(_sliver, params, how, dist, direction)
    assert -1e300 < ref < -4e7
    v, e = _got(_sliver, params, how, dist, direction)
    assert np.isfinite(v) and abs(v - ref) <= e < 0.1, (v, ref, e)


@pytest.mark.parametrize("how", ["shifted", "mapped"])
def test_table_polygon_far_from_its_mean_keeps_its_digits(how):
    """Size 1e-12 at the table origin, mean 1e4 sd away: the mass is relative-accurate (the
    error estimate is the log mass's own rounding, ~eps |log m|), not 188 nats."""
    params, dist, direction = (1e-12, 0.4), 1e4, 2.5
    ref = _ref(_tiny_triangle, params, how, dist, direction)
    v, e = _got(_tiny_triangle, params, how, dist, direction)
    assert abs(v - ref) <= e <= 1e-6, (v, ref, e)


# rows of triangles ~1e-12 wide at 1e2 / 1e3 sd (found by a random search: NaN before)
_TINY_ROWS = [
    (
        [[-0.7071067811865476, 0.7071067811865476], [0.31622776601683794, -0.9486832980505138],
         [1.0, -0.0]],
        [-997.4537847421017, 924.0431946333817, 654.8784296240987],
    ),
    (
        [[-0.7692230203459514, 0.6389803948243263], [-1.0, -0.0],
         [0.7703943211246896, -0.6375677140342259]],
        [-718.2649727291721, -997.0891279975482, 719.5405735776343],
    ),
    (
        [[-0.7071067811865475, -0.7071067811865475], [0.0, -1.0],
         [0.5547001962252291, 0.8320502943378437]],
        [-96.82054212222585, -50.77372786292353, 90.03438049630378],
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(_TINY_ROWS)))
def test_tiny_polygon_given_by_its_rows_far_out(case):
    """Rows ~1e3 sd out whose triangle is ~1e-12 wide: computed about the mean its vertices
    fall within their rounding (a fan of negative area: NaN, error 0); about one of its vertices
    (offsets formed exactly there) it keeps its digits."""
    n, c = (np.array(x) for x in _TINY_ROWS[case])
    ref = polygon_ref(n, c, dps=30)[0]
    lm, err = G.log_mass_2d(n[None], c[None])
    assert abs(lm[0] - ref) <= err[0] <= 1e-8 * abs(ref), (lm[0], ref, err[0])
    tm = G.truncated_moments_2d(n[None], c[None])
    assert tm.log_mass[0] == lm[0] and np.all(np.isfinite(tm.mean))


# quadrilaterals whose table vertex p0[0] seen as the mean gave -inf (random search, 2 in 35)
_VERTEX_MEANS = [
    (
        [[0.9566819611822035, 0.29113506341313944], [-0.5906454970115487, 0.8069311599262855],
         [0.45831050026142545, -0.8887921496897471], [0.9902650671688823, 0.13919445658864837]],
        [0.01235157526836933, -1.0266611736850988, 1.9293548308778155, 0.19021110708724948],
    ),
    (
        [[0.8782467360082524, 0.47820776937524884], [0.6140875221131535, 0.7892379331893058],
         [-0.9726431718934665, -0.23230424053171395], [0.9844628499267258, -0.17559298708703916]],
        [4.982752302290958, 4.63541066256489, -4.55012341082807, 4.813241793413732],
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_mean_at_a_table_vertex(case):
    """The mean exactly at a vertex of a table polygon: the two rows through it should have
    offset 0, one came out +-2e-16 (it is formed from the edge's other end), the mean was
    'outside' with nothing left of the edge formula: -inf, error 0, for a mass of ~e^-2."""
    n, c = (np.array(x) for x in _VERTEX_MEANS[case])
    tab = G.polygon_table(n[None], c[None])
    w = tab.p0[0, 0]
    ref = polygon_ref(n, c, dps=20, shift=w)[0]  # log mass ~ -2: 20 digits are plenty
    lm, err = G.log_mass_2d_shifted(tab, np.zeros(1, dtype=int), w[None])
    assert abs(lm[0] - ref) <= err[0] <= 1e-12, (lm[0], ref, err[0])


_STRIPS = [(0.0, w) for w in (1e-9, 1e-13, 1e-17, 1e-30, 1e-300)] + [(0.3, 1e-9), (0.3, 1e-13)]


@pytest.mark.parametrize(("centre", "width"), _STRIPS)
def test_thin_strip_through_or_near_the_mean(centre, width):
    """``{centre - w/2 <= u1 <= centre + w/2}``: the edge formula is 1 minus two pieces of
    ~1/2 (-inf from w = 1e-17 on, 1.5 nats of error estimate at 1e-13); slicing has no
    cancellation. Through the mean the slices' rows are the offsets themselves (exact); beside
    it the rows are taken about the closest point, which rounds them at ~eps (|c| + D),
    relative to the width. Reference: the interval's mass in mpmath, at enough digits for the
    width."""
    hi, lo = centre + width / 2, centre - width / 2
    n = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]])
    c = np.array([[hi, -lo, np.inf]])
    ref = interval_ref(lo, hi, dps=40 + int(-math.log10(width)))[0]
    lm, err = G.log_mass_2d(n, c)
    eps = np.finfo(float).eps
    assert abs(lm[0] - ref) <= err[0], (lm[0], ref, err[0])
    assert err[0] <= 1e-12 * abs(ref) + 64 * eps * centre / width
    tm = G.truncated_moments_2d(n, c)
    assert tm.log_mass[0] == lm[0]
    np.testing.assert_allclose(tm.mean[0], [0.5 * (hi + lo), 0.0], rtol=0, atol=1e-15)


def _wedge_at_mean(opening, direction):
    n1 = _rot(direction + opening / 2) @ np.array([0.0, 1.0])
    n2 = _rot(direction - opening / 2) @ np.array([0.0, -1.0])
    return np.array([n1, n2])


def _cone_fraction(n):
    """The wedge ``{n1 . u <= 0, n2 . u <= 0}``'s angle / 2 pi for the float normals, in mpmath:
    pi minus the angle between the normals."""
    with mp.workdps(50):
        (a1, b1), (a2, b2) = ([mp.mpf(float(x)) for x in row] for row in n)
        between = mp.atan2(abs(a1 * b2 - a2 * b1), a1 * a2 + b1 * b2)
        return float(mp.log((mp.pi - between) / (2 * mp.pi)))


@pytest.mark.parametrize("opening", [1e-6, 1e-9, 1e-12, 1e-15])
def test_wedge_at_the_mean_error_covers_its_angle(opening):
    """The mean at the apex: mass = the cone's angle / 2 pi, which the rows' directions give
    to ~eps absolute; the estimate claimed ~1e-13 where the error was 5e-8 (1e-9) to 2e-2
    (1e-15)."""
    for direction in (0.3, 2.0):
        n = _wedge_at_mean(opening, direction)
        ref = _cone_fraction(n)
        lm, err = G.log_mass_2d(n[None], np.zeros((1, 2)))
        assert abs(lm[0] - ref) <= err[0], (lm[0], ref, err[0])
        assert err[0] <= 1e-13 + 64 * np.finfo(float).eps / opening


def test_log_interval_mass_takes_any_shape():
    """It raised an IndexError for 2-D input (the branches indexed flat positions)."""
    rng = np.random.default_rng(0)
    lo = rng.normal(0, 4, (5, 7))
    hi = lo + np.exp(rng.uniform(-20, 2, (5, 7)))
    lm, err = G.log_interval_mass(lo, hi)
    flat = G.log_interval_mass(lo.ravel(), hi.ravel())
    np.testing.assert_array_equal(lm, flat[0].reshape(5, 7))
    np.testing.assert_array_equal(err, flat[1].reshape(5, 7))
    lm0, err0 = G.log_interval_mass(np.float64(1.0), np.float64(2.0))
    assert lm0.shape == err0.shape == ()
    assert lm0 == G.log_interval_mass(np.array([1.0]), np.array([2.0]))[0][0]


# --------------------------------------------------------------------------------------------
# the sweep (slow): triangles, quadrilaterals and slivers, 1e-3 to 1e-12, from 0 to 1e4 sd
# --------------------------------------------------------------------------------------------
def _quad(size, angle):
    V = np.array([[0.0, 0.0], [1.0, -0.1], [1.2, 0.9], [0.1, 0.7]]) * size
    return _rows(V @ _rot(angle).T)


def _thin_rect(width, angle):
    V = np.array([[-0.5, -width / 2], [0.5, -width / 2], [0.5, width / 2], [-0.5, width / 2]])
    return _rows(V @ _rot(angle).T)


_SHAPES = {"tri": _tiny_triangle, "quad": _quad, "sliver": _sliver, "rect": _thin_rect}
_SWEEP = [
    (kind, size, dist)
    for kind, size, dist in itertools.product(
        _SHAPES, [1e-3, 1e-6, 1e-9, 1e-12], [0.0, 5.0, 40.0, 1e2, 1e3, 1e4]
    )
    if kind in ("tri", "quad") or size == 1e-9
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "size", "dist"), _SWEEP)
@pytest.mark.parametrize("how", ["direct", "shifted", "mapped"])
def test_small_and_thin_polygons_sweep(kind, size, dist, how):
    """Every pair with a positive mass gets a finite log mass whose error estimate covers the
    true error; compact shapes are relative-accurate (error estimate <= 1e-6) on every path:
    their shape is taken at the precision of the rows near the polygon."""
    shape = _SHAPES[kind]
    params = (size, 0.7 + dist % 1.3)
    direction = 1.1 + 0.37 * math.log1p(dist)
    n, _ = shape(*params)
    if not np.all(np.isfinite(n)):
        pytest.skip("the vertices coincide in float64")
    ref = _ref(shape, params, how, dist, direction)
    v, e = _got(shape, params, how, dist, direction)
    if ref == -math.inf:  # the float input itself is empty (only possible for direct rows)
        assert how == "direct" and v == -math.inf
        return
    assert np.isfinite(v) and abs(v - ref) <= e, (v, ref, abs(v - ref), e)
    if kind in ("tri", "quad"):
        assert e <= 1e-6
