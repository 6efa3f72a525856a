"""Independent references for exact EM with missing values (NaN), d = 1 and d = 2.

Everything here is an expectation under ``p(z | x_obs)`` of functions of ``z`` evaluated by
forward passes (:func:`reference_forward`), integrated by the adaptive line quadrature of
:mod:`tests.oracles.likelihood` (its ``extra`` features: d = 1 one line, d = 2 the nested
quadrature with the partition's vertices as outer breakpoints). Marginalising an output with
diagonal noise drops its row, so ``p(z | x_obs)`` is the posterior of the decoder restricted
to the observed rows. Regions are labelled by the activation pattern of the quadrature node,
so per-region sums need no region geometry, and the missing coordinates enter through the
E-step decoder's outputs ``g_j(z)`` themselves (not through ``A_r z + b_r``). No formula is
shared with the library: no truncated moments, no ``κ``, no normal equations.

* :func:`posterior_expectations`: ``E[h(z) | x_obs]`` of arbitrary features ``h``.
* :func:`missing_em_stats`: the per-region statistics of the M-step, ``s_r``, ``Z2_r``,
  ``XZ_r`` with the missing ``x_j`` replaced by ``x̃_j = E[x_j | z] = g_j(z)``, and the noise
  update's expected squared residuals under new per-region maps (missing coordinates:
  ``σ_j² + (g_j(z) - A'_rj z - b'_rj)²``).
* :func:`output_layer_moments` and :func:`output_layer_q`: the expected complete-data
  log-likelihood ``Q`` of the output layer's parameters and of the noise, for a direct
  numerical maximisation.
"""

from __future__ import annotations

import numpy as np

from .enumerate import kink_units, reference_forward
from .likelihood import _oracle_1d, _oracle_2d_point, _Rows

__all__ = [
    "missing_em_stats",
    "output_layer_moments",
    "output_layer_q",
    "posterior_expectations",
]

_LOG2PI = float(np.log(2.0 * np.pi))


def posterior_expectations(decoder, x, sigma, features, q: int, *, tol: float = 1e-13):
    """``E[h(z) | x_obs]`` (q,) for one row ``x`` (NaN = missing), ``h = features(Z)`` (n, q).

    d = 1: one adaptive line quadrature (relative tolerance ``tol``); d = 2: the nested
    quadrature of :func:`tests.oracles.likelihood.oracle_logpx_2d` (outer ``rtol`` 1e-11).
    Also returns ``log p(x_obs)``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    obs = ~np.isnan(x)
    sub = _Rows(decoder, obs)
    d = decoder.weights[0].shape[1]
    if d == 1:
        logI, mom, *_ = _oracle_1d(
            sub, x[obs][None], sig[obs], rtol=tol, n_mom=1 + q, extra=features
        )
        return mom[0, 1 : 1 + q], float(logI[0])
    if d == 2:
        logI, mom, _, _ = _oracle_2d_point(
            sub, x[obs], sig[obs], rtol=max(tol, 1e-11), n_mom=1 + q, extra=features
        )
        return mom[1 : 1 + q], float(logI)
    raise ValueError("the oracle integrates d = 1 and d = 2")


def _labels(decoder, patterns, Z):
    """(n,) index of the row of ``patterns`` (kink units) of each latent point's pattern."""
    kink = kink_units(decoder)
    _, _, pat = reference_forward(decoder, Z)
    keys = {p[kink].tobytes(): i for i, p in enumerate(np.asarray(patterns, dtype=bool))}
    lab = np.array([keys.get(p[kink].tobytes(), -1) for p in pat])
    if np.any(lab < 0):
        raise RuntimeError("a quadrature node lies in a region missing from `patterns`")
    return lab


def missing_em_stats(decoder, X, sigma, patterns, new_maps=None, *, tol: float = 1e-13):
    """Per-region E-step statistics of exact EM on ``X`` with NaN (see the module docstring).

    Parameters
    ----------
    decoder : the E-step decoder (latent dim 1 or 2)
    X : (N, D) with NaN where missing (each row at least one observed value)
    sigma : float or (D,) the E-step noise std
    patterns : (R, n_units) bool the regions' activation patterns (labels only)
    new_maps : optional ``(A', b')`` (R, D, d), (R, D): also the residual sums under them

    Returns
    -------
    dict with ``s`` (R,), ``Z2`` (R, d+1, d+1), ``XZ`` (R, D, d+1), ``n_obs`` (D,) and, with
    ``new_maps``, ``rsq`` (D,) ``= Σ_n Σ_r E[1_r(z) (x̃_j - A'_rj z - b'_rj)²]`` with
    ``σ_j²`` added for the missing ``x_j``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    N, D = X.shape
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (D,))
    R = len(patterns)
    d = decoder.weights[0].shape[1]
    e = d + 1
    s, Z2, XZ = np.zeros(R), np.zeros((R, e, e)), np.zeros((R, D, e))
    rsq = np.zeros(D)
    for n in range(N):
        x = X[n]
        obs = ~np.isnan(x)

        def features(Z, x=x, obs=obs):
            lab = _labels(decoder, patterns, Z)
            g = reference_forward(decoder, Z)[0]
            xt = np.where(obs, x, g)  # x̃: the missing entries' E[x_j | z] = g_j(z)
            zt = np.concatenate([Z, np.ones((len(Z), 1))], axis=1)
            ind = (lab[:, None] == np.arange(R)[None, :]).astype(float)  # (n, R)
            out = [
                (ind[:, :, None, None] * zt[:, None, :, None] * zt[:, None, None, :]).reshape(
                    len(Z), -1
                ),
                (ind[:, :, None, None] * xt[:, None, :, None] * zt[:, None, None, :]).reshape(
                    len(Z), -1
                ),
            ]
            if new_maps is not None:
                A, b = new_maps
                fit = np.einsum("rjk,nk->nrj", A, Z) + b[None]  # (n, R, D)
                res = np.square(xt[:, None, :] - fit) + np.where(obs, 0.0, sig**2)[None, None]
                out.append((ind[:, :, None] * res).sum(axis=1))
            return np.concatenate(out, axis=1)

        q = R * e * e + R * D * e + (D if new_maps is not None else 0)
        m, _ = posterior_expectations(decoder, x, sig, features, q, tol=tol)
        Z2 += m[: R * e * e].reshape(R, e, e)
        XZ += m[R * e * e : R * e * e + R * D * e].reshape(R, D, e)
        if new_maps is not None:
            rsq += m[R * e * e + R * D * e :]
    s = Z2[:, d, d].copy()
    out = {"s": s, "Z2": Z2, "XZ": XZ, "n_obs": (~np.isnan(X)).sum(axis=0)}
    if new_maps is not None:
        out["rsq"] = rsq
    return out


def _hidden(decoder, Z):
    """``[h(z); 1]`` (n, H+1): the last hidden layer's outputs (own forward pass)."""
    h = np.asarray(Z, dtype=np.float64)
    pos = np.ravel(decoder.positive_slopes)
    neg = np.ravel(decoder.negative_slopes)
    start = 0
    for W, c in zip(decoder.weights[:-1], decoder.biases[:-1], strict=True):
        a = h @ W.T + c
        k = W.shape[0]
        h = np.where(a > 0, pos[start : start + k] * a, neg[start : start + k] * a)
        start += k
    return np.concatenate([h, np.ones((len(h), 1))], axis=1)


def output_layer_moments(decoder, X, sigma, *, tol: float = 1e-13):
    """The expectations that ``Q`` of the output layer and the noise depends on.

    Per row ``n`` (under ``p(z | x_obs)`` of the E-step ``decoder``, ``sigma``):
    ``HH_n = E[h̃ h̃ᵀ]`` (h̃ = [h(z); 1], the last hidden layer), ``GH_n = E[g(z) h̃ᵀ]`` (D, H+1)
    and ``GG_n = E[g(z)²]`` (D,) of the E-step outputs. Returns them stacked over rows.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    N, D = X.shape
    H1 = decoder.weights[-1].shape[1] + 1

    def features(Z):
        h = _hidden(decoder, Z)
        g = reference_forward(decoder, Z)[0]
        n = len(Z)
        return np.concatenate(
            [
                (h[:, :, None] * h[:, None, :]).reshape(n, -1),
                (g[:, :, None] * h[:, None, :]).reshape(n, -1),
                g * g,
            ],
            axis=1,
        )

    q = H1 * H1 + D * H1 + D
    HH, GH, GG = np.zeros((N, H1, H1)), np.zeros((N, D, H1)), np.zeros((N, D))
    for n in range(N):
        m, _ = posterior_expectations(decoder, X[n], sigma, features, q, tol=tol)
        HH[n] = m[: H1 * H1].reshape(H1, H1)
        GH[n] = m[H1 * H1 : H1 * H1 + D * H1].reshape(D, H1)
        GG[n] = m[H1 * H1 + D * H1 :]
    return HH, GH, GG


def output_layer_q(W, c, log_std, X, sigma_old, moments):
    """``Q`` (total over rows) of output weights ``W`` (D, H), biases ``c`` (D,) and noise
    ``exp(log_std)`` (D,) and its gradient in ``(W, c, log_std)``.

    ``Q = Σ_n Σ_j [-½ log 2πσ_j² - ½ E[(x̃_nj - w̃_j h̃)²] / σ_j²]`` with, for a missing
    ``x_nj``, ``E[(x_nj - w̃_j h̃)²] = σ_old,j² + E[(g_j - w̃_j h̃)²]`` (the E-step's
    ``x_nj | z ~ N(g_j(z), σ_old,j²)``), expanded in the moments of
    :func:`output_layer_moments`.
    """
    HH, GH, GG = moments
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    N, D = X.shape
    obs = ~np.isnan(X)
    x0 = np.where(obs, X, 0.0)
    Wt = np.concatenate([W, c[:, None]], axis=1)  # (D, H+1)
    s2_old = np.broadcast_to(np.asarray(sigma_old, dtype=np.float64) ** 2, (D,))
    eh = HH[:, -1, :]  # E[h̃]
    # E[(x̃_nj - w̃_j h̃)²] per row and output
    quad = np.einsum("jk,nkl,jl->nj", Wt, HH, Wt)
    cross_obs = x0 * (eh @ Wt.T)  # x E[w̃ h̃]
    cross_mis = np.einsum("njk,jk->nj", GH, Wt)
    e2 = np.where(obs, x0 * x0 - 2 * cross_obs + quad, s2_old + GG - 2 * cross_mis + quad)
    var = np.exp(2.0 * log_std)
    S = e2.sum(axis=0)  # (D,)
    Q = float(-0.5 * (N * (_LOG2PI + 2.0 * log_std) + S / var).sum())
    # gradient: dS_j/dw̃_j = 2 Σ_n (HH_n w̃_j - y_nj), y = x E[h̃] (observed) or E[g_j h̃]
    y = np.where(obs[:, :, None], x0[:, :, None] * eh[:, None, :], GH)
    dS = 2.0 * (np.einsum("nkl,jl->jk", HH, Wt) - y.sum(axis=0))
    gWt = -0.5 * dS / var[:, None]
    gls = -N + S / var
    return Q, gWt[:, :-1], gWt[:, -1], gls
