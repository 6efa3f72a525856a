"""The exact posterior ``p(z | x)``: a mixture of Gaussians truncated to the linear regions.

``p(z | x) = Σ_r w_r(x) N(z; μ_r(x), S_r) 1[z ∈ r] / Φ_r(x)`` with region weights
``w_r(x) = κ_r(x) Φ_r(x) / p(x)``. Shapes follow ``torch.distributions``: ``batch_shape = (N,)``
(one posterior per data point), ``event_shape = (d,)``, and ``sample((S,))`` has shape
``(S, N, d)``.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np
from scipy import sparse
from scipy.special import log_ndtr, ndtri_exp

from .. import gaussian
from .._validation import check_generator
from ..gaussian._rules import normalize_rows, row_norms
from ._geometry import _EPS, LOG_2PI, RegionGeometry
from ._marginal import PairStats

#: d >= 3 sampling: rounds of tilted rejection before the exact sections take the rest, and
#: projected-gradient steps on the tilt's dual (see :func:`_tilt`)
_TILT_ROUNDS = 64
_TILT_STEPS = 50

#: Rows whose log p(x) error bound exceeds this (nats) get a warning with their moments: the
#: regions' weights ``exp(log κ Φ - log p)`` carry that error (10% here)
_WEIGHT_ERROR = 0.1

__all__ = ["ExactPosterior", "log_joint"]


def log_joint(decoder, noise_std: np.ndarray, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """(n,) ``log N(z; 0, I) + log N(x_obs; g_obs(z), diag σ²_obs)`` row by row.

    Parameters
    ----------
    decoder : Decoder
    noise_std : ndarray (D,)
    X : ndarray (n, D)
        NaN marks a missing coordinate (left out of the likelihood).
    Z : ndarray (n, d)
    """
    d = Z.shape[1]
    obs = ~np.isnan(X)
    r = np.where(obs, (X - decoder(Z)) / noise_std, 0.0)
    log_lik = -0.5 * (obs.sum(axis=1) * LOG_2PI + np.einsum("nj,nj->n", r, r)) - (
        obs @ np.log(noise_std)
    )
    return -0.5 * (d * LOG_2PI + np.einsum("nk,nk->n", Z, Z)) + log_lik


class ExactPosterior:
    """Exact posterior of a CPA-decoder Gaussian model for a batch of points.

    Rows of ``X`` with NaN condition on their observed coordinates only (``p(z | x_obs)``).

    Built by :meth:`exactdgn.ExactDGN.posterior`; holds only the point-region pairs that carry
    mass (exact pruning, see :mod:`exactdgn.inference._marginal`).

    Attributes
    ----------
    batch_shape : tuple (N,)
    event_shape : tuple (d,)
    support : str
        ``"real_vector"`` (the constraint of the support, as in ``torch.distributions``).
    """

    support = "real_vector"
    has_rsample = False

    def __init__(
        self,
        X: np.ndarray,
        geom: RegionGeometry,
        stats: PairStats,
        decoder,
        noise_std: np.ndarray,
        log_jacobian=0.0,
    ):
        # its own copies: a caller's later change of X or of the model's decoder does not
        # reach the density, whose weights and normaliser are fixed here
        self._X = np.array(X, dtype=np.float64)
        self._decoder = decoder.copy()
        self._noise_std = np.array(noise_std, dtype=np.float64)
        self._log_jacobian = np.broadcast_to(np.asarray(log_jacobian, float), (len(X),)).copy()
        self._geom = geom
        self._stats = stats  # the pairs' whitened polygons are built on first use (_whitened)
        self._weights_checked = False  # (_moments warns once about rows of uncertain weights)
        # a model's preprocessing (``mean_``, ``scale_``): output moments in the data's units
        # (ExactDGN.posterior sets it; None: the decoder's units)
        self._output_units = None
        self.batch_shape = (X.shape[0],)
        self.event_shape = (geom.latent_dim,)

    # ------------------------------------------------------------------ weights
    @property
    def log_normalizer(self) -> np.ndarray:
        """(N,) exact ``log p(x)`` (of the data as given: with a model's ``preprocessing_``,
        the density in the data's units, as ``score_samples``)."""
        return self._stats.log_px + self._log_jacobian

    @property
    def region_probs(self) -> sparse.csr_matrix:
        """(N, R) sparse matrix of posterior region probabilities (pruned entries are 0)."""
        st = self._stats
        w = np.exp(st.log_weight)
        return sparse.csr_matrix(
            (w, (st.point, st.region)), shape=(self.batch_shape[0], self._geom.n_regions)
        )

    @property
    def pairs(self) -> PairStats:
        """The underlying point-region pairs."""
        return self._stats

    def _whitened(self):
        """``(normals, L, μ, log|P|, offsets)`` of every pair (whitened polygons, built and
        kept on first use: not needed by the weights, nor by the moments when the pairs came
        with them)."""
        st = self._stats
        st.whitened_offsets(self._geom)
        return (*st.geometry(self._geom), st.offsets)

    # ------------------------------------------------------------------ moments
    def _moments(self):
        """The pairs' ``E[z | x, r]`` (P, d) and ``Cov[z | x, r]`` (P, d, d).

        Pairs of zero weight (``exp(log_weight)`` underflows: they enter no sum) get zero
        moments and are not integrated: their polygon can be a sliver the kernel finds of
        measure zero (NaN moments), and ``0 * NaN`` would make the whole row NaN.

        In d = 2 a pair whose polygon the per-pair integrator cannot resolve (a small polygon
        ~1e8 whitened units out, log mass ~ -6e15: its pieces' logs are rounded to ~1 nat and
        cancel) is integrated again from the region's tabulated polygon, as its weight was
        (:func:`~exactdgn.gaussian.truncated_moments_2d_shifted`); rows still without finite
        moments are NaN, with a warning that names them.
        """
        st = self._stats
        if not self._weights_checked:
            self._weights_checked = True
            err = np.asarray(st.log_px_error)
            vague = np.flatnonzero(err > _WEIGHT_ERROR)
            if vague.size:
                warnings.warn(
                    f"the posterior moments of {vague.size} rows (first {vague[:5].tolist()}) "
                    f"mix their regions with weights known only to ~{float(err[vague].max()):.3g}"
                    " nats (the error bound of their log p(x): float64 rounds a log-likelihood "
                    "to ~1e-16 of its size, which matters ~1e6 noise scales from the model and "
                    "beyond)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if st.mean is None:
            normals, Lr, mu, _, offsets = self._whitened()
            live = np.flatnonzero(np.exp(st.log_weight) > 0)
            d = self.event_shape[0]
            mean, cov = np.zeros((len(st.point), d)), np.zeros((len(st.point), d, d))
            tm = gaussian.truncated_moments(
                normals[live], offsets[live], log_weight=st.log_weight[live]
            )
            tm_mean, tm_cov = tm.mean, tm.cov
            lost = ~(np.isfinite(tm_mean).all(axis=1) & np.isfinite(tm_cov).all(axis=(1, 2)))
            tab = self._geom.polygons
            if lost.any() and tab is not None and st.whitened_mean is not None:
                j = live[lost]
                again = gaussian.truncated_moments_2d_shifted(
                    tab, st.region[j], st.whitened_mean[j]
                )
                tm_mean[lost], tm_cov[lost] = again.mean, again.cov
            mean[live] = mu[live] + np.einsum("pij,pj->pi", Lr[live], tm_mean)
            cov[live] = Lr[live] @ tm_cov @ np.swapaxes(Lr[live], 1, 2)
            rows = np.unique(st.point[live[~np.isfinite(mean[live]).all(axis=1)]])
            if rows.size:
                warnings.warn(
                    f"the posterior moments of {rows.size} rows (first {rows[:5].tolist()}) are "
                    "not finite: their regions' Gaussian masses are beyond float64 there (points "
                    "~1e8 noise scales from the model in d = 2, ~1e11 in d >= 3; see "
                    "score_samples(X, return_error=True))",
                    RuntimeWarning,
                    stacklevel=3,
                )
            st.mean, st.cov = mean, cov
        return st.mean, st.cov

    @property
    def mean(self) -> np.ndarray:
        """(N, d) exact posterior mean ``E[z | x]``."""
        m, _ = self._moments()
        st = self._stats
        w = np.exp(st.log_weight)
        return _sum_by_point(st.point, w[:, None] * m, self.batch_shape[0])

    @property
    def covariance_matrix(self) -> np.ndarray:
        """(N, d, d) exact posterior covariance (law of total covariance, centred form)."""
        m, c = self._moments()
        st = self._stats
        w = np.exp(st.log_weight)
        mean = self.mean
        dm = m - mean[st.point]
        term = c + dm[:, :, None] * dm[:, None, :]
        out = _sum_by_point(st.point, w[:, None, None] * term, self.batch_shape[0])
        return 0.5 * (out + np.swapaxes(out, 1, 2))

    @property
    def variance(self) -> np.ndarray:
        """(N, d) marginal posterior variances."""
        return np.diagonal(self.covariance_matrix, axis1=1, axis2=2).copy()

    @property
    def stddev(self) -> np.ndarray:
        """(N, d) marginal posterior standard deviations (``torch.distributions``' name)."""
        return np.sqrt(self.variance)

    # Bytes of each (Q R x columns) right-hand block of the output moments' products (their
    # (points x Q R) coefficient blocks: ``_ROW_BYTES``).
    _OUT_BYTES = 64 * 2**20

    def output_mean(self) -> np.ndarray:
        """Exact ``E[g(z) | x]`` per output, (N, D) (:meth:`output_moments` without the
        second moments: ``d + 1`` region-wise products instead of ``(d + 1)(d + 4)/2``)."""
        self._moments()
        mean, _ = _output_moments(self._stats, self._geom, self.batch_shape[0], self._OUT_BYTES)
        return self._in_output_units(mean)

    def output_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``E[g(z) | x]`` and ``Var[g(z) | x]`` per output: (N, D) each.

        On pair ``(n, r)`` the decoder is affine, ``g = A_r z + b_r``, so with the truncated
        moments ``m_nr``, ``V_nr`` of the pair and its weight ``w_nr``:
        ``E[g_j] = Σ_r w_nr (a_rj·m_nr + b_rj)`` and
        ``E[(g_j - c_j)²] = Σ_r w_nr [a_rjᵀ (V_nr + m_nr m_nrᵀ) a_rj + 2 b'_rj a_rj·m_nr + b'²_rj]``
        (``b' = b - c``, ``c`` the mean of the ``b_r``), ``Var[g_j] = E[(g_j - c_j)²] -
        (E[g_j] - c_j)²``; from :meth:`ExactDGN.posterior` of a model with a
        ``preprocessing_``, in the data's units (``scale_ E[g] + mean_``, ``scale_² Var``,
        and the noise variance there is ``scale_² σ²``). For a row with NaN these are the
        conditional moments given the observed coordinates, hence
        ``E[x_mis | x_obs] = E[g_mis]`` and ``Var[x_mis | x_obs] = Var[g_mis] + σ²_mis``.

        Each sum over regions is a product of a (points x regions) matrix of pair
        coefficients (``w``, ``w m_k``, ...; zero where a pair is pruned) with a (regions x D)
        matrix (``b'``, ``a_k``, ``a_k a_l``, ...): ``(d + 1)(d + 4)/2`` GEMMs in blocks of
        :attr:`_OUT_BYTES`, not a scatter of (pairs x D) arrays. The variance's one
        subtraction rounds to ``~ε E[(g_j - c_j)²]`` (absolute), clipped at 0; against the
        returned ``Var[x_mis | x_obs]`` that is at most ``ε (g_j - c_j)² / σ_j²`` relative over
        the posterior's support (1e-14 for outputs within 10 σ of ``c``).
        """
        self._moments()
        mean, var = _output_moments(
            self._stats, self._geom, self.batch_shape[0], self._OUT_BYTES, var=True
        )
        pre = self._output_units
        return self._in_output_units(mean), (var if pre is None else var * pre.scale_**2)

    def _in_output_units(self, mean: np.ndarray) -> np.ndarray:
        """Output means in the data's units (a model's standardization undone: ``ExactDGN``'s
        posterior of a standardized model gave ``E[g]`` in standardized units, where its
        ``log_normalizer``, ``impute`` and ``sample`` are in the data's)."""
        pre = self._output_units
        return mean if pre is None else mean * pre.scale_ + pre.mean_

    # ------------------------------------------------------------------ density
    def log_prob(self, z) -> np.ndarray:
        """Exact ``log p(z | x)``.

        Parameters
        ----------
        z : array_like of shape (..., N, d)
            Sample shape followed by the batch and event shapes. As in ``torch.distributions``
            the last axis must be the event axis ``d`` and the axes before it broadcast with the
            batch shape ``(N,)``: a single point of shape ``(d,)`` is scored under each of the
            ``N`` posteriors, ``(S, 1, d)`` gives ``(S, N)``.

        Returns
        -------
        ndarray of shape ``broadcast(z.shape[:-1], (N,))``, e.g. ``(..., N)``
        """
        Z = np.asarray(z, dtype=np.float64)
        N, d = self.batch_shape[0], self.event_shape[0]
        try:
            if Z.ndim == 0 or Z.shape[-1] != d:
                raise ValueError
            batch = np.broadcast_shapes(Z.shape[:-1], (N,))
        except ValueError:
            raise ValueError(
                f"z must have shape (..., {N}, {d}): sample shape, then the batch shape ({N},) "
                f"(or 1, broadcast), then the event shape ({d},); got {Z.shape}"
            ) from None
        bad = ~np.isfinite(Z)
        if bad.any():
            raise ValueError(
                f"z contains {int(bad.sum())} NaN or infinite values (the first at index "
                f"{tuple(int(i) for i in np.argwhere(bad)[0])} of z's shape {Z.shape}): "
                "give finite latent points"
            )
        Z = np.broadcast_to(Z, (*batch, d))
        flat = Z.reshape(-1, N, d)
        S, D = flat.shape[0], self._X.shape[1]
        out = np.empty((S, N))
        step = max(1, (1 << 22) // max(N * D, 1))  # sample slices per chunk (bounded memory)
        for s in range(0, S, step):
            k = min(step, S - s)
            Xr = np.broadcast_to(self._X, (k, N, D)).reshape(k * N, D)
            lj = log_joint(self._decoder, self._noise_std, Xr, flat[s : s + k].reshape(k * N, d))
            out[s : s + k] = lj.reshape(k, N) - self._stats.log_px  # (the decoder's units)
        return out.reshape(batch)

    def prob(self, z) -> np.ndarray:
        return np.exp(self.log_prob(z))

    # ------------------------------------------------------------------ sampling
    def sample(self, sample_shape=(), random_state=None) -> np.ndarray:
        """Exact samples of ``z | x``: shape ``(*sample_shape, N, d)``.

        A region is drawn by its posterior weight, then the truncated Gaussian is sampled
        exactly: inverse CDF in 1-D; in 2-D the whitened first coordinate by numerically
        inverting its exact marginal CDF (bisection on the exact polygon mass, to 1e-12), then the
        second from its exact 1-D truncated conditional. For d >= 3 samples come from rejection
        with the Gaussian tilted towards the region (exact, :func:`_tilt`), and where that is
        too rare (regions of tiny mass under their Gaussian), from the exact marginal CDF of
        the first coordinate and then of each section's, as in 2-D (milliseconds a draw in
        d = 3, seconds in d = 4).

        Parameters
        ----------
        sample_shape : int or tuple of ints
            Leading shape of the draws (``()``: one draw per point).
        random_state : int, Generator or None
            Seed or generator (``numpy.random.default_rng``).
        """
        shape = _sample_shape(sample_shape)
        rng = check_generator(random_state)
        S = int(np.prod(shape)) if shape else 1
        N, d = self.batch_shape[0], self.event_shape[0]
        st = self._stats
        # choose a pair for each (sample, point): inverse CDF of the per-point weights
        w = np.exp(st.log_weight)
        order = np.argsort(st.point, kind="stable")
        pts, w = st.point[order], w[order]
        cw = np.cumsum(w)
        starts = np.searchsorted(pts, np.arange(N))
        ends = np.searchsorted(pts, np.arange(N), side="right")
        base = np.where(starts > 0, cw[np.maximum(starts - 1, 0)], 0.0)
        tot = cw[ends - 1] - base
        uu = rng.random((S, N)) * tot[None] + base[None]
        idx = np.searchsorted(cw, uu, side="right")
        idx = np.clip(idx, starts[None], ends[None] - 1)
        pair = order[idx.ravel()]
        normals, L, mu, _, offsets = self._whitened()
        u = sample_truncated_standard(normals[pair], offsets[pair], rng)
        z = mu[pair] + np.einsum("pij,pj->pi", L[pair], u)
        return z.reshape(*shape, N, d)

    # ------------------------------------------------------------------ mode
    @property
    def mode(self) -> np.ndarray:
        """(N, d) exact MAP ``argmax_z p(z | x)``: the best of the per-region QP optima (a
        property, as ``torch.distributions``' ``mode``; computed on each access).

        In whitened coordinates each region's problem is the projection of the origin onto the
        polyhedron ``{u : n_i . u <= c_i}``; the objective to compare across regions is
        ``log κ_r(x) + log N(u*; 0, I) - ½ log|S_r|`` (the joint density at ``z*``).
        """
        st = self._stats
        normals, L, mu, log_det_P, offsets = self._whitened()
        u = project_origin(normals, offsets)
        z = mu + np.einsum("pij,pj->pi", L, u)
        d = self.event_shape[0]
        lm = gaussian.log_mass(normals, offsets)
        with np.errstate(invalid="ignore"):
            lk = st.log_joint - lm
        score = lk - 0.5 * np.einsum("pi,pi->p", u, u) + 0.5 * log_det_P
        score = score - 0.5 * d * LOG_2PI
        # a pair whose polygon the kernel finds of measure zero (a sliver) or of zero joint
        # mass holds no mode: its score would be NaN (-inf - -inf) and poison the maximum
        score = np.where(np.isfinite(lm) & np.isfinite(st.log_joint), score, -np.inf)
        N = self.batch_shape[0]
        best = np.full(N, -np.inf)
        np.maximum.at(best, st.point, score)
        is_best = score >= best[st.point]
        out = np.zeros((N, d))
        out[st.point[is_best]] = z[is_best]
        return out


# ---------------------------------------------------------------------- helpers
def _sample_shape(sample_shape) -> tuple[int, ...]:
    """``sample_shape`` (an int or a sequence of ints, numpy integers included) as a tuple."""
    try:
        shape = (operator.index(sample_shape),)
    except TypeError:
        try:
            shape = tuple(operator.index(s) for s in sample_shape)
        except TypeError:
            raise TypeError(
                f"sample_shape must be an int or a tuple of ints, got {sample_shape!r}"
            ) from None
    if any(s < 0 for s in shape):
        raise ValueError(f"sample_shape must not be negative, got {shape}")
    return shape


def _interval(normals: np.ndarray, offsets: np.ndarray, direction: np.ndarray, base: np.ndarray):
    """Interval of t with base + t*direction inside {n . u <= c} (per row)."""
    a = np.einsum("pfk,pk->pf", normals, direction)
    rhs = offsets - np.einsum("pfk,pk->pf", normals, base)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rhs / a
    hi = np.where(a > 1e-300, t, np.inf).min(axis=1, initial=np.inf)
    lo = np.where(a < -1e-300, t, -np.inf).max(axis=1, initial=-np.inf)
    return lo, hi


def _sample_interval(lo: np.ndarray, hi: np.ndarray, rng) -> np.ndarray:
    """Exact inverse-CDF samples of N(0, 1) truncated to [lo, hi], stable in both tails."""
    q = rng.random(lo.shape)
    flip = lo > 0  # work in the lower tail by symmetry
    a = np.where(flip, -hi, lo)
    b = np.where(flip, -lo, hi)
    la, lb = log_ndtr(a), log_ndtr(b)
    # log(Φ(a) + q (Φ(b) - Φ(a))) in log space
    with np.errstate(divide="ignore"):
        diff = lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))
    lp = np.logaddexp(la, np.log(q) + diff)
    x = ndtri_exp(lp)
    x = np.clip(x, a, b)
    return np.where(flip, -x, x)


def sample_truncated_standard(normals: np.ndarray, offsets: np.ndarray, rng) -> np.ndarray:
    """One exact sample of N(0, I_d) truncated to ``{u : n_i . u <= c_i}`` per row.

    Parameters
    ----------
    normals : (P, F, d), offsets : (P, F), rng : numpy Generator

    Returns
    -------
    (P, d)
    """
    P, _F, d = normals.shape
    if d == 1:
        lo, hi = _interval(normals, offsets, np.ones((P, 1)), np.zeros((P, 1)))
        return _sample_interval(lo, hi, rng)[:, None]
    if d == 2:
        return _sample_polygon(normals, offsets, rng)
    nu, L = _tilt(normals, offsets)
    out, todo = _sample_tilted(normals, offsets, nu, L, rng)
    if todo.size:
        # the tilt's bound on the distance seeds the sections' bracket
        rho = np.sqrt(np.maximum(2.0 * L[todo] - np.einsum("pk,pk->p", nu[todo], nu[todo]), 0.0))
        out[todo] = _sample_sections(normals[todo], offsets[todo], rng, rho)
    return out


def _sample_polygon(normals, offsets, rng):
    P = normals.shape[0]
    e1 = np.array([1.0, 0.0])
    total = gaussian.log_mass(normals, offsets)
    # All but e^-50 of the truncated mass lies within |u| <= rho + 10, rho = distance of the
    # polygon from the origin (density ratio exp(-rho s - s^2/2) at distance rho + s).
    rho = np.linalg.norm(project_origin(normals, offsets), axis=1)
    a = -(rho + 10.0)
    b = rho + 10.0
    target = np.log(rng.random(P)) + total  # log(q * mass): invert the marginal CDF of u1
    extra_n = np.concatenate([normals, np.broadcast_to(e1, (P, 1, 2))], axis=1)
    # to 1e-9 of the truncated density's width along u1 (~1 / rho far out; the old 1e-12 of
    # |a| ~ rho resolved a row 1e7 noise sds out only to ~13 widths: the draws' spread x2.2),
    # or to float64's resolution at u1 ~ rho where that is coarser (warned by the caller)
    tol = np.maximum(1e-9 / np.maximum(1.0, rho), 8.0 * _EPS * np.abs(a))
    u1 = _invert_cdf(
        lambda m: gaussian.log_mass(extra_n, np.concatenate([offsets, m[:, None]], axis=1)),
        a,
        b,
        target,
        tol,
    )
    coarse = tol * np.maximum(1.0, rho) > 0.05  # resolved to more than 5% of the width
    if coarse.any():
        warnings.warn(
            f"{int(coarse.sum())} posterior draws are resolved only to "
            f"{float(np.max(tol * np.maximum(1.0, rho))):.3g} of their spread: their region "
            f"lies {float(rho.max()):.3g} posterior sds from the unconstrained mean (a row "
            "beyond ~1e7 noise sds at a region's corner), where float64 cannot place the "
            "draws finer; the posterior's mean and covariance are exact, these draws are not",
            RuntimeWarning,
            stacklevel=3,
        )
    base = np.stack([u1, np.zeros(P)], axis=1)
    lo2, hi2 = _interval(normals, offsets, np.tile([0.0, 1.0], (P, 1)), base)
    hi2 = np.maximum(lo2, hi2)
    u2 = _sample_interval(lo2, hi2, rng)
    return np.stack([u1, u2], axis=1)


def _invert_cdf(log_cdf, a: np.ndarray, b: np.ndarray, target: np.ndarray, tol=None):
    """(P,) the points ``t`` in ``[a, b]`` where the log CDFs ``log_cdf(t)`` (P,) -> (P,) reach
    ``target``: bisection of every row until all are within ``tol`` (P,) (default 1e-12,
    relative beyond 1)."""
    for _ in range(200):
        m = 0.5 * (a + b)
        below = log_cdf(m) < target
        a = np.where(below, m, a)
        b = np.where(below, b, m)
        t = 1e-12 * np.maximum(1.0, np.abs(a)) if tol is None else tol
        if np.all(b - a <= t):
            break
    return 0.5 * (a + b)


def _tilt(normals: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nu, L)``, (P, d) and (P,): a tilt for rejection sampling of ``N(0, I)`` on
    ``P = {u : n_i . u <= c_i}``.

    For any ``lam >= 0`` on the finite rows, ``nu = -sum_i lam_i n_i`` has ``nu . u >= L =
    -sum_i lam_i c_i`` on ``P``; so ``u ~ N(nu, I)``, kept where ``u`` is in ``P`` with
    probability ``exp(L - nu . u)`` (at most 1 there), is an exact draw of the truncated
    ``N(0, I)``, accepted with probability ``m_P exp(L - |nu|^2 / 2)``. That exponent is the dual
    of the origin's projection onto ``P`` (its maximum is ``rho^2 / 2``, ``rho`` the distance),
    so the acceptance of a half-space ``rho`` out is ``~1 / (rho sqrt(2 pi))`` instead of
    ``Q(rho)``. ``lam``: the most violated row alone (``c^2 / 2``), then projected-gradient
    steps on the dual, keeping the best; any ``lam`` is valid, its quality only sets the rate.
    """
    P, F, d = normals.shape
    nu, L = np.zeros((P, d)), np.zeros(P)
    fin = np.isfinite(offsets) & (np.abs(normals).max(axis=2, initial=0.0) > 0)
    # regions holding the origin keep lam = 0 (the steps cannot leave it: c >= 0 there)
    out = np.flatnonzero((np.where(fin, offsets, 0.0) < 0).any(axis=1))
    if out.size == 0:
        return nu, L
    n = np.where(fin[out, :, None], normals[out], 0.0)
    c = np.where(fin[out], offsets[out], 0.0)
    P = out.size
    rows = np.arange(P)
    lam = np.zeros((P, F))
    if F:
        i = np.argmin(c, axis=1)
        lam[rows, i] = np.maximum(-c[rows, i], 0.0)
    G = n @ np.swapaxes(n, 1, 2)  # (P, F, F)
    step = 1.0 / np.maximum(np.trace(G, axis1=1, axis2=2), 1e-300)  # trace >= ||G||_2

    def value(lm):
        nu = np.einsum("pf,pfk->pk", lm, n)
        return -np.einsum("pf,pf->p", lm, c) - 0.5 * np.einsum("pk,pk->p", nu, nu)

    best, best_v = lam, value(lam)
    for _ in range(_TILT_STEPS):
        lam = np.maximum(lam - step[:, None] * (c + np.einsum("pfg,pg->pf", G, lam)), 0.0)
        v = value(lam)
        better = v > best_v
        best = np.where(better[:, None], lam, best)
        best_v = np.where(better, v, best_v)
    nu[out] = -np.einsum("pf,pfk->pk", best, n)
    L[out] = -np.einsum("pf,pf->p", best, c)
    return nu, L


def _sample_tilted(normals, offsets, nu, L, rng, rounds: int | None = None):
    """Exact draws by rejection with the tilt ``(nu, L)`` of :func:`_tilt`, ``rounds`` rounds at
    most: (P, d) draws and the indices still without one (NaN rows)."""
    P, _F, d = normals.shape
    out = np.full((P, d), np.nan)
    todo = np.arange(P)
    for _ in range(_TILT_ROUNDS if rounds is None else rounds):
        u = nu[todo] + rng.standard_normal((todo.size, d))
        inside = np.all(np.einsum("pfk,pk->pf", normals[todo], u) <= offsets[todo], axis=1)
        with np.errstate(over="ignore"):
            keep = np.log(rng.random(todo.size)) <= L[todo] - np.einsum("pk,pk->p", nu[todo], u)
        ok = inside & keep
        out[todo[ok]] = u[ok]
        todo = todo[~ok]
        if todo.size == 0:
            break
    return out, todo


def _sample_sections(normals, offsets, rng, rho=None):
    """Exact draws for ``d >= 3`` where rejection is too rare (regions of tiny mass under their
    Gaussian: small, or far out in a corner): ``u_1`` by inverting its marginal CDF (bisection
    on the exact mass of ``P`` cut at ``u_1 <= t``, to 1e-12), then the ``(d-1)``-dimensional
    section at ``u_1`` the same way, down to :func:`_sample_polygon`. About 40 masses of each
    dimension per draw (d = 3: milliseconds; d = 4: seconds). ``rho`` (P,), optional: a lower
    bound on each region's distance from the mean (else the tilt's), where the search for a
    bracket starts."""
    P, _F, d = normals.shape
    if d == 2:
        return _sample_polygon(normals, offsets, rng)
    total = gaussian.log_mass(normals, offsets)
    e1 = np.zeros(d)
    e1[0] = 1.0
    cut_n = np.concatenate([normals, np.broadcast_to(e1, (P, 1, d))], axis=1)
    low_n = np.concatenate([normals, np.broadcast_to(-e1, (P, 1, d))], axis=1)

    def cut(idx, t, side):  # log mass of P with u_1 <= t (side +1) or u_1 >= t (side -1)
        nn = cut_n[idx] if side > 0 else low_n[idx]
        return gaussian.log_mass(nn, np.concatenate([offsets[idx], side * t[:, None]], axis=1))

    # a bracket holding all but e^-60 of the mass: from a bound on the distance, widened
    # until both outer pieces are below that
    if rho is None:
        nu, L = _tilt(normals, offsets)
        rho = np.sqrt(np.maximum(2.0 * L - np.einsum("pk,pk->p", nu, nu), 0.0))
    R = rho + 10.0
    wide = np.arange(P)
    for _ in range(60):
        out_lo = cut(wide, -R[wide], 1)
        out_hi = cut(wide, R[wide], -1)
        far = np.maximum(out_lo, out_hi) > total[wide] - 60.0
        if not far.any():
            break
        wide = wide[far]
        R[wide] *= 2.0
    target = np.log(rng.random(P)) + total  # log(q * mass): the marginal CDF of u_1 at u_1
    u1 = _invert_cdf(lambda t: cut(np.arange(P), t, 1), -R, R, target)
    # the section at u_1: rows n_i[1:] . v <= c_i - n_i[0] u_1, as unit rows (the 2-D sampler's
    # projection takes unit rows); rows along e_1 alone, satisfied at u_1, become padding
    n_rest = normals[..., 1:]
    with np.errstate(invalid="ignore"):
        c_rest = np.where(np.isposinf(offsets), np.inf, offsets - normals[..., 0] * u1[:, None])
    n_rest, c_rest, _, _ = normalize_rows(n_rest, c_rest, row_norms(n_rest))
    v = _sample_sections(n_rest, c_rest, rng)
    return np.concatenate([u1[:, None], v], axis=1)


def project_origin(normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(P, d) Euclidean projection of the origin onto ``{u : n_i . u <= c_i}`` (exact for d<=2)."""
    P, F, d = normals.shape
    inside = np.all(offsets >= 0, axis=1)
    out = np.zeros((P, d))
    if d == 1:
        lo, hi = _interval(normals, offsets, np.ones((P, 1)), np.zeros((P, 1)))
        return np.clip(0.0, lo, hi)[:, None]
    if d == 2:
        # candidates: foot of each facet line clipped to its edge; the feasible one of least norm
        tau = np.stack([-normals[..., 1], normals[..., 0]], axis=-1)  # (P, F, 2)
        best = np.full(P, np.inf)
        for f in range(F):
            n_f, c_f, t_f = normals[:, f], offsets[:, f], tau[:, f]
            valid = np.isfinite(c_f)
            base = np.where(valid, c_f, 0.0)[:, None] * n_f
            lo, hi = _interval(normals, offsets, t_f, base)
            t = np.clip(0.0, lo, hi)
            pt = base + t[:, None] * t_f
            feas = valid & np.all(
                np.einsum("pgk,pk->pg", normals, pt) <= offsets + 1e-9 * (1 + np.abs(offsets)),
                axis=1,
            )
            nrm = np.einsum("pk,pk->p", pt, pt)
            better = feas & (nrm < best) & ~inside
            out[better] = pt[better]
            best = np.where(better, nrm, best)
        return out
    from scipy.optimize import minimize

    for i in np.nonzero(~inside)[0]:  # general d: small QPs (not a hot path)
        ok = np.isfinite(offsets[i])
        A, c = normals[i][ok], offsets[i][ok]
        res = minimize(
            lambda u: 0.5 * u @ u,
            np.zeros(d),
            jac=lambda u: u,
            constraints=[
                {"type": "ineq", "fun": lambda u, A=A, c=c: c - A @ u, "jac": lambda u, A=A: -A}
            ],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        out[i] = res.x
    return out


_ROW_BYTES = 32 * 2**20


def _sum_by_point(point: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """(n, ...) sums of the pairs' ``values`` (P, ...) by point (one ``bincount`` per
    trailing entry: ``np.add.at`` is an order of magnitude slower)."""
    flat = values.reshape(len(point), -1)
    out = np.empty((n, flat.shape[1]))
    for k in range(flat.shape[1]):
        out[:, k] = np.bincount(point, weights=flat[:, k], minlength=n)
    return out.reshape(n, *values.shape[1:])


def _output_moments(
    stats: PairStats, geom: RegionGeometry, n: int, max_bytes: int, *, var: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """``E[g(z) | x]`` (n, D) and, with ``var``, ``Var[g(z) | x]`` (else None) of
    :meth:`ExactPosterior.output_moments` (formulas there), for pairs with moments."""
    A, R = geom.A, geom.n_regions
    D, d = A.shape[1], A.shape[2]
    bc = geom.b - geom.center  # (R, D)
    w = np.exp(stats.log_weight)
    m = stats.mean
    # pair coefficients (P, Q) and the region rows they multiply, (Q, R, columns) on demand
    coef = [w] + [w * m[:, k] for k in range(d)]

    def rows_mean(cols):
        return [bc[:, cols]] + [A[:, cols, k] for k in range(d)]

    coef2 = rows2 = None
    if var:
        iu, ju = np.triu_indices(d)
        M2 = stats.cov + m[:, :, None] * m[:, None, :]
        coef2 = [w] + [2.0 * c for c in coef[1:]]
        coef2 += [w * M2[:, k, l] * (1.0 if k == l else 2.0) for k, l in zip(iu, ju, strict=True)]

        def rows2(cols):
            ak = [A[:, cols, k] for k in range(d)]
            b2 = bc[:, cols]
            return (
                [b2 * b2]
                + [b2 * a for a in ak]
                + [ak[k] * ak[l] for k, l in zip(iu, ju, strict=True)]
            )

    mean = np.zeros((n, D))
    second = np.zeros((n, D)) if var else None
    order = np.argsort(stats.point, kind="stable")
    pts, regs = stats.point[order], stats.region[order]
    Q = len(coef2) if var else len(coef)
    # rows per product: a coefficient block of at most _ROW_BYTES (allocated once, reused: only
    # its pairs' entries are written, then cleared), columns: a right-hand block of max_bytes
    n_rows = max(1, min(n, _ROW_BYTES // (8 * Q * max(R, 1))))
    n_cols = max(1, min(D, max_bytes // (8 * Q * max(R, 1))))
    cuts = np.searchsorted(pts, np.arange(0, n + n_rows, n_rows))
    buf = np.zeros(n_rows * Q * R)
    for j in range(0, D, n_cols):
        cols = slice(j, min(D, j + n_cols))
        jobs = [(coef, np.concatenate(rows_mean(cols)), mean)]
        if var:
            jobs.append((coef2, np.concatenate(rows2(cols)), second))
        for c, rhs, out in jobs:
            for i, s in enumerate(range(0, n, n_rows)):
                e = min(n, s + n_rows)
                sel = order[cuts[i] : cuts[i + 1]]
                C = buf[: (e - s) * len(c) * R].reshape(e - s, len(c) * R)
                p = pts[cuts[i] : cuts[i + 1]] - s
                r = regs[cuts[i] : cuts[i + 1]]
                for q, cq in enumerate(c):
                    C[p, q * R + r] = cq[sel]
                out[s:e, cols] = C @ rhs  # (a strided out= would leave BLAS)
                for q in range(len(c)):
                    C[p, q * R + r] = 0.0
    if var:
        second -= np.square(mean)
        np.maximum(second, 0.0, out=second)
    mean += geom.center
    bad = _ill_conditioned(stats, geom, n)  # both methods: the same means
    if bad.any():
        mean[bad], v = _centred_moments(stats, geom, bad)
        if var:
            second[bad] = v
    return mean, second


def _ill_conditioned(stats: PairStats, geom: RegionGeometry, n: int) -> np.ndarray:
    """(n,) rows whose variance from :func:`_output_moments`' subtraction may be off by more
    than ``1e-8 σ_j²`` (absolute) in some column: :func:`_centred_moments` recomputes them.

    The subtraction rounds to at most ``γ B_n`` with ``B_n = Σ_r w_nr [(β_r + Σ_k α_rk
    |m_k|)² + Σ_kl α_rk α_rl |V_kl|]`` (``β_r = max_j |b'_rj|``, ``α_rk = max_j |a_rjk|``: the
    sum of the terms' magnitudes, every column) and ``γ = 4 ε (Q P_n + 4)`` (``P_n`` pairs of
    the row, ``Q`` products). Rows with a far-out posterior (``|g(z) - c| >> σ``, e.g. 1e4 σ
    outliers) fail it; rows inside the data's range pass.
    """
    A, bc = geom.A, geom.b - geom.center
    d = A.shape[2]
    beta = np.abs(bc).max(axis=1)
    alpha = np.abs(A).max(axis=1)  # (R, d)
    r, m, V = stats.region, stats.mean, stats.cov
    a = alpha[r]
    lin = beta[r] + np.einsum("pk,pk->p", a, np.abs(m))
    u = lin * lin + np.einsum("pk,pkl,pl->p", a, np.abs(V), a)
    w = np.exp(stats.log_weight)
    B = np.bincount(stats.point, weights=w * u, minlength=n)
    Q = (d + 1) * (d + 2) // 2
    gamma = 4.0 * np.finfo(float).eps * (Q * np.bincount(stats.point, minlength=n) + 4)
    floor = 1e-8 * np.min(1.0 / geom.inv_var)
    return gamma * B > floor


def _centred_moments(stats: PairStats, geom: RegionGeometry, rows: np.ndarray):
    """``E[g | x]`` and ``Var[g | x]`` (k, D) of the flagged ``rows`` (bool (n,)) pair by
    pair, centred: ``Σ_r w_nr [a_rjᵀ V_nr a_rj + (a_rj·m_nr + b_rj - E[g_j])²]`` (no
    cancellation beyond that of ``a_rj·m_nr + b_rj`` itself)."""
    idx = np.flatnonzero(rows)
    local = np.full(rows.shape[0], -1)
    local[idx] = np.arange(idx.size)
    sel = np.flatnonzero(rows[stats.point])
    p, r = local[stats.point[sel]], stats.region[sel]
    w = np.exp(stats.log_weight[sel])
    m, V = stats.mean[sel], stats.cov[sel]
    A = geom.A[r]  # (P, D, d): the flagged rows' pairs only
    y = geom.b[r] + np.einsum("pjk,pk->pj", A, m)
    mean = _sum_by_point(p, w[:, None] * y, idx.size)
    y -= mean[p]
    q = np.square(y) + np.einsum("pjk,pkl,pjl->pj", A, V, A)
    return mean, _sum_by_point(p, w[:, None] * q, idx.size)
