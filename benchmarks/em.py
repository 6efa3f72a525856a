"""Seconds of one exact-EM iteration, split into partition / E-step / M-step, on the 8x8 digits.

Cases (N = 1,797, D = 64, standardised pixels): [1, 12, 64], [1, 32, 32, 64], [2, 32, 32, 64].
Each runs ``ExactDGN(max_iter=2)`` from the PCA initialisation and prints the second iteration's
timings from ``history_`` (the first includes one-off work), with the region counts.

Run: ``python benchmarks/em.py [--cases 0 1 2] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from exactdgn import ExactDGN
from exactdgn.datasets import Standardizer, load_digits

CASES = [(1, (12,)), (1, (32, 32)), (2, (32, 32))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, nargs="*", default=list(range(len(CASES))))
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--device", default=None, help="torch device of the E-step (None: numpy)")
    args = p.parse_args(argv)
    X, _ = load_digits()
    X = Standardizer().fit_transform(X)
    print(f"digits: N={X.shape[0]} D={X.shape[1]}")
    for i in args.cases:
        d, hidden = CASES[i]
        m = ExactDGN(
            latent_dim=d,
            hidden_sizes=hidden,
            method="em",
            init="pca",
            max_iter=args.iters,
            tol=0.0,
            random_state=0,
            progress=False,
            device=args.device,
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(X)
        total = time.perf_counter() - t0
        h = m.history_[-1]
        it_s = h["seconds_partition"] + h["seconds_estep"] + h["seconds_mstep"]
        print(
            f"[{d}, {', '.join(map(str, hidden))}, 64]: regions {h['n_regions']:6d} | one "
            f"iteration {it_s:7.2f}s = partition {h['seconds_partition']:6.2f}s + E-step "
            f"{h['seconds_estep']:6.2f}s + M-step {h['seconds_mstep']:6.2f}s | backtracks "
            f"{h['backtracks']} | exact loglik/pt {h['loglik']:.4f} | fit total {total:.1f}s"
        )
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
