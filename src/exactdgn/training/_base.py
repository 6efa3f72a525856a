"""The trainer interface shared by every training method, its history row and E-step result."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..decoder import Decoder
    from ..em._steps import RegionStats
    from ..inference._geometry import RegionGeometry
    from ..inference._marginal import PairStats
    from ..model import ExactDGN
    from ..partition import Partition

__all__ = ["EStep", "HistoryRow", "Trainer"]


@dataclass
class EStep:
    """One exact E-step: the partition of the decoder and every visible point-region pair.

    Attributes
    ----------
    partition : Partition
    geometry : RegionGeometry
    stats : PairStats
        Per pair: posterior log weight, truncated mean and covariance; per point ``log p(x)``
        (or pairs held by dask workers, see :mod:`exactdgn.dask`).
    seconds_partition, seconds_estep : float
    loglik : float
        Mean exact log-likelihood per point (``log p(x_obs)`` for rows with NaN).
    decoder : Decoder
    std : ndarray of shape (D,)
        The parameters of the E-step (the missing-data M-step statistics depend on them).
    """

    partition: Partition
    geometry: RegionGeometry
    stats: PairStats
    seconds_partition: float
    seconds_estep: float
    loglik: float
    decoder: Decoder
    std: np.ndarray


@dataclass
class HistoryRow:
    """One iteration of any trainer, or one epoch of a VAE / IWAE (``history_`` holds these as
    dicts, the same keys everywhere: :class:`exactdgn.ExactDGN` and
    :class:`exactdgn.baselines.VAE` / :class:`~exactdgn.baselines.IWAE` alike).

    Attributes
    ----------
    iter : int
        Iteration count (0: the starting point); for a VAE / IWAE the epoch.
    loglik : float
        Mean exact training log-likelihood per point after the iteration. For a VAE / IWAE it
        is the training objective instead, a lower bound on the log-likelihood and not the
        exact value: the ELBO (VAE) or the IWAE-k bound (IWAE), a running mean over the epoch's
        minibatches (row 0: the initial parameters on the training data).
    n_regions : int or None
        Linear regions of the decoder after the iteration (None where not computed: VAE /
        IWAE epochs; score the decoder with ``ExactDGN.from_decoder`` for it).
    seconds : float
        Wall time of the iteration.
    seconds_partition, seconds_estep, seconds_mstep : float
        Its split (M-step: the parameter update; for gradient methods the gradient work: a
        VAE / IWAE epoch's training passes, the rest of ``seconds`` being its validation).
    backtracks : int
        Halvings of a rejected EM step (0 for other methods).
    step : float
        EM: the accepted step along the M-step direction (> 1: over-relaxed; negative: an
        exact-gradient fallback step of that relative length; 0: no move). L-BFGS: the line
        search's step length. Adam (``"gradient"``, VAE / IWAE): the learning rate.
    method : str
        The method that took the step (``"em"``, ``"lbfgs"``, ``"gradient"``, ``"vae"``,
        ``"iwae"``; ``auto`` runs record the phase).
    val_loglik : float or None
        The same objective as ``loglik`` on validation data, where the method has some: a VAE /
        IWAE with a validation split (its early stopping watches it; fixed noise across
        epochs). None otherwise (every exact method).
    """

    iter: int
    loglik: float
    n_regions: int | None
    seconds: float = 0.0
    seconds_partition: float = 0.0
    seconds_estep: float = 0.0
    seconds_mstep: float = 0.0
    backtracks: int = 0
    step: float = 0.0
    method: str = ""
    val_loglik: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Trainer(ABC):
    """One training method: ``start`` at the current parameters, then ``step`` by ``step``.

    A trainer owns the current ``decoder`` and ``std`` (noise std, shape (D,)) and every piece
    of state that the next step depends on (step sizes, optimiser memory, random stream).
    ``state_dict`` returns that state as plain numbers, strings, lists, dicts and arrays (no
    private optimiser keys: torch optimisers through their public ``state_dict``), a snapshot
    that later steps do not change (Ctrl-C inside a step keeps the last completed one's), and
    ``load_state_dict`` restores it, so a checkpointed or warm-started run continues exactly
    where it stopped. The estimator's E-step (:meth:`ExactDGN._e_step`) is the only way a
    trainer computes sufficient statistics.

    Parameters
    ----------
    est : ExactDGN
        Supplies the options (``min_noise_std``, ``weight_decay``, ...) and the E-step.
    X : ndarray of shape (N, D)
    decoder : Decoder
    std : ndarray of shape (D,)
    seed : int
        Seeds the trainer's own random stream (minibatch order).
    """

    method: str = ""

    def __init__(self, est: ExactDGN, X: np.ndarray, decoder: Decoder, std, *, seed: int):
        self.est = est
        self.X = X
        self.decoder = decoder
        self.std = np.asarray(std, dtype=np.float64).copy()
        self.seed = int(seed)
        self.loglik = -np.inf
        self.finished = False  # True when the method cannot make progress any more
        self.n_estep = 0  # E-steps so far: a deterministic measure of the work done
        # the torch device where the E-step, the statistics and the gradients run (None: numpy)
        self.device = est._train_device(X)

    def _estep(self, decoder: Decoder, std, X: np.ndarray, **kw) -> EStep:
        self.n_estep += 1
        return self.est._e_step(decoder, std, X, **kw)

    def _region_stats(self, e: EStep, X: np.ndarray) -> RegionStats:
        """Per-region sufficient statistics of the M-step and of the exact gradient of the
        E-step ``e`` of ``X`` (through the estimator's hook: missing values, dask pairs)."""
        return self.est._region_stats(X, e.partition, e.stats, e.decoder, e.std)

    @abstractmethod
    def start(self) -> HistoryRow:
        """Evaluate the current parameters (one E-step); the row has ``iter=0``."""

    @abstractmethod
    def step(self) -> HistoryRow:
        """One iteration; the row's ``iter`` is filled in by the caller."""

    def state_dict(self) -> dict[str, Any]:
        """Everything besides ``decoder`` / ``std`` that the next step depends on."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional)
        """Restore what :meth:`state_dict` returned (call before :meth:`start`)."""

    def _row(self, e: EStep, **kw) -> HistoryRow:
        kw.setdefault("method", self.method)
        return HistoryRow(iter=0, loglik=self.loglik, n_regions=len(e.partition), **kw)
