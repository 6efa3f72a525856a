"""Mean and covariance of ``N(0, I_3)`` on polyhedra 1e2 to 1e4 standard deviations out.

The divergence form loses ``~ eps D^4`` relative in the covariance (at ``D = 1e4`` it was ~1e8
posterior variances off); far polyhedra take their moments from slices (``_polytope_tail``).
Errors are measured in units of the reference posterior: mean and covariance whitened by the
reference covariance's Cholesky factor.  The problem's own floor (the reference's change under
1-ulp changes of the offsets) is ~1e-8 of that at ``D = 1e4``, ~1e-10 at ``D = 1e3``.
"""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn.gaussian import _polytope, _polytope_tail
from exactdgn.gaussian._polytope import truncated_moments_nd
from tests.oracles.boxes import rotated_box, rotation, whitened_error
from tests.oracles.gaussian_mp import interval_ref

# a margin over the conditioning floor (1-ulp changes of c move the reference by ~eps D^2)
_TOL = {1e2: 1e-10, 1e3: 1e-9, 1e4: 1e-7}


def _box(D, kind, rng):
    """A rotated product ``{x >= D} x [a1, b1] x [a2, b2]`` whose closest point to the mean is
    a facet, an edge or a vertex; reference moments from the 1-D mpmath intervals."""
    (a1, b1), (a2, b2) = {
        "facet": ((-1.0, 2.0), (-np.inf, 0.7)),
        "edge": ((0.3, 0.31), (-0.5, np.inf)),
        "vertex": ((0.2, np.inf), (-np.inf, -1.5)),
    }[kind]
    lo = np.array([D, a1, a2])
    hi = np.array([np.inf, b1, b2])
    n, c, _, mean, cov = rotated_box(lo, hi, rng)
    return n, c, mean, cov


def _far_box(d, D, kind):
    """The far boxes of the tests: ``d = 3`` (:func:`_box`) or ``d = 4`` (:func:`_box4`)."""
    if d == 3:
        return _box(D, kind, np.random.default_rng(int(np.log10(D))))
    return _box4(D, kind, np.random.default_rng(_KINDS_4.index(kind)))


_SLOW = pytest.mark.slow
_FAR_BOXES = [(3, D, kind) for D in (1e2, 1e3, 1e4) for kind in ("facet", "edge", "vertex")] + [
    pytest.param(4, D, kind, marks=[_SLOW] if D != 1e3 else [])
    for D in (1e2, 1e3, 1e4)
    for kind in ("facet", "ridge", "edge", "vertex")
]


@pytest.mark.parametrize(("d", "D", "kind"), _FAR_BOXES)
def test_far_box_moments_match_the_interval_products(d, D, kind):
    """Whatever the closest point (a facet, ridge, edge or vertex of the box), the slices are
    within the input's ~eps D^2 floor (the d = 4 divergence form was 10 of the box's own sd off
    in the covariance at D = 1e3; d = 4 sections are sliced again where thin)."""
    n, c, mean, cov = _far_box(d, D, kind)
    tm = truncated_moments_nd(n[None], c[None])
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) < _TOL[D]


@pytest.mark.parametrize(("d", "kind", "off"), [(3, "edge", 1e-3), (4, "facet", 1e-2)])
def test_the_divergence_form_alone_fails_there(monkeypatch, d, kind, off):
    """The check above is not vacuous: without the slices the same box is far off."""
    n, c, mean, cov = _far_box(d, 1e3, kind)
    monkeypatch.setattr(_polytope, "TAIL_D", np.inf)
    monkeypatch.setattr(_polytope, "_THIN_VAR", 0.0)  # nor as a thin near one (d = 4)
    monkeypatch.setattr(_polytope, "_THIN_RATIO", np.inf)
    tm = truncated_moments_nd(n[None], c[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) < off


def _no_far_slices(monkeypatch):
    """No polytope takes its moments from the tail slices (far ones keep the divergence form;
    unlike ``TAIL_D = inf``, which makes them near, where the thin ones are sliced)."""
    monkeypatch.setattr(_polytope, "_sliced_rows", lambda ok, *_: np.zeros_like(ok))


def test_near_rows_are_bitwise_unchanged(monkeypatch):
    """Only rows at distance >= TAIL_D are sliced: the others (alone or batched with far ones)
    keep the divergence form's bits."""
    rng = np.random.default_rng(0)
    n = rng.normal(size=(64, 6, 3))
    c = rng.uniform(-1.0, 3.0, size=(64, 6))
    far_n, far_c, _, _ = _box(1e3, "vertex", rng)
    pad = n.shape[1] - far_n.shape[0]
    nb = np.concatenate([n, np.pad(far_n, ((0, pad), (0, 0)))[None]])
    cb = np.concatenate([c, np.pad(far_c, (0, pad), constant_values=np.inf)[None]])
    new = truncated_moments_nd(nb, cb)
    _no_far_slices(monkeypatch)
    old = truncated_moments_nd(nb, cb)
    near = np.flatnonzero(np.linalg.norm(old.mean[:64], axis=1) < 7.0)  # distance < 8
    assert near.size > 40
    for a, b in zip(new, old, strict=True):
        np.testing.assert_array_equal(a[near], b[near])
    np.testing.assert_array_equal(new.log_mass, old.log_mass)
    assert not np.array_equal(new.cov[64], old.cov[64])


def test_the_weight_decides_which_far_polyhedra_are_sliced(monkeypatch):
    """With ``log_weight``, a far polyhedron whose weight times the divergence form's error
    bound (1e-13 D^4) is below 1e-16 keeps the divergence form (its bits), a visible one is
    sliced (the closed form); a near one is untouched either way."""
    from exactdgn.gaussian import truncated_moments

    n, c, mean, cov = _box(1e3, "edge", np.random.default_rng(3))  # bound 1e-1
    near_n, near_c = n.copy(), c.copy()
    near_c[0] = 1.0  # the same box from x >= -1 (distance 0)
    N, C = np.stack([n, n, near_n]), np.stack([c, c, near_c])
    # weights: invisible (e^-40 * 0.1 < 1e-16), visible (1), near
    tm = truncated_moments(N, C, log_weight=np.array([-40.0, 0.0, 0.0]))
    _no_far_slices(monkeypatch)
    near = truncated_moments(N, C)
    np.testing.assert_array_equal(tm.cov[2], near.cov[2])
    monkeypatch.setattr(_polytope, "_THIN_VAR", 0.0)  # nor sliced as a thin one
    monkeypatch.setattr(_polytope, "_THIN_RATIO", np.inf)
    div = truncated_moments(N, C)
    np.testing.assert_array_equal(tm.cov[0], div.cov[0])
    assert whitened_error(tm.mean[1], tm.cov[1], mean, cov) < _TOL[1e3]
    assert not whitened_error(div.mean[1], div.cov[1], mean, cov) < 1e-3


@pytest.mark.parametrize("d", [2, 3])
def test_log_weight_of_the_wrong_shape_or_nan_is_refused(d):
    from exactdgn.gaussian import truncated_moments

    n = np.tile(np.eye(d)[None], (4, 1, 1))
    c = np.ones((4, d))
    with pytest.raises(ValueError, match=r"log_weight must have shape \(4,\)"):
        truncated_moments(n, c, log_weight=np.zeros(3))
    with pytest.raises(ValueError, match="log_weight contains 1 NaN"):
        truncated_moments(n, c, log_weight=np.array([0.0, np.nan, -1.0, -np.inf]))
    tm = truncated_moments(n, c, log_weight=np.array([0.0, -1.0, -np.inf, -700.0]))
    np.testing.assert_array_equal(tm.log_mass, truncated_moments(n, c).log_mass)


def _add_outer_row(rng, p, width, rows, offs):
    """A random row leaning towards ``+e1``, ``0.5-2 width`` outside the point ``p``."""
    v = rng.normal(size=3)
    v[0] = abs(v[0]) * 0.3
    v /= np.linalg.norm(v)
    rows.append(v)
    offs.append(v @ p + width * rng.uniform(0.5, 2.0))


def _cone(rng, D, kind, width):
    """Random polyhedra whose closest point ``D e1`` (then rotated) is on a facet, an edge or
    a vertex; ``width`` scales how far the other rows are (thin or wide)."""
    p = np.array([D, 0.0, 0.0])
    rows, offs = [], []
    if kind == "facet":
        rows.append([-1.0, 0.0, 0.0])
        offs.append(-D)
        for _ in range(4):
            _add_outer_row(rng, p, width, rows, offs)
    elif kind == "edge":
        for s in (1.0, -1.0):
            v = np.array([-1.0, s * rng.uniform(0.2, 3.0), 0.0])
            v /= np.linalg.norm(v)
            rows.append(v)
            offs.append(v @ p)
        for _ in range(2):
            _add_outer_row(rng, p, width, rows, offs)
    else:
        for a in np.sort(rng.uniform(0.0, 2.0 * np.pi, 3)):
            r = width * rng.uniform(0.3, 2.0)
            v = np.array([-1.0, r * np.cos(a), r * np.sin(a)])
            v /= np.linalg.norm(v)
            rows.append(v)
            offs.append(v @ p)
        v = rng.normal(size=3)
        v[0] = abs(v[0])
        v /= np.linalg.norm(v)
        rows.append(v)
        offs.append(v @ p + rng.uniform(0.5, 2.0))
    return np.array(rows) @ rotation(rng, 3).T, np.array(offs)


@pytest.mark.slow
@pytest.mark.parametrize("D", [1e2, 1e3, 1e4])
def test_far_polyhedra_match_the_quadrature_oracle(D):
    from tests.oracles.polytope_quad import polytope_ref

    rng = np.random.default_rng(0)
    for kind in ["facet", "edge", "vertex"]:
        for width in [1.0, 0.05]:
            n, c = _cone(rng, D, kind, width)
            ref = polytope_ref(n, c)
            tm = truncated_moments_nd(n[None], c[None])
            err = whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov)
            assert err < _TOL[D], (kind, width, err)


# A polyhedron of a d = 3 posterior at a point 100 data scales out (random [3, 10, 10, 6]
# model, D = 1,093): its closest point is on an edge, so its cross-sections near x = 0 are thin
# strips.  It took minutes (> 28,000 cross-sections, unconverged) while thin strips lost ~4e-10
# of their mass to a rounded range end (below); 312 cross-sections now.
_EDGE_N = np.array(
    [
        [0.1488165726631515, 0.6786492604475503, -0.7192279256221815],
        [-0.32008061326513537, -0.6231778649532195, 0.7135809341932854],
        [0.9847328792810862, 0.07554450904109818, -0.15682532836414248],
        [-0.9088726647315516, -0.12799989044555377, 0.39694647920052745],
    ]
)
_EDGE_C = np.array(
    [1132.1141474238816, -1090.4612251300814, 445.08647509410457, -459.9749544634112]
)


def _counting_sections(monkeypatch):
    from exactdgn.gaussian import _polytope_tail

    seen = [0]
    kernel = _polytope_tail._polygon_kernel

    def counted(nrm, off):
        seen[0] += nrm.shape[0]
        return kernel(nrm, off)

    monkeypatch.setattr(_polytope_tail, "_polygon_kernel", counted)
    return seen


def test_an_edge_closest_polyhedron_1e3_out_is_quick_and_right(monkeypatch):
    from tests.oracles.polytope_quad import polytope_ref

    seen = _counting_sections(monkeypatch)
    tm = truncated_moments_nd(_EDGE_N[None], _EDGE_C[None])
    assert seen[0] < 1000
    ref = polytope_ref(_EDGE_N, _EDGE_C)
    assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) < _TOL[1e3]


def test_a_thin_strip_section_keeps_its_exact_range_ends():
    """A cross-section strip ``1.25e-6 <= n . y <= 2.1e-5`` (two antiparallel rows) cut by rows
    31-47 sd out: its mass is the interval's (mpmath).  The slices' range ends come from the
    strip's rows exactly; a vertex on a far row rounded 7e-15 next to the end replaced it
    (merged as 'the same point') and moved the mass by 3.7e-10 relative."""
    from exactdgn.gaussian._polytope_tail import _polygon_kernel

    n = np.array(
        [
            [-0.9798018368697337, 0.19997089904957624],
            [-0.9021660640170395, 0.43138891146621156],
            [0.7853493187987086, -0.6190528632212311],
            [0.691651117044396, -0.7222317718649874],
            [0.9021660640170395, -0.43138891146621156],
        ]
    )
    c = np.array(
        [
            33.76991813718864,
            -1.2511908693814598e-06,
            31.42076054709809,
            46.73247068588083,
            2.097205961190365e-05,
        ]
    )
    scale = np.linalg.norm(n[4])
    ref = interval_ref(-c[1] / scale, c[4] / scale)[0]
    lm = _polygon_kernel(n[None], c[None])[0][0]
    assert abs(lm - ref) < 1e-13


# A cross-section 117 sd from the mean in its own plane, in the frame of its thinnest direction
# (from a polyhedron 9.3 sd out): sliced again through the mean (|z| <= 11), the first round's
# nodes saw ~e^-1e12 and later ones e^-700 more: exp overflowed (a RuntimeWarning, NaN sums).
_FAR_SECTION = (
    np.array(
        [
            0.501233722901159,
            0.10250161038671513,
            -0.9999999989283066,
            -0.9647679150363206,
            -0.674942630331991,
            0.09942599907069938,
            -0.8635624416904384,
            0.7315050169988445,
        ]
    ),
    np.array(
        [
            -0.8653119408783425,
            -0.994732838438608,
            -4.6296724933669875e-05,
            -0.2631023947372403,
            -0.7378702092919414,
            -0.9950449591394317,
            -0.5042419154549216,
            -0.681836058085461,
        ]
    ),
    np.array(
        [
            104.76311712294283,
            123.54399198728582,
            -117.62516089360959,
            32.357141417714026,
            86.5869222841863,
            114.00938675101855,
            52.81585109927515,
            86.7203087916836,
        ]
    ),
)


def test_a_far_section_keeps_the_kernels_result(monkeypatch):
    from exactdgn.gaussian import _polytope_tail
    from exactdgn.gaussian._polygon import _truncated_moments_2d

    a, b, c = _FAR_SECTION
    nrm = np.stack([a, b], axis=1)[None]
    tm = _truncated_moments_2d(nrm, c[None])
    out = _polytope_tail._polygon_kernel(nrm, c[None])
    assert np.isfinite(out[0]).all()
    np.testing.assert_array_equal(out[0], tm.log_mass)
    np.testing.assert_array_equal(out[2], tm.cov)
    # sliced anyway (no distance rule), the slices give up instead of overflowing, and the
    # kernel's result stands
    monkeypatch.setattr(_polytope_tail, "_NEAR", np.inf)
    lm, *_ = _polytope_tail._sliced(
        a[None],
        b[None, :, None],
        c[None],
        np.ones((1, a.size), bool),
        np.zeros(1),
        -_polytope_tail._zmax(0.0),
        _polytope_tail._interval_kernel,
    )
    assert lm[0] == -np.inf
    np.testing.assert_array_equal(_polytope_tail._polygon_kernel(nrm, c[None])[0], tm.log_mass)


def test_the_polyhedron_of_that_section_matches_the_oracle():
    from tests.oracles.polytope_quad import polytope_ref

    n = np.array(
        [
            [0.4552987449838612, -0.7723193778279894, -0.44297384962039055],
            [0.38545133068576576, -0.41723945741081764, 0.8230057757100487],
            [0.05798376835391959, -0.1955939831477223, 0.9789692928605511],
            [-0.048818219403509, 0.2107758276287852, -0.9763146685068659],
            [0.6624511929733697, 0.7155873282805247, -0.22156983669376096],
            [0.8984508017359528, 0.09885973356950074, 0.42780008174215095],
            [0.2788798020080444, -0.05889847352180948, -0.9585181405945089],
            [0.4145541939298682, 0.4230711675578526, -0.8057019346361238],
            [0.20536928362508633, -0.9346055758691871, -0.2904063961030195],
        ]
    )
    c = np.array(
        [
            104.56117773362871,
            39.61756073948731,
            -9.31686783040674,
            10.74832757829978,
            34.76775775139718,
            71.44940407581574,
            58.812199834200136,
            38.934981510027825,
            87.52365540155786,
        ]
    )
    tm = truncated_moments_nd(n[None], c[None])
    ref = polytope_ref(n, c)
    assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) < _TOL[1e2]


def test_panels_holding_nothing_are_not_refined_to_their_own_tolerance(monkeypatch):
    """A polyhedron 30 sd out (from a random [3, 10, 10, 6] model's posterior) whose thin
    cross-sections were sliced into ~2e6 intervals, most in panels that hold < 1e-16 of the
    weight; same moments (oracle) with a quarter of the work."""
    from exactdgn.gaussian import _polytope_tail
    from tests.oracles.polytope_quad import polytope_ref

    n = np.array(
        [
            [0.08094241614407761, -0.38861873505967665, 0.9178364800057666],
            [-0.06974669162248455, 0.43093307083620563, -0.8996844377154669],
            [-0.48789309642211776, -0.3750198399455394, 0.7882388255540703],
            [-0.7627146370544186, 0.25608995975439264, -0.5938723052440988],
            [0.6388850396798483, 0.4190456560373747, 0.6451562944197978],
            [0.5609458539988379, 0.3327374984639381, -0.7580405701527295],
        ]
    )
    c = np.array(
        [
            7.363918988216046,
            -2.59082862115526,
            -13.22453944943143,
            -23.70944389763517,
            57.86072033527233,
            15.793833653662082,
        ]
    )
    kernel = _polytope_tail._interval_kernel
    seen = [0]

    def counted(nrm, off):
        seen[0] += nrm.shape[0]
        return kernel(nrm, off)

    monkeypatch.setattr(_polytope_tail, "_interval_kernel", counted)
    ref = polytope_ref(n, c)
    work = []
    for atol in (_polytope_tail._ATOL, 0.0):
        monkeypatch.setattr(_polytope_tail, "_ATOL", atol)
        seen[0] = 0
        tm = truncated_moments_nd(n[None], c[None])
        work.append(seen[0])
        assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) < 1e-11
    assert work[0] < 0.5 * work[1]  # 5.3e5 against 2.1e6


@pytest.mark.slow
def test_the_oracle_matches_a_far_box():
    """The oracle itself, against the closed form (1-D mpmath intervals) at 1e4."""
    from tests.oracles.polytope_quad import polytope_ref

    for kind in ["facet", "edge", "vertex"]:
        n, c, mean, cov = _box(1e4, kind, np.random.default_rng(7))
        ref = polytope_ref(n, c)
        assert whitened_error(ref.mean, ref.cov, mean, cov) < 1e-7


def test_d3_posterior_of_a_1e4_sigma_row_matches_quadrature():
    """A d = 3 model's posterior for a point 1e4 noise scales out: every region's polyhedron is
    far in its whitened coordinates; mean and covariance against the region-by-region
    quadrature oracle (~2 s).  Errors 4e-8 / 1e-8 posterior sd (the divergence form alone:
    4e-3 in the mean, 4e4 in the covariance)."""
    from exactdgn import Decoder, ExactDGN
    from tests.oracles.polytope_quad import posterior_moments_3d

    dec = Decoder.random([3, 6, 4], activation="leaky_relu", negative_slope=0.1, seed=0)
    model = ExactDGN.from_decoder(dec, 0.1)
    x = np.full(4, 1e3)  # 1e4 noise scales
    post = model.posterior(x[None])
    mean, cov, _ = posterior_moments_3d(dec, x, 0.1)
    W = np.linalg.inv(np.linalg.cholesky(cov))
    assert np.abs(W @ (np.asarray(post.mean)[0] - mean)).max() < 3e-7
    assert np.abs(W @ (np.asarray(post.covariance_matrix)[0] - cov) @ W.T).max() < 3e-7


# ---------------------------------------------------------------------------------------------
# d = 4: far polytopes sliced into 3-D cross-sections (thin ones sliced again into polygons)
# ---------------------------------------------------------------------------------------------
_SIDES_4 = {
    # the sides after the far one: bounded or not, narrow ones where the closest point is an
    # edge or a vertex of the box (its cross-sections are thin needles or tiny polytopes there)
    "facet": [(-1.0, 2.0), (-np.inf, 0.7), (-0.4, np.inf)],
    "ridge": [(0.3, 1.0), (-0.5, 0.5), (-np.inf, 0.2)],
    "edge": [(0.3, 1.3), (0.2, 2.2), (-1.0, 0.5)],
    "vertex": [(0.3, 1.3), (0.2, 2.2), (0.1, 0.6)],
}


def _box4(D, kind, rng):
    """A rotated 4-D box ``[D, D + 0.3] x sides`` whose closest point to the mean is a facet,
    a ridge, an edge or a vertex (``kind``); moments from the 1-D mpmath intervals."""
    lo = np.array([D] + [a for a, _ in _SIDES_4[kind]])
    hi = np.array([D + 0.3] + [b for _, b in _SIDES_4[kind]])
    n, c, _, mean, cov = rotated_box(lo, hi, rng)
    return n, c, mean, cov


_KINDS_4 = ["facet", "ridge", "edge", "vertex"]


def test_the_weight_decides_which_far_4d_polytopes_are_sliced(monkeypatch):
    """d = 4: the divergence form's error bound there is ~1e-17 D^6 (its facets' moments are
    themselves far): 10 at D = 1e3, so a weight of e^-40 hides it, e^-20 does not."""
    from exactdgn.gaussian import truncated_moments

    n, c, mean, cov = _box4(1e3, "facet", np.random.default_rng(0))
    N, C = np.stack([n, n]), np.stack([c, c])
    tm = truncated_moments(N, C, log_weight=np.array([-45.0, -20.0]))
    _no_far_slices(monkeypatch)
    monkeypatch.setattr(_polytope, "_THIN_VAR", 0.0)  # nor as a thin near one
    monkeypatch.setattr(_polytope, "_THIN_RATIO", np.inf)
    div = truncated_moments(N, C)
    np.testing.assert_array_equal(tm.cov[0], div.cov[0])
    assert whitened_error(tm.mean[1], tm.cov[1], mean, cov) < _TOL[1e3]


@pytest.mark.parametrize("pos", [0.2, 3.0])
def test_small_sections_keep_the_2d_cubature(pos):
    """A tiny square section is integrated by the 2-D kernel's cubature (relative-accurate at
    any size); slicing it again lost 1e-8 of its sd in the mean. Its result is kept, bitwise."""
    from exactdgn.gaussian._polygon import _truncated_moments_2d

    rng = np.random.default_rng(1)
    R = rotation(rng, 2)
    lo, hi = np.array([-0.5, pos]), np.array([-0.5 + 1e-6, pos + 1e-6])
    n, c = np.concatenate([R.T, -R.T]), np.concatenate([hi, -lo])
    lm, mean, cov, _ = _polytope_tail._polygon_kernel(n[None], c[None])
    tm = _truncated_moments_2d(n[None], c[None])
    np.testing.assert_array_equal(lm, tm.log_mass)
    np.testing.assert_array_equal(mean, tm.mean)
    np.testing.assert_array_equal(cov, tm.cov)
    stats = [interval_ref(a, b) for a, b in zip(lo, hi, strict=True)]
    ref_mean = R @ np.array([float(s[1]) for s in stats])
    ref_cov = R @ np.diag([float(s[2]) for s in stats]) @ R.T
    assert whitened_error(mean[0], cov[0], ref_mean, ref_cov) < 1e-9
