"""PyTorch import/export of CPA decoders.

Import turns an ``nn.Sequential`` (nested ones too) into a chain of affine maps and ReLU-family
activations. Consecutive affine modules (``Linear``, ``Flatten``/``Unflatten``, eval-mode
``BatchNorm1d``, convolutions given the input shape) are composed into one affine layer; an
eval-mode ``Dropout`` and ``Identity`` are dropped. Convolutions are turned into their dense
matrices by applying them to the standard basis in float64 (exact: a convolution is linear).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np

from ._core import Activation, Decoder, NotPiecewiseAffineError

__all__ = ["Abs", "from_torch", "to_torch"]


def _torch():
    import torch

    return torch


def _abs_module_class():
    torch = _torch()

    class AbsModule(torch.nn.Module):
        """Unit-wise absolute value (a piecewise-affine activation with slopes +1 / -1)."""

        def forward(self, x):
            return torch.abs(x)

    # pickle finds the class by this module's attribute (``__getattr__`` below builds it in a
    # fresh process): a module holding it can be pickled / torch.save'd whole
    AbsModule.__module__ = __name__
    AbsModule.__qualname__ = "AbsModule"
    return AbsModule


_ABS = None


def _abs_class():
    global _ABS  # lazily created so that importing exactdgn does not import torch
    if _ABS is None:
        _ABS = _abs_module_class()
    return _ABS


def __getattr__(name):
    if name == "AbsModule":
        return _abs_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def Abs():  # behaves like a class constructor
    """Return an ``nn.Module`` computing ``abs(x)`` (exactdgn's absolute-value activation)."""
    return _abs_class()()


def _is_abs(m) -> bool:
    return _ABS is not None and isinstance(m, _ABS)


def _flatten(module, prefix=""):
    torch = _torch()
    if isinstance(module, torch.nn.Sequential):
        # not named_children(): it skips a module listed twice (a shared ReLU, a tied Linear)
        for name, child in module._modules.items():
            if child is not None:
                yield from _flatten(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), module


def _apply(module, x, name=None):
    """``module(x)``; torch's error for an input it does not take (a shape mismatch) as a
    ValueError naming the layer (``name``) and the per-sample input shape."""
    try:
        return module(x)
    except (RuntimeError, ValueError, IndexError) as exc:
        what = name or f"layer ({type(module).__name__})"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"{what} does not take inputs of per-sample shape {tuple(x.shape[1:])} ({first}): "
            "the layer before it gives that shape; make the layers' sizes match"
        ) from exc


def _dense_map(module, shape, name=None):
    """Dense (W, b) of an affine module acting on inputs of ``shape`` (without batch);
    ``name`` names it in the error for inputs of a shape it does not take."""
    torch = _torch()
    m = copy.deepcopy(module).to(torch.float64).eval()
    n_in = math.prod(shape)
    with torch.no_grad():
        zero = torch.zeros((1, *shape), dtype=torch.float64)
        b = _apply(m, zero, name)
        basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)
        cols = m(basis) - b
    out_shape = tuple(b.shape[1:])
    W = cols.reshape(n_in, -1).T.numpy().copy()
    return W, b.reshape(-1).numpy().copy(), out_shape


def _check_weights_are_current(module) -> None:
    """Refuse layers whose stored weight is not the one their forward uses: the old hook forms
    of ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (the weight is recomputed from
    ``weight_g`` / ``weight_v`` or ``weight_orig`` only by a forward call, so after
    ``load_state_dict`` or ``.double()`` the attribute is stale), and a parametrized spectral
    norm in training mode (each read runs a power iteration: the weights move)."""
    for name, sub in module.named_modules():
        label = f"layer {name!r} ({type(sub).__name__})" if name else type(sub).__name__
        for hook in sub._forward_pre_hooks.values():
            where = type(hook).__module__
            if where in ("torch.nn.utils.weight_norm", "torch.nn.utils.spectral_norm"):
                fn = where.rsplit(".", 1)[1]
                raise NotPiecewiseAffineError(
                    f"{label} uses torch.nn.utils.{fn} (its old hook form): its weight is "
                    "recomputed only by a forward call, so the stored one can be stale; call "
                    f"torch.nn.utils.remove_{fn}(layer) first, or use "
                    f"torch.nn.utils.parametrizations.{fn} (read as the forward computes it)"
                )
        plist = getattr(sub, "parametrizations", None)
        if sub.training and plist is not None:
            for pname, chain in plist.items():
                if any(type(p).__name__ == "_SpectralNorm" for p in chain):
                    raise NotPiecewiseAffineError(
                        f"{label}: the spectral norm of its {pname!r} is in training mode (each "
                        "read runs a power iteration, so the weights move); call module.eval() "
                        "first"
                    )


def _plain_chain(module) -> bool:
    """Whether ``module`` is a (nested) ``nn.Sequential`` of the layers this file imports
    directly (anything else goes through :func:`exactdgn.decoder._fx.from_torch_fx`)."""
    nn = _torch().nn
    plain = (
        nn.Linear,
        nn.Identity,
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.AlphaDropout,
        nn.Flatten,
        nn.Unflatten,
        nn.BatchNorm1d,
        nn.Conv1d,
        nn.Conv2d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ReLU,
        nn.LeakyReLU,
        nn.PReLU,
    )
    return all(
        type(m) in plain or _is_abs(m) or isinstance(m, nn.Tanh | nn.Sigmoid | nn.GELU)
        for _, m in _flatten(module)
    )


def from_torch(module, input_shape: Sequence[int] | None = None) -> Decoder:
    """Build a :class:`Decoder` from a PyTorch module.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` (possibly nested) of ``Linear``, ``ReLU``, ``LeakyReLU``, ``PReLU``,
        :func:`Abs`, ``Identity``, ``Flatten``, ``Unflatten``, eval-mode ``BatchNorm1d`` and
        ``Dropout``, and ``Conv1d`` / ``Conv2d`` / ``ConvTranspose2d`` (which need the input shape
        to be known), or a single such module. Anything else (``ReLU6``, ``Hardtanh``,
        ``Hardsigmoid``, ``MaxPool1d/2d``, ``AvgPool``, ``Upsample``, padding, 3-D convolutions,
        custom ``nn.Module`` classes with residual sums, ``clamp``, ``maximum``, ...) is traced
        with ``torch.fx`` (:func:`exactdgn.decoder._fx.from_torch_fx`).
    input_shape : sequence of int, optional
        Shape of one latent input (without the batch axis). Inferred from a leading ``Linear``.

    Raises
    ------
    NotPiecewiseAffineError
        For any module that is not continuous piecewise affine or not supported, naming it.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    _check_weights_are_current(module)
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_complex() for t in tensors):
        raise ValueError(
            "the module has complex weights: a decoder is real (the real part is not taken "
            "silently)"
        )
    if any(t.device.type == "meta" for t in tensors):
        raise ValueError(
            "the module's weights are on the 'meta' device (shapes without values): give them "
            "values first, e.g. module.to_empty(device='cpu') then module.load_state_dict(...)"
        )
    if any(t.device.type != "cpu" for t in tensors):  # the weights are read on the CPU
        module = copy.deepcopy(module).to("cpu")
    if not _plain_chain(module):  # custom modules, residual sums, ReLU6, pooling: torch.fx
        from ._fx import from_torch_fx

        return from_torch_fx(module, input_shape=input_shape)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    # ops: list of ("affine", W, b) or ("act", Activation) on flat vectors
    ops: list = []

    def push_affine(W, b):
        if ops and ops[-1][0] == "affine":
            W0, b0 = ops[-1][1], ops[-1][2]
            ops[-1] = ("affine", W @ W0, W @ b0 + b)
        else:
            ops.append(("affine", W, b))

    def need_shape(name, m):
        if shape is None:
            raise ValueError(
                f"layer {name!r} ({type(m).__name__}) needs the input shape: pass "
                "input_shape=(latent_dim,) or start the network with nn.Linear"
            )

    for name, m in _flatten(module):
        label = f"{name!r} ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            if shape is None:
                shape = (m.in_features,)
            if shape[-1] != m.in_features:
                raise ValueError(f"layer {label} expects {m.in_features} inputs, got shape {shape}")
            W = m.weight.detach().to(torch.float64).cpu().numpy()
            b = (
                m.bias.detach().to(torch.float64).cpu().numpy()
                if m.bias is not None
                else np.zeros(m.out_features)
            )
            lead = shape[:-1]
            if lead:  # Linear applied along the last axis of a multi-axis input
                k = math.prod(lead)
                W = np.kron(np.eye(k), W)
                b = np.tile(b, k)
            push_affine(W, b)
            shape = (*lead, m.out_features)
        elif isinstance(m, (nn.Identity,)):
            continue
        elif isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.AlphaDropout):
            if m.training and m.p > 0:
                raise NotPiecewiseAffineError(
                    f"layer {label} is in training mode (random); call module.eval() first"
                )
            continue
        elif isinstance(m, nn.Flatten | nn.Unflatten):
            need_shape(name, m)
            with torch.no_grad():
                shape = tuple(_apply(m, torch.zeros((1, *shape)), f"layer {label}").shape[1:])
        elif isinstance(m, nn.BatchNorm1d):
            if m.training or not m.track_running_stats or m.running_mean is None:
                raise NotPiecewiseAffineError(
                    f"layer {label} normalises with batch statistics (training mode); call "
                    "module.eval() so that it uses its running statistics (an affine map)"
                )
            need_shape(name, m)
            W, b, shape = _dense_map(m, shape, f"layer {label}")
            push_affine(W, b)
        elif isinstance(m, nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d | nn.ConvTranspose1d):
            need_shape(name, m)
            W, b, shape = _dense_map(m, shape, f"layer {label}")
            push_affine(W, b)
        elif isinstance(m, nn.ReLU | nn.LeakyReLU | nn.PReLU) or _is_abs(m):
            need_shape(name, m)
            n = math.prod(shape)
            if isinstance(m, nn.ReLU):
                act = Activation("relu")
            elif isinstance(m, nn.LeakyReLU):
                act = Activation("leaky_relu", float(m.negative_slope))
            elif isinstance(m, nn.PReLU):
                w = m.weight.detach().to(torch.float64).cpu().numpy().reshape(-1)
                if w.size == 1:
                    slopes = np.full(n, w[0])
                else:
                    if len(shape) < 1 or (shape[0] if len(shape) > 1 else shape[-1]) != w.size:
                        raise ValueError(f"layer {label} has {w.size} slopes for input {shape}")
                    per = n // w.size  # one slope per channel (axis 1 of a batched input)
                    slopes = np.repeat(w, per)
                act = Activation("prelu", slopes)
            else:
                act = Activation("abs")
            if not ops or ops[-1][0] != "affine":
                ops.append(("affine", np.eye(n), np.zeros(n)))
            ops.append(("act", act))
        else:
            raise NotPiecewiseAffineError(
                f"layer {label} is not a supported continuous piecewise-affine layer. Supported: "
                "Linear, ReLU, LeakyReLU, PReLU, exactdgn Abs, Identity, Flatten, Unflatten, "
                "BatchNorm1d/Dropout in eval mode, Conv1d, Conv2d, ConvTranspose2d; and, traced "
                "with torch.fx, ReLU6, Hardtanh, MaxPool1d/2d, Hardsigmoid, AvgPool, Upsample, "
                "padding, 3-D convolutions and custom modules with residual sums. Smooth "
                "activations (Tanh, Sigmoid, GELU, ...) have no exact region decomposition."
            )
    if shape is None:
        raise ValueError("the module contains no layer that fixes the input size; pass input_shape")
    if not ops or ops[-1][0] != "affine":
        n = math.prod(shape)
        ops.append(("affine", np.eye(n), np.zeros(n)))
    Ws = [op[1] for op in ops if op[0] == "affine"]
    bs = [op[2] for op in ops if op[0] == "affine"]
    acts = [op[1] for op in ops if op[0] == "act"]
    return Decoder(Ws, bs, acts)


_FLOAT_NAMES = ("float16", "float32", "float64")


def _torch_dtype(dtype):
    """The floating-point ``torch.dtype`` named by a torch dtype, a numpy dtype or a string."""
    torch = _torch()
    if dtype is None:
        return torch.float64
    name = None
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return dtype
    elif isinstance(dtype, str):
        name = dtype  # only the exact names: "float" is float32 to torch but float64 to numpy
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name in _FLOAT_NAMES:
        return getattr(torch, name)
    raise ValueError(
        "dtype must be a floating-point dtype: a torch dtype (torch.float32, torch.float64, "
        "...), a numpy one (np.float32, np.float64) or the string 'float32' or 'float64'; "
        f"got {dtype!r}"
    )


def to_torch(decoder: Decoder, dtype=None):
    """Return an ``nn.Sequential`` computing the same function as ``decoder``.

    Parameters
    ----------
    decoder : Decoder
    dtype : torch.dtype, numpy dtype or {"float16", "float32", "float64"}, optional
        Parameter dtype (default ``torch.float64``, which reproduces the decoder to ~1e-15).

    Raises
    ------
    ValueError
        If ``dtype`` is not a floating-point dtype.
    """
    torch = _torch()
    nn = torch.nn
    dtype = _torch_dtype(dtype)
    layers = []
    for k, (W, c) in enumerate(zip(decoder.weights, decoder.biases, strict=True)):
        lin = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W, dtype=dtype))
            lin.bias.copy_(torch.as_tensor(c, dtype=dtype))
        layers.append(lin)
        if k < len(decoder.activations):
            a = decoder.activations[k]
            if a.kind == "relu":
                layers.append(nn.ReLU())
            elif a.kind == "leaky_relu":
                layers.append(nn.LeakyReLU(float(a.negative_slope)))
            elif a.kind == "prelu":
                slopes = np.broadcast_to(np.asarray(a.negative_slope), (W.shape[0],))
                if np.all(slopes == slopes[0]):
                    pr = nn.PReLU(1, dtype=dtype)
                    vals = slopes[:1]
                else:
                    pr = nn.PReLU(W.shape[0], dtype=dtype)
                    vals = slopes
                with torch.no_grad():
                    pr.weight.copy_(torch.as_tensor(np.array(vals), dtype=dtype))
                layers.append(pr)
            elif a.kind == "abs":
                layers.append(Abs())
            else:
                layers.append(nn.Identity())
    return nn.Sequential(*layers)
