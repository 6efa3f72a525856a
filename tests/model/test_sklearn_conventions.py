"""scikit-learn conventions of ExactDGN and ExactDGNImputer a user meets in pipelines:
data frames' column names (``feature_names_in_``), tags, clear errors on unsupported input."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

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
    import pandas as pd  # pinned in requirements-dev.txt: this test must not skip

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


def test_tags_say_nan_is_missing():
    """Both take NaN as missing values (exact marginalisation): their tags say so, as
    ``SimpleImputer``'s and ``IsolationForest``'s do, so scikit-learn's wrappers that read the
    tag (feature selectors, ensembles) pass NaN through instead of refusing it."""
    from sklearn.utils import get_tags  # scikit-learn >= 1.6

    assert get_tags(ExactDGN()).input_tags.allow_nan
    assert get_tags(ExactDGNImputer()).input_tags.allow_nan
    assert not get_tags(ExactDGN()).input_tags.sparse


def test_sparse_and_columnless_input_are_named():
    true, X = _data(20)
    for method in (true.score_samples, ExactDGN(**_SMALL).fit, ExactDGNImputer(true).fit):
        with pytest.raises(ValueError, match=r"sparse.*toarray\(\)"):
            method(sp.csr_matrix(X))
    with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(5, 0\)\)"):
        ExactDGN(**_SMALL).fit(np.empty((5, 0)))


def test_prefit_imputer_cloned_by_model_selection_says_how_to_keep_it():
    """cross_val_score / GridSearchCV clone every step, and a clone of a fitted ExactDGN is not
    fitted: the error said only that prefit needs a fitted model, which the user had given."""
    true, X = _data(30)
    pipe = Pipeline([("impute", ExactDGNImputer(true, prefit=True)), ("reg", LinearRegression())])
    with pytest.raises(ValueError, match="FrozenEstimator"):
        cross_val_score(pipe, X, X[:, 0], cv=2, error_score="raise")
    with pytest.raises(ValueError, match="FrozenEstimator"):
        clone(pipe).fit(X, X[:, 0])
    frozen = pytest.importorskip("sklearn.frozen")  # scikit-learn >= 1.6
    pipe.set_params(impute__estimator=frozen.FrozenEstimator(true))
    assert np.all(cross_val_score(pipe, X, X[:, 0], cv=2, error_score="raise") > 0.9)


def _copies(m):
    """``m`` pickled, deep-copied and joblib-dumped."""
    import copy
    import io
    import pickle

    import joblib

    buf = io.BytesIO()
    joblib.dump(m, buf)
    buf.seek(0)
    return [pickle.loads(pickle.dumps(m)), copy.deepcopy(m), joblib.load(buf)]


@pytest.mark.parametrize("sizes", [[1, 6, 5], [2, 6, 6, 40], [3, 5, 4]])
def test_pickled_models_score_bitwise_the_same(sizes):
    """A pickled (joblib-dumped: ``n_jobs`` workers, saved pipelines) model scored other last
    digits (~1e-13): numpy pickled the partition's ``A``, laid out with permuted axes,
    C-ordered, and the products over it rounded differently."""
    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=0), 0.1)
    X = m.sample(20, random_state=0)
    Xn = X.copy()
    Xn[::2, 0] = np.nan
    for other in _copies(m):
        np.testing.assert_array_equal(other.score_samples(X), m.score_samples(X))
        np.testing.assert_array_equal(other.score_samples(Xn), m.score_samples(Xn))
        np.testing.assert_array_equal(other.posterior(X).mean, m.posterior(X).mean)
        np.testing.assert_array_equal(other.impute(Xn), m.impute(Xn))


def test_pickle_copy_and_joblib_leave_the_region_geometry_behind():
    """A model pickled (joblib, ``copy.deepcopy``, ``n_jobs`` workers) after scoring carried its
    region geometry and the missing-data caches (derived from ``partition_`` and
    ``noise_std_``): 6x the fitted model's size for a [2,16,16,100] decoder. The copies
    rebuild it and give bitwise the same results."""
    import pickle

    m = ExactDGN.from_decoder(Decoder.random([2, 6, 6, 40], seed=0), 0.1)
    fresh = len(pickle.dumps(m))
    X = m.sample(20, random_state=0)
    Xn = X.copy()
    Xn[:, :20] = np.nan
    ref, ref_missing = m.score_samples(X), m.score_samples(Xn)
    geom = m.geometry_
    assert len(pickle.dumps(m)) < 1.1 * fresh
    assert m._geom is geom  # pickling leaves the original as it was (state is a copy)
    for other in _copies(m):
        np.testing.assert_array_equal(other.score_samples(X), ref)
        np.testing.assert_array_equal(other.score_samples(Xn), ref_missing)
    np.testing.assert_array_equal(m.score_samples(X), ref)  # the original keeps its own


@pytest.mark.parametrize(
    "call",
    [
        lambda m, X: m.score_samples(X),
        lambda m, X: m.score(X),
        lambda m, X: m.predict(X),
        lambda m, X: m.decision_function(X),
        lambda m, X: m.posterior(X),
        lambda m, X: m.impute(X),
        lambda m, X: m.sample(2),
        lambda m, X: m.mean(),
        lambda m, X: m.set_offset(X),
        lambda m, X: m.typicality_test(X),
        lambda m, X: m.save("never.npz"),
    ],
)
def test_every_method_of_an_unfitted_model_says_to_fit_it(call):
    """``predict`` of an unfitted model built with ``contamination`` said "set contamination
    before fit" (it was set: the model was not fitted)."""
    from sklearn.exceptions import NotFittedError

    _, X = _data(5)
    with pytest.raises(NotFittedError, match=r"call fit\(X\)"):
        call(ExactDGN(contamination=0.1), X)


def test_scikit_learn_estimator_checks():
    """``check_estimator`` passes but for one check that goes against the design: it predicts
    on rows with NaN, while the outlier threshold ``offset_`` is a quantile of complete rows'
    ``log p(x)`` (``log p(x_obs)`` of an incomplete row is on another scale: refused, with a
    message). Complex, object, column-less, 1-D and wrong-width inputs get our messages in
    scikit-learn's wording (five checks failed on the wording alone)."""
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    est = ExactDGN(
        latent_dim=1, hidden_sizes=(3,), max_iter=2, contamination=0.1, random_state=0,
        progress=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own short fits (ConvergenceWarning, ...)
        results = check_estimator(est, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == {"check_estimators_pickle"}, failed
    pickled = [r for r in results if r["check_name"] == "check_estimators_pickle"]
    assert all("rows with NaN" in str(r["exception"]) for r in pickled if r["status"] == "failed")
    assert len(results) >= 30
