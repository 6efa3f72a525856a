"""Distributed E-step for ``ExactDGN.fit`` on a dask array (issue 14 hook in ``model.py``).

Each EM iteration: the client builds the partition and the region geometry, broadcasts them
once, and every row chunk runs the in-memory E-step (:func:`~exactdgn.inference.marginal_pairs`
with moments, then :func:`~exactdgn.em.region_stats`) on a worker. The chunk's sums
(``Σ log p(x)``, per-region ``s``, ``Z2``, ``XZ``) are added by :func:`tree_reduce` in a fixed
order and only they travel to the client, where the M-step runs. The chunk's pairs stay on the
worker (dask futures) for the two things that need them: the noise update's centred residuals
under the *new* decoder (:meth:`RegionStats.residual_sq`, a second pass over the chunks) and
the exact gradient of the generalized-EM fallback step. A lost worker's tasks are recomputed
from the data source by dask; each chunk's computation is deterministic and the reduction
order fixed, so the result is identical.

Rounding: every statistic is ``Σ_n t_n`` over points. In memory it is summed by numpy in one
call; here each chunk is summed by the same calls and the chunk sums by the tree. Both are
(compensation-free) floating-point sums of the same terms, so for any two chunkings
``|Ŝ - S| <= 2 γ_m Σ_n |t_n|`` with ``γ_m = m u / (1 - m u)``, ``u = 2^-53`` and ``m`` the
longest chain of additions (``max chunk rows + ceil(log2 K)`` for ``K`` chunks; ``N`` for the
in-memory ``bincount``/sparse products): a relative error ~``1e-16 * m`` in the statistics and
so in every M-step update. For a fixed chunking the result is the same bit for bit on every
run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from dask import delayed

from .._validation import check_training_values
from ..em._gradient import exact_gradient
from ..em._init import DataMoments, initialize
from ..em._steps import RegionStats, _residual_sq, region_stats
from ..inference._geometry import RegionGeometry
from ..inference._marginal import check_reach, marginal_pairs
from ._cluster import active_client, tree_reduce
from ._io import as_row_chunks, row_offsets
from ._score import broadcast, check_chunk, device_name

__all__ = ["MissingRowsError", "RemoteData", "RemotePairs", "RemoteRegionStats", "remote_data"]


@dataclass(frozen=True)
class _EStepSpec:
    geom: RegionGeometry
    patterns: np.ndarray
    prune_nats: float
    chunk_bytes: int
    device: str | None = None  # the model's torch device (each worker's), None: numpy


@dataclass
class _Sums:
    """Additive E-step statistics of a set of points."""

    n: int
    log_px: float
    s: np.ndarray
    Z2: np.ndarray
    XZ: np.ndarray

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(
            self.n + other.n,
            self.log_px + other.log_px,
            self.s + other.s,
            self.Z2 + other.Z2,
            self.XZ + other.XZ,
        )


def _add(a, b):
    return a + b


def _add_lists(a: list, b: list) -> list:
    return [x + y for x, y in zip(a, b, strict=True)]


class MissingRowsError(ValueError):
    """Rows with missing values (NaN) in data to train on (a dask array needs complete rows).

    Attributes
    ----------
    rows : list of int
        The first such rows (at most 5) of the chunk that found them, numbered in ``X`` as
        given to ``fit`` (a caller that passed a subset of its data maps them back to its own
        rows, as the command line does for the training split of a file).
    """

    def __init__(self, message: str, rows):
        super().__init__(message)
        self.rows = [int(r) for r in rows]

    def __reduce__(self):  # raised on a worker, re-raised on the client
        return (type(self), (self.args[0], self.rows))


def _check_training_chunk(x: np.ndarray, start: int, n_features: int) -> np.ndarray:
    """:func:`check_chunk` of a chunk to train on: NaN (missing) is refused, saying what to do
    (the in-memory ``fit`` takes it; the distributed E-step needs complete rows)."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and np.isnan(x).any():
        rows = start + np.flatnonzero(np.isnan(x).any(axis=1))
        raise MissingRowsError(
            f"X (rows {start}:{start + len(x)}) has missing values (NaN), first rows "
            f"{rows[:5].tolist()}: training on a dask array needs complete rows; drop those "
            "rows, or fit in memory (NaN = missing: exact EM on log p(x_obs))",
            rows[:5],
        )
    return check_chunk(x, start, n_features)


def _estep_chunk(x: np.ndarray, spec: _EStepSpec, start: int) -> tuple[_Sums, RegionStats]:
    x = _check_training_chunk(x, start, spec.geom.output_dim)
    check_reach(spec.geom, x, first_row=start)
    st = marginal_pairs(
        spec.geom,
        x,
        prune_nats=spec.prune_nats,
        need_moments=True,
        chunk_bytes=spec.chunk_bytes,
        check_input=False,  # check_chunk above
        device=spec.device,
    )
    rs = region_stats(x, spec.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
    sums = _Sums(len(x), float(st.log_px.sum()), rs.s, rs.Z2, rs.XZ)
    rs.s = rs.Z2 = rs.XZ = None  # the pairs stay on the worker, the sums go to the tree
    return sums, rs


def _first(t):
    return t[0]


def _second(t):
    return t[1]


def _residual_chunk(x: np.ndarray, pairs: RegionStats, ab) -> np.ndarray:
    A, b = ab
    return _residual_sq(A, b, pairs, np.ascontiguousarray(x, dtype=np.float64))


def _gradient_chunk(x: np.ndarray, pairs: RegionStats, decoder, noise_std, chunk_bytes) -> list:
    x = np.ascontiguousarray(x, dtype=np.float64)
    return exact_gradient(decoder, noise_std, pairs, x, chunk_bytes)


def _moment_sums(x: np.ndarray, start: int):
    x = _check_training_chunk(x, start, x.shape[1])
    check_training_values(x, name=f"X (rows {start}:{start + len(x)})", first_row=start)
    return [np.array(float(len(x))), x.sum(axis=0)]


def _centred_sums(x: np.ndarray, mu: np.ndarray, gram: bool):
    xc = x - mu
    return [np.square(xc).sum(axis=0), xc.T @ xc if gram else np.zeros(0)]


class RemoteData:
    """Handle of a row-chunked dask array for ``ExactDGN.fit`` (see the module docstring).

    Attributes
    ----------
    shape : (N, D); fingerprint : str (checkpoints: the dask array's name)
    """

    ndim = 2

    def __init__(self, X, client):
        X = as_row_chunks(X, nonempty=True)
        if X.shape[1] == 0:
            raise ValueError(
                f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: "
                "give at least one feature"
            )
        self.client = client
        self.shape = X.shape
        # empty row chunks (e.g. after a boolean filter) hold no point: every pass skips them
        kept = [
            (b, s)
            for b, s, n in zip(X.to_delayed().ravel(), row_offsets(X), X.chunks[0], strict=True)
            if n > 0
        ]
        self.blocks = [b for b, _ in kept]
        self.starts = [s for _, s in kept]
        self.fingerprint = f"dask:{X.name}:{X.shape[0]}x{X.shape[1]}"
        self._moments: dict[bool, DataMoments] = {}  # by ``pca`` (see :meth:`moments`)

    def _compute(self, obj):
        return self.client.compute(obj, sync=True)

    @property
    def n_chunks(self) -> int:
        return len(self.blocks)

    def chunk(self, i: int) -> np.ndarray:
        """Row chunk ``i`` as a float64 array on the client (minibatch methods stream them)."""
        return np.ascontiguousarray(self._compute(self.blocks[i]), dtype=np.float64)

    def e_step(
        self, part, geom, *, prune_nats: float, chunk_bytes: int, device=None
    ) -> RemotePairs:
        """Distributed E-step: per-chunk pairs kept on the workers, sums tree-reduced;
        ``device``: each worker's torch device for its chunks' E-step (None: numpy)."""
        spec = _EStepSpec(
            geom, part.patterns, float(prune_nats), int(chunk_bytes), device_name(device)
        )
        spec = broadcast(self.client, spec)
        chunks = [
            delayed(_estep_chunk)(b, spec, s) for b, s in zip(self.blocks, self.starts, strict=True)
        ]
        total = tree_reduce([delayed(_first)(c) for c in chunks], _add)
        pairs = [delayed(_second)(c) for c in chunks]
        futures = self.client.compute([total, *pairs])  # one graph: each chunk computed once
        sums = futures[0].result()
        del futures[0]
        # the pairs hold on to ``spec``: a lost worker's pairs are recomputed from it, and a
        # scattered value cannot be recomputed, so it lives as long as the pairs do
        return RemotePairs(self, part.patterns, sums, futures, int(chunk_bytes), spec=spec)

    def moments(self, pca: bool = True) -> DataMoments:
        """:class:`~exactdgn.em.DataMoments` reduced over the chunks (two passes).

        Mean, per-column variance and (``pca``) the principal axes from the centred Gram
        matrix ``Σ (x - μ)ᵀ(x - μ)``. Each axis's sign is fixed (its largest entry positive):
        an in-memory SVD may pick the other sign. Computed once per handle (every start of a
        fit: ``n_init``, ``init="auto"``'s scouts, reuses them).
        """
        if pca not in self._moments:
            have = self._moments.get(True)  # the PCA moments hold the mean and variances
            self._moments[pca] = (
                DataMoments(have.n, have.mu, have.var) if have else self._reduce_moments(pca)
            )
        return self._moments[pca]

    def _reduce_moments(self, pca: bool) -> DataMoments:
        """:meth:`moments`, reduced over the chunks."""
        N, D = self.shape
        first = [delayed(_moment_sums)(b, s) for b, s in zip(self.blocks, self.starts, strict=True)]
        n, total = self._compute(tree_reduce(first, _add_lists))
        mu = total / n
        second = [delayed(_centred_sums)(b, mu, pca) for b in self.blocks]
        sq, gram = self._compute(tree_reduce(second, _add_lists))
        if not pca:
            return DataMoments(N, mu, sq / n)
        ev, V = np.linalg.eigh(0.5 * (gram + gram.T) / n)
        lam, Vt = np.maximum(ev[::-1], 0.0), V[:, ::-1].T.copy()
        flip = np.sign(Vt[np.arange(D), np.argmax(np.abs(Vt), axis=1)])
        Vt *= np.where(flip == 0, 1.0, flip)[:, None]
        return DataMoments(N, mu, sq / n, lam, Vt)

    def initialize(self, X=None, **kwargs):
        """:func:`exactdgn.em.initialize` from :meth:`moments` (``X`` is not read).

        A ``"pca"`` start matches an in-memory fit's up to the signs of the principal axes
        (see :meth:`moments`); a ``"random"`` start matches it to rounding.
        """
        return initialize(None, moments=self.moments(kwargs.get("init") == "pca"), **kwargs)


@dataclass
class RemotePairs:
    """E-step result whose pairs live on the workers.

    Attributes
    ----------
    loglik : float   mean exact ``log p(x)`` over all rows
    """

    data: RemoteData
    patterns: np.ndarray
    sums: _Sums
    chunks: list  # futures of per-chunk pair-only RegionStats
    chunk_bytes: int = 256 * 2**20  # the E-step's block budget, also the gradient's
    #: the scattered E-step spec the pairs were computed from (a future): kept so that the
    #: pairs of a lost worker can be recomputed (dask forgets a scattered value nobody holds)
    spec: object = field(default=None, repr=False)

    @property
    def loglik(self) -> float:
        return self.sums.log_px / self.sums.n

    def region_stats(self) -> RemoteRegionStats:
        s = self.sums
        return RemoteRegionStats(
            self.patterns, s.s, s.Z2, s.XZ, None, None, None, None, None, s.n, remote=self
        )

    def residual_sq(self, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(D,) the noise update's centred residual sums, one task per chunk, tree-reduced."""
        ab = broadcast(self.data.client, (A, b))
        parts = [
            delayed(_residual_chunk)(blk, f, ab)
            for blk, f in zip(self.data.blocks, self.chunks, strict=True)
        ]
        return self.data._compute(tree_reduce(parts, _add))

    def gradient(self, decoder, noise_std) -> list:
        """Exact gradient (Fisher's identity): the sum of the chunks' gradients (blocks of
        pairs of the E-step's ``chunk_bytes`` on each worker)."""
        parts = [
            delayed(_gradient_chunk)(blk, f, decoder, noise_std, self.chunk_bytes)
            for blk, f in zip(self.data.blocks, self.chunks, strict=True)
        ]
        return self.data._compute(tree_reduce(parts, _add_lists))


@dataclass
class RemoteRegionStats(RegionStats):
    """:class:`~exactdgn.em.RegionStats` with the sums here and the pairs on the workers."""

    remote: RemotePairs | None = field(default=None, repr=False)

    def residual_sq(self, A: np.ndarray, b: np.ndarray, X=None) -> np.ndarray:
        return self.remote.residual_sq(A, b)

    def remote_gradient(self, decoder, noise_std) -> list:
        return self.remote.gradient(decoder, noise_std)


def remote_data(X, method: str = "em") -> RemoteData:
    """Wrap a dask array for ``ExactDGN.fit`` (needs an active ``distributed.Client``)."""
    if method not in ("em", "lbfgs", "auto", "gradient"):
        raise ValueError(
            f"method={method!r} does not take a dask array: use method='em', 'lbfgs', 'auto' "
            "(distributed E-steps) or 'gradient' (minibatches streamed chunk by chunk)"
        )
    return RemoteData(X, active_client(required=True))
