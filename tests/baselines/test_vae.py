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

from exactdgn import Decoder
from exactdgn.baselines import IWAE, VAE, GaussianEncoder
from exactdgn.datasets import wave


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks: one thread avoids oversubscription on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FAST = dict(encoder_hidden=(16,), batch_size=64, lr=3e-3)


def _affine_data(W, b, sigma, n, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, W.shape[1]))
    return Z @ W.T + b + sigma * rng.standard_normal((n, W.shape[0]))


def _exact_affine(model, X):
    W, b = model.decoder_.weights[0], model.decoder_.biases[0]
    sig2 = np.broadcast_to(np.asarray(model.noise_std_) ** 2, (W.shape[0],))
    return multivariate_normal(b, np.diag(sig2) + W @ W.T).logpdf(X)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("cls", [VAE, IWAE])
def test_training_improves_objective(cls):
    X = wave(300, noise=0.1, random_state=0)
    m = cls(
        [1, 16, 16, 2], max_epochs=40, validation_fraction=0.2, patience=40, random_state=0, **FAST
    )
    m.fit(X)
    h = m.history_
    assert m.n_epochs_ == 40 and len(h["val_objective"]) == 40
    first, last = np.mean(h["train_objective"][:3]), np.mean(h["train_objective"][-5:])
    assert last > first + 2.0, (first, last)
    assert np.mean(h["val_objective"][-5:]) > h["val_objective"][0] + 2.0
    if cls is IWAE:  # the IWAE-k objective is above the ELBO of the same samples
        assert np.all(np.array(h["train_objective"]) >= np.array(h["train_elbo"]))
    else:
        assert h["train_objective"] == h["train_elbo"]
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
    assert a.history_ == b.history_
    for Wa, Wb in zip(a.decoder_.weights, b.decoder_.weights, strict=True):
        np.testing.assert_array_equal(Wa, Wb)
    np.testing.assert_array_equal(a.noise_std_, b.noise_std_)
    assert a.noise_std_.shape == (2,)
    assert a.history_ != c.history_
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
    h = m.history_["val_objective"]
    assert m.stopped_early_ and m.n_epochs_ < 400
    assert m.n_epochs_ == m.best_epoch_ + 1 + 4
    assert h[m.best_epoch_] == max(h)
    # a run cut at the best epoch follows the same trajectory: the restored parameters are its
    ref = VAE([1, 8, 2], max_epochs=m.best_epoch_ + 1, patience=1000, **kw).fit(X)
    assert ref.history_["val_objective"] == h[: m.best_epoch_ + 1]
    for W1, W2 in zip(m.decoder_.weights, ref.decoder_.weights, strict=True):
        np.testing.assert_array_equal(W1, W2)
    assert m.noise_std_ == ref.noise_std_


def test_no_validation_split_and_float32():
    X = wave(100, random_state=0)
    m = VAE([1, 4, 2], max_epochs=3, validation_fraction=0.0, dtype="float32", **FAST)
    m.fit(X)
    assert m.history_["val_objective"] == [] and m.best_epoch_ == 2 and not m.stopped_early_
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
    assert len(m.history_["val_elbo"]) == 2
    assert "VAE" in capsys.readouterr().err


def test_input_validation():
    X = wave(50, random_state=0)
    with pytest.raises(ValueError, match="outputs 3 dimensions but X has 2"):
        VAE([1, 3]).fit(X)
    with pytest.raises(TypeError, match="layer sizes"):
        VAE("decoder").fit(X)
    with pytest.raises(ValueError, match="noise"):
        VAE([1, 2], noise="full").fit(X)
    with pytest.raises(ValueError, match="validation_fraction"):
        VAE([1, 2], validation_fraction=1.0).fit(X)
    with pytest.raises(ValueError, match="below min_noise_std"):
        VAE([1, 2], init_noise_std=1e-4).fit(X)
    with pytest.raises(ValueError, match="batch_size"):
        VAE([1, 2], batch_size=0).fit(X)
    with pytest.raises(ValueError, match="k must be"):
        IWAE([1, 2], k=0).fit(X)
    with pytest.raises(ValueError, match="dtype"):
        VAE([1, 2], dtype="float16").fit(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        VAE([1, 2]).elbo(X)
    m = VAE([1, 2], max_epochs=0).fit(X)
    with pytest.raises(ValueError, match="2 are expected"):
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


def test_callback_can_stop_training():
    X = wave(60, noise=0.1, random_state=0)
    vae = VAE([1, 4, 2], max_epochs=50, validation_fraction=0.0, random_state=0)
    vae.fit(X, callback=lambda e, snap: e < 3)
    assert vae.n_epochs_ == 3 and vae.stopped_early_


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
