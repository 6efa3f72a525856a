"""Exact gradients of ``Σ_n log p(x_n)`` by Fisher's identity, in PyTorch.

``∇_θ log p(x) = E_{p(z|x)}[∇_θ log p(x, z)]``. The region boundaries move with θ, but ``g`` is
continuous across them, so the boundary terms of the Leibniz rule cancel and the gradient equals
the gradient, at the current θ, of the E-step objective with the activation patterns held fixed:

    Q(θ) = Σ_{n,r} w_nr [-½ (||x_n - A_r m_nr - b_r||²_Λ + tr(Λ A_r V_nr A_rᵀ))] - (N/2) log|Σ| + c.
"""

from __future__ import annotations

import numpy as np

from ..decoder import Decoder
from ..gaussian._rules import LOG_2PI
from ._steps import RegionStats

__all__ = ["exact_gradient", "surrogate_objective"]


def _torch():
    import torch

    return torch


def affine_maps_torch(weights, biases, pos, neg, patterns, slices):
    """Torch version of :meth:`Decoder.affine_map` (differentiable in weights and biases).

    Returns A (R, D, d) and b (R, D) as tensors.
    """
    torch = _torch()
    R = patterns.shape[0]
    d = weights[0].shape[1]
    M = torch.cat([weights[0], biases[0][:, None]], dim=1).expand(R, -1, -1)
    for k in range(1, len(weights)):
        s = torch.where(patterns[:, slices[k - 1]], pos[k - 1], neg[k - 1])
        M = torch.matmul(weights[k], s[:, :, None] * M)
        M = torch.cat([M[:, :, :d], M[:, :, d:] + biases[k][None, :, None]], dim=2)
    return M[:, :, :d], M[:, :, d]


def surrogate_objective(params, decoder: Decoder, stats: RegionStats, X: np.ndarray):
    """``Q(θ)`` (sum over points) as a torch scalar; ``params = [W_1, c_1, ..., log_std]``."""
    torch = _torch()
    L = decoder.n_layers
    Ws = params[0 : 2 * L : 2]
    cs = params[1 : 2 * L : 2]
    log_std = params[2 * L]
    pos = [torch.as_tensor(p) for p in decoder._pos]
    neg = [torch.as_tensor(q) for q in decoder._neg]
    pats = torch.as_tensor(stats.patterns)
    A, b = affine_maps_torch(Ws, cs, pos, neg, pats, decoder.unit_slices)
    reg = torch.as_tensor(stats.region)
    Ar, br = A[reg], b[reg]
    m = torch.as_tensor(stats.mean)
    V = torch.as_tensor(stats.cov)
    # NaN = missing: only the observed coordinates' terms (Fisher's identity for log p(x_obs))
    obs = ~np.isnan(X)
    x = torch.as_tensor(np.where(obs, X, 0.0))[torch.as_tensor(stats.point)]
    o = torch.as_tensor(obs[stats.point], dtype=x.dtype)
    w = torch.as_tensor(stats.w)
    std = torch.exp(log_std).expand(X.shape[1])
    inv_var = std**-2
    res = x - torch.einsum("pjk,pk->pj", Ar, m) - br
    tr = torch.einsum("pjk,pkl,pjl->pj", Ar, V, Ar)
    quad = (w[:, None] * o * (res**2 + tr) * inv_var).sum()
    n_obs = torch.as_tensor(obs.sum(axis=0), dtype=x.dtype)  # (D,) observed per column
    return -0.5 * quad - (n_obs * torch.log(std)).sum() - 0.5 * float(obs.sum()) * LOG_2PI


def remote_surrogate(params, decoder: Decoder, stats):
    """A torch scalar with the *gradient* of :func:`surrogate_objective` (not its value).

    For statistics whose pairs live on other machines (``stats.remote_gradient``, see
    :mod:`exactdgn.dask`): the gradient ``g`` is summed there and returned as the linear form
    ``Σ_k <g_k, params_k>``, so autograd through ``params`` gives the same gradient.
    """
    torch = _torch()
    std = np.exp(np.asarray(params[-1].detach().numpy(), dtype=np.float64))
    grads = stats.remote_gradient(decoder, std)
    return sum((torch.as_tensor(g) * p).sum() for g, p in zip(grads, params, strict=True))


def exact_gradient(decoder: Decoder, noise_std, stats: RegionStats, X: np.ndarray):
    """Gradient of ``Σ_n log p(x_n)`` w.r.t. every weight, bias and the log noise std.

    Parameters
    ----------
    decoder : Decoder
    noise_std : float or (D,) array
    stats : RegionStats
        E-step statistics at the same parameters.
    X : (N, D)

    Returns
    -------
    grads : list of ndarray
        ``[dW_1, dc_1, ..., dW_L, dc_L, dlog_std]`` where ``dlog_std`` has shape ``()`` for an
        isotropic (scalar) ``noise_std`` and ``(D,)`` otherwise.
    """
    if hasattr(stats, "remote_gradient"):  # pairs held by workers (exactdgn.dask): a sum of
        return stats.remote_gradient(decoder, noise_std)  # this function over the chunks
    torch = _torch()
    params = []
    for W, c in zip(decoder.weights, decoder.biases, strict=True):
        params.append(torch.tensor(W, requires_grad=True))
        params.append(torch.tensor(c, requires_grad=True))
    params.append(torch.tensor(np.log(np.asarray(noise_std, dtype=np.float64)), requires_grad=True))
    Q = surrogate_objective(params, decoder, stats, X)
    grads = torch.autograd.grad(Q, params)
    return [g.detach().numpy() for g in grads]
