"""Independent test oracle: a slow, LP-based enumeration of the linear regions of a CPA decoder.

Shares no code with ``exactdgn.partition`` (nor with the decoder's pattern / affine-map code): it
reads only the decoder's raw parameters (``weights``, ``biases`` and each activation's ``kind`` /
``negative_slope``) and redoes everything from scratch.

Algorithm (breadth-first search over the region graph):

1. A region is a full-dimensional *pattern cell* ``{z : sign of every kink unit's pre-activation
   is fixed}``; with the pattern ``P`` fixed, every pre-activation is affine in ``z``
   (:func:`pattern_unit_maps`), so the cell is the polyhedron ``{z : G z <= h}`` with one row per
   kink unit (``-a_i(z) <= 0`` when the unit is on, ``a_i(z) <= 0`` when off), rows scaled to
   unit length, rows with a (numerically) zero gradient dropped, identical rows merged.
2. Full-dimensionality: Chebyshev LP ``max t : G z + t <= h, t <= 1`` (``t > 0``).
3. Redundancy: for every row ``j`` maximise ``G_j z`` over the other rows (capped at
   ``h_j + 1``); ``j`` is a facet iff the maximum exceeds ``h_j``. All rows are solved in ONE
   block-diagonal HiGHS LP (the blocks are independent, so the joint optimum is optimal per block).
4. A relative-interior point of each facet: ``max t : G_i z + t <= h_i (i != j), G_j z = h_j``
   (again one block LP); the facet is kept iff ``t > 0`` (this also rejects hyperplanes that only
   touch the region in a lower-dimensional face, e.g. several hyperplanes through one point).
5. Crossing: step from the facet point along the outward normal by a small ``eps`` (two step
   sizes), take the forward-pass pattern there, and queue its cell if it is full-dimensional.

Tolerances are relative (``TOL``); they are meant for decoders whose regions are not thinner
than ~1e-7, which random float64 decoders and the exactly-constructed degenerate decoders of the
tests satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

__all__ = [
    "Oracle",
    "OracleRegion",
    "cell_constraints",
    "enumerate_regions",
    "kink_units",
    "pattern_output_map",
    "pattern_unit_maps",
    "reference_forward",
    "unit_slopes",
]

TOL = 1e-9  # relative tolerance for "strictly positive" LP margins
_ZERO_ROW = 1e-11  # a gradient below this (relative to the unit's magnitude scale) is zero
_LP_OPTIONS = {
    "primal_feasibility_tolerance": 1e-10,
    "dual_feasibility_tolerance": 1e-10,
}


# ---------------------------------------------------------------------------- forward pass
def unit_slopes(decoder) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, ``(positive_slopes, negative_slopes)`` from the activation kinds.

    relu: (1, 0); leaky_relu: (1, alpha); prelu: (1, alpha_i); abs: (1, -1); identity: (1, 1).
    """
    out = []
    for W, act in zip(decoder.weights[:-1], decoder.activations, strict=True):
        n = W.shape[0]
        kind = act.kind
        if kind == "relu":
            neg = np.zeros(n)
        elif kind == "abs":
            neg = np.full(n, -1.0)
        elif kind == "identity":
            neg = np.ones(n)
        elif kind in ("leaky_relu", "prelu"):
            neg = np.array(np.broadcast_to(np.asarray(act.negative_slope, float), (n,)))
        else:  # pragma: no cover - the decoder validates kinds
            raise ValueError(kind)
        out.append((np.ones(n), neg))
    return out


def kink_units(decoder) -> np.ndarray:
    """(n_units,) bool: hidden units whose two slopes differ."""
    sl = unit_slopes(decoder)
    if not sl:
        return np.zeros(0, dtype=bool)
    return np.concatenate([p != q for p, q in sl])


def reference_forward(decoder, Z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain forward pass.

    Returns
    -------
    X : (N, D) outputs
    pre : (N, n_units) hidden pre-activations
    pattern : (N, n_units) bool, ``pre > 0`` for kink units and True for affine units
    """
    h = np.asarray(Z, dtype=np.float64)
    pres, pats = [], []
    slopes = unit_slopes(decoder)
    for k, (W, c) in enumerate(zip(decoder.weights, decoder.biases, strict=True)):
        a = h @ W.T + c
        if k == len(decoder.weights) - 1:
            h = a
            break
        p, q = slopes[k]
        pres.append(a)
        pats.append((a > 0) | (p == q))
        h = np.where(a > 0, p * a, q * a)
    N = h.shape[0]
    pre = np.concatenate(pres, axis=1) if pres else np.zeros((N, 0))
    pat = np.concatenate(pats, axis=1) if pats else np.zeros((N, 0), dtype=bool)
    return h, pre, pat


def pattern_unit_maps(decoder, pattern) -> tuple:
    """Affine maps of every hidden pre-activation and of the output, for one fixed pattern.

    Returns
    -------
    Wu : (n_units, d), cu : (n_units,)
        ``a_i(z) = Wu[i] @ z + cu[i]`` wherever the earlier layers have pattern ``pattern``.
    scale : (n_units,)
        Magnitude scale of each unit's map (same recursion on absolute values), for tolerances.
    (A, b) : (D, d), (D,)
        The output map ``g(z) = A z + b`` on the cell (also :func:`pattern_output_map`).
    """
    pattern = np.asarray(pattern, dtype=bool)
    d = decoder.weights[0].shape[1]
    slopes = unit_slopes(decoder)
    M = np.eye(d)  # current layer input = M z + m
    m = np.zeros(d)
    Mabs = np.eye(d)
    mabs = np.zeros(d)
    Wus, cus, scales = [], [], []
    start = 0
    for k in range(len(decoder.weights) - 1):
        W, c = decoder.weights[k], decoder.biases[k]
        Wz, cz = W @ M, W @ m + c
        Sa = np.abs(W) @ Mabs
        sa = np.abs(W) @ mabs + np.abs(c)
        n = W.shape[0]
        Wus.append(Wz)
        cus.append(cz)
        scales.append(Sa.sum(axis=1) + sa)
        p, q = slopes[k]
        s = np.where(pattern[start : start + n], p, q)
        M, m = s[:, None] * Wz, s * cz
        Mabs, mabs = np.abs(s)[:, None] * Sa, np.abs(s) * sa
        start += n
    Wout, cout = decoder.weights[-1], decoder.biases[-1]
    A, b = Wout @ M, Wout @ m + cout
    if Wus:
        return np.concatenate(Wus), np.concatenate(cus), np.concatenate(scales), (A, b)
    return np.zeros((0, d)), np.zeros(0), np.zeros(0), (A, b)


def pattern_output_map(decoder, pattern) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``g(z) = A z + b`` on the cell of ``pattern``."""
    return pattern_unit_maps(decoder, pattern)[3]


def cell_constraints(decoder, pattern, kink=None):
    """H-representation ``{z : G z <= h}`` (unit rows, merged duplicates) of a pattern's cell.

    Returns
    -------
    G : (m, d), h : (m,)
    groups : list of tuple of int
        The kink units carrying each row (several when hyperplanes coincide).
    consistent : bool
        False when a unit with a constant pre-activation contradicts the pattern (empty cell).
    """
    pattern = np.asarray(pattern, dtype=bool)
    if kink is None:
        kink = kink_units(decoder)
    Wu, cu, scale, _ = pattern_unit_maps(decoder, pattern)
    d = decoder.weights[0].shape[1]
    scale = np.maximum(scale, 1e-300)
    norms = np.linalg.norm(Wu, axis=1)
    const = norms <= _ZERO_ROW * scale
    on = pattern
    consistent = True
    for i in np.nonzero(kink & const)[0]:
        # a_i = cu[i] everywhere: on needs cu > 0, off needs cu <= 0 (a rounding-level cu is 0)
        ci = cu[i] if abs(cu[i]) > _ZERO_ROW * scale[i] else 0.0
        if (on[i] and not ci > 0) or (not on[i] and ci > 0):
            consistent = False
    rows = np.nonzero(kink & ~const)[0]
    sgn = np.where(on[rows], -1.0, 1.0)
    G = sgn[:, None] * Wu[rows] / norms[rows, None]
    h = -sgn * cu[rows] / norms[rows]
    # merge identical hyperplane constraints
    keep, groups = [], []
    for j in range(len(rows)):
        for gi, k in enumerate(keep):
            if np.abs(G[j] - G[k]).max() <= 1e-10 and abs(h[j] - h[k]) <= 1e-10 * (1 + abs(h[k])):
                groups[gi].append(int(rows[j]))
                break
        else:
            keep.append(j)
            groups.append([int(rows[j])])
    keep = np.array(keep, dtype=int)
    return (
        G[keep].reshape(-1, d),
        h[keep],
        [tuple(g) for g in groups],
        consistent,
    )


# ---------------------------------------------------------------------------- LPs
# Every LP of the oracle is a small "block"; all blocks of one BFS step are solved together as
# ONE block-diagonal HiGHS problem (the blocks share no variables and no constraints, so the
# joint optimum is optimal for every block). This keeps the per-call overhead of linprog out of
# the per-region cost.


@dataclass
class _Block:
    c: np.ndarray  # (nv,) objective (minimised)
    A_ub: np.ndarray  # (r, nv)
    b_ub: np.ndarray  # (r,)
    lo: np.ndarray  # (nv,) lower bounds (-inf allowed)
    hi: np.ndarray  # (nv,) upper bounds (+inf allowed)
    A_eq: np.ndarray | None = None  # (q, nv)
    b_eq: np.ndarray | None = None


def _solve_blocks(blocks: list[_Block]) -> list[np.ndarray]:
    """Solve independent LPs at once; return each block's solution."""
    if not blocks:
        return []
    ub_r, ub_c, ub_v, ub_b = [], [], [], []
    eq_r, eq_c, eq_v, eq_b = [], [], [], []
    col = r_ub = r_eq = 0
    sizes = []
    for blk in blocks:
        nv = len(blk.c)
        i, j = np.nonzero(blk.A_ub)
        ub_r.append(i + r_ub)
        ub_c.append(j + col)
        ub_v.append(blk.A_ub[i, j])
        ub_b.append(blk.b_ub)
        r_ub += blk.A_ub.shape[0]
        if blk.A_eq is not None:
            i, j = np.nonzero(blk.A_eq)
            eq_r.append(i + r_eq)
            eq_c.append(j + col)
            eq_v.append(blk.A_eq[i, j])
            eq_b.append(blk.b_eq)
            r_eq += blk.A_eq.shape[0]
        sizes.append(nv)
        col += nv
    c = np.concatenate([b.c for b in blocks])
    bounds = np.c_[np.concatenate([b.lo for b in blocks]), np.concatenate([b.hi for b in blocks])]
    A_ub = b_ub = A_eq = b_eq = None
    if r_ub:
        A_ub = sparse.csr_matrix(
            (np.concatenate(ub_v), (np.concatenate(ub_r), np.concatenate(ub_c))), shape=(r_ub, col)
        )
        b_ub = np.concatenate(ub_b)
    if r_eq:
        A_eq = sparse.csr_matrix(
            (np.concatenate(eq_v), (np.concatenate(eq_r), np.concatenate(eq_c))), shape=(r_eq, col)
        )
        b_eq = np.concatenate(eq_b)
    res = linprog(
        c,
        A_ub=A_ub,
        b_ub=b_ub,
        A_eq=A_eq,
        b_eq=b_eq,
        bounds=bounds,
        method="highs",
        options=_LP_OPTIONS,
    )
    if res.status != 0:
        raise RuntimeError(f"oracle LP failed: {res.message}")
    return np.split(res.x, np.cumsum(sizes)[:-1])


def _chebyshev_block(G, h) -> _Block:
    """max t : G z + t <= h, t <= 1 (unit rows: t is the inradius, capped at 1)."""
    m, d = G.shape
    return _Block(
        c=np.r_[np.zeros(d), -1.0],
        A_ub=np.c_[G, np.ones(m)],
        b_ub=h,
        lo=np.full(d + 1, -np.inf),
        hi=np.r_[np.full(d, np.inf), 1.0],
    )


def _redundancy_blocks(G, h) -> list[_Block]:
    """Block j: max G_j z s.t. G z <= h + e_j (row j relaxed by 1 so the maximum is finite)."""
    m, d = G.shape
    out = []
    for j in range(m):
        rhs = h.copy()
        rhs[j] += 1.0
        out.append(_Block(-G[j], G, rhs, np.full(d, -np.inf), np.full(d, np.inf)))
    return out


def _facet_blocks(G, h, J) -> list[_Block]:
    """Block j: max t s.t. G_i z + t <= h_i (i != j), G_j z = h_j, t <= 1."""
    m, d = G.shape
    out = []
    for j in J:
        others = np.arange(m) != j
        out.append(
            _Block(
                c=np.r_[np.zeros(d), -1.0],
                A_ub=np.c_[G[others], np.ones(m - 1)],
                b_ub=h[others],
                lo=np.full(d + 1, -np.inf),
                hi=np.r_[np.full(d, np.inf), 1.0],
                A_eq=np.r_[G[j], 0.0][None, :],
                b_eq=h[j : j + 1],
            )
        )
    return out


def _recession_blocks(G) -> list[_Block]:
    """Blocks (k, s): max s u_k s.t. G u <= 0, |u_k| <= 1: all zero iff the region is bounded."""
    m, d = G.shape
    out = []
    for k in range(d):
        for s in (1.0, -1.0):
            c = np.zeros(d)
            c[k] = -s
            out.append(_Block(c, G, np.zeros(m), -np.ones(d), np.ones(d)))
    return out


# ---------------------------------------------------------------------------- enumeration
@dataclass
class OracleRegion:
    """One region found by the oracle (facets are the non-redundant constraints)."""

    pattern: np.ndarray  # (n_units,) bool, affine units True
    interior_point: np.ndarray  # (d,) Chebyshev centre
    radius: float
    normals: np.ndarray  # (F, d) unit outward normals
    offsets: np.ndarray  # (F,)
    facet_points: np.ndarray  # (F, d) relative-interior points of the facets
    facet_units: list  # F tuples of kink units carrying each facet
    neighbors: np.ndarray  # (F,) oracle index across the facet (-2: ambiguous)
    bounded: bool


@dataclass
class Oracle:
    """Result of :func:`enumerate_regions`."""

    regions: list[OracleRegion]
    kink: np.ndarray
    index: dict = field(default_factory=dict)  # kink-pattern bytes -> region index
    n_lp_cells: int = 0

    def __len__(self) -> int:
        return len(self.regions)

    def key(self, pattern) -> bytes:
        return np.packbits(np.asarray(pattern, dtype=bool)[self.kink]).tobytes() + bytes(
            [int(self.kink.sum()) % 256]
        )

    def find(self, pattern) -> int:
        """Index of the region with this pattern (kink units compared), ``-1`` if none."""
        return self.index.get(self.key(pattern), -1)


def enumerate_regions(decoder, *, max_regions: int = 20_000, seed: int = 0) -> Oracle:
    """Enumerate every full-dimensional linear region of ``decoder`` over all of R^d.

    Breadth-first: each step processes the whole frontier (all its LPs in three block LPs).

    Parameters
    ----------
    decoder : exactdgn.Decoder (only its raw parameters are read)
    max_regions : int
        Safety cap; a RuntimeError is raised beyond it.
    seed : int
        Seed of the starting point.
    """
    kink = kink_units(decoder)
    d = decoder.weights[0].shape[1]
    out = Oracle(regions=[], kink=kink)
    rng = np.random.default_rng(seed)
    cells: dict[bytes, tuple | None] = {}  # key -> (P, G, h, groups, centre, radius) or None

    def probe(Z) -> list[bytes | None]:
        """Key of the full-dimensional cell of each point's pattern (None: lower-dimensional)."""
        _, _, Ps = reference_forward(decoder, Z)
        keys = [out.key(P) for P in Ps]
        new = {}
        for key, P in zip(keys, Ps, strict=True):
            if key not in cells and key not in new:
                new[key] = P
        todo = []
        for key, P in new.items():
            G, h, groups, ok = cell_constraints(decoder, P, kink)
            if ok:
                todo.append((key, P, G, h, groups))
            else:
                cells[key] = None
        sols = _solve_blocks([_chebyshev_block(G, h) for _, _, G, h, _ in todo])
        out.n_lp_cells += len(todo)
        for (key, P, G, h, groups), x in zip(todo, sols, strict=True):
            c, t = x[:d], float(x[d])
            full = t > TOL * (1 + np.abs(c).max(initial=0.0))
            cells[key] = (P, G, h, groups, c, t) if full else None
        return [k if cells[k] is not None else None for k in keys]

    start = None
    for _ in range(100):
        start = probe(rng.standard_normal((1, d)))[0]
        if start is not None:
            break
    if start is None:
        raise RuntimeError("oracle: no full-dimensional starting cell found")
    out.index[start] = 0
    frontier = [start]
    done: dict[int, tuple] = {}
    while frontier:
        data = [cells[k] for k in frontier]
        # 1. redundancy of every constraint of every frontier region
        blocks, spans = [], []
        for _P, G, h, *_ in data:
            b = _redundancy_blocks(G, h) if len(h) > 1 else []
            spans.append((len(blocks), len(blocks) + len(b)))
            blocks += b
        sols = _solve_blocks(blocks)
        Js = []
        for (_P, G, h, *_), (a, b) in zip(data, spans, strict=True):
            if b == a:
                Js.append(np.arange(len(h)))
                continue
            val = np.array([G[j] @ sols[a + j] for j in range(len(h))])
            Js.append(np.nonzero(val > h + TOL * (1 + np.abs(h)))[0])
        # 2. a relative-interior point of every facet, and boundedness
        blocks, spans = [], []
        for (_P, G, h, *_), J in zip(data, Js, strict=True):
            fb = _facet_blocks(G, h, J)
            rb = _recession_blocks(G[J]) if len(J) > d else []
            spans.append((len(blocks), len(fb), len(rb)))
            blocks += fb + rb
        sols = _solve_blocks(blocks)
        steps, owners = [], []
        for i, ((_P, G, h, *_), J, (a, nf, nr)) in enumerate(zip(data, Js, spans, strict=True)):
            X = np.array(sols[a : a + nf]).reshape(nf, d + 1)
            Z, T = X[:, :d], X[:, d]
            keep = T > TOL * (1 + np.abs(Z).max(axis=1, initial=0.0))
            J, Z, T = J[keep], Z[keep], T[keep]
            n = G[J]
            Z = Z - (np.einsum("jk,jk->j", n, Z) - h[J])[:, None] * n  # exactly on the plane
            rec = [-(blocks[a + nf + q].c @ sols[a + nf + q]) for q in range(nr)]
            bounded = bool(nr > 0 and max(rec) <= 1e-9)
            zs = 1.0 + np.abs(Z).max(axis=1, initial=0.0)
            eps1 = np.maximum(1e-3 * T, 1e-10 * zs)
            eps2 = np.maximum(1e-6 * T, 1e-12 * zs)
            steps += [Z + eps1[:, None] * n, Z + eps2[:, None] * n]
            owners.append((frontier[i], J, Z, bounded, len(J)))
        # 3. step across every facet, classify the cells reached
        allZ = np.concatenate(steps) if steps else np.zeros((0, d))
        keys = probe(allZ)
        pos = 0
        nxt = []
        for key, J, Z, bounded, nf in owners:
            k1, k2 = keys[pos : pos + nf], keys[pos + nf : pos + 2 * nf]
            pos += 2 * nf
            for kk in k1 + k2:
                if kk is not None and kk not in out.index:
                    if len(out.index) >= max_regions:
                        raise RuntimeError(f"oracle: more than {max_regions} regions")
                    out.index[kk] = len(out.index)
                    nxt.append(kk)
            nb = [a if a == b else None for a, b in zip(k1, k2, strict=True)]
            done[out.index[key]] = (key, J, Z, bounded, nb)
        frontier = nxt
    regions: list = [None] * len(out.index)
    for idx, (key, J, Z, bounded, nb) in done.items():
        P, G, h, groups, c, t = cells[key]
        regions[idx] = OracleRegion(
            pattern=P,
            interior_point=c,
            radius=float(t),
            normals=G[J],
            offsets=h[J],
            facet_points=Z,
            facet_units=[groups[j] for j in J],
            neighbors=np.array([out.index[k] if k is not None else -2 for k in nb], dtype=int),
            bounded=bounded,
        )
    out.regions = regions
    return out
