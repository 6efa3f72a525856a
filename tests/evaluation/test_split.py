"""split_data: the train / held-out split of the CLI and the experiments."""

import numpy as np
import pytest

from exactdgn.evaluation import split_data


def test_split_takes_array_likes():
    """A list gave AttributeError ('list' object has no attribute 'shape')."""
    rows = [[float(i), 2.0 * i] for i in range(10)]
    tr, te, idx = split_data(rows, 0.3, seed=1)
    ref = split_data(np.asarray(rows), 0.3, seed=1)
    assert isinstance(tr, np.ndarray) and tr.shape == (7, 2) and te.shape == (3, 2)
    for a, b in zip((tr, te, idx), ref, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(te, np.asarray(rows)[idx])
    tr, te, idx = split_data(np.arange(5.0)[:, None], 0.0, seed=0)
    assert tr.shape == (5, 1) and te.shape == (0, 1) and idx.size == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan")])
def test_split_refuses_a_fraction_by_its_parameter_name(fraction):
    """The library's error named the CLI flag ``--test-fraction``."""
    with pytest.raises(ValueError, match=r"^test_fraction must be in \[0, 1\)") as exc:
        split_data(np.zeros((10, 2)), fraction, seed=0)
    assert "--" not in str(exc.value)


def test_split_refuses_too_few_rows_and_a_scalar():
    with pytest.raises(ValueError, match="fewer than 2 for training"):
        split_data(np.zeros((3, 2)), 0.5, seed=0)
    with pytest.raises(ValueError, match="X must be an array of rows"):
        split_data(3.0, 0.2, seed=0)


@pytest.mark.parametrize("seed", [-1, 1.5, None, "0"])
def test_split_refuses_a_bad_seed_by_its_name(seed):
    """numpy's 'expected non-negative integer' (or a TypeError about SeedSequence) did not
    say which argument; None gave a split that no run could repeat."""
    with pytest.raises(ValueError, match=r"^seed="):
        split_data(np.zeros((10, 2)), 0.2, seed)
    _, _, idx = split_data(np.arange(10.0)[:, None], 0.2, np.int64(3))
    np.testing.assert_array_equal(idx, split_data(np.arange(10.0)[:, None], 0.2, 3)[2])
