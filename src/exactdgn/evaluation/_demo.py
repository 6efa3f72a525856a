"""The demo behind ``exactdgn demo`` / ``make run``: exact EM and a VAE, same decoder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._validation import is_int
from ._curves import em_curve, vae_curve
from ._environment import environment
from ._split import STD_FLOOR, split_data
from ._tables import markdown_table, write_json
from ._vae import evaluate_vae, vae_to_exact

__all__ = ["run_demo"]


def run_demo(
    out,
    *,
    seed: int = 0,
    em_iter: int = 40,
    quick: bool = False,
    progress: bool = True,
    threads: int | None = None,
    report=print,
) -> str:
    """Exact EM against a VAE with the same decoder on wave and digits; writes a report.

    Writes ``README.md``, ``results.json``, ``config.json`` and figures to ``out`` and returns
    the markdown table of the exact NLLs. ``report`` receives the progress lines. ``threads``:
    torch's intra-op threads while it runs (restored after; recorded in ``config.json``).
    """
    if threads is None:
        return _run_demo(out, seed, em_iter, quick, progress, threads, report)
    if not is_int(threads, 1):
        raise ValueError(f"threads={threads!r} is invalid: use an integer >= 1 or None")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _run_demo(out, seed, em_iter, quick, progress, threads, report)
    finally:
        torch.set_num_threads(before)


def _run_demo(out, seed, em_iter, quick, progress, threads, report) -> str:
    """The body of :func:`run_demo`."""
    # figures without pyplot: the caller's backend and open figures are left as they are
    from matplotlib.figure import Figure

    def subplots(rows, cols, figsize):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(rows, cols)

    from ..baselines import VAE
    from ..datasets import Standardizer, get_dataset, wave
    from ..plotting import (
        plot_curves,
        plot_images,
        plot_partition,
        plot_posterior_1d,
        plot_samples_2d,
    )

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = [
        {
            "name": "wave",
            "data": "wave (n=750, noise=0.05), 600 train / 150 held out",
            "sizes": [1, 12, 2],
            "standardize": False,
            "em_iter": em_iter,
            "vae_epochs": [30, 100, 300, 1000],
        },
        {
            "name": "digits3",
            "data": "sklearn digits, class 3 (183 images 8x8), 80% train / 20% held out",
            "sizes": [1, 12, 64],
            "standardize": True,
            "em_iter": em_iter,
            "vae_epochs": [30, 100, 300, 1000],
        },
    ]
    if quick:
        for c in cases:
            c["em_iter"] = min(c["em_iter"], 5)
            c["vae_epochs"] = [5, 20]
    vae_kw = {
        "encoder_hidden": (64, 64),
        "lr": 1e-3,
        "batch_size": 128,
        "validation_fraction": 0.0,
        "dtype": "float32",
    }
    config = {
        "seed": seed,
        "torch_threads": threads,
        "vae": {**vae_kw, "note": "no early stopping: a fixed epoch budget, as EM's"},
        "em": (
            "one fit per case (em_curve: method 'em', tol and rel_tol 0, max_iter the case's "
            "em_iterations, ExactDGN's defaults otherwise); each case's em_params lists them all"
        ),
        "environment": environment(),
        "cases": [],
    }
    results = {"cases": []}
    summary_rows = []
    md = [
        "# exactdgn demo: exact EM against a VAE with the same decoder",
        "",
        "Every number below is an **exact** log-likelihood log p(x) of the trained decoder "
        "(nats per point; NLL = -log p(x)), computed in closed form over the decoder's linear "
        "regions, except the columns marked ELBO / IWAE / IS, which are the VAE's own Monte "
        "Carlo estimates. gap = exact log p(x) - ELBO per point = KL(q(z|x) || p(z|x)).",
        "",
    ]
    for case in cases:
        name = case["name"]
        if name == "wave":
            X = wave(750, noise=0.05, random_state=seed)
            Xtr_raw, Xte_raw, _ = split_data(X, 0.2, seed)
        else:
            X = get_dataset("digits:3")
            Xtr_raw, Xte_raw, _ = split_data(X, 0.2, seed)
        std = Standardizer(rel_min_std=STD_FLOOR).fit(Xtr_raw) if case["standardize"] else None
        Xtr = std.transform(Xtr_raw) if std else Xtr_raw
        Xte = std.transform(Xte_raw) if std else Xte_raw
        sizes = [*case["sizes"][:-1], X.shape[1]]
        report(f"[{name}] fitting exact EM {sizes} ({case['em_iter']} iterations) ...")
        em, em_c = em_curve(
            Xtr,
            Xte,
            max_iter=case["em_iter"],
            progress=progress,
            latent_dim=sizes[0],
            hidden_sizes=tuple(sizes[1:-1]),
            random_state=seed,
        )
        report(f"[{name}] fitting VAE {sizes} (epochs {case['vae_epochs']}) ...")
        vae, vae_c = vae_curve(
            lambda e, sizes=sizes: VAE(sizes, max_epochs=e, random_state=seed, **vae_kw),
            Xtr,
            Xte,
            case["vae_epochs"],
        )
        vex = vae_to_exact(vae)
        ev_tr = evaluate_vae(vae, vex, Xtr, seed=seed)
        ev_te = evaluate_vae(vae, vex, Xte, seed=seed)
        row_em = {
            "data": name,
            "method": "exact EM",
            "iterations": em_c["iter"][-1],
            "seconds": em_c["seconds"][-1],
            "regions": em.n_regions_,
            "train NLL": -em.score(Xtr),
            "test NLL": -em.score(Xte),
        }
        row_vae = {
            "data": name,
            "method": "VAE",
            "iterations": vae_c["iter"][-1],
            "seconds": vae_c["seconds"][-1],
            "regions": vex.n_regions_,
            "train NLL": -ev_tr["exact"],
            "test NLL": -ev_te["exact"],
            "test -ELBO": -ev_te["elbo"],
            "test -IWAE5": -ev_te["iwae5"],
            "test -IS5000": -ev_te["is5000"],
            "test gap mean": ev_te["gap_mean"],
            "test gap max": ev_te["gap_max"],
        }
        summary_rows += [row_em, row_vae]
        jac = std.log_abs_det_jacobian() if std else 0.0
        results["cases"].append(
            {
                "name": name,
                "layer_sizes": sizes,
                "n_train": len(Xtr),
                "n_test": len(Xte),
                "standardized": bool(std),
                "log_abs_det_jacobian": jac,
                "em": {
                    "train_loglik": -row_em["train NLL"],
                    "test_loglik": -row_em["test NLL"],
                    "noise_std": em.noise_std_.tolist(),
                    "curve": em_c,
                },
                "vae": {
                    "train": ev_tr,
                    "test": ev_te,
                    "noise_std": float(np.mean(vae.noise_std_)),
                    "curve": vae_c,
                },
            }
        )
        config["cases"].append(
            {
                "name": name,
                "data": case["data"],
                "layer_sizes": sizes,
                "em_iterations": case["em_iter"],
                "em_params": em.get_params(),
                "vae_epoch_checkpoints": case["vae_epochs"],
                "standardizer": std.to_dict() if std else None,
            }
        )
        # figures
        fig, axes = subplots(1, 2, (10, 4))
        curves_it, curves_s = {}, {}
        for lab, c, col in (("EM", em_c, "C0"), ("VAE", vae_c, "C1")):
            for part, ls in (("train", "-"), ("test", "--")):
                y = np.asarray(c[f"{part}_nll"], dtype=float)
                ok = np.isfinite(y)
                x_it = np.asarray(c["iter"], dtype=float)[ok]
                x_s = np.asarray(c["seconds"], dtype=float)[ok]
                spec = {"y": y[ok], "color": col, "ls": ls}
                curves_it[f"{lab} {part}"] = {"x": x_it, **spec}
                curves_s[f"{lab} {part}"] = {"x": np.maximum(x_s, 1e-3), **spec}
        plot_curves(
            curves_it,
            ax=axes[0],
            xlabel="EM iteration / VAE epoch",
            logx=True,
            title=f"{name}: exact NLL",
        )
        plot_curves(
            curves_s, ax=axes[1], xlabel="seconds", logx=True, title=f"{name}: exact NLL vs time"
        )
        fig.tight_layout()
        fig.savefig(out / f"curves_{name}.png", dpi=110)
        if name == "wave":
            fig, axes = subplots(1, 3, (14, 4.2))
            plot_samples_2d(
                Xtr,
                {
                    "EM samples": em.sample(600, random_state=seed),
                    "VAE samples": vae.sample(600, random_state=seed),
                },
                ax=axes[0],
                title="wave: data and samples",
            )
            plot_partition(em.partition_, ax=axes[1])
            axes[1].set_title(f"EM decoder: {em.n_regions_} regions of R")
            plot_partition(vex.partition_, ax=axes[2])
            axes[2].set_title(f"VAE decoder: {vex.n_regions_} regions of R")
            fig.tight_layout()
            fig.savefig(out / "wave_samples_partition.png", dpi=110)
        idx = np.argsort(vex.score_samples(Xte) - vae.elbo(Xte, 100, random_state=seed))[::-1]
        pick = idx[[0, len(idx) // 2, len(idx) - 1]]
        mu, sd = vae.encode(Xte[pick])
        fig, axes = subplots(1, 3, (13, 3.6))
        for j, i in enumerate(pick):
            plot_posterior_1d(vex, Xte[i], ax=axes[j], q=(mu[j], sd[j]))
            axes[j].set_title(f"{name} held-out point {i}")
        fig.tight_layout()
        fig.savefig(out / f"posterior_{name}.png", dpi=110)
        if name != "wave":
            fig, axes = subplots(1, 3, (12, 4))
            plot_images(Xte_raw[:16], ax=axes[0], ncols=4, title="held-out data")
            plot_images(
                std.inverse_transform(em.sample(16, random_state=seed)),
                ax=axes[1],
                ncols=4,
                title="exact EM samples",
            )
            plot_images(
                std.inverse_transform(vae.sample(16, random_state=seed)),
                ax=axes[2],
                ncols=4,
                title="VAE samples",
            )
            fig.tight_layout()
            fig.savefig(out / f"samples_{name}.png", dpi=110)
    table = markdown_table(summary_rows)
    md += ["## Exact NLL (lower is better)", "", table, ""]
    md += [
        "Units: wave in data units; digits in standardized units (per-pixel standardization "
        "fitted on the training split; add the Jacobian term in results.json, "
        "`log_abs_det_jacobian`, to get pixel units).",
        "",
        "## Figures",
        "",
        "Training curves (exact NLL; EM per iteration, the VAE at epoch checkpoints of one "
        "training run, scored as it trains):",
        "",
        "![wave](curves_wave.png)",
        "",
        "![digits](curves_digits3.png)",
        "",
        "Wave data with samples, and the d = 1 partitions (breakpoints in grey):",
        "",
        "![wave samples](wave_samples_partition.png)",
        "",
        "Exact posterior p(z|x) of the VAE's decoder against its encoder's q(z|x) (held-out "
        "points with the largest, median and smallest gap):",
        "",
        "![posterior wave](posterior_wave.png)",
        "",
        "![posterior digits](posterior_digits3.png)",
        "",
        "![digit samples](samples_digits3.png)",
        "",
    ]
    total = time.perf_counter() - t_start
    config["seconds_total"] = total
    md += [f"Total time: {total:.1f} s. Configuration: config.json; all numbers: results.json.", ""]
    write_json(out / "config.json", config)
    write_json(out / "results.json", {**results, "rows": summary_rows})
    (out / "README.md").write_text("\n".join(md))
    report(
        f"report written to {out}/ (README.md, results.json, config.json, *.png) in {total:.0f}s"
    )
    return table
