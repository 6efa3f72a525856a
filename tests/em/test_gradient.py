"""Exact gradients (Fisher's identity) against finite differences of the exact log-likelihood."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from exactdgn import Decoder, ExactDGN


@pytest.mark.parametrize(("sizes", "noise"), [([1, 5, 3], 0.3), ([2, 6, 3], [0.3, 0.5, 0.4])])
def test_gradient_matches_finite_differences(sizes, noise):
    dec = Decoder.random(sizes, seed=2)
    m = ExactDGN.from_decoder(dec, noise)
    X = m.sample(15, random_state=1)
    grads = m.exact_gradient(X)

    def total(d, s):
        return ExactDGN.from_decoder(d, s).score_samples(X).sum()

    h = 1e-5
    rng = np.random.default_rng(0)
    for k in range(dec.n_layers):
        for which in (0, 1):
            arr = dec.weights[k] if which == 0 else dec.biases[k]
            G = grads[2 * k + which]
            assert G.shape == arr.shape
            flat = rng.choice(arr.size, size=min(arr.size, 5), replace=False)
            for f in flat:
                idx = np.unravel_index(f, arr.shape)
                dp, dm = dec.copy(), dec.copy()
                (dp.weights[k] if which == 0 else dp.biases[k])[idx] += h
                (dm.weights[k] if which == 0 else dm.biases[k])[idx] -= h
                fd = (total(dp, noise) - total(dm, noise)) / (2 * h)
                assert G[idx] == pytest.approx(fd, rel=1e-6, abs=1e-7)
    std = np.asarray(noise, dtype=float)
    fd = (total(dec, std * np.exp(h)) - total(dec, std * np.exp(-h))) / (2 * h)
    assert np.sum(grads[-1]) == pytest.approx(fd, rel=1e-6)


def test_gradient_training_improves_likelihood():
    true = ExactDGN.from_decoder(Decoder.random([1, 5, 2], seed=3), 0.1)
    X = true.sample(300, random_state=0)
    m = ExactDGN(
        hidden_sizes=(5,), method="gradient", max_iter=3, tol=0.0, random_state=0, progress=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X)
    ll = [h["loglik"] for h in m.history_]
    assert ll[-1] > ll[0]
    assert m.score(X) == pytest.approx(ll[-1], abs=1e-10)


def _fit_lbfgs(X, **kw):
    m = ExactDGN(method="lbfgs", init="random", random_state=0, progress=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return m.fit(X)


@pytest.mark.parametrize(("sizes", "noise"), [([1, 6, 2], "isotropic"), ([2, 5, 3], "diagonal")])
def test_lbfgs_is_monotone_and_floors_the_noise(sizes, noise):
    true = ExactDGN.from_decoder(Decoder.random(sizes, seed=5), 0.2)
    X = true.sample(400, random_state=1)
    m = _fit_lbfgs(
        X,
        latent_dim=sizes[0],
        hidden_sizes=tuple(sizes[1:-1]),
        noise=noise,
        max_iter=12,
        tol=0.0,
        min_noise_std=0.15,  # σ = floor + exp(s): the floor holds at every step
    )
    ll = np.array([h["loglik"] for h in m.history_])
    assert np.all(np.diff(ll) >= 0) and ll[-1] > ll[0] + 0.1
    assert m.score(X) == pytest.approx(ll[-1], abs=1e-10)
    assert np.all(m.noise_std_ >= 0.15)


def test_lbfgs_recovers_planted_d1():
    # 40 quasi-Newton steps get within 0.05 nats of the truth where 40 EM iterations do not
    true = ExactDGN.from_decoder(Decoder.random([1, 6, 2], seed=11), 0.1)
    X = true.sample(1000, random_state=1)
    Xt = true.sample(2000, random_state=2)
    m = _fit_lbfgs(X, hidden_sizes=(6,), max_iter=40, tol=1e-9)
    assert m.score(Xt) >= true.score(Xt) - 0.05


@pytest.mark.parametrize(
    ("sizes", "noise", "nan", "outlier"),
    [
        ([1, 5, 3], 0.3, False, False),
        ([1, 6, 4], [0.3, 0.5, 0.4, 0.2], True, True),
        ([2, 6, 3], [0.3, 0.5, 0.4], False, True),
        ([2, 8, 8, 5], 0.2, True, False),
    ],
)
def test_blocked_gradient_equals_the_pairwise_reference(sizes, noise, nan, outlier):
    """The per-region sums in blocks of pairs (any block size) give autograd of ``Q`` pair by
    pair (``surrogate_objective``): NaN entries (missing) and a 1e4 σ outlier included."""
    import torch

    from exactdgn.em import region_stats
    from exactdgn.em._gradient import exact_gradient, surrogate_objective

    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=2), noise)
    X = m.sample(40, random_state=1)
    if outlier:
        X[3] += 1e4 * np.max(noise)
    if nan:
        X[np.random.default_rng(0).random(X.shape) < 0.2] = np.nan
        X[5, 1:] = np.nan  # a row with one observed value
        X[5, 0] = 0.5
    st = m._pairs(m._check_X(X, allow_nan=True), need_moments=True)
    rs = region_stats(X, m.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
    std = m.noise_std_ if m.noise == "diagonal" else m.noise_std_[0]
    params = [
        torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
        for W, c in zip(m.decoder_.weights, m.decoder_.biases, strict=True)
        for a in (W, c)
    ]
    params.append(torch.tensor(np.log(np.asarray(std, dtype=np.float64)), requires_grad=True))
    ref = torch.autograd.grad(surrogate_objective(params, m.decoder_, rs, X), params)
    for chunk_bytes in (256 * 2**20, 3000):  # one block; a few pairs per block
        got = exact_gradient(m.decoder_, std, rs, X, chunk_bytes=chunk_bytes)
        for g, r in zip(got, ref, strict=True):
            r = r.numpy()
            assert g.shape == r.shape
            assert np.abs(g - r).max() <= 1e-12 * np.abs(r).max()


def test_gradient_minibatches_of_data_with_nan_all_take_the_numpy_path(monkeypatch):
    """With ``device=`` and a few NaN rows the trainer's parameters live on the host (the NaN
    rule of the whole data), but a complete minibatch's E-step went to the device and handed
    device statistics to the host parameters (on CUDA: a device mismatch)."""
    import exactdgn.training._gradient as tg
    from exactdgn.datasets import two_moons

    seen = []
    orig = tg.gradient_form

    def spy(params, dec, stats, X, chunk_bytes=None):
        seen.append((type(stats).__name__, str(params[0].device)))
        return orig(params, dec, stats, X, chunk_bytes)

    monkeypatch.setattr(tg, "gradient_form", spy)
    X = two_moons(600, random_state=0)
    X[:5, 1] = np.nan  # 5 rows of 600: most minibatches of 256 are complete
    est = ExactDGN(
        latent_dim=1, hidden_sizes=(8,), method="gradient", max_iter=1, tol=0, random_state=0,
        device="cpu", n_init=1, init="pca", progress=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    assert len(seen) == 3 and all(s == ("RegionStats", "cpu") for s in seen), seen
    assert est._train_device(X[5:]) is not None  # after the fit: complete data on the device
