"""Command line: ``exactdgn fit | score | sample | evaluate | partition | report | demo``.

Examples
--------
    exactdgn fit wave --latent-dim 1 --hidden 12 --method em --max-iter 50 --out runs/wave_em
    exactdgn score runs/wave_em wave --out scores.csv
    exactdgn sample runs/wave_em -n 1000 --out samples.npy
    exactdgn partition runs/wave_em --plot partition.png
    exactdgn report runs
    exactdgn demo --out report

This module only parses arguments and dispatches; the evaluation helpers it shares with the
scripts under ``experiments/`` live in :mod:`exactdgn.evaluation`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._threads import interrupt_behind
from .evaluation import (
    STD_FLOOR,
    evaluate_vae,
    flatten,
    json_default,
    markdown_table,
    run_demo,
    split_data,
    vae_to_exact,
    write_json,
)
from .evaluation._split import FEATURE_STD_FLOOR
from .io import CheckpointMismatchError

__all__ = ["build_parser", "load_data", "load_model", "main"]

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
  exactdgn impute runs/mine holes.csv --out filled.npy --std-out sd.npy   (NaN = missing)
  exactdgn sample runs/wave_em -n 1000 --seed 0 --out samples.npy
  exactdgn partition runs/wave_em --plot partition.png
  exactdgn evaluate decoder.safetensors data.npy --noise-std 0.1 --encoder encoder.pt
  exactdgn partition --layers 2 32 32 784 --seed 0 --plot partition.png
  exactdgn report runs
  exactdgn demo --out report

DATA is a built-in name (wave, circle, two_moons, mixture, digits, digits:3, digits:3,5,
mnist:PATH) or a .csv/.npy/.npz file. Image data (digits, mnist) and files with more than 2
columns are standardized per feature by default (--standardize); the Standardizer is stored
in config.json, log-likelihoods are reported in standardized units and, with the Jacobian
of the map, in data units ("*_data"). The scale floor (--std-floor, relative to the largest
feature std) is 0.1 for image data (near-constant pixels are not blown up) and 1e-6 for
files and toy sets (each column by its own std, whatever its units).
"""

EVALUATE_EXAMPLES = """examples:
  exactdgn evaluate decoder.safetensors test.npy --noise-std 0.1 --layers 2 32 32 784
  exactdgn evaluate decoder.pt test.npy --noise-std sigma.npy --encoder encoder.pt \\
      --encoder-hidden 64 64 --k-is 5000 --out per_point.csv
  exactdgn -v evaluate decoder.pt test.npy --noise-std 0.1    (each stage's time logged)

DATA is a .csv/.npy/.npz file (--key picks an array of an .npz) or a built-in name (digits,
mnist:PATH, wave, ...). It is scored as given, never standardized: give it in the units the
decoder was trained on (a NaN is refused here). --noise-std is the decoder's observation
noise: one std, or a file of one std per output.
"""

TOY_NAMES = ("wave", "circle", "two_moons", "moons", "mixture", "gaussian_mixture")
METHODS = ("auto", "em", "gradient", "lbfgs", "vae", "iwae")
EXACT_METHODS = ("auto", "em", "gradient", "lbfgs")
#: ``ExactDGN``'s default method (kept equal by a test)
DEFAULT_METHOD = "auto"
#: methods that train on a dask cluster (--scheduler / --workers)
CLUSTER_METHODS = ("auto", "em", "lbfgs", "gradient")


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
    key: str | None = None,
    allow_nan: bool = False,
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
    allow_nan : bool
        Files only: keep NaN entries (missing values).

    Returns
    -------
    X : ndarray of shape (N, D), float64
    info : dict
        JSON-friendly description (``spec``, ``kind``, and the options used).
    """
    from .datasets import get_dataset

    info: dict = {"spec": spec}
    kwargs: dict = {}
    kind = _data_kind(spec)
    if kind == "toy":
        info["kind"] = "toy"
        kwargs = {"n_samples": 1000 if n_samples is None else int(n_samples)}
        kwargs["random_state"] = 0 if data_seed is None else int(data_seed)
        if noise is not None:
            kwargs["noise"] = float(noise)
        info.update(kwargs)
    elif kind == "digits":
        info["kind"] = "image"
        if classes is not None:
            raise CLIError("give digit classes in the name, e.g. 'digits:3', not with --classes")
    elif kind == "mnist":
        info["kind"] = "image"
        if classes is not None:
            kwargs["classes"] = classes
        if downsample is not None:
            kwargs["downsample"] = int(downsample)
        info.update(kwargs)
    else:
        info["kind"] = "file"
        if key is not None:
            kwargs["key"] = key
            info["key"] = key
        if allow_nan:
            kwargs["allow_nan"] = True
    X = get_dataset(spec, **kwargs)
    if info["kind"] in ("file", "image") and n_samples is not None:
        X = X[: int(n_samples)]
        info["n_samples"] = int(n_samples)  # score reuses it for the same DATA
    info["shape"] = list(X.shape)
    if info["kind"] == "file":  # score --split knows the file however it is spelled, and
        info["path"] = str(Path(spec).resolve())  # that its values are the fit's
        info["sha256"] = _values_digest(X)
    return X, info


def _values_digest(X: np.ndarray) -> str:
    """SHA-256 of an array's float64 values (row-major), as recorded for a run's DATA."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes()).hexdigest()


def _same_data(data_cfg: dict, spec: str) -> bool:
    """Whether DATA ``spec`` names the run's DATA: the same spelling, the same file, or the
    same MNIST folder (``mnist:/data/`` and ``mnist:/data``)."""
    if data_cfg.get("spec") == spec:
        return True
    path = data_cfg.get("path")
    if path is not None and _data_kind(spec) == "file" and str(Path(spec).resolve()) == path:
        return True
    run_spec = str(data_cfg.get("spec", ""))
    if _data_kind(spec) == "mnist" and _data_kind(run_spec) == "mnist":
        folder = spec.split(":", 1)[1]
        return Path(folder).resolve() == Path(run_spec.split(":", 1)[1]).resolve()
    return False


def _data_kind(spec: str) -> str:
    """``"toy"``, ``"digits"``, ``"mnist"`` or ``"file"``: which data options apply."""
    low = spec.strip().lower()
    if low in TOY_NAMES:
        return "toy"
    if low == "digits" or low.startswith("digits:"):
        return "digits"
    return "mnist" if low.startswith("mnist:") else "file"


#: the data options (``_add_data_options``) each kind of DATA takes; ``--n-samples`` all
DATA_OPTIONS = {
    "toy": ("n_samples", "data_noise", "data_seed"),
    "digits": ("n_samples",),
    "mnist": ("n_samples", "classes", "downsample"),
    "file": ("n_samples", "key"),
}


def _check_data_options(args) -> None:
    """A data option given for a kind of DATA it does not apply to is an error (``wave --key
    X``, ``digits:3 --data-noise 0.5``), not silently ignored."""
    kind = _data_kind(args.data)
    for dest in ("data_noise", "data_seed", "classes", "downsample", "key"):
        if getattr(args, dest, None) is not None and dest not in DATA_OPTIONS[kind]:
            takes = [k for k, v in DATA_OPTIONS.items() if dest in v]
            hint = " (digits: name the classes, e.g. 'digits:3')" if kind == "digits" else ""
            raise CLIError(
                f"--{dest.replace('_', '-')} applies to {' and '.join(takes)} data, not "
                f"{args.data}{hint}"
            )
    if getattr(args, "key", None) is not None and not args.data.lower().endswith(".npz"):
        raise CLIError(
            f"--key picks an array of a .npz file; {args.data} holds a single array: remove --key"
        )


def _std_floor(given: float | None, info: dict) -> float:
    """``--std-floor``: as given, else 0.1 for image data (digits, mnist: near-constant pixels
    are not blown up) and 1e-6 for files and toy sets (columns in unrelated units: a floor of
    0.1 of the widest column's std left a narrow column hundreds of times under-scaled)."""
    if given is not None:
        return float(given)
    return STD_FLOOR if info["kind"] == "image" else FEATURE_STD_FLOOR


def _report_floored(std, info: dict, data: str) -> None:
    """Files and toy sets: the columns scaled by the floor, not their own std, said on stderr
    (image data floor their near-constant pixels by design)."""
    if info["kind"] == "image" or not std.with_std:
        return
    cols = np.flatnonzero(std.std_ < std.floor_)
    if len(cols):
        print(
            f"exactdgn: warning: {len(cols)} columns of {data} (first {cols[:5].tolist()}, std "
            f"{float(std.std_[cols].max()):.3g} or less) are "
            f"(nearly) constant in the training rows: scaled by the floor {std.floor_:.3g} "
            "(--std-floor x the largest std), not their own std",
            file=sys.stderr,
        )


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
    ``.npz`` model file (a ``config.json`` next to it is read when present). The model carries
    its standardization (``preprocessing_``): it takes and returns data in data units.
    """
    from .model import ExactDGN, _run_config

    p = Path(path)
    if not p.exists():
        raise CLIError(f"model {p} does not exist")
    model = ExactDGN.load(p)
    return model, _run_config((p if p.is_dir() else p.parent) / "config.json")


def _check_width(model, X, data: str, model_path) -> None:
    """DATA has as many columns as the model was fit on (the error names the file and the
    width expected, not an anonymous ``X``)."""
    D = int(model.n_features_in_)
    if X.ndim == 2 and X.shape[1] != D:
        raise CLIError(
            f"{data} has {X.shape[1]} columns but the model {model_path} was fit on data with "
            f"{D}: give DATA with {D} columns, in the order of the fit's"
        )
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is None or not Path(data).is_file():
        return
    from .datasets import csv_header

    names = csv_header(data)  # a CSV's header names its columns: they must be the fit's
    if names is not None and list(names) != [str(n) for n in fitted]:
        raise CLIError(
            f"{data} has columns {names} but the model {model_path} was fit on "
            f"{[str(n) for n in fitted]}: give DATA with the fit's columns in its order"
        )


def _count(n: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _write_output(path, write) -> None:
    """``write(fh)`` to a binary file handle, the file put at ``path`` only when complete
    (:func:`exactdgn.io.atomic_path`: a Ctrl-C leaves the earlier file or none); the parent
    folders are made."""
    from .io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def _save_array(path, arr, fmt: str = "%.17g", header: list[str] | None = None) -> None:
    """``arr`` as ``.npy`` (by its suffix) or CSV at ``path`` (with a ``header`` row of column
    names when given), written atomically."""
    if Path(path).suffix == ".npy":
        _write_output(path, lambda fh: np.save(fh, arr))
    else:
        from .datasets import csv_line

        names = csv_line(header) if header is not None else ""
        _write_output(
            path,
            lambda fh: np.savetxt(fh, arr, delimiter=",", fmt=fmt, header=names, comments=""),
        )


def _save_arrays(outputs: list, header: list[str] | None = None) -> None:
    """:func:`_save_array` of each ``(path, array)``, all or none: a failed later write takes
    back the files and folders the earlier ones made (``impute --std-out`` in a folder that
    cannot be written left ``--out`` behind), and names the file, not its temporary."""
    import shutil

    done: list[Path] = []
    made: list[Path] = []
    try:
        for path, arr in outputs:
            path = Path(path)
            made += [p for p in path.parents if not p.exists() and p not in made]
            existed = path.exists()
            try:
                _save_array(path, arr, header=header)
            except OSError as exc:
                raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from exc
            if not existed:
                done.append(path)
    except BaseException:
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        for folder in sorted(made, key=lambda p: len(p.parts)):  # the outermost made first
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
        raise


def _at_least(low, kind=int, strict: bool = False):
    """argparse type: an integer (``kind=int``) or a finite float ``>= low`` (``> low`` when
    ``strict``): the option is named in the error, not the estimator's parameter
    (``hidden_sizes=(0,) is invalid``, ``min_noise_std=-1.0 is invalid``)."""
    what = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not np.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = _at_least(1)
_seed = _at_least(0)  # numpy's seeds are non-negative


def _tol(text: str):
    """``--tol``: a number >= 0, or 'auto' (ExactDGN's default: per method)."""
    if text.strip().lower() == "auto":
        return "auto"
    return _at_least(0.0, float)(text)


#: ExactDGN's defaults the fit options fall back to (shown in --help; a test keeps them equal)
FIT_DEFAULTS = {"max_iter": 1000, "tol": "auto", "n_init": 1, "init": "auto"}


def _torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def _run_quietly(fn, *args, **kwargs):
    """Call ``fn``; warnings (e.g. ConvergenceWarning) go to stderr as they happen, not raised.

    Each distinct message is printed once, when it is first issued: an up-front
    warning (the cost estimate, ``latent_dim > D``) is read before a long fit runs,
    not after it.
    """
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        msg = f"{category.__name__}: {message}"
        if msg not in seen:
            seen.add(msg)
            print(f"exactdgn: warning: {msg}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------- dask (issue 14)
@contextlib.contextmanager
def _cluster(args):
    """A dask client for ``--scheduler`` / ``--workers``, else ``None``."""
    if getattr(args, "scheduler", None) is None and getattr(args, "workers", None) is None:
        if getattr(args, "chunk_rows", None) is not None:  # an option that does not apply
            raise CLIError(
                "--chunk-rows sets the row chunks of a dask cluster's data: give --workers N "
                "or --scheduler ADDRESS with it, or remove it (in memory DATA is read whole)"
            )
        yield None
        return
    try:
        from .dask import connect
    except ImportError as exc:
        raise CLIError(str(exc)) from exc
    # distributed sets its loggers to INFO on import and, the root logger having the CLI's
    # handler, printed ~40 lines of cluster INFO (and the workers' tracebacks of a data error
    # the CLI reports in one line): its records from ERROR up, WARNING with -v, all with -vv
    import distributed  # noqa: F401  (its loggers exist, with their levels, once imported)

    verbose = getattr(args, "verbose", 0)
    level = {0: logging.ERROR, 1: logging.WARNING}.get(verbose, logging.INFO)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(level)
    # a Ctrl-C left the client's pending futures to asyncio, which logged "Task exception was
    # never retrieved ... AllExit" with its traceback at ERROR: shown with -v
    logging.getLogger("asyncio").setLevel(level if verbose else logging.CRITICAL)
    # the worker processes log on their own (a data error's traceback, at ERROR): hidden
    # unless -v
    worker_level = {0: logging.CRITICAL, 1: logging.WARNING}.get(verbose, logging.INFO)
    with connect(
        scheduler=args.scheduler, workers=args.workers, worker_log_level=worker_level
    ) as client:
        yield client


def _load_data_for(args, client, **kwargs):
    """``load_data``; with a cluster a dask array (a ``.npy`` DATA read chunk by chunk)."""
    if client is None:
        return load_data(args.data, **kwargs)
    import dask.array as da

    if args.data.strip().lower().endswith(".npy"):
        from .dask import read_npy

        X = read_npy(args.data, chunk_rows=_chunk_rows(args))
        info = {"spec": args.data, "kind": "file", "path": str(Path(args.data).resolve())}
        if kwargs.get("n_samples") is not None:
            X = X[: int(kwargs["n_samples"])]
            info["n_samples"] = int(kwargs["n_samples"])
        return X, {**info, "shape": list(X.shape)}
    X, info = load_data(args.data, **kwargs)
    return da.from_array(X, chunks=(_chunk_rows(args), -1)), info


#: rows per chunk of a cluster's data without --chunk-rows
DEFAULT_CHUNK_ROWS = 65536


def _chunk_rows(args) -> int:
    return DEFAULT_CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows


def _transform(std, X):
    if hasattr(X, "map_blocks"):  # a dask array: block by block on the workers
        from .dask._score import standardize_rows

        return standardize_rows(std, X)
    return std.transform(X)


def _report_missing(X, client) -> int:
    """The number of NaN (missing) values of in-memory data, said on stderr when there are
    some (0 for a cluster's data, which are not read here)."""
    n = 0 if client is not None else int(np.isnan(X).sum())
    if n:
        print(f"{_count(n, 'missing value')} (NaN): log p(x_obs) for their rows", file=sys.stderr)
    return n


def _jacobian(std, X, n_missing: int):
    """The standardization's log-Jacobian: one number, or per row (its observed values) when
    values are missing; 0 without a standardization."""
    if std is None:
        return 0.0
    return std.log_abs_det_jacobian_rows(X) if n_missing else std.log_abs_det_jacobian()


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
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="a local cluster of N processes",
    )
    g.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        metavar="ROWS",
        help=f"rows per chunk (default {DEFAULT_CHUNK_ROWS}; a .npy is read lazily); only with "
        "--scheduler / --workers",
    )


# ---------------------------------------------------------------------- fit
def _default_iter(method: str) -> int | None:
    """VAE / IWAE epochs; ``None`` for the exact methods (``ExactDGN``'s own default)."""
    return {"vae": 300, "iwae": 300}.get(method)


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C with what the interrupted command leaves behind (printed on one line)."""


def _fit(args) -> int:
    """``exactdgn fit``: no output folder is left behind by a failed or interrupted run."""
    if not 0.0 <= args.test_fraction < 1.0:  # before loading the data (split_data checks too)
        raise CLIError(
            f"--test-fraction must be in [0, 1) (the fraction of the rows held out; 0: none), "
            f"got {args.test_fraction}"
        )
    if args.std_floor is not None and not 0.0 <= args.std_floor < 1.0:
        raise CLIError(
            f"--std-floor must be in [0, 1) (the scale floor relative to the largest feature "
            f"std), got {args.std_floor}"
        )
    _check_method_options(args)
    if args.negative_slope is not None and args.activation not in ("leaky_relu", "prelu"):
        raise CLIError(
            f"--negative-slope applies to --activation leaky_relu and prelu (the activation is "
            f"{args.activation}): remove it, or change --activation"
        )
    if args.method != "iwae" and args.k != 5:
        raise CLIError(f"--k applies to --method iwae, not --method {args.method}: remove it")
    _check_data_options(args)
    out = Path(args.out)
    _check_out_folder(out)
    if not args.overwrite:
        _check_no_other_run(out, args.checkpoint)
    if args.checkpoint:  # a file, in a folder that is or can be made
        if Path(args.checkpoint).is_dir():
            raise CLIError(f"--checkpoint {args.checkpoint} is a folder: give a file path (.npz)")
        _check_parents(Path(args.checkpoint), "--checkpoint")
    with _cluster(args) as client:
        if client is not None and args.method not in CLUSTER_METHODS:
            raise CLIError(
                "--scheduler / --workers train with --method em or lbfgs (or auto: EM, "
                f"then L-BFGS; or gradient), not {args.method}"
            )
        return _fit_in(args, client, out)


def _method_options() -> dict[str, dict[str, object]]:
    """The ``fit`` options that belong to one family of methods: ``{"exact": {dest: default},
    "vae": {...}}`` (the parser's "exact training options" and "vae / iwae options")."""
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    found = {}
    for group in fit._action_groups:
        family = group.title.split()[0] if group.title else ""
        if family in ("exact", "vae"):
            found[family] = {a.dest: a.default for a in group._group_actions}
    return found


def _check_method_options(args) -> None:
    """An option of the other family of methods (``--checkpoint`` with ``--method vae``,
    ``--lr`` with ``--method em``) is an error, not silently ignored."""
    family = "exact" if args.method in EXACT_METHODS else "vae"
    other = "vae" if family == "exact" else "exact"
    for dest, default in _method_options()[other].items():
        if getattr(args, dest) != default:
            which = (
                "the exact methods (auto, em, lbfgs, gradient)"
                if other == "exact"
                else ("--method vae and iwae")
            )
            raise CLIError(
                f"--{dest.replace('_', '-')} applies to {which}, not --method {args.method}: "
                "remove it or change --method"
            )


def _check_out_folder(out: Path) -> None:
    """``--out`` must be (or become) a folder: checked before training, not after it."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder: give a folder for the run")
    _check_parents(out, "--out")


#: the files ``fit`` writes into ``--out``: a folder holding one of them holds a run
RUN_FILES = ("model.npz", "config.json", "history.json", "results.json")


def _check_no_other_run(out: Path, checkpoint) -> None:
    """``fit --out`` into a folder holding a run is refused (without ``--overwrite``), unless it
    is this run's own: its config.json names the same ``--checkpoint`` (a resume)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if checkpoint:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            own = json.loads((out / "config.json").read_text())["options"]["checkpoint"]
            if own and Path(own).resolve() == Path(checkpoint).resolve():
                return
    raise CLIError(
        f"{out} already holds a run (files {', '.join(found)}): choose another --out, or pass "
        "--overwrite to replace it"
    )


def _check_parents(path: Path, option: str) -> None:
    """The folders above ``path`` exist or can be made (none of them is a file)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{option} {path} cannot be made: {parent} is a file, not a folder")
            break


def _check_out_file(path, option: str = "--out", inputs=(), suffixes=None) -> None:
    """An output file's path: not a folder, in folders that exist or can be made (checked
    before the work whose results it takes, not after it); not one of the command's
    ``inputs`` (``(given, label)`` pairs: DATA, MODEL, ...), not one of a run's own files
    (:data:`RUN_FILES` in a folder that holds a run); ``suffixes``: the file types it can be.
    ``score data --out data.npy`` wrote its CSV over the data, ``score run data --out
    run/model.npz`` over the model."""
    given, path = str(path), Path(path)
    if path.is_dir() or given.endswith(("/", os.sep)):  # (Path drops a trailing slash)
        raise CLIError(f"{option} {path} is a folder: give a file path (e.g. {path / 'out.csv'})")
    target = path.resolve()
    for given, label in inputs:
        if given and Path(given).exists():
            src = Path(given).resolve()
            if src == target:
                raise CLIError(
                    f"{option} {path} is the {label} file: give the output its own file, the "
                    "input would be overwritten"
                )
    if path.name in RUN_FILES and any((path.parent / n).exists() for n in RUN_FILES):
        raise CLIError(
            f"{option} {path} would replace the {path.name} of the run in {path.parent}: give "
            "the output another file name"
        )
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CLIError(
            f"{option} {path}: the output is written as {' or '.join(suffixes)}; give a file "
            f"name ending in {suffixes[0]}"
        )
    _check_parents(path, option)


def _write_run(out: Path, write) -> None:
    """``write(folder)`` writes the run's files into a staging folder beside ``out``, which then
    becomes ``out`` (a new one) or replaces its files one by one (an earlier run's folder).

    An error or Ctrl-C while writing leaves no partial folder: no ``out``, no staging folder,
    no parent folders made for it, and an earlier run's folder as it was."""
    import shutil

    made = [p for p in (out, *out.parents) if not p.exists()][1:]  # parents to make
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial{os.getpid()}"
    try:
        stage.mkdir()
        write(stage)
        if not out.exists():
            os.replace(stage, out)
            return
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
        stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in made:  # innermost first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


#: ``ExactDGN`` parameters and the ``fit`` options that set them
PARAM_OPTIONS = {
    "latent_dim": "--latent-dim",
    "hidden_sizes": "--hidden",
    "activation": "--activation",
    "negative_slope": "--negative-slope",
    "noise": "--noise",
    "min_noise_std": "--min-noise-std",
    "method": "--method",
    "random_state": "--seed",
    "n_init": "--n-init",
    "init": "--init",
    "weight_decay": "--weight-decay",
}
RESUME_RULE = (
    "a resume may raise --max-iter and change --tol (it then ends as a run with them from the "
    "start would), nothing else"
)


def _resume_refusal(path, exc, max_iter: int) -> str:
    """The message for a ``--checkpoint`` of another run (:class:`CheckpointMismatchError`)."""
    if exc.changed == ["max_iter"]:
        return (
            f"--checkpoint {path} has run {exc.ran} iterations, more than --max-iter {max_iter}: "
            "give at least that many, or remove the checkpoint to start over"
        )
    names = [PARAM_OPTIONS.get(k, k) for k in exc.changed if k != "X"]
    if "X" in exc.changed:
        names.append("DATA (or its options, --test-fraction, --standardize, --std-floor)")
    return (
        f"--checkpoint {path} is of another run, written with other {', '.join(names)}; "
        f"{RESUME_RULE}: give that run's options, or remove the checkpoint (or give another "
        "path) to start a new run"
    )


def _fit_in(args, client, out: Path) -> int:
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
        key=args.key,
        allow_nan=client is None,  # NaN = missing: exact EM on log p(x_obs) (in memory)
    )
    n_missing = _report_missing(X, client)
    if n_missing and args.method not in EXACT_METHODS:
        raise CLIError(
            f"the data have {n_missing} missing values (NaN): --method {args.method} needs "
            "complete rows; the exact methods (em, lbfgs, gradient, auto) train on log p(x_obs)"
        )
    # DATA's own rows named (the later checks name a split's rows, and the standardization's
    # moments overflowed first: "std must be finite")
    if client is not None:
        _check_rows_to_train(X, args.data)
    else:
        from ._validation import check_training_values

        try:
            check_training_values(X, name=f"{args.data} (rows numbered from 0 in the file)")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        empty = np.flatnonzero(np.isnan(X).all(axis=1))
        if empty.size:  # (the fit named rows of the training split)
            raise CLIError(
                f"{args.data} has {empty.size} rows with every value missing (NaN), first rows "
                f"{empty[:5].tolist()} (numbered from 0 in the file): such rows carry no "
                "information; drop them"
            )
    Xtr_raw, Xte_raw, test_index = split_data(X, args.test_fraction, args.seed)
    std = None
    want = _want_standardize(args.standardize, info, X.shape[1])
    if args.std_floor is not None and not want:
        raise CLIError(
            f"--std-floor applies to standardized data, and {args.data} is not standardized "
            f"(--standardize {args.standardize}): remove it, or give --standardize on"
        )
    if want:
        std = Standardizer(rel_min_std=_std_floor(args.std_floor, info))
        if client is None:
            std.fit(Xtr_raw)
        else:  # issue 14: moments by dask reductions
            mean = Xtr_raw.mean(axis=0).compute()
            if np.isnan(mean).any():  # NaN (missing) somewhere in those columns
                cols = np.flatnonzero(np.isnan(mean))
                raise CLIError(
                    f"{args.data} has missing values (NaN) in {len(cols)} columns, first "
                    f"{cols[:5].tolist()}: on a dask cluster fit needs complete rows; fit in "
                    "memory (without --scheduler / --workers) to train on log p(x_obs)"
                )
            std.fit_moments(
                mean, np.sqrt(((Xtr_raw - mean) ** 2).mean(axis=0).compute()), len(Xtr_raw)
            )
    if std:
        _report_floored(std, info, args.data)
    Xtr = _transform(std, Xtr_raw) if std else Xtr_raw
    Xte = _transform(std, Xte_raw) if std else Xte_raw
    jac_tr, jac_te = (_jacobian(std, part, n_missing) for part in (Xtr_raw, Xte_raw))
    max_iter = args.max_iter if args.max_iter is not None else _default_iter(args.method)
    hidden = tuple(int(h) for h in args.hidden)
    common = {
        "activation": args.activation,
        "negative_slope": 0.1 if args.negative_slope is None else args.negative_slope,
        "noise": args.noise,
        "min_noise_std": args.min_noise_std,
    }
    t0 = time.perf_counter()
    vae = None
    if args.method in EXACT_METHODS:
        given = {
            "max_iter": args.max_iter,
            "tol": args.tol,
            "n_init": args.n_init,
            "init": args.init,
        }
        model = ExactDGN(
            latent_dim=args.latent_dim,
            hidden_sizes=hidden,
            method=args.method,
            weight_decay=args.weight_decay,
            random_state=args.seed,
            progress=not args.no_progress,
            **{k: v for k, v in given.items() if v is not None},
            **common,
        )
        checkpoint = None
        if args.checkpoint:  # its folder is made by the first save (none left by an error)
            checkpoint = Path(args.checkpoint)
            if checkpoint.exists():
                print(f"resuming from checkpoint {checkpoint}", file=sys.stderr)
        missing_rows = ()  # catches nothing in memory (NaN = missing there)
        if client is not None:
            from .dask._em import MissingRowsError as missing_rows
        try:
            _run_quietly(model.fit, Xtr, checkpoint=checkpoint)
        except missing_rows as exc:  # a cluster's chunk of the training split: rows of DATA
            rows = np.setdiff1d(np.arange(X.shape[0]), test_index)[exc.rows]
            raise CLIError(
                f"{args.data} has missing values (NaN) in rows {rows.tolist()} (the first "
                "found; numbered from 0 in the file): on a dask cluster fit needs complete "
                "rows; drop those rows, or fit in memory (without --scheduler / --workers) to "
                "train on log p(x_obs)"
            ) from None
        except CheckpointMismatchError as exc:
            raise CLIError(_resume_refusal(checkpoint, exc, model.max_iter)) from None
        except KeyboardInterrupt:
            if checkpoint and checkpoint.exists():
                raise _Interrupted(
                    f"{checkpoint} keeps the last iteration: run the same command again to resume"
                ) from None
            if checkpoint:
                raise _Interrupted(
                    f"no checkpoint was written yet (stopped before the first iteration "
                    f"ended); the same command starts over and saves to {checkpoint}"
                ) from None
            raise
        max_iter = model.max_iter
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
        history = vae.history_  # the same rows as ExactDGN's (loglik: the VAE's objective)
        n_iter = int(vae.n_iter_)
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
        "seconds": seconds,  # this command's training (after a resume: since the resume)
        # every iteration's wall time, those before a resume included (the history's rows)
        "seconds_iterations": float(sum(h.get("seconds", 0.0) for h in history)),
        "n_regions": model.n_regions_,
        "noise_std_mean": float(np.mean(model.noise_std_)),
        "train_loglik": float(ll_tr.mean()),
        "train_loglik_data": float(np.mean(ll_tr + jac_tr)),
        "n_missing": n_missing,  # > 0: the log-likelihoods are log p(x_obs)
    }
    ll_te = _score_values(model, Xte) if len(Xte) else None
    results["test_loglik"] = float(ll_te.mean()) if ll_te is not None else None
    results["test_loglik_data"] = float(np.mean(ll_te + jac_te)) if ll_te is not None else None
    if vae is not None:
        for name, part in (("train", Xtr), ("test", Xte)):
            ev = evaluate_vae(vae, model, part, seed=args.seed, k_is=args.k_is)
            for k, v in ev.items():
                if k != "exact":
                    results[f"{name}_{k}"] = v
    model.preprocessing_ = std  # the saved model takes data in data units
    from .datasets import csv_header

    names = csv_header(args.data) if Path(args.data).is_file() else None
    if names is not None:  # a CSV's columns: score / impute check a CSV's header against them
        model.feature_names_in_ = np.asarray(names, dtype=object)
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

    def write(folder: Path) -> None:
        model.save(folder / "model.npz")
        write_json(folder / "config.json", config)
        write_json(folder / "history.json", history)
        write_json(folder / "results.json", results)

    _write_run(out, write)
    msg = f"exact train log-likelihood: {results['train_loglik']:.6f} nats/point"
    if results["test_loglik"] is not None:
        msg += f" (held-out: {results['test_loglik']:.6f})"
    print(msg)
    if std:
        print(
            f"  in data units (with the standardization Jacobian {np.mean(jac_tr):.4f}): "
            f"{results['train_loglik_data']:.6f}"
        )
    print(
        f"{args.method}: {_count(n_iter, 'iteration')}, {_count(model.n_regions_, 'region')}, "
        f"{seconds:.2f}s; "
        f"model written to {out}/model.npz"
    )
    return 0


# ---------------------------------------------------------------------- impute
def _impute(args) -> int:
    if args.seed is not None and args.method != "sample":
        raise CLIError(
            f"--seed is the seed of --method sample (the draws); --method {args.method} draws "
            "nothing: remove --seed, or add --method sample"
        )
    with _cluster(args) as client:
        return _impute_in(args, client)


def _impute_in(args, client) -> int:
    """NaNs of a data file filled from the model's exact conditional ``p(x_mis | x_obs)``."""
    _check_data_options(args)  # (--key on a file that is not a .npz)
    model, _ = load_model(args.model)  # carries its standardization: data units in and out
    out = Path(args.out)
    if out.suffix not in (".npy", ".csv"):
        raise CLIError(f"--out must end in .npy or .csv, got {args.out!r}")
    if args.std_out and Path(args.std_out).suffix not in (".npy", ".csv"):
        raise CLIError(f"--std-out must end in .npy or .csv, got {args.std_out!r}")
    if args.std_out and Path(args.std_out).resolve() == out.resolve():
        raise CLIError(
            f"--std-out {args.std_out} is the --out file: give the conditional std its own file"
        )
    inputs = [(args.data, "DATA"), (args.model, "MODEL")]
    # before the imputation, and --out not written when --std-out fails
    _check_out_file(out, inputs=inputs)
    if args.std_out:
        _check_out_file(args.std_out, "--std-out", inputs=inputs)
    if client is None:
        X, _ = load_data(args.data, key=args.key, allow_nan=True)
        _check_width(model, X, args.data, args.model)
        # rows with nothing observed get the model's marginal (ExactDGN.impute)
        res = model.impute(
            X, method=args.method, random_state=args.seed, return_std=bool(args.std_out)
        )
    else:
        from .dask import impute

        X, _ = _load_data_for(args, client, key=args.key, allow_nan=True)
        _check_width(model, X, args.data, args.model)
        res = impute(
            model, X, method=args.method, random_state=args.seed, return_std=bool(args.std_out)
        )
        from .dask import write_rows

        # written block by block as the workers finish them (the client never holds the whole
        # output); both outputs from one graph: each chunk read and imputed once
        arrays, paths = ([*res], [out, Path(args.std_out)]) if args.std_out else ([res], [out])
        from .datasets import csv_header

        # a CSV's column names kept in a CSV output, as in memory
        n_rows = write_rows(arrays, paths, client=client, header=csv_header(args.data))
        print(f"missing values filled ({args.method}) in {_count(n_rows, 'row')}: {out}")
        return 0
    filled, std = res if args.std_out else (res, None)
    n_missing = int(np.isnan(X).sum())
    from .datasets import csv_header

    header = csv_header(args.data)  # a CSV's column names, kept in a CSV output
    outputs = [(out, filled)] + ([(Path(args.std_out), std)] if args.std_out else [])
    _save_arrays(outputs, header)
    print(
        f"{_count(n_missing, 'missing value')} filled ({args.method}) in "
        f"{_count(len(filled), 'row')}: {out}"
    )
    return 0


# ---------------------------------------------------------------------- score / sample
def _score(args) -> int:
    with _cluster(args) as client:
        return _score_in(args, client)


def _score_in(args, client) -> int:
    _check_data_options(args)
    if args.out:
        # before the scoring, not after it
        _check_out_file(
            args.out, inputs=[(args.data, "DATA"), (args.model, "MODEL")], suffixes=(".csv",)
        )
    model, cfg = load_model(args.model)
    data_cfg = cfg.get("data", {})
    same = _same_data(data_cfg, args.data)
    n_samples = args.n_samples
    if n_samples is None and same:  # the run's rows of its own DATA (any kind of data)
        # (runs written before files recorded it: the fit's --n-samples option)
        n_samples = data_cfg.get("n_samples", cfg.get("options", {}).get("n_samples"))
        if n_samples is not None and data_cfg.get("kind") != "toy":
            print(
                f"scoring the first {n_samples} rows of {args.data}, as the run was fit on "
                "(give --n-samples to score another number)",
                file=sys.stderr,
            )
    # the run's other data options, for data of the same kind (not mnist's --classes for
    # digits, where they are an error)
    kind = _data_kind(data_cfg["spec"]) if "spec" in data_cfg else None
    run_cfg = data_cfg if kind == _data_kind(args.data) else {}

    def option(given, name):
        return given if given is not None else run_cfg.get(name)

    X, _ = _load_data_for(
        args,
        client,
        n_samples=n_samples,
        noise=option(args.data_noise, "noise"),
        data_seed=option(args.data_seed, "random_state"),
        classes=option(args.classes, "classes"),
        downsample=option(args.downsample, "downsample"),
        key=option(args.key, "key"),
        allow_nan=True,  # NaN = missing: log p(x_obs) (in memory and on a cluster)
    )
    _check_width(model, X, args.data, args.model)
    if isinstance(X, np.ndarray):
        from .inference import check_missing

        check_missing(X, name=args.data)  # rows with nothing observed, named by the file
    if args.split != "all":
        if not data_cfg:
            raise CLIError(
                f"--split {args.split} needs the config.json of the run (its test rows): give "
                f"the output directory of 'exactdgn fit'; {args.model} has none beside it"
            )
        if not same and "sha256" in data_cfg and isinstance(X, np.ndarray):
            # another file with the run's values (d.csv for the d.npy it was fit on)
            same = list(X.shape) == data_cfg.get("shape") and (
                _values_digest(X) == data_cfg["sha256"]
            )
        if not same or list(X.shape) != data_cfg.get("shape"):
            got = f"{args.data}" if not same else f"{args.data} of shape {list(X.shape)}"
            raise CLIError(
                f"--split {args.split} needs the data the model was fit on "
                f"({data_cfg.get('spec')} of shape {data_cfg.get('shape')}), got {got}: give "
                "that DATA with the fit's data options"
            )
        if "sha256" in data_cfg and isinstance(X, np.ndarray):
            if _values_digest(X) != data_cfg["sha256"]:
                raise CLIError(
                    f"--split {args.split} needs the data the model was fit on: {args.data} "
                    f"has its shape but other values than {data_cfg.get('path')} had then "
                    "(changed since, or another file of the same name)"
                )
        test = np.zeros(len(X), dtype=bool)
        test[np.asarray(cfg.get("test_index", []), dtype=int)] = True
        rows = np.flatnonzero(test if args.split == "test" else ~test)  # of DATA
        if len(rows) == 0:
            raise CLIError(f"the {args.split} split is empty")
        X = X[rows]
        if client is not None:  # (in memory DATA was checked as a whole when read)
            _check_split_finite(X, rows, args.data)
    else:
        rows = np.arange(len(X))
    # the model carries its standardization; applied here (block by block on a cluster) and
    # the model scored in its standardized units
    std, model.preprocessing_ = getattr(model, "preprocessing_", None), None
    if client is not None and std:  # each row's Jacobian (its observed values) on the workers
        import dask

        from .dask import score_samples
        from .dask._score import log_jacobian_rows

        ll, jac = dask.compute(score_samples(model, _transform(std, X)), log_jacobian_rows(std, X))
    else:
        jac = _jacobian(std, X, _report_missing(X, client))
        ll = _score_values(model, _transform(std, X) if std else X)
    print(f"exact mean log p(x): {ll.mean():.6f} nats/point over {_count(len(X), 'point')}")
    if std:
        print(
            f"  in data units: {np.mean(ll + jac):.6f} (standardization Jacobian "
            f"{np.mean(jac):.4f})"
        )
    if args.out:
        table = np.column_stack([rows, ll, ll + jac])  # index: the row of DATA
        _write_csv(args.out, table, ["index", "log_px", "log_px_data"])
    return 0


def _check_rows_to_train(X, data: str) -> None:
    """DATA (a dask array) read once before a fit on the cluster: infinite values, NaN and
    values beyond ``MAX_TRAINING_VALUE`` are errors naming DATA's rows (the workers' checks
    named rows of a split, or columns when the standardization's moments came first)."""
    import dask.array as da

    from ._validation import MAX_TRAINING_VALUE

    with np.errstate(invalid="ignore"):
        inf, nan, big = (
            np.asarray(a)
            for a in da.compute(
                da.isinf(X).any(axis=1),
                da.isnan(X).any(axis=1),
                (da.fabs(X) > MAX_TRAINING_VALUE).any(axis=1) & da.isfinite(X).all(axis=1),
            )
        )
    if inf.any():
        raise CLIError(
            f"{data}: infinite values in rows {np.flatnonzero(inf)[:5].tolist()} (the first "
            "found; numbered from 0 in the file); remove them first"
        )
    if nan.any():
        raise CLIError(
            f"{data} has missing values (NaN) in rows {np.flatnonzero(nan)[:5].tolist()} (the "
            "first found; numbered from 0 in the file): on a dask cluster fit needs complete rows; "
            "drop those rows, or fit in memory (without --scheduler / --workers) to train on "
            "log p(x_obs)"
        )
    if big.any():
        raise CLIError(
            f"{data}: values beyond {MAX_TRAINING_VALUE:.0e} in rows "
            f"{np.flatnonzero(big)[:5].tolist()} (the first found; numbered from 0 in the file): "
            "their squares (the data's variance) overflow float64; such a value is a data "
            "error: remove or rescale those rows"
        )


def _check_split_finite(X, rows: np.ndarray, data: str) -> None:
    """The rows of a split of DATA read by the workers (a dask array): infinite values are an
    error naming DATA's rows (the workers' own check would name rows of the split)."""
    import dask.array as da

    bad = np.asarray(da.isinf(X).any(axis=1).compute())
    if bad.any():
        n = int(np.asarray(da.isinf(X).sum().compute()))
        raise CLIError(
            f"{data}: {n} infinite values (first bad rows, 0-based: {rows[bad][:5].tolist()}); "
            "remove them first"
        )


def _write_csv(path, table, header: list[str]) -> None:
    """A per-point table (first column the row index) as CSV, written atomically."""
    from .datasets import csv_line

    _write_output(
        path,
        lambda fh: np.savetxt(
            fh,
            table,
            delimiter=",",
            header=csv_line(header),
            comments="",
            fmt=["%d"] + ["%.17g"] * (len(header) - 1),
        ),
    )
    print(f"per-point values written to {path}")


def _sample(args) -> int:
    model, _ = load_model(args.model)
    if args.out:
        _check_out_file(args.out, inputs=[(args.model, "MODEL")], suffixes=(".npy", ".csv"))
    std = getattr(model, "preprocessing_", None)
    if args.standardized and not std:
        raise CLIError(
            f"--standardized: {args.model} has no standardization (its samples are in the units "
            "it was trained on): remove the option"
        )
    X = model.sample(args.n, random_state=args.seed)  # data units (its standardization)
    if std and args.standardized:
        X = std.transform(X)
    names = getattr(model, "feature_names_in_", None)  # a CSV's columns the model was fit on
    header = None if names is None else [str(n) for n in names]
    if args.out:
        out = Path(args.out)
        _save_array(out, X, header=header)
        print(f"{_count(args.n, 'sample')} of dimension {X.shape[1]} written to {out}")
    else:
        from .datasets import csv_line

        np.savetxt(  # as the files: every digit, the fit's header row
            sys.stdout,
            X,
            delimiter=",",
            fmt="%.17g",
            header=csv_line(header) if header else "",
            comments="",
        )
    return 0


# ---------------------------------------------------------------------- evaluate
def _noise_std(text: str):
    """``--noise-std``: a positive number, or a ``.npy`` / ``.csv`` / ``.txt`` file of one
    positive std per output (its length is checked against the decoder by the caller)."""
    try:
        values = float(text)
    except ValueError:
        path = Path(text)
        if not path.is_file():
            raise CLIError(
                f"--noise-std {text} is neither a number nor a file: give one std (e.g. 0.1) "
                "or a .npy / .csv file of one std per output"
            ) from None
        try:
            if path.suffix == ".npy":
                values = np.load(path, allow_pickle=False)
            else:  # as DATA files are read: a header row of names, # comments, quotes
                from .datasets import load_array

                values = load_array(path)
            values = np.asarray(values, dtype=np.float64)
        except (ValueError, OSError) as exc:
            raise CLIError(f"--noise-std {text}: not a file of numbers ({exc})") from exc
        if values.ndim > 1 and sum(s > 1 for s in values.shape) > 1:
            raise CLIError(
                f"--noise-std {text} holds an array of shape {values.shape}: give one std per "
                "output, as one row or one column"
            ) from None
        values = values.ravel()
        if values.size == 1:  # a file of one value: one std for every output, as a number
            values = float(values[0])
    bad = ~(np.isfinite(values) & (np.asarray(values) > 0))
    if np.any(bad):
        what = f"{int(np.sum(bad))} of its values are not" if np.ndim(values) else "it is not"
        raise CLIError(
            f"--noise-std {text} is invalid: {what} positive and finite; give the observation "
            "noise std (e.g. 0.1), or one positive std per output"
        )
    return values


def _check_noise_length(text: str, noise_std, n_outputs: int) -> None:
    if np.ndim(noise_std) == 1 and len(noise_std) != n_outputs:
        raise CLIError(
            f"--noise-std {text} has {len(noise_std)} values but the decoder has {n_outputs} "
            "outputs: give one std per output, or a single number"
        )


#: evaluate's options that apply with ``--encoder`` only (an error without it)
ENCODER_OPTIONS = (
    "encoder_hidden",
    "encoder_activation",
    "encoder_output",
    "k_iwae",
    "k_is",
    "seed",
)


def _check_encoder_options(args, parser_defaults: dict) -> None:
    if args.encoder:
        return
    for dest in ENCODER_OPTIONS:
        if getattr(args, dest) != parser_defaults[dest]:
            raise CLIError(
                f"--{dest.replace('_', '-')} applies with --encoder only (the encoder's ELBO / "
                "IWAE / IS estimates): give the encoder's weights with --encoder, or remove it"
            )


def _evaluate(args) -> int:
    from .evaluation import evaluate_external, load_torch_decoder, load_torch_encoder

    _torch_threads(args.threads)
    _check_data_options(args)
    _check_encoder_options(args, args.encoder_defaults)
    if args.out:
        inputs = [(args.data, "DATA"), (args.decoder, "DECODER"), (args.encoder, "--encoder")]
        _check_out_file(args.out, inputs=inputs, suffixes=(".csv",))
    noise_std = _noise_std(args.noise_std)
    if args.negative_slope is not None and args.activation != "leaky_relu":
        raise CLIError(
            f"--negative-slope applies to --activation leaky_relu only (the activation is "
            f"{args.activation or 'relu'}): remove it, or add --activation leaky_relu"
        )
    dec = load_torch_decoder(
        args.decoder,
        layers=args.layers,
        # None unless given: a pickled module refuses any --activation (it has its own)
        activation=args.activation,
        negative_slope=args.negative_slope,
        unsafe_pickle=args.unsafe_pickle,
    )
    _check_noise_length(args.noise_std, noise_std, dec.output_dim)
    X, _ = load_data(args.data, n_samples=args.n_samples, key=args.key)
    if X.shape[1] != dec.output_dim:
        raise CLIError(f"the decoder outputs {dec.output_dim} values but DATA has {X.shape[1]}")
    enc = None
    if args.encoder:
        enc = load_torch_encoder(
            args.encoder,
            n_features=X.shape[1],
            latent_dim=dec.latent_dim,
            hidden=args.encoder_hidden,
            activation=args.encoder_activation,
            output=args.encoder_output,
            unsafe_pickle=args.unsafe_pickle,
        )
    per, summ = _run_quietly(  # its warnings (a degenerate IS estimate) printed as the CLI's
        evaluate_external,
        dec,
        noise_std,
        X,
        encoder=enc,
        seed=args.seed,
        k_iwae=args.k_iwae,
        k_is=args.k_is,
        progress=not args.no_progress,
    )
    print(
        f"decoder {dec.layer_sizes}, {_count(summ['n_regions'], 'region')}; exact mean log p(x): "
        f"{summ['exact']:.6f} nats/point over {_count(summ['n_points'], 'point')}"
    )
    for key in [k for k in summ if k.startswith("gap_")]:
        est = key[4:]
        se = f" +/- {summ['se_' + est]:.6f}" if f"se_{est}" in summ else ""
        print(f"  {est:>10s}: {summ[est]:.6f} (exact - {est} = {summ[key]:.6f}{se})")
    if args.out:
        cols = list(per)
        table = np.column_stack([np.arange(len(X))] + [per[c] for c in cols])
        _write_csv(args.out, table, ["index", *cols])
    return 0


# ---------------------------------------------------------------------- partition
def _partition_cmd(args) -> int:
    from . import Decoder, partition

    if (args.model is None) == (args.layers is None):
        raise CLIError("give either a MODEL (file or fit directory) or --layers d ... D")
    for dest in ("seed", "activation"):
        if args.model is not None and getattr(args, dest) is not None:
            raise CLIError(
                f"--{dest} applies to a random decoder (--layers), not to MODEL {args.model}: "
                f"remove --{dest}"
            )
    if args.plot:  # before the partition is enumerated (a model's at its loading)
        d = args.layers[0] if args.layers is not None else _saved_latent_dim(args.model)
        _check_plot(args.plot, d)
    if args.model is not None:
        model, _ = load_model(args.model)
        part = model.partition_
    else:
        dec = Decoder.random(
            args.layers,
            activation=args.activation or "leaky_relu",
            seed=0 if args.seed is None else args.seed,
        )
        part = partition(dec)
    summ = part.summary()
    print(json.dumps(summ, indent=2, default=json_default))
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
        fmt = Path(args.plot).suffix.lstrip(".").lower() or None  # the temporary name differs
        _write_output(args.plot, lambda fh: fig.savefig(fh, format=fmt, dpi=120))
        plt.close(fig)
        print(f"plot written to {args.plot}", file=sys.stderr)  # stdout: the JSON alone
    return 0


def _saved_latent_dim(path) -> int | None:
    """The latent dimension of a saved model read from its file's metadata, without loading
    it (loading enumerates the partition); ``None`` when unreadable (``load_model`` then says
    why)."""
    from .io import read_npz

    p = Path(path)
    p = p / "model.npz" if p.is_dir() else p
    try:
        return int(read_npz(p)[1]["params"]["latent_dim"])
    except Exception:  # load_model reports what is wrong with the file
        return None


def _check_plot(path, latent_dim: int | None) -> None:
    """``partition --plot``: a latent dimension it can draw, an image format matplotlib
    writes, a file path that can be made."""
    if latent_dim is not None and latent_dim > 2:
        raise CLIError(
            f"--plot draws latent dimension 1 or 2, not {latent_dim}: remove --plot (the "
            "partition's summary is printed without it)"
        )
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix and suffix not in formats:
        raise CLIError(
            f"--plot {path}: matplotlib cannot write .{suffix} files; use one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. partition.png)"
        )
    _check_out_file(path, "--plot")


# ---------------------------------------------------------------------- report
def _report(args) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(f"{root} is not a directory")
    files = sorted(p for p in root.rglob("*.json") if "results" in p.name)
    if args.out:  # before the table, not after it; not over a results file it reads
        _check_out_file(args.out, inputs=[(f, "results") for f in files])
    if not files:
        raise CLIError(f"no results JSON files (named *results*.json) under {root}")
    rows = []
    for f in files:
        try:
            obj = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CLIError(f"{f} is not valid JSON ({exc})") from exc
        items = obj.get("rows", [obj]) if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise CLIError(
                f"{f} holds {type(items).__name__}: a results file holds a JSON object, a list "
                'of them, or {"rows": [...]}'
            )
        for item in items:
            if not isinstance(item, dict):
                raise CLIError(
                    f"{f} holds a list with a {type(item).__name__} in it: a results file holds "
                    'a JSON object, a list of them, or {"rows": [...]}'
                )
            rows.append({"file": str(f.relative_to(root)), **flatten(item)})
    text = markdown_table(rows)
    print(text)
    if args.out:
        _write_output(args.out, lambda fh: fh.write((text + "\n").encode()))
    return 0


# ---------------------------------------------------------------------- demo
def _demo(args) -> int:
    """``exactdgn demo``: a folder it made is removed again after an error or a Ctrl-C."""
    import shutil

    _torch_threads(args.threads)
    out = Path(args.out)
    _check_out_folder(out)
    fitted = [n for n in ("model.npz", "history.json") if (out / n).exists()]
    if fitted:  # a fit's run: the demo's config.json / results.json would replace its own
        raise CLIError(
            f"--out {out} holds a fit run ({', '.join(fitted)}): give the demo its own folder"
        )
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        table = run_demo(
            out,
            seed=args.seed,
            em_iter=args.em_iter,
            quick=args.quick,
            progress=not args.no_progress,
            threads=args.threads,
            report=lambda msg: print(msg, flush=True),
        )
    except BaseException:
        if made:  # the outermost folder this command made, with what it wrote
            shutil.rmtree(made[-1], ignore_errors=True)
        raise
    print()
    print(table)
    return 0


# ---------------------------------------------------------------------- parser
def _add_data_options(p) -> None:
    g = p.add_argument_group("data options")
    g.add_argument(
        "--n-samples",
        type=_positive_int,  # as evaluate's: -1 was a slice end (all rows but the last)
        default=None,
        help="toy sets: number of points (default 1000); other data: keep the first N",
    )
    g.add_argument(
        "--data-noise", type=_at_least(0.0, float), default=None, help="toy sets: noise level"
    )
    g.add_argument("--data-seed", type=_seed, default=None, help="toy sets: data seed (default 0)")
    g.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=None,
        help="mnist: keep these classes (digits: use digits:3)",
    )
    g.add_argument("--downsample", type=int, default=None, help="mnist: side length, e.g. 14")
    g.add_argument("--key", default=None, help=".npz files: the array to use (e.g. X)")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for required options and options without a default."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``exactdgn`` argument parser (sub-commands fit, score, sample, partition, report,
    demo)."""
    p = argparse.ArgumentParser(
        prog="exactdgn",
        description="Exact likelihood, posterior and EM for piecewise-affine generative networks.",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"exactdgn {__version__}")

    def global_options(parser, default):
        parser.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0 if default else argparse.SUPPRESS,
            help="more logging (-vv: also the traceback of an error)",
        )
        parser.add_argument(
            "--threads",
            type=_positive_int,
            default=1 if default else argparse.SUPPRESS,
            help="torch threads (1 is fastest for these small networks)",
        )

    global_options(p, True)
    # the same options after the command (`exactdgn fit ... --threads 2`); given there, they
    # replace the ones given before it
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    f = command(
        "fit",
        help="train a model (exact EM, exact gradient, VAE or IWAE)",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    f.add_argument("data", metavar="DATA", help="built-in name or file (see examples)")
    f.add_argument("--out", required=True, help="output directory (required)")
    f.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it a folder holding model.npz, "
        "config.json, history.json or results.json is refused, except the folder of this "
        "run's own --checkpoint: a resume writes there again)",
    )
    f.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="exact training (auto: EM, then L-BFGS; em; lbfgs; gradient) or a baseline",
    )
    f.add_argument(
        "--latent-dim", type=_positive_int, default=1, help="latent dimension d (default: 1)"
    )
    f.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=[12],
        help="hidden layer widths (default: 12)",
    )
    f.add_argument(
        "--activation",
        default="leaky_relu",
        choices=["relu", "leaky_relu", "prelu", "abs"],
        help="hidden activation",
    )
    f.add_argument(
        "--negative-slope",
        type=float,
        default=None,
        help="slope below 0 of leaky_relu, start of prelu's (default: 0.1)",
    )
    f.add_argument(
        "--noise", choices=["isotropic", "diagonal"], default="isotropic", help="noise model"
    )
    f.add_argument(
        "--min-noise-std",
        type=_at_least(0.0, float, strict=True),
        default=1e-3,
        help="noise std floor (default: 1e-3)",
    )
    f.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help=f"iterations of exact training (default: {FIT_DEFAULTS['max_iter']}) / VAE epochs "
        "(default: 300)",
    )
    f.add_argument("--seed", type=_seed, default=0, help="model seed and train/test split seed")
    f.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction")
    f.add_argument(
        "--standardize",
        choices=["auto", "on", "off"],
        default="auto",
        help="per-feature standardization (auto: on for image data and for files with more "
        "than 2 columns)",
    )
    f.add_argument(
        "--std-floor",
        type=float,
        default=None,
        help="standardization: scale floor relative to the largest feature std (default: "
        f"{STD_FLOOR} for image data, digits and mnist, so that near-constant pixels are not "
        f"blown up; {FEATURE_STD_FLOOR:g} for files and toy sets, so that each column is scaled "
        "by its own std whatever its units; a column scaled by the floor is reported)",
    )
    g = f.add_argument_group("exact training options (auto, em, lbfgs, gradient)")
    g.add_argument(
        "--tol",
        type=_tol,
        default=None,
        help="stop when the mean gain per iteration over the last 10 is below this "
        "(nats/point; default: auto, 1e-3 for --latent-dim 1 and 1e-5 otherwise)",
    )
    g.add_argument(
        "--n-init",
        type=_positive_int,
        default=None,
        help=f"starts, the best kept (default: {FIT_DEFAULTS['n_init']})",
    )
    g.add_argument(
        "--init",
        choices=["auto", "pca", "random"],
        default=None,
        help="start (default: auto: PCA and random scouted, the better goes on)",
    )
    g.add_argument(
        "--weight-decay",
        type=_at_least(0.0, float),
        default=0.0,
        help="L2 penalty on weights (default: 0)",
    )
    g.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="write the training state here (at most every 5 s, and on Ctrl-C: the last completed "
        "iteration; a run killed outright repeats at most those 5 s); if PATH exists the run "
        "resumes from it (Ctrl-C, then the same command again). A resume may raise --max-iter "
        "and change --tol (e.g. continue a finished run for more iterations): the result is "
        "that of a run with them from the start (a start that already meets a larger --tol "
        "stops where it is); another DATA, data option, architecture, --seed, --method, "
        "--noise, ... is refused, naming the option",
    )
    g = f.add_argument_group("vae / iwae options")
    g.add_argument("--k", type=_positive_int, default=5, help="IWAE importance samples")
    g.add_argument(
        "--encoder-hidden", type=_positive_int, nargs="+", default=[64, 64], help="encoder widths"
    )
    g.add_argument(
        "--lr", type=_at_least(0.0, float, strict=True), default=1e-3, help="Adam learning rate"
    )
    g.add_argument("--batch-size", type=_positive_int, default=128, help="minibatch size")
    g.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="early-stopping split of the training data (0: off)",
    )
    g.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    g.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="VAE training precision (evaluation is always float64)",
    )
    g.add_argument(
        "--k-is", type=_positive_int, default=5000, help="importance samples for log p(x)"
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_options(f)
    _add_cluster_options(f)
    f.set_defaults(func=_fit)

    s = command(
        "score",
        help="exact log-likelihood of data under a fitted model",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    s.add_argument("model", metavar="MODEL", help="fit output directory or model .npz")
    s.add_argument(
        "data", metavar="DATA", help="built-in name or file; NaN = missing: log p(x_obs)"
    )
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

    im = command(
        "impute",
        help="fill the NaNs of a data file from the exact conditional p(x_mis | x_obs)",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    im.add_argument("model", metavar="MODEL", help="fit output directory or model .npz")
    im.add_argument("data", metavar="DATA", help=".csv / .npy / .npz file, NaN where missing")
    im.add_argument("--out", required=True, help="filled data, .npy or .csv (required)")
    im.add_argument(
        "--method",
        choices=["mean", "mode", "sample"],
        default="mean",
        help="conditional mean, g(MAP z), or one exact conditional draw",
    )
    im.add_argument("--seed", type=_seed, default=None, help="seed of --method sample")
    im.add_argument(
        "--std-out", default=None, help="also write the exact conditional std (.npy or .csv)"
    )
    im.add_argument("--key", default=None, help="array name inside a .npz DATA")
    _add_cluster_options(im)
    im.set_defaults(func=_impute)

    m = command(
        "sample",
        help="draw samples from a fitted model",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    m.add_argument("model", metavar="MODEL")
    m.add_argument("-n", type=_positive_int, required=True, help="number of samples")
    m.add_argument("--seed", type=_seed, default=None)
    m.add_argument("--out", default=None, help=".npy or .csv file (default: CSV on stdout)")
    m.add_argument(
        "--standardized",
        action="store_true",
        help="keep samples in standardized units (default: data units)",
    )
    m.set_defaults(func=_sample)

    q = command(
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
    q.add_argument(
        "--activation",
        default=None,
        choices=["relu", "leaky_relu", "prelu", "abs"],
        help="random decoder: activation (default: leaky_relu)",
    )
    q.add_argument("--seed", type=_seed, default=None, help="random decoder: seed (default: 0)")
    q.add_argument("--plot", default=None, help="save a plot of the partition (d <= 2)")
    q.set_defaults(func=_partition_cmd)

    r = command(
        "report",
        help="collect results JSON files under DIR into a table",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--out", default=None, help="also write the markdown table here")
    r.set_defaults(func=_report)

    e = command(
        "evaluate",
        help="exact log p(x) of a torch decoder trained elsewhere (ELBO/IWAE/IS gaps)",
        description="Exact log p(x) of a torch decoder trained elsewhere and, given its encoder,\n"
        "the ELBO, IWAE-k bound and importance-sampling estimate beside it (nats per point;\n"
        "the IS estimate with its standard error). DATA is scored as given (not\n"
        "standardized, unlike fit): give it in the units the decoder was trained on.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=_Formatter,
    )
    e.add_argument(
        "decoder",
        metavar="DECODER",
        help="decoder weights: .safetensors or a torch state dict (an MLP; see --layers)",
    )
    e.add_argument(
        "data",
        metavar="DATA",
        help="a .csv, .npy or .npz file (or a built-in name: digits, mnist:PATH, wave, ...), "
        "complete rows, scored as given (never standardized)",
    )
    e.add_argument(
        "--noise-std",
        required=True,
        help="observation noise std: a number, or a .npy / .csv file of one std per output",
    )
    e.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="layer sizes d ... D of a state-dict decoder (checked; inferred when omitted)",
    )
    e.add_argument(
        "--activation",
        default=None,
        choices=["relu", "leaky_relu", "abs"],
        help="hidden activation of a state-dict decoder (default: relu; a pickled module has "
        "its own)",
    )
    e.add_argument(
        "--negative-slope", type=float, default=None, help="leaky_relu slope (default: 0.01)"
    )
    e.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="accept a pickled whole nn.Module: THIS EXECUTES CODE FROM THE FILE (trusted "
        "files only)",
    )
    e.add_argument("--n-samples", type=_positive_int, default=None, help="keep the first N points")
    e.add_argument("--key", default=None, help=".npz data: the array to use")
    e.add_argument("--out", default=None, help="per-point CSV (exact log p and estimates)")
    e.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (one per stage: regions, exact log p(x) over the points, then "
        "ELBO, IWAE-k and IS-k over points x samples); each stage's time is logged either way "
        "(-v), and the exact pass's estimated regions, memory and time before it (a warning "
        "when long)",
    )
    g = e.add_argument_group("encoder (ELBO / IWAE / IS estimates; these options need --encoder)")
    g.add_argument("--encoder", default=None, help="encoder weights, for ELBO / IWAE / IS")
    g.add_argument(
        "--encoder-hidden",
        type=_positive_int,
        nargs="*",
        default=None,
        help="encoder hidden widths (default: read from a GaussianEncoder state dict's weights)",
    )
    g.add_argument(
        "--encoder-activation",
        default="relu",
        choices=["relu", "leaky_relu", "tanh", "softplus", "elu"],
        help="encoder hidden activation",
    )
    g.add_argument(
        "--encoder-output",
        choices=["log_std", "log_var"],
        default="log_std",
        help="what the encoder's second output is (state dict or pickled module): the log "
        "std or the log variance (pythae)",
    )
    g.add_argument("--k-iwae", type=_positive_int, default=5, help="samples of the IWAE bound")
    g.add_argument(
        "--k-is", type=_positive_int, default=5000, help="importance samples of the IS estimate"
    )
    g.add_argument("--seed", type=_seed, default=0, help="seed of the encoder's samples")
    e.set_defaults(
        func=_evaluate,
        encoder_defaults={a.dest: a.default for a in g._group_actions if a.dest != "encoder"},
    )

    d = command(
        "demo",
        help="exact EM vs VAE on wave and digits; writes a report",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    d.add_argument(
        "--out",
        default="report",
        help="output directory (its report files are replaced: the demo runs again into it)",
    )
    d.add_argument("--seed", type=_seed, default=0, help="seed of the models and splits")
    d.add_argument(
        "--em-iter",
        type=_positive_int,
        default=40,
        help="EM iterations per data set (--quick: at most 5)",
    )
    d.add_argument("--quick", action="store_true", help="a few iterations only (smoke test)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage or data error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for dest in ("out", "std_out", "plot", "checkpoint", "data", "model", "decoder", "encoder"):
        if getattr(args, dest, None) is not None and not str(getattr(args, dest)).strip():
            # (an unset shell variable: `--out $DIR` wrote the run into the current folder)
            positional = ("data", "model", "decoder")
            name = dest.upper() if dest in positional else "--" + dest.replace("_", "-")
            parser.error(f"{name} is empty: give a path")
    logging.basicConfig(
        level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        detail = f"; {exc}" if isinstance(exc, _Interrupted) else ""
        print(f"exactdgn: interrupted{detail}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of a pipe stopped (exactdgn ... | head): quietly
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no later flush fails
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE
    except (ValueError, OSError, MemoryError, TypeError, KeyError) as exc:
        if interrupt_behind(exc) is not None:  # cleanup that failed after a Ctrl-C
            print("exactdgn: interrupted", file=sys.stderr)
            return 130
        if args.verbose >= 2:
            raise
        print(f"exactdgn: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``exactdgn`` program (console script, ``python -m exactdgn``): exits with
    :func:`main`'s code. After a handled Ctrl-C (130) it exits at once, streams flushed
    (the checkpoint is already written atomically): the interpreter's normal shutdown could
    end the process by SIGINT instead (exit -2, seen intermittently under test, as if the
    handled interrupt still counted as unhandled) and waits for the interrupted block's
    worker threads. A Ctrl-C before ``main``'s own handling (building the parser, parsing
    the arguments) ends the same way; one during the imports is :func:`exactdgn.__main__.run`'s.
    """
    try:
        code = main()
    except KeyboardInterrupt:
        print("exactdgn: interrupted", file=sys.stderr)
        code = 130
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
