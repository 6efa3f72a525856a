"""Wider torch import (torch.fx): ReLU6, Hardtanh, max pooling, custom modules with residual sums.

Checks: the imported Decoder computes the module's function (random and far latent points, past
every kink), exact log p(x) of an imported residual decoder against the independent quadrature
oracle, and refusals that name the operation.
"""

import numpy as np
import pytest
import torch
from torch import nn

from exactdgn import Decoder, ExactDGN, NotPiecewiseAffineError
from tests.oracles.likelihood import oracle_logpx_1d


def _same_function(module, d, shape=None, n=400):
    module = module.double().eval()
    dec = Decoder.from_torch(module, input_shape=shape)
    Z = np.random.default_rng(0).standard_normal((n, d)) * 4.0
    with torch.no_grad():
        ref = module(torch.as_tensor(Z).reshape(n, *(shape or (d,)))).reshape(n, -1).numpy()
    assert np.allclose(dec(Z), ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))
    return dec


class _Residual(nn.Module):
    def __init__(self, d=1, h=6, D=3):
        super().__init__()
        self.inp = nn.Linear(d, h)
        self.block = nn.Sequential(nn.Linear(h, h), nn.LeakyReLU(0.2))
        self.out = nn.Linear(h, D)

    def forward(self, z):
        h = torch.relu(self.inp(z))
        h = h + self.block(h)  # residual sum
        h = nn.functional.relu6(h * 3.0) - 0.5
        return self.out(h)


def test_relu6_hardtanh_and_identity():
    torch.manual_seed(0)
    mod = nn.Sequential(
        nn.Linear(2, 8), nn.ReLU6(), nn.Identity(), nn.Linear(8, 8), nn.Hardtanh(-0.5, 1.0)
    )
    mod.append(nn.Linear(8, 3))
    _same_function(mod, 2)


def test_residual_module_function_and_exact_likelihood():
    torch.manual_seed(1)
    dec = _same_function(_Residual(), 1)
    model = ExactDGN.from_decoder(dec, 0.2)
    X = model.sample(4, random_state=0)
    X = np.concatenate([X, X[:1] + 100 * 0.2])  # a far outlier
    got = model.score_samples(X)
    ref = oracle_logpx_1d(dec, X, 0.2)
    assert np.all(np.abs(got - ref) <= np.maximum(1e-9, 1e-12 * np.abs(ref)))


@pytest.mark.parametrize(
    "pool",
    [
        lambda: nn.Sequential(
            nn.Linear(2, 24), nn.Unflatten(1, (2, 3, 4)), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        ),
        lambda: nn.Sequential(
            nn.Linear(2, 14), nn.Unflatten(1, (2, 7)), nn.MaxPool1d(3, stride=2, padding=1)
        ),
    ],
)
def test_max_pooling(pool):
    torch.manual_seed(2)
    mod = nn.Sequential(pool(), nn.Flatten())
    dec = _same_function(mod, 2)
    assert len(ExactDGN.from_decoder(dec, 0.1).partition_) > 1


def test_refusals_name_the_operation():
    with pytest.raises(NotPiecewiseAffineError, match=r"'1' \(SiLU\).*smooth"):
        Decoder.from_torch(nn.Sequential(nn.Linear(2, 3), nn.SiLU(), nn.Linear(3, 2)))

    class Product(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 3)

        def forward(self, z):
            h = self.a(z)
            return h * h

    with pytest.raises(NotPiecewiseAffineError, match=r"'mul'.*product of two values"):
        Decoder.from_torch(Product())
    drop = nn.Sequential(nn.Linear(2, 3), nn.ReLU6(), nn.Dropout(0.5), nn.Linear(3, 2))
    with pytest.raises(NotPiecewiseAffineError, match="training mode"):
        Decoder.from_torch(drop.train())


class _FlattenSome(nn.Module):
    """``flatten`` over some axes only: (C, H, W) -> (C, H*W) or (C*H, W), then a Conv1d."""

    def __init__(self, how):
        super().__init__()
        self.inp = nn.Linear(2, 24)
        self.how = how
        self.conv = nn.Conv1d(2 if how == "method" else 6, 3, 3)

    def forward(self, z):
        h = torch.relu(self.inp(z)).view(z.size(0), 2, 3, 4)
        h = h.flatten(2) if self.how == "method" else torch.flatten(h, 1, -2)
        return self.conv(h)


@pytest.mark.parametrize("how", ["method", "function"])
def test_flatten_of_some_axes_keeps_the_others(how):
    """``x.flatten(2)`` / ``torch.flatten(x, 1, -2)`` were imported as a flattening of every
    axis, so the following Conv1d saw one channel (a RuntimeError from inside torch)."""
    torch.manual_seed(3)
    _same_function(_FlattenSome(how), 2)


class _LearnedShift(nn.Module):
    """Constants held by the module: a nested Parameter (``self.lin.bias``), a Parameter and a
    buffer broadcast over channels, and a reshape written with ``x.shape[0]``."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 12)
        self.lin = nn.Linear(12, 12)
        self.scale = nn.Parameter(torch.randn(3, 1))
        self.register_buffer("shift", torch.randn(4))

    def forward(self, z):
        h = torch.relu(self.inp(z)) + self.lin.bias
        h = h.view(h.shape[0], 3, 4) * self.scale - self.shift
        h = torch.relu(h / self.scale)
        return h.reshape(z.size()[0], -1)


def test_module_constants_and_shape_in_reshape():
    """``self.lin.bias`` (a dotted get_attr) was an AttributeError, an added or multiplied
    Parameter / buffer was refused, and ``x.view(x.shape[0], ...)`` was refused as 'getattr'."""
    torch.manual_seed(4)
    dec = _same_function(_LearnedShift(), 2)
    assert dec.hidden_sizes == [12, 12]


def test_reshape_must_keep_the_batch_axis_first():
    class BadView(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(2, 4)

        def forward(self, z):
            h = self.inp(z)
            return h.view(h.size(1), -1)  # a (4, B) view: mixes samples

    with pytest.raises(NotPiecewiseAffineError, match=r"keep the batch axis first"):
        Decoder.from_torch(BadView())


@pytest.mark.parametrize(
    "pool",
    [
        lambda: nn.Sequential(nn.Linear(2, 9), nn.ReLU(), nn.MaxPool1d(3, stride=2, padding=1)),
        lambda: nn.Sequential(nn.Linear(2, 20), nn.Unflatten(1, (4, 5)), nn.MaxPool2d(2)),
    ],
)
def test_max_pooling_of_an_input_without_channel_axis(pool):
    """torch pools a (B, L) batch with MaxPool1d (and a (B, H, W) one with MaxPool2d) as one
    channel per sample; the import was an IndexError (a refusal for MaxPool2d)."""
    torch.manual_seed(5)
    dec = _same_function(pool(), 2)
    assert dec.n_units > 0


@pytest.mark.parametrize("wrap", [list, tuple, lambda v: {"x": v[0]}])
def test_module_returning_a_container_is_refused_clearly(wrap):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(2, 4)

        def forward(self, z):
            return wrap([torch.relu(self.inp(z))])

    with pytest.raises(NotPiecewiseAffineError, match=r"return one tensor"):
        Decoder.from_torch(Wrapped())


class _Clamps(nn.Module):
    """clamp / clamp_min / clamp_max / maximum / minimum written as tensor functions."""

    def __init__(self, which):
        super().__init__()
        self.inp = nn.Linear(2, 6)
        self.other = nn.Linear(2, 6)
        self.out = nn.Linear(6, 3)
        self.register_buffer("floor", torch.linspace(-1.0, 1.0, 6))
        self.which = which

    def forward(self, z):
        h, g = self.inp(z), self.other(z)
        h = {
            "clamp": lambda: torch.clamp(h, min=0) + h.clamp(-1.0, 2.0) - torch.clamp(h, max=0.5),
            "clamp_min_max": lambda: h.clamp_min(0.5) + torch.clamp_max(h, -0.25),
            "inverted": lambda: torch.clamp(h, 2.0, 1.0) + h,  # min > max: all max
            "max_min": lambda: torch.maximum(h, g) - torch.minimum(g, h) + torch.max(h, 2 * g),
            "const": lambda: torch.maximum(h, self.floor) + torch.minimum(self.floor, g),
        }[self.which]()
        return self.out(h)


@pytest.mark.parametrize("which", ["clamp", "clamp_min_max", "inverted", "max_min", "const"])
def test_clamp_maximum_minimum(which):
    """torch.clamp / x.clamp(min=0), clamp_min / clamp_max and the elementwise maximum /
    minimum of two values (or of a value and a buffer) are piecewise affine; they were
    refused as unsupported operations."""
    torch.manual_seed(6)
    dec = _same_function(_Clamps(which), 2)
    if which != "inverted":
        assert dec.kink_mask.any()


def _img(c, *hw):
    """Linear(2, c * prod(hw)) then Unflatten to (c, *hw): a latent-fed feature map."""
    return [nn.Linear(2, c * int(np.prod(hw))), nn.Unflatten(1, (c, *hw)), nn.ReLU()]


@pytest.mark.parametrize(
    "layers",
    [
        [*_img(2, 4, 4), nn.AvgPool2d(2), nn.LeakyReLU(0.1), nn.AvgPool2d(2, padding=1)],
        [*_img(2, 5), nn.AvgPool1d(3, stride=2, ceil_mode=True, count_include_pad=False)],
        [*_img(2, 5, 3), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(2), nn.AdaptiveAvgPool1d(3)],
        [*_img(2, 3, 3), nn.Upsample(scale_factor=2), nn.Conv2d(2, 1, 3), nn.ReLU()],
        [*_img(1, 3, 3), nn.Upsample(size=(5, 4), mode="bilinear"), nn.ReLU()],
        [*_img(2, 2, 2, 2), nn.Conv3d(2, 3, 2, padding=1), nn.ReLU(), nn.ConvTranspose3d(3, 1, 2)],
        [*_img(2, 3, 3), nn.ReflectionPad2d(1), nn.ReplicationPad2d((0, 1, 1, 0)), nn.ReLU()],
        [*_img(2, 4), nn.ConstantPad1d(2, 0.5), nn.ZeroPad2d((1, 0, 0, 1)), nn.PReLU()],
        [*_img(4, 2, 2), nn.PixelShuffle(2), nn.ReLU(), nn.PixelUnshuffle(2)],
        [*_img(2, 2, 2, 2), nn.BatchNorm3d(2), nn.ReLU(), nn.Dropout3d(0.3)],
        [nn.Linear(2, 6), nn.RReLU(0.1, 0.4), nn.Linear(6, 6), nn.Hardsigmoid(), nn.Linear(6, 2)],
    ],
    ids=lambda ls: "-".join(type(m).__name__ for m in ls[2:]),
)
def test_affine_and_piecewise_affine_modules_of_conv_decoders(layers):
    """Average pooling, upsampling, padding, pixel shuffles, 3-D convolutions and batch norm,
    eval-mode RReLU and Hardsigmoid are (piecewise) affine; they were refused."""
    torch.manual_seed(7)
    mod = nn.Sequential(*layers, nn.Flatten()).eval()
    dec = _same_function(mod, 2)
    assert dec.kink_mask.any()


def test_functional_dropout_in_eval_mode_is_dropped():
    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(2, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, z):
            h = nn.functional.dropout(torch.relu(self.inp(z)), 0.3, self.training)
            return self.out(nn.functional.dropout1d(h, p=0.1, training=self.training))

    _same_function(Drop().eval(), 2)
    with pytest.raises(NotPiecewiseAffineError, match=r"'dropout'.*training.*eval\(\)"):
        Decoder.from_torch(Drop().train())


class _Concat(nn.Module):
    """U-Net-like skip: the channels of two branches concatenated (and a last-axis cat)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 12)
        self.conv = nn.Conv1d(2, 1, 3, padding=1)
        self.out = nn.Conv1d(3, 2, 3)

    def forward(self, z):
        h = torch.relu(self.inp(z)).view(z.size(0), 2, 6)
        h = torch.cat([h, torch.relu(self.conv(h))], dim=1)  # (3, 6)
        return torch.cat((self.out(h), self.out(-h)), -1)


def test_concatenation_of_branches():
    """torch.cat of values (along channels, along the last axis) is affine; it was refused."""
    torch.manual_seed(8)
    _same_function(_Concat(), 2)

    class CatBatch(nn.Module):
        def forward(self, z):
            return torch.cat([z, z])

    with pytest.raises(NotPiecewiseAffineError, match="batch axis"):
        Decoder.from_torch(CatBatch(), input_shape=(2,))


class _Squeezes(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 8)
        self.conv = nn.Conv1d(1, 2, 3)
        self.out = nn.Linear(12, 3)

    def forward(self, z):
        h = torch.relu(self.lin(z)).unsqueeze(1)  # (B, 1, 8)
        h = torch.unsqueeze(torch.relu(self.conv(h)), -1)  # (B, 2, 6, 1)
        h = h.squeeze(-1).unsqueeze(2).squeeze()  # (B, 2, 6)
        return self.out(torch.squeeze(h.flatten(1).unsqueeze(1), 1))


def test_squeeze_and_unsqueeze_are_reshapes():
    """``unsqueeze`` / ``squeeze`` (methods and functions, negative dims, squeeze of every
    size-1 axis) were refused as unsupported methods; the batch axis stays refused."""
    torch.manual_seed(0)
    module = _Squeezes().double().eval()
    dec = Decoder.from_torch(module)
    z = np.random.default_rng(0).normal(size=(40, 2)) * 5
    with torch.no_grad():
        ref = module(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(dec(z), ref, rtol=1e-12, atol=1e-12)

    class Batch(nn.Module):
        def forward(self, z):
            return torch.relu(z).unsqueeze(0).squeeze(0)

    with pytest.raises(NotPiecewiseAffineError, match="batch axis"):
        Decoder.from_torch(Batch(), input_shape=(2,))

    class Sort(nn.Module):
        def forward(self, z):
            return z.sort(dim=1).values

    with pytest.raises(NotPiecewiseAffineError, match=r"'sort'.*not supported by the importer"):
        Decoder.from_torch(Sort(), input_shape=(2,))


class _AffineOps(nn.Module):
    """Affine operations written as tensor code (each was refused as "not supported: only
    affine operations ... are exact", though affine)."""

    def __init__(self, which):
        super().__init__()
        self.inp = nn.Linear(2, 12)
        self.W = nn.Parameter(torch.randn(12, 5))
        self.lin = nn.Linear(12, 5)
        self.log_scale = nn.Parameter(torch.randn(12))
        self.which = which

    def forward(self, z):
        h = torch.relu(self.inp(z))
        F = nn.functional
        return {
            "slice": lambda: torch.relu(h[:, :5] - h[:, 7:]) + h[..., 2:7],
            "index": lambda: torch.cat([h[:, 3, None], h[:, None, 4]], 1) - h[:, -2:],
            "chunk": lambda: (
                torch.relu(h.chunk(3, 1)[1]) - h.chunk(3, 1)[2] + torch.split(h, 4, 1)[0]
            ),
            "split": lambda: torch.relu(h.split([5, 7], dim=-1)[1]),
            "sum": lambda: h.view(-1, 3, 4).sum(1) - h.view(-1, 3, 4).mean(dim=1),
            "mean": lambda: (
                h.view(-1, 3, 4).mean((1, 2), keepdim=True).flatten(1) + h.sum(-1, True)
            ),
            "transpose": lambda: (
                torch.relu(h.view(-1, 3, 4).transpose(1, 2)).flatten(1)
                + h.view(-1, 2, 3, 2).permute(0, 3, 1, 2).reshape(-1, 12)
            ),
            "reshape": lambda: torch.relu(torch.reshape(h, (-1, 4, 3))).sum(-1),
            "stack": lambda: torch.stack([h, -h], dim=-1).flatten(1),
            "matmul": lambda: torch.relu(h @ self.W) + F.linear(h, self.lin.weight, self.lin.bias),
            "pad": lambda: F.pad(h.view(-1, 3, 4), (1, 2), value=0.5).flatten(1),
            "constants": lambda: torch.relu(h * self.log_scale.exp() - self.log_scale.abs()),
            "sizes": lambda: (
                h.view(h.size(0), h.size(1), 1).flatten(1)
                + h.view(h.shape[0], h.shape[1] // 2, 2).flatten(1)
            ),
        }[self.which]()


_OPS = ["slice", "index", "chunk", "split", "sum", "transpose", "reshape", "stack", "matmul"]


@pytest.mark.parametrize("which", [*_OPS, "mean", "pad", "constants", "sizes"])
def test_affine_tensor_operations_are_imported(which):
    """Slicing, chunk / split, sum / mean over feature axes, transpose / permute,
    torch.reshape, stack, ``h @ self.W``, F.linear, F.pad and expressions of the module's
    constants are affine; they were refused as not supported (``h.view(h.size(0), h.size(1),
    1)`` was a TypeError, ``h.shape[1] // 2`` a refusal of 'floordiv')."""
    torch.manual_seed(9)
    _same_function(_AffineOps(which), 2)


class _PiecewiseOps(nn.Module):
    def __init__(self, which):
        super().__init__()
        self.inp = nn.Linear(2, 12)
        self.slopes = nn.Parameter(torch.rand(3))
        self.which = which
        self.shrink = nn.Softshrink(0.3)

    def forward(self, z):
        h = self.inp(z)
        F = nn.functional
        return {
            "prelu": lambda: F.prelu(h.view(-1, 3, 4), self.slopes).flatten(1),
            "relu_": lambda: h.relu_() + h - nn.functional.relu(h, inplace=True),
            "softshrink": lambda: self.shrink(h) + F.softshrink(h, 0.5),
            "max_pool1d": lambda: F.max_pool1d(h.view(-1, 2, 6), 3, stride=2).flatten(1),
        }[self.which]()


@pytest.mark.parametrize("which", ["prelu", "relu_", "softshrink", "max_pool1d"])
def test_piecewise_affine_functions_are_imported(which):
    """F.prelu, x.relu_(), Softshrink and F.max_pool1d are piecewise affine; they were
    refused as not supported."""
    torch.manual_seed(10)
    dec = _same_function(_PiecewiseOps(which), 2)
    assert dec.kink_mask.any()


def test_piecewise_affine_modules_not_built_yet_say_so():
    """AdaptiveMaxPool1d was refused as "not a supported continuous piecewise-affine layer"."""
    mod = nn.Sequential(nn.Linear(2, 8), nn.Unflatten(1, (2, 4)), nn.AdaptiveMaxPool1d(2))
    with pytest.raises(
        NotPiecewiseAffineError, match=r"piecewise affine but not supported.*Pool1d"
    ):
        Decoder.from_torch(mod)


def test_reshape_with_the_batch_size_elsewhere_is_refused_clearly():
    class Mix(nn.Module):
        def forward(self, z):
            return z.view(-1, z.size(0))

    with pytest.raises(NotPiecewiseAffineError, match=r"non-batch size that is not a number"):
        Decoder.from_torch(Mix(), input_shape=(2,))


class _WithDefaults(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, z, temperature=2.0, cond=None):
        h = torch.relu(self.inp(z) / temperature)
        if cond is not None:
            h = h + cond
        return self.out(h)


def test_forward_with_default_arguments_is_traced_with_them():
    """``forward(self, z, temperature=1.0)`` was refused: "the module takes more than one
    input"; an argument without a default is a ValueError about the signature."""
    torch.manual_seed(11)
    _same_function(_WithDefaults(), 2)

    class NoDefault(nn.Module):
        def forward(self, z, c):
            return torch.relu(z + c)

    with pytest.raises(ValueError, match=r"forward takes \['z', 'c'\].*\['c'\] have no default"):
        Decoder.from_torch(NoDefault(), input_shape=(2,))


class _CastsAndConstants(nn.Module):
    """Idioms written for any dtype / device: they were refused as "operation 'getattr'"."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 4), nn.Linear(4, 3)

    def forward(self, z):
        h = torch.relu(self.a(z)).to(z.dtype)
        h = h + torch.ones(4, dtype=z.dtype, device=z.device) + h.new_ones(4)
        h = h - torch.zeros_like(h) + 2.0 * torch.ones_like(h) + h.new_full((4,), 0.25)
        return self.b(h.double()) + torch.full_like(self.b(h), 0.5)


def test_casts_and_constants_of_a_values_shape_and_dtype():
    _same_function(_CastsAndConstants(), 2)
