"""The exact partition of the latent space of a CPA decoder into linear regions."""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .._validation import available_memory, check_array
from ..decoder import Decoder

__all__ = [
    "Partition",
    "PartitionTooLargeError",
    "RawPartition",
    "Region",
    "estimate_region_bytes",
    "memory_budget",
]

logger = logging.getLogger(__name__)


class PartitionTooLargeError(MemoryError):
    """Raised before enumeration when the partition would not fit in the memory budget."""


def memory_budget() -> int:
    """Default memory budget in bytes: half of the physical memory available now
    (:func:`exactdgn._validation.available_memory`, ``MemAvailable``: free memory plus what the
    kernel can reclaim, as the training cost estimate and the dask guard use)."""
    return int(available_memory() // 2)


def estimate_region_bytes(decoder: Decoder, avg_facets: float | None = None) -> int:
    """Approximate bytes per region at the enumeration's peak: what a partition stores (A, b,
    pattern, facets, points) and the layer maps built for every region at once (the next
    layer's kinks, the final affine maps: ``(R, d + 1, width)`` float64, about three alive
    together). Without the maps [2,200,200,2] was estimated at 60 MiB and peaked at 1.3 GiB."""
    d, D = decoder.latent_dim, decoder.output_dim
    if avg_facets is None:
        avg_facets = 2.0 * d + 2.0
    per = 8 * (D * (d + 1) + 2 * d + 2) + decoder.n_units
    per += int(avg_facets * (8 * (d + 2) + 16))
    widths = [len(b) for b in decoder.biases[:-1]]
    per += 3 * 8 * (d + 1) * max(widths, default=0)
    return int(per)


def _pattern_keys(P: np.ndarray) -> np.ndarray:
    """Rows of a bool matrix as comparable fixed-size byte strings (void dtype)."""
    packed = np.packbits(np.ascontiguousarray(P, dtype=bool), axis=1)
    # a leading constant byte keeps the key non-empty when there is no kink unit
    packed = np.concatenate([np.ones((packed.shape[0], 1), np.uint8), packed], axis=1)
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


@dataclass
class RawPartition:
    """What an enumerator produces (internal): regions as patterns and H-representations.

    Facets are stored CSR-style: region ``r`` owns rows ``facet_ptr[r]:facet_ptr[r+1]`` of
    ``facet_normals`` (unit vectors) and ``facet_offsets``: ``{z : n_f . z <= e_f}``.
    ``facet_units`` names a hidden unit whose hyperplane carries the facet.
    ``facet_points`` is a point in the relative interior of each facet (or None).
    ``facet_neighbors`` gives the region across each facet if the enumerator knows it.
    """

    patterns: np.ndarray
    facet_ptr: np.ndarray
    facet_normals: np.ndarray
    facet_offsets: np.ndarray
    facet_units: np.ndarray
    interior_points: np.ndarray
    bounded: np.ndarray
    facet_points: np.ndarray | None = None
    facet_neighbors: np.ndarray | None = None
    gen_ptr: np.ndarray | None = None
    generators: np.ndarray | None = None


@dataclass(frozen=True)
class Region:
    """One linear region ``{z : C z <= e}`` on which ``g(z) = A z + b``.

    Attributes
    ----------
    index : int
    pattern : ndarray (n_units,) bool
    A : ndarray (D, d)
    b : ndarray (D,)
    C : ndarray (F, d)
        Unit outward normals of the facets (non-redundant).
    e : ndarray (F,)
    neighbors : ndarray (F,) int
        Region across each facet (``-1`` if none was found).
    interior_point : ndarray (d,)
    bounded : bool
    vertices : ndarray (k, d) or None
        (d <= 2) corners in counter-clockwise order.
    rays : ndarray (m, d) or None
        (d <= 2) unit directions of the unbounded edges.
    """

    index: int
    pattern: np.ndarray
    A: np.ndarray
    b: np.ndarray
    C: np.ndarray
    e: np.ndarray
    neighbors: np.ndarray
    interior_point: np.ndarray
    bounded: bool
    vertices: np.ndarray | None = None
    rays: np.ndarray | None = None

    def __repr__(self) -> str:
        kind = "bounded" if self.bounded else "unbounded"
        return f"Region(index={self.index}, facets={len(self.e)}, {kind})"

    def contains(self, Z, tol: float = 1e-9) -> np.ndarray:
        """(N,) bool: points satisfying every facet inequality up to ``tol``.

        ``Z`` has shape (N, d), or (d,) for one point.
        """
        Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
        d = self.interior_point.shape[0]
        if Z.ndim != 2 or Z.shape[1] != d:
            raise ValueError(f"Z must have shape (N, {d}) or ({d},), got {np.shape(Z)}")
        if self.C.shape[0] == 0:
            return np.ones(Z.shape[0], dtype=bool)
        return np.all(Z @ self.C.T <= self.e + tol * (1 + np.abs(self.e)), axis=1)


@dataclass
class Partition:
    """All full-dimensional linear regions of a CPA decoder over the whole latent space.

    No bounding box is used: unbounded regions stay unbounded.

    Attributes
    ----------
    decoder : Decoder
    patterns : ndarray (R, n_units) bool
    A : ndarray (R, D, d), b : ndarray (R, D)
        ``g(z) = A[r] @ z + b[r]`` on region ``r``.
    facet_ptr : ndarray (R + 1,) int
        Region ``r``'s facets are rows ``facet_ptr[r]:facet_ptr[r+1]`` of the facet arrays.
    facet_normals : ndarray (F, d)
        Unit outward normals; region ``r`` is ``{z : facet_normals[f] @ z <= facet_offsets[f]}``.
    facet_offsets : ndarray (F,)
    facet_units : ndarray (F,) int
        A hidden unit whose hyperplane carries the facet.
    facet_neighbors : ndarray (F,) int
        Region on the other side of the facet.
    interior_points : ndarray (R, d)
    bounded : ndarray (R,) bool
    gen_ptr, generators : ndarray or None
        For d <= 2: the cyclic V-representation in homogeneous coordinates, ``(z, 1)`` for
        points and ``(r, 0)`` for unit ray directions (d = 2: counter-clockwise; a facet whose
        two ends are at infinity carries one finite point that is not a corner).
    seconds : float
        Wall time of the enumeration.
    """

    decoder: Decoder
    patterns: np.ndarray
    A: np.ndarray
    b: np.ndarray
    facet_ptr: np.ndarray
    facet_normals: np.ndarray
    facet_offsets: np.ndarray
    facet_units: np.ndarray
    facet_neighbors: np.ndarray
    interior_points: np.ndarray
    bounded: np.ndarray
    gen_ptr: np.ndarray | None = None
    generators: np.ndarray | None = None
    method: str = ""
    seconds: float = 0.0
    # (sorted pattern keys, their order): built on first use and set in one assignment, so
    # threads that locate points concurrently see either nothing or the whole pair
    _lookup: tuple | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        # numpy pickles an array with permuted axes (``A`` is (R, D, d) laid out as (R, d, D))
        # C-ordered, and the products over it then round differently (~1e-13): a pickled model
        # (joblib, n_jobs workers) scored other last digits. Such arrays keep their axis order.
        state = self.__dict__.copy()
        layouts = {}
        for name, v in state.items():
            if isinstance(v, np.ndarray) and not (v.flags.c_contiguous or v.flags.f_contiguous):
                order = tuple(int(k) for k in np.argsort(v.strides, kind="stable")[::-1])
                state[name] = np.ascontiguousarray(v.transpose(order))
                layouts[name] = order
        state["_layouts"] = layouts
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name, order in state.pop("_layouts", {}).items():
            state[name] = state[name].transpose(np.argsort(order))
        self.__dict__.update(state)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def n_regions(self) -> int:
        return len(self)

    @property
    def latent_dim(self) -> int:
        return self.decoder.latent_dim

    @property
    def n_facets(self) -> np.ndarray:
        """(R,) number of facets of each region."""
        return np.diff(self.facet_ptr)

    def __repr__(self) -> str:
        return (
            f"Partition(n_regions={len(self)}, latent_dim={self.latent_dim}, "
            f"bounded={int(self.bounded.sum())}, method={self.method!r}, "
            f"seconds={self.seconds:.3g})"
        )

    def summary(self) -> dict:
        """Counts that describe the partition (JSON-friendly)."""
        nf = self.n_facets
        return {
            "n_regions": len(self),
            "latent_dim": self.latent_dim,
            "layer_sizes": self.decoder.layer_sizes,
            "n_bounded": int(self.bounded.sum()),
            "n_unbounded": int((~self.bounded).sum()),
            "facets_per_region_mean": float(nf.mean()) if len(nf) else 0.0,
            "facets_per_region_max": int(nf.max()) if len(nf) else 0,
            "method": self.method,
            "seconds": self.seconds,
        }

    def _index(self, r) -> int:
        """Region index ``r`` as a non-negative int (negative counts from the end, as lists)."""
        try:
            i = operator.index(r)
        except TypeError:
            raise TypeError(f"region index must be an integer, got {r!r}") from None
        if not -len(self) <= i < len(self):
            raise IndexError(f"region index {i} is out of range for {len(self)} regions")
        return i % len(self)

    def halfspaces(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``(C, e)`` of region ``r``: ``{z : C z <= e}`` with unit rows, facets only."""
        r = self._index(r)
        sl = slice(self.facet_ptr[r], self.facet_ptr[r + 1])
        return self.facet_normals[sl], self.facet_offsets[sl]

    def neighbors(self, r: int) -> np.ndarray:
        """Indices of the regions sharing a facet with region ``r``."""
        r = self._index(r)
        sl = slice(self.facet_ptr[r], self.facet_ptr[r + 1])
        nb = self.facet_neighbors[sl]
        return np.unique(nb[nb >= 0])

    def adjacency(self):
        """(R, R) sparse boolean matrix of regions sharing a facet."""
        from scipy import sparse

        rows = np.repeat(np.arange(len(self)), self.n_facets)
        ok = self.facet_neighbors >= 0
        data = np.ones(int(ok.sum()), dtype=bool)
        m = sparse.coo_matrix(
            (data, (rows[ok], self.facet_neighbors[ok])), shape=(len(self), len(self))
        )
        return (m + m.T).tocsr().astype(bool)

    def padded_halfspaces(self) -> tuple[np.ndarray, np.ndarray]:
        """All regions' H-representations padded to the largest facet count.

        Returns
        -------
        normals : ndarray (R, F_max, d)
            Padding rows are zero.
        offsets : ndarray (R, F_max)
            Padding entries are ``+inf`` (the constraint ``0 . z <= inf`` always holds).
            ``F_max >= 1``, so a region without facets (the whole space) has one padding row.
        """
        R, d = len(self), self.latent_dim
        nf = self.n_facets
        # at least one (padding) column, so that "no facet" (the whole space) has a uniform shape
        Fm = max(int(nf.max()) if R else 0, 1)
        normals = np.zeros((R, Fm, d))
        offsets = np.full((R, Fm), np.inf)
        rows = np.repeat(np.arange(R), nf)
        cols = np.arange(len(self.facet_offsets)) - np.repeat(self.facet_ptr[:-1], nf)
        normals[rows, cols] = self.facet_normals
        offsets[rows, cols] = self.facet_offsets
        return normals, offsets

    def _generators(self, r: int) -> np.ndarray | None:
        r = self._index(r)
        if self.generators is None:
            return None
        return self.generators[self.gen_ptr[r] : self.gen_ptr[r + 1]]

    def vertices(self, r: int) -> np.ndarray:
        """(d <= 2) corners of region ``r`` (counter-clockwise in 2-D)."""
        G = self._generators(r)
        if G is None:
            raise ValueError("vertices are only stored for latent_dim <= 2")
        pts = G[G[:, -1] != 0]
        if self.latent_dim == 2 and len(pts):
            # drop finite points that are not corners (both adjacent edges on one facet)
            C, e = self.halfspaces(r)
            tight = np.abs(pts[:, :2] @ C.T - e) <= 1e-9 * (1 + np.abs(e))
            pts = pts[tight.sum(axis=1) >= 2]
        return pts[:, :-1]

    def rays(self, r: int) -> np.ndarray:
        """(d <= 2) unit directions of the rays of region ``r``."""
        G = self._generators(r)
        if G is None:
            raise ValueError("rays are only stored for latent_dim <= 2")
        R = G[G[:, -1] == 0][:, :-1]
        if self.latent_dim == 2 and len(R):
            C, _ = self.halfspaces(r)
            if len(C):  # keep the directions of unbounded edges (extreme rays) only
                R = R[np.any(np.abs(R @ C.T) <= 1e-9, axis=1)]
        return R

    def region(self, r: int) -> Region:
        """A :class:`Region` view of region ``r``."""
        r = self._index(r)
        C, e = self.halfspaces(r)
        sl = slice(self.facet_ptr[r], self.facet_ptr[r + 1])
        small = self.latent_dim <= 2 and self.generators is not None
        return Region(
            index=r,
            pattern=self.patterns[r],
            A=self.A[r],
            b=self.b[r],
            C=C,
            e=e,
            neighbors=self.facet_neighbors[sl],
            interior_point=self.interior_points[r],
            bounded=bool(self.bounded[r]),
            vertices=self.vertices(r) if small else None,
            rays=self.rays(r) if small else None,
        )

    def __getitem__(self, r: int) -> Region:
        return self.region(r)

    def __iter__(self):
        for r in range(len(self)):
            yield self.region(r)

    def with_decoder(self, decoder: Decoder) -> Partition:
        """The same regions for a decoder that differs only in its output layer.

        The regions depend on the hidden layers only, so changing the output layer keeps the
        partition and changes ``A`` and ``b``; they are recomputed here.
        """
        old = self.decoder
        same = (
            decoder.n_layers == old.n_layers
            and all(
                np.array_equal(W1, W2) and np.array_equal(c1, c2)
                for W1, W2, c1, c2 in zip(
                    decoder.weights[:-1],
                    old.weights[:-1],
                    decoder.biases[:-1],
                    old.biases[:-1],
                    strict=True,
                )
            )
            and decoder.activations == old.activations
        )
        if not same:
            raise ValueError("with_decoder needs identical hidden layers; call partition() instead")
        A, b = decoder.affine_map(self.patterns)
        return replace(self, decoder=decoder, A=A, b=b)

    # ------------------------------------------------------------------ lookup
    def _lookup_keys(self):
        lookup = self._lookup
        if lookup is None:
            kink = self.decoder.kink_mask
            keys = _pattern_keys(self.patterns[:, kink])
            order = np.argsort(keys, kind="stable")
            lookup = self._lookup = (keys[order], order)
        return lookup

    def index_of_patterns(self, patterns) -> np.ndarray:
        """(N,) region index of each activation pattern, ``-1`` where no region has it."""
        P = np.asarray(patterns, dtype=bool)
        if P.ndim != 2 or P.shape[1] != self.decoder.n_units:
            raise ValueError(f"patterns must have shape (N, {self.decoder.n_units}), got {P.shape}")
        keys, order = self._lookup_keys()
        q = _pattern_keys(P[:, self.decoder.kink_mask])
        if len(keys) == 0:
            return np.full(len(q), -1)
        pos = np.searchsorted(keys, q)
        pos = np.minimum(pos, len(keys) - 1)
        hit = keys[pos] == q
        return np.where(hit, order[pos], -1)

    def locate(self, Z) -> np.ndarray:
        """(N,) index of the region containing each latent point.

        The region is the one whose pattern equals the forward pass's pattern at the point
        (``a_i(z) > 0``); a point exactly on a boundary goes to the side where the unit is off.
        ``-1`` is returned for a point whose pattern belongs to no full-dimensional region
        (possible only on a lower-dimensional set, e.g. exactly at a vertex).
        """
        Z = check_array(Z, name="Z", n_features=self.latent_dim, feature_name="latent dims")
        idx = self.index_of_patterns(self.decoder.activation_pattern(Z))
        miss = np.nonzero(idx < 0)[0]
        if len(miss):
            # a unit whose pre-activation is identically zero on a region gives rounding-noise
            # signs there: fall back to the halfspaces for those points
            normals, offsets = self.padded_halfspaces()
            for s in range(0, len(miss), 256):
                m = miss[s : s + 256]
                lhs = np.einsum("nd,rfd->nrf", Z[m], normals)
                tol = 1e-9 * (1.0 + np.abs(Z[m]).max(axis=1))[:, None, None]
                ok = np.all(lhs <= offsets[None] + tol * (1 + np.abs(offsets[None])), axis=2)
                idx[m] = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
        return idx


def finalize(decoder: Decoder, raw: RawPartition, method: str, t0: float) -> Partition:
    """Compute affine maps and neighbours and wrap an enumerator's output."""
    A, b = decoder.affine_map(raw.patterns) if len(raw.patterns) else (None, None)
    part = Partition(
        decoder=decoder,
        patterns=raw.patterns,
        A=A,
        b=b,
        facet_ptr=raw.facet_ptr.astype(np.int64),
        facet_normals=raw.facet_normals,
        facet_offsets=raw.facet_offsets,
        facet_units=raw.facet_units.astype(np.int64),
        facet_neighbors=np.full(len(raw.facet_offsets), -1, dtype=np.int64),
        interior_points=raw.interior_points,
        bounded=raw.bounded.astype(bool),
        gen_ptr=raw.gen_ptr,
        generators=raw.generators,
        method=method,
    )
    if raw.generators is None and decoder.latent_dim <= 2 and len(raw.patterns):
        part.gen_ptr, part.generators = _vrep_from_hrep(part)
    if raw.facet_neighbors is not None:
        part.facet_neighbors = raw.facet_neighbors.astype(np.int64)
    elif len(raw.facet_offsets):
        part.facet_neighbors = _neighbors_by_flip(part, raw.facet_points)
    part.seconds = time.perf_counter() - t0
    return part


def _neighbors_by_flip(part: Partition, facet_points: np.ndarray | None) -> np.ndarray:
    """Region across each facet: flip the facet's unit in the pattern, else step across."""
    R = len(part)
    owner = np.repeat(np.arange(R), part.n_facets)
    P = part.patterns[owner].copy()
    units = part.facet_units
    P[np.arange(len(units)), units] ^= True
    nb = part.index_of_patterns(P)
    if facet_points is not None:
        # verify by stepping across the facet from a relative-interior point
        miss = np.nonzero(nb < 0)[0]
        if len(miss):
            pts = facet_points[miss]
            scale = 1e-7 * (1.0 + np.abs(pts).max(axis=1, keepdims=True))
            out = pts + scale * part.facet_normals[miss]
            nb[miss] = part.locate(out)
    return nb


def _vrep_from_hrep(part: Partition) -> tuple[np.ndarray, np.ndarray]:
    """Cyclic homogeneous V-representation of every region from its H-representation (d <= 2).

    Used when an enumerator (the adjacency search) returns facets only. d = 1: the two ends.
    d = 2: corners (feasible intersections of facet lines), extreme rays (facet directions in the
    recession cone) and, for a facet line with no corner, its foot; all sorted by angle around
    the interior point, which is the counter-clockwise boundary order.
    """
    d = part.latent_dim
    gens, ptr = [], [0]
    for r in range(len(part)):  # per region, small dense work; not used on a hot path
        C, e = part.halfspaces(r)
        if d == 1:
            lo = -e[C[:, 0] < 0] / -C[C[:, 0] < 0, 0] if np.any(C[:, 0] < 0) else None
            hi = e[C[:, 0] > 0] / C[C[:, 0] > 0, 0] if np.any(C[:, 0] > 0) else None
            g = [[lo.max(), 1.0] if lo is not None else [-1.0, 0.0]]
            g.append([hi.min(), 1.0] if hi is not None else [1.0, 0.0])
            G = np.array(g)
        else:
            G = _polygon_generators(C, e, part.interior_points[r])
        gens.append(G)
        ptr.append(ptr[-1] + len(G))
    return np.asarray(ptr, dtype=np.int64), np.concatenate(gens, axis=0)


def _polygon_generators(C: np.ndarray, e: np.ndarray, c: np.ndarray) -> np.ndarray:
    F = len(C)
    if F == 0:
        return np.zeros((0, 3))
    scale = 1.0 + np.abs(e).max() + np.abs(c).max()
    tol = 1e-9 * scale
    pts, rays = [], []
    for i in range(F):
        for j in range(i + 1, F):
            M = C[[i, j]]
            det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
            if abs(det) < 1e-12:
                continue
            p = np.linalg.solve(M, e[[i, j]])
            if np.all(C @ p <= e + tol):
                pts.append(p)
    pts = _unique_rows(np.array(pts).reshape(-1, 2), tol)
    for i in range(F):
        tau = np.array([-C[i, 1], C[i, 0]])
        on_line = [p for p in pts if abs(C[i] @ p - e[i]) <= tol]
        for t in (tau, -tau):
            if np.all(C @ t <= 1e-9):
                rays.append(t)
        if not on_line:  # a facet line without a corner: keep one finite point of it
            foot = c - (C[i] @ c - e[i]) * C[i]
            pts = np.vstack([pts, foot[None]]) if len(pts) else foot[None]
    rays = _unique_rows(np.array(rays).reshape(-1, 2), 1e-9)
    ang_p = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]) if len(pts) else np.zeros(0)
    ang_r = np.arctan2(rays[:, 1], rays[:, 0]) if len(rays) else np.zeros(0)
    G = np.concatenate([np.c_[pts, np.ones(len(pts))], np.c_[rays, np.zeros(len(rays))]], axis=0)
    return G[np.argsort(np.concatenate([ang_p, ang_r]), kind="stable")]


def _unique_rows(A: np.ndarray, tol: float) -> np.ndarray:
    out = []
    for a in A:
        if not any(np.abs(a - b).max() <= tol for b in out):
            out.append(a)
    return np.array(out).reshape(-1, A.shape[1] if A.ndim == 2 else 2)
