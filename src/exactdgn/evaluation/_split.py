"""Train / held-out splits and the standardization floor used by the CLI and experiments."""

from __future__ import annotations

import numpy as np

from .._validation import is_int

__all__ = ["FEATURE_STD_FLOOR", "STD_FLOOR", "split_data"]

#: Standardization floor of image data (digits, MNIST) relative to the largest per-feature std:
#: pixels that are (nearly) constant in the training split are not blown up (a held-out image
#: with ink there would otherwise get values of ~1e3 and a meaningless likelihood).
STD_FLOOR = 0.1

#: The floor of other data (files, toy sets), relative to the largest per-feature std: columns
#: in their own units (one x100, another x0.01) are each scaled by their own std; only a column
#: a million times narrower than the widest, (nearly) constant in the training rows, is floored.
#: (0.1 left a column of std 0.005 beside one of 17 scaled by 1.7: 300x under-scaled.)
FEATURE_STD_FLOOR = 1e-6


def split_data(X, test_fraction: float, seed: int):
    """Random train / held-out split of the rows of ``X``: ``(X_train, X_test, test_index)``.

    Parameters
    ----------
    X : array_like of shape (N, ...)
        The rows to split: a numpy or dask array (kept as it is) or any array-like (a list,
        a DataFrame: converted with ``np.asarray``).
    test_fraction : float in [0, 1)
        Fraction of the rows held out (rounded to a count); 0 gives an empty test set.
    seed : int >= 0
        Seeds the random permutation (the same seed, the same split).

    Returns
    -------
    X_train, X_test : arrays of the rows of ``X`` (in their original order)
    test_index : ndarray of int
        The (sorted) row indices of ``X_test``.
    """
    given = type(X).__name__
    if not (isinstance(X, np.ndarray) or type(X).__module__.split(".")[0] == "dask"):
        X = np.asarray(X)
    if X.ndim < 1:
        raise ValueError(f"X must be an array of rows, got a scalar ({given})")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in [0, 1) (the fraction of the rows held out; 0: none), "
            f"got {test_fraction}"
        )
    if not is_int(seed, 0):
        raise ValueError(f"seed={seed!r} is invalid: use an integer >= 0 (it seeds the split)")
    N = X.shape[0]
    n_test = round(test_fraction * N)
    if N - n_test < 2:
        raise ValueError(
            f"{N} points with test_fraction={test_fraction} leave fewer than 2 for training: "
            "lower test_fraction or give more rows"
        )
    perm = np.random.default_rng(seed).permutation(N)
    test = np.sort(perm[:n_test])
    mask = np.ones(N, dtype=bool)
    mask[test] = False
    return X[mask], X[test], test
