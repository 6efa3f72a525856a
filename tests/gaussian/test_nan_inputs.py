"""NaN input to the public functions of ``exactdgn.gaussian`` is an error, never a number.

Each function taking bounds, normals, offsets, a shift, a map or a floor raises a
``ValueError`` naming the argument, how many NaN it holds and (in parentheses) what to give
instead: ``log_interval_mass([nan, 0], [1, nan])`` returned ``(-inf, -inf)`` with error 0,
``log_mass_2d`` ``-inf`` and ``polygon_table`` an empty polygon.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from exactdgn import gaussian as G

NAN = np.nan


def _tri():
    """A triangle (unit normals, offsets) around the mean."""
    n = np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 0.0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return n, np.array([1.0, 1.0, 1.0])


def _two_polygons():
    n, c = _tri()
    return np.stack([n, n]), np.stack([c, c + 0.5])


M2 = np.array([0, 1])
W2 = np.array([[0.5, -1.0], [3.0, 2.0]])
T2 = np.array([np.eye(2), [[2.0, 0.5], [0.0, 0.7]]])


def _args(fun):
    """Valid arguments of each public function (NaN-free)."""
    N, C = _two_polygons()
    mu, L, Cz, ez = np.zeros((2, 2)), np.eye(2), N[0], C[0]
    tab = lambda: G.polygon_table(N, C)  # noqa: E731
    return {
        "log_interval_mass": lambda: (np.array([-1.0, 0.0, 2.0]), np.array([1.0, 3.0, np.inf])),
        "interval_stats": lambda: (np.zeros((2, 2)), np.ones(4)[:, None, None]),
        "log_mass_2d": lambda: (N, C, np.zeros(2)),
        "truncated_moments_2d": lambda: (N, C),
        "polygon_table": lambda: (N, C),
        "log_mass_2d_shifted": lambda: (tab(), M2, W2, np.zeros(2)),
        "truncated_moments_2d_shifted": lambda: (tab(), M2, W2),
        "log_mass_2d_transformed": lambda: (tab(), M2, T2, W2),
        "truncated_moments_2d_transformed": lambda: (tab(), M2, T2, W2),
        "log_edge_pieces": lambda: (np.array([1.0, 2.0]), np.zeros(2), np.array([3.0, np.inf])),
        "whiten": lambda: (mu, L, Cz, ez),
        "gaussian_polyhedron_moments": lambda: (mu, L, Cz, ez),
        "log_mass": lambda: (N, C),
        "truncated_moments": lambda: (N, C),
    }[fun]()


# (function, position of the argument, its name, where the NaN go)
_SPECS = [
    ("log_interval_mass", 0, "lo", [(0,)]),
    ("log_interval_mass", 1, "hi", [(1,)]),
    ("interval_stats", 0, "lo", [(0, 0), (1, 1)]),
    ("interval_stats", 1, "hi", [(3, 0, 0)]),
    ("log_mass_2d", 1, "offsets", [(1, 2)]),
    ("log_mass_2d", 0, "normals", [(0, 1, 0), (1, 1, 1)]),
    ("log_mass_2d", 2, "floor", [(1,)]),
    ("truncated_moments_2d", 1, "offsets", [(0, 0), (0, 1), (1, 2)]),
    ("truncated_moments_2d", 0, "normals", [(1, 0, 0)]),
    ("polygon_table", 1, "offsets", [(1, 0)]),
    ("polygon_table", 0, "normals", [(1, 0, 1)]),
    ("log_mass_2d_shifted", 2, "shift", [(1, 0)]),
    ("log_mass_2d_shifted", 3, "floor", [(0,), (1,)]),
    ("truncated_moments_2d_shifted", 2, "shift", [(0, 1)]),
    ("log_mass_2d_transformed", 2, "T", [(1, 0, 1)]),
    ("log_mass_2d_transformed", 3, "shift", [(0, 0)]),
    ("truncated_moments_2d_transformed", 2, "T", [(0, 0, 0), (0, 1, 1)]),
    ("log_edge_pieces", 0, "h", [(1,)]),
    ("log_edge_pieces", 1, "ta", [(0,)]),
    ("log_edge_pieces", 2, "tb", [(0,), (1,)]),
    ("whiten", 0, "mean", [(0, 0)]),
    ("whiten", 1, "cov_chol", [(1, 0)]),
    ("whiten", 2, "C", [(2, 1)]),
    ("whiten", 3, "e", [(0,)]),
    ("gaussian_polyhedron_moments", 0, "mean", [(1, 1)]),
    ("gaussian_polyhedron_moments", 1, "cov", [(0, 1), (1, 0)]),
    ("gaussian_polyhedron_moments", 2, "C", [(0, 0)]),
    ("gaussian_polyhedron_moments", 3, "e", [(1,)]),
    ("log_mass", 1, "offsets", [(0, 1)]),
    ("truncated_moments", 1, "offsets", [(0, 1)]),
]
_CASES = {f"{fun}-{name}": (fun, pos, name, where) for fun, pos, name, where in _SPECS}


@pytest.mark.parametrize("name", list(_CASES))
def test_nan_input_is_named_counted_and_explained(name):
    fun, pos, arg, where = _CASES[name]
    args = list(_args(fun))
    args[pos] = np.array(args[pos], dtype=float)
    for i in where:
        args[pos][i] = NAN
    getattr(G, fun)(*_args(fun))  # the same call without NaN runs
    pattern = rf"^{re.escape(arg)} contains? {len(where)} NaN (or infinite )?values \(.+\)"
    with pytest.raises(ValueError, match=pattern):
        getattr(G, fun)(*args)


@pytest.mark.parametrize("fun", ["log_mass_2d", "truncated_moments_2d", "polygon_table"])
def test_infinite_normals_are_errors_in_d2(fun):
    """As in :func:`exactdgn.gaussian.log_mass`: an infinite normal is no constraint one can
    read (it made the pair empty, mass 0)."""
    N, C = _two_polygons()
    N[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"^normals contain 1 NaN or infinite values"):
        getattr(G, fun)(N, C)


def test_infinite_shift_is_an_error():
    w = W2.copy()
    w[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"^shift contains 1 NaN or infinite values"):
        G.log_mass_2d_shifted(G.polygon_table(*_two_polygons()), M2, w)


def test_infinities_are_still_interval_ends_and_padding():
    """The checks reject NaN only: infinite ends, padding rows and -inf offsets keep their
    meaning (and their values)."""
    lm, err = G.log_interval_mass(np.array([-np.inf, 0.0, 2.0]), np.array([np.inf, np.inf, 1.0]))
    np.testing.assert_array_equal(lm[[0, 2]], [0.0, -np.inf])
    assert abs(lm[1] - np.log(0.5)) < 1e-15 and err[2] == 0.0
    N, C = _two_polygons()
    Np = np.concatenate([N, np.zeros((2, 1, 2))], axis=1)
    Cp = np.concatenate([C, [[np.inf], [-np.inf]]], axis=1)
    lm2, _ = G.log_mass_2d(Np, Cp)
    assert lm2[0] == G.log_mass_2d(N, C)[0][0] and lm2[1] == -np.inf
    tab = G.polygon_table(Np, Cp)
    assert not tab.empty[0] and tab.empty[1]


def test_log_edge_pieces_checks_shapes_and_ranges():
    """Arguments of different lengths filled only some entries (the rest uninitialised
    memory), scalars raised IndexError, ``h <= 0`` or ``ta > tb`` gave NaN with a numpy
    warning. Now they are errors; scalars broadcast (to the (n,) values)."""
    from exactdgn.gaussian import log_edge_pieces

    want = log_edge_pieces(np.array([1.0, 1.0]), np.array([0.0, 0.5]), np.array([2.0, 2.0]))
    np.testing.assert_array_equal(log_edge_pieces(1.0, np.array([0.0, 0.5]), 2.0), want)
    assert np.ndim(log_edge_pieces(1.0, 0.0, 2.0)) == 0
    with pytest.raises(ValueError, match=r"one shape .* got \(2,\), \(1,\) and \(3,\)"):
        log_edge_pieces(np.array([1.0, 2.0]), np.array([0.0]), np.ones(3))
    with pytest.raises(ValueError, match="h must be positive"):
        log_edge_pieces(np.array([1.0, 0.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= ta < tb"):
        log_edge_pieces(1.0, 2.0, 1.0)


def test_log_mass_checks_log_weight_in_every_dimension():
    """``log_weight`` (used by d >= 3) was taken unchecked in d = 1, 2."""
    from exactdgn.gaussian import log_mass

    for d in (1, 2, 3):
        n = np.eye(d)[None]
        with pytest.raises(ValueError, match="log_weight"):
            log_mass(n, np.zeros((1, d)), log_weight=np.zeros(7))


def test_gaussian_polyhedron_moments_names_a_bad_covariance():
    """A covariance of the wrong shape was reported as ``cov_chol`` (a name the caller never
    used); one not positive definite raised numpy's bare LinAlgError."""
    from exactdgn.gaussian import gaussian_polyhedron_moments

    args = (np.zeros((1, 2)), None, np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match=r"cov must have shape \(2, 2\) or \(1, 2, 2\)"):
        gaussian_polyhedron_moments(args[0], np.eye(3), *args[2:])
    with pytest.raises(ValueError, match="cov must be positive definite"):
        gaussian_polyhedron_moments(args[0], -np.eye(2), *args[2:])


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("c", [-2e154, -1e155, -1e300])
def test_half_spaces_beyond_float64_reach_have_log_mass_minus_inf_not_nan(d, c):
    """A half-space ``|c|`` > 1.34e154 sd out (``c^2`` overflows): log mass -inf (below
    -9e307), error 0 and NaN moments, in every dimension (d = 2 returned NaN)."""
    n = np.zeros((2, 1, d))
    n[:, 0, 0] = 1.0
    if d > 1:  # a rotated row too
        n[1, 0, 0], n[1, 0, -1] = 0.6, 0.8
    off = np.full((2, 1), c)
    lm, err = G.log_mass(n, off, return_error=True)
    tm = G.truncated_moments(n, off)
    np.testing.assert_array_equal(lm, -np.inf)
    np.testing.assert_array_equal(err, 0.0)
    np.testing.assert_array_equal(tm.log_mass, -np.inf)
    assert np.isnan(tm.mean).all() and np.isnan(tm.cov).all()
    # 1e154 sd out is still a number: -c^2/2 - log(-c sqrt(2 pi)), to rounding
    lm, err = G.log_mass(n, np.full((2, 1), -1e154), return_error=True)
    ref = -0.5e308 - np.log(1e154 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(lm, ref, rtol=4 * np.finfo(float).eps)
