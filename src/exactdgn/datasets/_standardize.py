"""Per-feature standardisation that records how to map samples and densities back."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin

from .._validation import NotFittedError, check_array, check_feature_names, feature_names

__all__ = ["Standardizer"]


class Standardizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Affine per-feature standardisation ``y = (x - mean) / scale`` (a scikit-learn transformer).

    ``scale_j = max(std_j, floor)`` with ``floor = max(min_std, rel_min_std * max_k std_k)``, so
    constant features (e.g. MNIST border pixels) do not divide by zero and near-constant ones are
    not blown up. Because the map is affine, densities transform exactly:
    ``log p_x(x) = log p_y(y) + log_abs_det_jacobian()``.

    A scikit-learn estimator (``get_params`` / ``set_params`` / ``clone``, ``fit_transform``,
    ``get_feature_names_out``, pipelines); methods that need the fitted statistics raise
    :class:`exactdgn.model.NotFittedError` (a scikit-learn ``NotFittedError``) before ``fit``,
    :meth:`fit_moments` or :meth:`from_dict`.

    Parameters
    ----------
    with_mean : bool
        Subtract the per-feature mean (else ``mean_`` is zeros).
    with_std : bool
        Divide by the floored per-feature standard deviation (else ``scale_`` is ones).
    min_std : float
        Absolute floor on the scale.
    rel_min_std : float
        Floor relative to the largest per-feature standard deviation.

    Attributes
    ----------
    mean_ : ndarray of shape (D,)
    scale_ : ndarray of shape (D,)
    std_ : ndarray of shape (D,)
        The raw (population, ``ddof=0``) standard deviations before flooring.
    floor_ : float
    n_features_in_ : int
    n_samples_seen_ : int
    feature_names_in_ : ndarray of str
        The column names of a data frame given to ``fit`` (``get_feature_names_out`` returns
        them); a frame with other names or another order is then an error.
    """

    def __init__(
        self,
        *,
        with_mean: bool = True,
        with_std: bool = True,
        min_std: float = 1e-8,
        rel_min_std: float = 1e-3,
    ):
        self.with_mean = with_mean
        self.with_std = with_std
        self.min_std = min_std
        self.rel_min_std = rel_min_std

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN is a missing value, as for StandardScaler
        return tags

    def fit(self, X, y=None) -> Standardizer:
        """Compute the per-feature mean and floored standard deviation of ``X`` (N, D).

        NaN means missing (as scikit-learn's ``StandardScaler``): each feature's moments are
        those of its observed values; a feature with none is an error.
        """
        names = feature_names(X)
        X = check_array(X, name="X", allow_nan=True)
        if X.shape[0] < 1:
            raise ValueError("X has no rows")
        if X.shape[1] < 1:
            raise ValueError(  # scikit-learn's wording (check_estimators_empty_data_messages)
                f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: no "
                "columns to standardize"
            )
        nan = np.isnan(X)
        if not nan.any():
            mean = X.mean(axis=0)
            self.fit_moments(mean, _population_std(X, mean), X.shape[0])
        else:
            empty = np.flatnonzero(nan.all(axis=0))
            if len(empty):
                raise ValueError(
                    f"X has {len(empty)} columns with every value missing (NaN), first columns "
                    f"{empty[:5].tolist()}: they cannot be standardized; drop them"
                )
            mean = np.nanmean(X, axis=0)
            self.fit_moments(mean, _population_std(X, mean), X.shape[0])
        if names is not None:
            self.feature_names_in_ = names
        return self

    def fit_moments(self, mean, std, n_samples: int) -> Standardizer:
        """Fit from per-feature ``mean`` and (population) ``std`` of ``n_samples`` rows computed
        elsewhere (e.g. by dask reductions over data that do not fit in memory)."""
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape or mean.size == 0:
            raise ValueError(
                f"mean has shape {mean.shape} but std has shape {std.shape}: give two 1-D "
                "arrays of the same length (one value per feature)"
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("mean has NaN or infinite values: give finite per-feature means")
        if not (np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise ValueError("std must be finite and >= 0 (per-feature standard deviations)")
        min_std, rel = float(self.min_std), float(self.rel_min_std)
        if not (min_std > 0 and np.isfinite(min_std)) or not (0 <= rel < 1):
            raise ValueError(
                f"need min_std > 0 and 0 <= rel_min_std < 1, got {self.min_std}, {self.rel_min_std}"
            )
        floor = max(min_std, rel * float(std.max()))
        self.std_ = std
        self.floor_ = floor
        self.mean_ = mean if self.with_mean else np.zeros(len(mean))
        self.scale_ = np.maximum(std, floor) if self.with_std else np.ones(len(mean))
        self.n_features_in_ = len(mean)
        self.n_samples_seen_ = int(n_samples)
        self.__dict__.pop("feature_names_in_", None)  # moments carry no column names
        return self

    def _check_fitted(self, X=None):
        if not hasattr(self, "scale_"):
            raise NotFittedError(
                "this Standardizer is not fitted yet: call fit(X) or fit_moments(mean, std, "
                "n_samples) first (or rebuild a fitted one with Standardizer.from_dict)"
            )
        check_feature_names(self, X)

    def transform(self, X) -> np.ndarray:
        """Return ``(X - mean_) / scale_``, shape (N, D) (NaN, missing, stays NaN)."""
        self._check_fitted(X)
        X = check_array(
            X, name="X", n_features=self.n_features_in_, allow_nan=True, estimator="Standardizer"
        )
        return (X - self.mean_) / self.scale_

    def inverse_transform(self, Y) -> np.ndarray:
        """Map standardised data (or a model's samples of it) back: ``Y * scale_ + mean_``."""
        self._check_fitted(Y)
        Y = check_array(
            Y, name="Y", n_features=self.n_features_in_, allow_nan=True, estimator="Standardizer"
        )
        return Y * self.scale_ + self.mean_

    def log_abs_det_jacobian(self) -> float:
        """``log |det dy/dx| = -sum_j log scale_j``.

        Add it to a log-density of the standardised ``y`` to get the log-density of ``x``.
        """
        self._check_fitted()
        return float(-np.sum(np.log(self.scale_)))

    def log_abs_det_jacobian_rows(self, X) -> np.ndarray:
        """(N,) ``-Σ_{j observed} log scale_j`` of each row of ``X`` (NaN: missing): the
        Jacobian of the standardization of a row's observed values, for ``log p(x_obs)``."""
        self._check_fitted(X)
        X = check_array(
            X, name="X", n_features=self.n_features_in_, allow_nan=True, estimator="Standardizer"
        )
        return -((~np.isnan(X)) @ np.log(self.scale_))

    def to_dict(self) -> dict:
        """JSON-serialisable description (parameters and fitted statistics)."""
        self._check_fitted()
        return {
            "with_mean": bool(self.with_mean),
            "with_std": bool(self.with_std),
            "min_std": float(self.min_std),
            "rel_min_std": float(self.rel_min_std),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "std": self.std_.tolist(),
            "floor": float(self.floor_),
            "n_samples_seen": int(self.n_samples_seen_),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        """Rebuild a fitted Standardizer from :meth:`to_dict` output."""
        try:
            obj = cls(
                with_mean=d["with_mean"],
                with_std=d["with_std"],
                min_std=d["min_std"],
                rel_min_std=d["rel_min_std"],
            )
            mean = np.asarray(d["mean"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            floor, n_seen = float(d["floor"]), int(d["n_samples_seen"])
        except KeyError as exc:
            raise ValueError(f"Standardizer dict is missing the key {exc}") from exc
        if not (mean.ndim == 1 and mean.shape == scale.shape == std.shape):
            raise ValueError("Standardizer dict has inconsistent mean/scale/std shapes")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("Standardizer dict has non-finite means or non-positive scales")
        obj.mean_, obj.scale_, obj.std_, obj.floor_ = mean, scale, std, floor
        obj.n_features_in_ = mean.shape[0]
        obj.n_samples_seen_ = n_seen
        return obj

    def __repr__(self) -> str:
        fitted = f", n_features_in_={self.n_features_in_}" if hasattr(self, "scale_") else ""
        return (
            f"Standardizer(with_mean={self.with_mean}, with_std={self.with_std}, "
            f"min_std={self.min_std}, rel_min_std={self.rel_min_std}{fitted})"
        )


def _population_std(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(D,) the population standard deviation of each column of ``X`` about ``mean``, NaN
    (missing) left out. A column whose squared deviations overflow (values beyond ~1e154) is
    scaled by its largest deviation first; the others are summed as they are (bit for bit
    the plain formula)."""
    dev = X - mean
    with np.errstate(over="ignore"):
        std = np.sqrt(np.nanmean(np.square(dev), axis=0))
    over = ~np.isfinite(std)
    if over.any():
        d = np.abs(dev[:, over])
        scale = np.nanmax(d, axis=0)  # finite deviations whose squares are not
        std[over] = scale * np.sqrt(np.nanmean(np.square(d / scale), axis=0))
    return std
