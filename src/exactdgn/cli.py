"""Command line: ``exactdgn demo | partition``.

Examples
--------
    exactdgn demo --out report
    exactdgn partition --layers 2 32 32 784 --seed 0 --plot partition.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["build_parser", "main"]

logger = logging.getLogger("exactdgn")

EXAMPLES = """examples:
  exactdgn demo --out report
  exactdgn partition --layers 2 32 32 784 --seed 0 --plot partition.png
"""


def _demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import Decoder, ExactDGN, partition
    from .plotting import plot_partition

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"seed": args.seed, "cases": []}
    results = []
    lines = ["# exactdgn demo", ""]
    lines += ["| latent d | layers | regions | bounded | seconds | exact log p(x) (mean) |"]
    lines += ["|---|---|---|---|---|---|"]
    for sizes in ([1, 16, 16, 2], [2, 16, 16, 2]):
        dec = Decoder.random(sizes, activation="leaky_relu", negative_slope=0.1, seed=args.seed)
        t0 = time.perf_counter()
        part = partition(dec)
        secs = time.perf_counter() - t0
        model = ExactDGN.from_decoder(dec, noise_std=0.1)
        X = model.sample(200, random_state=args.seed)
        t1 = time.perf_counter()
        ll = model.score_samples(X)
        secs_ll = time.perf_counter() - t1
        summ = part.summary()
        summ.update(
            {"mean_log_px": float(ll.mean()), "seconds_log_px": secs_ll, "n_points": len(X)}
        )
        results.append(summ)
        config["cases"].append({"layer_sizes": sizes, "noise_std": 0.1, "n_points": 200})
        d = sizes[0]
        fig, ax = plt.subplots(figsize=(5, 5))
        plot_partition(part, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"partition_d{d}.png", dpi=120)
        plt.close(fig)
        lines.append(
            f"| {d} | {sizes} | {len(part)} | {summ['n_bounded']} | {secs:.3f} | {ll.mean():.4f} |"
        )
        print(
            f"d={d} layers={sizes}: {len(part)} regions ({summ['n_bounded']} bounded) in "
            f"{secs:.3f}s; exact mean log p(x) of {len(X)} samples = {ll.mean():.4f} "
            f"({secs_ll:.3f}s)"
        )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines += ["", "![d=1](partition_d1.png) ![d=2](partition_d2.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    print(f"report written to {out}/ (README.md, results.json, config.json, partition_d*.png)")
    return 0


def _partition_cmd(args) -> int:
    from . import Decoder, partition

    dec = Decoder.random(args.layers, activation=args.activation, seed=args.seed)
    part = partition(dec)
    print(json.dumps(part.summary(), indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plotting import plot_partition

        fig, ax = plt.subplots(figsize=(5, 5))
        plot_partition(part, ax=ax)
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exactdgn",
        description="Exact likelihood, posterior and EM for piecewise-affine generative networks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the main demo and write a report")
    d.add_argument("--out", default="report", help="output directory (default: report)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    q = sub.add_parser("partition", help="enumerate the regions of a random decoder")
    q.add_argument("--layers", type=int, nargs="+", required=True, help="layer sizes d ... D")
    q.add_argument("--activation", default="leaky_relu")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--plot", default=None, help="save a plot of the partition (d <= 2)")
    q.set_defaults(func=_partition_cmd)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, MemoryError) as exc:
        print(f"exactdgn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
