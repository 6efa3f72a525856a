"""d >= 3: polyhedron masses and moments against independent references.

References (none uses the facet recursion, the edge formula, Owen's T or the divergence theorem):

* exact anchors: half-space = Phi(c) (``log_ndtr``); general trivariate orthant at the mean =
  1/8 + (asin r12 + asin r13 + asin r23) / (4 pi); dihedral wedge at the mean = angle / 2 pi;
  a rotated box = product of 1-D masses (``log_ndtr`` in the tails) and of 1-D truncated-normal
  moments (50-digit mpmath, ``tests/oracles``); a two-plane wedge = bivariate normal CDF by
  1-D quad.
* ``ref_log_mass``: nested scipy ``quad`` over slices in a frame rotated so that ``x1`` points
  at the polytope's closest point (distance ``D``), with ``exp(D^2/2)`` factored out; the inner
  z-integral is ``Phi(zhi) - Phi(zlo)`` (scipy ``ndtr``), all breakpoints at vertices.
* Monte Carlo with error bars for the moments near the mean; additivity under a split by a
  plane; rotation invariance (hypothesis).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special

from exactdgn.gaussian import log_mass, truncated_moments
from exactdgn.gaussian._polytope import log_mass_nd, truncated_moments_nd
from tests.oracles.boxes import rotated_box
from tests.oracles.gaussian_mp import interval_ref

EPS = np.finfo(float).eps


# ------------------------------------------------------------------------------------------
# helpers and references
# ------------------------------------------------------------------------------------------
def rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def box(lo, hi):
    d = len(lo)
    n, c = [], []
    for i in range(d):
        e = np.zeros(d)
        e[i] = 1.0
        n += [e, -e]
        c += [hi[i], -lo[i]]
    return np.array(n), np.array(c)


def log_interval(lo, hi):
    """log(Phi(hi) - Phi(lo)) with scipy's log_ndtr (tail-safe)."""
    if lo > 0:
        a, b = special.log_ndtr(-lo), special.log_ndtr(-hi)
    else:
        a, b = special.log_ndtr(hi), special.log_ndtr(lo)
    return a + math.log1p(-math.exp(b - a))


def box_ref(lo, hi):
    return sum(log_interval(a, b) for a, b in zip(lo, hi, strict=True))


def rand_polytope(rng, center, rad, F=10, d=3):
    n = rng.normal(size=(F, d))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    c = n @ np.asarray(center, float) + rad * rng.uniform(0.3, 1.5, size=F)
    return n, c


def one(n, c):
    lm, err = log_mass_nd(np.asarray(n, float)[None], np.asarray(c, float)[None])
    return float(lm[0]), float(err[0])


def _closest_point(n, c):
    res = optimize.linprog(
        np.r_[np.zeros(3), -1.0],
        A_ub=np.c_[n, np.ones(len(c))],
        b_ub=c,
        bounds=[(None, None)] * 3 + [(0, 1)],
        method="highs",
    )
    cons = {"type": "ineq", "fun": lambda u: c - n @ u, "jac": lambda u: -n}
    r = optimize.minimize(
        lambda u: u @ u,
        res.x[:3],
        jac=lambda u: 2 * u,
        constraints=[cons],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    p = r.x
    act = np.flatnonzero(c - n @ p < 1e-6 * (1.0 + np.abs(c)))
    if act.size:  # polish on the active set: least-norm point of {n_A u = c_A}
        q = np.linalg.lstsq(n[act], c[act], rcond=None)[0]
        if np.all(n @ q <= c + 1e-12 * (1.0 + np.abs(c))):
            p = q
    return p


def _imass(lo, hi):
    if lo >= hi:
        return 0.0
    if lo > 0:
        return special.ndtr(-lo) - special.ndtr(-hi)
    if hi < 0:
        return special.ndtr(hi) - special.ndtr(lo)
    return 1.0 - special.ndtr(lo) - special.ndtr(-hi)


def _merge(xs, tol):
    out = []
    for x in sorted(xs):
        if not out or x - out[-1] > tol:
            out.append(x)
    return out


def ref_log_mass(n, c, epsrel=1e-12):
    """log P(u in {n u <= c}), u ~ N(0, I_3), by nested adaptive scipy quadrature."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return _ref(np.asarray(n, float), np.asarray(c, float), epsrel)


def _ref(n, c, epsrel):
    inside = np.all(c > 0)
    p = np.zeros(3) if inside else _closest_point(n, c)
    D = float(np.linalg.norm(p))
    if D > 1e-9:
        R = np.linalg.qr(np.c_[p / D, np.eye(3)])[0]
        R[:, 0] *= np.sign(R[:, 0] @ p)
    else:
        D, R = 0.0, np.eye(3)
    m = n @ R  # rows in the rotated frame x = R^T u
    x1_lo = D - 1e-6 * (1.0 + D) if D > 0 else -40.0
    lim = D + 40.0 / max(D, 1.0) if D > 0 else 40.0
    vx = []
    for i, j, k in itertools.combinations(range(len(c)), 3):
        A = m[[i, j, k]]
        if abs(np.linalg.det(A)) < 1e-12:
            continue
        v = np.linalg.solve(A, c[[i, j, k]])
        if np.all(m @ v <= c + 1e-9):
            vx.append(min(max(v[0], x1_lo), lim))
    bps = _merge(vx, 1e-6)

    def inner(x1):
        r = c - m[:, 0] * x1
        a, b = m[:, 1], m[:, 2]
        xs = []
        for i, j in itertools.combinations(range(len(c)), 2):
            det = a[i] * b[j] - a[j] * b[i]
            if abs(det) < 1e-14:
                continue
            x2 = (r[i] * b[j] - r[j] * b[i]) / det
            x3 = (a[i] * r[j] - a[j] * r[i]) / det
            if np.all(a * x2 + b * x3 <= r + 1e-9):
                xs.append(min(max(x2, -10.0), 10.0))
        up, dn = b > 1e-14, b < -1e-14

        def g(x2):
            rr = r - a * x2
            if np.any(rr[~up & ~dn] < 0):
                return 0.0
            zhi = np.min(rr[up] / b[up]) if up.any() else np.inf
            zlo = np.max(rr[dn] / b[dn]) if dn.any() else -np.inf
            return math.exp(-0.5 * x2 * x2) / math.sqrt(2 * math.pi) * _imass(zlo, zhi)

        e = [-10.0, *_merge(xs, 1e-9), 10.0]
        return sum(
            integrate.quad(g, u, v, epsabs=1e-15, epsrel=epsrel, limit=200)[0]
            for u, v in itertools.pairwise(e)
            if v > u
        )

    def f(x1):
        return math.exp(-0.5 * (x1 - D) * (x1 + D)) / math.sqrt(2 * math.pi) * inner(x1)

    e = [x1_lo, *[x for x in bps if x > x1_lo], lim]
    tot = sum(
        integrate.quad(f, u, v, epsabs=0, epsrel=epsrel, limit=200)[0]
        for u, v in itertools.pairwise(e)
        if v > u
    )
    return -0.5 * D * D + math.log(tot)


def covered(lm, err, ref, ref_tol=0.0):
    """The reported error covers the true error (up to the reference's own uncertainty)."""
    return abs(lm - ref) <= err + ref_tol + 4 * EPS * (1.0 + abs(ref))


# ------------------------------------------------------------------------------------------
# exact anchors
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [3.0, 0.5, 0.0, -0.5, -3.0, -30.0, -300.0])
def test_half_space(c):
    rng = np.random.default_rng(0)
    n = rng.normal(size=3)
    n /= np.linalg.norm(n)
    pad = np.zeros((2, 3))
    lm, err = one(np.r_[n[None], pad], np.r_[c, np.inf, np.inf])
    ref = special.log_ndtr(c)
    assert covered(lm, err, ref)
    assert err < 1e-12 * (1 + abs(ref))


@pytest.mark.parametrize("seed", range(6))
def test_orthant_at_mean(seed):
    """General trivariate orthant {N u <= 0}: 1/8 + sum asin(r_ij) / (4 pi)."""
    rng = np.random.default_rng(seed)
    N = rng.normal(size=(3, 3))
    N /= np.linalg.norm(N, axis=1, keepdims=True)
    C = N @ N.T
    ref = 1 / 8 + (math.asin(C[0, 1]) + math.asin(C[0, 2]) + math.asin(C[1, 2])) / (4 * math.pi)
    lm, err = one(N, np.zeros(3))
    assert covered(lm, err, math.log(ref))
    assert abs(lm - math.log(ref)) < 1e-12


@pytest.mark.parametrize("angle", [0.3, 1.0, math.pi / 2, 2.5, 3.0])
def test_dihedral_wedge_at_mean(angle):
    rng = np.random.default_rng(1)
    R = rotation(rng, 3)
    # wedge of opening `angle` around the x-axis direction
    n1 = np.array([-math.sin(angle / 2), math.cos(angle / 2), 0.0])
    n2 = np.array([-math.sin(angle / 2), -math.cos(angle / 2), 0.0])
    lm, err = one(np.array([n1, n2]) @ R.T, np.zeros(2))
    ref = math.log(angle / (2 * math.pi))
    assert covered(lm, err, ref)


@pytest.mark.parametrize("c1,c2,rho", [(1.0, -0.5, 0.3), (-4.0, -5.0, -0.6), (-12.0, -10.0, 0.8)])
def test_wedge_bivariate(c1, c2, rho):
    """Two planes (an unbounded wedge, mean outside): the bivariate normal CDF by 1-D quad."""
    rng = np.random.default_rng(2)
    R = rotation(rng, 3)
    n1 = np.array([1.0, 0.0, 0.0])
    n2 = np.array([rho, math.sqrt(1 - rho * rho), 0.0])
    lm, err = one(np.array([n1, n2]) @ R.T, np.array([c1, c2]))
    # P(X1 <= c1, X2 <= c2), X2 = rho X1 + sqrt(1-rho^2) Z; scaled by the peak of the integrand
    s = math.sqrt(1 - rho * rho)

    def lf(x):
        return special.log_ndtr((c2 - rho * x) / s) - 0.5 * x * x

    xs = np.linspace(-60, c1, 20001)
    mx = np.max(lf(xs))
    val = integrate.quad(
        lambda x: math.exp(lf(x) - mx), -60, c1, epsabs=0, epsrel=1e-13, limit=500, points=[c1]
    )[0]
    ref = mx + math.log(val) - 0.5 * math.log(2 * math.pi)
    assert covered(lm, err, ref, ref_tol=1e-12 * (1 + abs(ref)))


BOXES = [
    ([-1, -1, -1], [1, 1, 1]),
    ([0.5, -2, -0.3], [1.5, 0.1, 3]),
    ([3, 4, 5], [4, 6, 7]),
    ([10, -1, -1], [11, 1, 1]),
    ([20, 20, -1], [21, 25, 1]),
    ([-np.inf, -1, 0.2], [np.inf, 2, np.inf]),
    ([30, 30, 30], [np.inf] * 3),
    ([1e-9, 1e-9, -1], [1, 1, 1]),
    ([-1e-7, 1e-9, -1], [2, 1e-3, 1]),
    ([-40, 35, -np.inf], [-38, np.inf, 0]),
]


@pytest.mark.parametrize("lo,hi", BOXES)
def test_rotated_box(lo, hi):
    rng = np.random.default_rng(3)
    n, c = box(lo, hi)
    R = rotation(rng, 3)
    lm, err = one(n @ R.T, c)
    ref = box_ref(lo, hi)
    assert covered(lm, err, ref)
    assert abs(lm - ref) < 1e-11 * (1 + abs(ref))


def test_error_estimate_covers_true_error():
    """Many random rotated boxes (thin, wide, near and far): |true error| <= reported error."""
    rng = np.random.default_rng(4)
    P = 300
    normals, offsets, refs, wmin = [], [], [], []
    for i in range(P):
        ctr = rng.normal(size=3) * rng.choice([0.3, 3.0, 12.0])
        w = 10 ** rng.uniform(-6, 1, size=3) if i % 2 else rng.uniform(0.2, 3.0, size=3)
        wmin.append(w.min())
        lo, hi = ctr - w / 2, ctr + w / 2
        n, c = box(lo, hi)
        normals.append(n @ rotation(rng, 3).T)
        offsets.append(c)
        refs.append(box_ref(lo, hi))
    lm, err = log_mass_nd(np.array(normals), np.array(offsets))
    refs = np.array(refs)
    true = np.abs(lm - refs)
    assert np.all(true <= err + 4 * EPS * (1 + np.abs(refs)))
    # the estimate is informative where nothing cancels badly (thin boxes lose ~1/width)
    fat = np.array(wmin) > 0.1
    assert fat.sum() > 20
    assert np.all(err[fat] < 1e-11 * (1 + np.abs(refs[fat])))


# ------------------------------------------------------------------------------------------
# generic polytopes: slice quadrature, additivity, invariance
# ------------------------------------------------------------------------------------------
ORACLE_CASES = [
    ((0.2, 0.1, -0.3), 1.0),
    ((2.0, 1.0, 0.0), 0.5),
    ((6.0, 3.0, 1.0), 1.0),
    ((15.0, 5.0, 0.0), 2.0),
]


@pytest.mark.parametrize("center,rad", ORACLE_CASES)
def test_random_polytope_vs_slice_quadrature(center, rad):
    rng = np.random.default_rng(5)
    n, c = rand_polytope(rng, center, rad)
    lm, err = one(n, c)
    ref = ref_log_mass(n, c)
    assert covered(lm, err, ref, ref_tol=1e-11 * (1 + abs(ref)))
    assert abs(lm - ref) < 1e-11 * (1 + abs(ref))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_random_polytope_vs_slice_quadrature_many(seed):
    rng = np.random.default_rng(100 + seed)
    center = rng.normal(size=3) * rng.choice([0.2, 2.0, 8.0, 25.0])
    rad = rng.choice([0.05, 0.5, 2.0])
    n, c = rand_polytope(rng, center, rad, F=int(rng.integers(5, 13)))
    lm, err = one(n, c)
    if not np.isfinite(lm):
        pytest.skip("empty random polytope")
    ref = ref_log_mass(n, c)
    assert covered(lm, err, ref, ref_tol=1e-10 * (1 + abs(ref)))


@pytest.mark.parametrize("seed", range(8))
def test_additivity_under_split(seed):
    """m(P) = m(P and a.u <= s) + m(P and a.u >= s), to the reported errors."""
    rng = np.random.default_rng(200 + seed)
    center = rng.normal(size=3) * [0.3, 3.0, 10.0, 30.0][seed % 4]
    n, c = rand_polytope(rng, center, 1.5, F=9)
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    s = a @ center + rng.uniform(-0.3, 0.3)
    whole = (n, c)
    left = (np.r_[n, a[None]], np.r_[c, s])
    right = (np.r_[n, -a[None]], np.r_[c, -s])
    lm, err = log_mass_nd(
        np.array([np.r_[n, np.zeros((1, 3))], left[0], right[0]]),
        np.array([np.r_[c, np.inf], left[1], right[1]]),
    )
    assert np.all(np.isfinite(lm)), whole
    total = np.logaddexp(lm[1], lm[2])
    w1, w2 = np.exp(lm[1] - total), np.exp(lm[2] - total)
    assert abs(total - lm[0]) <= err[0] + w1 * err[1] + w2 * err[2] + 1e-15 * (1 + abs(lm[0]))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.3, 2.0, 6.0, 20.0]),
    F=st.integers(4, 11),
)
def test_rotation_invariance(seed, scale, F):
    rng = np.random.default_rng(seed)
    n, c = rand_polytope(rng, rng.normal(size=3) * scale, rng.uniform(0.2, 2.0), F=F)
    R = rotation(rng, 3)
    lm, err = log_mass_nd(np.array([n, n @ R.T]), np.array([c, c]))
    if np.isfinite(lm[0]) or np.isfinite(lm[1]):
        assert abs(lm[0] - lm[1]) <= err[0] + err[1] + 4 * EPS * (1 + abs(lm[0]))


# ------------------------------------------------------------------------------------------
# special rows and shapes
# ------------------------------------------------------------------------------------------
def test_special_cases():
    e = np.eye(3)
    z = np.zeros(3)
    normals = np.array(
        [
            [z, z, z],  # whole space
            [e[0], -e[0], z],  # empty slab (opposite rows, c1 + c2 < 0)
            [e[0], -e[0], z],  # flat slab (c1 + c2 = 0): measure zero
            [e[0], e[0], e[1]],  # duplicated row: same as the quadrant
            [e[0], e[1], 2.0 * e[2]],  # unnormalised row
            [e[0], z, z],  # -inf offset: empty
            [e[0], e[0], z],  # parallel rows, the tighter one counts
        ]
    )
    offsets = np.array(
        [
            [np.inf] * 3,
            [-1.0, -0.5, np.inf],
            [1.0, -1.0, np.inf],
            [0.5, 0.5, -0.2],
            [0.5, -0.2, 2.0],
            [-np.inf, np.inf, np.inf],
            [0.7, -2.0, np.inf],
        ]
    )
    lm, err = log_mass_nd(normals, offsets)
    assert lm[0] == 0.0
    assert lm[1] == -np.inf and lm[2] == -np.inf and lm[5] == -np.inf
    ref3 = special.log_ndtr(0.5) + special.log_ndtr(-0.2)
    assert covered(lm[3], err[3], ref3)
    ref4 = special.log_ndtr(0.5) + special.log_ndtr(-0.2) + special.log_ndtr(1.0)
    assert covered(lm[4], err[4], ref4)
    assert covered(lm[6], err[6], special.log_ndtr(-2.0))
    tm = truncated_moments_nd(normals, offsets)
    np.testing.assert_allclose(tm.mean[0], 0.0, atol=0)
    np.testing.assert_allclose(tm.cov[0], np.eye(3), atol=0)
    assert np.all(np.isnan(tm.mean[1]))


def test_public_dispatch():
    rng = np.random.default_rng(6)
    n, c = box([-1, 0.5, -2], [1, 2, 0])
    R = rotation(rng, 3)
    lm = log_mass((n @ R.T)[None], c[None])
    tm = truncated_moments((n @ R.T)[None], c[None])
    ref = box_ref([-1, 0.5, -2], [1, 2, 0])
    assert abs(lm[0] - ref) < 1e-13
    assert abs(tm.log_mass[0] - ref) < 1e-13
    assert tm.error[0] > 0


def test_shape_errors():
    with pytest.raises(ValueError):
        log_mass_nd(np.zeros((2, 3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        log_mass_nd(np.zeros((2, 3, 3)), np.zeros((2, 4)))
    lm, err = log_mass_nd(np.zeros((0, 3, 3)), np.zeros((0, 3)))
    assert lm.shape == (0,) and err.shape == (0,)


# ------------------------------------------------------------------------------------------
# moments
# ------------------------------------------------------------------------------------------
def box_moments(lo, hi, R):
    """Mean and covariance of ``N(0, I)`` on ``R [lo, hi]`` from the 1-D mpmath intervals."""
    stats_ = [interval_ref(a, b) for a, b in zip(lo, hi, strict=True)]
    mv = [s[1] for s in stats_]
    vv = [s[2] for s in stats_]
    return R @ np.array(mv), R @ np.diag(vv) @ R.T


@pytest.mark.parametrize(
    "lo,hi",
    [
        ([-1, -1, -1], [1, 1, 1]),
        ([0.5, -2, -0.3], [1.5, 0.1, 3]),
        ([10, -1, -1], [11, 1, 1]),
        ([6, -np.inf, 0], [np.inf, np.inf, 0.5]),
    ],
)
def test_moments_box(lo, hi):
    rng = np.random.default_rng(7)
    n, c = box(lo, hi)
    R = rotation(rng, 3)
    tm = truncated_moments_nd((n @ R.T)[None], c[None])
    m, C = box_moments(lo, hi, R)
    scale = 1.0 + np.linalg.norm(m) ** 2
    tol = 1e-12 * scale
    np.testing.assert_allclose(tm.mean[0], m, atol=tol)
    np.testing.assert_allclose(tm.cov[0], C, atol=tol * scale)
    np.testing.assert_allclose(tm.cov[0], tm.cov[0].T, atol=0)
    assert abs(tm.log_mass[0] - box_ref(lo, hi)) <= tm.error[0] + 1e-15


def test_moments_monte_carlo():
    rng = np.random.default_rng(8)
    n, c = rand_polytope(rng, [0.3, -0.2, 0.1], 1.2, F=9)
    tm = truncated_moments_nd(n[None], c[None])
    u = rng.normal(size=(2_000_000, 3))
    inside = np.all(u @ n.T <= c, axis=1)
    x = u[inside]
    p = inside.mean()
    assert abs(p - math.exp(tm.log_mass[0])) < 5 * math.sqrt(p * (1 - p) / u.shape[0])
    se_m = x.std(axis=0) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(axis=0) - tm.mean[0]) < 5 * se_m)
    C = np.cov(x.T)
    # standard error of a covariance entry ~ sqrt((C_ii C_jj + C_ij^2) / N)
    se_C = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / len(x))
    assert np.all(np.abs(C - tm.cov[0]) < 5 * se_C)
    assert np.all(np.linalg.eigvalsh(tm.cov[0]) > 0)


# ------------------------------------------------------------------------------------------
# d = 4 (small)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lo,hi",
    [
        ([-1, -1, -1, -1], [1, 1, 1, 1]),
        ([5, -1, -1, 3], [6, 1, 1, 4]),
        ([0, 0, 0, 0], [np.inf] * 4),
    ],
)
def test_d4_box(lo, hi):
    rng = np.random.default_rng(9)
    n, c = box(lo, hi)
    R = rotation(rng, 4)
    n, c = n @ R.T, c
    keep = np.isfinite(c)
    lm, err = log_mass_nd(n[keep][None], c[keep][None])
    ref = box_ref(lo, hi)
    assert covered(lm[0], err[0], ref)
    assert abs(lm[0] - ref) < 1e-11 * (1 + abs(ref))


def test_d4_moments_box():
    rng = np.random.default_rng(10)
    lo, hi = [0.5, -2, -0.3, 1], [1.5, 0.1, 3, 2]
    n, c = box(lo, hi)
    R = rotation(rng, 4)
    tm = truncated_moments_nd((n @ R.T)[None], c[None])
    m, C = box_moments(lo, hi, R)
    np.testing.assert_allclose(tm.mean[0], m, atol=1e-12)
    np.testing.assert_allclose(tm.cov[0], C, atol=1e-12)
    assert abs(tm.log_mass[0] - box_ref(lo, hi)) <= tm.error[0] + 1e-15


@pytest.mark.parametrize("w", [1e-3, 1e-4])
def test_d4_moments_of_small_boxes_off_the_mean(w):
    """A rotated 4-D box ``w`` wide, ~1 sd from the mean: the divergence form's covariance had
    negative variances (w = 1e-3: -5e-7 for a true 8e-8) or a sound-looking 1e-2 (w = 1e-4,
    true 8e-10, the mean 290 of the box's sd off). Small polytopes now take the cubature
    (``tests/gaussian/test_small_polytopes.py`` has them around the mean too), in a mixture
    whatever their weight. Reference: products of 1-D mpmath intervals (``scipy.stats.
    truncnorm``'s variance of such a thin interval is itself 3e-6 (w = 1e-3) to 4e-3 (1e-4)
    of it off, which an earlier version of this test took for the library's error)."""
    rng = np.random.default_rng(10)
    lo = np.array([-0.3, 0.2, 0.5, -1.0])
    n, c, ref_log_mass, m, C = rotated_box(lo, lo + w, rng)
    tm = truncated_moments_nd(n[None], c[None])
    var = w**2 / 12
    assert np.all(np.linalg.eigvalsh(tm.cov[0]) > 0)
    assert np.abs(tm.mean[0] - m).max() < 1e-10 * math.sqrt(var)
    assert np.abs(tm.cov[0] - C).max() < 1e-9 * var
    assert abs(tm.log_mass[0] - ref_log_mass) <= tm.error[0] + 1e-15
    both = truncated_moments(np.stack([n] * 2), np.stack([c] * 2), log_weight=np.array([-60.0, 0]))
    for i in range(2):
        np.testing.assert_array_equal(both.cov[i], tm.cov[0])


def test_d4_random_polytope_monte_carlo():
    rng = np.random.default_rng(11)
    n, c = rand_polytope(rng, [0.2, -0.1, 0.3, 0.0], 1.0, F=7, d=4)
    lm, err = log_mass_nd(n[None], c[None])
    u = rng.normal(size=(1_000_000, 4))
    p = np.all(u @ n.T <= c, axis=1).mean()
    assert abs(p - math.exp(lm[0])) < 5 * math.sqrt(p * (1 - p) / u.shape[0])
    assert err[0] < 1e-11


@pytest.mark.parametrize("d", [1, 2, 3])
def test_public_api_rejects_nan_and_takes_no_rows(d):
    """NaN in the normals or offsets (or an infinite normal) is an error, not an empty
    polyhedron (mass 0); ``F = 0`` rows is the whole space in every dimension (it crashed in
    numpy for d = 1 and d >= 3)."""
    n = np.zeros((2, 1, d))
    n[:, 0, 0] = 1.0
    c = np.array([[0.5], [np.nan]])
    for fun in (log_mass, truncated_moments):
        with pytest.raises(ValueError, match=r"offsets contain 1 NaN"):
            fun(n, c)
        bad = n.copy()
        bad[1, 0, 0] = np.nan
        with pytest.raises(ValueError, match=r"normals contain 1 NaN or infinite"):
            fun(bad, np.zeros((2, 1)))
        bad[1, 0, 0] = np.inf
        with pytest.raises(ValueError, match=r"normals contain 1 NaN or infinite"):
            fun(bad, np.zeros((2, 1)))
    empty_n, empty_c = np.zeros((2, 0, d)), np.zeros((2, 0))
    np.testing.assert_array_equal(log_mass(empty_n, empty_c), 0.0)
    tm = truncated_moments(empty_n, empty_c)
    np.testing.assert_array_equal(tm.log_mass, 0.0)
    np.testing.assert_allclose(tm.mean, 0.0, atol=1e-15)
    np.testing.assert_allclose(tm.cov, np.broadcast_to(np.eye(d), (2, d, d)), atol=1e-15)


@pytest.mark.parametrize("d", [3, 4])
def test_repeated_rows_do_not_change_the_mass(d):
    """A row given twice (also scaled) is one constraint. With normals that are not exactly
    unit after normalisation, ``n . n`` rounds to ``1 +- eps`` and the two copies' in-plane
    offsets ``c - c n . n`` to ``+-eps c``: both facets were kept (counted twice) or both
    dropped, e.g. log mass -0.340 instead of -1.183 with an error estimate of 2e-14. The
    reference is the same polyhedron without the copies (and, for d = 3, slice quadrature)."""
    worst = 0.0
    for seed in range(12 if d == 3 else 4):
        rng = np.random.default_rng(seed)
        n, c = rand_polytope(rng, 0.5 * rng.normal(size=d), 1.0, F=6, d=d)
        lm, err = log_mass_nd(n[None], c[None])
        nd = np.r_[n, n[:2], 3.0 * n[2:3]]
        cd = np.r_[c, c[:2], 3.0 * c[2:3]]
        lmd, errd = log_mass_nd(nd[None], cd[None])
        assert covered(lmd[0], errd[0] + err[0], lm[0])
        worst = max(worst, abs(lmd[0] - lm[0]))
        tm, tmd = truncated_moments_nd(n[None], c[None]), truncated_moments_nd(nd[None], cd[None])
        np.testing.assert_allclose(tmd.mean, tm.mean, atol=1e-11)
        np.testing.assert_allclose(tmd.cov, tm.cov, atol=1e-11)
    assert worst < 1e-11
    if d == 3:
        assert covered(lmd[0], errd[0], ref_log_mass(n, c), 1e-11)
