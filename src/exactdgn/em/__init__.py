"""Exact EM: E-step sufficient statistics, closed-form M-step, exact gradients, initialisation.

The training loop itself lives in :meth:`exactdgn.ExactDGN.fit`; this subpackage holds the pure
math it calls.
"""

from ._gradient import exact_gradient, surrogate_objective
from ._init import initialize
from ._missing import MissingStats, missing_region_stats, missing_residual_sq
from ._steps import (
    RegionStats,
    expected_complete_loglik,
    m_step,
    region_stats,
    update_layer,
    update_noise,
)

__all__ = [
    "MissingStats",
    "RegionStats",
    "exact_gradient",
    "expected_complete_loglik",
    "initialize",
    "m_step",
    "missing_region_stats",
    "missing_residual_sq",
    "region_stats",
    "surrogate_objective",
    "update_layer",
    "update_noise",
]
