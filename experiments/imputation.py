"""Experiment 6a: exact imputation of MNIST test digits.

MNIST t10k (28x28, D = 784, pixels in [0, 1]), 80/20 split. A decoder is trained as a VAE on
the complete training images; on the held-out images two missingness patterns are imposed:
50% of the pixels missing at random (each image its own pattern) and the bottom half missing.
Methods: the exact conditional mean E[x_mis | x_obs] and g(MAP z) of the decoder (ExactDGN),
importance-sampling imputation with the same decoder, self-normalised, (i) with K draws from
the prior and (ii) MIWAE-style (Mattei & Frellsen 2019) with K draws from the VAE's encoder
q(z | x~), x~ the image with its missing pixels set to the training mean, weights
p(z) p(x_obs | z) / q(z | x~): the Monte Carlo counterparts of the exact mean; per-pixel
training means, sklearn KNNImputer (5 neighbours, fit on the complete training images) and
sklearn IterativeImputer (BayesianRidge, 20 nearest features, its rounds in the config).
Metrics: RMSE on the missing pixels, and for the decoder the exact
log p(x_mis | x_obs) = log p(x) - log p(x_obs) (nats per image) beside its IS estimates.

Second part (``--fit-missing``, on by default without ``--quick``): exact EM with default
settings (``ExactDGN(latent_dim, hidden_sizes)``) fitted on the training images with 50% of
their pixels missing at random, against the same estimator fitted on the complete training
images: exact held-out log p(x), and RMSE / exact log p(x_mis | x_obs) of both on the random-50%
held-out pattern.

    python experiments/imputation.py --quick
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import _common as C
import numpy as np
from scipy.special import logsumexp


def is_impute(model, X, K, seed, chunk=200):
    """Self-normalised IS with K prior draws: E[x_mis | x_obs] and log p(x_obs), log p(x)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((K, model.decoder_.latent_dim))
    G = model.decoder_(Z)  # (K, D)
    s2 = model.noise_std_**2
    out = X.copy()
    lp_obs = np.empty(len(X))
    for a in range(0, len(X), chunk):
        x = X[a : a + chunk]
        obs = ~np.isnan(x)
        x0 = np.where(obs, x, 0.0)
        # log N(x_obs; g(z), σ²) for every (point, draw): masked squared distances by GEMMs
        quad = (x0**2 / s2).sum(1)[:, None] - 2 * (x0 / s2) @ G.T + obs @ (G**2 / s2).T
        lw = -0.5 * (quad + (obs @ np.log(2 * np.pi * s2))[:, None])
        lp_obs[a : a + chunk] = logsumexp(lw, axis=1) - np.log(K)
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out[a : a + chunk] = np.where(obs, x, w @ G)
    return out, lp_obs


def miwae_impute(vae, model, X, fill, K, seed, chunk=8):
    """MIWAE-style self-normalised IS: K draws from the encoder at the mean-filled image.

    Returns E[x_mis | x_obs] and the estimate of log p(x_obs), shapes (N, D) and (N,).
    """
    rng = np.random.default_rng(seed)
    s2 = np.broadcast_to(np.asarray(model.noise_std_, dtype=float) ** 2, (X.shape[1],))
    obs_all = ~np.isnan(X)
    mu, sd = vae.encode(np.where(obs_all, X, fill))
    d = mu.shape[1]
    out = X.copy()
    lp_obs = np.empty(len(X))
    for a in range(0, len(X), chunk):
        x, obs = X[a : a + chunk], obs_all[a : a + chunk]
        n = len(x)
        eps = rng.standard_normal((n, K, d))
        Z = mu[a : a + chunk, None, :] + sd[a : a + chunk, None, :] * eps
        G = model.decoder_(Z.reshape(n * K, d)).reshape(n, K, -1)
        r2 = np.where(obs[:, None, :], (np.nan_to_num(x)[:, None, :] - G) ** 2 / s2, 0.0)
        log_px = -0.5 * (r2.sum(-1) + (obs @ np.log(2 * np.pi * s2))[:, None])
        log_pz = -0.5 * (Z**2).sum(-1)
        log_q = -0.5 * (eps**2).sum(-1) - np.log(sd[a : a + chunk]).sum(1)[:, None]
        lw = log_px + log_pz - log_q  # the (2 pi)^(d/2) of p(z) and q cancel
        lp_obs[a : a + chunk] = logsumexp(lw, axis=1) - np.log(K)
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out[a : a + chunk] = np.where(obs, x, np.einsum("nk,nkd->nd", w, G))
    return out, lp_obs


def fit_missing_comparison(Xtr, Xte, M_test, sizes, seed, progress) -> list[dict]:
    """Default ExactDGN fitted on 50%-missing vs complete training images, scored on Xte."""
    from exactdgn import ExactDGN

    rng = np.random.default_rng(seed + 5)
    Xtr_mis = np.where(rng.random(Xtr.shape) < 0.5, np.nan, Xtr)
    Xte_mis = np.where(M_test, np.nan, Xte)
    rows = []
    for label, data in [("complete", Xtr), ("50% missing at random", Xtr_mis)]:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = ExactDGN(
                latent_dim=sizes[0],
                hidden_sizes=tuple(sizes[1:-1]),
                random_state=seed,
                progress=progress,
            ).fit(data)
        secs = time.perf_counter() - t
        lp = m.score_samples(Xte)
        lp_obs = m.score_samples(Xte_mis)
        imp = m.impute(Xte_mis)
        rows.append(
            {
                "training images": label,
                "EM iterations": m.n_iter_,
                "fit seconds": secs,
                "held-out log p(x), nats/image": float(lp.mean()),
                "held-out log p(x_mis given x_obs), random 50%": float((lp - lp_obs).mean()),
                "RMSE (missing pixels), random 50%": float(
                    np.sqrt(np.mean((imp - Xte)[M_test] ** 2))
                ),
            }
        )
        logging.getLogger(__name__).info("fit on %s: %s", label, rows[-1])
    return rows


def main() -> None:
    p = C.parser("imputation", __doc__)
    p.add_argument("--mnist", default=str(C.REPO / "../shared/data/mnist"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 64, 784])
    p.add_argument("--epochs", type=int, default=None, help="VAE epochs (80; quick: 30)")
    p.add_argument("--n-test", type=int, default=None, help="held-out images used (all 2,000)")
    p.add_argument("--is-k", type=int, default=5000)
    p.add_argument(
        "--iterative-max-iter", type=int, default=3, help="IterativeImputer rounds (0: skip it)"
    )
    p.add_argument(
        "--fit-missing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also fit ExactDGN on incomplete vs complete training images (default: not --quick)",
    )
    p.add_argument("--n-train", type=int, default=None, help="training images used (all 8,000)")
    p.add_argument(
        "--fit-n-train",
        type=int,
        default=1000,
        help="training images of the incomplete-vs-complete EM comparison (EM's cost)",
    )
    args = p.parse_args()
    if args.seeds is None:
        args.seeds = [0]
    out = C.setup(args)
    import matplotlib.pyplot as plt
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    from exactdgn import ExactDGN
    from exactdgn.baselines import VAE
    from exactdgn.datasets import load_mnist
    from exactdgn.evaluation import markdown_table, split_data

    seed = args.seeds[0]
    epochs = args.epochs or (30 if args.quick else 80)
    X, _ = load_mnist(args.mnist, kind="t10k")
    Xtr, Xte, _ = split_data(X, 0.2, seed)
    if args.n_train:
        Xtr = Xtr[: args.n_train]
    if args.n_test:
        Xte = Xte[: args.n_test]
    t0 = time.perf_counter()
    vae = VAE(list(args.sizes), max_epochs=epochs, dtype="float32", random_state=seed, lr=2e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae.fit(Xtr)
    t_vae = time.perf_counter() - t0
    model = ExactDGN.from_decoder(vae.decoder_, vae.noise_std_)
    lp_full = model.score_samples(Xte)
    rng = np.random.default_rng(seed + 1)
    side = 28
    bottom = np.zeros((side, side), bool)
    bottom[side // 2 :] = True
    masks = {
        "random 50%": rng.random(Xte.shape) < 0.5,
        "bottom half": np.broadcast_to(bottom.ravel(), Xte.shape).copy(),
    }
    col_mean = Xtr.mean(axis=0)
    knn = KNNImputer(n_neighbors=5).fit(Xtr)
    rows, per_pattern = [], {}
    for pname, M in masks.items():
        Xn = np.where(M, np.nan, Xte)
        res = {}
        t = time.perf_counter()
        lp_obs = model.score_samples(Xn)
        mean, std = model.impute(Xn, return_std=True)
        res["exact mean (ExactDGN)"] = (mean, time.perf_counter() - t)
        t = time.perf_counter()
        res["exact mode g(MAP z)"] = (model.impute(Xn, method="mode"), time.perf_counter() - t)
        t = time.perf_counter()
        is_mean, is_lp_obs = is_impute(model, Xn, args.is_k, seed)
        res[f"IS mean, same decoder, K={args.is_k} prior draws"] = (
            is_mean,
            time.perf_counter() - t,
        )
        t = time.perf_counter()
        mi_mean, mi_lp_obs = miwae_impute(vae, model, Xn, col_mean, args.is_k, seed + 3)
        res[f"IS mean, same decoder, K={args.is_k} encoder draws (MIWAE-style)"] = (
            mi_mean,
            time.perf_counter() - t,
        )
        t = time.perf_counter()
        res["per-pixel training mean"] = (np.where(M, col_mean, Xte), time.perf_counter() - t)
        t = time.perf_counter()
        res["KNNImputer (k=5)"] = (knn.transform(Xn), time.perf_counter() - t)
        t = time.perf_counter()
        if args.iterative_max_iter > 0:  # 0 skips it (slow on 784 features; see the config)
            it = IterativeImputer(
                max_iter=args.iterative_max_iter,
                n_nearest_features=20,
                random_state=seed,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                it.fit(Xtr)
                res["IterativeImputer (20 nearest features)"] = (
                    it.transform(Xn),
                    time.perf_counter() - t,
                )
        # exact conditional log-density of the hidden pixels and its IS estimate
        exact_cond = lp_full - lp_obs
        _, is_lp_full = is_impute(model, Xte, args.is_k, seed + 7)
        is_cond = is_lp_full - is_lp_obs
        _, mi_lp_full = miwae_impute(vae, model, Xte, col_mean, args.is_k, seed + 11)
        mi_cond = mi_lp_full - mi_lp_obs
        for name, (Xi, secs) in res.items():
            rmse = float(np.sqrt(np.mean((Xi - Xte)[M] ** 2)))
            row = {"pattern": pname, "method": name, "RMSE (missing pixels)": rmse, "seconds": secs}
            if name.startswith("exact mean"):
                row["log p(x_mis given x_obs), nats/image"] = float(exact_cond.mean())
            if name.startswith("IS mean") and "prior" in name:
                row["log p(x_mis given x_obs), nats/image"] = float(is_cond.mean())
            if name.startswith("IS mean") and "MIWAE" in name:
                row["log p(x_mis given x_obs), nats/image"] = float(mi_cond.mean())
            rows.append(row)
        per_pattern[pname] = {
            "exact_log_p_mis_given_obs_mean": float(exact_cond.mean()),
            "is_log_p_mis_given_obs_mean": float(is_cond.mean()),
            "is_abs_error_mean": float(np.mean(np.abs(is_cond - exact_cond))),
            "miwae_log_p_mis_given_obs_mean": float(mi_cond.mean()),
            "miwae_abs_error_mean": float(np.mean(np.abs(mi_cond - exact_cond))),
            "exact_std_mean_over_missing": float(std[M].mean()),
            "images": {k: v[0][:8] for k, v in res.items()},
            "masked": Xn[:8],
        }
    # figure: 8 held-out digits per pattern
    names = ["exact mean (ExactDGN)", "KNNImputer (k=5)", "per-pixel training mean"]
    fig, axes = plt.subplots(2 * (2 + len(names)), 8, figsize=(8, 2 * (2 + len(names)) * 1.05))
    r = 0
    for pname, pp in per_pattern.items():
        for label, imgs in [
            ("original", Xte[:8]),
            (f"{pname}: observed", np.nan_to_num(pp["masked"], nan=0.5)),
        ] + [(n, pp["images"][n]) for n in names]:
            for j in range(8):
                ax = axes[r, j]
                ax.imshow(imgs[j].reshape(side, side), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", fontsize=6)
            r += 1
    fig.tight_layout()
    fig.savefig(out / "imputed_digits.png", dpi=110)
    plt.close(fig)
    for pp in per_pattern.values():
        pp.pop("images")
        pp.pop("masked")
    table = markdown_table(rows)
    print(table)
    fit_missing = not args.quick if args.fit_missing is None else args.fit_missing
    fit_rows = []
    if fit_missing:
        fit_rows = fit_missing_comparison(
            Xtr[: args.fit_n_train],
            Xte,
            masks["random 50%"],
            list(args.sizes),
            seed,
            not args.no_progress,
        )
        fit_table = markdown_table(fit_rows)
        print(fit_table)
        table += (
            "\n\nExact EM with default settings fitted on incomplete vs complete training"
            f" images (the first {min(args.fit_n_train, len(Xtr))} training images; held-out"
            " scores exact):\n\n" + fit_table
        )
    C.write_json(
        out / "results.json", {"rows": rows, "patterns": per_pattern, "fit_missing": fit_rows}
    )
    C.write_json(
        out / "config.json",
        C.base_config(
            args,
            data=f"MNIST t10k 28x28, 80/20 split (seed {seed}), {len(Xte)} held-out images",
            decoder=list(args.sizes),
            vae={"epochs": epochs, "dtype": "float32", "lr": 2e-3, "seconds": t_vae},
            noise_std=float(np.mean(model.noise_std_)),
            n_regions=model.n_regions_,
            is_k=args.is_k,
            iterative_imputer={"max_iter": args.iterative_max_iter, "n_nearest_features": 20},
            miwae={"proposal": "VAE encoder at the mean-filled image", "k": args.is_k},
            fit_missing={
                "run": fit_missing,
                "estimator": "ExactDGN defaults",
                "n_train": min(args.fit_n_train, len(Xtr)),
            },
            knn={"n_neighbors": 5},
        ),
    )
    (out / "README.md").write_text(
        f"# MNIST imputation ({'quick' if args.quick else 'full'}: seed {seed})\n\n"
        + table
        + "\n\n![imputed digits](imputed_digits.png)\n\nConfiguration: config.json.\n"
    )


if __name__ == "__main__":
    main()
