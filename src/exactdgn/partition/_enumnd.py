"""Exact enumeration for any latent dimension: adjacency search over the region graph.

No bounding box is used. Starting from the region of a generic point, every region is visited
once (patterns are hashed). For a batch of frontier regions:

1. **Constraints.** Given the pattern ``p``, each kink unit's pre-activation is affine in ``z``,
   ``a_i(z) = w_i . z + c_i`` (computed layer by layer for the whole batch), and the region is
   ``{z : s_i (w_i . z + c_i) >= 0}`` with ``s_i = +1`` where the unit is on and ``-1`` where it is
   off, i.e. ``{z : g_i . z <= h_i}`` with unit rows ``g_i = -s_i w_i / |w_i|``.
2. **Interior point.** The Chebyshev centre, ``max r`` s.t. ``g_i . z + r <= h_i`` and ``r <= 1``
   (the cap keeps unbounded regions bounded), solved for the whole batch as one block-diagonal
   HiGHS LP. Candidates whose radius is ~0 have zero volume: they are not regions.
3. **Facets.** With the centre ``x0`` as origin the region is ``{y : g_i . y <= e_i}``,
   ``e_i = h_i - g_i . x0 > 0``; constraint ``i`` is a facet iff ``g_i / e_i`` is a vertex of the
   polar ``conv({0} U {g_j / e_j})`` (also for unbounded regions). Qhull finds the vertices;
   each one is certified by a separating functional, and points Qhull calls coplanar (or fails
   on) are decided by an LP. The region is bounded iff 0 is interior to that polar.
4. **Neighbours.** Across a facet carried by one unit the neighbour's pattern is the pattern with
   that unit flipped. Where several units vanish on the facet (coincident hyperplanes, units that
   are identically zero in the region), their bits are recomputed layer by layer: on the far side
   such a unit's pre-activation is ``k (n . z - e)`` with ``k = grad . n``, so it is on iff
   ``k > 0``. If a candidate still turns out empty, a relative-interior point of the facet is
   found by LP and the pattern just across it is taken from a forward pass.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, QhullError

from ..decoder import Decoder
from ._partition import RawPartition

__all__ = ["enumerate_adjacency"]

logger = logging.getLogger(__name__)

_BATCH = 128  # regions per block-diagonal LP
_ZERO_ROW = 1e-13  # |w_i| below this (relative to its terms' size) means the unit is constant
_RADIUS_RTOL = 1e-9  # Chebyshev radius below this (times 1 + |x0|) means zero volume
_SAME_TOL = 1e-9  # two constraints closer than this are the same hyperplane
_CERT_TOL = 1e-9  # relative margin a Qhull vertex certificate must have
_LP_TOL = 1e-9  # relative improvement that makes a constraint non-redundant in the LP test
_HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


# ---------------------------------------------------------------------------- constraints
def _unit_maps(decoder: Decoder, P: np.ndarray) -> np.ndarray:
    """Affine maps of all hidden pre-activations given full patterns.

    Parameters
    ----------
    decoder : Decoder
    P : ndarray of shape (B, n_units), bool

    Returns
    -------
    M : ndarray of shape (B, n_units, d + 1)
        ``a_i(z) = M[b, i, :d] @ z + M[b, i, d]`` on the region of pattern ``P[b]``.
    """
    d = decoder.latent_dim
    B = P.shape[0]
    slices = decoder.unit_slices
    pos, neg = decoder.positive_slopes, decoder.negative_slopes
    out = np.empty((B, decoder.n_units, d + 1))
    M = np.broadcast_to(
        np.concatenate([decoder.weights[0], decoder.biases[0][:, None]], axis=1),
        (B, slices[0].stop, d + 1),
    )
    out[:, slices[0]] = M
    for k in range(1, len(slices)):
        sl = slices[k - 1]
        s = np.where(P[:, sl], pos[sl], neg[sl])
        M = np.matmul(decoder.weights[k], s[:, :, None] * M)
        M[:, :, d] += decoder.biases[k]
        out[:, slices[k]] = M
    return out


def _unit_scales(decoder: Decoder, P: np.ndarray) -> np.ndarray:
    """(B, n_units) the size of the terms that make up each unit's gradient on the region of
    pattern ``P[b]``: ``|| |W_k| (|s| * |G_{k-1}|) ||`` (the :func:`_unit_maps` recursion on
    absolute values). A gradient below ``_ZERO_ROW`` of it is rounding: the unit is constant
    there. (A global bound, the product of the layers' norms, made a 1e6 weight declare
    gradients below 0.1 constant: a d = 3 partition lost 6 of 14 regions.)"""
    d = decoder.latent_dim
    B = P.shape[0]
    slices = decoder.unit_slices
    pos, neg = decoder.positive_slopes, decoder.negative_slopes
    out = np.empty((B, decoder.n_units))
    G = np.broadcast_to(np.abs(decoder.weights[0]), (B, slices[0].stop, d))
    out[:, slices[0]] = np.linalg.norm(G, axis=2)
    for k in range(1, len(slices)):
        sl = slices[k - 1]
        s = np.abs(np.where(P[:, sl], pos[sl], neg[sl]))
        G = np.matmul(np.abs(decoder.weights[k]), s[:, :, None] * G)
        out[:, slices[k]] = np.linalg.norm(G, axis=2)
    return out


class _Constraints:
    """Oriented, normalized kink constraints ``g . z <= h`` of a batch of patterns."""

    def __init__(self, decoder: Decoder, P: np.ndarray, kink_idx: np.ndarray):
        d = decoder.latent_dim
        M = _unit_maps(decoder, P)[:, kink_idx]  # (B, m, d+1)
        w, c = M[..., :d], M[..., d]
        norm = np.linalg.norm(w, axis=2)
        zero = norm <= _ZERO_ROW * _unit_scales(decoder, P)[:, kink_idx]
        on = P[:, kink_idx]
        s = np.where(on, 1.0, -1.0)
        safe = np.where(zero, 1.0, norm)
        self.g = -(s / safe)[..., None] * w  # (B, m, d)
        self.h = s * c / safe  # (B, m)
        self.active = ~zero
        # a constant unit must have the sign its bit says; identically zero units must be off
        cscale = 1.0 + np.abs(np.where(zero, 0.0, c)).max(axis=1, initial=0.0)
        czero = zero & (np.abs(c) <= _ZERO_ROW * cscale[:, None])
        bad = zero & ~czero & ((c > 0) != on)
        bad |= czero & on
        self.feasible = ~bad.any(axis=1)
        self.null = czero  # units identically zero on the region (B, m)


# ---------------------------------------------------------------------------- LPs
def _chebyshev(G: np.ndarray, h: np.ndarray, active: np.ndarray):
    """Chebyshev centres (radius capped at 1) of a batch of polyhedra in one HiGHS LP.

    Parameters
    ----------
    G : ndarray (B, m, d)
        Unit rows (rows with ``active`` False are ignored).
    h : ndarray (B, m)
    active : ndarray (B, m) bool

    Returns
    -------
    x : ndarray (B, d)
        Centres.
    r : ndarray (B,)
        ``min_i (h_i - g_i . x)`` recomputed at the returned centre (``1`` with no constraint).
    """
    B, _, d = G.shape
    nv = d + 1
    b_idx, i_idx = np.nonzero(active)
    x = np.zeros((B, d))
    if len(b_idx):
        nrow = len(b_idx)
        rows = np.repeat(np.arange(nrow), nv)
        cols = (b_idx[:, None] * nv + np.arange(nv)).ravel()
        vals = np.concatenate([G[b_idx, i_idx], np.ones((nrow, 1))], axis=1).ravel()
        A = sparse.csr_array((vals, (rows, cols)), shape=(nrow, B * nv))
        cost = np.tile(np.r_[np.zeros(d), -1.0], B)
        bounds = np.column_stack([np.full(B * nv, -np.inf), np.full(B * nv, np.inf)])
        bounds[d::nv, 1] = 1.0
        res = linprog(
            cost, A_ub=A, b_ub=h[b_idx, i_idx], bounds=bounds, method="highs", options=_HIGHS
        )
        if res.status == 0:
            x = res.x.reshape(B, nv)[:, :d].copy()
        else:  # pragma: no cover - HiGHS failure on the block LP: solve one by one
            logger.debug("block Chebyshev LP failed (%s); solving per region", res.message)
            for b in range(B):
                sel = active[b]
                if sel.any():
                    x[b] = _chebyshev_one(G[b, sel], h[b, sel])
    slack = np.where(active, h - np.einsum("bmd,bd->bm", G, x), np.inf)
    r = np.minimum(slack.min(axis=1, initial=np.inf), 1.0)
    return x, r


def _chebyshev_one(G: np.ndarray, h: np.ndarray) -> np.ndarray:
    d = G.shape[1]
    A = np.concatenate([G, np.ones((len(G), 1))], axis=1)
    cost = np.r_[np.zeros(d), -1.0]
    bounds = [(None, None)] * d + [(None, 1.0)]
    res = linprog(cost, A_ub=A, b_ub=h, bounds=bounds, method="highs", options=_HIGHS)
    if res.status != 0:
        # with the tight tolerances HiGHS can call this bounded LP "unbounded" (nearly
        # parallel rows); its default tolerances then solve it
        res = linprog(cost, A_ub=A, b_ub=h, bounds=bounds, method="highs")
    return res.x[:d] if res.status == 0 else np.zeros(d)


def _recentre(G: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, float]:
    """A centre that passes the relative zero-volume test if any point does, and its radius.

    The Chebyshev LP's optimum is a face when the radius is capped at 1, and HiGHS may return
    a vertex of it far out (``|x0| ~ 1e10``), where ``r > _RADIUS_RTOL (1 + |x0|)`` fails
    although the region is wide near the origin. Here ``max r - _RADIUS_RTOL t`` with
    ``|x|_inf <= t``: any point with ``r > _RADIUS_RTOL (1 + |x|_inf)`` makes the optimum pass.
    """
    m, d = G.shape
    z, one, eye = np.zeros((m, 1)), np.ones((m, 1)), np.eye(d)
    A = np.block(
        [
            [G, one, z],
            [eye, np.zeros((d, 1)), -np.ones((d, 1))],
            [-eye, np.zeros((d, 1)), -np.ones((d, 1))],
        ]
    )
    cost = np.r_[np.zeros(d), -1.0, _RADIUS_RTOL]
    bounds = [(None, None)] * d + [(None, 1.0), (0.0, None)]
    res = linprog(
        cost, A_ub=A, b_ub=np.r_[h, np.zeros(2 * d)], bounds=bounds, method="highs", options=_HIGHS
    )
    if res.status != 0:  # pragma: no cover - a bounded, feasible LP
        return np.zeros(d), -np.inf
    x = res.x[:d]
    return x, float(min((h - G @ x).min(initial=np.inf), 1.0))


def _lp_nonredundant(g: np.ndarray, e: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Which of ``cand`` are non-redundant in ``{y : g y <= e}`` (``e > 0``): LP test.

    Constraint ``i`` is a facet iff ``max g_i . y`` over the other constraints (and
    ``g_i . y <= e_i + 1``) exceeds ``e_i``. All candidates are solved as one block-diagonal
    HiGHS LP (the blocks are independent, so the joint optimum is optimal in every block).
    """
    m, d = g.shape
    c = len(cand)
    if c == 0:
        return np.zeros(0, dtype=bool)
    bi = np.repeat(np.arange(c), m)
    ri = np.tile(np.arange(m), c)
    rows = np.repeat(np.arange(c * m), d)
    cols = (bi[:, None] * d + np.arange(d)).ravel()
    A = sparse.csr_array((g[ri].ravel(), (rows, cols)), shape=(c * m, c * d))
    ub = e[ri] + (ri == np.asarray(cand)[bi])
    res = linprog(
        -g[cand].ravel(), A_ub=A, b_ub=ub, bounds=(None, None), method="highs", options=_HIGHS
    )
    if res.status != 0:  # pragma: no cover - HiGHS failure: keep the candidates (conservative)
        logger.debug("redundancy LP failed (%s)", res.message)
        return np.ones(c, dtype=bool)
    val = np.einsum("cd,cd->c", g[cand], res.x.reshape(c, d))
    keep = val > e[cand] + _LP_TOL * (1.0 + e[cand])
    # Two nearly identical rows (not merged as the same hyperplane) are each redundant *given
    # the other* within the tolerance; dropping both loses the facet. Re-test the rejected
    # ones one at a time without the rows already dropped, so that one of them survives.
    alive = np.ones(m, dtype=bool)
    for k in np.flatnonzero(~keep):
        i = int(cand[k])
        alive[i] = False
        rows = np.flatnonzero(alive)
        res = linprog(
            -g[i],
            A_ub=np.concatenate([g[rows], g[i][None]]),
            b_ub=np.r_[e[rows], e[i] + 1.0],
            bounds=(None, None),
            method="highs",
            options=_HIGHS,
        )
        if res.status == 0 and g[i] @ res.x > e[i] + _LP_TOL * (1.0 + e[i]):
            keep[k] = alive[i] = True
    return keep


def _facet_point(g: np.ndarray, h: np.ndarray, f: int, others: np.ndarray):
    """A relative-interior point of facet ``f`` of ``{g z <= h}`` and its distance to the rest."""
    d = g.shape[1]
    A = np.concatenate([g[others], np.ones((len(others), 1))], axis=1)
    cost = np.r_[np.zeros(d), -1.0]
    Aeq = np.r_[g[f], 0.0][None]
    bounds = [(None, None)] * d + [(None, 1.0)]
    res = linprog(
        cost,
        A_ub=A if len(others) else None,
        b_ub=h[others] if len(others) else None,
        A_eq=Aeq,
        b_eq=[h[f]],
        bounds=bounds,
        method="highs",
        options=_HIGHS,
    )
    if res.status != 0:
        return None, 0.0
    return res.x[:d], float(res.x[d])


# ---------------------------------------------------------------------------- facets
def _hull(Q: np.ndarray) -> ConvexHull:
    """Qhull of ``{0} U Q`` (coplanar points kept, so that they can be checked)."""
    k = Q.shape[1]
    pts = np.concatenate([np.zeros((1, k)), Q], axis=0)
    return ConvexHull(pts, qhull_options="Qc" + (" Qx" if k > 4 else ""))


def _facets(g: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, bool]:
    """Non-redundant constraints of ``{y : g y <= e}`` (``e > 0``, distinct rows) and boundedness.

    Returns
    -------
    idx : ndarray of int
        Indices of the facet-defining constraints.
    bounded : bool
    """
    m, d = g.shape
    if m == 0:
        return np.zeros(0, dtype=np.int64), False
    hull = None
    k, Q = d, g / e[:, None]  # polar points
    if d >= 2 and m >= d:
        try:
            hull = _hull(Q)
        except QhullError:
            hull = None
    if hull is None:  # flat polar (normals span k < d dimensions) or too few points
        _, sv, Vt = np.linalg.svd(g, full_matrices=False)
        k = int(np.sum(sv > 1e-9 * sv[0]))
        Q = (g @ Vt[:k].T) / e[:, None]  # polar points in the span of the normals (m, k)
        if k == 1:
            t = Q[:, 0]
            idx = []
            if (t > 0).any():
                idx.append(int(np.argmax(t)))
            if (t < 0).any():
                idx.append(int(np.argmin(t)))
            return np.array(idx, dtype=np.int64), bool(d == 1 and len(idx) == 2)
        try:
            hull = _hull(Q)
        except QhullError:
            logger.debug("Qhull failed on a %d-D polar with %d points; using LPs", k, m)
            idx = np.nonzero(_lp_nonredundant(g, e, np.arange(m)))[0]
            return idx, _bounded_lp(g) if k == d else False
    pts = hull.points
    verts = hull.vertices[hull.vertices > 0]
    normals = hull.equations[:, :k]
    # certificate: the sum of the incident facet normals separates a vertex from all other points
    W = np.zeros((len(pts), k))
    np.add.at(W, hull.simplices.ravel(), np.repeat(normals, k, axis=0))
    Wv = W[verts]
    S = Wv @ pts.T  # (nv, m+1)
    own = S[np.arange(len(verts)), verts].copy()
    S[np.arange(len(verts)), verts] = -np.inf
    margin = own - S.max(axis=1)
    scale = np.linalg.norm(Wv, axis=1) * np.linalg.norm(pts[verts], axis=1)
    sure = margin > _CERT_TOL * scale
    unsure = verts[~sure]
    if len(hull.coplanar):
        unsure = np.union1d(unsure, hull.coplanar[:, 0][hull.coplanar[:, 0] > 0])
    idx = verts[sure] - 1
    if len(unsure):
        # a near-duplicate of an unsure vertex can be a point Qhull calls interior, and the LP
        # finds the vertex redundant given it: test every row that is not a certified vertex
        # (else both rows of the pair are lost)
        unsure = np.setdiff1d(np.arange(1, len(pts)), verts[sure])
        extra = unsure[_lp_nonredundant(g, e, unsure - 1)] - 1
        idx = np.union1d(idx, extra)
    bounded = False
    if k == d:
        bounded = bool(np.all(hull.equations[:, -1] < -1e-12 * np.abs(Q).max()))
    return np.sort(idx).astype(np.int64), bounded


def _bounded_lp(g: np.ndarray) -> bool:
    """Whether the recession cone ``{y : g y <= 0}`` is {0}: ``max +-y_j`` over it, capped."""
    d = g.shape[1]
    for j in range(d):
        for sgn in (1.0, -1.0):
            c = np.zeros(d)
            c[j] = -sgn
            res = linprog(
                c,
                A_ub=g,
                b_ub=np.zeros(len(g)),
                bounds=[(-1.0, 1.0)] * d,
                method="highs",
                options=_HIGHS,
            )
            if res.status != 0 or -res.fun > 1e-9:
                return False
    return True


# ---------------------------------------------------------------------------- enumeration
def _key(pattern_kink: np.ndarray) -> bytes:
    return np.packbits(pattern_kink).tobytes()


def _cross_pattern(
    decoder: Decoder, pattern: np.ndarray, units: np.ndarray, null_units: np.ndarray, n
) -> np.ndarray:
    """Pattern of the region across a facet.

    Parameters
    ----------
    pattern : ndarray (n_units,) bool
        The region's pattern.
    units : ndarray of int
        Kink units whose hyperplane carries the facet.
    null_units : ndarray of int
        Kink units identically zero on the region.
    n : ndarray (d,)
        The facet's outward unit normal.
    """
    if len(units) == 1 and not len(null_units):  # only this unit changes sign
        new = pattern.copy()
        new[units[0]] ^= True
        return new
    return _cross(decoder, pattern, np.union1d(units, null_units), n)


def _cross(decoder: Decoder, pattern: np.ndarray, units: np.ndarray, n: np.ndarray):
    """Pattern across a facet with outward unit normal ``n`` on which ``units`` vanish.

    Each such unit's pre-activation beyond the facet is ``k (n . z - e)``, ``k = grad . n``
    (its gradient there is parallel to ``n``), so its bit is ``k > 0``; earlier layers first.
    """
    new = pattern.copy()
    d = decoder.latent_dim
    slices = decoder.unit_slices
    for layer, sl in enumerate(slices):
        mine = units[(units >= sl.start) & (units < sl.stop)]
        if not len(mine):
            continue
        grad = decoder.layer_maps(new[None], layer)[0, mine - sl.start, :d]
        k = grad @ n
        new[mine] = k > 0.5 * np.linalg.norm(grad, axis=1)
    return new


def _process(decoder: Decoder, batch: list[np.ndarray], kink_idx: np.ndarray):
    """Interior point, facets and boundedness of a batch of candidate patterns.

    Returns a list with, per candidate, ``None`` (empty or zero-volume) or a dict with the
    Chebyshev centre ``x0``, the constraints ``g, h, active, null`` (kink units), the facet rows
    ``facets`` (indices into the kink units), their ``groups`` (all kink units on each facet's
    hyperplane) and ``bounded``.
    """
    P = np.array(batch, dtype=bool)
    C = _Constraints(decoder, P, kink_idx)
    x0, r = _chebyshev(C.g, C.h, C.active & C.feasible[:, None])
    out = []
    for b in range(len(batch)):
        scale = 1.0 + np.abs(x0[b]).max(initial=0.0)
        if C.feasible[b] and _RADIUS_RTOL < r[b] <= _RADIUS_RTOL * scale:  # far-out centre
            act = C.active[b]
            x0[b], r[b] = _recentre(C.g[b, act], C.h[b, act])
            scale = 1.0 + np.abs(x0[b]).max(initial=0.0)
        if not C.feasible[b] or not r[b] > _RADIUS_RTOL * scale:
            out.append(None)
            continue
        act = np.nonzero(C.active[b])[0]
        g, h = C.g[b], C.h[b]
        ga = g[act]
        ea = h[act] - ga @ x0[b]
        # coincident hyperplanes (same oriented unit normal and offset) -> one representative
        same = np.abs(ga[:, None, :] - ga[None, :, :]).max(axis=2) <= _SAME_TOL
        same &= np.abs(ea[:, None] - ea[None, :]) <= _SAME_TOL * scale
        rep = np.argmax(same, axis=1) if len(act) else np.zeros(0, dtype=np.int64)
        reps = np.unique(rep)
        fl, bnd = _facets(ga[reps], ea[reps])
        fr = reps[fl]
        out.append(
            {
                "x0": x0[b],
                "g": g,
                "h": h,
                "active": C.active[b],
                "null": C.null[b],
                "facets": act[fr],
                "groups": [act[rep == q] for q in fr],
                "bounded": bnd,
            }
        )
    return out


def _single_region(decoder: Decoder) -> RawPartition:
    d, nu = decoder.latent_dim, decoder.n_units
    return RawPartition(
        patterns=np.ones((1, nu), dtype=bool),
        facet_ptr=np.zeros(2, dtype=np.int64),
        facet_normals=np.zeros((0, d)),
        facet_offsets=np.zeros(0),
        facet_units=np.zeros(0, dtype=np.int64),
        interior_points=np.zeros((1, d)),
        bounded=np.zeros(1, dtype=bool),
        facet_neighbors=np.zeros(0, dtype=np.int64),
    )


def enumerate_adjacency(decoder: Decoder, check_budget=None) -> RawPartition:
    """All full-dimensional linear regions of ``decoder`` by search over the region graph.

    Parameters
    ----------
    decoder : Decoder
        Any latent dimension ``d >= 1``.
    check_budget : callable, optional
        Called with the number of regions found plus those queued after each batch; it raises
        (``PartitionTooLargeError``) to stop an oversized enumeration.

    Returns
    -------
    RawPartition
        Patterns ``(R, n_units)``; facets ``{z : n_f . z <= e_f}`` with unit outward normals
        (non-redundant, one row per distinct hyperplane; ``facet_units`` is the lowest unit on
        it); Chebyshev centres (radius capped at 1) as interior points; boundedness; the region
        across each facet (``-1`` only if none could be found numerically). No generators.
    """
    d = decoder.latent_dim
    nu = decoder.n_units
    kink_idx = np.nonzero(decoder.kink_mask)[0]
    if len(kink_idx) == 0:
        return _single_region(decoder)

    region_of: dict[bytes, int] = {}  # pattern key -> region index, or -1 (empty / queued)
    patterns: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    bounded: list[bool] = []
    f_count: list[int] = []
    f_normals: list[np.ndarray] = []  # one (F_r, d) array per region
    f_offsets: list[np.ndarray] = []
    f_units: list[np.ndarray] = []
    f_keys: list[bytes] = []  # pattern key of the region across each facet
    f_src: list[tuple] = []  # (region, facet row, group) for the point-based fallback

    # start from the region of a generic point (a point on a hyperplane may give an empty one)
    rng = np.random.default_rng(20240531)
    pending: list[np.ndarray] = []
    for _ in range(100):
        p = decoder.activation_pattern(0.5 * rng.standard_normal((1, d)))[0]
        if _process(decoder, [p], kink_idx)[0] is not None:
            pending = [p]
            region_of[_key(p[kink_idx])] = -1
            break
    if not pending:  # pragma: no cover - 100 random points all on hyperplanes
        raise RuntimeError("could not find a full-dimensional region to start from")

    def push(new: np.ndarray) -> bytes:
        nk = _key(new[kink_idx])
        if nk not in region_of:
            region_of[nk] = -1
            pending.append(new)
        return nk

    tried: set[int] = set()
    while pending:
        while pending:
            batch, pending[:] = pending[:_BATCH], pending[_BATCH:]
            infos = _process(decoder, batch, kink_idx)
            for pat, info in zip(batch, infos, strict=True):
                if info is None:
                    continue
                region_of[_key(pat[kink_idx])] = len(patterns)
                patterns.append(pat)
                centres.append(info["x0"])
                bounded.append(info["bounded"])
                f_count.append(len(info["facets"]))
                null_units = kink_idx[info["null"]]
                g, fac = info["g"], info["facets"]
                f_normals.append(g[fac])
                f_offsets.append(info["h"][fac])
                f_units.append(np.array([kink_idx[grp].min() for grp in info["groups"]]))
                for f, grp in zip(fac, info["groups"], strict=True):
                    new = _cross_pattern(decoder, pat, kink_idx[grp], null_units, g[f])
                    f_keys.append(push(new))
                    f_src.append((len(patterns) - 1, f, grp))
            if check_budget is not None:
                check_budget(len(patterns) + len(pending))
        # fallback for facets whose crossing pattern was empty: step across a facet point
        for j, nk in enumerate(f_keys):
            if region_of[nk] >= 0 or j in tried:
                continue
            tried.add(j)
            r, f, grp = f_src[j]
            C = _Constraints(decoder, patterns[r][None], kink_idx)
            g, h = C.g[0], C.h[0]
            others = np.setdiff1d(np.nonzero(C.active[0])[0], grp)
            pt, t = _facet_point(g, h, f, others)
            if pt is None or not t > 0:
                continue
            z = pt + 1e-6 * min(t, 1.0) * g[f]
            f_keys[j] = push(decoder.activation_pattern(z[None])[0])

    R, F = len(patterns), len(f_keys)
    neighbors = np.array([region_of[k] for k in f_keys], dtype=np.int64)
    miss = int(np.sum(neighbors < 0))
    if miss:
        logger.warning("adjacency search: %d of %d facets have no neighbour", miss, F)
    ptr = np.zeros(R + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(f_count)
    return RawPartition(
        patterns=np.array(patterns, dtype=bool).reshape(R, nu),
        facet_ptr=ptr,
        facet_normals=np.concatenate([np.zeros((0, d)), *f_normals]).reshape(F, d),
        facet_offsets=np.concatenate([np.zeros(0), *f_offsets]),
        facet_units=np.concatenate([np.zeros(0, dtype=np.int64), *f_units]).astype(np.int64),
        interior_points=np.array(centres, dtype=np.float64).reshape(R, d),
        bounded=np.array(bounded, dtype=bool),
        facet_neighbors=neighbors,
    )
