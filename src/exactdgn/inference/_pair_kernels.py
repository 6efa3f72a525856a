"""Compiled kernel of the complete-data pair pass (numba, float64, no fast-math).

Why compiled: in d = 2 the facet bound of the candidate pairs (:func:`._marginal.marginal_pairs`:
a pair's mass is at most ``Φ(min_i c_i)``, ``c_i = g_ri - n_ri · w`` over its region's rows) was
a gather of every candidate's (F, 2) normals and (F,) offsets into (P, F) arrays, one product
and a row minimum: a quarter of the MNIST [2,32,32,784] likelihood on one core, all of it
memory traffic for ~1,000 candidates a point. One loop over the candidates reads the region's
rows from the polygon table (a few kB a region, in cache) and keeps one number a pair; numpy
has no gather-reduce without the intermediate (the missing-data path's
:func:`._missing_kernels.candidate_rows_2d` does the same there).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["facet_min_2d"]


@njit(nogil=True, cache=True)
def facet_min_2d(p, r, W, normals, offsets, width, out):  # pragma: no cover - compiled
    """``out_k = min_i (offsets[r_k, i] - normals[r_k, i] · W[p_k, r_k])`` over the region's
    ``width[r_k]`` real rows (``+inf`` for a region without rows).

    Parameters
    ----------
    p, r : (P,) int   pairs (rows of ``W``, regions)
    W : (n, R, 2)     whitened means ``w_r(x)``
    normals : (R, F, 2), offsets : (R, F), width : (R,)   the polygon table
    out : (P,) float64
    """
    for k in range(p.shape[0]):
        i = p[k]
        m = r[k]
        w0 = W[i, m, 0]
        w1 = W[i, m, 1]
        cmin = np.inf
        for j in range(width[m]):
            c = offsets[m, j] - (normals[m, j, 0] * w0 + normals[m, j, 1] * w1)
            if c < cmin:
                cmin = c
        out[k] = cmin
