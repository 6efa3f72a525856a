"""Outlier detection with the exact likelihood: thresholds and a typicality test for batches.

Single points are scored by the exact ``log p(x)`` (``ExactDGN.score_samples``; lower is more
abnormal) and thresholded with scikit-learn's conventions (``contamination``, ``offset_``,
``decision_function``, ``predict`` returning +1 / -1, as ``IsolationForest`` does). A *batch*
can be typical even when its points have high density, or atypical with unremarkable points
(Nalisnick et al., 2019, "Detecting out-of-distribution inputs to deep generative models using
typicality"): :func:`typicality_test` compares the batch's mean exact log-likelihood with the
distribution of that mean over batches of the same size drawn from the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_array

__all__ = ["TypicalityResult", "contamination_offset", "typicality_test"]


def contamination_offset(scores: np.ndarray, contamination: float) -> float:
    """The ``offset_`` that flags the fraction ``contamination`` of ``scores`` as outliers.

    ``offset_ = quantile(scores, 100 contamination %)``; points with ``score < offset_`` get
    ``decision_function < 0`` and ``predict == -1`` (scikit-learn's ``IsolationForest`` rule).
    """
    return float(np.percentile(scores, 100.0 * contamination))


@dataclass
class TypicalityResult:
    """Outcome of :func:`typicality_test`.

    Attributes
    ----------
    statistic : float           mean exact log p(x) of the batch
    reference_mean : float      mean of the model's own batch means (≈ minus its entropy)
    reference_std : float       their standard deviation
    p_value : float             two-sided: the fraction of model batches at least as far from
                                ``reference_mean`` as the batch (with the +1 correction)
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

    The null distribution of the batch-mean log-likelihood is built from the model itself:
    ``n_reference`` exact draws ``x ~ p(x)`` are scored once (exact ``log p(x)``), then
    ``n_batches`` batches of ``len(X)`` of those scores are resampled with replacement and
    averaged. The p-value is two-sided (a batch can be atypical by being too likely, as the
    all-black image under a digits model is).

    Parameters
    ----------
    model : fitted ExactDGN
    X : array_like (N, D), NaN where missing is not allowed here (the reference has none)
    n_reference, n_batches : int
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
    X = check_array(X, name="X", allow_nan=True)
    n_missing = int(np.isnan(X).sum())
    if n_missing:  # log p(x_obs) is not comparable with the complete reference draws
        raise ValueError(
            f"X contains {n_missing} NaN values: the typicality test compares complete rows "
            "with complete draws from the model; drop the incomplete rows or impute them first"
        )
    scores = model.score_samples(X)
    n = len(scores)
    rng = np.random.default_rng(random_state)
    ref = model.score_samples(model.sample(int(n_reference), random_state=rng))
    means = np.empty(int(n_batches))
    step = max(1, (1 << 22) // max(n, 1))
    for s in range(0, len(means), step):  # bounded memory: (step, n) indices at a time
        k = min(step, len(means) - s)
        means[s : s + k] = ref[rng.integers(0, len(ref), size=(k, n))].mean(axis=1)
    stat = float(scores.mean())
    center = float(means.mean())
    far = np.abs(means - center) >= abs(stat - center)
    p = float((far.sum() + 1) / (len(means) + 1))
    return TypicalityResult(
        statistic=stat,
        reference_mean=center,
        reference_std=float(means.std()),
        p_value=p,
        batch_size=n,
        typical=p >= alpha,
        alpha=float(alpha),
    )
