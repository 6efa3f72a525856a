"""Experiment 2: scikit-learn 8x8 digits (one class, as in the paper, and all classes), latent 1
and 2, decoders [d, 12, 64] and [d, 32, 32, 64]: exact EM against a VAE, exact NLL on train and
held-out images (standardized units).

    python experiments/digits.py --quick
"""

from __future__ import annotations

import _common as C


def main() -> None:
    p = C.parser("digits", __doc__)
    p.add_argument("--digit", type=int, default=3, help="the one-class case")
    args = p.parse_args()
    if args.seeds is None and args.quick:
        args.seeds = [0]
    out = C.setup(args)
    from exactdgn.datasets import get_dataset

    one = get_dataset(f"digits:{args.digit}")
    every = get_dataset("digits")
    q = args.quick
    small = {"em_iter": 15 if q else 40, "vae_epochs": [30, 300] if q else [30, 100, 300, 1000]}
    big = {"em_iter": 4 if q else 15, "vae_epochs": [30, 300] if q else [30, 100, 300, 1000]}
    all_b = {"em_iter": 6 if q else 20, "vae_epochs": [30, 100] if q else [10, 30, 100, 300]}
    for b in (small, big, all_b):
        b["k_is"] = 5000
    cases = []
    for d in (1, 2):
        cases.append(
            {
                "name": f"digit{args.digit}_d{d}_w12",
                "X": one,
                "sizes": [d, 12, 64],
                "budgets": small,
            }
        )
        cases.append(
            {
                "name": f"digit{args.digit}_d{d}_w32x2",
                "X": one,
                "sizes": [d, 32, 32, 64],
                "budgets": big,
            }
        )
        cases.append({"name": f"all_d{d}_w12", "X": every, "sizes": [d, 12, 64], "budgets": all_b})
        if not q:
            cases.append(
                {
                    "name": f"all_d{d}_w32x2",
                    "X": every,
                    "sizes": [d, 32, 32, 64],
                    "budgets": {**all_b, "em_iter": 5},
                }
            )
    config = C.base_config(
        args,
        cases=[{k: v for k, v in c.items() if k != "X"} | {"n": len(c["X"])} for c in cases],
        standardization="per pixel on the training split, scale floor 0.1 x max pixel std",
        split="80/20, split seed = seed",
        vae="Adam lr 1e-3, batch 128, float32 training, encoder [64, 64], no early stopping",
    )
    C.write_json(out / "config.json", config)
    C.image_experiment(args, out, cases)


if __name__ == "__main__":
    main()
