"""Training methods of :class:`exactdgn.ExactDGN`: one trainer per method, one history row.

Every trainer (:class:`EMTrainer`, :class:`GradientTrainer`, :class:`LBFGSTrainer`,
:class:`AutoTrainer`) follows :class:`Trainer`: ``start()`` then ``step()`` return a
:class:`HistoryRow` (the same keys for every method), and ``state_dict()`` /
``load_state_dict()`` carry everything the next step depends on, so checkpoints and warm
starts continue a run exactly. :func:`converged` is the stopping rule; :func:`pack_state` /
:func:`unpack_state` store trainer states in npz + JSON; :func:`estimate_training_cost` sizes
an E-step before training (``fit`` refuses with :class:`TrainingTooLargeError` when it would
not fit in memory).
"""

from ._auto import AutoTrainer
from ._base import EStep, HistoryRow, Trainer
from ._cost import TrainingCost, TrainingTooLargeError, estimate_training_cost
from ._em import EMTrainer
from ._gradient import GradientTrainer
from ._lbfgs import LBFGSTrainer
from ._state import pack_state, to_host, unpack_state
from ._stopping import callback_stops, check_callback, converged

TRAINERS: dict[str, type[Trainer]] = {
    "em": EMTrainer,
    "gradient": GradientTrainer,
    "lbfgs": LBFGSTrainer,
    "auto": AutoTrainer,
}

__all__ = [
    "TRAINERS",
    "AutoTrainer",
    "EMTrainer",
    "EStep",
    "GradientTrainer",
    "HistoryRow",
    "LBFGSTrainer",
    "Trainer",
    "TrainingCost",
    "TrainingTooLargeError",
    "callback_stops",
    "check_callback",
    "converged",
    "estimate_training_cost",
    "pack_state",
    "to_host",
    "unpack_state",
]
