"""Compiled row kernels of the missing-data path (numba, float64, no fast-math on the values).

Why compiled: after the masked GEMMs, the d = 1 missing-data likelihood is a handful of cheap
operations per (point, region) pair (a breakpoint recurrence, a log, a division, a comparison)
that numpy can only run as ~15 separate passes over (points x regions) arrays, each pass a
round trip through memory, plus the gathers that pick the pairs. One loop per row does them
in registers: on MNIST t10k with half the pixels missing, [1,64,64,784], one core, the work
after the GEMMs takes about a quarter of numpy's time (``benchmarks/likelihood.py`` prints the
missing-data time beside the complete-data time). No library fuses such elementwise chains on
the CPU without a compiler (numexpr has no recurrences, gathers or row reductions); numba is
the well-kept one.

Each kernel is a pure loop over rows with its outputs passed in (the caller owns and reuses the
buffers), releases the GIL (the blocks run on the library's thread pool) and caches its
machine code on disk. Rounding: the same operations in the same order as the formulas in
:mod:`._missing` state them, except the sum ``||x'||²_Λ``, which may be reassociated
(vectorised).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["chain_rows", "observed_rows", "select_rows"]


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def observed_rows(X, obs, c, lam, m_out, x0_out, xq_out):  # pragma: no cover - compiled
    """The observed part of each row: mask, centred values and their squared norm.

    ``m = obs`` (as 0 / 1), ``x' = m ∘ (x - c)`` (missing entries 0, whatever ``x`` holds
    there: NaN is not propagated) and ``||x'||²_Λ = Σ_j λ_j x'_j²``.

    Parameters
    ----------
    X : (n, D) float64, NaN where missing
    obs : (n, D) bool
    c : (D,) the centre subtracted
    lam : (D,) the noise precisions ``λ_j``
    m_out : (n, >= D) float64, written in its first D columns
    x0_out : (n, D) float64
    xq_out : (n,) float64
    """
    n, D = X.shape
    for i in range(n):
        s = 0.0
        for j in range(D):
            o = obs[i, j]
            v = X[i, j] - c[j]
            v = v if o else 0.0
            m_out[i, j] = 1.0 if o else 0.0
            x0_out[i, j] = v
            s += v * v * lam[j]
        xq_out[i] = s


@njit(nogil=True, cache=True)
def chain_rows(Mq, prod, xq, delta2, two_delta, S, q_out, r1_out):  # pragma: no cover
    """``q = -2 log κ`` of every (point, region) pair of d = 1 from the chain form's GEMMs,
    ``u`` in place, and each point's region of largest ``κ``.

    Regions sorted by position, ``R`` of them, ``B = R - 1`` breakpoints (see
    ``_missing._chain_1d``). ``Mq`` (n, 2R + nA + 1) holds ``k² = 1 + α_i`` (R), ``η_i`` (R),
    ``Y`` at every ``S``-th breakpoint (nA) and ``D_n log 2π + Σ_obs log σ_j²`` (1); ``prod``
    (n, R + B) holds ``x'ᵀΛ a_i - ζ_i`` (R) and ``-2 x'ᵀΛ y_j + ζ_j² - excess_j`` (B). With
    ``Z_j = Y_j + ||x'||²_Λ + const`` from the anchor ``j0 = S ⌊j/S⌋`` by
    ``Z_j = Z_{j-1} + k²_j Δ²_{j-1} + η_j 2Δ_{j-1}`` (the recurrence
    ``Y_{j+1} = Y_j + 2 Δ_j η_{j+1} + Δ_j² α_{j+1}`` run on ``k²``, whose extra ``Δ²`` per
    step is in ``prod``'s constants), ``zq_j = Z_j + prod[R + j]``, and for region ``i``
    (reference breakpoint ``j = max(i - 1, 0)``):

    ``u_i = prod[i] - η_i`` (written back into ``prod[:, :R]``),
    ``q_i = (zq_j + log k²_i) - u_i² / k²_i``.

    ``r1_out[n]`` is the first region of smallest ``q`` (``np.argmin``).
    """
    n = Mq.shape[0]
    R = q_out.shape[1]
    B = R - 1
    last = Mq.shape[1] - 1
    for i in range(n):
        xc = xq[i] + Mq[i, last]
        Z = 0.0
        best = np.inf
        arg = 0
        for j in range(B):
            if j % S == 0:
                Z = Mq[i, 2 * R + j // S] + xc
            else:
                Z += Mq[i, j] * delta2[j - 1] + Mq[i, R + j] * two_delta[j - 1]
            zq = Z + prod[i, R + j]
            if j == 0:  # region 0 shares breakpoint 0 with region 1
                k2 = Mq[i, 0]
                u = prod[i, 0] - Mq[i, R]
                prod[i, 0] = u
                qv = (zq + np.log(k2)) - u * u / k2
                q_out[i, 0] = qv
                best = qv
            r = j + 1
            k2 = Mq[i, r]
            u = prod[i, r] - Mq[i, R + r]
            prod[i, r] = u
            qv = (zq + np.log(k2)) - u * u / k2
            q_out[i, r] = qv
            if qv < best:
                best = qv
                arg = r
        r1_out[i] = arg


@njit(nogil=True, cache=True)
def select_rows(q, k2, u, cut, r1, lo, hi, p_o, r_o, k_o, t_o, lk_o, a_o, b_o):  # pragma: no cover
    """The pairs of d = 1 whose exact weight can be visible, with their whitened intervals.

    Pair ``(n, i)`` is a candidate when ``log κ = -q/2 > cut_n`` (its mass is at most 1), and
    kept when also the tail bound ``log κ - δ²/2 > cut_n`` holds (``δ`` the whitened distance
    from the pair's posterior mean to its interval, the mass at most ``Φ(-δ) <= exp(-δ²/2)``)
    or ``i = r1_n``. For those: ``k = sqrt(k²)``, ``t = u / k``, ``log κ``, and the whitened
    interval ``[lo_i k - t, hi_i k - t]`` (``lo``, ``hi`` relative to the region's reference
    point, ±inf kept), written in order of point then region into the output arrays (each of
    at least ``n R`` entries).

    Returns
    -------
    count : int
        Pairs written.
    n_candidates : int
        Pairs that passed the ``κ`` test.
    """
    n, R = q.shape
    c = 0
    nc = 0
    for i in range(n):
        qc = -2.0 * cut[i]
        for r in range(R):
            qv = q[i, r]
            if qv < qc:
                nc += 1
                k = np.sqrt(k2[i, r])
                t = u[i, r] / k
                lk = qv * -0.5
                a = lo[r] * k - t
                b = hi[r] * k - t
                dist = max(max(a, -b), 0.0)
                if lk + (dist * dist) * -0.5 > cut[i] or r == r1[i]:
                    p_o[c] = i
                    r_o[c] = r
                    k_o[c] = k
                    t_o[c] = t
                    lk_o[c] = lk
                    a_o[c] = a
                    b_o[c] = b
                    c += 1
    return c, nc
