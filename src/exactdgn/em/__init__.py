"""Exact EM: E-step sufficient statistics, closed-form M-step, exact gradients, initialisation.

The training loops live in :mod:`exactdgn.training` (one trainer per method); this subpackage
holds the pure math they call.
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
