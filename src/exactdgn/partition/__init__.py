"""Exact partition of the latent space into linear regions (enumeration, lookup, geometry)."""

from ._api import first_layer_lower_bound, partition, plane_lower_bound, sampled_region_count
from ._partition import (
    Partition,
    PartitionTooLargeError,
    RawPartition,
    Region,
    estimate_region_bytes,
    memory_budget,
)

__all__ = [
    "Partition",
    "PartitionTooLargeError",
    "RawPartition",
    "Region",
    "estimate_region_bytes",
    "first_layer_lower_bound",
    "memory_budget",
    "partition",
    "plane_lower_bound",
    "sampled_region_count",
]
