"""Prisms (polyhedra whose rows span fewer than ``d`` dimensions) in ``d = 3, 4``: reduced
exactly to their rows' span (:mod:`exactdgn.gaussian._prism`).

References that share no formula with the kernels: the 2-D mpmath slicing oracle
(``tests/oracles/gaussian_mp.py``) on the cross-section, lifted by the product rule; rotated
boxes (1-D mpmath intervals); the 3-D quadrature oracle (``tests/oracles/polytope_quad.py``).
Before the reduction an unbounded 3-D needle 1e-5 thin (a triangular prism) had its
covariance 3.6e4 of its own variance off and its log mass 1.8e-6 nats (estimate 2.9e-4).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactdgn.gaussian import _api, log_mass, truncated_moments
from exactdgn.gaussian._prism import Prisms, find_prisms
from exactdgn.gaussian._rules import EPS
from tests.oracles.boxes import rotation, whitened_error
from tests.oracles.gaussian_mp import polygon_ref
from tests.oracles.polytope_quad import polytope_ref


def _no_reduction(monkeypatch):
    def none(normals, offsets):
        d = normals.shape[2]
        return Prisms(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros((0, d, d)))

    monkeypatch.setattr(_api, "find_prisms", none)


def _triangle(width: float, centre: float):
    """Rows (3, 2) and offsets (3,) of a triangle ``~width`` across, ``centre`` from the mean."""
    ang = 0.3 + 2.0 * np.pi / 3.0 * np.arange(3)
    n2 = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return n2, width + n2 @ np.array([centre, 0.0])


@functools.cache
def _triangle_ref(width: float, centre: float):
    """The triangle's log mass, mean and covariance from the 2-D mpmath oracle (~10 s)."""
    lm, m2, C2 = polygon_ref(*_triangle(width, centre), moments=True, dps=30)
    return float(lm), np.asarray(m2, float), np.asarray(C2, float)


def _triangular_prism(d: int, width: float, centre: float, seed: int = 0):
    """:func:`_triangle` times ``R^(d-2)``, rotated: rows (3, d), offsets (3,) and the
    reference log mass, mean and covariance (the free directions ``N(0, I)``)."""
    n2, c = _triangle(width, centre)
    lm, m2, C2 = _triangle_ref(width, centre)
    R = rotation(np.random.default_rng(seed), d)
    n = np.concatenate([n2, np.zeros((3, d - 2))], axis=1) @ R.T
    cov = np.eye(d)
    cov[:2, :2] = C2
    mean = R @ np.concatenate([m2, np.zeros(d - 2)])
    return n, c, lm, mean, R @ cov @ R.T


def _conditioning(centre: float, width: float) -> float:
    return 16.0 * EPS * (1.0 + centre) / width


def _representable(cov) -> float:
    lam = np.linalg.eigvalsh(cov)
    return 16.0 * EPS * lam[-1] / lam[0]


_SLOW = pytest.mark.slow
_TRIANGLES = [(0.0, 1e-5), (4.0, 1e-3)] + [
    pytest.param(c, w, marks=_SLOW)
    for c in (0.0, 0.3, 4.0)
    for w in (1e-1, 1e-3, 1e-5)
    if (c, w) not in ((0.0, 1e-5), (4.0, 1e-3))
]


@pytest.mark.parametrize(("centre", "width"), _TRIANGLES)
@pytest.mark.parametrize("d", [3, 4])
def test_triangular_prisms_match_the_polygon_oracle(d, centre, width):
    """A thin triangular prism (an unbounded needle with no opposite rows, which no slicing
    direction rule catches) around and off the mean: log mass, mean and covariance within the
    input's conditioning."""
    n, c, ref_lm, mean, cov = _triangular_prism(d, width, centre)
    tm = truncated_moments(n[None], c[None])
    cond = _conditioning(centre, width)
    assert abs(tm.log_mass[0] - ref_lm) <= tm.error[0] + cond
    assert tm.error[0] <= 1e-12 + 4.0 * cond
    assert whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= 1e-10 + cond + _representable(cov)
    lm, err = log_mass(n[None], c[None], return_error=True)
    assert abs(lm[0] - ref_lm) <= err[0] + cond


@pytest.mark.parametrize("d", [3, 4])
def test_without_the_reduction_a_thin_triangular_prism_is_wrong(monkeypatch, d):
    n, c, _, mean, cov = _triangular_prism(d, 1e-5, 0.0)
    _no_reduction(monkeypatch)
    tm = truncated_moments(n[None], c[None])
    tol = 1e-10 + _conditioning(0.0, 1e-5) + _representable(cov)  # as above
    assert not whitened_error(tm.mean[0], tm.cov[0], mean, cov) <= 100.0 * tol


@pytest.mark.parametrize(("rows", "shift"), [(1, 0.4), (2, 0.5), (2, -2.0), (3, 0.7), (3, -1.5)])
def test_ordinary_prisms_match_the_quadrature_oracle(monkeypatch, rows, shift):
    """Half-spaces, wedges and triangular prisms in 3-D, O(1) across, around the mean and out
    in the tail: the reduction and, where the 3-D kernel is accurate, the 3-D kernel agree with
    the independent quadrature."""
    rng = np.random.default_rng(rows + int(10 * abs(shift)))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    n = rng.normal(size=(rows, 3))
    n -= np.outer(n @ axis, axis)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    c = rng.uniform(0.2, 1.0, size=rows) + shift
    ref = polytope_ref(n, c)
    assert find_prisms(n[None], c[None]).index.tolist() == [0]
    tm = truncated_moments(n[None], c[None])
    assert abs(tm.log_mass[0] - ref.log_mass) <= tm.error[0] + 1e-12 * (1.0 + abs(ref.log_mass))
    assert whitened_error(tm.mean[0], tm.cov[0], ref.mean, ref.cov) <= 1e-10
    _no_reduction(monkeypatch)
    full = truncated_moments(n[None], c[None])
    assert abs(full.log_mass[0] - tm.log_mass[0]) <= full.error[0] + tm.error[0]
    assert whitened_error(full.mean[0], full.cov[0], ref.mean, ref.cov) <= 1e-10


@settings(max_examples=40, deadline=None)
@given(
    d=st.sampled_from([3, 4]),
    rank=st.integers(1, 3),
    rows=st.integers(1, 6),
    log_scale=st.floats(-150.0, 150.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_rank_of_the_rows_is_found(d, rank, rows, log_scale, seed):
    """Rows drawn in a random ``rank``-dimensional subspace (any scale, with padding rows
    whose normal is anything but whose offset is ``+inf``) are a prism of that rank, with an
    orthonormal frame whose first columns span them; the same rows with one more row off the
    subspace in every free direction are not."""
    rank = min(rank, d - 1)
    rng = np.random.default_rng(seed)
    Q = rotation(rng, d)
    n = rng.normal(size=(rows, rank)) @ Q[:, :rank].T * 10.0**log_scale
    c = rng.normal(size=rows)
    pad_n, pad_c = rng.normal(size=(2, d)), np.full(2, np.inf)
    N, C = np.concatenate([n, pad_n])[None], np.concatenate([c, pad_c])[None]
    pr = find_prisms(N, C)
    r = int(np.linalg.matrix_rank(n / np.abs(n).max()))
    assert pr.index.tolist() == [0]
    assert pr.rank.tolist() == [r]
    B = pr.basis[0]
    assert np.allclose(B.T @ B, np.eye(d), atol=1e-12)
    unit = n / np.linalg.norm(n, axis=1, keepdims=True)
    assert np.abs(unit @ B[:, r:]).max() <= 1e-12
    extra = rng.normal(size=(d - r, d - r)) @ B[:, r:].T
    full = np.concatenate([N[0], extra])[None]
    assert find_prisms(full, np.concatenate([C[0], np.ones(d - r)])[None]).index.size == 0


def test_a_batch_of_prisms_and_polyhedra_keeps_each_pair_in_its_place():
    """Prisms of ranks 1-3 among full polyhedra (d = 4, and d = 3): the batch gives every pair
    what it gives alone, and empty prisms stay empty."""
    rng = np.random.default_rng(7)
    for d in (3, 4):
        F = 5
        N, C = [], []
        for k in range(9):
            r = k % d + 1  # ranks 1..d (d: not a prism)
            Q = rotation(rng, d)[:, :r]
            n = np.zeros((F, d))
            m = min(F, r + 1)
            n[:m] = rng.normal(size=(m, r)) @ Q.T
            c = np.full(F, np.inf)
            c[:m] = rng.uniform(0.3, 1.5, size=m)
            if k == 4:
                c[0] = -np.inf  # empty
            N.append(n)
            C.append(c)
        N, C = np.stack(N), np.stack(C)
        found = find_prisms(N, C)
        assert sorted(found.index.tolist()) == [k for k in range(9) if k % d + 1 < d]
        batch = truncated_moments(N, C)
        for k in range(9):
            one = truncated_moments(N[k : k + 1], C[k : k + 1])
            # (the error estimates of the full polyhedra move at rounding with the batch)
            for a, b, atol in zip(batch, one, (0.0, 0.0, 0.0, 1e-15), strict=True):
                np.testing.assert_allclose(a[k], b[0], rtol=1e-13, atol=atol)
        assert batch.log_mass[4] == -np.inf
        np.testing.assert_allclose(log_mass(N, C), batch.log_mass, rtol=1e-13)
