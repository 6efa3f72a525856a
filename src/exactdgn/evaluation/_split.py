"""Train / held-out splits and the standardization floor used by the CLI and experiments."""

from __future__ import annotations

import numpy as np

__all__ = ["STD_FLOOR", "split_data"]

#: Standardization floor relative to the largest per-feature std: pixels that are (nearly)
#: constant in the training split are not blown up (a held-out image with ink there would
#: otherwise get values of ~1e3 and a meaningless likelihood).
STD_FLOOR = 0.1


def split_data(X: np.ndarray, test_fraction: float, seed: int):
    """Random train / held-out split: ``(X_train, X_test, test_index)``.

    ``test_fraction = 0`` gives an empty test set.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    N = X.shape[0]
    n_test = round(test_fraction * N)
    if N - n_test < 2:
        raise ValueError(f"{N} points leave fewer than 2 for training")
    perm = np.random.default_rng(seed).permutation(N)
    test = np.sort(perm[:n_test])
    mask = np.ones(N, dtype=bool)
    mask[test] = False
    return X[mask], X[test], test
