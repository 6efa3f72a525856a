"""Truncated moments by the divergence theorem, in the stable weight form (any dimension).

With facet weights ``w_F = exp(log φ(c_F) + log Φ_{d-1}(F̃) - log m)`` (O(h) even for tiny
masses), unit normals ``n_F`` and the facets' conditional means ``ḡ_F``::

    E[u] = -Σ_F w_F n_F,      Cov[u] = I - Σ_F w_F n_F (ḡ_F - E[u])ᵀ   (symmetrised)

(Tallis 1961, generalised; see ``shared/notes/numerics.md``). Used by the polygon (d = 2) and
polytope (d >= 3) kernels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["divergence_moments"]


def divergence_moments(w: np.ndarray, nu: np.ndarray, gbar: np.ndarray):
    """Mean (P, d) and symmetric covariance (P, d, d) from weights ``w`` (P, F), normals and
    conditional facet means ``nu``, ``gbar`` (P, F, d) (zero weight on absent facets)."""
    d = nu.shape[2]
    mean = -np.einsum("pf,pfd->pd", w, nu)
    cov = np.eye(d)[None] - np.einsum("pf,pfd,pfe->pde", w, nu, gbar - mean[:, None, :])
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return mean, cov
