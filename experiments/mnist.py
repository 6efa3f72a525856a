"""Experiment 3: MNIST digit 4 (the paper's choice) downsampled to 14x14, latent 1 and 2: exact
EM against a VAE with the same decoder, exact NLL on train and held-out images.

Reads the IDX files from --mnist (default: ../shared/data/mnist relative to the repository; the
t10k set: 982 images of 4s).

    python experiments/mnist.py --quick
"""

from __future__ import annotations

import _common as C


def main() -> None:
    p = C.parser("mnist", __doc__)
    p.add_argument("--mnist", default=str(C.REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--digit", type=int, default=4)
    p.add_argument("--side", type=int, default=14, help="downsampled side (14 or 28)")
    args = p.parse_args()
    if args.seeds is None and args.quick:
        args.seeds = [0]
    out = C.setup(args)
    from exactdgn.datasets import load_mnist

    X, _ = load_mnist(args.mnist, classes=[args.digit], downsample=args.side)
    D = X.shape[1]
    q = args.quick
    cases = []
    for d in (1, 2):
        b = {
            "em_iter": (10 if d == 1 else 5) if q else 30,
            "vae_epochs": [30, 300] if q else [30, 100, 300, 1000],
            "k_is": 5000,
        }
        cases.append(
            {"name": f"mnist{args.digit}_d{d}_w12", "X": X, "sizes": [d, 12, D], "budgets": b}
        )
        if not q:
            cases.append(
                {
                    "name": f"mnist{args.digit}_d{d}_w32x2",
                    "X": X,
                    "sizes": [d, 32, 32, D],
                    "budgets": {**b, "em_iter": 10},
                }
            )
    config = C.base_config(
        args,
        data={
            "path": args.mnist,
            "kind": "t10k",
            "digit": args.digit,
            "side": args.side,
            "n": len(X),
        },
        cases=[{k: v for k, v in c.items() if k != "X"} for c in cases],
        standardization="per pixel on the training split, scale floor 0.1 x max pixel std",
        split="80/20, split seed = seed",
    )
    C.write_json(out / "config.json", config)
    C.image_experiment(args, out, cases)


if __name__ == "__main__":
    main()
