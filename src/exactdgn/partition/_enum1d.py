"""Exact enumeration for a 1-D latent space: a vectorized breakpoint sweep, layer by layer."""

from __future__ import annotations

import numpy as np

from ..decoder import Decoder
from ._partition import RawPartition

__all__ = ["enumerate_1d"]

# Breakpoints closer than this (relative) are the same point: two hyperplanes through one point.
_MERGE_RTOL = 1e-12


def _interior(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A point well inside each interval (midpoint; one unit from a finite end if unbounded)."""
    out = np.zeros_like(lo)
    both = np.isfinite(lo) & np.isfinite(hi)
    out[both] = 0.5 * (lo[both] + hi[both])
    left = ~np.isfinite(lo) & np.isfinite(hi)
    out[left] = hi[left] - np.maximum(1.0, np.abs(hi[left]))
    right = np.isfinite(lo) & ~np.isfinite(hi)
    out[right] = lo[right] + np.maximum(1.0, np.abs(lo[right]))
    return out


def enumerate_1d(decoder: Decoder, check_budget=None) -> RawPartition:
    """Split the real line at every breakpoint of every hidden unit.

    Layer ``l``'s pre-activations are affine on each interval found from layers ``< l``, so each
    unit has at most one root per interval; roots strictly inside an interval split it.

    Parameters
    ----------
    decoder : Decoder
        A decoder with ``latent_dim == 1``.
    check_budget : callable, optional
        Called with an upper bound on the region count before each layer is processed.
    """
    kink = decoder.kink_mask
    slices = decoder.unit_slices
    lo = np.array([-np.inf])
    hi = np.array([np.inf])
    lo_unit = np.array([-1])
    hi_unit = np.array([-1])
    pats = np.zeros((1, 0), dtype=bool)
    for layer, sl in enumerate(slices):
        M = decoder.layer_maps(pats, layer)  # (R, n, 2)
        a, c = M[:, :, 0], M[:, :, 1]
        is_kink = kink[sl][None, :]
        nz = a != 0
        t = np.where(nz, -c / np.where(nz, a, 1.0), np.nan)  # no root for constant units
        scale = _MERGE_RTOL * np.maximum(1.0, np.abs(t))
        inside = is_kink & (a != 0) & (t > lo[:, None] + scale) & (t < hi[:, None] - scale)
        r_idx, u_idx = np.nonzero(inside)
        if check_budget is not None:
            check_budget(len(lo) + len(r_idx))
        tv = t[r_idx, u_idx]
        order = np.lexsort((tv, r_idx))
        r_idx, u_idx, tv = r_idx[order], u_idx[order], tv[order]
        if len(tv):
            dup = np.zeros(len(tv), dtype=bool)
            same_r = r_idx[1:] == r_idx[:-1]
            close = (tv[1:] - tv[:-1]) <= _MERGE_RTOL * np.maximum(1.0, np.abs(tv[1:]))
            dup[1:] = same_r & close
            r_idx, u_idx, tv = r_idx[~dup], u_idx[~dup], tv[~dup]
        counts = np.bincount(r_idx, minlength=len(lo))  # roots per interval
        n_new = counts + 1
        parent = np.repeat(np.arange(len(lo)), n_new)
        start = np.repeat(np.cumsum(n_new) - n_new, n_new)
        k = np.arange(len(parent)) - start  # piece index within its parent
        first_root = np.cumsum(counts) - counts  # index of the parent's first root
        new_lo = np.where(k == 0, lo[parent], np.nan)
        new_hi = np.where(k == n_new[parent] - 1, hi[parent], np.nan)
        new_lo_u = np.where(k == 0, lo_unit[parent], -1)
        new_hi_u = np.where(k == n_new[parent] - 1, hi_unit[parent], -1)
        has_left = k > 0
        li = first_root[parent[has_left]] + k[has_left] - 1
        new_lo[has_left] = tv[li]
        new_lo_u[has_left] = u_idx[li] + sl.start
        has_right = k < n_new[parent] - 1
        ri = first_root[parent[has_right]] + k[has_right]
        new_hi[has_right] = tv[ri]
        new_hi_u[has_right] = u_idx[ri] + sl.start
        mid = _interior(new_lo, new_hi)
        Mp = M[parent]
        pre = Mp[:, :, 0] * mid[:, None] + Mp[:, :, 1]
        bits = (pre > 0) | ~is_kink
        pats = np.concatenate([pats[parent], bits], axis=1)
        lo, hi, lo_unit, hi_unit = new_lo, new_hi, new_lo_u, new_hi_u

    R = len(lo)
    has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
    nf = has_lo.astype(int) + has_hi.astype(int)
    ptr = np.concatenate([[0], np.cumsum(nf)])
    normals = np.empty((ptr[-1], 1))
    offsets = np.empty(ptr[-1])
    units = np.empty(ptr[-1], dtype=np.int64)
    points = np.empty((ptr[-1], 1))
    pos = ptr[:-1].copy()
    i = pos[has_lo]
    normals[i, 0], offsets[i] = -1.0, -lo[has_lo]
    units[i], points[i, 0] = lo_unit[has_lo], lo[has_lo]
    pos = pos + has_lo
    i = pos[has_hi]
    normals[i, 0], offsets[i] = 1.0, hi[has_hi]
    units[i], points[i, 0] = hi_unit[has_hi], hi[has_hi]
    # generators: left end then right end, homogeneous (point: (z, 1), ray: (-1, 0) / (+1, 0))
    gens = np.empty((R, 2, 2))
    gens[:, 0] = np.where(has_lo[:, None], np.stack([lo, np.ones(R)], 1), [[-1.0, 0.0]])
    gens[:, 1] = np.where(has_hi[:, None], np.stack([hi, np.ones(R)], 1), [[1.0, 0.0]])
    return RawPartition(
        patterns=pats,
        facet_ptr=ptr,
        facet_normals=normals,
        facet_offsets=offsets,
        facet_units=units,
        interior_points=_interior(lo, hi)[:, None],
        bounded=has_lo & has_hi,
        facet_points=points,
        facet_neighbors=None,
        gen_ptr=np.arange(R + 1) * 2,
        generators=gens.reshape(-1, 2),
    )
