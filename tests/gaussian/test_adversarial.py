"""Adversarial exactness checks of the public d = 2 (and d >= 3) API against the independent
mpmath slicing reference of ``tests/oracles/gaussian_mp.py``: the reported error of each log
mass must cover its true error (the true value being that of the float input, taken exactly).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from exactdgn.gaussian import (
    log_mass,
    log_mass_2d_shifted,
    log_mass_2d_transformed,
    polygon_table,
    truncated_moments,
    truncated_moments_2d_shifted,
)
from tests.oracles.gaussian_mp import polygon_ref


def _rot(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def _thin_wedge(D, ang):
    """A wedge of opening ``ang`` whose apex is ``D`` sd from the mean, pointing away from it
    (its two rows are nearly opposite: the apex is ill-conditioned in float)."""
    a = np.array([math.cos(0.3), math.sin(0.3)]) * D
    n1 = _rot(0.3 + ang / 2) @ np.array([0.0, 1.0])
    n2 = _rot(0.3 - ang / 2) @ np.array([0.0, -1.0])
    return np.array([n1, n2]), np.array([n1 @ a, n2 @ a])


def _thin_triangle(D, ang):
    """The thin wedge closed by a row far out (a bounded polygon with one sharp corner)."""
    n, c = _thin_wedge(D, ang)
    u = np.array([math.cos(0.3), math.sin(0.3)])
    return np.vstack([n, u]), np.r_[c, D + 3.0]


def _spike(D, ang):
    """A spike of opening ``ang`` (two rows ``ang`` from antiparallel) whose apex is ``D`` sd
    from the mean, its axis turned 0.3 from the radial direction: most of its mass lies along
    the rows, ~1 sd from the apex, where an ``eps`` turn of a row moves it."""
    p = D * np.array([math.cos(1.0), math.sin(1.0)])
    a = 1.0 + 0.3 + math.pi / 2  # the rows' mean normal, across the spike's axis
    n = np.array([[math.cos(a + ang / 2), math.sin(a + ang / 2)],
                  [math.cos(a + math.pi - ang / 2), math.sin(a + math.pi - ang / 2)]])  # fmt: skip
    return n, n @ p


def _spike_near_mean(D, ang):
    """The rows of a spike from the 2026-12-07 audit, apex ~2 sd along the rows from a foot
    0.08 sd from the mean (``D``, ``ang`` unused): its log mass was 5.6e-10 off against an
    estimate of 8.4e-12."""
    n = np.array([[-0.07842598209654389, 0.996919939279074],
                  [0.07842597254791292, -0.9969199400302484]])  # fmt: skip
    return n, np.array([-0.08379464520540629, 0.0837946260659626])


_CASES = {
    "spike-0.5-1e-8": (_spike, 0.5, 1e-8),
    "spike-5-1e-6": (_spike, 5.0, 1e-6),
    "spike-near-mean": (_spike_near_mean, 0.0, 0.0),
    "wedge-5-1e-9": (_thin_wedge, 5.0, 1e-9),
    "wedge-40-1e-9": (_thin_wedge, 40.0, 1e-9),
    "wedge-1e3-1e-9": (_thin_wedge, 1e3, 1e-9),
    "wedge-10-1e-3": (_thin_wedge, 10.0, 1e-3),
    "triangle-2-1e-7": (_thin_triangle, 2.0, 1e-7),
}


@functools.cache
def _case(name):
    fn, D, ang = _CASES[name]
    n, c = fn(D, ang)
    return n, c, polygon_ref(n, c)[0]


@pytest.mark.parametrize("name", sorted(_CASES))
def test_sharp_corner_error_estimate_covers(name):
    """Nearly parallel adjacent rows: the corner's position is rounded by ~eps / sin(angle)
    along the rows; the reported error must cover the resulting log-mass error (it claimed
    ~1e-13 where the error was 1e-7 at 5 sd and 4e-3 at 1e3 sd)."""
    n, c, ref = _case(name)
    N, C = n[None], c[None]
    lm, err = log_mass(N, C, return_error=True)
    tm = truncated_moments(N, C)
    tab = polygon_table(N, C)
    zero, m0 = np.zeros((1, 2)), np.zeros(1, dtype=int)
    got = [(lm[0], err[0]), (tm.log_mass[0], tm.error[0])]
    ls, es = log_mass_2d_shifted(tab, m0, zero)
    got.append((ls[0], es[0]))
    ts = truncated_moments_2d_shifted(tab, m0, zero)
    got.append((ts.log_mass[0], ts.error[0]))
    lx, ex = log_mass_2d_transformed(tab, m0, np.eye(2)[None], zero)
    got.append((lx[0], ex[0]))
    for v, e in got:
        assert np.isfinite(v)
        assert abs(v - ref) <= e, (v, ref, abs(v - ref), e)


@pytest.mark.parametrize("name", sorted(_CASES))
def test_sharp_corner_error_estimate_covers_torch(name):
    """The same through the torch twin (CPU, float64) used by the model."""
    torch = pytest.importorskip("torch")
    from exactdgn.gaussian._torch_polygon import log_mass_2d_shifted_t, table_to_device

    n, c, ref = _case(name)
    tab = table_to_device(polygon_table(n[None], c[None]), "cpu")
    lt, et = log_mass_2d_shifted_t(
        tab, torch.zeros(1, dtype=torch.int64), torch.zeros((1, 2), dtype=torch.float64)
    )
    v, e = float(lt[0]), float(et[0])
    assert abs(v - ref) <= e, (v, ref, abs(v - ref), e)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170, 1e300])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_extreme_row_scales_are_normalised(d, scale):
    """Rows are documented as normalised internally: a row scaled by 1e±300 (whose squared
    norm under- or overflows) is the same constraint. d = 3 read 1e-300 rows as padding (mass
    1) and 1e300 rows as infeasible (mass 0)."""
    n = np.eye(d)[None]
    c = np.ones((1, d))
    ref = log_mass(n, c)
    got = log_mass(scale * n, scale * c)
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    tm = truncated_moments(scale * n, scale * c)
    np.testing.assert_allclose(tm.log_mass, ref, rtol=1e-14)
