"""Input validation shared by the public API (clear errors instead of numpy crashes)."""

from __future__ import annotations

import numbers
import os

import numpy as np
from scipy.sparse import issparse
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "NotFittedError",
    "available_memory",
    "check_array",
    "check_feature_names",
    "check_generator",
    "check_positive",
    "feature_names",
    "is_int",
]


class NotFittedError(_SklearnNotFittedError):
    """The estimator is not fitted yet: call ``fit`` (or build it from parts: ``from_decoder``).

    A :class:`sklearn.exceptions.NotFittedError` (so a ``ValueError`` and ``AttributeError``);
    :class:`exactdgn.ExactDGN`, the baselines (:class:`exactdgn.baselines.VAE`) and
    :class:`exactdgn.datasets.Standardizer` raise it. Public as ``exactdgn.model.NotFittedError``.
    """


def is_int(value, low: int | None = None) -> bool:
    """An integer (Python or numpy; ``bool`` is not one) and, with ``low``, ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return low is None or value >= low


def check_array(
    X,
    *,
    name: str = "X",
    n_features: int | None = None,
    ndim: int = 2,
    allow_nan: bool = False,
    feature_name: str = "columns",
    first_row: int = 0,
    estimator: str | None = None,
) -> np.ndarray:
    """Return ``X`` as a C-contiguous float64 array after checking shape and values.

    Parameters
    ----------
    X : array_like
        Input; a 1-D array is accepted where ``ndim == 2`` only if ``n_features == 1`` is
        impossible to confuse, so we require explicit 2-D input and say so.
    name : str
        Name used in error messages.
    n_features : int, optional
        Required size of the last axis.
    ndim : int
        Required number of dimensions.
    allow_nan : bool
        Whether NaN entries are allowed (infinite entries never are).
    first_row : int
        Number of ``X``'s first row in the errors (a chunk of a larger array names its rows).
    estimator : str, optional
        The fitted estimator whose ``n_features`` are checked: named in scikit-learn's wording
        ("X has 2 features, but ExactDGN is expecting 3 features as input").
    """
    _refuse_large_dask(X, name)
    if issparse(X):
        raise ValueError(
            f"{name} is a scipy sparse {type(X).__name__}: give a dense array (X.toarray()); "
            "the exact likelihood uses every value, and NaN marks a missing one"
        )
    # the messages carry scikit-learn's wording where it has one (its estimator checks match it)
    if _is_complex(X):
        raise ValueError(
            f"Complex data not supported: {name} is complex; give real numbers (the real part "
            "is not taken)"
        )
    try:
        arr = np.asarray(_pandas_nullable_as_nan(X), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        # an entry that is not a number at all (a dict, None) is a TypeError, as in numpy
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{name} must be a numeric array; got {type(X).__name__}: {exc}") from exc
    if arr.ndim != ndim:
        hint = ""
        if ndim == 2 and arr.ndim == 1:
            hint = (
                ": Reshape your data (a single point with x[None, :], or a 1-D column with "
                "x[:, None])"
            )
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}{hint}")
    if n_features is not None and arr.shape[-1] != n_features:
        if estimator is not None and feature_name == "columns" and arr.ndim == 2:
            raise ValueError(
                f"{name} has {arr.shape[-1]} features, but {estimator} is expecting "
                f"{n_features} features as input (shape {arr.shape}: give {n_features} columns)"
            )
        raise ValueError(
            f"{name} has {arr.shape[-1]} {feature_name} but {n_features} are expected "
            f"(shape {arr.shape})"
        )
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        rows = first_row + np.unique(
            np.nonzero(bad.reshape(arr.shape[0], -1) if arr.ndim else bad)[0]
        )
        what, fix = (
            ("infinite", "remove them")
            if allow_nan
            else ("NaN or infinite", "remove or impute them first")
        )
        raise ValueError(
            f"{name} contains {int(bad.sum())} {what} values "
            f"(first bad rows: {rows[:5].tolist()}); {fix}"
        )
    return np.ascontiguousarray(arr)


def _is_complex(X) -> bool:
    """Whether ``X`` holds complex numbers, read from its dtype(s) (``np.iscomplexobj(X)``
    dispatched on array-likes that define ``__array_function__``, which may refuse it)."""
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype.kind == "c"
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a data frame: its columns' dtypes
        return any(isinstance(dt, np.dtype) and dt.kind == "c" for dt in list(X.dtypes))
    try:
        return np.asarray(X).dtype.kind == "c"
    except (TypeError, ValueError):  # not an array at all: the float conversion says so
        return False


def _pandas_nullable_as_nan(X):
    """A pandas object with nullable columns (``Float64``, ``Int64``, ...: ``pd.NA`` where a
    value is missing) as float64 with NaN there, as numpy marks missing values; anything
    else as it is (``np.asarray(pd.NA)`` cannot be a float)."""
    if not type(X).__module__.startswith("pandas") or not hasattr(X, "to_numpy"):
        return X
    dtypes = [X.dtype] if hasattr(X, "dtype") else list(getattr(X, "dtypes", []))
    if all(isinstance(dt, np.dtype) for dt in dtypes):
        return X
    return X.to_numpy(dtype=np.float64, na_value=np.nan)


def check_generator(random_state, name: str = "random_state") -> np.random.Generator:
    """``numpy.random.default_rng(random_state)`` (None, a seed, a Generator: the same draws),
    with a value it refuses named (numpy's "expected non-negative integer" names nothing)."""
    try:
        return np.random.default_rng(random_state)
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"{name}={random_state!r} is invalid: use None, a non-negative integer seed or a "
            f"numpy.random.Generator ({exc})"
        ) from None


#: Noise standard deviations the float64 path takes. At 1e-150 / 1e150 (``σ²`` and ``1 / σ²``
#: still normal numbers) the complete rows scored, but the missing-data path's products of
#: ``λ = 1/σ²`` overflowed (``IndexError`` for any row with a NaN at σ = 1e-100); within
#: 1e-50 .. 1e50 every path is finite for rows within ``inference._marginal.REACH``.
NOISE_STD_RANGE = (1e-50, 1e50)


#: Largest magnitude of a training value: beyond it the data's squares (its variance, the
#: initial noise) overflow float64.
MAX_TRAINING_VALUE = 1e150


def check_training_values(X: np.ndarray, *, name: str = "X", first_row: int = 0) -> None:
    """Refuse finite values beyond :data:`MAX_TRAINING_VALUE` in training data (NaN ignored):
    1e160 in one row ended a fit with "layer 1 has non-finite weights", naming no row."""
    with np.errstate(invalid="ignore"):
        big = np.abs(X) > MAX_TRAINING_VALUE
    if big.any():
        i, j = (int(a[0]) for a in np.nonzero(big))
        raise ValueError(
            f"{name} row {first_row + i}, column {j} is {X[i, j]:.6g}: beyond "
            f"{MAX_TRAINING_VALUE:.0e} the data's squares (its variance) overflow float64; "
            "such a value is a data error: remove or rescale those rows"
        )


def check_positive(value, *, name: str, size: int | None = None) -> np.ndarray:
    """Return a positive finite float64 scalar or vector (broadcast to ``size`` if given)."""
    if np.asarray(value).dtype == bool:
        raise ValueError(f"{name} must be a positive number, got the boolean {value!r}")
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    if size is not None and arr.ndim == 1 and arr.shape[0] != size:
        raise ValueError(f"{name} has length {arr.shape[0]} but {size} is expected")
    return arr


def output_dtype(X) -> np.dtype:
    """The dtype results for ``X`` are returned in, as scikit-learn's imputers: float32 or
    float16 for such arrays, else float64 (read from ``X.dtype``, without converting ``X``: a
    dask array stays uncomputed)."""
    dt = getattr(X, "dtype", None)
    if dt is None and hasattr(X, "dtypes"):  # a data frame: its columns' one dtype, if one
        kinds = set(X.dtypes)
        if len(kinds) == 1:
            dt = kinds.pop()
    if isinstance(dt, np.dtype) and dt.kind == "f" and dt.itemsize < 8:
        return dt
    return np.dtype(np.float64)


def check_noise_std(value, *, size: int | None = None, name: str = "noise_std") -> np.ndarray:
    """:func:`check_positive` for a noise standard deviation, within :data:`NOISE_STD_RANGE`."""
    arr = check_positive(value, name=name, size=size)
    lo, hi = NOISE_STD_RANGE
    if np.any(arr < lo) or np.any(arr > hi):
        bad = float(arr.min() if np.any(arr < lo) else arr.max())
        raise ValueError(
            f"{name}={bad:g} is outside [{lo:g}, {hi:g}], where its square and inverse square "
            "are float64 numbers: rescale the data (e.g. standardize it) so that the noise "
            "is within that range"
        )
    return arr


def feature_names(X) -> np.ndarray | None:
    """The column names of a data frame (pandas, polars) as an object array, or None.

    As scikit-learn's ``feature_names_in_``: only names that are all strings count (integer
    column labels, as ``pd.DataFrame(array)`` has, are not names).
    """
    cols = None if isinstance(X, np.ndarray) else getattr(X, "columns", None)
    if cols is None:
        return None
    names = np.asarray(list(cols), dtype=object)
    if names.size == 0 or not all(isinstance(n, str) for n in names):
        return None
    return names


def check_feature_names(estimator, X) -> None:
    """A ValueError when ``X`` has column names other than the ``feature_names_in_`` that
    ``estimator`` was fitted with (same names in another order included): the columns would be
    taken by position, so the values would belong to other features."""
    fitted = getattr(estimator, "feature_names_in_", None)
    names = feature_names(X)
    if fitted is None or names is None:
        return
    if len(names) != len(fitted) or np.any(names != fitted):
        raise ValueError(
            f"X has columns {names.tolist()} but {type(estimator).__name__} was fitted with "
            f"{fitted.tolist()}: select and order them as in fit (X[feature_names_in_])"
        )


def available_memory() -> int:
    """Bytes of physical memory available now (``MemAvailable``; 8 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _refuse_large_dask(X, name: str) -> None:
    """A dask array given to an in-memory function is computed whole on this machine: refuse
    one whose float64 copy would take more than half the available memory (before computing
    it), naming the chunked functions of :mod:`exactdgn.dask`."""
    if not hasattr(X, "__dask_graph__"):
        return
    shape = getattr(X, "shape", ())
    if not shape or any(not np.isfinite(s) for s in shape):
        return  # unknown chunk sizes: its size cannot be told before computing it
    nbytes = 8 * float(np.prod(shape))
    avail = available_memory()
    if nbytes > avail / 2:
        raise ValueError(
            f"{name} is a dask array of shape {tuple(shape)} ({nbytes / 2**30:.1f} GiB as float64, "
            f"more than half of the {avail / 2**30:.1f} GiB available): an in-memory method "
            "would compute it whole on this machine; use exactdgn.dask.score_samples(model, "
            f"{name}) or exactdgn.dask.impute(model, {name}), which work chunk by chunk"
        )
