"""Tests of the exact d = 2 enumerator (``method="polygon"``).

References shared with no enumerator code: the decoder's forward pass (patterns, outputs), the
LP-based oracle of ``tests.oracles.enumerate``, Euler's formula on the planar subdivision, and
brute-force containment of random points in all regions' half-planes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

import exactdgn
from exactdgn.decoder import Activation, Decoder
from exactdgn.partition import PartitionTooLargeError
from exactdgn.partition._enum2d import _first_maps, _next_maps, enumerate_2d
from tests.oracles.enumerate import enumerate_regions

# ---------------------------------------------------------------------------- decoders


def _dec(Ws, cs, acts):
    return Decoder([np.asarray(W, float) for W in Ws], [np.asarray(c, float) for c in cs], acts)


def _degenerate_first_layer():
    """Identical, opposite, parallel, dead, zero-row and concurrent lines in layer 1."""
    W1 = [
        [1, 0],
        [0, 1],
        [1, 1],
        [2, 2],  # same line as the previous one
        [-1, -1],  # same line, opposite side
        [0, 0],  # constant 0: never on
        [0, 0],  # constant 1: always on
        [1, -1],  # through the origin too
        [1, 0],  # parallel to the first
        [3, 0],  # same line as the first, scaled
    ]
    c1 = [0, 0, 0, 0, 0, 0, 1, 0, -1, 0]
    rng = np.random.default_rng(3)
    W2 = rng.normal(size=(6, 10))
    W2[2] = 0.0  # a zero row: constant pre-activation
    W2[3] = W2[1]  # a duplicated unit
    c2 = rng.normal(size=6) * 0.3
    c2[3] = c2[1]
    W3 = rng.normal(size=(3, 6))
    return _dec([W1, W2, W3], [c1, c2, np.zeros(3)], ["relu", "relu"])


def _homogeneous(seed=0, act="leaky_relu"):
    """Zero biases: every line of every layer passes through the origin (all regions cones)."""
    d = Decoder.random([2, 7, 7, 3], seed=seed, activation=act)
    return _dec(d.weights, [np.zeros_like(c) for c in d.biases], d.activations)


def _concurrent(seed=0):
    """Layer-1 lines all through one non-origin point, layer 2 random."""
    rng = np.random.default_rng(seed)
    p = np.array([0.3, -1.7])
    W1 = rng.normal(size=(6, 2))
    c1 = -W1 @ p
    W2 = rng.normal(size=(5, 6))
    return _dec(
        [W1, W2, rng.normal(size=(2, 5))], [c1, rng.normal(size=5), np.zeros(2)], ["abs"] * 2
    )


def _grid():
    """x = -2..2 and y = -2..2: 36 regions, 16 bounded squares."""
    W1 = [[1, 0]] * 5 + [[0, 1]] * 5
    c1 = [-k for k in range(-2, 3)] * 2
    return _dec([W1, np.ones((1, 10))], [c1, [0.0]], ["relu"])


def _prelu_mixed(seed=0):
    """Per-unit PReLU slopes (incl. negative and > 1), an identity layer, then abs."""
    rng = np.random.default_rng(seed)
    Ws = [
        rng.normal(size=(6, 2)),
        rng.normal(size=(4, 6)),
        rng.normal(size=(5, 4)),
        rng.normal(size=(3, 5)),
    ]
    cs = [rng.normal(size=6) * 0.5, rng.normal(size=4), rng.normal(size=5), np.zeros(3)]
    slopes = np.array([0.1, -0.5, 2.0, 0.0, 1.0, 0.3])  # unit 4 is affine (slope 1)
    acts = [Activation("prelu", slopes), "identity", "abs"]
    return _dec(Ws, cs, acts)


def _width_one(act="relu", seed=0):
    d = Decoder.random([2, 1, 1, 1, 2], seed=seed, activation=act)
    return d


def _nearly_parallel():
    """Two lines meeting far away (at |z| ~ 1e4) plus a third one through the far corner."""
    W1 = [[1.0, 0.0], [1.0, 1e-4], [0.0, 1.0]]
    c1 = [0.0, -1.0, -1e4]
    return _dec([W1, np.ones((2, 3))], [c1, np.zeros(2)], ["leaky_relu"])


DEGENERATE = {
    "first_layer": _degenerate_first_layer,
    "homogeneous": _homogeneous,
    "homogeneous_abs": lambda: _homogeneous(1, "abs"),
    "concurrent": _concurrent,
    "grid": _grid,
    "prelu_mixed": _prelu_mixed,
    "width_one_relu": _width_one,
    "width_one_abs": lambda: _width_one("abs", 2),
    "nearly_parallel": _nearly_parallel,
}

RANDOM = {
    "leaky": lambda: Decoder.random([2, 16, 16, 4], seed=1, activation="leaky_relu"),
    "relu3": lambda: Decoder.random([2, 10, 10, 10, 3], seed=2, activation="relu"),
    "abs": lambda: Decoder.random([2, 12, 12, 3], seed=3, activation="abs"),
}

# ---------------------------------------------------------------------------- checks


def _regions_containing(part, Z, tol=1e-9):
    """(N, R) bool: brute force over all regions' half-planes (with a relative tolerance)."""
    normals, offsets = part.padded_halfspaces()
    out = np.empty((len(Z), len(part)), dtype=bool)
    for s in range(0, len(Z), 256):
        z = Z[s : s + 256]
        lhs = np.einsum("nd,rfd->nrf", z, normals)
        slack = tol * (1.0 + np.abs(z).max(axis=1))[:, None, None]
        with np.errstate(invalid="ignore"):
            out[s : s + 256] = np.all(lhs <= offsets[None] + slack, axis=2)
    return out


def _zero_units(dec, patterns):
    """(R, n_units) bool: units whose pre-activation is identically 0 on the region.

    Their pattern bit is a convention (``False``, as ``a > 0`` in exact arithmetic); the
    forward pass sees rounding noise there, and the bit changes no affine map.
    """
    out = []
    for k in range(len(dec.unit_slices)):
        M = dec.layer_maps(patterns, k)
        out.append(np.all(np.abs(M) <= 1e-13 * (1 + np.abs(M).max()), axis=2))
    return np.concatenate(out, axis=1) if out else np.zeros((len(patterns), 0), dtype=bool)


def _same_pattern(dec, P, ref):
    """Forward-pass patterns ``P`` equal ``ref`` up to identically-zero units of ``ref``."""
    return np.all((P == ref) | _zero_units(dec, ref), axis=1)


def _check_structure(dec, part):
    R = len(part)
    assert R >= 1
    assert part.patterns.shape == (R, dec.n_units)
    assert part.facet_ptr[0] == 0 and part.facet_ptr[-1] == len(part.facet_offsets)
    assert np.all(np.diff(part.facet_ptr) >= 0)
    np.testing.assert_allclose(np.linalg.norm(part.facet_normals, axis=1), 1.0, atol=1e-12)
    # patterns are unique on the kink units
    keys = np.packbits(part.patterns[:, dec.kink_mask], axis=1)
    assert len(np.unique(keys, axis=0)) == R
    # every region's interior point has the stored pattern (forward pass) and is strictly inside
    zero = _zero_units(dec, part.patterns)
    assert not np.any(part.patterns & zero)
    assert np.all(_same_pattern(dec, dec.activation_pattern(part.interior_points), part.patterns))
    for r in range(R):
        C, e = part.halfspaces(r)
        z = part.interior_points[r]
        assert np.all(C @ z < e), r


def _check_generators(part):
    """CSR generators: unit rays / w = 1 points, counter-clockwise convex, match the H-rep."""
    G_all = part.generators
    fin = G_all[:, 2] != 0
    np.testing.assert_array_equal(G_all[fin, 2], 1.0)
    np.testing.assert_allclose(np.linalg.norm(G_all[~fin, :2], axis=1), 1.0, atol=1e-12)
    for r in range(len(part)):
        G = part.generators[part.gen_ptr[r] : part.gen_ptr[r + 1]]
        k = len(G)
        assert k >= 3
        assert part.bounded[r] == bool(np.all(G[:, 2] == 1))
        if np.all(G[:, 2] == 0):  # only the whole plane has no finite generator
            assert len(part) == 1 and part.n_facets[0] == 0
            np.testing.assert_array_equal(G, [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]])
            continue
        scale = 1.0 + np.abs(G[:, :2]).max()
        for i in range(k):
            # the homogeneous line through g_i, g_{i+1}: all generators on its left (CCW)
            ln = np.cross(G[i], G[(i + 1) % k])
            side = G @ ln
            assert np.all(side >= -1e-9 * scale**2), (r, i, side)
        # left turns somewhere: a genuine polygon
        turns = [np.linalg.det(G[[i, (i + 1) % k, (i + 2) % k]]) for i in range(k)]
        assert max(turns) > 0
        # the H-representation holds on the generators
        C, e = part.halfspaces(r)
        if len(e):
            pts, rays = G[G[:, 2] == 1, :2], G[G[:, 2] == 0, :2]
            assert np.all(pts @ C.T <= e + 1e-9 * (1 + np.abs(e)) * scale)
            assert np.all(rays @ C.T <= 1e-9)


def _check_facets(dec, part, raw, flip_check=True):
    """Facet points lie on their own line and strictly inside all other constraints."""
    fp = raw.facet_points
    pre = dec.preactivations(fp)
    clearance = np.full(len(fp), np.inf)  # distance from the facet point to the other facets
    for r in range(len(part)):
        sl = slice(part.facet_ptr[r], part.facet_ptr[r + 1])
        C, e = part.halfspaces(r)
        P = fp[sl]
        lhs = P @ C.T - e  # (F, F)
        scale = 1.0 + np.abs(P).max(axis=1, initial=0.0)
        diag = np.diag(lhs)
        assert np.all(np.abs(diag) <= 1e-9 * scale * (1 + np.abs(e))), (r, diag)
        off = lhs[~np.eye(len(e), dtype=bool)].reshape(len(e), -1) if len(e) > 1 else lhs[:0]
        assert np.all(off < -1e-12 * scale[:, None]), (r, off)
        if len(e) > 1:
            clearance[sl] = -off.max(axis=1)
        # a facet's unit has a zero pre-activation at the facet point
        u = part.facet_units[sl]
        a = pre[np.arange(sl.start, sl.stop), u]
        ref = np.abs(pre[sl]).max(axis=1) + 1.0
        assert np.all(np.abs(a) <= 1e-8 * ref * scale), (r, a)
    if flip_check and len(fp):
        # stepping across the facet flips the facet unit's sign; stepping inward keeps the pattern
        owner = np.repeat(np.arange(len(part)), part.n_facets)
        eps = np.minimum(1e-7 * (1.0 + np.abs(fp).max(axis=1)), 0.25 * clearance)[:, None]
        inside = dec.activation_pattern(fp - eps * part.facet_normals)
        assert np.all(_same_pattern(dec, inside, part.patterns[owner]))
        u = part.facet_units
        out_pre = dec.preactivations(fp + eps * part.facet_normals)[np.arange(len(u)), u]
        in_pre = dec.preactivations(fp - eps * part.facet_normals)[np.arange(len(u)), u]
        assert np.all(np.sign(out_pre) == -np.sign(in_pre))


def _check_points(dec, part, n=10_000, seed=0):
    """Random points (scales up to 1e4): in exactly one region, the one locate() returns."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-2, 4, size=n)
    Z = rng.standard_normal((n, 2)) * scales[:, None]
    inside = _regions_containing(part, Z)
    assert np.all(inside.sum(axis=1) == 1), np.nonzero(inside.sum(axis=1) != 1)[0][:5]
    ref = np.argmax(inside, axis=1)
    assert np.all(_same_pattern(dec, dec.activation_pattern(Z), part.patterns[ref]))
    idx = part.locate(Z)
    # locate() matches forward patterns exactly: it can only miss where a unit that is
    # identically zero on the region shows rounding noise
    found = idx >= 0
    np.testing.assert_array_equal(idx[found], ref[found])
    if not found.all():
        assert _zero_units(dec, part.patterns[ref[~found]]).any(axis=1).all()
    idx = ref
    X = dec(Z)
    Xr = np.einsum("nij,nj->ni", part.A[idx], Z) + part.b[idx]
    assert np.all(np.abs(X - Xr) <= 1e-10 * (1.0 + np.abs(X)))


def _euler(part):
    """V - E + F = 2 on the sphere (the plane plus one point at infinity).

    Graph vertices: the distinct corners of all regions (T-junctions included: they are corners
    on one side). A region's boundary walk has one edge per graph vertex on its boundary plus
    one per visit at infinity (a maximal run of consecutive rays); every edge borders two faces.
    """
    R = len(part)
    pts = np.concatenate([part.vertices(r) for r in range(R)] + [np.zeros((0, 2))])
    if len(pts):
        pairs = cKDTree(pts).query_pairs(1e-9 * (1 + np.abs(pts).max()), output_type="ndarray")
        adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (len(pts),) * 2)
        lab = connected_components(adj, directed=False)[1]
        first = np.unique(lab, return_index=True)[1]
        verts = pts[first]
    else:
        verts = pts
    tol = 1e-9 * (1.0 + np.abs(verts).max(axis=1, initial=0.0))[:, None]
    n_edges2 = 0
    for r in range(R):
        C, e = part.halfspaces(r)
        slack = verts @ C.T - e
        on = np.all(slack <= tol, axis=1) & np.any(np.abs(slack) <= tol, axis=1)
        G = part.generators[part.gen_ptr[r] : part.gen_ptr[r + 1]]
        ray = G[:, 2] == 0
        runs = int(np.sum(ray & ~np.roll(ray, 1)))  # 0 for the whole plane: no edge at all
        n_edges2 += int(on.sum()) + runs
    assert n_edges2 % 2 == 0
    V = len(verts) + 1
    E = n_edges2 // 2
    assert V - E + R == 2, (V, E, R)


def _full_check(dec, flip_check=True, n_points=10_000):
    part = exactdgn.partition(dec, method="polygon")
    raw = enumerate_2d(dec)
    np.testing.assert_array_equal(raw.patterns, part.patterns)
    _check_structure(dec, part)
    _check_generators(part)
    _check_facets(dec, part, raw, flip_check)
    _check_points(dec, part, n=n_points)
    _euler(part)
    return part


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_decoders(name):
    part = _full_check(RANDOM[name]())
    assert len(part) > 100
    assert np.all(part.facet_neighbors >= 0)


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_decoders(name):
    dec = DEGENERATE[name]()
    _full_check(dec, flip_check=False, n_points=3000)


def _compare_with_oracle(dec):
    part = exactdgn.partition(dec, method="polygon")
    orc = enumerate_regions(dec)
    assert len(part) == len(orc)
    for r in range(len(part)):
        k = orc.find(part.patterns[r])
        assert k >= 0, r
        o = orc.regions[k]
        C, e = part.halfspaces(r)
        assert len(e) == len(o.offsets), (r, len(e), len(o.offsets))
        assert bool(part.bounded[r]) == bool(o.bounded)
        # match facets by normal direction
        match = np.argmax(C @ o.normals.T, axis=1)
        assert len(set(match.tolist())) == len(e)
        np.testing.assert_allclose(C, o.normals[match], atol=1e-8)
        np.testing.assert_allclose(e, o.offsets[match], atol=1e-8 * (1 + np.abs(e).max()))
        for f, m in zip(
            part.facet_units[part.facet_ptr[r] : part.facet_ptr[r + 1]], match, strict=True
        ):
            assert int(f) in set(int(u) for u in o.facet_units[m])


ORACLE_CASES = {
    "leaky": lambda: Decoder.random([2, 6, 5, 3], seed=4, activation="leaky_relu"),
    "abs3": lambda: Decoder.random([2, 5, 4, 4, 2], seed=5, activation="abs"),
    **DEGENERATE,
}


@pytest.mark.parametrize("name", sorted(ORACLE_CASES))
def test_matches_lp_oracle(name):
    _compare_with_oracle(ORACLE_CASES[name]())


def test_integer_weights_match_lp_oracle():
    rng = np.random.default_rng(7)
    for _ in range(6):
        _compare_with_oracle(_int_decoder(rng))


def test_no_hidden_layer_is_the_whole_plane():
    dec = _dec([np.arange(6.0).reshape(3, 2)], [np.ones(3)], [])
    raw = enumerate_2d(dec)
    assert raw.patterns.shape == (1, 0)
    assert raw.facet_ptr.tolist() == [0, 0] and len(raw.facet_offsets) == 0
    assert not raw.bounded[0]
    assert np.all(raw.generators[:, 2] == 0)  # no finite generator
    part = exactdgn.partition(dec)
    assert len(part) == 1
    Z = np.random.default_rng(0).normal(size=(50, 2)) * 100
    np.testing.assert_array_equal(part.locate(Z), 0)
    np.testing.assert_allclose(Z @ part.A[0].T + part.b[0], dec(Z), rtol=1e-12)


def test_affine_layers_only():
    """Identity activations never cut: one region (the plane)."""
    dec = Decoder.random([2, 5, 4, 3], seed=0, activation="identity")
    part = exactdgn.partition(dec)
    assert len(part) == 1 and part.patterns.all() and part.n_facets[0] == 0


def test_grid_counts():
    part = exactdgn.partition(_grid())
    assert len(part) == 36
    assert part.bounded.sum() == 16
    sq = np.nonzero(part.bounded)[0]
    assert np.all(part.n_facets[sq] == 4)
    for r in sq:  # unit squares, corners counter-clockwise
        v = part.vertices(r)
        assert v.shape == (4, 2)
        x, y = v[:, 0], v[:, 1]
        area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
        assert area == pytest.approx(1.0, abs=1e-12)


def test_single_line_and_strip():
    """One line: two half-planes, each with one facet carried by a foot point."""
    dec = _dec([[[1.0, 2.0]], [[1.0]]], [[3.0], [0.0]], ["relu"])
    part = exactdgn.partition(dec)
    assert len(part) == 2
    assert np.all(part.n_facets == 1)
    for r in range(2):
        G = part.generators[part.gen_ptr[r] : part.gen_ptr[r + 1]]
        assert (G[:, 2] == 1).sum() == 1  # the foot, not a corner
        assert len(part.vertices(r)) == 0
        foot = G[G[:, 2] == 1, :2][0]
        np.testing.assert_allclose(foot, -3.0 * np.array([1.0, 2.0]) / 5.0, atol=1e-15)
    # a strip between two parallel lines
    dec = _dec([[[0.0, 1.0], [0.0, -1.0]], [[1.0, 1.0]]], [[0.0, 1.0], [0.0]], ["relu"])
    part = exactdgn.partition(dec)
    assert len(part) == 3
    strip = part.locate([[5.0, 0.5]])[0]
    assert part.n_facets[strip] == 2 and not part.bounded[strip]
    assert part.rays(strip).shape == (2, 2)


def test_check_budget_bounds_and_refusal():
    dec = Decoder.random([2, 12, 12, 12, 3], seed=0)
    seen = []
    raw = enumerate_2d(dec, seen.append)
    assert len(seen) == 3
    assert seen[-1] >= len(raw.patterns)
    assert all(b >= 1 for b in seen)

    def refuse(n):
        raise PartitionTooLargeError(str(n))

    with pytest.raises(PartitionTooLargeError):
        enumerate_2d(dec, refuse)


def test_layer_maps_match_decoder():
    dec = Decoder.random([2, 6, 5, 4, 3], seed=7, activation="abs")
    P = np.random.default_rng(0).random((40, dec.n_units)) > 0.5
    Mt = _first_maps(dec)
    np.testing.assert_array_equal(Mt[0].T, dec.layer_maps(P[:1], 0)[0])
    Mt = np.repeat(Mt, 40, axis=0)
    for k, sl in enumerate(dec.unit_slices[:-1]):
        Mt = _next_maps(dec, Mt, P[:, sl], k)
        np.testing.assert_allclose(Mt.transpose(0, 2, 1), dec.layer_maps(P, k + 1), atol=1e-13)


def test_rejects_other_latent_dims():
    with pytest.raises(ValueError, match="latent_dim"):
        enumerate_2d(Decoder.random([3, 4, 2], seed=0))


def _int_decoder(rng):
    """Small weights from {-1, 0, 1} (or halves): many exactly concurrent / identical lines."""
    sizes = [2, *rng.integers(1, 9, rng.integers(1, 4)).tolist(), 2]
    vals = [np.array([-1.0, 0.0, 1.0]), np.array([-1.0, -0.5, 0.0, 0.5, 1.0])][rng.integers(2)]
    act = ["relu", ("leaky_relu", 0.5), "abs", ("prelu", 0.25)][rng.integers(4)]
    Ws = [rng.choice(vals, (n, m)) for m, n in itertools.pairwise(sizes)]
    cs = [rng.choice(vals, n) for n in sizes[1:]]
    return Decoder(Ws, cs, [act] * (len(sizes) - 2))


@pytest.mark.parametrize("seed", range(4))
def test_integer_weight_decoders(seed):
    """Exact coincidences everywhere (lines through corners, along edges, duplicated)."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(10):
        _full_check(_int_decoder(rng), flip_check=False, n_points=1000)


def test_split_square_exact():
    from exactdgn.partition._enum2d import _split

    V = np.array([[[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]], dtype=float)
    L = np.array([[10, 11, 12, 13]])
    line = np.array([[1.0, 0.0, -0.5]])
    val = V[0] @ line[0]
    ok, ((Vp, cp, Lp), (Vn, cn, Ln)) = _split(
        V, np.array([4]), L, val[None], np.sign(val).astype(np.int8)[None], line, np.array([99])
    )
    assert ok.tolist() == [True]
    assert cp.tolist() == [4] and cn.tolist() == [4]
    np.testing.assert_array_equal(Vp[0, :, :2], [[0.5, 0], [1, 0], [1, 1], [0.5, 1]])
    np.testing.assert_array_equal(Lp[0], [10, 11, 12, 99])
    np.testing.assert_array_equal(Vn[0, :, :2], [[0, 0], [0.5, 0], [0.5, 1], [0, 1]])
    np.testing.assert_array_equal(Ln[0], [10, 99, 12, 13])
    # a sign pattern no convex polygon has (+ 0 + -): reported, not split
    s = np.array([[1, 0, 1, -1]], dtype=np.int8)
    ok = _split(V, np.array([4]), L, s.astype(float), s, line, np.array([99]))[0]
    assert ok.tolist() == [False]


def test_split_whole_plane_inserts_foot():
    from exactdgn.partition._enum2d import _split, _whole_plane

    V = _whole_plane()[None]
    line = np.array([[-1.0, 1.0, -1.0]])  # y >= x + 1 is the positive side
    val = (V[0] @ line[0])[None]
    ok, ((Vp, cp, Lp), (Vn, cn, Ln)) = _split(
        V,
        np.array([4]),
        np.full((1, 4), -1),
        val,
        np.sign(val).astype(np.int8),
        line,
        np.array([7]),
    )
    h = np.sqrt(0.5)
    assert ok.tolist() == [True] and cp.tolist() == [5] and cn.tolist() == [5]
    np.testing.assert_allclose(
        Vp[0], [[h, h, 0], [0, 1, 0], [-1, 0, 0], [-h, -h, 0], [-0.5, 0.5, 1]], atol=1e-15
    )
    np.testing.assert_array_equal(Lp[0], [-1, -1, -1, 7, 7])
    np.testing.assert_allclose(
        Vn[0], [[1, 0, 0], [h, h, 0], [-0.5, 0.5, 1], [-h, -h, 0], [0, -1, 0]], atol=1e-15
    )
    np.testing.assert_array_equal(Ln[0], [-1, 7, 7, -1, -1])


def _sliver_decoder():
    """Units 0 and 1 nearly coincide (rows and biases equal to ~1e-10): the region between
    them is a wedge of opening 1.4e-10 whose tip, up to unit 2's line, has another pattern."""
    W1 = [
        [0.9960542803138879, 0.08874610227149571],
        [0.9960542802449419, 0.0887461024032053],
        [0.5822058485731421, -1.7518005652801107],
    ]
    c1 = [-0.7841272406813639, -0.7841272407193117, -0.1779139465826313]
    W2 = [
        [2.004340265051685, -0.8995594817975393, 3.356832166851622],
        [2.2837912815394867, -4.730626831460926, -1.4173024693013418],
    ]
    return _dec([W1, W2], [c1, [0.0, 0.0]], ["relu"])


def test_sliver_halfspaces_agree_with_the_pattern():
    """The H-representation of a sliver region must not reach past the generators: the wedge's
    facets from the exact lines met at their exact intersection, 0.6 before the tip the
    splitting had found (the lines are one at tolerance there), so unit 2's line never cut it
    and its corner lay where unit 2 is off: the region's affine map was off by ~1 there (the
    likelihood then saw a 1300-nat too large mass, see the model test)."""
    dec = _sliver_decoder()
    part = exactdgn.partition(dec)
    for r in range(len(part)):
        C, e = part.halfspaces(r)
        ip = part.interior_points[r]
        for i, j in itertools.combinations(range(len(e)), 2):
            M = C[[i, j]]
            if abs(np.linalg.det(M)) < 1e-300:
                continue
            v = np.linalg.solve(M, e[[i, j]])
            if np.any(C @ v > e + 1e-9 * (1 + np.abs(e))):
                continue  # not a corner of the H-representation
            z = (v + 1e-3 * (ip - v))[None]  # just inside, next to the corner
            np.testing.assert_allclose(
                z @ part.A[r].T + part.b[r], dec(z), atol=1e-8, err_msg=f"region {r}"
            )
