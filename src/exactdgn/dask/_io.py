"""Row-chunked dask arrays from files that need not fit in memory."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

__all__ = ["as_row_chunks", "read_npy", "write_rows"]


def _read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a 2-D ``.npy`` file as a float64 array (memory-mapped read)."""
    arr = np.load(path, mmap_mode="r")
    return np.array(arr[start:stop], dtype=np.float64, order="C")


def read_npy(path, chunk_rows: int | None = None, chunk_bytes: int = 64 * 2**20) -> da.Array:
    """A 2-D ``.npy`` file as a dask array of row chunks, each read from a memory map.

    Only the header is read here; each task opens the file itself and reads its rows, so the
    graph carries a path, not the data (workers must see the same file system).

    Parameters
    ----------
    path : str or Path
    chunk_rows : int, optional
        Rows per chunk (default: ``chunk_bytes`` of float64 per chunk).
    chunk_bytes : int
    """
    path = str(Path(path).resolve())
    _check_npy(path)
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {arr.shape}; a 2-D (N, D) one is needed")
    if arr.shape[1] == 0:
        raise ValueError(f"{path} holds an array of shape {arr.shape}: it has no columns")
    if not _numeric(arr.dtype):
        raise ValueError(f"{path} holds dtype {arr.dtype}; a numeric array is needed")
    if np.issubdtype(arr.dtype, np.complexfloating):  # each chunk would drop the imaginary part
        raise ValueError(f"{path} holds dtype {arr.dtype}; real numbers are needed")
    N, D = arr.shape
    rows = int(chunk_rows) if chunk_rows is not None else max(1, int(chunk_bytes) // (8 * D))
    if rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    st = os.stat(path)
    name = "read-npy-" + tokenize(path, st.st_mtime_ns, st.st_size, rows)
    starts = list(range(0, N, rows)) or [0]
    layer = {(name, i, 0): (_read_rows, path, s, min(s + rows, N)) for i, s in enumerate(starts)}
    chunks = (tuple(min(s + rows, N) - s for s in starts), (D,))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, dtype=np.float64)


def _check_npy(path: str) -> None:
    """Refuse a file that is not a ``.npy`` (numpy takes anything else for a pickle)."""
    with open(path, "rb") as fh:
        head = fh.read(len(np.lib.format.MAGIC_PREFIX))
    if head == np.lib.format.MAGIC_PREFIX:
        return
    if head.startswith(b"PK"):
        raise ValueError(
            f"{path} is an .npz archive, not a .npy file: save the array to be read in chunks "
            "with numpy.save"
        )
    raise ValueError(
        f"{path} is not a .npy file (its first bytes are {head!r}): save the array with "
        "numpy.save, or read it with another dask reader (e.g. dask.array.from_zarr)"
    )


def _numeric(dtype) -> bool:
    """Numbers or booleans (taken as 0 / 1, as the in-memory ``check_array`` does)."""
    return np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)


def as_row_chunks(
    X, n_features: int | None = None, in_memory: str | None = None, nonempty: bool = False
) -> da.Array:
    """Validate a 2-D dask array and return it as float64 chunked along rows only.

    ``in_memory``: the in-memory call that takes an array (named in the error for one).
    ``nonempty``: an array without rows is an error (as in memory).
    """
    if not isinstance(X, da.Array):
        if hasattr(X, "to_dask_array"):  # a dask DataFrame / Series
            hint = ": convert it with X.to_dask_array(lengths=True)"
        else:
            hint = ": wrap it with dask.array.from_array(X, chunks=(rows, -1))"
            if in_memory is not None:
                hint += f", or call {in_memory} in memory"
        raise TypeError(f"X must be a dask array, got {type(X).__name__}{hint}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(
            "Complex data not supported: X is complex; give real numbers (the real part is not "
            "taken)"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} columns but {n_features} are expected")
    if nonempty and X.shape[0] == 0:
        raise ValueError(f"X has no rows (shape {X.shape}): give at least one point")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown chunk sizes: call X.compute_chunk_sizes() first")
    if not _numeric(X.dtype):
        raise ValueError(f"X has dtype {X.dtype}; a numeric array is needed")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    return X


def row_offsets(X: da.Array) -> list[int]:
    """First row of each row chunk."""
    return np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int).tolist()


def write_rows(
    arrays, paths, *, client=None, window: int | None = None, header: list[str] | None = None
) -> int:
    """Compute row-chunked dask arrays and write each to a ``.npy`` or CSV file, block by block.

    The row blocks are computed a few at a time (at most ``window`` in flight) and written in
    order as they arrive, so the client never holds more than ``window`` blocks of each array:
    an output as large as the data (an imputed data set) is written without being gathered
    whole. Arrays with the same row chunks (the outputs of one :func:`impute` call) are
    computed together, each block's shared tasks once. Every file is written atomically
    (:func:`exactdgn.io.atomic_path`: an error or Ctrl-C leaves the earlier file or none).

    Parameters
    ----------
    arrays : sequence of dask.array.Array (N, D_i), the same row chunks
    paths : sequence of path-like, one per array; ``.npy`` (float64) or anything else (CSV,
        ``%.17g``: every float64 read back exactly)
    client : distributed.Client, optional
        Default: the active client, else dask's own scheduler (one block at a time).
    window : int, optional
        Row blocks in flight (default: twice the cluster's threads, at least 2).
    header : list of str, optional
        Column names, written as the first row of each CSV file (as ``numpy.savetxt(...,
        header=",".join(header), comments="")``; e.g. :func:`exactdgn.datasets.csv_header` of
        the input). Not written to a ``.npy`` file.

    Returns
    -------
    int : the number of rows written
    """
    import contextlib

    import dask

    from ..datasets import csv_line
    from ..io import atomic_path
    from ._cluster import active_client

    arrays = [as_row_chunks(a) for a in arrays]
    paths = [Path(p) for p in paths]
    if len(arrays) != len(paths) or not arrays:
        raise ValueError("give one path per array (and at least one array)")
    if len({a.chunks[0] for a in arrays}) != 1:
        raise ValueError("the arrays must have the same row chunks (compute them together)")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError(f"two arrays would be written to the same file: {paths}")
    if header is not None:
        header = [str(h) for h in header]
        for p, a in zip(paths, arrays, strict=True):
            if p.suffix != ".npy" and len(header) != a.shape[1]:
                raise ValueError(
                    f"header has {len(header)} names but the array for {p} has {a.shape[1]} "
                    "columns: give one name per column"
                )
    rows = arrays[0].chunks[0]
    N = int(sum(rows))
    client = active_client(required=False) if client is None else client
    if window is None:
        threads = sum(client.nthreads().values()) if client is not None else 1
        window = max(2, 2 * threads)
    # not optimized per array: fusing would give each array its own copy of the shared tasks
    blocks = [a.to_delayed(optimize_graph=False).ravel() for a in arrays]
    with contextlib.ExitStack() as stack:
        handles = []
        for p, a in zip(paths, arrays, strict=True):
            p.parent.mkdir(parents=True, exist_ok=True)
            fh = stack.enter_context(open(stack.enter_context(atomic_path(p)), "wb"))
            if p.suffix == ".npy":
                npy_header = {"descr": "<f8", "fortran_order": False, "shape": (N, a.shape[1])}
                np.lib.format.write_array_header_1_0(fh, npy_header)
            elif header is not None:
                fh.write((csv_line(header) + "\n").encode())
            handles.append(fh)

        def submit(i):
            parts = [b[i] for b in blocks]
            if client is None:  # computed when collected, one block at a time
                return parts
            return client.compute(parts)

        pending = [submit(i) for i in range(min(window, len(rows)))]
        for i in range(len(rows)):
            job = pending[i]
            got = dask.compute(*job) if client is None else [f.result() for f in job]
            pending[i] = None  # the block is released once written
            vals = [np.ascontiguousarray(v, dtype="<f8") for v in got]
            if i + window < len(rows):
                pending.append(submit(i + window))
            for fh, p, v in zip(handles, paths, vals, strict=True):
                if p.suffix == ".npy":
                    fh.write(v.tobytes())
                else:
                    np.savetxt(fh, v, delimiter=",", fmt="%.17g")
    return N
