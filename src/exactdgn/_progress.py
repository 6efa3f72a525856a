"""Progress inside long passes, for whoever listens (``exactdgn evaluate``'s per-stage bars).

A pass that works in blocks (the exact pass over blocks of points, the encoder's estimates over
chunks of samples) calls :func:`report` with the units it has just finished; a caller that
shows progress wraps the pass in :func:`progress_to`. Nothing listens by default, and a report
changes no value. Reports come from the thread that called the pass (the blocks computed on
worker threads are reported as their results arrive, in order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["progress_to", "report"]

_listener: ContextVar[Callable[[int], object] | None] = ContextVar(
    "exactdgn_progress", default=None
)


@contextmanager
def progress_to(callback: Callable[[int], object]) -> Iterator[None]:
    """Within the block, :func:`report` calls ``callback(n)`` (e.g. a tqdm bar's ``update``)."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def report(n: int) -> None:
    """``n`` more units of the current pass are done (nothing when nobody listens)."""
    callback = _listener.get()
    if callback is not None and n:
        callback(int(n))
