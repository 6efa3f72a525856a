"""Exact inference: region geometry, the marginal likelihood, and the exact posterior."""

from ._geometry import RegionGeometry, region_geometry
from ._marginal import PairStats, log_kappa_all, marginal_pairs
from ._missing import check_missing, observed_pairs
from ._posterior import ExactPosterior, project_origin, sample_truncated_standard

__all__ = [
    "ExactPosterior",
    "PairStats",
    "RegionGeometry",
    "check_missing",
    "log_kappa_all",
    "marginal_pairs",
    "observed_pairs",
    "project_origin",
    "region_geometry",
    "sample_truncated_standard",
]
