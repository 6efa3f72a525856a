"""The exact partition of the latent space, checked against independent references.

For random decoders (d = 1..4, several depths / widths / activations) and degenerate ones:

(a) every region's interior point has the stored pattern; ``g(z) = A_r z + b_r`` (to 1e-10) at
    random points inside each region; A_r, b_r equal the oracle's own pattern -> map recursion;
(b) coverage: 10^5 random latent points (|z| up to 1e4) each lie in exactly one region by the
    stored halfspaces (points within 1e-9 of a boundary excluded), ``locate`` agrees, and the
    pattern of the forward pass is the region's;
(c) the region count equals that of the independent LP oracle (``tests/oracles/enumerate.py``);
(d) each region's facets are exactly the oracle's non-redundant constraints (matched by
    pattern), with the same neighbours and boundedness;
(e) d = 2: V - E + F = 2 on the subdivision compactified with one vertex at infinity, each edge
    bounding exactly two regions; vertices / rays agree with the halfspaces; neighbours symmetric.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

import exactdgn
from exactdgn import Activation, Decoder
from tests.oracles.enumerate import (
    enumerate_regions,
    kink_units,
    pattern_output_map,
    reference_forward,
)

METHODS = {1: ("sweep", "adjacency"), 2: ("polygon", "adjacency"), 3: ("adjacency",)}
METHODS[4] = ("adjacency",)


# ============================================================================ decoders
def _act(kind, n, rng):
    if kind == "leaky_relu":
        return ("leaky_relu", float(rng.choice([0.1, 0.3, -0.2])))
    if kind == "prelu":
        return Activation("prelu", rng.uniform(-0.7, 0.7, n))
    return kind


def random_decoder(sizes, kind, seed, bias_std=0.5) -> Decoder:
    """Random decoder; ``kind`` is one activation name or a list (one per hidden layer)."""
    rng = np.random.default_rng(seed)
    kinds = kind if isinstance(kind, list) else [kind] * (len(sizes) - 2)
    Ws = [rng.standard_normal((n, m)) / np.sqrt(m) for m, n in itertools.pairwise(sizes)]
    cs = [bias_std * rng.standard_normal(n) for n in sizes[1:]]
    acts = [_act(k, n, rng) for k, n in zip(kinds, sizes[1:-1], strict=True)]
    return Decoder(Ws, cs, acts)


def degenerate_decoder(name: str, d: int) -> Decoder:
    """Exactly constructed degenerate decoders (latent dim ``d``)."""
    rng = np.random.default_rng(7 + d)
    D = 2
    if name == "no_hidden":
        return Decoder([rng.standard_normal((D, d))], [rng.standard_normal(D)], [])
    if name == "dead_units":
        # zero rows with negative / positive / zero bias; a unit dead far out (kink at |z| ~ 3e3,
        # which only the |z| <= 1e4 coverage points see); a second layer with a zero row
        W1 = rng.standard_normal((7, d))
        c1 = 0.3 * rng.standard_normal(7)
        W1[0], c1[0] = 0.0, -1.0
        W1[1], c1[1] = 0.0, 1.0
        W1[2], c1[2] = 0.0, 0.0
        W1[3] = W1[3] / np.linalg.norm(W1[3])
        c1[3] = -3000.0
        W2 = rng.standard_normal((4, 7))
        c2 = 0.3 * rng.standard_normal(4)
        W2[0], c2[0] = 0.0, 0.0
        W3 = rng.standard_normal((D, 4))
        return Decoder([W1, W2, W3], [c1, c2, np.zeros(D)], ["relu", ("leaky_relu", 0.2)])
    if name == "parallel":
        w = rng.standard_normal(d)
        W1 = np.array([w, 2 * w, -w, 0.5 * w, *rng.standard_normal((2, d))])
        c1 = np.array([0.0, 1.0, 0.7, -0.9, 0.2, -0.4])
        W2 = rng.standard_normal((4, 6))
        W3 = rng.standard_normal((D, 4))
        return Decoder([W1, W2, W3], [c1, 0.3 * rng.standard_normal(4), np.zeros(D)], ["relu"] * 2)
    if name == "identical":
        # identical hyperplanes within a layer (same and opposite orientation) and across
        # layers (a layer-2 unit that copies a layer-1 unit, so its hyperplane is the same line
        # on one side and it is identically 0 on the other)
        w = rng.standard_normal(d)
        W1 = np.array([w, 3 * w, -w, *rng.standard_normal((3, d))])
        c1 = np.array([0.4, 1.2, -0.4, *(0.5 * rng.standard_normal(3))])
        W2 = rng.standard_normal((4, 6))
        c2 = 0.3 * rng.standard_normal(4)
        W2[0], c2[0] = np.eye(6)[4], 0.0
        W3 = rng.standard_normal((D, 4))
        return Decoder([W1, W2, W3], [c1, c2, np.zeros(D)], [("leaky_relu", 0.1), "relu"])
    if name == "concurrent":
        # every first-layer hyperplane through the origin, more through (1, 1, ...)
        W1 = rng.standard_normal((5, d))
        c1 = np.zeros(5)
        W1b = rng.standard_normal((3, d))
        c1b = -W1b @ np.ones(d)
        W2 = rng.standard_normal((4, 8))
        W3 = rng.standard_normal((D, 4))
        return Decoder(
            [np.r_[W1, W1b], W2, W3],
            [np.r_[c1, c1b], np.zeros(4), np.zeros(D)],
            ["abs", "relu"],
        )
    if name == "width1":
        s = [d, 1, 5, 1, 3, D]
        return random_decoder(s, ["relu", "abs", ("leaky_relu"), "prelu"], seed=3)
    if name == "identity_layer":
        return random_decoder([d, 5, 4, 5, D], ["relu", "identity", "abs"], seed=4)
    if name == "no_kink":  # hidden layers, but all units affine (slopes equal): one region
        Ws = [rng.standard_normal((4, d)), rng.standard_normal((3, 4)), rng.standard_normal((D, 3))]
        cs = [rng.standard_normal(4), rng.standard_normal(3), np.zeros(D)]
        return Decoder(Ws, cs, ["identity", ("leaky_relu", 1.0)])
    raise ValueError(name)


DEGENERATE = ["dead_units", "parallel", "identical", "concurrent", "width1", "identity_layer"]

# (id, d, sizes, kind, seed) -- each case's oracle run is well under a second or two
RANDOM_CASES = [
    ("d1-leaky-deep", 1, [1, 8, 8, 8, 2], "leaky_relu", 0),
    ("d1-relu", 1, [1, 12, 6, 3], "relu", 1),
    ("d1-abs", 1, [1, 6, 6, 2], "abs", 2),
    ("d1-prelu", 1, [1, 7, 7, 2], "prelu", 3),
    ("d2-leaky", 2, [2, 8, 8, 2], "leaky_relu", 0),
    ("d2-relu-deep", 2, [2, 5, 5, 5, 3], "relu", 1),
    ("d2-abs-wide", 2, [2, 14, 3], "abs", 2),
    ("d2-prelu", 2, [2, 6, 6, 2], "prelu", 3),
    ("d2-mixed", 2, [2, 6, 5, 4, 3], ["relu", "abs", "prelu"], 4),
    ("d3-leaky", 3, [3, 6, 5, 2], "leaky_relu", 0),
    ("d3-relu", 3, [3, 7, 4, 3], "relu", 1),
    ("d3-abs", 3, [3, 4, 4, 2], "abs", 2),
    ("d4-leaky", 4, [4, 5, 4, 2], "leaky_relu", 0),
    ("d4-mixed", 4, [4, 6, 3, 2], ["prelu", "abs"], 1),
]


@functools.cache
def get_decoder(case: str) -> Decoder:
    kind, _, rest = case.partition(":")
    if kind == "deg":
        name, d = rest.rsplit("-", 1)
        return degenerate_decoder(name, int(d))
    for cid, _d, sizes, act, seed in RANDOM_CASES:
        if cid == rest:
            return random_decoder(sizes, act, seed)
    raise KeyError(case)


@functools.cache
def get_oracle(case: str):
    return enumerate_regions(get_decoder(case))


@functools.cache
def get_partition(case: str, method: str):
    return exactdgn.partition(get_decoder(case), method=method)


CASES = [(f"rand:{c[0]}", c[1]) for c in RANDOM_CASES] + [
    (f"deg:{name}-{d}", d) for name in DEGENERATE for d in (1, 2, 3)
]
CASE_METHODS = [pytest.param(case, m, id=f"{case}-{m}") for case, d in CASES for m in METHODS[d]]


# ============================================================================ helpers
def kink_keys(P, kink) -> list[bytes]:
    packed = np.packbits(np.asarray(P, dtype=bool)[:, kink], axis=1)
    return [row.tobytes() for row in packed]


def sample_latent(rng, n, d):
    """Points at all scales: N(0, 1), N(0, 5^2) and log-uniform radii in [1e-3, 1e4]."""
    k1, k2 = int(0.4 * n), int(0.3 * n)
    k3 = n - k1 - k2
    u = rng.standard_normal((k3, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    Z = np.concatenate(
        [
            rng.standard_normal((k1, d)),
            5 * rng.standard_normal((k2, d)),
            u * 10.0 ** rng.uniform(-3, 4, k3)[:, None],
        ]
    )
    Z[0] = 0.0
    return Z


def region_margins(part, Z, chunk=8192) -> np.ndarray:
    """(R, N) ``max_f (n_f . z - e_f)``: negative inside region r, positive outside."""
    normals, offsets = part.padded_halfspaces()
    R, Fm, d = normals.shape
    out = np.full((R, len(Z)), -np.inf)
    for s in range(0, len(Z), chunk):
        Zc = Z[s : s + chunk]
        S = (normals.reshape(R * Fm, d) @ Zc.T).reshape(R, Fm, len(Zc))
        S -= offsets[:, :, None]
        for f in range(Fm):  # elementwise max over facets: contiguous and fast
            np.maximum(out[:, s : s + chunk], S[:, f], out=out[:, s : s + chunk])
    return out


def points_inside_regions(part, rng, k=6, cap=50.0):
    """(R, k, d) random points strictly inside each region (random chords from the interior
    point), and their (R, k) distance-like margins."""
    normals, offsets = part.padded_halfspaces()
    R, _Fm, d = normals.shape
    x0 = part.interior_points
    u = rng.standard_normal((R, k, d))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    slack = offsets - np.einsum("rfd,rd->rf", normals, x0)  # (R, Fm) > 0 (inf for padding)
    rate = np.einsum("rfd,rkd->rkf", normals, u)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(rate > 0, slack[:, None, :] / rate, np.inf)
    tmax = np.minimum(step.min(axis=2, initial=np.inf), cap)
    Z = x0[:, None, :] + (rng.uniform(0.02, 0.98, (R, k)) * tmax)[:, :, None] * u
    margin = np.einsum("rfd,rkd->rkf", normals, Z) - offsets[:, None, :]
    return Z, -margin.max(axis=2, initial=-np.inf)


def match_rows(A, B, atol):
    """Index in B of each row of A (within atol, unique), or None if some row has no match."""
    if len(A) != len(B):
        return None
    if len(A) == 0:
        return np.zeros(0, dtype=int)
    dist = np.abs(A[:, None, :] - B[None, :, :]).max(axis=2)
    idx = dist.argmin(axis=1)
    if np.any(dist[np.arange(len(A)), idx] > atol) or len(np.unique(idx)) != len(idx):
        return None
    return idx


def cluster_points(X, tol):
    """Labels grouping the rows of X that are within tol of each other (transitively)."""
    if len(X) == 0:
        return np.zeros(0, dtype=int), 0
    pairs = cKDTree(X).query_pairs(tol, output_type="ndarray")
    from scipy.sparse import coo_matrix

    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(X), len(X)))
    n, labels = connected_components(g, directed=False)
    return labels, n


# ============================================================================ checks
def check_structure(dec, part):
    R, d, D = len(part), dec.latent_dim, dec.output_dim
    assert R >= 1
    assert part.latent_dim == d
    assert part.patterns.shape == (R, dec.n_units) and part.patterns.dtype == bool
    assert part.A.shape == (R, D, d) and part.b.shape == (R, D)
    assert part.A.dtype == np.float64 and part.b.dtype == np.float64
    assert part.interior_points.shape == (R, d) and part.bounded.shape == (R,)
    ptr = part.facet_ptr
    F = len(part.facet_offsets)
    assert ptr.shape == (R + 1,) and ptr[0] == 0 and ptr[-1] == F and np.all(np.diff(ptr) >= 0)
    assert part.facet_normals.shape == (F, d)
    assert part.facet_units.shape == (F,) and part.facet_neighbors.shape == (F,)
    np.testing.assert_allclose(np.linalg.norm(part.facet_normals, axis=1), 1.0, rtol=1e-12)
    kink = kink_units(dec)
    assert np.all(kink[part.facet_units]), "a facet attributed to an affine (non-kink) unit"
    # affine units are reported True; no two regions share a pattern
    assert np.all(part.patterns[:, ~kink])
    keys = kink_keys(part.patterns, kink)
    assert len(set(keys)) == R
    # padded halfspaces == the CSR ones == region views
    normals, offsets = part.padded_halfspaces()
    assert normals.shape[:2] == offsets.shape == (R, max(int(np.diff(ptr).max()), 1))
    for r in range(R):
        C, e = part.halfspaces(r)
        nf = len(e)
        np.testing.assert_array_equal(normals[r, :nf], C)
        np.testing.assert_array_equal(offsets[r, :nf], e)
        assert np.all(offsets[r, nf:] == np.inf) and np.all(normals[r, nf:] == 0)
    reg = part.region(R - 1)
    np.testing.assert_array_equal(reg.pattern, part.patterns[R - 1])
    np.testing.assert_array_equal(reg.A, part.A[R - 1])
    assert part[-1].index == R - 1
    assert sum(1 for _ in part) == R
    with pytest.raises(IndexError):
        part.region(R)


def check_interior_and_maps(dec, part, rng):
    """(a): interior points carry the stored pattern; g = A z + b inside every region."""
    _, _, P = reference_forward(dec, part.interior_points)
    np.testing.assert_array_equal(P, part.patterns, err_msg="interior point pattern != stored")
    # interior points are strictly inside their own halfspaces
    M = region_margins(part, part.interior_points)
    own = np.diag(M)
    assert np.all(own < 0)
    np.testing.assert_array_equal(part.locate(part.interior_points), np.arange(len(part)))
    # A, b equal the oracle's independent recursion
    for r in range(len(part)):
        A_ref, b_ref = pattern_output_map(dec, part.patterns[r])
        scale = 1 + np.abs(A_ref).max() + np.abs(b_ref).max()
        assert np.abs(part.A[r] - A_ref).max() <= 1e-12 * scale
        assert np.abs(part.b[r] - b_ref).max() <= 1e-12 * scale
    # g(z) = A_r z + b_r at random points inside each region
    Z, margin = points_inside_regions(part, rng)
    R, k, d = Z.shape
    assert np.all(margin > 0)
    Zf = Z.reshape(-1, d)
    G, _, Pz = reference_forward(dec, Zf)
    rid = np.repeat(np.arange(R), k)
    lin = np.einsum("nij,nj->ni", part.A[rid], Zf) + part.b[rid]
    assert np.all(np.abs(lin - G) <= 1e-10 * (1 + np.abs(G))), "g(z) != A_r z + b_r inside r"
    safe = margin.ravel() > 1e-9 * (1 + np.abs(Zf).max(axis=1))
    assert safe.mean() > 0.9
    np.testing.assert_array_equal(Pz[safe], part.patterns[rid[safe]])


def check_coverage(dec, part, rng, n=100_000):
    """(b): each point in exactly one region (away from boundaries); locate agrees."""
    d = dec.latent_dim
    Z = sample_latent(rng, n, d)
    M = region_margins(part, Z)  # (R, N)
    scale = 1e-9 * (1 + np.abs(Z).max(axis=1))
    near = np.any(np.abs(M) <= scale, axis=0)
    assert near.mean() < 0.01, f"{near.mean():.3%} of the points within 1e-9 of a boundary"
    inside = M < 0
    count = inside.sum(axis=0)
    bad = ~near & (count != 1)
    assert not bad.any(), (
        f"{int(bad.sum())} points in {np.unique(count[bad]).tolist()} regions, "
        f"e.g. z = {Z[bad][0].tolist()}"
    )
    where = np.where(near, -1, inside.argmax(axis=0))
    loc = part.locate(Z)
    assert np.all(loc[~near] >= 0), "locate found no region for a point off the boundaries"
    np.testing.assert_array_equal(loc[~near], where[~near])
    G, _, P = reference_forward(dec, Z)
    np.testing.assert_array_equal(P[~near], part.patterns[where[~near]])
    ok = loc >= 0  # -1 only on lower-dimensional sets (e.g. exactly at a vertex)
    lin = np.einsum("nij,nj->ni", part.A[loc[ok]], Z[ok]) + part.b[loc[ok]]
    assert np.all(np.abs(lin - G[ok]) <= 1e-10 * (1 + np.abs(G[ok])))
    return Z


def check_neighbors(part):
    """Every facet has a neighbour, across which the neighbour has the opposite facet."""
    R = len(part)
    owner = np.repeat(np.arange(R), part.n_facets)
    nb = part.facet_neighbors
    assert np.all(nb >= 0), "a facet without a neighbour"
    assert np.all(nb != owner)
    for f in range(len(nb)):
        s = nb[f]
        C, e = part.halfspaces(s)
        n, off = part.facet_normals[f], part.facet_offsets[f]
        hit = (np.abs(C + n).max(axis=1) <= 1e-8) & (np.abs(e + off) <= 1e-8 * (1 + abs(off)))
        assert hit.sum() == 1, f"region {s} has no facet opposite to facet {f} of {owner[f]}"
        g = part.facet_ptr[s] + int(np.argmax(hit))
        assert nb[g] == owner[f], "neighbours not symmetric"
    adj = part.adjacency()
    assert adj.shape == (R, R)
    assert (adj != adj.T).nnz == 0
    for r in range(R):
        np.testing.assert_array_equal(
            part.neighbors(r), np.unique(nb[part.facet_ptr[r] : part.facet_ptr[r + 1]])
        )
        np.testing.assert_array_equal(np.sort(adj[r].indices), part.neighbors(r))


def check_against_oracle(dec, part, oracle):
    """(c) and (d): same regions (by pattern), facets, neighbours, boundedness."""
    R = len(part)
    assert R == len(oracle), f"partition has {R} regions, the oracle {len(oracle)}"
    idx = np.array([oracle.find(p) for p in part.patterns])
    assert np.all(idx >= 0), "a region whose pattern the oracle does not know"
    assert len(np.unique(idx)) == R
    o2p = np.empty(R, dtype=int)
    o2p[idx] = np.arange(R)
    for r in range(R):
        orr = oracle.regions[idx[r]]
        C, e = part.halfspaces(r)
        A = np.c_[C, e / (1 + np.abs(e))]
        B = np.c_[orr.normals, orr.offsets / (1 + np.abs(orr.offsets))]
        m = match_rows(A, B, 1e-8)
        assert m is not None, (
            f"region {r}: facets differ from the oracle's non-redundant constraints "
            f"({len(e)} vs {len(orr.offsets)})\n{A}\n{B}"
        )
        assert part.bounded[r] == orr.bounded
        # neighbour across each facet = the region the oracle reached by stepping across
        onb = orr.neighbors[m]
        known = onb >= 0
        sl = slice(part.facet_ptr[r], part.facet_ptr[r + 1])
        np.testing.assert_array_equal(part.facet_neighbors[sl][known], o2p[onb[known]])
        # the unit named for each facet vanishes on the facet
        units = part.facet_units[sl]
        _, pre, _ = reference_forward(dec, orr.facet_points[m])
        val = pre[np.arange(len(units)), units]
        _, pre_in, _ = reference_forward(dec, orr.interior_point[None, :])
        scale = 1 + np.abs(pre_in[0, units]) + np.abs(orr.facet_points[m]).max(axis=1, initial=0)
        assert np.all(np.abs(val) <= 1e-9 * scale), "facet_units does not carry the facet"


def _extreme_rays_2d(C):
    """Unit directions of the unbounded edges of ``{C z <= e}`` (d = 2): facet directions that
    are recession directions (``C u <= 0``)."""
    cand = []
    for n in C:
        for t in (np.array([-n[1], n[0]]), np.array([n[1], -n[0]])):
            if np.all(C @ t <= 1e-10):
                cand.append(t)
    cand = np.array(cand).reshape(-1, 2)
    if len(cand):
        lab, k = cluster_points(cand, 1e-8)
        cand = np.array([cand[lab == i][0] for i in range(k)])
    return cand


def check_vertices_2d(part):
    """d = 2: vertices = feasible pairwise intersections of facet lines; rays are recession
    directions that include every unbounded-edge direction; bounded iff no rays."""
    for r in range(len(part)):
        C, e = part.halfspaces(r)
        V = part.vertices(r)
        Rays = part.rays(r)
        assert V.ndim == 2 and V.shape[1] == 2 and Rays.ndim == 2 and Rays.shape[1] == 2
        assert part.bounded[r] == (len(Rays) == 0)
        pts = corners_from_halfspaces(C, e)
        tol = 1e-7 * (1 + np.abs(pts).max(initial=0.0))
        assert match_rows(V, pts, tol) is not None, f"region {r}: corners {V} vs {pts}"
        if len(Rays):
            np.testing.assert_allclose(np.linalg.norm(Rays, axis=1), 1.0, rtol=1e-12)
            assert np.all(Rays @ C.T <= 1e-10), f"region {r}: a ray leaves the region"
        for t in _extreme_rays_2d(C):
            assert len(Rays) and np.abs(Rays - t).max(axis=1).min() <= 1e-8, (
                f"region {r}: unbounded edge direction {t} missing from rays {Rays}"
            )


def corners_from_halfspaces(C, e):
    """Corners of ``{C z <= e}`` (d = 2): feasible pairwise intersections of facet lines."""
    pts = []
    for i in range(len(e)):
        for j in range(i + 1, len(e)):
            M = C[[i, j]]
            if abs(np.linalg.det(M)) < 1e-12:
                continue
            p = np.linalg.solve(M, e[[i, j]])
            if np.all(C @ p <= e + 1e-9 * (1 + np.abs(p).max())):
                pts.append(p)
    pts = np.array(pts).reshape(-1, 2)
    if len(pts):
        lab, k = cluster_points(pts, 1e-8 * (1 + np.abs(pts).max()))
        pts = np.array([pts[lab == i][0] for i in range(k)])
    return pts


def euler_counts(part):
    """(V, E, F) of the planar subdivision compactified with one vertex at infinity, and the
    number of times each edge was seen (from each of its two sides).

    Vertices are computed here from the halfspaces (so this also checks the adjacency method,
    which stores no V-representation); edges are the facets split at every vertex on them.
    """
    R = len(part)
    allv = np.concatenate(
        [corners_from_halfspaces(*part.halfspaces(r)) for r in range(R)] + [np.zeros((0, 2))]
    )
    vscale = 1 + np.abs(allv).max(initial=0.0)
    lab, nv = cluster_points(allv, 1e-8 * vscale)
    rep = np.array([allv[lab == i].mean(axis=0) for i in range(nv)]).reshape(-1, 2)
    seen: dict = {}
    ray_dirs: dict = {}
    lines: list = []

    def ray_key(v, t):
        lst = ray_dirs.setdefault(v, [])
        for i, u in enumerate(lst):
            if np.abs(u - t).max() <= 1e-8:
                return ("ray", v, i)
        lst.append(t)
        return ("ray", v, len(lst) - 1)

    def line_key(n, off):
        if n[0] < 0 or (n[0] == 0 and n[1] < 0):
            n, off = -n, -off
        for i, (m, o) in enumerate(lines):
            if np.abs(m - n).max() <= 1e-8 and abs(o - off) <= 1e-8 * (1 + abs(o)):
                return ("line", i)
        lines.append((n, off))
        return ("line", len(lines) - 1)

    for r in range(R):
        C, e = part.halfspaces(r)
        for f in range(len(e)):
            n = C[f]
            tau = np.array([-n[1], n[0]])
            on = np.abs(rep @ n - e[f]) <= 1e-8 * vscale
            inside = np.all(rep @ C.T <= e + 1e-8 * vscale, axis=1)
            ids = np.nonzero(on & inside)[0]
            ids = ids[np.argsort(rep[ids] @ tau)]
            plus = bool(np.all(C @ tau <= 1e-10))
            minus = bool(np.all(C @ -tau <= 1e-10))
            assert len(ids) + plus + minus >= 2, f"facet {f} of region {r} has < 2 ends"
            if len(ids) == 0:
                keys = [line_key(n, e[f])]
            else:
                keys = [("seg", min(u, v), max(u, v)) for u, v in itertools.pairwise(ids)]
                if minus:
                    keys.append(ray_key(int(ids[0]), -tau))
                if plus:
                    keys.append(ray_key(int(ids[-1]), tau))
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
    return nv + 1, len(seen), R, seen  # + 1: the vertex at infinity


# ============================================================================ tests
@pytest.mark.parametrize("case,method", CASE_METHODS)
def test_partition_against_oracle(case, method, rng):
    """(a)-(d), neighbour symmetry, and coverage by 10^4 points for one decoder and method."""
    dec = get_decoder(case)
    part = get_partition(case, method)
    assert part.method == method
    check_structure(dec, part)
    check_interior_and_maps(dec, part, rng)
    check_neighbors(part)
    check_against_oracle(dec, part, get_oracle(case))
    check_coverage(dec, part, rng, n=10_000)


COVERAGE_1E5 = [
    ("rand:d1-leaky-deep", "sweep"),
    ("rand:d1-relu", "adjacency"),
    ("rand:d2-leaky", "polygon"),
    ("rand:d2-mixed", "adjacency"),
    ("deg:dead_units-2", "polygon"),
    ("deg:concurrent-2", "polygon"),
    ("rand:d3-leaky", "adjacency"),
    ("rand:d4-leaky", "adjacency"),
]


@pytest.mark.parametrize("case,method", COVERAGE_1E5, ids=[f"{c}-{m}" for c, m in COVERAGE_1E5])
def test_coverage_of_1e5_points(case, method, rng):
    """(b): 10^5 latent points including |z| up to 1e4, each in exactly one region."""
    check_coverage(get_decoder(case), get_partition(case, method), rng, n=100_000)


D2_CASE_METHODS = [p for p in CASE_METHODS if get_decoder(p.values[0]).latent_dim == 2]
D1_CASE_METHODS = [p for p in CASE_METHODS if get_decoder(p.values[0]).latent_dim == 1]


@pytest.mark.parametrize("case,method", D2_CASE_METHODS)
def test_euler_formula_2d(case, method):
    """(e) V - E + F = 2 with one vertex at infinity; every edge bounds exactly two regions."""
    part = get_partition(case, method)
    V, E, F, seen = euler_counts(part)
    assert V - E + F == 2, f"V - E + F = {V} - {E} + {F} = {V - E + F}"
    bad = {k: c for k, c in seen.items() if c != 2}
    assert not bad, f"edges not shared by exactly two regions: {bad}"


@pytest.mark.parametrize("case", [c for c, d in CASES if d == 2])
def test_vertices_and_rays_2d(case):
    """Stored corners = the halfspaces' corners; rays are recession directions including every
    unbounded edge; bounded iff no rays."""
    check_vertices_2d(get_partition(case, "polygon"))


@pytest.mark.parametrize("case", ["rand:d2-leaky", "deg:parallel-2"])
def test_rays_are_exactly_the_unbounded_edge_directions_2d(case):
    """``rays(r)`` is documented as the directions of the unbounded edges: no extra generators
    (e.g. a leftover axis ray strictly inside the recession cone)."""
    part = get_partition(case, "polygon")
    for r in range(len(part)):
        C, _ = part.halfspaces(r)
        if len(C) == 0:
            continue  # the whole plane has no edges; any positively spanning set will do
        cand = _extreme_rays_2d(C)
        Rays = part.rays(r)
        assert match_rows(Rays, cand, 1e-8) is not None, f"region {r}: rays {Rays} vs {cand}"


@pytest.mark.parametrize("d", [1, 2])
def test_vertices_available_for_adjacency_in_low_dimension(d):
    """``vertices(r)`` / ``rays(r)`` are part of the API for d <= 2 whatever the method."""
    case = {1: "rand:d1-relu", 2: "rand:d2-prelu"}[d]
    a, b = get_partition(case, METHODS[d][0]), get_partition(case, "adjacency")
    kink = kink_units(get_decoder(case))
    order = {k: i for i, k in enumerate(kink_keys(b.patterns, kink))}
    for r, k in enumerate(kink_keys(a.patterns, kink)):
        s = order[k]
        tol = 1e-8 * (1 + np.abs(a.vertices(r)).max(initial=0))
        assert match_rows(b.vertices(s), a.vertices(r), tol) is not None
        assert match_rows(b.rays(s), a.rays(r), 1e-8) is not None


@pytest.mark.parametrize("case", [c for c, d in CASES if d == 1])
def test_vertices_and_rays_1d(case):
    part = get_partition(case, "sweep")
    for r in range(len(part)):
        C, e = part.halfspaces(r)
        ends = np.sort(e * C[:, 0])  # n z <= e with n = +-1: the end is z = e n
        np.testing.assert_allclose(np.sort(part.vertices(r)[:, 0]), ends, rtol=1e-12)
        rays = part.rays(r)[:, 0]
        expect = [s for s in (-1.0, 1.0) if not np.any(C[:, 0] == s)]
        np.testing.assert_array_equal(np.sort(rays), expect)
        assert part.bounded[r] == (len(rays) == 0)


def test_methods_agree_in_2d():
    case = "rand:d2-mixed"
    a, b = get_partition(case, "polygon"), get_partition(case, "adjacency")
    dec = get_decoder(case)
    kink = kink_units(dec)
    ka, kb = kink_keys(a.patterns, kink), kink_keys(b.patterns, kink)
    assert sorted(ka) == sorted(kb)
    order = {k: i for i, k in enumerate(kb)}
    for r, k in enumerate(ka):
        np.testing.assert_allclose(a.A[r], b.A[order[k]], rtol=0, atol=0)


NO_KINK = [
    pytest.param(name, d, m, id=f"{name}-{d}-{m}")
    for name in ("no_hidden", "no_kink")
    for d in (1, 2, 3)
    for m in METHODS[d]
]


@pytest.mark.parametrize("name,d,method", NO_KINK)
def test_decoder_without_kinks_is_one_region(name, d, method):
    """No hidden layer (or only affine units): one unbounded region without facets."""
    dec = degenerate_decoder(name, d)
    part = exactdgn.partition(dec, method=method)
    assert len(part) == 1
    assert part.n_facets.tolist() == [0]
    assert not part.bounded[0]
    if name == "no_hidden":
        np.testing.assert_array_equal(part.A[0], dec.weights[0])
        np.testing.assert_array_equal(part.b[0], dec.biases[0])
    Z = np.random.default_rng(0).normal(size=(5, d)) * 100
    np.testing.assert_array_equal(part.locate(Z), 0)
    rng = np.random.default_rng(1)
    check_structure(dec, part)
    check_interior_and_maps(dec, part, rng)
    check_coverage(dec, part, rng, n=10_000)
    check_against_oracle(dec, part, enumerate_regions(dec))


def _hand_countable():
    """(decoder, region count, facets per region or None) for arrangements counted by hand:
    k lines in general position in R^2 give 1 + k + k(k-1)/2 regions, k concurrent lines 2k,
    k parallel lines k + 1, the 3 coordinate planes in R^3 the 8 orthants (3 facets each),
    k distinct breakpoints on the line k + 1."""
    rng = np.random.default_rng(0)
    k = 5
    W2 = rng.standard_normal((2, k))
    z2 = np.zeros(2)
    out = [
        (
            Decoder([rng.standard_normal((k, 2)), W2], [rng.standard_normal(k), z2], ["relu"]),
            1 + k + k * (k - 1) // 2,
            None,
        ),
        (Decoder([rng.standard_normal((k, 2)), W2], [np.zeros(k), z2], ["abs"]), 2 * k, 2),
    ]
    W1 = np.outer(rng.uniform(0.5, 2, k) * rng.choice([-1, 1], k), [0.6, 0.8])
    out.append((Decoder([W1, W2], [np.arange(k, dtype=float), z2], ["relu"]), k + 1, None))
    W3 = rng.standard_normal((2, 3))
    out.append((Decoder([np.eye(3), W3], [np.zeros(3), z2], [("leaky_relu", 0.5)]), 8, 3))
    W1 = rng.uniform(0.5, 2, (k, 1))
    out.append((Decoder([W1, W2], [np.arange(k, dtype=float), z2], ["relu"]), k + 1, None))
    return out


@pytest.mark.parametrize("i", range(5))
def test_known_region_counts(i):
    """Both the library and the oracle reproduce hand counts (this also validates the oracle)."""
    dec, count, facets = _hand_countable()[i]
    part = exactdgn.partition(dec)
    oracle = enumerate_regions(dec)
    assert len(part) == count
    assert len(oracle) == count
    if facets is not None:
        assert part.n_facets.tolist() == [facets] * count
        assert [len(r.offsets) for r in oracle.regions] == [facets] * count


def test_oracle_reference_forward_matches_torch():
    """The oracle's forward pass and pattern -> map recursion agree with torch autograd."""
    import torch

    dec = random_decoder([3, 6, 5, 4], ["prelu", "abs"], seed=9)
    net = dec.to_torch()
    Z = np.random.default_rng(0).standard_normal((10, 3)) * 3
    X, _, P = reference_forward(dec, Z)
    with torch.no_grad():
        np.testing.assert_allclose(X, net(torch.as_tensor(Z)).numpy(), rtol=1e-13, atol=1e-13)
    for n in range(len(Z)):
        J = torch.autograd.functional.jacobian(
            lambda z: net(z[None, :])[0], torch.as_tensor(Z[n])
        ).numpy()
        A, b = pattern_output_map(dec, P[n])
        np.testing.assert_allclose(A, J, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(A @ Z[n] + b, X[n], rtol=1e-12, atol=1e-12)


# ============================================================================ property tests
@st.composite
def small_decoders(draw, d_values=(1, 2)):
    d = draw(st.sampled_from(d_values))
    widths = draw(st.lists(st.integers(1, 5), min_size=0, max_size=3))
    kinds = draw(
        st.lists(
            st.sampled_from(["relu", "leaky_relu", "prelu", "abs", "identity"]),
            min_size=len(widths),
            max_size=len(widths),
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))
    degeneracy = draw(st.sampled_from(["none", "zero_bias", "duplicate_row", "zero_row"]))
    rng = np.random.default_rng(seed)
    sizes = [d, *widths, draw(st.integers(1, 3))]
    dec = random_decoder(sizes, kinds, seed)
    if widths and degeneracy != "none":
        Ws, cs = [W.copy() for W in dec.weights], [c.copy() for c in dec.biases]
        if degeneracy == "zero_bias":
            cs[0][:] = 0.0
        elif degeneracy == "duplicate_row" and widths[0] >= 2:
            Ws[0][1] = -2.0 * Ws[0][0]
            cs[0][1] = -2.0 * cs[0][0]
        elif degeneracy == "zero_row":
            k = int(rng.integers(len(widths)))
            Ws[k][0] = 0.0
            cs[k][0] = float(rng.choice([-1.0, 0.0, 1.0]))
        dec = Decoder(Ws, cs, dec.activations)
    return dec


@settings(max_examples=25)
@given(dec=small_decoders())
def test_property_small_decoders(dec):
    part = exactdgn.partition(dec)
    R = len(part)
    np.testing.assert_array_equal(part.locate(part.interior_points), np.arange(R))
    _, _, P = reference_forward(dec, part.interior_points)
    np.testing.assert_array_equal(P, part.patterns)
    oracle = enumerate_regions(dec)
    assert R == len(oracle)
    check_neighbors(part)
    check_against_oracle(dec, part, oracle)
    check_coverage(dec, part, np.random.default_rng(1), n=3000)


@pytest.mark.slow
@settings(max_examples=60)
@given(dec=small_decoders(d_values=(1, 2, 3)))
def test_property_small_decoders_slow(dec):
    part = exactdgn.partition(dec)
    np.testing.assert_array_equal(part.locate(part.interior_points), np.arange(len(part)))
    check_structure(dec, part)
    check_neighbors(part)
    check_against_oracle(dec, part, enumerate_regions(dec))
    check_coverage(dec, part, np.random.default_rng(2), n=20_000)
    if dec.latent_dim == 2:
        V, E, F, _ = euler_counts(part)
        assert V - E + F == 2


# ============================================================================ slow: larger
SLOW_CASES = [
    ("d2-big", [2, 24, 24, 2], "leaky_relu", 10, "polygon"),
    ("d2-big-adj", [2, 16, 16, 16, 2], "relu", 11, "adjacency"),
    ("d3-big", [3, 10, 10, 2], "leaky_relu", 12, "adjacency"),
    ("d3-abs", [3, 8, 8, 3], "abs", 13, "adjacency"),
    ("d4-big", [4, 8, 6, 2], "relu", 14, "adjacency"),
]


@pytest.mark.slow
@pytest.mark.parametrize("cid,sizes,kind,seed,method", SLOW_CASES, ids=[c[0] for c in SLOW_CASES])
def test_partition_against_oracle_larger(cid, sizes, kind, seed, method):
    dec = random_decoder(sizes, kind, seed)
    part = exactdgn.partition(dec, method=method)
    rng = np.random.default_rng(seed)
    check_structure(dec, part)
    check_interior_and_maps(dec, part, rng)
    check_neighbors(part)
    check_coverage(dec, part, rng)
    check_against_oracle(dec, part, enumerate_regions(dec))
    if dec.latent_dim == 2:
        V, E, F, _ = euler_counts(part)
        assert V - E + F == 2
