"""Experiment 4: the cost table. Regions and seconds per partition / E-step / M-step of one exact
EM iteration as the latent dimension (1, 2, 3), the width and the depth grow, with the growth
fitted on log-log axes (slope of seconds against regions, and of regions against width).

Data: sklearn digits (all classes, standardized), the first --n points.

    python experiments/cost.py --quick
"""

from __future__ import annotations

import signal
import time
import warnings

import _common as C
import numpy as np


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def main() -> None:
    p = C.parser("cost", __doc__)
    p.add_argument("--n", type=int, default=300, help="number of data points")
    p.add_argument("--case-timeout", type=int, default=120, help="skip cases slower than this")
    args = p.parse_args()
    if args.seeds is None:
        args.seeds = [0]
    out = C.setup(args)
    import matplotlib.pyplot as plt

    from exactdgn import ExactDGN
    from exactdgn.datasets import Standardizer, get_dataset
    from exactdgn.evaluation import STD_FLOOR, markdown_table
    from exactdgn.plotting import loglog_slope, plot_loglog_fit

    X = get_dataset("digits")[: args.n]
    X = Standardizer(rel_min_std=STD_FLOOR).fit_transform(X)
    q = args.quick
    widths = {
        1: [8, 16, 32, 64] if q else [8, 16, 32, 64, 128],
        2: [4, 8, 16, 32] if q else [4, 8, 16, 32, 48],
        3: [3, 4, 6] if q else [3, 4, 6, 8],
    }
    cases = [(d, (w,)) for d, ws in widths.items() for w in ws]
    depth_w = {1: 8, 2: 6, 3: 3}
    for d in (1, 2, 3):
        for depth in (2, 3):
            if d == 3 and depth == 3 and q:
                continue
            cases.append((d, (depth_w[d],) * depth))
    config = C.base_config(
        args,
        n_points=len(X),
        data="digits (all), standardized",
        cases=[{"latent_dim": d, "hidden": list(h)} for d, h in cases],
        measure="history_ entry of the first EM iteration (max_iter=1); s_estep is the mean "
        "of its n_estep E-steps, s_estep_iteration their sum",
    )
    C.write_json(out / "config.json", config)
    signal.signal(signal.SIGALRM, _alarm)
    rows = []
    for d, hidden in cases:
        for seed in args.seeds:
            signal.alarm(args.case_timeout)
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = ExactDGN(d, hidden, method="em", init="pca", max_iter=1, random_state=seed)
                    n_estep = _count_esteps(m)
                    m.set_params(progress=False).fit(X)
            except _Timeout:
                print(f"d={d} hidden={hidden}: skipped (> {args.case_timeout}s)", flush=True)
                rows.append(
                    {"latent_dim": d, "hidden": str(list(hidden)), "seed": seed, "skipped": True}
                )
                continue
            finally:
                signal.alarm(0)
            h = m.history_[1]
            row = {
                "latent_dim": d,
                "hidden": str(list(hidden)),
                "width": hidden[0],
                "depth": len(hidden),
                "seed": seed,
                "n_regions": h["n_regions"],
                # one enumeration (iteration 0's; the EM iteration may enumerate several
                # times when it backtracks)
                "s_partition": m.history_[0]["seconds_partition"],
                # the iteration's E-steps (the output layer's, the all-layer candidates and
                # their backtracks, the gradient fallback's tries) summed, their number (the
                # start's one E-step left out: init="pca", one start) and their mean
                "s_estep_iteration": h["seconds_estep"],
                "n_estep": n_estep[0] - 1,
                "s_estep": h["seconds_estep"] / max(n_estep[0] - 1, 1),
                "s_mstep": h["seconds_mstep"],
                "s_total": time.perf_counter() - t0,
            }
            rows.append(row)
            print(row, flush=True)
            C.write_json(out / "results.json", {"rows": rows})
    ok = [r for r in rows if not r.get("skipped")]
    fits = {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for d in (1, 2, 3):
        sel = [r for r in ok if r["latent_dim"] == d and r["depth"] == 1]
        if len(sel) >= 2:
            w = np.array([r["width"] for r in sel], float)
            R = np.array([r["n_regions"] for r in sel], float)
            fits[f"d{d}_regions_vs_width"] = loglog_slope(w, R)[0]
            plot_loglog_fit(
                w, R, ax=axes[0], label=f"d={d}", xlabel="width (1 hidden layer)", ylabel="regions"
            )
        sel = [r for r in ok if r["latent_dim"] == d]
        if len(sel) >= 2:
            R = np.array([r["n_regions"] for r in sel], float)
            for key, ax in (("s_estep", axes[1]), ("s_partition", axes[2])):
                y = np.array([r[key] for r in sel], float)
                if np.all(y > 0) and np.ptp(np.log(R)) > 0:
                    fits[f"d{d}_{key}_vs_regions"] = loglog_slope(R, y)[0]
                    plot_loglog_fit(
                        R,
                        y,
                        ax=ax,
                        label=f"d={d}",
                        xlabel="regions",
                        ylabel=f"{key[2:]} seconds (mean of one EM iteration's)",
                    )
    axes[0].set_title("regions vs width")
    axes[1].set_title(f"E-step seconds vs regions (N={len(X)})")
    axes[2].set_title("partition seconds vs regions")
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=100)
    plt.close(fig)
    C.write_json(out / "results.json", {"rows": rows, "loglog_slopes": fits})
    cols = ["latent_dim", "hidden", "n_regions", "s_partition", "n_estep", "s_estep"]
    cols += ["s_estep_iteration", "s_mstep", "s_total"]
    table = markdown_table(ok, cols)
    (out / "table.md").write_text(table + "\n\nlog-log slopes: " + str(fits) + "\n")
    print(table)
    print("log-log slopes:", fits)


def _count_esteps(model) -> list:
    """A one-item list counting the E-steps ``model`` runs from now on (its ``_e_step``)."""
    count = [0]
    e_step = model._e_step

    def counted(*args, **kwargs):
        count[0] += 1
        return e_step(*args, **kwargs)

    model._e_step = counted
    return count


if __name__ == "__main__":
    main()
