"""Exact EM with missing values (NaN): monotone observed-data likelihood, planted recovery."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from exactdgn import Decoder, ExactDGN
from exactdgn.em import expected_complete_loglik, m_step, missing_region_stats, region_stats
from exactdgn.em._steps import _input_maps
from tests.oracles.enumerate import pattern_output_map
from tests.oracles.missing_em import missing_em_stats, output_layer_moments, output_layer_q


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


# ---------------------------------------------------------------- independent quadrature
def _nan_rows(X, sigma):
    """Rows with one, several and all-but-one values missing, and a 100σ outlier."""
    X = X.copy()
    X[0, 1] = np.nan
    X[1, [0, 2]] = np.nan  # all but one
    X[2, 0] = np.nan
    X[3] = X[3] + 100.0 * sigma * np.array([0.6, 0.8, 0.0])  # far, its last value missing
    X[3, 2] = np.nan
    X[5, [1, 2]] = np.nan
    return X


def _new_maps(dec, patterns, seed):
    """Per-region maps of a perturbed decoder with the patterns held (own forward pass)."""
    rng = np.random.default_rng(seed)
    new = dec.copy()
    for k in range(new.n_layers):
        new.weights[k] = new.weights[k] + 0.1 * rng.standard_normal(new.weights[k].shape)
    maps = [pattern_output_map(new, p) for p in patterns]
    return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])


def _check_stats(model, dec, std, X, seed):
    st = model._pairs(X, need_moments=True)
    P = model.partition_.patterns
    rs = model._region_stats(X, model.partition_, st, dec, std)
    maps = _new_maps(dec, P, seed)
    ref = missing_em_stats(dec, X, std, P, maps)
    N = X.shape[0]
    assert np.allclose(rs.s, ref["s"], rtol=0, atol=1e-11 * N)
    assert np.allclose(rs.Z2, ref["Z2"], rtol=1e-10, atol=1e-11 * N)
    assert np.allclose(rs.XZ, ref["XZ"], rtol=1e-10, atol=1e-10 * N * max(1, np.nanmax(np.abs(X))))
    rsq = rs.residual_sq(*maps, X)
    assert np.allclose(rsq, ref["rsq"], rtol=1e-10, atol=0), (rsq, ref["rsq"])
    # the expected complete-data log-likelihood sees the same residuals
    assert np.isfinite(rsq).all()


@pytest.mark.parametrize("noise", ["diagonal", "isotropic"])
@pytest.mark.parametrize("seed", [3, 4])
def test_d1_missing_stats_match_quadrature(noise, seed):
    dec = Decoder.random([1, 4, 3], seed=seed)
    std = np.array([0.2, 0.3, 0.25]) if noise == "diagonal" else np.full(3, 0.25)
    model = ExactDGN.from_decoder(dec, std if noise == "diagonal" else 0.25)
    X = _nan_rows(model.sample(8, random_state=seed), 0.25)
    _check_stats(model, dec, std, X, seed)


@pytest.mark.slow
def test_d2_missing_stats_match_quadrature():
    dec = Decoder.random([2, 5, 3], seed=5)
    std = np.array([0.2, 0.3, 0.25])
    model = ExactDGN.from_decoder(dec, std)
    X = _nan_rows(model.sample(6, random_state=1), 0.2)[[1, 3]]  # all-but-one; far
    _check_stats(model, dec, std, X, 5)


def _newton_max_q(dec, X, std, iso, moments):
    """The maximiser of the output layer's and the noise's ``Q`` by Newton's method on the
    quadrature ``Q`` (finite-difference Hessian of its gradient)."""
    D, H = dec.weights[-1].shape

    def unpack(p):
        ls = np.full(D, p[-1]) if iso else p[D * H + D :]
        return p[: D * H].reshape(D, H), p[D * H : D * H + D], ls

    def neg(p):
        Q, gW, gc, gl = output_layer_q(*unpack(p), X, std, moments)
        return -Q, -np.concatenate([gW.ravel(), gc, [gl.sum()] if iso else gl])

    def hess(p, h=1e-4):
        cols = [(neg(p + e)[1] - neg(p - e)[1]) / (2 * h) for e in h * np.eye(len(p))]
        Hm = np.stack(cols, axis=1)
        return 0.5 * (Hm + Hm.T)

    ls0 = np.log(std[:1] if iso else std)
    p = np.concatenate([dec.weights[-1].ravel(), dec.biases[-1], ls0])
    nW = D * H + D
    for _ in range(3):  # Newton in W̃ at fixed σ: Q is quadratic in W̃ (exact in one step)
        p[:nW] -= np.linalg.solve(hess(p)[:nW, :nW], neg(p)[1][:nW])
    for _ in range(100):  # then damped Newton in log σ (Q is concave in it)
        f0, g = neg(p)
        step, t = np.linalg.solve(hess(p)[nW:, nW:], g[nW:]), 1.0
        while True:
            q = p.copy()
            q[nW:] -= t * step
            if neg(q)[0] <= f0 or t < 1e-8:
                break
            t *= 0.5
        p = q
        if np.abs(t * step).max() < 1e-15:
            break
    return (*unpack(p), -neg(p)[0])


@pytest.mark.parametrize("noise", ["diagonal", "isotropic"])
def test_d1_output_layer_m_step_maximises_q(noise):
    """The closed-form output layer + noise update with NaN is the maximiser of the expected
    complete-data log-likelihood (missing x integrated under the E-step parameters)."""
    iso = noise == "isotropic"
    dec = Decoder.random([1, 4, 3], seed=3)
    X = _nan_rows(ExactDGN.from_decoder(dec, 0.2).sample(40, random_state=2), 0.2)
    X[6:12, 1] = np.nan
    std = np.full(3, 0.3) if iso else np.array([0.2, 0.3, 0.25])
    model = ExactDGN.from_decoder(dec, 0.3 if iso else std)
    st = model._pairs(X, need_moments=True)
    rs = model._region_stats(X, model.partition_, st, dec, std)
    dn, sn = m_step(dec, rs, std, X, diagonal=not iso, min_std=1e-6, layers=[1])
    moments = output_layer_moments(dec, X, std)
    W, c, ls, q_max = _newton_max_q(dec, X, std, iso, moments)
    q_lib = output_layer_q(dn.weights[-1], dn.biases[-1], np.log(sn), X, std, moments)[0]
    assert q_lib >= q_max - 1e-12 * abs(q_max)
    assert np.allclose(sn, np.exp(ls), rtol=1e-9, atol=0)
    # the parameters in the metric of Q (Σ_n E[h̃ h̃ᵀ] is ill-conditioned with 4 units on a
    # line, ~6e6: its weak directions barely move Q and are set by the closed form's ridge)
    HH = moments[0].sum(axis=0)
    dW = np.concatenate([dn.weights[-1] - W, (dn.biases[-1] - c)[:, None]], axis=1)
    Wt = np.concatenate([W, c[:, None]], axis=1)
    rel = np.einsum("jk,kl,jl->j", dW, HH, dW) / np.einsum("jk,kl,jl->j", Wt, HH, Wt)
    assert np.all(rel < 1e-13), rel  # 3e-7 in the fitted outputs (the ridge: 1e-7)
    # and the ridge-free solution of the library's statistics is the maximiser to 1e-8
    Hm = _input_maps(dec, rs.patterns, 1)
    lhs = (Hm @ rs.Z2 @ np.swapaxes(Hm, 1, 2)).sum(axis=0)
    Wl = np.linalg.solve(lhs, np.einsum("rjk,rmk->jm", rs.XZ, Hm).T).T
    assert np.allclose(Wl, Wt, rtol=0, atol=1e-8 * np.abs(Wt).max())
    # the expected complete-data log-likelihood of the library is the quadrature's Q / N
    ecll = expected_complete_loglik(dn, rs, sn, X)
    assert ecll == pytest.approx(q_lib / len(X), rel=1e-11)


def _adversarial(seed):
    """Many NaN, a column almost always missing, rows with one value, duplicated rows."""
    true = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=11), 0.1)
    X = true.sample(40, random_state=seed)
    rng = np.random.default_rng(seed)
    X[rng.random(X.shape) < 0.5] = np.nan
    X[:-2, 2] = np.nan  # column 2 observed in two rows only
    one = np.arange(0, 40, 3)
    X[one, 1] = np.nan  # rows with (at most) one observed value
    empty = np.isnan(X).all(axis=1)
    X[empty, 0] = 0.5
    return np.concatenate([X, X[:8], X[:8]])  # duplicated rows


@pytest.mark.parametrize("noise", ["diagonal", "isotropic"])
def test_output_layer_em_never_decreases_log_p_obs_on_adversarial_data(noise):
    """Unguarded output-layer EM steps (no backtracking), tiny noise floor: exact
    ``log p(x_obs)`` never drops."""
    X = _adversarial(1)
    dec = Decoder.random([1, 4, 3], seed=2)
    std = np.full(3, 0.5)
    ll = [ExactDGN.from_decoder(dec, std).score(X)]
    for _ in range(8):
        model = ExactDGN.from_decoder(dec, std)
        st = model._pairs(X, need_moments=True)
        rs = model._region_stats(X, model.partition_, st, dec, std)
        dec, std = m_step(dec, rs, std, X, diagonal=noise == "diagonal", min_std=1e-9, layers=[1])
        ll.append(ExactDGN.from_decoder(dec, std).score(X))
    ll = np.array(ll)
    assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll)
    assert ll[-1] > ll[0] + 0.1


def test_fit_on_adversarial_missing_data_is_monotone():
    X = _adversarial(2)
    m = _fit(X, hidden_sizes=(4,), max_iter=6, tol=0.0, random_state=0, min_noise_std=1e-9)
    ll = np.array([h["loglik"] for h in m.history_])
    assert np.all(np.diff(ll) >= 0.0), np.diff(ll)
    assert m.score(X) == pytest.approx(ll[-1], abs=1e-10)


def test_complete_data_fit_never_takes_the_missing_path(monkeypatch):
    """No NaN: the missing-data E-step and statistics are never called, and the fit is bit
    for bit the one with them unreachable."""
    true = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=11), 0.1)
    X = true.sample(200, random_state=0)
    kw = {"hidden_sizes": (4,), "max_iter": 4, "tol": 0.0, "random_state": 0}
    ref = _fit(X, **kw)
    import exactdgn.model as mod

    def boom(*a, **k):
        raise AssertionError("missing-data path taken")

    monkeypatch.setattr(mod, "missing_region_stats", boom)
    monkeypatch.setattr(mod, "observed_pairs", boom)
    got = _fit(X, **kw)
    for a, b in zip(
        ref.decoder_.weights + ref.decoder_.biases,
        got.decoder_.weights + got.decoder_.biases,
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert np.array_equal(ref.noise_std_, got.noise_std_)


@pytest.mark.parametrize("sizes", [[1, 4, 3], [2, 5, 3]])
def test_complete_rows_of_a_batch_with_nan_have_complete_data_stats(sizes):
    """NaN in a few rows: the other rows' pairs (and so their statistics) are those of the
    complete-data path."""
    dec = Decoder.random(sizes, seed=4)
    std = np.array([0.2, 0.3, 0.25])
    model = ExactDGN.from_decoder(dec, std)
    X = model.sample(60, random_state=3)
    Xn = X.copy()
    Xn[[3, 17, 40], [0, 2, 1]] = np.nan
    full = np.flatnonzero(~np.isnan(Xn).any(axis=1))
    a = model._pairs(X[full], need_moments=True)
    b = model._pairs(Xn, need_moments=True)
    keep = np.isin(b.point, full)
    remap = np.searchsorted(full, b.point[keep])
    oa = np.lexsort((a.region, a.point))
    ob = np.lexsort((b.region[keep], remap))
    assert np.array_equal(a.point[oa], remap[ob]) and np.array_equal(
        a.region[oa], b.region[keep][ob]
    )
    assert np.allclose(a.log_weight[oa], b.log_weight[keep][ob], rtol=0, atol=1e-13)
    assert np.allclose(a.mean[oa], b.mean[keep][ob], rtol=0, atol=1e-13)
    assert np.allclose(a.cov[oa], b.cov[keep][ob], rtol=0, atol=1e-13)
    P = model.partition_.patterns
    ra = region_stats(X[full], P, a.point, a.region, a.log_weight, a.mean, a.cov)
    rb = model._region_stats(Xn, model.partition_, b, dec, std)
    # the complete rows' part of the missing-data statistics
    sub = missing_region_stats(
        Xn, ~np.isnan(Xn), dec, std, P, b.point[keep], b.region[keep], b.log_weight[keep],
        b.mean[keep], b.cov[keep],
    )  # fmt: skip
    assert np.allclose(sub.XZ, ra.XZ, rtol=1e-12, atol=1e-12)
    assert np.allclose(sub.Z2, ra.Z2, rtol=1e-12, atol=1e-12)
    assert rb.missing is not None
