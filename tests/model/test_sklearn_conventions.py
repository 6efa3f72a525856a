"""scikit-learn conventions of ExactDGN and ExactDGNImputer a user meets in pipelines:
data frames' column names (``feature_names_in_``)."""

import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN, ExactDGNImputer


class _Frame:
    """The part of a pandas / polars DataFrame that feature names use: ``columns`` and
    ``__array__`` (pandas is not a dependency; the real one is tested below when installed)."""

    def __init__(self, X, columns):
        self._X = np.asarray(X)
        self.columns = list(columns)

    def __array__(self, dtype=None, copy=None):
        return self._X if dtype is None else self._X.astype(dtype)

    def __getitem__(self, cols):
        return _Frame(self._X[:, [self.columns.index(c) for c in cols]], cols)


def _data(n=200):
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=11), 0.1, contamination=0.1)
    return true, true.sample(n, random_state=0)


_SMALL = dict(hidden_sizes=(6,), max_iter=2, n_iter_no_change=1, init="pca", progress=False)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_on_a_frame_records_and_checks_its_column_names(tmp_path):
    """Before, the names were dropped: scoring a frame with its columns in another order gave
    the log-likelihood of other points, without a word."""
    _, X = _data()
    df = _Frame(X, ["a", "b", "c"])
    model = ExactDGN(contamination=0.1, **_SMALL).fit(df)
    assert model.feature_names_in_.tolist() == ["a", "b", "c"]
    assert np.array_equal(model.score_samples(df), model.score_samples(X))
    swapped = df[["b", "a", "c"]]
    for method in (model.score_samples, model.decision_function, model.predict, model.impute):
        with pytest.raises(ValueError, match=r"\['b', 'a', 'c'\].*\['a', 'b', 'c'\]"):
            method(swapped)
    assert model.predict(df[["a", "b", "c"]]).shape == (200,)
    model.save(tmp_path / "m.npz")
    assert ExactDGN.load(tmp_path / "m.npz").feature_names_in_.tolist() == ["a", "b", "c"]
    model.fit(X)  # refit on an array: no names any more
    assert not hasattr(model, "feature_names_in_")
    assert model.predict(swapped).shape == (200,)
    assert not hasattr(ExactDGN(**_SMALL).fit(_Frame(X, [0, 1, 2])), "feature_names_in_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_imputer_keeps_the_frame_column_names():
    """``get_feature_names_out()`` gave x0, x1, x2 for a frame with named columns (so a
    pipeline's ``set_output(transform="pandas")`` renamed them)."""
    true, X = _data(50)
    Xn = X.copy()
    Xn[::3, 1] = np.nan
    df = _Frame(Xn, ["a", "b", "c"])
    imp = ExactDGNImputer(true, prefit=True).fit(df)
    assert imp.feature_names_in_.tolist() == ["a", "b", "c"]
    assert imp.get_feature_names_out().tolist() == ["a", "b", "c"]
    assert np.array_equal(imp.transform(df), true.impute(Xn))
    with pytest.raises(ValueError, match="fitted with"):
        imp.transform(df[["c", "b", "a"]])
    fitted = ExactDGNImputer(ExactDGN(**_SMALL)).fit(df)
    assert fitted.estimator_.feature_names_in_.tolist() == ["a", "b", "c"]
    assert not hasattr(ExactDGNImputer(true, prefit=True).fit(Xn), "feature_names_in_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_with_pandas():
    pd = pytest.importorskip("pandas")
    true, X = _data(50)
    Xn = X.copy()
    Xn[::3, 1] = np.nan
    df = pd.DataFrame(Xn, columns=["a", "b", "c"])
    imp = ExactDGNImputer(true, prefit=True).set_output(transform="pandas").fit(df)
    out = imp.transform(df)
    assert list(out.columns) == ["a", "b", "c"] and not out.isna().any().any()
    model = ExactDGN(**_SMALL).fit(df)
    with pytest.raises(ValueError, match="fitted with"):
        model.score_samples(df[["c", "b", "a"]])
