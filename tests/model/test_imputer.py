"""The scikit-learn imputer transformer."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from exactdgn import Decoder, ExactDGN, ExactDGNImputer
from exactdgn.model import NotFittedError


def _data(n=300, seed=0):
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=11), 0.1)
    X = true.sample(n, random_state=seed)
    rng = np.random.default_rng(seed)
    M = rng.random(X.shape) < 0.2
    M[:, 0] = False  # column 0 always observed
    return true, X, np.where(M, np.nan, X)


def test_prefit_transform_equals_exact_impute():
    true, X, Xn = _data()
    imp = ExactDGNImputer(true, prefit=True).fit(Xn)
    out = imp.transform(Xn)
    assert np.array_equal(out, true.impute(Xn))
    assert not np.isnan(out).any() and imp.n_features_in_ == 3
    # the exact conditional mean beats the column means on the hidden values
    miss = np.isnan(Xn)
    col = np.where(miss, np.nanmean(Xn, axis=0), Xn)
    assert np.sqrt(np.mean((out - X)[miss] ** 2)) < np.sqrt(np.mean((col - X)[miss] ** 2))


def test_pipeline_fits_on_incomplete_data():
    _, X, Xn = _data()
    y = X @ np.array([1.0, -2.0, 0.5])
    pipe = Pipeline(
        [
            ("impute", ExactDGNImputer(ExactDGN(hidden_sizes=(6,), max_iter=5, random_state=0))),
            ("reg", LinearRegression()),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(Xn, y)
    assert pipe.predict(Xn).shape == (300,)
    assert hasattr(pipe.named_steps["impute"].estimator_, "decoder_")


def test_imputer_errors():
    true, _, Xn = _data(20)
    with pytest.raises(NotFittedError, match="fit"):
        ExactDGNImputer(true).transform(Xn)
    with pytest.raises(NotFittedError, match="prefit"):
        ExactDGNImputer(ExactDGN(), prefit=True).fit(Xn)
    with pytest.raises(ValueError, match="method"):
        ExactDGNImputer(true, method="median", prefit=True).fit(Xn)
    with pytest.raises(ValueError, match="columns"):
        ExactDGNImputer(true, prefit=True).fit(Xn[:, :2])


def test_feature_names_out_as_sklearn_imputers():
    """Like SimpleImputer / IterativeImputer: one output column per input column, so
    ``get_feature_names_out`` and ``set_output`` work in a Pipeline."""
    true, _, Xn = _data(20)
    imp = ExactDGNImputer(true, prefit=True).fit(Xn)
    assert imp.get_feature_names_out().tolist() == ["x0", "x1", "x2"]
    assert imp.get_feature_names_out(["a", "b", "c"]).tolist() == ["a", "b", "c"]
    assert imp.set_output(transform="default") is imp
    assert np.array_equal(imp.transform(Xn), true.impute(Xn))
