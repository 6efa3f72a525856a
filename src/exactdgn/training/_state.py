"""Trainer state <-> JSON metadata + named arrays (checkpoints hold no pickle).

A state is nested dicts / lists / tuples of numbers, strings, ``None``, numpy arrays and torch
tensors (as a torch optimiser's public ``state_dict()`` is). Arrays and tensors go to the npz
under generated names, the rest to JSON; dict keys keep their type (torch keys its parameter
states by integers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pack_state", "to_host", "unpack_state"]


def pack_state(obj: Any, arrays: dict, prefix: str) -> Any:
    """JSON-able description of ``obj``; its arrays are added to ``arrays``."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
        key = f"{prefix}{len(arrays)}"
        if hasattr(obj, "detach"):
            arrays[key] = obj.detach().cpu().numpy().copy()
            return {"__tensor__": key}
        arrays[key] = np.array(obj)
        return {"__array__": key}
    if isinstance(obj, dict):
        return {"__items__": [[k, pack_state(v, arrays, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack_state(v, arrays, prefix) for v in obj]}
    if isinstance(obj, list):
        return [pack_state(v, arrays, prefix) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"trainer state holds a {type(obj).__name__}, which cannot be saved")


def to_host(obj: Any) -> Any:
    """``obj`` with its torch tensors on the CPU (a model trained on a GPU keeps no device
    tensors: it pickles and loads where CUDA is absent; torch optimisers move the state back to
    their parameters' device in ``load_state_dict``)."""
    if hasattr(obj, "detach"):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_host(v) for v in obj)
    return obj


def unpack_state(desc: Any, arrays) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(desc, list):
        return [unpack_state(v, arrays) for v in desc]
    if isinstance(desc, dict):
        if "__tensor__" in desc:
            import torch

            return torch.from_numpy(np.array(arrays[desc["__tensor__"]]))
        if "__array__" in desc:
            return np.array(arrays[desc["__array__"]])
        if "__tuple__" in desc:
            return tuple(unpack_state(v, arrays) for v in desc["__tuple__"])
        return {k: unpack_state(v, arrays) for k, v in desc["__items__"]}
    return desc
