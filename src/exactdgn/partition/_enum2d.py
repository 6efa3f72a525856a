"""Exact enumeration for a 2-D latent space: convex polygons split layer by layer.

Polygons are kept in homogeneous coordinates on the oriented projective plane: a finite corner
``z`` is the generator ``(z1, z2, 1)``, a unit ray direction ``r`` is ``(r1, r2, 0)``. A polygon
is the cone spanned by its cyclic (counter-clockwise) list of generators, so unbounded polygons
need no bounding box: the whole plane is the cone of the four axis rays (its edges lie on the
line at infinity). An edge joins consecutive generators; an edge between two rays lies at
infinity and is not a facet. Each edge carries a label: the id of the hidden unit's line that
created it (``-1`` at infinity).

Inside a region found from layers ``< l`` every pre-activation of layer ``l`` is affine,
``l(z) = a . z + c``, and in homogeneous form ``l(v) = a . v[:2] + c v[2]`` (for a ray this is
the sign of ``l`` far out along it). Cutting a polygon by ``l``: the piece ``l >= 0`` keeps the
generators with ``l(v) >= 0`` and gains the crossing point
``(l(p) q - l(q) p) / (l(p) - l(q))`` of every edge ``p -> q`` whose ends have strictly opposite
signs (a positive combination of ``p`` and ``q``: a finite point if either end is finite, else
a ray); the piece ``l <= 0`` likewise. When both ends of the new edge are rays, the new edge is
a whole line and its foot ``-c a / |a|^2`` is inserted between them as a finite (non-corner)
generator. Signs are classified with the relative tolerance :data:`_RTOL`: a ray lies on the
line when ``|a . r| <= _RTOL |a|``, a finite point when ``|l(z)| <= _RTOL (|a| vmax + |c|)``
with ``vmax`` the largest norm of the polygon's finite points; so lines through a corner or
along an edge (concurrent, identical or parallel lines) never produce zero-area pieces. A piece
whose signs are not those of a convex polygon met by a line (possible only when it reaches across
the line at noise level) is left whole, on the side it reaches farther into.

At the end, corners are recomputed as the intersections of their two lines and rays as line
directions; facet normals and offsets come from the exact line coefficients, not from the
generators.

Work is vectorised over polygons: the units of a layer are processed one at a time, each for all
current pieces at once (padded arrays ``(P, W, 3)`` with per-piece counts).
"""

from __future__ import annotations

import logging

import numpy as np

from ..decoder import Decoder
from ._partition import RawPartition

__all__ = ["enumerate_2d"]

logger = logging.getLogger(__name__)

#: Relative tolerance for "this generator lies on the line".
_RTOL = 1e-10
#: Rows per chunk when all of a layer's lines are evaluated on all polygons at once.
_CHUNK_ELEMS = 1 << 22


def _whole_plane() -> np.ndarray:
    """The four axis rays, counter-clockwise, homogeneous: shape (4, 3)."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _by_type(V: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Generators selected by ``mask`` (R, W), first ``k`` coordinates, NaN-padded: (R, W', k)."""
    R = V.shape[0]
    pos = np.cumsum(mask, axis=1) - 1
    width = int(mask.sum(axis=1).max()) if R else 0
    out = np.full((R, max(width, 1), k), np.nan)
    r, i = np.nonzero(mask)
    out[r, pos[r, i]] = V[r, i, :k]
    return out


def _first_maps(decoder: Decoder) -> np.ndarray:
    """Layer 0 pre-activation maps on the whole plane, transposed: (1, 3, n_1)."""
    W, c = decoder.weights[0], decoder.biases[0]
    return np.concatenate([W.T, c[None, :]], axis=0)[None]


def _next_maps(decoder: Decoder, Mt: np.ndarray, bits: np.ndarray, layer: int) -> np.ndarray:
    """Pre-activation maps of layer ``layer + 1`` from those of ``layer`` and its pattern bits.

    Parameters
    ----------
    Mt : ndarray (R, 3, n_layer)
        ``a_i(z) = Mt[r, 0, i] z1 + Mt[r, 1, i] z2 + Mt[r, 2, i]`` on region ``r``.
    bits : ndarray (R, n_layer) bool
        The layer's pattern bits on each region.

    Returns
    -------
    ndarray (R, 3, n_{layer+1})
        ``W_{l+1} diag(slope) (.) + c_{l+1}``: one GEMM over all regions.
    """
    sl = decoder.unit_slices[layer]
    slope = np.where(bits, decoder.positive_slopes[sl], decoder.negative_slopes[sl])
    H = Mt * slope[:, None, :]
    R, _, n = H.shape
    W, c = decoder.weights[layer + 1], decoder.biases[layer + 1]
    out = (H.reshape(R * 3, n) @ W.T).reshape(R, 3, W.shape[0])
    out[:, 2, :] += c
    return out


def _layer_signs(
    V: np.ndarray, cnt: np.ndarray, Mt: np.ndarray, kink: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of a layer's lines cut which polygon.

    A generator ``v`` is strictly on the positive side of ``l = (a, c)`` when ``l(v) > thr``,
    ``thr = _RTOL |a|`` for a ray and ``thr = _RTOL (|a| vmax + |c|)`` for a finite point, where
    ``vmax`` is the largest norm of the polygon's finite points (the tolerance is relative to
    the polygon's coordinates; :func:`_cut_layer` uses the same thresholds). The whole plane
    (no finite generator) is also evaluated at the origin.

    Parameters
    ----------
    V : ndarray (R, W, 3)
        Padded homogeneous generators.
    cnt : ndarray (R,)
        Number of generators of each polygon.
    Mt : ndarray (R, 3, n)
        The layer's pre-activation maps on each polygon (columns ``(a1, a2, c)``).
    kink : ndarray (n,) bool

    Returns
    -------
    cut : ndarray (R, n) bool
        The kink unit's line has generators strictly on both sides.
    has_pos : ndarray (R, n) bool
        Some generator is strictly on the positive side.
    vmax : ndarray (R,)
    """
    R, W, _ = V.shape
    n = Mt.shape[2]
    valid = np.arange(W) < cnt[:, None]
    fin = valid & (V[..., 2] > 0)
    ray = valid & (V[..., 2] == 0)
    vmax = np.where(fin, np.hypot(V[..., 0], V[..., 1]), 0.0).max(axis=1)
    F = _by_type(V, fin, 3)
    # a polygon without finite generators is the whole plane: its sign under a line with a = 0
    # is the sign of c, seen at the origin
    F[~fin.any(axis=1), 0] = (0.0, 0.0, 1.0)
    D = _by_type(V, ray, 2)
    cut = np.zeros((R, n), dtype=bool)
    has_pos = np.zeros((R, n), dtype=bool)
    step = max(1, _CHUNK_ELEMS // max(1, W * n))
    for s in range(0, R, step):
        e = min(R, s + step)
        M = Mt[s:e]
        anorm = np.hypot(M[:, 0], M[:, 1])
        thr_r = _RTOL * anorm
        thr_f = _RTOL * (anorm * vmax[s:e, None] + np.abs(M[:, 2]))
        vf = np.matmul(F[s:e], M)  # (r, Wf, n), NaN rows for padding
        vr = np.matmul(D[s:e], M[:, :2])
        pos = (np.fmax.reduce(vf, axis=1) > thr_f) | (np.fmax.reduce(vr, axis=1) > thr_r)
        neg = (np.fmin.reduce(vf, axis=1) < -thr_f) | (np.fmin.reduce(vr, axis=1) < -thr_r)
        has_pos[s:e] = pos
        cut[s:e] = pos & neg & kink[None, :]
    return cut, has_pos, vmax


def _split(
    V: np.ndarray,
    cnt: np.ndarray,
    L: np.ndarray,
    val: np.ndarray,
    s: np.ndarray,
    line: np.ndarray,
    new_id: np.ndarray,
):
    """Split polygons by a line into the pieces ``l >= 0`` and ``l <= 0``.

    Parameters
    ----------
    V : ndarray (m, W, 3)
        Padded homogeneous generators, counter-clockwise.
    cnt : ndarray (m,)
    L : ndarray (m, W) int
        Label of edge ``i -> i+1``.
    val, s : ndarray (m, W)
        ``l`` at the generators and its int8 sign (with tolerance).
    line : ndarray (m, 3)
        ``(a1, a2, c)``.
    new_id : ndarray (m,)
        Label given to the new edges (on the line).

    Returns
    -------
    ok : ndarray (m,) bool
        Polygons whose sign pattern is that of a convex polygon met by a line (one run of
        each sign). The others are numerically degenerate (extent across the line at noise
        level) and are not split; the outputs are meaningful only where ``ok``.
    pieces : list of two tuples ``(V, cnt, L)``
        The positive then the negative piece of each polygon (padded to a common width).
    """
    m, W, _ = V.shape
    rows = np.arange(m)[:, None]
    idx = np.arange(W)[None, :]
    c_ = cnt[:, None]
    valid = idx < c_
    nxt = np.where(idx + 1 < c_, idx + 1, 0)
    prv = np.where(idx == 0, c_ - 1, idx - 1)
    s_n = s[rows, nxt]
    s_p = s[rows, prv]
    cross = valid & (s * s_n < 0)
    zero = valid & (s == 0)
    isray = V[..., 2] == 0

    # crossing points (compact list), finite where either end is finite
    cr, cc = np.nonzero(cross)
    lp = val[cr, cc]
    lq = val[cr, nxt[cr, cc]]
    P = V[cr, cc]
    Q = V[cr, nxt[cr, cc]]
    cpt = (lp[:, None] * Q - lq[:, None] * P) / (lp - lq)[:, None]
    w = cpt[:, 2]
    fin = w > 0
    cpt[fin] /= w[fin, None]
    cpt[fin, 2] = 1.0
    inf = ~fin
    if inf.any():
        cpt[inf, :2] /= np.hypot(cpt[inf, 0], cpt[inf, 1])[:, None]
        cpt[inf, 2] = 0.0
    cray = np.zeros((m, W), dtype=bool)
    cray[cr, cc] = inf

    a = line[:, :2]
    foot = np.empty((m, 3))
    foot[:, :2] = -(line[:, 2] / np.einsum("ij,ij->i", a, a))[:, None] * a
    foot[:, 2] = 1.0

    ok = ~np.any(zero & (s_n == 0), axis=1)  # an edge on the line with points on both sides
    parts = []
    for sigma in (1, -1):
        ss, ss_n, ss_p = (s, s_n, s_p) if sigma == 1 else (-s, -s_n, -s_p)
        keep = valid & (ss >= 0)
        exit_v = zero & (ss_n < 0)
        entry_v = zero & (ss_p < 0)
        exit_c = cross & (ss > 0)
        entry_c = cross & (ss < 0)
        ex = exit_v | exit_c
        en = entry_v | entry_c
        ok &= (ex.sum(axis=1) == 1) & (en.sum(axis=1) == 1)
        entry_ray = np.any((entry_v & isray) | (entry_c & cray), axis=1)
        ft = ((exit_v & isray) | (exit_c & cray)) & entry_ray[:, None]
        parts.append((keep, exit_v, exit_c, ft))
    out = []
    for keep, exit_v, exit_c, ft in parts:
        k = keep.astype(np.int64)
        x = cross.astype(np.int64)
        n_out = k + x + ft
        new_cnt = n_out.sum(axis=1)
        start = np.cumsum(n_out, axis=1) - n_out
        W2 = int(new_cnt.max()) if m else 0
        Vo = np.zeros((m, W2, 3))
        Lo = np.full((m, W2), -1, dtype=np.int64)
        r, i = np.nonzero(keep)
        col = start[r, i]
        Vo[r, col] = V[r, i]
        Lo[r, col] = np.where(exit_v[r, i], new_id[r], L[r, i])
        col = start[cr, cc] + k[cr, cc]
        Vo[cr, col] = cpt
        Lo[cr, col] = np.where(exit_c[cr, cc], new_id[cr], L[cr, cc])
        r, i = np.nonzero(ft)
        col = start[r, i] + k[r, i] + x[r, i]
        Vo[r, col] = foot[r]
        Lo[r, col] = new_id[r]
        out.append((Vo, new_cnt, Lo))
    return ok, out


class _Pool:
    """Growable padded storage of polygons (amortised doubling in rows and width)."""

    def __init__(self, V, cnt, L, n_bits):
        R, W, _ = V.shape
        cap = max(16, 2 * R)
        self.size = R
        self.V = np.zeros((cap, W, 3))
        self.V[:R] = V
        self.cnt = np.zeros(cap, dtype=np.int64)
        self.cnt[:R] = cnt
        self.L = np.full((cap, W), -1, dtype=np.int64)
        self.L[:R] = L
        self.root = np.zeros(cap, dtype=np.int64)
        self.root[:R] = np.arange(R)
        self.bits = np.zeros((cap, n_bits), dtype=bool)

    @property
    def width(self) -> int:
        return self.V.shape[1]

    def reserve(self, n_rows: int, width: int) -> None:
        cap, W = self.V.shape[0], self.width
        if n_rows <= cap and width <= W:
            return
        cap2 = max(cap, 2 * n_rows) if n_rows > cap else cap
        W2 = max(W, width + 2) if width > W else W
        V = np.zeros((cap2, W2, 3))
        V[: self.size, :W] = self.V[: self.size]
        L = np.full((cap2, W2), -1, dtype=np.int64)
        L[: self.size, :W] = self.L[: self.size]
        cnt = np.zeros(cap2, dtype=np.int64)
        cnt[: self.size] = self.cnt[: self.size]
        root = np.zeros(cap2, dtype=np.int64)
        root[: self.size] = self.root[: self.size]
        bits = np.zeros((cap2, self.bits.shape[1]), dtype=bool)
        bits[: self.size] = self.bits[: self.size]
        self.V, self.L, self.cnt, self.root, self.bits = V, L, cnt, root, bits

    def put(self, rows: np.ndarray, V: np.ndarray, cnt: np.ndarray, L: np.ndarray) -> None:
        W = V.shape[1]
        self.V[rows, :W] = V
        self.V[rows, W:] = 0.0
        self.L[rows, :W] = L
        self.L[rows, W:] = -1
        self.cnt[rows] = cnt


def _cut_layer(pool: _Pool, Mt, vmax, cut, j, ids_of_root) -> None:
    """Cut every piece whose root polygon is crossed by unit ``j``'s line.

    The sign tolerance is the one of :func:`_layer_signs`, with ``vmax`` the larger of the root
    polygon's and the piece's own (pieces of the whole plane or of an unbounded root can have
    finite points far out).
    """
    P = pool.size
    active = np.nonzero(cut[pool.root[:P], j])[0]
    if len(active) == 0:
        return
    roots = pool.root[active]
    line = Mt[roots, :, j]  # (m, 3)
    V = pool.V[active]
    cnt = pool.cnt[active]
    W = V.shape[1]
    a_norm = np.hypot(line[:, 0], line[:, 1])
    val = np.einsum("mwk,mk->mw", V, line)
    fin = V[..., 2] > 0
    own = np.where(fin, np.hypot(V[..., 0], V[..., 1]), 0.0).max(axis=1)
    thr_f = _RTOL * (a_norm * np.maximum(vmax[roots], own) + np.abs(line[:, 2]))
    thr = np.where(fin, thr_f[:, None], _RTOL * a_norm[:, None])
    s = (val > thr).astype(np.int8) - (val < -thr).astype(np.int8)
    s[np.arange(W)[None, :] >= cnt[:, None]] = 0
    has_pos = np.any(s > 0, axis=1)
    has_neg = np.any(s < 0, axis=1)
    split = has_pos & has_neg
    keep = np.nonzero(~split)[0]
    pool.bits[active[keep], j] = has_pos[keep]
    sp = np.nonzero(split)[0]
    if len(sp) == 0:
        return
    ok, ((Vp, cp, Lp), (Vn, cn, Ln)) = _split(
        V[sp], cnt[sp], pool.L[active[sp]], val[sp], s[sp], line[sp], ids_of_root[roots[sp]]
    )
    if not ok.all():
        bad = sp[~ok]
        logger.debug("enumerate_2d: %d numerically degenerate cuts left unsplit", len(bad))
        # the piece reaches across the line only at noise level: keep it whole, on the side
        # where it reaches farther
        rel = np.where(s[bad] != 0, val[bad] / thr[bad], 0.0)
        pool.bits[active[bad], j] = rel.max(axis=1) >= -rel.min(axis=1)
        sp = sp[ok]
        Vp, cp, Lp, Vn, cn, Ln = Vp[ok], cp[ok], Lp[ok], Vn[ok], cn[ok], Ln[ok]
        if len(sp) == 0:
            return
    tgt = active[sp]
    n_new = len(sp)
    pool.reserve(P + n_new, max(Vp.shape[1], Vn.shape[1]))
    pool.put(tgt, Vp, cp, Lp)
    new_rows = np.arange(P, P + n_new)
    pool.put(new_rows, Vn, cn, Ln)
    pool.root[new_rows] = pool.root[tgt]
    pool.bits[new_rows] = pool.bits[tgt]
    pool.bits[tgt, j] = True
    pool.bits[new_rows, j] = False
    pool.size = P + n_new


def _interior_points(V: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """A point well inside each polygon.

    Bounded: the area centroid (at least 1/3 of the width from every side). Unbounded: the mean
    ``m`` of the finite generators plus ``t`` times the sum of the unit rays,
    ``t = max(1, spread, |m|)``, a strictly positive combination of all generators whose
    clearance from the facets is not small next to its own magnitude.
    """
    W = V.shape[1]
    valid = np.arange(W)[None, :] < cnt[:, None]
    fin = valid & (V[..., 2] > 0)
    ray = valid & (V[..., 2] == 0)
    nf = fin.sum(axis=1)
    mean = np.where(fin[..., None], V[..., :2], 0.0).sum(axis=1) / np.maximum(nf, 1)[:, None]
    out = mean.copy()
    bounded = ~ray.any(axis=1)
    # area centroid of bounded polygons (coordinates relative to the vertex mean)
    b = np.nonzero(bounded)[0]
    if len(b):
        X = V[b, :, :2] - mean[b, None, :]
        c_ = cnt[b][:, None]
        idx = np.arange(W)[None, :]
        nxt = np.where(idx + 1 < c_, idx + 1, 0)
        Xn = X[np.arange(len(b))[:, None], nxt]
        cross = X[..., 0] * Xn[..., 1] - X[..., 1] * Xn[..., 0]
        cross = np.where(idx < c_, cross, 0.0)
        area2 = cross.sum(axis=1)
        cx = ((X[..., 0] + Xn[..., 0]) * cross).sum(axis=1)
        cy = ((X[..., 1] + Xn[..., 1]) * cross).sum(axis=1)
        span = np.abs(X).max(axis=(1, 2))
        good = area2 > 1e-300 + 1e-13 * span**2
        with np.errstate(divide="ignore", invalid="ignore"):
            cen = np.stack([cx, cy], axis=1) / (3.0 * area2[:, None])
        out[b[good]] = mean[b[good]] + cen[good]
    u = np.nonzero(~bounded)[0]
    if len(u):
        rays = np.where(ray[u, :, None], V[u, :, :2], 0.0).sum(axis=1)
        d = np.where(fin[u, :, None], V[u, :, :2] - mean[u, None, :], 0.0)
        spread = 2.0 * np.sqrt((d**2).sum(axis=2).max(axis=1))
        t = np.maximum(np.maximum(1.0, spread), np.hypot(mean[u, 0], mean[u, 1]))
        out[u] = mean[u] + t[:, None] * rays
    return out


def _refine(V, cnt, L, coef) -> np.ndarray:
    """Recompute corners as intersections of their two lines and rays as line directions.

    In place; a refined generator is kept only if it agrees with the one from the splitting to
    a relative 1e-7 (guards near-parallel pairs of lines). Returns the (R, W) mask of the
    corners kept from the splitting (two lines that are one at tolerance there: their exact
    intersection can lie far away, in another region).
    """
    R, W, _ = V.shape
    idx = np.arange(W)[None, :]
    c_ = cnt[:, None]
    valid = idx < c_
    prv = np.where(idx == 0, c_ - 1, idx - 1)
    Lin = L[np.arange(R)[:, None], prv]
    Lout = L
    isfin = valid & (V[..., 2] > 0)
    isray = valid & (V[..., 2] == 0)
    # corners between two different labelled lines
    kept = np.zeros((R, W), dtype=bool)
    r, i = np.nonzero(isfin & (Lin >= 0) & (Lout >= 0) & (Lin != Lout))
    if len(r):
        l1, l2 = coef[Lin[r, i]], coef[Lout[r, i]]
        det = l1[:, 0] * l2[:, 1] - l1[:, 1] * l2[:, 0]
        n1 = np.hypot(l1[:, 0], l1[:, 1])
        n2 = np.hypot(l2[:, 0], l2[:, 1])
        good = np.abs(det) > 1e-8 * n1 * n2
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (-l1[:, 2] * l2[:, 1] + l2[:, 2] * l1[:, 1]) / det
            y = (-l1[:, 0] * l2[:, 2] + l2[:, 0] * l1[:, 2]) / det
        old = V[r, i, :2]
        dist = np.hypot(x - old[:, 0], y - old[:, 1])
        good &= dist <= 1e-7 * (1.0 + np.hypot(old[:, 0], old[:, 1]))
        V[r[good], i[good], 0] = x[good]
        V[r[good], i[good], 1] = y[good]
        kept[r[~good], i[~good]] = True
    # rays along a labelled edge (an edge point -> ray or ray -> point lies on its line)
    lab = np.where(Lin >= 0, Lin, Lout)
    r, i = np.nonzero(isray & (lab >= 0))
    if len(r):
        ln = coef[lab[r, i]]
        n = np.hypot(ln[:, 0], ln[:, 1])
        d = np.stack([-ln[:, 1], ln[:, 0]], axis=1) / n[:, None]
        old = V[r, i, :2]
        sgn = np.where(np.einsum("ij,ij->i", d, old) >= 0, 1.0, -1.0)
        d *= sgn[:, None]
        good = np.hypot(*(d - old).T) <= 1e-7
        V[r[good], i[good], :2] = d[good]
    return kept


def enumerate_2d(decoder: Decoder, check_budget=None, progress=None) -> RawPartition:
    """All linear regions of a decoder with a 2-D latent space, exactly (no bounding box).

    Start from the whole plane; for each hidden layer ``l`` split every current region by the
    lines ``{a_i(z) = 0}`` of the layer's kink units, which are affine on the region (computed
    from the previous layer's maps and pattern bits, as :meth:`Decoder.layer_maps` does). A
    unit's pattern bit is ``True`` on the piece where its pre-activation is positive; affine
    units are ``True`` and never cut.

    Parameters
    ----------
    decoder : Decoder
        A decoder with ``latent_dim == 2``.
    check_budget : callable, optional
        Called before each layer with an upper bound of the region count after the layer,
        ``sum_r 1 + k_r + k_r (k_r - 1) / 2`` (``k_r`` lines crossing region ``r``); it raises
        to refuse an oversized partition before anything is allocated.
    progress : callable, optional
        Called as ``progress(layer, lines_done, lines_total)`` after each unit's lines are cut
        (a long enumeration's progress bar).

    Returns
    -------
    RawPartition
        Facets are the non-redundant edges (one row per facet), with unit outward normals and
        offsets from the exact line coefficients; ``generators`` is each region's cyclic
        counter-clockwise V-representation ``(z, 1)`` / ``(r, 0)``; ``facet_points`` are
        relative-interior points of the facets.
    """
    if decoder.latent_dim != 2:
        raise ValueError(f"enumerate_2d needs latent_dim == 2, got {decoder.latent_dim}")
    kink = decoder.kink_mask
    V = _whole_plane()[None]
    cnt = np.array([4])
    L = np.full((1, 4), -1, dtype=np.int64)
    pats = np.zeros((1, 0), dtype=bool)
    coefs: list[np.ndarray] = []
    units: list[np.ndarray] = []
    n_lines = 0
    Mt = _first_maps(decoder)  # (R, 3, n): a_i(z) = Mt[r, :2, i] . z + Mt[r, 2, i]
    n_hidden = len(decoder.unit_slices)
    for layer, sl in enumerate(decoder.unit_slices):
        R = len(cnt)
        n = sl.stop - sl.start
        kl = kink[sl]
        cut, root_pos, vmax = _layer_signs(V, cnt, Mt, kl)
        k = cut.sum(axis=1)
        if check_budget is not None:
            check_budget(int(np.sum(1 + k + k * (k - 1) // 2)))
        pool = _Pool(V, cnt, L, n)
        ids_of_root = np.full(R, -1, dtype=np.int64)
        todo = np.nonzero(cut.any(axis=0))[0]
        for done, j in enumerate(todo, 1):
            roots_j = np.nonzero(cut[:, j])[0]
            ids_of_root[roots_j] = n_lines + np.arange(len(roots_j))
            n_lines += len(roots_j)
            coefs.append(Mt[roots_j, :, j])
            units.append(np.full(len(roots_j), sl.start + j, dtype=np.int64))
            _cut_layer(pool, Mt, vmax, cut, j, ids_of_root)
            if progress is not None:
                progress(layer, done, len(todo))
        P = pool.size
        root = pool.root[:P]
        bits = np.where(cut[root], pool.bits[:P], root_pos[root])
        bits[:, ~kl] = True
        pats = np.concatenate([pats[root], bits], axis=1)
        if layer + 1 < n_hidden:
            Mt = _next_maps(decoder, Mt[root], bits, layer)
        W = int(pool.cnt[:P].max())
        V, cnt, L = pool.V[:P, :W].copy(), pool.cnt[:P].copy(), pool.L[:P, :W].copy()
        logger.debug("enumerate_2d: layer %d (%d units): %d -> %d regions", layer, n, R, P)

    coef = np.concatenate(coefs) if coefs else np.zeros((0, 3))
    unit_of = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    return _assemble(V, cnt, L, pats, coef, unit_of)


def _assemble(V, cnt, L, pats, coef, unit_of) -> RawPartition:
    """Facets (one per run of equally labelled edges), interior points, generators."""
    R, W, _ = V.shape
    kept = _refine(V, cnt, L, coef)
    rows = np.arange(R)[:, None]
    idx = np.arange(W)[None, :]
    c_ = cnt[:, None]
    valid = idx < c_
    nxt = np.where(idx + 1 < c_, idx + 1, 0)
    prv = np.where(idx == 0, c_ - 1, idx - 1)
    Lprev = L[rows, prv]
    first = valid & (L >= 0) & (L != Lprev)
    r, i = np.nonzero(first)  # row-major: grouped by region, counter-clockwise
    lab = L[r, i]
    two = L[r, nxt[r, i]] == lab  # the facet spans two edges (split by a foot point)
    p = V[r, i]
    q = V[r, nxt[r, i]]
    both = (p[:, 2] > 0) & (q[:, 2] > 0)
    # a segment's midpoint; for a half-line from x along r, x + (1 + |x|) r (far enough from
    # x that the other facets' clearance is not small next to the point's magnitude)
    pf = (p[:, 2] > 0)[:, None]
    end = np.where(pf, p[:, :2], q[:, :2])
    ray = np.where(pf, q[:, :2], p[:, :2])
    t = 1.0 + np.hypot(end[:, 0], end[:, 1])
    fpt = np.where(both[:, None], 0.5 * (p[:, :2] + q[:, :2]), end + t[:, None] * ray)
    fpt[two] = q[two, :2]  # the foot point: inside the facet
    unit = unit_of[lab]
    ln = coef[lab]
    sigma = np.where(pats[r, unit], 1.0, -1.0)
    an = np.hypot(ln[:, 0], ln[:, 1])
    normals = -(sigma / an)[:, None] * ln[:, :2]
    offsets = sigma * ln[:, 2] / an
    # A facet ending at a corner kept from the splitting passes through that corner, as the
    # generators do: the exact lines (one at tolerance near the region) would meet elsewhere,
    # possibly past a line that did not cut the region, and the halfspaces would reach into
    # another pattern (the exact normal is kept; the offset moves by the tolerance at most).
    # A corner of two such facets then lies at the generator.
    j = nxt[r, i]
    j = np.where(two, nxt[r, j], j)  # the facet's far end (past the foot point)
    kp, kq = kept[r, i], kept[r, j]
    if kp.any() or kq.any():
        with np.errstate(invalid="ignore"):
            op = np.where(kp, np.einsum("fk,fk->f", normals, p[:, :2]), np.inf)
            oq = np.where(kq, np.einsum("fk,fk->f", normals, V[r, j, :2]), np.inf)
        offsets = np.where(kp | kq, np.minimum(op, oq), offsets)
    ptr = np.zeros(R + 1, dtype=np.int64)
    np.cumsum(first.sum(axis=1), out=ptr[1:])
    gen_ptr = np.zeros(R + 1, dtype=np.int64)
    np.cumsum(cnt, out=gen_ptr[1:])
    bounded = ~np.any(valid & (V[..., 2] == 0), axis=1)
    return RawPartition(
        patterns=pats,
        facet_ptr=ptr,
        facet_normals=normals,
        facet_offsets=offsets,
        facet_units=unit,
        interior_points=_interior_points(V, cnt),
        bounded=bounded,
        facet_points=fpt,
        facet_neighbors=None,
        gen_ptr=gen_ptr,
        generators=V[valid],
    )
