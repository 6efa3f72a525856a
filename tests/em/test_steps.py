"""M-step building blocks against naive per-pair formulas."""

from __future__ import annotations

import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN
from exactdgn.em import _steps, region_stats, update_noise


def _stats(sizes, seed, n=150):
    m = ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), 0.2)
    X = m.sample(n, random_state=seed)
    st = m._pairs(X, need_moments=True)
    rs = region_stats(X, m.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
    return m, X, rs


@pytest.mark.parametrize(("sizes", "block"), [([1, 5, 3], 7), ([2, 4, 4, 3], 1 << 14)])
@pytest.mark.parametrize("diagonal", [False, True])
def test_update_noise_matches_per_pair_formula(sizes, block, diagonal, monkeypatch):
    m, X, rs = _stats(sizes, 2)
    monkeypatch.setattr(_steps, "_RES_BLOCK", block)  # several blocks, and one
    A, b = m.decoder_.affine_map(rs.patterns)
    ref = np.zeros(X.shape[1])
    for p in range(len(rs.w)):  # the definition, pair by pair
        r = rs.region[p]
        res = X[rs.point[p]] - A[r] @ rs.mean[p] - b[r]
        ref += rs.w[p] * (res**2 + np.diag(A[r] @ rs.cov[p] @ A[r].T))
    ref /= len(X)
    if not diagonal:
        ref = np.full_like(ref, ref.mean())
    got = update_noise(m.decoder_, rs, diagonal, X, min_std=1e-6) ** 2
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_region_stats_sums():
    m, X, rs = _stats([2, 5, 3], 4)
    R = len(m.partition_)
    s = np.zeros(R)
    Z2 = np.zeros_like(rs.Z2)
    for p in range(len(rs.w)):
        r, mu = rs.region[p], rs.mean[p]
        zt = np.append(mu, 1.0)
        second = np.outer(zt, zt)
        second[:-1, :-1] += rs.cov[p]
        s[r] += rs.w[p]
        Z2[r] += rs.w[p] * second
    np.testing.assert_allclose(rs.s, s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rs.Z2, Z2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rs.s.sum(), len(X), rtol=1e-12)
