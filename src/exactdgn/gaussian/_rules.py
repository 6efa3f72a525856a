"""Constants and quadrature rules shared by every Gaussian kernel (numpy and torch), built once.

Each rule is computed on first use and cached; the arrays are read-only so that no caller can
change them for the others.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

__all__ = [
    "EPS",
    "LOG_2PI",
    "LOG_SQRT_2PI",
    "gauss_kronrod_01",
    "gauss_laguerre",
    "gauss_legendre",
    "gauss_legendre_01",
    "normalize_rows",
    "reject_nan",
    "reject_nonfinite",
    "row_norms",
]

EPS = float(np.finfo(np.float64).eps)
LOG_2PI = math.log(2.0 * math.pi)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


@cache
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-node Gauss-Legendre nodes and weights on ``[-1, 1]``."""
    return _frozen(*np.polynomial.legendre.leggauss(n))


@cache
def gauss_legendre_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-node Gauss-Legendre nodes and weights on ``[0, 1]``."""
    x, w = np.polynomial.legendre.leggauss(n)
    return _frozen(0.5 * (x + 1.0), 0.5 * w)


# the 11 nodes Kronrod added to the 10-node Gauss-Legendre rule on [-1, 1] (QUADPACK's qk21,
# Piessens et al. 1983, from Fullerton's 80-digit values): with the Gauss nodes they make a
# 21-node rule exact to degree 31 whose embedded 10-node rule checks it at no extra cost
_KRONROD_10 = (
    0.995657163025808080735527280689003,
    0.930157491355708226001207180059508,
    0.780817726586416897063717578345042,
    0.562757134668604683339000099272694,
    0.294392862701460198131126603103866,
)


@cache
def gauss_kronrod_01() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 21-node Gauss-Kronrod rule on ``[0, 1]``: nodes, Kronrod weights and the embedded
    10-node Gauss weights (0 at the 11 added nodes), each (21,).

    The added nodes are QUADPACK's; the Gauss nodes are :func:`gauss_legendre`'s and the
    Kronrod weights solve the moment equations ``sum_i w_i P_k(x_i) = 2 delta_k0`` (``P_k``
    Legendre, ``k <= 20``), so they are consistent with the nodes as rounded. A rule written by
    hand because neither numpy nor scipy exposes Kronrod nodes (``scipy.integrate.quad_vec``
    keeps them private).
    """
    xg, wg = np.polynomial.legendre.leggauss(10)
    xk = np.array([-x for x in _KRONROD_10] + [0.0] + list(_KRONROD_10[::-1]))
    x = np.concatenate([xg, xk])
    order = np.argsort(x)
    x = x[order]
    V = np.polynomial.legendre.legvander(x, 20).T  # (21, 21): P_k(x_i)
    rhs = np.zeros(21)
    rhs[0] = 2.0
    wk = np.linalg.solve(V, rhs)
    wg21 = np.concatenate([wg, np.zeros(11)])[order]
    return _frozen(0.5 * (x + 1.0), 0.5 * wk, 0.5 * wg21)


@cache
def gauss_laguerre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-node Gauss-Laguerre nodes and weights (weight ``e^{-x}`` on ``[0, inf)``)."""
    return _frozen(*np.polynomial.laguerre.laggauss(n))


def row_norms(n: np.ndarray) -> np.ndarray:
    """(..., F) Euclidean norms of the rows ``n`` (..., F, k), without under- or overflow: rows
    whose squared norm leaves float64 (entries beyond ~1e-154 or ~1e154) are scaled by their
    largest entry first (the others are ``sqrt(n . n)``, bitwise)."""
    with np.errstate(all="ignore"):
        norm = np.sqrt(np.sum(n * n, axis=-1))
        big = np.max(np.abs(n), axis=-1)
        off = (big > 0) & ~(norm >= np.sqrt(np.finfo(np.float64).tiny)) | np.isinf(norm)
        if off.any():
            nb = n[off] / big[off][..., None]
            norm[off] = big[off] * np.sqrt(np.sum(nb * nb, axis=-1))
    return norm


def normalize_rows(n: np.ndarray, c: np.ndarray, norm: np.ndarray):
    """Rows ``n_i . u <= c_i`` scaled to unit normals, given the row norms ``norm``.

    Returns unit normals (0 on inactive rows), offsets (``+inf`` on inactive rows), the active
    mask (P, F) and the infeasible pairs (P,) (a zero row with ``c < 0``, ``c = -inf`` or NaN).
    """
    with np.errstate(all="ignore"):
        bad = ((norm == 0) & (c < 0)) | (c == -np.inf) | np.isnan(c) | ~np.isfinite(norm)
        active = (norm > 0) & (c < np.inf) & ~bad
        safe = np.where(active, norm, 1.0)
        nu = np.where(active[..., None], n / safe[..., None], 0.0)
        cu = np.where(active, c / safe, np.inf)
    return nu, cu, active, bad.any(axis=1)


def householder_basis(n: np.ndarray) -> np.ndarray:
    """Orthonormal bases ``(M, k, k-1)`` of the complements of the unit vectors ``n (M, k)``."""
    M, k = n.shape
    j = np.argmax(np.abs(n), axis=1)
    s = np.where(n[np.arange(M), j] >= 0, 1.0, -1.0)
    v = n.copy()
    v[np.arange(M), j] += s
    vv = np.sum(v * v, axis=1)
    H = np.eye(k)[None] - 2.0 * v[:, :, None] * v[:, None, :] / vv[:, None, None]
    cols = np.arange(k - 1)[None, :] + (np.arange(k - 1)[None, :] >= j[:, None])
    return np.take_along_axis(H, cols[:, None, :], axis=2)


def _verb(name: str) -> str:
    return "contain" if name.endswith("s") else "contains"


def reject_nan(x: np.ndarray, name: str, hint: str) -> None:
    """Raise ``ValueError("{name} contain(s) {k} NaN values ({hint})")`` if float array ``x``
    holds NaN (``hint`` says what to give instead).

    The clean path is one reduction without a temporary (``min`` propagates NaN; infinities
    do not make NaN there); the NaN are only counted on the error path.
    """
    if x.size and np.isnan(np.min(x)):
        k = int(np.count_nonzero(np.isnan(x)))
        raise ValueError(f"{name} {_verb(name)} {k} NaN values ({hint})")


def reject_nonfinite(x: np.ndarray, name: str, hint: str) -> None:
    """As :func:`reject_nan` for NaN and infinite values (``... NaN or infinite values``)."""
    if x.size and not np.isfinite(x).all():
        k = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} {_verb(name)} {k} NaN or infinite values ({hint})")
