"""Standardizer: statistics, floor, round trip, density change of variables, (de)serialisation."""

import json

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from exactdgn.datasets import Standardizer
from exactdgn.model import NotFittedError


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal([1.0, -3.0, 10.0, 0.0], [2.0, 0.5, 30.0, 1.0], (500, 4))
    X[:, 3] = 7.0  # a constant feature
    return X


def test_statistics_and_round_trip():
    X = _data()
    st = Standardizer().fit(X)
    Y = st.transform(X)
    np.testing.assert_allclose(Y[:, :3].mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(Y[:, :3].std(axis=0), 1.0, rtol=1e-13)
    np.testing.assert_array_equal(Y[:, 3], 0.0)  # constant feature: centred, no division by 0
    assert st.scale_[3] == pytest.approx(1e-3 * X[:, 2].std())  # relative floor
    np.testing.assert_allclose(st.inverse_transform(Y), X, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(st.fit_transform(X), Y)


def test_absolute_floor_and_switches():
    X = np.zeros((10, 2))
    st = Standardizer(min_std=0.25).fit(X)
    np.testing.assert_array_equal(st.scale_, [0.25, 0.25])
    X = _data()
    st = Standardizer(with_mean=False, with_std=False).fit(X)
    np.testing.assert_array_equal(st.transform(X), X)
    st = Standardizer(with_std=False).fit(X)
    np.testing.assert_allclose(st.transform(X), X - X.mean(axis=0))


def test_log_abs_det_jacobian_changes_densities():
    # x ~ N(m, diag(s²)) and y = (x - m)/s ~ N(0, I): log p_x(x) = log p_y(y) + log|dy/dx|
    rng = np.random.default_rng(2)
    m, s = np.array([3.0, -1.0, 0.5]), np.array([2.0, 0.1, 5.0])
    st = Standardizer(rel_min_std=0.0).fit(rng.normal(size=(50, 3)))
    st.mean_, st.scale_ = m, s  # use the exact parameters of the Gaussian
    X = rng.normal(m, s, (20, 3))
    lhs = multivariate_normal(m, np.diag(s**2)).logpdf(X)
    rhs = multivariate_normal(np.zeros(3), np.eye(3)).logpdf(st.transform(X))
    np.testing.assert_allclose(lhs, rhs + st.log_abs_det_jacobian(), rtol=1e-13)


def test_to_dict_from_dict_json():
    X = _data()
    st = Standardizer().fit(X)
    d = json.loads(json.dumps(st.to_dict()))
    st2 = Standardizer.from_dict(d)
    np.testing.assert_array_equal(st2.mean_, st.mean_)
    np.testing.assert_array_equal(st2.scale_, st.scale_)
    np.testing.assert_array_equal(st2.transform(X), st.transform(X))
    assert st2.n_samples_seen_ == 500 and st2.n_features_in_ == 4
    bad = dict(d)
    del bad["scale"]
    with pytest.raises(ValueError, match="scale"):
        Standardizer.from_dict(bad)
    bad = dict(d, scale=[0.0] * 4)
    with pytest.raises(ValueError, match="scale"):
        Standardizer.from_dict(bad)


def test_errors():
    with pytest.raises(NotFittedError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 2)))
    st = Standardizer().fit(_data())
    with pytest.raises(ValueError, match="Standardizer is expecting 4 features"):
        st.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Standardizer().fit(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="min_std"):
        Standardizer(min_std=0.0).fit(_data())


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.0, 0.0, 0.0], [1.0, 1.0], r"mean has shape \(3,\) but std has shape \(2,\)"),
        ([[0.0, 0.0]], [[1.0, 1.0]], "1-D"),
        ([0.0, np.nan], [1.0, 1.0], "finite"),
        ([0.0, 0.0], [-1.0, 1.0], "finite and >= 0"),
        ([0.0, 0.0], [1.0, np.inf], "finite and >= 0"),
    ],
)
def test_fit_moments_checks_its_moments(mean, std, match):
    """Moments that do not describe D features were taken as they came: mean and std of
    different lengths gave a fitted object whose scale_ and mean_ disagreed (transform then
    failed in numpy broadcasting), a NaN mean NaN outputs, a negative std a silent floor."""
    with pytest.raises(ValueError, match=match):
        Standardizer().fit_moments(mean, std, 10)


def test_nan_is_missing_as_in_standardscaler():
    """NaN means missing: each feature's moments are those of its observed values (scikit-learn's
    StandardScaler), NaN stays NaN through transform and back, the per-row Jacobian counts a
    row's observed features only, and a feature with nothing observed is refused by name."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    X = rng.normal([1.0, -3.0, 10.0], [2.0, 0.5, 4.0], (200, 3))
    X[rng.random(X.shape) < 0.3] = np.nan
    st = Standardizer(rel_min_std=0.0).fit(X)
    ref = StandardScaler().fit(X)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-13)
    np.testing.assert_allclose(st.scale_, ref.scale_, rtol=1e-13)
    Y = st.transform(X)
    assert np.array_equal(np.isnan(Y), np.isnan(X))
    np.testing.assert_allclose(st.inverse_transform(Y), X, rtol=1e-13)
    rows = st.log_abs_det_jacobian_rows(X)
    np.testing.assert_allclose(rows[~np.isnan(X).any(axis=1)], st.log_abs_det_jacobian())
    np.testing.assert_allclose(rows, -((~np.isnan(X)) @ np.log(ref.scale_)), rtol=1e-13)
    X[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"columns with every value missing.*\[1\]"):
        Standardizer().fit(X)


def test_is_a_scikit_learn_transformer():
    """Documented as "scikit-learn style" but it was not an estimator: no get_params /
    set_params (so ``sklearn.base.clone`` failed), and an unfitted transform raised a
    RuntimeError instead of scikit-learn's NotFittedError."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError
    from sklearn.pipeline import make_pipeline
    from sklearn.utils.validation import check_is_fitted

    st = Standardizer(with_mean=False, min_std=0.5, rel_min_std=0.0)
    params = {"with_mean": False, "with_std": True, "min_std": 0.5, "rel_min_std": 0.0}
    assert st.get_params() == params
    assert st.set_params(min_std=0.25) is st and st.min_std == 0.25
    X = _data()
    st.fit(X)
    twin = clone(st)
    assert twin.get_params() == st.get_params() and not hasattr(twin, "scale_")
    for method in ("transform", "inverse_transform", "log_abs_det_jacobian_rows"):
        with pytest.raises(SklearnNotFittedError, match="Standardizer is not fitted"):
            getattr(twin, method)(X)
    for method in ("log_abs_det_jacobian", "to_dict"):
        with pytest.raises(NotFittedError, match="call fit"):
            getattr(twin, method)()
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(twin)
    check_is_fitted(st)
    np.testing.assert_array_equal(st.fit_transform(X), clone(st).fit(X).transform(X))
    np.testing.assert_array_equal(st.get_feature_names_out(), [f"x{j}" for j in range(4)])
    np.testing.assert_array_equal(make_pipeline(clone(st)).fit_transform(X), st.transform(X))
    st2 = Standardizer.from_dict(st.to_dict())
    assert st2.get_params() == st.get_params()
    check_is_fitted(st2)


def test_data_frame_column_names_are_kept_and_checked():
    """Fitted on a data frame, it kept no ``feature_names_in_``: ``get_feature_names_out`` and
    ``set_output(transform="pandas")`` gave x0, x1 instead of the columns, and a frame with its
    columns in another order was standardized with the other columns' statistics."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 40.0, 70.0]})
    st = Standardizer().fit(df)
    assert st.feature_names_in_.tolist() == ["a", "b"]
    assert st.get_feature_names_out().tolist() == ["a", "b"]
    out = Standardizer().set_output(transform="pandas").fit_transform(df)
    assert out.columns.tolist() == ["a", "b"]
    np.testing.assert_allclose(out.to_numpy(), st.transform(df.to_numpy()))
    for method in ("transform", "inverse_transform", "log_abs_det_jacobian_rows"):
        with pytest.raises(ValueError, match=r"columns \['b', 'a'\].*fitted with \['a', 'b'\]"):
            getattr(st, method)(df[["b", "a"]])
    # refitted on an array, the names are gone
    assert not hasattr(st.fit(df.to_numpy()), "feature_names_in_")
    assert st.get_feature_names_out().tolist() == ["x0", "x1"]


def test_estimator_tags_allow_nan():
    """NaN is a missing value (as for StandardScaler), but the estimator tags said NaN was not
    allowed, so ``check_estimator`` failed (its ``check_estimators_nan_inf``) and a Pipeline
    starting with it declared that it refuses NaN. Infinite values stay errors."""
    st = Standardizer()
    assert st.__sklearn_tags__().input_tags.allow_nan
    X = _data()
    X[0, 1] = np.nan
    assert np.isnan(st.fit(X).transform(X)[0, 1])
    X[1, 2] = np.inf
    for call in (st.fit, st.transform):
        with pytest.raises(ValueError, match="infinite"):
            call(X)


def test_huge_values_and_no_columns():
    """Values beyond 1e154: the squared deviations overflowed (a RuntimeWarning, then "std must
    be finite"); (N, 0) was "mean has shape (0,) but std has shape (0,)"; a wrong width is
    scikit-learn's wording with the estimator named."""
    X = np.array([[1e200, 1.0], [-1e200, 2.0], [3e199, 4.0]])
    s = Standardizer(rel_min_std=0.0).fit(X)
    ref = [float(mpmath_std(X[:, j])) for j in range(2)]
    np.testing.assert_allclose(s.std_, ref, rtol=1e-15)
    Xs = s.transform(X)
    np.testing.assert_allclose(Xs.std(axis=0), 1.0, rtol=1e-14)
    with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(3, 0\)\)"):
        Standardizer().fit(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="X has 3 features, but Standardizer is expecting 2"):
        s.transform(np.zeros((1, 3)))


def mpmath_std(col):
    import mpmath

    with mpmath.workdps(50):
        v = [mpmath.mpf(float(c)) for c in col]
        m = sum(v) / len(v)
        return mpmath.sqrt(sum((x - m) ** 2 for x in v) / len(v))


def test_passes_scikit_learns_estimator_checks():
    """Two checks failed: the width error's wording (no estimator named) and the message for
    data with no columns."""
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SkipTestWarning of the array-API check
        results = check_estimator(Standardizer(), on_fail=None)
    assert [r["check_name"] for r in results if r["status"] == "failed"] == []
    assert len(results) >= 30
