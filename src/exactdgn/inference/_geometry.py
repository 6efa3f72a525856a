"""Per-region quantities of the Gaussian model that do not depend on the data point.

Model: ``z ~ N(0, I_d)``, ``x | z ~ N(g(z), Σ)`` with ``Σ = diag(σ_j^2)`` and
``g(z) = A_r z + b_r`` on region ``r = {z : C_r z <= e_r}``. With ``Λ = Σ^{-1}``:

* posterior precision ``P_r = I + A_r^T Λ A_r = K_r K_r^T`` (Cholesky), covariance
  ``S_r = P_r^{-1}``;
* ``v_r(x) = A_r^T Λ (x - b_r)`` and ``μ_r(x) = S_r v_r(x)``;
* ``log κ_r(x) = log N(x; b_r, Σ + A_r A_r^T)
  = -½ [D log 2π + log|Σ| + log|P_r| + ||x - b_r||²_Λ - ||K_r^{-1} v_r||²]``
  (matrix determinant lemma and Woodbury: no D x D matrix is formed);
* whitening ``z = μ_r + L_r u`` with ``L_r = K_r^{-T}`` (``L_r L_r^T = S_r``) maps the region to
  ``{u : n_i . u <= c_i(x)}``, ``n_i = (C L)_i / ||(C L)_i||`` and
  ``c_i(x) = (e_i - C_i μ_r(x)) / ||(C L)_i|| = g_i - G_i v_r(x)`` with
  ``G = diag(1/||(CL)_i||) C S_r``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_noise_std
from ..gaussian import PolygonTable, polygon_table
from ..gaussian._rules import LOG_2PI
from ..partition import Partition

__all__ = ["KappaRounding", "RegionGeometry", "region_geometry"]

_EPS = float(np.finfo(np.float64).eps)
# cond(P_r) above which a region's factor comes from QR: the Cholesky of the formed P loses
# ~ε cond(P) in log|P| and S v ~ε cond(P) relative in μ (2e-10 here, the scale of _KAPPA_RTOL)
_COND_QR = 1e6
# a pair's GEMM form of log κ is recomputed without cancellation where its rounding estimate
# exceeds this fraction of max(1, |log κ|); below it, the estimate is added to the pair's error
# (MNIST decoders: the estimate is <= 8e-12 relative, no pair is recomputed)
_KAPPA_RTOL = 1e-10
# rounding of the GEMM form of log κ: at most ~this many ε of the size of its terms
_KAPPA_ROUND = 8.0


@dataclass
class KappaRounding:
    """What :meth:`RegionGeometry.refine_log_kappa` did to a set of pairs.

    Attributes
    ----------
    error : (P,)        estimated absolute rounding error of each pair's ``log κ``
    recomputed : (k,)   indices of the pairs recomputed without cancellation
    """

    error: np.ndarray
    recomputed: np.ndarray


@dataclass
class RegionGeometry:
    """Data-independent per-region arrays (see the module docstring for the math).

    Attributes
    ----------
    A : (R, D, d), b : (R, D)
    inv_var : (D,)            ``Λ`` diagonal
    log_det_noise : float     ``log|Σ|``
    K : (R, d, d)             Cholesky factor of ``P_r`` (lower)
    K_inv : (R, d, d)         ``K_r^{-1}``
    L : (R, d, d)             ``K_r^{-T}``
    log_det_P : (R,)
    beta : (R, d)             ``A_r^T Λ b_r``
    b_quad : (R,)             ``b_r^T Λ b_r``
    normals : (R, F, d)       whitened unit normals (padding rows zero)
    G : (R, F, d), g : (R, F) offsets ``c(x) = g - G v(x)`` (padding: g = +inf, G = 0)
    center : (D,)             ``c``, the mean of the ``b_r`` (expansion point of the GEMM)
    gemm_w : (D, R d + R)     ``[Λ A_r K_r^{-T} ... | Λ (b_r - c) ...]``
    gemm_basis : (D, k) or None   orthonormal ``U`` with ``span(U) ⊇ span(Λ W_L)`` (``W_L`` the
        decoder's last weight, ``k`` its input width) when ``k`` is small enough to pay:
        every column of ``gemm_w`` lies in ``span(Λ W_L)`` (``A_r = W_L (...)`` and
        ``b_r - c = W_L (...)``), so ``X gemm_w = (X U)(Uᵀ gemm_w)``, k/D of the work
    gemm_w_basis : (k, R d + R) or None   ``Uᵀ gemm_w``
    w_shift : (R, d)          ``K_r^{-1} A_r^T Λ (b_r - c)``
    lk_const : (R,)           ``-(D log 2π + log|Σ| + log|P_r| + ||b_r - c||²_Λ) / 2``
    polygons : PolygonTable or None   (d = 2 only) the whitened regions at ``w = 0``; a pair
        ``(x, r)`` is polygon ``r`` translated by ``-w_r(x)`` (``c(x) = g - n w_r(x)``)
    qr_factored : (R,) bool or None   regions with ``cond(P_r) > 1e6`` (d >= 2), factored by QR
        of ``[Λ^½ A_r; I]``; their posterior means and offsets are taken from ``w`` (``L_r w``,
        ``g - n w``) where given, as ``S_r v`` and ``G_r v`` cancel there. None: no such region
    cache : dict              arrays derived on first use (the missing-data GEMM's columns;
        the torch backend's copies of these arrays on a device, under ``("torch", device)``)
    interval : tuple or None  (d = 1 only) ``(lo, hi, order, breaks)``: the regions' ends in
        ``z`` (R,), the regions sorted by position (R,) and the inner ends in that order (R-1,)
    """

    A: np.ndarray
    b: np.ndarray
    inv_var: np.ndarray
    log_det_noise: float
    K: np.ndarray
    K_inv: np.ndarray
    L: np.ndarray
    log_det_P: np.ndarray
    beta: np.ndarray
    b_quad: np.ndarray
    normals: np.ndarray
    G: np.ndarray
    g: np.ndarray
    center: np.ndarray
    gemm_w: np.ndarray
    w_shift: np.ndarray
    lk_const: np.ndarray
    locate: object = None
    interval: tuple | None = None
    gemm_basis: np.ndarray | None = None
    gemm_w_basis: np.ndarray | None = None
    polygons: PolygonTable | None = None
    qr_factored: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False)  # derived arrays built on first use

    def __getstate__(self):
        # the torch backend's device copies (``cache`` keys ``("torch...", device)``) stay
        # behind: derived, rebuilt on first use, and a geometry pickled with CUDA tensors does
        # not load where CUDA is absent
        state = self.__dict__.copy()
        state["cache"] = {
            k: v
            for k, v in self.cache.items()
            if not (isinstance(k, tuple) and str(k[0]).startswith("torch"))
        }
        return state

    @property
    def n_regions(self) -> int:
        return self.A.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.A.shape[2]

    @property
    def output_dim(self) -> int:
        return self.A.shape[1]

    @property
    def S(self) -> np.ndarray:
        """(R, d, d) posterior covariances ``S_r``."""
        return self.L @ np.swapaxes(self.L, 1, 2)

    def gemm(self, Xc: np.ndarray) -> np.ndarray:
        """(n, R d + R) ``Xc @ gemm_w``, through the decoder's output subspace when it is narrow."""
        if self.gemm_basis is None:
            return Xc @ self.gemm_w
        return (Xc @ self.gemm_basis) @ self.gemm_w_basis

    def v(self, X: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(P,) pairs: ``v_r(x) = A_r^T Λ (x - b_r)`` for points ``X`` (P, D) and regions ``r``."""
        diff = (X - self.b[r]) * self.inv_var
        return np.einsum("pjk,pj->pk", self.A[r], diff)

    def log_kappa_pairs(self, X: np.ndarray, r: np.ndarray):
        """Accurate ``log κ_r(x)``, ``v`` and whitened offsets for explicit pairs.

        The quadratic form is the sum of two non-negative terms,
        ``(x - b)ᵀ C⁻¹ (x - b) = ||x - b - A μ||²_Λ + ||μ||²`` (the minimum over ``z`` of
        ``||x - b - A z||²_Λ + ||z||²``, attained at ``μ``): no cancellation, and an error
        ``δ`` in ``μ`` changes it by ``δᵀ P δ`` only. The Woodbury form
        ``||x - b||²_Λ - ||K⁻¹ v||²`` loses ``ε ||x - b||²_Λ``, which is large next to the
        result when ``|A_r| / σ`` is (steep units, tiny noise).

        Parameters
        ----------
        X : (P, D) points (one row per pair), r : (P,) region indices

        Returns
        -------
        log_kappa : (P,), v : (P, d), offsets : (P, F)
        """
        log_kappa, v, _, _ = self._stable_log_kappa(X - self.b[r], r, X - self.center)
        offsets = self.g[r] - np.einsum("pfk,pk->pf", self.G[r], v)
        return log_kappa, v, offsets

    def _stable_log_kappa(self, diff: np.ndarray, r: np.ndarray, Xc: np.ndarray):
        """``(log κ, v, w, rounding)`` of pairs from ``diff = x - b_r`` and ``Xc = x - c``
        (P, D), without cancellation (``rounding``: :func:`stable_kappa_rounding`)."""
        A = self.A[r]
        R, d = self.w_shift.shape
        if d == 1:
            v = np.einsum("pjk,pj->pk", A, diff * self.inv_var)
            w = v * self.K_inv[r, 0]
        else:
            # w = (Λ A K⁻ᵀ)ᵀ (x - b) from the GEMM's columns (orthonormal after scaling: no
            # cancellation), v = K w; S v (S = L Lᵀ formed) or K⁻¹ v square the condition
            # of P (steep and flat directions of A_r: 1e-5 in log κ, against 1e-11)
            cols = self.gemm_w[:, : R * d].reshape(-1, R, d)[:, r]  # (D, P, d)
            w = np.einsum("jpk,pj->pk", cols, diff)
            v = np.einsum("pij,pj->pi", self.K[r], w)
        mu = np.einsum("pij,pj->pi", self.L[r], w)
        res = diff - np.einsum("pjk,pk->pj", A, mu)
        quad = np.einsum("pj,pj,j->p", res, res, self.inv_var) + np.einsum("pi,pi->p", mu, mu)
        log_kappa = -0.5 * (
            self.output_dim * LOG_2PI + self.log_det_noise + self.log_det_P[r] + quad
        )
        bc = np.abs(self.b[r] - self.center)
        terms = np.abs(Xc) + bc + np.einsum("pjk,pk->pj", np.abs(A), np.abs(mu))
        return log_kappa, v, w, stable_kappa_rounding(log_kappa, res, terms, self.inv_var)

    def kappa_scale(self) -> np.ndarray:
        """(R,) ``||b_r - c||²_Λ + ||w_shift_r||²``, the region's part of the size of the terms
        of the GEMM form of ``log κ`` (cached)."""
        scale = self.cache.get("kappa_scale")
        if scale is None:
            bc = self.b - self.center
            scale = np.einsum("rj,rj,j->r", bc, bc, self.inv_var) + np.einsum(
                "ri,ri->r", self.w_shift, self.w_shift
            )
            self.cache["kappa_scale"] = scale
        return scale

    def kappa_margin(self, hxq: np.ndarray) -> np.ndarray:
        """(n,) a bound on the GEMM form's rounding of ``log κ_r(x)`` over every region, per
        point (``hxq = -||x - c||²_Λ / 2``): :meth:`refine_log_kappa`'s estimate with
        ``||w_r|| <= ||x - c||_Λ + ||w_shift_r||`` (``w_r - w_shift_r = K_r⁻¹ A_rᵀ Λ (x - c)``
        and ``Λ A P⁻¹ Aᵀ Λ ⪯ Λ``). A pruning test on the formed ``log κ`` must leave this
        much room: with tiny noise (σ = 1e-12, terms of 1e24) the formed value of the region
        holding all the mass was 1e8 nats low, and the pair was pruned (``log p`` off by 6
        nats, d = 3). Ordinary models: ~1e-10 nats, no effect on the pruning."""
        cond, shift = self.kappa_conditioning()
        shift_max = float(shift.max(initial=0.0))
        xn = np.sqrt(np.maximum(-2.0 * hxq, 0.0))
        wmax = xn + shift_max
        size = float(self.kappa_scale().max(initial=0.0)) + xn * xn + wmax * wmax
        d = self.w_shift.shape[1]
        # refine_log_kappa's two terms, at the largest |w| and cond over the regions
        conditioning = float(cond.max(initial=0.0)) * (wmax * (wmax + 2.0 * shift_max) + d)
        return (_KAPPA_ROUND * _EPS) * size + conditioning

    def kappa_conditioning(self) -> tuple[np.ndarray, np.ndarray]:
        """(R,) ``ε cond(P_r)`` and ``||w_shift_r||`` (cached): the GEMM form's ``w`` comes from
        columns ``Λ A_r K_r⁻ᵀ`` whose weak direction carries ``~ε cond(P_r)`` relative error
        (``P_r`` is formed: its entries round to ``ε λ_max``), so ``||w||²`` carries up to
        ``2 ε cond(P_r) |w| (|w| + 2 |w_shift|)``, and ``log|P_r|`` up to ``d ε cond(P_r)``
        (both forms of ``log κ``). Zero in d = 1 (one direction) and in the QR-factored
        regions (row-sorted Householder QR, :func:`qr_factor`: ``w`` accurate in every
        direction, ``log|P_r|`` from the QR)."""
        out = self.cache.get("kappa_conditioning")
        if out is None:
            R, d = self.w_shift.shape
            cond = np.zeros(R)
            if d >= 2 and R:
                s = np.linalg.svd(self.K, compute_uv=False)  # cond(P) = cond(K)²
                cond = np.square(s[:, 0] / s[:, -1])
                if self.qr_factored is not None:
                    cond[self.qr_factored] = 0.0
            out = (_EPS * cond, np.linalg.norm(self.w_shift, axis=1))
            self.cache["kappa_conditioning"] = out
        return out

    def refine_log_kappa(self, Xc, p, r, log_kappa, w, hxq=None) -> KappaRounding:
        """Redo the pairs whose GEMM form of ``log κ`` may have lost accuracy, in place.

        ``log_kappa_all`` (and the d = 1 path) expand ``log κ_r(x)`` about the centre ``c``:
        its terms ``||x - c||²_Λ``, ``||b_r - c||²_Λ``, ``||w_r||²`` and the shift of ``w``
        are each rounded to ``~ε`` of their size ``s``, while the result is only
        ``(x - b)ᵀ C⁻¹ (x - b)``: with steep regions (``|A_r| / σ`` of 1e4) or tiny noise the
        terms are 1e9 and ``log p(x)`` was wrong by 1e-7 near the data. Pairs whose
        rounding estimate ``8 ε s`` exceeds ``1e-10 max(1, |log κ|)`` are recomputed by
        :meth:`_stable_log_kappa` (``log κ`` and ``w``); far points, whose ``|log κ|`` is as
        large as the terms, are not, nor are ordinary models' pairs (MNIST decoders:
        ``8 ε s <= 8e-12 |log κ|``).

        Parameters
        ----------
        Xc : (n, D) points minus ``center``; p, r : (P,) pairs (rows of ``Xc``, regions)
        log_kappa : (P,), w : (P, d)   updated in place
        hxq : (n,) or None   ``-||x - c||²_Λ / 2`` when already computed

        Returns
        -------
        KappaRounding
            The estimated absolute rounding error of each pair's ``log κ`` (``8 ε s`` and
            :meth:`kappa_conditioning`'s term, which far points in a region with cond(P_r) ~ 1e5
            need (8e-11 relative), where kept; :func:`stable_kappa_rounding` and ``log|P_r|``'s
            where recomputed; to be added to its error) and the pairs recomputed (their ``v``
            and offsets are to be taken from the new ``w``).
        """
        none = np.zeros(0, dtype=np.intp)
        if len(p) == 0:
            return KappaRounding(np.zeros(0), none)
        scale = self.kappa_scale()
        if hxq is None:
            hxq = -0.5 * np.einsum("nj,nj,j->n", Xc, Xc, self.inv_var)
        w2 = np.einsum("pi,pi->p", w, w)
        size = scale[r] - 2.0 * hxq[p] + w2
        cond, shift = self.kappa_conditioning()
        wn = np.sqrt(w2)
        d = w.shape[1]
        err = (_KAPPA_ROUND * _EPS) * size
        floor = np.maximum(1.0, np.abs(log_kappa))
        # the recomputation is triggered by the terms' rounding alone (as before the
        # conditioning term was estimated: the values of published runs stay to the bit)
        i = np.flatnonzero(err > _KAPPA_RTOL * floor)
        err += cond[r] * (wn * (wn + 2.0 * shift[r]) + d)
        if i.size:
            ri = r[i]
            xc = Xc[p[i]]
            lk, _, wi, err[i] = self._stable_log_kappa(xc - (self.b[ri] - self.center), ri, xc)
            err[i] += cond[ri] * d  # log|P_r|
            log_kappa[i] = lk
            w[i] = wi
        return KappaRounding(err, i if i.size else none)

    def offsets(self, v: np.ndarray, r: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """(P, F) whitened facet offsets ``c(x) = g_r - G_r v`` for pairs (``g_r - n_r w`` for
        the pairs of QR-factored regions when ``w = K_r⁻¹ v`` is given)."""
        off = self.g[r] - np.matmul(self.G[r], v[:, :, None])[..., 0]
        i = self._qr_pairs(r, w)
        if i is not None:
            off[i] = self.g[r[i]] - np.einsum("pfk,pk->pf", self.normals[r[i]], w[i])
        return off

    def posterior_mean(self, v: np.ndarray, r: np.ndarray, w: np.ndarray | None = None):
        """(P, d) ``μ_r(x) = S_r v`` (``L_r w`` for the pairs of QR-factored regions when
        ``w = K_r⁻¹ v`` is given)."""
        if not len(r):
            return np.zeros((0, self.latent_dim))
        mu = np.einsum("pij,pj->pi", self.S[r], v)
        i = self._qr_pairs(r, w)
        if i is not None:
            mu[i] = np.einsum("pij,pj->pi", self.L[r[i]], w[i])
        return mu

    def _qr_pairs(self, r: np.ndarray, w) -> np.ndarray | None:
        """Indices of the pairs in QR-factored regions (None: none, or no ``w``)."""
        if w is None or self.qr_factored is None:
            return None
        i = np.flatnonzero(self.qr_factored[r])
        return i if i.size else None


def region_geometry(part: Partition, noise_std) -> RegionGeometry:
    """Precompute :class:`RegionGeometry` for a partition and a noise level.

    Parameters
    ----------
    part : Partition
    noise_std : float or ndarray (D,)
        Standard deviation of the Gaussian noise (isotropic or per output), positive and
        finite.
    """
    A, b = part.A, part.b
    R, D, d = A.shape
    std = np.broadcast_to(check_noise_std(noise_std, size=D), (D,))
    inv_var = 1.0 / std**2
    AtLA = np.einsum("rjk,j,rjl->rkl", A, inv_var, A)
    P = AtLA + np.eye(d)
    ill = np.zeros(0, dtype=np.intp)
    if d >= 2 and R:
        # A steep and a flat direction (|A_r| / σ of 1e7 next to 1): forming P rounds its flat
        # part away (log|P| off by 1e-2 at cond(P) = 1e14, 3e-8 at 1e8; past ~1e16 the rounded
        # P is not even positive definite); those regions are factored by Householder QR of
        # [Λ^½ A_r; I] = Q Kᵀ instead, which never forms P
        ev = np.linalg.eigvalsh(P)
        ill = np.flatnonzero(~(ev[:, -1] <= _COND_QR * ev[:, 0]))
    if ill.size:  # Cholesky of the others only (a rounded P of an ill region may fail it)
        K = np.empty_like(P)
        ok = np.ones(R, dtype=bool)
        ok[ill] = False
        K[ok] = np.linalg.cholesky(P[ok])
    else:
        K = np.linalg.cholesky(P)
    Q_top = qr_mask = None
    if ill.size:
        K[ill], Q_top = qr_factor(A[ill] / std[None, :, None])
        Q_top *= std[None, :, None]  # A K⁻ᵀ = Λ^-½ Q_top
        qr_mask = np.zeros(R, dtype=bool)
        qr_mask[ill] = True
    K_inv = np.linalg.inv(K)  # batched; K is a small (d x d) lower-triangular factor (P >= I)
    L = np.swapaxes(K_inv, 1, 2)
    log_det_P = 2.0 * np.log(np.diagonal(K, axis1=1, axis2=2)).sum(axis=1)
    beta = np.einsum("rjk,rj->rk", A, b * inv_var)
    b_quad = np.einsum("rj,rj->r", b * inv_var, b)
    Cn, e = part.padded_halfspaces()  # (R, F, d), (R, F)
    CL = Cn @ L  # (R, F, d)
    norm = np.linalg.norm(CL, axis=2)
    pad = ~np.isfinite(e)
    safe = np.where(pad, 1.0, norm)
    normals = np.where(pad[..., None], 0.0, CL / safe[..., None])
    S = L @ np.swapaxes(L, 1, 2)
    G = np.where(pad[..., None], 0.0, (Cn @ S) / safe[..., None])
    g = np.where(pad, np.inf, e / safe)
    center = b.mean(axis=0) if R else np.zeros(D)
    bc = b - center
    # The likelihood's one GEMM (x - c) @ gemm_w, (D, R*d + R): columns Λ A_r K_r^{-T} give
    # w_r(x) = K_r^{-1} v_r(x) (+ w_shift_r), then columns Λ (b_r - c) give x'ᵀΛb'_r.
    AK = A @ np.swapaxes(K_inv, 1, 2)  # (R, D, d)
    if Q_top is not None:  # A K⁻ᵀ = Λ^-½ Q (orthonormal columns, no cancellation)
        AK[ill] = Q_top
    gemm_w = np.empty((D, R * d + R))
    gemm_w[:, : R * d] = (AK * inv_var[None, :, None]).transpose(1, 0, 2).reshape(D, R * d)
    gemm_w[:, R * d :] = (bc * inv_var).T
    beta_c = np.einsum("rjk,rj->rk", A, bc * inv_var)
    b_quad_c = np.einsum("rj,rj->r", bc * inv_var, bc)
    w_shift = np.einsum("rij,rj->ri", K_inv, beta_c)
    if ill.size:  # K⁻¹ Aᵀ Λ (b - c) = (A K⁻ᵀ)ᵀ Λ (b - c): K⁻¹ of the huge Aᵀ Λ (b - c) cancels
        w_shift[ill] = np.einsum("rjk,rj->rk", AK[ill], bc[ill] * inv_var)
    lk_const = -0.5 * (D * LOG_2PI + float(np.log(std**2).sum()) + log_det_P + b_quad_c)
    basis, w_basis = _output_basis(part, inv_var, gemm_w)
    interval = None
    if d == 1 and R:
        n1 = Cn[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = e / n1
        hi = np.min(np.where((n1 > 0) & ~pad, t, np.inf), axis=1)
        lo = np.max(np.where((n1 < 0) & ~pad, t, -np.inf), axis=1)
        order = np.argsort(lo, kind="stable")
        interval = (lo, hi, order, lo[order][1:])
    polygons = polygon_table(normals, g) if d == 2 else None
    return RegionGeometry(
        A=A,
        b=b,
        inv_var=inv_var,
        log_det_noise=float(np.log(std**2).sum()),
        K=K,
        K_inv=K_inv,
        L=L,
        log_det_P=log_det_P,
        beta=beta,
        b_quad=b_quad,
        normals=normals,
        G=G,
        g=g,
        center=center,
        gemm_w=gemm_w,
        w_shift=w_shift,
        lk_const=lk_const,
        locate=part.locate,
        interval=interval,
        gemm_basis=basis,
        gemm_w_basis=w_basis,
        polygons=polygons,
        qr_factored=qr_mask,
    )


def qr_factor(top: np.ndarray, chunk: int = 4096):
    """``(K, Q_top)`` of Householder QR ``[T; I] = [Q_top; Q_bot] Kᵀ`` for ``T`` (m, D, d)
    (``K Kᵀ = I + Tᵀ T``, ``K`` lower with a positive diagonal; ``Q_top = T K⁻ᵀ`` has
    orthonormal columns with ``Q_bot``), in chunks. ``T = Λ^½ A_r`` (a region, or a pair's
    observed rows): ``P = I + Aᵀ Λ A`` is never formed, so a steep and a flat direction keep
    their ``log|P|``.

    The rows of ``[T; I]`` enter the QR by decreasing size (∞-norm) and ``Q``'s rows are put
    back: Householder QR with sorted rows is row-wise stable (Powell & Reid; Cox & Higham
    1998), so ``w = Q_topᵀ Λ^½ (x - c)`` is accurate in every direction. In output order, a
    sharp output (σ = 1e-4) after flat ones (σ = 10) left ``ε cond(K) |Λ^½ (x - c)|`` in ``w``:
    a d = 3 point 1e4 σ out had log p(x) 1.1e-4 nats off, beyond its estimate of 3.1e-6."""
    m, D, d = top.shape
    K = np.empty((m, d, d))
    Q_top = np.empty((m, D, d))
    eye = np.eye(d)
    for s in range(0, m, chunk):
        a = top[s : s + chunk]
        a = np.concatenate([a, np.broadcast_to(eye, (a.shape[0], d, d))], 1)
        order = np.argsort(-np.abs(a).max(axis=2), axis=1, kind="stable")[:, :, None]
        Q_sorted, Rm = np.linalg.qr(np.take_along_axis(a, order, axis=1))
        Q = np.empty_like(Q_sorted)
        np.put_along_axis(Q, order, Q_sorted, axis=1)  # rows back in output order
        sgn = np.where(np.diagonal(Rm, axis1=1, axis2=2) < 0, -1.0, 1.0)
        K[s : s + chunk] = np.swapaxes(Rm * sgn[:, :, None], 1, 2)
        Q_top[s : s + chunk] = Q[:, :D, :] * sgn[:, None, :]
    return K, Q_top


def stable_kappa_rounding(log_kappa, res, terms, inv_var) -> np.ndarray:
    """(P,) rounding estimate of ``log κ`` computed as ``-½ (... + ||res||²_Λ + ||μ||²)``.

    ``res = x - b - A μ`` is formed from terms of size ``terms`` (P, D) (``|x - c| + |b - c|
    + |A| |μ|`` per output, 0 where not observed), so each ``res_j`` carries ``δ_j = 4 ε
    terms_j``: the squared norm moves by up to ``Σ_j λ_j δ_j (2 |res_j| + δ_j)``. Next to
    ``|A_r| / σ`` of 1e12 (an output with σ = 1e-8 and slope 1e4) that is the float64 floor,
    ~(ulp(x_j) / σ_j)² ~ 1e-9 nats; plus ``8 ε max(1, |log κ|)`` for the other terms.
    """
    delta = (4.0 * _EPS) * terms
    quad = np.einsum("pj,j->p", delta * (2.0 * np.abs(res) + delta), inv_var)
    return (_KAPPA_ROUND * _EPS) * np.maximum(1.0, np.abs(log_kappa)) + 0.5 * quad


def _output_basis(part: Partition, inv_var: np.ndarray, gemm_w: np.ndarray):
    """``(U, Uᵀ gemm_w)`` with ``U`` an orthonormal basis of ``Λ W_L``, or ``(None, None)``.

    Every affine piece of the decoder ends with its last affine layer, so ``A_r = W_L M_r`` and
    ``b_r - c = W_L m_r``: the GEMM's columns lie in the ``k``-dimensional ``span(Λ W_L)`` and the
    (N x D) @ (D x M) product factors exactly into (N x D) @ (D x k) and (N x k) @ (k x M). Used
    when that is at most 70% of the work; the factorisation is verified on the actual columns
    (to 1e-12 relative) and skipped if it does not hold.
    """
    D, M = gemm_w.shape
    dec = getattr(part, "decoder", None)
    if dec is None or M == 0:
        return None, None
    WL = dec.weights[-1]
    k = WL.shape[1]
    if WL.shape[0] != D or k * (D + M) > 0.7 * D * M:
        return None, None
    U, _ = np.linalg.qr(WL * inv_var[:, None])  # (D, k); span(U) ⊇ span(Λ W_L) to rounding
    Wb = U.T @ gemm_w
    scale = np.abs(gemm_w).max(axis=0)
    resid = np.abs(gemm_w - U @ Wb).max(axis=0)
    if np.any(resid > 1e-12 * np.maximum(scale, np.finfo(float).tiny)):
        return None, None
    return U, Wb
