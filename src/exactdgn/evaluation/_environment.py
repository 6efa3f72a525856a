"""What a result was computed on: versions, CPU and the BLAS kernel (for ``config.json``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["environment"]


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas() -> list[dict]:
    """numpy's BLAS libraries as threadpoolctl reports them (library, version, kernel)."""
    import numpy  # noqa: F401  (loads its BLAS, so threadpoolctl sees it)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # a scikit-learn dependency; absent only in unusual installs
        return []
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [
        {k: info.get(k) for k in keys} for info in threadpool_info() if info["user_api"] == "blas"
    ]


def environment() -> dict:
    """Versions, CPU, BLAS kernel and thread settings of this process, JSON-ready.

    Floating-point results that go through BLAS (GEMMs, solves) can differ in their last bits
    between CPUs, because OpenBLAS picks its kernel (``architecture``: ``Haswell``,
    ``SkylakeX``, ``Zen`` ...) at run time; an iterative fit (EM, L-BFGS) can carry such a
    difference into the third decimal of a result. Recording the kernel beside a result says
    which machine class it reproduces on.

    Returns
    -------
    dict
        ``python``, ``numpy``, ``scipy``, ``torch``, ``exactdgn`` versions, ``machine``
        (architecture), ``cpu`` (model name), ``cpus`` (usable by this process), ``blas``
        (list of dicts: ``internal_api``, ``version``, ``architecture``, ``num_threads``)
        and ``threads_env`` (the thread-count variables that are set).
    """
    import numpy
    import scipy

    import exactdgn

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    env_keys = ("EXACTDGN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "torch": torch_version,
        "exactdgn": exactdgn.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": cpus,
        "blas": _blas(),
        "threads_env": {k: os.environ[k] for k in env_keys if k in os.environ},
    }
