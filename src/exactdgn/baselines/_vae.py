"""Amortised variational baselines: VAE and IWAE with a CPA decoder and Gaussian noise.

Model: ``z ~ N(0, I_d)``, ``x | z ~ N(g(z), diag(σ²))`` with ``g`` an :class:`exactdgn.Decoder`
(trained as its PyTorch twin) and ``σ`` either one learned scalar (``noise="isotropic"``) or one
per output (``"diagonal"``), parametrised as ``log σ`` clamped below at ``log(min_noise_std)``.
Encoder: ``q(z | x) = N(μ(x), diag(s(x)²))`` from an MLP with a mean head and a log-std head.

With importance weights ``log w(x, z) = log p(x | z) + log p(z) - log q(z | x)``, ``z ~ q(z|x)``:

* ELBO: ``E_q[log w]`` (VAE objective, one or more reparametrised samples);
* IWAE-k bound: ``E[log (1/k) Σ_i w_i]``, ``ELBO <= IWAE_k <= IWAE_{k+1} <= log p(x)``;
* importance-sampling estimate of ``log p(x)``: ``log (1/K) Σ_i w_i`` for large ``K``
  (biased low by about ``Var(w)/(2 K p(x)²)``; consistent as ``K -> ∞``).

The exact ``log p(x)`` of the same decoder and noise is :class:`exactdgn.ExactDGN`'s job;
these estimators are the approximate baselines it is compared with.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import time
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from torch import nn

from .._progress import report
from .._validation import (
    NotFittedError,
    check_array,
    check_feature_names,
    check_noise_std,
    check_positive,
    feature_names,
    is_int,
)
from ..datasets._toy import check_random_state
from ..decoder import Decoder
from ..gaussian._rules import LOG_2PI as _LOG_2PI
from ..io import decoder_from_arrays, decoder_to_arrays
from ..training import HistoryRow, callback_stops, check_callback

__all__ = ["IWAE", "VAE", "GaussianEncoder"]

logger = logging.getLogger(__name__)

_EVAL_ELEMENTS = 2**18  # floats per evaluation chunk (rows x samples x widest layer); small
# enough that the chunk's tensors are reused from the heap: 32 MB chunks were mmapped afresh each
# time and page faults took 3x the arithmetic (measured: K = 5,000 IS on MNIST 10.8 s -> 1.8 s)

_ENCODER_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


class GaussianEncoder(nn.Module):
    """MLP encoder ``x -> (μ(x), log s(x))`` of a diagonal Gaussian ``q(z | x)``.

    Parameters
    ----------
    n_features : int
        Data dimension ``D``.
    latent_dim : int
        Latent dimension ``d``.
    hidden_sizes : sequence of int
        Widths of the shared hidden layers (empty: both heads are affine in ``x``).
    activation : {"relu", "leaky_relu", "tanh", "softplus", "elu"}
    min_log_std, max_log_std : float
        The log-std head is clamped to this range for numerical safety.

    Attributes
    ----------
    n_features, latent_dim : int
    hidden_sizes : tuple of int
    activation : str
        The constructor's arguments (:meth:`VAE.state_dict` records them to rebuild it).
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        *,
        min_log_std: float = -12.0,
        max_log_std: float = 6.0,
    ):
        super().__init__()
        if activation not in _ENCODER_ACTIVATIONS:
            raise ValueError(
                f"encoder activation must be one of {sorted(_ENCODER_ACTIVATIONS)}, "
                f"got {activation!r}"
            )
        hidden_sizes = tuple(hidden_sizes)
        layers: list[nn.Module] = []
        n = int(n_features)
        for h in hidden_sizes:
            if int(h) < 1:
                raise ValueError(f"encoder hidden sizes must be >= 1, got {list(hidden_sizes)}")
            layers += [nn.Linear(n, int(h)), _ENCODER_ACTIVATIONS[activation]()]
            n = int(h)
        self.n_features = int(n_features)
        self.latent_dim = int(latent_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.body = nn.Sequential(*layers)
        self.mean_head = nn.Linear(n, int(latent_dim))
        self.log_std_head = nn.Linear(n, int(latent_dim))
        self.min_log_std = float(min_log_std)
        self.max_log_std = float(max_log_std)

    def forward(self, x):
        """Return ``(mean, log_std)``, each of shape (B, d)."""
        h = self.body(x)
        log_std = torch.clamp(self.log_std_head(h), self.min_log_std, self.max_log_std)
        return self.mean_head(h), log_std


def _log_weights_lowrank(x, eps, body, last, encoder, log_sigma):
    """:func:`_log_weights` for evaluation when the decoder ends with a narrow ``nn.Linear``.

    With ``x̂ = W h + c`` (``h = body(z)`` of width ``H < D``) the residual norm is
    ``||x - c||²_Λ - 2 hᵀ Wᵀ Λ (x - c) + hᵀ (Wᵀ Λ W) h``: O(H²) per sample instead of O(D H)
    and no (B, K, D) tensor. The expansion loses ~eps ||x - c||²_Λ in absolute terms (1e-11
    nats for a point 1,000 σ away), far below any Monte Carlo error.
    """
    B, K, d = eps.shape
    D = x.shape[1]
    mu, log_s = encoder(x)
    z = mu[:, None, :] + torch.exp(log_s)[:, None, :] * eps
    h = body(z.reshape(B * K, d)).reshape(B, K, -1)
    W, c = last.weight, last.bias  # (D, H), (D,)
    inv_var = torch.exp(-2.0 * log_sigma).expand(D)
    xc = x - c
    a = (xc * inv_var) @ W  # (B, H)
    q = (xc * xc * inv_var).sum(-1)  # (B,)
    G = W.T @ (W * inv_var[:, None])  # (H, H)
    quad = q[:, None] - 2.0 * (h * a[:, None, :]).sum(-1) + ((h @ G) * h).sum(-1)
    quad = torch.clamp(quad, min=0.0)
    if log_sigma.numel() == 1:
        log_det_noise = D * log_sigma.reshape(())
    else:
        log_det_noise = log_sigma.sum()
    log_px_z = -0.5 * quad - log_det_noise - 0.5 * D * _LOG_2PI
    log_pz = -0.5 * (z * z).sum(-1) - 0.5 * d * _LOG_2PI
    log_qz = -0.5 * (eps * eps).sum(-1) - log_s.sum(-1)[:, None] - 0.5 * d * _LOG_2PI
    return log_px_z + log_pz - log_qz


def _log_weights(x, eps, decoder, encoder, log_sigma):
    """``log w`` for reparametrised samples.

    Parameters
    ----------
    x : tensor (B, D)
    eps : tensor (B, K, d), standard normal
    decoder : module R^d -> R^D
    encoder : GaussianEncoder
    log_sigma : tensor (1,) or (D,)

    Returns
    -------
    log_w : tensor (B, K)
    """
    B, K, d = eps.shape
    D = x.shape[1]
    mu, log_s = encoder(x)
    z = mu[:, None, :] + torch.exp(log_s)[:, None, :] * eps
    xhat = decoder(z.reshape(B * K, d)).reshape(B, K, D)
    r = (x[:, None, :] - xhat) * torch.exp(-log_sigma)
    if log_sigma.numel() == 1:
        log_det_noise = D * log_sigma.reshape(())
    else:
        log_det_noise = log_sigma.sum()
    log_px_z = -0.5 * (r * r).sum(-1) - log_det_noise - 0.5 * D * _LOG_2PI
    log_pz = -0.5 * (z * z).sum(-1) - 0.5 * d * _LOG_2PI
    log_qz = -0.5 * (eps * eps).sum(-1) - log_s.sum(-1)[:, None] - 0.5 * d * _LOG_2PI
    return log_px_z + log_pz - log_qz


def _torch_dtype(dtype):
    if dtype in ("float64", torch.float64, np.float64):
        return torch.float64
    if dtype in ("float32", torch.float32, np.float32):
        return torch.float32
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def _int_param(value, name, low):
    if not is_int(value, low):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


_DECODER_ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs")  # as ExactDGN's


def _generator_from_state(state: dict) -> np.random.Generator:
    """A numpy Generator in the state ``bit_generator.state`` returned (any bit generator)."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def _check_encoder_outputs(encoder, n_features: int, latent_dim: int) -> None:
    """Run ``encoder`` on two rows of zeros: it must return ``(mean, log_std)``, each (2, d)."""
    p = next(encoder.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float64
    try:
        with torch.no_grad():
            out = encoder(torch.zeros((2, n_features), dtype=dtype))
    except Exception as exc:
        raise ValueError(
            f"the encoder cannot take inputs of {n_features} features (the decoder's output "
            f"dimension): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    want = (2, latent_dim)
    shapes = (
        [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out]
        if isinstance(out, tuple | list)
        else [tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__]
    )
    if len(shapes) != 2 or any(sh != want for sh in shapes):
        raise ValueError(
            f"the encoder returns {shapes} for 2 inputs; expected (mean, log_std) of shape "
            f"{want} each, for the decoder's latent_dim {latent_dim}"
        )


def _clone_tensors(sd) -> dict:
    return {k: v.detach().clone() for k, v in sd.items()}


class _Run:
    """The live state of a VAE / IWAE training run and its epochs.

    The decoder and encoder modules and ``log σ`` in the training dtype, Adam over them, the
    torch generator of the minibatch order and training noise, the state of the numpy generator
    that draws the validation split, the seed of the validation noise, the number of
    completed epochs and the early-stopping record (``best``: objective, epoch and parameters of
    the best validation epoch; ``bad``: epochs since it). :meth:`state` copies all of it as
    plain data (dicts, lists, numbers, strings, torch tensors; Adam through its public
    ``state_dict()``): the estimator keeps the one of the last completed epoch, so a warm start
    continues from it and an interrupted epoch goes back to it.
    """

    def __init__(self, est: VAE, decoder_module, encoder, log_noise):
        self.est = est
        self.dtype = log_noise.dtype
        self.decoder_module = decoder_module
        self.encoder = encoder
        self.log_noise = nn.Parameter(log_noise.detach().clone())
        self.d = int(decoder_module[0].in_features)
        self.log_floor = math.log(float(est.min_noise_std))
        params = [*decoder_module.parameters(), *encoder.parameters(), self.log_noise]
        self.opt = torch.optim.Adam(params, lr=float(est.lr))
        self.gen = torch.Generator()
        self.epoch = 0
        self.best: dict | None = None
        self.bad = 0
        self.ref: float | None = None  # the validation objective the patience counts from
        self.val_seed = 0
        self.split_state: dict | None = None

    @classmethod
    def from_fitted(cls, est: VAE, dtype) -> _Run:
        """A new run from the estimator's fitted networks (no training state: fresh Adam)."""
        with torch.random.fork_rng(devices=[]):
            decoder_module = est.decoder_.to_torch(dtype)
        encoder = copy.deepcopy(est.encoder_).to(dtype)
        for p in encoder.parameters():
            p.requires_grad_(True)
        std = np.asarray(est.noise_std_, dtype=np.float64).reshape(-1)
        return cls(est, decoder_module, encoder, torch.log(torch.as_tensor(std, dtype=dtype)))

    @classmethod
    def from_state(cls, est: VAE, state: dict, dtype) -> _Run:
        """The run of a :meth:`state` (the networks' structure from the fitted estimator)."""
        with torch.random.fork_rng(devices=[]):
            decoder_module = est.decoder_.to_torch(dtype)
        encoder = copy.deepcopy(est.encoder_).to(dtype)
        for p in encoder.parameters():
            p.requires_grad_(True)
        params = state["params"]
        run = cls(est, decoder_module, encoder, params["log_noise"].to(dtype))
        run.load_params(params)
        # a copy: Adam updates its state tensors in place, the estimator's state must not move
        run.opt.load_state_dict(copy.deepcopy(state["optimizer"]))
        run.gen.set_state(state["generator"].clone())
        run.epoch = int(state["epoch"])
        run.best = state["best"]
        run.bad = int(state["bad"])
        ref = state.get("ref", None if run.best is None else run.best["objective"])
        run.ref = None if ref is None else float(ref)
        run.val_seed = int(state["val_seed"])
        run.split_state = state["split"]
        return run

    def log_sigma(self):
        return torch.clamp(self.log_noise, min=self.log_floor)

    def params_state(self) -> dict:
        return {
            "decoder": _clone_tensors(self.decoder_module.state_dict()),
            "encoder": _clone_tensors(self.encoder.state_dict()),
            "log_noise": self.log_noise.detach().clone(),
        }

    def load_params(self, params: dict) -> None:
        self.decoder_module.load_state_dict(params["decoder"])
        self.encoder.load_state_dict(params["encoder"])
        with torch.no_grad():
            self.log_noise.copy_(params["log_noise"])

    def state(self) -> dict:
        """Everything the next epoch depends on, copied (see the class docstring)."""
        return {
            "dtype": str(self.dtype).removeprefix("torch."),
            "params": self.params_state(),
            "optimizer": copy.deepcopy(self.opt.state_dict()),
            "generator": self.gen.get_state(),
            "split": copy.deepcopy(self.split_state),
            "val_seed": self.val_seed,
            "epoch": self.epoch,
            "best": self.best,  # never changed in place (replaced by a new best)
            "bad": self.bad,
            "ref": self.ref,
        }

    def evaluate(self, x, eps, batch_size: int) -> float:
        """Mean objective on ``x`` with the noise ``eps`` (in minibatches, no gradient)."""
        self.decoder_module.eval()
        self.encoder.eval()
        tot = 0.0
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                lw = _log_weights(
                    x[s : s + batch_size],
                    eps[s : s + batch_size],
                    self.decoder_module,
                    self.encoder,
                    self.log_sigma(),
                )
                tot += float(self.est._objective(lw).sum())
        return tot / x.shape[0]

    def train_epoch(self, xt, batch_size: int, n_samples: int) -> float:
        """One pass of Adam steps over ``xt`` in a random order; the epoch's mean objective."""
        self.epoch += 1
        self.decoder_module.train()
        self.encoder.train()
        n_train = xt.shape[0]
        order = torch.randperm(n_train, generator=self.gen)
        tot_obj = 0.0
        for start in range(0, n_train, batch_size):
            xb = xt[order[start : start + batch_size]]
            eps = torch.randn(
                (xb.shape[0], n_samples, self.d), generator=self.gen, dtype=self.dtype
            )
            log_w = _log_weights(xb, eps, self.decoder_module, self.encoder, self.log_sigma())
            obj = self.est._objective(log_w)
            loss = -obj.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {self.epoch}; lower lr or raise "
                    "min_noise_std"
                )
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            tot_obj += float(obj.detach().sum())
        return tot_obj / n_train

    def record_validation(self, v_obj: float, min_delta: float) -> None:
        """Early-stopping record: the best epoch so far keeps its parameters (any improvement);
        the patience counter restarts only on an improvement of more than ``min_delta`` over
        the epoch it last restarted at (else one more bad epoch)."""
        if self.best is None or v_obj > self.best["objective"]:
            self.best = {"objective": v_obj, "epoch": self.epoch, "params": self.params_state()}
        if self.ref is None or v_obj > self.ref + min_delta:
            self.ref = v_obj
            self.bad = 0
        else:
            self.bad += 1

    def snapshot(self):
        """The current ``(Decoder, noise_std)`` in float64 (the callback's ``snapshot``)."""
        self.decoder_module.eval()
        dec_now = Decoder.from_torch(self.decoder_module, input_shape=(self.d,))
        sig = np.exp(self.log_sigma().detach().to(torch.float64).numpy())
        return dec_now, (float(sig[0]) if self.est.noise == "isotropic" else sig.copy())


class VAE(DensityMixin, BaseEstimator):
    """Variational auto-encoder with a continuous piecewise-affine decoder.

    A scikit-learn estimator (``get_params`` / ``set_params`` / ``clone``; ``__init__`` only
    stores the parameters, ``fit`` validates them) with the training conventions of
    :class:`exactdgn.ExactDGN`: ``history_`` rows of :class:`exactdgn.training.HistoryRow`,
    ``n_iter_``, ``fit(X, callback=f)``, ``warm_start``, Ctrl-C keeping the last completed
    epoch (see :meth:`fit`), and checkpoints without pickle (:meth:`state_dict` /
    :meth:`load_state_dict`).

    Parameters
    ----------
    decoder : Decoder, sequence of int or None
        The decoder architecture and initial weights (an :class:`exactdgn.Decoder`, copied), or
        layer sizes ``[d, n_1, ..., D]`` for ``Decoder.random(sizes, activation=activation,
        negative_slope=negative_slope, seed=...)`` seeded from ``random_state``. None
        (default): sizes ``[latent_dim, *hidden_sizes, D]`` with ``D`` from the data.
    latent_dim : int, optional
        Latent dimension when ``decoder`` is None (default 1, as ``ExactDGN``'s).
    hidden_sizes : tuple of int, optional
        Hidden widths when ``decoder`` is None (default ``(12,)``, as ``ExactDGN``'s).
    activation : {"relu", "leaky_relu", "prelu", "abs"}
        Decoder activation when ``decoder`` is not a ``Decoder``.
    negative_slope : float
        Leaky-ReLU / PReLU slope when ``decoder`` is not a ``Decoder``.
    noise : {"isotropic", "diagonal"}
        One learned noise std, or one per output dimension.
    init_noise_std : float or array of shape (D,), optional
        Initial noise std (default: half the data's per-feature std, averaged for isotropic).
    min_noise_std : float
        Floor on the noise std (``log σ`` is clamped at ``log(min_noise_std)``).
    encoder_hidden : sequence of int
        Hidden widths of the encoder MLP.
    encoder_activation : str
        ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"softplus"`` or ``"elu"``.
    n_train_samples : int
        Reparametrised samples per point per step (the VAE objective averages their ``log w``).
    lr : float
        Adam learning rate.
    batch_size : int
    max_epochs : int
        Maximum passes over the training data (0 only initialises the model).
    validation_fraction : float
        Fraction of ``X`` held out for early stopping (0 disables early stopping).
    patience : int
        Stop after this many epochs without a validation improvement larger than ``min_delta``;
        the parameters of the best validation epoch are restored.
    min_delta : float
        Minimal improvement (nats per point) that resets the patience counter (over the
        epoch that last reset it, as Keras' ``EarlyStopping``); a smaller improvement still
        makes that epoch the best one, whose parameters are kept.
    dtype : {"float64", "float32"}
        Training precision. Fitted modules and all evaluation methods are float64.
    random_state : None, int or numpy.random.Generator
        Seeds the decoder initialisation (when not given a ``Decoder``), encoder
        initialisation, validation split, minibatch order and training noise. Same seed, same
        data -> same fit.
    warm_start : bool
        When True and the estimator is fitted, ``fit`` continues its run (as
        ``ExactDGN(warm_start=True)`` and scikit-learn's ``MLPRegressor``): the networks and
        the noise where the last completed epoch left them, Adam's state (moments and step
        count), the random stream of minibatch order and training noise, the validation split
        (the same for the same ``X``) and its noise, and the early-stopping record (best
        validation epoch, epochs since it: after an early stop, a warm fit stops again after
        one epoch unless that epoch improves on the best). ``fit`` then runs ``max_epochs``
        more epochs and appends their rows to ``history_`` (``iter`` goes on counting); two
        fits of ``n`` epochs give bitwise the model of one fit of ``2 n``. The parameters that
        build a new model (``decoder``, ``latent_dim``, ``hidden_sizes``, ``activation``,
        ``negative_slope``, ``init_noise_std``, ``encoder_hidden``, ``encoder_activation``,
        ``random_state``) are not read then; ``noise`` must be the fitted model's; ``lr``,
        ``batch_size``, ``dtype`` and the stopping parameters may change. A fitted model
        without a training state (:meth:`from_parts`, or a :meth:`load_state_dict` without
        one) starts a new run from its networks (fresh Adam; ``history_`` restarts at its
        row 0). False (default): every ``fit`` starts afresh.
    progress : bool
        Show a tqdm progress bar over epochs.

    Attributes
    ----------
    decoder_ : Decoder
        The trained decoder, exported with :meth:`Decoder.from_torch` (float64).
    noise_std_ : float or ndarray of shape (D,)
        A float for ``noise="isotropic"``.
    encoder_ : GaussianEncoder
        The trained encoder (float64, eval mode).
    history_ : list of dict
        One :class:`exactdgn.training.HistoryRow` (as a dict, the keys of ``ExactDGN``'s rows)
        for the initial parameters (``iter`` 0) and one per epoch (``iter`` = epoch):
        ``loglik`` is the training objective in nats per point, **the ELBO (VAE) or IWAE-k
        bound (IWAE), not the exact log-likelihood** (a running mean over the epoch's
        minibatches); ``val_loglik`` the same objective on the validation data (None without
        a validation split); ``seconds`` the epoch's wall time (``seconds_mstep``: its
        training passes); ``step`` the learning rate; ``method`` ``"vae"`` / ``"iwae"``;
        ``n_regions`` None (the exact model of the decoder, ``ExactDGN.from_decoder``, has
        them).
    n_iter_ : int
        Epochs run by the last ``fit``, as ``ExactDGN.n_iter_`` (``len(history_) - 1``,
        unless ``warm_start`` continued a run: ``history_`` holds all of its epochs).
    best_iter_ : int
        The epoch whose parameters were kept (``history_[best_iter_]``): the best validation
        epoch, else the last one (0 when no epoch ran).
    stopped_early_ : bool
        Stopped by early stopping, by the callback or by Ctrl-C before ``max_epochs``.
    converged_ : bool
        Whether the last ``fit`` met the stopping rule, as ``ExactDGN.converged_``: here early
        stopping (``patience`` epochs without a validation improvement), not ``max_epochs``,
        not the callback, not Ctrl-C. Always False without a validation split (no stopping
        rule: training runs ``max_epochs``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The column names of a data frame given to ``fit`` (as ``ExactDGN``'s); a frame with
        other names or another order is then an error.
    latent_dim_ : int

    Examples
    --------
    >>> from exactdgn.datasets import wave
    >>> X = wave(300, random_state=0)
    >>> vae = VAE([1, 16, 2], max_epochs=5, random_state=0).fit(X)
    >>> vae.n_iter_, len(vae.history_), vae.history_[-1]["method"]
    (5, 6, 'vae')
    >>> vae.elbo(X[:3], n_samples=10, random_state=0).shape
    (3,)
    """

    _method = "vae"

    def __init__(
        self,
        decoder=None,
        *,
        latent_dim: int | None = None,
        hidden_sizes: tuple | None = None,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        noise: str = "isotropic",
        init_noise_std=None,
        min_noise_std: float = 1e-3,
        encoder_hidden: Sequence[int] = (64, 64),
        encoder_activation: str = "relu",
        n_train_samples: int = 1,
        lr: float = 1e-3,
        batch_size: int = 128,
        max_epochs: int = 100,
        validation_fraction: float = 0.1,
        patience: int = 10,
        min_delta: float = 0.0,
        dtype: str = "float64",
        random_state=None,
        warm_start: bool = False,
        progress: bool = False,
    ):
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.negative_slope = negative_slope
        self.noise = noise
        self.init_noise_std = init_noise_std
        self.min_noise_std = min_noise_std
        self.encoder_hidden = encoder_hidden
        self.encoder_activation = encoder_activation
        self.n_train_samples = n_train_samples
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.min_delta = min_delta
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.progress = progress

    @classmethod
    def from_parts(cls, decoder: Decoder, encoder, noise_std) -> VAE:
        """A fitted VAE from a trained decoder, encoder and noise (e.g. trained elsewhere).

        It has no ``history_`` (it was not trained here); every evaluation method works.

        Parameters
        ----------
        decoder : Decoder
        encoder : torch.nn.Module
            ``x -> (mean, log_std)`` of ``q(z | x)``, each (B, d) (see :class:`GaussianEncoder`).
        noise_std : float or array_like (D,)

        Returns
        -------
        VAE

        Raises
        ------
        TypeError
            When ``decoder`` is not a :class:`~exactdgn.Decoder` or ``encoder`` not a module.
        ValueError
            When ``noise_std`` is not positive and finite (or not of length ``D``), or the
            encoder does not map ``D`` features to two ``(B, d)`` outputs (it is run once, in
            eval mode, on two rows of zeros).
        """
        if not isinstance(decoder, Decoder):
            raise TypeError(
                f"decoder must be an exactdgn.Decoder, got {type(decoder).__name__} (build one "
                "with Decoder.from_torch or exactdgn.evaluation.load_torch_decoder)"
            )
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"encoder must be a torch.nn.Module returning (mean, log_std), got "
                f"{type(encoder).__name__}"
            )
        D, d = decoder.output_dim, decoder.latent_dim
        std = check_noise_std(noise_std, size=D)
        encoder.eval()
        _check_encoder_outputs(encoder, D, d)
        vae = cls(decoder.layer_sizes, noise="isotropic" if std.ndim == 0 else "diagonal")
        vae.decoder_ = decoder
        vae.encoder_ = encoder
        vae.noise_std_ = float(std) if std.ndim == 0 else std.copy()
        vae.n_features_in_ = decoder.output_dim
        vae.latent_dim_ = decoder.latent_dim
        return vae

    # ------------------------------------------------------------------ checkpoints
    _STATE_VERSION = 1

    def state_dict(self) -> dict:
        """The fitted estimator as plain data, to checkpoint it without pickle.

        Nested dicts, lists and tuples of numbers, strings, ``None``, numpy arrays and torch
        tensors (as ``ExactDGN``'s trainers' states, so :func:`exactdgn.training.pack_state`
        turns it into JSON and named arrays, e.g. for :func:`exactdgn.io.write_npz_atomic`):
        the decoder (float64 arrays), the encoder (its :class:`GaussianEncoder` arguments and
        parameters), the noise, ``history_``, ``n_iter_``, ``best_iter_``, ``stopped_early_``,
        ``converged_``
        and the training state of the last completed epoch (the networks and ``log σ`` in the
        training dtype, Adam's public ``state_dict()``, the random streams, the early-stopping
        record), so that :meth:`load_state_dict` followed by a fit with ``warm_start=True``
        continues the run exactly. A copy: changing it does not change the estimator.

        Returns
        -------
        dict

        Raises
        ------
        TypeError
            When ``encoder_`` is not a :class:`GaussianEncoder` (an encoder given to
            :meth:`from_parts`: save it with torch).
        """
        self._check_fitted()
        enc = self.encoder_
        if not isinstance(enc, GaussianEncoder):
            raise TypeError(
                f"state_dict records a GaussianEncoder, this encoder_ is a {type(enc).__name__} "
                "(given to from_parts): save it with torch (its own state_dict())"
            )
        arrays, meta = decoder_to_arrays(self.decoder_)
        config = {
            "n_features": enc.n_features,
            "latent_dim": enc.latent_dim,
            "hidden_sizes": list(enc.hidden_sizes),
            "activation": enc.activation,
            "min_log_std": enc.min_log_std,
            "max_log_std": enc.max_log_std,
        }
        return copy.deepcopy(
            {
                "estimator": type(self).__name__,
                "version": self._STATE_VERSION,
                "decoder": {"arrays": arrays, "meta": meta},
                "encoder": {"config": config, "state": enc.state_dict()},
                "noise_std": np.asarray(self.noise_std_, dtype=np.float64),
                "history": getattr(self, "history_", None),
                "n_iter": getattr(self, "n_iter_", None),
                "best_iter": getattr(self, "best_iter_", None),
                "stopped_early": getattr(self, "stopped_early_", None),
                "converged": getattr(self, "converged_", None),
                "train": getattr(self, "_train_state", None),
                "feature_names": (
                    self.feature_names_in_.tolist() if hasattr(self, "feature_names_in_") else None
                ),
            }
        )

    def load_state_dict(self, state: dict) -> VAE:
        """Make this estimator the fitted one that :meth:`state_dict` described.

        The parameters (``get_params``) stay this estimator's own: build it with those of the
        saved one for a warm start to continue the same run (``noise`` must match the saved
        noise).

        Parameters
        ----------
        state : dict
            A :meth:`state_dict` of the same class (after :func:`exactdgn.training.
            unpack_state`, arrays may be numpy arrays or tensors alike).

        Returns
        -------
        self
        """
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("estimator") != name:
            got = state.get("estimator") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state is not a {name} state_dict (it holds {got!r})")
        if state.get("version") != self._STATE_VERSION:
            raise ValueError(
                f"state has version {state.get('version')!r}, this exactdgn reads version "
                f"{self._STATE_VERSION}"
            )
        state = copy.deepcopy(state)
        dec = decoder_from_arrays(state["decoder"]["arrays"], state["decoder"]["meta"])
        cfg = state["encoder"]["config"]
        with torch.random.fork_rng(devices=[]):
            enc = GaussianEncoder(
                cfg["n_features"],
                cfg["latent_dim"],
                tuple(cfg["hidden_sizes"]),
                cfg["activation"],
                min_log_std=cfg["min_log_std"],
                max_log_std=cfg["max_log_std"],
            ).to(torch.float64)
        enc.load_state_dict({k: torch.as_tensor(v) for k, v in state["encoder"]["state"].items()})
        for p in enc.parameters():
            p.requires_grad_(False)
        std = np.asarray(state["noise_std"], dtype=np.float64)
        self.decoder_ = dec
        self.encoder_ = enc.eval()
        self.noise_std_ = float(std) if std.ndim == 0 else std.copy()
        self.n_features_in_ = dec.output_dim
        self.latent_dim_ = dec.latent_dim
        for attr, key in (
            ("history_", "history"),
            ("n_iter_", "n_iter"),
            ("best_iter_", "best_iter"),
            ("stopped_early_", "stopped_early"),
            ("converged_", "converged"),  # absent from states saved before it was kept
        ):
            if state.get(key) is not None:
                setattr(self, attr, state[key])
            elif hasattr(self, attr):
                delattr(self, attr)
        self._train_state = state.get("train")
        names = state.get("feature_names")  # absent from states saved before names were kept
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return self

    # ------------------------------------------------------------------ training
    def _validate_params(self) -> None:
        """Check every parameter (``fit`` calls it first); the message says what to change."""

        def bad(name, what):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {what}")

        def is_real(value):  # as ExactDGN's: a bool is not a number
            return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)

        dec = self.decoder
        if dec is None:
            if self.latent_dim is not None and not is_int(self.latent_dim, 1):
                bad("latent_dim", "use an integer >= 1")
            if self.hidden_sizes is not None:
                try:
                    hs = tuple(self.hidden_sizes)
                except TypeError:
                    hs = (None,)
                if not all(is_int(h, 1) for h in hs):
                    bad("hidden_sizes", "use a tuple of positive integers, e.g. (12,) or (32, 32)")
        else:
            if not isinstance(dec, Decoder):
                ok = not isinstance(dec, str | bytes) and isinstance(dec, Sequence | np.ndarray)
                if not (ok and len(dec) >= 2 and all(is_int(s, 1) for s in dec)):
                    bad(
                        "decoder",
                        "give an exactdgn.Decoder, layer sizes [d, n_1, ..., D] (positive "
                        "integers), or None with latent_dim / hidden_sizes",
                    )
            for name in ("latent_dim", "hidden_sizes"):
                if getattr(self, name) is not None:
                    bad(name, "leave it None when decoder is given (the decoder fixes the sizes)")
        if not isinstance(dec, Decoder) and self.activation not in _DECODER_ACTIVATIONS:
            bad("activation", f"choose one of {_DECODER_ACTIVATIONS}")
        if not (is_real(self.negative_slope) and np.isfinite(self.negative_slope)):
            bad("negative_slope", "use a finite float (e.g. 0.1)")
        if self.noise not in ("isotropic", "diagonal"):
            bad("noise", "choose 'isotropic' or 'diagonal'")
        if not (is_real(self.min_noise_std) and 0 < self.min_noise_std < np.inf):
            bad("min_noise_std", "use a positive float (the objective is unbounded as σ -> 0)")
        if self.init_noise_std is not None:
            init = np.asarray(self.init_noise_std)
            if init.dtype.kind not in "iuf":  # not a bool, nor a string read as a number
                bad("init_noise_std", "use a positive float or a vector of one per column")
            init = init.astype(np.float64)
            if init.ndim > 1 or not np.all(np.isfinite(init)) or np.any(init <= 0):
                bad("init_noise_std", "use a positive float or a vector of one per column")
            if init.ndim == 1 and self.noise == "isotropic":
                bad("init_noise_std", "isotropic noise takes a scalar (or use noise='diagonal')")
            if np.any(init < self.min_noise_std):
                bad("init_noise_std", f"it is below min_noise_std={self.min_noise_std}")
        try:
            enc = tuple(self.encoder_hidden)
        except TypeError:
            enc = (None,)
        if not all(is_int(h, 1) for h in enc):
            bad("encoder_hidden", "use a tuple of positive integers, e.g. (64, 64) or ()")
        if self.encoder_activation not in _ENCODER_ACTIVATIONS:
            bad("encoder_activation", f"choose one of {tuple(_ENCODER_ACTIVATIONS)}")
        self._validate_objective_params(bad)
        if not (is_real(self.lr) and 0 < self.lr < np.inf):
            bad("lr", "use a positive float (e.g. 1e-3)")
        if not is_int(self.batch_size, 1):
            bad("batch_size", "use an integer >= 1")
        if not is_int(self.max_epochs, 0):
            bad("max_epochs", "use an integer >= 0 (0 only initialises the model)")
        frac = self.validation_fraction
        if not (is_real(frac) and 0 <= frac < 1):
            bad("validation_fraction", "use a fraction in [0, 1) (0: no early stopping)")
        if not is_int(self.patience, 1):
            bad("patience", "use an integer >= 1")
        if not (is_real(self.min_delta) and 0 <= self.min_delta < np.inf):
            bad("min_delta", "use a finite float >= 0 (nats per point)")
        if self.dtype not in ("float64", "float32", torch.float64, torch.float32):
            bad("dtype", "choose 'float64' or 'float32'")
        rs = self.random_state
        if not (rs is None or is_int(rs, 0) or isinstance(rs, np.random.Generator)):
            bad("random_state", "use None, an integer >= 0 or a numpy.random.Generator")
        if not isinstance(self.warm_start, bool | np.bool_):
            bad("warm_start", "use True (continue the fitted run) or False")
        if not isinstance(self.progress, bool | np.bool_):
            bad("progress", "use True (show a progress bar) or False")

    def _validate_objective_params(self, bad) -> None:
        if not is_int(self.n_train_samples, 1):
            bad("n_train_samples", "use an integer >= 1")

    def _n_objective_samples(self) -> int:
        return int(self.n_train_samples)

    def _objective(self, log_w):
        """Per-point training objective from ``log w`` of shape (B, K): the ELBO estimate."""
        return log_w.mean(dim=1)

    def _initial_decoder(self, D: int, seed: int) -> Decoder:
        if isinstance(self.decoder, Decoder):
            dec = self.decoder.copy()
        else:
            if self.decoder is None:
                d = 1 if self.latent_dim is None else int(self.latent_dim)
                hidden = (12,) if self.hidden_sizes is None else tuple(self.hidden_sizes)
                sizes = [d, *(int(h) for h in hidden), D]
            else:
                sizes = [int(s) for s in self.decoder]
            dec = Decoder.random(
                sizes, activation=self.activation, negative_slope=self.negative_slope, seed=seed
            )
        if dec.output_dim != D:
            raise ValueError(
                f"the decoder outputs {dec.output_dim} dimensions but X has {D}: give decoder "
                f"sizes ending in {D} (or decoder=None with latent_dim / hidden_sizes)"
            )
        return dec

    def _initial_log_noise(self, X: np.ndarray, dtype) -> torch.Tensor:
        D = X.shape[1]
        floor = float(self.min_noise_std)
        size = 1 if self.noise == "isotropic" else D
        if self.init_noise_std is None:
            std = X.std(axis=0) if X.shape[0] > 1 else np.ones(D)
            init = 0.5 * (np.sqrt(np.mean(std**2)) if size == 1 else std)
            init = np.maximum(np.broadcast_to(init, (size,)), floor)
        else:
            init = check_positive(self.init_noise_std, name="init_noise_std", size=D)
            init = np.broadcast_to(init, (size,)).astype(np.float64)
        return torch.log(torch.as_tensor(init, dtype=dtype))

    def fit(self, X, y=None, *, X_val=None, callback=None) -> VAE:
        """Train on ``X`` (N, D) by maximising the objective with Adam.

        Parameters
        ----------
        X : array_like of shape (N, D)
        y : ignored
        X_val : array_like of shape (M, D), optional
            Validation data for early stopping (else ``validation_fraction`` of ``X``).
        callback : callable, optional
            Called after every epoch as ``callback(iteration, snapshot)``, as by
            :meth:`exactdgn.ExactDGN.fit`: ``iteration`` is the epoch (from 1, counted over the
            whole run with ``warm_start``; its row ``history_[iteration]`` is already
            recorded), ``snapshot()`` returns the current ``(Decoder, noise_std)`` in float64
            (``noise_std`` as ``noise_std_``: a float for isotropic noise) (built only when
            called, e.g. to score training curves with the exact likelihood). Training stops
            early if it returns ``False`` (or ``numpy.False_``; with a validation split, the
            best validation epoch so far is kept). Anything but None or a callable of two
            positional arguments is a ``TypeError`` before training starts.

        Returns
        -------
        self

        Notes
        -----
        ``warm_start=True`` on a fitted estimator continues its run (see the class
        parameters): ``max_epochs`` more epochs, rows appended to ``history_``, ``n_iter_``
        the epochs of this call. Two warm fits of ``n`` epochs end bitwise where one fit of
        ``2 n`` does, early stopping included (the same ``X`` and parameters).

        Ctrl-C (``KeyboardInterrupt``) stops training at once (within the minibatch step
        running then) and discards the unfinished epoch: the estimator is left fitted as if
        ``fit`` had ended after the last completed epoch (its row is the last of
        ``history_``; with a validation split the best validation epoch so far is kept, as
        at any end of ``fit``; ``stopped_early_`` is True), a warning is logged, and the
        ``KeyboardInterrupt`` propagates, as :meth:`exactdgn.ExactDGN.fit` does. The
        training state is that epoch's too, so a later ``fit`` with ``warm_start=True`` runs
        the interrupted epoch again and continues exactly as the uninterrupted run. An
        interrupt raised by ``callback`` counts its epoch as completed. An interrupt before
        the first epoch starts (while the initial parameters are evaluated) leaves the
        estimator as it was.
        """
        self._validate_params()
        check_callback(callback)
        names = feature_names(X)  # a data frame's column names (feature_names_in_)
        warm = bool(self.warm_start) and hasattr(self, "decoder_")
        if warm:  # the run goes on with the columns in the order it was started with
            check_feature_names(self, X)
        X = check_array(X, name="X")
        if X.shape[0] == 0:
            raise ValueError(f"X has no rows (shape {X.shape}): give at least one point")
        if X.shape[1] == 0:
            raise ValueError(
                f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: "
                "give at least one feature"
            )
        N, D = X.shape
        dtype = _torch_dtype(self.dtype)
        batch_size = int(self.batch_size)
        max_epochs = int(self.max_epochs)
        patience = int(self.patience)
        n_samples = self._n_objective_samples()
        frac = float(self.validation_fraction)
        min_delta = float(self.min_delta)

        state = getattr(self, "_train_state", None) if warm else None
        if warm:
            self._check_warm_start(D)
        if state is None:  # a new run: from the parameters, or from the fitted networks
            rng = check_random_state(self.random_state)
            dec_seed, enc_seed, torch_seed, val_seed = (int(s) for s in rng.integers(0, 2**62, 4))
            split_rng, split_state = rng, rng.bit_generator.state
            if warm:
                run = _Run.from_fitted(self, dtype)
            else:
                dec = self._initial_decoder(D, dec_seed)
                # parameter initialisation must not disturb torch's global RNG
                with torch.random.fork_rng(devices=[]):
                    decoder_module = dec.to_torch(dtype)  # nn.Linear draws (then overwritten)
                    torch.manual_seed(enc_seed)
                    encoder = GaussianEncoder(
                        D, dec.latent_dim, tuple(self.encoder_hidden), self.encoder_activation
                    ).to(dtype)
                run = _Run(self, decoder_module, encoder, self._initial_log_noise(X, dtype))
            run.gen.manual_seed(torch_seed)
            run.val_seed, run.split_state = val_seed, split_state
        else:  # continue the run where its last completed epoch left it
            run = _Run.from_state(self, state, dtype)
            split_rng = _generator_from_state(run.split_state)
        d = run.d

        # data split (a warm start with the same X draws the same split)
        if X_val is not None:
            val_names = feature_names(X_val)
            if names is not None and val_names is not None and val_names.tolist() != names.tolist():
                raise ValueError(
                    f"X_val has columns {val_names.tolist()} but X has {names.tolist()}: select "
                    "and order them as in X"
                )
            Xv = check_array(X_val, name="X_val", n_features=D)
            if Xv.shape[0] == 0:
                raise ValueError(
                    f"X_val has no rows (shape {Xv.shape}): give validation points, or leave "
                    "X_val None (validation_fraction of X is held out)"
                )
            Xt = X
        elif frac > 0:
            n_val = max(1, round(frac * N))
            if n_val >= N:
                raise ValueError(
                    f"validation_fraction={frac} leaves no training data (N={N}): lower it "
                    "(0 trains on all of X without early stopping)"
                )
            perm = split_rng.permutation(N)
            Xv, Xt = X[perm[:n_val]], X[perm[n_val:]]
        else:
            Xv, Xt = None, X
        if Xv is None:  # no validation in this call: the last epoch is kept
            run.best, run.bad, run.ref = None, 0, None
        xt = torch.as_tensor(Xt, dtype=dtype)
        xv = val_eps = None
        if Xv is not None:
            xv = torch.as_tensor(Xv, dtype=dtype)
            val_eps = torch.randn(
                (xv.shape[0], n_samples, d),
                generator=torch.Generator().manual_seed(run.val_seed),
                dtype=dtype,
            )
        lr = float(self.lr)
        for group in run.opt.param_groups:  # a warm start takes the current learning rate
            group["lr"] = lr

        def row(it, loglik, seconds, seconds_train, val) -> dict:
            return HistoryRow(
                iter=it,
                loglik=loglik,
                n_regions=None,
                seconds=seconds,
                seconds_mstep=seconds_train,
                step=lr if it else 0.0,  # row 0: no step taken
                method=self._method,
                val_loglik=val,
            ).as_dict()

        if state is None:
            # row 0: the starting parameters (own noise: the training stream is not touched)
            t0 = time.perf_counter()
            eps0 = torch.randn(
                (xt.shape[0], n_samples, d),
                generator=torch.Generator().manual_seed(run.val_seed + 1),
                dtype=dtype,
            )
            ll0 = run.evaluate(xt, eps0, batch_size)
            del eps0
            v0 = run.evaluate(xv, val_eps, batch_size) if xv is not None else None
            history = [row(0, ll0, time.perf_counter() - t0, 0.0, v0)]
        else:
            history = [dict(r) for r in self.history_]

        first = run.epoch
        saved = run.state()  # the last completed epoch: what an interrupt goes back to
        stopped = converged = False
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_epochs, desc=type(self).__name__, unit="epoch")
        try:
            for _ in range(max_epochs):
                t0 = time.perf_counter()
                objective = run.train_epoch(xt, batch_size, n_samples)
                t_train = time.perf_counter() - t0
                v_obj = None
                if xv is not None:
                    v_obj = run.evaluate(xv, val_eps, batch_size)
                    run.record_validation(v_obj, min_delta)
                history.append(row(run.epoch, objective, time.perf_counter() - t0, t_train, v_obj))
                saved = run.state()
                if bar is not None:
                    bar.update(1)
                    post = {"train": f"{objective:.4g}"}
                    if v_obj is not None:
                        post["val"] = f"{v_obj:.4g}"
                    bar.set_postfix(post)
                logger.debug(
                    "%s epoch %d: objective %.6g (validation %s)",
                    self._method,
                    run.epoch,
                    objective,
                    v_obj,
                )
                if callback is not None and callback_stops(callback(run.epoch, run.snapshot)):
                    stopped = True
                    break
                if run.bad >= patience:
                    stopped = converged = True
                    logger.info(
                        "%s: early stop at epoch %d (best validation objective %.6g at epoch %d)",
                        type(self).__name__,
                        run.epoch,
                        run.best["objective"],
                        run.best["epoch"],
                    )
                    break
        except KeyboardInterrupt:
            self._set_fitted(run, saved, history, first, stopped=True, names=names)
            logger.warning(
                "%s: training interrupted; the model holds epoch %d (objective %.6g, kept "
                "epoch %d): fit again with warm_start=True to continue the run (the command line "
                "keeps no VAE / IWAE run to resume: run the command again)",
                type(self).__name__,
                saved["epoch"],
                self.history_[-1]["loglik"],
                self.best_iter_,
            )
            raise
        finally:
            if bar is not None:
                bar.close()
        self._set_fitted(run, saved, history, first, stopped, names=names, converged=converged)
        return self

    def _check_warm_start(self, D: int) -> None:
        """A warm start continues the fitted model: the data and the noise model must fit it."""
        if self.decoder_.output_dim != D:
            raise ValueError(
                f"X has {D} columns but the fitted model expects {self.decoder_.output_dim} "
                "(warm_start=True continues the fitted run; set warm_start=False to start anew)"
            )
        fitted = "isotropic" if np.ndim(self.noise_std_) == 0 else "diagonal"
        if self.noise != fitted:
            raise ValueError(
                f"noise={self.noise!r} is invalid with warm_start=True: the fitted model has "
                f"{fitted} noise; set noise={fitted!r} to continue it (or warm_start=False)"
            )

    def _set_fitted(
        self,
        run: _Run,
        saved: dict,
        history: list,
        first: int,
        stopped: bool,
        names=None,
        converged: bool = False,
    ):
        """The fitted attributes from ``saved`` (a :meth:`_Run.state`): the kept epoch's
        networks (the best validation epoch, else the last one), the run's record, whether
        early stopping ended it (``converged``) and the data's column ``names`` (None: not a
        data frame)."""
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        best = saved["best"]
        kept = best["params"] if best is not None else saved["params"]
        run.load_params(kept)
        run.decoder_module.eval()
        self.decoder_ = Decoder.from_torch(run.decoder_module, input_shape=(run.d,))
        sigma = np.exp(run.log_sigma().detach().to(torch.float64).numpy())
        self.noise_std_ = float(sigma[0]) if self.noise == "isotropic" else sigma.copy()
        self.encoder_ = run.encoder.to(torch.float64).eval()
        for p in self.encoder_.parameters():
            p.requires_grad_(False)
        epoch = saved["epoch"]
        self.history_ = [r for r in history if r["iter"] <= epoch]
        self.n_iter_ = epoch - first
        self.best_iter_ = best["epoch"] if best is not None else epoch
        self.stopped_early_ = stopped
        self.converged_ = bool(converged)
        self.n_features_in_ = self.decoder_.output_dim
        self.latent_dim_ = run.d
        self._train_state = saved

    def score_samples(self, X, *, n_samples: int = 100, random_state=0) -> np.ndarray:
        """The training objective per point, a Monte Carlo lower bound on ``log p(x)``.

        The ELBO (:meth:`elbo` with ``n_samples`` draws; an :class:`IWAE`: its IWAE-k bound,
        :meth:`iwae_bound` averaged over ``n_samples`` draws of ``k``), with a fixed
        ``random_state`` by default so that repeated calls agree. It is not the exact
        log-likelihood: that is ``ExactDGN.from_decoder(est.decoder_,
        est.noise_std_).score_samples(X)`` (:func:`exactdgn.evaluation.vae_to_exact`).

        Parameters
        ----------
        X : array_like of shape (N, D)
        n_samples : int
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        ndarray of shape (N,)
        """
        return self.elbo(X, n_samples, random_state=random_state)

    def score(self, X, y=None, *, n_samples: int = 100, random_state=0) -> float:
        """Mean of :meth:`score_samples` (nats per point): the objective, not the exact value.

        Parameters
        ----------
        X : array_like of shape (N, D)
        y : ignored
        n_samples : int
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        float
        """
        return float(np.mean(self.score_samples(X, n_samples=n_samples, random_state=random_state)))

    # ------------------------------------------------------------------ model selection
    def _exact_model(self):
        """The fitted decoder and noise as an ``ExactDGN`` (its exact likelihood, parameter
        count and criteria; the encoder is not a parameter of the model of ``x``)."""
        from ..model import ExactDGN

        self._check_fitted()
        return ExactDGN.from_decoder(self.decoder_, self.noise_std_)

    def bic(self, X) -> float:
        """Bayesian information criterion ``-2 log L + k log N`` (lower is better), as
        :meth:`ExactDGN.bic <exactdgn.ExactDGN.bic>`.

        ``log L`` is the **exact** log-likelihood of the fitted decoder and noise
        (``ExactDGN.from_decoder(decoder_, noise_std_).score_samples(X)``, see
        :func:`exactdgn.evaluation.vae_to_exact`; it costs one exact E-step), not the
        objective :meth:`score_samples` estimates, so that the criterion compares with
        ``ExactDGN``'s. ``k`` counts the decoder's parameters and the noise's (1, or ``D`` for
        diagonal noise); the encoder's are not parameters of the model of ``x``.

        Parameters
        ----------
        X : array_like of shape (N, D)

        Returns
        -------
        float
        """
        return self._exact_model().bic(self._check_X(X))

    def aic(self, X) -> float:
        """Akaike information criterion ``-2 log L + 2k`` (lower is better), with the exact
        ``log L`` and the ``k`` of :meth:`bic`.

        Parameters
        ----------
        X : array_like of shape (N, D)

        Returns
        -------
        float
        """
        return self._exact_model().aic(self._check_X(X))

    # ------------------------------------------------------------------ evaluation helpers
    def _check_fitted(self):
        if not hasattr(self, "decoder_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(X) first (or build "
                f"it with {type(self).__name__}.from_parts)"
            )

    def _eval_parts(self):
        self._check_fitted()
        with torch.random.fork_rng(devices=[]):
            dec = self.decoder_.to_torch(torch.float64).eval()
        enc = self.encoder_
        # parameters and buffers (an encoder may have none of either: a closed-form posterior)
        tensors = [*enc.parameters(), *enc.buffers()]
        if any(t.is_floating_point() and t.dtype != torch.float64 for t in tensors):
            enc = copy.deepcopy(enc).to(torch.float64)
        sigma = np.atleast_1d(np.asarray(self.noise_std_, dtype=np.float64))
        return dec, enc.eval(), torch.log(torch.as_tensor(sigma))

    def _check_X(self, X) -> np.ndarray:
        self._check_fitted()
        check_feature_names(self, X)
        X = check_array(
            X, name="X", n_features=self.decoder_.output_dim, estimator=type(self).__name__
        )
        if X.shape[0] == 0:
            raise ValueError(f"X has no rows (shape {X.shape}): give at least one point")
        return X

    def _iter_log_weights(self, X: np.ndarray, k: int, rng: np.random.Generator, max_elements):
        """Yield ``(row_slice, log_w)`` chunks covering ``k`` samples of every row of ``X``.

        For each row chunk the sample chunks come in order; ``log_w`` has shape (rows, kc).
        The chunk sizes keep rows * kc * (widest layer) below ``max_elements``. Each chunk's
        ``rows * kc`` samples are reported (:func:`exactdgn._progress.report`) once it is used.
        """
        dec, enc, log_sigma = self._eval_parts()
        d = self.decoder_.latent_dim
        sizes = self.decoder_.layer_sizes
        # the output layer by its Gram matrix when it is much narrower than the output
        lowrank = len(sizes) > 2 and 4 * sizes[-2] <= sizes[-1] and isinstance(dec[-1], nn.Linear)
        width = max([*(sizes[:-1] if lowrank else sizes), d])
        per_sample = max(1, int(max_elements) // width)
        if k <= per_sample:
            kc, rows = k, max(1, per_sample // k)
        else:
            kc, rows = per_sample, 1
        xt = torch.as_tensor(X)
        with torch.no_grad():
            for r0 in range(0, X.shape[0], rows):
                sl = slice(r0, min(r0 + rows, X.shape[0]))
                xb = xt[sl]
                for k0 in range(0, k, kc):
                    kk = min(kc, k - k0)
                    eps = torch.as_tensor(rng.standard_normal((xb.shape[0], kk, d)))
                    if lowrank:
                        lw = _log_weights_lowrank(xb, eps, dec[:-1], dec[-1], enc, log_sigma)
                    else:
                        lw = _log_weights(xb, eps, dec, enc, log_sigma)
                    yield sl, lw.numpy()
                    report(xb.shape[0] * kk)  # the chunk's samples, once it is used

    def _lse_stats(self, X, k, rng, max_elements=_EVAL_ELEMENTS):
        """Per row: logsumexp of ``log w`` and of ``2 log w`` over ``k`` samples (streaming)."""
        N = X.shape[0]
        m1 = np.full(N, -np.inf)
        s1 = np.zeros(N)
        m2 = np.full(N, -np.inf)
        s2 = np.zeros(N)
        for sl, lw in self._iter_log_weights(X, k, rng, max_elements):
            for m, s, v in ((m1, s1, lw), (m2, s2, 2.0 * lw)):
                cm = np.maximum(m[sl], v.max(axis=1))
                s[sl] = s[sl] * np.exp(m[sl] - cm) + np.exp(v - cm[:, None]).sum(axis=1)
                m[sl] = cm
        return m1 + np.log(s1), m2 + np.log(s2)

    # ------------------------------------------------------------------ public evaluation
    def encode(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of ``q(z | x)``: two arrays of shape (N, d)."""
        X = self._check_X(X)
        _, enc, _ = self._eval_parts()
        with torch.no_grad():
            mu, log_s = enc(torch.as_tensor(X))
        return mu.numpy().copy(), np.exp(log_s.numpy())

    def log_q(self, X, Z) -> np.ndarray:
        """``log q(z | x)`` for ``Z`` of shape (N, d) or (N, K, d) -> (N,) / (N, K)."""
        X = self._check_X(X)
        Z, squeeze = self._check_Z(Z, X.shape[0])
        mu, std = self.encode(X)
        u = (Z - mu[:, None, :]) / std[:, None, :]
        out = (
            -0.5 * np.sum(u * u, axis=-1)
            - np.log(std).sum(axis=1)[:, None]
            - 0.5 * Z.shape[-1] * _LOG_2PI
        )
        return out[:, 0] if squeeze else out

    def log_joint(self, X, Z) -> np.ndarray:
        """``log p(x | z) + log p(z)`` for ``Z`` of shape (N, d) or (N, K, d) -> (N,) / (N, K)."""
        X = self._check_X(X)
        Z, squeeze = self._check_Z(Z, X.shape[0])
        N, K, d = Z.shape
        D = X.shape[1]
        sigma = np.broadcast_to(np.asarray(self.noise_std_, dtype=np.float64), (D,))
        xhat = self.decoder_(Z.reshape(N * K, d)).reshape(N, K, D)
        r = (X[:, None, :] - xhat) / sigma
        out = (
            -0.5 * np.sum(r * r, axis=-1)
            - np.sum(np.log(sigma))
            - 0.5 * D * _LOG_2PI
            - 0.5 * np.sum(Z * Z, axis=-1)
            - 0.5 * d * _LOG_2PI
        )
        return out[:, 0] if squeeze else out

    def _check_Z(self, Z, N) -> tuple[np.ndarray, bool]:
        Z = np.asarray(Z, dtype=np.float64)
        d = self.decoder_.latent_dim
        if Z.ndim == 2:
            Z, squeeze = Z[:, None, :], True
        elif Z.ndim == 3:
            squeeze = False
        else:
            raise ValueError(f"Z must have shape (N, d) or (N, K, d), got {Z.shape}")
        if Z.shape[0] != N or Z.shape[2] != d:
            raise ValueError(f"Z has shape {Z.shape}; expected ({N}, {d}) or ({N}, K, {d})")
        if not np.all(np.isfinite(Z)):
            raise ValueError("Z contains NaN or infinite values")
        return Z, squeeze

    def elbo(self, X, n_samples: int = 100, *, random_state=None, return_std: bool = False):
        """Monte Carlo ELBO per point, ``mean_i log w_i`` with ``z_i ~ q(z | x)``.

        Parameters
        ----------
        X : array_like of shape (N, D)
        n_samples : int
        random_state : None, int or numpy.random.Generator
        return_std : bool
            Also return the standard error ``std(log w) / sqrt(n_samples)`` (needs >= 2 samples).

        Returns
        -------
        elbo : ndarray of shape (N,)
        stderr : ndarray of shape (N,), only if ``return_std``
        """
        X = self._check_X(X)
        n = _int_param(n_samples, "n_samples", 2 if return_std else 1)
        rng = check_random_state(random_state)
        N = X.shape[0]
        count = np.zeros(N)
        mean = np.zeros(N)
        m2 = np.zeros(N)
        for sl, lw in self._iter_log_weights(X, n, rng, _EVAL_ELEMENTS):
            nb = lw.shape[1]
            cmean = lw.mean(axis=1)
            cm2 = np.sum((lw - cmean[:, None]) ** 2, axis=1)
            na = count[sl]
            tot = na + nb
            delta = cmean - mean[sl]
            mean[sl] += delta * nb / tot
            m2[sl] += cm2 + delta**2 * na * nb / tot
            count[sl] = tot
        if not return_std:
            return mean
        return mean, np.sqrt(m2 / (n - 1) / n)

    def iwae_bound(
        self,
        X,
        k: int = 5,
        *,
        n_repeats: int = 1,
        random_state=None,
        return_std: bool = False,
    ):
        """IWAE-k bound per point: ``log (1/k) Σ_{i<=k} w_i``, averaged over ``n_repeats`` draws.

        Each draw is an unbiased estimate of the bound ``E[log (1/k) Σ w_i] <= log p(x)``.

        Parameters
        ----------
        X : array_like of shape (N, D)
        k : int
        n_repeats : int
            Independent draws averaged; ``return_std`` needs ``n_repeats >= 2``.
        random_state : None, int or numpy.random.Generator
        return_std : bool
            Also return the standard error of the average over repeats.

        Returns
        -------
        bound : ndarray of shape (N,)
        stderr : ndarray of shape (N,), only if ``return_std``
        """
        X = self._check_X(X)
        k = _int_param(k, "k", 1)
        r = _int_param(n_repeats, "n_repeats", 2 if return_std else 1)
        rng = check_random_state(random_state)
        draws = np.stack([self._lse_stats(X, k, rng)[0] - math.log(k) for _ in range(r)])
        est = draws.mean(axis=0)
        if not return_std:
            return est
        return est, draws.std(axis=0, ddof=1) / math.sqrt(r)

    def importance_log_likelihood(
        self,
        X,
        k: int = 5000,
        *,
        random_state=None,
        return_std: bool = False,
        max_elements: int = _EVAL_ELEMENTS,
    ):
        """Importance-sampling estimate of ``log p(x)`` with ``k`` proposals from ``q(z | x)``.

        ``log p̂(x) = logsumexp_i(log w_i) - log k``, computed in streamed chunks (at most
        ``max_elements`` floats per chunk) so memory does not grow with ``k``.

        Parameters
        ----------
        X : array_like of shape (N, D)
        k : int
        random_state : None, int or numpy.random.Generator
        return_std : bool
            Also return the delta-method standard error
            ``sqrt((mean(w²)/mean(w)² - 1) / (k - 1))`` of ``log p̂`` (needs ``k >= 2``; it does
            not include the downward bias ``≈ se²/2``, and is itself noisy when ``w`` is
            heavy-tailed).
        max_elements : int

        Returns
        -------
        log_px : ndarray of shape (N,)
        stderr : ndarray of shape (N,), only if ``return_std``
        """
        X = self._check_X(X)
        k = _int_param(k, "k", 2 if return_std else 1)
        max_elements = _int_param(max_elements, "max_elements", 1)
        rng = check_random_state(random_state)
        lse1, lse2 = self._lse_stats(X, k, rng, max_elements)
        est = lse1 - math.log(k)
        if not return_std:
            return est
        rel = np.expm1(np.maximum(lse2 + math.log(k) - 2.0 * lse1, 0.0))
        return est, np.sqrt(rel / (k - 1))

    def sample(self, n_samples: int = 1, random_state=None, return_latent: bool = False):
        """Draw ``x = g(z) + σ ε`` with ``z, ε`` standard normal, as :meth:`ExactDGN.sample
        <exactdgn.ExactDGN.sample>` (the same seed draws the same points as the exact model
        :func:`exactdgn.evaluation.vae_to_exact`).

        Parameters
        ----------
        n_samples : int
            Number of points, >= 1.
        random_state : None, int or numpy.random.Generator
        return_latent : bool
            Also return the latent draws ``z``.

        Returns
        -------
        X : ndarray of shape (n_samples, D)
        Z : ndarray of shape (n_samples, d), only if ``return_latent``
        """
        self._check_fitted()
        n = _int_param(n_samples, "n_samples", 1)
        rng = check_random_state(random_state)
        Z = rng.standard_normal((n, self.decoder_.latent_dim))
        sigma = np.asarray(self.noise_std_, dtype=np.float64)
        X = self.decoder_(Z) + sigma * rng.standard_normal((n, self.decoder_.output_dim))
        return (X, Z) if return_latent else X


class IWAE(VAE):
    """Importance-weighted auto-encoder: trains the IWAE-k bound ``log (1/k) Σ_{i<=k} w_i``.

    Same parameters, attributes and evaluation methods as :class:`VAE`, with ``k`` (number of
    importance samples per point in the training objective; ``k = 1`` is the VAE's objective)
    in place of ``n_train_samples``. ``history_`` rows hold the IWAE-k bound as ``loglik`` /
    ``val_loglik`` and ``method="iwae"``; :meth:`score_samples` estimates the same bound.

    Examples
    --------
    >>> from exactdgn.datasets import wave
    >>> X = wave(200, random_state=0)
    >>> iw = IWAE([1, 8, 2], k=5, max_epochs=3, random_state=0).fit(X)
    >>> iw.n_iter_, iw.history_[-1]["method"]
    (3, 'iwae')
    """

    _method = "iwae"

    def __init__(
        self,
        decoder=None,
        *,
        k: int = 5,
        latent_dim: int | None = None,
        hidden_sizes: tuple | None = None,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        noise: str = "isotropic",
        init_noise_std=None,
        min_noise_std: float = 1e-3,
        encoder_hidden: Sequence[int] = (64, 64),
        encoder_activation: str = "relu",
        lr: float = 1e-3,
        batch_size: int = 128,
        max_epochs: int = 100,
        validation_fraction: float = 0.1,
        patience: int = 10,
        min_delta: float = 0.0,
        dtype: str = "float64",
        random_state=None,
        warm_start: bool = False,
        progress: bool = False,
    ):
        self.decoder = decoder
        self.k = k
        self.latent_dim = latent_dim
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.negative_slope = negative_slope
        self.noise = noise
        self.init_noise_std = init_noise_std
        self.min_noise_std = min_noise_std
        self.encoder_hidden = encoder_hidden
        self.encoder_activation = encoder_activation
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.min_delta = min_delta
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.progress = progress

    def _validate_objective_params(self, bad) -> None:
        if not is_int(self.k, 1):
            bad("k", "use an integer >= 1 (importance samples per point; 1 is the VAE's ELBO)")

    def _n_objective_samples(self) -> int:
        return int(self.k)

    def _objective(self, log_w):
        return torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1])

    def score_samples(self, X, *, n_samples: int = 100, random_state=0) -> np.ndarray:
        """The IWAE-k bound per point (:meth:`iwae_bound` with ``k``, averaged over
        ``n_samples`` draws), a lower bound on ``log p(x)``, not the exact value (see
        :meth:`VAE.score_samples`).

        Parameters
        ----------
        X : array_like of shape (N, D)
        n_samples : int
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        ndarray of shape (N,)
        """
        n = _int_param(n_samples, "n_samples", 1)  # named as the caller gave it
        return self.iwae_bound(X, int(self.k), n_repeats=n, random_state=random_state)
