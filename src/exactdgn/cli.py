"""Command line: ``exactdgn fit | score | sample | partition | report | demo``.

Examples
--------
    exactdgn fit wave --latent-dim 1 --hidden 12 --method em --max-iter 50 --out runs/wave_em
    exactdgn score runs/wave_em wave --out scores.csv
    exactdgn sample runs/wave_em -n 1000 --out samples.npy
    exactdgn partition runs/wave_em --plot partition.png
    exactdgn report runs
    exactdgn demo --out report

The module also holds the small training-curve helpers shared by the demo and the scripts under
``experiments/`` (:func:`em_curve`, :func:`refit_curve`, :func:`vae_curve`, :func:`evaluate_vae`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "build_parser",
    "em_curve",
    "evaluate_vae",
    "load_data",
    "load_model",
    "main",
    "refit_curve",
    "split_data",
    "vae_curve",
]

logger = logging.getLogger("exactdgn")

EXAMPLES = """examples:
  exactdgn fit wave --latent-dim 1 --hidden 12 --method em --max-iter 50 --out runs/wave_em
  exactdgn fit wave --hidden 12 --method vae --max-iter 300 --out runs/wave_vae
  exactdgn fit digits:3 --hidden 12 --method em --out runs/digits3_em     (standardized)
  exactdgn fit mnist:../shared/data/mnist --classes 4 --downsample 14 --out runs/mnist4
  exactdgn fit data.npy --latent-dim 2 --hidden 32 32 --method gradient --out runs/mine
  exactdgn fit wave --hidden 12 --method lbfgs --max-iter 100 --out runs/wave_lbfgs
  exactdgn score runs/wave_em wave --out scores.csv
  exactdgn score runs/mine big.npy --workers 2 --out scores.csv   (dask: read chunk by chunk)
  exactdgn fit big.npy --hidden 32 32 --scheduler tcp://host:8786 --out runs/big  (dask EM)
  exactdgn sample runs/wave_em -n 1000 --seed 0 --out samples.npy
  exactdgn partition runs/wave_em --plot partition.png
  exactdgn partition --layers 2 32 32 784 --seed 0 --plot partition.png
  exactdgn report runs
  exactdgn demo --out report

DATA is a built-in name (wave, circle, two_moons, mixture, digits, digits:3, digits:3,5,
mnist:PATH) or a .csv/.npy/.npz file. Image data (digits, mnist, files with more than 2
columns) are standardized per pixel by default (--standardize); the Standardizer is stored
in config.json, log-likelihoods are reported in standardized units and, with the Jacobian
of the map, in data units ("*_data").
"""

TOY_NAMES = ("wave", "circle", "two_moons", "moons", "mixture", "gaussian_mixture")
METHODS = ("em", "gradient", "lbfgs", "vae", "iwae")
#: Standardization floor relative to the largest per-feature std: pixels that are (nearly)
#: constant in the training split are not blown up (a held-out image with ink there would
#: otherwise get values of ~1e3 and a meaningless likelihood).
STD_FLOOR = 0.1


class CLIError(ValueError):
    """A user error with a message meant for the terminal."""


# ---------------------------------------------------------------------- data
def load_data(
    spec: str,
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    data_seed: int | None = 0,
    classes=None,
    downsample: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Load a data set from a name or path, as the command line does.

    Parameters
    ----------
    spec : str
        ``wave``, ``circle``, ``two_moons``, ``mixture`` (toy, 2-D), ``digits`` /
        ``digits:3`` / ``digits:3,5``, ``mnist:PATH``, or a ``.csv`` / ``.npy`` / ``.npz`` file.
    n_samples, noise, data_seed :
        Toy sets only: size (default 1000), noise level and seed.
    classes : int or list of int, optional
        Class filter for ``mnist:PATH`` (for digits use ``digits:3``).
    downsample : int, optional
        MNIST side length (e.g. 14).

    Returns
    -------
    X : ndarray of shape (N, D), float64
    info : dict
        JSON-friendly description (``spec``, ``kind``, and the options used).
    """
    from .datasets import get_dataset

    low = spec.strip().lower()
    info: dict = {"spec": spec}
    kwargs: dict = {}
    if low in TOY_NAMES:
        info["kind"] = "toy"
        kwargs = {"n_samples": 1000 if n_samples is None else int(n_samples)}
        kwargs["random_state"] = 0 if data_seed is None else int(data_seed)
        if noise is not None:
            kwargs["noise"] = float(noise)
        info.update(kwargs)
    elif low == "digits" or low.startswith("digits:"):
        info["kind"] = "image"
        if classes is not None:
            raise CLIError("give digit classes in the name, e.g. 'digits:3', not with --classes")
    elif low.startswith("mnist:"):
        info["kind"] = "image"
        if classes is not None:
            kwargs["classes"] = classes
        if downsample is not None:
            kwargs["downsample"] = int(downsample)
        info.update(kwargs)
    else:
        info["kind"] = "file"
    X = get_dataset(spec, **kwargs)
    if info["kind"] == "file" and n_samples is not None:
        X = X[: int(n_samples)]
    if info["kind"] == "image" and n_samples is not None:
        X = X[: int(n_samples)]
        info["n_samples"] = int(n_samples)
    info["shape"] = list(X.shape)
    return X, info


def split_data(X: np.ndarray, test_fraction: float, seed: int):
    """Random train / held-out split: ``(X_train, X_test, test_index)``.

    ``test_fraction = 0`` gives an empty test set.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise CLIError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    N = X.shape[0]
    n_test = round(test_fraction * N)
    if N - n_test < 2:
        raise CLIError(f"{N} points leave fewer than 2 for training")
    perm = np.random.default_rng(seed).permutation(N)
    test = np.sort(perm[:n_test])
    mask = np.ones(N, dtype=bool)
    mask[test] = False
    return X[mask], X[test], test


def _want_standardize(choice: str, info: dict, D: int) -> bool:
    if choice == "on":
        return True
    if choice == "off":
        return False
    return info["kind"] == "image" or (info["kind"] == "file" and D > 2)


# ---------------------------------------------------------------------- models on disk
def load_model(path) -> tuple[object, dict]:
    """Load a model written by ``exactdgn fit``: ``(ExactDGN, config dict or {})``.

    ``path`` is the output directory of ``fit`` (holding ``model.npz`` and ``config.json``) or a
    ``.npz`` model file (a ``config.json`` next to it is read when present).
    """
    from .model import ExactDGN

    p = Path(path)
    if p.is_dir():
        file = p / "model.npz"
        if not file.exists():
            raise CLIError(f"{p} has no model.npz (is it the --out directory of 'exactdgn fit'?)")
        cfg_file = p / "config.json"
    else:
        if not p.exists():
            raise CLIError(f"model file {p} does not exist")
        file, cfg_file = p, p.parent / "config.json"
    model = ExactDGN.load(file)
    cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    return model, cfg


def _standardizer(cfg: dict):
    from .datasets import Standardizer

    d = cfg.get("standardizer")
    return Standardizer.from_dict(d) if d else None


def _torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def _run_quietly(fn, *args, **kwargs):
    """Call ``fn``; warnings (e.g. ConvergenceWarning) are reported on stderr, not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    seen = set()
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in seen:
            seen.add(msg)
            print(f"exactdgn: warning: {msg}", file=sys.stderr)
    return out


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))


# ---------------------------------------------------------------------- training helpers
def _em_model(**params):
    from .model import ExactDGN

    return ExactDGN(**params)


def em_curve(Xtr, Xte, *, max_iter: int, progress: bool = False, **params) -> tuple:
    """Run exact EM one iteration at a time and evaluate the exact NLL after each.

    Repeated ``fit`` calls with ``warm_start=True, max_iter=1`` continue the same EM run (EM is
    deterministic given its state); the seconds counted are those EM spends in partition,
    E-step and M-step (``history_``), not the extra evaluation.

    Parameters
    ----------
    Xtr, Xte : ndarray (N, D), (M, D)
        Training and held-out data (``Xte`` may have 0 rows).
    max_iter : int
    **params
        ``ExactDGN`` parameters (``latent_dim``, ``hidden_sizes``, ``random_state``, ...).

    Returns
    -------
    model : ExactDGN
    curve : dict of lists
        ``iter``, ``seconds`` (cumulative), ``train_nll``, ``test_nll`` (NaN without test
        data), ``n_regions``, ``backtracks``, ``seconds_partition``, ``seconds_estep``,
        ``seconds_mstep`` (per iteration).
    """
    from tqdm.auto import tqdm

    params = {**params, "max_iter": 1, "warm_start": True, "tol": 0.0, "progress": False}
    model = _em_model(**params)
    curve = {
        k: []
        for k in (
            "iter",
            "seconds",
            "train_nll",
            "test_nll",
            "n_regions",
            "backtracks",
            "seconds_partition",
            "seconds_estep",
            "seconds_mstep",
        )
    }
    total = 0.0
    bar = tqdm(range(max_iter), desc="EM", disable=not progress, leave=False)
    for it in bar:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xtr)
        h0, h1 = model.history_[0], model.history_[-1]
        if it == 0:
            total += h0["seconds_partition"] + h0["seconds_estep"]
            _append_curve(curve, 0, total, -h0["loglik"], model, Xte, h0, initial=True)
        total += h1["seconds_partition"] + h1["seconds_estep"] + h1["seconds_mstep"]
        _append_curve(curve, it + 1, total, -h1["loglik"], model, Xte, h1)
        bar.set_postfix(nll=f"{-h1['loglik']:.4f}", regions=h1["n_regions"], refresh=False)
    bar.close()
    return model, curve


def _append_curve(curve, it, total, train_nll, model, Xte, h, initial=False):
    curve["iter"].append(it)
    curve["seconds"].append(total)
    curve["train_nll"].append(float(train_nll))
    if initial:
        # the state before the first iteration: the initial decoder is not kept by ``fit``
        curve["test_nll"].append(float("nan"))
    else:
        curve["test_nll"].append(-model.score(Xte) if len(Xte) else float("nan"))
    curve["n_regions"].append(int(h["n_regions"]))
    curve["backtracks"].append(int(h.get("backtracks", 0)))
    for k in ("seconds_partition", "seconds_estep", "seconds_mstep"):
        curve[k].append(float(h[k]))


def refit_curve(make, Xtr, Xte, schedule, *, to_exact=None, progress: bool = False) -> tuple:
    """Exact NLL after ``e`` iterations/epochs for each ``e`` in ``schedule``, by refitting.

    For estimators whose run with ``e`` epochs is the prefix of a longer run with the same seed
    (the VAE/IWAE without early stopping, the exact-gradient Adam with ``tol=0``), fitting from
    scratch for each ``e`` gives the training curve; the seconds are each fit's wall time.

    Parameters
    ----------
    make : callable ``e -> estimator``
    Xtr, Xte : ndarray
    schedule : sequence of int (increasing)
    to_exact : callable ``estimator -> ExactDGN``, optional
        How to get the exact model (default: the estimator itself).

    Returns
    -------
    est : the estimator of the last ``e``
    curve : dict of lists ``iter``, ``seconds``, ``train_nll``, ``test_nll``, ``n_regions``
    """
    from tqdm.auto import tqdm

    curve = {k: [] for k in ("iter", "seconds", "train_nll", "test_nll", "n_regions")}
    est = None
    for e in tqdm(list(schedule), desc="refit", disable=not progress, leave=False):
        est = make(int(e))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xtr)
        secs = time.perf_counter() - t0
        exact = to_exact(est) if to_exact is not None else est
        curve["iter"].append(int(e))
        curve["seconds"].append(secs)
        curve["train_nll"].append(-exact.score(Xtr))
        curve["test_nll"].append(-exact.score(Xte) if len(Xte) else float("nan"))
        curve["n_regions"].append(int(exact.n_regions_))
    return est, curve


def vae_curve(make, Xtr, Xte, schedule) -> tuple:
    """Exact NLL of a VAE/IWAE's decoder after ``e`` epochs for each ``e`` in ``schedule``,
    from one training run (``make(max(schedule))``) scored by a per-epoch callback.

    Same curve as :func:`refit_curve` for estimators without early stopping (a run of ``e``
    epochs is the prefix of a longer one with the same seed) at the cost of one run; the
    seconds are the training time up to each epoch (the exact scoring is not counted).

    Returns
    -------
    est : the trained estimator (``max(schedule)`` epochs)
    curve : dict of lists ``iter``, ``seconds``, ``train_nll``, ``test_nll``, ``n_regions``
    """
    from .model import ExactDGN

    marks = sorted({int(e) for e in schedule})
    if not marks or marks[0] < 1:
        raise ValueError(f"schedule must hold positive epoch counts, got {list(schedule)}")
    curve = {k: [] for k in ("iter", "seconds", "train_nll", "test_nll", "n_regions")}
    clock = {"train": 0.0, "since": time.perf_counter()}

    def callback(epoch, snapshot):
        now = time.perf_counter()
        clock["train"] += now - clock["since"]
        if epoch in marks:
            dec, std = snapshot()
            exact = ExactDGN.from_decoder(dec, std)
            curve["iter"].append(epoch)
            curve["seconds"].append(clock["train"])
            curve["train_nll"].append(-exact.score(Xtr))
            curve["test_nll"].append(-exact.score(Xte) if len(Xte) else float("nan"))
            curve["n_regions"].append(int(exact.n_regions_))
            logger.info("epoch %d: exact train NLL %.4f", epoch, curve["train_nll"][-1])
        clock["since"] = time.perf_counter()

    est = make(marks[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xtr, callback=callback)
    return est, curve


def vae_to_exact(vae, **params):
    """The exact model (``ExactDGN``) of a trained VAE/IWAE's decoder and noise."""
    from .model import ExactDGN

    return ExactDGN.from_decoder(vae.decoder_, vae.noise_std_, **params)


def evaluate_vae(
    vae, exact, X, *, seed: int = 0, n_elbo: int = 100, k_iwae: int = 5, k_is: int = 5000
) -> dict:
    """Exact log-likelihood next to the VAE's estimates on ``X`` (means, nats per point).

    Returns a dict with ``exact``, ``elbo``, ``iwae_k`` (bound with ``k_iwae`` samples),
    ``is_k`` (importance-sampling estimate with ``k_is`` proposals from ``q``) and the per-point
    gap ``exact - ELBO = KL(q(z|x) || p(z|x))`` (up to the ELBO's Monte Carlo error):
    ``gap_mean``, ``gap_median``, ``gap_p90``, ``gap_max``, and ``elbo_stderr_mean``.
    """
    if len(X) == 0:
        return {}
    ll = exact.score_samples(X)
    elbo, se = vae.elbo(X, n_samples=n_elbo, random_state=seed, return_std=True)
    iw = vae.iwae_bound(X, k=k_iwae, n_repeats=10, random_state=seed + 1)
    is_ = vae.importance_log_likelihood(X, k=k_is, random_state=seed + 2)
    gap = ll - elbo
    return {
        "exact": float(ll.mean()),
        "elbo": float(elbo.mean()),
        f"iwae{k_iwae}": float(iw.mean()),
        f"is{k_is}": float(is_.mean()),
        "gap_mean": float(gap.mean()),
        "gap_median": float(np.median(gap)),
        "gap_p90": float(np.quantile(gap, 0.9)),
        "gap_max": float(gap.max()),
        "elbo_stderr_mean": float(se.mean()),
    }


# ---------------------------------------------------------------------- dask (issue 14)
@contextlib.contextmanager
def _cluster(args):
    """A dask client for ``--scheduler`` / ``--workers``, else ``None``."""
    if getattr(args, "scheduler", None) is None and getattr(args, "workers", None) is None:
        yield None
        return
    try:
        from .dask import connect
    except ImportError as exc:
        raise CLIError(str(exc)) from exc
    with connect(scheduler=args.scheduler, workers=args.workers) as client:
        yield client


def _load_data_for(args, client, **kwargs):
    """``load_data``; with a cluster a dask array (a ``.npy`` DATA read chunk by chunk)."""
    if client is None:
        return load_data(args.data, **kwargs)
    import dask.array as da

    if args.data.strip().lower().endswith(".npy"):
        from .dask import read_npy

        X = read_npy(args.data, chunk_rows=args.chunk_rows)
        if kwargs.get("n_samples") is not None:
            X = X[: int(kwargs["n_samples"])]
        return X, {"spec": args.data, "kind": "file", "shape": list(X.shape)}
    X, info = load_data(args.data, **kwargs)
    return da.from_array(X, chunks=(args.chunk_rows, -1)), info


def _transform(std, X):
    if hasattr(X, "map_blocks"):  # a dask array: block by block on the workers
        return X.map_blocks(std.transform, dtype=np.float64)
    return std.transform(X)


def _score_values(model, X) -> np.ndarray:
    """(N,) exact log p(x) (a dask array is scored on its cluster and gathered)."""
    if hasattr(X, "map_blocks"):
        from .dask import score_samples

        return score_samples(model, X).compute()
    return model.score_samples(X)


def _add_cluster_options(p) -> None:
    g = p.add_argument_group("dask cluster (pip install 'exactdgn[dask]')")
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="dask scheduler, e.g. tcp://h:8786"
    )
    x.add_argument(
        "--workers", type=int, default=None, metavar="N", help="a local cluster of N processes"
    )
    g.add_argument(
        "--chunk-rows", type=int, default=65536, help="rows per chunk (a .npy is read lazily)"
    )


# ---------------------------------------------------------------------- fit
def _default_iter(method: str) -> int:
    return {"em": 100, "gradient": 100, "vae": 300, "iwae": 300}[method]


def _fit(args) -> int:
    with _cluster(args) as client:
        if client is not None and args.method not in ("em", "lbfgs"):
            raise CLIError(
                f"--scheduler / --workers train with --method em or lbfgs, not {args.method}"
            )
        return _fit_in(args, client)


def _fit_in(args, client) -> int:
    from .baselines import IWAE, VAE
    from .datasets import Standardizer
    from .model import ExactDGN

    _torch_threads(args.threads)
    X, info = _load_data_for(
        args,
        client,
        n_samples=args.n_samples,
        noise=args.data_noise,
        data_seed=args.data_seed,
        classes=args.classes,
        downsample=args.downsample,
    )
    Xtr_raw, Xte_raw, test_index = split_data(X, args.test_fraction, args.seed)
    std = None
    if _want_standardize(args.standardize, info, X.shape[1]):
        std = Standardizer(rel_min_std=args.std_floor)
        if client is None:
            std.fit(Xtr_raw)
        else:  # issue 14: moments by dask reductions
            mean = Xtr_raw.mean(axis=0).compute()
            std.fit_moments(
                mean, np.sqrt(((Xtr_raw - mean) ** 2).mean(axis=0).compute()), len(Xtr_raw)
            )
    Xtr = _transform(std, Xtr_raw) if std else Xtr_raw
    Xte = _transform(std, Xte_raw) if std else Xte_raw
    jac = std.log_abs_det_jacobian() if std else 0.0
    max_iter = args.max_iter if args.max_iter is not None else _default_iter(args.method)
    hidden = tuple(int(h) for h in args.hidden)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {
        "activation": args.activation,
        "negative_slope": args.negative_slope,
        "noise": args.noise,
        "min_noise_std": args.min_noise_std,
    }
    t0 = time.perf_counter()
    vae = None
    if args.method in ("em", "gradient", "lbfgs"):
        model = ExactDGN(
            latent_dim=args.latent_dim,
            hidden_sizes=hidden,
            method=args.method,
            max_iter=max_iter,
            tol=args.tol,
            n_init=args.n_init,
            weight_decay=args.weight_decay,
            random_state=args.seed,
            progress=not args.no_progress,
            **common,
        )
        _run_quietly(model.fit, Xtr)
        history = model.history_
        n_iter = int(model.n_iter_)
    else:
        sizes = [args.latent_dim, *hidden, X.shape[1]]
        kw = {
            **common,
            "encoder_hidden": tuple(args.encoder_hidden),
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_epochs": max_iter,
            "validation_fraction": args.validation_fraction,
            "patience": args.patience,
            "dtype": args.dtype,
            "random_state": args.seed,
            "progress": not args.no_progress,
        }
        vae = IWAE(sizes, k=args.k, **kw) if args.method == "iwae" else VAE(sizes, **kw)
        _run_quietly(vae.fit, Xtr)
        model = vae_to_exact(vae, min_noise_std=args.min_noise_std)
        history = vae.history_
        n_iter = int(vae.n_epochs_)
    seconds = time.perf_counter() - t0
    ll_tr = _score_values(model, Xtr)
    results = {
        "data": args.data,
        "method": args.method,
        "latent_dim": args.latent_dim,
        "hidden": list(hidden),
        "n_train": len(Xtr),
        "n_test": len(Xte),
        "n_features": X.shape[1],
        "n_iter": n_iter,
        "seconds": seconds,
        "n_regions": model.n_regions_,
        "noise_std_mean": float(np.mean(model.noise_std_)),
        "train_loglik": float(ll_tr.mean()),
        "test_loglik": float(_score_values(model, Xte).mean()) if len(Xte) else None,
        "train_loglik_data": float(ll_tr.mean() + jac),
    }
    if results["test_loglik"] is not None:
        results["test_loglik_data"] = results["test_loglik"] + jac
    else:
        results["test_loglik_data"] = None
    if vae is not None:
        for name, part in (("train", Xtr), ("test", Xte)):
            ev = evaluate_vae(vae, model, part, seed=args.seed, k_is=args.k_is)
            for k, v in ev.items():
                if k != "exact":
                    results[f"{name}_{k}"] = v
    model.save(out / "model.npz")
    config = {
        "command": "fit",
        "argv": sys.argv[1:],
        "data": info,
        "method": args.method,
        "latent_dim": args.latent_dim,
        "hidden": list(hidden),
        "layer_sizes": [args.latent_dim, *hidden, X.shape[1]],
        "max_iter": max_iter,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "test_index": test_index.tolist(),
        "standardizer": std.to_dict() if std else None,
        "options": {k: v for k, v in vars(args).items() if k != "func"},
    }
    _write_json(out / "config.json", config)
    _write_json(out / "history.json", history)
    _write_json(out / "results.json", results)
    msg = f"exact train log-likelihood: {results['train_loglik']:.6f} nats/point"
    if results["test_loglik"] is not None:
        msg += f" (held-out: {results['test_loglik']:.6f})"
    print(msg)
    if std:
        print(
            f"  in data units (with the standardization Jacobian {jac:.4f}): "
            f"{results['train_loglik_data']:.6f}"
        )
    print(
        f"{args.method}: {n_iter} iterations, {model.n_regions_} regions, {seconds:.2f}s; "
        f"model written to {out}/model.npz"
    )
    return 0


# ---------------------------------------------------------------------- score / sample
def _score(args) -> int:
    with _cluster(args) as client:
        return _score_in(args, client)


def _score_in(args, client) -> int:
    model, cfg = load_model(args.model)
    data_cfg = cfg.get("data", {})
    same = data_cfg.get("spec") == args.data
    n_samples = args.n_samples
    if n_samples is None and same and data_cfg.get("kind") == "toy":
        n_samples = data_cfg.get("n_samples")
    X, _ = _load_data_for(
        args,
        client,
        n_samples=n_samples,
        noise=args.data_noise if args.data_noise is not None else data_cfg.get("noise"),
        data_seed=args.data_seed if args.data_seed is not None else data_cfg.get("random_state", 0),
        classes=args.classes if args.classes is not None else data_cfg.get("classes"),
        downsample=args.downsample if args.downsample is not None else data_cfg.get("downsample"),
    )
    if args.split != "all":
        if not same or list(X.shape) != data_cfg.get("shape"):
            raise CLIError(
                f"--split {args.split} needs the data the model was fit on ({data_cfg.get('spec')})"
            )
        test = np.zeros(len(X), dtype=bool)
        test[np.asarray(cfg.get("test_index", []), dtype=int)] = True
        X = X[test] if args.split == "test" else X[~test]
        if len(X) == 0:
            raise CLIError(f"the {args.split} split is empty")
    std = _standardizer(cfg)
    Xs = _transform(std, X) if std else X
    ll = _score_values(model, Xs)
    jac = std.log_abs_det_jacobian() if std else 0.0
    print(f"exact mean log p(x): {ll.mean():.6f} nats/point over {len(X)} points")
    if std:
        print(f"  in data units: {ll.mean() + jac:.6f} (standardization Jacobian {jac:.4f})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table = np.column_stack([np.arange(len(ll)), ll, ll + jac])
        np.savetxt(
            out,
            table,
            delimiter=",",
            header="index,log_px,log_px_data",
            comments="",
            fmt=["%d", "%.17g", "%.17g"],
        )
        print(f"per-point values written to {out}")
    return 0


def _sample(args) -> int:
    model, cfg = load_model(args.model)
    if args.n < 1:
        raise CLIError(f"-n must be >= 1, got {args.n}")
    X = model.sample(args.n, random_state=args.seed)
    std = _standardizer(cfg)
    if std and not args.standardized:
        X = std.inverse_transform(X)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".npy":
            np.save(out, X)
        elif out.suffix in (".csv", ".txt"):
            np.savetxt(out, X, delimiter=",", fmt="%.17g")
        else:
            raise CLIError(f"--out must end in .npy or .csv, got {out.name}")
        print(f"{args.n} samples of dimension {X.shape[1]} written to {out}")
    else:
        np.savetxt(sys.stdout, X, delimiter=",", fmt="%.10g")
    return 0


# ---------------------------------------------------------------------- partition
def _partition_cmd(args) -> int:
    from . import Decoder, partition

    if (args.model is None) == (args.layers is None):
        raise CLIError("give either a MODEL (file or fit directory) or --layers d ... D")
    if args.model is not None:
        model, _ = load_model(args.model)
        part = model.partition_
    else:
        dec = Decoder.random(args.layers, activation=args.activation, seed=args.seed)
        part = partition(dec)
    summ = part.summary()
    print(json.dumps(summ, indent=2, default=_json_default))
    if args.plot:
        if part.latent_dim > 2:
            raise CLIError(f"--plot draws latent dimension 1 or 2, not {part.latent_dim}")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plotting import plot_partition

        fig, ax = plt.subplots(figsize=(5, 5))
        plot_partition(part, ax=ax)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"plot written to {args.plot}")
    return 0


# ---------------------------------------------------------------------- report
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[key] = v
        elif isinstance(v, list) and len(v) <= 8 and all(isinstance(x, int | float) for x in v):
            out[key] = "[" + ",".join(str(x) for x in v) + "]"
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts of scalars); columns in order of first appearance."""
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _report(args) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(f"{root} is not a directory")
    files = sorted(p for p in root.rglob("*.json") if "results" in p.name)
    if not files:
        raise CLIError(f"no results JSON files (named *results*.json) under {root}")
    rows = []
    for f in files:
        try:
            obj = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise CLIError(f"{f} is not valid JSON ({exc})") from exc
        items = obj if isinstance(obj, list) else obj.get("rows", [obj])
        for item in items:
            if isinstance(item, dict):
                rows.append({"file": str(f.relative_to(root)), **_flatten(item)})
    text = markdown_table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


# ---------------------------------------------------------------------- demo
def _demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .baselines import VAE
    from .datasets import Standardizer, get_dataset, wave
    from .plotting import (
        plot_curves,
        plot_images,
        plot_partition,
        plot_posterior_1d,
        plot_samples_2d,
    )

    _torch_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    progress = not args.no_progress
    cases = [
        {
            "name": "wave",
            "data": "wave (n=750, noise=0.05), 600 train / 150 held out",
            "sizes": [1, 12, 2],
            "standardize": False,
            "em_iter": args.em_iter,
            "vae_epochs": [30, 100, 300, 1000],
        },
        {
            "name": "digits3",
            "data": "sklearn digits, class 3 (183 images 8x8), 80% train / 20% held out",
            "sizes": [1, 12, 64],
            "standardize": True,
            "em_iter": args.em_iter,
            "vae_epochs": [30, 100, 300, 1000],
        },
    ]
    if args.quick:
        for c in cases:
            c["em_iter"] = min(c["em_iter"], 5)
            c["vae_epochs"] = [5, 20]
    vae_kw = {
        "encoder_hidden": (64, 64),
        "lr": 1e-3,
        "batch_size": 128,
        "validation_fraction": 0.0,
        "dtype": "float32",
    }
    config = {
        "seed": seed,
        "torch_threads": args.threads,
        "vae": {**vae_kw, "note": "no early stopping: a fixed epoch budget, as EM's"},
        "em": {"init": "pca", "tol": 0.0, "noise": "isotropic", "min_noise_std": 1e-3},
        "cases": [],
    }
    results = {"cases": []}
    summary_rows = []
    md = [
        "# exactdgn demo: exact EM against a VAE with the same decoder",
        "",
        "Every number below is an **exact** log-likelihood log p(x) of the trained decoder "
        "(nats per point; NLL = -log p(x)), computed in closed form over the decoder's linear "
        "regions, except the columns marked ELBO / IWAE / IS, which are the VAE's own Monte "
        "Carlo estimates. gap = exact log p(x) - ELBO per point = KL(q(z|x) || p(z|x)).",
        "",
    ]
    for case in cases:
        name = case["name"]
        if name == "wave":
            X = wave(750, noise=0.05, random_state=seed)
            Xtr_raw, Xte_raw, _ = split_data(X, 0.2, seed)
        else:
            X = get_dataset("digits:3")
            Xtr_raw, Xte_raw, _ = split_data(X, 0.2, seed)
        std = Standardizer(rel_min_std=STD_FLOOR).fit(Xtr_raw) if case["standardize"] else None
        Xtr = std.transform(Xtr_raw) if std else Xtr_raw
        Xte = std.transform(Xte_raw) if std else Xte_raw
        sizes = [*case["sizes"][:-1], X.shape[1]]
        print(f"[{name}] fitting exact EM {sizes} ({case['em_iter']} iterations) ...", flush=True)
        em, em_c = em_curve(
            Xtr,
            Xte,
            max_iter=case["em_iter"],
            progress=progress,
            latent_dim=sizes[0],
            hidden_sizes=tuple(sizes[1:-1]),
            random_state=seed,
        )
        print(f"[{name}] fitting VAE {sizes} (epochs {case['vae_epochs']}) ...", flush=True)
        vae, vae_c = vae_curve(
            lambda e, sizes=sizes: VAE(sizes, max_epochs=e, random_state=seed, **vae_kw),
            Xtr,
            Xte,
            case["vae_epochs"],
        )
        vex = vae_to_exact(vae)
        ev_tr = evaluate_vae(vae, vex, Xtr, seed=seed)
        ev_te = evaluate_vae(vae, vex, Xte, seed=seed)
        row_em = {
            "data": name,
            "method": "exact EM",
            "iterations": em_c["iter"][-1],
            "seconds": em_c["seconds"][-1],
            "regions": em.n_regions_,
            "train NLL": -em.score(Xtr),
            "test NLL": -em.score(Xte),
        }
        row_vae = {
            "data": name,
            "method": "VAE",
            "iterations": vae_c["iter"][-1],
            "seconds": vae_c["seconds"][-1],
            "regions": vex.n_regions_,
            "train NLL": -ev_tr["exact"],
            "test NLL": -ev_te["exact"],
            "test -ELBO": -ev_te["elbo"],
            "test -IWAE5": -ev_te["iwae5"],
            "test -IS5000": -ev_te["is5000"],
            "test gap mean": ev_te["gap_mean"],
            "test gap max": ev_te["gap_max"],
        }
        summary_rows += [row_em, row_vae]
        jac = std.log_abs_det_jacobian() if std else 0.0
        results["cases"].append(
            {
                "name": name,
                "layer_sizes": sizes,
                "n_train": len(Xtr),
                "n_test": len(Xte),
                "standardized": bool(std),
                "log_abs_det_jacobian": jac,
                "em": {
                    "train_loglik": -row_em["train NLL"],
                    "test_loglik": -row_em["test NLL"],
                    "noise_std": em.noise_std_.tolist(),
                    "curve": em_c,
                },
                "vae": {
                    "train": ev_tr,
                    "test": ev_te,
                    "noise_std": float(np.mean(vae.noise_std_)),
                    "curve": vae_c,
                },
            }
        )
        config["cases"].append(
            {
                "name": name,
                "data": case["data"],
                "layer_sizes": sizes,
                "em_iterations": case["em_iter"],
                "vae_epoch_checkpoints": case["vae_epochs"],
                "standardizer": std.to_dict() if std else None,
            }
        )
        # figures
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        curves_it, curves_s = {}, {}
        for lab, c, col in (("EM", em_c, "C0"), ("VAE", vae_c, "C1")):
            for part, ls in (("train", "-"), ("test", "--")):
                y = np.asarray(c[f"{part}_nll"], dtype=float)
                ok = np.isfinite(y)
                x_it = np.asarray(c["iter"], dtype=float)[ok]
                x_s = np.asarray(c["seconds"], dtype=float)[ok]
                spec = {"y": y[ok], "color": col, "ls": ls}
                curves_it[f"{lab} {part}"] = {"x": x_it, **spec}
                curves_s[f"{lab} {part}"] = {"x": np.maximum(x_s, 1e-3), **spec}
        plot_curves(
            curves_it,
            ax=axes[0],
            xlabel="EM iteration / VAE epoch",
            logx=True,
            title=f"{name}: exact NLL",
        )
        plot_curves(
            curves_s, ax=axes[1], xlabel="seconds", logx=True, title=f"{name}: exact NLL vs time"
        )
        fig.tight_layout()
        fig.savefig(out / f"curves_{name}.png", dpi=110)
        plt.close(fig)
        if name == "wave":
            fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
            plot_samples_2d(
                Xtr,
                {
                    "EM samples": em.sample(600, random_state=seed),
                    "VAE samples": vae.sample(600, random_state=seed),
                },
                ax=axes[0],
                title="wave: data and samples",
            )
            plot_partition(em.partition_, ax=axes[1])
            axes[1].set_title(f"EM decoder: {em.n_regions_} regions of R")
            plot_partition(vex.partition_, ax=axes[2])
            axes[2].set_title(f"VAE decoder: {vex.n_regions_} regions of R")
            fig.tight_layout()
            fig.savefig(out / "wave_samples_partition.png", dpi=110)
            plt.close(fig)
        idx = np.argsort(vex.score_samples(Xte) - vae.elbo(Xte, 100, random_state=seed))[::-1]
        pick = idx[[0, len(idx) // 2, len(idx) - 1]]
        mu, sd = vae.encode(Xte[pick])
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for j, i in enumerate(pick):
            plot_posterior_1d(vex, Xte[i], ax=axes[j], q=(mu[j], sd[j]))
            axes[j].set_title(f"{name} held-out point {i}")
        fig.tight_layout()
        fig.savefig(out / f"posterior_{name}.png", dpi=110)
        plt.close(fig)
        if name != "wave":
            fig, axes = plt.subplots(1, 3, figsize=(12, 4))
            plot_images(Xte_raw[:16], ax=axes[0], ncols=4, title="held-out data")
            plot_images(
                std.inverse_transform(em.sample(16, random_state=seed)),
                ax=axes[1],
                ncols=4,
                title="exact EM samples",
            )
            plot_images(
                std.inverse_transform(vae.sample(16, random_state=seed)),
                ax=axes[2],
                ncols=4,
                title="VAE samples",
            )
            fig.tight_layout()
            fig.savefig(out / f"samples_{name}.png", dpi=110)
            plt.close(fig)
    table = markdown_table(summary_rows)
    md += ["## Exact NLL (lower is better)", "", table, ""]
    md += [
        "Units: wave in data units; digits in standardized units (per-pixel standardization "
        "fitted on the training split; add the Jacobian term in results.json, "
        "`log_abs_det_jacobian`, to get pixel units).",
        "",
        "## Figures",
        "",
        "Training curves (exact NLL; EM per iteration, VAE at epoch checkpoints, each a "
        "separate fit with the same seed):",
        "",
        "![wave](curves_wave.png)",
        "",
        "![digits](curves_digits3.png)",
        "",
        "Wave data with samples, and the d = 1 partitions (breakpoints in grey):",
        "",
        "![wave samples](wave_samples_partition.png)",
        "",
        "Exact posterior p(z|x) of the VAE's decoder against its encoder's q(z|x) (held-out "
        "points with the largest, median and smallest gap):",
        "",
        "![posterior wave](posterior_wave.png)",
        "",
        "![posterior digits](posterior_digits3.png)",
        "",
        "![digit samples](samples_digits3.png)",
        "",
    ]
    total = time.perf_counter() - t_start
    config["seconds_total"] = total
    md += [f"Total time: {total:.1f} s. Configuration: config.json; all numbers: results.json.", ""]
    _write_json(out / "config.json", config)
    _write_json(out / "results.json", {**results, "rows": summary_rows})
    (out / "README.md").write_text("\n".join(md))
    print()
    print(table)
    print(
        f"\nreport written to {out}/ (README.md, results.json, config.json, *.png) in {total:.0f}s"
    )
    return 0


# ---------------------------------------------------------------------- parser
def _add_data_options(p) -> None:
    g = p.add_argument_group("data options")
    g.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="toy sets: number of points (default 1000); other data: keep the first N",
    )
    g.add_argument("--data-noise", type=float, default=None, help="toy sets: noise level")
    g.add_argument("--data-seed", type=int, default=None, help="toy sets: data seed (default 0)")
    g.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=None,
        help="mnist: keep these classes (digits: use digits:3)",
    )
    g.add_argument("--downsample", type=int, default=None, help="mnist: side length, e.g. 14")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    """The ``exactdgn`` argument parser (sub-commands fit, score, sample, partition, report,
    demo)."""
    p = argparse.ArgumentParser(
        prog="exactdgn",
        description="Exact likelihood, posterior and EM for piecewise-affine generative networks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for these small networks)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser(
        "fit",
        help="train a model (exact EM, exact gradient, VAE or IWAE)",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    f.add_argument("data", metavar="DATA", help="built-in name or file (see examples)")
    f.add_argument("--out", required=True, help="output directory")
    f.add_argument("--method", choices=METHODS, default="em")
    f.add_argument("--latent-dim", type=int, default=1)
    f.add_argument("--hidden", type=int, nargs="+", default=[12], help="hidden layer widths")
    f.add_argument(
        "--activation", default="leaky_relu", choices=["relu", "leaky_relu", "prelu", "abs"]
    )
    f.add_argument("--negative-slope", type=float, default=0.1)
    f.add_argument("--noise", choices=["isotropic", "diagonal"], default="isotropic")
    f.add_argument("--min-noise-std", type=float, default=1e-3)
    f.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="EM iterations / gradient or VAE epochs (default 100 / 100 / 300)",
    )
    f.add_argument("--seed", type=int, default=0, help="model seed and train/test split seed")
    f.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction")
    f.add_argument(
        "--standardize",
        choices=["auto", "on", "off"],
        default="auto",
        help="per-feature standardization (auto: on for image data)",
    )
    f.add_argument(
        "--std-floor",
        type=float,
        default=STD_FLOOR,
        help="standardization: scale floor relative to the largest feature std",
    )
    g = f.add_argument_group("exact (em, gradient) options")
    g.add_argument("--tol", type=float, default=1e-4)
    g.add_argument("--n-init", type=int, default=1)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g = f.add_argument_group("vae / iwae options")
    g.add_argument("--k", type=int, default=5, help="IWAE importance samples")
    g.add_argument("--encoder-hidden", type=int, nargs="+", default=[64, 64])
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="early-stopping split of the training data (0: off)",
    )
    g.add_argument("--patience", type=int, default=10)
    g.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="VAE training precision (evaluation is always float64)",
    )
    g.add_argument("--k-is", type=int, default=5000, help="importance samples for log p(x)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_options(f)
    _add_cluster_options(f)
    f.set_defaults(func=_fit)

    s = sub.add_parser(
        "score",
        help="exact log-likelihood of data under a fitted model",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    s.add_argument("model", metavar="MODEL", help="fit output directory or model .npz")
    s.add_argument("data", metavar="DATA")
    s.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="train/test: the split used by fit (same DATA only)",
    )
    s.add_argument("--out", default=None, help="per-point CSV (index, log_px, log_px_data)")
    _add_data_options(s)
    _add_cluster_options(s)
    s.set_defaults(func=_score)

    m = sub.add_parser(
        "sample",
        help="draw samples from a fitted model",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    m.add_argument("model", metavar="MODEL")
    m.add_argument("-n", type=int, required=True, help="number of samples")
    m.add_argument("--seed", type=int, default=None)
    m.add_argument("--out", default=None, help=".npy or .csv file (default: CSV on stdout)")
    m.add_argument(
        "--standardized",
        action="store_true",
        help="keep samples in standardized units (default: data units)",
    )
    m.set_defaults(func=_sample)

    q = sub.add_parser(
        "partition",
        help="linear regions of a fitted model or a random decoder",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    q.add_argument("model", metavar="MODEL", nargs="?", default=None)
    q.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="random decoder with layer sizes d ... D (instead of MODEL)",
    )
    q.add_argument("--activation", default="leaky_relu")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--plot", default=None, help="save a plot of the partition (d <= 2)")
    q.set_defaults(func=_partition_cmd)

    r = sub.add_parser(
        "report",
        help="collect results JSON files under DIR into a table",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--out", default=None, help="also write the markdown table here")
    r.set_defaults(func=_report)

    d = sub.add_parser(
        "demo",
        help="exact EM vs VAE on wave and digits; writes a report",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    d.add_argument("--out", default="report", help="output directory")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--em-iter", type=int, default=40, help="EM iterations per data set")
    d.add_argument("--quick", action="store_true", help="a few iterations only (smoke test)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage or data error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, MemoryError, TypeError, KeyError) as exc:
        if args.verbose >= 2:
            raise
        print(f"exactdgn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
