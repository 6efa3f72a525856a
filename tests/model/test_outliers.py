"""Outlier detection (scikit-learn conventions) and the typicality test."""

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from exactdgn import Decoder, ExactDGN
from exactdgn.model import NotFittedError


def _model(**params):
    return ExactDGN.from_decoder(Decoder.random([1, 6, 2], seed=2), 0.1, **params)


def test_contamination_threshold_follows_isolation_forest_conventions(tmp_path):
    model = _model(contamination=0.1)
    X = model.sample(500, random_state=0)
    with pytest.raises(NotFittedError, match="set_offset"):
        model.predict(X)
    model.set_offset(X)
    pred = model.predict(X)
    assert set(np.unique(pred)) == {-1, 1}
    assert abs((pred == -1).mean() - 0.1) <= 0.01  # 10% of the training data flagged
    dec = model.decision_function(X)
    assert np.array_equal(pred, np.where(dec < 0, -1, 1))
    assert np.allclose(dec, model.score_samples(X) - model.offset_)
    far = X[:3] + 50.0
    assert np.all(model.predict(far) == -1)
    # same sign convention as sklearn: higher decision_function = more normal
    iso = IsolationForest(contamination=0.1, random_state=0).fit(X)
    assert iso.predict(far).tolist() == model.predict(far).tolist()
    model.save(tmp_path / "m.npz")
    assert ExactDGN.load(tmp_path / "m.npz").offset_ == model.offset_


def test_fit_sets_offset_and_validates_contamination():
    X = _model().sample(300, random_state=1)
    fitted = ExactDGN(latent_dim=1, hidden_sizes=(6,), max_iter=3, contamination=0.05)
    with pytest.warns(Warning):
        pred = fitted.fit_predict(X)
    assert abs((pred == -1).mean() - 0.05) <= 0.01
    with pytest.raises(ValueError, match="contamination"):
        ExactDGN(contamination=0.7).fit(X)
    with pytest.raises(ValueError, match="contamination"):
        _model().set_offset(X)


def test_typicality_test():
    model = _model()
    typical = model.typicality_test(model.sample(50, random_state=3), random_state=0)
    assert typical.typical and typical.p_value > 0.01 and typical.batch_size == 50
    shifted = model.sample(50, random_state=4) + 0.3  # each point only mildly unlikely
    res = model.typicality_test(shifted, random_state=0)
    assert not res.typical and res.p_value < 0.01 and res.statistic < res.reference_mean
    # too likely is atypical as well: every point at the highest-density outputs
    X = model.sample(2000, random_state=5)
    best = X[np.argsort(model.score_samples(X))[-50:]]
    res = model.typicality_test(best, random_state=0)
    assert not res.typical and res.statistic > res.reference_mean
    for alpha in (2.0, "0.01", None, True):
        with pytest.raises(ValueError, match="alpha"):
            model.typicality_test(best, alpha=alpha)


def test_typicality_test_refuses_missing_values():
    """The reference batches are complete draws: log p(x_obs) of a batch with NaN is not
    comparable with them (it is higher for fewer observed values), so NaN is an error."""
    model = _model()
    X = model.sample(50, random_state=3)
    X[::2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.typicality_test(X, random_state=0)


def test_contamination_accepts_numpy_scalars():
    X = _model().sample(100, random_state=1)
    for c in (np.float32(0.1), np.float64(0.1)):
        assert _model(contamination=c).set_offset(X).offset_ < 0
    with pytest.raises(ValueError, match="contamination"):
        _model(contamination=True).set_offset(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_refit_without_contamination_drops_the_old_threshold():
    """A threshold belongs to the model it was computed for: after a refit with
    ``contamination=None`` (or a new decoder), ``decision_function`` must not reuse the
    previous model's ``offset_`` (it flagged points by a quantile of another density)."""
    X = _model().sample(200, random_state=1)
    model = ExactDGN(hidden_sizes=(6,), max_iter=2, n_iter_no_change=1, init="pca", progress=False)
    model.set_params(contamination=0.1).fit(X)
    assert hasattr(model, "offset_")
    model.set_params(contamination=None).fit(X)
    assert not hasattr(model, "offset_")
    with pytest.raises(NotFittedError, match="set_offset"):
        model.decision_function(X)


def test_threshold_refuses_incomplete_rows():
    """``offset_`` is a quantile of complete rows' ``log p(x)``; an incomplete row's
    ``log p(x_obs)`` has fewer coordinates and another scale. With noise 0.01, each missing
    value raises log p by ~2-3 nats less than the density's spread: thresholded as it was, every
    row with one NaN came out as an outlier (100% instead of 10%). Now it is an error."""
    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=2), 0.01, contamination=0.1)
    X = model.sample(300, random_state=0)
    model.set_offset(X)
    Xn = model.sample(50, random_state=1)
    Xn[::5, 2] = np.nan
    for method in (model.decision_function, model.predict, model.set_offset):
        with pytest.raises(ValueError, match=r"10 rows with NaN \(first: \[0, 5, 10, 15, 20\]\)"):
            method(Xn)
    assert model.predict(Xn[1:5]).shape == (4,)  # the complete rows are scored as before
    with pytest.raises(ValueError, match="rows with NaN"):
        ExactDGN(contamination=0.1).fit_predict(Xn)  # before any training


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_on_incomplete_data_sets_the_threshold_on_the_complete_rows():
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=2), 0.05)
    X = true.sample(200, random_state=0)
    Xn = X.copy()
    Xn[::4, 1] = np.nan
    params = dict(hidden_sizes=(6,), max_iter=2, n_iter_no_change=1, init="pca", progress=False)
    model = ExactDGN(contamination=0.1, **params).fit(Xn)
    complete = ~np.isnan(Xn).any(axis=1)
    assert model.offset_ == np.percentile(model.score_samples(X[complete]), 10.0)
    Xn[np.arange(200), np.arange(200) % 3] = np.nan  # every row incomplete
    with pytest.raises(ValueError, match="no complete row"):
        ExactDGN(contamination=0.1, **params).fit(Xn)


def test_typicality_test_level_holds_when_the_batch_is_not_small_against_the_reference():
    """Model batches must be rejected at about the level ``alpha``. The reference mean is itself
    an estimate from ``n_reference`` draws: a null that resampled the reference around its own
    mean left that error out, and with a batch 4x the reference it rejected ~40% of the model's
    own batches at alpha = 0.05 (the batch and reference are now compared by permutation)."""
    model = _model()
    p = np.array(
        [
            model.typicality_test(
                model.sample(200, random_state=100 + t),
                n_reference=50,
                n_batches=200,
                random_state=t,
            ).p_value
            for t in range(50)
        ]
    )
    assert (p < 0.05).mean() <= 0.15, (p < 0.05).mean()
    assert (p < 0.5).mean() <= 0.7  # p-values spread over (0, 1], not piled up near 0


def test_typicality_test_checks_column_names():
    import pandas as pd

    X = _model().sample(200, random_state=1)
    params = dict(hidden_sizes=(6,), max_iter=2, n_iter_no_change=1, init="pca", progress=False)
    with pytest.warns(Warning):
        model = ExactDGN(**params).fit(pd.DataFrame(X, columns=["a", "b"]))
    res = model.typicality_test(pd.DataFrame(X[:20], columns=["a", "b"]), random_state=0)
    assert res.batch_size == 20
    with pytest.raises(ValueError, match="fitted with"):
        model.typicality_test(pd.DataFrame(X[:20], columns=["b", "a"]), random_state=0)


def test_missing_threshold_error_names_the_cause():
    """A model from ``from_decoder`` (or with contamination set after fit) was never fit with
    its contamination: the error must not blame an interrupted fit."""
    model = _model(contamination=0.1)
    X = model.sample(20, random_state=0)
    with pytest.raises(NotFittedError, match="set_offset") as err:
        model.predict(X)
    assert "interrupted" not in str(err.value)


def test_typicality_result_holds_python_types():
    # a numpy alpha made ``typical`` a numpy bool (np.True_), unlike the documented bool
    model = _model()
    res = model.typicality_test(model.sample(20, random_state=3), alpha=np.float32(0.05))
    assert type(res.typical) is bool and type(res.p_value) is float
    assert 0.0 < res.p_value <= 1.0


def test_typicality_refuses_an_alpha_below_its_smallest_p_value():
    # p >= 1 / (n_batches + 1): alpha=1e-4 with 5,000 splits called a batch of 1e3 sd
    # outliers typical (p = 2e-4) without a word
    model = _model()
    far = np.full((20, 2), 1e3)
    with pytest.raises(ValueError, match=r"n_batches >= 200000 .20 / alpha."):
        model.typicality_test(far, alpha=1e-4, random_state=0)
    with pytest.raises(ValueError, match=r"smallest p-value is 1 / \(n_batches \+ 1\) = 0\.0196"):
        model.typicality_test(far, alpha=0.01, n_batches=50, random_state=0)
    res = model.typicality_test(far, alpha=1e-4, n_batches=20_000, random_state=0)
    assert not res.typical and res.p_value == 1 / 20_001


@pytest.mark.parametrize("d", [1, 2])
def test_values_beyond_float64s_reach_are_named_not_scored(d):
    # 1e160 scored NaN (its squares overflow), predict called it an inlier (+1) and one such
    # row in set_offset made offset_ NaN, after which nothing was ever flagged
    model = ExactDGN.from_decoder(Decoder.random([d, 6, 2], seed=2), 0.1, contamination=0.1)
    X = model.sample(100, random_state=0)
    far = np.array([[1e160, 0.0]])
    for call in (model.score_samples, model.set_offset, model.posterior):
        with pytest.raises(ValueError, match=r"row 0, column 0 is 1e\+160: more than 1e\+100"):
            call(far)
    bad = X.copy()
    bad[7, 1] = -1e160
    with pytest.raises(ValueError, match="row 7, column 1"):
        model.set_offset(bad)
    model.set_offset(X)
    with pytest.raises(ValueError, match="data error"):
        model.predict(far)
    # 1e98 (1e99 sd) is within reach: finite, and an outlier
    near = np.array([[1e98, 0.0], [np.nan, 1e98]])
    lp = model.score_samples(near)
    assert np.all(np.isfinite(lp)) and np.all(lp < -1e190)
    assert model.predict(near[:1]).tolist() == [-1]


def test_contamination_offset_checks_its_inputs():
    """The public helper gave numpy's IndexError on no scores."""
    from exactdgn.outliers import contamination_offset

    assert contamination_offset(np.arange(11.0), 0.1) == 1.0
    with pytest.raises(ValueError, match=r"scores has shape \(0,\)"):
        contamination_offset(np.array([]), 0.1)
    with pytest.raises(ValueError, match="contamination must be in"):
        contamination_offset(np.arange(3.0), 0.7)
