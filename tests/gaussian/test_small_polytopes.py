"""Small and thin polyhedra in ``d = 3, 4``: mass and moments at any size (the cubature of
:mod:`exactdgn.gaussian._polytope_cubature`, the slices of :mod:`._polytope_thin` and
:func:`._polytope_tail.near_moments`).

The edge formula's signed terms are ``~1 / size`` times a small polyhedron's mass: a simplex
1e-6 across near the mean was 1.2 nats off (with an error estimate of 0.09) and one 1e-9 across
came out empty; the divergence form's covariance lost ``eps / size^4`` (a 1e-4 cube: 1e3 of its
own variance).  References: rotated boxes (products of 1-D mpmath intervals,
``tests/oracles/boxes.py``) and the quadrature oracle (``tests/oracles/polytope_quad.py``) on
simplices and random polyhedra; neither shares a formula with the cubature.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from exactdgn.gaussian import (
    TruncatedMoments,
    _polytope,
    _polytope_cubature,
    log_mass,
    truncated_moments,
)
from exactdgn.gaussian._rules import EPS
from tests.oracles.boxes import rotated_box, rotation, whitened_error
from tests.oracles.polytope_quad import polytope_ref


def _tiny_box(centre: float, size: float, seed: int = 0):
    """A rotated box ``size`` across whose centre is ``centre`` from the mean (an uneven box:
    the centre is not the box's own centre)."""
    rng = np.random.default_rng(seed)
    x = centre * np.array([0.6, -0.48, 0.64])
    lo = x - size * np.array([0.5, 0.3, 0.8])
    hi = x + size * np.array([0.5, 0.7, 0.2])
    return rotated_box(lo, hi, rng)


def _simplex(centre, size):
    """A simplex ``~size`` across next to the point ``centre`` (rows (4, 3), offsets (4,))."""
    n = np.random.default_rng(0).normal(size=(4, 3))
    n[3] = -n[:3].sum(axis=0)
    c = n @ np.asarray(centre, float) + size * np.linalg.norm(n, axis=1)
    return n, c


def _conditioning(centre: float, size: float) -> float:
    """The float rows define the box only to ``~eps |x|`` per face: ``~eps |x| / size`` of its
    mass and of its own spread (in the reference as in the library)."""
    return 16.0 * EPS * (1.0 + centre) / size


def _no_slices(monkeypatch):
    """Neither the variance test nor the cancellation test sends a polyhedron to the slices
    (nor does a divergence covariance with a negative variance)."""
    monkeypatch.setattr(_polytope, "_THIN_VAR", 0.0)
    monkeypatch.setattr(_polytope, "_THIN_RATIO", np.inf)

    def nothing_sliced(nu, cu, active, geo, rows):
        k, z = nu.shape[2], np.zeros(0)
        return rows[:0], TruncatedMoments(z, np.zeros((0, k)), np.zeros((0, k, k)), z)

    monkeypatch.setattr(_polytope, "_thin_moments", nothing_sliced)


@pytest.mark.parametrize("size", [1e-2, 1e-4, 1e-6, 1e-9, 1e-12])
@pytest.mark.parametrize("centre", [0.0, 0.7, 3.0])
def test_tiny_boxes_match_the_interval_products(centre, size):
    """Log mass, mean and covariance of boxes 1e-2 to 1e-12 across, around the mean and 0.7
    and 3 sd out, within the input's own conditioning; the error estimate covers the log
    mass's error and is not vacuous."""
    n, c, log_mass, mean, cov = _tiny_box(centre, size)
    tm = truncated_moments(n[None], c[None])
    cond = _conditioning(centre, size)
    assert abs(tm.log_mass[0] - log_mass) <= tm.error[0] + cond
    assert tm.error[0] <= 1e-13 + 4.0 * cond
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= 1e-11 + cond


@pytest.mark.parametrize("size", [1e-2, 1e-4, 1e-6])
@pytest.mark.parametrize("centre", [(0.1, -0.2, 0.05), (1.5, -2.0, 1.0)])
def test_tiny_simplices_match_the_quadrature_oracle(centre, size):
    n, c = _simplex(centre, size)
    ref = polytope_ref(n, c)
    tm = truncated_moments(n[None], c[None])
    assert abs(tm.log_mass[0] - ref.log_mass) <= tm.error[0] + 1e-13
    cond = _conditioning(float(np.linalg.norm(centre)), size)
    assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) <= 1e-11 + cond


@pytest.mark.parametrize("size", [1e-9, 1e-12])
def test_simplices_below_the_oracle_scale_to_the_volume(size):
    """Below the oracle's resolution the mass is ``volume * phi(centroid)`` to ``O(size^2)``;
    from 1e-9 to 1e-12 the log mass drops by exactly ``3 log(1e3)`` (it was -inf)."""
    n, c = _simplex((0.1, -0.2, 0.05), 1e-6)
    big = truncated_moments(n[None], c[None]).log_mass[0]
    n, c = _simplex((0.1, -0.2, 0.05), size)
    tm = truncated_moments(n[None], c[None])
    expected = big + 3.0 * np.log(size / 1e-6)
    assert abs(tm.log_mass[0] - expected) <= tm.error[0] + 1e-10
    assert tm.error[0] <= 1e-3 * size / 1e-12


def test_without_the_cubature_the_same_polyhedra_are_wrong(monkeypatch):
    """The checks above are not vacuous: the edge formula and the divergence form alone get
    the 1e-6 simplex's log mass and the 1e-4 box's covariance wrong."""
    n, c = _simplex((0.1, -0.2, 0.05), 1e-6)
    ref = polytope_ref(n, c)
    bn, bc, _, bmean, bcov = _tiny_box(0.7, 1e-4)
    monkeypatch.setattr(_polytope, "SMALL_SPREAD", -1.0)
    _no_slices(monkeypatch)  # (the thin slices would take both)
    tm = truncated_moments(n[None], c[None])
    assert not abs(tm.log_mass[0] - ref.log_mass) < 0.1
    tm = truncated_moments(bn[None], bc[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], bmean, bcov) < 1.0


def _random_small(rng, m):
    """``m`` random bounded polyhedra (4-8 rows: a rotated tetrahedron's and random ones)
    1e-3 to 0.5 across, 0 to 2 sd from the mean."""
    F = 8
    n = rng.normal(size=(m, F, 3))
    tetra = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    n[:, :4] = np.einsum("fk,pkl->pfl", tetra, np.stack([rotation(rng, 3) for _ in range(m)]))
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    centre = rng.normal(size=(m, 3))
    centre *= (rng.uniform(0.0, 2.0, size=m) / np.linalg.norm(centre, axis=1))[:, None]
    size = 10.0 ** rng.uniform(-3.0, -0.3, size=m)
    c = np.einsum("pfk,pk->pf", n, centre) + size[:, None] * rng.uniform(0.2, 1.0, size=(m, F))
    drop = np.arange(F)[None, :] >= rng.integers(4, F + 1, size=m)[:, None]
    n[drop] = 0.0
    c[drop] = np.inf
    return n, c


def _with_nodes(monkeypatch, n, c, nodes):
    monkeypatch.setattr(
        _polytope_cubature,
        "_n_nodes",
        lambda s, b: (np.full(s.shape, nodes), np.full(s.shape, nodes)),
    )
    tm = truncated_moments(n, c)
    monkeypatch.undo()
    return tm


def _rule_error(tm, ref):
    fin = np.isfinite(ref.log_mass)
    mass = np.abs(tm.log_mass[fin] - ref.log_mass[fin]).max()
    moments = max(
        whitened_error(tm.mean[i], tm.cov[i], ref.mean[i], ref.cov[i]) for i in np.flatnonzero(fin)
    )
    return mass, moments


def test_random_small_polyhedra_match_the_quadrature_oracle():
    n, c = _random_small(np.random.default_rng(2), 6)
    tm = truncated_moments(n, c)
    for i in range(n.shape[0]):
        rows = np.isfinite(c[i])
        ref = polytope_ref(n[i, rows], c[i, rows])
        assert abs(tm.log_mass[i] - ref.log_mass) <= tm.error[i] + 1e-13
        assert whitened_error(tm.mean[i], tm.cov[i], ref.mean, ref.cov) <= 1e-10


def test_a_small_polyhedron_keeps_its_bits_in_any_batch():
    """Rows are independent of their block: a tiny box alone, and among other polyhedra."""
    bn, bc, *_ = _tiny_box(0.7, 1e-6)
    n, c = _random_small(np.random.default_rng(3), 40)
    pad = n.shape[1] - bn.shape[0]
    N = np.concatenate([n[:20], np.pad(bn, ((0, pad), (0, 0)))[None], n[20:]])
    C = np.concatenate([c[:20], np.pad(bc, (0, pad), constant_values=np.inf)[None], c[20:]])
    alone = truncated_moments(bn[None], bc[None])
    batch = truncated_moments(N, C)
    for a, b in zip(alone, batch, strict=True):
        np.testing.assert_array_equal(a[0], b[20])


# --------------------------------------------------------------------------------------------
# thin polyhedra (not small): slices across the thin direction (_polytope_thin)
# --------------------------------------------------------------------------------------------
def _slab(centre: float, width: float, seed: int = 0):
    """A rotated slab ``width x 2 x 2`` whose centre is ``centre`` from the mean."""
    x = centre * np.array([0.6, -0.48, 0.64])
    lo = x - np.array([0.5 * width, 0.9, 1.2])
    hi = x + np.array([0.5 * width, 1.1, 0.8])
    return rotated_box(lo, hi, np.random.default_rng(seed))


def _representable(cov) -> float:
    """A covariance matrix holds its smallest variance only to ``eps lambda_max / lambda_min``
    (the reference's as the library's)."""
    lam = np.linalg.eigvalsh(cov)
    return 16.0 * EPS * lam[-1] / lam[0]


def _assert_within_conditioning(tm, ref_log_mass, mean, cov, centre, width):
    """The log mass within its estimate plus the input's conditioning, the estimate not
    vacuous, mean and covariance within ``1e-10`` + the conditioning + the floor of a
    covariance that thin."""
    cond = _conditioning(centre, width)
    assert abs(tm.log_mass[0] - ref_log_mass) <= tm.error[0] + cond
    assert tm.error[0] <= 1e-12 + 4.0 * cond
    tol = 1e-10 + cond + _representable(cov)
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= tol


@pytest.mark.parametrize("width", [1e-3, 1e-5, 1e-7])
@pytest.mark.parametrize("centre", [0.0, 0.7, 3.0])
def test_thin_slabs_match_the_interval_products(centre, width):
    """Slabs 1e-3 to 1e-7 thin and 2 across (too wide for the cubature): log mass and moments
    within the input's conditioning (the divergence form was up to 5e7 of the slab's own
    variance off, see below)."""
    n, c, log_mass, mean, cov = _slab(centre, width)
    _assert_within_conditioning(
        truncated_moments(n[None], c[None]), log_mass, mean, cov, centre, width
    )


def test_without_the_slices_thin_slabs_are_wrong(monkeypatch):
    n, c, _, mean, cov = _slab(0.0, 1e-5)
    _no_slices(monkeypatch)
    tm = truncated_moments(n[None], c[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) < 1.0


def _random_slabs(rng, m, thin=(-5.0, -3.0), far=(0.0, 5.0), directions=1):
    """``m`` random bounded polyhedra squashed along ``directions`` random directions
    (``10**thin`` of their size, 0.3 to 3 across), ``far`` sd from the mean."""
    tetra = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    out = []
    for _ in range(m):
        n = rng.normal(size=(7, 3))
        n[:4] = tetra @ rotation(rng, 3)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        frame = rotation(rng, 3)
        squash = np.eye(3)
        for u in frame.T[:directions]:
            squash -= (1.0 - 10.0 ** rng.uniform(*thin)) * np.outer(u, u)
        rows = n @ np.linalg.inv(squash)
        centre = rng.normal(size=3)
        centre *= rng.uniform(*far) / np.linalg.norm(centre)
        size = 10.0 ** rng.uniform(-0.5, 0.5)
        out.append((rows, rows @ centre + size * rng.uniform(0.2, 1.0, size=7)))
    return out


def test_random_thin_slabs_match_the_quadrature_oracle():
    for n, c in _random_slabs(np.random.default_rng(5), 5):
        ref = polytope_ref(n, c)
        tm = truncated_moments(n[None], c[None])
        assert abs(tm.log_mass[0] - ref.log_mass) <= tm.error[0] + 1e-11
        assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) <= 1e-7


def test_the_weight_decides_which_thin_slabs_are_sliced(monkeypatch):
    """With ``log_weight``, a thin slab whose weight hides the divergence form's error keeps
    its bits; a visible one is sliced (the result without a weight)."""
    n, c, *_ = _slab(0.7, 1e-5)
    N, C = np.stack([n, n]), np.stack([c, c])
    tm = truncated_moments(N, C, log_weight=np.array([-80.0, 0.0]))
    sliced = truncated_moments(n[None], c[None])
    _no_slices(monkeypatch)
    div = truncated_moments(N, C)
    for a, s, d in zip(tm, sliced, div, strict=True):
        np.testing.assert_array_equal(a[0], d[0])
        np.testing.assert_array_equal(a[1], s[0])
    assert not np.array_equal(sliced.cov, div.cov)


@pytest.mark.parametrize("width", [1e-13, 1e-15])
def test_slabs_thinner_than_their_rounding_keep_a_covering_estimate(width):
    """3 sd out, a slab 1e-13 or 1e-15 thin is below its vertices' rounding (eps |x|): no
    panel to slice, no warning; the result keeps an error estimate that covers its error."""
    n, c, log_mass, _, _ = _slab(3.0, width)
    tm = truncated_moments(n[None], c[None])
    assert np.isfinite(tm.log_mass[0])
    assert abs(tm.log_mass[0] - log_mass) <= tm.error[0]


def test_log_mass_alone_slices_thin_polyhedra(monkeypatch):
    """``log_mass`` (no moments, no covariance to tell thinness by) slices where the edge
    formula's terms cancel: random polyhedra squashed 1e-5 to 1e-3 are within their estimate
    and 1e-11 of the oracle, and agree with ``truncated_moments``. The edge formula alone was
    up to 3e3 times its estimate off on such polyhedra (1e-8 to 1e-5 nats, see below)."""
    for n, c in _random_slabs(np.random.default_rng(11), 4):
        ref = polytope_ref(n, c)
        lm, err = log_mass(n[None], c[None], return_error=True)
        assert abs(lm[0] - ref.log_mass) <= min(err[0], 1e-11)
        assert err[0] <= 1e-9
        assert lm[0] == truncated_moments(n[None], c[None]).log_mass[0]


def test_the_edge_formula_estimate_covers_the_cancellation(monkeypatch):
    """Without the slices the edge formula's terms carry the rounding of their geometry (the
    in-plane offsets of nearly parallel facets): its estimate covers that, and did not without
    the term."""
    _no_slices(monkeypatch)
    rows = _random_slabs(np.random.default_rng(11), 4)
    refs = [polytope_ref(n, c).log_mass for n, c in rows]
    errors, estimates = [], []
    for term in (_polytope._GEO_ERR, 0.0):
        monkeypatch.setattr(_polytope, "_GEO_ERR", term)
        res = [log_mass(n[None], c[None], return_error=True) for n, c in rows]
        errors.append(np.array([abs(lm[0] - r) for (lm, _), r in zip(res, refs, strict=True)]))
        estimates.append(np.array([e[0] for _, e in res]))
    assert np.all(errors[0] <= estimates[0])
    assert np.all(estimates[0] <= 1e-4)
    assert np.any(errors[1] > estimates[1])


@pytest.mark.parametrize(
    ("kind", "seed", "m"),
    [
        pytest.param("far", 2, 3, id="far"),
        pytest.param("far", 3, 40, id="far-sweep", marks=pytest.mark.slow),
        pytest.param("needle", 4, 40, id="needle-sweep", marks=pytest.mark.slow),
        pytest.param("near", 5, 40, id="near-sweep", marks=pytest.mark.slow),
    ],
)
def test_the_estimate_covers_squashed_polyhedra(monkeypatch, kind, seed, m):
    """Polyhedra squashed 1e-5 to 0.1 along one direction 5 to 300 sd out ('far'; the edge
    formula alone was up to 3e-4 nats off there, 190 times its estimate), along two directions
    near the mean ('needle'), or along one near the mean ('near'): every log mass within its
    estimate, with the slices and without; with them the estimates are informative (far out,
    where the slices' integrand can be too steep to help, the edge formula's estimate is
    ~1e-8 relative: a known limit)."""
    shape = {
        "far": {"thin": (-5.0, -1.0), "far": (5.0, 300.0)},
        "needle": {"thin": (-5.0, -1.0), "directions": 2},
        "near": {"thin": (-5.0, 0.0)},
    }[kind]
    rows = _random_slabs(np.random.default_rng(seed), m, **shape)
    refs = np.array([polytope_ref(n, c).log_mass for n, c in rows])
    informative = 1e-6 if kind == "far" else 1e-9
    for slices in (True, False):
        if not slices:
            _no_slices(monkeypatch)
        res = [log_mass(n[None], c[None], return_error=True) for n, c in rows]
        lm, err = (np.array([r[j][0] for r in res]) for j in (0, 1))
        assert np.all(np.abs(lm - refs) <= err)
        if slices:
            assert np.all(err <= informative * (1.0 + np.abs(refs)))


# A polyhedron ~2e-6 thin, 5.8 sd out (a random polyhedron squashed along a random direction,
# from a sweep): its divergence covariance's smallest variance came out 3e-4 (true 3e-13), so
# the variance test missed it, and its log mass was 1.3e-4 nats off with an estimate of 2e-7.
_MISSED_ROWS = np.array(
    [
        [7568.2405490749225, -32044.791425781168, -27106.340415652045],
        [3694.8068375245257, -15647.873771054057, -13237.407063341709],
        [5359.295784633851, -22688.4104272949, -19193.534417378793],
        [-16622.3431712333, 70381.07562413013, 59537.28189637255],
        [12597.684244052789, -53340.86641437366, -45121.53283718218],
        [9971.5292363335, -42223.47755954792, -35717.209958437896],
        [-14199.809135790025, 60123.20308966272, 50860.435159447974],
    ]
)
_MISSED_OFFSETS = np.array(
    [
        -226627.4629314532,
        -110668.46209870712,
        -160460.57905208232,
        497756.9337057103,
        -377240.8356808871,
        -298616.1272410493,
        425211.4337168496,
    ]
)


def test_a_thin_polyhedron_whose_divergence_variance_is_wrong_is_sliced():
    n, c = _MISSED_ROWS, _MISSED_OFFSETS
    ref = polytope_ref(n, c)
    tm = truncated_moments(n[None], c[None])
    lm, err = log_mass(n[None], c[None], return_error=True)
    for value, estimate in ((tm.log_mass[0], tm.error[0]), (lm[0], err[0])):
        assert abs(value - ref.log_mass) <= estimate <= 1e-7
    tol = 1e-6 + _representable(ref.cov)
    assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) <= tol


def test_the_weight_decides_which_masses_are_sliced(monkeypatch):
    """``log_mass(log_weight=...)``: a thin slab whose mass enters a sum with a factor that
    hides its error keeps the edge formula's bits; a visible one (the whole sum) is sliced."""
    n, c, *_ = _slab(0.7, 1e-5)
    N, C = np.stack([n, n]), np.stack([c, c])
    sliced = log_mass(n[None], c[None], return_error=True)
    log_weight = np.array([-80.0, -sliced[0][0]])
    lm, err = log_mass(N, C, return_error=True, log_weight=log_weight)
    _no_slices(monkeypatch)
    edge = log_mass(N, C, return_error=True)
    np.testing.assert_array_equal([lm[0], err[0]], [edge[0][0], edge[1][0]])
    np.testing.assert_array_equal([lm[1], err[1]], [sliced[0][0], sliced[1][0]])
    assert lm[0] != lm[1]


@pytest.mark.parametrize(
    ("log_weight", "match"),
    [(np.zeros(3), r"log_weight must have shape \(2,\)"), (np.array([0.0, np.nan]), "NaN")],
)
def test_log_mass_checks_its_log_weight(log_weight, match):
    n, c, *_ = _slab(0.7, 1e-5)
    with pytest.raises(ValueError, match=match):
        log_mass(np.stack([n, n]), np.stack([c, c]), log_weight=log_weight)


# --------------------------------------------------------------------------------------------
# d = 4: the cubature on a fan of 4-simplices (small_polytopes_4d)
# --------------------------------------------------------------------------------------------
def _tiny_box_4d(centre: float, size: float, seed: int = 0):
    """A rotated 4-D box ``size`` across, ``centre`` from the mean (an uneven box: at
    ``centre = 0`` the mean is inside it, off its own centre)."""
    x = centre * np.array([0.5, -0.5, 0.5, 0.5])
    lo = x - size * np.array([0.5, 0.3, 0.8, 0.4])
    hi = x + size * np.array([0.5, 0.7, 0.2, 0.6])
    return rotated_box(lo, hi, np.random.default_rng(seed))


@pytest.mark.parametrize("size", [0.5, 1e-2, 1e-4, 1e-6, 1e-9])
@pytest.mark.parametrize("centre", [0.0, 0.7, 1.5])
def test_d4_tiny_boxes_match_the_interval_products(centre, size):
    """Log mass, mean and covariance of 4-D boxes 0.5 to 1e-9 across, around the mean and off
    it, within the input's conditioning (the divergence form got a 1e-3 box around the mean
    3e5 of its own variance off, with a log-mass error of 6 nats, and a 1e-4 one as NaN)."""
    n, c, ref_log_mass, mean, cov = _tiny_box_4d(centre, size)
    tm = truncated_moments(n[None], c[None])
    cond = _conditioning(centre, size)
    assert abs(tm.log_mass[0] - ref_log_mass) <= tm.error[0] + cond
    assert tm.error[0] <= 1e-13 + 4.0 * cond
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= 1e-11 + cond
    lm, err = log_mass(n[None], c[None], return_error=True)  # the mass alone: the same rule
    assert lm[0] == tm.log_mass[0] and err[0] == tm.error[0]


def _split(n, c, seed):
    """The polytope ``{n u <= c}`` cut in two by a random plane through its vertex centroid."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n.shape[1])
    a /= np.linalg.norm(a)
    centre = np.linalg.lstsq(n, c, rcond=None)[0]  # (a box: its centre)
    b = a @ centre
    return (np.vstack([n, a]), np.append(c, b)), (np.vstack([n, -a]), np.append(c, -b))


@pytest.mark.parametrize(("centre", "size"), [(0.0, 1e-3), (0.0, 0.3), (1.2, 1e-5)])
def test_d4_the_halves_of_a_cut_box_add_up_to_it(centre, size):
    """Two general polytopes (a box cut by a random plane: their facets are not boxes) whose
    masses and moments combine to the box's closed form: a check on the fan of simplices
    that shares no formula with it."""
    n, c, log_mass_ref, mean, cov = _tiny_box_4d(centre, size, seed=3)
    (n1, c1), (n2, c2) = _split(n, c, seed=4)
    tm = truncated_moments(np.stack([n1, n2]), np.stack([c1, c2]))
    m = np.exp(tm.log_mass - log_mass_ref)  # each half's share of the box
    assert abs(m.sum() - 1.0) <= 2.0 * (tm.error.sum() + _conditioning(centre, size))
    m /= m.sum()  # (their log masses' rounding, ~1e-11, is ~1e-6 of a 1e-5 box's sd 1.2 out)
    mu = (m[:, None] * tm.mean).sum(axis=0)
    second = sum(m[i] * (tm.cov[i] + np.outer(tm.mean[i] - mu, tm.mean[i] - mu)) for i in range(2))
    assert whitened_error(mu, second, mean, cov) <= 1e-10 + _conditioning(centre, size)


def test_d4_without_the_cubature_the_same_boxes_are_wrong(monkeypatch):
    """The checks above are not vacuous: without the cubature the 1e-3 box around the mean
    has a covariance far off and a log-mass estimate of nats."""
    n, c, _, mean, cov = _tiny_box_4d(0.0, 1e-3)
    monkeypatch.setattr(_polytope, "SMALL_SPREAD", -1.0)
    _no_slices(monkeypatch)  # (the thin slices would take it, slowly: its sections are tiny)
    tm = truncated_moments(n[None], c[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) < 1.0
    assert tm.error[0] > 0.1


def _random_small_4d(rng, m):
    """``m`` bounded 4-D polytopes (a rotated box cut by three random rows) 1e-3 to 0.5 across,
    0 to 1.5 sd from the mean."""
    n, c = [], []
    for _ in range(m):
        R = rotation(rng, 4)
        x = rng.normal(size=4)
        x *= rng.uniform(0.0, 1.5) / np.linalg.norm(x)
        size = 10.0 ** rng.uniform(-3.0, -0.3)
        cut = rng.normal(size=(3, 4))
        cut /= np.linalg.norm(cut, axis=1, keepdims=True)
        rows = np.vstack([R.T, -R.T, cut])
        ext = size * rng.uniform(0.1, 1.0, size=8)
        n.append(rows)
        c.append(rows @ x + np.concatenate([ext, size * rng.uniform(0.05, 0.5, size=3)]))
    return np.array(n), np.array(c)


@pytest.mark.parametrize(
    ("make", "seed", "m", "nodes", "moments_tol", "coarse_mass", "coarse_moments"),
    [
        pytest.param(_random_small, 1, 300, 16, 1e-12, 1e-10, 1e-8, id="d3"),
        pytest.param(_random_small_4d, 5, 24, 14, 1e-11, 1e-12, 1e-10, id="d4"),
    ],
)
def test_the_node_counts_are_converged(
    monkeypatch, make, seed, m, nodes, moments_tol, coarse_mass, coarse_moments
):
    """The calibrated node counts agree with a 16^3 rule on every tetrahedron (d = 3) and a
    14^4 rule on every simplex (d = 4, one level above the 3-D counts): log mass to its
    rounding, moments to 1e-12 (1e-11) of the polytope's own spread (a 3^d rule does not)."""
    n, c = make(np.random.default_rng(seed), m)
    ref = _with_nodes(monkeypatch, n, c, nodes)
    mass, moments = _rule_error(truncated_moments(n, c), ref)
    assert mass < 4e-14
    assert moments < moments_tol
    mass, moments = _rule_error(_with_nodes(monkeypatch, n, c, 3), ref)
    assert mass > coarse_mass
    assert moments > coarse_moments


# --------------------------------------------------------------------------------------------
# thin polytopes around the mean, bounded or not (d = 3, 4): slices across the thin direction
# (_polytope_tail.near_moments)
# --------------------------------------------------------------------------------------------
_INF = np.inf


def _thin_box(d: int, shape: str, centre: float, width: float, seed: int = 0):
    """A rotated ``d``-D box ``width`` thin (a slab), thin in two directions (a needle), or
    either unbounded (``u``) or half-bounded (``half``) in the others; its thin extent is
    centred ``centre`` from the mean (``0``: the mean inside it)."""
    lo = np.full(d, -1.0)
    hi = np.full(d, 1.0)
    lo[0], hi[0] = centre - 0.5 * width, centre + 0.5 * width
    if shape.endswith("needle"):
        lo[1], hi[1] = -0.3 * width, 0.7 * width
    if shape.startswith("u"):
        lo[2:], hi[2:] = -_INF, _INF
        if shape == "uslab":
            lo[1], hi[1] = -_INF, _INF
    if shape == "halfslab":
        lo[2], hi[-1] = -_INF, _INF
    return rotated_box(lo, hi, np.random.default_rng(seed))


_THIN_CASES = [(d, s) for d in (3, 4) for s in ("slab", "needle", "uslab", "halfslab", "uneedle")]


@pytest.mark.parametrize("width", [1e-3, 1e-5])
@pytest.mark.parametrize("centre", [0.0, 0.3])
@pytest.mark.parametrize(("d", "shape"), _THIN_CASES)
def test_thin_boxes_around_the_mean_match_the_interval_products(d, shape, centre, width):
    """Thin boxes (slabs and needles, bounded, half-bounded and unbounded) with the mean
    inside or 0.3 sd off: log mass and moments within the input's conditioning. Before the
    slices the 4-D needle 1e-5 thin through the mean had its covariance 4e6 of its own
    variance off and a log-mass error of 3e-5 (estimate 0.6); the 4-D slab around the mean 24
    (see below); before the prisms' reduction (the unbounded boxes are prisms:
    ``test_prisms.py``) the 3-D unbounded needle 2e6."""
    n, c, ref_log_mass, mean, cov = _thin_box(d, shape, centre, width)
    tm = truncated_moments(n[None], c[None])
    _assert_within_conditioning(tm, ref_log_mass, mean, cov, centre, width)
    cond = _conditioning(centre, width)
    lm, err = log_mass(n[None], c[None], return_error=True)  # the mass alone
    assert abs(lm[0] - ref_log_mass) <= err[0] + cond


@pytest.mark.parametrize(("d", "shape"), [(4, "slab"), (4, "needle")])
def test_without_the_slices_thin_boxes_around_the_mean_are_wrong(monkeypatch, d, shape):
    n, c, _, mean, cov = _thin_box(d, shape, 0.0, 1e-5)
    _no_slices(monkeypatch)
    tm = truncated_moments(n[None], c[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) < 1.0


def _pieces(d: int, shape: str, centre: float, width: float, cuts: int):
    """A thin unbounded box (:func:`_thin_box`) cut by ``cuts`` random planes through the mean
    into ``2^cuts`` unbounded thin pieces whose rows span all ``d`` dimensions (not prisms):
    their rows (2^cuts, F, d), offsets and the box's reference moments."""
    n, c, ref_log_mass, mean, cov = _thin_box(d, shape, centre, width, seed=2)
    a = np.random.default_rng(5).normal(size=(cuts, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=cuts)))
    N = np.stack([np.vstack([n, s[:, None] * a]) for s in signs])
    C = np.stack([np.append(c, np.zeros(cuts)) for _ in signs])
    return N, C, ref_log_mass, mean, cov


def _combined(tm, ref_log_mass):
    """Mass (relative to the reference), mean and covariance of the union of the pieces."""
    m = np.exp(tm.log_mass - ref_log_mass)
    total = m.sum()
    keep = m > 0  # (an empty piece: -inf, NaN moments)
    w = m[keep] / total
    mu = w @ tm.mean[keep]
    dev = tm.mean[keep] - mu
    second = np.einsum("p,pij->ij", w, tm.cov[keep] + dev[:, :, None] * dev[:, None, :])
    return total, mu, second


_PIECES = [
    (3, "uslab", 2),
    (3, "halfslab", 2),
    (3, "uneedle", 1),
    (3, "uneedle", 2),
    (4, "halfslab", 2),
]


@pytest.mark.parametrize("width", [1e-3, 1e-5])
@pytest.mark.parametrize(("d", "shape", "cuts"), _PIECES)
def test_the_pieces_of_a_thin_unbounded_box_add_up_to_it(d, shape, cuts, width):
    """Unbounded thin polyhedra whose rows span every direction (an unbounded slab or needle
    cut into wedges through the mean): sliced across their narrowest opposite pair of rows,
    their masses and moments combine to the box's closed form (in d = 3 they had been off by
    up to 50 (slabs) and 9e6 (needles) of their own spread, 1e-5 thin)."""
    N, C, ref_log_mass, mean, cov = _pieces(d, shape, 0.0, width, cuts)
    tm = truncated_moments(N, C)
    total, mu, second = _combined(tm, ref_log_mass)
    cond = _conditioning(0.0, width)
    assert abs(total - 1.0) <= 2.0 * (tm.error.sum() + cond)
    assert whitened_error(mu, second, mean, cov) <= 1e-9 + cond + _representable(cov)


@pytest.mark.parametrize(("d", "shape", "cuts"), [(3, "uslab", 2), (3, "uneedle", 1)])
def test_without_the_slices_the_pieces_are_wrong(monkeypatch, d, shape, cuts):
    N, C, ref_log_mass, mean, cov = _pieces(d, shape, 0.0, 1e-5, cuts)
    _no_slices(monkeypatch)
    _, mu, second = _combined(truncated_moments(N, C), ref_log_mass)
    assert not whitened_error(mu, second, mean, cov) < 1.0


@pytest.mark.parametrize(("d", "shape"), [(4, "slab"), (4, "needle"), (4, "uslab")])
def test_the_halves_of_a_thin_box_around_the_mean_add_up_to_it(d, shape):
    """A thin box through the mean cut by a random plane through the mean: two general thin
    polytopes (the mean on their boundary, facets that are not boxes'), whose masses and
    moments combine to the box's closed form."""
    n, c, ref_log_mass, mean, cov = _thin_box(d, shape, 0.0, 1e-4, seed=2)
    a = np.random.default_rng(5).normal(size=d)
    a /= np.linalg.norm(a)
    N = np.stack([np.vstack([n, a]), np.vstack([n, -a])])
    tm = truncated_moments(N, np.stack([np.append(c, 0.0), np.append(c, 0.0)]))
    m = np.exp(tm.log_mass - ref_log_mass)
    cond = _conditioning(0.0, 1e-4)
    assert abs(m.sum() - 1.0) <= 2.0 * (tm.error.sum() + cond)
    m /= m.sum()
    mu = (m[:, None] * tm.mean).sum(axis=0)
    second = sum(m[i] * (tm.cov[i] + np.outer(tm.mean[i] - mu, tm.mean[i] - mu)) for i in range(2))
    assert whitened_error(mu, second, mean, cov) <= 1e-9 + cond + _representable(cov)


def _far_box(c, h=0.5):
    """``c <= u_0 <= c + h, |u_1| <= 1, |u_2| <= 1``: its thin axis ``e_0`` points away from
    the mean, along which the integrand falls at the rate ``~c``."""
    eye = np.eye(3)
    nu = np.stack([eye[0], -eye[0], eye[1], -eye[1], eye[2], -eye[2]])[None]
    cu = np.array([[c + h, -c, 1.0, 1.0, 1.0, 1.0]])
    return nu, cu, eye[:1], np.array([[c, c + h, np.nan, np.nan]])


@pytest.mark.parametrize("c", [3.0, 40.0, 5000.0])
def test_slices_too_steep_for_the_rules_are_not_summed(monkeypatch, c):
    """A box 5,000 sd out along its thin axis falls by ~2,500 nats across its one panel: the
    20- and 12-node sums are off by ~5 nats with an estimate of 2e7, and far 2-D sections cost
    0.5-1 s a polyhedron (10 s for a d = 3 row 1e4 sd out). The two-node probe
    (``_too_steep``) leaves it unsliced (NaN, error inf: the caller keeps the edge formula);
    boxes 3 and 40 sd out are sliced as before and match the interval product."""
    from scipy.special import log_ndtr

    from exactdgn.gaussian import _polytope_thin

    box = _far_box(c)
    got = _polytope_thin.thin_polyhedra(*box)
    ref = log_ndtr(-c) + np.log(-np.expm1(log_ndtr(-(c + 0.5)) - log_ndtr(-c)))
    ref += 2.0 * np.log(np.diff(np.exp(log_ndtr([-1.0, 1.0])))[0])
    monkeypatch.setattr(_polytope_thin, "_STEEP", np.inf)
    summed = _polytope_thin.thin_polyhedra(*box)
    if c > 1000:
        assert np.isnan(got.log_mass[0]) and got.error[0] == np.inf
        assert summed.error[0] > 1e3 and abs(summed.log_mass[0] - ref) > 1.0  # useless
    else:
        for a, b in zip(got, summed, strict=True):
            np.testing.assert_array_equal(a, b)
        assert abs(got.log_mass[0] - ref) <= got.error[0] + 1e-12 * abs(ref)
        assert got.error[0] < 1e-7


def test_far_rows_are_the_same_without_the_steep_slices(monkeypatch):
    """Rows of a d = 3 model 1e4 noise sds out: the polyhedra the probe leaves unsliced were
    never kept (their slices lost to the edge formula's estimate); log p(x) and its estimate
    are the same bit for bit with every polyhedron summed (3 of them here; 27 random models
    x 24 far and near rows, complete and missing, measured alike: 2.8x faster overall)."""
    from exactdgn import Decoder, ExactDGN
    from exactdgn.gaussian import _polytope_thin

    flagged = []
    probe = _polytope_thin._too_steep

    def counted(*args):
        out = probe(*args)
        flagged.append(int(out.sum()))
        return out

    monkeypatch.setattr(_polytope_thin, "_too_steep", counted)
    dec = Decoder.random([3, 8, 8, 5], activation="leaky_relu", seed=1)
    model = ExactDGN.from_decoder(dec, noise_std=1e-3)
    X = model.sample(2, random_state=1)
    u = np.random.default_rng(1).standard_normal(X.shape)
    X += 10.0 * u / np.linalg.norm(u, axis=1, keepdims=True)
    lp, err = model.score_samples(X, return_error=True)
    assert sum(flagged) > 0
    monkeypatch.setattr(_polytope_thin, "_STEEP", np.inf)
    lp_all, err_all = model.score_samples(X, return_error=True)
    np.testing.assert_array_equal(lp, lp_all)
    np.testing.assert_array_equal(err, err_all)
