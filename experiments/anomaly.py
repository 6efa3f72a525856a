"""Experiment 6b: anomaly detection on MNIST with the exact likelihood.

For each digit class c: a [1, 64, 64, 784] decoder is trained as a VAE on 80% of the class's
t10k images; the held-out 20% of class c are the inliers and every image of the other nine
classes an anomaly. Scores (higher = more normal): the exact log p(x) of the decoder, the VAE's
ELBO (100 draws) and its IS estimate (K draws from q(z|x)), sklearn IsolationForest and
GaussianMixture (diagonal, 10 components) fitted on the same training images. Metric: AUROC.
Beside it, the typicality test on batches of 50: held-out inliers and anomalies.

    python experiments/anomaly.py --quick
"""

from __future__ import annotations

import time
import warnings

import _common as C
import numpy as np


def main() -> None:
    p = C.parser("anomaly", __doc__)
    p.add_argument("--mnist", default=str(C.REPO / "../shared/data/mnist"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 64, 784])
    p.add_argument("--epochs", type=int, default=None, help="VAE epochs (200; quick: 50)")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--is-k", type=int, default=5000)
    p.add_argument("--n-anomalies", type=int, default=None, help="anomalies scored (all)")
    args = p.parse_args()
    if args.seeds is None:
        args.seeds = [0]
    out = C.setup(args)
    import matplotlib.pyplot as plt
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    from sklearn.mixture import GaussianMixture

    from exactdgn import ExactDGN
    from exactdgn.baselines import VAE
    from exactdgn.datasets import load_mnist
    from exactdgn.evaluation import markdown_table, split_data

    seed = args.seeds[0]
    epochs = args.epochs or (50 if args.quick else 200)
    X, y = load_mnist(args.mnist, kind="t10k")
    rows, hist = [], {}
    for c in args.classes:
        t0 = time.perf_counter()
        Xtr, Xin, _ = split_data(X[y == c], 0.2, seed)
        Xout = X[y != c]
        if args.n_anomalies:
            Xout = Xout[np.random.default_rng(seed).permutation(len(Xout))[: args.n_anomalies]]
        Xev = np.concatenate([Xin, Xout])
        lab = np.r_[np.ones(len(Xin)), np.zeros(len(Xout))]  # 1 = inlier
        vae = VAE(list(args.sizes), max_epochs=epochs, dtype="float32", random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vae.fit(Xtr)
        model = ExactDGN.from_decoder(vae.decoder_, vae.noise_std_)
        scores = {
            "exact log p(x)": model.score_samples(Xev),
            "ELBO (100 draws)": vae.elbo(Xev, n_samples=100, random_state=seed),
            f"IS K={args.is_k} from q": vae.importance_log_likelihood(
                Xev, k=args.is_k, random_state=seed + 1
            ),
            "IsolationForest": IsolationForest(random_state=seed).fit(Xtr).score_samples(Xev),
            "GaussianMixture (10, diag)": GaussianMixture(
                10, covariance_type="diag", random_state=seed, reg_covar=1e-3
            )
            .fit(Xtr)
            .score_samples(Xev),
        }
        row = {"class": c, "n_train": len(Xtr), "n_inliers": len(Xin), "n_anomalies": len(Xout)}
        for name, s in scores.items():
            row[name] = float(roc_auc_score(lab, s))
        rng = np.random.default_rng(seed + 2)
        t_in = model.typicality_test(Xin[rng.permutation(len(Xin))[:50]], random_state=seed)
        t_out = model.typicality_test(Xout[rng.permutation(len(Xout))[:50]], random_state=seed)
        row["typicality p (50 inliers)"] = t_in.p_value
        row["typicality p (50 anomalies)"] = t_out.p_value
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        hist[c] = (scores["exact log p(x)"], lab)
        print(markdown_table([row]).splitlines()[-1], flush=True)
    names = list(scores)
    mean_row = {"class": "mean"}
    for name in names:
        mean_row[name] = float(np.mean([r[name] for r in rows]))
    table = markdown_table([*rows, mean_row])
    print(table)
    k = len(hist)
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.4), squeeze=False)
    for ax, (c, (s, lab)) in zip(axes[0], hist.items(), strict=True):
        lo = np.quantile(s, 0.01)
        bins = np.linspace(lo, s.max(), 50)
        ax.hist(np.clip(s[lab == 1], lo, None), bins, density=True, alpha=0.6, label="class")
        ax.hist(np.clip(s[lab == 0], lo, None), bins, density=True, alpha=0.6, label="others")
        ax.set_title(f"digit {c}: exact log p(x)", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "score_histograms.png", dpi=110)
    plt.close(fig)
    C.write_json(out / "results.json", {"rows": rows, "mean": mean_row})
    C.write_json(
        out / "config.json",
        C.base_config(
            args,
            data="MNIST t10k 28x28; per class an 80/20 split; anomalies: all other classes",
            decoder=list(args.sizes),
            vae={"epochs": epochs, "dtype": "float32"},
            is_k=args.is_k,
            isolation_forest="defaults",
            gaussian_mixture={"n_components": 10, "covariance_type": "diag", "reg_covar": 1e-3},
            typicality={"batch": 50, "n_reference": 10000, "n_batches": 5000},
        ),
    )
    (out / "README.md").write_text(
        f"# MNIST anomaly detection (AUROC; {'quick' if args.quick else 'full'}, seed {seed})\n\n"
        + table
        + "\n\n![histograms](score_histograms.png)\n\nConfiguration: config.json.\n"
    )


if __name__ == "__main__":
    main()
