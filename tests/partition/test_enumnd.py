"""Tests of the general-d adjacency enumerator (``partition(..., method="adjacency")``).

References that share no code with the enumerator: the d = 1 sweep and the d = 2 polygon
enumerators (different algorithms), the LP oracle in ``tests.oracles.enumerate`` (its own
forward pass, constraints and point-based crossing), a brute-force sign-vector enumeration with
Chebyshev LPs (no adjacency at all), forward passes at random points, and LPs written here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from exactdgn.decoder import Decoder
from exactdgn.partition import PartitionTooLargeError, partition
from exactdgn.partition._enumnd import enumerate_adjacency
from tests.oracles.enumerate import cell_constraints, enumerate_regions

# ---------------------------------------------------------------------------- decoders


def _degenerate_coincident(d: int) -> Decoder:
    """Duplicate, scaled, opposite and dead units, hyperplanes through 0, parallel ones."""
    rng = np.random.default_rng(7)
    w1, w2, w3 = rng.normal(size=(3, d))
    rows = [w1, w1, 2.0 * w1, w2, -w2, np.zeros(d), np.zeros(d), np.zeros(d), w3, w3]
    bias = [0.2, 0.2, 0.4, 0.1, -0.1, 0.3, -0.2, 0.0, 0.5, -0.5]
    if d >= 2:  # more hyperplanes through the origin (with w2 x + 0.1 = 0 not among them)
        rows += [rng.normal(size=d) for _ in range(d + 1)]
        bias += [0.0] * (d + 1)
    W1 = np.array(rows)
    n1 = len(W1)
    W2 = rng.normal(size=(3, n1))
    W2[0] = 0.0  # dead unit in layer 2 (identically zero, bias 0)
    W2[2] = 0.0  # reads unit 8 only (bias 0): identically zero wherever unit 8 is off
    W2[2, 8] = 1.3
    W3 = rng.normal(size=(4, 3))
    return Decoder(
        [W1, W2, W3],
        [np.array(bias), np.array([0.0, 0.05, 0.0]), np.zeros(4)],
        [("leaky_relu", 0.2), "relu"],
    )


def _relu_through_origin(d: int) -> Decoder:
    """ReLU, zero biases: every hyperplane passes through 0; identically-zero units abound."""
    rng = np.random.default_rng(11)
    sizes = [d, 5, 4, 3]
    Ws = [rng.normal(size=(n, m)) for m, n in itertools.pairwise(sizes)]
    Ws[1][0] = 0.0  # reads unit 0 only: identically zero wherever unit 0 is off
    Ws[1][0, 0] = 0.8
    return Decoder(Ws, [np.zeros(n) for n in sizes[1:]], ["relu", "relu"])


def _abs_net(d: int) -> Decoder:
    """abs activations fold the space: bent hyperplanes meet the folding ones."""
    return Decoder.random([d, 4, 3, 2], activation="abs", seed=5)


def _width_one(d: int) -> Decoder:
    return Decoder.random([d, 4, 1, 3, 1, 2], activation="leaky_relu", seed=3)


def _prelu_mixed(d: int) -> Decoder:
    """Per-unit PReLU slopes, one of them 1 (an affine unit that never splits)."""
    rng = np.random.default_rng(13)
    W1, W2, W3 = rng.normal(size=(5, d)), rng.normal(size=(3, 5)), rng.normal(size=(2, 3))
    c1, c2 = rng.normal(size=5) * 0.3, rng.normal(size=3) * 0.3
    acts = [("prelu", np.array([0.1, 1.0, -0.5, 0.0, 0.3])), ("identity", 0.0)]
    return Decoder([W1, W2, W3], [c1, c2, np.zeros(2)], acts)


DEGENERATE = {
    "coincident": _degenerate_coincident,
    "relu_origin": _relu_through_origin,
    "abs": _abs_net,
    "width_one": _width_one,
    "prelu_mixed": _prelu_mixed,
}


# ---------------------------------------------------------------------------- references


def _brute_force_patterns(decoder: Decoder) -> set[bytes]:
    """Every kink pattern whose cell is full-dimensional: all 2^n sign vectors, one LP each.

    The cell of pattern ``p`` is ``{z : a_i(z) > 0 (on), a_i(z) <= 0 (off)}`` with the maps
    of ``p``; it is full-dimensional iff a ball of positive radius fits (Chebyshev LP; the
    radius is capped at 1). A unit with a constant pre-activation ``c`` needs ``c > 0`` when on
    and ``c <= 0`` when off.
    """
    kink = decoder.kink_mask
    kidx = np.nonzero(kink)[0]
    d = decoder.latent_dim
    found = set()
    for bits in itertools.product([False, True], repeat=len(kidx)):
        P = np.ones(decoder.n_units, dtype=bool)
        P[kidx] = bits
        rows, rhs = [], []
        ok = True
        for layer in range(len(decoder.hidden_sizes)):
            sl = decoder.unit_slices[layer]
            M = decoder.layer_maps(P[None], layer)[0]
            for j in range(sl.stop - sl.start):
                u = sl.start + j
                if not kink[u]:
                    continue
                w, c = M[j, :d], M[j, d]
                nrm = np.linalg.norm(w)
                if nrm <= 1e-12:
                    ok &= (c > 1e-12) if P[u] else (c <= 1e-12)
                    continue
                s = 1.0 if P[u] else -1.0  # s (w z + c) >= r |w|
                rows.append(np.r_[-s * w / nrm, 1.0])
                rhs.append(s * c / nrm)
        if not ok:
            continue
        if rows:
            res = linprog(
                np.r_[np.zeros(d), -1.0],
                A_ub=np.array(rows),
                b_ub=np.array(rhs),
                bounds=[(None, None)] * d + [(None, 1.0)],
                method="highs",
            )
            assert res.status == 0
            if not -res.fun > 1e-8 * (1 + np.abs(res.x[:d]).max()):
                continue
        found.add(np.packbits(P[kidx]).tobytes())
    return found


def _keys(decoder: Decoder, patterns: np.ndarray) -> list[bytes]:
    kidx = np.nonzero(decoder.kink_mask)[0]
    return [np.packbits(p[kidx]).tobytes() for p in np.asarray(patterns, dtype=bool)]


# ---------------------------------------------------------------------------- invariants


def _check_invariants(dec: Decoder, part, rng, n_lp_regions: int = 40) -> None:
    d, R = dec.latent_dim, len(part)
    keys = _keys(dec, part.patterns)
    assert len(set(keys)) == R, "a pattern is listed twice"
    # interior points: their forward pattern is the stored one, strictly inside the facets
    np.testing.assert_array_equal(dec.activation_pattern(part.interior_points), part.patterns)
    normals, offsets = part.padded_halfspaces()
    slack = offsets - np.einsum("rfd,rd->rf", normals, part.interior_points)
    radius = slack.min(axis=1, initial=np.inf)
    assert np.all(radius > 1e-9)
    # g(z) = A_r z + b_r at random points inside each region
    u = rng.standard_normal((R, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    Z = part.interior_points + 0.5 * np.minimum(radius, 1.0)[:, None] * u
    np.testing.assert_array_equal(part.locate(Z), np.arange(R))
    X = dec(Z)
    Xa = np.einsum("rkd,rd->rk", part.A, Z) + part.b
    np.testing.assert_allclose(Xa, X, rtol=1e-10, atol=1e-10 * (1 + np.abs(X).max()))
    # coverage: each random point (|z| up to 1e4) lies in exactly one region's halfspaces,
    # and that region is the one found by pattern lookup
    scales = np.repeat([0.3, 1.0, 3.0, 30.0, 1e3, 1e4], 100)
    Zc = rng.standard_normal((len(scales), d)) * scales[:, None]
    inside = np.all(
        np.einsum("rfd,nd->nrf", normals, Zc) <= offsets[None] + 1e-9 * (1 + np.abs(offsets)),
        axis=2,
    )
    np.testing.assert_array_equal(inside.sum(axis=1), 1)
    np.testing.assert_array_equal(np.argmax(inside, axis=1), part.locate(Zc))
    # neighbours: every facet has one, and the relation is symmetric across the same hyperplane
    owner = np.repeat(np.arange(R), part.n_facets)
    nb = part.facet_neighbors
    assert np.all(nb >= 0)
    for f in range(len(nb)):
        r2 = nb[f]
        sl = slice(part.facet_ptr[r2], part.facet_ptr[r2 + 1])
        back = np.nonzero(part.facet_neighbors[sl] == owner[f])[0]
        assert len(back) == 1
        g = sl.start + back[0]
        np.testing.assert_allclose(part.facet_normals[g], -part.facet_normals[f], atol=1e-9)
        np.testing.assert_allclose(
            part.facet_offsets[g],
            -part.facet_offsets[f],
            atol=1e-9 * (1 + abs(part.facet_offsets[f])),
        )
    # boundedness: recession cone {y : C y <= 0} is {0} (own LP per region)
    for r in rng.choice(R, size=min(R, n_lp_regions), replace=False):
        C, _ = part.halfspaces(r)
        assert part.bounded[r] == _recession_is_zero(C)
    # facets are non-redundant: a relative-interior point strictly inside all other kink
    # constraints (from the oracle's independent cell constraints, duplicates merged)
    for r in rng.choice(R, size=min(R, n_lp_regions), replace=False):
        G, h, _, ok = cell_constraints(dec, part.patterns[r])
        assert ok
        C, e = part.halfspaces(r)
        for n, off in zip(C, e, strict=True):
            same = (np.abs(G - n).max(axis=1) <= 1e-8) & (np.abs(h - off) <= 1e-8 * (1 + abs(off)))
            assert same.sum() == 1, "a facet is not one of the region's hyperplanes"
            assert _facet_margin(G[~same], h[~same], n, off) > 1e-7


def _recession_is_zero(C: np.ndarray) -> bool:
    d = C.shape[1]
    if len(C) == 0:
        return False
    for j in range(d):
        for s in (1.0, -1.0):
            res = linprog(
                -s * np.eye(d)[j],
                A_ub=C,
                b_ub=np.zeros(len(C)),
                bounds=[(-1, 1)] * d,
                method="highs",
            )
            assert res.status == 0
            if -res.fun > 1e-9:
                return False
    return True


def _facet_margin(G, h, n, off) -> float:
    """max t s.t. n z = off, G z + t <= h (t <= 1): > 0 iff the facet is (d-1)-dimensional."""
    d = len(n)
    res = linprog(
        np.r_[np.zeros(d), -1.0],
        A_ub=np.c_[G, np.ones(len(G))] if len(G) else None,
        b_ub=h if len(G) else None,
        A_eq=np.r_[n, 0.0][None],
        b_eq=[off],
        bounds=[(None, None)] * d + [(None, 1.0)],
        method="highs",
    )
    assert res.status == 0
    return -res.fun


def _compare_with(dec, part, ref) -> None:
    """Same regions (patterns) and the same boundedness as another enumeration."""
    a = dict(zip(_keys(dec, part.patterns), part.bounded, strict=True))
    b = dict(zip(_keys(dec, ref.patterns), ref.bounded, strict=True))
    assert len(part) == len(ref)
    assert set(a) == set(b)
    assert all(a[k] == b[k] for k in a)


def _compare_with_oracle(dec, part) -> None:
    oracle = enumerate_regions(dec)
    assert len(part) == len(oracle)
    idx = np.array([oracle.find(p) for p in part.patterns])
    assert np.all(idx >= 0)
    assert len(np.unique(idx)) == len(part)
    np.testing.assert_array_equal(part.bounded, [oracle.regions[i].bounded for i in idx])
    np.testing.assert_array_equal(part.n_facets, [len(oracle.regions[i].offsets) for i in idx])
    # the neighbour across each facet is the oracle's neighbour across the same hyperplane
    for r, i in enumerate(idx):
        reg = oracle.regions[i]
        C, e = part.halfspaces(r)
        for k, (n, off) in enumerate(zip(C, e, strict=True)):
            j = np.argmin(np.abs(reg.normals - n).max(axis=1) + np.abs(reg.offsets - off))
            np.testing.assert_allclose(reg.normals[j], n, atol=1e-8)
            assert reg.neighbors[j] == idx[part.facet_neighbors[part.facet_ptr[r] + k]]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [0, 1])
def test_d1_matches_sweep(seed):
    dec = Decoder.random([1, 12, 10, 3], seed=seed)
    part = partition(dec, method="adjacency")
    ref = partition(dec, method="sweep")
    _compare_with(dec, part, ref)
    _check_invariants(dec, part, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_d2_matches_polygon(seed):
    dec = Decoder.random([2, 10, 8, 3], seed=seed)
    part = partition(dec, method="adjacency")
    ref = partition(dec, method="polygon")
    _compare_with(dec, part, ref)
    _check_invariants(dec, part, np.random.default_rng(seed))


@pytest.mark.parametrize(("d", "sizes"), [(3, [6, 5]), (4, [5, 4])])
def test_random_matches_oracle(d, sizes):
    dec = Decoder.random([d, *sizes, 3], seed=d)
    part = partition(dec, method="adjacency")
    _check_invariants(dec, part, np.random.default_rng(d))
    _compare_with_oracle(dec, part)


@pytest.mark.parametrize("d", [3, 4])
def test_random_matches_brute_force(d):
    """No adjacency in the reference: all 2^n sign vectors are tried."""
    dec = Decoder.random([d, 5, 4, 2], seed=10 + d)
    part = partition(dec, method="adjacency")
    assert set(_keys(dec, part.patterns)) == _brute_force_patterns(dec)


def test_one_layer_arrangement_count():
    """n generic hyperplanes in R^d cut it into sum_{i<=d} C(n, i) regions."""
    from math import comb

    for d, n in [(3, 7), (4, 6)]:
        dec = Decoder.random([d, n, 2], seed=n)
        part = partition(dec, method="adjacency")
        assert len(part) == sum(comb(n, i) for i in range(d + 1))
        # bounded regions of a generic arrangement: C(n - 1, d)
        assert int(part.bounded.sum()) == comb(n - 1, d)


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_degenerate(name, d, monkeypatch):
    from exactdgn.partition import _enumnd

    def no_fallback(*args):
        raise AssertionError("the crossing rule proposed an empty neighbour")

    # coincident hyperplanes and identically-zero units are handled by the exact crossing
    # rule, without the point-based fallback
    monkeypatch.setattr(_enumnd, "_facet_point", no_fallback)
    dec = DEGENERATE[name](d)
    part = partition(dec, method="adjacency")
    _check_invariants(dec, part, np.random.default_rng(d), n_lp_regions=15)
    if d == 1:
        _compare_with(dec, part, partition(dec, method="sweep"))
    elif d == 2:
        _compare_with(dec, part, partition(dec, method="polygon"))
    else:
        _compare_with_oracle(dec, part)
    if int(dec.kink_mask.sum()) <= 12:
        assert set(_keys(dec, part.patterns)) == _brute_force_patterns(dec)


@pytest.mark.parametrize("d", [1, 3])
def test_no_hidden_layer_or_no_kink(d):
    for dec in (
        Decoder.random([d, 4], seed=0),
        Decoder.random([d, 5, 3], activation="identity", seed=0),
    ):
        part = partition(dec, method="adjacency")
        assert len(part) == 1
        assert part.facet_ptr.tolist() == [0, 0]
        assert not part.bounded[0]
        Z = np.random.default_rng(0).standard_normal((20, d)) * 100
        np.testing.assert_array_equal(part.locate(Z), 0)
        np.testing.assert_allclose(Z @ part.A[0].T + part.b[0], dec(Z), rtol=1e-12, atol=1e-12)


def test_all_kink_units_constant():
    """Dead first layer (zero rows): every kink unit is constant, one region without facets."""
    W1 = np.zeros((3, 3))
    dec = Decoder(
        [W1, np.ones((2, 3)), np.ones((2, 2))],
        [np.array([0.5, -0.5, 0.0]), np.array([0.0, -1.0]), np.zeros(2)],
        ["relu", ("leaky_relu", 0.1)],
    )
    part = partition(dec, method="adjacency")
    assert len(part) == 1
    assert part.facet_ptr.tolist() == [0, 0]
    Z = np.random.default_rng(1).standard_normal((10, 3)) * 10
    np.testing.assert_array_equal(part.locate(Z), 0)
    np.testing.assert_array_equal(part.patterns[0], dec.activation_pattern(Z[:1])[0])


def test_budget_is_checked():
    dec = Decoder.random([3, 8, 8, 2], seed=0)
    seen = []

    def check(n):
        seen.append(n)
        if n > 20:
            raise PartitionTooLargeError("too many")

    with pytest.raises(PartitionTooLargeError):
        enumerate_adjacency(dec, check)
    assert seen and seen[-1] > 20


@pytest.mark.parametrize("d", [2])
def test_point_based_crossing_fallback(monkeypatch, d):
    """If every flipped pattern is empty, stepping across facet points still finds everything.

    The patched crossing turns on unit 0 and off unit 1, whose hyperplanes are identical in
    the coincident decoder, so every proposed neighbour is empty and only the LP-based
    fallback can discover regions and neighbours.
    """
    from exactdgn.partition import _enumnd

    dec = _degenerate_coincident(d)
    expected = partition(dec, method="adjacency")

    def contradiction(decoder, pattern, units, null_units, n):
        new = pattern.copy()
        new[0], new[1] = True, False
        return new

    monkeypatch.setattr(_enumnd, "_cross_pattern", contradiction)
    part = partition(dec, method="adjacency")
    _check_invariants(dec, part, np.random.default_rng(d), n_lp_regions=5)
    order = [_keys(dec, part.patterns).index(k) for k in _keys(dec, expected.patterns)]
    np.testing.assert_array_equal(part.n_facets[order], expected.n_facets)
    inv = np.argsort(order)
    for r, q in enumerate(order):
        sl = slice(part.facet_ptr[q], part.facet_ptr[q + 1])
        se = slice(expected.facet_ptr[r], expected.facet_ptr[r + 1])
        np.testing.assert_allclose(part.facet_normals[sl], expected.facet_normals[se])
        np.testing.assert_array_equal(inv[part.facet_neighbors[sl]], expected.facet_neighbors[se])


@pytest.mark.parametrize("eps", [1e-8, 1e-9])
def test_nearly_parallel_hyperplanes_cover_the_space(eps):
    """Two first-layer hyperplanes 1e-8 / 1e-9 apart (normals and offsets): the region where
    both units are on must keep one of them as a facet (each is redundant *given the other*
    within the LP tolerance, and dropping both made that region's H-representation swallow
    its neighbours: prior masses summed to 1.014), and no region may be lost behind the
    sliver between them (1e-9: 1% of the prior mass had no region)."""
    dec = Decoder.random([3, 6, 6, 4], activation="relu", seed=7)
    W, b = [w.copy() for w in dec.weights], [c.copy() for c in dec.biases]
    W[0][2] = W[0][0] + eps * np.array([1.0, -1.0, 0.5])
    b[0][2] = b[0][0] + eps
    dec = Decoder(W, b, ["relu", "relu"])
    part = partition(dec, method="adjacency")
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((3000, 3)) * np.repeat([1.0, 3.0, 30.0], 1000)[:, None]
    idx = part.locate(Z)
    assert np.all(idx >= 0), "points in no region"
    # each point satisfies exactly one region's H-representation: its own
    normals, offsets = part.padded_halfspaces()
    inside = np.all(
        np.einsum("rfd,nd->nrf", normals, Z) <= offsets[None] + 1e-9 * (1 + np.abs(offsets)),
        axis=2,
    )
    np.testing.assert_array_equal(inside.sum(axis=1), 1)
    np.testing.assert_array_equal(np.argmax(inside, axis=1), idx)
    # the regions' H-representations hold exactly their pattern's points (forward passes)
    for r in np.unique(idx):
        C, e = part.halfspaces(r)
        sel = np.all(Z @ C.T <= e, axis=1)
        np.testing.assert_array_equal(part.locate(Z[sel]), r)


@pytest.mark.parametrize("method", ["adjacency", "auto"])
def test_a_large_weight_does_not_hide_a_small_gradient(method):
    """A unit was taken as constant where its gradient was below 1e-13 of the product of the
    layers' norms: with one 1e6 weight in each of two layers that is 0.1, and a real kink of
    gradient 0.014 was never cut (8 regions of 14, ``A z + b`` off ``g(z)`` by 0.16). Now
    relative to the size of the terms that make up each gradient."""
    W1 = np.diag([1e6, 1.0, 1.0])
    W2 = np.array([[0.0, 0.01, 0.01], [1e6, 0.0, 0.0]])
    dec = Decoder(
        [W1, W2, np.ones((1, 2))],
        [np.zeros(3), np.array([-0.005, 0.0]), np.zeros(1)],
        ["leaky_relu", "leaky_relu"],
    )
    part = partition(dec, method=method)
    _compare_with_oracle(dec, part)
    Z = np.random.default_rng(0).normal(scale=3, size=(5000, 3))
    r = part.locate(Z)
    got = np.einsum("nij,nj->ni", part.A[r], Z) + part.b[r]
    np.testing.assert_allclose(got, dec(Z), rtol=1e-12, atol=1e-12 * np.abs(dec(Z)).max())
