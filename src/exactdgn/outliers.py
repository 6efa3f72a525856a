"""Outlier detection with the exact likelihood: thresholds and a typicality test for batches.

Single points are scored by the exact ``log p(x)`` (``ExactDGN.score_samples``; lower is more
abnormal) and thresholded with scikit-learn's conventions (``contamination``, ``offset_``,
``decision_function``, ``predict`` returning +1 / -1, as ``IsolationForest`` does). A *batch*
can be typical even when its points have high density, or atypical with unremarkable points
(Nalisnick et al., 2019, "Detecting out-of-distribution inputs to deep generative models using
typicality"): :func:`typicality_test` compares the batch's mean exact log-likelihood with the
mean over draws from the model itself (a permutation test: exact level for any batch size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_array, check_feature_names, check_generator

__all__ = ["TypicalityResult", "contamination_offset", "typicality_test"]


def contamination_offset(scores: np.ndarray, contamination: float) -> float:
    """The ``offset_`` that flags the fraction ``contamination`` of ``scores`` as outliers.

    ``offset_ = quantile(scores, 100 contamination %)``; points with ``score < offset_`` get
    ``decision_function < 0`` and ``predict == -1`` (scikit-learn's ``IsolationForest`` rule).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(
            f"scores has shape {scores.shape}: give the 1-D scores of at least one point"
        )
    if not 0.0 <= contamination <= 0.5:
        raise ValueError(f"contamination must be in [0, 0.5], got {contamination}")
    return float(np.percentile(scores, 100.0 * contamination))


@dataclass
class TypicalityResult:
    """Outcome of :func:`typicality_test`.

    Attributes
    ----------
    statistic : float           mean exact log p(x) of the batch
    reference_mean : float      mean exact log p(x) of the model's own draws (≈ minus its
                                entropy)
    reference_std : float       standard deviation of the permutation null of ``statistic -
                                reference_mean`` (splits of the pooled scores, the batch's
                                included: a batch with extreme rows widens it)
    p_value : float             two-sided: the fraction of random splits of the pooled scores
                                whose difference of means is at least as far from 0 as
                                ``statistic - reference_mean`` (with the +1 correction)
    batch_size : int
    typical : bool              ``p_value >= alpha``
    alpha : float
    """

    statistic: float
    reference_mean: float
    reference_std: float
    p_value: float
    batch_size: int
    typical: bool
    alpha: float


def typicality_test(
    model,
    X,
    *,
    n_reference: int = 10_000,
    n_batches: int = 5_000,
    alpha: float = 0.01,
    random_state=None,
) -> TypicalityResult:
    """Is the batch ``X`` a typical draw from ``model``?

    The batch's mean exact ``log p(x)`` is compared with the mean over ``n_reference`` exact
    draws ``x ~ p(x)`` from the model itself, by a permutation test: under the null (the batch
    is drawn from the model) the batch's and the reference's scores are exchangeable, so the
    difference of means over ``n_batches`` random splits of the pooled scores into ``len(X)``
    and ``n_reference`` is its null distribution. Its level is exact for any batch size (the
    reference mean's own Monte Carlo error is part of the null; resampling the reference around
    its mean left it out, and a batch as large as the reference was rejected at alpha = 0.05
    about 17% of the time). The p-value is two-sided (a batch can be atypical by being too
    likely, as the all-black image under a digits model is); the same ``random_state`` gives
    the same result. It tests the batch as a whole: one extreme row among hundreds moves the
    mean and the pooled null's spread alike and may go unnoticed; rows are judged one by one
    with ``decision_function`` / ``predict`` (``contamination``).

    Parameters
    ----------
    model : fitted ExactDGN
    X : array_like (N, D), NaN where missing is not allowed here (the reference has none)
    n_reference : int
        Exact draws from the model scored as the reference.
    n_batches : int
        Random splits of the pooled scores (the smallest p-value is ``1 / (n_batches + 1)``,
        so ``alpha`` must be above it).
    alpha : float in (0, 1)
    random_state : int, Generator or None

    Returns
    -------
    TypicalityResult
    """
    real = isinstance(alpha, float | int | np.floating | np.integer) and not isinstance(alpha, bool)
    if not (real and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha={alpha!r} is invalid: use a level in (0, 1), e.g. 0.01")
    for name, val in (("n_reference", n_reference), ("n_batches", n_batches)):
        if not (isinstance(val, int | np.integer) and val >= 10):
            raise ValueError(f"{name}={val!r} is invalid: use an integer >= 10")
    if alpha * (n_batches + 1) <= 1.0:  # p >= 1 / (n_batches + 1): typical=True whatever X is
        raise ValueError(
            f"alpha={alpha!r} cannot be reached with n_batches={n_batches}: the smallest "
            f"p-value is 1 / (n_batches + 1) = {1.0 / (n_batches + 1):.3g}; use n_batches >= "
            f"{int(np.ceil(20.0 / alpha))} (20 / alpha) or a larger alpha"
        )
    rng = check_generator(random_state)  # a bad seed named before the batch is scored
    check_feature_names(model, X)  # a frame's columns in fit's order (check_array drops names)
    X = check_array(X, name="X", allow_nan=True)
    n_missing = int(np.isnan(X).sum())
    if n_missing:  # log p(x_obs) is not comparable with the complete reference draws
        raise ValueError(
            f"X contains {n_missing} NaN values: the typicality test compares complete rows "
            "with complete draws from the model; drop the incomplete rows or impute them first"
        )
    scores = model.score_samples(X)
    n = len(scores)
    ref = model.score_samples(model.sample(int(n_reference), random_state=rng))
    # permutation null: under H0 the batch's and the reference's scores are exchangeable, so
    # splitting the pooled scores at random gives the null distribution of the difference of
    # means, the reference mean's own sampling error included (the test's level is exact)
    pool = np.concatenate([scores, ref])
    total, m = float(pool.sum()), len(pool)
    diffs = np.empty(int(n_batches))
    step = max(1, (1 << 22) // m)
    for s in range(0, len(diffs), step):  # bounded memory: (step, n + n_reference) at a time
        k = min(step, len(diffs) - s)
        batch = np.argpartition(rng.random((k, m)), n - 1, axis=1)[:, :n]  # n of m, no repeats
        sums = pool[batch].sum(axis=1)
        diffs[s : s + k] = sums / n - (total - sums) / len(ref)
    stat = float(scores.mean())
    center = float(ref.mean())
    far = np.abs(diffs) >= abs(stat - center)
    p = float((far.sum() + 1) / (len(diffs) + 1))
    return TypicalityResult(
        statistic=stat,
        reference_mean=center,
        reference_std=float(diffs.std()),
        p_value=p,
        batch_size=n,
        typical=bool(p >= alpha),
        alpha=float(alpha),
    )
