"""``exactdgn._threads``: BLAS held to one thread, and long compiled calls made interruptible."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from exactdgn._threads import blas_one_thread, interruptible


def test_blas_one_thread_limits_blas_and_restores_it():
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with blas_one_thread():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside and set(inside) == {1}
    assert after == before


def test_interruptible_returns_the_direct_call_and_raises_its_errors():
    X = np.random.default_rng(0).normal(size=(50, 7))
    got = interruptible(np.linalg.svd, X, full_matrices=False)
    for a, b in zip(got, np.linalg.svd(X, full_matrices=False), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(np.linalg.LinAlgError):
        interruptible(np.linalg.cholesky, -np.eye(3))


def test_ctrl_c_during_an_interruptible_call_returns_at_once():
    """A KeyboardInterrupt reaches the caller while the call is still running (a direct call
    into compiled code would hold it until the call returned); the abandoned call finishes in
    the background.

    Python's own Ctrl-C handler is installed for the test: a process started in the background
    by a shell (``cmd &``) inherits SIGINT ignored, and ``interrupt_main`` then does nothing.
    If the interrupt is lost anyway, the blocked call is released after 30 s so the test fails
    instead of hanging."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gate = threading.Lock()
    gate.acquire()
    started = threading.Event()

    def blocked():  # stands for a long LAPACK call: nothing Python can interrupt
        started.set()
        if not gate.acquire(timeout=30.0):
            return "released by the safety timeout"
        return 1

    timer = threading.Thread(target=lambda: started.wait(10) and _thread.interrupt_main())
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            interruptible(blocked)
    finally:
        signal.signal(signal.SIGINT, previous)
    waited = time.monotonic() - t0
    timer.join()
    alive = [t for t in threading.enumerate() if t.name == "exactdgn-call"]
    assert alive, "the abandoned call should still be running"
    gate.release()  # let it finish
    for t in alive:
        t.join(10)
    assert waited < 5.0  # returned while the call was still blocked (it never returned on its own)


def test_interrupt_behind_finds_a_ctrl_c_that_cleanup_replaced():
    from exactdgn._threads import interrupt_behind

    ki = KeyboardInterrupt()
    try:
        try:
            raise ki
        except KeyboardInterrupt:
            raise ValueError("cleanup failed") from None  # context kept, cause None
    except ValueError as exc:
        assert interrupt_behind(exc) is ki
    try:
        raise OSError("disk") from ki
    except OSError as exc:
        assert interrupt_behind(exc) is ki
    assert interrupt_behind(ValueError("plain")) is None
    assert interrupt_behind(ki) is ki
