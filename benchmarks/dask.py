"""Exact scoring and one EM iteration on a dask cluster, against the in-memory rate.

Data: ``--n`` points (default 10 million) sampled from a [1, 32, 32, 64] leaky-ReLU decoder
(seed 0, noise 0.1), written to a ``.npy`` file block by block (never whole in memory) and read
back chunk by chunk through a memory map (:func:`exactdgn.dask.read_npy`). Printed:

* in-memory: ``model.score_samples`` of the first ``--n-ref`` rows (all, if fewer) in this
  process with all the usable cores as library threads (``EXACTDGN_NUM_THREADS``), points/s;
* dask: ``exactdgn.dask.score_samples`` of all rows on a LocalCluster of ``--workers`` worker
  processes (one dask thread each, ``cores // workers`` library threads per task), points/s and
  the ratio to the in-memory rate of the same cores, the largest difference from the in-memory
  values on the first ``--n-ref`` rows, and each worker's peak resident memory (``ru_maxrss``);
* the same scoring on ``--n-scale`` rows with 1 and then 2 workers (scaling);
* ``--em``: one EM iteration (``ExactDGN(max_iter=1, warm_start=True)`` from the data's decoder
  with 5% weight noise and noise std 0.12) on ``--em-rows`` rows: seconds, backtracks,
  log-likelihood, peak memory per worker.

The load average is printed beside the figures (the machine may be shared).
Run: ``python benchmarks/dask.py [--n 10000000] [--em]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named dask.py: keep its directory off the path so `import dask` finds the library.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from exactdgn import Decoder, ExactDGN  # noqa: E402

SIZES = [1, 32, 32, 64]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss keeps the forking parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_data(model: ExactDGN, path: Path, n: int, block: int = 1 << 20) -> None:
    """``n`` samples of ``model`` into a .npy file, ``block`` rows at a time (seed 1 + block)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, SIZES[-1]))
    for i, s in enumerate(range(0, n, block)):
        m = min(block, n - s)
        out[s : s + m] = model.sample(m, random_state=1 + i)
    out.flush()
    del out


def dask_score(model, path, workers: int, chunk_rows: int, n_rows: int | None = None):
    from exactdgn import dask as edd

    with edd.connect(workers=workers, memory_limit="4GB") as client:
        X = edd.read_npy(path, chunk_rows=chunk_rows)
        if n_rows is not None:
            X = X[:n_rows]
        client.run(lambda: None)  # workers up and the library imported before timing
        client.run(__import__, "exactdgn.inference")
        t0 = time.perf_counter()
        lp = edd.score_samples(model, X).compute()
        sec = time.perf_counter() - t0
        peaks = client.run(_peak_rss_mb)
    return lp, sec, sorted(peaks.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--n-ref", type=int, default=500_000, help="rows scored in memory")
    p.add_argument("--n-scale", type=int, default=1_000_000, help="rows of the 1 vs 2 workers run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-rows", type=int, default=1 << 17)
    p.add_argument("--path", default="/tmp/exactdgn-bench/dask_x.npy")
    p.add_argument("--em", action="store_true", help="also one EM iteration")
    p.add_argument("--em-rows", type=int, default=None, help="rows of the EM run (default all)")
    p.add_argument("--no-scale", action="store_true", help="skip the 1 vs 2 workers run")
    p.add_argument("--reuse", action="store_true", help="reuse the data file if it matches")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    res: dict = {"config": vars(args).copy(), "cpus": len(os.sched_getaffinity(0))}
    model = ExactDGN.from_decoder(Decoder.random(SIZES, seed=0), noise_std=0.1)
    print(f"decoder {SIZES}, {len(model.partition_)} regions; N = {args.n:,}; load {_load()}")
    path = Path(args.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.reuse and path.exists() and np.load(path, mmap_mode="r").shape == (args.n, SIZES[-1]):
        print(f"reusing {path} (written by an earlier run with the same --n)")
    else:
        write_data(model, path, args.n)
        sec = time.perf_counter() - t0
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {sec:.1f}s")

    X_ref = np.array(np.load(path, mmap_mode="r")[: args.n_ref])
    n_ref = len(X_ref)  # --n-ref, or all the rows when the file has fewer
    model.score_samples(X_ref[:1000])  # warm-up
    t0 = time.perf_counter()
    ref = model.score_samples(X_ref)
    t_mem = time.perf_counter() - t0
    rate_mem = n_ref / t_mem
    res["in_memory"] = {"rows": n_ref, "seconds": t_mem, "points_per_s": rate_mem}
    print(
        f"in memory ({res['cpus']} cores): {n_ref:,} rows in {t_mem:.2f}s = "
        f"{rate_mem:,.0f} points/s | load {_load()}"
    )

    lp, t_dask, peaks = dask_score(model, path, args.workers, args.chunk_rows)
    rate = args.n / t_dask
    diff = float(np.max(np.abs(lp[:n_ref] - ref) / np.maximum(1.0, np.abs(ref))))
    res["dask"] = {
        "workers": args.workers,
        "rows": args.n,
        "seconds": t_dask,
        "points_per_s": rate,
        "ratio": rate / rate_mem,
        "max_rel_diff": diff,
        "peak_rss_mb_per_worker": peaks,
        "mean_log_px": float(lp.mean()),
    }
    print(
        f"dask {args.workers} workers: {args.n:,} rows in {t_dask:.1f}s = {rate:,.0f} points/s "
        f"= {rate / rate_mem:.2f}x in memory | max rel diff {diff:.1e} | peak RSS per worker "
        f"{', '.join(f'{m:.0f}' for m in peaks)} MB | load {_load()}"
    )
    del lp

    if not args.no_scale:
        n_s = min(args.n_scale, args.n)
        res["scaling"] = {}
        for w in (1, 2):
            _, sec, pk = dask_score(model, path, w, args.chunk_rows, n_rows=n_s)
            res["scaling"][w] = {"rows": n_s, "seconds": sec, "points_per_s": n_s / sec}
            # every worker's tasks get cores // workers threads: both rows use every core (one
            # process with its threads against several): not a scaling with the cores
            res["scaling"][w]["threads_per_task"] = max(1, len(os.sched_getaffinity(0)) // w)
            print(
                f"processes: {w} worker(s) x {res['scaling'][w]['threads_per_task']} thread(s) "
                f"per task, {n_s:,} rows in {sec:.1f}s = {n_s / sec:,.0f} "
                f"points/s | peak RSS {', '.join(f'{m:.0f}' for m in pk)} MB | load {_load()}"
            )

    if args.em:
        from exactdgn import dask as edd

        # a start near the data's decoder (5% weight noise, seed 2): narrow posteriors, a few
        # pairs per point, as late in a fit (a random start keeps ~50 pairs per point here)
        rng = np.random.default_rng(2)
        start = model.decoder_.copy()
        for k in range(start.n_layers):
            start.weights[k] = start.weights[k] * (
                1 + 0.05 * rng.standard_normal(start.weights[k].shape)
            )

        with edd.connect(workers=args.workers, memory_limit="4GB") as client:
            X = edd.read_npy(path, chunk_rows=args.chunk_rows)
            n_em = min(args.em_rows or args.n, args.n)
            X = X[:n_em]
            em = ExactDGN.from_decoder(start, 0.12, warm_start=True, max_iter=1, tol=0.0)
            em.progress = False
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                em.fit(X)
            sec = time.perf_counter() - t0
            peaks = sorted(client.run(_peak_rss_mb).values())
        h = em.history_
        res["em"] = {"rows": n_em, "seconds": sec, "history": h, "peak_rss_mb_per_worker": peaks}
        print(
            f"one EM iteration on {n_em:,} rows ({args.workers} workers): {sec:.1f}s "
            f"(E-step {h[-1]['seconds_estep']:.1f}s, M-step {h[-1]['seconds_mstep']:.1f}s, "
            f"{h[-1]['backtracks']} backtracks) | loglik {h[0]['loglik']:.4f} -> "
            f"{h[-1]['loglik']:.4f} | peak RSS {', '.join(f'{m:.0f}' for m in peaks)} MB | "
            f"load {_load()}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
