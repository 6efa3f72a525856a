"""Exact evaluation of a decoder (and encoder) trained elsewhere, loaded without running code.

Loading is safe by default: ``.safetensors`` files, or ``torch.load(weights_only=True)`` state
dicts (tensors only; no code from the file runs). A pickled whole ``nn.Module`` needs
``unsafe_pickle=True``, which executes code from the file: use it only for files you trust.

A decoder state dict is read as an MLP: its 2-D ``*weight`` tensors, each with the ``*bias`` of
the same prefix (or none), must chain (``out`` of one = ``in`` of the next) and be all it holds
(other tensors, e.g. BatchNorm statistics or PReLU slopes, are refused). A ``torch.save``-d dict
keeps the module's order, which is used. A ``.safetensors`` file keeps no order (it stores the
names sorted as text): the chain is rebuilt from the weights' shapes where only one order
chains; layers whose names differ only in integers (``0.``, ``2.``, ``layers.10.``, ``fc1``,
``fc2``) keep the order of those numbers; any other ambiguity (layers of equal shapes with
unnumbered names) is refused, naming the layers. The layer sizes ``[d, h_1, ..., D]`` follow
from the shapes and, when given, are checked against them. An encoder state dict must be that
of :class:`exactdgn.baselines.GaussianEncoder` with the given hidden sizes; a pickled encoder
may return ``(mean, log_std)`` or ``(mean, log_var)``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import warnings
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
        raise FileNotFoundError(f"the {part}'s file {path} does not exist")
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
        # "2.weight"): the decoder's layers are ordered by _chain_order
        return {k: tensors[k] for k in sorted(tensors, key=_natural_key)}
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip, or a pickle
        raise ValueError(
            f"{path} is not a torch file (its first bytes are {head!r}): give the {part}'s "
            "state_dict() saved with torch.save, or a .safetensors file"
        )
    if head.startswith(b"PK\x03\x04"):  # a zip: torch.save's, or a numpy .npz archive
        import zipfile

        with contextlib.suppress(zipfile.BadZipFile, OSError):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if "__meta__.npy" in names:
                raise ValueError(
                    f"{path} is an exactdgn model file, not a torch {part}: score it with "
                    f"'exactdgn score {path} DATA' (ExactDGN.load), or give evaluate the torch "
                    f"{part}'s state_dict() or .safetensors file"
                )
            if names and all(n.endswith(".npy") for n in names):
                raise ValueError(
                    f"{path} is a numpy .npz archive, not a torch file: give the {part}'s "
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
        except Exception as exc:  # a truncated or corrupt file: PytorchStreamReader, EOF ...
            raise _unreadable(path, part, exc) from exc
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects beyond tensors: a pickled module, a class
        # torch's first line is advice cut off ("... you have two options,"); its reason is
        # the "WeightsUnpickler error: Unsupported global: ..." line
        lines = [ln.strip() for ln in _plain(str(exc)).splitlines()]
        why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), "")
        raise ValueError(
            f"{path} is not a plain state dict: it holds Python objects beyond tensors (a "
            f"pickled module?){f'; torch says: {why}' if why else ''}. Save the {part}'s "
            "state_dict() (or safetensors) instead; or, only for a file you trust, pass "
            "unsafe_pickle=True (--unsafe-pickle), which executes code from the file"
        ) from exc
    except Exception as exc:  # a truncated or corrupt file: PytorchStreamReader, EOF ...
        raise _unreadable(path, part, exc) from exc


def _natural_key(name: str) -> list:
    """Sort key of a tensor name with its digit runs as numbers (``layers.2`` < ``layers.10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _unreadable(path, part: str, exc: Exception) -> ValueError:
    """The error for a torch file that ``torch.load`` cannot read (truncated, corrupt)."""
    first = _plain(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
    return ValueError(
        f"{path} cannot be read by torch.load ({first}): the file is truncated or corrupt; save "
        f"the {part} again (torch.save) or give another copy"
    )


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


#: DFS steps after which the search for the layer order of a ``.safetensors`` MLP gives up
_ORDER_STEPS = 200_000


def _chain_order(path, layers: list) -> list[int]:
    """The order of the ``layers`` (``(prefix, W)``) of an unordered (``.safetensors``) state
    dict: the one order in which the weights chain, where layers whose prefixes differ only in
    integers (``0.``, ``layers.2.``, ``fc1``) follow those integers; else a ValueError.
    """
    n = len(layers)
    # layers with one name template (digit runs replaced) are ordered by their numbers
    template = [re.sub(r"\d+", "#", p) for p, _ in layers]
    groups: dict = {}
    for i, t in enumerate(template):
        if "#" in t:
            groups.setdefault(t, []).append(i)
    before = [0] * n  # bit mask of the layers that must come before layer i
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda i: _natural_key(layers[i][0]))
        for k in range(1, len(members)):
            before[members[k]] = before[members[k - 1]] | (1 << members[k - 1])
    shapes = [W.shape for _, W in layers]
    found: list[list[int]] = []
    dead: set = set()  # (width, used) states known to have no completion
    steps = 0

    def search(width, used, order):
        nonlocal steps
        steps += 1
        if steps > _ORDER_STEPS:
            return
        if used == (1 << n) - 1:
            found.append(list(order))
            return
        if (width, used) in dead:
            return
        n_found = len(found)
        for i in range(n):
            if used >> i & 1 or before[i] & ~used or (width is not None and shapes[i][1] != width):
                continue
            order.append(i)
            search(shapes[i][0], used | 1 << i, order)
            order.pop()
            if len(found) >= 2 or steps > _ORDER_STEPS:
                return
        if len(found) == n_found:
            dead.add((width, used))

    search(None, 0, [])
    names = [p.rstrip(".") or "(no prefix)" for p, _ in layers]
    if len(found) == 1:
        return found[0]
    if not found and steps <= _ORDER_STEPS:
        listed = ", ".join(
            f"{nm!r} ({W.shape[1]} -> {W.shape[0]})"
            for nm, (_, W) in zip(names, layers, strict=True)
        )
        raise ValueError(
            f"{path}: the weights {listed} do not chain into an MLP in any order (each "
            "layer's inputs = the previous layer's outputs; layers numbered in their names kept "
            "in that order): give a pickled module with --unsafe-pickle, or export the "
            "decoder as nn.Sequential"
        )
    if len(found) >= 2:
        which = [names[a] for a, b in zip(*found[:2], strict=True) if a != b]
    else:  # gave up: every layer that shares its shape with another one
        which = [nm for nm, sh in zip(names, shapes, strict=True) if shapes.count(sh) > 1]
    raise ValueError(
        f"{path}: the order of the layers {which} cannot be told from the file: a .safetensors "
        "file keeps no order, their weights chain in more than one order and their names do "
        "not number them. Save the decoder's state_dict() with torch.save (a .pt file keeps the "
        "module's order), or name the layers with their index (0., 1., ... or fc1, fc2, ...)"
    )


def _linear_sizes(module) -> list[int] | None:
    """``[d, h_1, ..., D]`` of the ``nn.Linear`` layers of ``module`` in their order, if they
    chain (the sizes a user writes for a residual MLP); else None."""
    import torch

    lin = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not lin or any(b.in_features != a.out_features for a, b in itertools.pairwise(lin)):
        return None
    return [lin[0].in_features] + [m.out_features for m in lin]


def _check_layers(path, sizes, layers, module=None) -> None:
    """``layers`` (the user's ``[d, ..., D]``) against the decoder's ``sizes`` (of a state
    dict's weights; or of a ``module``'s import, or its Linear layers)."""
    if layers is None:
        return
    want = [int(s) for s in layers]
    if module is None:
        if want != sizes:
            raise ValueError(f"{path}: the weights give layer sizes {sizes}, not {want}")
        return
    # a module's imported hidden widths include units that carry values past an activation
    # (a residual sum): its Linear layers' sizes, what the user wrote, are accepted too
    own = _linear_sizes(module)
    if want in (sizes, own):
        return
    if own is None or own == sizes:
        raise ValueError(f"{path}: the module has layer sizes {sizes}, not {want}")
    raise ValueError(
        f"{path}: the module's Linear layers have sizes {own} (imported as {sizes}: the "
        f"hidden widths include units that carry values past the activations), not {want}"
    )


def load_torch_decoder(
    path,
    *,
    layers=None,
    activation: str | None = None,
    negative_slope: float | None = None,
    unsafe_pickle: bool = False,
):
    """A :class:`~exactdgn.Decoder` from a saved torch decoder (see the module docstring).

    Parameters
    ----------
    path : str or Path
        ``.safetensors``, a ``torch.save``-d state dict, or (``unsafe_pickle``) a whole module.
    layers : sequence of int, optional
        Expected layer sizes ``[d, ..., D]``, checked: a state dict's weights; a module's
        ``nn.Linear`` layers (in order) or its imported decoder (whose hidden widths include
        units that carry values past the activations, e.g. of residual sums).
    activation : {"relu", "leaky_relu", "abs"}, optional
        The hidden activation of a state-dict MLP (default ``"relu"``, torch's ``nn.ReLU``;
        a state dict does not record it). A module carries its own: giving one with a module
        is an error. (exactdgn's own ``VAE`` uses ``leaky_relu`` with slope 0.1: a state
        dict of its ``decoder_.to_torch()`` needs ``activation="leaky_relu",
        negative_slope=0.1``.)
    negative_slope : float, optional
        Slope of ``leaky_relu`` (default 0.01); an error with any other activation.
    unsafe_pickle : bool
        Accept a pickled module: this executes code from the file.

    Raises
    ------
    ValueError
        For a file that is not such a decoder, options that do not apply, or sizes that do
        not match, naming the file and the tensors.
    """
    import torch

    from ..decoder import Decoder

    if negative_slope is not None and activation != "leaky_relu":
        raise ValueError(
            f"negative_slope={negative_slope} applies to activation='leaky_relu' only (the "
            f"activation is {activation or 'relu'!r}): remove it, or use leaky_relu"
        )
    obj = _load(path, unsafe_pickle)
    if isinstance(obj, torch.nn.Module):
        if activation is not None:
            raise ValueError(
                f"{path} holds a whole module, which has its own activations: "
                f"activation={activation!r} (--activation) applies to a state dict only; "
                "remove it"
            )
        dec = Decoder.from_torch(obj.eval())
        _check_layers(path, list(dec.layer_sizes), layers, obj)
        return dec
    activation = "relu" if activation is None else activation
    negative_slope = 0.01 if negative_slope is None else negative_slope
    sd = _state_dict(obj, path)
    found, used = [], set()  # (prefix, W, bias) of each layer, in the dict's order
    for key, t in sd.items():
        if key.endswith("weight") and t.ndim == 2:
            prefix = key[: -len("weight")]
            bkey = prefix + "bias"
            W = t.detach().to(torch.float64).numpy()
            bias = sd.get(bkey)
            if bias is not None and tuple(bias.shape) != (W.shape[0],):
                raise ValueError(
                    f"{path}: {bkey!r} has shape {tuple(bias.shape)} but {key!r} has shape "
                    f"{tuple(W.shape)} (its bias needs shape ({W.shape[0]},)): not the weights "
                    "of a Linear layer; give the decoder's own state_dict()"
                )
            b = np.zeros(W.shape[0]) if bias is None else bias.detach().to(torch.float64).numpy()
            found.append((prefix, W, b))
            used.update((key, bkey))
    if not found:
        raise ValueError(f"{path}: no 2-D '*weight' tensors (is it a decoder's state dict?)")
    other = [k for k in sd if k not in used]
    if other:  # e.g. BatchNorm statistics or PReLU slopes: reading it as an MLP would drop them
        raise ValueError(
            f"{path}: tensors {other[:6]} are not the weights and biases of an MLP of Linear "
            "layers (BatchNorm, PReLU, convolution ...); a state dict is read as such an MLP "
            "only. Give the whole module with --unsafe-pickle (executes code from the file; "
            "trusted files only), or build the decoder with Decoder.from_torch in Python"
        )
    if Path(path).suffix == ".safetensors":  # no order kept: rebuilt from the shapes
        found = [found[i] for i in _chain_order(path, [(p, W) for p, W, _ in found])]
    Ws, bs = [W for _, W, _ in found], [b for _, _, b in found]
    for k in range(1, len(Ws)):
        if Ws[k].shape[1] != Ws[k - 1].shape[0]:
            raise ValueError(
                f"{path}: weight {k} ({found[k][0]}weight) has {Ws[k].shape[1]} inputs but "
                f"weight {k - 1} ({found[k - 1][0]}weight) has {Ws[k - 1].shape[0]} outputs: "
                "not an MLP chain in the file's order (give a pickled module with "
                "--unsafe-pickle, or export the decoder as nn.Sequential)"
            )
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    _check_layers(path, sizes, layers)
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
    hidden=None,
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
    hidden : sequence of int, optional
        The hidden widths of a state dict's ``GaussianEncoder``; ``None`` (default): read from
        its weights' shapes.
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
        sd = _state_dict(obj, path)
        if hidden is None:  # the widths its weights have (when they are a GaussianEncoder's)
            held = _encoder_shape(sd)
            hidden = held[2] if held is not None else (64, 64)
        enc = GaussianEncoder(n_features, latent_dim, tuple(hidden), activation)
        if output == "log_var":  # the head holds log s² = 2 log s: the same range of s
            enc.min_log_std, enc.max_log_std = 2.0 * enc.min_log_std, 2.0 * enc.max_log_std
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
    """``noise_std`` checked against the decoder (its latent dimension too) before anything
    runs: one positive std, or one per output."""
    from .._validation import check_noise_std
    from ..decoder import Decoder
    from ..gaussian._polytope import dimension_limit

    if not isinstance(decoder, Decoder):
        raise TypeError(
            f"decoder must be an exactdgn.Decoder, got {type(decoder).__name__} (build one with "
            "load_torch_decoder or Decoder.from_torch)"
        )
    why = dimension_limit(decoder.latent_dim)  # before the estimate of a pass that never runs
    if why is not None:
        raise ValueError(why)
    D = decoder.output_dim
    shape = np.shape(noise_std)
    if len(shape) == 1 and shape[0] != D:
        raise ValueError(
            f"noise_std has {shape[0]} values but the decoder has {D} outputs: give one std, "
            "or one per output"
        )
    return check_noise_std(noise_std, size=D)


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
    bad = ~(np.isfinite(elbo) & np.isfinite(iwae) & np.isfinite(per[f"is{k_is}"]))
    if bad.any():  # (printed as nan, and the command succeeded)
        raise ValueError(
            f"the encoder's estimates are not finite for {int(bad.sum())} rows, first "
            f"{np.flatnonzero(bad)[:5].tolist()}: its outputs (mean, log std) are NaN or "
            "infinite there; check the encoder and --encoder-output"
        )
    if se is not None:
        # a proposal that misses the posterior: a few draws carry all the weight, the
        # estimate falls far below log p(x) and its standard error collapses with it
        off = (ll - per[f"is{k_is}"]) > 10.0 * se + 1.0
        if off.any():
            warnings.warn(
                f"IS-{k_is} is more than 10 standard errors (and 1 nat) below the exact "
                f"log p(x) on {int(off.sum())} of {N} rows (first "
                f"{np.flatnonzero(off)[:5].tolist()}): its weights are dominated by a few "
                "draws (the encoder's proposal misses the posterior there), so its standard "
                "error is not to be trusted",
                UserWarning,
                stacklevel=2,
            )
    per["gap"] = ll - per["elbo"]
    if se is not None:
        per[f"is{k_is}_se"] = se
    for key in ("elbo", f"iwae{k_iwae}", f"is{k_is}"):
        summary[key] = float(per[key].mean())
        summary[f"gap_{key}"] = float((ll - per[key]).mean())
    if se is not None:
        summary[f"se_is{k_is}"] = float(np.sqrt(np.sum(se**2)) / len(se))
    return per, summary
