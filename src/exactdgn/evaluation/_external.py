"""Exact evaluation of a decoder (and encoder) trained elsewhere, loaded without running code.

Loading is safe by default: ``.safetensors`` files, or ``torch.load(weights_only=True)`` state
dicts (tensors only; no code from the file runs). A pickled whole ``nn.Module`` needs
``unsafe_pickle=True``, which executes code from the file: use it only for files you trust.

A decoder state dict is read as an MLP: its 2-D ``*weight`` tensors in order (a ``torch.save``-d
dict: the module's order; ``.safetensors``, which stores the names sorted: the natural order of
the names, numbers compared as numbers, so ``2.weight`` comes before ``10.weight``), each with
the ``*bias`` of the same prefix (or none), must chain (``out`` of one = ``in`` of the next) and
be all it holds (other tensors, e.g. BatchNorm statistics or PReLU slopes, are refused); the
layer sizes ``[d, h_1, ..., D]`` follow from the shapes and, when given, are checked against
them. An encoder state dict must be that of :class:`exactdgn.baselines.GaussianEncoder` with
the given hidden sizes; a pickled encoder may return ``(mean, log_std)`` or
``(mean, log_var)``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

__all__ = ["evaluate_external", "load_torch_decoder", "load_torch_encoder"]


def _load(path, unsafe_pickle: bool, part: str = "decoder"):
    """Tensors (a dict) or, with ``unsafe_pickle``, any pickled object from ``path``.

    ``part`` (``"decoder"`` or ``"encoder"``) is what the file should hold, for the messages.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder, not the {part}'s weights: give its .safetensors file or its "
            "state_dict() saved with torch.save"
        )
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:  # SafetensorError (a Rust error) for a foreign file
            raise ValueError(
                f"{path} is not a readable .safetensors file ({exc}; its first bytes are {head!r})"
            ) from exc
        # the file keeps no order (its names come sorted as text: "10.weight" before
        # "2.weight"); the layers of an MLP follow the numbers in their names
        return {k: tensors[k] for k in sorted(tensors, key=_natural_key)}
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip, or a pickle
        raise ValueError(
            f"{path} is not a torch file (its first bytes are {head!r}): give the {part}'s "
            "state_dict() saved with torch.save, or a .safetensors file"
        )
    if unsafe_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ImportError) as exc:  # the pickled class does not resolve
            raise ValueError(
                f"{path} holds a pickled module whose class cannot be imported here ({exc}): "
                "make the module that defines it importable (on PYTHONPATH), or save the "
                f"{part}'s state_dict() instead"
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (and others) for code objects
        raise ValueError(
            f"{path} is not a plain state dict (torch.load(weights_only=True) refused it: "
            f"{_plain(str(exc).splitlines()[0])}). Save the module's state_dict() (or safetensors) "
            "instead; or, only for a file you trust, pass unsafe_pickle=True (--unsafe-pickle), "
            "which executes code from the file"
        ) from exc


def _natural_key(name: str) -> list:
    """Sort key of a tensor name with its digit runs as numbers (``layers.2`` < ``layers.10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _plain(text: str) -> str:
    """``text`` without terminal escape sequences (torch colours parts of its messages)."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _state_dict(obj, path) -> dict:
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "decoder_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(f"{path} holds {type(obj).__name__}, not a state dict of tensors")


def load_torch_decoder(
    path,
    *,
    layers=None,
    activation: str = "relu",
    negative_slope: float = 0.01,
    unsafe_pickle: bool = False,
):
    """A :class:`~exactdgn.Decoder` from a saved torch decoder (see the module docstring).

    Parameters
    ----------
    path : str or Path
        ``.safetensors``, a ``torch.save``-d state dict, or (``unsafe_pickle``) a whole module.
    layers : sequence of int, optional
        Expected layer sizes ``[d, ..., D]`` of a state dict (checked).
    activation : {"relu", "leaky_relu", "abs"}
        The hidden activation of a state-dict MLP.
    negative_slope : float
        Slope of ``leaky_relu``.
    unsafe_pickle : bool
        Accept a pickled module: this executes code from the file.
    """
    import torch

    from ..decoder import Decoder

    obj = _load(path, unsafe_pickle)
    if isinstance(obj, torch.nn.Module):
        dec = Decoder.from_torch(obj.eval())
        if layers is not None and [int(s) for s in layers] != list(dec.layer_sizes):
            raise ValueError(
                f"{path}: the module has layer sizes {list(dec.layer_sizes)}, not {list(layers)}"
            )
        return dec
    sd = _state_dict(obj, path)
    Ws, bs, used = [], [], set()
    for key, t in sd.items():
        if key.endswith("weight") and t.ndim == 2:
            Ws.append(t.detach().to(torch.float64).numpy())
            bkey = key[: -len("weight")] + "bias"
            bias = sd.get(bkey)
            bs.append(
                np.zeros(t.shape[0]) if bias is None else bias.detach().to(torch.float64).numpy()
            )
            used.update((key, bkey))
    if not Ws:
        raise ValueError(f"{path}: no 2-D '*weight' tensors (is it a decoder's state dict?)")
    other = [k for k in sd if k not in used]
    if other:  # e.g. BatchNorm statistics or PReLU slopes: reading it as an MLP would drop them
        raise ValueError(
            f"{path}: tensors {other[:6]} are not the weights and biases of an MLP of Linear "
            "layers (BatchNorm, PReLU, convolution ...); a state dict is read as such an MLP "
            "only. Give the whole module with --unsafe-pickle (executes code from the file; "
            "trusted files only), or build the decoder with Decoder.from_torch in Python"
        )
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    for k in range(1, len(Ws)):
        if Ws[k].shape[1] != Ws[k - 1].shape[0]:
            raise ValueError(
                f"{path}: weight {k} has {Ws[k].shape[1]} inputs but weight {k - 1} has "
                f"{Ws[k - 1].shape[0]} outputs: not an MLP chain (give a pickled module with "
                "--unsafe-pickle, or export the decoder as nn.Sequential)"
            )
    if layers is not None and [int(s) for s in layers] != sizes:
        raise ValueError(f"{path}: the weights give layer sizes {sizes}, not {list(layers)}")
    act = (activation, negative_slope) if activation in ("leaky_relu", "prelu") else activation
    return Decoder(Ws, bs, [act] * (len(Ws) - 1))


def _encoder_shape(sd: dict):
    """``(n_features, latent_dim, hidden)`` of a GaussianEncoder state dict, else None."""
    body = re.compile(r"body\.(\d+)\.(weight|bias)")
    heads = {f"{h}.{p}" for h in ("mean_head", "log_std_head") for p in ("weight", "bias")}
    if not heads <= set(sd) or not all(k in heads or body.fullmatch(k) for k in sd):
        return None
    weights = sorted(
        (int(body.fullmatch(k)[1]), sd[k]) for k in sd if k.endswith("weight") and body.fullmatch(k)
    )
    if any(w.ndim != 2 for _, w in weights) or sd["mean_head.weight"].ndim != 2:
        return None
    first = weights[0][1] if weights else sd["mean_head.weight"]
    hidden = [int(w.shape[0]) for _, w in weights]
    return int(first.shape[1]), int(sd["mean_head.weight"].shape[0]), hidden


def load_torch_encoder(
    path,
    *,
    n_features: int,
    latent_dim: int,
    hidden=(64, 64),
    activation: str = "relu",
    output: str = "log_std",
    unsafe_pickle: bool = False,
):
    """An encoder ``x -> (mean, log_std)`` of ``q(z | x)`` (see the module docstring).

    Parameters
    ----------
    path : str or Path
        ``.safetensors``, a ``torch.save``-d :class:`~exactdgn.baselines.GaussianEncoder` state
        dict, or (``unsafe_pickle``) a whole module returning ``(mean, second)``.
    n_features, latent_dim : int
        The data dimension ``D`` and the decoder's latent dimension ``d`` (a state dict of
        other sizes is refused, naming them).
    hidden : sequence of int
        The hidden widths of a state dict's ``GaussianEncoder``.
    activation : str
        Its hidden activation.
    output : {"log_std", "log_var"}
        What the second output is: ``log s`` or ``log s²`` (pythae's ``log_covariance``).
        A state dict's head is clamped to ``GaussianEncoder``'s range of ``s`` either way.
    unsafe_pickle : bool
        Accept a pickled module: this executes code from the file.
    """
    import torch

    from ..baselines import GaussianEncoder

    if output not in ("log_std", "log_var"):
        raise ValueError(f"output={output!r} is invalid: use 'log_std' or 'log_var'")
    obj = _load(path, unsafe_pickle, "encoder")
    if isinstance(obj, torch.nn.Module):
        enc = obj
    else:
        enc = GaussianEncoder(n_features, latent_dim, tuple(hidden), activation)
        if output == "log_var":  # the head holds log s² = 2 log s: the same range of s
            enc.min_log_std, enc.max_log_std = 2.0 * enc.min_log_std, 2.0 * enc.max_log_std
        sd = _state_dict(obj, path)
        try:
            enc.load_state_dict(sd)
        except RuntimeError as exc:
            held = _encoder_shape(sd)
            if held is not None:
                what = f"it holds GaussianEncoder({held[0]}, {held[1]}, hidden={held[2]}) "
                if held[1] != latent_dim:
                    what += (
                        f"(an encoder of latent dimension {held[1]}, not the decoder's "
                        f"{latent_dim}: give the encoder trained with this decoder)"
                    )
                elif held[0] != n_features:
                    what += (
                        f"(an encoder of {held[0]} features, not the data's {n_features}: give "
                        "the data the model was trained on, or the encoder trained on these)"
                    )
                else:
                    what += "(give the encoder's hidden sizes: hidden=, --encoder-hidden)"
            else:  # torch's lines after its first say which keys are missing or unexpected
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                what = " ".join(lines[1:] or lines)
            raise ValueError(
                f"{path} is not a GaussianEncoder({n_features}, {latent_dim}, hidden="
                f"{list(hidden)}) state dict: {what}"
            ) from exc
    enc = enc.to(torch.float64).eval()
    if output == "log_std":
        return enc

    class _FromLogVar(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            mean, log_var = self.inner(x)[:2]
            return mean, 0.5 * log_var

    return _FromLogVar(enc).eval()


logger = logging.getLogger(__name__)


def _log_estimate(decoder, X) -> None:
    """The pre-fit estimate (:func:`exactdgn.training.estimate_training_cost`) of the exact
    pass, logged before it: a warning when it is long (as fit warns), else at info level."""
    from ..training._cost import _WARN_SECONDS, estimate_training_cost

    n, D = np.shape(X)
    cost = estimate_training_cost(decoder.latent_dim, decoder.hidden_sizes, n, D)
    long = cost.seconds > _WARN_SECONDS
    logger.log(
        logging.WARNING if long else logging.INFO,
        "exact pass over %d points, estimated (as one training E-step, an upper bound): %s%s",
        n,
        cost.describe(),
        "; no output until the regions are enumerated and the points scored" if long else "",
    )


def _check_noise_std(noise_std, decoder) -> np.ndarray:
    """``noise_std`` checked against the decoder before anything runs: one positive std, or
    one per output."""
    from .._validation import check_positive
    from ..decoder import Decoder

    if not isinstance(decoder, Decoder):
        raise TypeError(
            f"decoder must be an exactdgn.Decoder, got {type(decoder).__name__} (build one with "
            "load_torch_decoder or Decoder.from_torch)"
        )
    D = decoder.output_dim
    shape = np.shape(noise_std)
    if len(shape) == 1 and shape[0] != D:
        raise ValueError(
            f"noise_std has {shape[0]} values but the decoder has {D} outputs: give one std, "
            "or one per output"
        )
    return check_positive(noise_std, name="noise_std", size=D)


def _stage(progress: bool, index: int, n_stages: int, name: str, total=None, unit="pt"):
    """A tqdm bar for one stage of :func:`evaluate_external` (``evaluate [i/n] name``)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"evaluate [{index}/{n_stages}] {name}",
        unit=unit,
        unit_scale=unit != "pt",
        disable=not progress,
        leave=False,
        bar_format=None if total is not None else "{desc}: {elapsed}",  # nothing to count
    )


def evaluate_external(
    decoder,
    noise_std,
    X,
    *,
    encoder=None,
    seed: int = 0,
    n_elbo=100,
    k_iwae=5,
    k_is=5000,
    progress: bool = False,
):
    """Exact ``log p(x)`` of each row, with the encoder's ELBO / IWAE / IS estimates beside it.

    Parameters
    ----------
    decoder : Decoder
    noise_std : float or array_like of shape (D,)
    X : array_like of shape (N, D)
        At least one row, in the units the decoder was trained on (nothing is standardized).
        Without an encoder a NaN marks a missing value (its row's ``log_px`` is
        ``log p(x_obs)``); the encoder's estimates need complete rows.
    encoder : torch.nn.Module, optional
        ``x -> (mean, log_std)`` of ``q(z | x)`` (see :meth:`exactdgn.baselines.VAE.from_parts`).
    seed : int >= 0
        Seeds the estimates (``seed``, ``seed + 1``, ``seed + 2`` for ELBO, IWAE, IS).
    n_elbo, k_iwae, k_is : int >= 1
        ELBO samples, IWAE-k bound samples and importance-sampling proposals per point.
    progress : bool
        Show a tqdm progress bar per stage, ``evaluate [i/n] <stage>``: the regions, the exact
        log p(x) (over the points, block by block; the points are scored in one pass, whose
        values depend on the rows scored together in the last bits), then the encoder's ELBO,
        IWAE-k and IS-k (over the points x samples, chunk by chunk). Either way each stage's
        time and result are logged at INFO level when it ends, and the exact pass's estimated
        size (regions, memory, time: :func:`exactdgn.training.estimate_training_cost`) before
        it. The arguments (``noise_std`` against the decoder's outputs, the sample counts, the
        rows the encoder needs) are checked before any stage runs.

    Returns
    -------
    per_point : dict of (N,) arrays: ``log_px`` and, with an encoder, ``elbo``, ``iwae{k}``,
        ``is{k}``, ``gap`` (= exact - ELBO) and, for ``k_is >= 2``, ``is{k}_se`` (the IS
        estimate's delta-method standard error, see
        :meth:`~exactdgn.baselines.VAE.importance_log_likelihood`)
    summary : dict of means (nats per point) and the gaps of each estimate to the exact value
        (``gap_elbo``, ...); ``se_is{k}``: the standard error of the mean IS estimate
    """
    import time
    from contextlib import nullcontext

    from tqdm.contrib.logging import logging_redirect_tqdm

    from .._progress import progress_to
    from ..baselines import VAE
    from ..model import ExactDGN
    from ._vae import _check_estimate_args

    _check_estimate_args(n_elbo=n_elbo, k_iwae=k_iwae, k_is=k_is, seed=seed, min_elbo=1)
    std = _check_noise_std(noise_std, decoder)
    vae = None
    if encoder is not None:  # the estimates need complete rows: refused before any pass
        noise = np.broadcast_to(std, (decoder.output_dim,)).copy()  # as the exact model's
        vae = VAE.from_parts(decoder, encoder, noise)
        X = vae._check_X(X)
    n = int(np.shape(X)[0]) if np.ndim(X) == 2 else None
    if n:
        _log_estimate(decoder, X)
    names = ["regions", "exact log p(x)"]
    if vae is not None:
        names += ["ELBO", f"IWAE-{k_iwae}", f"IS-{k_is}"]

    def stage(i, compute, done, total=None, unit="pt"):
        """Run stage ``i`` (1-based) under its bar; log its time and ``done(result)``."""
        t0 = time.perf_counter()
        with _stage(progress, i, len(names), names[i - 1], total, unit) as bar:
            # log records (the partition's, ...) printed above the bar, not into its line
            with progress_to(bar.update), logging_redirect_tqdm() if progress else nullcontext():
                result = compute()
            bar.refresh()  # its final count (updates between refreshes are not drawn)
        seconds = time.perf_counter() - t0
        logger.info(
            "evaluate [%d/%d] %s: %s in %.2f s", i, len(names), names[i - 1], done(result), seconds
        )
        return result

    def mean(values):
        return f"mean {float(np.mean(values)):.6f} nats/point"

    def regions(model):
        return f"{model.n_regions_} regions"

    exact = stage(1, lambda: ExactDGN.from_decoder(decoder, noise_std), regions)
    ll = stage(2, lambda: exact.score_samples(X), mean, n)
    per = {"log_px": ll}
    summary = {"n_points": len(ll), "n_regions": exact.n_regions_, "exact": float(ll.mean())}
    if vae is None:
        return per, summary
    N = len(ll)
    elbo = stage(
        3, lambda: vae.elbo(X, n_samples=n_elbo, random_state=seed), mean, N * n_elbo, "sample"
    )
    iwae = stage(
        4, lambda: vae.iwae_bound(X, k=k_iwae, random_state=seed + 1), mean, N * k_iwae, "sample"
    )
    is_ = stage(
        5,
        lambda: vae.importance_log_likelihood(
            X, k=k_is, random_state=seed + 2, return_std=k_is >= 2
        ),
        lambda r: mean(r[0] if k_is >= 2 else r),
        N * k_is,
        "sample",
    )
    per["elbo"] = elbo
    per[f"iwae{k_iwae}"] = iwae
    per[f"is{k_is}"], se = is_ if k_is >= 2 else (is_, None)
    per["gap"] = ll - per["elbo"]
    if se is not None:
        per[f"is{k_is}_se"] = se
    for key in ("elbo", f"iwae{k_iwae}", f"is{k_is}"):
        summary[key] = float(per[key].mean())
        summary[f"gap_{key}"] = float((ll - per[key]).mean())
    if se is not None:
        summary[f"se_is{k_is}"] = float(np.sqrt(np.sum(se**2)) / len(se))
    return per, summary
