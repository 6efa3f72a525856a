"""Experiment 1: toy 2-D sets, latent 1, decoders [1, 12, 2] and [1, 16, 16, 2].

Exact train and held-out NLL per iteration and per second for exact EM, exact-gradient Adam,
VAE and IWAE (K = 5), over seeds (mean and spread).

    python experiments/toy.py --quick
    python experiments/toy.py --seeds 0 1 2 3 4 --out results/toy
"""

from __future__ import annotations

import time

import _common as C

DATASETS = ("wave", "circle", "two_moons", "mixture")
ARCHS = ([1, 12, 2], [1, 16, 16, 2])
METHODS = ("em", "gradient", "vae", "iwae")


def main() -> None:
    p = C.parser("toy", __doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--archs", nargs="+", default=None, help="only these decoders, e.g. 1-16-16-2")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--em-iter", type=int, default=None, help="EM iterations (default 50)")
    p.add_argument("--em-n-init", type=int, default=1, help="EM restarts, best kept")
    p.add_argument("--vae-epochs", type=int, nargs="+", default=None, help="VAE/IWAE curve epochs")
    args = p.parse_args()
    archs = ARCHS
    if args.archs:
        archs = [a for a in ARCHS if "-".join(map(str, a)) in args.archs]
        if not archs:
            p.error(f"no decoder matches --archs {args.archs}")
    methods = tuple(args.methods)
    out = C.setup(args)
    from exactdgn.datasets import get_dataset

    if args.quick:
        budgets = {"em_iter": 20, "grad_epochs": [5, 20], "vae_epochs": [30, 300], "k_is": 1000}
        n_train, n_test = 400, 400
    else:
        budgets = {
            "em_iter": 50,
            "grad_epochs": [2, 5, 10, 25],
            "vae_epochs": [25, 100, 400],
            "k_is": 5000,
        }
        n_train, n_test = 600, 600
    if args.em_iter is not None:
        budgets["em_iter"] = args.em_iter
    budgets["em_n_init"] = args.em_n_init
    if args.vae_epochs:
        budgets["vae_epochs"] = sorted(args.vae_epochs)
    config = C.base_config(
        args,
        datasets=args.datasets,
        archs=archs,
        methods=methods,
        budgets=budgets,
        n_train=n_train,
        n_test=n_test,
        data="train: data seed 1000+seed; test: an independent draw, data seed 2000+seed",
        vae="Adam lr 1e-3, batch 128, float32 training, encoder [64, 64], no early stopping",
    )
    C.write_json(out / "config.json", config)
    runs = []
    t0 = time.perf_counter()
    for ds in args.datasets:
        for sizes in archs:
            for seed in args.seeds:
                Xtr = get_dataset(ds, n_samples=n_train, random_state=1000 + seed)
                Xte = get_dataset(ds, n_samples=n_test, random_state=2000 + seed)
                res = C.run_methods(
                    Xtr, Xte, sizes, seed, budgets, methods, progress=not args.no_progress
                )
                runs.append(
                    {
                        "dataset": ds,
                        "arch": str(sizes),
                        "seed": seed,
                        "methods": C.strip_models(res),
                    }
                )
                line = ", ".join(f"{m} {r['final']['test_nll']:.3f}" for m, r in res.items())
                print(
                    f"{ds} {sizes} seed {seed}: test NLL {line} ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
            sel = [r for r in runs if r["dataset"] == ds and r["arch"] == str(sizes)]
            C.curve_figure(
                out / f"curves_{ds}_{'-'.join(map(str, sizes))}.png",
                f"{ds} {sizes}",
                {m: [r["methods"][m]["curve"] for r in sel] for m in methods},
            )
            C.write_json(out / "runs.json", runs)
    rows = C.summary_rows(runs, ("dataset", "arch"))
    C.write_json(out / "results.json", {"rows": rows, "seconds_total": time.perf_counter() - t0})
    cols = [
        "dataset",
        "arch",
        "method",
        "seeds",
        "train_nll",
        "train_nll_std",
        "test_nll",
        "test_nll_std",
        "seconds",
        "iterations",
        "test_elbo",
        "test_gap_mean",
    ]
    table = C.fmt_rows(rows, cols)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
