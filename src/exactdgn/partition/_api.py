"""``partition(decoder)``: pick the exact enumerator for the latent dimension, guard memory."""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np

from ..decoder import Decoder
from ..decoder._core import _check_finite
from ._partition import (
    Partition,
    PartitionTooLargeError,
    _pattern_keys,
    estimate_region_bytes,
    finalize,
    memory_budget,
)

__all__ = ["partition", "sampled_region_count"]

logger = logging.getLogger(__name__)


def sampled_region_count(decoder: Decoder, n: int = 3_000, seed=0) -> int:
    """Lower bound on the region count: distinct patterns among random latent points.

    Points are drawn from N(0, s^2 I) for s in {1, 3, 10} (a third each).
    """
    rng = np.random.default_rng(seed)
    scales = np.repeat([1.0, 3.0, 10.0], -(-n // 3))[:n]
    Z = rng.standard_normal((n, decoder.latent_dim)) * scales[:, None]
    P = decoder.activation_pattern(Z)[:, decoder.kink_mask]
    if P.shape[1] == 0:
        return 1
    return len(np.unique(_pattern_keys(P)))


def region_upper_bound(decoder: Decoder) -> int:
    """Upper bound on the region count from the widths alone (no work on the weights).

    Layer by layer, ``n`` kinked units split each region of the layers below into at most
    ``sum_{i <= d} C(n, i)`` pieces (Zaslavsky's bound for ``n`` hyperplanes in ``R^d``; their
    pre-activations are affine on each such region), so the count is at most the product over
    layers.
    """
    from math import comb

    d = decoder.latent_dim
    kink = decoder.kink_mask
    bound = 1
    for sl in decoder.unit_slices:
        n = int(kink[sl].sum())
        bound *= sum(comb(n, i) for i in range(min(d, n) + 1))
    return bound


def partition(decoder: Decoder, *, max_bytes: int | None = None, method: str = "auto") -> Partition:
    """Exact list of the linear regions of ``decoder`` over the whole latent space R^d.

    Parameters
    ----------
    decoder : Decoder
    max_bytes : int or float, optional
        Memory budget for the partition in bytes, >= 1 (default: half the available memory).
        Enumeration is refused up front, with the estimate in the message, when it would not
        fit.
    method : {"auto", "sweep", "polygon", "adjacency"}
        ``sweep`` (d = 1, breakpoints layer by layer), ``polygon`` (d = 2, exact splitting of
        convex polygons in homogeneous coordinates, layer by layer), ``adjacency`` (any d: search
        over the region graph with HiGHS LPs and Qhull for facets). ``auto`` picks by d.

    Returns
    -------
    Partition

    Raises
    ------
    PartitionTooLargeError
        When the estimated size exceeds ``max_bytes``.
    ValueError
        For an unknown ``method``, one that does not fit the latent dimension, or a
        ``max_bytes`` that is not a finite number >= 1, or a decoder with NaN or infinite
        weights or biases.
    """
    if not isinstance(decoder, Decoder):
        raise TypeError(f"partition() takes a Decoder, got {type(decoder).__name__}")
    # the decoder's arrays are public and mutable (checked at construction, not since)
    _check_finite(
        decoder.weights,
        decoder.biases,
        ": cannot partition (regions would be meaningless); fix or re-initialise the decoder",
    )
    d = decoder.latent_dim
    if method == "auto":
        method = {1: "sweep", 2: "polygon"}.get(d, "adjacency")
    valid = {"sweep": (1,), "polygon": (2,), "adjacency": None}
    if method not in valid:
        raise ValueError(f"method must be one of {['auto', *valid]}, got {method!r}")
    if valid[method] is not None and d not in valid[method]:
        raise ValueError(f"method {method!r} needs latent_dim in {valid[method]}, got {d}")
    if max_bytes is not None and not (
        isinstance(max_bytes, numbers.Real)
        and not isinstance(max_bytes, bool)
        and np.isfinite(max_bytes)
        and max_bytes >= 1
    ):
        raise ValueError(
            f"max_bytes must be a finite number >= 1 (a memory budget in bytes, e.g. 2e9), got "
            f"{max_bytes!r}; leave it None for the default (half the available memory)"
        )
    budget = memory_budget() if max_bytes is None else int(max_bytes)
    per_region = estimate_region_bytes(decoder)
    max_regions = max(1, budget // per_region)

    def check_budget(estimate: int, what: str) -> None:
        if estimate > max_regions:
            need = estimate * per_region
            raise PartitionTooLargeError(
                f"partition refused: {what} {estimate:,} regions x ~{per_region:,} bytes each "
                f"= ~{need / 2**30:.3g} GiB exceeds the memory budget of {budget / 2**30:.3g} "
                f"GiB (decoder {decoder.layer_sizes}). Use a smaller decoder, a lower latent "
                "dimension, or raise max_bytes."
            )

    t0 = time.perf_counter()
    # the sampled lower bound refuses up front; skipped when the widths alone prove that the
    # partition fits (training's small decoders: it cost 1.2 ms of a 7 ms d = 1 E-step)
    if region_upper_bound(decoder) > max_regions:
        check_budget(sampled_region_count(decoder), "a sampled lower bound of")

    def upper(n: int) -> None:  # layer-by-layer methods bound the next layer's count
        check_budget(n, "an upper bound of")

    def running(n: int) -> None:  # the adjacency search knows a running count
        check_budget(n, "at least")

    if method == "sweep":
        from ._enum1d import enumerate_1d

        raw = enumerate_1d(decoder, upper)
    elif method == "polygon":
        from ._enum2d import enumerate_2d

        raw = enumerate_2d(decoder, upper)
    else:
        from ._enumnd import enumerate_adjacency

        raw = enumerate_adjacency(decoder, running)
    part = finalize(decoder.copy(), raw, method, t0)  # its own (a later edit: not seen)
    logger.info("partition: %d regions in %.3fs (%s)", len(part), part.seconds, method)
    return part
