"""Training curves scored with the exact likelihood (EM per iteration, refits, VAE epochs)."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from .._validation import check_array, is_int

__all__ = ["em_curve", "refit_curve", "vae_curve"]

logger = logging.getLogger(__name__)


def _em_model(**params):
    from ..model import ExactDGN

    return ExactDGN(**params)


def _check_schedule(schedule, low: int) -> list[int]:
    """The epochs of ``schedule`` as ints (each an integer >= ``low``; at least one)."""
    marks = list(schedule)
    if not marks or not all(is_int(e, low) for e in marks):
        raise ValueError(f"schedule must hold epoch counts (integers >= {low}), got {marks}")
    return [int(e) for e in marks]


def _check_data(Xtr, Xte) -> tuple[np.ndarray, np.ndarray]:
    """``Xtr`` (N, D) with N >= 1 and ``Xte`` (M, D), M >= 0, as float arrays (NaN = missing),
    checked before any training (a bad ``Xte`` was found only after the first iteration)."""
    Xtr = check_array(Xtr, name="Xtr", allow_nan=True)
    if len(Xtr) == 0:
        raise ValueError(f"Xtr has no rows (shape {Xtr.shape}): give the training data")
    Xte = check_array(Xte, name="Xte", n_features=Xtr.shape[1], allow_nan=True)
    return Xtr, Xte


def em_curve(Xtr, Xte, *, max_iter: int, progress: bool = False, **params) -> tuple:
    """Run exact training once and evaluate the exact held-out NLL after every iteration.

    One ``fit`` with a callback (the run's step-size state carries from iteration to
    iteration); ``method`` defaults to ``"em"``, ``tol`` and ``rel_tol`` to 0 (a fixed budget,
    unless ``n_iter_no_change`` iterations gain nothing: ``rel_tol="auto"`` would end an
    expensive run after a few iterations); other parameters are ``ExactDGN``'s defaults. The
    seconds counted are those training spends in partition, E-step and M-step (``history_``),
    not the extra evaluation.

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
        data and at iteration 0), ``n_regions``, ``backtracks``, ``seconds_partition``,
        ``seconds_estep``, ``seconds_mstep`` (per iteration).
    """
    from tqdm.auto import tqdm

    from ..model import ExactDGN

    Xtr, Xte = _check_data(Xtr, Xte)
    if params.get("n_init", 1) != 1:  # the callback sees every start, history_ the best one
        raise ValueError(
            f"em_curve follows one run: n_init={params['n_init']!r} is invalid, use 1 (for "
            "several starts, one curve per random_state, as the experiments do)"
        )
    params = {"tol": 0.0, "rel_tol": 0.0, "method": "em", **params}
    params |= {"max_iter": max_iter, "progress": False}
    model = _em_model(**params)
    test_nll = [float("nan")]
    bar = tqdm(total=max_iter, desc="EM", disable=not progress, leave=False)

    def record(it, snapshot):
        if len(Xte):
            dec, std = snapshot()
            test_nll.append(
                -ExactDGN.from_decoder(dec, std, prune_nats=model.prune_nats).score(Xte)
            )
        else:
            test_nll.append(float("nan"))
        bar.update(1)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xtr, callback=record)
    finally:
        bar.close()
    keys = ("seconds_partition", "seconds_estep", "seconds_mstep")
    curve = {
        "iter": [h["iter"] for h in model.history_],
        "seconds": np.cumsum([sum(h[k] for k in keys) for h in model.history_]).tolist(),
        "train_nll": [-h["loglik"] for h in model.history_],
        "test_nll": test_nll,
        "n_regions": [int(h["n_regions"]) for h in model.history_],
        "backtracks": [int(h["backtracks"]) for h in model.history_],
        **{k: [float(h[k]) for h in model.history_] for k in keys},
    }
    return model, curve


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
        Iterations / epochs (integers >= 0).
    to_exact : callable ``estimator -> ExactDGN``, optional
        How to get the exact model (default: the estimator itself).

    Returns
    -------
    est : the estimator of the last ``e``
    curve : dict of lists ``iter``, ``seconds``, ``train_nll``, ``test_nll``, ``n_regions``
    """
    from tqdm.auto import tqdm

    marks = _check_schedule(schedule, 0)
    if marks != sorted(set(marks)):
        raise ValueError(f"schedule must be increasing (each refit trains longer), got {marks}")
    Xtr, Xte = _check_data(Xtr, Xte)
    curve = {k: [] for k in ("iter", "seconds", "train_nll", "test_nll", "n_regions")}
    est = None
    for e in tqdm(marks, desc="refit", disable=not progress, leave=False):
        est = make(e)
        if to_exact is None and not callable(getattr(est, "posterior", None)):
            raise TypeError(  # before the first fit: its bound would be taken for log p(x)
                f"refit_curve scores the exact likelihood: make returned a "
                f"{type(est).__name__}; pass to_exact (for a VAE / IWAE: "
                "exactdgn.evaluation.vae_to_exact)"
            )
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
    seconds are the training time up to each epoch (the exact scoring is not counted, nor the
    evaluation of the initial parameters that only records ``history_[0]``).

    Each point scores the decoder as it is at the end of that epoch. A run that stops early
    (with ``validation_fraction > 0``: ``patience`` epochs without a validation improvement)
    ends the curve at the last scheduled epoch that ran: it is then shorter than the schedule,
    without a warning (empty when it stopped before the first one); ``est.n_iter_`` and
    ``est.stopped_early_`` tell.

    Parameters
    ----------
    make : callable ``e -> estimator``
        A :class:`exactdgn.baselines.VAE` or ``IWAE`` training for ``e`` epochs.
    Xtr, Xte : ndarray (N, D), (M, D)
        Training data (all of it is scored, the estimator's validation split included) and
        held-out data (``Xte`` may have 0 rows: NaN test NLL).
    schedule : sequence of int
        Epochs to score (>= 1; sorted, a repeated one counted once).

    Returns
    -------
    est : the fitted estimator of the one run
        It holds the parameters of ``est.best_iter_``: with a validation split the best
        validation epoch (early stop or not), which may be none of the curve's points; without
        one the last epoch (``max(schedule)``, the curve's last point).
    curve : dict of lists ``iter``, ``seconds``, ``train_nll``, ``test_nll``, ``n_regions``
        One entry per scheduled epoch that ran, in increasing order.
    """
    from ..model import ExactDGN

    marks = sorted(set(_check_schedule(schedule, 1)))
    Xtr, Xte = _check_data(Xtr, Xte)
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
    start = est.history_[0]["seconds"]  # recording row 0 is not training
    curve["seconds"] = [t - start for t in curve["seconds"]]
    return est, curve
