"""``method="auto"``: exact EM while it gains fast, then L-BFGS from where EM stopped."""

from __future__ import annotations

from ._base import HistoryRow, Trainer
from ._em import EMTrainer
from ._lbfgs import LBFGSTrainer

__all__ = ["AutoTrainer"]


class AutoTrainer(Trainer):
    """EM first; hand over to L-BFGS once EM's gain per second has dropped.

    EM makes its large gains in the first iterations (no step size, monotone), then crawls
    near an optimum when the noise is small (layer-wise updates with the activation patterns
    held fixed); L-BFGS converges much faster there. The handover happens after at least
    ``min_em`` EM iterations, when the exact-likelihood gain per E-step over the last
    ``window`` EM iterations is below ``ratio`` times the best such rate of the run. E-steps
    are the bulk of either method's time, and counting them instead of seconds keeps a run
    reproducible (same seed, same handover, also after a resume). Both phases are monotone,
    so the exact training log-likelihood never decreases.

    State: the phase, EM's state, the rate record and (after the handover) L-BFGS's state.
    """

    method = "auto"

    def __init__(self, est, X, decoder, std, *, seed, min_em=5, window=3, ratio=0.1):
        super().__init__(est, X, decoder, std, seed=seed)
        self.min_em, self.window, self.ratio = min_em, window, ratio
        self.em = EMTrainer(est, X, decoder, std, seed=seed)
        self.lbfgs: LBFGSTrainer | None = None
        self.gains: list[float] = []
        self.cost: list[float] = []
        self.best_rate = 0.0

    @property
    def _active(self) -> Trainer:
        return self.lbfgs if self.lbfgs is not None else self.em

    def state_dict(self) -> dict:
        return {
            "phase": "em" if self.lbfgs is None else "lbfgs",
            "em": self.em.state_dict(),
            "gains": list(self.gains),
            "cost": list(self.cost),
            "best_rate": self.best_rate,
            "lbfgs": None if self.lbfgs is None else self.lbfgs.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.em.load_state_dict(state["em"])
        self.gains = [float(g) for g in state["gains"]]
        self.cost = [float(s) for s in state["cost"]]
        self.best_rate = float(state["best_rate"])
        if state["phase"] == "lbfgs":
            self.lbfgs = LBFGSTrainer(self.est, self.X, self.decoder, self.std, seed=self.seed)
            self.lbfgs.load_state_dict(state["lbfgs"])

    def _sync(self) -> None:
        a = self._active
        self.decoder, self.std, self.loglik, self.finished = a.decoder, a.std, a.loglik, a.finished

    def start(self) -> HistoryRow:
        row = self._active.start()
        self._sync()
        return row

    def step(self) -> HistoryRow:
        if self.lbfgs is None and self._slow():
            self.lbfgs = LBFGSTrainer(self.est, self.X, self.decoder, self.std, seed=self.seed)
            self.lbfgs.start()
        before, n_before = self.loglik, self.em.n_estep
        row = self._active.step()
        if self.lbfgs is None:
            self.gains.append(row.loglik - before)
            self.cost.append(max(self.em.n_estep - n_before, 1))
            w = self.window
            if len(self.gains) >= w:
                rate = sum(self.gains[-w:]) / sum(self.cost[-w:])
                self.best_rate = max(self.best_rate, rate)
        self._sync()
        return row

    def _slow(self) -> bool:
        w = self.window
        if len(self.gains) < max(self.min_em, w) or self.best_rate <= 0:
            return False
        rate = sum(self.gains[-w:]) / sum(self.cost[-w:])
        return rate < self.ratio * self.best_rate
