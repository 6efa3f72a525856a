"""VAE / IWAE baselines.

References that share no code with the estimators: for an affine decoder g(z) = W z + b,
log p(x) = log N(x; b, Σ + W Wᵀ) (scipy), and the posterior is N(S Wᵀ Σ⁻¹ (x - b), S) with
S = (I + Wᵀ Σ⁻¹ W)⁻¹, Σ = diag(σ²).
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from exactdgn import Decoder, ExactDGN
from exactdgn.baselines import IWAE, VAE, GaussianEncoder
from exactdgn.datasets import wave
from exactdgn.evaluation import vae_to_exact

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = dict(encoder_hidden=(16,), batch_size=64, lr=3e-3)


def _affine_data(W, b, sigma, n, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, W.shape[1]))
    return Z @ W.T + b + sigma * rng.standard_normal((n, W.shape[0]))


def _exact_affine(model, X):
    W, b = model.decoder_.weights[0], model.decoder_.biases[0]
    sig2 = np.broadcast_to(np.asarray(model.noise_std_) ** 2, (W.shape[0],))
    return multivariate_normal(b, np.diag(sig2) + W @ W.T).logpdf(X)


def _untimed(history):
    """History rows without their wall times (which differ between identical runs)."""
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in history]


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_training_improves_objective(cls):
    X = wave(300, noise=0.1, random_state=0)
    m = cls(
        [1, 16, 16, 2], max_epochs=40, validation_fraction=0.2, patience=40, random_state=0, **FAST
    )
    m.fit(X)
    h = m.history_
    assert m.n_iter_ == 40 and len(h) == 41 and [r["iter"] for r in h] == list(range(41))
    train = [r["loglik"] for r in h[1:]]
    val = [r["val_loglik"] for r in h]
    first, last = np.mean(train[:3]), np.mean(train[-5:])
    assert last > first + 2.0, (first, last)
    assert np.mean(val[-5:]) > val[0] + 2.0
    assert {r["method"] for r in h} == {cls._method}
    assert isinstance(m.decoder_, Decoder) and m.decoder_.layer_sizes == [1, 16, 16, 2]
    assert all(a.kind == "leaky_relu" for a in m.decoder_.activations)
    assert isinstance(m.noise_std_, float) and m.noise_std_ >= 1e-3
    assert isinstance(m.encoder_, GaussianEncoder)
    assert next(m.encoder_.parameters()).dtype == torch.float64
    mu, std = m.encode(X[:7])
    assert mu.shape == std.shape == (7, 1) and np.all(std > 0)


def test_reproducible_with_seed():
    X = wave(150, random_state=1)
    kw = dict(max_epochs=5, noise="diagonal", **FAST)
    a = IWAE([1, 8, 2], random_state=5, **kw).fit(X)
    b = IWAE([1, 8, 2], random_state=5, **kw).fit(X)
    c = IWAE([1, 8, 2], random_state=6, **kw).fit(X)
    assert _untimed(a.history_) == _untimed(b.history_)
    for Wa, Wb in zip(a.decoder_.weights, b.decoder_.weights, strict=True):
        np.testing.assert_array_equal(Wa, Wb)
    np.testing.assert_array_equal(a.noise_std_, b.noise_std_)
    assert a.noise_std_.shape == (2,)
    assert _untimed(a.history_) != _untimed(c.history_)
    np.testing.assert_array_equal(
        a.importance_log_likelihood(X[:4], 50, random_state=0),
        b.importance_log_likelihood(X[:4], 50, random_state=0),
    )
    # torch's global RNG is neither used nor disturbed
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    IWAE([1, 8, 2], random_state=5, **kw).fit(X)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_restores_best_epoch():
    X = wave(200, noise=0.05, random_state=2)
    kw = dict(validation_fraction=0.3, random_state=3, lr=2e-2, encoder_hidden=(8,), batch_size=32)
    m = VAE([1, 8, 2], max_epochs=400, patience=4, **kw).fit(X)
    h = [r["val_loglik"] for r in m.history_]
    assert m.stopped_early_ and m.n_iter_ < 400
    assert m.n_iter_ == m.best_iter_ + 4
    assert h[m.best_iter_] == max(h[1:])
    # a run cut at the best epoch follows the same trajectory: the restored parameters are its
    ref = VAE([1, 8, 2], max_epochs=m.best_iter_, patience=1000, **kw).fit(X)
    assert [r["val_loglik"] for r in ref.history_] == h[: m.best_iter_ + 1]
    for W1, W2 in zip(m.decoder_.weights, ref.decoder_.weights, strict=True):
        np.testing.assert_array_equal(W1, W2)
    assert m.noise_std_ == ref.noise_std_


@pytest.mark.parametrize(("seed", "min_delta"), [(1, 0.02), (1, 0.1), (3, 0.1)])
def test_min_delta_counts_patience_but_keeps_the_best_epoch(seed, min_delta):
    """With ``min_delta > 0`` an epoch that improves by less was not kept as the best (9 of
    12 runs kept an earlier epoch, up to 4 epochs and 0.012 nats behind the best one); it now
    is, and only the patience counter waits for an improvement of ``min_delta``."""
    X = wave(300, random_state=0)
    m = VAE([1, 8, 2], max_epochs=80, patience=4, min_delta=min_delta, lr=1e-2, random_state=seed)
    m.fit(X)
    h = [r["val_loglik"] for r in m.history_]
    assert m.stopped_early_
    assert h[m.best_iter_] == max(h[1:])
    # the counter: the stop comes `patience` epochs after the last gain of min_delta
    ref, last = -np.inf, 0
    for e, v in enumerate(h[1:], start=1):
        if v > ref + min_delta:
            ref, last = v, e
    assert m.n_iter_ == last + 4


def test_no_validation_split_and_float32():
    X = wave(100, random_state=0)
    m = VAE([1, 4, 2], max_epochs=3, validation_fraction=0.0, dtype="float32", **FAST)
    m.fit(X)
    assert [r["val_loglik"] for r in m.history_] == [None] * 4
    assert m.best_iter_ == m.n_iter_ == 3 and not m.stopped_early_
    assert m.decoder_.weights[0].dtype == np.float64
    assert next(m.encoder_.parameters()).dtype == torch.float64
    assert np.all(np.isfinite(m.elbo(X[:3], 5, random_state=0)))


def test_noise_floor_is_respected():
    # data with almost no noise around a line; a high floor must bind exactly
    W = np.array([[1.0], [2.0]])
    X = _affine_data(W, np.zeros(2), 1e-4, 200, 0)
    m = VAE(
        Decoder([W], [np.zeros(2)]),
        max_epochs=40,
        min_noise_std=0.3,
        init_noise_std=0.35,
        noise="diagonal",
        random_state=0,
        encoder_hidden=(16,),
        batch_size=32,
        lr=2e-2,
    )
    m.fit(X)
    assert np.all(m.noise_std_ >= 0.3)
    assert m.noise_std_.min() == pytest.approx(0.3, rel=1e-12)  # the clamp binds exactly


def test_progress_bar_and_x_val(capsys):
    X = wave(80, random_state=0)
    m = VAE([1, 4, 2], max_epochs=2, progress=True, random_state=0, **FAST)
    m.fit(X[:60], X_val=X[60:])
    assert len(m.history_) == 3 and all(r["val_loglik"] is not None for r in m.history_)
    assert "VAE" in capsys.readouterr().err


def test_input_validation():
    X = wave(50, random_state=0)
    with pytest.raises(ValueError, match="outputs 3 dimensions but X has 2"):
        VAE([1, 3]).fit(X)
    with pytest.raises(ValueError, match="layer sizes"):
        VAE("decoder").fit(X)
    with pytest.raises(ValueError, match="noise"):
        VAE([1, 2], noise="full").fit(X)
    with pytest.raises(ValueError, match="validation_fraction"):
        VAE([1, 2], validation_fraction=1.0).fit(X)
    with pytest.raises(ValueError, match="below min_noise_std"):
        VAE([1, 2], init_noise_std=1e-4).fit(X)
    with pytest.raises(ValueError, match="batch_size"):
        VAE([1, 2], batch_size=0).fit(X)
    with pytest.raises(ValueError, match="k=0 is invalid"):
        IWAE([1, 2], k=0).fit(X)
    with pytest.raises(ValueError, match="dtype"):
        VAE([1, 2], dtype="float16").fit(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        VAE([1, 2]).elbo(X)
    m = VAE([1, 2], max_epochs=0).fit(X)
    # scikit-learn's wording (its check_n_features_in_after_fitting matches it)
    with pytest.raises(ValueError, match="X has 5 features, but VAE is expecting 2 features"):
        m.elbo(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="Z has shape"):
        m.log_q(X[:3], np.zeros((4, 1)))
    with pytest.raises(ValueError, match="n_repeats"):
        m.iwae_bound(X[:3], 5, return_std=True)


# ----------------------------------------------------------------------------- exactness
def _exact_posterior_model(noise, seed=0):
    """Affine decoder with Wᵀ Σ⁻¹ W diagonal, and the encoder set to the exact posterior."""
    rng = np.random.default_rng(seed)
    D, d = 4, 2
    sigma = np.array([0.3, 0.5, 0.4, 0.2]) if noise == "diagonal" else np.full(D, 0.4)
    Q, _ = np.linalg.qr(rng.standard_normal((D, d)))
    W = sigma[:, None] * Q * np.array([2.0, 5.0])  # Wᵀ Σ⁻¹ W = diag(4, 25)
    b = rng.standard_normal(D)
    init = sigma if noise == "diagonal" else 0.4
    m = VAE(Decoder([W], [b]), noise=noise, init_noise_std=init, encoder_hidden=(), max_epochs=0)
    X = _affine_data(W, b, sigma, 6, seed + 1)
    m.fit(X)
    S = np.linalg.inv(np.eye(d) + W.T @ (W / sigma[:, None] ** 2))
    np.testing.assert_allclose(S, np.diag(np.diag(S)), atol=1e-14)
    P = S @ W.T / sigma**2  # posterior mean = P (x - b)
    with torch.no_grad():
        m.encoder_.mean_head.weight.copy_(torch.as_tensor(P))
        m.encoder_.mean_head.bias.copy_(torch.as_tensor(-P @ b))
        m.encoder_.log_std_head.weight.zero_()
        m.encoder_.log_std_head.bias.copy_(torch.as_tensor(0.5 * np.log(np.diag(S))))
    return m, X, W, b, sigma, S, P


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_exact_posterior_makes_every_estimate_exact(noise):
    m, X, W, b, sigma, S, P = _exact_posterior_model(noise)
    exact = multivariate_normal(b, np.diag(sigma**2) + W @ W.T).logpdf(X)
    np.testing.assert_allclose(_exact_affine(m, X), exact, rtol=1e-13)
    e, se = m.elbo(X, 20, random_state=0, return_std=True)
    np.testing.assert_allclose(e, exact, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(se, 0.0, atol=1e-10)
    np.testing.assert_allclose(m.iwae_bound(X, 5, random_state=1), exact, rtol=1e-11, atol=1e-11)
    ll, lse = m.importance_log_likelihood(X, 300, random_state=2, return_std=True)
    np.testing.assert_allclose(ll, exact, rtol=1e-11, atol=1e-11)
    assert np.all(lse < 1e-6)
    # log q against scipy's posterior density, and Bayes: log p(x,z) - log p(z|x) = log p(x)
    Z = np.random.default_rng(3).standard_normal((X.shape[0], 7, 2))
    lq = m.log_q(X, Z)
    ref = np.array(
        [multivariate_normal(P @ (x - b), S).logpdf(z) for x, z in zip(X, Z, strict=True)]
    )
    np.testing.assert_allclose(lq, ref, rtol=1e-12)
    np.testing.assert_allclose(m.log_joint(X, Z) - lq, exact[:, None] + 0 * lq, rtol=1e-11)
    assert m.log_q(X, Z[:, 0]).shape == (X.shape[0],)


def test_torch_and_numpy_paths_agree():
    X = wave(60, random_state=4)
    m = IWAE([1, 8, 8, 2], max_epochs=3, random_state=0, **FAST).fit(X)
    n = 9
    lw = m.elbo(X, 1, random_state=11)  # one sample: ELBO estimate = log w
    eps = np.random.default_rng(11).standard_normal((X.shape[0], 1, 1))
    mu, std = m.encode(X)
    Z = mu[:, None, :] + std[:, None, :] * eps
    np.testing.assert_allclose(lw, (m.log_joint(X, Z) - m.log_q(X, Z))[:, 0], rtol=1e-12)
    # streaming over sample chunks (one point) equals the unchunked log-mean-exp
    x1 = X[:1]
    full = m.importance_log_likelihood(x1, n, random_state=5)
    chunked = m.importance_log_likelihood(x1, n, random_state=5, max_elements=16)
    eps = np.random.default_rng(5).standard_normal((1, n, 1))
    Z = mu[:1, None, :] + std[:1, None, :] * eps
    lw = m.log_joint(x1, Z) - m.log_q(x1, Z)
    ref = np.log(np.mean(np.exp(lw - lw.max()))) + lw.max()
    np.testing.assert_allclose(full, ref, rtol=1e-12)
    np.testing.assert_allclose(chunked, ref, rtol=1e-12)


def test_bounds_are_ordered_and_importance_sampling_converges():
    """ELBO <= IWAE-5 <= log p(x) per point, and the IS estimate approaches the exact value."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 2))  # generic W: the true posterior is correlated, q is diagonal
    b = rng.standard_normal(5)
    X = _affine_data(W, b, 0.3, 300, 1)
    m = VAE([2, 5], max_epochs=80, random_state=0, validation_fraction=0.0, **FAST).fit(X)
    Xe = X[:12]
    exact = _exact_affine(m, Xe)
    e, e_se = m.elbo(Xe, 2000, random_state=1, return_std=True)
    iw, iw_se = m.iwae_bound(Xe, 5, n_repeats=300, random_state=2, return_std=True)
    tol = 4.0 * np.sqrt(e_se**2 + iw_se**2)
    assert np.all(e <= iw + tol), (e - iw, tol)
    assert np.all(iw <= exact + 4.0 * iw_se), (iw - exact, iw_se)
    assert np.mean(exact - e) > 0.05  # a diagonal q leaves a visible gap: the test has teeth
    assert np.mean(iw - e) > 0.01
    errs = []
    for k in (10, 300, 10000):
        ll, se = m.importance_log_likelihood(Xe, k, random_state=3, return_std=True)
        errs.append(np.mean(np.abs(ll - exact)))
    # the delta-method standard error is trustworthy once k is large
    assert np.all(np.abs(ll - exact) <= 5.0 * se + 1e-4), (ll - exact, se)
    assert errs[2] < errs[1] < errs[0], errs
    assert errs[2] < 0.012  # measured 0.0057 (weights are heavy-tailed: q is narrower)


def test_sample_matches_model_moments():
    m, _, W, b, sigma, *_ = _exact_posterior_model("diagonal")
    S = m.sample(20000, random_state=0)
    np.testing.assert_array_equal(m.sample(5, random_state=1), m.sample(5, random_state=1))
    np.testing.assert_allclose(S.mean(axis=0), b, atol=0.06)
    np.testing.assert_allclose(np.cov(S.T), np.diag(sigma**2) + W @ W.T, atol=0.15)


def test_sample_is_called_as_exactdgn_sample():
    """``sample(n_samples=1, random_state=None, return_latent=False)`` as ``ExactDGN.sample``
    (and scikit-learn's ``KernelDensity.sample``): ``vae.sample()`` and ``vae.sample(5, 0)``
    raised TypeError. The same seed draws the same points as the exact model of the decoder."""
    m, *_ = _exact_posterior_model("diagonal")
    assert m.sample().shape == (1, 4)
    exact = vae_to_exact(m)
    np.testing.assert_array_equal(m.sample(5, 0), exact.sample(5, 0))
    X, Z = m.sample(5, 0, return_latent=True)
    X2, Z2 = exact.sample(5, 0, return_latent=True)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Z, Z2)
    assert Z.shape == (5, 2)


def test_iwae_bound_std_and_k_monotone():
    X = wave(200, random_state=0)
    m = IWAE([1, 8, 2], max_epochs=10, random_state=0, **FAST).fit(X)
    x = X[:10]
    b1, s1 = m.iwae_bound(x, 1, n_repeats=400, random_state=0, return_std=True)
    b50, s50 = m.iwae_bound(x, 50, n_repeats=400, random_state=1, return_std=True)
    e, se = m.elbo(x, 400, random_state=2, return_std=True)  # IWAE-1 is the ELBO
    assert np.all(np.abs(b1 - e) <= 4 * np.sqrt(s1**2 + se**2))
    assert np.all(b1 <= b50 + 4 * np.sqrt(s1**2 + s50**2))
    assert math.isfinite(float(np.sum(b50)))


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_callback_snapshots_are_the_prefix_runs(cls):
    """The per-epoch snapshot at epoch e is the model a run of e epochs ends with (same seed,
    no validation), and the exact-NLL curve from one run equals the refit curve."""
    from exactdgn.evaluation import refit_curve, vae_curve, vae_to_exact

    X = wave(120, noise=0.1, random_state=0)
    kw = {"validation_fraction": 0.0, "random_state": 3, "batch_size": 32}
    seen = {}

    def cb(epoch, snapshot):
        if epoch in (2, 5):
            seen[epoch] = snapshot()

    cls([1, 6, 2], max_epochs=5, **kw).fit(X, callback=cb)
    short = cls([1, 6, 2], max_epochs=2, **kw).fit(X)
    dec, std = seen[2]
    for W, W2 in zip(dec.weights, short.decoder_.weights, strict=True):
        np.testing.assert_array_equal(W, W2)
    assert std == short.noise_std_
    make = lambda e: cls([1, 6, 2], max_epochs=e, **kw)  # noqa: E731
    Xte = wave(50, noise=0.1, random_state=1)
    _, one = vae_curve(make, X, Xte, [2, 5])
    _, ref = refit_curve(make, X, Xte, [2, 5], to_exact=vae_to_exact)
    assert one["iter"] == ref["iter"] == [2, 5]
    np.testing.assert_allclose(one["train_nll"], ref["train_nll"], rtol=1e-12)
    np.testing.assert_allclose(one["test_nll"], ref["test_nll"], rtol=1e-12)
    assert one["seconds"][0] < one["seconds"][1]


@pytest.mark.parametrize("schedule", [[1, 2.5], [-1, 2], [True, 2], ["3"], [], [0, 2]])
def test_curve_schedules_of_non_epoch_counts_are_refused(schedule):
    """``vae_curve`` and ``refit_curve`` truncated 2.5 to 2 (the curve had no point at the
    epoch asked for); ``refit_curve`` took True or "3" (fitting 1 and 3 epochs) and passed -1
    on to the estimator. ``refit_curve`` takes 0 (the initial model), ``vae_curve`` does not
    (its callback sees epochs from 1)."""
    from exactdgn.evaluation import refit_curve, vae_curve

    X = wave(30, noise=0.1, random_state=0)
    make = lambda e: VAE([1, 4, 2], max_epochs=e, **FAST)  # noqa: E731
    curves = (vae_curve,) if schedule == [0, 2] else (vae_curve, refit_curve)
    for curve in curves:
        with pytest.raises(ValueError, match=r"schedule must hold epoch counts \(integers >="):
            curve(make, X, X[:0], schedule)


def test_vae_curve_after_an_early_stop():
    """An early stop ends the curve at the last scheduled epoch that ran (it is shorter than
    the schedule, without a warning), and the estimator returned holds the best validation
    epoch (``best_iter_``), not the curve's last point (the docstring said ``max(schedule)``
    epochs)."""
    from exactdgn.evaluation import vae_curve

    X = wave(120, noise=0.1, random_state=0)
    Xte = wave(50, noise=0.1, random_state=1)
    kw = {"validation_fraction": 0.25, "patience": 2, "random_state": 5, "batch_size": 32}
    kw["lr"] = 0.1  # (epoch 3 is worse than epoch 2 on validation)
    # min_delta: no epoch improves on epoch 1 (the first validated one) by 1e9, so it stops
    # at 1 + 2; the best of those three epochs is kept
    make = lambda e: VAE([1, 6, 2], max_epochs=e, min_delta=1e9, **kw)  # noqa: E731
    est, curve = vae_curve(make, X, Xte, [8, 1, 3, 2, 5, 3])
    vals = [h["val_loglik"] for h in est.history_][1:]
    assert est.stopped_early_ and est.n_iter_ == 3 and est.best_iter_ == np.argmax(vals) + 1
    assert est.best_iter_ != 3  # (so the curve's last point is not the kept one)
    assert curve["iter"] == [1, 2, 3]  # sorted, duplicates once, none past the stop
    assert all(len(v) == 3 for v in curve.values())
    exact = vae_to_exact(est)  # the best epoch's parameters, not the curve's last point's
    b = est.best_iter_ - 1
    assert -exact.score(X) == pytest.approx(curve["train_nll"][b], rel=1e-12)
    assert -exact.score(Xte) == pytest.approx(curve["test_nll"][b], rel=1e-12)
    assert curve["train_nll"][-1] != pytest.approx(curve["train_nll"][b], rel=1e-6)
    # stopped before the first scheduled epoch: an empty curve
    est, curve = vae_curve(make, X, Xte, [5, 8])
    assert est.n_iter_ == 3 and curve["iter"] == [] and curve["train_nll"] == []


def test_callback_can_stop_training():
    X = wave(60, noise=0.1, random_state=0)
    vae = VAE([1, 4, 2], max_epochs=50, validation_fraction=0.0, random_state=0)
    vae.fit(X, callback=lambda e, snap: e < 3)
    assert vae.n_iter_ == 3 and len(vae.history_) == 4 and vae.stopped_early_
    # a numpy bool (a comparison of numpy numbers) stops as well
    vae.fit(X, callback=lambda e, snap: np.float64(e) < 3)
    assert vae.n_iter_ == 3 and vae.stopped_early_


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_lowrank_log_weights_match_direct(noise, monkeypatch):
    """The evaluation path through the output layer's Gram matrix (a narrow last layer) gives
    the same log weights as decoding to D dimensions, also far from the data."""
    from exactdgn.baselines import _vae
    from exactdgn.baselines._vae import _log_weights, _log_weights_lowrank

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 24))
    X[0] += 300.0
    vae = VAE([2, 5, 24], max_epochs=2, noise=noise, random_state=0).fit(X[1:])
    dec, enc, log_sigma = vae._eval_parts()
    x = torch.as_tensor(X)
    eps = torch.as_tensor(rng.standard_normal((40, 7, 2)))
    with torch.no_grad():
        ref = _log_weights(x, eps, dec, enc, log_sigma).numpy()
        got = _log_weights_lowrank(x, eps, dec[:-1], dec[-1], enc, log_sigma).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    # the public estimates use it (4 * 5 <= 24): same numbers as with the direct path
    calls = []

    def direct(x, eps, body, last, enc, ls):
        calls.append(1)
        return _log_weights(x, eps, torch.nn.Sequential(*body, last), enc, ls)

    est = vae.importance_log_likelihood(X, k=50, random_state=1)
    monkeypatch.setattr(_vae, "_log_weights_lowrank", direct)
    ref = vae.importance_log_likelihood(X, k=50, random_state=1)
    assert calls and np.all(np.isfinite(est)) and est[0] < est[1:].min()
    np.testing.assert_allclose(est, ref, rtol=1e-12, atol=1e-9)


# ----------------------------------------------------------------------------- estimator API
@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_sklearn_params_clone_and_defaults(cls):
    """get_params / set_params / clone round trip; default construction; fitted attributes."""
    est = cls([1, 4, 2], max_epochs=2, random_state=0, **FAST)
    params = est.get_params()
    assert params["decoder"] == [1, 4, 2] and params["max_epochs"] == 2
    assert ("k" in params) == (cls is IWAE) and ("n_train_samples" in params) == (cls is VAE)
    twin = clone(est)
    assert type(twin) is cls and twin.get_params() == params
    assert est.set_params(max_epochs=3, lr=1e-2) is est
    assert est.max_epochs == 3 and clone(est).get_params()["lr"] == 1e-2
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(max_iter=3)
    # __init__ stores only: nothing ending in "_" before fit, even for invalid values
    bad = cls(decoder="nonsense", lr=-1.0)
    assert not [k for k in vars(bad) if k.endswith("_")]
    # default construction: ExactDGN's latent_dim / hidden_sizes defaults, D from the data
    X = wave(60, random_state=0)
    m = cls(max_epochs=1, random_state=0, **FAST).fit(X)
    assert m.decoder_.layer_sizes == [1, 12, 2] and m.n_features_in_ == 2 and m.latent_dim_ == 1
    m = cls(latent_dim=2, hidden_sizes=(5, 3), max_epochs=1, random_state=0, **FAST).fit(X)
    assert m.decoder_.layer_sizes == [2, 5, 3, 2] and m.latent_dim_ == 2
    # a fitted clone trains to the same model
    c = clone(m).fit(X)
    np.testing.assert_array_equal(c.decoder_.weights[0], m.decoder_.weights[0])


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_not_fitted_error(cls):
    from exactdgn.model import NotFittedError as ExactNotFittedError

    est = cls([1, 2])
    X = wave(5, random_state=0)
    for call in (
        lambda: est.elbo(X),
        lambda: est.score_samples(X),
        lambda: est.score(X),
        lambda: est.encode(X),
        lambda: est.sample(3),
        lambda: est.importance_log_likelihood(X, 5),
        lambda: vae_to_exact(est),  # was an AttributeError on decoder_
    ):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    with pytest.raises(ExactNotFittedError):  # the library's own, a subclass of sklearn's
        est.iwae_bound(X)
    assert issubclass(ExactNotFittedError, NotFittedError)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"decoder": [1]}, r"decoder=\[1\] is invalid: give an exactdgn.Decoder"),
        ({"decoder": [1, 0, 2]}, "decoder=.*layer sizes"),
        ({"decoder": [1, 2], "latent_dim": 1}, "latent_dim=1 is invalid: leave it None"),
        ({"latent_dim": 0}, "latent_dim=0 is invalid: use an integer >= 1"),
        ({"hidden_sizes": (4, -1)}, r"hidden_sizes=\(4, -1\) is invalid"),
        ({"activation": "sigmoid"}, "activation='sigmoid' is invalid: choose one of"),
        ({"encoder_hidden": (0,)}, "encoder_hidden=.*positive integers"),
        ({"encoder_activation": "gelu"}, "encoder_activation='gelu' is invalid"),
        ({"n_train_samples": 0}, "n_train_samples=0 is invalid"),
        ({"lr": 0.0}, "lr=0.0 is invalid: use a positive float"),
        ({"batch_size": 2.5}, "batch_size=2.5 is invalid: use an integer >= 1"),
        ({"max_epochs": -1}, "max_epochs=-1 is invalid"),
        ({"patience": 0}, "patience=0 is invalid"),
        ({"min_delta": -1.0}, "min_delta=-1.0 is invalid"),
        ({"min_noise_std": 0}, "min_noise_std=0 is invalid: use a positive float"),
        ({"init_noise_std": [0.1, 0.2]}, "isotropic noise takes a scalar"),
        ({"random_state": "seed"}, "random_state='seed' is invalid"),
        ({"validation_fraction": -0.1}, r"validation_fraction=-0.1 is invalid: use a fraction"),
        # a bool is not a number (lr=True trained with lr 1.0), nor a string a noise level, as
        # in ExactDGN's checks; progress takes a bool as ExactDGN's
        ({"lr": True}, "lr=True is invalid: use a positive float"),
        ({"min_noise_std": True}, "min_noise_std=True is invalid"),
        ({"min_delta": True}, "min_delta=True is invalid"),
        ({"negative_slope": True}, "negative_slope=True is invalid: use a finite float"),
        ({"init_noise_std": True}, "init_noise_std=True is invalid"),
        ({"init_noise_std": "0.5"}, "init_noise_std='0.5' is invalid"),
        ({"progress": "yes"}, "progress='yes' is invalid: use True"),
    ],
)
def test_bad_parameters_say_what_to_change(params, match):
    X = wave(20, random_state=0)
    with pytest.raises(ValueError, match=match):
        VAE(**params).fit(X)


def test_empty_inputs_are_named():
    """No rows, as ExactDGN: an error naming X (score gave NaN with numpy's RuntimeWarnings),
    and an empty X_val an error naming it (fit died of a ZeroDivisionError)."""
    X = wave(40, noise=0.1, random_state=0)
    m = VAE([1, 3, 2], max_epochs=1, random_state=0, **FAST).fit(X)
    empty = np.zeros((0, 2))
    for call in (
        lambda: m.score(empty),
        lambda: m.score_samples(empty),
        lambda: m.elbo(empty),
        lambda: m.iwae_bound(empty),
        lambda: m.importance_log_likelihood(empty, 5),
        lambda: m.encode(empty),
    ):
        with pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 2\)\)"):
            call()
    with pytest.raises(ValueError, match=r"X_val has no rows \(shape \(0, 2\)\)"):
        VAE([1, 3, 2], max_epochs=1, **FAST).fit(X, X_val=empty)


def test_columnless_input_is_named():
    """X of shape (N, 0), as ExactDGN: fit said 'layer_sizes must be positive integers ...,
    got [1, 12, 0]' (or told to give decoder sizes ending in 0)."""
    for est in (VAE(max_epochs=1), VAE([1, 3, 2], max_epochs=1), IWAE(max_epochs=1)):
        with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(5, 0\)\)"):
            est.fit(np.empty((5, 0)))


def test_fit_on_a_frame_records_and_checks_its_column_names():
    """As ExactDGN's ``feature_names_in_``: the names were dropped, so a frame with its
    columns in another order was scored (and trained on, warm) by position, without a word."""
    import pandas as pd

    X = wave(40, noise=0.1, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b"])
    swapped = df[["b", "a"]]
    m = VAE([1, 3, 2], max_epochs=1, random_state=0, **FAST).fit(df)
    assert m.feature_names_in_.tolist() == ["a", "b"]
    np.testing.assert_array_equal(m.score_samples(df), m.score_samples(X))
    for call in (m.score_samples, m.score, m.elbo, m.encode, m.iwae_bound, vae_to_exact(m).score):
        with pytest.raises(ValueError, match=r"\['b', 'a'\].*\['a', 'b'\]"):
            call(swapped)
    with pytest.raises(ValueError, match="fitted with"):
        m.set_params(warm_start=True).fit(swapped)
    with pytest.raises(ValueError, match=r"X_val has columns \['b', 'a'\] but X has"):
        VAE([1, 3, 2], max_epochs=1, **FAST).fit(df, X_val=swapped)
    restored = VAE([1, 3, 2]).load_state_dict(m.state_dict())
    assert restored.feature_names_in_.tolist() == ["a", "b"]
    m.set_params(warm_start=False).fit(X)  # refit on an array: no names any more
    assert not hasattr(m, "feature_names_in_")
    assert not hasattr(VAE([1, 3, 2]).load_state_dict(m.state_dict()), "feature_names_in_")


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_history_rows_and_callback_match_exactdgn(cls):
    """The same HistoryRow keys as ExactDGN's history; the callback runs once per epoch, with
    the epoch's row already recorded (as ExactDGN's per iteration)."""
    import dataclasses
    import warnings

    from exactdgn.training import HistoryRow

    X = wave(80, noise=0.1, random_state=0)
    seen = []
    m = cls([1, 4, 2], max_epochs=4, random_state=0, patience=100, **FAST)
    m.fit(X, callback=lambda it, snapshot: seen.append((it, snapshot())))
    keys = {f.name for f in dataclasses.fields(HistoryRow)}
    assert all(set(r) == keys for r in m.history_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = ExactDGN(hidden_sizes=(3,), max_iter=1, init="pca", progress=False).fit(X)
    assert set(ex.history_[0]) == set(m.history_[0]) == keys
    assert m.n_iter_ == 4 and [it for it, _ in seen] == [r["iter"] for r in m.history_[1:]]
    assert [r["iter"] for r in m.history_] == [0, 1, 2, 3, 4]
    for r in m.history_:
        assert r["method"] == cls._method and r["n_regions"] is None and r["backtracks"] == 0
        assert r["seconds_partition"] == r["seconds_estep"] == 0.0
        assert r["seconds"] >= r["seconds_mstep"] >= 0.0 and np.isfinite(r["loglik"])
        assert np.isfinite(r["val_loglik"])  # validation_fraction=0.1 by default
        assert r["step"] == (m.lr if r["iter"] else 0.0)
    # the last snapshot is the fitted model when the last epoch is the best one kept
    dec, std = seen[m.best_iter_ - 1][1]
    np.testing.assert_array_equal(dec.weights[0], m.decoder_.weights[0])
    assert std == m.noise_std_
    # False stops after that epoch, as in ExactDGN
    m2 = clone(m).fit(X, callback=lambda it, snapshot: it < 2)
    assert m2.n_iter_ == 2 and m2.stopped_early_
    assert _untimed(m2.history_) == _untimed(m.history_[:3])


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_score_samples_is_the_objective(cls):
    X = wave(60, noise=0.1, random_state=0)
    m = cls([1, 4, 2], max_epochs=2, random_state=0, **FAST).fit(X)
    s = m.score_samples(X[:10])
    np.testing.assert_array_equal(s, m.score_samples(X[:10]))  # deterministic by default
    if cls is VAE:
        np.testing.assert_array_equal(s, m.elbo(X[:10], 100, random_state=0))
    else:
        np.testing.assert_array_equal(s, m.iwae_bound(X[:10], m.k, n_repeats=100, random_state=0))
    assert m.score(X[:10]) == pytest.approx(s.mean(), rel=1e-14)
    # a bound: below the exact log-likelihood of the same decoder and noise (on average)
    exact = ExactDGN.from_decoder(m.decoder_, m.noise_std_).score_samples(X[:10])
    assert s.mean() < exact.mean()
    for call in (m.score_samples, m.score):  # IWAE's named its n_repeats
        with pytest.raises(ValueError, match="n_samples must be an int >= 1, got 0"):
            call(X[:10], n_samples=0)


def test_from_parts_is_fitted():
    m, X, *_ = _exact_posterior_model("diagonal")
    v = VAE.from_parts(m.decoder_, m.encoder_, m.noise_std_)
    assert v.noise == "diagonal" and v.n_features_in_ == 4 and v.latent_dim_ == 2
    np.testing.assert_allclose(v.elbo(X, 5, random_state=0), m.elbo(X, 5, random_state=0))


class _Wrapped(torch.nn.Module):
    """An encoder module that is not a GaussianEncoder (as one trained elsewhere)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_from_parts_checks_its_parts():
    """Parts that do not fit together are named at once: an encoder of another latent
    dimension broadcast against the decoder's and gave wrong ELBO / IS values without an error,
    a negative noise gave NaN, a noise of the wrong length a torch shape error."""
    m, X, *_ = _exact_posterior_model("isotropic")
    dec, enc = m.decoder_, m.encoder_
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc1 = GaussianEncoder(4, 1, (), "relu").to(torch.float64)  # latent 1, decoder's 2
        enc3 = GaussianEncoder(3, 2, (), "relu").to(torch.float64)  # 3 inputs, decoder's 4
    with pytest.raises(ValueError, match=r"encoder returns.*\(2, 1\).*latent_dim 2"):
        VAE.from_parts(dec, enc1, 0.4)
    with pytest.raises(ValueError, match="encoder cannot take inputs of 4 features"):
        VAE.from_parts(dec, enc3, 0.4)
    with pytest.raises(ValueError, match="encoder returns"):
        VAE.from_parts(dec, torch.nn.Sequential(), 0.4)  # one tensor, not (mean, log_std)
    with pytest.raises(ValueError, match="noise_std must be positive"):
        VAE.from_parts(dec, enc, -0.4)
    with pytest.raises(ValueError, match="noise_std has length 3 but 4"):
        VAE.from_parts(dec, enc, [0.4, 0.4, 0.4])
    with pytest.raises(TypeError, match=r"decoder must be an exactdgn\.Decoder"):
        VAE.from_parts([2, 4], enc, 0.4)
    with pytest.raises(TypeError, match=r"encoder must be a torch\.nn\.Module"):
        VAE.from_parts(dec, lambda x: x, 0.4)
    # the noise as documented: a float for isotropic noise (as fit and load_state_dict give)
    v = VAE.from_parts(dec, _Wrapped(enc), np.float64(0.4))
    assert type(v.noise_std_) is float and v.noise == "isotropic"
    np.testing.assert_array_equal(v.elbo(X, 5, random_state=0), m.elbo(X, 5, random_state=0))


class _AnalyticPosterior(torch.nn.Module):
    """The exact posterior ``N(P x + c, diag(s²))`` as a module with buffers, no parameters."""

    def __init__(self, P, c, log_s):
        super().__init__()
        self.register_buffer("P", torch.as_tensor(P))
        self.register_buffer("c", torch.as_tensor(c))
        self.register_buffer("log_s", torch.as_tensor(log_s))

    def forward(self, x):
        return x @ self.P.T + self.c, self.log_s.expand(x.shape[0], -1)


def test_from_parts_encoder_without_parameters():
    """An encoder without parameters (a closed-form posterior) is accepted by from_parts, and
    every evaluation method works with it: they raised "generator raised StopIteration"."""
    m, X, _, b, sigma, S, P = _exact_posterior_model("diagonal")
    enc = _AnalyticPosterior(P, -P @ b, 0.5 * np.log(np.diag(S)))
    assert next(enc.parameters(), None) is None
    v = VAE.from_parts(m.decoder_, enc, sigma)
    exact = ExactDGN.from_decoder(m.decoder_, sigma).score_samples(X)
    np.testing.assert_allclose(v.elbo(X, 3, random_state=0), exact, rtol=0, atol=1e-10)
    np.testing.assert_allclose(v.iwae_bound(X, 3, random_state=0), exact, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        v.importance_log_likelihood(X, 3, random_state=0), exact, rtol=0, atol=1e-10
    )
    mu, std = v.encode(X)
    np.testing.assert_allclose(mu, (X - b) @ P.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, np.broadcast_to(np.sqrt(np.diag(S)), std.shape))


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_sklearn_estimator_checks(cls):
    """The scikit-learn checks of the estimator API (construction, parameters, fitting). Not
    all of ``check_estimator``: its input-format checks (sparse, complex, object arrays) and
    per-sample invariance of ``score_samples`` (a Monte Carlo estimate whose noise is drawn
    row by row) do not apply."""
    from sklearn.utils import estimator_checks as ec

    est = cls(max_epochs=2, encoder_hidden=(4,), validation_fraction=0.0, random_state=0)
    name = cls.__name__
    ec.check_parameters_default_constructible(name, est)
    ec.check_no_attributes_set_in_init(name, est)
    ec.check_get_params_invariance(name, est)
    ec.check_set_params(name, est)
    ec.check_estimators_unfitted(name, est)
    ec.check_dont_overwrite_parameters(name, est)
    ec.check_estimators_overwrite_params(name, est)
    ec.check_fit_idempotent(name, est)
    ec.check_n_features_in(name, est)
    ec.check_fit2d_1sample(name, est)
    ec.check_estimators_nan_inf(name, est)


@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_converged_and_information_criteria_as_exactdgn(cls):
    """``converged_`` (ExactDGN's: the stopping rule met, here early stopping) and
    ``bic`` / ``aic`` were missing (AttributeError); ``bic`` / ``aic`` use the exact
    log-likelihood of the decoder and noise and ExactDGN's parameter count."""
    X = wave(80, noise=0.1, random_state=0)
    kw = dict(FAST, validation_fraction=0.3, random_state=0)
    # no epoch after the first improves by min_delta: the rule stops at epoch 2
    early = cls([1, 4, 2], max_epochs=50, patience=1, min_delta=1e3, **kw).fit(X)
    assert early.stopped_early_ and early.converged_ and early.n_iter_ == 2
    full = cls([1, 4, 2], max_epochs=2, patience=100, **kw).fit(X)
    assert not full.stopped_early_ and not full.converged_
    stopped = cls([1, 4, 2], max_epochs=5, **kw).fit(X, callback=lambda it, snap: it < 2)
    assert stopped.stopped_early_ and not stopped.converged_
    exact = ExactDGN.from_decoder(early.decoder_, early.noise_std_)
    assert early.bic(X) == pytest.approx(exact.bic(X), rel=1e-12)
    assert early.aic(X) == pytest.approx(exact.aic(X), rel=1e-12)
    dec = exact.decoder_
    k = sum(W.size + c.size for W, c in zip(dec.weights, dec.biases, strict=True)) + 1
    assert early.aic(X) == pytest.approx(-2 * exact.score_samples(X).sum() + 2 * k, rel=1e-12)
    # the record survives a state_dict round trip
    again = cls([1, 4, 2], **kw).load_state_dict(early.state_dict())
    assert again.converged_ is True
    with pytest.raises(NotFittedError):
        cls().bic(X)
    with pytest.raises(ValueError, match="X has 3"):
        early.aic(np.hstack([X, X[:, :1]]))


@pytest.mark.parametrize("cls", [VAE, IWAE])
@pytest.mark.parametrize(
    ("callback", "match"),
    [(5, "callback must be a function"), (lambda it: None, "cannot be called as callback")],
)
def test_a_callback_that_cannot_be_called_is_refused_before_training(cls, callback, match):
    """``fit(X, callback=5)`` trained an epoch, then failed with ``'int' object is not
    callable``."""
    X = wave(30, noise=0.1, random_state=0)
    m = cls([1, 3, 2], max_epochs=3, random_state=0, **FAST)
    with pytest.raises(TypeError, match=match):
        m.fit(X, callback=callback)
    assert not hasattr(m, "decoder_")
    m.fit(X, callback=lambda *args: None)  # any two-argument callable is fine


# ----------------------------------------------------------------------------- warm start
def _same_model(a, b):
    """Bitwise the same fitted networks, noise and record."""
    assert _untimed(a.history_) == _untimed(b.history_)
    assert a.best_iter_ == b.best_iter_
    for Wa, Wb in zip(
        a.decoder_.weights + a.decoder_.biases, b.decoder_.weights + b.decoder_.biases, strict=True
    ):
        np.testing.assert_array_equal(Wa, Wb)
    for (ka, pa), (kb, pb) in zip(
        a.encoder_.state_dict().items(), b.encoder_.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(pa, pb)
    np.testing.assert_array_equal(a.noise_std_, b.noise_std_)


WARM = dict(encoder_hidden=(8,), batch_size=16, lr=1e-2, random_state=0, patience=100)


@pytest.mark.parametrize(
    ("cls", "frac", "dtype"),
    [(VAE, 0.0, "float64"), (IWAE, 0.3, "float64"), (VAE, 0.3, "float32")],
)
def test_warm_start_halves_equal_one_run(cls, frac, dtype):
    """3 + 3 warm-started epochs are bitwise the 6 of one fit: Adam's moments and step count,
    the minibatch / noise stream, the validation split and the best-epoch record carry over."""
    X = wave(60, noise=0.1, random_state=0)
    kw = dict(WARM, validation_fraction=frac, dtype=dtype)
    one = cls([1, 5, 2], max_epochs=6, **kw).fit(X)
    m = cls([1, 5, 2], max_epochs=3, warm_start=True, **kw).fit(X)
    assert m.n_iter_ == 3
    seen = []
    m.fit(X, callback=lambda it, snapshot: seen.append(it))
    assert m.n_iter_ == 3 and seen == [4, 5, 6]
    assert [r["iter"] for r in m.history_] == list(range(7))
    _same_model(m, one)


def test_warm_start_continues_early_stopping_record():
    """With early stopping (patience 2), 2 warm epochs then the rest stop where one fit does,
    keep the same best epoch; a further warm fit after the early stop trains one epoch."""
    X = wave(120, noise=0.1, random_state=0)
    kw = dict(WARM, validation_fraction=0.3, patience=2, lr=2e-2, random_state=1)
    one = VAE([1, 6, 2], max_epochs=200, **kw).fit(X)
    assert one.stopped_early_ and one.best_iter_ < one.n_iter_ < 200
    m = VAE([1, 6, 2], max_epochs=2, warm_start=True, **kw).fit(X)
    m.set_params(max_epochs=200).fit(X)
    _same_model(m, one)
    assert m.stopped_early_ and m.n_iter_ == one.n_iter_ - 2
    m.fit(X)  # bad = patience already: one more epoch unless it is a new best
    assert m.history_[-1]["iter"] == one.n_iter_ + m.n_iter_
    assert m.n_iter_ == 1 or m.best_iter_ > one.best_iter_


def test_cold_fit_ignores_the_previous_run():
    X = wave(40, noise=0.1, random_state=0)
    m = VAE([1, 4, 2], max_epochs=2, validation_fraction=0.0, **FAST, random_state=0).fit(X)
    again = clone(m).fit(X)
    m.fit(X)  # warm_start=False: the same 2-epoch model again
    _same_model(m, again)


def test_warm_start_from_parts_fine_tunes():
    """A model without a training state (from_parts) starts a new run from its networks, which
    are copied (the given encoder is not trained in place)."""
    X = wave(40, noise=0.1, random_state=0)
    src = VAE([1, 4, 2], max_epochs=2, **FAST, random_state=0).fit(X)
    enc = src.encoder_
    before = [p.clone() for p in enc.parameters()]
    m = VAE.from_parts(src.decoder_, enc, src.noise_std_)
    m.set_params(warm_start=True, max_epochs=2, random_state=0, validation_fraction=0.0)
    m.fit(X)
    assert m.n_iter_ == 2 and [r["iter"] for r in m.history_] == [0, 1, 2]
    ref = ExactDGN.from_decoder(src.decoder_, src.noise_std_)  # row 0: the given networks
    assert m.history_[0]["loglik"] < ref.score(X)
    assert all(torch.equal(p, q) for p, q in zip(enc.parameters(), before, strict=True))
    assert m.encoder_ is not enc and not np.array_equal(
        m.decoder_.weights[0], src.decoder_.weights[0]
    )


def test_warm_start_checks_the_fitted_model():
    X = wave(30, noise=0.1, random_state=0)
    m = VAE([1, 3, 2], max_epochs=1, warm_start=True, **FAST, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 3 columns but the fitted model expects 2"):
        m.fit(np.hstack([X, X[:, :1]]))
    with pytest.raises(ValueError, match="noise='diagonal' is invalid with warm_start=True"):
        m.set_params(noise="diagonal").fit(X)
    with pytest.raises(ValueError, match="warm_start='yes' is invalid: use True"):
        VAE(warm_start="yes").fit(X)


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("where", ["minibatch", "callback"])
def test_interrupt_keeps_last_epoch_and_warm_start_resumes(where, monkeypatch, caplog):
    """A KeyboardInterrupt in the middle of epoch 3 (a monkeypatched minibatch step) leaves
    the model of 2 epochs, not a half-updated one; one raised by the callback after epoch 3
    keeps epoch 3. Either way a warm fit then ends bitwise as the uninterrupted run."""
    import logging

    from exactdgn.baselines import _vae

    X = wave(60, noise=0.1, random_state=0)
    kw = dict(WARM, validation_fraction=0.3)
    full = VAE([1, 5, 2], max_epochs=5, **kw).fit(X)
    armed = []
    real = _vae._log_weights

    def log_weights(*args):
        if armed:
            armed.append(1)
            if len(armed) == 3:  # the second minibatch of epoch 3
                raise KeyboardInterrupt
        return real(*args)

    def cb(it, snapshot):
        if it == (2 if where == "minibatch" else 3):
            if where == "callback":
                raise KeyboardInterrupt
            armed.append(0)

    monkeypatch.setattr(_vae, "_log_weights", log_weights)
    m = VAE([1, 5, 2], max_epochs=5, warm_start=True, **kw)
    with caplog.at_level(logging.WARNING, logger="exactdgn.baselines._vae"):
        with pytest.raises(KeyboardInterrupt):
            m.fit(X, callback=cb)
    kept = 2 if where == "minibatch" else 3
    assert "training interrupted" in caplog.text and f"epoch {kept}" in caplog.text
    # Python-API advice, and what the command line (which has no VAE checkpoint) can do
    assert "warm_start=True" in caplog.text and "command line" in caplog.text
    assert m.n_iter_ == kept and m.stopped_early_
    assert _untimed(m.history_) == _untimed(full.history_[: kept + 1])
    short = VAE([1, 5, 2], max_epochs=kept, **kw).fit(X)
    _same_model(m, short)  # the fitted model of `kept` epochs: no half-updated parameters
    assert np.isfinite(m.score(X[:5], n_samples=3))
    armed.clear()
    m.set_params(max_epochs=5 - kept).fit(X)
    _same_model(m, full)


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_state_dict_checkpoint_without_pickle_resumes(cls, tmp_path):
    """state_dict -> pack_state -> npz + JSON (no pickle) -> load_state_dict: the same model,
    and a warm start from it continues the run bitwise."""
    from exactdgn.io import read_npz, write_npz_atomic
    from exactdgn.training import pack_state, unpack_state

    X = wave(60, noise=0.1, random_state=0)
    kw = dict(WARM, validation_fraction=0.3)
    one = cls([1, 5, 2], max_epochs=4, **kw).fit(X)
    m = cls([1, 5, 2], max_epochs=2, **kw).fit(X)
    state = m.state_dict()
    state["noise_std"] *= 2.0  # a copy: the estimator does not change
    arrays: dict = {}
    meta = pack_state(m.state_dict(), arrays, "s")
    write_npz_atomic(tmp_path / "vae.npz", arrays, {"state": meta})
    arrays, meta = read_npz(tmp_path / "vae.npz")  # np.load(allow_pickle=False)
    loaded = cls([1, 5, 2], max_epochs=2, warm_start=True, **kw)
    loaded.load_state_dict(unpack_state(meta["state"], arrays))
    _same_model(loaded, m)
    assert loaded.n_iter_ == 2 and isinstance(loaded.noise_std_, float)
    np.testing.assert_array_equal(loaded.elbo(X, 5, random_state=0), m.elbo(X, 5, random_state=0))
    loaded.fit(X)
    _same_model(loaded, one)


def test_state_dict_errors():
    X = wave(30, noise=0.1, random_state=0)
    m = VAE([1, 3, 2], max_epochs=1, **FAST, random_state=0).fit(X)
    with pytest.raises(ValueError, match="not a IWAE state_dict"):
        IWAE().load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="version 99"):
        VAE().load_state_dict({**m.state_dict(), "version": 99})
    enc = _Wrapped(m.encoder_)  # a valid encoder, not a GaussianEncoder
    with pytest.raises(TypeError, match="records a GaussianEncoder"):
        VAE.from_parts(m.decoder_, enc, m.noise_std_).state_dict()
    with pytest.raises(NotFittedError):
        VAE().state_dict()
