"""Shared pytest configuration: hypothesis profiles and common fixtures.

Profiles (select with ``HYPOTHESIS_PROFILE=...``):

* ``ci`` (default): derandomized (the same examples on every run, no example database), no
  per-example deadline (enumeration and LP oracles have variable run time).
* ``explore``: random examples, more of them, for local bug hunting.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    deadline=None,
    max_examples=300,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator (each test gets a fresh one)."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny networks (no oversubscription on the shared
    2-core machine); the previous count is restored after it (torch is imported lazily)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
