"""Thin polygons (``d = 2``): moments from slices across their thin direction.

The 2-D kernel (:mod:`._polygon`) slices a polygon where its *mass* cancels (thinner than
~1e-4 near the mean); its divergence-form covariance (``I - sum_e w_e n_e (gbar_e - E u)^T``,
a difference of ``O(1 / width)`` terms) loses accuracy well before that.  Measured on 60 rotated
strips and half-strips ``w`` wide, 0-4 sd out, against 1-D mpmath intervals (whitened error,
relative to the strip's own spread): 1.4e-10 at ``w = 0.1``, 4.6e-8 at 1e-2, 6.3e-5 at 1e-3,
3.8e-3 at 3e-4 (8e-2 at 1e-4, 3 sd out), i.e. ``~2e-14 w^-3.2`` of the variance, ``_ERR
lambda^-1.6`` with ``lambda ~ w^2 / 12`` the smallest variance (which covers every width from
1e-2 down; at 0.1 the error is 4 times that, 1e-13 absolute); the log masses were within
their estimates.  Polygons where that error can show are redone by slices across their thin
direction with the exact interval moments on the slices (:func:`._polytope_tail.thin_slices`):
alone (no weight), where it exceeds ``_REL_TOL`` of their own spread; in a mixture (with
``log_weight``), where the weight times its absolute size exceeds ``_WEIGHTED_ERR``, as the
thin polyhedra of ``d = 3, 4`` (:mod:`._polytope`).  Small polygons (the kernel's cubature,
accurate at any size) and polygons whose mean is farther than ``_NEAR`` sd (the slices span
``|z| <= 11``) keep the kernel's result; a covariance with a negative variance is always
redone (a half-strip 1e-5 wide around the mean had one).  The log mass and its error stay the
kernel's: they were within their estimates, and the estimate covers the input's conditioning
(a corner of 1e-7 rad 2 sd out is rounded by ``~eps / 1e-7`` along its rows: 2.4e-9 nats,
which the slices' estimate, 2e-14, does not know).
"""

from __future__ import annotations

import numpy as np

from ._interval import TruncatedMoments
from ._rules import normalize_rows, row_norms

__all__ = ["thin_polygon_moments"]

_ERR = 4e-16  # the divergence covariance's error, relative to lambda_min: _ERR lambda_min^-1.6
_REL_TOL = 1e-11  # alone: slice where that exceeds this
# in a mixture: where weight * _ERR lambda^-1.6 * lambda (absolute) exceeds this: a few ulps of
# an O(1) moment (at 1e-16, as d = 3's gate, a [2,32,32,64] posterior of 100 digits sliced 239
# of its 7,707 pairs, 40% more time, and moved nothing beyond 2.2e-16; at 1e-15 none)
_WEIGHTED_ERR = 1e-15
_NEAR = 6.0


def thin_polygon_moments(normals, offsets, tm: TruncatedMoments, log_weight=None):
    """``tm`` (the 2-D kernel's moments of the polygons ``normals . u <= offsets``) with the
    thin polygons' replaced by slices (module docstring).

    Parameters
    ----------
    normals : ndarray, shape (P, F, 2)
    offsets : ndarray, shape (P, F)
    tm : TruncatedMoments
        The kernel's result for them.
    log_weight : ndarray, shape (P,), optional
        The log of the weight each polygon's moments enter a mixture with.

    Returns
    -------
    TruncatedMoments
    """
    from ._polytope_tail import _small_polygons, thin_slices

    lm, mean, cov, err = tm
    fin = np.isfinite(lm) & np.isfinite(mean).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    if not fin.any():
        return tm
    with np.errstate(all="ignore"):
        lam = np.linalg.eigvalsh(np.where(fin[:, None, None], cov, np.eye(2)))[:, 0]
        rel = _ERR * np.maximum(lam, 1e-300) ** -1.6
        if log_weight is None:
            sel = rel > _REL_TOL
        else:
            sel = log_weight + np.log(rel * np.maximum(lam, 1e-300)) > np.log(_WEIGHTED_ERR)
        sel |= lam <= 0  # (a negative variance: wrong by at least that much)
        sel &= fin & (np.sum(mean * mean, axis=1) <= _NEAR**2)
    i = np.flatnonzero(sel)
    if i.size == 0:
        return tm
    nu, cu, _, _ = normalize_rows(normals[i], offsets[i], row_norms(normals[i]))  # any scale
    small = _small_polygons(nu, cu)
    i, nu, cu = i[~small], nu[~small], cu[~small]
    if i.size == 0:
        return tm
    slm, smean, scov, _ = thin_slices(nu, cu, cov[i])
    take = np.isfinite(slm) & np.isfinite(smean).all(axis=1) & np.isfinite(scov).all(axis=(1, 2))
    i, smean, scov = i[take], smean[take], scov[take]
    mean, cov = mean.copy(), cov.copy()
    mean[i], cov[i] = smean, scov
    return TruncatedMoments(lm, mean, cov, err)
