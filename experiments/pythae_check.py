"""Cross-check of ``exactdgn evaluate`` against a VAE trained by another library, pythae.

Issue #12, item 5. A VAE with a ReLU MLP decoder whose output is linear (no sigmoid) and
pythae's MSE reconstruction is trained with pythae's own ``TrainingPipeline`` on MNIST t10k
images; its decoder (a state dict) and encoder are then scored by the ``exactdgn evaluate``
command line (run as a subprocess, from the saved files only) and compared image by image with
pythae's importance-sampling estimate ``VAE.get_nll(data, n_samples=5000)``.

pythae's conventions (pythae 0.1.2, ``pythae/models/vae/vae_model.py``):

* ``loss_function`` (mse, lines 100-110): ``0.5 * F.mse_loss(..., reduction="none").sum(-1)``
  plus the KL term, i.e. the negative ELBO of ``p(x | z) = N(g(z), I)`` up to a constant;
* ``get_nll`` (line 130; mse branch, lines 171-181):
  ``log_p_x_given_z = -0.5 * F.mse_loss(...).sum(-1) - prod(input_dim) / 2 * log(2 pi)``,
  commented "decoding distribution is assumed unit variance N(mu, I)": noise std 1 in the
  data's units;
* ``get_nll`` ends (lines 197-198) with ``log_p.append(logsumexp(log_w) - log(K))`` and
  ``return np.mean(log_p)``: despite its name it returns the mean *log-likelihood*
  ``log p(x)`` (negative for MNIST-sized data), not the negative log-likelihood.

So ``exactdgn evaluate ... --noise-std 1`` is the matching exact value. ``--scales`` multiplies
the pixels (in [0, 1]) by ``s`` before training: with pythae's fixed unit noise that is a noise
std of ``1/s`` in pixel units (``s = 10``: a sharp posterior, a harder importance-sampling
problem). ``get_nll`` returns only the mean over the images, so the script also repeats its
computation image by image (same code path, same torch seed; checked equal to the returned
mean) to keep the 5,000 log-weights of each image and their Monte Carlo standard error
(delta method: ``se_i = std(w) / (sqrt(K) mean(w))``); ``--is-repeats`` calls ``get_nll`` with
further seeds to measure the spread of its return value directly. The exact values themselves
are checked against an independent grid quadrature over z (midpoint rule on nested grids, the
box grown until its edge is negligible) on the ``--n-grid`` images with the largest
``|exact - IS|`` and as many others.

Its own virtual environment (pythae stays out of the project's requirements; the script is
imported by neither the library nor the tests)::

    python3.11 -m venv /work/pythae-venv
    /work/pythae-venv/bin/pip install torch==2.13.0          # first: the CPU build
    /work/pythae-venv/bin/pip install pythae==0.1.2 safetensors matplotlib
    /work/pythae-venv/bin/pip show torch                      # still 2.13.0
    PYTHONPATH=src nice -n 19 /work/pythae-venv/bin/python experiments/pythae_check.py

(exactdgn's other runtime dependencies, numpy, scipy, scikit-learn and tqdm, come with
pythae.) Writes results/pythae-check/: config.json, results.json, output.txt and, per scale,
the decoder / encoder state dicts that ``exactdgn evaluate`` read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def build_vae(latent, hidden_dec, hidden_enc, n_features):
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        """``x -> (mean, log_var)``, laid out as exactdgn's GaussianEncoder (body + two heads)."""

        def __init__(self):
            BaseEncoder.__init__(self)
            layers, n = [], n_features
            for h in hidden_enc:
                layers += [nn.Linear(n, h), nn.ReLU()]
                n = h
            self.body = nn.Sequential(*layers)
            self.mean_head = nn.Linear(n, latent)
            self.log_var_head = nn.Linear(n, latent)

        def forward(self, x):
            h = self.body(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.mean_head(h), log_covariance=self.log_var_head(h))

    class Decoder(BaseDecoder):
        """ReLU MLP ``z -> x`` with a linear output layer (no sigmoid)."""

        def __init__(self):
            BaseDecoder.__init__(self)
            sizes = [latent, *hidden_dec, n_features]
            layers = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(nn.ReLU())
            self.net = nn.Sequential(*layers)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    cfg = VAEConfig(input_dim=(n_features,), latent_dim=latent, reconstruction_loss="mse")
    return VAE(cfg, encoder=Encoder(), decoder=Decoder())


def is_log_weights(model, data, n_samples=5000, batch_size=100, model64=None):
    """The log-weights of ``VAE.get_nll`` (pythae 0.1.2), image by image.

    The same operations in the same order as ``get_nll``, so with the same torch seed the same
    draws: ``logsumexp(w_i) - log K`` averaged over the images is ``get_nll``'s return value.
    With ``model64`` (a float64 copy) also the log-weights of the same draws in float64.
    """
    import torch.nn.functional as F

    if n_samples <= batch_size:
        n_full_batch = 1
    else:
        n_full_batch = n_samples // batch_size
        n_samples = batch_size
    const = np.prod(model.input_dim) / 2 * np.log(np.pi * 2)

    def log_w_of(m, x_rep, eps=None):
        enc = m.encoder(x_rep)
        mu, log_var = enc.embedding, enc.log_covariance
        std = torch.exp(0.5 * log_var)
        if eps is None:
            z, eps = m._sample_gauss(mu, std)
        else:
            z = mu + eps.to(std.dtype) * std
        log_q = -0.5 * (log_var + (z - mu) ** 2 / torch.exp(log_var)).sum(dim=-1)
        log_pz = -0.5 * (z**2).sum(dim=-1)
        recon = m.decoder(z)["reconstruction"]
        log_px_z = -0.5 * F.mse_loss(
            recon.reshape(x_rep.shape[0], -1),
            x_rep.reshape(x_rep.shape[0], -1),
            reduction="none",
        ).sum(dim=-1) - torch.tensor([const])
        return log_px_z + log_pz - log_q, eps

    out, out64 = [], []
    with torch.no_grad():
        for i in range(len(data)):
            x = data[i].unsqueeze(0)
            lw, lw64 = [], []
            for _ in range(n_full_batch):
                x_rep = torch.cat(batch_size * [x])
                w, eps = log_w_of(model, x_rep)
                lw.append(w)
                if model64 is not None:
                    lw64.append(log_w_of(model64, x_rep.double(), eps)[0])
            out.append(torch.cat(lw).double().numpy())
            if model64 is not None:
                out64.append(torch.cat(lw64).numpy())
    return np.stack(out), (np.stack(out64) if model64 is not None else None)


def grid_log_px(net, x, *, half_width=8.0, n_side=800, drop=30.0, refine=(4, 16, 64), cap=4e6):
    """Independent check: ``log p(x)`` by the midpoint rule on nested grids in d = 2.

    ``log ∫ N(z; 0, I) N(x; g(z), I) dz`` with the decoder ``net`` (float64) evaluated on an
    ``n_side x n_side`` grid over ``[-w, w]²``, ``w`` doubled (up to 64) while the largest
    integrand on the box's edge is within ``drop`` nats of the largest inside (a ReLU decoder
    extrapolates affinely: an image can sit far out in z). The cells within ``drop`` nats of the
    maximum are then split ``k x k`` for each ``k`` in ``refine`` while the points stay under
    ``cap``. Returns the estimate at each level, the edge-to-maximum log ratio of the final box
    (the mass outside it is below ``exp`` of it), ``w`` and the number of refined cells.
    """
    from scipy.special import logsumexp

    D = x.shape[0]
    xt = torch.as_tensor(x, dtype=torch.float64)

    def log_f(Z):
        vals = []
        with torch.no_grad():
            for Zc in torch.split(torch.as_tensor(Z, dtype=torch.float64), 20_000):
                r = net(Zc) - xt
                vals.append(
                    -0.5 * (r * r).sum(-1)
                    - 0.5 * (Zc * Zc).sum(-1)
                    - (D + 2) / 2 * np.log(2 * np.pi)
                )
        return torch.cat(vals).numpy()

    w = half_width
    while True:
        h0 = 2 * w / n_side
        c = np.arange(n_side) * h0 - w + h0 / 2
        G = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
        lf0 = log_f(G)
        edge_ratio = float(lf0[(np.abs(G) > w - h0).any(1)].max() - lf0.max())
        if edge_ratio < -drop or w >= 64:
            break
        w *= 2
    levels = [float(logsumexp(lf0) + 2 * np.log(h0))]
    keep = lf0 > lf0.max() - drop
    rest = logsumexp(lf0[~keep]) + 2 * np.log(h0) if (~keep).any() else -np.inf
    for k in refine:
        if keep.sum() * k * k > cap:
            break
        h = h0 / k
        off = (np.arange(k) + 0.5) * h - h0 / 2
        O = np.stack(np.meshgrid(off, off, indexing="ij"), -1).reshape(-1, 2)
        Z = (G[keep][:, None, :] + O[None]).reshape(-1, 2)
        lf = log_f(Z)
        levels.append(float(np.logaddexp(logsumexp(lf) + 2 * np.log(h), rest)))
    return levels, edge_ratio, w, int(keep.sum())


def is_summary(log_w):
    """Per-image IS estimate ``log mean w`` and its delta-method standard error."""
    from scipy.special import logsumexp

    K = log_w.shape[1]
    est = logsumexp(log_w, axis=1) - np.log(K)
    w = np.exp(log_w - est[:, None])  # w / mean(w)
    se = w.std(axis=1, ddof=1) / np.sqrt(K)
    ess = K / np.mean(w**2, axis=1)
    return est, se, ess


def run_scale(scale, X_train, X_test, args, out, tmp, log):
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    D = X_train.shape[1]
    torch.manual_seed(args.seed)
    model = build_vae(args.latent, args.hidden, args.encoder_hidden, D)
    train = (scale * X_train).astype(np.float32)
    test = (scale * X_test).astype(np.float32)
    tcfg = BaseTrainerConfig(
        output_dir=str(tmp / f"pythae-s{scale:g}"),
        num_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        seed=args.seed,
        no_cuda=True,
    )
    t0 = time.perf_counter()
    TrainingPipeline(training_config=tcfg, model=model)(train_data=train)
    t_train = time.perf_counter() - t0
    model = model.eval()
    tag = f"s{scale:g}"
    dec_path = out / f"decoder_{tag}.pt"
    enc_path = out / f"encoder_{tag}.pt"
    torch.save(model.decoder.net.state_dict(), dec_path)
    torch.save(exactdgn_encoder_state(model.encoder.state_dict()), enc_path)
    data_path = tmp / f"test_{tag}.npy"
    np.save(data_path, test.astype(np.float64))

    # pythae's own estimate (float32 model as trained) and the per-image log-weights
    x_t = torch.from_numpy(test)
    with torch.no_grad():
        lv = model.encoder(x_t).log_covariance
    torch.manual_seed(args.is_seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        nll = float(model.get_nll(x_t, n_samples=args.k))
    t_nll = time.perf_counter() - t0
    # get_nll again with other seeds: the spread of its return value, measured
    repeats = [nll]
    for r in range(1, args.is_repeats):
        torch.manual_seed(args.is_seed + r)
        with torch.no_grad():
            repeats.append(float(model.get_nll(x_t, n_samples=args.k)))
    repeats = np.array(repeats)
    # the same draws again, image by image, in float32 (get_nll's) and in float64 (a copy of
    # the model): the float32 - float64 difference is get_nll's round-off alone
    m64 = build_vae(args.latent, args.hidden, args.encoder_hidden, D)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    torch.manual_seed(args.is_seed)
    log_w, log_w64 = is_log_weights(model, x_t, n_samples=args.k, model64=m64)
    est, se, ess = is_summary(log_w)
    est64, se64, _ = is_summary(log_w64)

    # exactdgn evaluate, from the files only
    csv = tmp / f"evaluate_{tag}.csv"
    cmd = [
        sys.executable,
        "-m",
        "exactdgn.cli",
        *evaluate_args(dec_path, data_path, enc_path, csv, args, D),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    t_eval = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exactdgn evaluate failed:\n{proc.stdout}\n{proc.stderr}")
    with open(csv) as fh:
        cols = fh.readline().strip().split(",")
    per = np.loadtxt(csv, delimiter=",", skiprows=1)
    per = {c: per[:, j] for j, c in enumerate(cols)}
    exact = per["log_px"]

    n = len(exact)
    diff = exact - est  # exact log p(x) minus pythae's IS log p(x)

    # independent check of the exact values: grid quadrature over z on the images where the
    # two differ most and on a few others
    grid, t_grid = [], 0.0
    if args.latent == 2 and args.n_grid > 0:
        worst = list(np.argsort(-np.abs(diff))[: args.n_grid])
        others = [i for i in np.random.default_rng(args.seed).permutation(n) if i not in worst]
        t0 = time.perf_counter()
        for i in worst + others[: args.n_grid]:
            levels, edge, width, cells = grid_log_px(m64.decoder.net, test[i].astype(np.float64))
            grid.append(
                {
                    "image": int(i),
                    "exact": float(exact[i]),
                    "pythae_is": float(est[i]),
                    "grid_levels": levels,
                    "exact_minus_grid": float(exact[i] - levels[-1]),
                    "edge_log_ratio": edge,
                    "half_width": width,
                    "refined_cells": cells,
                }
            )
        t_grid = time.perf_counter() - t0
    diff64 = exact - est64
    se_mean = float(np.sqrt(np.sum(se**2)) / n)
    res = {
        "scale": scale,
        "noise_std_pixels": 1.0 / scale,
        "train_seconds": t_train,
        "get_nll_seconds": t_nll,
        "evaluate_seconds": t_eval,
        "grid_check_seconds": t_grid,
        "evaluate_cmd": " ".join(
            ["exactdgn"] + [Path(c).name if c.startswith(("/", str(tmp))) else c for c in cmd[3:]]
        ),
        "evaluate_stdout": proc.stdout.strip(),
        "encoder_log_var_range": [float(lv.min()), float(lv.max())],
        "get_nll_return": nll,
        "per_image_replication_mean": float(est.mean()),
        "replication_minus_get_nll": float(est.mean() - nll),
        "exact_mean_log_px": float(exact.mean()),
        "exact_minus_get_nll": float(exact.mean() - nll),
        "exact_plus_get_nll": float(exact.mean() + nll),
        "mean_diff_exact_minus_is": float(diff.mean()),
        "mc_se_of_mean_is": se_mean,
        "diff_in_se": float(diff.mean() / se_mean),
        "get_nll_repeats": repeats,
        "get_nll_repeats_std": float(repeats.std(ddof=1)) if len(repeats) > 1 else None,
        "exact_minus_get_nll_repeats_mean": float(exact.mean() - repeats.mean()),
        "get_nll_repeats_se_of_mean": float(repeats.std(ddof=1) / np.sqrt(len(repeats)))
        if len(repeats) > 1
        else None,
        "jensen_bias_predicted": float(-np.mean(se**2) / 2),
        "per_image_se_median": float(np.median(se)),
        "per_image_se_max": float(se.max()),
        "per_image_abs_diff_median": float(np.median(np.abs(diff))),
        "per_image_abs_diff_max": float(np.abs(diff).max()),
        "per_image_z_rms": float(np.sqrt(np.mean((diff / se) ** 2))),
        "ess_median": float(np.median(ess)),
        "ess_min": float(ess.min()),
        "float64_is_mean": float(est64.mean()),
        "float64_mean_diff_exact_minus_is": float(diff64.mean()),
        "float64_mc_se_of_mean_is": float(np.sqrt(np.sum(se64**2)) / n),
        "float32_minus_float64_is_max_abs": float(np.abs(est - est64).max()),
        "exactdgn_is_mean": float(per[f"is{args.k}"].mean()),
        "exactdgn_elbo_mean": float(per["elbo"].mean()),
        "exactdgn_minus_pythae_is_mean": float(per[f"is{args.k}"].mean() - est.mean()),
        "grid_check": grid,
        "grid_check_max_abs_exact_minus_grid": max(
            (abs(g["exact_minus_grid"]) for g in grid), default=None
        ),
        "per_image": {
            "exact_log_px": exact,
            "pythae_is_log_px": est,
            "pythae_is_se": se,
            "pythae_is_log_px_float64": est64,
            "exactdgn_is_log_px": per[f"is{args.k}"],
            "elbo": per["elbo"],
        },
    }
    log(
        f"scale {scale:g} (noise std {1 / scale:g} per pixel): trained {t_train:.0f} s; "
        f"get_nll returned {nll:.5f} (per-image replication {est.mean():.5f}); "
        f"exact mean log p(x) {exact.mean():.5f} ({summ_regions(proc.stdout)})\n"
        f"  exact - IS = {diff.mean():+.2e} nats/image, MC SE {se_mean:.1e} "
        f"({diff.mean() / se_mean:+.2f} SE; predicted Jensen bias of IS "
        f"{-np.mean(se**2) / 2:+.1e}); per image |diff| median {np.median(np.abs(diff)):.1e}, "
        f"max {np.abs(diff).max():.1e}; per-image SE median {np.median(se):.1e}; "
        f"ESS median {np.median(ess):.0f} of {args.k}\n"
        f"  get_nll over {len(repeats)} seeds: std of one call {repeats.std(ddof=1):.1e} "
        f"(delta-method SE above {se_mean:.1e}); exact - mean of the {len(repeats)} = "
        f"{exact.mean() - repeats.mean():+.2e} +- "
        f"{repeats.std(ddof=1) / np.sqrt(len(repeats)):.1e}\n"
        f"  float64 IS: exact - IS = {diff64.mean():+.2e}; exactdgn's own IS{args.k} "
        f"(encoder from the file) - pythae's IS = "
        f"{per[f'is{args.k}'].mean() - est.mean():+.2e}; ELBO {per['elbo'].mean():.4f}\n"
        f"  grid quadrature over z on {len(grid)} images ({args.n_grid} with the largest "
        f"|exact - IS|): max |exact - grid| = "
        f"{max((abs(g['exact_minus_grid']) for g in grid), default=float('nan')):.1e} nats "
        f"(last refinement - previous: "
        f"{max((abs(g['grid_levels'][-1] - g['grid_levels'][-2]) for g in grid), default=0):.1e})"
        f"\n"
        f"  sign: get_nll returned {nll:.4f}, the exact mean log p(x) is {exact.mean():.4f}: "
        f"exact - get_nll = {exact.mean() - nll:+.2e}, exact + get_nll = {exact.mean() + nll:+.2e}"
    )
    return res


def exactdgn_encoder_state(state):
    """pythae's encoder state dict in the layout ``exactdgn evaluate --encoder`` reads.

    exactdgn's GaussianEncoder names its second head ``log_std_head``; ``--encoder-output
    log_var`` (in :func:`evaluate_args`) says that this one holds log-variances (pythae's
    ``log_covariance``).
    """
    return {k.replace("log_var_head", "log_std_head"): v for k, v in state.items()}


def evaluate_args(dec_path, data_path, enc_path, csv, args, n_features):
    """The ``exactdgn evaluate`` arguments scoring one trained pythae VAE (noise std 1).

    ``--no-progress``: the command's output is captured (its progress bar over the steps would
    only end up in the error message of a failed run).
    """
    return [
        "evaluate",
        str(dec_path),
        str(data_path),
        "--noise-std",
        "1",
        "--layers",
        *map(str, [args.latent, *args.hidden, n_features]),
        "--encoder",
        str(enc_path),
        "--encoder-hidden",
        *map(str, args.encoder_hidden),
        "--encoder-output",
        "log_var",
        "--k-is",
        str(args.k),
        "--seed",
        str(args.seed),
        "--no-progress",
        "--out",
        str(csv),
    ]


def summ_regions(stdout):
    """``decoder [...], R regions`` from ``exactdgn evaluate``'s summary line."""
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("decoder ")]
    return lines[0].split(";")[0] if lines else ""


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mnist", default=str(REPO / "../shared/data/mnist"))
    p.add_argument("--out", default=str(REPO / "results" / "pythae-check"))
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--latent", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    p.add_argument("--encoder-hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--k", type=int, default=5000, help="importance samples (get_nll n_samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--is-seed", type=int, default=1)
    p.add_argument("--is-repeats", type=int, default=10, help="get_nll calls (seeds)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--n-grid", type=int, default=3, help="grid-quadrature checks: worst and other images"
    )
    args = p.parse_args(argv)

    from exactdgn.datasets import load_mnist

    logging.getLogger("pythae").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    X, _ = load_mnist(args.mnist)
    perm = np.random.default_rng(args.seed).permutation(len(X))
    X_train = X[perm[: args.n_train]]
    test_idx = perm[args.n_train : args.n_train + args.n_test]
    X_test = X[test_idx]
    config = {
        "argv": sys.argv,
        "args": vars(args),
        "data": f"MNIST t10k, pixels in [0, 1] times scale; train {args.n_train} / test "
        f"{args.n_test} disjoint images (permutation seed {args.seed})",
        "decoder": [args.latent, *args.hidden, X.shape[1]],
        "test_indices_t10k": test_idx.tolist(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pythae": metadata.version("pythae"),
            "numpy": np.__version__,
            "scipy": metadata.version("scipy"),
            "exactdgn": metadata.version("exactdgn")
            if _installed("exactdgn")
            else __import__("exactdgn").__version__,
        },
        "git": _git(),
        "pythae_conventions": {
            "noise_std": "1 (vae_model.py get_nll, mse branch: 'decoding distribution is "
            "assumed unit variance N(mu, I)')",
            "get_nll_sign": "returns mean log p(x) (np.mean of logsumexp - log K), not -log p",
        },
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    log(f"pythae {config['versions']['pythae']}, torch {torch.__version__}, {config['data']}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.scales:
            results.append(run_scale(s, X_train, X_test, args, out, Path(tmp), log))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json))
    (out / "output.txt").write_text("\n".join(lines) + "\n")


def _installed(name):
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _git():
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None


def _json(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


if __name__ == "__main__":
    main()
