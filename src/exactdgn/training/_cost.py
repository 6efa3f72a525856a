"""Before training: estimate regions, memory and time, and refuse or warn.

The estimate uses a decoder of the requested architecture with random weights (as the
initialisation draws them): its region count ``R`` (enumerated in d <= 2, except in d = 2
behind a first hidden layer of more than 100 units, whose own ``1 + w + C(w, 2)`` regions are
taken as a lower bound instead of minutes of enumeration; the bound of a hyperplane
arrangement per layer in d >= 3; training usually changes it by a small factor),
and the worst case of the first E-steps (a broad posterior at the start keeps every
point-region pair) gives ``N R`` pairs. Costs per pair,
measured on the 2-core development machine (one E-step, masses and moments):

- d = 1: ~0.1 µs, d = 2: ~4 µs (tail-safe polygon masses);
- d = 3: ~2 ms (measured 4.8-5.2 ms per pair with [3,8,2] and [3,12,2] under a load of 10);
- d = 4: ~0.1 s (measured 0.11 s per pair with [4,6,3] and 0.12 s with [4,8,3]): the
  facet recursion's outer quadrature (~300 nodes) over each facet's 3-D masses; the cost and the
  work memory are taken to grow by ``10 m`` and ``m`` (``m`` the number of hidden units, a bound
  on a region's facets) over d = 3's: a rough model whose only purpose is to refuse or warn
  before a run that cannot finish. d >= 5 is refused before (``latent_dim <= 4``:
  :data:`exactdgn.gaussian._polytope.MAX_DIM`).

EM's M-step solves each hidden layer's normal equations in ``n = n_l (m + 1)`` unknowns
(:func:`exactdgn.em.update_layer`): directly up to :data:`exactdgn.em._steps.DIRECT_UNKNOWNS`
(two (n, n) arrays, ~n³/3 flops), by conjugate gradients beyond (``CG_MAXITER`` products of
``~4 R (d+1) (2 n_l (m+1) + n_l²)`` flops, no (n, n) array); beside them every hidden layer
holds the regions' maps ``(R, D, n_l)``, ``(R, n_l, n_l)`` and ``(R, m+1, m+1)``. Counted at
:data:`_FLOPS` flops per second (the 2-core machine's BLAS, loaded), the memory of the
largest layer beside the pairs, like the gradient's (they do not run at once).

The exact gradient (``method="lbfgs"``, ``"gradient"``, ``"auto"`` and EM's gradient fallback)
runs while the pairs are held: its host sums take one block of pairs (``chunk_bytes``, see
:func:`exactdgn.em._steps.centred_sums`) plus a few arrays the size of the regions' affine maps
(``R x D x (d+1)``: the maps and their autograd, the cross sums), counted in the estimate.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from math import comb

import numpy as np

from .._validation import available_memory, is_int
from ..decoder import Decoder
from ..em._steps import _RES_BLOCK, CG_MAXITER, DIRECT_UNKNOWNS
from ..partition import partition

__all__ = ["TrainingCost", "TrainingTooLargeError", "available_memory", "estimate_training_cost"]

logger = logging.getLogger(__name__)

_SECONDS_PER_PAIR = {1: 1e-7, 2: 4e-6, 3: 2e-3}
# d = 2: peak bytes of one E-step with moments per point-region pair (the polygons' edge
# tables and cubature work beside the weights, means and covariances), measured with
# tracemalloc: 464 ([2,32,32,64]), 885 ([2,16,16,2]), 1,083 ([2,8,5]) per pair, all kept
_BYTES_PER_PAIR_2D = 1_200
_ND_NODES = 10  # d >= 4: the cost per pair grows by this times m per dimension (see above)
_WARN_SECONDS = 60.0  # an E-step estimated above this warns
# (R, D, d+1) float64 arrays alive in one exact gradient (maps, autograd, cross sums): a bound
_GRADIENT_MAPS = 12
_CHUNK_BYTES = 256 * 2**20  # the estimator's default chunk_bytes
# float64 flops per second of the M-step's dense algebra (2-core machine, loaded: a 64 x 64
# layer's direct solve 2.5e10 flops in ~10 s, its CG products ~1e10 per second)
_FLOPS = 5e9
# d = 2 decoders whose first layer cuts more regions than this are not enumerated: the first
# layer's count is the estimate (a lower bound, ~1/4 of [2,w,w]'s count; enumerating
# [2,100,100]: 1.2 s, [2,200,200]: 10 s, [2,2000,2000]: never ended)
_ENUMERATE_2D = 5_051  # [2,100,...]


class TrainingTooLargeError(MemoryError):
    """Training would not fit in memory (raised before any work, with the estimate)."""


@dataclass
class TrainingCost:
    """Estimated size of one exact E-step at the start of training.

    Attributes
    ----------
    n_regions : int
        Region count of a random decoder of the architecture (an upper bound in d >= 3; in
        d = 2 with a first hidden layer of more than 100 units, the regions of that layer
        alone: a lower bound, see ``lower_bound``).
    n_pairs : int
        Point-region pairs in the worst case (every pair kept).
    bytes : int
        Memory of those pairs' statistics (weights, truncated means and covariances) and
        their work arrays, plus ``gradient_bytes``.
    seconds : float
        Time of one E-step at the measured cost per pair (2-core machine).
    """

    n_regions: int
    n_pairs: int
    bytes: int
    seconds: float
    gradient_bytes: int = 0
    """Work memory of one exact gradient beside the pairs (one block of pairs of
    ``chunk_bytes`` and ``_GRADIENT_MAPS`` arrays of the regions' maps)."""
    lower_bound: bool = False
    """``n_regions`` (and with it the rest) is a lower bound, not an estimate."""
    mstep_bytes: int = 0
    """Work memory of EM's M-step beside the pairs (its largest hidden layer: the regions'
    maps and the normal equations, see the module docstring)."""
    mstep_seconds: float = 0.0
    """Time of one M-step over every layer (dense flops at ``_FLOPS``)."""

    def describe(self) -> str:
        about = "at least " if self.lower_bound else "~"
        text = (
            f"{about}{self.n_regions:,} regions x N points = {self.n_pairs:,} point-region pairs, "
            f"~{self.bytes / 2**30:.3g} GiB and ~{_fmt_seconds(self.seconds)} per E-step"
        )
        if self.mstep_seconds >= 1.0:
            text += f", ~{_fmt_seconds(self.mstep_seconds)} per M-step"
        return text


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _check_architecture(latent_dim, hidden_sizes, n_samples, n_features) -> None:
    """ValueErrors naming a bad argument of :func:`estimate_training_cost` (as the
    estimator's own checks word them)."""

    for name, value, low in (
        ("latent_dim", latent_dim, 1),
        ("n_samples", n_samples, 1),
        ("n_features", n_features, 1),
    ):
        if not is_int(value, low):
            raise ValueError(f"{name}={value!r} is invalid: use an integer >= {low}")
    try:
        ok = not isinstance(hidden_sizes, str) and all(is_int(h, 1) for h in hidden_sizes)
    except TypeError:  # not iterable, e.g. an int
        ok = False
    if not ok:
        raise ValueError(
            f"hidden_sizes={hidden_sizes!r} is invalid: use a tuple of positive integers, "
            "e.g. (12,) or (32, 32)"
        )


def _first_layer_regions(d: int, width: int) -> int:
    """Regions of ``width`` hyperplanes in general position in ``R^d``: ``Σ_{i<=d} C(width,
    i)``, the first hidden layer's partition, which the later layers only subdivide (a lower
    bound of the decoder's region count for random, hence generic, weights)."""
    return sum(comb(width, i) for i in range(d + 1))


def _m_step_cost(sizes: list[int], n_regions: int, n_pairs: int) -> tuple[int, float]:
    """Work bytes (largest stage) and seconds (all layers) of one M-step of a decoder of layer
    sizes ``sizes`` on ``n_regions`` regions and ``n_pairs`` pairs (see the module
    docstring); the noise update's residuals run in blocks of ``_RES_BLOCK`` pairs."""
    R, d, D = int(n_regions), sizes[0], sizes[-1]
    work = 3 * 8 * min(int(n_pairs), _RES_BLOCK) * D  # the noise update's (block, D) arrays
    flops = 0.0
    for m, n_l in itertools.pairwise(sizes[:-1]):  # hidden layer: m inputs, n_l units
        m1 = m + 1
        n = n_l * m1
        maps = 8 * R * (D * n_l + n_l * n_l + m1 * m1)
        flops += 2.0 * R * D * n_l * (n_l + d + 1)  # M_rᵀ Λ M_r and M_rᵀ Λ Y_r
        if n <= DIRECT_UNKNOWNS:  # the system, its symmetrised or ridged copy, a temporary
            work = max(work, maps + 3 * 8 * n * n)
            flops += n**3 / 3.0 + R * (m1 * m1 / 2.0) * (n_l * n_l / 2.0) * 2.0
        else:
            work = max(work, maps + 8 * (3 * R * n_l * (d + 1) + 4 * n_l * m1 * m1))
            flops += CG_MAXITER * 4.0 * R * (d + 1) * (2 * n_l * m1 + n_l * n_l)
            flops += 2.0 * R * n_l * m1 * m1 + 2.0 * n_l * m1**3  # the blocks, their inverses
    flops += 2.0 * R * D * (sizes[-2] + 1) * (d + 1)  # the output layer's sums
    return int(1.05 * work) + 2**20, flops / _FLOPS  # (small arrays beside the large ones)


def estimate_training_cost(
    latent_dim: int,
    hidden_sizes,
    n_samples: int,
    n_features: int,
    *,
    seed: int = 0,
    chunk_bytes: int = _CHUNK_BYTES,
) -> TrainingCost:
    """Estimate one exact E-step of a ``[latent_dim, *hidden_sizes, n_features]`` decoder
    (and the work memory of one exact gradient beside its pairs, blocks of ``chunk_bytes``)."""
    _check_architecture(latent_dim, hidden_sizes, n_samples, n_features)
    d = int(latent_dim)
    sizes = [d, *[int(h) for h in hidden_sizes], int(n_features)]
    dec = Decoder.random(sizes, seed=seed)
    n_units = sum(int(h) for h in hidden_sizes)
    first = _first_layer_regions(d, int(hidden_sizes[0])) if hidden_sizes else 1
    if d == 1 or (d == 2 and first <= _ENUMERATE_2D):  # fast (0.1 s for [2,32,32,784])
        R = len(partition(dec))
    elif d == 2:  # wide: the first layer's lines alone cut this many regions
        R = first
    else:  # enumeration costs ~2 ms per region in d >= 3: the arrangement bound
        R = sum(comb(int(hidden_sizes[0]), i) for i in range(d + 1)) if hidden_sizes else 1
        for a, b in itertools.pairwise(hidden_sizes):
            R *= sum(comb(int(b), i) for i in range(min(d, int(a)) + 1))
    pairs = int(n_samples) * int(R)
    per_pair = 8 * (3 + d + d * d) if d != 2 else _BYTES_PER_PAIR_2D // 3
    if d >= 3:
        m = max(n_units, 1)
        seconds = pairs * _SECONDS_PER_PAIR[3] * float(_ND_NODES * m) ** (d - 3)
        per_pair += int(8 * (d + 2) * float(m) ** (d - 2))
    else:
        seconds = pairs * _SECONDS_PER_PAIR[d]
    # one block of pairs (em._steps.gradient_block_rows: (d + 5) rows of D per pair), at most
    # chunk_bytes, and the region maps' arrays
    block = min(int(chunk_bytes), pairs * (d + 5) * 8 * int(n_features))
    grad = block + _GRADIENT_MAPS * 8 * int(R) * int(n_features) * (d + 1)
    low = d == 2 and first > _ENUMERATE_2D
    mbytes, mseconds = _m_step_cost(sizes, R, pairs)
    return TrainingCost(
        int(R),
        pairs,
        int(3 * pairs * per_pair) + max(grad, mbytes),
        float(seconds),
        grad,
        lower_bound=low,
        mstep_bytes=mbytes,
        mstep_seconds=float(mseconds),
    )


def check_training_cost(est, X: np.ndarray, in_memory: bool = True) -> TrainingCost:
    """Warn or refuse before fitting ``est`` to ``X`` (see the module docstring).

    ``in_memory=False`` (``X`` a dask handle: its E-steps run chunk by chunk on the workers):
    only the warnings on the parameter count, no memory bound or time estimate of one machine.

    Raises
    ------
    TrainingTooLargeError
        When the estimated memory exceeds the memory available now.
    """
    N, D = X.shape
    d = int(est.latent_dim)
    if d > D:
        warnings.warn(
            f"latent_dim={d} exceeds the {D} data columns: the extra latent directions add "
            "regions (cost) without adding fit; use latent_dim <= n_features",
            UserWarning,
            stacklevel=4,  # the caller of ExactDGN.fit (fit -> _fit -> here)
        )
    sizes = [d, *est.hidden_sizes, D]
    k = sum((a + 1) * b for a, b in itertools.pairwise(sizes)) + (
        1 if est.noise == "isotropic" else D
    )
    if k > N:
        warnings.warn(
            f"fitting {k} parameters to only {N} points: the maximum-likelihood fit is "
            "poorly determined (use a smaller decoder, weight_decay, or more data)",
            UserWarning,
            stacklevel=4,  # the caller of ExactDGN.fit (fit -> _fit -> here)
        )
    cost = estimate_training_cost(d, est.hidden_sizes, N, D, seed=0, chunk_bytes=est.chunk_bytes)
    if not in_memory:
        logger.info("training estimate (summed over the workers): %s", cost.describe())
        return cost
    avail = available_memory()
    hint = (
        "use a smaller latent_dim (the cost grows geometrically with it), narrower "
        "hidden_sizes, or fewer points (fit on a subsample, then warm_start on all)"
    )
    if cost.bytes > avail:
        raise TrainingTooLargeError(
            f"training refused: {cost.describe()} (N = {N}) exceeds the {avail / 2**30:.3g} GiB "
            f"of memory available; {hint}"
        )
    if max(cost.seconds, cost.mstep_seconds) > _WARN_SECONDS:
        warnings.warn(
            f"training will be slow: {cost.describe()} (N = {N}); {hint}",
            UserWarning,
            stacklevel=4,  # the caller of ExactDGN.fit (fit -> _fit -> here)
        )
    logger.info("training estimate: %s", cost.describe())
    return cost
