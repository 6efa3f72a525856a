"""Prisms: polyhedra whose rows leave directions free, reduced exactly to the rows' span.

When every row normal of ``P = {u in R^d : n_i . u <= c_i}`` lies in an ``r``-dimensional
subspace (``r < d``) with orthonormal basis ``U`` (d, r), and ``W`` (d, d - r) spans the
rest, then ``P = {U y + W t : y in P', t in R^(d-r)}`` with ``P' = {y in R^r : (U^T n_i) . y
<= c_i}``, and since ``phi_d(U y + W t) = phi_r(y) phi_(d-r)(t)``, exactly::

    m(P) = m_r(P'),   E[u] = U E[y],   Cov[u] = U Cov[y] U^T + W W^T.

The ``r``-dimensional kernels do the rest.  This is an exact reduction, not an approximation,
and it matters where the ``d``-dimensional kernels lose accuracy: an unbounded 3-D needle 1e-5
thin (a triangular prism, or a box unbounded along one axis) had its covariance 4e4-4e6 of its
own variance off and its log mass 1e-6 nats (estimate 3e-4), an unbounded 3-D slab 3.3 and a
half-bounded one 33, while the 2-D kernel and the exact intervals are accurate at any width
(``docs/accuracy.md``).  Every region of a decoder whose first layer has fewer units than
``d`` is a prism, and the reduction makes them cheap too (a [4,3,6] decoder scored 100 points
in 4.4 s, now in 0.05 s).

Rank test: the singular values of the constraining rows (``F x d``; padding rows and rows with
an ``+inf`` offset constrain nothing): ``sigma_min <= _TOL sigma_max`` (``_TOL = 16 eps``) is a
rank drop.  Rows that span ``r`` dimensions in exact arithmetic come out there after rounding
(a box's rows ``+-R e_k`` do); rows tilted off that subspace by more are a real polyhedron, not
a prism, and keep the ``d``-dimensional kernels, whose tilt by less than ``_TOL`` is below the
rows' own rounding (``eps`` per component).  Only pairs whose Gram matrix ``N^T N`` has a
determinant below ``_SCREEN tr(N^T N)^d`` are decomposed (a cheap screen that every rank drop
passes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._interval import TruncatedMoments
from ._rules import EPS, row_norms

__all__ = ["Prisms", "find_prisms", "lift_moments", "reduced_rows"]

_TOL = 16.0 * EPS
_SCREEN = 1e-12


@dataclass(frozen=True)
class Prisms:
    """The pairs that are prisms and their frames.

    Attributes
    ----------
    index : ndarray, shape (K,)
        The pairs (indices into the ``P`` pairs) that are prisms.
    rank : ndarray, shape (K,)
        ``r``, the dimension their rows span (``1 <= r < d``).
    basis : ndarray, shape (K, d, d)
        Orthonormal columns: the first ``r`` span the rows (``U``), the others are free (``W``).
    """

    index: np.ndarray
    rank: np.ndarray
    basis: np.ndarray


def find_prisms(normals: np.ndarray, offsets: np.ndarray) -> Prisms:
    """The pairs whose constraining rows span fewer than ``d`` dimensions (and at least one).

    Parameters
    ----------
    normals : ndarray, shape (P, F, d)
    offsets : ndarray, shape (P, F)
        ``+inf``: the row constrains nothing.

    Returns
    -------
    Prisms
    """
    d = normals.shape[2]
    rows, _ = _unit_rows(normals, offsets)
    G = np.matmul(np.swapaxes(rows, 1, 2), rows)  # (P, d, d)
    tr = np.trace(G, axis1=1, axis2=2)
    cand = np.flatnonzero((tr > 0) & (np.linalg.det(G) <= _SCREEN * tr**d))
    if cand.size == 0:
        return Prisms(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros((0, d, d)))
    _, s, vt = np.linalg.svd(rows[cand])  # s (K, min(F, d)), vt (K, d, d)
    rank = np.sum(s > _TOL * s[:, :1], axis=1)
    keep = rank < d
    return Prisms(cand[keep], rank[keep], np.swapaxes(vt[keep], 1, 2))


def reduced_rows(
    normals: np.ndarray, offsets: np.ndarray, basis: np.ndarray, r: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(U^T n_i) / |U^T n_i| . y <= c_i / |U^T n_i|`` of the prisms' ``P'`` in ``R^r``.

    Parameters
    ----------
    normals : ndarray, shape (K, F, d)
    offsets : ndarray, shape (K, F)
    basis : ndarray, shape (K, d, d)
        :attr:`Prisms.basis` of these pairs, all of rank ``r``.
    r : int

    Returns
    -------
    normals : ndarray, shape (K, F, r)
        Unit rows (zero where the row was zero or constrains nothing).
    offsets : ndarray, shape (K, F)
    """
    unit, c = _unit_rows(normals, offsets)
    n = np.matmul(unit, basis[:, :, :r])
    norm = np.sqrt(np.sum(n * n, axis=2))  # (1 up to the tilt below _TOL; 0 on zero rows)
    free = norm == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(free[..., None], 0.0, n / norm[..., None])
        c = np.where(free, c, c / norm)
    return n, c


def _unit_rows(normals, offsets):
    """Unit rows and their offsets (:func:`._rules.row_norms`: no overflow); rows with an
    ``+inf`` offset become zero padding, zero rows keep their offset (``0 <= c``: empty where
    ``c < 0``, as in every kernel), ``-inf`` offsets stay (empty)."""
    norm = row_norms(normals)
    pad = np.isposinf(offsets) | (norm == 0)
    safe = np.where(pad, 1.0, norm)
    with np.errstate(invalid="ignore"):
        unit = np.where(pad[..., None], 0.0, normals / safe[..., None])
        c = np.where(pad, offsets, offsets / safe)
    return unit, c


def lift_moments(tm: TruncatedMoments, basis: np.ndarray, r: int) -> TruncatedMoments:
    """The prisms' moments in ``R^d`` from those of ``P'`` (``tm``: ``mean`` (K, r), ``cov``
    (K, r, r)): ``U E[y]`` and ``U Cov[y] U^T + W W^T``; the log mass and its error are the
    same."""
    U, W = basis[:, :, :r], basis[:, :, r:]
    mean = np.einsum("kij,kj->ki", U, tm.mean)
    cov = U @ tm.cov @ np.swapaxes(U, 1, 2) + W @ np.swapaxes(W, 1, 2)
    return TruncatedMoments(tm.log_mass, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)), tm.error)
