"""Exact gradients of ``Σ_n log p(x_n)`` by Fisher's identity, in PyTorch.

``∇_θ log p(x) = E_{p(z|x)}[∇_θ log p(x, z)]``. The region boundaries move with θ, but ``g`` is
continuous across them, so the boundary terms of the Leibniz rule cancel and the gradient equals
the gradient, at the current θ, of the E-step objective with the activation patterns held fixed:

    Q(θ) = Σ_{n,r} w_nr [-½ (||x_n - A_r m_nr - b_r||²_Λ + tr(Λ A_r V_nr A_rᵀ))] - (N/2) log|Σ| + c.

Training does not differentiate ``Q`` pair by pair (:func:`surrogate_objective`, the reference:
(pairs x D x d) arrays, tens of GB on MNIST). ``Q`` depends on θ only through each region's
``A_r``, ``b_r`` and ``log σ``; its derivatives in those are centred per-region sums of the
pairs' residuals, accumulated over blocks of pairs (:func:`exactdgn.em._steps.centred_sums` on
the host, :func:`._torch_steps._centred_sums_t` on a device: the same derivation), and autograd
through the decoder's region maps of their linear form
(:func:`._torch_steps.region_linear_form`) gives the gradient, with memory bounded by one block
of pairs (``chunk_bytes``) plus a few (R, D, d) arrays.
"""

from __future__ import annotations

import numpy as np

from ..decoder import Decoder
from ..gaussian._rules import LOG_2PI
from ._steps import RegionStats, centred_sums, gradient_block_rows

__all__ = ["blocked_surrogate", "exact_gradient", "gradient_form", "surrogate_objective"]

# default bytes per block of pairs (the estimator's ``chunk_bytes`` default)
CHUNK_BYTES = 256 * 2**20


def _torch():
    import torch

    return torch


def affine_maps_torch(weights, biases, pos, neg, patterns, slices):
    """Torch version of :meth:`Decoder.affine_map` (differentiable in weights and biases).

    Returns A (R, D, d) and b (R, D) as tensors (see :func:`._torch_steps.layer_maps_t`).
    """
    from ._torch_steps import layer_maps_t

    d = weights[0].shape[1]
    M = layer_maps_t(weights, biases, pos, neg, patterns, slices, len(weights) - 1)
    return M[:, :, :d], M[:, :, d]


def surrogate_objective(params, decoder: Decoder, stats: RegionStats, X: np.ndarray):
    """``Q(θ)`` (sum over points) as a torch scalar; ``params = [W_1, c_1, ..., log_std]``.

    The reference form, pair by pair: its autograd holds (pairs x D x d) arrays. Training uses
    :func:`gradient_form` (the same gradient, memory bounded by one block of pairs).

    Computed on the device of ``params``. ``stats`` is a numpy :class:`RegionStats` (its arrays
    are copied there) or a :class:`~._torch_steps.TorchRegionStats` already on that device
    (the E-step ran there: its data are used, and ``X`` only gives the shape).
    """
    torch = _torch()
    L = decoder.n_layers
    Ws = params[0 : 2 * L : 2]
    cs = params[1 : 2 * L : 2]
    log_std = params[2 * L]
    dev = params[0].device

    def t(a):
        return torch.as_tensor(a, device=dev)

    pos = [t(p) for p in decoder._pos]
    neg = [t(q) for q in decoder._neg]
    pats = t(stats.patterns)
    A, b = affine_maps_torch(Ws, cs, pos, neg, pats, decoder.unit_slices)
    reg = t(stats.region)
    Ar, br = A[reg], b[reg]
    m = t(stats.mean)
    V = t(stats.cov)
    w = t(stats.w)
    D = X.shape[1]
    if hasattr(stats, "X"):  # device statistics: complete data, already on the device
        x = stats.X[stats.point]
        o = None
        n_obs = torch.full((D,), float(stats.n_points), dtype=x.dtype, device=dev)
        n_all = float(stats.n_points * D)
    else:
        # NaN = missing: only the observed coordinates' terms (Fisher's identity for log p(x_obs))
        obs = ~np.isnan(X)
        x = t(np.where(obs, X, 0.0))[t(stats.point)]
        o = t(np.asarray(obs[stats.point], dtype=np.float64))
        n_obs = t(obs.sum(axis=0).astype(np.float64))  # (D,) observed per column
        n_all = float(obs.sum())
    std = torch.exp(log_std).expand(D)
    inv_var = std**-2
    res = x - torch.einsum("pjk,pk->pj", Ar, m) - br
    tr = torch.einsum("pjk,pkl,pjl->pj", Ar, V, Ar)
    terms = res**2 + tr
    if o is not None:
        terms = o * terms
    quad = (w[:, None] * terms * inv_var).sum()
    return -0.5 * quad - (n_obs * torch.log(std)).sum() - 0.5 * n_all * LOG_2PI


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


def blocked_surrogate(
    params, decoder: Decoder, stats: RegionStats, X: np.ndarray, chunk_bytes: int = CHUNK_BYTES
):
    """A torch scalar with the *gradient* of :func:`surrogate_objective` (not its value).

    Numpy statistics: the centred sums of :func:`exactdgn.em._steps.centred_sums` (blocks of
    pairs of about ``chunk_bytes``; NaN in ``X`` = missing, observed terms only) at the
    current parameters, in the linear form :func:`._torch_steps.region_linear_form` of the
    decoder's region maps on ``params``' device: the host twin of
    :func:`._torch_steps.device_surrogate` (same derivation).
    """
    torch = _torch()
    from ._torch_steps import region_linear_form

    L = decoder.n_layers
    Ws, cs, log_std = params[0 : 2 * L : 2], params[1 : 2 * L : 2], params[2 * L]
    dev = params[0].device
    pos = [torch.as_tensor(p, device=dev) for p in decoder._pos]
    neg = [torch.as_tensor(q, device=dev) for q in decoder._neg]
    pats = torch.as_tensor(np.asarray(stats.patterns, dtype=bool), device=dev)
    A, b = affine_maps_torch(Ws, cs, pos, neg, pats, decoder.unit_slices)
    _, D, d = A.shape
    X = np.asarray(X, dtype=np.float64)
    An = A.detach().cpu().numpy()
    bn = np.ascontiguousarray(b.detach().cpu().numpy())
    block = gradient_block_rows(D, d, chunk_bytes)
    rsq, GA, Gb = centred_sums(An, bn, stats, X, cross=True, block=block)
    n_obs = (~np.isnan(X)).sum(axis=0).astype(np.float64)  # (D,) observed per column
    return region_linear_form(A, b, log_std, rsq, GA, Gb, n_obs)


def gradient_form(params, decoder: Decoder, stats, X, chunk_bytes: int = CHUNK_BYTES):
    """A torch scalar whose gradient in ``params`` is that of :func:`surrogate_objective`.

    Its value is not ``Q(θ)``: it is the linear form of :func:`blocked_surrogate` for numpy
    statistics (blocks of pairs of about ``chunk_bytes``), of
    :func:`._torch_steps.device_surrogate` for statistics on a torch device (memory bounded by
    one block of pairs), and of :func:`remote_surrogate` for pairs held by dask workers.
    Training and :func:`exact_gradient` use only the gradient.
    """
    if hasattr(stats, "remote_gradient"):
        return remote_surrogate(params, decoder, stats)
    if getattr(stats, "device", None) is not None:
        from ._torch_steps import device_surrogate

        return device_surrogate(params, decoder, stats)
    return blocked_surrogate(params, decoder, stats, X, chunk_bytes)


def exact_gradient(
    decoder: Decoder, noise_std, stats: RegionStats, X: np.ndarray, chunk_bytes: int = CHUNK_BYTES
):
    """Gradient of ``Σ_n log p(x_n)`` w.r.t. every weight, bias and the log noise std.

    Parameters
    ----------
    decoder : Decoder
    noise_std : float or (D,) array
    stats : RegionStats or TorchRegionStats
        E-step statistics at the same parameters; device statistics (the E-step ran on a
        torch device) give the gradient computed on that device.
    X : (N, D)
    chunk_bytes : int
        About the memory of one block of pairs of the host sums (:func:`gradient_form`).

    Returns
    -------
    grads : list of ndarray
        ``[dW_1, dc_1, ..., dW_L, dc_L, dlog_std]`` where ``dlog_std`` has shape ``()`` for an
        isotropic (scalar) ``noise_std`` and ``(D,)`` otherwise.
    """
    if hasattr(stats, "remote_gradient"):  # pairs held by workers (exactdgn.dask): a sum of
        return stats.remote_gradient(decoder, noise_std)  # this function over the chunks
    torch = _torch()
    dev = getattr(stats, "device", None)  # device statistics: the gradient is taken there

    def leaf(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), device=dev, requires_grad=True)

    params = []
    for W, c in zip(decoder.weights, decoder.biases, strict=True):
        params += [leaf(W), leaf(c)]
    params.append(leaf(np.log(np.asarray(noise_std, dtype=np.float64))))
    Q = gradient_form(params, decoder, stats, X, chunk_bytes)
    grads = torch.autograd.grad(Q, params)
    return [g.detach().cpu().numpy() for g in grads]
