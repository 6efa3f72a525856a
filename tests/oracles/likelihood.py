"""Independent test oracle for log p(x) and posterior moments of a CPA decoder (d = 1, 2).

Model: ``z ~ N(0, I_d)``, ``x | z ~ N(g(z), diag(sigma^2))``. The oracle computes

    log p(x) = log ∫ exp(f(z)) dz,   f(z) = log N(z; 0, I) + log N(x; g(z), diag sigma^2),

and the posterior mean / covariance of ``p(z | x) ∝ exp(f)``, by **adaptive quadrature on
forward passes only**. It shares no formula with the library's exact path (regions, Owen's T,
divergence-theorem moments): the decoder is evaluated with a re-implementation of its forward
pass (from ``weights``, ``biases``, ``positive_slopes``, ``negative_slopes``) with forward-mode
tangents; nothing from ``exactdgn`` other than those attributes is used.

Line engine (the d = 1 integral, and the inner integral of d = 2)
------------------------------------------------------------------
Along a line ``z(t) = o + t v`` the integrand is continuous and, between kinks, ``exp`` of a
concave function (curvature ``>= |v|^2`` from the prior).

1. Range. ``f(z) <= -|z|^2/2 + C`` with ``C = -d/2 log 2π - Σ log(σ_j √(2π))`` (the likelihood
   is at most its peak), so ``{f > M0 - 100}`` lies in the ball of radius
   ``R = sqrt(2 (C - M0 + 100))`` for any lower bound ``M0`` of ``max f`` (the best grid value).
   Outside it the integrand is below ``e^-100`` of the maximum and is dropped.
2. Kinks. The pre-activations of the kink units are scanned on a coarse grid (step 0.5 on
   ``|t| <= 12``, geometric beyond, up to ``R``). Along a line the first layer's pre-activations
   are affine in ``t`` and cross zero at most once, and by induction over layers a cell whose two
   end patterns agree contains no kink at all (so the grid's resolution only affects speed).
   A cell whose end patterns differ is refined by a false-position step on its lowest-index
   differing unit (whose pre-activation is affine on the cell, by the same induction, so the
   step is exact up to rounding), probed at ``c ± 1e-11 max(1, |c|)``; the sub-cells that still
   differ are refined again.
3. Maxima. On each piece the log-integrand is maximised by one Newton step with forward-mode
   derivatives (``f'`` and the Gauss-Newton curvature ``κ = |v|^2 + |J v / σ|^2``, exact on a
   piece), clipped to the piece; the line maximum ``m`` is the largest piece maximum. Pieces
   whose maximum is below ``m - 70`` are skipped. These only place the quadrature: the integral
   itself never uses a closed form.
4. Integration. On each remaining piece, ``exp(f - m)`` is integrated over the window
   ``t_p ± 13/√κ`` (beyond it a concave piece of curvature ``κ`` is below ``e^-84``), with initial
   split points at ``t_p ± s 2^k`` (``s = 1/√κ``, or ``1/|f'|`` when the maximiser is a steep
   piece end), by a vectorised, globally adaptive Gauss-Legendre scheme (10 and 20 nodes per
   interval; intervals with large ``|Q_20 - Q_10|`` are bisected until the sum is below ``rtol``
   times the line total; ``rtol`` is floored at ``64 eps |m|``, the rounding of ``f`` itself).
   ``log I = m + log ∫ exp(f - m)``.

d = 2
-----
Outer adaptive Gauss-Legendre (5 and 10 nodes) over ``z1`` of the inner line integrals
``I(z1) = ∫ exp(f) dz2`` (lines parallel to ``e2``, inner ``rtol`` 1e-13), all scaled by the
largest ``log I``. The modes of ``f`` are located by a multi-start Gauss-Newton ascent (starts:
a 49 x 49 grid on ``[-6, 6]^2`` plus its local maxima, then the best piece maxima of the first
set of lines). Initial outer breakpoints: a 0.5-grid on ``|z1| <= 12``, geometric beyond to
``R``, and ladders ``z1* ± s1 2^k`` and ``z1* + 0.5 k`` around every mode (``s1`` its local
posterior scale); intervals whose two end values are below ``max log I - 70`` and hold no mode
are dropped. ``I(z1)`` has a jump in its second derivative wherever the line passes a vertex
of the partition, which would cost adaptive quadrature ~10 bisection levels per vertex; so the
vertices are located first, without quadrature: the *signature* of a line (the activation
patterns of its pieces whose maximum of ``f`` is ``>= max f - 30``) changes exactly at such
z1, and each change is located to 1e-10 by bisection on signatures; they become breakpoints.

Accuracy (measured; see tests/oracles/test_likelihood_oracle.py and the helper's report):

* d = 1, affine decoders vs the closed form in 50-digit mpmath: |err| <= 1e-15 near the data,
  <= 2e-16 |log p| at 100σ and 1e4σ; ReLU / leaky / abs decoders vs ``mpmath.quad``: ~1e-16;
  vs a h = 1e-5 trapezoid: <= 2e-10 (the trapezoid's own error). ~0.01-0.05 s per batch.
* d = 2, affine: |err| <= 1e-15 near, ~5e-16 relative far; rotated separable ReLU / abs /
  leaky decoders vs products of d = 1 oracles: <= 1e-15; posterior moments <= 1e-12.
  Cost (unloaded 2-core machine): [2, 6+6, 6+6, 4] 1-6 s per point; random [2, 16, 16, 4]
  ReLU 12-18 s per point near the data (~550 vertices, ~10k lines), 1-2 s far from it;
  [2, 32, 32, 5] a few minutes per point near the data (~2k vertices).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "oracle_conditional_outputs_1d",
    "oracle_logpx_1d",
    "oracle_logpx_2d",
    "oracle_posterior_moments_1d",
    "oracle_posterior_moments_2d",
]

_LOG2PI = math.log(2.0 * math.pi)
_R_DROP = 100.0  # the integrand outside the ball of radius R is below e^-100 of the maximum
_DROP = 70.0  # pieces / outer intervals whose maximum is this far below the max are neglected
_WIN = 13.0  # window half-width in units of 1/sqrt(curvature): e^-84.5 at the window ends
_CHUNK = 200_000  # points per forward pass


# ---------------------------------------------------------------------------- forward pass
class _Net:
    """Own re-implementation of the decoder's forward pass with forward-mode tangents."""

    def __init__(self, decoder):
        self.Ws = [np.asarray(W, dtype=np.float64) for W in decoder.weights]
        self.cs = [np.asarray(c, dtype=np.float64) for c in decoder.biases]
        pos = np.asarray(decoder.positive_slopes, dtype=np.float64)
        neg = np.asarray(decoder.negative_slopes, dtype=np.float64)
        self.pos, self.neg, self.kink = [], [], []
        start = 0
        for W in self.Ws[:-1]:
            n = W.shape[0]
            p, q = pos[start : start + n], neg[start : start + n]
            self.pos.append(p)
            self.neg.append(q)
            self.kink.append(p != q)
            start += n
        self.d = self.Ws[0].shape[1]
        self.D = self.Ws[-1].shape[0]
        self.n_kink = int(sum(k.sum() for k in self.kink))

    def eval(self, Z, V=None, *, want_pre=False):
        """Return ``g(Z)``, the tangent ``Dg(Z) V`` (or None) and the kink pre-activations."""
        h = Z
        dh = None if V is None else np.broadcast_to(V, Z.shape)
        pres = []
        last = len(self.Ws) - 1
        for k, (W, c) in enumerate(zip(self.Ws, self.cs, strict=True)):
            a = h @ W.T + c
            da = None if dh is None else dh @ W.T
            if k < last:
                if want_pre:
                    pres.append(a[:, self.kink[k]])
                s = np.where(a > 0, self.pos[k], self.neg[k])
                h = a * s
                dh = None if da is None else da * s
            else:
                h, dh = a, da
        pre = np.concatenate(pres, axis=1) if want_pre and pres else np.zeros((Z.shape[0], 0))
        return h, dh, pre


class _Problem:
    """Log-integrand ``f`` for a batch of data points, evaluated at latent points."""

    def __init__(self, decoder, X, sigma):
        self.net = _Net(decoder)
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.net.D:
            raise ValueError(f"X has {X.shape[1]} features, the decoder outputs {self.net.D}")
        sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (self.net.D,)).copy()
        if not np.all(sig > 0):
            raise ValueError("sigma must be positive")
        self.X = X
        self.inv_sig = 1.0 / sig
        self.const = -0.5 * (self.net.d + self.net.D) * _LOG2PI - float(np.sum(np.log(sig)))
        # f <= -|z|^2/2 + cmax  (likelihood at most its peak)
        self.cmax = -0.5 * self.net.d * _LOG2PI - 0.5 * self.net.D * _LOG2PI - np.sum(np.log(sig))

    def logf(self, Z, pid, V=None):
        """f at ``Z`` (n, d) for data points ``pid`` (n,); with ``V`` also f' and κ along V."""
        n = Z.shape[0]
        f = np.empty(n)
        fp = np.empty(n) if V is not None else None
        kap = np.empty(n) if V is not None else None
        for s in range(0, n, _CHUNK):
            sl = slice(s, min(n, s + _CHUNK))
            z = Z[sl]
            g, dg, _ = self.net.eval(z, V)
            r = (self.X[pid[sl]] - g) * self.inv_sig
            f[sl] = -0.5 * np.sum(z * z, axis=1) - 0.5 * np.sum(r * r, axis=1) + self.const
            if V is not None:
                dgs = dg * self.inv_sig
                vv = np.broadcast_to(V, z.shape)
                fp[sl] = -np.sum(z * vv, axis=1) + np.sum(r * dgs, axis=1)
                kap[sl] = np.sum(vv * vv, axis=1) + np.sum(dgs * dgs, axis=1)
        return f, fp, kap

    def radius(self, m0):
        """Radius of a ball holding ``{f > m0 - _R_DROP}`` (per data point)."""
        return np.sqrt(2.0 * np.maximum(self.cmax - np.asarray(m0) + _R_DROP, 1.0))


# ---------------------------------------------------------------------------- kinks
def _scan_grid(R):
    """Grid for the kink scan: step 0.5 on |t| <= 12, geometric (ratio 1.2) beyond, to R.

    Its resolution does not matter for correctness (a cell whose end patterns agree has no
    kink); a coarse grid only costs more false-position iterations.
    """
    T0 = min(R, 12.0)
    n = math.ceil(T0 / 0.5)
    uni = np.linspace(-T0, T0, 2 * n + 1)
    if R <= T0:
        return uni
    k = math.ceil(math.log(R / T0) / math.log(1.2))
    geo = np.minimum(T0 * 1.2 ** np.arange(1, k + 1), R)
    return np.concatenate([-geo[::-1], uni, geo])


def _scan_kinks(net, origins, v, R):
    """Kinks of ``t -> g(o_l + t v)`` on ``|t| <= R_l`` for each line.

    Returns a list (one per line) of sorted arrays of kink positions.
    """
    L = origins.shape[0]
    out = [np.zeros(0) for _ in range(L)]
    if net.n_kink == 0 or L == 0:
        return out
    grid = _scan_grid(float(np.max(R)))
    G = grid.size
    per = max(1, _CHUNK // G)
    for s in range(0, L, per):
        lines = np.arange(s, min(L, s + per))
        Z = (origins[lines, None, :] + grid[None, :, None] * v).reshape(-1, net.d)
        _, _, pre = net.eval(Z, want_pre=True)
        pre = pre.reshape(lines.size, G, -1)
        on = pre > 0
        li, ci = np.nonzero(np.any(on[:, 1:] != on[:, :-1], axis=2))
        cells_l = lines[li]
        a = grid[ci]
        b = grid[ci + 1]
        Pa = pre[li, ci]
        Pb = pre[li, ci + 1]
        found_l, found_t = _refine_cells(net, origins, v, cells_l, a, b, Pa, Pb)
        for line in np.unique(found_l):
            t = np.sort(found_t[found_l == line])
            t = t[np.abs(t) <= R[line]]
            out[line] = t
    return out


def _refine_cells(net, origins, v, cl, a, b, Pa, Pb, max_iter=200):
    """Locate all pattern changes inside cells [a, b] by bracketed false position."""
    fl, ft = [], []
    for _ in range(max_iter):
        if cl.size == 0:
            break
        diff = (Pa > 0) != (Pb > 0)
        u = np.argmax(diff, axis=1)
        r = np.arange(cl.size)
        pa, pb = Pa[r, u], Pb[r, u]
        c = a + (b - a) * (pa / (pa - pb))
        bad = ~np.isfinite(c) | (c < a) | (c > b)
        c = np.where(bad, 0.5 * (a + b), c)
        eps = 1e-11 * np.maximum(1.0, np.abs(c))
        tiny = (b - a) <= 4.0 * eps
        if np.any(tiny):
            fl.append(cl[tiny])
            ft.append(0.5 * (a[tiny] + b[tiny]))
            keep = ~tiny
            cl, a, b, Pa, Pb, c, eps = (
                cl[keep],
                a[keep],
                b[keep],
                Pa[keep],
                Pb[keep],
                c[keep],
                eps[keep],
            )
            if cl.size == 0:
                break
        lo = np.maximum(a, c - eps)
        hi = np.minimum(b, c + eps)
        pts = np.concatenate([lo, hi])
        Z = origins[np.concatenate([cl, cl])] + pts[:, None] * v
        _, _, pre = net.eval(Z, want_pre=True)
        n = cl.size
        Plo, Phi = pre[:n], pre[n:]
        mid = np.any((Plo > 0) != (Phi > 0), axis=1)
        fl.append(cl[mid])
        ft.append(c[mid])
        left = (lo > a) & np.any((Pa > 0) != (Plo > 0), axis=1)
        right = (hi < b) & np.any((Phi > 0) != (Pb > 0), axis=1)
        cl = np.concatenate([cl[left], cl[right]])
        na = np.concatenate([a[left], hi[right]])
        nb = np.concatenate([lo[left], b[right]])
        Pa = np.concatenate([Pa[left], Phi[right]])
        Pb = np.concatenate([Plo[left], Pb[right]])
        a, b = na, nb
    if cl.size:  # iteration cap: keep the cell midpoints (never hit in the self-tests)
        fl.append(cl)
        ft.append(0.5 * (a + b))
    if not fl:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(fl), np.concatenate(ft)


# ---------------------------------------------------------------------------- quadrature
def _argmax_per_group(values, groups, n_groups):
    """Index of the largest value within each group (-1 for an empty group)."""
    out = np.full(n_groups, -1)
    if values.size == 0:
        return out
    order = np.lexsort((values, groups))
    g = groups[order]
    last = np.r_[g[1:] != g[:-1], True]
    out[g[last]] = order[last]
    return out


def _gl(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


def _adaptive_gl(
    func, lid, a, b, n_lines, *, rtol, n=10, max_rounds=60, max_intervals=400_000, mass_floor=False
):
    """Globally adaptive Gauss-Legendre sums per line of a vector-valued integrand.

    Parameters
    ----------
    func : callable ``(t (P,), lid (P,)) -> (P, K)`` values
    lid, a, b : (I,) interval owner lines and limits.
    rtol : float or (n_lines,) relative tolerance (relative to ``∫ |integrand|``) per line.
    mass_floor : bool
        The tolerance of every column is at least ``rtol`` times the first column's
        ``∫ |integrand|`` (the total mass: features of small mass, e.g. region indicators,
        to an absolute accuracy relative to the total instead of to their own size).

    Returns
    -------
    tot : (n_lines, K) integrals (the 2n-point sums), err : (n_lines, K) sum of ``|Q_2n - Q_n|``,
    and the number of integrand evaluations.
    """
    x1, w1 = _gl(n)
    x2, w2 = _gl(2 * n)
    xs = np.concatenate([x1, x2])
    n_eval = 0

    def evaluate(lid_, a_, b_):
        nonlocal n_eval
        half = 0.5 * (b_ - a_)
        mid = 0.5 * (b_ + a_)
        t = (mid[:, None] + half[:, None] * xs[None, :]).ravel()
        vals = func(t, np.repeat(lid_, xs.size))
        n_eval += t.size
        vals = vals.reshape(a_.size, xs.size, -1)
        q1 = np.einsum("ink,n->ik", vals[:, : x1.size], w1) * half[:, None]
        v2 = vals[:, x1.size :]
        q2 = np.einsum("ink,n->ik", v2, w2) * half[:, None]
        qa = np.einsum("ink,n->ik", np.abs(v2), w2) * np.abs(half)[:, None]
        return q2, np.abs(q2 - q1), qa

    Q, E, QA = evaluate(lid, a, b)
    for _ in range(max_rounds):
        tot_abs = np.zeros((n_lines, Q.shape[1]))
        err = np.zeros_like(tot_abs)
        np.add.at(tot_abs, lid, QA)
        np.add.at(err, lid, E)
        scale = np.maximum(tot_abs, tot_abs[:, :1]) if mass_floor else tot_abs
        tol = np.reshape(rtol, (-1, 1)) * scale + 1e-300
        open_line = np.any(err > tol, axis=1)
        if not open_line.any() or a.size > max_intervals:
            break
        cnt = np.bincount(lid, minlength=n_lines)
        thr = 0.5 * tol[lid] / cnt[lid, None]
        split = open_line[lid] & np.any(E > thr, axis=1)
        # always split the worst interval of every open line
        worst = _argmax_per_group(np.max(E / tol[lid], axis=1), lid, n_lines)
        split[worst[open_line]] = True
        keep = ~split
        m = 0.5 * (a[split] + b[split])
        nl = np.concatenate([lid[split], lid[split]])
        na = np.concatenate([a[split], m])
        nb = np.concatenate([m, b[split]])
        q, e, qa = evaluate(nl, na, nb)
        lid = np.concatenate([lid[keep], nl])
        a = np.concatenate([a[keep], na])
        b = np.concatenate([b[keep], nb])
        Q = np.concatenate([Q[keep], q])
        E = np.concatenate([E[keep], e])
        QA = np.concatenate([QA[keep], qa])
    tot = np.zeros((n_lines, Q.shape[1]))
    err = np.zeros_like(tot)
    np.add.at(tot, lid, Q)
    np.add.at(err, lid, E)
    return tot, err, n_eval


# ---------------------------------------------------------------------------- line engine
def _line_integrals(prob, origins, v, pid, kinks, R, centers, *, rtol, n_mom, extra=None):
    """∫ (t - c_l)^k exp(f(o_l + t v)) dt for k < n_mom on each line (scaled by its maximum).

    With ``extra`` (a function of the latent points returning (n, q) values ``h``), the
    columns are instead ``[1, h, h²]`` (``n_mom = 1 + 2q``), or ``[1, h]`` (``n_mom = 1 + q``).

    Returns
    -------
    logI : (L,) log ∫ exp(f) dt (``-inf`` for a line with R_l = 0)
    mom : (L, n_mom) ∫ (t-c)^k exp(f - m) / ∫ exp(f - m)
    m, tmax : (L,) line maximum and its location
    relerr : (L,) estimated relative error of ∫ exp(f - m)
    info : dict with the piece maxima (for multi-start) and evaluation counts
    """
    L = origins.shape[0]
    # pieces
    pl, pa, pb = [], [], []
    for i in range(L):
        if R[i] <= 0:
            continue
        br = np.concatenate([[-R[i]], kinks[i][np.abs(kinks[i]) < R[i]], [R[i]]])
        pl.append(np.full(br.size - 1, i))
        pa.append(br[:-1])
        pb.append(br[1:])
    logI = np.full(L, -np.inf)
    mom = np.zeros((L, n_mom))
    m_line = np.full(L, -np.inf)
    tmax = np.zeros(L)
    relerr = np.zeros(L)
    if not pl:
        return logI, mom, m_line, tmax, relerr, {"n_eval": 0}
    pl, pa, pb = np.concatenate(pl), np.concatenate(pa), np.concatenate(pb)
    # Newton step on each piece (f is concave there), forward-mode derivatives at the midpoint
    p = 0.5 * (pa + pb)
    Zp = origins[pl] + p[:, None] * v
    _, fp, kap = prob.logf(Zp, pid[pl], V=v)
    tp = np.clip(p + fp / kap, pa, pb)
    ft, _, _ = prob.logf(origins[pl] + tp[:, None] * v, pid[pl])
    fpt = fp - kap * (tp - p)  # f' at t_p from the midpoint's derivative and curvature
    m_line = np.full(L, -np.inf)
    np.maximum.at(m_line, pl, ft)
    best = _argmax_per_group(ft, pl, L)
    ok = best >= 0
    tmax[ok] = tp[best[ok]]
    info_pl, info_tp, info_ft = pl, tp, ft
    keep = ft >= m_line[pl] - _DROP
    pl, pa, pb, tp, kap, fpt, ft = (
        pl[keep],
        pa[keep],
        pb[keep],
        tp[keep],
        kap[keep],
        fpt[keep],
        ft[keep],
    )
    s = 1.0 / np.sqrt(kap)
    interior = (tp > pa) & (tp < pb)
    with np.errstate(divide="ignore"):
        s_eff = np.where(interior, s, np.minimum(s, 1.0 / np.abs(fpt)))
    wl = np.maximum(pa, tp - _WIN * s)
    wu = np.minimum(pb, tp + _WIN * s)
    kmax = int(np.clip(np.ceil(np.log2(np.max(_WIN * s / s_eff))) + 1, 1, 60))
    steps = s_eff[:, None] * 2.0 ** np.arange(kmax + 1)[None, :]
    cand = np.concatenate(
        [wl[:, None], wu[:, None], tp[:, None] - steps, tp[:, None] + steps, tp[:, None]], axis=1
    )
    inside = (cand >= wl[:, None]) & (cand <= wu[:, None])
    cand = np.where(inside, cand, np.nan)
    cand = np.sort(cand, axis=1)
    lo, hi = cand[:, :-1], cand[:, 1:]
    valid = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
    rows, cols = np.nonzero(valid)
    ilid, ia, ib = pl[rows], lo[rows, cols], hi[rows, cols]

    powers = np.arange(n_mom)

    def func(t, lid):
        f, _, _ = prob.logf(origins[lid] + t[:, None] * v, pid[lid])
        w = np.exp(f - m_line[lid])
        if extra is not None:
            h = extra(origins[lid] + t[:, None] * v)
            if h.shape[1] == n_mom - 1:  # [1, h] only
                return w[:, None] * np.concatenate([np.ones((t.size, 1)), h], axis=1)
            return w[:, None] * np.concatenate([np.ones((t.size, 1)), h, h * h], axis=1)
        if n_mom == 1:
            return w[:, None]
        dt = t - centers[lid]
        return w[:, None] * dt[:, None] ** powers[None, :]

    # rounding of f (~eps |f|) sets a floor on the attainable relative accuracy
    floor = 64.0 * np.finfo(float).eps * (np.abs(np.where(np.isfinite(m_line), m_line, 0)) + 1)
    tot, err, n_eval = _adaptive_gl(
        func, ilid, ia, ib, L, rtol=np.maximum(rtol, floor), mass_floor=extra is not None
    )
    good = tot[:, 0] > 0
    logI[good] = m_line[good] + np.log(tot[good, 0])
    mom[good] = tot[good] / tot[good, :1]
    relerr[good] = err[good, 0] / tot[good, 0]
    info = {
        "n_eval": n_eval,
        "piece_line": info_pl,
        "piece_t": info_tp,
        "piece_f": info_ft,
        "win": (pl, wl, wu, ft),
    }
    return logI, mom, m_line, tmax, relerr, info


# ---------------------------------------------------------------------------- d = 1
def _check_decoder(decoder, d):
    if decoder.weights[0].shape[1] != d:
        raise ValueError(f"this oracle needs a decoder with latent dim {d}")


def _oracle_1d(decoder, X, sigma, *, rtol, n_mom, extra=None):
    _check_decoder(decoder, 1)
    prob = _Problem(decoder, X, sigma)
    N = prob.X.shape[0]
    pid = np.arange(N)
    v = np.ones(1)
    # lower bound of max f from a grid, hence the radius of the relevant interval
    grid = np.linspace(-12.0, 12.0, 481)
    fg, _, _ = prob.logf(np.tile(grid, N)[:, None], np.repeat(pid, grid.size))
    m0 = fg.reshape(N, -1).max(axis=1)
    R = prob.radius(m0)
    kinks = _scan_kinks(prob.net, np.zeros((1, 1)), v, np.array([float(np.max(R))]))[0]
    origins = np.zeros((N, 1))
    centers = np.zeros(N)
    if n_mom > 1 and extra is None:  # centre the moments at the mode (found in a first pass)
        _, _, _, tmax, _, _ = _line_integrals(
            prob, origins, v, pid, [kinks] * N, R, centers, rtol=1e-6, n_mom=1
        )
        centers = tmax
    out = _line_integrals(
        prob, origins, v, pid, [kinks] * N, R, centers, rtol=rtol, n_mom=n_mom, extra=extra
    )
    out[-1]["center"] = centers
    out[-1]["n_kinks"] = kinks.size
    return out


def oracle_logpx_1d(decoder, X, sigma, *, tol: float = 1e-14) -> np.ndarray:
    """log p(x) for a decoder with latent dim 1, by adaptive quadrature of forward passes.

    Parameters
    ----------
    decoder : Decoder with ``latent_dim == 1``
    X : array_like of shape (N, D) or (D,)
    sigma : float or array_like of shape (D,)
    tol : float
        Relative tolerance of each integral ``∫ exp(f - max f) dt`` (so roughly the absolute
        error in log p, plus the rounding of ``f``, ~1e-16 |log p|).

    Returns
    -------
    ndarray of shape (N,)
    """
    logI, *_ = _oracle_1d(decoder, X, sigma, rtol=tol, n_mom=1)
    return logI


def oracle_posterior_moments_1d(decoder, x, sigma, *, tol: float = 1e-14):
    """Posterior mean (1,) and variance (1, 1) of z given one x, for latent dim 1.

    The moments are integrated about the mode ``c`` (found in a first pass):
    ``E[z] = c + E[z - c]``, ``Var[z] = E[(z - c)^2] - E[z - c]^2``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    _, mom, _, _, _, info = _oracle_1d(decoder, x, sigma, rtol=tol, n_mom=3)
    c = info["center"][0]
    e1, e2 = mom[0, 1], mom[0, 2]
    return np.array([c + e1]), np.array([[e2 - e1 * e1]])


class _Rows:
    """A decoder's raw parameters with only some output rows (what the oracle reads)."""

    def __init__(self, decoder, rows):
        self.weights = [*decoder.weights[:-1], np.asarray(decoder.weights[-1])[rows]]
        self.biases = [*decoder.biases[:-1], np.asarray(decoder.biases[-1])[rows]]
        self.positive_slopes = decoder.positive_slopes
        self.negative_slopes = decoder.negative_slopes


def oracle_conditional_outputs_1d(decoder, x, sigma, *, tol: float = 1e-14):
    """Conditional mean and std of the missing entries of one ``x`` (NaN = missing), d = 1.

    ``log p(x_obs)`` is integrated with the decoder's observed rows only (marginalising a
    coordinate with diagonal noise drops its row), and ``E[g_j(z) | x_obs]``,
    ``E[g_j(z)² | x_obs]`` of the missing rows by the same adaptive line quadrature;
    ``std_j = sqrt(Var[g_j | x_obs] + σ_j²)``.

    Returns
    -------
    log_p_obs : float, mean : (n_missing,), std : (n_missing,)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    obs = ~np.isnan(x)
    mis_net = _Net(_Rows(decoder, ~obs))
    q = int((~obs).sum())
    logI, mom, *_ = _oracle_1d(
        _Rows(decoder, obs),
        x[obs][None],
        sig[obs],
        rtol=tol,
        n_mom=1 + 2 * q,
        extra=lambda Z: mis_net.eval(Z)[0],
    )
    mean = mom[0, 1 : 1 + q]
    var = mom[0, 1 + q :] - mean * mean
    return float(logI[0]), mean, np.sqrt(var + sig[~obs] ** 2)


# ---------------------------------------------------------------------------- d = 2
def _gauss_newton(prob, Z, pid, iters=60):
    """Multi-start Gauss-Newton ascent of f (backtracking over 2^-k step lengths)."""
    Z = Z.copy()
    n = Z.shape[0]
    alphas = 2.0 ** -np.arange(0, 40)
    f, _, _ = prob.logf(Z, pid)
    for _ in range(iters):
        g, d1, _ = prob.net.eval(Z, np.array([1.0, 0.0]))
        _, d2, _ = prob.net.eval(Z, np.array([0.0, 1.0]))
        J = np.stack([d1, d2], axis=2) * prob.inv_sig[None, :, None]  # (n, D, 2)
        r = (prob.X[pid] - g) * prob.inv_sig
        grad = -Z + np.einsum("nDk,nD->nk", J, r)
        H = np.eye(2)[None] + np.einsum("nDk,nDl->nkl", J, J)
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        cand = Z[:, None, :] + alphas[None, :, None] * step[:, None, :]
        fc, _, _ = prob.logf(cand.reshape(-1, 2), np.repeat(pid, alphas.size))
        fc = fc.reshape(n, alphas.size)
        j = np.argmax(fc, axis=1)
        fbest = fc[np.arange(n), j]
        better = fbest > f
        Z[better] = cand[np.arange(n), j][better]
        f = np.where(better, fbest, f)
        if not better.any():
            break
    g, d1, _ = prob.net.eval(Z, np.array([1.0, 0.0]))
    _, d2, _ = prob.net.eval(Z, np.array([0.0, 1.0]))
    J = np.stack([d1, d2], axis=2) * prob.inv_sig[None, :, None]
    H = np.eye(2)[None] + np.einsum("nDk,nDl->nkl", J, J)
    s1 = np.sqrt(np.linalg.inv(H)[:, 0, 0])
    return Z, f, s1


def _modes(prob, starts):
    pid = np.zeros(starts.shape[0], dtype=int)
    Z, f, s1 = _gauss_newton(prob, starts, pid)
    order = np.argsort(-f)
    Z, f, s1 = Z[order], f[order], s1[order]
    keep = []
    for i in range(Z.shape[0]):
        if f[i] < f[0] - _DROP:
            break
        if all(np.linalg.norm(Z[i] - Z[j]) > 0.5 * s1[j] for j in keep):
            keep.append(i)
    return Z[keep], f[keep], s1[keep]


class _Outer2D:
    """Inner line integrals I(z1) = ∫ exp(f(z1, t)) dt for one data point (lines ∥ e2)."""

    def __init__(self, prob, R, center, rtol_inner, n_mom, extra=None):
        self.prob, self.R, self.center = prob, R, center
        self.rtol, self.n_mom = rtol_inner, n_mom
        self.extra = extra
        self.v = np.array([0.0, 1.0])
        self.n_lines = 0
        self.n_eval = 0
        self.max_relerr = 0.0
        self.n_sig = 0

    def lines(self, z1):
        z1 = np.asarray(z1, dtype=np.float64)
        L = z1.size
        origins = np.stack([z1, np.zeros(L)], axis=1)
        Rl = np.sqrt(np.maximum(self.R**2 - z1**2, 0.0))
        kinks = _scan_kinks(self.prob.net, origins, self.v, Rl)
        logI, mom, m, tmax, relerr, info = _line_integrals(
            self.prob,
            origins,
            self.v,
            np.zeros(L, dtype=int),
            kinks,
            Rl,
            np.full(L, self.center[1]),
            rtol=self.rtol,
            n_mom=self.n_mom,
            extra=self.extra,
        )
        self.n_lines += L
        self.n_eval += info["n_eval"]
        if L:
            self.max_relerr = max(self.max_relerr, float(np.max(relerr)))
        return logI, mom, m, tmax, info

    def signatures(self, z1, fmin):
        """Activation patterns of the relevant pieces of each line (as bytes).

        A piece is relevant when the maximum of f over it is at least ``fmin``.
        """
        z1 = np.asarray(z1, dtype=np.float64)
        L = z1.size
        origins = np.stack([z1, np.zeros(L)], axis=1)
        Rl = np.sqrt(np.maximum(self.R**2 - z1**2, 0.0))
        kinks = _scan_kinks(self.prob.net, origins, self.v, Rl)
        lid, pa, pb = [], [], []
        for i in range(L):
            br = np.concatenate([[-Rl[i]], kinks[i][np.abs(kinks[i]) < Rl[i]], [Rl[i]]])
            lid.append(np.full(br.size - 1, i))
            pa.append(br[:-1])
            pb.append(br[1:])
        lid, pa, pb = np.concatenate(lid), np.concatenate(pa), np.concatenate(pb)
        p = 0.5 * (pa + pb)
        Zp = origins[lid] + p[:, None] * self.v
        pid = np.zeros(lid.size, dtype=int)
        _, fp, kap = self.prob.logf(Zp, pid, V=self.v)
        tp = np.clip(p + fp / kap, pa, pb)
        ft, _, _ = self.prob.logf(origins[lid] + tp[:, None] * self.v, pid)
        _, _, pre = self.net_eval(Zp)
        bits = np.packbits(pre > 0, axis=1)
        rel = ft >= fmin
        self.n_sig += L
        return [bits[(lid == i) & rel].tobytes() for i in range(L)]

    def net_eval(self, Z):
        return self.prob.net.eval(Z, want_pre=True)

    def vertices(self, a, b, fmin, max_iter=40):
        """z1 of the points in (a_i, b_i) where the sequence of relevant pieces changes.

        These are the partition's vertices where f >= fmin (and the z1 where a piece's maximum
        crosses fmin); the inner integral I(z1) is smooth between them up to terms of relative
        size e^-30, so they are used as outer breakpoints.
        """
        pts = np.unique(np.concatenate([a, b]))
        sig = dict(zip(pts.tolist(), self.signatures(pts, fmin), strict=True))
        ca = np.array([u for u, w in zip(a, b, strict=True) if sig[u] != sig[w]])
        cb = np.array([w for u, w in zip(a, b, strict=True) if sig[u] != sig[w]])
        sa = [sig[u] for u in ca]
        sb = [sig[w] for w in cb]
        found = []
        for _ in range(max_iter):
            if ca.size == 0:
                break
            done = (cb - ca) <= 1e-10 * np.maximum(1.0, np.abs(ca))
            found.extend((0.5 * (ca[done] + cb[done])).tolist())
            ca, cb = ca[~done], cb[~done]
            sa = [x for x, dn in zip(sa, done, strict=True) if not dn]
            sb = [x for x, dn in zip(sb, done, strict=True) if not dn]
            if ca.size == 0:
                break
            mid = 0.5 * (ca + cb)
            sm = self.signatures(mid, fmin)
            na, nb, nsa, nsb = [], [], [], []
            for i in range(ca.size):
                if sa[i] != sm[i]:
                    na.append(ca[i])
                    nb.append(mid[i])
                    nsa.append(sa[i])
                    nsb.append(sm[i])
                if sm[i] != sb[i]:
                    na.append(mid[i])
                    nb.append(cb[i])
                    nsa.append(sm[i])
                    nsb.append(sb[i])
            ca, cb, sa, sb = np.array(na), np.array(nb), nsa, nsb
        found.extend((0.5 * (ca + cb)).tolist())
        return np.array(sorted(found))


def _oracle_2d_point(decoder, x, sigma, *, rtol, n_mom, rtol_inner=1e-13, extra=None):
    prob = _Problem(decoder, x, sigma)
    # multi-start: grid values, then Gauss-Newton from the best and the local maxima
    g = np.linspace(-6.0, 6.0, 49)
    G1, G2 = np.meshgrid(g, g, indexing="ij")
    Zg = np.stack([G1.ravel(), G2.ravel()], axis=1)
    fg, _, _ = prob.logf(Zg, np.zeros(Zg.shape[0], dtype=int))
    F = fg.reshape(49, 49)
    pad = np.pad(F, 1, constant_values=-np.inf)
    locmax = np.ones_like(F, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                locmax &= F >= pad[1 + di : 50 + di, 1 + dj : 50 + dj]
    top = np.argsort(-fg)[:40]
    idx = np.unique(np.concatenate([top, np.flatnonzero(locmax.ravel())]))
    modes, fm, s1 = _modes(prob, Zg[idx])
    R = float(prob.radius(max(fg.max(), fm[0])))
    center = modes[0]
    outer = _Outer2D(prob, R, center, rtol_inner, n_mom, extra)

    def breakpoints(modes, s1):
        T0 = min(R, 12.0)
        pts = [np.linspace(-T0, T0, round(2 * T0 / 0.5) + 1)]
        if R > T0:
            k = math.ceil(math.log(R / T0) / math.log(1.1))
            geo = np.minimum(T0 * 1.1 ** np.arange(1, k + 1), R)
            pts += [geo, -geo]
        ladder = np.concatenate([[0.0], 2.0 ** np.arange(-1, 4)])
        ladder = np.concatenate([-ladder, ladder])
        for z, s in zip(modes, s1, strict=True):
            pts.append(z[0] + s * ladder)
            pts.append(z[0] + np.arange(-12, 13) * 0.5)
        pts = np.concatenate(pts)
        return np.unique(np.clip(pts, -R, R))

    S = breakpoints(modes, s1)
    logI, _, _m, _tmax, info = outer.lines(S)
    # second round of starts: best piece maxima of these lines
    pf = info.get("piece_f", np.zeros(0))
    if pf.size:
        best = np.argsort(-pf)[:40]
        starts = np.stack([S[info["piece_line"][best]], info["piece_t"][best]], axis=1)
        modes2, _fm2, s12 = _modes(prob, np.concatenate([modes, starts]))
        new = [
            i
            for i in range(modes2.shape[0])
            if np.min(np.linalg.norm(modes - modes2[i], axis=1)) > 1e-6
        ]
        if new:
            S2 = breakpoints(modes2[new], s12[new])
            S2 = np.setdiff1d(S2, S)
            if S2.size:
                l2, _, _, _, _ = outer.lines(S2)
                S = np.concatenate([S, S2])
                logI = np.concatenate([logI, l2])
                o = np.argsort(S)
                S, logI = S[o], logI[o]
            modes = np.concatenate([modes, modes2[new]])
    Mout = float(np.max(logI))
    # initial outer intervals: drop those negligible at both ends and without a mode
    a, b = S[:-1], S[1:]
    la, lb = logI[:-1], logI[1:]
    has_mode = np.zeros(a.size, dtype=bool)
    for z in modes:
        has_mode |= (a <= z[0]) & (z[0] <= b)
    keep = (np.maximum(la, lb) >= Mout - _DROP) | has_mode
    a, b = a[keep], b[keep]
    # split the outer intervals at the vertices of the partition where f >= max f - 30
    fmax = max(float(np.max(info["piece_f"])), float(fm[0]))
    vert = outer.vertices(a, b, fmax - 30.0)
    if vert.size:
        pts = np.unique(np.concatenate([a, b, vert]))
        inside = np.zeros(pts.size - 1, dtype=bool)
        for lo, hi in zip(a, b, strict=True):
            inside |= (pts[:-1] >= lo) & (pts[1:] <= hi)
        a, b = pts[:-1][inside], pts[1:][inside]
    c1 = center[0]

    def func(t, lid):
        lI, mom, _, _, _ = outer.lines(t)
        if np.any(lI - Mout > 50.0):
            raise RuntimeError("oracle_2d: the mode search missed the maximum")
        w = np.exp(lI - Mout)
        dz = t - c1
        if extra is not None:  # [1, E[h | z1]] (the inner lines' means of the features)
            return w[:, None] * mom
        if n_mom == 1:
            return w[:, None]
        # [1, dz1, dz1^2, dz2, dz1 dz2, dz2^2] with dz2 moments from the inner integrals
        return w[:, None] * np.stack(
            [np.ones_like(t), dz, dz * dz, mom[:, 1], dz * mom[:, 1], mom[:, 2]], axis=1
        )

    floor = 64.0 * np.finfo(float).eps * (abs(Mout) + 1.0)  # rounding of log I(z1)
    tot, err, _ = _adaptive_gl(
        func,
        np.zeros(a.size, dtype=int),
        a,
        b,
        1,
        rtol=max(rtol, floor),
        max_rounds=40,
        n=5,
        mass_floor=extra is not None,
    )
    info = {
        "n_lines": outer.n_lines,
        "n_eval": outer.n_eval,
        "outer_relerr": float(err[0, 0] / tot[0, 0]),
        "inner_max_relerr": outer.max_relerr,
        "n_vertices": vert.size,
        "n_signature_lines": outer.n_sig,
        "modes": modes,
    }
    return Mout + math.log(tot[0, 0]), tot[0] / tot[0, 0], center, info


def oracle_logpx_2d(decoder, X, sigma, *, rtol: float = 1e-11, return_info: bool = False):
    """log p(x) for a decoder with latent dim 2, by nested adaptive quadrature.

    Parameters
    ----------
    decoder : Decoder with ``latent_dim == 2``
    X : array_like of shape (N, D) or (D,)
    sigma : float or array_like of shape (D,)
    rtol : float
        Relative tolerance of the outer integral (the inner ones use 1e-13).
    return_info : bool
        Also return a list of per-point diagnostics (lines, evaluations, error estimates).

    Returns
    -------
    ndarray of shape (N,)
    """
    _check_decoder(decoder, 2)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    out = np.empty(X.shape[0])
    infos = []
    for i in range(X.shape[0]):  # each point is a full nested quadrature
        out[i], _, _, info = _oracle_2d_point(decoder, X[i], sigma, rtol=rtol, n_mom=1)
        infos.append(info)
    return (out, infos) if return_info else out


def oracle_posterior_moments_2d(decoder, x, sigma, *, rtol: float = 1e-11):
    """Posterior mean (2,) and covariance (2, 2) of z given one x, for latent dim 2."""
    _check_decoder(decoder, 2)
    x = np.asarray(x, dtype=np.float64).ravel()
    _, mom, c, _ = _oracle_2d_point(decoder, x, sigma, rtol=rtol, n_mom=3)
    e1, e11, e2, e12, e22 = mom[1], mom[2], mom[3], mom[4], mom[5]
    mean = c + np.array([e1, e2])
    cov = np.array([[e11 - e1 * e1, e12 - e1 * e2], [e12 - e1 * e2, e22 - e2 * e2]])
    return mean, cov


# ---------------------------------------------------------------------------- mpmath, d = 1
def oracle_conditional_outputs_1d_mp(decoder, x, sigma, *, dps: int = 50):
    """:func:`oracle_conditional_outputs_1d` in ``dps``-digit arithmetic, for decoders with
    latent dim 1 and **one** hidden layer (kinks at ``-b_i / w_i``, exact in mpmath).

    On each interval between kinks the decoder is affine, ``g(z) = a z + c`` (taken by an
    mpmath forward pass with the decoder's slopes); ``p(z | x_obs)`` there is a Gaussian
    ``N(μ, 1/P)`` truncated to the interval with weight ``κ Φ``, and ``E[g_j]``, ``E[g_j²]`` of
    the missing rows follow from the truncated normal's first two moments. For steep pieces
    (``|a| / σ`` of 1e4), where the line quadrature's raw second moments lose ~1e-6 of the
    std, this is the reference (every operation in 50 digits; no float rounding of the
    cancelling ``E[g²] - E[g]²``).

    Returns
    -------
    log_p_obs : float, mean : (n_missing,), std : (n_missing,)
    """
    import mpmath as mp

    if len(decoder.weights) != 2 or decoder.weights[0].shape[1] != 1:
        raise ValueError("the mpmath oracle takes d = 1 decoders with one hidden layer")
    x = np.asarray(x, dtype=np.float64).ravel()
    D = x.size
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    obs = np.flatnonzero(~np.isnan(x))
    mis = np.flatnonzero(np.isnan(x))
    W0, b0 = decoder.weights[0][:, 0], decoder.biases[0]
    W1, b1 = decoder.weights[1], decoder.biases[1]
    pos, neg = np.ravel(decoder.positive_slopes), np.ravel(decoder.negative_slopes)
    with mp.workdps(dps):
        kinks = sorted(-mp.mpf(b) / mp.mpf(w) for w, b in zip(W0, b0, strict=True) if w != 0)
        edges = [-mp.inf, *kinks, mp.inf]
        s2 = [mp.mpf(s) ** 2 for s in sig]

        def affine(z):  # (a, c) of the output map at z
            a, c = [mp.mpf(0)] * D, [mp.mpf(b) for b in b1]
            for i in range(W0.size):
                pre = mp.mpf(W0[i]) * z + mp.mpf(b0[i])
                slope = mp.mpf(pos[i]) if pre > 0 else mp.mpf(neg[i])
                for j in range(D):
                    a[j] += mp.mpf(W1[j, i]) * slope * mp.mpf(W0[i])
                    c[j] += mp.mpf(W1[j, i]) * slope * mp.mpf(b0[i])
            return a, c

        Z = mp.mpf(0)
        E1 = [mp.mpf(0)] * len(mis)
        E2 = [mp.mpf(0)] * len(mis)
        for lo, hi in itertools.pairwise(edges):
            if lo == -mp.inf:
                mid = hi - 1 if hi != mp.inf else mp.mpf(0)
            else:
                mid = lo + 1 if hi == mp.inf else (lo + hi) / 2
            a, c = affine(mid)
            P = 1 + mp.fsum(a[j] ** 2 / s2[j] for j in obs)
            v = mp.fsum(a[j] * (mp.mpf(x[j]) - c[j]) / s2[j] for j in obs)
            mu, sd = v / P, 1 / mp.sqrt(P)
            q = mp.fsum((mp.mpf(x[j]) - c[j]) ** 2 / s2[j] for j in obs) - v * v / P
            logk = -(len(obs) * mp.log(2 * mp.pi) + mp.fsum(mp.log(s2[j]) for j in obs)) / 2
            kappa = mp.exp(logk - q / 2) / mp.sqrt(P)
            al, be = (lo - mu) / sd, (hi - mu) / sd
            # on the side of the tail the interval lies in: ncdf(be) - ncdf(al) of two values
            # within 1e-50 of 1 is 0 (a region 40 sds right of its posterior mean dropped)
            mass = mp.ncdf(be) - mp.ncdf(al) if al <= 0 else mp.ncdf(-al) - mp.ncdf(-be)
            if mass == 0:
                continue
            pa = mp.npdf(al) if al != -mp.inf else mp.mpf(0)
            pb = mp.npdf(be) if be != mp.inf else mp.mpf(0)
            ta = al * pa if al != -mp.inf else mp.mpf(0)
            tb = be * pb if be != mp.inf else mp.mpf(0)
            m1 = mu + sd * (pa - pb) / mass
            var = sd**2 * (1 + (ta - tb) / mass - ((pa - pb) / mass) ** 2)
            wgt = kappa * mass
            Z += wgt
            for k, j in enumerate(mis):
                E1[k] += wgt * (a[j] * m1 + c[j])
                E2[k] += wgt * (a[j] ** 2 * (var + m1 * m1) + 2 * a[j] * c[j] * m1 + c[j] ** 2)
        mean = [e / Z for e in E1]
        std = [mp.sqrt(e / Z - m * m + s2[j]) for e, m, j in zip(E2, mean, mis, strict=True)]
        return (
            float(mp.log(Z)),
            np.array([float(t) for t in mean]),
            np.array([float(t) for t in std]),
        )
