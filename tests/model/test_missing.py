"""NaN means missing: exact log p(x_obs), p(z | x_obs) and imputation.

References: the same model rebuilt on each row's observed coordinates (marginalising an output
with diagonal noise drops its row), and the independent quadrature oracles of tests/oracles
(forward passes only), far outliers included.
"""

import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN
from tests.oracles.likelihood import (
    oracle_conditional_outputs_1d,
    oracle_conditional_outputs_1d_mp,
    oracle_logpx_2d,
    oracle_posterior_moments_2d,
)


def _rows(dec, rows):
    """The decoder with only the given output rows."""
    out = dec.copy()
    out.weights[-1] = dec.weights[-1][rows]
    out.biases[-1] = dec.biases[-1][rows]
    return out


def _points(model, n, rng, miss=0.4):
    """Samples plus 100σ and 1e4σ outliers, with random NaNs (at least one observed per row)."""
    X = model.sample(n, random_state=rng)
    D = X.shape[1]
    u = rng.standard_normal(D)
    far = X[:2] + np.array([[100.0], [1e4]]) * float(model.noise_std_.min()) * u / np.linalg.norm(u)
    X = np.concatenate([X, far])
    M = rng.random(X.shape) < miss
    M[np.arange(len(X)), rng.integers(0, D, len(X))] = False
    M[0] = False  # one complete row in the batch
    return X, np.where(M, np.nan, X)


def _check_rebuilt(model, dec, X, Xn, *, moments: bool):
    """Each row of ``Xn`` (``X`` with NaNs) scores as the model rebuilt on its observed
    coordinates, to 1e-10 relative; with ``moments`` its posterior mean and covariance match
    the rebuilt model's too. Returns the scores and the posterior of ``Xn``."""
    got = model.score_samples(Xn)
    post = model.posterior(Xn)
    mean, cov = post.mean, post.covariance_matrix
    for i in range(len(X)):
        o = ~np.isnan(Xn[i])
        ref = ExactDGN.from_decoder(_rows(dec, o), model.noise_std_[o])
        x = X[i : i + 1, o]
        lp = ref.score_samples(x)[0]
        assert abs(got[i] - lp) <= 1e-10 * max(1.0, abs(lp)), (i, got[i], lp)
        if moments:
            rp = ref.posterior(x)
            assert np.allclose(mean[i], rp.mean[0], rtol=1e-9, atol=1e-9), i
            assert np.allclose(cov[i], rp.covariance_matrix[0], rtol=1e-8, atol=1e-9), i
    return got, post


@pytest.mark.parametrize(
    ("sizes", "std"),
    [([1, 8, 8, 5], 0.2), ([2, 8, 8, 5], np.linspace(0.1, 0.3, 5)), ([3, 6, 4], 0.3)],
)
def test_equals_model_rebuilt_on_observed_coordinates(sizes, std):
    dec = Decoder.random(sizes, activation="leaky_relu", seed=len(sizes) + sizes[0])
    model = ExactDGN.from_decoder(dec, std)
    X, Xn = _points(model, 12, np.random.default_rng(0))
    got, _ = _check_rebuilt(model, dec, X, Xn, moments=sizes[0] <= 2)
    assert got[-1] < -1e5  # the 1e4 sigma outlier is far out
    # a complete row gives the complete-data value
    assert abs(got[0] - model.score_samples(X[:1])[0]) <= 1e-10 * abs(got[0])


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs"])
def test_d1_log_p_obs_and_conditional_moments_match_quadrature(act):
    dec = Decoder.random([1, 6, 6, 4], activation=act, negative_slope=0.2, seed=3)
    sigma = np.array([0.1, 0.2, 0.15, 0.3])
    model = ExactDGN.from_decoder(dec, sigma)
    _, Xn = _points(model, 4, np.random.default_rng(1), miss=0.5)
    Xn[0, 1:3] = np.nan
    got = model.score_samples(Xn)
    filled, std = model.impute(Xn, return_std=True)
    for i in range(len(Xn)):
        miss = np.isnan(Xn[i])
        if not miss.any():
            continue
        lp, m, s = oracle_conditional_outputs_1d(dec, Xn[i], sigma)
        assert abs(got[i] - lp) <= max(1e-9, 1e-12 * abs(lp)), (i, got[i], lp)
        assert np.allclose(filled[i, miss], m, rtol=0, atol=1e-8), (filled[i, miss], m)
        assert np.allclose(std[i, miss], s, rtol=0, atol=1e-8), (std[i, miss], s)
        assert np.array_equal(filled[i, ~miss], Xn[i, ~miss])
        assert np.all(std[i, ~miss] == 0)


def _linear_output_decoder(a=0.2):
    """[2, 6, 4] leaky-ReLU decoder whose last output is exactly z1 + 0.3 (units ±z1)."""
    dec = Decoder.random([2, 6, 4], activation="leaky_relu", negative_slope=a, seed=5)
    dec.weights[0][0] = [1.0, 0.0]
    dec.weights[0][1] = [-1.0, 0.0]
    dec.biases[0][:2] = 0.0
    dec.weights[-1][-1] = 0.0
    dec.weights[-1][-1, :2] = [1 / (1 + a), -1 / (1 + a)]
    dec.biases[-1][-1] = 0.3
    return dec


def test_d2_log_p_obs_and_conditional_moments_match_quadrature():
    dec = _linear_output_decoder()
    sigma = 0.15
    model = ExactDGN.from_decoder(dec, sigma)
    z = np.random.default_rng(2).standard_normal((200, 2))
    assert np.allclose(dec(z)[:, -1], z[:, 0] + 0.3, atol=1e-13)
    X = model.sample(1, random_state=4)
    far = X + 100 * sigma * np.array([0.6, -0.8, 0.0, 0.0])
    Xn = np.concatenate([X, far])
    Xn[:, -1] = np.nan
    got = model.score_samples(Xn)
    ref = oracle_logpx_2d(_rows(dec, slice(0, 3)), Xn[:, :3], sigma)
    assert np.all(np.abs(got - ref) <= np.maximum(1e-7, 1e-10 * np.abs(ref))), (got, ref)
    filled, std = model.impute(Xn[:1], return_std=True)
    mz, cz = oracle_posterior_moments_2d(_rows(dec, slice(0, 3)), Xn[0, :3], sigma)
    assert abs(filled[0, -1] - (mz[0] + 0.3)) <= 1e-8
    assert abs(std[0, -1] - np.sqrt(cz[0, 0] + sigma**2)) <= 1e-8


def test_impute_mode_and_sample():
    dec = Decoder.random([2, 6, 6, 4], activation="leaky_relu", seed=1)
    model = ExactDGN.from_decoder(dec, 0.2)
    X = model.sample(3, random_state=0)
    Xn = X.copy()
    Xn[:, 1] = np.nan
    mode = model.impute(Xn, method="mode")
    assert np.allclose(mode[:, 1], dec(model.posterior(Xn).mode)[:, 1])
    draws = model.impute(Xn, method="sample", n_samples=1500, random_state=0)
    assert draws.shape == (1500, 3, 4)
    assert np.array_equal(draws[:, :, 0], np.broadcast_to(X[:, 0], (1500, 3)))
    mean, std = model.impute(Xn, return_std=True)
    # the sample mean of exact draws lies within 5 standard errors of the exact mean
    se = std[:, 1] / np.sqrt(1500)
    assert np.all(np.abs(draws[:, :, 1].mean(0) - mean[:, 1]) < 5 * se)
    one = model.impute(Xn, method="sample", random_state=1)
    assert one.shape == X.shape and not np.isnan(one).any()
    assert np.array_equal(one, model.impute(Xn, method="sample", random_state=1))
    with pytest.raises(ValueError, match="n_samples=3 is for method='sample'"):
        model.impute(Xn, method="mean", n_samples=3)  # was silently ignored


def test_missing_errors():
    model = ExactDGN.from_decoder(Decoder.random([1, 4, 3], seed=0), 0.2)
    X = model.sample(4, random_state=0)
    X[2] = np.nan
    with pytest.raises(ValueError, match=r"1 rows with every value missing.*\[2\]"):
        model.score_samples(X)
    X[2] = [np.inf, 0.0, np.nan]
    with pytest.raises(ValueError, match="infinite"):
        model.score_samples(X)
    with pytest.raises(ValueError, match="method"):
        model.impute(X[:2], method="median")
    with pytest.raises(ValueError, match="n_samples"):
        model.impute(X[:2], method="sample", n_samples=0)


@pytest.mark.parametrize(
    ("sizes", "std", "seed"),
    [
        ([1, 24, 24, 6], 0.1, 4),  # d = 1 with many regions: several chain anchors
        ([1, 24, 24, 6, 40], 0.1, 4),  # d = 1, the chain's GEMM through the output subspace
        ([2, 8, 8, 5], np.linspace(0.1, 0.3, 5), 2),
        ([2, 8, 6, 40], np.linspace(0.1, 0.3, 40), 2),  # d = 2, masked sums via Gram matrices
    ],
)
def test_mixed_batch_complete_and_one_observed_value(sizes, std, seed):
    """A batch mixing complete rows (the complete-data path), rows with one observed value and
    rows with random NaNs, far outliers included: each row equals the model rebuilt on its
    observed coordinates to 1e-10, and the posterior (pairs, moments) matches."""
    dec = Decoder.random(sizes, activation="leaky_relu", seed=seed)
    model = ExactDGN.from_decoder(dec, std)
    if sizes[0] == 1:
        assert model.n_regions_ > 20  # the chain recurrence spans several anchors
    rng = np.random.default_rng(seed)
    X, Xn = _points(model, 10, rng)
    D = X.shape[1]
    Xn[1] = X[1]  # complete rows at both ends and in the middle
    Xn[-1] = X[-1]  # the 1e4 sigma outlier, complete
    for i, j in ((2, 0), (3, D - 1), (len(X) - 2, 2)):  # one observed value (one far row)
        Xn[i] = np.nan
        Xn[i, j] = X[i, j]
    got, post = _check_rebuilt(model, dec, X, Xn, moments=True)
    st = post.pairs
    assert np.all(np.diff(st.point) >= 0) and set(st.point) == set(range(len(X)))
    assert got[-1] < -1e5  # the complete 1e4 sigma row
    # the pairs' whitened rows are those of their own posterior N(μ, L Lᵀ)
    from exactdgn.gaussian import whiten
    from exactdgn.inference._missing import _halfspaces

    Cs, es = _halfspaces(model.geometry_)
    normals, L, mu, _ = st.geometry(model.geometry_)
    n_ref, c_ref, _ = whiten(mu, L, Cs[st.region], es[st.region])
    fin = np.isfinite(c_ref)
    np.testing.assert_allclose(normals, n_ref, atol=1e-12)
    np.testing.assert_allclose(st.offsets[fin], c_ref[fin], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("sizes", "factored"), [([1, 24, 24, 7], False), ([1, 24, 24, 6, 40], True)]
)
def test_d1_chain_form_equals_direct_masked_sums(sizes, factored):
    """The d = 1 chain form (2R + B/8 masked columns, breakpoint recurrence) gives the same
    precisions, posterior means and log κ as the direct (D x 3R) masked GEMM, far rows too,
    with the x-dependent sums through the full (D-row) and the factored GEMM (the per-column
    constants as one more row against a column of ones)."""
    from exactdgn.inference._geometry import LOG_2PI
    from exactdgn.inference._missing import (
        _chain_1d,
        _kappa_1d_chain,
        _kappa_1d_direct,
        _mask_weights_1d,
        _observed_part,
    )

    dec = Decoder.random(sizes, activation="leaky_relu", seed=4)
    model = ExactDGN.from_decoder(dec, np.linspace(0.05, 0.2, sizes[-1]))
    geom = model.geometry_
    rng = np.random.default_rng(0)
    _, Xn = _points(model, 30, rng, miss=0.5)
    obs = ~np.isnan(Xn)
    m, x0, xq = _observed_part(Xn, obs, geom)
    k1, t1, l1 = _kappa_1d_direct(
        geom, _mask_weights_1d(geom), m, x0, xq + m @ (LOG_2PI - np.log(geom.inv_var))
    )
    ch = _chain_1d(geom)
    assert ch is not None and ch["nA"] > 1 and ch["factored"] == factored
    k2, t2, l2 = _kappa_1d_chain(geom, ch, m, x0, xq)
    order = geom.interval[2]  # the chain works on the regions sorted by position
    np.testing.assert_allclose(k2, k1[:, order], rtol=1e-13)
    mu1 = (t1 / k1)[:, order]
    mu2 = ch["zr"] + t2 / k2
    np.testing.assert_allclose(mu2, mu1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(l2, l1[:, order], rtol=1e-11, atol=1e-9)


def test_observed_part_masks_without_propagating_nan():
    """The compiled observed part: ``m`` is the mask, ``x' = m ∘ (x - c)`` is 0 where the value
    is missing whatever it holds (NaN, inf), ``||x'||²_Λ`` matches a plain sum, and a wider
    ``m`` buffer keeps its extra column."""
    from exactdgn.inference._missing import _observed_part

    dec = Decoder.random([1, 6, 5], seed=1)
    model = ExactDGN.from_decoder(dec, np.linspace(0.1, 0.5, 5))
    geom = model.geometry_
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 5)) * 10.0
    obs = rng.random(X.shape) < 0.5
    X[~obs] = np.nan
    X[0, ~obs[0]] = np.inf  # a missing entry holding inf is masked too
    m_buf = np.full((9, 6), 7.0)
    m, x0, xq = _observed_part(X, obs, geom, m=m_buf)
    want = np.where(obs, np.nan_to_num(X, posinf=0.0) - geom.center, 0.0)
    assert m is m_buf and np.all(m_buf[:, 5] == 7.0)
    np.testing.assert_array_equal(m[:, :5], obs.astype(float))
    np.testing.assert_array_equal(x0, want)
    np.testing.assert_allclose(xq, (want**2) @ geom.inv_var, rtol=1e-14)


def test_select_rows_is_the_kappa_and_tail_rule():
    """The compiled pair selection keeps exactly the pairs with ``log κ - lower > -thr`` whose
    tail bound ``log κ - lower - δ²/2`` is above ``-thr`` too, or that are the row's seeds
    (``r1``, ``r2``), in order of row then region, with their ``k``, ``t``, ``log κ`` and whitened
    interval (±inf ends kept)."""
    from exactdgn.inference._missing import _pair_buffers
    from exactdgn.inference._missing_kernels import select_rows

    rng = np.random.default_rng(5)
    n, R = 40, 13
    q = rng.normal(0.0, 20.0, (n, R))
    k2 = 1.0 + rng.exponential(5.0, (n, R))
    u = rng.normal(0.0, 5.0, (n, R))
    lo = np.r_[-np.inf, np.sort(rng.normal(0, 2, R - 1))]
    hi = np.r_[lo[1:], np.inf]
    r1 = np.argmin(q, axis=1)
    r2 = rng.integers(0, R, n)
    thr = 7.5
    lower = -0.5 * q.min(axis=1) - rng.exponential(10.0, n) + thr
    out = _pair_buffers(n * R)
    c, nc = select_rows(q, k2, u, lower, thr, r1, r2, lo, hi, *out)
    p, r = np.nonzero(-0.5 * q - lower[:, None] > -thr)
    k = np.sqrt(k2[p, r])
    t = u[p, r] / k
    a, b = lo[r] * k - t, hi[r] * k - t
    dist = np.maximum(np.maximum(a, -b), 0.0)
    sel = (-0.5 * q[p, r] - lower[p] - 0.5 * dist**2 > -thr) | (r == r1[p]) | (r == r2[p])
    assert nc == len(p) and c == sel.sum() and 0 < c < nc
    for got, want in zip(out, (p, r, k, t, -0.5 * q[p, r], a, b), strict=True):
        np.testing.assert_array_equal(got[:c], want[sel])


def test_d2_gram_sums_and_bounds():
    """d = 2 with a narrow last layer: the masked sums through the points' Gram matrices equal
    the direct (D x 6R) GEMM; the compiled candidate pass (disc and facet bounds) drops only
    pairs whose exact joint is below the cut, drops many, skips the seeds, and returns the
    pairs' whitening as gathered in numpy (far rows and one-value rows too)."""
    from exactdgn.gaussian import log_mass_2d_transformed
    from exactdgn.inference._missing import (
        _bounded_candidates,
        _gather_2d,
        _kappa_2d,
        _map_2d_entries,
        _mask_gram,
        _mask_weights_blocks,
        _masked_sums,
    )

    dec = Decoder.random([2, 8, 6, 40], activation="leaky_relu", seed=2)
    model = ExactDGN.from_decoder(dec, np.linspace(0.1, 0.3, 40))
    geom = model.geometry_
    assert _mask_gram(geom) is not None
    rng = np.random.default_rng(1)
    X, Xn = _points(model, 30, rng, miss=0.5)
    Xn[3] = np.nan
    Xn[3, 7] = X[3, 7]  # one observed value
    obs = ~np.isnan(Xn)
    m = obs.astype(float)
    direct = m @ _mask_weights_blocks(geom)
    # rounding relative to the complete-data sums (a row with one value: far below them)
    scale = np.abs(_mask_weights_blocks(geom)).sum(axis=0)
    assert np.all(np.abs(_masked_sums(geom, m) - direct) <= 1e-13 * scale)
    lk, Q = _kappa_2d(geom, Xn, obs)
    n, R = lk.shape
    p, r = np.repeat(np.arange(n), R), np.tile(np.arange(R), n)
    k00, k10, k11, w, _ = _gather_2d(Q, p, r)
    T = _map_2d_entries(geom, k00, k10, k11, r)
    lj = lk.ravel() + log_mass_2d_transformed(geom.polygons, r, T, w)[0]
    # a cut 3 nats below each point's largest joint; the two best pairs are seeds
    cut = lj.reshape(n, R).max(axis=1) - 3.0
    best2 = np.argsort(-lj.reshape(n, R), axis=1)[:, :2]
    seed = np.sort((np.arange(n)[:, None] * R + best2).ravel())
    thr = 7.0
    out = _bounded_candidates(geom, lk, Q, cut + thr, thr, seed)
    key = out[0] * R + out[1]
    cand = (lk.ravel() > cut[p]) & ~np.isin(p * R + r, seed)
    kept = np.isin(p * R + r, key)
    assert not np.any(kept & ~cand) and np.all(np.diff(key) > 0)
    assert np.all(lj[cand & ~kept] <= cut[p[cand & ~kept]] + 1e-9)  # only invisible ones
    assert np.mean(~kept[cand]) > 0.2  # the bounds do drop many candidates
    assert np.any(lj[kept] > cut[p[kept]])
    i = key  # flat (p, r) index of the kept pairs
    np.testing.assert_array_equal(out[2], lk.ravel()[i])
    np.testing.assert_allclose(out[3], w[i], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(out[4], T[i], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    ("sizes", "far_needs_centring"),
    [([1, 8, 8, 5], False), ([2, 8, 8, 5], True), ([3, 6, 4], True)],
)
def test_output_moments_equal_the_pairwise_centred_sums(sizes, far_needs_centring, monkeypatch):
    """The conditional output moments (region-wise products, in several small blocks here)
    equal the pair-by-pair centred sums of a plain loop over points; the far rows, whose
    uncentred subtraction would lose the variance, are recomputed centred."""
    from exactdgn.inference import _posterior

    dec = Decoder.random(sizes, activation="leaky_relu", seed=7)
    model = ExactDGN.from_decoder(dec, np.linspace(0.1, 0.3, dec.output_dim))
    _, Xn = _points(model, 30, np.random.default_rng(3))
    post = model.posterior(Xn)
    monkeypatch.setattr(post, "_OUT_BYTES", 8 * 4 * len(model.partition_) * 10)
    mean, var = post.output_moments()
    assert np.array_equal(post.output_mean(), mean)
    st = post.pairs
    A, b = model.partition_.A, model.partition_.b
    for i in range(len(Xn)):  # reference: a plain loop over the row's pairs
        sel = np.flatnonzero(st.point == i)
        w = np.exp(st.log_weight[sel])
        pairs = list(zip(st.region[sel], st.mean[sel], st.cov[sel], strict=True))
        y = np.array([A[r] @ mu + b[r] for r, mu, _ in pairs])
        within = np.array([np.diag(A[r] @ S @ A[r].T) for r, _, S in pairs])
        m_ref = w @ y
        v_ref = w @ (within + (y - m_ref) ** 2)
        scale = np.abs(y).max()
        assert np.allclose(mean[i], m_ref, rtol=0, atol=1e-13 * scale), i
        assert np.allclose(var[i], v_ref, rtol=1e-10, atol=1e-12 * model.noise_std_.min() ** 2), i
    # at most the 1e4 σ row is recomputed centred, and there the subtraction is off
    flagged = _posterior._ill_conditioned(st, post._geom, len(Xn))
    assert flagged.tolist() == [False] * (len(Xn) - 1) + [far_needs_centring]
    monkeypatch.setattr(_posterior, "_ill_conditioned", lambda s, g, n: np.zeros(n, bool))
    _, raw = post.output_moments()
    assert np.array_equal(raw[:-1], var[:-1])
    off = np.abs(raw[-1] - var[-1]).max() / model.noise_std_.min() ** 2
    # the flagged row is recomputed (the loop above checks the centred values); its uncentred
    # subtraction was off by 1.5e-9 (d = 2) and 2.7e-8 (d = 3) of σ² once far rows' weights
    # were renormalised to sum to 1 (the d = 2 row was off by more than 1e-8 before)
    assert off > 0 if far_needs_centring else off == 0


@pytest.mark.parametrize(("scale", "sigma"), [(1e4, 0.1), (1.0, 1e-4)])
def test_d1_missing_steep_regions_and_tiny_noise(scale, sigma):
    """The masked GEMM form of log κ lost 1e-8 in log p(x_obs) with a 1e4-steep unit or
    σ = 1e-4 (its terms ~1e9 for a result of O(1)); the pairs are now recomputed without
    cancellation. Reference: 50-digit mpmath on the intervals (the line quadrature agrees on
    log p and the mean to 1e-9 but takes a minute here, and its raw second moments lose 2e-7
    of the std)."""
    base = Decoder.random([1, 6, 3], activation="relu", seed=1)
    W = [w.copy() for w in base.weights]
    W[0][2] *= scale
    dec = Decoder(W, list(base.biases), base.activations)
    model = ExactDGN.from_decoder(dec, sigma)
    X = model.sample(3, random_state=1)
    X = np.concatenate([X, X[:1] + 100 * sigma])
    X[:, 1] = np.nan
    got, err = model.score_samples(X, return_error=True)
    filled, std = model.impute(X, return_std=True)
    for i in range(len(X)):
        lp, m, s = oracle_conditional_outputs_1d_mp(dec, X[i], sigma)
        assert abs(got[i] - lp) <= max(1e-11, 1e-13 * abs(lp), err[i]), (i, got[i] - lp)
        assert abs(filled[i, 1] - m[0]) <= 1e-10 * max(1.0, abs(m[0])), filled[i, 1] - m
        assert abs(std[i, 1] - s[0]) <= 1e-10 * s[0], std[i, 1] - s


def _far_kink_decoder(K: float) -> Decoder:
    """[1, 2, 3] abs decoder: one kink at z = 0.299, the other at z = -K."""
    W1 = np.array([[0.9312], [-0.00737]])
    W2 = np.array([[0.7312, 0.5123], [0.3713, -0.2412], [-0.3121, 1.1213]])
    return Decoder(
        [W1, W2], [np.array([-0.2786, -0.00737 * K]), np.array([0.1, -0.2, 0.3])], ["abs"]
    )


@pytest.mark.parametrize(("K", "sigma"), [(144.0, 0.1), (1e3, 0.1), (1e4, 0.01)])
def test_d1_missing_far_kink_is_within_its_estimate(K, sigma):
    """The d = 1 chain form wrote the region holding z = 0 from its far kink (ζ = -K): the
    terms of -2 log κ were ~K² and cancelled to O(1). Off by 2.5e-10 (K = 144), 1e-8
    (K = 1e3) and 6.2e-5 (K = 1e4) against estimates of 3e-13 to 1.7e-7; every region is now
    written from its end nearest 0. Reference: 50-digit mpmath on the intervals."""
    dec = _far_kink_decoder(K)
    model = ExactDGN.from_decoder(dec, sigma)
    X = np.array([[0.6, np.nan, 0.7], [np.nan, -0.3, 0.2], [0.5, 0.1, np.nan]])
    got, err = model.score_samples(X, return_error=True)
    for i in range(len(X)):
        lp, _, _ = oracle_conditional_outputs_1d_mp(dec, X[i], sigma)
        assert abs(got[i] - lp) <= err[i] + 1e-15 * abs(lp), (i, got[i] - lp, err[i])


@pytest.mark.parametrize(
    "kinks", [(-2.0, 0.0, 1.5), (0.5, 1.0, 3.0), (-3.0, -1.0, -0.25), (-1e4, 0.3, 7.0)]
)
def test_d1_chain_references_the_end_nearest_zero(kinks):
    """Each region is written from its point nearest z = 0 (a kink at 0 shared by its two
    regions, all kinks on one side, a far one), and the chain's k², μ and log κ equal the
    direct masked GEMM's (intercepts at z = 0)."""
    from exactdgn.inference._geometry import LOG_2PI
    from exactdgn.inference._missing import (
        _chain_1d,
        _kappa_1d_chain,
        _kappa_1d_direct,
        _mask_weights_1d,
        _observed_part,
    )

    rng = np.random.default_rng(7)
    k = np.asarray(kinks)
    W1 = rng.uniform(0.5, 1.5, (len(k), 1)) * rng.choice([-1.0, 1.0], (len(k), 1))
    dec = Decoder(
        [W1, rng.standard_normal((5, len(k)))],
        [-W1[:, 0] * k, rng.standard_normal(5)],
        [("leaky_relu", 0.2)],
    )
    model = ExactDGN.from_decoder(dec, 0.2)
    geom = model.geometry_
    lo, hi, order, breaks = geom.interval
    np.testing.assert_allclose(breaks, np.sort(k), rtol=1e-15)
    ch = _chain_1d(geom)
    near = np.where(np.abs(lo[order]) < np.abs(hi[order]), lo[order], hi[order])
    near[(lo[order] <= 0) & (hi[order] >= 0)] = 0.0
    assert np.array_equal(ch["zr"], near)
    X = model.sample(20, random_state=3)
    Xn = np.where(rng.random(X.shape) < 0.4, np.nan, X)
    Xn[:, 0] = X[:, 0]
    obs = ~np.isnan(Xn)
    m, x0, xq = _observed_part(Xn, obs, geom)
    k1, t1, l1 = _kappa_1d_direct(
        geom, _mask_weights_1d(geom), m, x0, xq + m @ (LOG_2PI - np.log(geom.inv_var))
    )
    k2, t2, l2 = _kappa_1d_chain(geom, ch, m, x0, xq)
    np.testing.assert_allclose(k2, k1[:, order], rtol=1e-14)
    np.testing.assert_allclose(ch["zr"] + t2 / k2, (t1 / k1)[:, order], rtol=1e-12, atol=1e-12)
    # both round by ~1e-16 of their terms: ||x'||²_Λ + Σ_obs λ b'² (the outputs at z = 0 are
    # ~1e4 with the far kink) + k² ζ² (the chain's terms beyond it)
    R = len(order)
    gam = (m @ _mask_weights_1d(geom)[:, 2 * R :])[:, order]
    scale = 1.0 + xq[:, None] + gam + k2 * ch["zr"] ** 2
    assert np.all(np.abs(l2 - l1[:, order]) <= 1e-14 * scale)
    got = model.score_samples(Xn)
    for i in range(5):
        o = obs[i]
        ref = ExactDGN.from_decoder(_rows(dec, o), 0.2).score_samples(X[i : i + 1, o])[0]
        assert abs(got[i] - ref) <= 1e-12 * max(1.0, abs(ref)), (i, got[i], ref)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_rows_beyond_1e9_sigma_match_the_rebuilt_model(d):
    """Rows 2e9 and 1e13 noise scales out (|log p| ~ 1e18-1e26 nats) with a missing value: the
    pair tests were ``log κ > lower - thr``, which at |log p| > ~2e17 rounds to ``log κ >
    lower``, so the best pair failed its own test. d = 1 scored -2.0e18 for -1.17e18 and put
    the posterior mean at 0.03 for -5.7e7; d = 2 imputed the decoder's centre. The complete
    rows were fixed the same way before (tests in differences)."""
    dec = Decoder.random([d, 6, 4], activation="leaky_relu", seed=3)
    model = ExactDGN.from_decoder(dec, 0.1)
    X = model.sample(3, random_state=1)
    X[0, 0], X[1, 0] = 2e8, 1e12
    Xn = X.copy()
    Xn[:, 2] = np.nan
    if d == 3:  # (the posterior of rows that far: NaN in d = 3, beyond its slices' reach)
        got = model.score_samples(Xn)
        for i in range(len(X)):
            o = ~np.isnan(Xn[i])
            ref = ExactDGN.from_decoder(_rows(dec, o), 0.1).score_samples(X[i : i + 1, o])[0]
            assert abs(got[i] - ref) <= 1e-10 * max(1.0, abs(ref)), (i, got[i], ref)
    else:  # the region weights of rows that far are rounded (|log p| ~1e18): it warns
        with pytest.warns(RuntimeWarning, match="weights known only to"):
            got, post = _check_rebuilt(model, dec, X, Xn, moments=True)
        with pytest.warns(RuntimeWarning, match="weights known only to"):
            filled = model.impute(Xn)  # the missing output at the posterior's far location
        np.testing.assert_allclose(filled[:2, 2], dec(post.mean[:2])[:, 2], rtol=1e-6)
    assert got[0] < -1e17 and got[1] < -1e24


@pytest.mark.parametrize("d", [1, 2])
def test_a_sweep_of_far_rows_matches_the_rebuilt_model(d):
    """Rows 1e2 to 1e20 out along one observed axis, one value missing: each log p(x_obs) is
    the rebuilt model's. d = 1 gave NaN from 3.8e15 (16 of 400 values): the tail test's two
    ~1e32-nat terms round by more than the pruning margin, and the seed pair that held all the
    mass (``r2``, whose exact terms set the lower bound) was dropped."""
    dec = Decoder.random([d, 6, 3], seed=0)
    model = ExactDGN.from_decoder(dec, 0.1)
    v = np.logspace(2, 20, 400)
    X = np.stack([v, np.zeros_like(v), np.zeros_like(v)], axis=1)
    Xn = X.copy()
    Xn[:, 1] = np.nan
    got = model.score_samples(Xn)
    ref = ExactDGN.from_decoder(_rows(dec, [0, 2]), 0.1).score_samples(X[:, [0, 2]])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_d2_impute_of_rows_whose_blocks_have_no_candidate_pairs():
    """d = 2, σ = 1e-3: a block of rows whose seeds hold every visible pair has no candidate
    pairs, and the moments' merge step was never called (``IndexError`` in ``impute``, the
    missing-data E-step and ``ExactDGNImputer``). The rows' values do not depend on the
    batch they come in."""
    dec = Decoder.random([2, 6, 6, 4], activation="leaky_relu", seed=3)
    model = ExactDGN.from_decoder(dec, 0.001)
    X = model.sample(40, random_state=10)
    X[:, 1] = np.nan
    few, few_sd = model.impute(X[:2], return_std=True)
    many, many_sd = model.impute(X, return_std=True)
    np.testing.assert_allclose(few, many[:2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(few_sd, many_sd[:2], rtol=1e-10, atol=1e-14)
    assert np.all(few_sd[:, 1] > 0) and np.all(few_sd[:, [0, 2, 3]] == 0)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("sigma", [1e-9, 1e-12])
def test_tiny_noise_log_p_is_the_sum_over_pre_images(d, sigma):
    """σ -> 0 with as many observed outputs as latent dimensions: log p(x_obs) is the zero-noise
    limit, the sum over the pre-images of x_obs (``tests.oracles.preimages``). The pruning
    tests used the formed log κ (terms of 1/σ² ~ 1e24, rounded by 1e8 nats): the pair holding
    the mass was pruned, and log p(x_obs) was up to 675 nats off (d = 2, σ = 1e-12; 470 at
    1e-9); complete rows (d = 3, σ = 1e-12) were 6 nats off; d = 3 missing raised
    LinAlgError from σ = 1e-8 (the formed P_r(n) was not positive definite)."""
    from tests.oracles.preimages import zero_noise_log_px

    worst = 0.0
    for seed in range(3):
        dec = Decoder.random([d, 6, d + 1], seed=seed)
        X = ExactDGN.from_decoder(dec, sigma).sample(3, random_state=seed)
        gone = seed % (d + 1)
        o = np.arange(d + 1) != gone
        Xn = X.copy()
        Xn[:, gone] = np.nan
        ref = np.array([zero_noise_log_px(_rows(dec, o), x) for x in X[:, o]])
        missing = ExactDGN.from_decoder(dec, sigma).score_samples(Xn)
        complete = ExactDGN.from_decoder(_rows(dec, o), sigma).score_samples(X[:, o])
        worst = max(worst, np.abs(missing - ref).max(), np.abs(complete - ref).max())
    assert worst < 1e-2 if (d, sigma) == (3, 1e-12) else worst < 1e-5, worst


def test_d1_missing_error_covers_the_rounding_of_the_kinks():
    """Points at a kink's image under a narrow posterior (weights x1000, sd ~6e-8), one value
    missing: the kink's own rounding moves the interval's whitened end by ~1e-8. The missing
    path's estimate did not carry it (the complete path's does): the value was up to 5e4
    times its estimate off the model rebuilt on the observed coordinates (whose estimate the
    quadrature oracle checks, tests/model/test_likelihood.py)."""
    for seed in range(4):
        base = Decoder.random([1, 6, 3], seed=seed)
        dec = Decoder(
            [w * 1000.0 for w in base.weights], [b * 1000.0 for b in base.biases], base.activations
        )
        X = dec((-dec.biases[0] / dec.weights[0][:, 0])[:, None])  # the kinks' images
        Xn = X.copy()
        Xn[:, 2] = np.nan
        lp, err = ExactDGN.from_decoder(dec, 0.1).score_samples(Xn, return_error=True)
        ref = ExactDGN.from_decoder(_rows(dec, [0, 1]), 0.1).score_samples(X[:, :2])
        assert np.all(np.abs(lp - ref) <= err), (seed, np.abs(lp - ref) / err)


def test_d3_refined_pairs_slice_only_thin_polyhedra_that_can_show(monkeypatch):
    """The missing path's refinement of pairs whose rounding is large (a sharp observed output,
    σ = 1e-4) integrated their masses without the pairs' weights: every thin polyhedron was
    sliced however little it counted (93 here, 53,216 cross-sections, 135 s for one row). With
    the weights (as the first pass and the complete path) only the one that can show is, and
    log p(x_obs) agrees with the model rebuilt on the observed outputs within the estimates."""
    import exactdgn.gaussian._polytope as polytope

    sliced = []
    original = polytope.thin_polyhedra

    def counted(nu, *args, **kw):
        sliced.append(len(nu))
        return original(nu, *args, **kw)

    monkeypatch.setattr(polytope, "thin_polyhedra", counted)
    dec = Decoder.random([3, 6, 5, 6], activation="abs", seed=3)
    noise = np.array([10, 10, 1e-4, 1.0, 1.0, 1.0])
    obs = np.array([True, True, True, False, False, False])
    m = ExactDGN.from_decoder(dec, noise_std=noise)
    x = m.sample(2, random_state=5)[0]
    x[obs] += 1e4 * noise[obs]
    x[~obs] = np.nan
    lp, err = m.score_samples(x[None], return_error=True)
    assert sum(sliced) <= 3, sliced
    rows = Decoder(
        [*dec.weights[:-1], dec.weights[-1][obs]], [*dec.biases[:-1], dec.biases[-1][obs]],
        dec.activations,
    )  # fmt: skip
    lp2, err2 = ExactDGN.from_decoder(rows, noise_std=noise[obs]).score_samples(
        x[obs][None], return_error=True
    )
    assert abs(lp[0] - lp2[0]) <= err[0] + err2[0], (lp[0] - lp2[0], err[0], err2[0])


def test_polygon_mp_oracle_matches_closed_forms():
    """The mpmath polygon oracle against products of 1-D normal masses: rotated boxes at the
    origin, 5 and 1e4 sds out (where a strip rule not aligned with the closest point's direction
    was 0.08 nats off), and a half-plane."""
    import mpmath as mp

    from tests.oracles.polygons_mp import log_mass_polygon_mp

    def box(lo0, hi0, lo1, hi1, angle):
        # {v : lo <= v <= hi} with u = Q v, as G u + h >= 0
        c, s = np.cos(angle), np.sin(angle)
        e0, e1 = np.array([c, s]), np.array([-s, c])  # Q's columns: v_i = e_i . u
        return [e0, -e0, e1, -e1], [-lo0, hi0, -lo1, hi1]

    def ref(lo0, hi0, lo1, hi1):
        m = lambda a, b: mp.ncdf(-a) - mp.ncdf(-b) if a > 0 else mp.ncdf(b) - mp.ncdf(a)  # noqa: E731
        with mp.workdps(40):
            return float(mp.log(m(mp.mpf(lo0), mp.mpf(hi0)) * m(mp.mpf(lo1), mp.mpf(hi1))))

    for lims in [(-1.0, 0.5, -2.0, 3.0), (5.0, 5.5, -0.3, 0.2), (1e4, 1e4 + 1e-3, -1.0, 2.0)]:
        for angle in (0.0, 0.4, 2.9):
            G, h = box(*lims, angle)
            lm, rel = log_mass_polygon_mp(G, h)
            got = float(lm)
            assert rel < 1e-15
            want = ref(*lims)
            assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (lims, angle, got, want)
    half, _ = log_mass_polygon_mp([[0.6, 0.8]], [-7.0])
    assert abs(float(half) - float(mp.log(mp.ncdf(-7)))) < 1e-12


@pytest.mark.parametrize(
    ("activation", "seed", "sigma", "keep"),
    [
        ("relu", 1, 1e-4, [3, 7]),  # the 1e4σ row, complete and with a value missing
        pytest.param("relu", 1, 1e-4, slice(None), marks=pytest.mark.slow),
        pytest.param("abs", 0, 1e-3, slice(None), marks=pytest.mark.slow),
        pytest.param("leaky_relu", 2, 1e-4, slice(None), marks=pytest.mark.slow),
    ],
)
def test_d2_small_noise_matches_the_mpmath_polygon_oracle(activation, seed, sigma, keep):
    """d = 2 under small noise (posteriors ~σ wide, where the quadrature oracle takes minutes a
    point): model draws, rows 100σ and 1e4σ out (|log p| ~ 1e7), complete and with one value
    missing, against the region-by-region mpmath oracle (``tests.oracles.polygons_mp``: LP
    regions, 30-digit Gaussians, strip integrals). A session's audit reference had put a
    missing-value row 3e-3 nats off here; this oracle and a 1,601² grid over z both agree with
    the library to within its estimate."""
    from tests.oracles.enumerate import enumerate_regions
    from tests.oracles.polygons_mp import log_px_2d_mp

    dec = Decoder.random([2, 8, 8, 3], activation=activation, seed=seed)
    model = ExactDGN.from_decoder(dec, sigma)
    X = model.sample(2, random_state=seed)
    u = np.random.default_rng(seed).standard_normal(3)
    u /= np.linalg.norm(u)
    X = np.vstack([X, X[0] + 100 * sigma * u, X[0] + 1e4 * sigma * u])
    Xn = X.copy()
    Xn[np.arange(4), [0, 1, 2, 2]] = np.nan
    rows = np.vstack([X, Xn])[keep]
    got, err = model.score_samples(rows, return_error=True)
    regions = enumerate_regions(dec)
    ref = np.array([log_px_2d_mp(dec, x, sigma, oracle=regions) for x in rows])
    assert ref.min() < -1e6  # the 1e4σ row is far out
    off = np.abs(got - ref)
    assert np.all(off <= err + 1e-12 * (1 + np.abs(ref))), (off, err)
