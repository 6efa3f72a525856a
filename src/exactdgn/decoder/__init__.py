"""CPA decoders: layers, activation patterns, per-region affine maps, torch import/export."""

from ._core import ACTIVATIONS, Activation, Decoder, NotPiecewiseAffineError
from ._torch import Abs, from_torch, to_torch

__all__ = [
    "ACTIVATIONS",
    "Abs",
    "Activation",
    "Decoder",
    "NotPiecewiseAffineError",
    "from_torch",
    "to_torch",
]
