"""``partition(decoder)``: pick the exact enumerator for the latent dimension, guard memory."""

from __future__ import annotations

import logging
import math
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

__all__ = ["first_layer_lower_bound", "partition", "sampled_region_count"]

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


# seconds per piece tested in the first layer of enumerate_2d (every line against every piece
# cut so far: ~R_1 n_1 / 3 tests; [2,100], [2,200], [2,400]: 0.15, 1.3, 11 s on the 2-core
# machine), and the estimate above which the enumeration warns and shows its progress
_SECONDS_PER_PIECE_2D = 1e-6
_LONG_SECONDS = 30.0
# d >= 3 adjacency search: ~1,000 regions a second (d = 3, one core; d = 4 slower)
_SECONDS_PER_REGION_ND = 1e-3
# at most this many first-layer lines enter the arrangement bound (its O(n^2) intersections)
_BOUND_LINES = 4_000


def plane_lower_bound(decoder: Decoder, seed: int = 0) -> int:
    """d >= 3: :func:`first_layer_lower_bound` of the first layer's cut of a random plane
    through ``z = 0`` (``z = U t``, ``U`` (d, 2) orthonormal): each region meets a plane in
    one convex cell at most, so the plane's cells bound the count from below (a generic plane
    meets ``1 + n + n (n - 1) / 2`` of ``n`` random hyperplanes' cells; the space holds about
    ``n^d / d!``)."""
    d = decoder.latent_dim
    if d < 3 or not decoder.unit_slices:
        return 1
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, 2)))
    W = [decoder.weights[0] @ U, *decoder.weights[1:]]
    sliced = Decoder(W, list(decoder.biases), decoder.activations)
    return first_layer_lower_bound(sliced)


def first_layer_lower_bound(decoder: Decoder) -> int:
    """d = 2: a lower bound on the region count from the first hidden layer's lines alone.

    The later layers only subdivide the cells of the arrangement of the first layer's lines
    ``{w_i . z + b_i = 0}`` (kink units with ``w_i != 0``), and an arrangement of ``n`` distinct
    lines has ``1 + n + sum_v (m_v - 1) >= 1 + n + sum_i k_i / 2`` cells (``m_v`` lines through
    vertex ``v``, ``k_i`` distinct vertices on line ``i``: ``sum_v m_v = sum_i k_i``; Euler).
    Lines that agree to 1e-12 count once and vertices within 1e-9 of one another along a
    line count once, so the bound holds whatever the weights (random ones are in general
    position: ``1 + n + n (n - 1) / 2``, exactly the count). At most ``_BOUND_LINES`` lines
    enter (a subset of the lines bounds the count too).
    """
    if decoder.latent_dim != 2 or not decoder.unit_slices:
        return 1
    sl = decoder.unit_slices[0]
    W, b = decoder.weights[0], decoder.biases[0]
    norm = np.hypot(W[:, 0], W[:, 1])
    keep = decoder.kink_mask[sl] & (norm > 0)
    w, c = W[keep] / norm[keep, None], b[keep] / norm[keep]
    flip = (w[:, 1] < 0) | ((w[:, 1] == 0) & (w[:, 0] < 0))  # (w, c) and (-w, -c): one line
    w[flip], c[flip] = -w[flip], -c[flip]
    order = np.lexsort((c, w[:, 0], w[:, 1]))
    w, c = w[order], c[order]
    same = np.all(np.abs(np.diff(w, axis=0)) <= 1e-12, axis=1)
    same &= np.abs(np.diff(c)) <= 1e-12 * (1.0 + np.abs(c[1:]))
    distinct = np.concatenate([[True], ~same])
    w, c = w[distinct][:_BOUND_LINES], c[distinct][:_BOUND_LINES]
    n = len(c)
    if n < 2:
        return 1 + n
    foot = -c[:, None] * w  # a point of each line, and its direction
    t = np.stack([-w[:, 1], w[:, 0]], axis=1)
    k = 0  # sum_i k_i, over blocks of lines i (memory: (block, n) arrays)
    for i in range(0, n, 256):
        with np.errstate(divide="ignore", invalid="ignore"):
            # line j at the point foot_i + s t_i of line i: w_j . (foot_i + s t_i) + c_j = 0
            den = t[i : i + 256] @ w.T  # (i, j): w_j . t_i
            s = -(foot[i : i + 256] @ w.T + c[None, :]) / den
        s[~(np.abs(den) > 1e-12)] = np.nan  # parallel (and the line itself)
        s.sort(axis=1)  # NaN last
        fin = np.isfinite(s)
        scale = 1.0 + np.max(np.where(fin, np.abs(s), 0.0), axis=1)
        gap = np.diff(s, axis=1) > 1e-9 * scale[:, None]
        k += int(np.count_nonzero(fin[:, 0]) + np.count_nonzero(gap & fin[:, 1:]))
    return int(1 + n + k // 2)


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
    # d = 2 with a wide first layer: its lines' arrangement bounds the count (and the time)
    first = first_layer_lower_bound(decoder) if method == "polygon" and _wide(decoder) else 0
    # d >= 3: the first layer's n hyperplanes in general position (random weights) cut
    # sum_{i <= d} C(n, i) cells (an estimate for the time; the plane's count is a bound)
    n1 = _first_width(decoder) if d >= 3 else 0
    cells = sum(math.comb(n1, i) for i in range(d + 1)) if d >= 3 else 0
    plane = plane_lower_bound(decoder) if cells > 3_000 else 0
    # the lower bounds refuse up front; skipped when the widths alone prove that the
    # partition fits (training's small decoders: it cost 1.2 ms of a 7 ms d = 1 E-step)
    if region_upper_bound(decoder) > max_regions:
        low, what = sampled_region_count(decoder), "a sampled lower bound of"
        if first > low:
            low, what = first, "the first layer's lines alone give at least"
        if plane > low:
            low, what = plane, "a plane through the first layer's hyperplanes meets at least"
        check_budget(low, what)
    progress = _long_run_progress(decoder, first) if first else None
    if plane:
        if _SECONDS_PER_REGION_ND * cells > _LONG_SECONDS:
            key = (tuple(decoder.layer_sizes), cells)
            if key not in _WARNED:
                _WARNED.add(key)
                logger.warning(
                    "partition: the first hidden layer of %s alone cuts ~%s regions (its %d "
                    "hyperplanes in general position; at least %s); the d = %d adjacency "
                    "search takes ~%s, and the later layers more (interrupt with Ctrl-C; a "
                    "narrower first layer or a lower latent_dim is much faster)",
                    decoder.layer_sizes,
                    f"{cells:,}",
                    n1,
                    f"{plane:,}",
                    d,
                    f"{_SECONDS_PER_REGION_ND * cells / 60:.3g} min",
                )

    def upper(n: int) -> None:  # layer-by-layer methods bound the next layer's count
        check_budget(n, "an upper bound of")

    def running(n: int) -> None:  # the adjacency search knows a running count
        check_budget(n, "at least")

    if method == "sweep":
        from ._enum1d import enumerate_1d

        raw = enumerate_1d(decoder, upper)
    elif method == "polygon":
        from ._enum2d import enumerate_2d

        try:
            raw = enumerate_2d(decoder, upper, progress)
        finally:
            if progress is not None:
                progress.close()
    else:
        from ._enumnd import enumerate_adjacency

        raw = enumerate_adjacency(decoder, running)
    part = finalize(decoder.copy(), raw, method, t0)  # its own (a later edit: not seen)
    logger.info("partition: %d regions in %.3fs (%s)", len(part), part.seconds, method)
    return part


class _Progress:
    """A progress bar over the lines of each layer of a long :func:`enumerate_2d` (tqdm)."""

    def __init__(self, n_layers: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc="partition", unit="line", leave=False)
        self.n_layers = n_layers
        self.layer = -1

    def __call__(self, layer: int, done: int, total: int) -> None:
        if layer != self.layer:
            self.layer = layer
            self.bar.reset(total=total)
            self.bar.set_description(f"partition layer {layer + 1}/{self.n_layers}")
        self.bar.update(done - self.bar.n)  # (redrawn at most every 0.1 s)

    def close(self) -> None:
        self.bar.close()


def _first_width(decoder: Decoder) -> int:
    return decoder.unit_slices[0].stop - decoder.unit_slices[0].start if decoder.unit_slices else 0


def _wide(decoder: Decoder) -> bool:
    """Whether the first layer's ``n`` lines can cut more regions (at most ``1 + n + n^2 /
    2``) than the sampled bound can show (3,000 points), or take longer than
    ``_LONG_SECONDS`` to enumerate (``n >= 78``; the bound then costs ~1 ms at ``n = 100``,
    0.2 s at ``n = 2,000``)."""
    n = _first_width(decoder)
    most = 1 + n + n * n / 2
    return most > 3_000 or _SECONDS_PER_PIECE_2D * most * n / 3.0 > _LONG_SECONDS


def _long_run_progress(decoder: Decoder, first: int) -> _Progress | None:
    """Warn of a d = 2 enumeration whose first layer alone is estimated above
    ``_LONG_SECONDS`` (``first`` its regions, ~first x width / 3 piece tests) and return its
    progress bar; None for a short one."""
    seconds = _SECONDS_PER_PIECE_2D * first * _first_width(decoder) / 3.0
    if seconds <= _LONG_SECONDS:
        return None
    key = (tuple(decoder.layer_sizes), first)
    if key not in _WARNED:  # once per architecture (training partitions every iteration)
        _WARNED.add(key)
        _warn_long(decoder, first, seconds)
    return _Progress(len(decoder.unit_slices))


_WARNED: set = set()


def _warn_long(decoder: Decoder, first: int, seconds: float) -> None:
    logger.warning(
        "partition: the first hidden layer of %s alone cuts at least %s regions; enumerating "
        "them takes ~%s on a 2-core machine, and the later layers more (interrupt with "
        "Ctrl-C; a narrower first layer or latent_dim 1 is much faster)",
        decoder.layer_sizes,
        f"{first:,}",
        f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h",
    )
