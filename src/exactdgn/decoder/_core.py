"""Continuous piecewise-affine (CPA) decoders: affine layers with ReLU-family activations.

Every supported activation acts unit-wise as ``a -> a * (p_i if a > 0 else q_i)`` with a
positive-side slope ``p_i`` and a negative-side slope ``q_i``:

============  =====  ==========
activation     p_i    q_i
============  =====  ==========
relu            1      0
leaky_relu      1      alpha
prelu           1      alpha_i
abs             1     -1
identity        1      1
============  =====  ==========

A unit with ``p_i == q_i`` is affine and never splits the latent space; the others are *kink
units*. The activation pattern of a latent point is the boolean vector of ``a_i > 0`` over all
hidden units (affine units are reported as ``True`` by convention). Once the pattern is fixed,
the decoder is the affine map ``g(z) = A z + b``.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_array, is_int

__all__ = ["ACTIVATIONS", "Activation", "Decoder", "NotPiecewiseAffineError"]

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs", "identity")


class NotPiecewiseAffineError(TypeError):
    """Raised when a layer or module is not continuous piecewise affine (or not supported)."""


@dataclass(frozen=True)
class Activation:
    """A ReLU-family activation.

    Parameters
    ----------
    kind : {"relu", "leaky_relu", "prelu", "abs", "identity"}
    negative_slope : float or ndarray of shape (n_units,)
        Slope for negative inputs: ``alpha`` for ``leaky_relu`` (default 0.01, as torch),
        per-unit (or shared) slopes for ``prelu`` (default 0). Ignored (fixed) for the other
        kinds.
    """

    kind: str
    negative_slope: float | np.ndarray | None = field(default=None)

    def __post_init__(self):
        if self.kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.kind!r}; choose one of {ACTIVATIONS}")
        if self.negative_slope is None:  # leaky_relu: torch's 0.01, as the name "leaky_relu"
            object.__setattr__(self, "negative_slope", 0.01 if self.kind == "leaky_relu" else 0.0)
        slope = np.asarray(self.negative_slope, dtype=np.float64)
        if not np.all(np.isfinite(slope)):
            raise ValueError(f"negative_slope of {self.kind} must be finite, got {slope}")
        if self.kind != "prelu" and slope.ndim != 0:
            raise ValueError(f"{self.kind} takes a scalar negative_slope, got shape {slope.shape}")
        if slope.ndim > 1:
            raise ValueError(f"prelu slopes must be a scalar or 1-D, got shape {slope.shape}")
        if slope.ndim:  # a private read-only copy: the caller's array may change later
            slope = slope.copy()
            slope.flags.writeable = False
        object.__setattr__(self, "negative_slope", slope if slope.ndim else float(slope))

    def slopes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(positive_slopes, negative_slopes)``, each of shape ``(n,)``."""
        pos = np.ones(n)
        if self.kind == "relu":
            neg = np.zeros(n)
        elif self.kind == "abs":
            neg = -np.ones(n)
        elif self.kind == "identity":
            neg = np.ones(n)
        else:
            neg = np.broadcast_to(np.asarray(self.negative_slope, dtype=np.float64), (n,)).copy()
        return pos, neg

    def __eq__(self, other):
        if not isinstance(other, Activation):
            return NotImplemented
        return self.kind == other.kind and np.array_equal(
            np.asarray(self.negative_slope), np.asarray(other.negative_slope)
        )

    def __hash__(self):  # + 0.0: -0.0 and 0.0 are equal, so hash alike
        return hash((self.kind, (np.asarray(self.negative_slope) + 0.0).tobytes()))


def _is_finite_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_finite(weights, biases, hint: str = "") -> None:
    """Refuse NaN or infinite weights or biases, naming the first such layer."""
    for k, (W, c) in enumerate(zip(weights, biases, strict=True)):
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(c))):
            raise ValueError(f"layer {k} has non-finite weights or biases{hint}")


def _as_activation(act, n: int) -> Activation:
    if isinstance(act, Activation):
        out = act
    elif isinstance(act, str):
        out = Activation(act, 0.01 if act == "leaky_relu" else 0.0)
    elif isinstance(act, tuple) and len(act) == 2:
        out = Activation(*act)
    else:
        raise TypeError(f"activation must be an Activation, a name or (name, slope); got {act!r}")
    slope = np.asarray(out.negative_slope)
    if out.kind == "prelu" and slope.ndim == 1 and slope.shape[0] not in (1, n):
        raise ValueError(f"prelu has {slope.shape[0]} slopes for a layer of {n} units")
    return out


class Decoder:
    """A continuous piecewise-affine MLP ``g: R^d -> R^D`` in float64.

    ``g(z) = W_L s_{L-1}(W_{L-1} ... s_1(W_1 z + c_1) ... + c_{L-1}) + c_L`` with ReLU-family
    activations ``s_k`` (see the module docstring).

    Parameters
    ----------
    weights : sequence of ndarray
        ``W_k`` of shape ``(n_k, n_{k-1})`` with ``n_0 = d`` (latent) and ``n_L = D`` (output).
    biases : sequence of ndarray
        ``c_k`` of shape ``(n_k,)``.
    activations : sequence
        ``L - 1`` activations (``Activation``, a name, or ``(name, negative_slope)``), one between
        consecutive affine layers.

    Examples
    --------
    >>> dec = Decoder.random([2, 8, 5], activation="leaky_relu", seed=0)
    >>> dec(np.zeros((3, 2))).shape
    (3, 5)
    """

    def __init__(self, weights: Sequence, biases: Sequence, activations: Sequence = ()):
        for k, (W, c) in enumerate(zip(weights, biases, strict=False)):
            if np.iscomplexobj(W) or np.iscomplexobj(c):
                raise ValueError(
                    f"layer {k} has complex weights or biases: a decoder is real (the real "
                    "part is not taken silently)"
                )
        weights = [np.array(W, dtype=np.float64, copy=True) for W in weights]
        biases = [np.array(c, dtype=np.float64, copy=True) for c in biases]
        if len(weights) == 0:
            raise ValueError("a decoder needs at least one affine layer")
        if len(biases) != len(weights):
            raise ValueError(f"got {len(weights)} weight matrices but {len(biases)} bias vectors")
        if len(activations) != len(weights) - 1:
            raise ValueError(
                f"{len(weights)} affine layers need {len(weights) - 1} activations, "
                f"got {len(activations)}"
            )
        for k, (W, c) in enumerate(zip(weights, biases, strict=True)):
            if W.ndim != 2:
                raise ValueError(f"weight {k} must be 2-D (out, in), got shape {W.shape}")
            if c.shape != (W.shape[0],):
                raise ValueError(f"bias {k} has shape {c.shape}, expected ({W.shape[0]},)")
            if k > 0 and W.shape[1] != weights[k - 1].shape[0]:
                raise ValueError(
                    f"weight {k} takes {W.shape[1]} inputs but layer {k - 1} has "
                    f"{weights[k - 1].shape[0]} outputs"
                )
        if weights[0].shape[1] < 1 or weights[-1].shape[0] < 1:
            raise ValueError(
                f"a decoder needs a latent dimension and an output dimension of at least 1, "
                f"got {weights[0].shape[1]} and {weights[-1].shape[0]}"
            )
        _check_finite(weights, biases)
        self.weights = weights
        self.biases = biases
        self.activations = [
            _as_activation(a, W.shape[0]) for a, W in zip(activations, weights[:-1], strict=True)
        ]
        pos, neg = [], []
        for a, W in zip(self.activations, weights[:-1], strict=True):
            p, q = a.slopes(W.shape[0])
            pos.append(p)
            neg.append(q)
        self._pos = pos
        self._neg = neg

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        layer_sizes: Sequence[int],
        *,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        bias_std: float = 0.1,
        seed=None,
    ) -> Decoder:
        """He-initialised random decoder with sizes ``[d, n_1, ..., D]`` (float64).

        Parameters
        ----------
        layer_sizes : sequence of int
            ``[d, n_1, ..., D]``: at least two positive integers (``d >= 1`` is the latent
            dimension, ``D`` the output dimension).
        activation : {"relu", "leaky_relu", "prelu", "abs", "identity"}
            Activation of every hidden layer.
        negative_slope : float
            Finite negative-side slope of ``leaky_relu`` / ``prelu`` (ignored by the others).
        bias_std : float
            Finite standard deviation (>= 0) of the normal biases.
        seed : int or numpy.random.Generator, optional

        Raises
        ------
        ValueError
            For an argument outside the ranges above.
        """
        if isinstance(layer_sizes, str) or not isinstance(layer_sizes, Sequence | np.ndarray):
            raise ValueError(
                f"layer_sizes must be a sequence [d, n_1, ..., D], got {layer_sizes!r}"
            )
        if not all(is_int(s, 1) for s in layer_sizes):
            raise ValueError(
                f"layer_sizes must be positive integers (latent_dim >= 1 and every layer "
                f"width >= 1), got {list(layer_sizes)}"
            )
        sizes = [int(s) for s in layer_sizes]
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least 2 sizes [d, ..., D] (latent and output), got {sizes}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        if not _is_finite_real(negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
        if not (_is_finite_real(bias_std) and bias_std >= 0):
            raise ValueError(f"bias_std must be finite and >= 0, got {bias_std!r}")
        rng = np.random.default_rng(seed)
        Ws = [rng.normal(0, np.sqrt(2.0 / m), (n, m)) for m, n in itertools.pairwise(sizes)]
        cs = [rng.normal(0, bias_std, n) for n in sizes[1:]]
        act = (activation, negative_slope) if activation in ("leaky_relu", "prelu") else activation
        return cls(Ws, cs, [act] * (len(sizes) - 2))

    @classmethod
    def from_torch(cls, module, input_shape: Sequence[int] | None = None) -> Decoder:
        """Import a PyTorch module (see :func:`exactdgn.decoder.from_torch`)."""
        from ._torch import from_torch

        return from_torch(module, input_shape=input_shape)

    def to_torch(self, dtype=None):
        """Return an equivalent ``torch.nn.Sequential`` (see :func:`exactdgn.decoder.to_torch`).

        ``dtype`` (default float64) is a floating-point torch dtype, numpy dtype or a string such
        as ``"float32"``.
        """
        from ._torch import to_torch

        return to_torch(self, dtype=dtype)

    def copy(self) -> Decoder:
        return Decoder(self.weights, self.biases, self.activations)

    # ------------------------------------------------------------------ sizes
    @property
    def latent_dim(self) -> int:
        return self.weights[0].shape[1]

    @property
    def output_dim(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def layer_sizes(self) -> list[int]:
        return [self.latent_dim] + [W.shape[0] for W in self.weights]

    @property
    def hidden_sizes(self) -> list[int]:
        return [W.shape[0] for W in self.weights[:-1]]

    @property
    def n_layers(self) -> int:
        """Number of affine layers."""
        return len(self.weights)

    @property
    def n_units(self) -> int:
        """Total number of hidden units."""
        return int(sum(self.hidden_sizes))

    @property
    def n_params(self) -> int:
        return int(sum(W.size + c.size for W, c in zip(self.weights, self.biases, strict=True)))

    @property
    def unit_slices(self) -> list[slice]:
        """Slice of each hidden layer's units within a pattern vector."""
        out, start = [], 0
        for n in self.hidden_sizes:
            out.append(slice(start, start + n))
            start += n
        return out

    @property
    def kink_mask(self) -> np.ndarray:
        """(n_units,) bool: units whose two slopes differ (they split the latent space)."""
        if not self._pos:
            return np.zeros(0, dtype=bool)
        return np.concatenate([p != q for p, q in zip(self._pos, self._neg, strict=True)])

    @property
    def positive_slopes(self) -> np.ndarray:
        return np.concatenate(self._pos) if self._pos else np.zeros(0)

    @property
    def negative_slopes(self) -> np.ndarray:
        return np.concatenate(self._neg) if self._neg else np.zeros(0)

    def __repr__(self) -> str:
        acts = ",".join(a.kind for a in self.activations)
        return f"Decoder(layer_sizes={self.layer_sizes}, activations=[{acts}])"

    # ------------------------------------------------------------------ evaluation
    def _check_latent(self, Z, name="Z") -> np.ndarray:
        return check_array(Z, name=name, n_features=self.latent_dim, feature_name="latent dims")

    def forward(self, Z, *, return_pattern: bool = False):
        """Evaluate ``g`` on latent points.

        Parameters
        ----------
        Z : array_like of shape (N, d)
        return_pattern : bool
            Also return the activation pattern (N, n_units).

        Returns
        -------
        X : ndarray of shape (N, D)
        pattern : ndarray of shape (N, n_units), bool (only if ``return_pattern``)
        """
        h = self._check_latent(Z)
        pats = []
        for k, (W, c) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = h @ W.T + c
            if k < len(self.activations):
                on = a > 0
                pats.append(on | (self._pos[k] == self._neg[k]))
                h = a * np.where(on, self._pos[k], self._neg[k])
            else:
                h = a
        if return_pattern:
            pat = np.concatenate(pats, axis=1) if pats else np.zeros((h.shape[0], 0), dtype=bool)
            return h, pat
        return h

    __call__ = forward

    def activation_pattern(self, Z) -> np.ndarray:
        """(N, n_units) bool pattern ``a_i(z) > 0`` (affine units reported as ``True``)."""
        h = self._check_latent(Z)
        pats = []
        for k, (W, c) in enumerate(zip(self.weights[:-1], self.biases[:-1], strict=True)):
            a = h @ W.T + c
            on = a > 0
            pats.append(on | (self._pos[k] == self._neg[k]))
            h = a * np.where(on, self._pos[k], self._neg[k])
        return np.concatenate(pats, axis=1) if pats else np.zeros((h.shape[0], 0), dtype=bool)

    def preactivations(self, Z) -> np.ndarray:
        """(N, n_units) hidden pre-activations ``a_i(z)``."""
        h = self._check_latent(Z)
        out = []
        for k, (W, c) in enumerate(zip(self.weights[:-1], self.biases[:-1], strict=True)):
            a = h @ W.T + c
            out.append(a)
            h = a * np.where(a > 0, self._pos[k], self._neg[k])
        return np.concatenate(out, axis=1) if out else np.zeros((h.shape[0], 0))

    def _check_patterns(self, patterns) -> np.ndarray:
        P = np.asarray(patterns)
        if P.ndim == 1:
            P = P[None, :]
        if P.ndim != 2 or P.shape[1] != self.n_units:
            raise ValueError(
                f"patterns must have shape (R, {self.n_units}), got {np.asarray(patterns).shape}"
            )
        return self._as_bool(P)

    @staticmethod
    def _as_bool(P: np.ndarray) -> np.ndarray:
        if P.dtype != bool:
            if not np.isin(P, (0, 1)).all():
                raise ValueError("patterns must be boolean (or 0/1)")
            P = P.astype(bool)
        return P

    def layer_maps(self, patterns, layer: int) -> np.ndarray:
        """Affine maps of layer ``layer``'s pre-activations given the patterns of earlier layers.

        Parameters
        ----------
        patterns : array_like of shape (R, n) or (n,), bool (or 0/1)
            Patterns of the hidden layers before ``layer``: ``n`` is at least their number of
            units, ``sum(hidden_sizes[:layer])``; extra columns are ignored.
        layer : int
            Index of an affine layer (0-based; ``n_layers - 1`` is the output layer).

        Returns
        -------
        M : ndarray of shape (R, n_layer, d + 1)
            ``pre-activation = M[..., :d] @ z + M[..., d]`` on the set of latent points whose
            earlier-layer pattern is the given one.
        """
        if not (is_int(layer, 0) and layer < self.n_layers):
            raise ValueError(f"layer must be an integer in [0, {self.n_layers}), got {layer!r}")
        P = np.asarray(patterns)
        if P.ndim == 1:
            P = P[None, :]
        need = sum(self.hidden_sizes[:layer])
        if P.ndim != 2 or P.shape[1] < need:
            raise ValueError(
                f"patterns for layer {layer} need shape (R, n) with n >= {need} (the units of "
                f"the hidden layers before it; a full pattern has {self.n_units}), got shape "
                f"{np.asarray(patterns).shape}"
            )
        P = self._as_bool(P)
        R, d = P.shape[0], self.latent_dim
        # transposed maps Mt (R, d+1, n): one GEMM per layer over all regions at once
        Mt = np.empty((R, d + 1, self.weights[0].shape[0]))
        Mt[:] = np.concatenate([self.weights[0].T, self.biases[0][None]], axis=0)
        slices = self.unit_slices
        for k in range(1, layer + 1):
            s = np.where(P[:, slices[k - 1]], self._pos[k - 1], self._neg[k - 1])
            H = Mt * s[:, None, :]
            W = self.weights[k]
            Mt = (H.reshape(R * (d + 1), -1) @ W.T).reshape(R, d + 1, W.shape[0])
            Mt[:, d, :] += self.biases[k]
        return Mt.transpose(0, 2, 1)  # a view: (R, n_layer, d+1) without a transposing copy

    def affine_map(self, patterns) -> tuple[np.ndarray, np.ndarray]:
        """The affine map ``g(z) = A z + b`` of each activation pattern.

        Parameters
        ----------
        patterns : array_like of shape (R, n_units) or (n_units,), bool

        Returns
        -------
        A : ndarray of shape (R, D, d)
            A strided view (``A.transpose(0, 2, 1)`` is C-contiguous).
        b : ndarray of shape (R, D)
        """
        P = self._check_patterns(patterns)
        M = self.layer_maps(P, self.n_layers - 1)
        d = self.latent_dim
        # views into one (R, d+1, D) array; A[r] is stored transposed (A.transpose(0, 2, 1) is
        # C-contiguous), which is the layout the likelihood's GEMM wants
        return M[:, :, :d], M[:, :, d]

    def jacobian(self, Z) -> np.ndarray:
        """(N, D, d) Jacobian of ``g`` at each latent point (the ``A`` of its region)."""
        return self.affine_map(self.activation_pattern(Z))[0]
