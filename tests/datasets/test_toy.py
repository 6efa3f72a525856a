"""Toy 2-D data sets: shapes, dtype, reproducibility, and the geometry each one promises."""

import numpy as np
import pytest

from exactdgn.datasets import check_random_state, circle, gaussian_mixture, two_moons, wave

GENERATORS = [circle, wave, two_moons, gaussian_mixture]


@pytest.mark.parametrize("gen", GENERATORS)
def test_shape_dtype_and_seed_reproducibility(gen):
    X = gen(257, noise=0.1, random_state=3)
    assert X.shape == (257, 2)
    assert X.dtype == np.float64
    assert np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, gen(257, noise=0.1, random_state=3))
    np.testing.assert_array_equal(X, gen(257, noise=0.1, random_state=np.random.default_rng(3)))
    assert not np.array_equal(X, gen(257, noise=0.1, random_state=4))


@pytest.mark.parametrize("gen", GENERATORS)
def test_generator_state_advances(gen):
    rng = np.random.default_rng(0)
    a = gen(50, random_state=rng)
    b = gen(50, random_state=rng)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("gen", GENERATORS)
def test_bad_arguments(gen):
    with pytest.raises(ValueError, match="n_samples"):
        gen(0)
    with pytest.raises(ValueError, match="noise"):
        gen(10, noise=-1.0)
    with pytest.raises(TypeError, match="random_state"):
        gen(10, random_state="seed")
    with pytest.raises(TypeError, match="n_samples"):
        gen(10.0)


@pytest.mark.parametrize(
    ("gen", "kw", "match"),
    [
        (circle, {"radius": np.nan}, "radius"),
        (circle, {"radius": np.inf}, "radius"),
        (wave, {"frequency": np.nan}, "frequency"),
        (wave, {"high": np.inf}, "high"),
        (gaussian_mixture, {"radius": np.inf}, "radius"),
        (gaussian_mixture, {"n_components": 2.5}, "n_components"),
    ],
)
def test_non_finite_shape_parameters_are_refused(gen, kw, match):
    """They gave NaN data (or a silently truncated component count) without an error."""
    with pytest.raises(ValueError, match=f"{match}=.* is invalid"):
        gen(10, **kw, random_state=0)


def test_noiseless_geometry():
    X = circle(500, noise=0.0, radius=2.5, random_state=0)
    np.testing.assert_allclose(np.hypot(X[:, 0], X[:, 1]), 2.5, rtol=1e-14)
    # angles cover the circle
    ang = np.arctan2(X[:, 1], X[:, 0])
    assert np.histogram(ang, bins=8, range=(-np.pi, np.pi))[0].min() > 30

    W = wave(500, noise=0.0, random_state=0)
    np.testing.assert_array_equal(W[:, 1], np.cos(1.4 * W[:, 0]))
    assert W[:, 0].min() >= -3 and W[:, 0].max() <= 3

    M = two_moons(500, noise=0.0, random_state=0)
    upper = np.isclose(np.hypot(M[:, 0], M[:, 1]), 1.0) & (M[:, 1] >= 0)
    lower = np.isclose(np.hypot(M[:, 0] - 1.0, M[:, 1] - 0.5), 1.0) & (M[:, 1] <= 0.5)
    assert np.all(upper | lower)
    assert 150 < upper.sum() < 350

    G = gaussian_mixture(400, noise=0.0, n_components=3, radius=2.0, random_state=0)
    centers = 2.0 * np.array([[np.cos(a), np.sin(a)] for a in 2 * np.pi * np.arange(3) / 3])
    dist = np.linalg.norm(G[:, None, :] - centers[None], axis=2)
    assert np.all(dist.min(axis=1) < 1e-12)
    assert np.all(np.bincount(dist.argmin(axis=1), minlength=3) > 80)


def test_noise_level_is_the_std():
    X = circle(20000, noise=0.3, radius=0.0, random_state=1)  # pure noise
    np.testing.assert_allclose(X.std(axis=0), 0.3, rtol=0.03)
    C = np.array([[5.0, -1.0]])
    G = gaussian_mixture(20000, noise=0.2, centers=C, random_state=1)
    np.testing.assert_allclose(G.mean(axis=0), C[0], atol=0.01)
    np.testing.assert_allclose(G.std(axis=0), 0.2, rtol=0.03)


def test_check_random_state():
    g = np.random.default_rng(1)
    assert check_random_state(g) is g
    assert isinstance(check_random_state(None), np.random.Generator)
    with pytest.raises(ValueError):
        check_random_state(-1)
    with pytest.raises(ValueError, match="centers"):
        gaussian_mixture(10, centers=[[0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("gen", "kw", "match"),
    [
        (wave, {"noise": None}, "noise"),
        (circle, {"noise": "small"}, "noise"),
        (circle, {"radius": "x"}, "radius"),
        (wave, {"low": None}, "low"),
        (gaussian_mixture, {"radius": [1.0, 2.0]}, "radius"),
    ],
)
def test_non_numeric_parameters_are_named(gen, kw, match):
    """``noise=None`` was ``float() argument must be a string or a real number, not
    'NoneType'`` and ``radius="x"`` was ``could not convert string to float: 'x'``: neither
    said which argument was wrong."""
    with pytest.raises((TypeError, ValueError), match=f"{match}=.* is invalid: use a"):
        gen(10, **kw, random_state=0)
