"""Decoder: forward pass, activations, patterns, affine maps, input validation.

References are independent of ``exactdgn.decoder``: hand-written numpy formulas per activation,
``torch.nn.functional`` in float64, torch autograd Jacobians, and the oracle's own forward pass
and pattern -> affine-map recursion (``tests/oracles/enumerate.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from exactdgn import Activation, Decoder
from tests.oracles.enumerate import pattern_output_map, reference_forward

KINDS = ("relu", "leaky_relu", "prelu", "abs", "identity")


def _act_spec(kind: str, n: int, rng: np.random.Generator):
    if kind == "leaky_relu":
        return ("leaky_relu", float(rng.uniform(-0.5, 0.9)))
    if kind == "prelu":
        return Activation("prelu", rng.uniform(-1.0, 1.0, n))
    return kind


def make_decoder(rng, sizes, kinds, bias_std=0.5) -> Decoder:
    """Random decoder with the given layer sizes and one activation kind per hidden layer."""
    Ws = [rng.standard_normal((n, m)) / np.sqrt(m) for m, n in itertools.pairwise(sizes)]
    cs = [bias_std * rng.standard_normal(n) for n in sizes[1:]]
    acts = [_act_spec(k, n, rng) for k, n in zip(kinds, sizes[1:-1], strict=True)]
    return Decoder(Ws, cs, acts)


def hand_activation(kind, a, slope):
    """Activation written out per kind (slope: alpha or per-unit alphas)."""
    if kind == "relu":
        return np.maximum(a, 0.0)
    if kind == "leaky_relu":
        return np.where(a > 0, a, slope * a)
    if kind == "prelu":
        return np.where(a > 0, a, np.asarray(slope)[None, :] * a)
    if kind == "abs":
        return np.abs(a)
    return a


def torch_activation(kind, a, slope):
    F = torch.nn.functional
    if kind == "relu":
        return F.relu(a)
    if kind == "leaky_relu":
        return F.leaky_relu(a, slope)
    if kind == "prelu":
        return F.prelu(a, torch.as_tensor(np.asarray(slope, dtype=np.float64)))
    if kind == "abs":
        return torch.abs(a)
    return a


def sample_latent(rng, n, d):
    """Latent points at several scales, including |z| up to 1e4."""
    scales = 10.0 ** rng.uniform(-2, 4, n)
    return rng.standard_normal((n, d)) * scales[:, None]


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("d,D", [(1, 1), (2, 7), (5, 3)])
def test_forward_is_float64_with_shape_n_by_D(rng, d, D):
    dec = make_decoder(rng, [d, 6, 4, D], ["relu", "abs"])
    for Z in (
        rng.standard_normal((9, d)).astype(np.float32),
        rng.integers(-3, 3, (9, d)),
        rng.standard_normal((9, d)).tolist(),
    ):
        X = dec.forward(Z)
        assert X.dtype == np.float64
        assert X.shape == (9, D)
        np.testing.assert_allclose(X, dec(Z), rtol=0, atol=0)
        # float32 inputs are widened, not computed in float32
        ref = reference_forward(dec, np.asarray(Z, dtype=np.float64))[0]
        np.testing.assert_allclose(X, ref, rtol=1e-14, atol=1e-14)
    assert dec.forward(np.zeros((0, d))).shape == (0, D)


@pytest.mark.parametrize("kind", KINDS)
def test_each_activation_matches_hand_formula_and_torch(rng, kind):
    d, n, D = 3, 11, 4
    W1, c1 = rng.standard_normal((n, d)), rng.standard_normal(n)
    W2, c2 = rng.standard_normal((D, n)), rng.standard_normal(D)
    slope = {"leaky_relu": 0.23, "prelu": rng.uniform(-2, 2, n)}.get(kind, 0.0)
    spec = (kind, slope) if kind in ("leaky_relu", "prelu") else kind
    dec = Decoder([W1, W2], [c1, c2], [spec])
    Z = sample_latent(rng, 500, d)
    a = Z @ W1.T + c1
    expect = hand_activation(kind, a, slope) @ W2.T + c2
    X = dec(Z)
    np.testing.assert_allclose(X, expect, rtol=1e-13, atol=1e-13 * np.abs(expect).max())
    at = torch.as_tensor(a)
    tt = torch_activation(kind, at, slope).numpy() @ W2.T + c2
    np.testing.assert_allclose(X, tt, rtol=1e-13, atol=1e-13 * np.abs(expect).max())
    # the pattern is a > 0 for kink units, all True for the (affine) identity
    P = dec.activation_pattern(Z)
    assert P.dtype == bool and P.shape == (500, n)
    if kind == "identity":
        assert P.all()
    else:
        np.testing.assert_array_equal(P, a > 0)


def test_leaky_relu_slope_is_used_and_prelu_per_unit():
    W1 = np.array([[1.0], [1.0], [1.0]])
    z = np.array([[-2.0]])
    eye = np.eye(3)
    dec = Decoder([W1, eye], [np.zeros(3), np.zeros(3)], [("leaky_relu", 0.3)])
    np.testing.assert_allclose(dec(z), [[-0.6, -0.6, -0.6]], rtol=1e-15)
    dec = Decoder([W1, eye], [np.zeros(3), np.zeros(3)], [("prelu", [0.1, -0.5, 2.0])])
    np.testing.assert_allclose(dec(z), [[-0.2, 1.0, -4.0]], rtol=1e-15)
    np.testing.assert_allclose(dec(-z), [[2.0, 2.0, 2.0]], rtol=1e-15)


def test_sizes_and_unit_counts(rng):
    dec = make_decoder(rng, [3, 5, 1, 7, 2], ["relu", "identity", ("abs")])
    assert dec.latent_dim == 3
    assert dec.output_dim == 2
    assert dec.n_units == 13
    assert dec.layer_sizes == [3, 5, 1, 7, 2]
    assert dec.kink_mask.tolist() == [True] * 5 + [False] + [True] * 7
    flat = Decoder([rng.standard_normal((4, 2))], [np.zeros(4)], [])
    assert flat.n_units == 0 and flat.latent_dim == 2 and flat.output_dim == 4
    assert flat.activation_pattern(np.ones((3, 2))).shape == (3, 0)


MIXED = [
    ([2, 9, 6, 3], ["relu", "leaky_relu"]),
    ([3, 7, 7, 7, 5], ["abs", "prelu", "relu"]),
    ([4, 5, 1, 6, 2], ["leaky_relu", "relu", "prelu"]),
    ([1, 8, 8, 1], ["identity", "abs"]),
    ([6, 4], []),
]


@pytest.mark.parametrize("sizes,kinds", MIXED)
def test_pattern_and_affine_map_agree_with_forward(rng, sizes, kinds):
    dec = make_decoder(rng, sizes, kinds)
    Z = sample_latent(rng, 2000, sizes[0])
    X = dec(Z)
    P = dec.activation_pattern(Z)
    X_ref, pre_ref, P_ref = reference_forward(dec, Z)
    np.testing.assert_allclose(X, X_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(P, P_ref)
    X2, P2 = dec.forward(Z, return_pattern=True)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(P2, P)
    A, b = dec.affine_map(P)
    assert A.shape == (len(Z), sizes[-1], sizes[0]) and b.shape == (len(Z), sizes[-1])
    g = np.einsum("nij,nj->ni", A, Z) + b
    tol = 1e-12 * (1 + np.abs(X).max(axis=1, keepdims=True))
    assert np.all(np.abs(g - X) <= tol)
    # same map from the oracle's independent recursion (first 50 points)
    for n in range(50):
        A_ref, b_ref = pattern_output_map(dec, P[n])
        np.testing.assert_allclose(A[n], A_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b[n], b_ref, rtol=1e-12, atol=1e-12)
    # layer maps reproduce every hidden pre-activation
    d = sizes[0]
    for k, sl in enumerate(dec.unit_slices):
        M = dec.layer_maps(P, k)
        pre = np.einsum("nij,nj->ni", M[:, :, :d], Z) + M[:, :, d]
        scale = 1 + np.abs(pre_ref[:, sl]).max(axis=1, keepdims=True) + np.abs(Z).max(1)[:, None]
        assert np.all(np.abs(pre - pre_ref[:, sl]) <= 1e-12 * scale)


@pytest.mark.parametrize("sizes,kinds", MIXED[:3])
def test_jacobian_matches_torch_autograd(rng, sizes, kinds):
    dec = make_decoder(rng, sizes, kinds)
    Z = rng.standard_normal((20, sizes[0])) * 3
    J = dec.jacobian(Z)
    net = dec.to_torch()
    for n in range(len(Z)):
        Jt = torch.autograd.functional.jacobian(
            lambda z: net(z[None, :])[0], torch.as_tensor(Z[n])
        ).numpy()
        np.testing.assert_allclose(J[n], Jt, rtol=1e-12, atol=1e-12)


@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    d=st.integers(1, 4),
    D=st.integers(1, 4),
    kinds=st.lists(st.sampled_from(KINDS), min_size=3, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_affine_map_reproduces_forward(sizes, d, D, kinds, seed):
    rng = np.random.default_rng(seed)
    layer_sizes = [d, *sizes, D]
    dec = make_decoder(rng, layer_sizes, [kinds[i % 3] for i in range(len(sizes))])
    Z = sample_latent(rng, 64, d)
    X = dec(Z)
    A, b = dec.affine_map(dec.activation_pattern(Z))
    g = np.einsum("nij,nj->ni", A, Z) + b
    assert np.all(np.abs(g - X) <= 1e-12 * (1 + np.abs(X)))
    np.testing.assert_array_equal(dec.activation_pattern(Z), reference_forward(dec, Z)[2])


def test_single_pattern_vector_is_accepted(rng):
    dec = make_decoder(rng, [2, 4, 3], ["relu"])
    P = dec.activation_pattern(np.array([[0.3, -0.2]]))
    A1, b1 = dec.affine_map(P[0])
    A2, b2 = dec.affine_map(P)
    np.testing.assert_array_equal(A1, A2)
    np.testing.assert_array_equal(b1, b2)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method", ["forward", "activation_pattern", "jacobian"])
def test_latent_of_wrong_shape_is_a_clear_value_error(rng, method):
    dec = make_decoder(rng, [3, 4, 2], ["relu"])
    f = getattr(dec, method)
    with pytest.raises(ValueError, match=r"must be 2-D, got shape \(3,\).*[Rr]eshape"):
        f(np.zeros(3))
    with pytest.raises(ValueError, match=r"has 2 latent dims but 3 are expected"):
        f(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"must be 2-D, got shape \(2, 5, 3\)"):
        f(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"numeric array"):
        f([["a", "b", "c"]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_latent_with_nan_or_inf_is_a_clear_value_error(rng, bad):
    dec = make_decoder(rng, [3, 4, 2], ["relu"])
    Z = np.zeros((6, 3))
    Z[4, 1] = bad
    with pytest.raises(ValueError, match=r"1 NaN or infinite values \(first bad rows: \[4\]\)"):
        dec(Z)
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        dec.activation_pattern(Z)


def test_bad_patterns_and_constructor_arguments(rng):
    dec = make_decoder(rng, [2, 4, 3], ["relu"])
    with pytest.raises(ValueError, match=r"patterns must have shape \(R, 4\)"):
        dec.affine_map(np.ones((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        dec.affine_map(np.full((1, 4), 2))
    W = [np.ones((4, 2)), np.ones((3, 4))]
    with pytest.raises(ValueError, match="activations"):
        Decoder(W, [np.zeros(4), np.zeros(3)], [])
    with pytest.raises(ValueError, match="takes 5 inputs"):
        Decoder([np.ones((4, 2)), np.ones((3, 5))], [np.zeros(4), np.zeros(3)], ["relu"])
    with pytest.raises(ValueError, match="unknown activation"):
        Decoder(W, [np.zeros(4), np.zeros(3)], ["tanh"])
    with pytest.raises(ValueError, match="non-finite"):
        Decoder([np.full((3, 2), np.nan)], [np.zeros(3)], [])
    with pytest.raises(ValueError, match="prelu has 3 slopes"):
        Decoder(W, [np.zeros(4), np.zeros(3)], [("prelu", [0.1, 0.2, 0.3])])


def test_prelu_slopes_are_copied_not_aliased():
    """Changing the caller's slope array after construction changed ``activations`` (and so
    ``to_torch`` and ``copy``) but not the decoder's forward pass."""
    slopes = np.array([0.1, 0.2, 0.3])
    dec = Decoder(
        [np.ones((3, 2)), np.ones((2, 3))],
        [np.zeros(3), np.zeros(2)],
        [Activation("prelu", slopes)],
    )
    Z = -np.ones((1, 2))
    before = dec(Z)
    slopes[0] = 0.9
    np.testing.assert_array_equal(dec.activations[0].negative_slope, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(dec(Z), before)
    out = dec.to_torch()(torch.from_numpy(Z)).detach().numpy()
    np.testing.assert_allclose(out, before, rtol=1e-15)
    with pytest.raises(ValueError, match="read-only"):
        dec.activations[0].negative_slope[1] = 0.7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer_sizes": [2.5, 3, 1]}, r"layer_sizes must be positive integers.*\[2\.5, 3, 1\]"),
        ({"layer_sizes": [2, 3.0, 1]}, r"layer_sizes must be positive integers"),
        ({"layer_sizes": [0, 3, 1]}, r"layer_sizes must be positive integers.*latent_dim >= 1"),
        ({"layer_sizes": [2, -3, 1]}, r"layer_sizes must be positive integers"),
        ({"layer_sizes": [2, True, 1]}, r"layer_sizes must be positive integers"),
        ({"layer_sizes": [2]}, r"at least 2 sizes"),
        ({"layer_sizes": 3}, r"layer_sizes must be a sequence"),
        ({"layer_sizes": "231"}, r"layer_sizes must be a sequence"),
        ({"bias_std": -1.0}, r"bias_std must be finite and >= 0, got -1\.0"),
        ({"bias_std": np.nan}, r"bias_std must be finite and >= 0"),
        ({"bias_std": np.inf}, r"bias_std must be finite and >= 0"),
        ({"bias_std": "0.1"}, r"bias_std must be finite and >= 0"),
        ({"negative_slope": np.nan}, r"negative_slope must be a finite number"),
        ({"negative_slope": [0.1, 0.2]}, r"negative_slope must be a finite number"),
        ({"activation": "tanh"}, r"unknown activation 'tanh'"),
    ],
)
def test_random_validates_its_arguments(kwargs, match):
    """A negative bias_std was numpy's "scale < 0"; non-integer sizes were truncated; an unknown
    activation passed silently when there was no hidden layer."""
    args = {"layer_sizes": [2, 3, 1]} | kwargs
    sizes = args.pop("layer_sizes")
    with pytest.raises(ValueError, match=match):
        Decoder.random(sizes, **args)
    if "activation" in kwargs:  # also without a hidden layer
        with pytest.raises(ValueError, match=match):
            Decoder.random([2, 1], **args)


def test_random_accepts_numpy_integer_sizes_and_zero_bias_std():
    dec = Decoder.random(np.array([2, 3, 1]), bias_std=0.0, negative_slope=np.float32(0.2), seed=0)
    assert dec.layer_sizes == [2, 3, 1]
    assert all(np.all(c == 0) for c in dec.biases)
    assert dec.activations[0].negative_slope == pytest.approx(0.2)


def test_layer_maps_checks_the_pattern_width(rng):
    """A pattern narrower than the earlier layers was a numpy broadcast error."""
    dec = make_decoder(rng, [2, 4, 3, 2], ["relu", "abs"])
    with pytest.raises(ValueError, match=r"layer 2 need shape \(R, n\) with n >= 7 .*\(1, 2\)"):
        dec.layer_maps(np.ones((1, 2), dtype=bool), 2)
    with pytest.raises(ValueError, match=r"layer 1 need shape \(R, n\) with n >= 4 .*\(3,\)"):
        dec.layer_maps(np.ones(3, dtype=bool), 1)
    with pytest.raises(ValueError, match=r"with n >= 4 .*\(1, 2, 4\)"):
        dec.layer_maps(np.ones((1, 2, 4), dtype=bool), 1)
    with pytest.raises(ValueError, match="boolean"):
        dec.layer_maps(np.full((1, 7), 2), 2)
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 3\)"):
        dec.layer_maps(np.ones((1, 7), dtype=bool), 1.5)
    # layer 0 needs no pattern; extra columns are ignored, as documented
    Z = rng.standard_normal((5, 2))
    P = dec.activation_pattern(Z)
    np.testing.assert_array_equal(dec.layer_maps(P[:, :4], 1), dec.layer_maps(P, 1))
    assert dec.layer_maps(np.zeros((5, 0), dtype=bool), 0).shape == (5, 4, 3)


def test_construction_refuses_complex_and_empty_dimensions():
    """Complex weights lost their imaginary part with only a ComplexWarning; a latent or output
    dimension of 0 was accepted and crashed later inside numpy (partition, score_samples)."""
    with pytest.raises(ValueError, match="layer 0 has complex weights"):
        Decoder([np.array([[1 + 5j], [-1]])], [np.zeros(2)])
    with pytest.raises(ValueError, match="latent dimension and an output dimension of at least 1"):
        Decoder([np.zeros((2, 0))], [np.zeros(2)])
    with pytest.raises(ValueError, match="got 1 and 0"):
        Decoder([np.zeros((3, 1)), np.zeros((0, 3))], [np.zeros(3), np.zeros(0)], ["relu"])
    lin = torch.nn.Linear(1, 2, dtype=torch.complex128)
    with pytest.raises(ValueError, match="complex weights"):
        exactdgn_from_torch(lin)


def exactdgn_from_torch(module):
    from exactdgn.decoder import from_torch

    return from_torch(module)


def test_activation_defaults_and_hash():
    """Activation("leaky_relu") had slope 0 (a ReLU) where the name "leaky_relu" means 0.01;
    slopes 0.0 and -0.0 compared equal but hashed apart."""
    assert Activation("leaky_relu").negative_slope == 0.01
    assert (
        Activation("leaky_relu")
        == Decoder.random([1, 2, 1], activation="leaky_relu", negative_slope=0.01).activations[0]
    )
    assert Activation("prelu").negative_slope == 0.0 and Activation("relu").negative_slope == 0.0
    a, b = Activation("leaky_relu", 0.0), Activation("leaky_relu", -0.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
