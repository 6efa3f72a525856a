"""d = 1: interval masses and moments against mpmath quadrature of the density.

The reference integrates ``exp(-(u^2 - s^2)/2)`` (``s`` the point of the interval closest to the
mean, so the integrand is O(1)) with mpmath at 40 digits, split at natural scales; it shares
no formula with the implementation (no log_ndtr, Mills ratio or Gauss-Legendre rule).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactdgn.gaussian import interval_stats, log_interval_mass, log_mass, truncated_moments


def _mp(x: float):
    if x == np.inf:
        return mp.inf
    if x == -np.inf:
        return mp.ninf
    return mp.mpf(x)


def mp_interval(lo: float, hi: float, dps: int = 40):
    """(log mass, mean, var) of N(0, 1) on [lo, hi] by mpmath quadrature (scaled)."""
    with mp.workdps(dps):
        a, b = _mp(lo), _mp(hi)
        s = a if a > 0 else (b if b < 0 else mp.mpf(0))
        scale = max(abs(s), mp.mpf(1))
        # split points: the interval ends and natural scales 1/scale around s
        pts = {a, b}
        for k in (1, 4, 16, 64):
            for p in (s + k / scale, s - k / scale):
                if a < p < b:
                    pts.add(p)
        pts = sorted(pts)

        def integ(f):
            return mp.quad(lambda u: f(u) * mp.exp(-(u * u - s * s) / 2), pts)

        Z = integ(lambda u: 1)
        mean = integ(lambda u: u - s) / Z + s
        var = integ(lambda u: (u - mean) ** 2) / Z
        logm = -s * s / 2 - mp.log(2 * mp.pi) / 2 + mp.log(Z)
        return float(logm), float(mean), float(var)


CASES = [
    (-np.inf, np.inf),
    (0.0, np.inf),
    (-np.inf, 0.3),
    (1.0, 2.0),
    (-1.0, 1.0),
    (-0.2, 5.0),
    (2.0, 3.0),
    (-3.0, -2.0),
    (3.5, np.inf),
    (3.9, 4.1),
    (5.0, 5.001),
    (0.3, 0.31),
    (1e-3, 2e-3),
    (-1e-12, 1e-12),
    (8.0, 8.5),
    (40.0, np.inf),
    (40.0, 41.0),
    (-np.inf, -40.0),
    (30.0, 30.0 + 1e-9),
    (38.5, 39.0),
    (100.0, 101.0),
    (-5.0, -4.999999),
    (1e4, np.inf),
    (1e4, 1e4 + 1e-3),
    (-1e4 - 1.0, -1e4),
]


@pytest.mark.parametrize(("lo", "hi"), CASES)
def test_interval_stats_vs_mpmath(lo, hi):
    lm, mean, var = interval_stats(np.array([lo]), np.array([hi]))
    rl, rm, rv = mp_interval(lo, hi)
    # relative accuracy of the mass (= absolute in log), and relative in log far out
    assert abs(lm[0] - rl) <= 1e-13 + 2e-16 * abs(rl)
    sd = math.sqrt(rv)
    assert abs(mean[0] - rm) <= 1e-13 * max(abs(rm), sd)
    assert abs(var[0] - rv) <= 1e-12 * rv


@pytest.mark.parametrize(("lo", "hi"), CASES)
def test_log_interval_mass_vs_mpmath(lo, hi):
    lm, err = log_interval_mass(np.array([lo]), np.array([hi]))
    rl = mp_interval(lo, hi)[0]
    assert abs(lm[0] - rl) <= 1e-14 + 2e-16 * abs(rl)
    assert err[0] >= 0


# Midpoints x half-widths that straddle each branch switch of log_interval_mass (series at
# h max(1, |m|) <= 5e-4, 8-node Gauss-Legendre up to 0.5, closed forms above) on both sides of
# the origin and far out.
_MIDS = [-1e4, -40.0, -6.0, -1.0, -1e-3, 0.0, 0.37, 2.0, 3.99, 4.0, 8.0, 300.0]
_SPREADS = [1e-12, 4.9e-4, 5.1e-4, 0.01, 0.49, 0.51, 2.0]


@pytest.mark.parametrize("m", _MIDS)
def test_log_interval_mass_branch_switches(m):
    h = np.array([s / max(1.0, abs(m)) for s in _SPREADS])
    lo, hi = m - h, m + h
    lm, _ = log_interval_mass(lo, hi)
    for i in range(len(h)):
        if not lo[i] < hi[i]:  # the half-width is below the spacing of doubles at m
            assert lm[i] == -np.inf
            continue
        rl = mp_interval(lo[i], hi[i])[0]
        assert abs(lm[i] - rl) <= 2e-14 * max(1.0, abs(rl)), (lo[i], hi[i], lm[i], rl)


@pytest.mark.parametrize("lo", [0.0, 1e-9, 0.3, 2.5, 4.999999, 5.0, 5.000001, 7.0])
@pytest.mark.parametrize("width", [0.21, 0.6, 1.0, 3.0, 40.0, np.inf])
def test_log_interval_mass_moderate_and_upper_forms(lo, width):
    """Both sides of the switch at a lower end of 5 sd (two ndtr calls below, the Mills-ratio
    form above), and the reflected interval."""
    hi = lo + width
    lm, _ = log_interval_mass(np.array([lo, -hi]), np.array([hi, -lo]))
    rl = mp_interval(lo, hi)[0]
    for v in lm:
        assert abs(v - rl) <= 2e-14 * max(1.0, abs(rl)), (lo, hi, v, rl)


def test_log_interval_mass_agrees_with_interval_stats():
    rng = np.random.default_rng(5)
    lo = rng.normal(0, 5, 4000)
    hi = lo + rng.exponential(rng.choice([1e-6, 1e-2, 1.0, 10.0], 4000))
    lo[:50], hi[50:100] = -np.inf, np.inf
    a, _ = log_interval_mass(lo, hi)
    b, _, _ = interval_stats(lo, hi)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    empty, _ = log_interval_mass(np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    assert np.all(empty == -np.inf)


def test_thin_interval_far_out_is_relative_accurate():
    # [30, 30 + 1e-9]: the naive difference of log_ndtr values has ~5e-7 relative error.
    lo, hi = 30.0, 30.0 + 1e-9
    lm, mean, var = interval_stats(lo, hi)
    with mp.workdps(50):
        a, b = mp.mpf(lo), mp.mpf(hi)
        ref = mp.log(mp.ncdf(-a) - mp.ncdf(-b))
    assert abs(float(lm) - float(ref)) < 1e-13
    assert lo < float(mean) < lo + 0.5 * (hi - lo)  # density decreasing: mean left of centre
    assert abs(float(var) - (hi - lo) ** 2 / 12) < 1e-3 * (hi - lo) ** 2 / 12


def test_empty_and_reversed_intervals():
    lm, mean, var = interval_stats(np.array([1.0, 2.0, np.inf]), np.array([1.0, 1.0, np.inf]))
    assert np.all(lm == -np.inf)
    assert np.all(np.isnan(mean)) and np.all(np.isnan(var))


def test_api_rows_padding_and_infeasible():
    # rows: u <= 2, -u <= 1 (u >= -1), padding; a second pair with a -inf offset;
    # a third with an infeasible zero row; a fourth with only padding (whole line).
    n = np.array(
        [
            [[1.0], [-1.0], [0.0]],
            [[1.0], [-1.0], [0.0]],
            [[1.0], [0.0], [0.0]],
            [[0.0], [0.0], [0.0]],
        ]
    )
    c = np.array(
        [
            [2.0, 1.0, np.inf],
            [2.0, -np.inf, np.inf],
            [2.0, -1.0, np.inf],
            [np.inf, np.inf, np.inf],
        ]
    )
    tm = truncated_moments(n, c)
    rl, rm, rv = mp_interval(-1.0, 2.0)
    assert abs(tm.log_mass[0] - rl) < 1e-14
    assert abs(tm.mean[0, 0] - rm) < 1e-14
    assert abs(tm.cov[0, 0, 0] - rv) < 1e-14
    assert tm.log_mass[1] == -np.inf and tm.log_mass[2] == -np.inf
    assert tm.log_mass[3] == 0.0 and tm.mean[3, 0] == 0.0 and tm.cov[3, 0, 0] == 1.0
    assert np.all(np.isnan(tm.mean[1:3]))
    np.testing.assert_array_equal(log_mass(n, c), tm.log_mass)
    assert tm.mean.shape == (4, 1) and tm.cov.shape == (4, 1, 1) and tm.error.shape == (4,)
    assert np.all(tm.error[[0, 3]] < 1e-13) and np.all(tm.error[[0, 3]] >= 0)


def test_api_non_unit_normals_are_normalised():
    n = np.array([[[2.0], [-0.5]]])
    c = np.array([[4.0, 0.5]])  # u <= 2, u >= -1
    rl, _, _ = mp_interval(-1.0, 2.0)
    assert abs(log_mass(n, c)[0] - rl) < 1e-14


finite = st.floats(-60.0, 60.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(finite, st.floats(1e-9, 30.0), st.floats(0.0, 1.0))
def test_split_additivity(lo, width, frac):
    """m[lo, hi] = m[lo, mid] + m[mid, hi], in log space (relative), also far out."""
    hi = lo + width
    mid = lo + frac * width
    if not (lo < mid < hi):
        return
    lm = interval_stats(np.array([lo, lo, mid]), np.array([hi, mid, hi]))[0]
    total = np.logaddexp(lm[1], lm[2])
    assert abs(total - lm[0]) <= 1e-13 + 1e-15 * abs(lm[0])


@settings(max_examples=80, deadline=None)
@given(finite, st.floats(1e-9, 30.0), st.floats(0.0, 1.0))
def test_log_interval_mass_split_additivity(lo, width, frac):
    """The same additivity for the fast mass-only path, whose branches differ by piece."""
    hi = lo + width
    mid = lo + frac * width
    if not (lo < mid < hi):
        return
    lm, _ = log_interval_mass(np.array([lo, lo, mid]), np.array([hi, mid, hi]))
    total = np.logaddexp(lm[1], lm[2])
    assert abs(total - lm[0]) <= 1e-13 + 1e-15 * abs(lm[0])
    lr, _ = log_interval_mass(np.array([-hi]), np.array([-lo]))  # reflection
    assert abs(lr[0] - lm[0]) <= 1e-14 * max(1.0, abs(lm[0]))


@settings(max_examples=40, deadline=None)
@given(finite, st.floats(1e-6, 30.0))
def test_reflection_symmetry(lo, width):
    hi = lo + width
    a = interval_stats(lo, hi)
    b = interval_stats(-hi, -lo)
    assert abs(a[0] - b[0]) <= 1e-14 * (1 + abs(a[0]))
    assert abs(a[1] + b[1]) <= 1e-14 * (1 + abs(a[1]))
    assert abs(a[2] - b[2]) <= 1e-13 * a[2]


def test_log_interval_mass_shapes_must_match():
    """Ends of different shapes crashed with a numpy boolean-index IndexError."""
    lm, err = log_interval_mass(-1.0, 1.0)
    assert lm.shape == err.shape == ()
    msg = r"lo and hi must have the same shape, got \(1,\) and \(2,\)"
    with pytest.raises(ValueError, match=msg):
        log_interval_mass(np.array([-1.0]), np.array([1.0, 2.0]))


@pytest.mark.parametrize("d", [1, 3, 4])
@pytest.mark.parametrize(
    ("scale", "centre", "half"),
    [(3.0, 12.0, 5e-7), (3.0, -0.7, 5e-7), (850.0, 1.3, 5e-10), (0.1, 2.0, 5e-7)],
)
def test_rows_other_than_unit_have_their_bounds_rounding_in_the_estimate(d, scale, centre, half):
    """Slabs ``+-s u_0 <= s (x +- h)``: the bounds ``c / s`` are rounded (one ulp of a bound
    12 sd out moves the log mass of a 1e-6 slab by ~1e-9), so the error estimate must cover
    that (it said 6e-13 for an error of 1.2e-9, and 1.7e-13 for 4.2e-8 with rows +-850). The
    reference: the exact bounds ``c / s`` of the float offsets, in mpmath."""
    n = np.zeros((1, 2, d))
    n[0, :, 0] = [scale, -scale]
    c = np.array([[scale * (centre + half), -scale * (centre - half)]])
    with mp.workdps(60):
        hi = mp.mpf(c[0, 0]) / mp.mpf(scale)
        lo = -mp.mpf(c[0, 1]) / mp.mpf(scale)
        v = (mp.erfc(lo / mp.sqrt(2)) - mp.erfc(hi / mp.sqrt(2))) / 2
        ref = mp.log(v)
    for lm, err in (log_mass(n, c, return_error=True), truncated_moments(n, c)[::3]):
        gap = abs(float(mp.mpf(lm[0]) - ref))
        assert gap <= err[0], (gap, err[0])
        assert err[0] <= 100 * gap + 1e-12  # and not uselessly loose
    # unit rows: the bounds are the offsets, exactly, and the estimate stays the kernel's
    lm, err = log_mass(n / scale, c / scale, return_error=True)
    if d == 1:
        assert err[0] < 1e-12
