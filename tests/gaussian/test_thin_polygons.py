"""Thin polygons (``d = 2``): moments from slices across the thin direction where the
divergence form's covariance loses accuracy (:mod:`exactdgn.gaussian._polygon_thin`).

Reference: rotated strips, half-strips and boxes, whose moments are products of 1-D 50-digit
mpmath intervals (``tests/oracles/boxes.py``), no formula shared with the kernels.  Before the
slices a strip 1e-3 wide 3 sd out had its covariance 6e-5 of its own variance off (the floor
``16 eps lambda_max / lambda_min`` is 4e-8 there), a half-strip 1e-4 wide 8e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn.gaussian import _api, _polygon_thin, log_mass, truncated_moments
from exactdgn.gaussian._rules import EPS
from tests.oracles.boxes import rotated_box, whitened_error


def _strip(kind: str, width: float, centre: float, seed: int = 0):
    """A rotated strip (unbounded), half-strip or box (1.5 long) ``width`` wide, centred
    ``centre`` from the mean across its width."""
    rng = np.random.default_rng(seed)
    end = rng.uniform(-1.0, 2.0)
    lo = [centre - 0.5 * width, -np.inf if kind != "box" else end - 1.5]
    hi = [centre + 0.5 * width, np.inf if kind == "strip" else end]
    return rotated_box(lo, hi, rng)


def _tolerance(cov, centre, width) -> float:
    """``1e-10`` plus the input's conditioning (``~eps |x| / width``) plus the floor of a
    covariance that thin (``16 eps lambda_max / lambda_min``)."""
    lam = np.linalg.eigvalsh(cov)
    return 1e-10 + 16.0 * EPS * (1.0 + centre) / width + 16.0 * EPS * lam[-1] / lam[0]


@pytest.mark.parametrize("width", [1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
@pytest.mark.parametrize("centre", [0.0, 1.5, 3.0])
@pytest.mark.parametrize("kind", ["strip", "half", "box"])
def test_thin_strips_match_the_interval_products(kind, centre, width):
    n, c, ref_lm, mean, cov = _strip(kind, width, centre)
    tm = truncated_moments(n[None], c[None])
    cond = 16.0 * EPS * (1.0 + centre) / width
    assert abs(tm.log_mass[0] - ref_lm) <= tm.error[0] + cond
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= _tolerance(cov, centre, width)
    np.testing.assert_array_equal(log_mass(n[None], c[None]), tm.log_mass)


def _unsliced(monkeypatch):
    monkeypatch.setattr(_api, "thin_polygon_moments", lambda n, c, tm, log_weight=None: tm)


@pytest.mark.parametrize(("kind", "width", "centre"), [("strip", 1e-3, 3.0), ("half", 1e-4, 3.0)])
def test_without_the_slices_thin_strips_are_wrong(monkeypatch, kind, width, centre):
    n, c, _, mean, cov = _strip(kind, width, centre)
    _unsliced(monkeypatch)
    tm = truncated_moments(n[None], c[None])
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= 100.0 * _tolerance(
        cov, centre, width
    )


def test_the_error_model_covers_the_divergence_form(monkeypatch):
    """The gate's model of the divergence covariance's error (``_ERR lambda^-1.6`` of the
    smallest variance) is not below the error it stands for, from 1e-2 to 1e-4 wide (the
    widths where it decides what is sliced)."""
    _unsliced(monkeypatch)
    for width in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4):
        for centre in (0.0, 1.0, 2.0, 3.0):
            for seed in range(3):
                n, c, _, mean, cov = _strip("half", width, centre, seed)
                tm = truncated_moments(n[None], c[None])
                lam = np.linalg.eigvalsh(tm.cov[0])[0]
                if not lam > 0:
                    continue  # (always sliced)
                model = _polygon_thin._ERR * lam**-1.6
                assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= model


def test_the_weight_decides_in_a_mixture(monkeypatch):
    """With ``log_weight``, a thin strip whose weight hides its error keeps the kernel's
    moments; with weight 1 it is sliced; the log mass is the kernel's either way."""
    n, c, _, mean, cov = _strip("strip", 1e-3, 3.0)
    N, C = np.stack([n, n]), np.stack([c, c])
    tm = truncated_moments(N, C, log_weight=np.array([0.0, -60.0]))
    _unsliced(monkeypatch)
    raw = truncated_moments(N, C)
    tol = _tolerance(cov, 3.0, 1e-3)
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= tol
    np.testing.assert_array_equal(tm.cov[1], raw.cov[1])
    np.testing.assert_array_equal(tm.log_mass, raw.log_mass)
    np.testing.assert_array_equal(tm.error, raw.error)


@pytest.mark.parametrize("scale", [1e-170, 1e170])
def test_rows_of_any_scale_are_the_same_strip(scale):
    n, c, _, mean, cov = _strip("half", 1e-3, 3.0)
    tm = truncated_moments(n[None] * scale, c[None] * scale)
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= _tolerance(cov, 3.0, 1e-3)
