"""Exact marginal likelihood ``log p(x) = logsumexp_r [log κ_r(x) + log Φ_r(x)]`` and E-step pairs.

Exact pruning (no approximation beyond double precision): ``Φ_r(x) <= 1``; for every facet
``Φ_r(x) <= Φ(c_i(x))`` (the region lies in the facet's half-space); and in d = 2
``Φ_r(x) <= Q(δ)`` with ``δ`` the whitened distance from ``μ_r(x)`` to the region (it lies beyond
the tangent line at its closest point; checked inside the polygon integrator, before any
integral). A lower bound ``ℓ(x)`` of ``log p(x)`` comes from the few regions with the largest
``κ_r(x)``; a pair whose upper bound ``log κ_r + log(bound)`` is below
``ℓ(x) - prune_nats - log R`` contributes less than ``e^{-prune_nats}`` in total relative terms and
is skipped. In d = 1 with moments, pairs whose exact weight is below that level get no moments.
"""

from __future__ import annotations

import functools
import numbers
import os
from dataclasses import dataclass, fields

import numpy as np
from scipy.special import log_ndtr

from .. import gaussian
from .._progress import report
from .._threads import blas_one_thread
from .._validation import check_array, is_int

# the unchecked forms: no NaN scan of each chunk on this hot path
from ..gaussian._interval import _interval_stats, _log_interval_mass, log_phi
from ._geometry import _EPS, RegionGeometry

__all__ = ["PairStats", "log_kappa_all", "marginal_pairs"]


@dataclass
class PairStats:
    """Point-region pairs that carry the posterior mass, with exact quantities.

    Attributes
    ----------
    point : (P,) int      index of the data point
    region : (P,) int     index of the region
    log_joint : (P,)      ``log κ_r(x) + log Φ_r(x)``
    log_px : (N,)         exact ``log p(x)``
    log_px_error : (N,)   estimated absolute error of ``log p(x)`` (integration + pruning)
    v : (P, d)            ``A_r^T Λ (x - b_r)``
    offsets : (P, F) or None   whitened facet offsets (None: not computed, see
                          ``RegionGeometry.offsets(v, region)``)
    mean : (P, d) or None        ``E[z | x, r]`` (with ``need_moments``)
    cov : (P, d, d) or None      ``Cov[z | x, r]``
    n_candidates : int    pairs considered before the facet bound
    pair_normals : (P, F, d) or None, pair_L : (P, d, d) or None, pair_mu : (P, d) or None,
    pair_log_det_P : (P,) or None
        Per-pair whitened normals, ``L``, untruncated mean ``μ`` and ``log|P|`` when they depend
        on the point (missing values, :func:`exactdgn.inference.observed_pairs`); None: the
        region's own (``geom.normals[region]``, ...). With ``pair_L`` set and ``pair_normals``
        or ``offsets`` None, the pairs' whitened rows are computed from ``L`` and ``μ`` on
        first use (:meth:`geometry`, :meth:`whitened_offsets`): scoring does not need them.
    whitened_mean : (P, d) or None   ``w = K_r^{-1} v`` from ``(Λ A_r K_r^{-T})^T (x - b_r)``
        (None: not kept). In QR-factored regions (``geom.qr_factored``: a steep and a flat
        direction) ``μ = L_r w`` and the offsets ``g_r - n_r w`` keep the flat direction,
        which ``S_r v`` and ``g_r - G_r v`` cancel away.
    """

    point: np.ndarray
    region: np.ndarray
    log_joint: np.ndarray
    log_px: np.ndarray
    log_px_error: np.ndarray
    v: np.ndarray
    offsets: np.ndarray | None
    mean: np.ndarray | None = None
    cov: np.ndarray | None = None
    n_candidates: int = 0
    pair_normals: np.ndarray | None = None
    pair_L: np.ndarray | None = None
    pair_mu: np.ndarray | None = None
    pair_log_det_P: np.ndarray | None = None
    whitened_mean: np.ndarray | None = None

    def geometry(self, geom: RegionGeometry):
        """``(normals (P, F, d), L (P, d, d), μ (P, d), log|P| (P,))`` of every pair."""
        if self.pair_L is not None:
            if self.pair_normals is None or self.offsets is None:
                from ._missing import pair_whitening

                self.pair_normals, self.offsets = pair_whitening(
                    geom, self.region, self.pair_L, self.pair_mu
                )
            return self.pair_normals, self.pair_L, self.pair_mu, self.pair_log_det_P
        r = self.region
        mu = geom.posterior_mean(self.v, r, self.whitened_mean)
        return geom.normals[r], geom.L[r], mu, geom.log_det_P[r]

    def whitened_offsets(self, geom: RegionGeometry) -> np.ndarray:
        """(P, F) whitened facet offsets of every pair (computed and kept on first use)."""
        if self.offsets is None:
            if self.pair_L is not None:
                self.geometry(geom)
            else:
                self.offsets = geom.offsets(self.v, self.region, self.whitened_mean)
        return self.offsets

    @property
    def log_weight(self) -> np.ndarray:
        """(P,) log posterior probability of the region given the point,
        ``log_joint - log_px`` (renormalised on far rows, :func:`renormalised_log_weight`)."""
        return renormalised_log_weight(self.log_joint, self.log_px, self.point)


WEIGHT_RENORM = 1e-11  # rows whose weights sum further than this from 1 are renormalised


def renormalised_log_weight(log_joint, log_px, point):
    """``log_joint - log_px[point]``, renormalised on rows whose weights do not sum to 1.

    ``log_px`` is rounded to about ``ε |log p(x)|`` in absolute terms, and each
    ``exp(log_joint - log_px)`` inherits that as a relative error: at a point 1e4σ out
    (``log p(x) ~ -2e8``) the weights of a row summed to ``1 ± 2e-8``, which moved its posterior
    mean by that fraction of ``|E[z | x]|`` (~1e-4 posterior standard deviations, against
    50-digit quadrature). Rows whose weights sum further than :data:`WEIGHT_RENORM` from 1 get
    ``log Σ_r w_r`` subtracted (their weights then sum to 1 within a few ε; the differences of
    their ``log_joint`` are what carries the information). Every row with ``|log p(x)|`` below
    ~1e4 sums closer than that and is returned unchanged, bit for bit. (The torch pairs'
    twin: ``_torch_marginal._renormalised_log_weight_t``.)
    """
    lw = log_joint - log_px[point]
    if lw.size == 0:
        return lw
    s = np.bincount(point, np.exp(lw), minlength=len(log_px))
    fix = np.isfinite(s) & (s > 0) & (np.abs(s - 1.0) > WEIGHT_RENORM)
    if fix.any():
        lw = lw - np.log(np.where(fix, s, 1.0))[point]  # log 1 = 0 on the other rows
    return lw


def log_kappa_all(geom: RegionGeometry, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log κ_r(x)`` and the whitened ``w_r(x) = K_r^{-1} v_r(x)`` for every point and region.

    ``log κ_r = -½ [D log 2π + log|Σ| + log|P_r| + ||x - b_r||²_Λ - ||w_r||²]`` with
    ``||x - b_r||²_Λ = ||x'||²_Λ - 2 x'ᵀΛb'_r + ||b'_r||²_Λ`` for ``x' = x - c``,
    ``b'_r = b_r - c`` and the centre ``c`` (mean of the ``b_r``): the expansion is about a
    point near the decoder's range, so its rounding error is ``~ε ||x - c||²_Λ`` and not
    ``ε ||x||²_Λ``. ``K_r^{-1}`` and ``Λ`` are folded into the GEMM's columns, so the work is one
    (N x D) @ (D x R(d+1)) product and a few passes over its result.

    Returns
    -------
    log_kappa : (N, R)
    w : (N, R, d)   ``K_r^{-1} A_r^T Λ (x - b_r)`` (``v_r = K_r w_r``, ``μ_r = L_r w_r``)
    """
    lk, W, _, _ = _log_kappa_terms(geom, X)
    return lk, W


def _log_kappa_terms(geom: RegionGeometry, X: np.ndarray):
    """:func:`log_kappa_all` and its centred points ``x - c`` (N, D) and ``-||x - c||²_Λ / 2``
    (N,) (what :meth:`RegionGeometry.refine_log_kappa` needs, not computed twice)."""
    R, _, d = geom.A.shape
    Xc = X - geom.center
    prod = geom.gemm(Xc)  # (N, R*d + R)
    W = prod[:, : R * d].reshape(-1, R, d)
    W -= geom.w_shift
    if np.all(geom.inv_var == geom.inv_var[0]):
        hxq = np.einsum("nj,nj->n", Xc, Xc) * (-0.5 * geom.inv_var[0])
    else:
        hxq = np.einsum("nj,nj,j->n", Xc, Xc, geom.inv_var) * -0.5
    lk = prod[:, R * d :]
    lk += geom.lk_const
    lk += hxq[:, None]
    lk += 0.5 * np.einsum("nri,nri->nr", W, W)
    return lk, W, Xc, hxq


def _v_of_w(geom: RegionGeometry, w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(P, d) ``v = K_r w`` for pairs."""
    return np.einsum("pij,pj->pi", geom.K[r], w)


def _seed_pairs(geom: RegionGeometry, lk: np.ndarray, W: np.ndarray, top_k: int):
    """Pairs whose exact masses give a good lower bound of ``log p(x)``.

    The regions with the largest ``κ_r(x)`` (their affine extensions explain ``x`` best), plus
    the region that contains the posterior mean of the best one, followed twice (a region that
    contains its own posterior mean has a large mass). Returns unique (point, region) pairs.
    """
    n, R = lk.shape
    k = min(top_k, R)
    best = np.argmax(lk, axis=1)
    if R <= k:
        top = np.tile(np.arange(R), (n, 1))
    elif k == 1:
        top = best[:, None]
    else:
        top = np.argpartition(-lk, k - 1, axis=1)[:, :k]
    pts = [np.repeat(np.arange(n), k)]
    regs = [top.ravel()]
    if geom.locate is not None and R > k:
        rows = np.arange(n)
        r = best
        for _ in range(3):
            mu = np.einsum("pij,pj->pi", geom.L[r], W[rows, r])  # μ_r = L_r w_r
            r_new = geom.locate(mu)
            r = np.where(r_new >= 0, r_new, r)
            pts.append(rows)
            regs.append(r)
    p = np.concatenate(pts)
    r = np.concatenate(regs)
    key = np.unique(p.astype(np.int64) * R + r)
    return key // R, key % R


# Points x regions per block of the d = 1 path: its (n, R) temporaries stay in cache (large
# fresh temporaries cost more in page faults than in arithmetic).
_BLOCK_1D = 2**15
# The same when the call runs in one thread (small work): blocks run one after the other.
# 2^13 was chosen for glibc's heap (digits d = 1: 4.3 ms with one 2^15 block, 2.2 ms with 2^13
# blocks, on another machine); re-measured here (2 cores, one thread, median of 60 E-steps of
# 600 / 1,437 points), one 2^15 block is faster: wave [1,16,16,2] (33 regions) 3.8 -> 3.1 ms,
# digits [1,12,64] (13 regions) 4.5 -> 3.8 ms, two moons [1,12,2] 2.2 ms either way; the
# per-block numpy calls dominate at these sizes. Same pairs and values (blocks split points).
_BLOCK_1D_SEQ = 2**15
# Work (points x regions) below which threads do not pay for themselves.
_MIN_PARALLEL = 1 << 16


def _n_threads() -> int:
    """Worker threads for the blockwise paths: ``EXACTDGN_NUM_THREADS`` or the usable CPUs."""
    env = os.environ.get("EXACTDGN_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"EXACTDGN_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _executor(n: int):
    """One persistent pool of ``n`` worker threads (not a new pool per call)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(n, thread_name_prefix="exactdgn")


def _block_size(N: int, cs: int, nt: int) -> int:
    """Points per block: at most ``cs``, and the number of blocks a multiple of ``nt`` (equal
    shares: 19 blocks on 16 threads would take two rounds of the slowest)."""
    n_blocks = -(-N // max(cs, 1))
    n_blocks = -(-n_blocks // nt) * nt
    return max(1, -(-N // n_blocks))


def _map_blocks(fn, starts, parallel: bool = True, rows: int | None = None) -> list:
    """``[fn(s) for s in starts]``, on threads when there are several blocks and CPUs.

    numpy and scipy.special release the GIL inside their loops, so blocks run in parallel;
    BLAS is limited to one thread meanwhile (the blocks already occupy the cores). With
    ``rows`` (the starts are those of blocks of ``rows`` points) each finished block's points
    are reported (:func:`exactdgn._progress.report`, in order, from this thread).
    """
    starts = list(starts)
    sizes = None if rows is None else np.diff([*starts, rows])
    nt = min(_n_threads(), len(starts)) if parallel else 1
    out = []
    with blas_one_thread():
        done = map(fn, starts) if nt <= 1 else _executor(nt).map(fn, starts)
        for i, result in enumerate(done):
            out.append(result)
            if sizes is not None:
                report(sizes[i])
    return out


def bound_rounding(a, b, lm, lo, hi, t) -> np.ndarray:
    """(P,) the d = 1 interval masses' error from the rounding of their whitened ends.

    ``a = lo - t`` and ``b = hi - t`` (the region's whitened ends, the pair's whitened mean)
    are each rounded to ``~4 ε (|end| + |t|)``, and ``lo``, ``hi`` carry the rounding of the
    kinks themselves: a shift ``δ`` of an end moves ``log m`` by ``δ φ(end) / m``. A point at
    a kink's image with a narrow posterior (weights x1000, σ = 0.1: posterior sd 6e-8) was
    5e-10 nats off against an estimate of 3e-14; the value is as good as the inputs allow.
    """
    with np.errstate(all="ignore"):
        out = np.zeros(np.shape(a))
        for end, pos in ((a, lo), (b, hi)):
            d = (4.0 * _EPS) * (np.abs(pos) + np.abs(t))
            term = d * np.exp(log_phi(end) - lm)
            out += np.where(np.isfinite(end) & np.isfinite(term), term, 0.0)
    return np.where(np.isfinite(lm), out, 0.0)


# Up to this many regions the d = 1 path evaluates every pair (no seed / pruning pass).
_DENSE_1D = 24


def _lse_by_point(p: np.ndarray, lj: np.ndarray, err: np.ndarray, n: int, prune_nats: float):
    """Per point ``log p(x) = logsumexp`` of its pairs' ``lj`` and the error estimate.

    ``p`` (P,) is sorted and holds every point ``0..n-1`` at least once.
    """
    starts = np.searchsorted(p, np.arange(n))
    mx = np.maximum.reduceat(lj, starts)
    log_px = mx + np.log(np.add.reduceat(np.exp(lj - mx[p]), starts))
    wts = np.exp(lj - log_px[p])
    # a pair whose weight underflows adds nothing, also where its own estimate gave up (an
    # infinite error of a far polygon's slices, 1e30 nats below the point's log p: 0 * inf)
    with np.errstate(invalid="ignore"):
        werr = np.where(wts > 0.0, wts * err, 0.0)
    err_px = np.add.reduceat(werr, starts) + np.exp(-prune_nats)
    return log_px, err_px


def _pair_stats(parts: list[PairStats]) -> PairStats:
    """Concatenate the blocks' :class:`PairStats` (point indices already global)."""
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        first = getattr(parts[0], name)
        return None if first is None else np.concatenate([getattr(q, name) for q in parts])

    arrays = {f.name: cat(f.name) for f in fields(PairStats) if f.name != "n_candidates"}
    return PairStats(**arrays, n_candidates=int(sum(q.n_candidates for q in parts)))


def _pairs_1d(
    geom: RegionGeometry, X: np.ndarray, prune_nats: float, need_moments: bool
) -> PairStats:
    """``marginal_pairs`` for d = 1: the regions are intervals ``[lo_r, hi_r]``.

    With ``s_r = sqrt(P_r)`` and ``t_r(x) = v_r(x) / s_r`` the whitened interval is
    ``[lo_r s_r - t_r, hi_r s_r - t_r]`` and ``log κ_r = const_r - (||x - b_r||²_Λ - t_r²)/2``:
    everything is elementwise on the (n, R) result of one GEMM. Lower bound: the exact terms of
    the region with the largest ``κ_r`` and of the region holding its posterior mean; the pairs
    kept are those with ``log κ_r > lower - prune_nats - log R`` (the mass is at most 1), the
    same rule as the general path.
    """
    N = X.shape[0]
    R = geom.A.shape[0]
    lo_z, hi_z, order, breaks = geom.interval
    sP = geom.K[:, 0, 0]
    isP = 1.0 / sP
    with np.errstate(invalid="ignore"):
        loS = np.where(np.isinf(lo_z), -np.inf, lo_z * sP)
        hiS = np.where(np.isinf(hi_z), np.inf, hi_z * sP)
    # log κ as in log_kappa_all, with t = w (K = s in d = 1)
    const = geom.lk_const
    beta = geom.w_shift[:, 0]
    iso = bool(np.all(geom.inv_var == geom.inv_var[0]))
    thr = prune_nats + np.log(max(R, 1))
    nt = _n_threads()
    parallel = nt > 1 and N * R >= 2 * _MIN_PARALLEL
    cs = int(max(1, min(N, (_BLOCK_1D if parallel else _BLOCK_1D_SEQ) // max(R, 1))))
    cs = _block_size(N, cs, nt if parallel else 1)
    dense = R <= _DENSE_1D

    def block(s: int):
        Xc = X[s : s + cs] - geom.center
        n = Xc.shape[0]
        prod = geom.gemm(Xc)  # (n, 2R)
        if iso:
            hxq = np.einsum("nj,nj->n", Xc, Xc) * (-0.5 * geom.inv_var[0])
        else:
            hxq = np.einsum("nj,nj,j->n", Xc, Xc, geom.inv_var) * -0.5
        t = prod[:, :R]
        t -= beta  # t_r = v_r / s_r
        lk = prod[:, R:]  # x'ᵀΛb'_r
        lk += const
        lk += hxq[:, None]
        lk += 0.5 * np.square(t)  # (n, R) log κ
        rows = np.arange(n)
        if dense:  # few regions: every pair (pruning would keep most of them anyway)
            p, r = np.repeat(rows, R), np.tile(np.arange(R), n)
            tt, lk_p = t.ravel(), lk.ravel()
        else:
            r1 = np.argmax(lk, axis=1)
            mu1 = t[rows, r1] * isP[r1]
            r2 = order[np.searchsorted(breaks, mu1, side="right")]
            pr = np.concatenate([r1, r2])
            tt = t[np.concatenate([rows, rows]), pr]
            lm_seed, _ = _log_interval_mass(loS[pr] - tt, hiS[pr] - tt)
            lj_seed = np.concatenate([lk[rows, r1], lk[rows, r2]]) + lm_seed
            lower = np.where(r1 == r2, lj_seed[:n], np.logaddexp(lj_seed[:n], lj_seed[n:]))
            # in differences: at |log p| > ~2e17 nats `lower - thr` rounds to `lower`, and a
            # seed with log κ = lower (all the mass) failed `>` (and a point could lose every
            # pair); room for the formed log κ's rounding, the seeds' and the candidates'
            room = -thr - 2.0 * geom.kappa_margin(hxq)
            p, r = np.nonzero(lk - lower[:, None] > room[:, None])  # sorted by point
            tt = t[p, r]
            lk_p = lk[p, r]
        tt = tt[:, None]  # (P, 1) whitened means w (K = s), refined in place with log κ
        err_lk = geom.refine_log_kappa(Xc, p, r, lk_p, tt, hxq).error
        tt = tt[:, 0]
        a, b = loS[r] - tt, hiS[r] - tt
        lm, err = _log_interval_mass(a, b)
        err += err_lk
        err += bound_rounding(a, b, lm, loS[r], hiS[r], tt)
        lj = lk_p + lm
        if dense:  # (n, R) layout: plain axis reductions
            lj2 = lj.reshape(n, R)
            mx = lj2.max(axis=1)
            e = lj2 - mx[:, None]
            np.exp(e, out=e)
            tot = e.sum(axis=1)
            log_px = mx + np.log(tot)
            e *= err.reshape(n, R)  # weights e / tot
            err_px = e.sum(axis=1) / tot + np.exp(-prune_nats)
        else:
            log_px, err_px = _lse_by_point(p, lj, err, n, prune_nats)
        mean = cov = None
        n_cand = len(p)
        if need_moments:
            # moments only where the pair's exact weight is visible (the same level as the
            # pruning: the pairs dropped here change no sum by more than exp(-prune_nats))
            sel = (lj - log_px[p] > -thr) | ~np.isfinite(log_px)[p]  # (in differences)
            if not sel.all():
                p, r, lj, tt, a, b = p[sel], r[sel], lj[sel], tt[sel], a[sel], b[sel]
            _, um, uv = _interval_stats(a, b)
            mean = ((tt + um) * isP[r])[:, None]  # z = (t + u) / s
            cov = (uv * isP[r] ** 2)[:, None, None]
        v = (tt * sP[r])[:, None]
        return PairStats(p + s, r, lj, log_px, err_px, v, None, mean, cov, n_cand)

    return _pair_stats(_map_blocks(block, range(0, N, cs), parallel=parallel, rows=N))


def check_points(geom: RegionGeometry, X, *, name: str = "X", allow_nan: bool = False):
    """``X`` as a C-contiguous float64 (N, D) array with N >= 1 and D the model's outputs.

    NaN is allowed only with ``allow_nan`` (the missing-data path); infinite values never are.
    """
    X = check_array(X, name=name, n_features=geom.output_dim, allow_nan=True)
    if not allow_nan and np.isnan(X).any():
        raise ValueError(
            f"{name} has NaN (missing values): use observed_pairs(geom, {name}, "
            f"check_missing({name})), which conditions on each row's observed values"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {X.shape}): give at least one point")
    check_reach(geom, X, name=name)
    return X


#: Rows farther than this many noise standard deviations from the regions' centre (in any
#: coordinate) are refused: their log-density is below -5e199 nats, and beyond it products
#: in ``log κ`` overflow float64 (1e160 scored NaN, which ``predict`` took for an inlier; the
#: missing-data path's terms such as ``(x'ᵀΛa)²`` grow as ``(distance / σ)²``: with the noise
#: stds in ``NOISE_STD_RANGE`` every path is finite up to here, tested).
REACH = 1e100


def check_reach(geom: RegionGeometry, X: np.ndarray, *, name: str = "X", first_row: int = 0):
    """Refuse rows of ``X`` (NaN ignored) beyond :data:`REACH` noise sds of ``geom.center``."""
    with np.errstate(invalid="ignore"):
        far = np.abs(X - geom.center) * np.sqrt(geom.inv_var) > REACH
    if far.any():
        i, j = (int(a[0]) for a in np.nonzero(far))
        raise ValueError(
            f"{name} row {first_row + i}, column {j} is {X[i, j]:.6g}: more than {REACH:.0e} "
            "noise standard deviations from the model's outputs, where log p(x) is below "
            "-5e199 nats and its terms overflow float64; such a value is a data error: remove "
            "or rescale those rows"
        )


def _check_pruning(prune_nats, chunk_bytes) -> None:
    """Refuse a ``prune_nats`` that is not a number >= 0 (NaN or a negative one left points
    without pairs) and a ``chunk_bytes`` that is not a positive integer, on both paths."""
    real = isinstance(prune_nats, numbers.Real) and not isinstance(prune_nats, bool)
    if not (real and prune_nats >= 0):
        raise ValueError(
            f"prune_nats={prune_nats!r} is invalid: use a number >= 0 (40 keeps log p(x) exact "
            "to double precision; inf prunes nothing)"
        )
    if not is_int(chunk_bytes, 1):
        raise ValueError(
            f"chunk_bytes={chunk_bytes!r} is invalid: use a positive integer (bytes of one "
            "block's work arrays)"
        )


def _chunk_size(n: int, R: int, d: int, chunk_bytes: int) -> int:
    per_point = 8 * R * (3 * d + 6)
    return int(max(1, min(n, chunk_bytes // max(per_point, 1))))


def marginal_pairs(
    geom: RegionGeometry,
    X: np.ndarray,
    *,
    prune_nats: float = 40.0,
    need_moments: bool = False,
    chunk_bytes: int = 256 * 2**20,
    top_k: int | None = None,
    device=None,
    check_input: bool = True,
) -> PairStats:
    """Exact ``log p(x)`` for each row of ``X`` and the pairs that carry its mass.

    Parameters
    ----------
    geom : RegionGeometry
    X : (N, D) array_like
        The points (N >= 1, finite; rows with NaN: :func:`~exactdgn.inference.observed_pairs`).
    prune_nats : float
        Pairs whose bound is this many nats (plus ``log R``) below the lower bound are skipped;
        their total relative contribution is below ``exp(-prune_nats)``.
    need_moments : bool
        Also compute the truncated posterior mean and covariance of each retained pair.
    chunk_bytes : int
        Memory bound of one block's (points x regions) work arrays; each worker thread
        (``EXACTDGN_NUM_THREADS``) works on one block at a time. Blocks are not made smaller as
        threads are added: small blocks spend their time in per-call overhead (MNIST d = 2,
        one thread: 1.9 s CPU in 69-point blocks, 1.6 s in 1,108-point blocks).
    top_k : int, optional
        Seeds of the lower bound: the ``top_k`` regions with the largest ``κ_r(x)`` (plus the
        regions located by following posterior means). Default 1 in d = 2 (the located regions
        already give a tight bound there; measured: same candidates, 8% faster than 4), else 4.
    device : None, str or torch.device
        None: this numpy path. Otherwise the torch backend on that device (float64, the same
        pruning rule and results to ~1e-13; its chunks of points at most ``chunk_bytes``, and
        ``top_k`` refused); the returned arrays are numpy.
    check_input : bool
        Check ``X`` (shape, rows, finite values: one pass over it). ``False`` skips it, for
        callers that have checked ``X`` already (as scikit-learn's ``check_input``).

    Raises
    ------
    ValueError
        When ``X`` is not (N, D) with N >= 1 or holds NaN or infinite values; when
        ``prune_nats`` is not a number >= 0 or ``chunk_bytes`` not a positive integer.
    """
    if check_input:
        X = check_points(geom, X)
    _check_pruning(prune_nats, chunk_bytes)
    if device is not None:
        from ._torch_marginal import pairs_torch

        if top_k is not None:
            raise ValueError(
                f"top_k={top_k!r} is for the numpy path (device=None); the torch backend seeds "
                "its lower bound by its own rule: drop top_k"
            )
        return pairs_torch(
            geom,
            X,
            device,
            prune_nats=prune_nats,
            need_moments=need_moments,
            chunk_bytes=chunk_bytes,
        ).numpy()
    N = X.shape[0]
    R, _, d = geom.A.shape
    if d == 1 and geom.interval is not None and N:
        return _pairs_1d(geom, X, prune_nats, need_moments)
    if top_k is None:
        top_k = 1 if d == 2 else 4
    thr = prune_nats + np.log(max(R, 1))
    nt = _n_threads()
    parallel = nt > 1 and N * R >= 2 * _MIN_PARALLEL
    # each block within the memory bound (per thread); their number a multiple of the threads
    cs = _block_size(N, _chunk_size(N, R, d, chunk_bytes), nt if parallel else 1)
    two_stage = d >= 2  # a facet bound pays off where masses are expensive

    tab = geom.polygons  # d = 2: polygons integrated from the table, translated by w

    def log_mass(r, w, v, floor=None, off=None, log_weight=None):
        """Log mass and error of pairs (regions r, whitened means w, v); offsets or None.
        ``log_weight``: log κ - (a lower bound of) log p(x), for d >= 3 (thin polyhedra)."""
        if tab is not None:
            lm, err = gaussian.log_mass_2d_shifted(tab, r, w, floor)
            return lm, err, None
        off = geom.offsets(v, r, w) if off is None else off
        lm, err = gaussian.log_mass(
            geom.normals[r], off, return_error=True, floor=floor, log_weight=log_weight
        )
        return lm, err, off

    def block(s: int):
        Xc = X[s : s + cs]
        n = Xc.shape[0]
        lk, W, Xcc, hxq = _log_kappa_terms(geom, Xc)  # (n, R), (n, R, d), (n, D), (n,)
        p_top, r_top = _seed_pairs(geom, lk, W, top_k)
        lk_top, w_top = lk[p_top, r_top], W[p_top, r_top]
        lk_err_top = geom.refine_log_kappa(Xcc, p_top, r_top, lk_top, w_top, hxq).error
        v_top = _v_of_w(geom, w_top, r_top)
        lm_top, err_top, off_top = log_mass(r_top, w_top, v_top)
        lower = np.full(n, -np.inf)
        np.logaddexp.at(lower, p_top, lk_top + lm_top)
        # the tests below use the GEMM form of log κ: room for its rounding (kappa_margin)
        room = -thr - geom.kappa_margin(hxq)
        # candidates by the mass <= 1 bound, excluding the pairs already done
        mask = lk - lower[:, None] > room[:, None]  # in differences (no rounding at huge |log p|)
        mask[p_top, r_top] = False
        p_c, r_c = np.nonzero(mask)
        n_cand = len(p_c) + len(p_top)
        off_c = None
        if tab is not None and len(p_c):
            # the facet bound from the polygon table, one compiled pass (no (P, F) gathers)
            from ._pair_kernels import facet_min_2d  # numba: imported on first use

            cmin = np.empty(len(p_c))
            facet_min_2d(p_c, r_c, W, tab.normals, tab.offsets, tab.width, cmin)
            # Φ is increasing: min_i log Φ(c_i) = log Φ(min_i c_i) (one log_ndtr per pair)
            keep = lk[p_c, r_c] + np.minimum(0.0, log_ndtr(cmin)) - lower[p_c] > room[p_c]
            p_c, r_c = p_c[keep], r_c[keep]
        lk_c, w_c = lk[p_c, r_c], W[p_c, r_c]
        v_c = _v_of_w(geom, w_c, r_c)
        if two_stage and tab is None and len(p_c):
            off_c = geom.offsets(v_c, r_c, w_c)
            bound = lk_c + np.minimum(0.0, log_ndtr(off_c.min(axis=1, initial=np.inf)))
            keep = bound - lower[p_c] > room[p_c]
            p_c, r_c, lk_c, w_c, v_c = p_c[keep], r_c[keep], lk_c[keep], w_c[keep], v_c[keep]
            off_c = off_c[keep]
        # the kept candidates' log κ (and w) without cancellation where needed (the bounds
        # above used the GEMM form: its error is far below the pruning margin)
        rounding = geom.refine_log_kappa(Xcc, p_c, r_c, lk_c, w_c, hxq)
        lk_err_c, fixed = rounding.error, rounding.recomputed
        if fixed.size:
            v_c[fixed] = _v_of_w(geom, w_c[fixed], r_c[fixed])
            if off_c is not None:
                off_c[fixed] = geom.offsets(v_c[fixed], r_c[fixed], w_c[fixed])
        # candidates whose closest-point bound falls below the pruning level are not integrated
        # (log mass -inf, dropped below); the seeds are always integrated
        floor_c = (lower[p_c] - lk_c) - thr
        # every pair (seeds first), grouped by point once for the logsumexp below
        seed = np.arange(len(p_top) + len(p_c)) < len(p_top)
        p_all = np.concatenate([p_top, p_c])
        order = np.argsort(p_all, kind="stable")
        p_all, seed = p_all[order], seed[order]
        r_all, w_all, v_all, lk_all, lk_err = (
            np.concatenate(pair)[order]
            for pair in (
                (r_top, r_c),
                (w_top, w_c),
                (v_top, v_c),
                (lk_top, lk_c),
                (lk_err_top, lk_err_c),
            )
        )

        def visible_of(lj, log_px):
            # pairs whose exact weight is visible (as in d = 1: the others change no sum by
            # more than exp(-prune_nats)); all pairs of a point without a finite log p(x)
            # (in differences: the dominant pair, lj = log p(x), stays visible at any |log p|)
            return (lj - log_px[p_all] > -thr) | ~np.isfinite(log_px)[p_all]

        tm = None
        if need_moments and tab is not None:
            # d = 2: masses and geometry of every pair once, moments only where visible (the
            # seeds are integrated again here, with their moments)
            def select(lm, err):  # the same lj and log p(x) as computed below
                lj = lk_all + lm
                return visible_of(lj, _lse_by_point(p_all, lj, err + lk_err, n, prune_nats)[0])

            floor = np.concatenate([np.full(len(p_top), -np.inf), floor_c])[order]
            tm = gaussian.truncated_moments_2d_shifted(tab, r_all, w_all, floor, select)
            lm_all, err, off_all = tm.log_mass, tm.error + lk_err, None
        else:
            lm_c, err_c, off_c = log_mass(r_c, w_c, v_c, floor_c, off_c, lk_c - lower[p_c])
            lm_all = np.concatenate([lm_top, lm_c])[order]
            err = np.concatenate([err_top, err_c])[order] + lk_err
            off_all = None if off_top is None else np.concatenate([off_top, off_c])[order]
        lj = lk_all + lm_all
        log_px, err_px = _lse_by_point(p_all, lj, err, n, prune_nats)
        # pairs kept: finite, and every point keeps its seeds; with moments only visible ones
        keep = np.isfinite(lj) | seed
        if need_moments:
            keep &= visible_of(lj, log_px)
        arrays = [p_all, r_all, lj, v_all, w_all]
        if off_all is not None:
            arrays.append(off_all)
        if tm is not None:
            arrays += [tm.mean, tm.cov]
        if not keep.all():
            arrays = [a[keep] for a in arrays]
        p_all, r_all, lj, v_all, w_all = arrays[:5]
        off_all = arrays[5] if off_all is not None else None
        mean = cov = None
        if need_moments:
            if tm is not None:
                tm_mean, tm_cov = arrays[-2:]
            else:  # d >= 3: masses integrated again with the moments
                off = geom.offsets(v_all, r_all, w_all) if off_all is None else off_all
                tm2 = gaussian.truncated_moments(
                    geom.normals[r_all], off, log_weight=lj - log_px[p_all]
                )
                tm_mean, tm_cov = tm2.mean, tm2.cov
            Lr = geom.L[r_all]
            # μ_r = S_r v_r (L_r w_r in QR-factored regions, where S_r v_r cancels)
            mu = geom.posterior_mean(v_all, r_all, w_all)
            mean = mu + np.einsum("pij,pj->pi", Lr, tm_mean)
            cov = Lr @ tm_cov @ np.swapaxes(Lr, 1, 2)
        return PairStats(
            p_all + s,
            r_all,
            lj,
            log_px,
            err_px,
            v_all,
            off_all,
            mean,
            cov,
            n_cand,
            whitened_mean=w_all,
        )

    return _pair_stats(_map_blocks(block, range(0, N, cs), parallel=parallel, rows=N))
