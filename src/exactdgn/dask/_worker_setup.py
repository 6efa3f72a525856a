"""Preloaded in the worker processes of :func:`exactdgn.dask.connect`'s local cluster.

A terminal's Ctrl-C goes to its whole process group: the local cluster's worker processes got
it too and each printed ``Process Dask Worker process (from Nanny): Traceback ...
KeyboardInterrupt`` beside the client's own message. They ignore it: the client, which gets
it, closes the cluster (and with it the workers).
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
