"""Benchmark of ``exactdgn.partition`` on He-initialised leaky-ReLU decoders (fixed seeds).

Prints, per case, the region count, the best wall time of ``--repeat`` runs of the full
``partition(decoder)`` call (sampled-size guard + enumeration + affine maps), regions per second,
the target and whether it is met (targets apply to the full call), and a breakdown: the raw
enumerator alone ("enum s") and the sampled region-count guard ("sample s"). The load average
is printed too: other processes on the machine slow the figures down.

Usage::

    python benchmarks/partition.py [--repeat 3] [--cases d1 d2-small d2-large d3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

from exactdgn.decoder import Decoder
from exactdgn.partition import partition, sampled_region_count


def _enumerator(method: str):
    """The raw enumerator behind ``partition(..., method=method)`` (for the time breakdown)."""
    if method == "sweep":
        from exactdgn.partition._enum1d import enumerate_1d

        return enumerate_1d
    if method == "polygon":
        from exactdgn.partition._enum2d import enumerate_2d

        return enumerate_2d
    from exactdgn.partition._enumnd import enumerate_adjacency

    return enumerate_adjacency


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@dataclass(frozen=True)
class Case:
    name: str
    sizes: list
    seed: int
    max_seconds: float | None = None  # target: wall time below this
    min_rate: float | None = None  # target: regions per second at least this
    expensive: bool = False  # run once unless --repeat-expensive


CASES = [
    Case("d1", [1, 64, 64, 64, 784], seed=0, max_seconds=0.1),
    Case("d2-small", [2, 32, 32, 784], seed=0, max_seconds=1.0),
    Case("d2-large", [2, 64, 64, 784], seed=0, min_rate=20_000.0),
    Case("d3", [3, 16, 16, 784], seed=0, max_seconds=30.0, expensive=True),
]


def run_case(case: Case, repeat: int) -> dict:
    dec = Decoder.random(case.sizes, activation="leaky_relu", seed=case.seed)
    best, part = _best(lambda: partition(dec), repeat)
    t_enum, _ = _best(lambda: _enumerator(part.method)(dec), repeat)
    t_sample, _ = _best(lambda: sampled_region_count(dec), repeat)
    n = len(part)
    rate = n / best
    met = True
    targets = []
    if case.max_seconds is not None:
        targets.append(f"< {case.max_seconds:g} s")
        met &= best < case.max_seconds
    if case.min_rate is not None:
        targets.append(f">= {case.min_rate:,.0f} regions/s")
        met &= rate >= case.min_rate
    return {
        "case": case.name,
        "sizes": case.sizes,
        "method": part.method,
        "regions": n,
        "seconds": best,
        "enumerate": t_enum,
        "sample": t_sample,
        "rate": rate,
        "target": " and ".join(targets),
        "met": met,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument(
        "--repeat-expensive",
        type=int,
        default=1,
        help="runs of the expensive cases (d = 3)",
    )
    parser.add_argument(
        "--cases",
        nargs="*",
        default=[c.name for c in CASES],
        choices=[c.name for c in CASES],
        help="cases to run (default: all)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    header = f"{'case':9} {'layer sizes':22} {'method':9} {'regions':>8} {'seconds':>9} "
    header += f"{'regions/s':>10} {'enum s':>8} {'sample s':>8}  target"
    print(header)
    all_met = True
    for case in CASES:
        if case.name not in args.cases:
            continue
        rep = args.repeat_expensive if case.expensive else args.repeat
        r = run_case(case, max(1, rep))
        all_met &= r["met"]
        print(
            f"{r['case']:9} {r['sizes']!s:22} {r['method']:9} {r['regions']:>8,} "
            f"{r['seconds']:>9.4f} {r['rate']:>10,.0f} {r['enumerate']:>8.4f} "
            f"{r['sample']:>8.4f}  {r['target']}: "
            f"{'met' if r['met'] else 'NOT met'}",
            flush=True,
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
