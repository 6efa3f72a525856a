"""PyTorch import (``from_torch``) and export (``to_torch``).

Every import is checked against the torch module itself, evaluated in float64 on random inputs
(including large ones), to 1e-12 relative. Float32 modules are imported exactly: the decoder
agrees with the same module cast to float64.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import exactdgn
from exactdgn import Activation, Decoder, NotPiecewiseAffineError
from exactdgn.decoder import Abs, from_torch


def _latent(rng, n, d):
    return rng.standard_normal((n, d)) * (10.0 ** rng.uniform(-2, 3, n))[:, None]


def assert_matches_module(dec: Decoder, module, Z, input_shape=None, rtol=1e-12):
    """dec(Z) == module(Z) with the module evaluated in float64 (a copy, cast)."""
    m64 = copy.deepcopy(module).to(torch.float64).eval()
    zt = torch.as_tensor(Z)
    if input_shape is not None:
        zt = zt.reshape(len(Z), *input_shape)
    with torch.no_grad():
        ref = m64(zt).reshape(len(Z), -1).numpy()
    X = dec(Z)
    assert X.dtype == np.float64
    assert X.shape == ref.shape
    scale = 1.0 + np.abs(ref).max(axis=1, keepdims=True)
    err = np.abs(X - ref) / scale
    assert err.max() <= rtol, f"max relative error {err.max():.3g}"


def _randomize_bn(bn: nn.BatchNorm1d, gen: torch.Generator):
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.2)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen))
    return bn


@pytest.fixture
def gen():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------- import
def test_mlp_with_every_activation(rng, gen):
    prelu_c = nn.PReLU(6)
    with torch.no_grad():
        prelu_c.weight.copy_(torch.linspace(-0.8, 1.5, 6))
    module = nn.Sequential(
        nn.Linear(3, 8),
        nn.ReLU(),
        nn.Linear(8, 7),
        nn.LeakyReLU(0.17),
        nn.Linear(7, 5),
        nn.PReLU(),  # one shared slope (0.25)
        nn.Linear(5, 6),
        prelu_c,
        nn.Linear(6, 4),
        Abs(),
        nn.Linear(4, 4),
        nn.Identity(),
        nn.Linear(4, 2),
    )
    dec = Decoder.from_torch(module)
    assert dec.latent_dim == 3 and dec.output_dim == 2
    # Identity between two Linears is affine: the Linears are composed into one layer
    assert dec.hidden_sizes == [8, 7, 5, 6, 4]
    assert [a.kind for a in dec.activations] == ["relu", "leaky_relu", "prelu", "prelu", "abs"]
    np.testing.assert_allclose(dec.activations[1].negative_slope, 0.17, rtol=1e-7)
    np.testing.assert_allclose(dec.negative_slopes[15:20], 0.25)
    np.testing.assert_allclose(dec.negative_slopes[20:26], np.linspace(-0.8, 1.5, 6), rtol=1e-6)
    assert_matches_module(dec, module, _latent(rng, 3000, 3))
    # the module itself is float32: the import is exact, the float32 module is only close
    with torch.no_grad():
        y32 = module(torch.as_tensor(_latent(rng, 100, 3), dtype=torch.float32))
    assert y32.dtype == torch.float32


def test_nested_sequential_and_single_module(rng):
    inner = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 5), Abs()))
    module = nn.Sequential(
        nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(0.3)), inner, nn.Linear(5, 3)
    )
    dec = from_torch(module)
    assert dec.hidden_sizes == [4, 6, 5]
    assert_matches_module(dec, module, _latent(rng, 2000, 2))
    lin = nn.Linear(3, 2)
    dec = from_torch(lin)
    assert dec.n_units == 0
    assert_matches_module(dec, lin, _latent(rng, 100, 3))


def test_batchnorm_eval_is_folded_and_dropout_eval_is_dropped(rng, gen):
    module = nn.Sequential(
        nn.Linear(3, 6),
        _randomize_bn(nn.BatchNorm1d(6), gen),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(6, 5),
        _randomize_bn(nn.BatchNorm1d(5, affine=False), gen),
        nn.LeakyReLU(0.1),
        nn.Dropout(0.2),
        nn.Linear(5, 2),
    ).eval()
    dec = from_torch(module)
    assert dec.hidden_sizes == [6, 5]  # BN folded into the preceding Linear
    assert_matches_module(dec, module, _latent(rng, 2000, 3))


def test_conv1d_with_input_shape_and_batchnorm_on_channels(rng, gen):
    module = nn.Sequential(
        nn.Conv1d(2, 3, kernel_size=3, padding=1),
        _randomize_bn(nn.BatchNorm1d(3), gen),
        nn.PReLU(3),
        nn.Conv1d(3, 2, kernel_size=2, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    with torch.no_grad():
        module[2].weight.copy_(torch.tensor([0.1, -0.4, 0.7]))
    dec = from_torch(module, input_shape=(2, 6))
    assert dec.latent_dim == 12 and dec.output_dim == 4
    # per-channel PReLU: each channel's slope repeated over its 6 positions
    np.testing.assert_allclose(dec.negative_slopes[:18], np.repeat([0.1, -0.4, 0.7], 6), rtol=1e-6)
    assert_matches_module(dec, module, _latent(rng, 1000, 12), input_shape=(2, 6))


def test_conv2d_and_conv_transpose2d_via_unflatten_after_linear(rng):
    module = nn.Sequential(
        nn.Linear(3, 2 * 4 * 4),
        nn.Unflatten(1, (2, 4, 4)),
        nn.ReLU(),
        nn.ConvTranspose2d(2, 3, kernel_size=3, stride=2, padding=1),
        nn.PReLU(3),
        nn.Conv2d(3, 2, kernel_size=3),
        Abs(),
        nn.Conv2d(2, 1, kernel_size=2),
        nn.Flatten(),
    )
    dec = Decoder.from_torch(module)
    assert dec.latent_dim == 3
    assert dec.output_dim == 4 * 4  # 4x4 -> 7x7 -> 5x5 -> 4x4
    assert dec.hidden_sizes == [32, 3 * 7 * 7, 2 * 5 * 5]
    assert_matches_module(dec, module, _latent(rng, 500, 3))
    # without a final Flatten the output is flattened in C order
    dec2 = from_torch(module[:-1])
    assert_matches_module(dec2, module[:-1], _latent(rng, 200, 3))


def test_conv_without_known_input_shape_asks_for_it():
    module = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        from_torch(module)


# ---------------------------------------------------------------------------- refusals
class _Custom(nn.Module):
    def forward(self, x):
        return 2 * x


def test_custom_affine_module_is_traced():
    """A custom module of supported operations is imported (torch.fx), not refused."""
    module = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 5), _Custom()))
    dec = from_torch(module)
    Z = np.random.default_rng(0).standard_normal((50, 2))
    with torch.no_grad():
        ref = module.double()(torch.as_tensor(Z)).numpy()
    assert np.allclose(dec(Z), ref, atol=1e-12)


@pytest.mark.parametrize(
    "bad,name",
    [
        (nn.Tanh(), "Tanh"),
        (nn.Sigmoid(), "Sigmoid"),
        (nn.GELU(), "GELU"),
        (nn.Softplus(), "Softplus"),
        (nn.BatchNorm1d(5), "BatchNorm1d"),  # training mode
        (nn.Dropout(0.3), "Dropout"),  # training mode
    ],
)
def test_non_piecewise_affine_layers_raise_naming_the_layer(bad, name):
    module = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 5), bad))
    assert module.training
    with pytest.raises(NotPiecewiseAffineError, match=rf"'2\.1' \({name}\)") as exc:
        from_torch(module)
    if name in ("Tanh", "Sigmoid"):  # the message lists what is supported, traced ones too
        assert "ReLU6, Hardtanh, MaxPool1d/2d" in str(exc.value)
    assert issubclass(exactdgn.NotPiecewiseAffineError, Exception)


def test_training_mode_message_says_call_eval():
    module = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5))
    with pytest.raises(NotPiecewiseAffineError, match=r"'1' \(BatchNorm1d\).*eval\(\)"):
        from_torch(module)
    module = nn.Sequential(nn.Linear(2, 5), nn.Dropout(0.1))
    with pytest.raises(NotPiecewiseAffineError, match=r"'1' \(Dropout\).*eval\(\)"):
        from_torch(module)
    dec = from_torch(module.eval())  # fine once in eval mode
    assert dec.n_units == 0


def test_stale_reparametrised_weights_are_refused(rng):
    """The old hook form of ``weight_norm`` keeps a ``weight`` attribute that only a forward
    call refreshes: after ``load_state_dict`` the import used the module as built (outputs
    3.97 off, a log p(x) of -42.1 where the module's own is -1.25), and inside a custom module
    it failed in ``deepcopy`` with torch's own message. Both are refused, naming the layer and
    the cure; so are the old ``spectral_norm`` and a parametrized one in training mode. The
    parametrized forms in eval mode are read as the forward computes them; a module on the
    'meta' device (no values) is named as such."""
    import warnings

    def build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the old form is deprecated
            return nn.Sequential(nn.utils.weight_norm(nn.Linear(1, 6)), nn.ReLU(), nn.Linear(6, 3))

    trained = build()
    with torch.no_grad():
        trained[0].weight_g.mul_(3.0)
    stale = build()
    stale.load_state_dict(trained.state_dict())
    with pytest.raises(
        NotPiecewiseAffineError,
        match=r"'0' \(Linear\) uses torch\.nn\.utils\.weight_norm.*remove_weight_norm",
    ):
        from_torch(stale)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = build()[0]

        def forward(self, z):
            return self.inner(z) + torch.relu(z)

    with pytest.raises(NotPiecewiseAffineError, match=r"'inner' \(Linear\) uses .*weight_norm"):
        from_torch(Residual())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old_sn = nn.Sequential(nn.utils.spectral_norm(nn.Linear(1, 6)), nn.ReLU()).eval()
    with pytest.raises(NotPiecewiseAffineError, match="remove_spectral_norm"):
        from_torch(old_sn)
    sn = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(1, 6)), nn.ReLU())
    with pytest.raises(NotPiecewiseAffineError, match=r"training mode.*eval\(\)"):
        from_torch(sn)
    Z = _latent(rng, 50, 1)
    for module in (
        sn.eval(),
        nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(1, 4)), nn.ReLU()),
    ):
        assert_matches_module(from_torch(module), module, Z)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="'meta' device"):
        from_torch(meta)


# ---------------------------------------------------------------------------- export / round trip
def _decoder_all_kinds(rng) -> Decoder:
    sizes = [3, 7, 6, 5, 5, 4, 2]
    Ws = [rng.standard_normal((n, m)) for m, n in itertools.pairwise(sizes)]
    cs = [rng.standard_normal(n) for n in sizes[1:]]
    acts = [
        "relu",
        ("leaky_relu", 0.37),
        Activation("prelu", rng.uniform(-1, 1, 5)),
        Activation("prelu", 0.6),
        "abs",
    ]
    return Decoder(Ws, cs, acts)


def test_to_torch_reproduces_decoder(rng):
    dec = _decoder_all_kinds(rng)
    net = dec.to_torch()
    assert isinstance(net, nn.Sequential)
    Z = _latent(rng, 5000, 3)
    with torch.no_grad():
        Y = net(torch.as_tensor(Z)).numpy()
    assert Y.dtype == np.float64
    X = dec(Z)
    assert np.all(np.abs(X - Y) <= 1e-12 * (1 + np.abs(X)))
    # float32 export is close (float32 accuracy), and has float32 parameters
    net32 = dec.to_torch(dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in net32.parameters())
    with torch.no_grad():
        Y32 = net32(torch.as_tensor(Z[:100], dtype=torch.float32)).double().numpy()
    assert np.all(np.abs(X[:100] - Y32) <= 1e-4 * (1 + np.abs(X[:100])))


def test_round_trip_decoder_torch_decoder(rng):
    dec = _decoder_all_kinds(rng)
    back = Decoder.from_torch(dec.to_torch())
    assert back.layer_sizes == dec.layer_sizes
    assert [a.kind for a in back.activations][:3] == ["relu", "leaky_relu", "prelu"]
    for W1, W2 in zip(dec.weights, back.weights, strict=True):
        np.testing.assert_array_equal(W1, W2)
    np.testing.assert_array_equal(dec.negative_slopes, back.negative_slopes)
    Z = _latent(rng, 3000, 3)
    X, Xb = dec(Z), back(Z)
    assert np.all(np.abs(X - Xb) <= 1e-12 * (1 + np.abs(X)))
    np.testing.assert_array_equal(dec.activation_pattern(Z), back.activation_pattern(Z))


def test_round_trip_torch_decoder_torch(rng):
    module = nn.Sequential(
        nn.Linear(4, 9), nn.PReLU(9), nn.Linear(9, 6), Abs(), nn.Linear(6, 6), nn.ReLU()
    )
    dec = from_torch(module)
    net = dec.to_torch()
    Z = _latent(rng, 3000, 4)
    with torch.no_grad():
        a = module.double()(torch.as_tensor(Z)).numpy()
        b = net(torch.as_tensor(Z)).numpy()
    assert np.all(np.abs(a - b) <= 1e-12 * (1 + np.abs(a)))
    # a final activation becomes an identity output layer
    assert dec.output_dim == 6 and dec.hidden_sizes == [9, 6, 6]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float32, torch.float32),
        ("float32", torch.float32),
        (np.float32, torch.float32),
        (np.dtype("float32"), torch.float32),
        ("float64", torch.float64),
        (np.float64, torch.float64),
        (None, torch.float64),
    ],
)
def test_to_torch_takes_torch_numpy_and_string_dtypes(rng, dtype, expected):
    """A numpy dtype or a string was a TypeError from deep inside torch."""
    dec = _decoder_all_kinds(rng)
    net = dec.to_torch(dtype=dtype)
    assert all(p.dtype == expected for p in net.parameters())
    Z = _latent(rng, 50, 3)
    with torch.no_grad():
        Y = net(torch.as_tensor(Z, dtype=expected)).double().numpy()
    X = dec(Z)
    tol = 1e-12 if expected == torch.float64 else 1e-4
    assert np.all(np.abs(X - Y) <= tol * (1 + np.abs(X)))


@pytest.mark.parametrize("bad", ["int32", torch.int64, np.int16, "float", "complex128", 3])
def test_to_torch_refuses_other_dtypes_clearly(rng, bad):
    dec = _decoder_all_kinds(rng)
    with pytest.raises(ValueError, match=r"dtype must be a floating-point dtype.*float32"):
        dec.to_torch(dtype=bad)


def test_module_reused_in_a_sequential_is_applied_every_time(rng):
    """One ReLU instance (or one weight-tied Linear) listed twice in an ``nn.Sequential`` was
    imported once: ``named_children`` skips repeats, so the decoder dropped a layer."""
    act, tied = nn.ReLU(), nn.Linear(6, 6)
    module = nn.Sequential(nn.Linear(2, 6), act, tied, act, tied, nn.LeakyReLU(0.2), tied)
    dec = from_torch(module)
    assert dec.hidden_sizes == [6, 6, 6]
    assert_matches_module(dec, module, _latent(rng, 2000, 2))


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("fx", [False, True])
def test_module_on_any_device_is_imported_and_left_where_it_was(device, fx):
    """The weights are read on the CPU whatever the module's device (the plain chain and the
    torch.fx path: PReLU weights, probed convolutions, pooling windows); the caller's module
    keeps its device."""
    nn = torch.nn
    torch.manual_seed(0)
    body = [nn.Linear(2, 6), nn.PReLU(6), nn.Linear(6, 8)]
    if fx:  # ReLU6 and max pooling take the torch.fx path
        body += [
            nn.ReLU6(),
            nn.Unflatten(1, (2, 4)),
            nn.MaxPool1d(2),
            nn.Flatten(),
            nn.Linear(4, 3),
        ]
    module = nn.Sequential(*body).to(device=device, dtype=torch.float64).eval()
    dec = from_torch(module)
    z = np.random.default_rng(1).normal(size=(50, 2)) * 3
    with torch.no_grad():
        ref = module(torch.as_tensor(z, device=device)).cpu().numpy()
    np.testing.assert_allclose(dec(z), ref, rtol=1e-12, atol=1e-12)
    assert next(module.parameters()).device.type == device


def test_layer_that_does_not_take_its_input_shape_is_named():
    """A Conv1d of 3 channels after an Unflatten to (2, 4) raised torch's RuntimeError
    ("expected input[1, 2, 4] to have 3 channels"), not an error naming the layer."""
    mod = nn.Sequential(nn.Linear(1, 8), nn.Unflatten(1, (2, 4)), nn.Conv1d(3, 1, 2), nn.Flatten())
    with pytest.raises(
        ValueError, match=r"layer '2' \(Conv1d\) does not take inputs of per-sample"
    ):
        Decoder.from_torch(mod)
    bad = nn.Sequential(nn.Linear(1, 8), nn.Unflatten(1, (3, 4)), nn.Flatten())
    with pytest.raises(ValueError, match=r"layer '1' \(Unflatten\) does not take"):
        Decoder.from_torch(bad)


def test_abs_module_pickles_whole(tmp_path):
    """A to_torch module with an abs layer could not be pickled or torch.save'd whole (its Abs
    class was local to a function); it now loads back in a fresh process."""
    import pickle
    import subprocess
    import sys

    dec = Decoder.random([2, 4, 3], activation="abs", seed=0)
    mod = dec.to_torch()
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(mod))
    torch.save(mod, tmp_path / "m.pt")
    code = (
        "import pickle, sys, torch; m = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "x = torch.ones(1, 2, dtype=torch.float64); print(repr(float(m(x).sum().detach())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    with torch.no_grad():
        expected = float(mod(torch.ones(1, 2, dtype=torch.float64)).sum())
    assert float(out.stdout) == expected
