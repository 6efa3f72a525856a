"""The torch backend on one device, beside the numpy path and importance sampling on that device.

For each MNIST t10k decoder ([1,64,64,784] and [2,32,32,784]; files written by ``ExactDGN.save``
in ``--models``, matched by layer sizes, else a PCA-initialised decoder as a fallback):

* exact ``log p(x)`` of all images on ``--device`` (X resident there; warm-up first, best of
  ``--repeat``, the device synchronised around each timing) and point-regions/s; also the
  end-to-end ``ExactDGN(device=...).score_samples`` (numpy in, numpy out);
* the numpy path on a subset (``--compare`` points) and the largest difference to it;
* importance sampling with K = ``--is-k`` prior draws on the same device (Gram-matrix form:
  ``||x - g(z)||² = ||x||² - 2 x·g(z) + ||g(z)||²``), its time and its error against the exact
  value;
* the E-step (masses and truncated moments of every retained pair) on the device, where the
  backend covers it;
* d = 1 only: ``log p(x)`` of ``--big`` points (MNIST rows repeated plus noise) on the device;
* with ``--em``: one EM iteration and one L-BFGS step (E-steps, statistics, M-step / gradient
  on the device; the partition on the host) from the decoder, beside the same iteration on the
  numpy path (``--no-train-numpy`` skips it; the numpy L-BFGS step only with
  ``--lbfgs-numpy``), with the speed-up and the log-likelihood difference.

Run: ``python benchmarks/gpu.py --device cuda --models DIR --json out.json``. Smoke tests on a
CPU: ``--n-points 300`` (the first images), ``--quick`` (the 8x8 digits and small decoders; its
d = 2 decoder has broad posteriors, minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from exactdgn import ExactDGN
from exactdgn.datasets import load_digits, load_mnist
from exactdgn.inference import marginal_pairs, region_geometry
from exactdgn.inference._torch_marginal import pairs_torch, resolve_device

log = logging.getLogger("gpu-bench")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best_of(fn, dev, repeat: int, min_seconds: float = 0.05):
    """Best of ``repeat`` timings after one warm-up call; calls shorter than ``min_seconds`` are
    timed as the mean of enough back-to-back calls to fill it. The device is synchronised
    before and after each timed block."""
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    first = time.perf_counter() - t
    loops = max(1, math.ceil(min_seconds / max(first, 1e-9)))
    best = math.inf
    for _ in range(repeat):
        sync(dev)
        t = time.perf_counter()
        for _ in range(loops):
            out = fn()
        sync(dev)
        best = min(best, (time.perf_counter() - t) / loops)
    return best, out


def find_model(models: Path | None, sizes):
    """The saved model in ``models`` whose decoder has layer sizes ``sizes``, or None."""
    if models is None or not models.is_dir():
        return None
    for f in sorted(models.glob("*.npz")):
        try:
            m = ExactDGN.load(f)
        except Exception as exc:  # not a model file: skip it
            log.info("skipping %s (%s)", f, exc)
            continue
        if list(m.decoder_.layer_sizes) == list(sizes):
            return m, str(f)
    return None


def fallback_model(X, sizes, seed=0):
    from likelihood import pca_decoder  # benchmarks/likelihood.py, beside this script

    dec, std = pca_decoder(X, sizes, seed)
    return ExactDGN.from_decoder(dec, std), "pca-init (no saved model found)"


def is_prior_torch(net, Xt, std, K: int, seed: int, d: int):
    """log p(x) by importance sampling with K prior draws, on Xt's device (Gram form)."""
    dev = Xt.device
    g = torch.Generator(device=dev).manual_seed(seed)
    Z = torch.randn(K, d, generator=g, dtype=torch.float64, device=dev)
    with torch.no_grad():
        G = net(Z) / std
    Xs = Xt / std
    sq = (Xs * Xs).sum(1)[:, None] - 2.0 * (Xs @ G.T) + (G * G).sum(1)[None, :]
    D = Xt.shape[1]
    const = -0.5 * D * math.log(2 * math.pi) - torch.log(std).sum()
    return torch.logsumexp(-0.5 * sq, dim=1) + const - math.log(K)


def section(res, label, fn):
    """Run one part of a case; an exception is printed and recorded, and the run goes on (the
    GPU run is a single prepared shot: a failure in one part must not lose the others)."""
    try:
        fn()
    except NotImplementedError as exc:
        res[label] = f"not available: {exc}"
        print(f"{'':18s} {label}: {res[label]}")
    except Exception as exc:
        log.exception("%s failed", label)
        res[label] = f"failed: {type(exc).__name__}: {exc}"
        print(f"{'':18s} {label}: {res[label]}")


def run_case(name, X, model, source, dev, args):
    N, D = X.shape
    sizes = list(model.decoder_.layer_sizes)
    d = sizes[0]
    R = len(model.partition_)
    geom = region_geometry(model.partition_, model.noise_std_)
    res = {"case": name, "layers": sizes, "decoder": source, "N": N, "D": D, "regions": R}
    print(f"{name} {sizes} R={R} N={N} decoder: {source}")
    Xt = torch.as_tensor(X, dtype=torch.float64, device=dev)
    n_cmp = min(args.compare, N)
    state = {}

    def numpy_ref():
        t = time.perf_counter()
        state["ref"] = marginal_pairs(geom, X[:n_cmp]).log_px
        res["numpy_points"] = n_cmp
        res["numpy_seconds_subset"] = time.perf_counter() - t
        print(f"{'':18s} numpy path on {n_cmp} points: {res['numpy_seconds_subset']:.3f} s")
        if args.numpy_full:  # the numpy path on all points, timed as the device path
            t_np, _ = best_of(lambda: marginal_pairs(geom, X), dev, args.repeat)
            res["numpy_seconds_loglik"] = t_np
            print(f"{'':18s} numpy path, all {N} points: {t_np * 1e3:.2f} ms")

    def device_loglik():
        t_ll, st = best_of(lambda: pairs_torch(geom, Xt, dev), dev, args.repeat)
        lp = st.log_px.cpu().numpy()
        state["lp"] = lp
        ref = state["ref"]
        diff = np.abs(lp[:n_cmp] - ref)
        res.update(
            seconds_loglik=t_ll,
            point_regions_per_s=N * R / t_ll,
            pairs_per_point=st.point.shape[0] / N,
            mean_loglik=float(lp.mean()),
            max_abs_diff_numpy=float(diff.max()),
            max_rel_diff_numpy=float((diff / np.maximum(1.0, np.abs(ref))).max()),
        )
        print(
            f"{'':18s} exact log p(x) on {dev}: {t_ll * 1e3:.2f} ms ({N * R / t_ll:.3g} "
            f"point-regions/s, {res['pairs_per_point']:.1f} pairs/pt), max |diff| to numpy "
            f"{res['max_abs_diff_numpy']:.2g} (rel {res['max_rel_diff_numpy']:.2g}), mean "
            f"log p {res['mean_loglik']:.4f}"
        )

    def end_to_end():  # the estimator, numpy in and out
        m_dev = ExactDGN.from_decoder(model.decoder_, model.noise_std_, device=dev)
        m_dev._geom = geom  # the same geometry (and its device cache)
        t_e2e, _ = best_of(lambda: m_dev.score_samples(X), dev, args.repeat)
        res["seconds_score_samples_end_to_end"] = t_e2e
        M = torch.randn(D, R * d, dtype=torch.float64, device=dev)
        t_gemm, _ = best_of(lambda: Xt @ M, dev, args.repeat)
        res["seconds_gemm_floor"] = t_gemm
        print(
            f"{'':18s} score_samples end to end (numpy in/out) {t_e2e * 1e3:.2f} ms; GEMM "
            f"floor (N x D) @ (D x R d) {t_gemm * 1e3:.3f} ms"
        )

    def importance_sampling():
        net = model.decoder_.to_torch().to(dev)
        std = torch.as_tensor(model.noise_std_, dtype=torch.float64, device=dev)
        t_is, lis = best_of(lambda: is_prior_torch(net, Xt, std, args.is_k, 1, d), dev, args.repeat)
        lis = lis.cpu().numpy()
        exact = state.get("lp")
        if exact is None:  # no device result: compare on the numpy subset
            exact, lis = state["ref"], lis[:n_cmp]
        err = np.abs(lis - exact)
        res.update(
            is_k=args.is_k,
            is_seconds=t_is,
            is_mean_abs_error=float(err.mean()),
            is_max_abs_error=float(err.max()),
        )
        print(
            f"{'':18s} IS K={args.is_k} prior draws on {dev}: {t_is * 1e3:.2f} ms, |error| "
            f"mean {err.mean():.3g} max {err.max():.3g} nats"
        )

    def estep():
        t_es, es = best_of(
            lambda: pairs_torch(geom, Xt, dev, need_moments=True), dev, max(1, args.repeat - 1)
        )
        res["seconds_estep"] = t_es
        res["estep_pairs"] = int(es.point.shape[0])
        n_e = min(n_cmp, 200)
        t = time.perf_counter()
        ref = marginal_pairs(geom, X[:n_e], need_moments=True)
        res["numpy_seconds_estep_subset"] = time.perf_counter() - t
        sel = (es.point < n_e).nonzero().squeeze(1)
        mean_dev = es.mean[sel].cpu().numpy()
        key = dict(
            zip(
                zip(ref.point.tolist(), ref.region.tolist(), strict=True),
                range(len(ref.point)),
                strict=True,
            )
        )
        pr = zip(es.point[sel].tolist(), es.region[sel].tolist(), strict=True)
        idx = [(i, key[k]) for i, k in enumerate(pr) if k in key]
        a = np.array([i for i, _ in idx], dtype=int)
        b = np.array([j for _, j in idx], dtype=int)
        dm = float(np.abs(mean_dev[a] - ref.mean[b]).max()) if len(a) else float("nan")
        res["estep_max_abs_diff_mean_numpy"] = dm
        print(
            f"{'':18s} E-step on {dev}: {t_es * 1e3:.2f} ms ({res['estep_pairs']} pairs); numpy "
            f"E-step on {n_e} pts {res['numpy_seconds_estep_subset']:.3f} s; max |diff| of "
            f"the posterior means {dm:.2g}"
        )

    def big():
        g = torch.Generator(device=dev).manual_seed(0)
        idx = torch.randint(0, N, (args.big,), generator=g, device=dev)
        Xb = Xt[idx]
        Xb += 0.05 * torch.randn(args.big, D, generator=g, dtype=torch.float64, device=dev)
        t_big, stb = best_of(lambda: pairs_torch(geom, Xb, dev).log_px, dev, args.repeat)
        n_sub = min(args.compare, args.big)
        ref_b = marginal_pairs(geom, Xb[:n_sub].cpu().numpy())
        db = np.abs(stb[:n_sub].cpu().numpy() - ref_b.log_px).max()
        res.update(
            big_points=args.big,
            big_seconds=t_big,
            big_point_regions_per_s=args.big * R / t_big,
            big_max_abs_diff_numpy=float(db),
        )
        print(
            f"{'':18s} d=1, {args.big} points: {t_big * 1e3:.1f} ms "
            f"({args.big * R / t_big:.3g} point-regions/s), max |diff| to numpy on {n_sub}: "
            f"{db:.2g}"
        )

    def train_step(method, device):
        """One iteration of ``method`` from this decoder (the trainer's ``start`` E-step, then
        one ``step``, timed apart), as ``fit`` runs it; ``device=None``: the numpy path."""
        from exactdgn.training import TRAINERS

        ns = model.noise_std_
        ns = float(ns[0]) if np.all(ns == ns[0]) else ns  # isotropic noise stays isotropic
        est = ExactDGN.from_decoder(
            model.decoder_, ns, device=device, method=method, progress=False
        )
        est._fit_data = [X, None, False]  # as in fit: the data (no NaN) copied to the device once
        try:
            tr = TRAINERS[method](est, X, model.decoder_, model.noise_std_, seed=0)
            dv = dev if device is not None else torch.device("cpu")
            sync(dv)
            t = time.perf_counter()
            tr.start()
            sync(dv)
            t_start = time.perf_counter() - t
            t = time.perf_counter()
            row = tr.step()
            sync(dv)
            t_step = time.perf_counter() - t
        finally:
            est._fit_data = None
        return row, t_start, t_step, tr

    def training(method):  # one iteration on the device and with numpy, same start
        keys = ("seconds_partition", "seconds_estep", "seconds_mstep")
        row, t0, t1, tr = train_step(method, dev)
        res[f"{method}_device_seconds_step"] = t1
        res[f"{method}_device_seconds_start"] = t0
        res[f"{method}_device_loglik"] = float(row.loglik)
        res[f"{method}_device_estep_calls"] = int(tr.n_estep)
        res.update({f"{method}_device_{k}": float(getattr(row, k)) for k in keys})
        split = ", ".join(f"{k[8:]} {float(getattr(row, k)):.2f} s" for k in keys)
        print(
            f"{'':18s} one {method} iteration on {dev}: {t1:.3f} s ({tr.n_estep} E-steps in all; "
            f"{split}); first E-step (data to the device) {t0:.3f} s"
        )
        if not args.train_numpy or (method == "lbfgs" and not args.lbfgs_numpy):
            return
        row_n, _, t1n, _ = train_step(method, None)
        res[f"{method}_numpy_seconds_step"] = t1n
        res[f"{method}_numpy_loglik"] = float(row_n.loglik)
        res[f"{method}_speedup"] = t1n / t1
        diff = abs(row_n.loglik - row.loglik)
        res[f"{method}_loglik_abs_diff"] = float(diff)
        split = ", ".join(f"{k[8:]} {float(getattr(row_n, k)):.2f} s" for k in keys)
        print(
            f"{'':18s} one {method} iteration, numpy path: {t1n:.3f} s ({split}); device "
            f"{t1n / t1:.1f}x faster; |loglik diff| {diff:.2g} (loglik {row_n.loglik:.6f})"
        )

    if not args.em_only:
        section(res, "numpy_reference", numpy_ref)
        section(res, "device_loglik", device_loglik)
        section(res, "end_to_end", end_to_end)
        section(res, "importance_sampling", importance_sampling)
        section(res, "estep", estep)
        if d == 1 and args.big:
            section(res, "big", big)
    if args.em:
        section(res, "em_iteration", lambda: training("em"))
        section(res, "lbfgs_step", lambda: training("lbfgs"))
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def _ms(x):
    return f"{x * 1e3:.2f} ms" if isinstance(x, float) else str(x or "")


def _g(x):
    return f"{x:.3g}" if isinstance(x, float) else str(x or "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--models",
        default=str(Path(__file__).resolve().parent / "models"),
        help="a directory of saved ExactDGN models (matched by layer sizes)",
    )
    p.add_argument(
        "--mnist",
        default=os.environ.get(
            "EXACTDGN_MNIST_DIR", str(Path(__file__).resolve().parents[1] / "../shared/data/mnist")
        ),
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compare", type=int, default=1000, help="points compared with numpy")
    p.add_argument("--is-k", type=int, default=5000)
    p.add_argument("--big", type=int, default=1_000_000, help="points of the d = 1 big case")
    p.add_argument("--quick", action="store_true", help="8x8 digits, small decoders")
    p.add_argument(
        "--numpy-full",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the numpy path on all points (default: on for --device cpu)",
    )
    p.add_argument("--json", default=None)
    p.add_argument(
        "--em",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also one EM iteration and one L-BFGS step from each decoder, on the device and "
        "(with --train-numpy, the default) with the numpy path",
    )
    p.add_argument(
        "--train-numpy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the numpy EM iteration / L-BFGS step beside the device's (minutes on a CPU)",
    )
    p.add_argument(
        "--lbfgs-numpy",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also the numpy L-BFGS step (its gradient holds (pairs x D x d) autograd arrays: "
        "tens of GB on MNIST d = 2)",
    )
    p.add_argument(
        "--em-only",
        action="store_true",
        help="only the training iterations (implies --em; the likelihood parts are skipped)",
    )
    p.add_argument(
        "--n-points", type=int, default=None, help="only the first N images (smoke tests)"
    )
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--latent", type=int, default=None, help="only the decoders of this latent dim")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    dev = resolve_device(args.device)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.em_only:
        args.em = True
    if args.numpy_full is None:
        args.numpy_full = dev.type == "cpu"
    if args.quick:
        X, _ = load_digits(normalize=True)
        specs = [("digits", [1, 12, 64]), ("digits", [2, 12, 12, 64])]
        args.big = min(args.big, 20000)
        args.compare = min(args.compare, 300)
        args.is_k = min(args.is_k, 1000)
        args.repeat = min(args.repeat, 2)
    else:
        X, _ = load_mnist(args.mnist, kind="t10k")
        specs = [("mnist-t10k", [1, 64, 64, 784]), ("mnist-t10k", [2, 32, 32, 784])]
    if args.n_points:
        X = X[: args.n_points]
    models = Path(args.models) if args.models else None
    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "args": vars(args),
    }
    print(
        f"device {info['device']} ({info['device_name']}), torch {info['torch']}, "
        f"{info['cpus']} CPUs, {info['date_utc']} UTC"
    )
    if args.latent is not None:
        specs = [sp for sp in specs if sp[1][0] == args.latent]
    out = []
    for name, sizes in specs:
        if sizes[-1] != X.shape[1]:
            raise ValueError(f"decoder {sizes} does not fit data of width {X.shape[1]}")
        found = None if args.quick else find_model(models, sizes)
        model, source = found if found is not None else fallback_model(X, sizes)
        out.append(run_case(name, X, model, source, dev, args))
        if args.json:  # after every case: a later failure keeps what was measured
            Path(args.json).write_text(json.dumps({"config": info, "cases": out}, indent=2))
    print(f"\nsummary ({info['device']}, {info['device_name']}, {info['date_utc']} UTC):")
    print(
        "| case | regions | exact log p(x) | point-regions/s | max diff numpy | IS K | IS time "
        "| IS error |"
    )
    for r in out:
        print(
            f"| {r['case']} {r['layers']} | {r['regions']} | "
            f"{_ms(r.get('seconds_loglik'))} | {_g(r.get('point_regions_per_s'))} | "
            f"{_g(r.get('max_abs_diff_numpy'))} | {r.get('is_k', '')} | "
            f"{_ms(r.get('is_seconds'))} | {_g(r.get('is_mean_abs_error'))} |"
        )
        if "seconds_estep" in r:
            print(f"|   E-step | | {_ms(r.get('seconds_estep'))} | | | | | |")
        for meth in ("em", "lbfgs"):
            if f"{meth}_device_seconds_step" in r:
                sp = r.get(f"{meth}_speedup")
                np_s = r.get(f"{meth}_numpy_seconds_step")
                print(
                    f"|   one {meth} iteration | | {_ms(r[f'{meth}_device_seconds_step'])} | | "
                    + (f"numpy {_ms(np_s)} | {_g(sp)}x faster | | |" if sp else "| | | |")
                )
        if "big_seconds" in r:
            print(
                f"|   d=1, {r['big_points']} points | | {_ms(r['big_seconds'])} | "
                f"{_g(r['big_point_regions_per_s'])} | {_g(r['big_max_abs_diff_numpy'])} | | | |"
            )


if __name__ == "__main__":
    main()
