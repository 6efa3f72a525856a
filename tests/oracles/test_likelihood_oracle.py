"""Self-tests of the forward-pass quadrature oracle in tests/oracles/likelihood.py.

References used here share nothing with the oracle's method: closed Gaussian forms evaluated
in 50-digit mpmath (affine decoders), a brute-force trapezoid on a uniform grid (d = 1), the
normalisation ∫ p(x) dx = 1 (d = 1, D = 1), and products of d = 1 values for rotated
block-separable decoders (d = 2).
"""

from __future__ import annotations

import time

import mpmath as mp
import numpy as np
import pytest

from exactdgn import Decoder
from tests.oracles.likelihood import (
    _Net,
    oracle_logpx_1d,
    oracle_logpx_2d,
    oracle_posterior_moments_1d,
    oracle_posterior_moments_2d,
)


# ---------------------------------------------------------------------------- references
def _gauss_logpdf_mp(W, b, X, sigma):
    """log N(x; b, diag(sigma^2) + W W^T) in 50-digit arithmetic."""
    D = b.size
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (D,))
    out = []
    with mp.workdps(50):
        C = mp.matrix(D, D)
        for i in range(D):
            for j in range(D):
                C[i, j] = mp.fsum(mp.mpf(W[i, k]) * mp.mpf(W[j, k]) for k in range(W.shape[1]))
            C[i, i] += mp.mpf(sig[i]) ** 2
        Ci = mp.inverse(C)
        logdet = mp.log(mp.det(C))
        for x in np.atleast_2d(X):
            r = mp.matrix([mp.mpf(x[i]) - mp.mpf(b[i]) for i in range(D)])
            q = (r.T * Ci * r)[0]
            out.append(float(-0.5 * D * mp.log(2 * mp.pi) - 0.5 * logdet - 0.5 * q))
    return np.array(out)


def _gauss_posterior(W, b, x, sigma):
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (b.size,))
    P = W.T @ (W / sig[:, None] ** 2)
    S = np.linalg.inv(np.eye(W.shape[1]) + P)
    return S @ (W.T @ ((x - b) / sig**2)), S


def _affine_points(W, b, sigma, rng, n_near=2):
    """Points near the data, 100 sigma and 1e4 sigma off (in a random direction)."""
    D, d = W.shape
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (D,))
    near = [b + W @ rng.normal(size=d) + sig * rng.normal(size=D) for _ in range(n_near)]
    u = rng.normal(size=D)
    u /= np.linalg.norm(u)
    return np.array([*near, b + 100 * sig * u, b + 1e4 * sig * u])


def _tol(ref, abs_tol=1e-11, rel_tol=1e-13):
    return np.maximum(abs_tol, rel_tol * np.abs(ref))


# ---------------------------------------------------------------------------- forward pass
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs", "prelu"])
def test_own_forward_pass_matches_decoder(act):
    dec = Decoder.random([2, 7, 5, 3], activation=act, negative_slope=0.2, seed=3)
    Z = np.random.default_rng(0).normal(size=(50, 2)) * 3
    g, dg, pre = _Net(dec).eval(Z, np.array([0.3, -0.7]), want_pre=True)
    np.testing.assert_allclose(g, dec(Z), rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(pre > 0, dec.activation_pattern(Z)[:, dec.kink_mask])
    np.testing.assert_allclose(dg, dec.jacobian(Z) @ np.array([0.3, -0.7]), atol=1e-13)


# ---------------------------------------------------------------------------- d = 1
@pytest.mark.parametrize("sigma", [0.3, np.array([0.3, 0.05, 1.5])])
def test_1d_affine_matches_closed_form(sigma):
    rng = np.random.default_rng(11)
    W, b = rng.normal(size=(3, 1)), rng.normal(size=3)
    dec = Decoder([W], [b])
    X = _affine_points(W, b, sigma, rng)
    X = np.vstack([X, b + 1e3 * W[:, 0]])  # far along the range: mode at z ~ 1e3
    ref = _gauss_logpdf_mp(W, b, X, sigma)
    got = oracle_logpx_1d(dec, X, sigma)
    assert np.all(np.abs(got - ref) <= _tol(ref)), got - ref


def test_1d_affine_posterior_moments():
    rng = np.random.default_rng(12)
    W, b = rng.normal(size=(4, 1)), rng.normal(size=4)
    dec = Decoder([W], [b])
    sigma = np.array([0.2, 0.4, 0.3, 1.0])
    for x in _affine_points(W, b, sigma, rng)[:3]:
        mean, var = oracle_posterior_moments_1d(dec, x, sigma)
        m_ref, S_ref = _gauss_posterior(W, b, x, sigma)
        assert mean.shape == (1,) and var.shape == (1, 1)
        np.testing.assert_allclose(mean, m_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(var, S_ref, rtol=1e-12)


def _trapezoid_logpx(dec, x, sigma, h, T=12.0):
    t = np.arange(-T, T + h / 2, h)
    sig = np.broadcast_to(sigma, x.shape)
    r = (x - dec(t[:, None])) / sig
    f = -0.5 * t**2 - 0.5 * np.sum(r * r, axis=1)
    f += -0.5 * (1 + x.size) * np.log(2 * np.pi) - np.sum(np.log(sig))
    fmax = f.max()
    w = np.exp(f - fmax)
    return fmax + np.log(h * (w.sum() - 0.5 * (w[0] + w[-1])))


@pytest.mark.parametrize("act,seed", [("relu", 0), ("leaky_relu", 1), ("abs", 2)])
def test_1d_relu_matches_fine_trapezoid(act, seed):
    dec = Decoder.random([1, 16, 16, 3], activation=act, seed=seed)
    rng = np.random.default_rng(seed)
    sigma = np.array([0.3, 0.2, 0.25])
    X = dec(rng.normal(size=(3, 1))) + sigma * rng.normal(size=(3, 3))
    got = oracle_logpx_1d(dec, X, sigma)
    for x, g in zip(X, got, strict=True):
        # trapezoid error O(h^2 (|f''| + kink jumps)): ~1e-10 here (it does not cancel in a
        # Richardson pair because the kinks sit at arbitrary offsets from the grid)
        ref = _trapezoid_logpx(dec, x, sigma, 1e-5, T=10.0)
        assert abs(g - ref) < 5e-10, g - ref


def test_1d_density_integrates_to_one():
    dec = Decoder.random([1, 8, 8, 1], activation="leaky_relu", negative_slope=0.2, seed=4)
    sigma = 0.3
    gz = dec(np.linspace(-9, 9, 4001)[:, None])[:, 0]
    xs = np.linspace(gz.min() - 12 * sigma, gz.max() + 12 * sigma, 6001)
    lp = oracle_logpx_1d(dec, xs[:, None], sigma, tol=1e-12)
    p = np.exp(lp)
    total = (xs[1] - xs[0]) * (p.sum() - 0.5 * (p[0] + p[-1]))  # spectrally accurate here
    assert abs(total - 1.0) < 1e-10, total - 1.0


# ---------------------------------------------------------------------------- d = 2
def test_2d_affine_matches_closed_form():
    rng = np.random.default_rng(21)
    W, b = rng.normal(size=(4, 2)), rng.normal(size=4)
    dec = Decoder([W], [b])
    sigma = np.array([0.3, 0.2, 0.5, 0.4])
    X = _affine_points(W, b, sigma, rng, n_near=1)
    ref = _gauss_logpdf_mp(W, b, X, sigma)
    got = oracle_logpx_2d(dec, X, sigma)
    assert np.all(np.abs(got - ref) <= _tol(ref, abs_tol=1e-10)), got - ref


def test_2d_affine_posterior_moments():
    rng = np.random.default_rng(22)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=3)
    dec = Decoder([W], [b])
    sigma = 0.25
    x = b + W @ rng.normal(size=2) + sigma * rng.normal(size=3)
    mean, cov = oracle_posterior_moments_2d(dec, x, sigma)
    m_ref, S_ref = _gauss_posterior(W, b, x, sigma)
    assert mean.shape == (2,) and cov.shape == (2, 2)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(cov, S_ref, rtol=1e-10, atol=1e-12)


def _rotated_block_decoder(act, seed, theta, h=6, Da=2, Db=2):
    """g(z) = [g_a(u1), g_b(u2)], u = Q z: a genuinely 2-D CPA map with oblique kinks."""
    da = Decoder.random([1, h, h, Da], activation=act, seed=seed)
    db = Decoder.random([1, h, h, Db], activation=act, seed=seed + 100)
    Q = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    def blk(A, B):
        out = np.zeros((A.shape[0] + B.shape[0], A.shape[1] + B.shape[1]))
        out[: A.shape[0], : A.shape[1]] = A
        out[A.shape[0] :, A.shape[1] :] = B
        return out

    Ws = [blk(A, B) for A, B in zip(da.weights, db.weights, strict=True)]
    Ws[0] = Ws[0] @ Q
    cs = [np.concatenate([a, b]) for a, b in zip(da.biases, db.biases, strict=True)]
    acts = [("leaky_relu", 0.1) if act == "leaky_relu" else act] * 2
    return Decoder(Ws, cs, acts), da, db, Q


@pytest.mark.parametrize(
    "act,seed,theta,far",
    [
        ("relu", 0, 0.3, False),
        pytest.param("abs", 1, 1.1, False, marks=pytest.mark.slow),
        ("leaky_relu", 2, 0.7, True),
    ],
)
def test_2d_rotated_separable_matches_1d_product(act, seed, theta, far):
    dec, da, db, Q = _rotated_block_decoder(act, seed, theta)
    rng = np.random.default_rng(seed)
    sigma = np.array([0.2, 0.3, 0.25, 0.15])
    z = rng.normal(size=(1, 2))
    x = dec(z)[0] + sigma * rng.normal(size=4)
    if far:
        x = x + 100 * sigma * rng.normal(size=4) / 2
    ref = oracle_logpx_1d(da, x[:2], sigma[:2]) + oracle_logpx_1d(db, x[2:], sigma[2:])
    t0 = time.perf_counter()
    got = oracle_logpx_2d(dec, x, sigma)
    elapsed = time.perf_counter() - t0
    assert abs(got[0] - ref[0]) <= max(1e-9, 1e-12 * abs(ref[0])), (got - ref, elapsed)

    # posterior moments: u = Q z has independent coordinates with the d = 1 moments
    if not far:
        mean, cov = oracle_posterior_moments_2d(dec, x, sigma)
        ma, va = oracle_posterior_moments_1d(da, x[:2], sigma[:2])
        mb, vb = oracle_posterior_moments_1d(db, x[2:], sigma[2:])
        mu = np.array([ma[0], mb[0]])
        Su = np.diag([va[0, 0], vb[0, 0]])
        np.testing.assert_allclose(mean, Q.T @ mu, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(cov, Q.T @ Su @ Q, rtol=1e-9, atol=1e-10)
