"""Compiled row kernels of the missing-data path (numba, float64, no fast-math on the values).

Why compiled: after the masked GEMMs, the missing-data likelihood is a handful of cheap
operations per (point, region) pair (in d = 1 a breakpoint recurrence, a log, a division, a
comparison; in d = 2 the Cholesky entries, ``log κ`` and, for the pairs that pass the ``κ``
test, two bounds on their mass) that numpy can only run as ~15 separate passes over (points x
regions) arrays, each a round trip through memory, plus the gathers that pick the pairs. One
loop per row does them in registers: on MNIST t10k with half the pixels missing, one core,
the work after the GEMMs takes about a quarter of numpy's time in d = 1 and about half in
d = 2 (``benchmarks/likelihood.py`` prints the missing-data time beside the complete-data
time). No library fuses such elementwise chains on the CPU without a compiler (numexpr has no
recurrences, gathers or row reductions); numba is the well-kept one.

Each kernel is a pure loop over rows with its outputs passed in (the caller owns and reuses the
buffers), releases the GIL (the blocks run on the library's thread pool) and caches its
machine code on disk. Rounding: the same operations in the same order as the formulas in
:mod:`._missing` state them, except the sum ``||x'||²_Λ``, which may be reassociated
(vectorised).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_LOG_2 = float(np.log(2.0))
_HALF_LOG_2PI = float(0.5 * np.log(2.0 * np.pi))

__all__ = [
    "candidate_rows_2d",
    "chain_rows",
    "kappa_rows_2d",
    "observed_quad",
    "observed_rows",
    "pair_rounding",
    "select_rows",
]


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def observed_quad(X, obs, c, lam, out):  # pragma: no cover - compiled
    """``out_i = Σ_j obs_ij λ_j (x_ij - c_j)²`` (missing entries skipped, NaN not propagated):
    :func:`observed_rows`'s ``||x'||²_Λ`` alone, in one pass over the rows without (n, D)
    temporaries (the size estimate of :func:`exactdgn.inference._missing._refine_observed`).
    ``X``, ``obs``, ``c``, ``lam`` as there; ``out`` (n,) float64."""
    n, D = X.shape
    for i in range(n):
        s = 0.0
        for j in range(D):
            if obs[i, j]:
                v = X[i, j] - c[j]
                s += v * v * lam[j]
        out[i] = s


@njit(nogil=True, cache=True)
def pair_rounding(
    p,
    r,
    xq,
    bq,
    v,
    mu,
    log_joint,
    log_px,
    L,
    check_cond,
    cond,
    rtol,
    cond_max,
    unit,
    err,
    bad,
    err_px,
):  # pragma: no cover - compiled
    """The rounding estimate of each missing-data pair's ``log κ`` and the pairs to recompute
    (:func:`exactdgn.inference._missing._refine_observed`), in one pass over the pairs.

    ``err_k = unit (2 (xq[p_k] + bq[r_k]) + |v_k · μ_k|)`` plus, with the condition number
    ``κ_k`` of ``P_r(n)`` (d = 2: the bound ``(||L||_F² / |det L|)²`` of ``cond(L)²``; else
    ``cond[k]``), the formed ``P``'s part ``ε κ_k (|w|² + |w| √(xq + bq) + d)`` (``|w|² =
    v · μ``: its weak direction and ``log|P|`` carry ``~ε κ_k`` relative); ``bad_k`` when the
    first part exceeds ``rtol max(1, |log_joint_k|)`` or ``κ_k > cond_max``. The other pairs add
    ``exp(log_joint_k - log_px[p_k]) err_k`` to ``err_px[p_k]``.
    """
    eps = unit / 8.0
    d = v.shape[1]
    for k in range(p.shape[0]):
        i = p[k]
        vm = 0.0
        for j in range(v.shape[1]):
            vm += v[k, j] * mu[k, j]
        size = xq[i] + bq[r[k]]
        e = unit * (2.0 * size + abs(vm))
        lj = log_joint[k]
        if check_cond:
            frob = L[k, 0, 0] ** 2 + L[k, 0, 1] ** 2 + L[k, 1, 0] ** 2 + L[k, 1, 1] ** 2
            c = frob / abs(L[k, 0, 0] * L[k, 1, 1])
            kappa = c * c
        else:
            kappa = cond[k]
        # recomputation triggered by the terms' rounding and cond(P) alone (the values of
        # published runs stay to the bit), the conditioning term reported
        b = e > rtol * max(1.0, abs(lj)) or kappa > cond_max
        e += eps * kappa * (abs(vm) + math.sqrt(abs(vm) * max(size, 0.0)) + d)
        err[k] = e
        bad[k] = b
        lw = lj - log_px[i]
        if not b and np.isfinite(lw):
            err_px[i] += np.exp(lw) * e


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
def chain_rows(
    Mq, prod, xq, anchor, src, c2, c1, restart, ra, rb, q_out, r1_out
):  # pragma: no cover
    """``q = -2 log κ`` of every (point, region) pair of d = 1 from the chain form's GEMMs,
    ``u`` in place, and each point's region of largest ``κ``.

    Regions sorted by position, ``R`` of them; the walk's ``B'`` points (the breakpoints and
    ``z = 0``, from 0 rightwards then leftwards; see ``_missing._chain_1d``). ``Mq``
    (n, 2R + nA + 1) holds ``k² = 1 + α_i`` (R), ``η_i`` (R), ``Y`` at the walk's anchors (nA)
    and ``D_n log 2π + Σ_obs log σ_j²`` (1); ``prod`` (n, R + B') holds ``x'ᵀΛ a_i - ζ_i`` (R)
    and, in the walk's order, ``-2 x'ᵀΛ y_e + E_e² - excess_e`` (B'). With
    ``Z = Y + ||x'||²_Λ + const``: at an anchor step ``Z`` is the GEMM's column, otherwise
    ``Z += k²_ρ c2 + η_ρ c1`` from the step before (from the first step's ``Z`` where
    ``restart``), ``ρ = src``; ``zq = Z + prod[R + s]``, and for each region ``i`` written from
    that point (``ra``, ``rb``):

    ``u_i = prod[i] - η_i`` (written back into ``prod[:, :R]``),
    ``q_i = (zq + log k²_i) - u_i² / k²_i``.

    ``r1_out[n]`` is the first region of smallest ``q`` (as ``np.argmin``).
    """
    n = Mq.shape[0]
    R = q_out.shape[1]
    nE = c2.shape[0]
    last = Mq.shape[1] - 1
    for i in range(n):
        xc = xq[i] + Mq[i, last]
        Z = 0.0
        Z0 = 0.0
        best = np.inf
        arg = R
        for s in range(nE):
            j = anchor[s]
            if j >= 0:
                Z = Mq[i, 2 * R + j] + xc
            else:
                if restart[s]:
                    Z = Z0
                g = src[s]
                Z += Mq[i, g] * c2[s] + Mq[i, R + g] * c1[s]
            if s == 0:
                Z0 = Z
            zq = Z + prod[i, R + s]
            for t in range(2):
                r = ra[s] if t == 0 else rb[s]
                if r < 0:
                    continue
                k2 = Mq[i, r]
                u = prod[i, r] - Mq[i, R + r]
                prod[i, r] = u
                qv = (zq + np.log(k2)) - u * u / k2
                q_out[i, r] = qv
                if qv < best or (qv == best and r < arg):
                    best = qv
                    arg = r
        r1_out[i] = arg if arg < R else 0


@njit(nogil=True, cache=True)
def select_rows(
    q, k2, u, lower, thr, r1, r2, lo, hi, p_o, r_o, k_o, t_o, lk_o, a_o, b_o
):  # pragma: no cover
    """The pairs of d = 1 whose exact weight can be visible, with their whitened intervals.

    Pair ``(n, i)`` is a candidate when ``log κ - lower_n = -q/2 - lower_n > -thr`` (its mass
    is at most 1), and kept when also the tail bound ``log κ - lower_n - δ²/2 > -thr`` holds
    (``δ`` the whitened distance from the pair's posterior mean to its interval, the mass at
    most ``Φ(-δ) <= exp(-δ²/2)``) or ``i`` is a seed (``r1_n``, ``r2_n``: the pairs whose
    exact terms gave ``lower_n``; at ``|x| ~ 4e15`` the tail test's two ``~1e32`` terms round
    by more than ``thr``, and the pair holding all the mass was dropped). For those:
    ``k = sqrt(k²)``, ``t = u / k``, ``log κ``, and the whitened interval
    ``[lo_i k - t, hi_i k - t]`` (``lo``, ``hi`` relative to the region's reference point,
    ±inf kept), written in order of point then region into the output arrays (each of at
    least ``n R`` entries). Every test is in differences: at ``|log p| > ~2e17`` nats
    ``lower_n - thr`` rounds to ``lower_n``.

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
        lo_i = lower[i]  # tests in differences: at |log p| > ~2e17 nats `lower - thr`
        for r in range(R):  # rounds to `lower` and the best pair could fail `>`
            qv = q[i, r]
            if qv * -0.5 - lo_i > -thr:
                nc += 1
                k = np.sqrt(k2[i, r])
                t = u[i, r] / k
                lk = qv * -0.5
                a = lo[r] * k - t
                b = hi[r] * k - t
                dist = max(max(a, -b), 0.0)
                if (lk - lo_i) + (dist * dist) * -0.5 > -thr or r == r1[i] or r == r2[i]:
                    p_o[c] = i
                    r_o[c] = r
                    k_o[c] = k
                    t_o[c] = t
                    lk_o[c] = lk
                    a_o[c] = a
                    b_o[c] = b
                    c += 1
    return c, nc


@njit(nogil=True, cache=True)
def kappa_rows_2d(Mq, prod, v1, c, k00, k10, k11):  # pragma: no cover - compiled
    """``log κ`` of every (point, region) pair of d = 2 from the masked sums and the GEMM, in
    place (``_missing._kappa_2d`` states the formulas).

    ``Mq`` (n, 6R): ``Σ mλ a0a0 | a0a1 | a1a1 | a0b' | a1b' | b'²`` becomes ``P00 = 1 + ...``
    (block 0), ``k11² = P11 - P01²/P00`` (block 2) and ``log κ`` (block 5); ``prod`` (n, 3R):
    ``x'ᵀΛ A_r K_r^{-T}`` (two blocks) and ``-2 x'ᵀΛ b'_r``, block 0 becomes
    ``v0 = k00 w0 - Σ mλ a0 b'``; ``v1`` (n, R) is written (``k10 w0 + k11 w1 - Σ mλ a1 b'``);
    ``c`` (n,) is ``||x'||²_Λobs + D_n log 2π + Σ_obs log σ²``; ``k00, k10, k11`` (R,) the
    regions' complete-data Cholesky entries. With ``t = P01/P00``
    (``k11² >= 1``: a rounded value below is raised to 1),
    ``log κ = -½ (b'² - 2 x'ᵀΛb' + c + log(P00 k11²) - (v1 - t v0)²/k11² - v0²/P00)``.
    """
    n = Mq.shape[0]
    R = v1.shape[1]
    for i in range(n):
        ci = c[i]
        for r in range(R):
            wf0 = prod[i, r]
            vq = wf0 * k10[r]
            vq += prod[i, R + r] * k11[r]
            vq -= Mq[i, 4 * R + r]
            v1[i, r] = vq
            v0 = wf0 * k00[r] - Mq[i, 3 * R + r]
            prod[i, r] = v0
            p00 = Mq[i, r] + 1.0
            Mq[i, r] = p00
            p01 = Mq[i, R + r]
            t = p01 / p00
            u = vq - t * v0
            # P >= I makes the Schur complement >= 1; rounding at cond(P) ~ 1e16 and above
            # can take it to 0 or below (such pairs are recomputed by QR: _refine_observed)
            k11sq = max((Mq[i, 2 * R + r] + 1.0) - t * p01, 1.0)
            Mq[i, 2 * R + r] = k11sq
            sq = (Mq[i, 5 * R + r] + prod[i, 2 * R + r]) + ci
            sq += np.log(p00 * k11sq)
            sq -= u * u / k11sq
            sq -= v0 * v0 / p00
            Mq[i, 5 * R + r] = sq * -0.5


@njit(nogil=True, cache=True)
def _log_phi_upper(x):  # pragma: no cover - compiled
    """An upper bound of ``log Φ(x)`` (equal to it up to rounding for ``x >= -5``; below, the
    Mills-ratio bound ``Φ(x) <= φ(x) / |x|``, within ``1/x²`` of it)."""
    if x >= -5.0:
        return np.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    return -0.5 * x * x - np.log(-x) - _HALF_LOG_2PI


@njit(nogil=True, cache=True)
def candidate_rows_2d(
    Mq,
    prod,
    v1,
    lower,
    thr,
    slack,
    seed_key,
    L0,
    centroid,
    radius,
    width,
    normals,
    offsets,
    p_o,
    r_o,
    lk_o,
    w_o,
    T_o,
):  # pragma: no cover - compiled
    """The d = 2 pairs, other than the seeds, whose exact weight can be visible, with the
    per-pair whitening that their polygon masses need (``_missing._observed_2d``).

    After :func:`kappa_rows_2d` (``Mq``'s blocks ``P00``, ``P01``, ``k11²``, ``log κ``,
    ``prod``'s ``v0`` and ``v1``), for each point ``n`` (``lk = log κ - lower_n``: every test
    in differences, as ``lower_n - thr`` rounds to ``lower_n`` at ``|log p| > ~2e17`` nats),
    pair ``(n, r)`` (not a seed: ``n R + r`` not in the sorted ``seed_key``) passes when

    1. ``lk > -thr`` (the mass is at most 1);
    2. the disc bound: with ``K = [[k00, 0], [k10, k11]]`` (``k00 = √P00``, ``k10 = P01/k00``,
       ``k11 = √(k11²)``), ``w = K^{-1} v`` and ``T = K ᵀ L0_r`` (the table's whitened
       polygon to the pair's: ``u = T u0 - w``), the image of the table's vertex disc
       ``|u0 - g| <= ρ`` lies within ``σ_max(T) ρ`` of ``T g - w``; where the mean lies at a
       distance ``δ > 0`` outside it, the mass is at most ``exp(-δ²/2) / 2``:
       ``lk - δ²/2 - log 2 > -thr - slack``;
    3. the facet bound: the mass is at most ``Φ(min_i c_i)`` over the mapped rows
       ``c = (g det T - a.w) / |a|``, ``a = adj(T)ᵀ n`` (table rows ``n.u0 <= g``):
       ``lk + min(0, log Φ(c_min)) > -thr`` (an upper bound of ``log Φ``).

    The pairs that pass are written in order of point then region: ``p``, ``r``, ``log κ``,
    ``w`` (2,) and ``T`` (2, 2). Returns their count.
    """
    n = Mq.shape[0]
    R = v1.shape[1]
    c = 0
    js = 0
    ns = seed_key.shape[0]
    for i in range(n):
        lo_i = lower[i]  # tests in differences (see select_rows)
        for r in range(R):
            lk = Mq[i, 5 * R + r]
            if not lk - lo_i > -thr:
                continue
            key = i * R + r
            while js < ns and seed_key[js] < key:
                js += 1
            if js < ns and seed_key[js] == key:
                continue
            k00 = np.sqrt(Mq[i, r])
            k10 = Mq[i, R + r] / k00
            k11 = np.sqrt(Mq[i, 2 * R + r])
            w0 = prod[i, r] / k00
            w1 = (v1[i, r] - k10 * w0) / k11
            t00 = k00 * L0[r, 0, 0]
            t01 = k00 * L0[r, 0, 1] + k10 * L0[r, 1, 1]
            t11 = k11 * L0[r, 1, 1]
            rho = radius[r]
            if np.isfinite(rho):
                f2 = t00 * t00 + t01 * t01 + t11 * t11
                det = t00 * t11
                smax = np.sqrt(0.5 * (f2 + np.sqrt(max(f2 * f2 - 4.0 * det * det, 0.0))))
                g0 = centroid[r, 0]
                g1 = centroid[r, 1]
                c0 = t00 * g0 + t01 * g1 - w0
                c1 = t11 * g1 - w1
                dist = np.sqrt(c0 * c0 + c1 * c1) - rho * smax
                if dist > 0.0 and not (lk - lo_i) + (-0.5 * dist * dist - _LOG_2) > -thr - slack:
                    continue
            cmin = np.inf
            det = t00 * t11
            for j in range(width[r]):
                n0 = normals[r, j, 0]
                n1 = normals[r, j, 1]
                a0 = t11 * n0
                a1 = t00 * n1 - t01 * n0
                cj = (offsets[r, j] * det - a0 * w0 - a1 * w1) / np.hypot(a0, a1)
                if cj < cmin:
                    cmin = cj
            if cmin < 0.0 and not (lk - lo_i) + _log_phi_upper(cmin) > -thr:
                continue
            p_o[c] = i
            r_o[c] = r
            lk_o[c] = lk
            w_o[c, 0] = w0
            w_o[c, 1] = w1
            T_o[c, 0, 0] = t00
            T_o[c, 0, 1] = t01
            T_o[c, 1, 0] = 0.0
            T_o[c, 1, 1] = t11
            c += 1
    return c
