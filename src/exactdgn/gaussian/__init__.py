"""Exact Gaussian integrals over polyhedra: log mass, mean and covariance, tail-safe.

In whitened coordinates ``u ~ N(0, I_d)`` and ``{u : normals @ u <= offsets}``, vectorised over
``P`` pairs.  ``d = 1``: intervals; ``d = 2``: polygons by the Owen's-T edge formula with a
tail-safe path; ``d >= 3``: facet recursion (``_polytope``), after prisms (rows spanning fewer
than ``d`` dimensions) are reduced exactly to their rows' span (``_prism``).
"""

from ._api import (
    TruncatedMoments,
    gaussian_polyhedron_moments,
    log_mass,
    truncated_moments,
    whiten,
)
from ._interval import interval_stats, log_interval_mass
from ._polygon import (
    PolygonTable,
    log_edge_pieces,
    log_mass_2d,
    log_mass_2d_shifted,
    log_mass_2d_transformed,
    polygon_table,
    truncated_moments_2d,
    truncated_moments_2d_shifted,
    truncated_moments_2d_transformed,
)

__all__ = [
    "PolygonTable",
    "TruncatedMoments",
    "gaussian_polyhedron_moments",
    "interval_stats",
    "log_edge_pieces",
    "log_interval_mass",
    "log_mass",
    "log_mass_2d",
    "log_mass_2d_shifted",
    "log_mass_2d_transformed",
    "polygon_table",
    "truncated_moments",
    "truncated_moments_2d",
    "truncated_moments_2d_shifted",
    "truncated_moments_2d_transformed",
    "whiten",
]
