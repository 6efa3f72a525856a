"""Exact EM with missing values (NaN): monotone observed-data likelihood, planted recovery."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from exactdgn import Decoder, ExactDGN
from exactdgn.em import m_step, missing_region_stats, region_stats


def _mask(X, seed, p=0.3):
    """NaN at a rate ``p`` at random; a row left with nothing observed gets one value back."""
    rng = np.random.default_rng(seed)
    M = rng.random(X.shape) < p
    empty = M.all(axis=1)
    M[empty, rng.integers(0, X.shape[1], empty.sum())] = False
    return np.where(M, np.nan, X)


def _fit(X, **kw):
    m = ExactDGN(progress=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return m.fit(X)


def test_planted_recovery_with_30_percent_missing():
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=11), 0.1)
    X = _mask(true.sample(1000, random_state=111), 0)
    Xt = _mask(true.sample(2000, random_state=12345), 1)
    assert 0.27 < np.isnan(X).mean() < 0.31
    m = _fit(X, hidden_sizes=(6,), max_iter=50, tol=1e-7, random_state=0)
    ll = np.array([h["loglik"] for h in m.history_])
    assert np.all(np.diff(ll) >= 0.0), np.diff(ll)  # observed-data likelihood never decreases
    assert m.score(X) == pytest.approx(ll[-1], abs=1e-10)  # recorded = exact log p(x_obs)
    assert m.score(Xt) >= true.score(Xt) - 0.05  # held-out log p(x_obs) near the truth's


def test_missing_stats_reduce_to_complete_ones_and_output_step_is_em():
    true = ExactDGN.from_decoder(Decoder.random([1, 5, 3], seed=2), 0.2)
    X = true.sample(300, random_state=0)
    dec, std = Decoder.random([1, 5, 3], seed=7), np.full(3, 0.3)
    model = ExactDGN.from_decoder(dec, std)
    st = model._pairs(X, need_moments=True)
    args = (model.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
    full = region_stats(X, *args)
    obs = np.ones(X.shape, bool)
    same = missing_region_stats(X, obs, dec, std, *args)
    assert np.allclose(same.XZ, full.XZ, rtol=1e-12, atol=1e-12)
    kw = {"diagonal": True, "min_std": 1e-3, "layers": [1]}
    d1, s1 = m_step(dec, full, std, X, **kw)
    d2, s2 = m_step(dec, same, std, X, **kw)
    assert np.allclose(s1, s2, rtol=1e-12) and np.allclose(d1.weights[1], d2.weights[1])
    # with NaN: the output-layer block is a true EM step on log p(x_obs)
    Xn = _mask(X, 3, p=0.4)
    stn = model._pairs(Xn, need_moments=True)
    rs = model._region_stats(Xn, model.partition_, stn, dec, std)
    dn, sn = m_step(dec, rs, std, Xn, **kw)
    before = model.score(Xn)
    after = ExactDGN.from_decoder(dn, sn).score(Xn)
    assert after > before


def test_lbfgs_on_missing_data_is_monotone():
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=11), 0.1)
    X = _mask(true.sample(300, random_state=1), 2)
    m = _fit(X, hidden_sizes=(6,), method="lbfgs", max_iter=4, tol=0.0, random_state=0)
    ll = np.array([h["loglik"] for h in m.history_])
    assert np.all(np.diff(ll) >= -1e-12) and ll[-1] > ll[0]
    assert m.score(X) == pytest.approx(ll[-1], abs=1e-9)


def test_fit_refuses_an_all_missing_column_or_row():
    X = np.random.default_rng(0).standard_normal((20, 3))
    X[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"columns with every value missing.*\[1\]"):
        ExactDGN(progress=False).fit(X)
    X[:, 1] = 0.0
    X[4] = np.nan
    with pytest.raises(ValueError, match=r"rows with every value missing.*\[4\]"):
        ExactDGN(progress=False).fit(X)
