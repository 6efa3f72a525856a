"""Two-dimensional toy data sets (float64, reproducible from a seed)."""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import is_int

__all__ = ["check_random_state", "circle", "gaussian_mixture", "two_moons", "wave"]


def check_random_state(random_state) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` from ``None``, an int or a Generator.

    A Generator is returned as is (so draws advance its state); ``None`` gives fresh OS entropy.
    """
    if random_state is None or isinstance(random_state, numbers.Integral):
        if random_state is not None and int(random_state) < 0:
            raise ValueError(f"random_state must be a non-negative int, got {random_state}")
        return np.random.default_rng(None if random_state is None else int(random_state))
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise TypeError(
        "random_state must be None, a non-negative int or a numpy.random.Generator; got "
        f"{type(random_state).__name__}"
    )


def _check_common(n_samples, noise) -> tuple[int, float]:
    if not is_int(n_samples):
        raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    noise = _finite(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    return int(n_samples), noise


def _finite(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={value!r} is invalid: use a finite number") from None
    if not np.isfinite(value):
        raise ValueError(f"{name}={value!r} is invalid: use a finite number")
    return value


def circle(
    n_samples: int = 1000,
    *,
    noise: float = 0.05,
    radius: float = 1.0,
    random_state=None,
) -> np.ndarray:
    """Points on a circle plus isotropic Gaussian noise.

    ``x = radius * (cos t, sin t) + noise * e`` with ``t ~ U[0, 2π)`` and ``e ~ N(0, I_2)``.

    Parameters
    ----------
    n_samples : int
    noise : float
        Standard deviation of the additive Gaussian noise.
    radius : float
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    """
    n, noise = _check_common(n_samples, noise)
    rng = check_random_state(random_state)
    t = rng.uniform(0.0, 2.0 * np.pi, n)
    X = _finite(radius, "radius") * np.column_stack([np.cos(t), np.sin(t)])
    return X + noise * rng.standard_normal((n, 2))


def wave(
    n_samples: int = 1000,
    *,
    noise: float = 0.05,
    low: float = -3.0,
    high: float = 3.0,
    frequency: float = 1.4,
    random_state=None,
) -> np.ndarray:
    """Noisy samples of the curve ``(x, cos(frequency * x))``.

    ``x ~ U[low, high]`` and both coordinates get independent ``N(0, noise²)`` noise.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    """
    n, noise = _check_common(n_samples, noise)
    low, high = _finite(low, "low"), _finite(high, "high")
    frequency = _finite(frequency, "frequency")
    if not low < high:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    rng = check_random_state(random_state)
    x = rng.uniform(low, high, n)
    X = np.column_stack([x, np.cos(frequency * x)])
    return X + noise * rng.standard_normal((n, 2))


def two_moons(n_samples: int = 1000, *, noise: float = 0.05, random_state=None) -> np.ndarray:
    """Two interleaving half circles (as in scikit-learn's ``make_moons``) with i.i.d. angles.

    Each point picks a moon with probability 1/2 and an angle ``t ~ U[0, π]``; the upper moon is
    ``(cos t, sin t)``, the lower one ``(1 - cos t, 1/2 - sin t)``; Gaussian noise of standard
    deviation ``noise`` is added.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    """
    n, noise = _check_common(n_samples, noise)
    rng = check_random_state(random_state)
    lower = rng.random(n) < 0.5
    t = rng.uniform(0.0, np.pi, n)
    X = np.column_stack([np.cos(t), np.sin(t)])
    X[lower] = np.column_stack([1.0 - np.cos(t[lower]), 0.5 - np.sin(t[lower])])
    return X + noise * rng.standard_normal((n, 2))


def gaussian_mixture(
    n_samples: int = 1000,
    *,
    noise: float = 0.2,
    n_components: int = 4,
    radius: float = 2.0,
    centers=None,
    random_state=None,
) -> np.ndarray:
    """Equal-weight isotropic Gaussian mixture in 2-D.

    By default the ``n_components`` means sit evenly on a circle of radius ``radius``; pass
    ``centers`` (shape (K, 2)) to choose them. Every component has standard deviation ``noise``.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    """
    n, noise = _check_common(n_samples, noise)
    if centers is None:
        if not is_int(n_components, 1):
            raise ValueError(f"n_components={n_components!r} is invalid: use an integer >= 1")
        angles = 2.0 * np.pi * np.arange(int(n_components)) / int(n_components)
        C = _finite(radius, "radius") * np.column_stack([np.cos(angles), np.sin(angles)])
    else:
        C = np.asarray(centers, dtype=np.float64)
        if C.ndim != 2 or C.shape[1] != 2 or C.shape[0] < 1 or not np.all(np.isfinite(C)):
            raise ValueError(f"centers must be a finite (K, 2) array, got shape {C.shape}")
    rng = check_random_state(random_state)
    comp = rng.integers(0, C.shape[0], n)
    return C[comp] + noise * rng.standard_normal((n, 2))
