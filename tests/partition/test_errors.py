"""Bad input to the partition API and the up-front memory refusal."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import exactdgn
from exactdgn import Decoder, PartitionTooLargeError
from exactdgn.partition import (
    _api,
    estimate_region_bytes,
    first_layer_lower_bound,
    sampled_region_count,
)


@pytest.fixture(scope="module")
def part2():
    return exactdgn.partition(Decoder.random([2, 6, 6, 2], seed=0))


# ---------------------------------------------------------------------------- bad latent arrays
def test_locate_wrong_shape_is_a_clear_value_error(part2):
    with pytest.raises(ValueError, match=r"Z must be 2-D, got shape \(2,\).*[Rr]eshape"):
        part2.locate(np.zeros(2))
    with pytest.raises(ValueError, match=r"Z has 3 latent dims but 2 are expected"):
        part2.locate(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"Z must be 2-D, got shape \(1, 4, 2\)"):
        part2.locate(np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="numeric array"):
        part2.locate([["x", "y"]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_locate_nan_is_a_clear_value_error(part2, bad):
    Z = np.zeros((5, 2))
    Z[3, 0] = bad
    with pytest.raises(ValueError, match=r"Z contains 1 NaN or infinite values.*rows: \[3\]"):
        part2.locate(Z)


def test_index_of_patterns_wrong_shape(part2):
    n = part2.decoder.n_units
    with pytest.raises(ValueError, match=rf"patterns must have shape \(N, {n}\)"):
        part2.index_of_patterns(np.ones((3, n + 1), dtype=bool))
    # a pattern no region has maps to -1
    P = part2.patterns.copy()
    hit = part2.index_of_patterns(P)
    np.testing.assert_array_equal(hit, np.arange(len(part2)))


def test_locate_empty_input(part2):
    assert part2.locate(np.zeros((0, 2))).shape == (0,)


def test_partition_argument_errors():
    dec = Decoder.random([3, 4, 2], seed=0)
    with pytest.raises(TypeError, match="takes a Decoder"):
        exactdgn.partition(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        exactdgn.partition(dec, method="grid")
    with pytest.raises(ValueError, match=r"method 'polygon' needs latent_dim in \(2,\), got 3"):
        exactdgn.partition(dec, method="polygon")
    with pytest.raises(ValueError, match=r"method 'sweep' needs latent_dim in \(1,\), got 3"):
        exactdgn.partition(dec, method="sweep")
    with pytest.raises(IndexError):
        exactdgn.partition(Decoder.random([2, 3, 2], seed=0)).region(10_000)


@pytest.mark.parametrize("bad", [-5, 0, 0.5, -1e9, np.nan, np.inf, "1GB", True])
def test_partition_refuses_a_budget_that_is_not_positive(bad):
    """A negative max_bytes was accepted (then reported a negative GiB budget)."""
    dec = Decoder.random([2, 4, 3, 2], seed=0)
    with pytest.raises(ValueError, match=r"max_bytes must be a finite number >= 1.*default"):
        exactdgn.partition(dec, max_bytes=bad)


def test_partition_takes_a_float_budget():
    dec = Decoder.random([2, 4, 3, 2], seed=0)
    assert len(exactdgn.partition(dec, max_bytes=1e9)) == len(exactdgn.partition(dec))


# ---------------------------------------------------------------------------- memory refusal
_MSG = re.compile(
    r"(a sampled lower bound of|an upper bound of|at least|the first layer's lines alone give "
    r"at least) ([\d,]+) regions "
    r"x ~([\d,]+) bytes each "
    r"= ~([\d.e+-]+) GiB exceeds the memory budget of ([\d.e+-]+) GiB"
)


def _parse(msg: str):
    m = _MSG.search(msg)
    assert m is not None, f"the message does not state the estimate: {msg!r}"
    kind, n, per, need, budget = m.groups()
    return kind, int(n.replace(",", "")), int(per.replace(",", "")), float(need), float(budget)


@pytest.mark.parametrize(
    "sizes,method",
    [([1, 64, 64, 2], "sweep"), ([2, 64, 64, 64, 2], "polygon"), ([3, 48, 48, 2], "adjacency")],
)
def test_too_large_is_refused_up_front_with_the_estimate(sizes, method):
    dec = Decoder.random(sizes, seed=1)
    max_bytes = 20_000
    t0 = time.perf_counter()
    with pytest.raises(PartitionTooLargeError) as info:
        exactdgn.partition(dec, max_bytes=max_bytes, method=method)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"refusal took {elapsed:.1f}s: not up front"
    assert isinstance(info.value, MemoryError)
    _, n, per, need, budget = _parse(str(info.value))
    assert n * per > max_bytes
    np.testing.assert_allclose(need, n * per / 2**30, rtol=1e-2)
    np.testing.assert_allclose(budget, max_bytes / 2**30, rtol=1e-2)
    assert str(sizes) in str(info.value)  # names the decoder
    assert "max_bytes" in str(info.value)  # says how to proceed


@pytest.mark.parametrize("sizes", [[1, 12, 12, 2], [2, 10, 10, 2], [3, 6, 6, 2]])
def test_sampled_lower_bound_is_a_lower_bound(sizes):
    dec = Decoder.random(sizes, seed=2)
    true = len(exactdgn.partition(dec))
    with pytest.raises(PartitionTooLargeError) as info:
        exactdgn.partition(dec, max_bytes=1)
    kind, n, *_ = _parse(str(info.value))
    assert kind == "a sampled lower bound of"
    assert 1 <= n <= true
    assert n == sampled_region_count(dec)
    # a budget that fits gives the same partition
    assert len(exactdgn.partition(dec, max_bytes=10**9)) == true


@pytest.mark.parametrize("sizes,method", [([2, 10, 10, 2], "polygon"), ([3, 6, 6, 2], "adjacency")])
def test_refusal_during_enumeration(sizes, method):
    """A budget above the sampled lower bound but below the real size is still refused, with a
    larger count in the message, while enumerating."""
    dec = Decoder.random(sizes, seed=2)
    true = len(exactdgn.partition(dec, method=method))
    per = estimate_region_bytes(dec)
    low = sampled_region_count(dec)
    assert low < true  # the sampled bound misses regions here, so the budget below passes it
    max_bytes = per * low + per // 2
    with pytest.raises(PartitionTooLargeError) as info:
        exactdgn.partition(dec, max_bytes=max_bytes, method=method)
    _, n, per_msg, *_ = _parse(str(info.value))
    assert per_msg == per
    assert n > low and n * per > max_bytes


# ---------------------------------------------------------------------------- region indices
@pytest.mark.parametrize("method", ["halfspaces", "neighbors", "vertices", "rays"])
def test_region_accessors_take_negative_indices_like_region(part2, method):
    """``halfspaces(-1)`` etc. are the last region's, as ``part[-1]`` (they returned empty
    arrays: the whole plane, no neighbours, no corners)."""
    R = len(part2)
    get = getattr(part2, method)

    def parts(r):
        out = get(r)
        return out if isinstance(out, tuple) else (out,)

    for neg, pos in ((-1, R - 1), (-R, 0), (np.int64(-2), R - 2)):
        for a, b in zip(parts(neg), parts(pos), strict=True):
            np.testing.assert_array_equal(a, b)
    if method != "rays":  # the last region may be bounded (no rays)
        assert len(parts(-1)[0]) > 0


@pytest.mark.parametrize("method", ["halfspaces", "neighbors", "vertices", "rays", "region"])
@pytest.mark.parametrize("bad", ["R", "-R-1", 1.5, "0"])
def test_region_accessors_reject_bad_indices_clearly(part2, method, bad):
    R = len(part2)
    r = {"R": R, "-R-1": -R - 1}.get(bad, bad)
    err = IndexError if bad in ("R", "-R-1") else TypeError
    with pytest.raises(err, match=rf"region index .* ({R} regions|an integer)"):
        getattr(part2, method)(r)


def test_region_contains_checks_the_latent_shape(part2):
    r = part2[0]
    z = r.interior_point
    np.testing.assert_array_equal(r.contains(z), [True])  # one point as (d,)
    np.testing.assert_array_equal(r.contains(z[None]), [True])
    for bad in [np.zeros((1, 3)), np.zeros(3), np.zeros((2, 2, 2))]:
        with pytest.raises(ValueError, match=r"Z must have shape \(N, 2\) or \(2,\)"):
            r.contains(bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["weights", "biases"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_partition_refuses_non_finite_parameters(bad, where, d):
    """Decoder's arrays are public and mutable (training writes them in place): a NaN set
    after construction was enumerated into a meaningless partition without a word."""
    dec = Decoder.random([d, 4, 3, 2], seed=0)
    getattr(dec, where)[1][0] = bad
    with pytest.raises(ValueError, match=r"layer 1 has non-finite weights or biases.*partition"):
        exactdgn.partition(dec)


# ---------------------------------------------------------------------------- wide d = 2 layers
def _degenerate_first_layer():
    """[2, 9, 3] with a repeated line (scaled), a parallel one, three through one point, one
    unit with a zero weight row and the rest random."""
    dec = Decoder.random([2, 9, 3], seed=1)
    W, b = dec.weights[0], dec.biases[0]
    W[1], b[1] = 2.0 * W[0], 2.0 * b[0]
    W[2], b[2] = -W[0], -b[0] + 0.5
    W[3:6], b[3:6] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], 0.0
    W[6], b[6] = 0.0, 1.0
    return dec


@pytest.mark.parametrize(
    "sizes,generic",
    [([2, 3, 2], True), ([2, 40, 2], True), ([2, 40, 12, 2], False), ([2, 6, 5, 2], False)],
)
def test_the_first_layers_arrangement_bounds_the_count(sizes, generic):
    """Euler's count of the first layer's lines is at most the enumerated count, and equal to
    it for a one-layer decoder in general position (random weights)."""
    dec = Decoder.random(sizes, seed=3)
    true = len(exactdgn.partition(dec))
    low = first_layer_lower_bound(dec)
    assert 1 <= low <= true
    if generic:
        n = sizes[1]
        assert low == true == 1 + n + n * (n - 1) // 2


def test_a_degenerate_first_layer_is_bounded_below():
    """7 distinct lines (of 9 units: one repeated, one with a zero row), two of them parallel,
    three through one point: 1 + 7 + 17 + 2 = 27 regions; the bound counts the triple point's
    m_v - 1 = 2 as m_v / 2 = 1.5 (26)."""
    dec = _degenerate_first_layer()
    assert len(exactdgn.partition(dec)) == 27
    assert first_layer_lower_bound(dec) == 26


def test_a_wide_d2_first_layer_is_refused_at_once():
    """[2, 2000, 2000, 2]: the sampled bound (at most 3,000 regions) let the enumeration start,
    and its first layer alone ran for ~25 min; its lines' arrangement refuses in ~1 s."""
    dec = Decoder.random([2, 2000, 2000, 2], seed=0)
    t0 = time.perf_counter()
    with pytest.raises(PartitionTooLargeError) as info:
        exactdgn.partition(dec, max_bytes=4e9)
    assert time.perf_counter() - t0 < 20.0
    kind, n, *_ = _parse(str(info.value))
    assert kind == "the first layer's lines alone give at least"
    assert 1_990_000 <= n <= 2_001_001


def test_a_long_d2_enumeration_warns_and_shows_its_progress(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(_api, "_LONG_SECONDS", 1e-6)
    monkeypatch.setattr(_api, "_BOUND_LINES", 4)  # (the bound on 4 lines: 11 regions)

    class Bar:
        def __init__(self, n_layers):
            self.n_layers = n_layers

        def __call__(self, layer, done, total):
            calls.append((layer, done, total))

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(_api, "_Progress", Bar)
    monkeypatch.setattr(_api, "_WARNED", set())
    dec = Decoder.random([2, 8, 6, 2], seed=0)
    with caplog.at_level("WARNING", logger="exactdgn.partition._api"):
        part = exactdgn.partition(dec)
    assert "alone cuts at least 11 regions" in caplog.text and "Ctrl-C" in caplog.text
    assert calls[-1] == "closed"
    layers = [c for c in calls[:-1] if c[0] == 0]
    assert [c[1] for c in layers] == list(range(1, 9)) and layers[0][2] == 8
    assert {c[0] for c in calls[:-1]} == {0, 1}
    caplog.clear()
    calls.clear()
    with caplog.at_level("WARNING", logger="exactdgn.partition._api"):
        again = exactdgn.partition(dec)  # (as training does every iteration)
    assert "alone cuts" not in caplog.text and calls[-1] == "closed"  # warned once, bar again
    assert len(part) == len(again)


def test_the_budget_counts_the_layer_maps_of_every_region():
    """[2,200,200,2] with max_bytes 2e8 (191 MiB) was accepted on an estimate of 60 MiB and
    peaked at 1.3 GiB: the (R, d + 1, width) layer maps built for every region at once were
    not counted. They are now (~14 KB a region here), and it is refused up front."""
    import tracemalloc

    from exactdgn.partition import partition

    dec = Decoder.random([2, 200, 200, 2], seed=0)
    assert estimate_region_bytes(dec) >= 3 * 8 * 3 * 200
    tracemalloc.start()
    try:
        with pytest.raises(PartitionTooLargeError, match=r"bytes each"):
            partition(dec, max_bytes=2e8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2e8


def test_d3_is_refused_or_announced_up_front(monkeypatch, caplog):
    """d >= 3 had no up-front bound beyond 3,000 sampled points: [3,200,2] (1.3M regions) with
    a 1e8 budget ran for minutes before its running count passed the budget, and [3,64,64,2]
    ran silently for tens of minutes. A random plane's cut of the first layer is a lower bound
    (each region meets a plane in one cell at most), and the first layer's cells in general
    position give the time warning."""
    import logging

    from exactdgn.partition import partition, plane_lower_bound

    t0 = time.perf_counter()
    with pytest.raises(PartitionTooLargeError, match=r"a plane through the first layer"):
        partition(Decoder.random([3, 200, 2], seed=0), max_bytes=1e8)
    assert time.perf_counter() - t0 < 5.0
    dec = Decoder.random([3, 27, 2], seed=1)
    low = plane_lower_bound(dec)
    assert low == 1 + 27 + 27 * 26 // 2  # random planes are in general position
    monkeypatch.setattr(_api, "_SECONDS_PER_REGION_ND", 0.01)  # as if 10x slower
    with caplog.at_level(logging.WARNING, logger="exactdgn.partition"):
        part = partition(dec)
    assert "cuts ~3,304 regions" in caplog.text and "at least 379" in caplog.text
    assert len(part) >= low
