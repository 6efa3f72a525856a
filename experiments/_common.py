"""Shared helpers of the experiment scripts (argument parsing, output, aggregation, figures)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(REPO / "results" / name), help="output directory")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds (default: 0..4, quick: 0 1)"
    )
    p.add_argument("--quick", action="store_true", help="small budgets (minutes, not hours)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    return p


def setup(args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(args.threads)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: Path, obj) -> None:
    from exactdgn.evaluation import json_default as _json_default

    path.write_text(json.dumps(obj, indent=2, default=_json_default))


def base_config(args, **extra) -> dict:
    import exactdgn
    from exactdgn.evaluation import environment

    return {
        "argv": sys.argv,
        "quick": bool(args.quick),
        "seeds": list(args.seeds),
        "torch_threads": args.threads,
        "exactdgn": exactdgn.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": environment(),
        **extra,
    }


def aggregate(curves: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds of ``key`` (aligned by position), its std, and the mean seconds."""
    n = min(len(c[key]) for c in curves)
    Y = np.array([c[key][:n] for c in curves], dtype=float)
    S = np.array([c["seconds"][:n] for c in curves], dtype=float)
    with warnings.catch_warnings():  # columns with no finite value stay NaN (not plotted)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(Y, axis=0), np.nanstd(Y, axis=0), S.mean(axis=0)


def final_stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}


def curve_figure(path: Path, title: str, per_method: dict) -> None:
    """Two panels: exact NLL (train solid, test dashed; mean ± std over seeds) vs iteration and
    vs seconds. ``per_method``: ``name -> list of curves`` (one per seed)."""
    import matplotlib.pyplot as plt

    from exactdgn.plotting import plot_curves

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    c_it, c_s = {}, {}
    for j, (name, curves) in enumerate(per_method.items()):
        col = f"C{j}"
        it = np.asarray(curves[0]["iter"], dtype=float)
        for part, ls in (("train", "-"), ("test", "--")):
            m, s, secs = aggregate(curves, f"{part}_nll")
            ok = np.isfinite(m)
            n = len(m)
            c_it[f"{name} {part}"] = {
                "x": np.maximum(it[:n][ok], 0.5),
                "y": m[ok],
                "spread": s[ok],
                "color": col,
                "ls": ls,
            }
            c_s[f"{name} {part}"] = {
                "x": np.maximum(secs[ok], 1e-3),
                "y": m[ok],
                "spread": s[ok],
                "color": col,
                "ls": ls,
            }
    plot_curves(c_it, ax=axes[0], xlabel="iteration / epoch", logx=True, title=title)
    plot_curves(c_s, ax=axes[1], xlabel="seconds", logx=True, title=title + " (time)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_methods(Xtr, Xte, sizes, seed, budgets: dict, methods, *, progress=False) -> dict:
    """Train every method on the same data and decoder architecture; exact NLL curves.

    budgets: ``em_iter`` (EM iterations), ``grad_epochs`` (refit schedule of the exact-gradient
    Adam), ``vae_epochs`` (refit schedule of VAE / IWAE), ``k_is`` (IS samples for the final
    VAE evaluation). Returns ``method -> {"curve", "final"}``.
    """
    from exactdgn import ExactDGN
    from exactdgn.baselines import IWAE, VAE
    from exactdgn.evaluation import em_curve, evaluate_vae, refit_curve, vae_curve, vae_to_exact

    d, hidden = sizes[0], tuple(sizes[1:-1])
    out = {}
    vae_kw = {
        "encoder_hidden": (64, 64),
        "lr": 1e-3,
        "batch_size": 128,
        "validation_fraction": 0.0,
        "dtype": "float32",
        "random_state": seed,
    }
    for method in methods:
        if method == "em":
            # n_init > 1: independent runs (random_state seed, seed + 7919, ...), the one with
            # the best final training likelihood kept; its curve's seconds are the sum over
            # all runs (the cost of the whole procedure up to that iteration)
            runs_em = [
                em_curve(
                    Xtr,
                    Xte,
                    max_iter=budgets["em_iter"],
                    progress=progress,
                    latent_dim=d,
                    hidden_sizes=hidden,
                    random_state=seed + 7919 * i,
                )
                for i in range(budgets.get("em_n_init", 1))
            ]
            model, curve = min(runs_em, key=lambda mc: mc[1]["train_nll"][-1])
            if len(runs_em) > 1:
                curve = {**curve, "seconds": list(np.sum([c["seconds"] for _, c in runs_em], 0))}
                curve["init_train_nll"] = [c["train_nll"][-1] for _, c in runs_em]
                curve["init_test_nll"] = [c["test_nll"][-1] for _, c in runs_em]
            exact, est = model, None
        elif method == "gradient":
            est, curve = refit_curve(
                lambda e: ExactDGN(
                    latent_dim=d,
                    hidden_sizes=hidden,
                    method="gradient",
                    max_iter=e,
                    tol=0.0,
                    random_state=seed,
                    progress=False,
                ),
                Xtr,
                Xte,
                budgets["grad_epochs"],
                progress=progress,
            )
            exact = est
        elif method in ("vae", "iwae"):
            cls = VAE if method == "vae" else IWAE
            extra = {} if method == "vae" else {"k": 5}
            est, curve = vae_curve(
                lambda e, cls=cls, extra=extra: cls(sizes, max_epochs=e, **vae_kw, **extra),
                Xtr,
                Xte,
                budgets["vae_epochs"],
            )
            exact = vae_to_exact(est)
        else:
            raise ValueError(method)
        final = {
            "train_nll": curve["train_nll"][-1],
            "test_nll": curve["test_nll"][-1],
            "seconds": curve["seconds"][-1],
            "iterations": curve["iter"][-1],
            "n_regions": exact.n_regions_,
            "noise_std": float(np.mean(exact.noise_std_)),
        }
        if est is not None and method in ("vae", "iwae"):
            k_is = budgets.get("k_is", 5000)
            final["train_eval"] = evaluate_vae(est, exact, Xtr, seed=seed, k_is=k_is)
            final["test_eval"] = evaluate_vae(est, exact, Xte, seed=seed, k_is=k_is)
        out[method] = {"curve": curve, "final": final, "model": exact, "estimator": est}
    return out


def strip_models(res: dict) -> dict:
    """The JSON-friendly part of :func:`run_methods`' output."""
    return {m: {"curve": r["curve"], "final": r["final"]} for m, r in res.items()}


def summary_rows(all_runs: list[dict], keys: tuple) -> list[dict]:
    """Mean ± std over seeds of the final numbers, one row per (keys..., method)."""
    groups: dict = {}
    for run in all_runs:
        for method, r in run["methods"].items():
            g = (*(run[k] for k in keys), method)
            groups.setdefault(g, []).append(r["final"])
    rows = []
    for g, finals in groups.items():
        row = dict(zip((*keys, "method"), g, strict=True))
        row["seeds"] = len(finals)
        for k in ("train_nll", "test_nll", "seconds", "iterations", "n_regions"):
            v = np.array([f[k] for f in finals], dtype=float)
            row[k] = float(v.mean())
            if k in ("train_nll", "test_nll"):
                row[k + "_std"] = float(v.std())
        if "test_eval" in finals[0]:
            for k in ("elbo", "iwae5", "gap_mean", "gap_max"):
                kk = [f for f in finals[0]["test_eval"] if f.startswith(k)]
                if kk:
                    v = np.array([f["test_eval"][kk[0]] for f in finals], dtype=float)
                    row["test_" + k] = float(v.mean())
        rows.append(row)
    return rows


def fmt_rows(rows: list[dict], cols: list[str]) -> str:
    from exactdgn.evaluation import markdown_table

    return markdown_table(rows, cols)


def image_experiment(args, out: Path, cases: list[dict], methods=("em", "vae")) -> list[dict]:
    """Run ``methods`` on each case ``{"name", "X", "sizes", "budgets"}`` (raw images) for every
    seed: 80/20 split (split seed = seed), per-pixel standardization fitted on the training split
    (floor 0.1 x the largest pixel std), exact NLL in standardized units (``jacobian`` converts
    to pixel units). Writes runs.json, results.json, table.md and curve figures."""
    from exactdgn.datasets import Standardizer
    from exactdgn.evaluation import STD_FLOOR, split_data

    runs = []
    t0 = time.perf_counter()
    for case in cases:
        for seed in args.seeds:
            Xtr_raw, Xte_raw, _ = split_data(case["X"], 0.2, seed)
            std = Standardizer(rel_min_std=STD_FLOOR).fit(Xtr_raw)
            Xtr, Xte = std.transform(Xtr_raw), std.transform(Xte_raw)
            res = run_methods(
                Xtr,
                Xte,
                case["sizes"],
                seed,
                case["budgets"],
                methods,
                progress=not args.no_progress,
            )
            runs.append(
                {
                    "case": case["name"],
                    "arch": str(case["sizes"]),
                    "seed": seed,
                    "n_train": len(Xtr),
                    "n_test": len(Xte),
                    "jacobian": std.log_abs_det_jacobian(),
                    "methods": strip_models(res),
                }
            )
            line = ", ".join(
                f"{m} train {r['final']['train_nll']:.2f} test {r['final']['test_nll']:.2f}"
                for m, r in res.items()
            )
            print(
                f"{case['name']} {case['sizes']} seed {seed}: {line} "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
            write_json(out / "runs.json", runs)
        sel = [r for r in runs if r["case"] == case["name"]]
        curve_figure(
            out / f"curves_{case['name']}.png",
            case["name"],
            {m: [r["methods"][m]["curve"] for r in sel] for m in methods},
        )
    rows = summary_rows(runs, ("case", "arch"))
    write_json(out / "results.json", {"rows": rows, "seconds_total": time.perf_counter() - t0})
    cols = [
        "case",
        "arch",
        "method",
        "seeds",
        "train_nll",
        "test_nll",
        "test_nll_std",
        "seconds",
        "iterations",
        "n_regions",
        "test_elbo",
        "test_gap_mean",
    ]
    table = fmt_rows(rows, cols)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return runs
