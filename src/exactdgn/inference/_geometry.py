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

from .._validation import check_positive
from ..gaussian import PolygonTable, polygon_table
from ..gaussian._rules import LOG_2PI
from ..partition import Partition

__all__ = ["RegionGeometry", "region_geometry"]


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
    cache: dict = field(default_factory=dict, repr=False)  # derived arrays built on first use

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

        Parameters
        ----------
        X : (P, D) points (one row per pair), r : (P,) region indices

        Returns
        -------
        log_kappa : (P,), v : (P, d), offsets : (P, F)
        """
        diff = X - self.b[r]
        quad = np.einsum("pj,pj->p", diff * self.inv_var, diff)
        v = np.einsum("pjk,pj->pk", self.A[r], diff * self.inv_var)
        w = np.einsum("pij,pj->pi", self.K_inv[r], v)
        D = self.output_dim
        log_kappa = -0.5 * (
            D * LOG_2PI
            + self.log_det_noise
            + self.log_det_P[r]
            + quad
            - np.einsum("pi,pi->p", w, w)
        )
        offsets = self.g[r] - np.einsum("pfk,pk->pf", self.G[r], v)
        return log_kappa, v, offsets

    def offsets(self, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(P, F) whitened facet offsets ``c(x) = g_r - G_r v`` for pairs."""
        return self.g[r] - np.matmul(self.G[r], v[:, :, None])[..., 0]

    def posterior_mean(self, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(P, d) ``μ_r(x) = S_r v``."""
        return np.einsum("pij,pj->pi", self.S[r], v) if len(r) else np.zeros((0, self.latent_dim))


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
    std = np.broadcast_to(check_positive(noise_std, name="noise_std", size=D), (D,))
    inv_var = 1.0 / std**2
    AtLA = np.einsum("rjk,j,rjl->rkl", A, inv_var, A)
    P = AtLA + np.eye(d)
    K = np.linalg.cholesky(P)
    K_inv = np.linalg.inv(K)  # batched; K is a small (d x d) well-conditioned factor (P >= I)
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
    gemm_w = np.empty((D, R * d + R))
    gemm_w[:, : R * d] = (AK * inv_var[None, :, None]).transpose(1, 0, 2).reshape(D, R * d)
    gemm_w[:, R * d :] = (bc * inv_var).T
    beta_c = np.einsum("rjk,rj->rk", A, bc * inv_var)
    b_quad_c = np.einsum("rj,rj->r", bc * inv_var, bc)
    w_shift = np.einsum("rij,rj->ri", K_inv, beta_c)
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
    )


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
