"""Threads and Ctrl-C around compiled code: BLAS held to one thread for many small products,
long single calls made interruptible, short blocks that must not stop half-way made to hold a
Ctrl-C until they end, and the Ctrl-C found behind an error that cleanup raised in its place.

A batched product of thousands of small matrices (``np.matmul`` over regions, or a block's
GEMM on a worker thread) calls BLAS once per matrix. With BLAS's own threads each call pays a
thread hand-off: on a busy 2-core machine a block's 69 x 32 @ 32 x 7,569 GEMM (MNIST d = 2)
took 41 ms instead of 3.3 ms, and the M-step's 5,000 products of 32 x 784 @ 784 x 32 took tens
of seconds instead of about one. Such products run under :func:`blas_one_thread`; one BLAS
thread computes each entry with the same operations in the same order (BLAS splits the output,
not the inner sums), so the values are unchanged.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_CONTROLLER = None  # threadpoolctl controller, made at the first call (it scans the libraries)


def blas_one_thread():
    """Context that holds BLAS to one thread (the blocks or the batch are the parallelism)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def interruptible(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a helper thread, waited for so that Ctrl-C returns at once.

    For one long call into compiled code (an SVD of the data, ~10 s on 60,000 x 784) during
    which Python cannot see a KeyboardInterrupt. The value is the same as a direct call's. On
    Ctrl-C the call is abandoned: it finishes in the background (a daemon thread, so the
    interpreter can still exit) and its result is dropped.
    """
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=target, name="exactdgn-call", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # short waits: interruptible on every platform
    if "error" in box:
        raise box["error"]
    return box["value"]


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` an exception was raised while handling (its ``__context__``
    or ``__cause__`` chain), if any: cleanup code that fails after a Ctrl-C replaces it."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives during the block and raise it when the block ends.

    For short blocks that must not stop half-way: zipfile turns an interrupt while it closes a
    member into a ``ValueError`` and leaves an archive that fails again when collected. Outside
    the main thread, or where SIGINT is not Python's own handler (ignored, or the caller's),
    the block runs as it is.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt
