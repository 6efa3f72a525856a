"""Experiment 6a (reduced): exact imputation of MNIST test digits with a VAE-trained decoder.

MNIST t10k (28x28, D = 784, pixels in [0, 1]), 80/20 split. A decoder is trained as a VAE on
the complete training images; on the held-out images two missingness patterns are imposed:
50% of the pixels missing at random (each image its own pattern) and the bottom half missing.
Methods: the exact conditional mean E[x_mis | x_obs] and g(MAP z) of the decoder (ExactDGN),
importance-sampling imputation with the same decoder (K draws from the prior, self-normalised:
the Monte Carlo counterpart of the exact mean), per-pixel training means, sklearn KNNImputer
(5 neighbours, fit on the complete training images) and sklearn IterativeImputer (its own
budget, see the config). Metrics: RMSE on the missing pixels, and for the decoder the exact
log p(x_mis | x_obs) = log p(x) - log p(x_obs) (nats per image) beside its IS estimate.

Not done here (see results/README.md): a model fitted by EM on the incomplete data against one
fitted on complete data (EM on 28x28 MNIST takes minutes per iteration).

    python experiments/imputation.py --quick
"""

from __future__ import annotations

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
        for name, (Xi, secs) in res.items():
            rmse = float(np.sqrt(np.mean((Xi - Xte)[M] ** 2)))
            row = {"pattern": pname, "method": name, "RMSE (missing pixels)": rmse, "seconds": secs}
            if name.startswith("exact mean"):
                row["log p(x_mis given x_obs), nats/image"] = float(exact_cond.mean())
            if name.startswith("IS mean"):
                row["log p(x_mis given x_obs), nats/image"] = float(is_cond.mean())
            rows.append(row)
        per_pattern[pname] = {
            "exact_log_p_mis_given_obs_mean": float(exact_cond.mean()),
            "is_log_p_mis_given_obs_mean": float(is_cond.mean()),
            "is_abs_error_mean": float(np.mean(np.abs(is_cond - exact_cond))),
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
    C.write_json(out / "results.json", {"rows": rows, "patterns": per_pattern})
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
            knn={"n_neighbors": 5},
        ),
    )
    (out / "README.md").write_text(
        "# MNIST imputation (reduced: one seed, VAE-trained decoder)\n\n"
        + table
        + "\n\n![imputed digits](imputed_digits.png)\n\nConfiguration: config.json.\n"
    )


if __name__ == "__main__":
    main()
