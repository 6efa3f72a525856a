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

from exactdgn.gaussian import _polytope
from exactdgn.gaussian._polytope import truncated_moments_nd
from tests.oracles.gaussian_mp import interval_ref

# a margin over the conditioning floor (1-ulp changes of c move the reference by ~eps D^2)
_TOL = {1e2: 1e-10, 1e3: 1e-9, 1e4: 1e-7}


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _whitened_error(mean, cov, ref_mean, ref_cov):
    W = np.linalg.inv(np.linalg.cholesky(ref_cov))
    return max(np.abs(W @ (mean - ref_mean)).max(), np.abs(W @ (cov - ref_cov) @ W.T).max())


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
    R = _rotation(rng, 3)
    n, c = [], []
    for i in range(3):
        if np.isfinite(hi[i]):
            n.append(R[:, i])
            c.append(hi[i])
        if np.isfinite(lo[i]):
            n.append(-R[:, i])
            c.append(-lo[i])
    stats = [interval_ref(a, b) for a, b in zip(lo, hi, strict=True)]
    mean = R @ np.array([float(s[1]) for s in stats])
    cov = R @ np.diag([float(s[2]) for s in stats]) @ R.T
    return np.array(n), np.array(c), mean, cov


@pytest.mark.parametrize("D", [1e2, 1e3, 1e4])
@pytest.mark.parametrize("kind", ["facet", "edge", "vertex"])
def test_far_box_moments_match_the_interval_products(D, kind):
    n, c, mean, cov = _box(D, kind, np.random.default_rng(int(np.log10(D))))
    tm = truncated_moments_nd(n[None], c[None])
    assert _whitened_error(tm.mean[0], tm.cov[0], mean, cov) < _TOL[D]


def test_the_divergence_form_alone_fails_there(monkeypatch):
    """The check above is not vacuous: without the slices the same box is far off."""
    n, c, mean, cov = _box(1e3, "edge", np.random.default_rng(3))
    monkeypatch.setattr(_polytope, "TAIL_D", np.inf)
    tm = truncated_moments_nd(n[None], c[None])
    assert not _whitened_error(tm.mean[0], tm.cov[0], mean, cov) < 1e-3


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
    monkeypatch.setattr(_polytope, "TAIL_D", np.inf)
    old = truncated_moments_nd(nb, cb)
    near = np.flatnonzero(np.linalg.norm(old.mean[:64], axis=1) < 7.0)  # distance < 8
    assert near.size > 40
    for a, b in zip(new, old, strict=True):
        np.testing.assert_array_equal(a[near], b[near])
    np.testing.assert_array_equal(new.log_mass, old.log_mass)
    assert not np.array_equal(new.cov[64], old.cov[64])


def _cone(rng, D, kind, width):
    """Random polyhedra whose closest point ``D e1`` (then rotated) is on a facet, an edge or
    a vertex; ``width`` scales how far the other rows are (thin or wide)."""
    p = np.array([D, 0.0, 0.0])
    rows, offs = [], []
    if kind == "facet":
        rows.append([-1.0, 0.0, 0.0])
        offs.append(-D)
        for _ in range(4):
            v = rng.normal(size=3)
            v[0] = abs(v[0]) * 0.3
            v /= np.linalg.norm(v)
            rows.append(v)
            offs.append(v @ p + width * rng.uniform(0.5, 2.0))
    elif kind == "edge":
        for s in (1.0, -1.0):
            v = np.array([-1.0, s * rng.uniform(0.2, 3.0), 0.0])
            v /= np.linalg.norm(v)
            rows.append(v)
            offs.append(v @ p)
        for _ in range(2):
            v = rng.normal(size=3)
            v[0] = abs(v[0]) * 0.3
            v /= np.linalg.norm(v)
            rows.append(v)
            offs.append(v @ p + width * rng.uniform(0.5, 2.0))
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
    return np.array(rows) @ _rotation(rng, 3).T, np.array(offs)


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
            err = _whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov)
            assert err < _TOL[D], (kind, width, err)


# A polyhedron of a d = 3 posterior at a point 100 data scales out (random [3, 10, 10, 6]
# model): its closest point is on an edge whose cross-sections are strips of width ~13 x, which
# appear (empty below x ~ 1e-15, from rounding) with a kink the x-panels cannot resolve; a panel
# holding ~e^-30 of the weight was refined to its own relative tolerance round after round
# (> 28,000 cross-sections, minutes, unconverged) before panels below 1e-16 of the whole weight
# were accepted as they are.
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


def test_a_kink_in_a_negligible_panel_is_not_refined_forever(monkeypatch):
    from tests.oracles.polytope_quad import polytope_ref

    seen = _counting_sections(monkeypatch)
    tm = truncated_moments_nd(_EDGE_N[None], _EDGE_C[None])
    assert seen[0] < 1000  # 312 cross-sections
    ref = polytope_ref(_EDGE_N, _EDGE_C)
    assert _whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) < _TOL[1e3]  # D = 1093


def test_without_the_whole_weight_allowance_the_kink_is_refined_to_the_round_cap(
    monkeypatch, caplog
):
    from exactdgn.gaussian import _polytope_tail

    monkeypatch.setattr(_polytope_tail, "_MAX_ROUNDS", 6)
    with caplog.at_level("DEBUG", logger=_polytope_tail.__name__):
        truncated_moments_nd(_EDGE_N[None], _EDGE_C[None])
        assert "accepted unconverged" not in caplog.text  # converged within 6 rounds
        monkeypatch.setattr(_polytope_tail, "_ATOL", 0.0)
        truncated_moments_nd(_EDGE_N[None], _EDGE_C[None])
    assert "accepted unconverged" in caplog.text


@pytest.mark.slow
def test_the_oracle_matches_a_far_box():
    """The oracle itself, against the closed form (1-D mpmath intervals) at 1e4."""
    from tests.oracles.polytope_quad import polytope_ref

    for kind in ["facet", "edge", "vertex"]:
        n, c, mean, cov = _box(1e4, kind, np.random.default_rng(7))
        ref = polytope_ref(n, c)
        assert _whitened_error(ref.mean, ref.cov, mean, cov) < 1e-7


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
