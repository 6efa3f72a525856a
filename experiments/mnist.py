"""Experiment 3: MNIST digit 4 (the paper's choice) or all digits, downsampled to 14x14 or at
28x28, latent 1 and 2: exact EM against a VAE with the same decoder, exact NLL on train and
held-out images.

Reads the IDX files from --mnist (default: ../shared/data/mnist relative to the repository; the
t10k set: 982 images of 4s, 10,000 in all).

    python experiments/mnist.py --quick
    python experiments/mnist.py --digit all --side 28 --seeds 0 1 --wide-em-iter 5
"""

from __future__ import annotations

import _common as C


def main() -> None:
    p = C.parser("mnist", __doc__)
    p.add_argument("--mnist", default=str(C.REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--digit", default="4", help="a digit class 0-9, or 'all'")
    p.add_argument("--side", type=int, default=14, help="downsampled side (14 or 28)")
    p.add_argument(
        "--wide-em-iter", type=int, default=10, help="EM iterations of the [d, 32, 32, D] decoders"
    )
    p.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="run only these cases (d1_w12 d1_w32x2 d2_w12 d2_w32x2)",
    )
    args = p.parse_args()
    if args.seeds is None and args.quick:
        args.seeds = [0]
    out = C.setup(args)
    from exactdgn.datasets import load_mnist

    if args.digit == "all":
        classes, tag = None, "all"
    elif args.digit.isdigit() and 0 <= int(args.digit) <= 9:
        classes, tag = [int(args.digit)], args.digit
    else:
        p.error(f"--digit must be a class 0-9 or 'all', got {args.digit!r}")
    side = None if args.side == 28 else args.side
    X, _ = load_mnist(args.mnist, classes=classes, downsample=side)
    D = X.shape[1]
    q = args.quick
    cases = []
    for d in (1, 2):
        b = {
            "em_iter": (10 if d == 1 else 5) if q else 30,
            "vae_epochs": [30, 300] if q else [30, 100, 300, 1000],
            "k_is": 5000,
        }
        cases.append({"name": f"mnist{tag}_d{d}_w12", "X": X, "sizes": [d, 12, D], "budgets": b})
        if not q:
            cases.append(
                {
                    "name": f"mnist{tag}_d{d}_w32x2",
                    "X": X,
                    "sizes": [d, 32, 32, D],
                    "budgets": {**b, "em_iter": args.wide_em_iter},
                }
            )
    if args.cases:
        cases = [c for c in cases if c["name"].split("_", 1)[1] in args.cases]
        if not cases:
            p.error(f"no case matches --cases {args.cases}")
    config = C.base_config(
        args,
        data={
            "path": args.mnist,
            "kind": "t10k",
            "digit": tag,
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
