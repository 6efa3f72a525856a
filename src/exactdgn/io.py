"""Saving and loading decoders, models and training checkpoints (npz + JSON, no pickle).

Files are written atomically (temporary file + ``os.replace``), so a run killed at any point
leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ._threads import sigint_deferred
from .decoder import Activation, Decoder

__all__ = [
    "FORMAT_VERSION",
    "CheckpointMismatchError",
    "ModelFileError",
    "atomic_path",
    "decoder_from_arrays",
    "decoder_to_arrays",
    "read_npz",
    "write_npz_atomic",
]

FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A saved file is missing, corrupt, or from an incompatible version."""


class CheckpointMismatchError(ModelFileError):
    """A training checkpoint of another run: ``changed`` names what differs (estimator
    parameters, ``"X"`` for the data)."""

    def __init__(self, message: str, changed: list[str], ran: int | None = None):
        super().__init__(message)
        self.changed = list(changed)
        self.ran = ran  # the iterations run, when ``changed`` is ``["max_iter"]``


def decoder_to_arrays(decoder: Decoder, prefix: str = "") -> tuple[dict, dict]:
    """Arrays and JSON metadata describing a decoder."""
    arrays = {}
    for k, (W, c) in enumerate(zip(decoder.weights, decoder.biases, strict=True)):
        arrays[f"{prefix}W{k}"] = W
        arrays[f"{prefix}c{k}"] = c
    acts = []
    for k, a in enumerate(decoder.activations):
        slope = np.asarray(a.negative_slope, dtype=np.float64)
        arrays[f"{prefix}slope{k}"] = slope
        acts.append(a.kind)
    return arrays, {"n_layers": decoder.n_layers, "activations": acts}


def decoder_from_arrays(arrays, meta: dict, prefix: str = "") -> Decoder:
    L = int(meta["n_layers"])
    Ws = [np.asarray(arrays[f"{prefix}W{k}"]) for k in range(L)]
    cs = [np.asarray(arrays[f"{prefix}c{k}"]) for k in range(L)]
    acts = []
    for k, kind in enumerate(meta["activations"]):
        slope = np.asarray(arrays[f"{prefix}slope{k}"])
        acts.append(Activation(kind, slope if slope.ndim else float(slope)))
    return Decoder(Ws, cs, acts)


def _json_number(value):
    """numpy scalars and small arrays in JSON metadata (e.g. ``random_state=np.int64(0)``,
    ``hidden_sizes=np.array([12])``) as the plain numbers and lists they hold."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be written to exactdgn file metadata")


def write_npz_atomic(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` and JSON ``meta`` (with the format version) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "exactdgn", "version": FORMAT_VERSION, **meta}
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(
        json.dumps(meta, default=_json_number).encode(), dtype=np.uint8
    )
    buf = io.BytesIO()
    # zipfile turns a Ctrl-C while it closes a member into its ValueError ("Can't close the ZIP
    # file while there is an open writing handle") and again when the archive is collected: the
    # in-memory archive (milliseconds) is written whole, then the interrupt is raised
    with sigint_deferred():
        np.savez(buf, allow_pickle=False, **payload)  # read_npz never loads pickles: none written
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getvalue())


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; moved onto ``path`` (``os.replace``) when
    the block ends without an error, removed otherwise.

    A run interrupted at any point leaves either the earlier file or the new one at ``path``,
    never a part of it, and no temporary file.

    Examples
    --------
    >>> with atomic_path("scores.csv") as tmp:  # doctest: +SKIP
    ...     np.savetxt(tmp, values, delimiter=",")
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # on the disk before it takes the name
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no temporary file left beside the target
        raise


def read_npz(path) -> tuple[dict, dict]:
    """Read a file written by :func:`write_npz_atomic`; clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no such file: {path}")
    npy = None
    # (RuntimeError: a zip entry flagged as encrypted; the "strong encryption" error is a
    # subclass of it)
    unreadable = (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arrays = {k: data[k] for k in data.files}
        else:  # a .npy: one array, no metadata
            npy = np.shape(data)
    except unreadable as exc:
        why = str(exc)
        if "pickle" in why:  # numpy's message suggests allow_pickle=True: never here
            with open(path, "rb") as fh:
                head = fh.read(8)
            # a pickle, a .npy of objects, or an .npz (zip) with an object array in it
            if head.startswith((b"\x80", b"\x93NUMPY", b"PK")):
                why = "it holds pickled Python objects, which exactdgn does not load (code can run)"
            else:  # numpy takes anything that is neither .npz nor .npy for a pickle
                why = f"not an .npz archive: its first bytes are {head!r}"
        raise ModelFileError(f"{path} is not a readable exactdgn file ({why})") from exc
    if npy is not None:
        raise ModelFileError(
            f"{path} is not an exactdgn model file (a .npy array of shape {npy}; models and "
            "checkpoints are .npz files written by exactdgn)"
        )
    if "__meta__" not in arrays:
        raise ModelFileError(f"{path} has no exactdgn metadata (not written by exactdgn?)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"{path}: corrupt metadata (a JSON object expected, got {type(meta).__name__})"
        )
    if meta.get("format") != "exactdgn":
        raise ModelFileError(f"{path} is not an exactdgn file")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {meta.get('version')}, this exactdgn reads version "
            f"{FORMAT_VERSION}"
        )
    return arrays, meta
