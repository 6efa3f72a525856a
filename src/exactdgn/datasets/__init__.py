"""Data sets: 2-D toy sets, scikit-learn digits, MNIST IDX files, CSV/.npy/.npz, standardisation.

All loaders return float64 arrays of shape (N, D).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._files import csv_header, csv_line, load_array, load_digits, load_mnist, read_idx
from ._standardize import Standardizer
from ._toy import check_random_state, circle, gaussian_mixture, two_moons, wave

__all__ = [
    "DATASET_NAMES",
    "Standardizer",
    "check_random_state",
    "circle",
    "csv_header",
    "csv_line",
    "gaussian_mixture",
    "get_dataset",
    "load_array",
    "load_digits",
    "load_mnist",
    "read_idx",
    "two_moons",
    "wave",
]

_TOY = {
    "wave": wave,
    "circle": circle,
    "two_moons": two_moons,
    "moons": two_moons,
    "mixture": gaussian_mixture,
    "gaussian_mixture": gaussian_mixture,
}

DATASET_NAMES = (
    "wave",
    "circle",
    "two_moons",
    "mixture",
    "digits",
    "digits:<classes>",
    "mnist:<path>",
    "<file.csv|.npy|.npz>",
)


def _parse_classes(spec: str, name: str) -> list[int]:
    try:
        out = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise ValueError(
            f"bad class list {spec!r} in {name!r}; use e.g. 'digits:3' or 'digits:3,5'"
        ) from None
    if not out:
        raise ValueError(f"empty class list in {name!r}; use e.g. 'digits:3'")
    return out


def get_dataset(name_or_path, *, return_labels: bool = False, **kwargs):
    """Resolve a data set by name or file path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        ``"wave"``, ``"circle"``, ``"two_moons"`` (``"moons"``), ``"mixture"``
        (``"gaussian_mixture"``): 2-D toy sets; keyword arguments (``n_samples``, ``noise``,
        ``random_state``, ...) go to the generator.
        ``"digits"`` or ``"digits:3"`` / ``"digits:3,5"``: scikit-learn digits, optionally one or
        more classes (keywords go to :func:`load_digits`).
        ``"mnist:PATH"``: MNIST IDX files in the directory or images file ``PATH`` (keywords such
        as ``kind``, ``classes``, ``downsample`` go to :func:`load_mnist`).
        Anything else is a file path for :func:`load_array` (``.csv``, ``.npy``, ``.npz``).
    return_labels : bool
        Also return the labels (``None`` for data sets without labels).

    Returns
    -------
    X : ndarray of shape (N, D), float64
    y : ndarray of shape (N,) or None
        Only if ``return_labels``.
    """
    y = None
    if isinstance(name_or_path, os.PathLike):
        X = load_array(name_or_path, **kwargs)
    elif isinstance(name_or_path, str):
        name = name_or_path.strip()
        low = name.lower()
        if low in _TOY:
            X = _TOY[low](**kwargs)
        elif low == "digits" or low.startswith("digits:"):
            if ":" in low:
                if "classes" in kwargs:
                    raise ValueError("give the classes either in the name or as classes=, not both")
                kwargs["classes"] = _parse_classes(low.split(":", 1)[1], name)
            X, y = load_digits(**kwargs)
        elif low.startswith("mnist:"):
            path = name.split(":", 1)[1]
            if not path:
                raise ValueError("use 'mnist:PATH' with the directory holding the IDX files")
            X, y = load_mnist(path, **kwargs)
        elif low == "mnist":
            raise ValueError("MNIST is read from local files: use 'mnist:PATH' (a directory)")
        elif Path(name).suffix.lower() in (
            ".csv",
            ".tsv",
            ".txt",
            ".npy",
            ".npz",
        ) or os.path.exists(name):
            X = load_array(name, **kwargs)
        else:
            raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    else:
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    return (X, y) if return_labels else X
