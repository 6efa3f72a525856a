"""Import of general PyTorch modules (residual sums, ReLU6, Hardtanh, max pooling) by ``torch.fx``.

The module is traced symbolically; every value of the graph is kept as an affine function
``M h + c`` of the output ``h`` of the last activation layer built so far (at the start,
``h = z``). Affine nodes (``Linear``, convolutions, pooling by averages, upsampling, padding,
eval-mode ``BatchNorm``, ``Flatten``, reshapes, ``torch.cat`` / ``stack``, slicing and indexing
of non-batch axes, ``chunk`` / ``split``, ``sum`` / ``mean`` over non-batch axes, ``transpose`` /
``permute``, ``value @ W`` and ``F.linear`` with constant weights, ``F.pad`` and the functional
forms of the affine modules, sums and differences of values, scaling by constants,
``Identity``, eval-mode ``Dropout``) only update those maps. Nodes of constants only (the
module's tensors, sizes read at trace time: ``h.shape[1] // 2``) are computed. A
piecewise-affine node starts a new layer: the values still needed later pass through it on units
without a kink (PReLU slope 1), and

* ``ReLU`` / ``LeakyReLU`` / ``PReLU`` (``F.prelu``) / :func:`Abs`: one unit per element
  (slope 0 / α / -1); ``Softshrink``: ``relu(a - λ) - relu(-a - λ)``;
* ``ReLU6`` / ``Hardtanh(lo, hi)`` / ``clamp(a, lo, hi)``: ``lo + relu(a - lo) - relu(a - hi)``:
  two ReLU units; ``clamp_min`` / ``clamp_max`` and ``maximum`` / ``minimum`` with a constant:
  ``max(a, k) = k + relu(a - k)``, ``min(a, k) = k - relu(k - a)``;
* ``maximum(a, b)`` / ``minimum(a, b)`` of two values: ``b + relu(a - b)`` / ``b - relu(b - a)``;
* ``MaxPool1d`` / ``MaxPool2d``: a tournament per window, ``max(a, b) = b + relu(a - b)``,
  one layer per halving of the window.

The result is a :class:`Decoder` computing exactly the same function. Any other operation
raises :class:`NotPiecewiseAffineError` naming it and saying why.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from dataclasses import dataclass

import numpy as np

from ._core import Activation, Decoder, NotPiecewiseAffineError
from ._torch import _dense_map

__all__ = ["from_torch_fx"]


@dataclass
class _Value:
    """A graph value ``M h + c`` (flattened, per sample) with its per-sample ``shape``."""

    M: np.ndarray
    c: np.ndarray
    shape: tuple


class _Builder:
    """Layers of the decoder under construction (see the module docstring)."""

    def __init__(self, d: int):
        self.Ws: list[np.ndarray] = []
        self.bs: list[np.ndarray] = []
        self.acts: list[Activation] = []
        self.width = d

    def layer(self, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        """Add ``prelu(M h + c)`` with per-unit negative slopes; returns the new width's
        offsets of each block. ``rows`` is a list of ``(M, c, slopes)``."""
        self.Ws.append(np.vstack([r[0] for r in rows]))
        self.bs.append(np.concatenate([r[1] for r in rows]))
        slopes = np.concatenate([r[2] for r in rows])
        self.acts.append(Activation("prelu", slopes))
        offs = np.cumsum([0] + [len(r[1]) for r in rows])
        self.width = int(offs[-1])
        return offs

    def decoder(self, out: _Value) -> Decoder:
        Ws, bs, acts = [*self.Ws, out.M], [*self.bs, out.c], list(self.acts)
        for k, a in enumerate(acts):  # a plain kind where one slope fits every unit
            s = np.asarray(a.negative_slope)
            if np.all(s == s.flat[0]):
                v = float(s.flat[0])
                acts[k] = (
                    Activation("relu")
                    if v == 0.0
                    else Activation("abs")
                    if v == -1.0
                    else Activation("leaky_relu", v)
                    if v != 1.0
                    else a
                )
        return Decoder(Ws, bs, acts)


def _select(width: int, start: int, n: int) -> np.ndarray:
    S = np.zeros((n, width))
    S[np.arange(n), start + np.arange(n)] = 1.0
    return S


def _reads_shape(node) -> bool:
    """Whether ``node`` is ``x.size(...)`` or ``x.shape``."""
    if node.op == "call_method":
        return node.target == "size"
    return node.op == "call_function" and node.target is getattr and node.args[1] == "shape"


_ALPHA = ("AlphaDropout", "FeatureAlphaDropout")
#: functions and methods not folded into constants (random draws)
_RANDOM = re.compile(r"rand|normal|bernoulli|multinomial|poisson|uniform|exponential|cauchy|empty")
# affine modules: imported as their dense matrix (probed on the standard basis, see _dense_map)
_AFFINE_MODULES = (
    *("Linear", "Flatten", "Unflatten", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
    *("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
    *("AvgPool1d", "AvgPool2d", "AvgPool3d"),
    *("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"),
    *("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"),
    *("PixelShuffle", "PixelUnshuffle", "ChannelShuffle"),
    *(
        f"{kind}Pad{k}d"
        for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
        for k in (1, 2, 3)
    ),
)


#: piecewise-affine modules the importer does not build yet, with what to write instead
_PA_UNSUPPORTED = {
    "AdaptiveMaxPool1d": "use nn.MaxPool1d with the kernel and stride it amounts to",
    "AdaptiveMaxPool2d": "use nn.MaxPool2d with the kernel and stride it amounts to",
    "AdaptiveMaxPool3d": "use 2-D pooling, or pool with torch.maximum of shifted slices",
    "MaxPool3d": "use 2-D pooling, or pool with torch.maximum of shifted slices",
    "FractionalMaxPool2d": "use nn.MaxPool2d",
    "LPPool1d": "use nn.MaxPool1d or nn.AvgPool1d",
}

#: what an unsupported operation's refusal says (it may well be piecewise affine)
_SUPPORTED = (
    "it imports affine operations (Linear, convolutions, pooling by averages, padding, "
    "reshapes, transpose / permute, indexing and slicing of non-batch axes, chunk / split, "
    "cat / stack, sum / mean over non-batch axes, sums, scaling by constants, @ a constant "
    "matrix, F.linear, casts such as .to(dtype) and constants such as zeros_like) and the "
    "piecewise-affine ReLU family, clamps, maximum / minimum and max pooling. If this "
    "operation is (piecewise) affine, rewrite it with those; if it is smooth "
    "it has no exact region decomposition"
)


def _call_module(f, rest, kwargs):
    """An ``nn.Module`` computing ``f(x, *rest, **kwargs)`` (probed by ``_dense_map``)."""
    import torch

    class _Call(torch.nn.Module):
        def forward(self, x):
            return f(x, *rest, **kwargs)

    return _Call()


def _probed_functions() -> tuple:
    """Functional forms of affine modules (their other arguments constants): imported as the
    dense matrix of ``x -> f(x, ...)``, as the modules."""
    import torch.nn.functional as F

    names = (
        *("pad", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"),
        *("conv_transpose3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d"),
        *("adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "upsample"),
        *("pixel_shuffle", "pixel_unshuffle"),
    )
    return tuple(getattr(F, a) for a in names if hasattr(F, a))


def _modules(*names: str) -> tuple:
    """The ``torch.nn`` classes of these names that this torch version has."""
    import torch

    return tuple(getattr(torch.nn, a) for a in names if hasattr(torch.nn, a))


def _is_tensor(v) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


class _BatchSize:
    """The batch size, ``x.size(0)``: unknown at trace time (the per-sample sizes are known:
    ``x.size()`` is the tuple ``(BATCH, *shape)``)."""

    def __repr__(self) -> str:
        return "x.size(0)"


BATCH = _BatchSize()


def _size(x, dim=None):
    """``x.size(dim)`` / ``x.size()`` of a value: ints, the batch size as :data:`BATCH`."""
    full = (BATCH, *x.shape)
    if dim is None:
        return full
    return full[int(dim)]  # an IndexError for a dim out of range, as torch


def _symbolic(v) -> bool:
    """Whether ``v`` (or an item of it) is a value computed from the input."""
    if isinstance(v, _Value):
        return True
    if isinstance(v, list | tuple):
        return any(_symbolic(a) for a in v)
    if isinstance(v, dict):
        return any(_symbolic(a) for a in v.values())
    return False


def _in_place(n, modules) -> bool:
    """Whether node ``n`` changes its first argument in place (``x.relu_()``,
    ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``)."""
    if not n.args:
        return False
    if n.op == "call_module":
        return bool(getattr(modules[n.target], "inplace", False))
    if n.kwargs.get("inplace", False):
        return True
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return n.op in ("call_method", "call_function") and name.endswith("_") and name != "__"


def _take(x: _Value, order: np.ndarray) -> _Value:
    """The elements ``order`` (an index array of the new per-sample shape) of ``x``."""
    flat = np.asarray(order, dtype=np.int64).ravel()
    return _Value(x.M[flat], x.c[flat], tuple(np.shape(order)))


def _per_sample_axis(name: str, x: _Value, dim) -> int:
    """The per-sample axis of ``dim`` (of a batched tensor); the batch axis is refused."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise NotPiecewiseAffineError(f"{name}: takes an integer dim here, got {dim!r}")
    ndim = len(x.shape) + 1
    pos = dim + ndim if dim < 0 else dim
    if pos < 1 or pos >= ndim:
        raise NotPiecewiseAffineError(
            f"{name}: dim {dim} is the batch axis or out of range for a value of per-sample "
            f"shape {x.shape}; use a dim >= 1 (the batch axis mixes samples)"
        )
    return pos - 1


def _index(name: str, x: _Value, key) -> _Value:
    """``x[key]`` with ints, slices, None and ``...`` that keep the batch axis (``x[:, :2]``)."""
    key = key if isinstance(key, tuple) else (key,)
    ok = (int, slice, type(None), type(Ellipsis))
    if not all(isinstance(k, ok) and not isinstance(k, bool) for k in key):
        raise NotPiecewiseAffineError(
            f"{name}: indexing with {key!r} is not supported by the importer yet (ints, slices, "
            "None and ... are); index with those, or select with a constant matrix (x @ S)"
        )
    explicit = sum(k is not None and k is not Ellipsis for k in key)
    if key and key[0] == slice(None):
        per = key[1:]
    elif key and key[0] is Ellipsis and explicit <= len(x.shape):
        per = key
    else:
        raise NotPiecewiseAffineError(
            f"{name}: indexing {key!r} touches the batch axis (it mixes samples); keep it whole "
            "(x[:, ...])"
        )
    idx = np.arange(len(x.c)).reshape(x.shape)
    try:
        return _take(x, idx[per])
    except IndexError as exc:
        raise NotPiecewiseAffineError(f"{name}: cannot index shape {x.shape} ({exc})") from None


def _split(name: str, x: _Value, sizes, dim, chunks: bool) -> list:
    """``x.chunk(n, dim)`` / ``x.split(size or sizes, dim)``: a list of values."""
    ax = _per_sample_axis(name, x, dim)
    L = x.shape[ax]
    if chunks:
        step = -(-L // int(sizes))
        bounds = [*range(0, L, step), L]
    elif isinstance(sizes, int):
        bounds = [*range(0, L, int(sizes)), L]
    else:
        bounds = [0, *np.cumsum([int(v) for v in sizes]).tolist()]
        if bounds[-1] != L:
            raise NotPiecewiseAffineError(f"{name}: split sizes {sizes} do not sum to {L}")
    idx = np.arange(len(x.c)).reshape(x.shape)
    parts = []
    for a, b in itertools.pairwise(bounds):
        sl = [slice(None)] * len(x.shape)
        sl[ax] = slice(a, b)
        parts.append(_take(x, idx[tuple(sl)]))
    return parts


def _reduce(name: str, x: _Value, dim, keepdim: bool, mean: bool) -> _Value:
    """``x.sum(dim)`` / ``x.mean(dim)`` over per-sample axes."""
    if dim is None:
        raise NotPiecewiseAffineError(
            f"{name}: a reduction over every axis (the batch too) mixes samples; give dim >= 1"
        )
    dims = dim if isinstance(dim, list | tuple) else (dim,)
    axes = tuple(sorted({_per_sample_axis(name, x, d) for d in dims}))
    M = x.M.reshape(*x.shape, -1).sum(axis=axes, keepdims=keepdim)
    c = x.c.reshape(x.shape).sum(axis=axes, keepdims=keepdim)
    scale = 1.0 / math.prod(x.shape[a] for a in axes) if mean else 1.0
    return _Value(scale * M.reshape(-1, x.M.shape[1]), scale * c.reshape(-1), c.shape)


def _matmul(name: str, a, b) -> _Value:
    """``value @ W`` with a constant matrix ``W`` (over the last per-sample axis)."""
    if not isinstance(a, _Value) or isinstance(b, _Value) or not _is_tensor(b) or b.ndim != 2:
        why = (
            "a product of two values is not piecewise affine"
            if isinstance(a, _Value) and isinstance(b, _Value)
            else "only value @ (a constant 2-D matrix) is supported by the importer yet"
        )
        raise NotPiecewiseAffineError(
            f"{name}: {why}; write a constant on the left as value @ W.T, or use nn.Linear"
        )
    W = np.asarray(b.detach().cpu().numpy(), dtype=np.float64)
    if not a.shape or a.shape[-1] != W.shape[0]:
        raise ValueError(f"{name}: a value of per-sample shape {a.shape} @ a {W.shape} matrix")
    lead = math.prod(a.shape[:-1])
    A = np.kron(np.eye(lead), W.T)
    return _Value(A @ a.M, A @ a.c, (*a.shape[:-1], W.shape[1]))


def _constant(name: str, v, shape: tuple) -> np.ndarray | None:
    """A number or a module's tensor, broadcast to a value of per-sample ``shape`` (flattened);
    None if ``v`` is neither."""
    import torch

    if isinstance(v, bool) or not isinstance(v, int | float | torch.Tensor):
        return None
    t = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, np.float64)
    try:
        if np.broadcast_shapes(t.shape, (1, *shape)) != (1, *shape):
            raise ValueError
    except ValueError:
        raise NotPiecewiseAffineError(
            f"{name}: a constant of shape {t.shape} does not broadcast to the per-sample shape "
            f"{shape} (it would change the value's shape)"
        ) from None
    return np.broadcast_to(t, (1, *shape)).reshape(-1).copy()


def _concat(name: str, parts: list, dim: int) -> _Value:
    """``torch.cat(parts, dim)`` of values (per-sample axis ``dim - 1``)."""
    if not parts or not all(isinstance(v, _Value) for v in parts):
        raise NotPiecewiseAffineError(f"{name}: only values computed from the input are joined")
    ndim = len(parts[0].shape) + 1
    axis = (int(dim) + ndim if int(dim) < 0 else int(dim)) - 1
    if axis < 0:
        raise NotPiecewiseAffineError(
            f"{name}: joining along the batch axis mixes samples; concatenate along axis >= 1"
        )
    idx, start = [], 0  # where each output element comes from in the stacked parts
    for v in parts:
        n_v = math.prod(v.shape)
        idx.append(start + np.arange(n_v).reshape(v.shape))
        start += n_v
    try:
        order = np.concatenate(idx, axis=axis)
    except ValueError:
        raise NotPiecewiseAffineError(
            f"{name}: cannot join shapes {[v.shape for v in parts]} along axis {dim}"
        ) from None
    M = np.vstack([v.M for v in parts])[order.ravel()]
    c = np.concatenate([v.c for v in parts])[order.ravel()]
    return _Value(M, c, order.shape)


def _squeeze(name: str, op: str, x, args, kwargs):
    """``x.unsqueeze(dim)`` / ``x.squeeze(dim)`` of a value (per-sample shape; axis 0: the
    batch, which neither may touch)."""
    ndim = len(x.shape) + 1
    dim = kwargs.get("dim", args[0] if args else None)
    if op == "squeeze" and dim is None:  # every per-sample axis of size 1
        return _Value(x.M, x.c, tuple(k for k in x.shape if k != 1))
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise NotPiecewiseAffineError(f"{name}: {op} takes one integer dim here, got {dim!r}")
    pos = dim + (ndim + 1 if op == "unsqueeze" else ndim) if dim < 0 else dim
    if pos < 1:
        raise NotPiecewiseAffineError(
            f"{name}: {op} of the batch axis (dim {dim}) mixes samples; use a dim >= 1"
        )
    shape = list(x.shape)
    if op == "unsqueeze":
        shape.insert(pos - 1, 1)
    elif pos - 1 < len(shape) and shape[pos - 1] == 1:
        del shape[pos - 1]
    return _Value(x.M, x.c, tuple(shape))


def _flat_shape(name: str, shape: tuple, start: int, end: int) -> tuple:
    """Per-sample shape after ``flatten(start, end)`` of a batched input (axis 0: the batch)."""
    ndim = len(shape) + 1
    start, end = (int(v) + ndim if int(v) < 0 else int(v) for v in (start, end))
    if start < 1:
        raise NotPiecewiseAffineError(
            f"{name}: flattening the batch axis mixes samples; flatten from axis 1 on "
            "(x.flatten(1))"
        )
    if end < start:
        return shape
    return (*shape[: start - 1], math.prod(shape[start - 1 : end]), *shape[end:])


def _pool_windows(m, shape) -> np.ndarray:
    """(n_out, k) input indices of each max-pooling window (-1: padding)."""
    import torch
    import torch.nn.functional as F

    if getattr(m, "ceil_mode", False) or getattr(m, "return_indices", False):
        raise NotPiecewiseAffineError(
            f"{type(m).__name__} with ceil_mode/return_indices is not supported (use the defaults)"
        )
    one_d = isinstance(m, torch.nn.MaxPool1d)
    pair = (
        (lambda v: (1, v if isinstance(v, int) else v[0]))
        if one_d
        else torch.nn.modules.utils._pair
    )
    k, s = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
    p, dil = pair(m.padding), pair(m.dilation)
    if one_d:
        p = (0, p[1])  # no padding along the dummy height axis
    if len(shape) == (1 if one_d else 2):  # torch pools (B, L) / (B, H, W) as one channel
        shape = (1, *shape)
    sh = (shape[0], 1, shape[1]) if one_d else tuple(shape)
    if len(sh) != 3:
        raise NotPiecewiseAffineError(f"{type(m).__name__} needs (C, L) or (C, H, W) inputs")
    C = sh[0]
    idx = torch.arange(1, math.prod(sh) + 1, dtype=torch.float64).reshape(1, *sh)
    cols = F.unfold(idx, kernel_size=k, dilation=dil, padding=p, stride=s)  # (1, C*kk, L)
    kk = k[0] * k[1]
    cols = cols.reshape(C, kk, -1).permute(0, 2, 1).reshape(-1, kk)  # (C*L, kk)
    return cols.numpy().astype(np.int64) - 1


class _Compiler:
    def __init__(self, gm, input_shape):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.input_shape = input_shape

    def run(self) -> Decoder:
        import torch

        nodes = list(self.gm.graph.nodes)
        pos = {n: i for i, n in enumerate(nodes)}
        # uses that read only the shape (x.size(0), x.shape) do not keep a value alive
        self.last_use = {
            n: max([pos[u] for u in n.users if not _reads_shape(u)], default=-1) for n in nodes
        }
        vals: dict = {}
        self._values = vals  # activation layers re-express the live values in place
        shape = self.input_shape
        if shape is None:
            shape = self._infer_shape(nodes)
        d = math.prod(shape)
        self.b = _Builder(d)
        out = None
        for i, n in enumerate(nodes):
            if n.op == "placeholder":
                if vals:  # another argument, traced with its default (from_torch_fx)
                    vals[n] = n.args[0] if n.args else None
                    continue
                vals[n] = _Value(np.eye(d), np.zeros(d), tuple(shape))
            elif n.op == "output":
                res = n.args[0]
                out = vals[res] if isinstance(res, torch.fx.Node) else None
                if not isinstance(out, _Value):
                    raise NotPiecewiseAffineError(
                        f"the module returns {type(res).__name__} {res!r}, not one tensor computed "
                        "from its input; return one tensor (the decoder output)"
                    )
            elif n.op == "get_attr":
                t = self.gm
                for part in n.target.split("."):  # "lin.bias": a submodule's parameter
                    t = getattr(t, part)
                vals[n] = t.detach().to(torch.float64) if isinstance(t, torch.Tensor) else t
            else:
                vals[n] = self._node(n, i, vals)
                if _in_place(n, self.modules) and isinstance(n.args[0], torch.fx.Node):
                    vals[n.args[0]] = vals[n]  # x.relu_(): x is the result from here on
        if out.shape != (math.prod(out.shape),):
            out = _Value(out.M, out.c, (math.prod(out.shape),))
        return self.b.decoder(out)

    def _infer_shape(self, nodes):
        import torch

        ph = next(n for n in nodes if n.op == "placeholder")
        for u in ph.users:
            if u.op == "call_module" and isinstance(self.modules[u.target], torch.nn.Linear):
                return (self.modules[u.target].in_features,)
        raise ValueError(
            "cannot infer the latent input shape: pass input_shape=(latent_dim,) (the input "
            "does not go straight into an nn.Linear)"
        )

    # ---------------------------------------------------------------- nodes
    def _name(self, n) -> str:
        if n.op == "call_module":
            return f"layer {n.target!r} ({type(self.modules[n.target]).__name__})"
        t = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", n.target)
        return f"operation {t!r} (node {n.name!r})"

    def _affine_fn(self, v: _Value, module, name=None) -> _Value:
        W, b, out_shape = _dense_map(module, v.shape, name)
        return _Value(W @ v.M, W @ v.c + b, out_shape)

    def _node(self, n, i, vals):
        import torch
        import torch.nn.functional as F

        nn = torch.nn
        # nodes in lists too (torch.cat([a, b])): values, constants, sizes
        args = list(torch.fx.node.map_arg(n.args, lambda a: vals[a]))
        kwargs = dict(torch.fx.node.map_arg(n.kwargs, lambda a: vals[a]))
        name = self._name(n)
        x = args[0] if args else None
        if n.op in ("call_function", "call_method") and not _symbolic((args, kwargs)):
            return self._fold(n, name, args, kwargs)  # constants only: computed here
        if n.op == "call_module":
            m = self.modules[n.target]
            if isinstance(m, nn.Identity):
                return x
            if isinstance(m, _modules("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", *_ALPHA)):
                if m.training and m.p > 0:
                    raise NotPiecewiseAffineError(
                        f"{name} is in training mode (random); call eval()"
                    )
                return x
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) and (
                m.training or not m.track_running_stats or m.running_mean is None
            ):
                raise NotPiecewiseAffineError(
                    f"{name} normalises with batch statistics; call module.eval() so that it "
                    "uses its running statistics (an affine map)"
                )
            if isinstance(m, _modules(*_AFFINE_MODULES)):
                return self._affine_fn(x, m, name)
            if isinstance(m, nn.RReLU):
                if m.training:
                    raise NotPiecewiseAffineError(
                        f"{name} is in training mode (random slopes); call module.eval() (it "
                        "then has the slope (lower + upper) / 2)"
                    )
                return self._unitwise(i, n, x, (float(m.lower) + float(m.upper)) / 2)
            if isinstance(m, nn.Hardsigmoid):
                return self._clamp(i, n, _Value(x.M / 6, x.c / 6 + 0.5, x.shape), 0.0, 1.0)
            if isinstance(m, nn.ReLU):
                return self._unitwise(i, n, x, 0.0)
            if isinstance(m, nn.LeakyReLU):
                return self._unitwise(i, n, x, float(m.negative_slope))
            if isinstance(m, nn.PReLU):
                w = m.weight.detach().to(torch.float64).numpy().reshape(-1)
                N = math.prod(x.shape)
                slopes = np.full(N, w[0]) if w.size == 1 else np.repeat(w, N // w.size)
                return self._unitwise(i, n, x, slopes)
            if type(m).__name__ == "Abs" and type(m).__module__.startswith("exactdgn"):
                return self._unitwise(i, n, x, -1.0)
            if isinstance(m, nn.ReLU6):
                return self._clamp(i, n, x, 0.0, 6.0)
            if isinstance(m, nn.Hardtanh):
                return self._clamp(i, n, x, float(m.min_val), float(m.max_val))
            if isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
                return self._maxpool(i, n, x, m)
            if isinstance(m, nn.Softshrink):
                return self._softshrink(i, x, float(m.lambd))
            if isinstance(m, _modules(*_PA_UNSUPPORTED)):
                raise NotPiecewiseAffineError(
                    f"{name} is piecewise affine but not supported by the importer yet: "
                    f"{_PA_UNSUPPORTED[type(m).__name__]}"
                )
            why = (
                "smooth activations (Tanh, Sigmoid, GELU, SiLU, Softplus, ...) have no exact "
                "region decomposition"
                if isinstance(m, nn.Tanh | nn.Sigmoid | nn.GELU | nn.SiLU | nn.Softplus | nn.ELU)
                else "it is not a supported continuous piecewise-affine layer"
            )
            raise NotPiecewiseAffineError(
                f"{name}: {why}. Supported: Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, "
                "BatchNorm, Dropout and RReLU in eval mode, AvgPool, AdaptiveAvgPool, Upsample, "
                "padding, PixelShuffle, Flatten, Unflatten, Identity, ReLU, LeakyReLU, PReLU, "
                "ReLU6, Hardtanh, Hardsigmoid, MaxPool1d/2d, exactdgn Abs, sums of values"
            )
        if n.op == "call_function":
            f = n.target
            if f in (torch.relu, F.relu):
                return self._unitwise(i, n, x, 0.0)
            if f is F.leaky_relu:
                slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
                return self._unitwise(i, n, x, float(slope))
            if f is torch.abs:
                return self._unitwise(i, n, x, -1.0)
            if f is torch.relu_:
                return self._unitwise(i, n, x, 0.0)
            if f is F.prelu:
                return self._unitwise(i, n, x, self._prelu_slopes(kwargs.get("weight", args[1]), x))
            if f is F.softshrink:
                return self._softshrink(
                    i, x, float(kwargs.get("lambd", args[1] if len(args) > 1 else 0.5))
                )
            if f in (F.max_pool1d, F.max_pool2d):
                pool = nn.MaxPool1d if f is F.max_pool1d else nn.MaxPool2d
                return self._maxpool(i, n, x, pool(*args[1:], **kwargs))
            if f in _probed_functions() and not _symbolic((args[1:], kwargs)):
                return self._affine_fn(x, _call_module(f, args[1:], kwargs), name)
            if f is F.linear:
                W = kwargs.get("weight", args[1] if len(args) > 1 else None)
                bias = kwargs.get("bias", args[2] if len(args) > 2 else None)
                out = _matmul(name, x, W.T if _is_tensor(W) else W)
                return out if bias is None else self._sum(name, [out, bias], False, {})
            if f in (operator.matmul, torch.matmul, torch.mm):
                return _matmul(name, args[0], args[1])
            if f is operator.getitem and isinstance(x, list | tuple):
                return x[args[1]]
            if f is operator.getitem and isinstance(x, _Value):
                return _index(name, x, args[1])
            if f in (torch.sum, torch.mean):
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
                return _reduce(name, x, dim, bool(keep), f is torch.mean)
            if f in (torch.transpose, torch.swapaxes, torch.permute):
                return self._permute(name, f.__name__, x, args[1:], kwargs)
            if f is torch.reshape:
                return self._reshape(name, "reshape", x, args[1:], kwargs)
            if f in (torch.chunk, torch.split):
                return self._split_call(name, f.__name__, x, args[1:], kwargs)
            if f is torch.stack:
                parts = args[0]
                dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
                if not all(isinstance(v, _Value) for v in parts):
                    raise NotPiecewiseAffineError(f"{name}: only values from the input are stacked")
                ups = [_squeeze(name, "unsqueeze", v, [dim], {}) for v in parts]
                return _concat(name, ups, dim + len(parts[0].shape) + 2 if dim < 0 else dim)
            if f is F.hardsigmoid:
                return self._clamp(i, n, _Value(x.M / 6, x.c / 6 + 0.5, x.shape), 0.0, 1.0)
            if f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
                return self._dropout(name, args, kwargs, default_training=True)
            if f in (F.alpha_dropout, F.feature_alpha_dropout):
                return self._dropout(name, args, kwargs, default_training=False)
            if f is F.relu6:
                return self._clamp(i, n, x, 0.0, 6.0)
            if f is F.hardtanh:
                lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
                hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
                return self._clamp(i, n, x, float(lo), float(hi))
            if f in (operator.add, torch.add, operator.sub, torch.sub):
                return self._sum(name, args, f in (operator.sub, torch.sub), kwargs)
            if f in (operator.mul, torch.mul, operator.truediv, torch.div):
                return self._scale(name, args, f in (operator.truediv, torch.div))
            if f in (torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max):
                return self._clamp_call(i, n, f.__name__, args, kwargs)
            if f in (torch.maximum, torch.minimum, torch.max, torch.min, torch.fmax, torch.fmin):
                return self._extremum(i, n, f.__name__, args, kwargs)
            if f in (torch.cat, torch.concat, torch.concatenate):
                parts = [vals[a] if isinstance(a, torch.fx.Node) else a for a in n.args[0]]
                dim = kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else 0))
                return _concat(name, parts, dim)
            if f is operator.neg or f is torch.neg:
                return _Value(-x.M, -x.c, x.shape)
            if f is getattr and args[1] == "shape":
                return _size(x)
            if f is getattr and args[1] in ("dtype", "device"):  # the import's own: float64, CPU
                return torch.float64 if args[1] == "dtype" else torch.device("cpu")
            if f in (torch.zeros_like, torch.ones_like, torch.full_like):  # constants of x's shape
                fill = 0.0 if f is torch.zeros_like else 1.0 if f is torch.ones_like else args[1]
                return _Value(np.zeros_like(x.M), np.full(x.c.shape, float(fill)), x.shape)
            if f in (torch.unsqueeze, torch.squeeze):
                return _squeeze(name, f.__name__, x, args[1:], kwargs)
            if f is torch.flatten:
                start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
                end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
                return _Value(x.M, x.c, _flat_shape(name, x.shape, start, end))
            raise NotPiecewiseAffineError(f"{name} is not supported by the importer: {_SUPPORTED}")
        if n.op == "call_method":
            if n.target in ("view", "reshape", "flatten", "contiguous", "clone"):
                return self._reshape(name, n.target, x, args[1:], kwargs)
            if n.target in ("to", "double", "float", "cpu", "detach", "type_as"):
                return x  # the import computes in float64 on the CPU: the same map
            if n.target in ("new_zeros", "new_ones", "new_full"):  # constants, not per sample
                size = kwargs.get("size", args[1] if len(args) > 1 else ())
                value = {"new_zeros": 0.0, "new_ones": 1.0}.get(
                    n.target, kwargs.get("fill_value", args[2] if len(args) > 2 else None)
                )
                return torch.full(tuple(np.atleast_1d(size)), float(value), dtype=torch.float64)
            if n.target == "size":
                return _size(x, kwargs.get("dim", args[1] if len(args) > 1 else None))
            if n.target in ("sum", "mean"):
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
                return _reduce(name, x, dim, bool(keep), n.target == "mean")
            if n.target in ("transpose", "swapaxes", "permute"):
                return self._permute(name, n.target, x, args[1:], kwargs)
            if n.target in ("chunk", "split"):
                return self._split_call(name, n.target, x, args[1:], kwargs)
            if n.target == "matmul":
                return _matmul(name, args[0], args[1])
            if n.target in ("clamp", "clip", "clamp_min", "clamp_max"):
                return self._clamp_call(i, n, n.target, args, kwargs)
            if n.target in ("maximum", "minimum", "max", "min", "fmax", "fmin"):
                return self._extremum(i, n, n.target, args, kwargs)
            if n.target in ("relu", "relu_", "abs", "abs_"):
                return self._unitwise(i, n, x, 0.0 if n.target.startswith("relu") else -1.0)
            if n.target in ("add", "sub"):
                return self._sum(name, args, n.target == "sub", kwargs)
            if n.target in ("mul", "div"):
                return self._scale(name, args, n.target == "div")
            if n.target in ("unsqueeze", "squeeze"):
                return _squeeze(name, n.target, x, args[1:], kwargs)
            raise NotPiecewiseAffineError(
                f"method {n.target!r} (node {n.name!r}) is not supported by the importer: "
                f"{_SUPPORTED}"
            )
        raise NotPiecewiseAffineError(f"{name} ({n.op}) is not supported")

    def _fold(self, n, name, args, kwargs):
        """A node of constants only (a module's tensors, numbers, sizes): its value, computed
        (``self.log_scale.exp()``, ``h.shape[1] // 2``); random and in-place ones refused."""
        target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
        if (n.op == "call_method" and target.endswith("_")) or _RANDOM.search(target):
            raise NotPiecewiseAffineError(
                f"{name} on the module's constants is random or in place: not supported"
            )
        if any(a is BATCH for a in (*args, *kwargs.values())) and not (
            n.op == "call_function" and n.target is operator.getitem
        ):
            raise NotPiecewiseAffineError(
                f"{name} computes with the batch size x.size(0), unknown when the module is "
                "traced; keep it as the first size of a reshape (x.view(x.size(0), ...)) only"
            )
        try:
            if n.op == "call_method":
                return getattr(args[0], n.target)(*args[1:], **kwargs)
            return n.target(*args, **kwargs)
        except Exception as exc:
            raise NotPiecewiseAffineError(f"{name} on constants failed: {exc}") from exc

    @staticmethod
    def _prelu_slopes(weight, x):
        w = np.asarray(weight.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
        N = len(x.c)
        return np.full(N, w[0]) if w.size == 1 else np.repeat(w, N // w.size)

    def _softshrink(self, i, x, lam):
        """``softshrink(a) = relu(a - lam) - relu(-a - lam)``."""
        N, z = len(x.c), np.zeros(len(x.c))
        offs, width = self._new_layer(i, [(x.M, x.c - lam, z), (-x.M, -x.c - lam, z)])
        return _Value(_select(width, offs[0], N) - _select(width, offs[1], N), z, x.shape)

    @staticmethod
    def _permute(name, op, x, rest, kwargs):
        """``transpose(d0, d1)`` / ``swapaxes`` / ``permute(dims)`` keeping the batch first."""
        idx = np.arange(len(x.c)).reshape(x.shape)
        if op == "permute":
            dims = kwargs.get("dims", rest[0] if len(rest) == 1 else rest)
            dims = list(dims) if isinstance(dims, list | tuple) else [dims]
            nd = len(x.shape) + 1
            dims = [int(d) + nd if int(d) < 0 else int(d) for d in dims]
            if len(dims) != nd or dims[0] != 0:
                raise NotPiecewiseAffineError(
                    f"{name}: permute{tuple(dims)} must keep the batch axis first (0, ...)"
                )
            return _take(x, idx.transpose([d - 1 for d in dims[1:]]))
        d0 = kwargs.get("dim0", rest[0] if rest else None)
        d1 = kwargs.get("dim1", rest[1] if len(rest) > 1 else None)
        a, b = _per_sample_axis(name, x, d0), _per_sample_axis(name, x, d1)
        return _take(x, np.swapaxes(idx, a, b))

    @staticmethod
    def _split_call(name, op, x, rest, kwargs):
        key = "chunks" if op == "chunk" else "split_size_or_sections"
        sizes = kwargs.get(key, kwargs.get("split_size", rest[0] if rest else None))
        dim = kwargs.get("dim", rest[1] if len(rest) > 1 else 0)
        return _split(name, x, sizes, dim, op == "chunk")

    @staticmethod
    def _dropout(name, args, kwargs, default_training):
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        training = kwargs.get("training", args[2] if len(args) > 2 else default_training)
        if training and p > 0:
            raise NotPiecewiseAffineError(
                f"{name} is in training mode (random); call module.eval() (and pass "
                "training=self.training to functional dropout)"
            )
        return args[0]

    def _reshape(self, name, method, x, rest, kwargs):
        if method in ("contiguous", "clone"):
            return x
        if method == "flatten":
            start = kwargs.get("start_dim", rest[0] if rest else 0)
            end = kwargs.get("end_dim", rest[1] if len(rest) > 1 else -1)
            return _Value(x.M, x.c, _flat_shape(name, x.shape, start, end))
        dims = kwargs.get("shape", rest)
        dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], tuple | list) else dims
        if not dims or not (dims[0] is BATCH or dims[0] == -1):
            raise NotPiecewiseAffineError(
                f"{name}: a reshape must keep the batch axis first (x.view(x.size(0), ...))"
            )
        per = list(dims[1:])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in per):
            raise NotPiecewiseAffineError(
                f"{name}: a reshape to {dims} has a non-batch size that is not a number (the "
                "batch size x.size(0) there mixes samples); give those sizes as numbers"
            )
        N = math.prod(x.shape)
        if per.count(-1) == 1:
            per[per.index(-1)] = N // -math.prod(per)
        if math.prod(per) != N:
            raise NotPiecewiseAffineError(f"{name}: cannot reshape {x.shape} to {per}")
        return _Value(x.M, x.c, tuple(per))

    def _sum(self, name, args, minus, kwargs):
        a, b = args[0], args[1]
        alpha = float(kwargs.get("alpha", 1.0))
        sign = -alpha if minus else alpha
        if isinstance(a, _Value) and isinstance(b, _Value):
            if a.shape != b.shape:
                raise NotPiecewiseAffineError(f"{name}: adds shapes {a.shape} and {b.shape}")
            return _Value(a.M + sign * b.M, a.c + sign * b.c, a.shape)
        if isinstance(a, _Value) and (k := _constant(name, b, a.shape)) is not None:
            return _Value(a.M, a.c + sign * k, a.shape)
        if isinstance(b, _Value) and (k := _constant(name, a, b.shape)) is not None:
            return _Value(sign * b.M, k + sign * b.c, b.shape)
        raise NotPiecewiseAffineError(f"{name}: only sums of values and constants are supported")

    def _scale(self, name, args, divide):
        a, b = args[0], args[1]
        if isinstance(a, _Value) and (k := _constant(name, b, a.shape)) is not None:
            s = 1.0 / k if divide else k
            return _Value(s[:, None] * a.M, s * a.c, a.shape)
        if isinstance(b, _Value) and not divide and (k := _constant(name, a, b.shape)) is not None:
            return _Value(k[:, None] * b.M, k * b.c, b.shape)
        raise NotPiecewiseAffineError(
            f"{name}: a product of two values is not piecewise affine (only scaling by constants)"
        )

    # ---------------------------------------------------------------- nonlinear nodes
    def _new_layer(self, i, blocks):
        """One activation layer: ``blocks`` (M, c, slopes) first, then the live values passing
        through; the live values' maps are updated in place. Returns the blocks' offsets."""
        live = [
            (n, v)
            for n, v in self._values.items()
            if isinstance(v, _Value) and self.last_use.get(n, -1) > i
        ]
        rows = list(blocks) + [(v.M, v.c, np.ones(len(v.c))) for _, v in live]
        offs = self.b.layer(rows)
        width = self.b.width
        for k, (n, v) in enumerate(live):
            start = offs[len(blocks) + k]
            self._values[n] = _Value(_select(width, start, len(v.c)), np.zeros(len(v.c)), v.shape)
        return offs, width

    def _unitwise(self, i, n, x, slopes):
        N = len(x.c)
        s = np.broadcast_to(np.asarray(slopes, dtype=np.float64), (N,)).copy()
        offs, width = self._new_layer(i, [(x.M, x.c, s)])
        return _Value(_select(width, offs[0], N), np.zeros(N), x.shape)

    def _clamp(self, i, n, x, lo, hi):
        """``lo + relu(a - lo) - relu(a - hi)``."""
        if not np.all(np.less(lo, hi)):
            raise NotPiecewiseAffineError(f"{self._name(n)}: needs min < max")
        N = len(x.c)
        z = np.zeros(N)
        offs, width = self._new_layer(i, [(x.M, x.c - lo, z), (x.M, x.c - hi, z)])
        M = _select(width, offs[0], N) - _select(width, offs[1], N)
        return _Value(M, np.broadcast_to(lo, N).astype(np.float64), x.shape)

    def _clamp_call(self, i, n, fname, args, kwargs):
        """``clamp(x, min, max)`` / ``clip`` / ``clamp_min`` / ``clamp_max`` with numbers or
        module tensors as bounds."""
        name, x = self._name(n), args[0]
        if fname == "clamp_max":
            lo, hi = None, kwargs.get("max", args[1] if len(args) > 1 else None)
        else:
            lo = kwargs.get("min", args[1] if len(args) > 1 else None)
            hi = kwargs.get("max", args[2] if len(args) > 2 else None)
            hi = None if fname == "clamp_min" else hi
        if not isinstance(x, _Value):
            raise NotPiecewiseAffineError(f"{name}: clamps no value computed from the input")
        raw = (lo, hi)
        lo, hi = (None if v is None else _constant(name, v, x.shape) for v in raw)
        if (lo is None and raw[0] is not None) or (hi is None and raw[1] is not None):
            raise NotPiecewiseAffineError(
                f"{name}: the bounds must be numbers or the module's tensors; for a bound "
                "computed from the input use torch.maximum / torch.minimum"
            )
        if lo is not None and hi is not None:
            if np.all(lo >= hi):  # torch: every element is max
                return _Value(np.zeros_like(x.M), hi, x.shape)
            if not np.all(lo < hi):
                raise NotPiecewiseAffineError(f"{name}: some bounds have min < max, others not")
            return self._clamp(i, n, x, lo, hi)
        if lo is None and hi is None:
            raise NotPiecewiseAffineError(f"{name}: give min or max")
        return self._bound(i, x, hi if lo is None else lo, upper=lo is None)

    def _extremum(self, i, n, fname, args, kwargs):
        """Elementwise ``maximum`` / ``minimum`` of two values or of a value and a constant:
        ``max(a, b) = b + relu(a - b)``, ``min(a, b) = b - relu(b - a)``."""
        name = self._name(n)
        a, b = args[0], kwargs.get("other", args[1] if len(args) > 1 else None)
        upper = fname in ("minimum", "min", "fmin")
        if not isinstance(b, _Value) and not _is_tensor(b):  # torch.max(x, dim): a reduction
            raise NotPiecewiseAffineError(
                f"{name}: only the elementwise {fname} of two tensors is supported (a reduction "
                "over a dimension is not; use nn.MaxPool1d/2d)"
            )
        if isinstance(a, _Value) and isinstance(b, _Value):
            if a.shape != b.shape:
                raise NotPiecewiseAffineError(f"{name}: of shapes {a.shape} and {b.shape}")
            N, z, sign = len(a.c), np.zeros(len(a.c)), -1.0 if upper else 1.0
            blocks = [(sign * (a.M - b.M), sign * (a.c - b.c), z), (b.M, b.c, np.ones(N))]
            offs, width = self._new_layer(i, blocks)
            M = _select(width, offs[1], N) + sign * _select(width, offs[0], N)
            return _Value(M, np.zeros(N), a.shape)
        x, k = (a, b) if isinstance(a, _Value) else (b, a)
        if not isinstance(x, _Value):
            raise NotPiecewiseAffineError(f"{name}: of no value computed from the input")
        return self._bound(i, x, _constant(name, k, x.shape), upper=upper)

    def _bound(self, i, x, k, upper):
        """``max(a, k) = k + relu(a - k)`` or (``upper``) ``min(a, k) = k - relu(k - a)``."""
        N, sign = len(x.c), -1.0 if upper else 1.0
        offs, width = self._new_layer(i, [(sign * x.M, sign * (x.c - k), np.zeros(N))])
        return _Value(sign * _select(width, offs[0], N), k.copy(), x.shape)

    def _maxpool(self, i, n, x, m):
        win = _pool_windows(m, x.shape)  # (n_out, k) indices into x (-1 padding)
        n_out = win.shape[0]
        # candidates of each window: affine maps of the current h
        cand = [(x.M[np.maximum(col, 0)], x.c[np.maximum(col, 0)], col >= 0) for col in win.T]
        while len(cand) > 1:
            pairs = [(cand[j], cand[j + 1]) for j in range(0, len(cand) - 1, 2)]
            odd = [cand[-1]] if len(cand) % 2 else []
            blocks, both_idx = [], []
            for (Ma, ca, va), (Mb, cb, vb) in pairs:
                both = np.nonzero(va & vb)[0]  # relu(a - b) units only where both exist
                both_idx.append(both)
                blocks.append((Ma[both] - Mb[both], ca[both] - cb[both], np.zeros(len(both))))
                blocks.append((np.where(vb[:, None], Mb, Ma), np.where(vb, cb, ca), np.ones(n_out)))
            for Mo, co, _ in odd:
                blocks.append((Mo, co, np.ones(n_out)))
            offs, width = self._new_layer(i, blocks)
            new = []
            for j, ((_, _, va), (_, _, vb)) in enumerate(pairs):
                M = _select(width, offs[2 * j + 1], n_out)  # the survivor b (or a)
                both = both_idx[j]
                M[both, offs[2 * j] + np.arange(len(both))] += 1.0  # + relu(a - b)
                new.append((M, np.zeros(n_out), va | vb))
            for k, (_, _, vo) in enumerate(odd):
                new.append((_select(width, offs[2 * len(pairs) + k], n_out), np.zeros(n_out), vo))
            cand = new
        with_shape = self._pool_shape(m, x.shape, n_out)
        return _Value(cand[0][0], cand[0][1], with_shape)

    @staticmethod
    def _pool_shape(m, shape, n_out):
        import torch

        with torch.no_grad():
            return tuple(m(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])


def from_torch_fx(module, input_shape=None) -> Decoder:
    """A :class:`Decoder` from any module built of supported operations (see the module doc).

    Parameters
    ----------
    module : torch.nn.Module (in eval mode where it matters: BatchNorm, Dropout)
        Its ``forward`` takes the latent ``z``; other arguments need defaults, which are
        used (``forward(self, z, temperature=1.0)`` is imported at ``temperature=1.0``).
    input_shape : sequence of int, optional
        Per-sample latent input shape; inferred when the input goes into an ``nn.Linear``.
    """
    import inspect

    import torch.fx

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read: traced as it is
        params = []
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    no_default = [p.name for p in named[1:] if p.default is inspect.Parameter.empty]
    if no_default:
        raise ValueError(
            f"{type(module).__name__}.forward takes {[p.name for p in named]}: a decoder takes "
            f"one input (the latent), and {no_default} have no default. Give them defaults "
            "(they are traced with those), or wrap the module in one whose forward(z) passes "
            "them"
        )
    concrete = {p.name: p.default for p in named[1:]}  # traced with their defaults
    try:
        gm = torch.fx.symbolic_trace(module, concrete_args=concrete or None)
    except Exception as exc:  # data-dependent control flow and the like
        raise NotPiecewiseAffineError(
            f"{type(module).__name__} cannot be traced by torch.fx ({exc}); write it as an "
            "nn.Sequential or without data-dependent control flow"
        ) from exc
    comp = _Compiler(gm, None if input_shape is None else tuple(int(s) for s in input_shape))
    return comp.run()
