"""Decoders whose every hidden unit kinks but whose output is affine (closed-form reference).

Each hidden layer holds a pair ``(h, -h)`` per unit and the next layer reads
``(relu_a(h) - relu_a(-h)) / (1 + a) = h`` (``relu_a`` the leaky ReLU with slope ``a``; ReLU for
``a = 0``), so ``g(z) = A z + b`` exactly while the partition is the full arrangement of the
oblique hyperplanes of every layer (no region is special). ``p(x)`` is then
``N(x; b, diag sigma^2 + A A^T)`` and ``p(z | x)`` Gaussian: references that share no formula
with the region sums (evaluate them with ``tests.oracles.test_likelihood_oracle``'s mpmath
closed form).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hidden_affine_decoder"]


def hidden_affine_decoder(rng, d: int, n1: int, n2: int, D: int, alpha: float = 0.0):
    """``(decoder, A, b)``: two hidden layers of ``2 n1`` and ``2 n2`` kinked units."""
    from exactdgn import Decoder

    W1, c1 = rng.normal(size=(n1, d)), 0.5 * rng.normal(size=n1)
    V, c2 = rng.normal(size=(n2, n1)) / np.sqrt(n1), 0.3 * rng.normal(size=n2)
    U, c3 = rng.normal(size=(D, n2)) / np.sqrt(n2), 0.1 * rng.normal(size=D)
    s = 1.0 / (1.0 + alpha)
    Wb = np.c_[V * s, -V * s]
    act = ("leaky_relu", alpha) if alpha else "relu"
    dec = Decoder(
        [np.r_[W1, -W1], np.r_[Wb, -Wb], np.c_[U * s, -U * s]],
        [np.r_[c1, -c1], np.r_[c2, -c2], c3],
        [act, act],
    )
    return dec, U @ V @ W1, U @ (V @ c1 + c2) + c3
