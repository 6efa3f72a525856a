"""Public entry points: Gaussian mass and moments over polyhedra, dispatched on the dimension.

All functions work on ``P`` pairs at once (one polyhedron with one mean folded into its
offsets per pair).  In whitened coordinates ``u ~ N(0, I_d)`` and the polyhedron is
``{u : normals[p] @ u <= offsets[p]}``; rows with a zero normal and an ``+inf`` offset are
padding (no constraint), a polyhedron with no real rows is the whole space.
"""

from __future__ import annotations

import numpy as np

from ._interval import TruncatedMoments, bound_rounding_1d, log_mass_1d, truncated_moments_1d
from ._polygon import _log_mass_2d, _truncated_moments_2d
from ._polygon_thin import thin_polygon_moments
from ._prism import find_prisms, lift_moments, reduced_rows
from ._rules import reject_nan

__all__ = [
    "TruncatedMoments",
    "gaussian_polyhedron_moments",
    "log_mass",
    "truncated_moments",
    "whiten",
]


def _check(normals, offsets) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(normals, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    if n.ndim != 3:
        raise ValueError(f"normals must have shape (P, F, d); got {n.shape}")
    if c.shape != n.shape[:2]:
        raise ValueError(f"offsets must have shape {n.shape[:2]} (P, F); got {c.shape}")
    if n.shape[2] < 1:
        raise ValueError("the dimension d must be at least 1")
    from ._polytope import dimension_limit

    why = dimension_limit(n.shape[2], name="d")
    if why is not None:  # before any work (the facet recursion cannot be interrupted quickly)
        raise ValueError(why)
    bad = ~np.isfinite(n)
    if bad.any():
        raise ValueError(
            f"normals contain {int(bad.sum())} NaN or infinite values (padding rows are zeros)"
        )
    bad = np.isnan(c)
    if bad.any():
        raise ValueError(
            f"offsets contain {int(bad.sum())} NaN values (+inf pads a row, -inf empties the "
            "polyhedron)"
        )
    if n.shape[1] == 0:  # no rows: the whole space, as one padding row
        n = np.zeros((n.shape[0], 1, n.shape[2]))
        c = np.full((n.shape[0], 1), np.inf)
    return n, c


def _check_floor(floor, P: int):
    if floor is None:
        return None
    f = np.asarray(floor, dtype=np.float64)
    if f.ndim > 1 or (f.ndim == 1 and f.shape[0] != P) or np.isnan(f).any():
        raise ValueError(f"floor must be a scalar or an array of shape ({P},) without NaN")
    return np.broadcast_to(f, (P,))


def _checked_log_weight(log_weight, P: int) -> np.ndarray | None:
    if log_weight is None:
        return None
    log_weight = np.asarray(log_weight, dtype=float)
    if log_weight.shape != (P,):
        raise ValueError(
            f"log_weight must have shape ({P},) (one per polyhedron), got {log_weight.shape}"
        )
    reject_nan(log_weight, "log_weight", "give -inf for a polyhedron of weight 0")
    return log_weight


def _as_moments(res) -> TruncatedMoments:
    return res if isinstance(res, TruncatedMoments) else TruncatedMoments(*res)


def log_mass(normals, offsets, *, return_error: bool = False, floor=None, log_weight=None):
    """``log P(u in poly)`` for ``u ~ N(0, I_d)``, relative-accurate also deep in the tails.

    Parameters
    ----------
    normals : array_like, shape (P, F, d)
        Unit row normals (zero rows for padding; nonzero rows are normalised internally);
        finite. ``F = 0`` is the whole space.
    offsets : array_like, shape (P, F)
        Offsets (``+inf`` for padding; ``-inf`` makes the polyhedron empty); NaN is an error.
    return_error : bool
        Also return an estimate of the absolute error of each log mass.
    floor : array_like, shape (P,), optional
        Permission to skip: a pair whose mass a cheap bound proves below ``exp(floor)`` may be
        returned as ``-inf`` (error 0) without being integrated (used by exact pruning, where
        such pairs cannot change the result). Used in d = 2 (closest-point bound
        ``Q(distance)``); other dimensions integrate every pair.
    log_weight : array_like, shape (P,), optional
        The log of the factor each mass is multiplied by in a sum of total about 1 (in a
        mixture ``p(x) = sum_r kappa_r m_r``: ``log kappa_r - log p(x)``, or a lower bound of
        ``log p(x)`` in its place). Used in d = 3, 4: a thin polyhedron, whose edge-formula terms
        cancel, is integrated again from slices across its thin direction where its error
        times this factor could show (above 1e-12, the rounding a mixture's log p(x)
        carries from its log kappa); without it, every thin one is.

    Returns
    -------
    log_mass : ndarray, shape (P,)
        Log masses (``-inf`` for empty or measure-zero polyhedra).
    error : ndarray, shape (P,) (only with ``return_error``)
    """
    n, c = _check(normals, offsets)
    floor = _check_floor(floor, n.shape[0])
    log_weight = _checked_log_weight(log_weight, n.shape[0])  # (used in d >= 3; checked in all)
    d = n.shape[2]
    if d == 1:
        res = log_mass_1d(n, c)
    elif d == 2:
        res = _log_mass_2d(n, c, floor)
    else:
        res = _log_mass_prisms(n, c, log_weight)
    if not isinstance(res, tuple):
        res = (res, np.zeros_like(res))
    return res if return_error else res[0]


def _log_mass_prisms(n, c, log_weight) -> tuple[np.ndarray, np.ndarray]:
    """``d >= 3``: the facet recursion, with prisms (rows spanning fewer dimensions) reduced
    exactly to their rows' span first (:mod:`._prism`)."""
    from ._polytope import log_mass_nd

    pr = find_prisms(n, c)
    if pr.index.size == 0:
        return log_mass_nd(n, c, log_weight)
    P = n.shape[0]
    lm, err = np.empty(P), np.empty(P)
    rest = np.setdiff1d(np.arange(P), pr.index)
    if rest.size:
        lm[rest], err[rest] = log_mass_nd(n[rest], c[rest], _rows(log_weight, rest))
    for r in np.unique(pr.rank):
        sel = pr.rank == r
        i = pr.index[sel]
        nr, cr = reduced_rows(n[i], c[i], pr.basis[sel], int(r))
        lm[i], err[i] = log_mass(nr, cr, return_error=True, log_weight=_rows(log_weight, i))
        err[i] += _reduced_rounding(nr, cr, lm[i], r)
    return lm, err


def _reduced_rounding(nr, cr, lm, r: int) -> np.ndarray | float:
    """The error a prism's reduction adds to its log mass: its reduced offsets were divided by
    two norms, rounded where the rows were not unit, which the 1-D kernel cannot see in its
    ``+-1`` rows (a slab of rows ``+-3`` 1e-6 wide at 12 sd: 1.2e-9 nats against an estimate of
    6e-13). ``r >= 2``: the polygon kernels' estimates cover their offsets' rounding."""
    if r != 1:
        return 0.0
    return bound_rounding_1d(nr, cr, lm, rounded=np.ones(lm.shape, bool))


def _truncated_moments_prisms(n, c, log_weight) -> TruncatedMoments:
    """:func:`_log_mass_prisms` for the moments."""
    from ._polytope import truncated_moments_nd

    pr = find_prisms(n, c)
    if pr.index.size == 0:
        return _as_moments(truncated_moments_nd(n, c, log_weight))
    P, _, d = n.shape
    parts = [np.empty(P), np.empty((P, d)), np.empty((P, d, d)), np.empty(P)]
    rest = np.setdiff1d(np.arange(P), pr.index)
    if rest.size:
        tm = _as_moments(truncated_moments_nd(n[rest], c[rest], _rows(log_weight, rest)))
        for part, v in zip(parts, tm, strict=True):
            part[rest] = v
    for r in np.unique(pr.rank):
        sel = pr.rank == r
        i, basis = pr.index[sel], pr.basis[sel]
        nr, cr = reduced_rows(n[i], c[i], basis, int(r))
        tm = lift_moments(truncated_moments(nr, cr, log_weight=_rows(log_weight, i)), basis, r)
        tm = tm._replace(error=tm.error + _reduced_rounding(nr, cr, tm.log_mass, r))
        for part, v in zip(parts, tm, strict=True):
            part[i] = v
    return TruncatedMoments(*parts)


def _rows(x, i):
    return None if x is None else x[i]


def truncated_moments(normals, offsets, *, floor=None, log_weight=None) -> TruncatedMoments:
    """Log mass, mean and covariance of ``N(0, I_d)`` restricted to each polyhedron.

    Parameters
    ----------
    normals : array_like, shape (P, F, d)
    offsets : array_like, shape (P, F)
    floor : array_like, shape (P,), optional
        As in :func:`log_mass` (skipped pairs: ``log_mass = -inf``, NaN moments).
    log_weight : array_like, shape (P,), optional
        ``d = 3, 4``: the log of the weight (<= 0) each polyhedron's moments enter a mixture
        with.  Far polyhedra (distance >= 8) whose weight hides the fast form's error
        (absolute ``<= 1e-13 D^4``, in ``d = 4`` also ``1e-17 D^6``; below ``1e-16`` once
        weighted) skip the slower slicing that makes their moments accurate on their own.
        Without it, every far polyhedron is sliced. Thin polyhedra (cancelling
        edge-formula terms, or a smallest variance below 1e-4) likewise, where their weight
        times their error could show (see :func:`log_mass`).  ``d = 2``: thin polygons are
        sliced where their weight times their covariance error could show
        (:mod:`._polygon_thin`; without it, where that error exceeds 1e-11 of their own
        spread); far polygons are always sliced.

    Returns
    -------
    TruncatedMoments
        ``log_mass (P,)``, ``mean (P, d)``, ``cov (P, d, d)`` (centred, symmetric),
        ``error (P,)`` (estimated absolute error of ``log_mass``).
    """
    n, c = _check(normals, offsets)
    floor = _check_floor(floor, n.shape[0])
    log_weight = _checked_log_weight(log_weight, n.shape[0])
    d = n.shape[2]
    if d == 1:
        return truncated_moments_1d(n, c)
    if d == 2:
        tm = _truncated_moments_2d(n, c, floor)
        return thin_polygon_moments(n, c, tm, log_weight)
    return _truncated_moments_prisms(n, c, log_weight)


def whiten(mean, cov_chol, C, e) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ``z ~ N(mean, L L^T)`` over ``{z : C z <= e}`` to whitened unit rows.

    With ``u = L^{-1}(z - mean)`` the constraint ``C_i z <= e_i`` becomes
    ``n_i . u <= c_i``, ``n_i = (C L)_i / ||(C L)_i||``, ``c_i = (e_i - C_i mean) / ||(C L)_i||``
    (``c_i`` is the signed distance of the mean from the facet in whitened units).

    Parameters
    ----------
    mean : array_like, shape (P, d)
    cov_chol : array_like, shape (P, d, d) or (d, d)
        Lower Cholesky factor ``L`` of the covariance.
    C : array_like, shape (P, F, d) or (F, d)
    e : array_like, shape (P, F) or (F,)

    Returns
    -------
    normals : ndarray, shape (P, F, d)
        Unit rows (zero rows where ``C_i L = 0``; those keep ``c_i = e_i - C_i mean``).
    offsets : ndarray, shape (P, F)
    scale : ndarray, shape (P, F)
        ``||(C L)_i||``.

    NaN in any argument is an error (``ValueError`` naming the argument and the count).
    """
    mean, cov_chol, C, e = _checked_gaussian(mean, cov_chol, C, e, "cov_chol")
    return _whiten(mean, cov_chol, C, e)


# What to give instead of NaN in whiten / gaussian_polyhedron_moments.
_GAUSS_HINTS = {
    "mean": "the Gaussian's mean, a finite point per pair",
    "cov_chol": "the Cholesky factor of a positive-definite covariance",
    "cov": "a positive-definite covariance",
    "C": "the constraint rows C z <= e, finite",
    "e": "+inf drops a row, -inf empties the polyhedron",
}


def _checked_gaussian(mean, cov, C, e, cov_name: str):
    out = []
    for name, x in (("mean", mean), (cov_name, cov), ("C", C), ("e", e)):
        x = np.asarray(x, dtype=np.float64)
        reject_nan(x, name, _GAUSS_HINTS[name])
        out.append(x)
    return tuple(out)


def _whiten(mean, cov_chol, C, e) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`whiten` without the NaN checks (the library's own per-chunk callers)."""
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 2:
        raise ValueError(f"mean must have shape (P, d); got {mean.shape}")
    P, d = mean.shape
    L = np.asarray(cov_chol, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    if L.shape not in ((d, d), (P, d, d)):
        raise ValueError(f"cov_chol must have shape ({d}, {d}) or ({P}, {d}, {d}); got {L.shape}")
    if C.ndim not in (2, 3) or C.shape[-1] != d or (C.ndim == 3 and C.shape[0] != P):
        raise ValueError(f"C must have shape (F, {d}) or ({P}, F, {d}); got {C.shape}")
    F = C.shape[-2]
    if e.shape not in ((F,), (P, F)):
        raise ValueError(f"e must have shape ({F},) or ({P}, {F}); got {e.shape}")
    CL = np.matmul(C, L)  # (F, d) or (P, F, d)
    CL = np.broadcast_to(CL, (P, F, d))
    scale = np.linalg.norm(CL, axis=-1)
    Cm = np.matmul(C, mean[:, :, None])[..., 0]  # (P, F) for C of shape (F, d) or (P, F, d)
    with np.errstate(all="ignore"):
        raw = np.broadcast_to(e, (P, F)) - Cm
        pos = scale > 0
        safe = np.where(pos, scale, 1.0)
        normals = np.where(pos[..., None], CL / safe[..., None], 0.0)
        offsets = np.where(pos, raw / safe, raw)
    return normals, offsets, scale


def gaussian_polyhedron_moments(mean, cov, C, e) -> TruncatedMoments:
    """Mass and moments of ``z ~ N(mean, cov)`` restricted to ``{z : C z <= e}`` (z-space).

    Parameters
    ----------
    mean : array_like, shape (P, d)
    cov : array_like, shape (P, d, d) or (d, d)
        Positive-definite covariances.
    C : array_like, shape (P, F, d) or (F, d)
    e : array_like, shape (P, F) or (F,)

    Returns
    -------
    TruncatedMoments
        ``log_mass = log P(z in poly)``, ``mean = E[z | poly]``, ``cov = Cov[z | poly]``
        (``L Cov[u] L^T``, symmetric) and the ``error`` of ``log_mass``.

    NaN in any argument is an error (``ValueError`` naming the argument and the count).
    """
    mu, cov, C, e = _checked_gaussian(mean, cov, C, e, "cov")
    d = mu.shape[-1] if mu.ndim == 2 else None
    if d is not None and cov.shape not in ((d, d), (mu.shape[0], d, d)):
        raise ValueError(
            f"cov must have shape ({d}, {d}) or ({mu.shape[0]}, {d}, {d}); got {cov.shape}"
        )
    try:
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(
            "cov must be positive definite (a covariance with a zero or negative variance "
            "direction has no Gaussian density: regularise it, e.g. cov + 1e-12 I)"
        ) from None
    normals, offsets, _ = _whiten(mu, L, C, e)
    res = truncated_moments(normals, offsets)
    Lb = np.broadcast_to(L, (mu.shape[0], *L.shape[-2:]))
    zmean = mu + np.einsum("pij,pj->pi", Lb, res.mean)
    zcov = Lb @ res.cov @ np.swapaxes(Lb, 1, 2)
    zcov = 0.5 * (zcov + np.swapaxes(zcov, 1, 2))
    return TruncatedMoments(res.log_mass, zmean, zcov, res.error)
