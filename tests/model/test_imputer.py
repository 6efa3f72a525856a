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


def test_failed_fit_leaves_the_imputer_as_it_was():
    """A fresh imputer whose fit failed raised AttributeError (``n_features_in_``) in
    ``transform``, and a fitted one whose re-fit failed lost its model (``estimator_`` was
    replaced before the data were checked)."""
    true, _, Xn = _data(40)
    fresh = ExactDGNImputer(ExactDGN(hidden_sizes=(4,), max_iter=2))
    with pytest.raises(ValueError, match="infinite"):
        fresh.fit(np.where(np.isnan(Xn), np.inf, Xn))
    with pytest.raises(NotFittedError, match="not fitted"):
        fresh.transform(Xn)
    imp = ExactDGNImputer(true, prefit=True).fit(Xn)
    before = imp.transform(Xn)
    with pytest.raises(ValueError, match="columns"):
        imp.fit(Xn[:, :2])
    assert imp.estimator_ is true and imp.n_features_in_ == 3
    np.testing.assert_array_equal(imp.transform(Xn), before)


def test_rows_with_nothing_observed_are_filled_from_the_marginal():
    """As scikit-learn's imputers fill rows with every value missing (a Pipeline cannot drop
    them): the marginal mean E[x] (Monte Carlo of ``sample``), g(0) for "mode", unconditional
    draws for "sample", and the marginal std; the other rows are as without them, and ``fit``
    leaves such rows out (they change no likelihood)."""
    true, _, Xn = _data(30)
    Xe = Xn.copy()
    Xe[[3, 17]] = np.nan
    seen = np.ones(len(Xe), dtype=bool)
    seen[[3, 17]] = False
    mc = true.sample(200_000, random_state=5)
    se = mc.std(axis=0) / np.sqrt(len(mc))
    mean, std = true.impute(Xe, return_std=True)
    np.testing.assert_array_equal(mean[seen], true.impute(Xe[seen]))
    assert np.all(np.abs(mean[3] - mc.mean(axis=0)) < 5 * se)
    np.testing.assert_array_equal(mean[3], mean[17])
    assert np.all(np.abs(std[3] - mc.std(axis=0)) < 0.01 * mc.std(axis=0))
    g0 = true.decoder_.forward(np.zeros((1, 1)))[0]
    np.testing.assert_allclose(true.impute(Xe, method="mode")[[3, 17]], [g0, g0], rtol=1e-15)
    draws = true.impute(Xe, method="sample", n_samples=20_000, random_state=0)[:, 3]
    assert np.all(np.abs(draws.mean(axis=0) - mc.mean(axis=0)) < 5 * mc.std(axis=0) / 141)
    assert true.impute(np.full((2, 3), np.nan)).shape == (2, 3)
    model = ExactDGN(hidden_sizes=(4,), max_iter=2, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imp = ExactDGNImputer(model).fit(Xe)
        ref = ExactDGNImputer(model).fit(Xn[seen])
    np.testing.assert_array_equal(imp.transform(Xe)[seen], ref.transform(Xe[seen]))
    with pytest.raises(ValueError, match=r"every value missing .* in all its 2 rows"):
        ExactDGNImputer(model).fit(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="every value missing"):
        true.score_samples(Xe)  # log p(x_obs) and the posterior still refuse them


def test_marginal_moments_are_in_the_data_units():
    """A model with ``preprocessing_`` (the command line's) gave ``mean`` and ``covariance``
    in its standardized units, ``sample`` in the data's."""
    from exactdgn.datasets import Standardizer

    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.1)
    model.preprocessing_ = Standardizer().fit(model.sample(50, random_state=1) * [100, 0.01, 3])
    S = model.sample(200_000, random_state=2)
    se = S.std(axis=0) / np.sqrt(len(S))
    assert np.all(np.abs(model.mean() - S.mean(axis=0)) < 5 * se)
    np.testing.assert_allclose(np.diag(model.covariance()), S.var(axis=0), rtol=0.02)


def test_feature_names_out_as_sklearn_imputers():
    """Like SimpleImputer / IterativeImputer: one output column per input column, so
    ``get_feature_names_out`` and ``set_output`` work in a Pipeline."""
    true, _, Xn = _data(20)
    imp = ExactDGNImputer(true, prefit=True).fit(Xn)
    assert imp.get_feature_names_out().tolist() == ["x0", "x1", "x2"]
    assert imp.get_feature_names_out(["a", "b", "c"]).tolist() == ["a", "b", "c"]
    assert imp.set_output(transform="default") is imp
    assert np.array_equal(imp.transform(Xn), true.impute(Xn))


def test_nullable_pandas_frame_marks_pd_na_as_missing():
    """A frame with pandas' nullable dtypes (``Float64``, ``Int64``: ``read_csv(...,
    dtype_backend="numpy_nullable")``) holds ``pd.NA`` where a value is missing: it was a
    TypeError ("float() argument must be ... not 'NAType'"); it is NaN (missing) as in numpy."""
    pd = pytest.importorskip("pandas")
    true, _, Xn = _data(30)
    frame = pd.DataFrame(Xn, columns=["a", "b", "c"]).astype("Float64")
    assert frame.isna().to_numpy().sum() == np.isnan(Xn).sum() > 0
    imp = ExactDGNImputer(true, prefit=True).fit(frame)
    assert np.array_equal(imp.transform(frame), true.impute(Xn))
    assert np.array_equal(true.score_samples(frame), true.score_samples(Xn))
    ints = pd.DataFrame({"a": [1, 2, None], "b": [1, None, 3], "c": [0, 1, 2]}, dtype="Int64")
    plain = np.array([[1, 1, 0], [2, np.nan, 1], [np.nan, 3, 2]], dtype=float)
    assert np.array_equal(true.impute(ints), true.impute(plain))


def test_imputer_estimator_that_cannot_impute_is_named():
    """``ExactDGNImputer(LinearRegression())`` failed inside the regressor's ``fit`` ("missing
    1 required positional argument: 'y'")."""
    _, _, Xn = _data(20)
    with pytest.raises(TypeError, match=r"ExactDGN.*LinearRegression"):
        ExactDGNImputer(LinearRegression()).fit(Xn)
    with pytest.raises(TypeError, match=r"ExactDGN.*LinearRegression"):
        ExactDGNImputer(LinearRegression(), prefit=True).fit(Xn)


def test_imputer_wrong_width_names_the_imputer():
    """scikit-learn names the estimator that was called; the message named the inner
    ``ExactDGN`` of a transformer the user never called."""
    true, _, Xn = _data(20)
    imp = ExactDGNImputer(true, prefit=True).fit(Xn)
    with pytest.raises(ValueError, match="ExactDGNImputer is expecting 3 features"):
        imp.transform(Xn[:, :2])


@pytest.mark.parametrize("seed", [-1, 1.5, "a"])
def test_bad_random_state_is_named(seed):
    """A bad seed failed inside numpy ("expected non-negative integer", "SeedSequence expects
    int or sequence of ints for entropy not a"), naming no parameter."""
    true, _, Xn = _data(20)
    for call in (
        lambda: true.impute(Xn, method="sample", random_state=seed),
        lambda: true.sample(3, random_state=seed),
        lambda: true.posterior(Xn[:3]).sample(random_state=seed),
        lambda: true.typicality_test(
            true.sample(5, random_state=0), n_reference=20, random_state=seed
        ),
        # the imputer checks its parameters in fit, as scikit-learn's estimators do
        lambda: ExactDGNImputer(true, method="sample", random_state=seed, prefit=True).fit(Xn),
    ):
        with pytest.raises((TypeError, ValueError), match=rf"random_state={seed!r} is invalid"):
            call()


def test_impute_refuses_a_bool_n_samples():
    # True passed the integer check and failed inside numpy ("an integer is required")
    true, _, Xn = _data(20)
    with pytest.raises(ValueError, match="n_samples=True is invalid"):
        true.impute(Xn, method="sample", n_samples=True)


def test_imputer_takes_array_likes_as_scikit_learn_does():
    """scikit-learn's ``check_transformer_data_not_an_array`` failed: the input check called
    ``np.iscomplexobj`` on the array-like itself (an ``__array_function__`` dispatch)."""
    from sklearn.utils.estimator_checks import check_transformer_data_not_an_array

    est = ExactDGNImputer(ExactDGN(hidden_sizes=(3,), max_iter=2, random_state=0, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the check's own short fits
        check_transformer_data_not_an_array("ExactDGNImputer", est)


def test_prefit_model_fitted_on_a_frame_still_checks_its_columns():
    """The transformer's own width check converts the input to an array; the columns of a
    frame are checked against the prefit model's names first (fit on an array saw none)."""
    pd = pytest.importorskip("pandas")
    true, _, Xn = _data(20)
    model = ExactDGN.from_decoder(true.decoder_, 0.1)
    model.feature_names_in_ = np.array(["a", "b", "c"], dtype=object)
    imp = ExactDGNImputer(model, prefit=True).fit(Xn)
    with pytest.raises(ValueError, match="fitted with"):
        imp.transform(pd.DataFrame(Xn, columns=["b", "a", "c"]))
    assert np.array_equal(imp.transform(pd.DataFrame(Xn, columns=["a", "b", "c"])), true.impute(Xn))


@pytest.mark.parametrize("method", ["mean", "mode", "sample"])
def test_observed_values_come_back_as_given_with_a_preprocessing(method):
    """A model with ``preprocessing_`` (as the command line saves) returned the observed values
    through ``(x - m) / s * s + m``: 4 of 75 changed in the last bit. They are the input's now,
    also in the imputer."""
    from exactdgn.datasets import Standardizer

    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.1)
    X = model.sample(50, random_state=1) * [100, 0.01, 3] + [1000, -5, 0.3]
    model.preprocessing_ = Standardizer().fit(X)
    X[::2, 1] = np.nan
    obs = ~np.isnan(X)
    got = model.impute(X, method=method, random_state=0)
    np.testing.assert_array_equal(got[obs], X[obs])
    assert not np.isnan(got).any()
    imp = ExactDGNImputer(model, prefit=True, method=method, random_state=0).fit(X)
    np.testing.assert_array_equal(imp.transform(X)[obs], X[obs])


def test_float32_input_is_imputed_in_float32():
    """As scikit-learn's imputers: float32 data come back float32 (the exact path runs in
    float64; the values are its, rounded once)."""
    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.1)
    X = model.sample(20, random_state=1)
    X[::2, 1] = np.nan
    X32 = X.astype(np.float32)
    filled, std = model.impute(X32, return_std=True)
    assert filled.dtype == std.dtype == np.float32
    ref, ref_std = model.impute(X32.astype(np.float64), return_std=True)
    np.testing.assert_array_equal(filled, ref.astype(np.float32))
    np.testing.assert_array_equal(std, ref_std.astype(np.float32))
    assert ExactDGNImputer(model, prefit=True).fit(X32).transform(X32).dtype == np.float32
    assert model.impute(X).dtype == np.float64


def test_empty_input_is_named_and_a_float32_frame_stays_float32():
    # fit on (12, 0) said "every value missing (NaN) in all its 12 rows" (check_estimator's
    # check_estimators_empty_data_messages); a float32 DataFrame came back float64
    import pandas as pd

    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        ExactDGNImputer(ExactDGN(max_iter=3)).fit(np.empty((12, 0)))
    with pytest.raises(ValueError, match="X has no rows"):
        ExactDGNImputer(ExactDGN(max_iter=3)).fit(np.empty((0, 3)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[::4, 1] = np.nan
    frame = pd.DataFrame(X.astype(np.float32), columns=["a", "b", "c"])
    model = ExactDGN(latent_dim=1, hidden_sizes=(4,), max_iter=2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = ExactDGNImputer(model).fit(frame)
    assert imp.transform(frame).dtype == np.float32
    assert imp.estimator_.impute(frame).dtype == np.float32
    assert imp.estimator_.impute(frame.astype({"a": np.float64})).dtype == np.float64
