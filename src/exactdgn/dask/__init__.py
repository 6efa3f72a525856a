"""Scale out on Dask: exact scoring and EM on data larger than one machine.

Optional extra (``pip install exactdgn[dask]``: ``dask[array]`` and ``distributed``); the
core library never imports this package.

* :func:`score_samples` ``(model, X)``: exact ``log p(x)`` of a row-chunked dask array, as a
  dask array (the region geometry is broadcast to each worker once).
* ``ExactDGN(method="em").fit(X)`` with a dask array ``X`` while a ``distributed.Client`` is
  active: each E-step runs chunk by chunk on the workers, its sufficient statistics are summed
  by a fixed-order tree reduction and the M-step runs on the client (see :mod:`._em` for the
  rounding bound).
* :func:`impute` ``(model, X)``: NaNs filled by ``ExactDGN.impute`` chunk by chunk.
* :func:`read_npy`: a ``.npy`` file read chunk by chunk through a memory map (any other dask
  array source works too, e.g. ``dask.array.from_zarr``).
* :func:`write_rows`: dask arrays written to ``.npy`` / CSV files block by block as they are
  computed (an output as large as the data is never gathered whole on the client).
* :func:`connect`: a client of an existing scheduler or of a local cluster; every client used
  gets a :class:`ThreadBudget` (threads per task for the library and BLAS).

Example
-------
>>> from distributed import Client
>>> from exactdgn.dask import read_npy, score_samples
>>> client = Client("tcp://scheduler:8786")                      # doctest: +SKIP
>>> X = read_npy("big.npy")                                      # doctest: +SKIP
>>> log_px = score_samples(model, X).compute()                   # doctest: +SKIP
>>> ExactDGN(latent_dim=1, hidden_sizes=(32, 32)).fit(X)         # doctest: +SKIP
"""

try:
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "exactdgn.dask needs dask and distributed: pip install 'exactdgn[dask]'"
    ) from exc

from ._cluster import ThreadBudget, active_client, connect, tree_reduce
from ._em import MissingRowsError, RemoteData, remote_data
from ._impute import impute
from ._io import read_npy, write_rows
from ._score import score_samples

__all__ = [
    "MissingRowsError",
    "RemoteData",
    "ThreadBudget",
    "active_client",
    "connect",
    "impute",
    "read_npy",
    "remote_data",
    "score_samples",
    "tree_reduce",
    "write_rows",
]
