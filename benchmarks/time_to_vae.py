"""Time for default exact training to reach a VAE's exact test NLL (issue #11's MNIST target).

MNIST t10k, all digits, 28x28 (D = 784), 80/20 split (split seed = seed), per-pixel
standardization as in ``experiments/mnist.py``; decoder [2,32,32,784]. In one run:

1. the VAE of ``results/mnist-all28/`` (``exactdgn.baselines.VAE``, encoder (64, 64), Adam 1e-3,
   batch 128, float32, ``max_epochs`` 1,000 by default) is trained and timed, and its decoder's
   exact test NLL computed (``vae_to_exact``);
2. ``ExactDGN(latent_dim=2, hidden_sizes=(32, 32), random_state=seed)`` (every other parameter
   at its default) is fitted with a callback that, after each iteration, scores the test split
   exactly (that scoring is not counted in the EM seconds) and stops the fit once the test NLL
   is at most the VAE's (or after ``--max-iter`` iterations).

Prints wall and CPU seconds of both trainings (CPU: this process, all threads; on a shared
machine the wall seconds depend on the other jobs) and writes ``config.json`` and
``results.json`` to ``--out``.

Run: ``python benchmarks/time_to_vae.py --out results/time-to-vae`` (about an hour on one core).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from exactdgn import ExactDGN
from exactdgn.baselines import VAE
from exactdgn.datasets import Standardizer, load_mnist
from exactdgn.evaluation import STD_FLOOR, split_data, vae_to_exact

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-epochs", type=int, default=1000)
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--n-images", type=int, default=None, help="first N images only (a check)")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--rel-tol",
        type=lambda v: v if v == "auto" else float(v),
        default="auto",
        help="ExactDGN's rel_tol: 'auto' (its default) or a number >= 0",
    )
    p.add_argument(
        "--full-curve",
        action="store_true",
        help="do not stop at the VAE's NLL: run to convergence or --max-iter",
    )
    p.add_argument(
        "--vae-from",
        default=None,
        help="results.json of an earlier run (same seed and data): reuse its VAE's seconds and "
        "NLL instead of training the VAE again",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("time_to_vae")
    import torch
    from threadpoolctl import threadpool_limits

    # one thread count for both sides (default 1): torch's, the library's and numpy's BLAS (the
    # exact side used every core and BLAS's own threads when EXACTDGN_NUM_THREADS was unset)
    threads = int(os.environ.get("EXACTDGN_NUM_THREADS", "1"))
    os.environ["EXACTDGN_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    import torch._dynamo  # imported before anything is timed, as in training.py

    X, _ = load_mnist(args.mnist)
    if args.n_images:
        X = X[: args.n_images]
    Xtr_raw, Xte_raw, _ = split_data(X, 0.2, args.seed)
    std = Standardizer(rel_min_std=STD_FLOOR).fit(Xtr_raw)
    Xtr, Xte = std.transform(Xtr_raw), std.transform(Xte_raw)
    sizes = [2, 32, 32, Xtr.shape[1]]
    out = Path(args.out) if args.out else None
    config = {
        "argv": ["benchmarks/time_to_vae.py", *sys.argv[1:]],
        "seed": args.seed,
        "sizes": sizes,
        "n_train": len(Xtr),
        "n_test": len(Xte),
        "vae": {
            "max_epochs": args.vae_epochs,
            "encoder_hidden": [64, 64],
            "lr": 1e-3,
            "batch_size": 128,
            "dtype": "float32",
            "validation_fraction": 0.0,
        },
        "rel_tol": args.rel_tol,
        "full_curve": args.full_curve,
        "vae_from": args.vae_from,
        "threads": os.environ.get("EXACTDGN_NUM_THREADS"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=2))

    if args.vae_from:
        prev = json.loads(Path(args.vae_from).read_text())["vae"]
        vae_s, vae_cpu, vae_nll = prev["seconds"], prev["cpu_seconds"], prev["test_nll"]
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        vae = VAE(
            sizes,
            max_epochs=args.vae_epochs,
            encoder_hidden=(64, 64),
            lr=1e-3,
            batch_size=128,
            validation_fraction=0.0,
            dtype="float32",
            random_state=args.seed,
        ).fit(Xtr)
        vae_s, vae_cpu = time.perf_counter() - t0, time.process_time() - c0
        vae_nll = -vae_to_exact(vae).score(Xte)
    log.info(
        "VAE: %d epochs, %.1f s (cpu %.1f s), exact test NLL %.3f",
        args.vae_epochs,
        vae_s,
        vae_cpu,
        vae_nll,
    )

    rows = []
    clock = {"wall": 0.0, "cpu": 0.0, "t": time.perf_counter(), "c": time.process_time()}

    def callback(it, params):
        now, cnow = time.perf_counter(), time.process_time()
        clock["wall"] += now - clock["t"]
        clock["cpu"] += cnow - clock["c"]
        dec, sd = params()
        nll = -ExactDGN.from_decoder(dec, sd).score(Xte)
        rows.append({"iter": it, "test_nll": nll, "wall_s": clock["wall"], "cpu_s": clock["cpu"]})
        log.info(
            "EM iter %d: test NLL %.3f after %.1f s (cpu %.1f s)",
            it,
            nll,
            clock["wall"],
            clock["cpu"],
        )
        clock["t"], clock["c"] = time.perf_counter(), time.process_time()
        return args.full_curve or nll > vae_nll

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ExactDGN(
            latent_dim=2,
            hidden_sizes=(32, 32),
            random_state=args.seed,
            max_iter=args.max_iter,
            rel_tol=args.rel_tol,
            progress=False,
        )
        clock["t"], clock["c"] = time.perf_counter(), time.process_time()
        m.fit(Xtr, callback=callback)
    reached = [r for r in rows if r["test_nll"] <= vae_nll]
    res = {
        "vae": {"seconds": vae_s, "cpu_seconds": vae_cpu, "test_nll": vae_nll},
        "em": {
            "curve": rows,
            "reached": reached[0] if reached else None,
            "scout_logliks": getattr(m, "scout_logliks_", None),
            "train_loglik": [h["loglik"] for h in m.history_],
            "n_iter": int(m.n_iter_),
            "converged": bool(m.converged_),
        },
    }
    if out:
        (out / "results.json").write_text(json.dumps(res, indent=2))
    r = reached[0] if reached else None
    print(
        f"VAE ({args.vae_epochs} epochs): exact test NLL {vae_nll:.3f} in {vae_s:.1f} s "
        f"(cpu {vae_cpu:.1f} s)"
    )
    if r:
        print(
            f"exact EM (defaults): test NLL {r['test_nll']:.3f} <= VAE's at iteration "
            f"{r['iter']}, {r['wall_s']:.1f} s (cpu {r['cpu_s']:.1f} s): "
            f"{r['wall_s'] / vae_s:.2f}x the VAE's training time"
        )
    else:
        print(
            f"exact EM (defaults): not reached in {len(rows)} iterations; last "
            f"{rows[-1]['test_nll']:.3f} after {rows[-1]['wall_s']:.1f} s"
            if rows
            else "no rows"
        )


if __name__ == "__main__":
    main()
