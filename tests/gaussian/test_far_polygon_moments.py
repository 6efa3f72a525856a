"""Mean and covariance of ``N(0, I_2)`` on far polygons (distance >= 8) whose closest point is a
vertex with an edge nearly along the direction to the mean.

Such a polygon's slices (perpendicular to that direction) open from the vertex at a steep
rate: ``Phi`` of the steep edge's bound rises from 0 to 1 within ``r ~ 16 |b / a|`` of the
vertex.  The slicing rule used to add breakpoints there only when that window could fall
between two nodes, judged on the panel holding the vertex, and a rounding-level panel
``[0, 2e-15]`` (a vertex's ``r`` computed as ``2e-15`` instead of 0) passed that test: the
moments were off by up to 1.6 posterior sd at ``D = 10`` (0.7 at ``D = 8``), with exact log
masses.

Reference: a rotated product of intervals ``[D, D + w] x [lo, hi]``, whose moments are the 1-D
interval moments (mpmath) rotated; errors in units of the reference posterior (mean and
covariance whitened by its Cholesky factor).  The problem's own floor (1 ulp of the rotated
rows moves the polygon by ``~eps D``, i.e. ``eps D^2`` own sd) is ~1e-8 at ``D = 1e4``.
Distances start at 8.5, clear of the switch at 8 (below it the divergence form is used, good
to ~4e-7 of the own sd of the thin strips here: ~1e-12 absolute).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from exactdgn.gaussian import truncated_moments
from tests.oracles.boxes import box_rows
from tests.oracles.gaussian_mp import interval_ref

_TOL = {8.5: 1e-9, 10.0: 1e-9, 20.0: 1e-9, 100.0: 1e-9, 1e3: 1e-8, 1e4: 3e-7}


def _box(D, width, lo, hi, theta):
    """Rows ``(F, 2)`` (padded to 4), offsets, and the reference mean / covariance of the
    rotated box ``R [D, D + width] x [lo, hi]``."""
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    a, b = np.array([D, lo]), np.array([D + width, hi])
    n, c = box_rows(R, a, b)
    stats = [interval_ref(float(x), float(y)) for x, y in zip(a, b, strict=True)]
    mean = R @ np.array([float(s[1]) for s in stats])
    cov = R @ np.diag([float(s[2]) for s in stats]) @ R.T
    pad = 4 - len(n)
    n = np.pad(np.array(n), ((0, pad), (0, 0)))
    c = np.pad(np.array(c), (0, pad), constant_values=np.inf)
    return n, c, mean, cov


def _cases(D):
    """Vertex-closest boxes (one side unbounded or a strip; thin and wide) at several angles,
    ``theta = 0`` included (the rounding-level panel), and edge-closest ones."""
    out = []
    rng = np.random.default_rng(int(D))
    for lo, hi in [
        (0.00181, np.inf),
        (0.05, np.inf),
        (0.6, np.inf),
        (-np.inf, -0.02),
        (-np.inf, -0.9),
        (0.1, 0.35),
        (-0.5, 0.3),
    ]:
        for width in (np.inf, 0.01):
            for theta in (0.0, rng.uniform(0.0, 2.0 * np.pi)):
                out.append(_box(D, width, lo, hi, theta))
    return out


def _whitened_error(mean, cov, ref_mean, ref_cov):
    W = np.linalg.inv(np.linalg.cholesky(ref_cov))
    return np.maximum(
        np.abs(np.einsum("pij,pj->pi", W, mean - ref_mean)).max(axis=1),
        np.abs(W @ (cov - ref_cov) @ np.swapaxes(W, 1, 2)).max(axis=(1, 2)),
    )


@pytest.fixture(scope="module", params=sorted(_TOL))
def far_boxes(request):
    D = request.param
    n, c, mean, cov = (np.array(a) for a in zip(*_cases(D), strict=True))
    return D, n, c, mean, cov


def test_far_vertex_polygons_match_the_interval_products(far_boxes):
    D, n, c, mean, cov = far_boxes
    tm = truncated_moments(n, c)
    err = _whitened_error(tm.mean, tm.cov, mean, cov)
    assert np.all(err < _TOL[D]), (D, err.max(), int(err.argmax()))


def test_far_vertex_polygons_torch(far_boxes):
    """The torch twin (CPU, float64) of the same slicing rule."""
    torch = pytest.importorskip("torch")
    from exactdgn.gaussian import polygon_table
    from exactdgn.gaussian._torch_polygon import (
        log_mass_2d_shifted_t,
        table_to_device,
        truncated_moments_2d_shifted_t,
    )

    D, n, c, mean, cov = far_boxes
    tab = table_to_device(polygon_table(n, c), "cpu")
    m = torch.arange(n.shape[0])
    w = torch.zeros((n.shape[0], 2), dtype=torch.float64)
    logm, _ = log_mass_2d_shifted_t(tab, m, w)
    tm_mean, tm_cov = truncated_moments_2d_shifted_t(tab, m, w, logm)
    err = _whitened_error(tm_mean.numpy(), tm_cov.numpy(), mean, cov)
    assert np.all(err < _TOL[D]), (D, err.max(), int(err.argmax()))


def test_without_the_sweep_breakpoints_it_fails(monkeypatch):
    """Not vacuous: without the breakpoints at the steep rows' transitions the same boxes at
    ``D = 10`` are off by more than 1e-3 sd (the old rule added them on almost none)."""
    from exactdgn.gaussian import _polygon

    monkeypatch.setattr(_polygon, "_SWEEP_K", np.inf)
    n, c, mean, cov = (np.array(a) for a in zip(*_cases(10.0), strict=True))
    tm = truncated_moments(n, c)
    assert _whitened_error(tm.mean, tm.cov, mean, cov).max() > 1e-3


def test_d2_posterior_of_a_moderate_outlier_matches_quadrature(monkeypatch):
    """End to end: a random d = 2 model's posterior at a point ~3 data scales out, whose
    dominant pairs are such far vertex polygons, against the region-by-region quadrature oracle
    (~6 s).  Before the fix: 1.9e-3 posterior sd in the mean, 9.2e-3 in the covariance; now
    ~1e-12.  Without the breakpoints it fails again (the check is not vacuous)."""
    from exactdgn import Decoder, ExactDGN
    from exactdgn.gaussian import _polygon
    from tests.oracles.likelihood import oracle_posterior_moments_2d

    dec = Decoder.random([2, 8, 8, 5], activation="leaky_relu", negative_slope=0.1, seed=0)
    model = ExactDGN.from_decoder(dec, 0.1)
    x = np.random.default_rng(0).normal(size=(40, 5))[29] * 3.0
    mean, cov = oracle_posterior_moments_2d(dec, x, 0.1)

    def error():
        post = model.posterior(x[None])
        m, c = np.asarray(post.mean)[:1], np.asarray(post.covariance_matrix)[:1]
        return _whitened_error(m, c, mean[None], cov[None])[0]

    assert error() < 1e-9
    monkeypatch.setattr(_polygon, "_SWEEP_K", np.inf)
    assert error() > 1e-4
