"""Independent test oracle: the zero-noise limit of ``log p(x)`` for a square decoder.

With ``D = d`` outputs and noise ``σ -> 0``, ``p(x) -> Σ_{z*: g(z*) = x} N(z*; 0, I) /
|det A(z*)|``: the sum over the pre-images of ``x``, each weighted by the prior density and the
Jacobian of the region's affine map. The pre-images are found by brute force over every
activation pattern of the hidden units (``2^H`` affine systems, from
:func:`tests.oracles.enumerate.pattern_output_map`; a solution counts where the plain forward
pass has that pattern), so nothing is shared with ``exactdgn.partition`` or ``exactdgn.inference``.
The correction at ``σ > 0`` is ``O(σ²)`` relative (``O(σ)`` near a kink); tests use ``σ <=
1e-9`` and points whose pre-images are well inside their cells.
"""

from __future__ import annotations

import itertools

import numpy as np

from .enumerate import kink_units, pattern_output_map, reference_forward

__all__ = ["zero_noise_log_px"]


def zero_noise_log_px(decoder, x) -> float:
    """``log Σ_{z*} N(z*) / |det A|`` over the pre-images of ``x`` (D = d, few kink units)."""
    x = np.asarray(x, dtype=np.float64)
    d = decoder.weights[0].shape[1]
    kink = kink_units(decoder)
    H = int(kink.size)
    if x.shape != (d,) or decoder.weights[-1].shape[0] != d or H > 16:
        raise ValueError("zero_noise_log_px needs a square decoder (D = d) with <= 16 units")
    total = 0.0
    for bits in itertools.product([False, True], repeat=H):
        pattern = np.array(bits) | ~kink
        A, b = pattern_output_map(decoder, pattern)
        det = np.linalg.det(A)
        if abs(det) < 1e-12:
            continue
        z = np.linalg.solve(A, x - b)
        if np.array_equal(reference_forward(decoder, z[None])[2][0], pattern):
            total += np.exp(-0.5 * z @ z) / (2 * np.pi) ** (d / 2) / abs(det)
    return float(np.log(total))
