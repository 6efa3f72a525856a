"""Default exact training against the IWAE (K = 5, its defaults) on the same decoder.

Side by side in one run, per setting and seed: ``ExactDGN(latent_dim, hidden_sizes,
random_state=seed)`` with every other parameter at its default, and
``exactdgn.baselines.IWAE(sizes, k=5, random_state=seed)`` with its defaults; both are scored by
the exact held-out NLL (nats per point, lower is better) and timed (wall and CPU seconds of
``fit``; CPU seconds of this process, all threads: comparable across runs on a shared
machine, where wall seconds depend on the other jobs; ``torch._dynamo``, which the first torch
optimizer of a process imports, is imported before anything is timed).
The planted setting also prints the true decoder's held-out NLL.

Settings: the 8 toy ones (wave, two_moons, circle, mixture x [1,12,2], [1,16,16,2]; 600
training and 600 held-out points, data seeds 1000 + seed and 2000 + seed, as in
``experiments/toy.py``), the digits (all 1,797 8x8 images, standardized, 80/20 split) with
[1,12,64] and [2,32,32,64], and a planted [2,6,3] model (noise 0.1, 1,000 + 1,000 points).

Run: ``python benchmarks/training.py --seeds 0 1 2 3 4`` (all settings, hours on 2 cores) or
``--settings toy`` / a list of names such as ``wave-1-12-2 planted``. ``--device cuda`` gives the
exact fit ``device="cuda"`` (the torch backend; latent_dim 1 and 2) and nothing else; the IWAE
keeps the CPU (its default). The device's one-time start (CUDA context, library handles, first
kernels) is paid by a small untimed fit before the first timed one, as ``torch._dynamo`` is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from exactdgn import Decoder, ExactDGN
from exactdgn.baselines import IWAE
from exactdgn.datasets import Standardizer, get_dataset

TOY = [
    (ds, sizes)
    for ds in ("wave", "two_moons", "circle", "mixture")
    for sizes in ([1, 12, 2], [1, 16, 16, 2])
]
SETTINGS = {f"{ds}-{'-'.join(map(str, s))}": (ds, s) for ds, s in TOY}
SETTINGS["digits-1-12-64"] = ("digits", [1, 12, 64])
SETTINGS["digits-2-32-32-64"] = ("digits", [2, 32, 32, 64])
SETTINGS["planted-2-6-3"] = ("planted", [2, 6, 3])


def data(name: str, seed: int):
    """Training and held-out data of a setting, and the true decoder's held-out NLL."""
    ds, sizes = SETTINGS[name]
    if ds == "digits":
        X = get_dataset("digits")
        perm = np.random.default_rng(seed).permutation(len(X))
        n_te = len(X) // 5
        Xtr_raw, Xte_raw = X[perm[n_te:]], X[perm[:n_te]]
        std = Standardizer(rel_min_std=0.1).fit(Xtr_raw)
        return std.transform(Xtr_raw), std.transform(Xte_raw), None
    if ds == "planted":
        true = ExactDGN.from_decoder(Decoder.random(sizes, seed=1000 + seed), 0.1)
        Xtr = true.sample(1000, random_state=2000 + seed)
        Xte = true.sample(1000, random_state=3000 + seed)
        return Xtr, Xte, -true.score(Xte)
    Xtr = get_dataset(ds, n_samples=600, random_state=1000 + seed)
    Xte = get_dataset(ds, n_samples=600, random_state=2000 + seed)
    return Xtr, Xte, None


def run(name: str, seed: int, device: str | None = None) -> dict:
    _, sizes = SETTINGS[name]
    Xtr, Xte, truth = data(name, seed)
    sizes = [*sizes[:-1], Xtr.shape[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        m = ExactDGN(latent_dim=sizes[0], hidden_sizes=tuple(sizes[1:-1]), random_state=seed)
        m.set_params(progress=False, device=device).fit(Xtr)
        t_exact, c_exact = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        iw = IWAE(sizes, k=5, random_state=seed).fit(Xtr)
        t_iwae, c_iwae = time.perf_counter() - t0, time.process_time() - c0
    iw_exact = ExactDGN.from_decoder(iw.decoder_, iw.noise_std_)
    methods = sorted({h["method"] for h in m.history_[1:]})
    # where the exact fit's time went: its iterations' partition, E-step and M-step seconds (the
    # rest of exact_s is the start: initialisation and scouting)
    phases = {
        k: float(sum(h.get(f"seconds_{k}", 0.0) for h in m.history_))
        for k in ("partition", "estep", "mstep")
    }
    return {
        "setting": name,
        "seed": seed,
        "exact_nll": -m.score(Xte),
        "exact_s": t_exact,
        "exact_cpu": c_exact,
        "exact_iter": m.n_iter_,
        "exact_methods": "+".join(methods),
        "exact_phases_s": phases,
        "iwae_nll": -iw_exact.score(Xte),
        "iwae_s": t_iwae,
        "iwae_cpu": c_iwae,
        "iwae_epochs": iw.n_iter_,
        "true_nll": truth,
        "device": device,
    }


def warm_up(device: str) -> None:
    """One small untimed fit on ``device``: the device's one-time start (context, library
    handles, first kernels) is paid here, not by the first timed fit."""
    t = time.perf_counter()
    X = get_dataset("wave", n_samples=200, random_state=0)
    for d in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ExactDGN(
                latent_dim=d,
                hidden_sizes=(8,),
                max_iter=2,
                random_state=0,
                progress=False,
                device=device,
            ).fit(X)
    print(f"device {device_name(device)}: warm-up {time.perf_counter() - t:.1f} s", flush=True)


def device_name(device: str | None) -> str:
    """The exact fit's device, in words."""
    if device is None:
        return "numpy path (CPU)"
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def versions() -> dict:
    import scipy
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--settings", nargs="+", default=["all"], help=f"'all', 'toy' or from {list(SETTINGS)}"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for config.json and results.json (rows appended as they finish)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device of the exact fit (e.g. cuda); default: the numpy path",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # The first torch optimizer built in a process imports torch._dynamo (and sympy), ~1.2 s
    # once: import it here, before either side is timed, so neither pays it (it went to the
    # exact fit of the first setting's first seed, which runs first).
    import torch._dynamo  # noqa: F401

    if args.device is not None:
        warm_up(args.device)

    names = []
    for s in args.settings:
        toy = [n for n, (ds, _) in SETTINGS.items() if ds not in ("digits", "planted")]
        names += list(SETTINGS) if s == "all" else toy if s == "toy" else [s]
    print(
        f"{'setting':20s} {'seed':>4s} {'exact NLL':>10s} {'s':>7s} {'cpu s':>7s} {'iter':>5s}"
        f" {'method':>9s} {'IWAE NLL':>10s} {'s':>7s} {'cpu s':>7s} {'ep':>4s} {'true NLL':>9s}",
        flush=True,
    )
    rows = []
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        config = {
            "seeds": args.seeds,
            "settings": names,
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "EXACTDGN_NUM_THREADS": os.environ.get("EXACTDGN_NUM_THREADS"),
            "device": device_name(args.device),
            "versions": versions(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        (args.out / "config.json").write_text(json.dumps(config, indent=2))
    for name in names:
        if name not in SETTINGS:
            p.error(f"unknown setting {name!r}; choose from {list(SETTINGS)}")
        for seed in args.seeds:
            r = run(name, seed, args.device)
            rows.append(r)
            if args.out is not None:
                (args.out / "results.json").write_text(json.dumps(rows, indent=2))
            truth = f"{r['true_nll']:9.3f}" if r["true_nll"] is not None else ""
            print(
                f"{name:20s} {seed:4d} {r['exact_nll']:10.3f} {r['exact_s']:7.1f} "
                f"{r['exact_cpu']:7.1f} {r['exact_iter']:5d} {r['exact_methods']:>9s} "
                f"{r['iwae_nll']:10.3f} {r['iwae_s']:7.1f} {r['iwae_cpu']:7.1f} "
                f"{r['iwae_epochs']:4d} {truth}",
                flush=True,
            )
    print("\nmean over seeds (exact default vs IWAE K=5 default):")
    for name in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == name]
        e = np.array([r["exact_nll"] for r in rs])
        i = np.array([r["iwae_nll"] for r in rs])
        te = np.mean([r["exact_s"] for r in rs])
        ti = np.mean([r["iwae_s"] for r in rs])
        won = "exact" if e.mean() < i.mean() else "IWAE"
        faster = "exact" if te < ti else "IWAE"
        line = (
            f"{name:20s} exact {e.mean():.3f} ± {e.std():.3f} ({te:.1f} s)  "
            f"IWAE {i.mean():.3f} ± {i.std():.3f} ({ti:.1f} s)  lower NLL: {won}, faster: {faster}"
        )
        if rs[0]["true_nll"] is not None:
            gap = np.array([r["exact_nll"] - r["true_nll"] for r in rs])
            line += f"  gap to truth {np.round(gap, 3).tolist()}"
        print(line)


if __name__ == "__main__":
    main()
