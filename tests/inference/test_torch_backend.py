"""The torch backend (``device=...``) against the numpy path and independent references.

Every test runs on the CPU and, where torch sees a GPU, on CUDA as well (``DEVICES``). The numpy
path is itself checked against quadrature oracles (``tests/oracles``); here the kernels are also
checked against mpmath where a value can be computed independently.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from exactdgn import Decoder, ExactDGN
from exactdgn.gaussian import interval_stats, log_interval_mass
from exactdgn.gaussian._torch_interval import interval_stats_t, log_interval_mass_t, q_t
from exactdgn.inference import marginal_pairs, region_geometry

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _close(a, b, rel=1e-10):
    """``|a - b| <= rel * max(1, |a|)`` elementwise, with equal non-finite entries."""
    a, b = np.asarray(a), np.asarray(b)
    fa, fb = np.isfinite(a), np.isfinite(b)
    assert np.array_equal(fa, fb)
    assert np.array_equal(a[~fa], b[~fb])
    d = np.abs(a[fa] - b[fa]) / np.maximum(1.0, np.abs(a[fa]))
    assert d.size == 0 or d.max() <= rel, f"max relative difference {d.max():.3g}"


def _intervals(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    lo = rng.normal(0, 5, n) * rng.choice([1, 1e-3, 1e-6, 30], n) + rng.choice([0, 30, -30, 1e4], n)
    width = np.abs(rng.normal(0, 1, n)) * rng.choice([1e-9, 1e-4, 0.1, 1, 10, np.inf], n)
    hi = lo + width
    lo[::7] = -np.inf
    hi[::11] = lo[::11]  # empty
    return lo, hi


@pytest.fixture(params=["auto", "dense"])
def branches(request, monkeypatch):
    """Run a test with the device's branch mode and again with the dense (CUDA) mode forced."""
    from exactdgn.gaussian import _torch_interval

    if request.param == "dense":
        monkeypatch.setattr(_torch_interval, "DENSE_BRANCHES", True)
    return request.param


@pytest.mark.parametrize("device", DEVICES)
def test_interval_mass_and_stats_match_numpy(device, branches):
    lo, hi = _intervals()
    t = lambda a: torch.tensor(a, device=device)  # noqa: E731
    lm, err = log_interval_mass(lo, hi)
    lm_t, err_t = log_interval_mass_t(t(lo), t(hi))
    _close(lm, lm_t.cpu().numpy(), 1e-13)
    _close(err, err_t.cpu().numpy(), 1e-10)
    ref = interval_stats(lo, hi)
    got = interval_stats_t(t(lo), t(hi))
    _close(ref[0], got[0].cpu().numpy(), 1e-13)
    ok = np.isfinite(ref[0])
    m, v = ref[1][ok], ref[2][ok]
    mt, vt = got[1].cpu().numpy()[ok], got[2].cpu().numpy()[ok]
    scale = np.sqrt(v)  # the mean to a fraction of the conditional sd, the variance relative
    assert np.max(np.abs(m - mt) / np.maximum(scale, 1e-300)) < 1e-9
    assert np.max(np.abs(v - vt) / v) < 1e-9


@pytest.mark.parametrize("device", DEVICES)
def test_tails_against_mpmath(device):
    """Far-tail masses that torch's own ndtr gets wrong (it is 0 below -9 in float64)."""
    import mpmath

    mpmath.mp.dps = 50
    cases = [(9.5, np.inf), (-np.inf, -20.0), (37.0, 37.5), (1e4, 1e4 + 1e-3), (30.0, 30 + 1e-9)]
    lo = torch.tensor([c[0] for c in cases], dtype=torch.float64, device=device)
    hi = torch.tensor([c[1] for c in cases], dtype=torch.float64, device=device)
    got = log_interval_mass_t(lo, hi)[0].cpu().numpy()
    for (a, b), g in zip(cases, got, strict=True):
        A, B = mpmath.mpf(float(a)), mpmath.mpf(float(b))
        if A == -mpmath.inf:  # Φ(b) = Q(-b)
            A, B = -B, mpmath.inf
        s2 = mpmath.sqrt(2)
        ref = mpmath.log((mpmath.erfc(A / s2) - mpmath.erfc(B / s2)) / 2)
        assert abs(g - float(ref)) <= 1e-13 * max(1.0, abs(float(ref))), (a, b, g, ref)
    q = q_t(torch.tensor([9.5, 20.0, 37.0], dtype=torch.float64, device=device)).cpu().numpy()
    for x, g in zip([9.5, 20.0, 37.0], q, strict=True):
        assert abs(g / float(mpmath.erfc(x / mpmath.sqrt(2)) / 2) - 1) < 1e-13


def _model(sizes, seed, noise, device=None):
    return ExactDGN.from_decoder(Decoder.random(sizes, seed=seed), noise, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sizes", "seed"), [([1, 6, 2], 0), ([1, 40, 40, 5], 1), ([1, 64, 30], 2)])
@pytest.mark.parametrize("moments", [False, True])
def test_pairs_1d_match_numpy(device, sizes, seed, moments, branches):
    m = _model(sizes, seed, 0.05)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(500, random_state=seed)
    D = sizes[-1]
    far = np.stack([np.full(D, 1e4 * 0.05), np.full(D, -100.0), X[0] + 1e4 * 0.05])
    X = np.concatenate([X, far])
    ref = marginal_pairs(geom, X, need_moments=moments)
    got = marginal_pairs(geom, X, need_moments=moments, device=device)
    assert got.log_px[-3] < -1e7  # 1e4 sigma away
    _close(ref.log_px, got.log_px)
    # the pairs whose weight is visible agree, with their statistics
    key = lambda st: {  # noqa: E731
        (p, r): i for i, (p, r) in enumerate(zip(st.point, st.region, strict=True))
    }
    kr, kg = key(ref), key(got)
    vis = [k for k, i in kr.items() if ref.log_weight[i] > -30]
    assert vis and all(k in kg for k in vis)
    i_r = np.array([kr[k] for k in vis])
    i_g = np.array([kg[k] for k in vis])
    _close(ref.log_joint[i_r], got.log_joint[i_g])
    np.testing.assert_allclose(got.v[i_g], ref.v[i_r], rtol=1e-10, atol=1e-9)
    if moments:
        assert got.mean.shape == (len(got.point), 1) and got.cov.shape == (len(got.point), 1, 1)
        sd = np.sqrt(ref.cov[i_r, 0, 0])
        assert np.max(np.abs(got.mean[i_g, 0] - ref.mean[i_r, 0]) / sd) < 1e-8
        np.testing.assert_allclose(got.cov[i_g], ref.cov[i_r], rtol=1e-8)
        wsum = np.bincount(got.point, np.exp(got.log_weight), minlength=len(X))
        np.testing.assert_allclose(wsum, 1.0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise", [0.1, [0.1, 0.2, 0.05, 0.3]])
def test_model_device_dispatch(device, noise):
    sizes = [1, 16, 16, 4]
    ref = _model(sizes, 3, noise)
    m = _model(sizes, 3, noise, device=device)
    assert m.get_params()["device"] == device
    X = ref.sample(200, random_state=1)
    X[0] += 1e3
    _close(ref.score_samples(X), m.score_samples(X))
    a, b = ref.score_samples(X, return_error=True)[1], m.score_samples(X, return_error=True)[1]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    pr, pm = ref.posterior(X[:20]), m.posterior(X[:20])
    np.testing.assert_allclose(pm.mean, pr.mean, rtol=1e-9, atol=1e-10)


def test_bad_device_is_a_clear_error():
    m = _model([1, 6, 2], 0, 0.1, device="tpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        m.score_samples(np.zeros((2, 2)))
    if not torch.cuda.is_available():
        m = _model([1, 6, 2], 0, 0.1, device="cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            m.score_samples(np.zeros((2, 2)))


def test_latent_dim_3_on_a_device_is_a_clear_error():
    m = ExactDGN.from_decoder(Decoder.random([3, 4, 3], seed=0), 0.2, device="cpu")
    X = ExactDGN.from_decoder(Decoder.random([3, 4, 3], seed=0), 0.2).sample(5, random_state=0)
    with pytest.raises(ValueError, match=r"covers latent_dim 1 and 2.*device=None"):
        m.score_samples(X)


def test_device_saved_as_text(tmp_path):
    m = _model([1, 6, 2], 0, 0.1, device=torch.device("cpu"))
    m.save(tmp_path / "m.npz")
    m2 = ExactDGN.load(tmp_path / "m.npz")
    assert m2.device == "cpu"
    X = m.sample(10, random_state=0)
    _close(m.score_samples(X), m2.score_samples(X), 1e-15)


# ----------------------------------------------------------------------------------- d = 2
def _mp_piece(h, ta, tb):
    """log B(h, ta, tb) by mpmath quadrature split at the integrand's scales (no shared formula)."""
    import mpmath

    mpmath.mp.dps = 40
    h = mpmath.mpf(h)
    f = lambda t: mpmath.exp(-t * t / 2) * h / (h * h + t * t)  # noqa: E731
    top = mpmath.inf if np.isinf(tb) else mpmath.mpf(tb)
    pts = [mpmath.mpf(ta)]
    pts += [mpmath.mpf(p) for p in (h, 10 * h, 100 * h, 1, 2, 4, 8) if ta < p < tb] + [top]
    return float(mpmath.log(mpmath.exp(-h * h / 2) / (2 * mpmath.pi) * mpmath.quad(f, pts)))


@pytest.mark.parametrize("device", DEVICES)
def test_edge_pieces_and_owens_t_against_mpmath(device):
    import mpmath
    from scipy.special import owens_t

    from exactdgn.gaussian._torch_polygon import log_edge_pieces_t, owens_t_t

    # every branch: Laguerre (ta >= 4), near-foot Gauss-Legendre (h >= 1 or short), the small-h
    # series + sinh panels (numpy's owens_t difference loses 1e-2 on the first one)
    cases = [
        (1.5e-12, 1.93, 4.34),
        (1e-3, 0.0, 3.9),
        (0.3, 0.001, 2.0),
        (0.99, 0.0, np.inf),
        (1e-5, 1e-7, 0.5),
        (0.5, 0.2, 50.0),
        (2.0, 0.0, 3.0),
        (30.0, 5.0, 9.0),
        (3.0, 4.5, np.inf),
        (0.2, 6.0, 6.5),
    ]
    t = lambda a: torch.tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    h, ta, tb = (t([c[i] for c in cases]) for i in range(3))
    got = log_edge_pieces_t(h, ta, tb).cpu().numpy()
    for c, g in zip(cases, got, strict=True):
        ref = _mp_piece(*c)
        assert abs(g - ref) <= 1e-13 * max(1.0, abs(ref)), (c, g, ref)
    # Owen's T against mpmath's definition and scipy
    mpmath.mp.dps = 40
    pairs = [
        (0.1, 0.5),
        (1e-6, 3e6),
        (2.0, 0.3),
        (5.0, 10.0),
        (20.0, 0.01),
        (0.5, 1e5),
        (8.0, -0.7),
    ]
    got = owens_t_t(t([p[0] for p in pairs]), t([p[1] for p in pairs])).cpu().numpy()
    for (hh, aa), g in zip(pairs, got, strict=True):
        H, A = mpmath.mpf(hh), mpmath.mpf(abs(aa))
        # e^{-h²/2} factored out (mpmath.quad's tolerance is absolute)
        f = lambda x, H=H: mpmath.exp(-H * H * x * x / 2) / (1 + x * x)  # noqa: E731
        pts = [0, min(A, 1 / H), A] if A > 1 / H else [0, A]
        ref = mpmath.exp(-H * H / 2) * mpmath.quad(f, pts) / (2 * mpmath.pi)
        ref = float(np.sign(aa) * ref)
        assert abs(g / ref - 1) < 1e-13, (hh, aa, g, ref)
        assert abs(g / owens_t(hh, aa) - 1) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_shifted_polygon_masses_match_numpy(device):
    from exactdgn.gaussian import log_mass_2d_shifted
    from exactdgn.gaussian._torch_polygon import log_mass_2d_shifted_t, table_to_device

    m = _model([2, 16, 16, 5], 0, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    rng = np.random.default_rng(0)
    P = 20000
    r = rng.integers(0, geom.n_regions, P)
    w = rng.normal(0, 3, (P, 2)) * rng.choice([0.01, 1, 10, 1000], (P, 1))
    # means exactly at a vertex or on an edge of the polygon (interior angle / 2π terms)
    tab_np = geom.polygons
    on = np.flatnonzero(tab_np.fin0[r, 0] & tab_np.fin1[r, 0])[:200]
    w[on[:100]] = tab_np.p0[r[on[:100]], 0]
    w[on[100:]] = 0.5 * (tab_np.p0[r[on[100:]], 0] + tab_np.p1[r[on[100:]], 0])
    ref, _ = log_mass_2d_shifted(geom.polygons, r, w)
    tab = table_to_device(geom.polygons, device)
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    got, err = log_mass_2d_shifted_t(tab, t(r), t(w))
    assert ref.min() < -1e6  # far tails included
    _close(ref, got.cpu().numpy(), 1e-12)
    fin = np.isfinite(ref)
    assert np.all(err.cpu().numpy()[fin] < 1e-9 * np.maximum(1, np.abs(ref[fin])))


def test_cpu_owens_t_fast_path_matches_the_tail_safe_pieces(monkeypatch):
    """The CPU fast path (numpy's Owen's-T edge formula where it does not cancel) against the
    uniform tail-safe path of the GPU: the same masses to 1e-12 (far tails included), and the
    fast path is taken for some pairs and refused for the cancelling ones."""
    from exactdgn.gaussian import _torch_polygon
    from exactdgn.gaussian._torch_polygon import log_mass_2d_shifted_t, table_to_device

    m = _model([2, 16, 16, 5], 0, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    rng = np.random.default_rng(1)
    P = 20000
    r = torch.as_tensor(rng.integers(0, geom.n_regions, P))
    w = rng.normal(0, 3, (P, 2)) * rng.choice([0.01, 1, 10, 1000], (P, 1))
    w = torch.as_tensor(w)
    tab = table_to_device(geom.polygons, "cpu")
    calls = []
    fast = _torch_polygon._fast_path

    def spy(*a):
        out = fast(*a)
        calls.append((int(a[6].sum()), int(out[0].sum())))
        return out

    monkeypatch.setattr(_torch_polygon, "_fast_path", spy)
    monkeypatch.setattr(_torch_polygon, "FAST_PATH", {"cpu": True})
    got, err = log_mass_2d_shifted_t(tab, r, w)
    monkeypatch.setattr(_torch_polygon, "FAST_PATH", {})
    ref, _ = log_mass_2d_shifted_t(tab, r, w)
    before, after = calls[0]
    assert 0 < after < before  # some pairs accepted, the rest left to the pieces
    assert ref.min() < -1e6
    _close(ref.numpy(), got.numpy(), 1e-12)
    fin = torch.isfinite(ref)
    assert torch.all(err[fin] < 1e-9 * torch.clamp(ref[fin].abs(), min=1.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sizes", "noise"), [([2, 16, 16, 5], 0.1), ([2, 24, 24, 30], 0.05)])
def test_pairs_2d_match_numpy(device, sizes, noise):
    m = _model(sizes, 0, noise)
    geom = region_geometry(m.partition_, m.noise_std_)
    D = sizes[-1]
    X = m.sample(300, random_state=1)
    far = np.stack([np.full(D, 1e4 * noise), np.full(D, -100.0), X[0] + 1e4 * noise])
    X = np.concatenate([X, far])
    ref = marginal_pairs(geom, X)
    got = marginal_pairs(geom, X, device=device)
    assert got.log_px[-3] < -1e7
    _close(ref.log_px, got.log_px)
    assert np.all(np.diff(got.point) >= 0)
    wsum = np.bincount(got.point, np.exp(got.log_weight), minlength=len(X))
    np.testing.assert_allclose(wsum, 1.0, atol=1e-12)
    vis = {(p, r) for p, r, w in zip(ref.point, ref.region, ref.log_weight, strict=True) if w > -30}
    assert vis <= set(zip(got.point, got.region, strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_chunks_and_blocks_do_not_change_results(device, latent, monkeypatch):
    """Many small chunks of points and blocks of pairs give the one-chunk results."""
    from exactdgn.inference import _torch_marginal

    m = _model([latent, 12, 12, 4], 4, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(120, random_state=3)
    X[5] += 50.0
    one = marginal_pairs(geom, X, need_moments=True, device=device)
    monkeypatch.setattr(_torch_marginal, "_chunk_points", lambda N, R, dev, cb: 37)
    chunk = 3 * 37 * geom.n_regions
    monkeypatch.setattr(_torch_marginal, "_CHUNK_2D", {"cpu": chunk, "cuda": chunk})
    monkeypatch.setattr(_torch_marginal, "_PAIR_BLOCK", {"cpu": 101, "cuda": 101})
    many = marginal_pairs(geom, X, need_moments=True, device=device)
    assert np.array_equal(one.point, many.point) and np.array_equal(one.region, many.region)
    # chunks change the rounding (by 2.5e-13 nats on an AMD EPYC, OpenBLAS's Haswell kernel),
    # never by more than the error each run reports
    diff = np.abs(one.log_px - many.log_px)
    assert np.all(diff <= one.log_px_error + many.log_px_error)
    _close(one.log_px, many.log_px, 1e-12)
    # per-pair moments in units of the pair's posterior standard deviations (as numpy against
    # torch in test_estep_2d_matches_numpy): a far pair's covariance of ~4e-6 cancels in its
    # second moment and moved by 3e-9 of it on the AMD EPYC
    sd = np.sqrt(np.einsum("pii->pi", one.cov))
    np.testing.assert_array_less(np.abs(many.mean - one.mean) / sd, 1e-9)
    dc = np.abs(many.cov - one.cov) / (sd[:, :, None] * sd[:, None, :])
    np.testing.assert_array_less(dc, 1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_chunks_report_their_rows(device, latent, monkeypatch):
    """The device path reports each finished chunk's rows (``exactdgn evaluate``'s bar over the
    points; it showed nothing on a device), in order, and the reports change no value."""
    from exactdgn._progress import progress_to
    from exactdgn.inference import _torch_marginal

    m = _model([latent, 12, 12, 4], 4, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(100, random_state=3)
    silent = marginal_pairs(geom, X, device=device)
    monkeypatch.setattr(_torch_marginal, "_chunk_points", lambda N, R, dev, cb: 37)
    chunk = 3 * 37 * geom.n_regions
    monkeypatch.setattr(_torch_marginal, "_CHUNK_2D", {"cpu": chunk, "cuda": chunk})
    seen = []
    with progress_to(seen.append):
        heard = marginal_pairs(geom, X, device=device)
    assert seen == [37, 37, 26]
    one = marginal_pairs(geom, X, device=device)  # the same chunks, nobody listening
    assert np.array_equal(one.log_px, heard.log_px)
    _close(silent.log_px, heard.log_px, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_chunk_bytes_bounds_the_chunks_and_top_k_is_refused(device, latent, monkeypatch):
    """``chunk_bytes`` bounds the torch backend's chunks of points as the numpy path's (it
    was ignored); ``top_k``, a numpy-path rule, is refused rather than ignored."""
    from exactdgn.inference import _torch_marginal

    m = _model([latent, 12, 12, 4], 4, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(120, random_state=3)
    one = marginal_pairs(geom, X, device=device)
    calls = []
    log_kappa = _torch_marginal._log_kappa
    monkeypatch.setattr(
        _torch_marginal, "_log_kappa", lambda dg, Xc: calls.append(len(Xc)) or log_kappa(dg, Xc)
    )
    per_point = 8 * geom.n_regions * (3 * latent + 6)  # the numpy path's estimate
    many = marginal_pairs(geom, X, device=device, chunk_bytes=20 * per_point)
    assert calls == [20] * 6
    assert np.array_equal(one.point, many.point) and np.array_equal(one.region, many.region)
    _close(one.log_px, many.log_px, 1e-13)
    with pytest.raises(ValueError, match="top_k=2 is for the numpy path"):
        marginal_pairs(geom, X, device=device, top_k=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise", [0.1, [0.1, 0.2, 0.05, 0.3]])
def test_model_device_dispatch_2d(device, noise):
    ref = _model([2, 12, 12, 4], 5, noise)
    m = _model([2, 12, 12, 4], 5, noise, device=device)
    X = ref.sample(100, random_state=2)
    X[0] -= 1e3
    _close(ref.score_samples(X), m.score_samples(X))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sizes", "noise"), [([2, 16, 16, 5], 0.1), ([2, 24, 24, 30], 0.05)])
def test_estep_2d_matches_numpy(device, sizes, noise, branches):
    m = _model(sizes, 0, noise)
    geom = region_geometry(m.partition_, m.noise_std_)
    D = sizes[-1]
    X = m.sample(100, random_state=1)
    far = np.stack([np.full(D, 1e4 * noise), np.full(D, -100.0), X[0] + 10 * noise])
    X = np.concatenate([X, far])
    ref = marginal_pairs(geom, X, need_moments=True)
    got = marginal_pairs(geom, X, need_moments=True, device=device)
    _close(ref.log_px, got.log_px)
    # the same visible pairs, in the same order (sorted by point, then as numpy orders them)
    assert np.array_equal(ref.point, got.point) and np.array_equal(ref.region, got.region)
    sd = np.sqrt(np.einsum("pii->pi", ref.cov))
    w = np.exp(ref.log_weight)
    big = w > 1e-6
    assert big.sum() >= len(X)
    dm = np.abs(got.mean - ref.mean) / sd
    dc = np.abs(got.cov - ref.cov) / (sd[:, :, None] * sd[:, None, :])
    assert dm[big].max() < 1e-9 and dc[big].max() < 1e-7
    # per point: the posterior mean and covariance (what the M-step uses)
    for st in (ref, got):
        wt = np.exp(st.log_weight)
        st.pm = np.stack([np.bincount(st.point, wt * st.mean[:, k]) for k in range(2)], 1)
    scale = np.sqrt(np.stack([np.bincount(ref.point, w * ref.cov[:, k, k]) for k in range(2)], 1))
    assert np.max(np.abs(got.pm - ref.pm) / scale) < 1e-9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("latent", "method"), [(1, "em"), (2, "em"), (1, "gradient"), (2, "lbfgs")]
)
def test_fit_on_device_matches_numpy(device, latent, method):
    """Training with the E-step on the device (M-step / optimiser on the host) follows the
    numpy fit: EM, exact-gradient Adam and L-BFGS."""
    X = _model([latent, 6, 3], 7, 0.2).sample(100, random_state=0)
    kw = dict(
        latent_dim=latent,
        hidden_sizes=(6,),
        method=method,
        max_iter=2,
        random_state=0,
        progress=False,
    )
    ref = ExactDGN(**kw).fit(X)
    got = ExactDGN(**kw, device=device).fit(X)
    a = np.array([h["loglik"] for h in ref.history_])
    b = np.array([h["loglik"] for h in got.history_])
    np.testing.assert_allclose(b, a, rtol=1e-9)
    _close(ref.score_samples(X), got.score_samples(X), 1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prune_nats", [10.0, 20.0])
@pytest.mark.parametrize("moments", [False, True])
def test_pairs_1d_few_regions_match_numpy_at_any_prune_nats(device, prune_nats, moments):
    """d = 1 with few regions: the numpy path keeps every pair (its dense rule); the device
    kept only the pairs above the pruning level, so with the estimator's smallest
    ``prune_nats`` (10) ``log p(x)`` differed by 1e-6 between the backends."""
    m = _model([1, 8, 4], 1, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    assert geom.n_regions <= 24
    X = m.sample(300, random_state=0)
    ref = marginal_pairs(geom, X, prune_nats=prune_nats, need_moments=moments)
    got = marginal_pairs(geom, X, prune_nats=prune_nats, need_moments=moments, device=device)
    _close(ref.log_px, got.log_px, 1e-12)
    assert np.array_equal(ref.point, got.point) and np.array_equal(ref.region, got.region)
    np.testing.assert_allclose(got.log_px_error, ref.log_px_error, rtol=1e-10)
    if moments:
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-10, atol=1e-12)
    a = ExactDGN.from_decoder(m.decoder_, m.noise_std_, prune_nats=prune_nats)
    b = ExactDGN.from_decoder(m.decoder_, m.noise_std_, prune_nats=prune_nats, device=device)
    _close(a.score_samples(X), b.score_samples(X), 1e-12)


@pytest.mark.parametrize("device", [None, *DEVICES])
@pytest.mark.parametrize(("sizes", "seed"), [([1, 8, 4], 1), ([1, 16, 16, 4], 1), ([2, 8, 4], 1)])
def test_points_a_billion_sigma_away_keep_their_dominant_pair(device, sizes, seed):
    """Where ``|log p(x)|`` exceeds ~2e17 the pruning level ``lower - thr`` rounds to
    ``lower``: the seed region holding all the mass (``log κ_r = lower``) failed ``>`` and was
    dropped (d = 1 device: ``log p`` 15x too low; numpy d = 1 with many regions: IndexError
    in ``reduceat``), and with moments the dominant pair (``lj = log p``) was not 'visible':
    the point had no pair left (posterior weights summing to 0). Compared with no pruning."""
    m = _model(sizes, seed, [0.1, 0.2, 0.3, 0.05])
    geom = region_geometry(m.partition_, m.noise_std_)
    base = m.sample(1, random_state=0)[0]
    scales = [1e2, 1e4, 1e8, 1e9, 1e10, 1e12]
    X = np.array([base + s * np.array([1.0, -1.0, 0.5, 2.0]) for s in scales])
    ref = marginal_pairs(geom, X, prune_nats=np.inf)  # every pair integrated
    assert ref.log_px[-1] < -1e25
    got = marginal_pairs(geom, X, device=device)
    _close(ref.log_px, got.log_px, 1e-12)
    st = marginal_pairs(geom, X, need_moments=True, device=device)
    _close(ref.log_px, st.log_px, 1e-12)
    wsum = np.bincount(st.point, np.exp(st.log_weight), minlength=len(X))
    # beyond ~1e15 nats regions whose log p differ by less than ulp(log p) cannot be told apart
    # (their weights may then sum to more than 1); none may be lost
    assert np.all(wsum >= 1.0 - 1e-5)
    np.testing.assert_allclose(wsum[:2], 1.0, atol=1e-5)


@pytest.mark.parametrize("device", [None, *DEVICES])
@pytest.mark.parametrize("latent", [1, 2])
def test_bad_prune_nats_and_chunk_bytes_are_refused_on_both_paths(device, latent):
    """``prune_nats`` NaN or negative left no pair (or dropped the seeds): the device returned
    ``log p = -inf`` for every point, the numpy path raised IndexError from ``reduceat``;
    ``chunk_bytes=None`` ran on the device and was a TypeError on the numpy path (d = 2)."""
    m = _model([latent, 16, 16, 4], 1, 0.1)
    geom = region_geometry(m.partition_, m.noise_std_)
    X = m.sample(5, random_state=0)
    for bad in (np.nan, -5.0, -np.inf, "40", None, True):
        with pytest.raises(ValueError, match="prune_nats="):
            marginal_pairs(geom, X, prune_nats=bad, device=device)
    for bad in (None, 0, -5, 1.5, "x", True):
        with pytest.raises(ValueError, match="chunk_bytes="):
            marginal_pairs(geom, X, chunk_bytes=bad, device=device)
    ok = marginal_pairs(geom, X, prune_nats=np.inf, chunk_bytes=np.int64(2**20), device=device)
    _close(ok.log_px, marginal_pairs(geom, X).log_px, 1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_missing_values_with_a_device_run_on_the_numpy_path(device, latent):
    """As documented: a call whose X holds a NaN runs on the numpy path, all its rows, with
    the numpy results (the backend covers complete data)."""
    ref = _model([latent, 8, 4], 2, [0.1, 0.2, 0.05, 0.3])
    m = _model([latent, 8, 4], 2, [0.1, 0.2, 0.05, 0.3], device=device)
    X = ref.sample(60, random_state=0)
    X[:10, 1] = np.nan
    X[10:15, 2:] = np.nan
    assert np.array_equal(ref.score_samples(X), m.score_samples(X))
    assert np.array_equal(ref.impute(X), m.impute(X))
    assert np.array_equal(ref.posterior(X).mean, m.posterior(X).mean)
    kw = dict(latent_dim=latent, hidden_sizes=(4,), max_iter=2, random_state=0, progress=False)
    a, b = ExactDGN(**kw).fit(X), ExactDGN(**kw, device=device).fit(X)
    assert [h["loglik"] for h in a.history_] == [h["loglik"] for h in b.history_]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_read_only_data_on_a_device(device, latent):
    """A read-only array (``np.load(..., mmap_mode="r")``, a frozen buffer) is scored, its
    gradient taken and a model fitted on the device as on the numpy path: torch warned that it
    cannot share a non-writable array (an error where warnings are errors)."""
    ref = _model([latent, 6, 3], 0, 0.1)
    m = _model([latent, 6, 3], 0, 0.1, device=device)
    X = ref.sample(60, random_state=0)
    X.setflags(write=False)
    _close(ref.score_samples(X), m.score_samples(X), 1e-12)
    for a, b in zip(ref.exact_gradient(X), m.exact_gradient(X), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))
    kw = dict(latent_dim=latent, hidden_sizes=(3,), max_iter=1, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = ExactDGN(**kw).fit(X), ExactDGN(**kw, device=device).fit(X)
    np.testing.assert_allclose(
        [h["loglik"] for h in b.history_], [h["loglik"] for h in a.history_], rtol=1e-10
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latent", [1, 2])
def test_pickled_model_leaves_its_device_copies_behind(device, latent):
    """The geometry caches its arrays on the device (``geom.cache[("torch", device)]``); a
    model pickled (joblib, dask, deepcopy) after scoring there carried those tensors, so one
    pickled on a GPU machine could not be loaded where CUDA is absent. They are derived: left
    out of the pickle and rebuilt on first use, with the same results."""
    import io
    import pickle

    class NoTensors(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.Tensor):
                raise AssertionError(f"a {obj.device} tensor was pickled")
            return NotImplemented

    m = _model([latent, 6, 3], 0, 0.1, device=device)
    X = m.sample(30, random_state=0)
    lp = m.score_samples(X)
    assert any(isinstance(k, tuple) and k[0] == "torch" for k in m.geometry_.cache)
    buf = io.BytesIO()
    NoTensors(buf).dump(m)
    m2 = pickle.loads(buf.getvalue())
    assert np.array_equal(m2.score_samples(X), lp)
    assert any(isinstance(k, tuple) and k[0] == "torch" for k in m.geometry_.cache)  # kept


@pytest.mark.parametrize("device", DEVICES)
def test_trained_model_keeps_its_optimiser_state_on_the_host(device):
    """The L-BFGS state kept for a warm start (``_train_state``) is on the CPU whatever the
    training device (a model trained on a GPU pickled with CUDA tensors in it), and a warm
    start from it continues on the device."""
    X = _model([1, 6, 3], 0, 0.1).sample(60, random_state=0)
    kw = dict(latent_dim=1, hidden_sizes=(4,), method="lbfgs", max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = ExactDGN(**kw, progress=False, device=device).fit(X)
        tensors = []

        def walk(o):
            if isinstance(o, torch.Tensor):
                tensors.append(o)
            elif isinstance(o, dict):
                [walk(v) for v in o.values()]
            elif isinstance(o, list | tuple):
                [walk(v) for v in o]

        walk(m._train_state)
        assert tensors and all(t.device.type == "cpu" for t in tensors)
        m.set_params(warm_start=True, max_iter=5).fit(X)
    assert m.n_iter_ == 5
