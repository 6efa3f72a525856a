"""Shared helper of the dask tests: a local process cluster without distributed's start-up
and shutdown noise (e.g. a port already in use by another test run)."""

from __future__ import annotations

import contextlib
import warnings

import pytest


@contextlib.contextmanager
def local_client(n_workers: int, **client_kw):
    """A ``distributed.Client`` on a ``LocalCluster`` of ``n_workers`` one-thread processes,
    closed (cluster too) on exit."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        cluster = distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        )
        cl = distributed.Client(cluster, **client_kw)
    try:
        yield cl
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
            cl.close()
            cluster.close()
