"""Rotated boxes: polytopes whose Gaussian moments are closed-form products of 1-D intervals.

``R [lo, hi]`` for a random rotation ``R``: the rows are the columns of ``R`` with the box's
ends as offsets, and ``N(0, I)`` on it has mean ``R m`` and covariance ``R diag(v) R^T`` with
``(m_i, v_i)`` the 1-D truncated-normal moments of ``[lo_i, hi_i]`` (50-digit mpmath,
:func:`tests.oracles.gaussian_mp.interval_ref`).  Shares no formula with the polytope kernels.
The float rows define ``R' [lo, hi]`` with ``R'`` orthogonal to ``~eps``: the reference is good
to ``~eps |x| / width`` relative for a box ``width`` across at ``x``.
"""

from __future__ import annotations

import numpy as np

from tests.oracles.gaussian_mp import interval_ref

__all__ = ["box_rows", "rotated_box", "rotation", "whitened_error"]


def rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random rotation ``(d, d)`` (Haar, sign-fixed QR)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def box_rows(R, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Rows (normals, offsets) of ``R [lo, hi]`` (infinite ends give no row)."""
    n, c = [], []
    for i in range(len(lo)):
        if np.isfinite(hi[i]):
            n.append(R[:, i])
            c.append(hi[i])
        if np.isfinite(lo[i]):
            n.append(-R[:, i])
            c.append(-lo[i])
    return np.array(n), np.array(c)


def rotated_box(lo, hi, rng: np.random.Generator):
    """Rows (normals, offsets) of ``R [lo, hi]`` (``R`` a random rotation; infinite ends give
    no row) and its moments from the 1-D mpmath intervals: ``log mass``, ``R m``,
    ``R diag(v) R^T``."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    R = rotation(rng, lo.size)
    n, c = box_rows(R, lo, hi)
    stats = [interval_ref(a, b) for a, b in zip(lo, hi, strict=True)]
    log_mass = float(sum(s[0] for s in stats))
    mean = R @ np.array([float(s[1]) for s in stats])
    cov = R @ np.diag([float(s[2]) for s in stats]) @ R.T
    return n, c, log_mass, mean, cov


def whitened_error(mean, cov, ref_mean, ref_cov) -> float:
    """Largest error of a mean and covariance in units of the reference distribution (both
    whitened by the reference covariance's Cholesky factor)."""
    W = np.linalg.inv(np.linalg.cholesky(ref_cov))
    return max(np.abs(W @ (mean - ref_mean)).max(), np.abs(W @ (cov - ref_cov) @ W.T).max())
