"""Exact imputation of a dask array, chunk by chunk on the workers."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .._validation import output_dtype
from ..inference._marginal import check_reach
from ._cluster import active_client
from ._io import as_row_chunks
from ._score import broadcast, check_chunk

__all__ = ["impute"]


def _impute_chunk(x, model, method, seeds, return_std, block_info=None):
    if len(x) == 0:  # an empty chunk (e.g. after a boolean filter): nothing to fill
        return np.empty((0, 2 * x.shape[1] if return_std else x.shape[1]))
    i = block_info[0]["chunk-location"][0] if block_info else 0
    start = block_info[0]["array-location"][0][0] if block_info else 0
    x = check_chunk(x, start, x.shape[1], allow_nan=True, empty_rows=True)  # names X's rows
    check_reach(model.geometry_, model._standardized(x), first_row=start)  # (in X's rows too)
    rng = None if seeds is None else np.random.default_rng(seeds[i])
    out = model.impute(x, method=method, random_state=rng, return_std=return_std)
    return np.concatenate(out, axis=1) if return_std else out


def _entropy(random_state):
    """The ``SeedSequence`` entropy of a seed (itself) or of a Generator: four 64-bit words
    drawn from it (it advances, as ``model.impute`` draws from it)."""
    if isinstance(random_state, np.random.Generator):
        return [int(w) for w in random_state.integers(2**64, size=4, dtype=np.uint64)]
    return None if random_state is None else int(random_state)


def impute(model, X, method: str = "mean", random_state=None, return_std: bool = False):
    """``X`` with its NaNs filled by ``model.impute``, chunk by chunk, as a dask array.

    Every row chunk runs ``ExactDGN.impute`` on a worker (the model is sent to each worker
    once), so the values equal the in-memory ones row for row (exact conditional mean, mode,
    or draws, see :meth:`ExactDGN.impute`). For ``method="sample"`` chunk ``i`` draws with its
    own generator, ``numpy.random.SeedSequence(random_state).spawn`` child ``i``: the draws are
    reproducible for a given seed and chunking (another chunking gives other, equally exact,
    draws). A ``numpy.random.Generator`` gives the entropy of that ``SeedSequence``: four
    64-bit words ``random_state.integers(2**64, size=4, dtype=np.uint64)`` drawn when the
    graph is built (so a generator in the same state gives the same draws, and it advances).

    Parameters
    ----------
    model : ExactDGN (fitted)
    X : dask.array.Array of shape (N, D), NaN where missing; chunked along rows
    method : {"mean", "mode", "sample"}
    random_state : int, numpy.random.Generator or None
        Seed of ``"sample"`` (a Generator: see above; unused by the other methods).
    return_std : bool
        Also return the exact conditional standard deviation of each entry (0 where observed).

    Returns
    -------
    X_filled : dask.array.Array of shape (N, D)
    std : dask.array.Array of shape (N, D) (only with ``return_std``)
        Both come from the same tasks: compute them together, ``dask.compute(X_filled,
        std)`` (``.compute()`` on each would impute every chunk twice).

    Notes
    -----
    With an active client the array holds a future of what was broadcast to the workers:
    compute it while that client is open (after it closes dask says ``Missing dependency``
    of the broadcast key); build it again to compute it elsewhere.
    """
    model._check_fitted()
    if method not in model._IMPUTE_METHODS:
        raise ValueError(f"method={method!r} is invalid: use one of {model._IMPUTE_METHODS}")
    generator = isinstance(random_state, np.random.Generator)
    if random_state is not None and not (generator or isinstance(random_state, int | np.integer)):
        raise TypeError(
            f"random_state={random_state!r} is invalid: use None, a non-negative integer seed or "
            "a numpy.random.Generator (each chunk spawns its own stream)"
        )
    if not generator and random_state is not None and random_state < 0:
        raise ValueError(
            f"random_state={random_state!r} is invalid: use None, a non-negative integer seed or "
            "a numpy.random.Generator"
        )
    D = model.decoder_.output_dim
    odt = output_dtype(X)  # float32 in, float32 out (as model.impute and sklearn's imputers)
    X = as_row_chunks(X, D, "model.impute(X)", nonempty=True)
    seeds = None
    if method == "sample":
        seeds = np.random.SeedSequence(_entropy(random_state)).spawn(X.numblocks[0])
    remote = broadcast(active_client(required=False), model)
    width = 2 * D if return_std else D
    out = da.map_blocks(
        _impute_chunk,
        X,
        remote,
        method,
        seeds,
        return_std,
        chunks=(X.chunks[0], (width,)),
        dtype=np.float64,
        meta=np.empty((0, width)),
    )
    if odt != np.float64:
        out = out.astype(odt)
    if return_std:
        return out[:, :D], out[:, D:]
    return out
