"""Experiment 5: the exact posterior p(z|x) of a trained VAE's decoder against its encoder's
q(z|x), for a few held-out points: d = 1 curves (wave, [1, 12, 2]) and d = 2 contour maps over
the partition (digits class 3, [2, 12, 64], standardized). Per point: exact log p(x), ELBO and
the gap KL(q || p(z|x)) = log p(x) - ELBO.

    python experiments/posterior.py --quick
"""

from __future__ import annotations

import warnings

import _common as C
import numpy as np


def main() -> None:
    p = C.parser("posterior", __doc__)
    p.add_argument("--points", type=int, default=4)
    args = p.parse_args()
    if args.seeds is None:
        args.seeds = [0]
    out = C.setup(args)
    import matplotlib.pyplot as plt

    from exactdgn.baselines import VAE
    from exactdgn.datasets import Standardizer, get_dataset
    from exactdgn.evaluation import STD_FLOOR, split_data, vae_to_exact
    from exactdgn.plotting import plot_posterior_1d, plot_posterior_2d

    seed = args.seeds[0]
    epochs = 300 if args.quick else 1000
    kw = {
        "encoder_hidden": (64, 64),
        "validation_fraction": 0.0,
        "dtype": "float32",
        "max_epochs": epochs,
        "random_state": seed,
    }
    cases = []
    Xw = get_dataset("wave", n_samples=750, random_state=seed)
    trw, tew, _ = split_data(Xw, 0.2, seed)
    cases.append(("wave_d1", [1, 12, 2], trw, tew))
    Xd = get_dataset("digits:3")
    trd, ted, _ = split_data(Xd, 0.2, seed)
    st = Standardizer(rel_min_std=STD_FLOOR).fit(trd)
    cases.append(("digits3_d2", [2, 12, 64], st.transform(trd), st.transform(ted)))
    config = C.base_config(args, vae=kw, cases=[{"name": c[0], "sizes": c[1]} for c in cases])
    C.write_json(out / "config.json", config)
    results = {}
    for name, sizes, Xtr, Xte in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vae = VAE(sizes, **kw).fit(Xtr)
        ex = vae_to_exact(vae)
        ll = ex.score_samples(Xte)
        elbo = vae.elbo(Xte, n_samples=1000, random_state=seed)
        gap = ll - elbo
        order = np.argsort(gap)
        pick = order[np.linspace(0, len(order) - 1, args.points).round().astype(int)][::-1]
        mu, sd = vae.encode(Xte[pick])
        post = ex.posterior(Xte[pick])
        fig, axes = plt.subplots(1, args.points, figsize=(4 * args.points, 3.8))
        for j, i in enumerate(pick):
            fn = plot_posterior_1d if sizes[0] == 1 else plot_posterior_2d
            fn(ex, Xte[i], ax=axes[j], q=(mu[j], sd[j]))
            axes[j].set_title(f"point {i}: gap {gap[i]:.3f} nats", fontsize="small")
        fig.suptitle(f"{name}: exact p(z|x) vs VAE q(z|x) ({ex.n_regions_} regions)")
        fig.tight_layout()
        fig.savefig(out / f"posterior_{name}.png", dpi=100)
        plt.close(fig)
        results[name] = {
            "layer_sizes": sizes,
            "n_regions": ex.n_regions_,
            "test_exact_loglik": float(ll.mean()),
            "test_elbo": float(elbo.mean()),
            "gap_mean": float(gap.mean()),
            "gap_median": float(np.median(gap)),
            "gap_max": float(gap.max()),
            "points": [
                {
                    "index": int(i),
                    "exact_loglik": float(ll[i]),
                    "elbo": float(elbo[i]),
                    "gap": float(gap[i]),
                    "exact_mean": post.mean[j].tolist(),
                    "exact_std": np.sqrt(post.variance[j]).tolist(),
                    "q_mean": mu[j].tolist(),
                    "q_std": sd[j].tolist(),
                }
                for j, i in enumerate(pick)
            ],
        }
        print(name, {k: v for k, v in results[name].items() if k != "points"}, flush=True)
    C.write_json(out / "results.json", results)


if __name__ == "__main__":
    main()
