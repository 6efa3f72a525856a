"""A scikit-learn imputer that fills NaNs from an exact deep generative model.

``ExactDGNImputer`` follows the conventions of ``sklearn.impute.IterativeImputer``: ``fit``
learns from incomplete data (exact EM with missing values, :meth:`exactdgn.ExactDGN.fit`),
``transform`` returns the data with their NaNs filled (the exact conditional mean
``E[x_mis | x_obs]`` by default, see :meth:`exactdgn.ExactDGN.impute`), and it works as a step
of a ``Pipeline``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone

from ._validation import (
    check_array,
    check_feature_names,
    check_generator,
    feature_names,
    output_dtype,
)
from .model import ExactDGN, NotFittedError

__all__ = ["ExactDGNImputer"]


class ExactDGNImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Fill missing values (NaN) with the exact conditional of an :class:`~exactdgn.ExactDGN`.

    Parameters
    ----------
    estimator : ExactDGN, optional
        The model to fit (cloned; default ``ExactDGN()``), or with ``prefit=True`` an already
        fitted model (e.g. ``ExactDGN.from_decoder``) used as is.
    method : {"mean", "mode", "sample"}
        See :meth:`exactdgn.ExactDGN.impute`.
    random_state : int or None
        Seed of ``method="sample"`` (each ``transform`` call draws with it).
    prefit : bool
        Use ``estimator`` as fitted; ``fit`` then only checks the data's width. Model selection
        (``cross_val_score``, ``GridSearchCV``) clones the steps, which unfits the model: wrap
        it in ``sklearn.frozen.FrozenEstimator`` there.

    Attributes
    ----------
    estimator_ : ExactDGN
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The column names of a data frame given to ``fit`` (``get_feature_names_out`` returns
        them); a frame with other names or another order is then an error.
    """

    def __init__(
        self,
        estimator: ExactDGN | None = None,
        method: str = "mean",
        random_state=None,
        prefit: bool = False,
    ):
        self.estimator = estimator
        self.method = method
        self.random_state = random_state
        self.prefit = prefit

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN marks the values to fill
        return tags

    def fit(self, X, y=None) -> ExactDGNImputer:
        """Fit the model on ``X`` (N, D) with NaN where missing (exact missing-data EM).

        Rows with nothing observed are left out of the fit: ``log p(x_obs) = 0`` for them
        whatever the model, so the likelihood is the same without them (``transform`` fills
        them with the model's marginal). A failed fit leaves the imputer as it was.
        """
        if self.method not in ExactDGN._IMPUTE_METHODS:
            raise ValueError(
                f"method={self.method!r} is invalid: use one of {ExactDGN._IMPUTE_METHODS}"
            )
        check_generator(self.random_state)  # named here, not at the first transform
        est = self.estimator
        if est is not None and not callable(getattr(est, "impute", None)):
            raise TypeError(
                f"estimator must be an ExactDGN (it fills the NaNs with ExactDGN.impute), got "
                f"{type(est).__name__}; ExactDGNImputer(ExactDGN(...)) fits one, "
                "ExactDGNImputer(model, prefit=True) uses a fitted one"
            )
        data = X
        X = check_array(X, name="X", allow_nan=True)
        # a failed fit leaves the imputer as it was (fitted or not): nothing is set before
        if self.prefit:
            if self.estimator is None or not hasattr(self.estimator, "decoder_"):
                raise NotFittedError(
                    "prefit=True needs a fitted ExactDGN as estimator; cross_val_score, "
                    "GridSearchCV and clone() copy it unfitted: wrap the fitted model as "
                    "ExactDGNImputer(sklearn.frozen.FrozenEstimator(model), prefit=True)"
                )
            est = self.estimator
            est._check_X(data, allow_nan=True)
        else:
            est = clone(self.estimator if self.estimator is not None else ExactDGN())
            if X.shape[0] == 0 or X.shape[1] == 0:  # the model's own words for these
                est.fit(data)
            seen = ~np.isnan(X).all(axis=1)
            if not seen.any():
                raise ValueError(
                    f"X has every value missing (NaN) in all its {X.shape[0]} rows: give rows "
                    "with observed values to fit on"
                )
            # rows with nothing observed carry no information (log p(x_obs) = 0 whatever the
            # model): the likelihood of the others is the same with or without them
            est.fit(data if seen.all() else _rows(data, seen))
        self.estimator_ = est
        self.n_features_in_ = X.shape[1]
        names = feature_names(data)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        return self

    def transform(self, X) -> np.ndarray:
        """``X`` with its NaNs filled; observed values are returned unchanged (a row with
        nothing observed gets the model's marginal, see :meth:`exactdgn.ExactDGN.impute`)."""
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this ExactDGNImputer is not fitted yet: call fit(X) first")
        check_feature_names(self, X)
        check_feature_names(self.estimator_, X)  # a prefit model's own names (fit saw none)
        keep = output_dtype(X)  # float32 / float16 in, the same out (as sklearn's imputers)
        # the width in this transformer's name (scikit-learn names the estimator called)
        X = check_array(
            X,
            name="X",
            n_features=self.n_features_in_,
            allow_nan=True,
            estimator=type(self).__name__,
        )
        out = self.estimator_.impute(X, method=self.method, random_state=self.random_state)
        return out.astype(keep, copy=False)


def _rows(data, keep: np.ndarray):
    """The rows ``keep`` (bool) of an array or a data frame (its column names kept)."""
    iloc = getattr(data, "iloc", None)
    return iloc[keep] if iloc is not None else np.asarray(data)[keep]
