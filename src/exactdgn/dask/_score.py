"""Exact ``log p(x)`` of a dask array, chunk by chunk on the workers."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

from .._validation import check_array
from ..inference import check_missing
from ..inference._geometry import RegionGeometry
from ..inference._marginal import check_reach, marginal_pairs
from ..inference._missing import observed_pairs
from ._cluster import active_client
from ._io import as_row_chunks

__all__ = ["score_samples"]


@dataclass(frozen=True)
class _ScoreSpec:
    """What a scoring task needs besides its rows (broadcast to every worker once)."""

    geom: RegionGeometry
    prune_nats: float
    chunk_bytes: int
    device: str | None = None  # the model's torch device (each worker's), None: numpy


def check_chunk(
    x: np.ndarray, start: int, n_features: int, allow_nan: bool = False, empty_rows: bool = False
) -> np.ndarray:
    """Validate one row chunk (rows ``start:start + len(x)`` of ``X``); errors name the rows
    of ``X``, not the chunk's own row numbers. ``allow_nan``: NaN = missing, a row with nothing
    observed an error unless ``empty_rows`` (imputation fills it from the marginal)."""
    name = f"X (rows {start}:{start + len(x)})"
    arr = check_array(x, name=name, n_features=n_features, allow_nan=allow_nan, first_row=start)
    if allow_nan and not empty_rows:
        check_missing(arr, name=name, first_row=start)
    return arr


def _score_chunk(x, spec: _ScoreSpec, return_error: bool, block_info=None):
    if len(x) == 0:  # an empty chunk (e.g. after a boolean filter): nothing to score
        return np.empty((0, 2) if return_error else 0)
    start = block_info[0]["array-location"][0][0] if block_info else 0
    # NaN = missing: log p(x_obs) of those rows, as model.score_samples (ExactDGN._exact_pairs)
    x = check_chunk(x, start, spec.geom.output_dim, allow_nan=True)  # rows with nothing: error
    check_reach(spec.geom, x, first_row=start)
    nan = np.isnan(x)
    obs = ~nan if nan.any() else None
    kw = {"prune_nats": spec.prune_nats, "chunk_bytes": spec.chunk_bytes, "check_input": False}
    if obs is not None:
        st = observed_pairs(spec.geom, x, obs, **kw)
    else:
        st = marginal_pairs(spec.geom, x, device=spec.device, **kw)
    if return_error:
        return np.stack([st.log_px, st.log_px_error], axis=1)
    return st.log_px


def _log_jacobian_chunk(x: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    return -((~np.isnan(x)) @ log_scale)


def log_jacobian_rows(pre, X: da.Array) -> da.Array:
    """(N,) ``-Σ_{j observed} log scale_j`` of each row of a row-chunked ``X`` under the
    standardization ``pre``: ``Standardizer.log_abs_det_jacobian_rows`` chunk by chunk (NaN:
    missing; infinite values are left to the scoring tasks, whose errors name their rows)."""
    return da.map_blocks(
        _log_jacobian_chunk,
        X,
        np.log(pre.scale_),
        drop_axis=1,
        dtype=np.float64,
        meta=np.empty(0),
    )


def _standardize_chunk(x, pre, block_info=None):
    start = block_info[0]["array-location"][0][0] if block_info else 0
    # checked here, so that its errors name the rows of X (Standardizer.transform would name
    # the chunk's own); NaN = missing stays NaN
    x = check_chunk(x, start, pre.n_features_in_, allow_nan=True, empty_rows=True)
    return pre.transform(x)


def standardize_rows(pre, X: da.Array) -> da.Array:
    """``pre.transform`` of a row-chunked ``X``, chunk by chunk (a bad value's error names its
    row of ``X``)."""
    return X.map_blocks(_standardize_chunk, pre, dtype=np.float64)


def device_name(device) -> str | None:
    """A torch ``device`` as a string (what a task carries to a worker), or None."""
    return None if device is None else str(device)


def broadcast(client, obj):
    """``obj`` on every worker once (a future), or ``obj`` itself without a client."""
    if client is None:
        return obj
    return client.scatter(obj, broadcast=True, hash=False)


def _without_preprocessing(model):
    """A shallow copy of ``model`` that scores in its standardized units."""
    import copy

    bare = copy.copy(model)
    bare.preprocessing_ = None
    return bare


def score_samples(model, X, return_error: bool = False):
    """Exact ``log p(x)`` of every row of a dask array, as a dask array.

    The model's region geometry is sent to each worker once (``client.scatter(broadcast=True)``)
    and every row chunk is scored there by the same code as ``model.score_samples``: the values
    equal the in-memory ones row for row (to rounding of the chunk's matrix products, ~1e-15
    relative). Rows with NaN (missing values) get ``log p(x_obs)``, as in memory. A model that
    carries its standardization (``preprocessing_``, e.g. one saved by the CLI) takes data
    units and returns log densities in data units, as in memory. Without an active
    ``distributed.Client`` the array runs on dask's local scheduler.

    Parameters
    ----------
    model : ExactDGN (fitted)
    X : dask.array.Array of shape (N, D), NaN where missing
        Chunked along rows (column chunks are merged); read lazily, e.g. :func:`read_npy`.
    return_error : bool
        Also return the estimated absolute error of each value.

    Returns
    -------
    log_px : dask.array.Array of shape (N,)
    error : dask.array.Array of shape (N,) (only with ``return_error``)
        Both come from the same tasks: compute them together, ``dask.compute(log_px,
        error)`` (``.compute()`` on each would score every chunk twice).

    Notes
    -----
    With an active client the array holds a future of what was broadcast to the workers:
    compute it while that client is open (after it closes dask says ``Missing dependency``
    of the broadcast key); build it again to compute it elsewhere.
    """
    model._check_fitted()
    X = as_row_chunks(X, model.decoder_.output_dim, "model.score_samples(X)", nonempty=True)
    # a model saved with its standardization takes data units, as model.score_samples does
    pre = getattr(model, "preprocessing_", None)
    if pre is not None:
        # the Jacobian of each row's observed values (model._log_jacobian), from the same reads
        jac = log_jacobian_rows(pre, X)
        X = standardize_rows(pre, X)
        out = score_samples(_without_preprocessing(model), X, return_error)
        return (out[0] + jac, out[1]) if return_error else out + jac
    spec = broadcast(
        active_client(required=False),
        _ScoreSpec(
            model.geometry_,
            float(model.prune_nats),
            int(model.chunk_bytes),
            device_name(model.device),
        ),
    )
    if not return_error:
        return da.map_blocks(
            _score_chunk,
            X,
            spec,
            False,
            drop_axis=1,
            dtype=np.float64,
            meta=np.empty(0),
        )
    both = da.map_blocks(
        _score_chunk,
        X,
        spec,
        True,
        chunks=(X.chunks[0], (2,)),
        dtype=np.float64,
        meta=np.empty((0, 2)),
    )
    return both[:, 0], both[:, 1]
