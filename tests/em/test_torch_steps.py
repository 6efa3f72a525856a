"""Exact EM and the exact gradient on a torch device (``device=...``) against the numpy path.

Every test runs on CPU tensors and, where torch sees a GPU, on CUDA (``DEVICES``). The numpy
M-step and gradient are themselves checked against finite differences of the exact likelihood
and the quadrature oracles (``tests/em``, ``tests/oracles``); here the device path is checked
against them, points 1e4 sigma away included.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from exactdgn import Decoder, ExactDGN
from exactdgn.em import expected_complete_loglik, m_step, region_stats
from exactdgn.em._torch_steps import TorchRegionStats, region_stats_t
from exactdgn.inference import marginal_pairs, region_geometry
from exactdgn.inference._torch_marginal import pairs_torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rel(a, b):
    """Largest difference relative to the largest magnitude (at least 1)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(1.0, np.abs(a).max()))


def _stats(sizes, noise, seed, device, n=200):
    """The numpy statistics and the device statistics of the same numpy E-step pairs."""
    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), noise)
    X = m.sample(n, random_state=seed)
    X[0] += 50.0 * np.asarray(noise).max()  # an outlying point (its pairs are in the far tail)
    geom = region_geometry(m.partition_, m.noise_std_)
    st = marginal_pairs(geom, X, need_moments=True)
    pats = m.partition_.patterns
    rs = region_stats(X, pats, st.point, st.region, st.log_weight, st.mean, st.cov)

    def t(a):
        return torch.as_tensor(a, device=device)

    rt = region_stats_t(
        t(X), pats, t(st.point), t(st.region), t(st.log_weight), t(st.mean), t(st.cov)
    )
    return m, X, rs, rt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sizes", "noise"), [([1, 6, 6, 3], 0.2), ([2, 8, 8, 5], 0.1)])
def test_region_stats_match_numpy(device, sizes, noise):
    _, _, rs, rt = _stats(sizes, noise, 1, device)
    assert isinstance(rt, TorchRegionStats) and rt.device.type == device
    for f in ("s", "Z2", "XZ", "w"):
        assert _rel(getattr(rs, f), getattr(rt, f).cpu().numpy()) < 1e-13, f


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_region_stats_of_the_device_estep_match_numpy(device, latent):
    """Device E-step -> device statistics equals numpy E-step -> numpy statistics."""
    m = ExactDGN.from_decoder(Decoder.random([latent, 10, 10, 6], seed=3), 0.1)
    X = m.sample(150, random_state=2)
    X[1] += 1e4 * 0.1  # 1e4 sigma away
    geom = region_geometry(m.partition_, m.noise_std_)
    pats = m.partition_.patterns
    st = marginal_pairs(geom, X, need_moments=True)
    rs = region_stats(X, pats, st.point, st.region, st.log_weight, st.mean, st.cov)
    Xt = torch.as_tensor(X, device=device)
    tp = pairs_torch(geom, Xt, device, need_moments=True)
    rt = region_stats_t(Xt, pats, tp.point, tp.region, tp.log_weight, tp.mean, tp.cov)
    for f in ("s", "Z2", "XZ"):
        assert _rel(getattr(rs, f), getattr(rt, f).cpu().numpy()) < 1e-10, f


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize(
    ("sizes", "noise", "weight_decay"),
    [([2, 8, 8, 5], [0.1, 0.2, 0.3, 0.1, 0.2], 0.0), ([1, 6, 6, 3], 0.2, 0.1), ([1, 5, 4], 0.1, 0)],
)
def test_m_step_matches_numpy(device, diagonal, sizes, noise, weight_decay):
    """Well-conditioned normal equations: the device M-step gives numpy's parameters to 1e-10."""
    m, X, rs, rt = _stats(sizes, noise, 1, device)
    kw = {"diagonal": diagonal, "min_std": 1e-3, "weight_decay": weight_decay}
    for layers in (None, [len(sizes) - 2]):
        d1, s1 = m_step(m.decoder_, rs, m.noise_std_, X, layers=layers, **kw)
        d2, s2 = m_step(m.decoder_, rt, m.noise_std_, X, layers=layers, **kw)
        for a, b in zip(d1.weights + d1.biases, d2.weights + d2.biases, strict=True):
            assert _rel(a, b) < 1e-10
        assert np.max(np.abs(s1 - s2) / s1) < 1e-10
        assert d2.activations == d1.activations


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("maxiter", [4, 5000])
def test_wide_layer_cg_matches_numpy(device, maxiter, monkeypatch):
    """Hidden layers solved by conjugate gradients (beyond ``DIRECT_UNKNOWNS`` unknowns; here
    every layer): the device runs numpy's CG (``_steps.layer_cg``) with the same
    preconditioner, cut short or converged, and gives numpy's parameters."""
    from exactdgn.em import _steps

    monkeypatch.setattr(_steps, "DIRECT_UNKNOWNS", 0)
    monkeypatch.setattr(_steps, "CG_MAXITER", maxiter)
    m, X, rs, rt = _stats([2, 8, 8, 5], 0.1, 1, device)
    kw = {"diagonal": True, "min_std": 1e-3, "weight_decay": 0.05}
    d1, s1 = m_step(m.decoder_, rs, m.noise_std_, X, **kw)
    d2, s2 = m_step(m.decoder_, rt, m.noise_std_, X, **kw)
    for a, b in zip(d1.weights + d1.biases, d2.weights + d2.biases, strict=True):
        assert _rel(a, b) < 1e-9
    assert np.max(np.abs(s1 - s2) / s1) < 1e-9


@pytest.mark.parametrize("device", DEVICES)
def test_m_step_singular_layer_within_numpy_sensitivity(device):
    """A hidden layer whose normal equations are singular (cond ~ 1e19: d = 1, few regions)
    is solved with numpy's tiny relative ridge, so its answer moves at cond x eps: numpy's own
    M-step changes its objective Q by ~1e-6 relative when its statistics move by one ulp.
    The device M-step stays within that sensitivity (parameters and Q), and improves Q as
    much as numpy's does."""
    import copy

    m, X, rs, rt = _stats([1, 6, 6, 3], 0.2, 1, device)
    kw = {"diagonal": False, "min_std": 1e-3}
    d1, s1 = m_step(m.decoder_, rs, m.noise_std_, X, **kw)
    d2, s2 = m_step(m.decoder_, rt, m.noise_std_, X, **kw)

    def q(d, s):
        return expected_complete_loglik(d, rs, s, X)

    q0, q1, q2 = q(m.decoder_, m.noise_std_), q(d1, s1), q(d2, s2)
    drift_q, drift_p = 0.0, 0.0
    for field in ("Z2", "XZ"):  # numpy against itself, statistics moved by one ulp
        moved = copy.copy(rs)
        setattr(moved, field, getattr(rs, field) * (1 + np.finfo(float).eps))
        d3, s3 = m_step(m.decoder_, moved, m.noise_std_, X, **kw)
        drift_q = max(drift_q, abs(q(d3, s3) - q1))
        drift_p = max(drift_p, *(_rel(a, b) for a, b in zip(d1.weights, d3.weights, strict=True)))
    assert drift_q > 1e-9 * abs(q1)  # the problem is ill-conditioned for numpy too
    assert abs(q1 - q2) <= 10 * drift_q
    assert max(_rel(a, b) for a, b in zip(d1.weights, d2.weights, strict=True)) <= 10 * drift_p
    assert q2 - q0 >= (q1 - q0) * (1 - 1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_em_on_device_never_touches_the_numpy_m_step(device, monkeypatch):
    """One EM iteration with ``device=`` reduces and solves on the device: the numpy
    statistics and layer updates are never called."""
    import exactdgn.em._steps as steps
    import exactdgn.model as model

    def boom(*a, **k):
        raise AssertionError("numpy M-step path used")

    monkeypatch.setattr(steps, "update_layer", boom)
    monkeypatch.setattr(steps, "_residual_sq", boom)
    monkeypatch.setattr(model, "region_stats", boom)
    X = ExactDGN.from_decoder(Decoder.random([2, 6, 4], seed=0), 0.2).sample(80, random_state=0)
    est = ExactDGN(
        latent_dim=2, hidden_sizes=(6,), method="em", max_iter=2, init="pca", device=device
    )
    est.set_params(random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    assert len(est.history_) == 3 and est._fit_data is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sizes", "noise"), [([1, 5, 3], 0.3), ([2, 6, 3], [0.3, 0.5, 0.4])])
def test_exact_gradient_on_device_far_points(device, sizes, noise):
    """The gradient on the device (Fisher's identity: no derivative of a log-CDF kernel is
    taken, so torch's inf/nan ``log_ndtr`` gradient in the far tail never enters) equals
    numpy's and finite differences of the exact likelihood, with a point 1e4 sigma away."""
    dec = Decoder.random(sizes, seed=2)
    ref = ExactDGN.from_decoder(dec, noise)
    dv = ExactDGN.from_decoder(dec, noise, device=device)
    X = ref.sample(15, random_state=1)
    X[0] += 1e4 * np.max(noise)
    X[1] -= 100.0
    g_ref, g_dev = ref.exact_gradient(X), dv.exact_gradient(X)
    for a, b in zip(g_ref, g_dev, strict=True):
        assert np.all(np.isfinite(b))
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))

    def total(d, s):
        return ExactDGN.from_decoder(d, s, device=device).score_samples(X).sum()

    assert total(dec, noise) < -1e7

    def fd(move, h=1e-3):
        """Richardson-extrapolated central differences (truncation O(h^4); the far point's
        log p ~ -1e8 makes small steps lose to rounding)."""
        c = [(total(*move(s)) - total(*move(-s))) / (2 * s) for s in (h, h / 2)]
        return (4 * c[1] - c[0]) / 3

    for k, idx in ((0, (0, 0)), (len(dec.weights) - 1, (1, 2))):

        def move(s, k=k, idx=idx):
            d = dec.copy()
            d.weights[k][idx] += s
            return d, noise

        assert g_dev[2 * k][idx] == pytest.approx(fd(move), rel=1e-7)
    std = np.asarray(noise, dtype=float)
    assert np.sum(g_dev[-1]) == pytest.approx(fd(lambda s: (dec, std * np.exp(s))), rel=1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("latent", "method", "noise"),
    [
        (1, "lbfgs", "isotropic"),
        (2, "lbfgs", "diagonal"),
        (1, "gradient", "isotropic"),
        (2, "gradient", "diagonal"),
        (2, "auto", "isotropic"),
        (1, "em", "diagonal"),
    ],
)
def test_training_trajectory_on_device(device, latent, method, noise):
    """``fit`` with ``device=`` (E-step, statistics, M-step, gradients and the optimiser's
    parameters on the device) follows the numpy run. Tolerance 1e-9: the E-step agrees to
    ~1e-13 and each iteration is a smooth function of it (L-BFGS, Adam), or a linear solve
    whose conditioning amplifies it (EM's normal equations: up to ~1e-10 here)."""
    X = ExactDGN.from_decoder(Decoder.random([latent, 6, 3], seed=7), 0.2).sample(
        120, random_state=0
    )
    X[3] += 30.0  # a far outlier in the training data
    kw = dict(
        latent_dim=latent,
        hidden_sizes=(6,),
        method=method,
        noise=noise,
        max_iter=4,
        tol=0.0,
        random_state=0,
        progress=False,
    )
    ref = ExactDGN(**kw).fit(X)
    got = ExactDGN(**kw, device=device).fit(X)
    a = np.array([h["loglik"] for h in ref.history_])
    b = np.array([h["loglik"] for h in got.history_])
    assert len(a) == len(b) == 5
    np.testing.assert_allclose(b, a, rtol=1e-9)
    assert [h["method"] for h in ref.history_] == [h["method"] for h in got.history_]
    for p, q in zip(
        ref.decoder_.weights + ref.decoder_.biases,
        got.decoder_.weights + got.decoder_.biases,
        strict=True,
    ):
        assert _rel(p, q) < 1e-9
    np.testing.assert_allclose(got.noise_std_, ref.noise_std_, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["lbfgs", "gradient"])
def test_device_checkpoint_resume(device, method, tmp_path):
    """Optimiser states on the device are saved and restored (a resumed run is the same)."""
    X = ExactDGN.from_decoder(Decoder.random([1, 5, 3], seed=1), 0.2).sample(60, random_state=0)
    kw = dict(hidden_sizes=(5,), method=method, tol=0.0, random_state=0, progress=False)
    straight = ExactDGN(**kw, max_iter=4, device=device).fit(X)
    first = ExactDGN(**kw, max_iter=2, device=device).fit(X)
    cont = ExactDGN(**kw, max_iter=2, device=device, warm_start=True)
    cont.decoder_, cont.noise_std_ = first.decoder_, first.noise_std_
    cont._set_state(first.decoder_, first.noise_std_)
    cont.history_, cont._train_state = first.history_, first._train_state
    cont.fit(X)
    a = [h["loglik"] for h in straight.history_]
    b = [h["loglik"] for h in cont.history_]
    np.testing.assert_allclose(b, a, rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_device_training_estep_honours_chunk_bytes(device, latent, monkeypatch):
    """The training E-step on the device (``fit``, ``exact_gradient``) splits the points into
    chunks of at most ``chunk_bytes`` as ``marginal_pairs(..., device=)`` does (it ran the
    whole training set as one chunk, whatever ``chunk_bytes``), with the same results."""
    from exactdgn.inference import _torch_marginal

    dec = Decoder.random([latent, 8, 4], seed=1)
    ref = ExactDGN.from_decoder(dec, 0.2)
    X = ref.sample(100, random_state=0)
    per_point = 8 * ref.geometry_.n_regions * (3 * latent + 6)  # the numpy path's estimate
    m = ExactDGN.from_decoder(dec, 0.2, device=device, chunk_bytes=20 * per_point)
    calls = []
    log_kappa = _torch_marginal._log_kappa
    monkeypatch.setattr(
        _torch_marginal, "_log_kappa", lambda dg, Xc: calls.append(len(Xc)) or log_kappa(dg, Xc)
    )
    got = m.exact_gradient(X)
    assert calls == [20] * 5
    for a, b in zip(ref.exact_gradient(X), got, strict=True):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))
