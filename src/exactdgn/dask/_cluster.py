"""Clients, the per-worker thread budget and the fixed-order tree reduction."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from dask import delayed
from distributed import Client, LocalCluster, WorkerPlugin

__all__ = ["ThreadBudget", "active_client", "connect", "tree_reduce"]

logger = logging.getLogger(__name__)

_PLUGIN_NAME = "exactdgn-thread-budget"

#: the workers of this process that hold the thread budget, and what the process had before
_HELD: dict = {"workers": set(), "env": None, "limits": None}


class ThreadBudget(WorkerPlugin):
    """Hold each task of a worker to ``threads_per_task`` threads.

    Dask runs ``nthreads`` tasks at once on a worker, which is the worker's share of the cores;
    inside a task the library's own block threads (``EXACTDGN_NUM_THREADS``, see
    :mod:`exactdgn.inference`) and BLAS / OpenMP (threadpoolctl) get ``threads_per_task`` each,
    so a worker never runs ``nthreads x cores`` threads. Registered on every client that
    :mod:`exactdgn.dask` uses (new and restarted workers get it too). The limits are
    process-wide: workers running in the client's own process (``processes=False``) hold it
    to them while they run, and the last one to close restores the process's settings.

    Parameters
    ----------
    threads_per_task : int
        1 (the default) when dask's threads already fill the worker's cores; the worker's
        core share for a worker with one thread (``exactdgn ... --workers N`` uses
        ``cores // N``).
    """

    name = _PLUGIN_NAME
    idempotent = True

    def __init__(self, threads_per_task: int = 1):
        n = int(threads_per_task)
        if n < 1:
            raise ValueError(f"threads_per_task must be >= 1, got {threads_per_task!r}")
        self.threads_per_task = n

    def setup(self, worker) -> None:
        from threadpoolctl import threadpool_limits

        if not _HELD["workers"]:  # the process's own settings, given back by the last teardown
            _HELD["env"] = os.environ.get("EXACTDGN_NUM_THREADS")
            _HELD["limits"] = threadpool_limits(limits=self.threads_per_task)
        else:
            threadpool_limits(limits=self.threads_per_task)  # process-wide: BLAS and OpenMP
        _HELD["workers"].add(id(worker))
        os.environ["EXACTDGN_NUM_THREADS"] = str(self.threads_per_task)

    def teardown(self, worker) -> None:
        held = _HELD["workers"]
        if id(worker) not in held:
            return
        held.discard(id(worker))
        if held:  # another worker of this process still runs
            return
        # workers in the client's process (LocalCluster(processes=False)): the process keeps
        # its threads after the cluster closes
        if _HELD["env"] is None:
            os.environ.pop("EXACTDGN_NUM_THREADS", None)
        else:
            os.environ["EXACTDGN_NUM_THREADS"] = _HELD["env"]
        _HELD["limits"].restore_original_limits()


def _has_budget(client: Client) -> bool:
    try:
        plugins = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.worker_plugins)
        )
    except Exception:  # an older scheduler: register again (idempotent)
        return False
    return _PLUGIN_NAME in plugins


def active_client(required: bool = True) -> Client | None:
    """The current ``distributed.Client`` (with the thread budget registered), or ``None``."""
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        if not required:
            return None
        raise ValueError(
            "no distributed.Client is active: start one (Client(LocalCluster(...)) or "
            "Client('tcp://scheduler:8786'), or exactdgn.dask.connect(...)), or pass an "
            "in-memory array instead of a dask array"
        ) from None
    if client.status in ("closing", "closed"):  # e.g. made current by client.as_current()
        raise ValueError(
            f"the active distributed.Client is {client.status}: start a new one (or "
            "exactdgn.dask.connect(...)) and make it current"
        )
    if not _has_budget(client):
        client.register_plugin(ThreadBudget(1))
    return client


@contextmanager
def connect(
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str = "auto",
    worker_log_level: int = logging.WARNING,
) -> Iterator[Client]:
    """A client of an existing cluster (``scheduler`` address) or of a local one.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
    workers : int, optional
        Without ``scheduler``: start a ``LocalCluster`` of this many worker processes with one
        dask thread each, every task holding ``usable cores // workers`` threads.
    memory_limit : str
        Per-worker memory limit of the local cluster.
    worker_log_level : int
        The local cluster's worker processes print distributed's log records from this level
        up (``LocalCluster(silence_logs=...)``; a task's failure is an ERROR record with its
        traceback, which the caller may report itself: ``logging.CRITICAL`` hides it).
    """
    if (scheduler is None) == (workers is None):
        raise ValueError("give exactly one of scheduler (an address) or workers (a count)")
    if scheduler is not None:
        with Client(scheduler) as client:
            if not _has_budget(client):
                client.register_plugin(ThreadBudget(1))
            yield client
        return
    n = int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // n)
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # the scheduler's HTTP server (health, metrics) runs even without a dashboard, on
            # port 8787 by default: with another cluster there it warned "Port 8787 is
            # already in use"; any free local port
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            memory_limit=memory_limit,
            silence_logs=worker_log_level,
            # the workers ignore a terminal's Ctrl-C (sent to the process group): the client
            # stops the cluster
            preload=["exactdgn.dask._worker_setup"],
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(ThreadBudget(share))
        logger.info("local cluster: %d workers, %d threads per task", n, share)
        yield client


def tree_reduce(items: Sequence, combine: Callable):
    """Combine delayed values pairwise, level by level: ``((0,1),(2,3)),...`` (a fixed order).

    The tree's shape depends only on ``len(items)``, and ``combine(a, b)`` always receives the
    lower-indexed operand first, so the result is the same on every run (bit for bit when
    each item is), whichever workers compute the nodes and in whatever order they finish.
    """
    level = list(items)
    if not level:
        raise ValueError("nothing to reduce")
    while len(level) > 1:
        nxt = [delayed(combine)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
