"""Initialisation of a decoder and noise level for EM / gradient training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._threads import interruptible
from ..decoder import Decoder

__all__ = ["DataMoments", "data_moments", "initialize"]


@dataclass
class DataMoments:
    """What the initialisation needs from the data.

    Attributes
    ----------
    n : int                 number of points ``N``
    mu : (D,)               mean
    var : (D,)              per-column variance (divided by ``N``)
    lam : (k,) or None      principal variances, descending (``svals² / N``)
    Vt : (k, D) or None     principal axes (rows)
    """

    n: int
    mu: np.ndarray
    var: np.ndarray
    lam: np.ndarray | None = None
    Vt: np.ndarray | None = None


def data_moments(X: np.ndarray, pca: bool = True) -> DataMoments:
    """:class:`DataMoments` of an in-memory ``X`` (N, D); principal axes by an SVD of ``X - μ``.

    Out-of-core data compute the same quantities by reductions (``exactdgn.dask``).
    """
    N = X.shape[0]
    mu = X.mean(axis=0)
    Xc = X - mu
    var = Xc.var(axis=0)
    if not pca:
        return DataMoments(N, mu, var)
    _, svals, Vt = interruptible(np.linalg.svd, Xc, full_matrices=False)  # Ctrl-C: at once
    return DataMoments(N, mu, var, svals**2 / max(N, 1), Vt)


def _hidden_features(decoder: Decoder, Z: np.ndarray) -> np.ndarray:
    h = Z
    for k in range(decoder.n_layers - 1):
        a = h @ decoder.weights[k].T + decoder.biases[k]
        h = a * np.where(a > 0, decoder._pos[k], decoder._neg[k])
    return h


def initialize(
    X: np.ndarray,
    *,
    latent_dim: int,
    hidden_sizes,
    activation: str,
    negative_slope: float,
    init: str,
    diagonal: bool,
    min_std: float,
    rng: np.random.Generator,
    moments: DataMoments | None = None,
) -> tuple[Decoder, np.ndarray]:
    """Return an initial ``(decoder, noise_std (D,))``.

    ``init="pca"``: random He-initialised hidden layers, and an output layer fitted by least
    squares so that ``g(z)`` approximates the probabilistic-PCA map ``μ + U (Λ_d - σ²I)^{1/2} z``
    (``U``, ``Λ_d``: top ``d`` principal axes and variances; ``σ²``: mean discarded variance) on
    samples of the prior. ``init="random"``: all layers random, the output rescaled to the data.
    ``moments`` (then ``X`` is not read): the data's :class:`DataMoments`, computed elsewhere.
    """
    if moments is None:
        moments = data_moments(X, pca=init == "pca")
    D = moments.mu.shape[0]
    sizes = [latent_dim, *[int(h) for h in hidden_sizes], D]
    seed = int(rng.integers(2**63 - 1))
    dec = Decoder.random(sizes, activation=activation, negative_slope=negative_slope, seed=seed)
    mu, var = moments.mu, moments.var
    if init == "random":
        Z = rng.standard_normal((2000, latent_dim))
        out = dec(Z)
        scale = np.sqrt(var.mean()) / max(out.std(), 1e-12)
        dec.weights[-1] = dec.weights[-1] * scale
        dec.biases[-1] = dec.biases[-1] * scale + mu - (out.mean(axis=0) * scale)
        std = np.full(D, max(0.5 * np.sqrt(var.mean()), min_std))
        return dec, std
    if init != "pca":
        raise ValueError(f"init must be 'pca' or 'random', got {init!r}")
    # principal axes
    lam, Vt = moments.lam, moments.Vt
    k = min(latent_dim, len(lam))
    sigma2 = float(lam[k:].sum() / max(D - k, 1)) if D > k else 0.01 * float(lam.mean())
    sigma2 = max(sigma2, min_std**2, 1e-6 * float(lam.max(initial=0.0)))  # relative floor
    Wp = np.zeros((D, latent_dim))
    Wp[:, :k] = Vt[:k].T * np.sqrt(np.maximum(lam[:k] - sigma2, 1e-12 * lam[0]))
    Z = rng.standard_normal(
        (max(2000, 20 * dec.hidden_sizes[-1] if dec.hidden_sizes else 0), latent_dim)
    )
    T = mu + Z @ Wp.T
    Hf = np.concatenate([_hidden_features(dec, Z), np.ones((len(Z), 1))], axis=1)
    coef = np.linalg.lstsq(Hf, T, rcond=None)[0]
    dec.weights[-1] = coef[:-1].T.copy()
    dec.biases[-1] = coef[-1].copy()
    resid = T - Hf @ coef
    if diagonal:
        std = np.sqrt(np.maximum(sigma2 + resid.var(axis=0), min_std**2))
    else:
        std = np.full(D, np.sqrt(max(sigma2 + resid.var(axis=0).mean(), min_std**2)))
    return dec, std
