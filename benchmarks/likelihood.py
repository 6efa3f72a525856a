"""Throughput of the exact log-likelihood and E-step, beside the GEMM floor and importance sampling.

For each case: a decoder initialised on the data (probabilistic-PCA fit of the output layer over
random He-initialised hidden layers, as ``ExactDGN(init="pca")`` does), then

* exact ``log p(x)`` of all points: seconds and point-regions per second (N x R / seconds);
* the full E-step statistics (masses and truncated moments of every retained pair);
* the GEMM rate of this machine for the (N x D) @ (D x R d) product that any method computing
  every ``μ_r(x)`` must do, and the ratio of our time to that floor;
* exact ``log p(x_obs)`` with 50% of the values missing at random (every row its own pattern),
  and its ratio to the complete-data time (target: at most 2x), and ``impute(return_std=True)``
  of those rows (the exact conditional mean and std of every missing value);
* importance sampling with K = 5,000 draws from the prior and from a Laplace proposal at the
  exact MAP, on a subset of points: seconds and error against the exact value (two seeds).

With ``--threads 1,2,4,8,16`` each case is also timed at each thread count
(``EXACTDGN_NUM_THREADS``), with the process's CPU time split into user and system time, minor
page faults and context switches over the timed calls (``getrusage``): system time that grows
with the thread count points at the allocator and the kernel (page faults, ``munmap``), voluntary
context switches with flat user time at the GIL.

Run: ``python benchmarks/likelihood.py [--mnist PATH] [--quick] [--threads 1,2,4]
[--models DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from exactdgn import ExactDGN
from exactdgn.datasets import load_digits, load_mnist
from exactdgn.em import initialize
from exactdgn.inference import check_missing, marginal_pairs, observed_pairs, region_geometry


def best_of(fn, repeat, min_seconds=0.2):
    """Best of ``repeat`` timings of ``fn``; calls shorter than ``min_seconds`` are timed as
    the mean of enough back-to-back calls to fill it (as ``timeit``'s autorange does), so a
    2 ms call is not measured by a single timer read."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    loops = max(1, int(np.ceil(min_seconds / max(first, 1e-9))))
    best = first if loops == 1 else np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(loops):
            out = fn()
        best = min(best, (time.perf_counter() - t) / loops)
    return best, out


def usage_of(fn):
    """Wall seconds of one call of ``fn`` and the process's resource use over it."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": wall,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "minflt": r1.ru_minflt - r0.ru_minflt,
        "nvcsw": r1.ru_nvcsw - r0.ru_nvcsw,
        "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw,
    }


def thread_scaling(geom, X, threads, repeat, chunk_bytes):
    """Seconds of exact log p(x) (best of ``repeat``, resource use of the first call) and of
    one E-step at each thread count."""
    old = os.environ.get("EXACTDGN_NUM_THREADS")
    rows = []
    try:
        for nt in threads:
            os.environ["EXACTDGN_NUM_THREADS"] = str(nt)
            use = usage_of(lambda: marginal_pairs(geom, X, chunk_bytes=chunk_bytes))
            t_ll = use["wall"]
            if repeat > 1:
                t, _ = best_of(lambda: marginal_pairs(geom, X, chunk_bytes=chunk_bytes), repeat - 1)
                t_ll = min(t_ll, t)
            es = usage_of(
                lambda: marginal_pairs(geom, X, need_moments=True, chunk_bytes=chunk_bytes)
            )
            rows.append({"threads": nt, "seconds_loglik": t_ll, "seconds_estep": es["wall"], **use})
    finally:
        if old is None:
            os.environ.pop("EXACTDGN_NUM_THREADS", None)
        else:
            os.environ["EXACTDGN_NUM_THREADS"] = old
    base = rows[0]
    for r in rows:
        print(
            f"{'':11s} threads={r['threads']:3d}: log p {r['seconds_loglik']:.3f}s "
            f"(x{base['seconds_loglik'] / r['seconds_loglik']:.2f}), E-step "
            f"{r['seconds_estep']:.3f}s (x{base['seconds_estep'] / r['seconds_estep']:.2f}) | "
            f"one log p call: wall {r['wall']:.3f}s user {r['user']:.2f}s sys {r['sys']:.2f}s "
            f"minflt {r['minflt']} vcsw {r['nvcsw']} ivcsw {r['nivcsw']}",
            flush=True,
        )
    return rows


def is_prior(model, X, K, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((K, model.decoder_.latent_dim))
    G = model.decoder_(Z)
    s = model.noise_std_
    D = X.shape[1]
    Xs, Gs = X / s, G / s
    sq = (Xs**2).sum(1)[:, None] - 2 * Xs @ Gs.T + (Gs**2).sum(1)[None]
    logw = -0.5 * sq - 0.5 * D * np.log(2 * np.pi) - np.log(s).sum()
    return logsumexp(logw, axis=1) - np.log(K)


def is_laplace(model, X, K, seed):
    """Proposal N(z*, S_r*) at the exact MAP z* with the covariance of its region."""
    rng = np.random.default_rng(seed)
    post = model.posterior(X)
    zs = post.mode
    r = model.partition_.locate(zs)
    S = model.geometry_.S[r]
    Lc = np.linalg.cholesky(S)
    out = np.empty(len(X))
    d = zs.shape[1]
    for i in range(len(X)):  # K samples per point (a baseline, not our hot path)
        eps = rng.standard_normal((K, d))
        Z = zs[i] + eps @ Lc[i].T
        lq = -0.5 * (eps**2).sum(1) - 0.5 * d * np.log(2 * np.pi) - np.log(np.diag(Lc[i])).sum()
        lj = model.log_prob_joint(np.repeat(X[i : i + 1], K, 0), Z)
        out[i] = logsumexp(lj - lq) - np.log(K)
    return out


def trained_vae_decoder(X, sizes, seed=0, epochs=80):
    """A decoder trained as a VAE (seeded, float32 training): a realistic, sharp posterior."""
    from exactdgn.baselines import VAE

    vae = VAE(list(sizes), max_epochs=epochs, dtype="float32", random_state=seed, lr=2e-3)
    vae.fit(X)
    return vae.decoder_, np.broadcast_to(vae.noise_std_, (X.shape[1],)).copy()


def pca_decoder(X, sizes, seed=0):
    """A PCA-initialised decoder (as ``ExactDGN(init="pca")``): broad posteriors."""
    return initialize(
        X,
        latent_dim=sizes[0],
        hidden_sizes=sizes[1:-1],
        activation="leaky_relu",
        negative_slope=0.1,
        init="pca",
        diagonal=False,
        min_std=1e-3,
        rng=np.random.default_rng(seed),
    )


def run_case(
    name,
    X,
    sizes,
    *,
    repeat,
    n_is,
    K,
    seed=0,
    source="pca",
    models=None,
    threads=None,
    chunk_bytes=256 * 2**20,
):
    D = X.shape[1]
    saved = Path(models or "") / f"{name.split('-')[0]}_{'_'.join(map(str, sizes))}.npz"
    if models and source == "vae" and saved.exists():
        loaded = ExactDGN.load(saved)
        dec, std = loaded.decoder_, loaded.noise_std_
    elif source == "vae":
        dec, std = trained_vae_decoder(X, sizes, seed)
    else:
        dec, std = pca_decoder(X, sizes, seed)
    t0 = time.perf_counter()
    model = ExactDGN.from_decoder(dec, std)
    t_part = time.perf_counter() - t0
    R, d, N = len(model.partition_), sizes[0], len(X)
    geom = region_geometry(model.partition_, model.noise_std_)
    if threads:  # the scaling rows (each at its EXACTDGN_NUM_THREADS)
        scaling = thread_scaling(geom, X, threads, repeat, chunk_bytes)
    # the summary: every call below in this process's own thread setting, so that the ratios
    # (missing / complete, our time / the GEMM floor) compare calls run alike
    t_ll, st = best_of(lambda: marginal_pairs(geom, X, chunk_bytes=chunk_bytes), repeat)
    t_es, _ = best_of(
        lambda: marginal_pairs(geom, X, need_moments=True, chunk_bytes=chunk_bytes), repeat
    )
    # 50% of the values missing at random, a different pattern in every row (same run)
    Xmis = np.where(np.random.default_rng(1).random(X.shape) < 0.5, np.nan, X)
    obs = check_missing(Xmis)
    t_mis, st_mis = best_of(
        lambda: observed_pairs(geom, Xmis, obs, chunk_bytes=chunk_bytes), repeat
    )
    # imputing them: the exact E[x_mis | x_obs] and conditional std (pairs with moments, then
    # the output moments), beside the likelihood alone
    t_imp, _ = best_of(lambda: model.impute(Xmis, return_std=True), repeat)
    M = np.random.default_rng(0).standard_normal((D, R * d))
    t_gemm, _ = best_of(lambda: X @ M, repeat)
    gflops = 2 * N * D * R * d / t_gemm / 1e9
    res = {
        "case": name,
        "decoder": source,
        "layers": sizes,
        "N": N,
        "D": D,
        "regions": R,
        "seconds_partition": t_part,
        "seconds_loglik": t_ll,
        "point_regions_per_s_loglik": N * R / t_ll,
        "seconds_estep": t_es,
        "point_regions_per_s_estep": N * R / t_es,
        "pairs_kept_per_point": len(st.point) / N,
        "seconds_gemm_floor": t_gemm,
        "gemm_gflops": gflops,
        "ratio_loglik_to_gemm": t_ll / t_gemm,
        "mean_loglik": float(st.log_px.mean()),
        "seconds_loglik_50pct_missing": t_mis,
        "ratio_missing_to_complete": t_mis / t_ll,
        "pairs_kept_per_point_missing": len(st_mis.point) / N,
        "seconds_impute_mean_std_50pct_missing": t_imp,
        "threads_env": os.environ.get("EXACTDGN_NUM_THREADS"),
        "cpus": len(os.sched_getaffinity(0)),
    }
    if threads:
        res["thread_scaling"] = scaling
    if n_is <= 0:
        return res
    sub = X[:n_is]
    exact = st.log_px[:n_is]
    for label, fn, n in (("prior", is_prior, n_is), ("laplace", is_laplace, min(n_is, 100))):
        t_is, e1 = best_of(lambda fn=fn, n=n: fn(model, sub[:n], K, 1), repeat)  # as the exact
        e2 = fn(model, sub[:n], K, 2)
        res[f"is_{label}_points"] = n
        res[f"is_{label}_seconds"] = t_is
        res[f"is_{label}_mean_abs_error"] = float(np.mean(np.abs(e1 - exact[:n])))
        res[f"is_{label}_seed_disagreement"] = float(np.mean(np.abs(e1 - e2)))
        # the exact call timed on the same points (not the full set's time scaled by n / N)
        t_same, _ = best_of(
            lambda n=n: marginal_pairs(geom, sub[:n], chunk_bytes=chunk_bytes), repeat
        )
        res[f"exact_seconds_same_points_{label}"] = t_same
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--mnist",
        default=os.environ.get(
            "EXACTDGN_MNIST_DIR", str(Path(__file__).resolve().parents[1] / "../shared/data/mnist")
        ),
    )
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="digits cases only")
    p.add_argument("--mnist-only", action="store_true", help="MNIST cases only")
    p.add_argument(
        "--latent", type=int, default=None, help="only the cases with this latent dimension"
    )
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument(
        "--decoder",
        choices=["pca", "vae"],
        default="pca",
        help="pca: PCA-initialised decoder (broad posterior, worst case for pruning); "
        "vae: a decoder trained as a VAE for 80 epochs (sharp posterior)",
    )
    p.add_argument(
        "--threads",
        default=None,
        help="comma-separated thread counts (EXACTDGN_NUM_THREADS) to time each case at",
    )
    p.add_argument(
        "--models",
        default=None,
        help="folder of decoders saved by ExactDGN.save as NAME_SIZES.npz (e.g. "
        "mnist_2_32_32_784.npz): used instead of training with --decoder vae",
    )
    p.add_argument("--chunk-mb", type=float, default=256, help="chunk_bytes in MiB")
    p.add_argument("--no-is", action="store_true", help="skip the importance-sampling baselines")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    Xd, _ = load_digits(normalize=True)
    cases = (
        [] if args.mnist_only else [("digits", Xd, [1, 12, 64]), ("digits", Xd, [2, 32, 32, 64])]
    )
    if not args.quick:
        Xm, _ = load_mnist(args.mnist, kind="t10k")
        cases += [("mnist-test", Xm, [1, 64, 64, 784]), ("mnist-test", Xm, [2, 32, 32, 784])]
    if args.latent is not None:
        cases = [c for c in cases if c[2][0] == args.latent]
    out = []
    for name, X, sizes in cases:
        r = run_case(
            name,
            X,
            sizes,
            repeat=args.repeat,
            n_is=0 if args.no_is else 1000,
            K=5000,
            source=args.decoder,
            models=args.models,
            threads=threads,
            chunk_bytes=int(args.chunk_mb * 2**20),
        )
        out.append(r)
        print(
            f"{name:11s} {sizes!s:20s} [{args.decoder}] N={r['N']:5d} R={r['regions']:6d} | "
            "exact log p: "
            f"{r['seconds_loglik']:.3f}s {r['point_regions_per_s_loglik']:.3g} pr/s | E-step: "
            f"{r['seconds_estep']:.3f}s {r['point_regions_per_s_estep']:.3g} pr/s | GEMM floor "
            f"{r['seconds_gemm_floor']:.3f}s ({r['gemm_gflops']:.0f} GFLOP/s), ratio "
            f"{r['ratio_loglik_to_gemm']:.1f} | pairs kept/pt {r['pairs_kept_per_point']:.1f}"
        )
        print(
            f"{'':33s} 50% missing (random per row): exact log p(x_obs) "
            f"{r['seconds_loglik_50pct_missing']:.3f}s = {r['ratio_missing_to_complete']:.2f}x "
            f"the complete data (target <= 2x), pairs kept/pt "
            f"{r['pairs_kept_per_point_missing']:.1f}; impute(return_std=True) (exact "
            f"E[x_mis | x_obs] and std) {r['seconds_impute_mean_std_50pct_missing']:.3f}s"
        )
        for lab in () if args.no_is else ("prior", "laplace"):
            print(
                f"{'':33s} IS-{lab} K=5000 on {r[f'is_{lab}_points']} pts: "
                f"{r[f'is_{lab}_seconds']:.2f}s (exact on same pts "
                f"{r[f'exact_seconds_same_points_{lab}']:.3f}s), |error| "
                f"{r[f'is_{lab}_mean_abs_error']:.3g} nats, seed disagreement "
                f"{r[f'is_{lab}_seed_disagreement']:.3g} nats"
            )
    print("targets: d=1 >= 1e7 point-regions/s, d=2 >= 1e6, MNIST [2,32,32,784] exact < 10 s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
