"""The exact posterior p(z | x): moments vs quadrature, exact samples vs the density, MAP."""

import warnings

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from exactdgn import Decoder, ExactDGN
from exactdgn.inference import marginal_pairs, region_geometry
from tests.oracles.likelihood import (
    oracle_logpx_2d,
    oracle_posterior_moments_1d,
    oracle_posterior_moments_2d,
)


def _model(sizes, sigma, seed, act="leaky_relu"):
    dec = Decoder.random(sizes, activation=act, negative_slope=0.1, seed=seed)
    return ExactDGN.from_decoder(dec, sigma)


def test_shapes_and_region_probs():
    m = _model([2, 6, 6, 3], 0.2, 0)
    X = m.sample(7, random_state=0)
    post = m.posterior(X)
    assert post.batch_shape == (7,) and post.event_shape == (2,)
    P = post.region_probs
    assert P.shape == (7, len(m.partition_))
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-12)
    assert post.mean.shape == (7, 2) and post.covariance_matrix.shape == (7, 2, 2)
    assert post.sample((4, 3), random_state=0).shape == (4, 3, 7, 2)
    assert post.log_prob(np.zeros((5, 7, 2))).shape == (5, 7)
    with pytest.raises(ValueError, match="shape"):
        post.log_prob(np.zeros((3, 3)))


@pytest.mark.parametrize(("sizes", "act"), [([1, 6, 3], "relu"), ([1, 5, 5, 2], "abs")])
def test_d1_moments_match_quadrature(sizes, act):
    m = _model(sizes, 0.15, 1, act)
    X = m.sample(3, random_state=1)
    X[2] += 3.0  # off the decoder's range
    post = m.posterior(X)
    for i in range(3):
        mean, var = oracle_posterior_moments_1d(m.decoder_, X[i], 0.15)
        assert post.mean[i, 0] == pytest.approx(mean[0], abs=1e-9)
        assert post.covariance_matrix[i, 0, 0] == pytest.approx(var[0, 0], rel=1e-8, abs=1e-11)
        assert post.stddev[i, 0] == pytest.approx(np.sqrt(var[0, 0]), rel=1e-8, abs=1e-11)


def test_d1_log_prob_normalised_and_samples_exact():
    m = _model([1, 6, 6, 2], 0.1, 2)
    X = m.sample(2, random_state=3)
    post = m.posterior(X)
    for i in range(2):
        lo, hi = post.mean[i, 0] - 12, post.mean[i, 0] + 12

        def dens(z, i=i):
            zz = np.zeros((1, 2, 1))
            zz[0, :, 0] = z
            return np.exp(post.log_prob(zz)[0, i])

        tot = integrate.quad(dens, lo, hi, limit=500, points=np.linspace(lo, hi, 60))[0]
        assert tot == pytest.approx(1.0, abs=1e-7)
    S = post.sample(4000, random_state=0)  # (4000, 2, 1)
    for i in range(2):
        grid = np.linspace(post.mean[i, 0] - 8, post.mean[i, 0] + 8, 20001)
        zz = np.zeros((len(grid), 2, 1))
        zz[:, :, 0] = grid[:, None]
        pdf = np.exp(post.log_prob(zz)[:, i])
        cdf = np.concatenate([[0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
        cdf /= cdf[-1]
        res = stats.kstest(S[:, i, 0], lambda z, g=grid, c=cdf: np.interp(z, g, c))
        assert res.pvalue > 1e-3


def test_d2_samples_match_density_on_projections():
    m = _model([2, 5, 5, 3], 0.2, 4)
    X = m.sample(1, random_state=5)
    post = m.posterior(X)
    S = post.sample(3000, random_state=1)[:, 0]
    # reference: resampling of the exact density on a fine grid (independent of the sampler)
    c = post.mean[0]
    g = np.linspace(-6, 6, 481)
    G = np.stack(np.meshgrid(g + c[0], g + c[1], indexing="ij"), -1).reshape(-1, 2)
    w = np.exp(post.log_prob(G[:, None, :])[:, 0])
    rng = np.random.default_rng(0)
    idx = rng.choice(len(G), size=20000, p=w / w.sum())
    ref = G[idx] + rng.uniform(-0.5, 0.5, (20000, 2)) * (g[1] - g[0])
    for v in ([1, 0], [0, 1], [1, 1], [1, -2]):
        v = np.asarray(v, float)
        assert stats.ks_2samp(S @ v, ref @ v).pvalue > 1e-3


def test_d2_moments_match_samples_and_far_point():
    m = _model([2, 6, 4], 0.1, 6)
    X = m.sample(2, random_state=7)
    X[1] += 50 * 0.1  # 50 sigma off
    post = m.posterior(X)
    S = post.sample(20000, random_state=2)
    for i in range(2):
        se = S[:, i].std(axis=0) / np.sqrt(len(S))
        assert np.all(np.abs(S[:, i].mean(axis=0) - post.mean[i]) < 5 * se)
        np.testing.assert_allclose(
            np.cov(S[:, i].T), post.covariance_matrix[i], rtol=0.1, atol=1e-4
        )


@pytest.mark.slow
def test_d2_moments_match_quadrature_oracle():
    m = _model([2, 5, 5, 3], 0.2, 8)
    x = m.sample(1, random_state=9)[0]
    post = m.posterior(x[None])
    mean, cov = oracle_posterior_moments_2d(m.decoder_, x, 0.2)
    np.testing.assert_allclose(post.mean[0], mean, atol=1e-7)
    np.testing.assert_allclose(post.covariance_matrix[0], cov, atol=1e-7)


@pytest.mark.parametrize("sizes", [[1, 6, 3], [2, 6, 6, 3]])
def test_mode_is_the_global_maximiser(sizes):
    m = _model(sizes, 0.1, 10)
    X = m.sample(3, random_state=11)
    zmap = m.posterior(X).mode
    d = sizes[0]
    rng = np.random.default_rng(0)
    for i in range(3):

        def negf(z, i=i):
            return -m.log_prob_joint(X[i : i + 1], z[None])[0]

        best = min(
            (
                optimize.minimize(
                    negf,
                    z0,
                    method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
                )
                for z0 in rng.standard_normal((30, d)) * 2
            ),
            key=lambda r: r.fun,
        )
        assert negf(zmap[i]) <= best.fun + 1e-9


def test_d3_posterior_sampling_by_rejection():
    m = _model([3, 4, 3], 0.3, 12)
    X = m.sample(2, random_state=13)
    post = m.posterior(X)
    S = post.sample(2000, random_state=0)
    assert S.shape == (2000, 2, 3) and np.all(np.isfinite(S))
    se = S.std(axis=0) / np.sqrt(len(S))
    assert np.all(np.abs(S.mean(axis=0) - post.mean) < 5 * se + 1e-3)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        ([-1.0, -0.5, 0.2], [1.0, 2.0, 1.5]),  # around the mean: rejection
        ([6.0, 5.0, -1.0], [np.inf, np.inf, 1.0]),  # a far corner: tilted rejection
        ([9.0, 8.0, 7.0], [np.inf, 8.3, np.inf]),  # farther, one side thin: the sections too
        ([0.1, 0.2, -0.3], [0.101, 0.2015, -0.2992]),  # a tiny box: the sections
    ],
)
def test_d3_truncated_draws_are_exact_on_rotated_boxes(lo, hi):
    """Draws of N(0, I_3) on a rotated box ``R [lo, hi]``: rotated back, their coordinates are
    independent truncated normals (KS against scipy's ``truncnorm``, a formula the sampler does
    not use; means and covariance against the 50-digit mpmath box oracle). Before the tilt and
    the sections, the far and tiny boxes raised 'rejection sampling did not finish'."""
    from exactdgn.inference import sample_truncated_standard
    from tests.oracles.boxes import rotated_box, rotation

    R = rotation(np.random.default_rng(3), 3)  # rotated_box's rotation for this seed
    n, c, _, ref_mean, ref_cov = rotated_box(lo, hi, np.random.default_rng(3))
    S = 2000
    u = sample_truncated_standard(
        np.broadcast_to(n, (S, *n.shape)), np.broadcast_to(c, (S, len(c))), np.random.default_rng(0)
    )
    assert u.shape == (S, 3) and np.all(np.isfinite(u))
    assert np.all(np.einsum("fk,sk->sf", n, u) <= c + 1e-9 * (1 + np.abs(c)))
    y = u @ R  # the box's own coordinates
    for k in range(3):
        assert stats.kstest(y[:, k], stats.truncnorm(lo[k], hi[k]).cdf).pvalue > 1e-4
    W = np.linalg.inv(np.linalg.cholesky(ref_cov))
    assert np.all(np.abs(W @ (u.mean(axis=0) - ref_mean)) < 5 / np.sqrt(S))
    assert np.abs(W @ np.cov(u.T) @ W.T - np.eye(3)).max() < 0.15


def test_d3_posterior_draws_of_points_off_the_data():
    """A [3,4,5] posterior of a point 3 noise sd off the data in every coordinate (and 1e3):
    its regions have tiny mass under their own Gaussians, so 'rejection sampling did not
    finish' (RuntimeError) before; the draws' mean and covariance now match the exact
    posterior moments (the truncated-moment kernels are checked against the 3-D oracles in
    tests/gaussian; the draws' own exactness on boxes just above)."""
    dec = Decoder.random([3, 4, 5], seed=0)
    m = ExactDGN.from_decoder(dec, 0.3)
    X = m.sample(2, random_state=1) + np.array([[3 * 0.3], [1e3 * 0.3]])
    post = m.posterior(X)
    S = post.sample(1500, random_state=0)
    assert np.all(np.isfinite(S))
    for i in range(2):
        W = np.linalg.inv(np.linalg.cholesky(post.covariance_matrix[i]))
        assert np.all(np.abs(W @ (S[:, i].mean(axis=0) - post.mean[i])) < 5 / np.sqrt(len(S)))
        assert np.abs(W @ np.cov(S[:, i].T) @ W.T - np.eye(3)).max() < 0.2


def test_log_prob_broadcasts_like_torch_distributions():
    """``value`` ends in the event shape and its batch dims broadcast with ``(N,)``: a single
    ``(d,)`` point is scored under every posterior, and with ``N = 1`` a ``(S, d)`` array is S
    samples. Both crashed deep in numpy; a non-broadcastable batch is a clear error."""
    m = _model([2, 5, 3], 0.3, 0)
    X = m.sample(3, random_state=0)
    post = m.posterior(X)
    z = np.array([0.3, -0.2])
    full = post.log_prob(np.broadcast_to(z, (3, 2)))
    np.testing.assert_array_equal(post.log_prob(z), full)
    assert post.log_prob(z).shape == (3,)
    assert post.log_prob(np.zeros((4, 1, 2))).shape == (4, 3)
    one = m.posterior(X[:1])
    S = one.sample(5, random_state=0)[:, 0]  # (5, 2)
    np.testing.assert_allclose(one.log_prob(S), one.log_prob(S[:, None])[:, 0], rtol=1e-15)
    assert one.log_prob(S).shape == (5,)
    for bad in [np.zeros((2, 2)), np.zeros((3, 3)), np.zeros(()), np.zeros((4, 2, 2))]:
        with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 3, 2\)"):
            post.log_prob(bad)


def test_sample_shape_validation():
    m = _model([1, 4, 2], 0.3, 0)
    post = m.posterior(m.sample(3, random_state=0))
    a = post.sample(np.int64(4), random_state=1)
    np.testing.assert_array_equal(a, post.sample(4, random_state=1))
    assert post.sample((np.int64(2), 3), random_state=1).shape == (2, 3, 3, 1)
    assert post.sample(0).shape == (0, 3, 1)
    for bad in [2.5, "3", (2.0,), None]:
        with pytest.raises(TypeError, match="sample_shape must be an int or a tuple of ints"):
            post.sample(bad)
    for bad in [-1, (2, -3)]:
        with pytest.raises(ValueError, match="sample_shape must not be negative"):
            post.sample(bad)


def _sliver_model(sigma=0.01063607419446113):
    """Two hidden units whose lines nearly coincide (rows and biases equal to ~1e-10): the
    region between them is a wedge of opening ~1e-10 (``tests/partition/test_enum2d.py``'s
    ``_sliver_decoder``)."""
    W1 = np.array(
        [
            [0.9960542803138879, 0.08874610227149571],
            [0.9960542802449419, 0.0887461024032053],
            [0.5822058485731421, -1.7518005652801107],
        ]
    )
    c1 = np.array([-0.7841272406813639, -0.7841272407193117, -0.1779139465826313])
    W2 = np.array(
        [
            [2.004340265051685, -0.8995594817975393, 3.356832166851622],
            [2.2837912815394867, -4.730626831460926, -1.4173024693013418],
        ]
    )
    dec = Decoder([W1, W2], [c1, np.zeros(2)], ["relu"])
    return ExactDGN.from_decoder(dec, sigma)


def test_zero_weight_sliver_pairs_leave_moments_and_mode_finite():
    """A pair of zero weight (a sliver region far from the posterior: units 0 and 1 nearly
    coincide) whose truncated moments are NaN (the polygon kernel finds the sliver of measure
    zero) made the whole row's mean and covariance NaN (0 * NaN), and its MAP score poisoned
    ``mode`` (it returned a point 700 away from the posterior)."""
    W1 = [
        [0.9851194051011261, 0.17187134052308867],
        [0.9851193904622012, 0.17187133806715738],
        [1.3978085699158789, 0.4211565307119722],
    ]
    c1 = [0.9961949536610561, 0.9961949293034321, -0.8271046926141227]
    W2 = [
        [-1.2490720474126946, -2.7181719040458274, 5.893658281652916],
        [-0.8506367223116702, 3.0497090018386253, 0.9666157928024635],
    ]
    dec = Decoder([W1, W2], [c1, np.zeros(2)], ["relu"])
    m = ExactDGN.from_decoder(dec, 0.401111947868026)
    x = np.array([991.02455310057, -157.83417899203744])
    post = m.posterior(x[None])
    assert np.exp(post.pairs.log_weight).min() == 0.0  # the case: a pair of zero weight
    mean, cov = oracle_posterior_moments_2d(m.decoder_, x, m.noise_std_[0])
    np.testing.assert_allclose(post.mean[0], mean, rtol=1e-8)
    np.testing.assert_allclose(post.covariance_matrix[0], cov, rtol=1e-6, atol=1e-12)
    zmap = post.mode[0]
    # the MAP beats every point of a fine grid over the posterior's +-6 sd box
    sd = np.sqrt(np.diag(cov))
    g = [np.linspace(mean[k] - 6 * sd[k], mean[k] + 6 * sd[k], 301) for k in range(2)]
    G = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)
    lp = post.log_prob(G[:, None, :])[:, 0]
    assert post.log_prob(zmap)[0] >= lp.max() - 1e-9
    np.testing.assert_allclose(zmap, G[lp.argmax()], atol=2 * 12 * sd.max() / 300)


def test_sliver_region_mass_matches_the_quadrature_oracle():
    """Through the sliver region of ``_sliver_model`` (its H-representation reached 0.6 past
    the region's true tip into another pattern) ``log p(x)`` of a far point was 1297 nats too
    large."""
    m = _sliver_model(0.3)
    X = np.array([[-36.61072464496014, 9.296576053412904]])
    np.testing.assert_allclose(
        m.score_samples(X), oracle_logpx_2d(m.decoder_, X, 0.3), rtol=1e-11, atol=0
    )


def test_d2_moments_of_a_point_1e8_noise_scales_out():
    """A point ~1e8 σ out (log p ~ -7e15): a pair's small polygon ~1e8 whitened units away was
    integrated per pair to mass 0 (its inclusion-exclusion pieces, rounded to ~1 nat, cancel)
    while its weight, from the tabulated polygon, was e^-7: the row's posterior mean was NaN.
    Now the moments come from the table as the weights do (the same values as the E-step's
    moments); past float64's range of masses (1e12 σ out) the rows are named in a warning."""
    from exactdgn.inference import marginal_pairs, region_geometry

    model = ExactDGN.from_decoder(Decoder.random([2, 6, 3], seed=0), 0.1)
    X = model.sample(3, random_state=0) + 1e7 * np.array([1.0, -0.5, 0.3])
    post = model.posterior(X)
    with pytest.warns(RuntimeWarning, match=r"weights known only to ~\d"):  # |log p| ~ 7e15
        mean, cov = post.mean, post.covariance_matrix
    assert np.isfinite(mean).all() and np.isfinite(cov).all()
    st = marginal_pairs(region_geometry(model.partition_, model.noise_std_), X, need_moments=True)
    w = np.exp(st.log_weight)
    ref = np.stack([np.bincount(st.point, w * st.mean[:, k], minlength=3) for k in range(2)], 1)
    # the two integrators of one pair agree to float64's floor there (whitened offsets ~1e7,
    # ulp 2e-9; the per-pair path's finite moments and the table's differ by ~1e-9)
    np.testing.assert_allclose(mean, ref, rtol=1e-6, atol=0)
    far = model.sample(3, random_state=0) + 1e11 * np.array([1.0, -0.5, 0.3])
    with pytest.warns(RuntimeWarning, match=r"posterior moments of \d+ rows"):
        assert np.isnan(model.posterior(far).mean).any()


def test_far_rows_posterior_warns_of_rounded_weights_and_d3_beyond_reach_is_nan():
    """A row 1e7 noise scales out (|log p| ~ 2e13, its log p(x) error bound ~3 nats): the
    regions' weights are rounded to that, and its moments came without a word; now they warn.
    In d = 3, a row 1e14 noise scales out ran the far slices for hours (one row alone) or gave
    a mean 0.3 of its size off (1e16 out); past 1e12 whitened the moments are NaN, named in a
    warning. Rows 1e4 noise scales out stay silent and finite."""
    dec = Decoder.random([3, 6, 4], activation="leaky_relu", seed=3)
    model = ExactDGN.from_decoder(dec, 0.1)
    X = model.sample(2, random_state=1)[:1]
    near = X.copy()
    near[0, 0] = 1e3
    assert np.isfinite(model.posterior(near).mean).all()  # (warnings are errors here)
    far = X.copy()
    far[0, 0] = 1e6
    with pytest.warns(RuntimeWarning, match=r"weights known only to ~\d"):
        assert np.isfinite(model.posterior(far).mean).all()
    far[0, 0] = 1e13
    with pytest.warns(RuntimeWarning) as caught:
        assert np.isnan(model.posterior(far).mean).all()
    said = " ".join(str(w.message) for w in caught)
    assert "weights known only to" in said and "are not finite" in said


@pytest.mark.parametrize("device", [None, "cpu"])
def test_d2_posterior_mean_of_a_1e4_sigma_row_matches_quadrature(device):
    """At 1e4σ (log p(x) ~ -2e8) ``log_px`` is rounded to ~3e-8 in absolute terms, and the
    weights ``exp(log_joint - log_px)`` of the row summed to 1 ± 2e-8: the posterior mean moved
    by that fraction of |E[z | x]| ~ 400, 5e-5 (numpy) and 9e-5 (torch) posterior standard
    deviations away from quadrature. The weights are renormalised on such rows."""
    dec = Decoder.random([2, 16, 16, 5], seed=0)
    m = ExactDGN.from_decoder(dec, 0.1, device=device)
    x = np.full(5, 1e3)  # 1e4 noise scales
    st = marginal_pairs(region_geometry(m.partition_, m.noise_std_), x[None], device=device)
    assert st.log_px[0] < -1e8
    assert abs(np.exp(np.asarray(st.log_weight)).sum() - 1.0) < 1e-13
    post = m.posterior(x[None])
    mean, cov = oracle_posterior_moments_2d(dec, x, 0.1)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(np.asarray(post.mean)[0] - mean) / sd < 1e-7)
    np.testing.assert_allclose(np.asarray(post.covariance_matrix)[0], cov, rtol=1e-6)


def test_posterior_and_model_keep_their_own_inputs():
    """The posterior held the caller's X and called back into the model: ``X[0] += 5`` after
    ``posterior(X)`` made ``log_prob`` integrate to e^-314; a model from ``from_decoder`` (and
    a ``partition``) held the caller's decoder, so editing it changed ``sample`` and
    ``log_prob_joint`` but not the regions. Now each keeps its own copies."""
    from exactdgn import partition

    dec = Decoder.random([1, 6, 3], seed=0)
    model = ExactDGN.from_decoder(dec, 0.3)
    part = partition(dec)
    X = model.sample(4, random_state=0)
    keep = X.copy()
    post = model.posterior(X)
    z = np.linspace(-8, 8, 4001)[:, None, None]
    before = post.log_prob(z)
    X[0] += 5.0
    dec.weights[-1] *= 2.0
    np.testing.assert_array_equal(post.log_prob(z), before)
    mass = integrate.trapezoid(np.exp(before), z[:, 0, 0], axis=0)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.score_samples(keep), model.score_samples(keep))
    np.testing.assert_allclose(model.decoder_.weights[-1], dec.weights[-1] / 2.0, rtol=0)
    assert part.decoder is not dec and np.all(part.decoder.weights[-1] != dec.weights[-1])


def test_log_normalizer_is_log_p_of_the_data_as_given_and_bad_z_is_located():
    """With a model's ``preprocessing_`` the normaliser was the standardized density (no
    Jacobian: -0.67 against score_samples' -3.74); ``log_prob`` of a NaN ``z`` named an index
    into an internal flattened array."""
    from exactdgn.datasets import Standardizer

    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.3)
    X = model.sample(20, random_state=0) * [3.0, 0.5, 10.0] + 1.0
    model.preprocessing_ = Standardizer().fit(X)
    post = model.posterior(X[:4])
    np.testing.assert_allclose(post.log_normalizer, model.score_samples(X[:4]), rtol=1e-14)
    z = np.linspace(-8, 8, 4001)[:, None, None]
    mass = integrate.trapezoid(post.prob(z), z[:, 0, 0], axis=0)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-4)  # log_prob is of z: unchanged (grid)
    bad = np.zeros((5, 4, 1))
    bad[2, 3] = np.nan
    with pytest.raises(
        ValueError,
        match=r"1 NaN or infinite values \(the first at index "
        r"\(2, 3, 0\) of z's shape \(5, 4, 1\)\)",
    ):
        post.log_prob(bad)


def test_output_moments_are_in_the_data_units_of_a_standardized_model(tmp_path):
    """``model.posterior(X).output_mean()`` of a model with a ``preprocessing_`` (a CLI run,
    or a saved model) was ``E[g]`` in standardized units (-0.11 where ``impute`` gave 4976.9),
    while the same object's ``log_normalizer`` and the model's ``impute`` are in the data's."""
    from exactdgn.datasets import Standardizer

    model = ExactDGN.from_decoder(Decoder.random([1, 6, 3], seed=0), 0.3)
    Xs = model.sample(200, random_state=0)
    X = Xs * np.array([10.0, 0.5, 3.0]) + np.array([5000.0, -2.0, 7.0])  # data units
    model.preprocessing_ = Standardizer().fit(X)
    model.save(tmp_path / "m.npz")
    loaded = ExactDGN.load(tmp_path / "m.npz")
    Xn = X[:6].copy()
    Xn[:, 0] = np.nan
    post = loaded.posterior(Xn)
    mean, var = post.output_moments()
    filled, std = loaded.impute(Xn, return_std=True)
    np.testing.assert_allclose(post.output_mean(), mean, rtol=1e-13)
    np.testing.assert_allclose(mean[:, 0], filled[:, 0], rtol=1e-12)
    scale = loaded.preprocessing_.scale_
    noise = np.broadcast_to(loaded.noise_std_, (3,)) * scale
    np.testing.assert_allclose(np.sqrt(var[:, 0] + noise[0] ** 2), std[:, 0], rtol=1e-10)
    np.testing.assert_allclose(post.log_normalizer, loaded.score_samples(Xn), rtol=1e-13)


def test_far_draws_at_a_region_corner_keep_their_spread_or_warn():
    """d = 2, a row 1e7 noise sds out whose posterior sits at a region's corner (whitened
    distance ~4e6): u1 was bisected to 1e-12 of |a| ~ rho, about 13 widths of the truncated
    density, and 2e5 draws had whitened variance 2.2 and mean 0.25 sd with no warning (the
    moments were exact). Now to float64's resolution there, with a warning where that is
    coarser than 5% of the width."""
    dec = Decoder.random([2, 6, 3], activation="relu", seed=0)
    model = ExactDGN.from_decoder(dec, 0.3)
    x = model.sample(1, random_state=0)[0] + 1e7 * 0.3 * np.array([0.6, -0.64, 0.48])
    post = model.posterior(x[None])
    with pytest.warns(RuntimeWarning, match="resolved only to"):
        S = post.sample(20000, random_state=2)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the weights' own warning, far out)
        mu, C = post.mean[0], post.covariance_matrix[0]
    W = (S - mu) @ np.linalg.inv(np.linalg.cholesky(C)).T
    assert np.all(np.abs(W.mean(0)) < 0.05), W.mean(0)  # was 0.25
    assert np.all(np.abs(np.diag(np.cov(W.T)) - 1.0) < 0.08), np.cov(W.T)  # was 2.2
