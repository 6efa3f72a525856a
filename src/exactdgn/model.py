"""``ExactDGN``: a deep generative network with a CPA decoder and exact inference.

Model: ``z ~ N(0, I_d)``, ``x = g(z) + ε`` with ``ε ~ N(0, diag(σ_j²))`` (isotropic: all ``σ_j``
equal). Every quantity below is exact (closed forms over the linear regions of ``g``), except
for ``latent_dim >= 3`` where the Gaussian masses of the regions come with error estimates.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning

from . import gaussian
from ._validation import check_array, check_positive
from .decoder import Decoder
from .em._gradient import exact_gradient, remote_surrogate, surrogate_objective
from .em._init import initialize
from .em._missing import missing_region_stats
from .em._steps import m_step, region_stats
from .inference._geometry import LOG_2PI, RegionGeometry, region_geometry
from .inference._marginal import PairStats, marginal_pairs
from .inference._missing import check_missing, observed_pairs
from .inference._posterior import ExactPosterior
from .io import ModelFileError, decoder_from_arrays, decoder_to_arrays, read_npz, write_npz_atomic
from .outliers import TypicalityResult, contamination_offset, typicality_test
from .partition import Partition, PartitionTooLargeError, partition

__all__ = ["ConvergenceWarning", "ExactDGN", "NotFittedError"]

logger = logging.getLogger(__name__)


class NotFittedError(ValueError, AttributeError):
    """The model has no decoder yet: call ``fit`` or build it with ``from_decoder``."""


class ExactDGN(DensityMixin, BaseEstimator):
    """Deep generative network with a piecewise-affine decoder, exact likelihood and posterior.

    Parameters
    ----------
    latent_dim : int
    hidden_sizes : tuple of int
    activation : {"relu", "leaky_relu", "prelu", "abs"}
    negative_slope : float
    noise : {"isotropic", "diagonal"}
    method : {"em", "gradient", "lbfgs"}
    max_iter, tol, n_init, init, min_noise_std, weight_decay, random_state, warm_start,
    verbose, progress :
        Training options (see ``fit``).
    prune_nats : float
        Exact pruning margin: skipped point-region pairs contribute less than
        ``exp(-prune_nats)`` relative to ``p(x)`` in total.
    chunk_bytes : int
        Memory bound of the (points x regions) work arrays; larger inputs are chunked.
    max_backtrack : int
        Halvings of a rejected M-step before the exact-gradient fallback step.
    overrelax : float
        Largest over-relaxation factor of the all-layer M-step (adaptive: doubled after each
        accepted over-relaxed step, reset to 1 on a rejected one; ``1`` disables it). Layer-wise
        EM on a CPA decoder converges slowly (the hidden layers' updates are small when the
        patterns are held fixed); over-relaxation typically cuts the iterations several-fold.
        Steps are accepted only if the exact likelihood does not drop.
    contamination : float in (0, 0.5] or None
        Outlier detection (scikit-learn's conventions): the fraction of the training data
        flagged as outliers. ``fit`` then sets ``offset_`` to that quantile of the training
        ``log p(x)`` (``set_offset`` does it for a model built with ``from_decoder``);
        ``decision_function = score_samples - offset_`` and ``predict`` gives +1 (inlier) or
        -1 (outlier). None: no threshold.
    device : None, str or torch.device
        Where the exact likelihood, posterior statistics and E-step run: ``None`` (default)
        the numpy path; ``"cpu"``, ``"cuda"`` or a ``torch.device`` the torch backend on that
        device (float64, the same results to ~1e-13; latent_dim 1 and 2). Results are
        returned as numpy arrays either way.

    Attributes
    ----------
    decoder_ : Decoder
    noise_std_ : ndarray of shape (D,)
    partition_ : Partition
    offset_ : float
        Outlier threshold on ``log p(x)`` (with ``contamination``).
    preprocessing_ : Standardizer or None
        The per-feature standardization the decoder was trained behind (set by the command
        line's ``fit``, saved in the model file). When set, every method takes and returns data
        in the original units: inputs are standardized first, ``log p(x)`` includes the
        map's Jacobian ``-Σ_j log scale_j``, samples and imputations come back in data units.
        ``fit`` works in the units of the data it is given and clears it.
    """

    def __init__(
        self,
        latent_dim: int = 1,
        hidden_sizes: tuple = (12,),
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        noise: str = "isotropic",
        method: str = "em",
        max_iter: int = 100,
        tol: float = 1e-4,
        n_init: int = 1,
        init: str = "pca",
        min_noise_std: float = 1e-3,
        weight_decay: float = 0.0,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        progress: bool = True,
        prune_nats: float = 40.0,
        chunk_bytes: int = 256 * 2**20,
        max_backtrack: int = 6,
        overrelax: float = 64.0,
        contamination: float | None = None,
        device=None,
    ):
        self.latent_dim = latent_dim
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.negative_slope = negative_slope
        self.noise = noise
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.min_noise_std = min_noise_std
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.progress = progress
        self.prune_nats = prune_nats
        self.chunk_bytes = chunk_bytes
        self.max_backtrack = max_backtrack
        self.overrelax = overrelax
        self.contamination = contamination
        self.device = device

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_decoder(cls, decoder: Decoder, noise_std, **params) -> ExactDGN:
        """A model around an existing decoder (e.g. one trained as a VAE).

        Parameters
        ----------
        decoder : Decoder
        noise_std : float or array_like of shape (D,)
            Standard deviation of the Gaussian observation noise.
        **params
            Estimator parameters (e.g. ``prune_nats``, or ``device="cuda"`` for the torch
            backend).
        """
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be an exactdgn.Decoder, got {type(decoder).__name__}")
        std = check_positive(noise_std, name="noise_std", size=decoder.output_dim)
        acts = {a.kind for a in decoder.activations}
        slope = next(
            (float(np.mean(a.negative_slope)) for a in decoder.activations if a.kind != "relu"),
            0.0,
        )
        model = cls(
            latent_dim=decoder.latent_dim,
            hidden_sizes=tuple(decoder.hidden_sizes),
            activation=acts.pop() if len(acts) == 1 else "mixed",
            negative_slope=slope,
            noise="isotropic" if std.ndim == 0 else "diagonal",
            **params,
        )
        model._set_state(decoder, std)
        return model

    @classmethod
    def from_torch(cls, module, noise_std, input_shape=None, **params) -> ExactDGN:
        """A model around a PyTorch decoder (see :meth:`exactdgn.Decoder.from_torch`)."""
        return cls.from_decoder(
            Decoder.from_torch(module, input_shape=input_shape), noise_std, **params
        )

    def _set_state(self, decoder: Decoder, noise_std, part: Partition | None = None) -> None:
        D = decoder.output_dim
        self.decoder_ = decoder
        self.noise_std_ = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (D,)).copy()
        self.partition_ = part if part is not None else partition(decoder)
        self._geom = None

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "decoder_"):
            raise NotFittedError(
                "this ExactDGN has no decoder yet: call fit(X) or build it with "
                "ExactDGN.from_decoder / ExactDGN.from_torch"
            )

    def _check_X(self, X, name="X", allow_nan: bool = False) -> np.ndarray:
        """Validated ``X`` in the decoder's units (standardized when ``preprocessing_`` is set)."""
        self._check_fitted()
        X = check_array(X, name=name, n_features=self.decoder_.output_dim, allow_nan=allow_nan)
        if X.shape[0] == 0:
            raise ValueError(f"{name} has no rows (shape {X.shape}): give at least one point")
        pre = getattr(self, "preprocessing_", None)
        return X if pre is None else (X - pre.mean_) / pre.scale_  # NaN stays NaN

    def _log_jacobian(self, X: np.ndarray):
        """(N,) ``log |det ∂x_std/∂x|`` of ``preprocessing_`` over each row's observed
        coordinates, ``-Σ_{j obs} log scale_j`` (0 without a preprocessing)."""
        pre = getattr(self, "preprocessing_", None)
        if pre is None:
            return 0.0
        return -((~np.isnan(X)) @ np.log(pre.scale_))

    def _to_data_units(self, Y: np.ndarray) -> np.ndarray:
        pre = getattr(self, "preprocessing_", None)
        return Y if pre is None else Y * pre.scale_ + pre.mean_

    @property
    def geometry_(self) -> RegionGeometry:
        self._check_fitted()
        if getattr(self, "_geom", None) is None:
            self._geom = region_geometry(self.partition_, self.noise_std_)
        return self._geom

    def _pairs(self, X: np.ndarray, need_moments: bool = False) -> PairStats:
        return self._exact_pairs(self.geometry_, X, need_moments)

    def _exact_pairs(self, geom: RegionGeometry, X: np.ndarray, need_moments: bool) -> PairStats:
        """Exact pairs of ``X``; rows with NaN are conditioned on their observed coordinates."""
        obs = check_missing(X)
        kw = {"prune_nats": self.prune_nats, "need_moments": need_moments}
        if obs is not None:
            return observed_pairs(geom, X, obs, chunk_bytes=self.chunk_bytes, **kw)
        return marginal_pairs(geom, X, chunk_bytes=self.chunk_bytes, device=self.device, **kw)

    @property
    def n_regions_(self) -> int:
        self._check_fitted()
        return len(self.partition_)

    # ------------------------------------------------------------------ likelihood
    def score_samples(self, X, return_error: bool = False):
        """Exact ``log p(x)`` of each row of ``X``; ``log p(x_obs)`` for rows with NaN.

        NaN marks a missing value: with diagonal noise, marginalising output ``j`` drops row
        ``j`` of every ``A_r``, ``b_r`` and ``Λ`` (see :mod:`exactdgn.inference._missing`), so
        the value is exact as for complete rows. A row with nothing observed is an error;
        infinite values are errors.

        Parameters
        ----------
        X : array_like of shape (N, D), NaN where missing
        return_error : bool
            Also return the estimated absolute error of each value (integration error of the
            region masses, ~1e-13 for ``latent_dim <= 2``, plus the pruning bound).

        Returns
        -------
        log_px : ndarray of shape (N,)
        error : ndarray of shape (N,) (only with ``return_error``)
        """
        X = self._check_X(X, allow_nan=True)
        st = self._pairs(X)
        log_px = st.log_px + self._log_jacobian(X)
        return (log_px, st.log_px_error) if return_error else log_px

    def score(self, X, y=None) -> float:
        """Mean exact log-likelihood per point."""
        return float(np.mean(self.score_samples(X)))

    def posterior(self, X) -> ExactPosterior:
        """The exact posterior ``p(z | x)`` for each row of ``X`` (batch_shape (N,)).

        Rows with NaN give ``p(z | x_obs)``, conditioned on their observed coordinates only.
        """
        return self._posterior(self._check_X(X, allow_nan=True))

    def _posterior(self, X: np.ndarray) -> ExactPosterior:
        """:meth:`posterior` of validated ``X`` in the decoder's units."""
        return ExactPosterior(self, X, self.geometry_, self._pairs(X))

    # ------------------------------------------------------------------ outliers
    def set_offset(self, X) -> ExactDGN:
        """Set ``offset_`` so that the fraction ``contamination`` of ``X`` are outliers.

        ``fit`` calls it on the training data; call it for a model from ``from_decoder``.
        """
        self._check_contamination()
        if self.contamination is None:
            raise ValueError("set contamination (a fraction in (0, 0.5]) to set an offset")
        self.offset_ = contamination_offset(self.score_samples(X), self.contamination)
        return self

    def decision_function(self, X) -> np.ndarray:
        """(N,) ``log p(x) - offset_``: negative for outliers (scikit-learn's convention)."""
        if not hasattr(self, "offset_"):
            raise NotFittedError(
                "no outlier threshold: set contamination before fit, or call set_offset(X) "
                "on reference data"
            )
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """(N,) +1 for inliers, -1 for outliers (``decision_function < 0``)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` then ``predict(X)`` (needs ``contamination``)."""
        if self.contamination is None:
            raise ValueError("fit_predict needs contamination (a fraction in (0, 0.5])")
        return self.fit(X).predict(X)

    def typicality_test(self, X, **kwargs) -> TypicalityResult:
        """Is the batch ``X`` typical for this model (:func:`exactdgn.outliers.typicality_test`)."""
        self._check_fitted()
        return typicality_test(self, X, **kwargs)

    _IMPUTE_METHODS = ("mean", "mode", "sample")

    def impute(
        self,
        X,
        method: str = "mean",
        n_samples: int = 1,
        random_state=None,
        return_std: bool = False,
    ):
        """``X`` with its NaNs filled from the exact conditional ``p(x_mis | x_obs)``.

        Parameters
        ----------
        X : array_like of shape (N, D), NaN where missing
        method : {"mean", "mode", "sample"}
            ``"mean"``: the exact conditional mean ``E[x_mis | x_obs] = Σ_r w_r(x_obs)
            (A_r,mis E[z | x_obs, r] + b_r,mis)``; ``"mode"``: ``g(z*)`` at the exact MAP
            ``z*`` of ``p(z | x_obs)``; ``"sample"``: exact draws ``g(z) + ε`` with
            ``z ~ p(z | x_obs)`` and ``ε ~ N(0, Σ_mis)``.
        n_samples : int
            Draws per row for ``"sample"`` (the result then has shape ``(n_samples, N, D)``
            when ``n_samples > 1``).
        random_state : int, Generator or None
            Seed of ``"sample"``.
        return_std : bool
            Also return the exact conditional standard deviation ``sqrt(Var[g_j | x_obs] +
            σ_j²)`` of each missing entry (0 at observed entries), shape (N, D).

        Returns
        -------
        X_filled : ndarray of shape (N, D) (or (n_samples, N, D))
        std : ndarray of shape (N, D) (only with ``return_std``)
        """
        if method not in self._IMPUTE_METHODS:
            raise ValueError(f"method={method!r} is invalid: use one of {self._IMPUTE_METHODS}")
        if not (isinstance(n_samples, int | np.integer) and n_samples >= 1):
            raise ValueError(f"n_samples={n_samples!r} is invalid: use an integer >= 1")
        X = self._check_X(X, allow_nan=True)
        miss = np.isnan(X)
        post = self._posterior(X)
        out = X.copy()
        if method == "mean" or return_std:
            mean, var = post.output_moments()
        if method == "mean":
            out[miss] = mean[miss]
        elif method == "mode":
            out[miss] = self.decoder_(post.mode())[miss]
        else:
            rng = np.random.default_rng(random_state)
            Z = post.sample((n_samples,), random_state=rng)  # (S, N, d)
            G = self.decoder_(Z.reshape(-1, Z.shape[-1])).reshape(n_samples, *X.shape)
            G += rng.standard_normal(G.shape) * self.noise_std_
            out = np.where(miss, G, X)
            if n_samples == 1:
                out = out[0]
        out = self._to_data_units(out)
        if not return_std:
            return out
        std = np.where(miss, np.sqrt(var + self.noise_std_**2), 0.0)
        pre = getattr(self, "preprocessing_", None)
        return out, (std if pre is None else std * pre.scale_)

    def log_prob_joint(self, X, Z) -> np.ndarray:
        """(N,) ``log p(x, z) = log N(z; 0, I) + log N(x; g(z), Σ)`` row by row.

        NaN entries of ``X`` are missing: ``log p(x_obs, z)`` (the observed coordinates' terms).
        """
        X = self._check_X(X, allow_nan=True)
        return self._log_joint(X, Z) + self._log_jacobian(X)

    def _log_joint(self, X: np.ndarray, Z) -> np.ndarray:
        """:meth:`log_prob_joint` of validated ``X`` in the decoder's units."""
        Z = check_array(
            Z, name="Z", n_features=self.decoder_.latent_dim, feature_name="latent dims"
        )
        if Z.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but Z has {Z.shape[0]}")
        d = Z.shape[1]
        obs = ~np.isnan(X)
        r = np.where(obs, (X - self.decoder_(Z)) / self.noise_std_, 0.0)
        log_lik = -0.5 * (obs.sum(axis=1) * LOG_2PI + np.einsum("nj,nj->n", r, r)) - (
            obs @ np.log(self.noise_std_)
        )
        log_prior = -0.5 * (d * LOG_2PI + np.einsum("nk,nk->n", Z, Z))
        return log_prior + log_lik

    # ------------------------------------------------------------------ generation
    def sample(self, n_samples: int = 1, random_state=None, return_latent: bool = False):
        """Draw ``x = g(z) + ε`` with ``z ~ N(0, I)``.

        Returns
        -------
        X : ndarray (n_samples, D)
        Z : ndarray (n_samples, d) (only with ``return_latent``)
        """
        self._check_fitted()
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        rng = np.random.default_rng(random_state)
        Z = rng.standard_normal((int(n_samples), self.decoder_.latent_dim))
        X = self.decoder_(Z) + rng.standard_normal((int(n_samples), self.decoder_.output_dim)) * (
            self.noise_std_
        )
        X = self._to_data_units(X)
        return (X, Z) if return_latent else X

    def _prior_region_moments(self):
        part = self.partition_
        normals, offsets = part.padded_halfspaces()
        return gaussian.truncated_moments(normals, offsets)

    def mean(self) -> np.ndarray:
        """(D,) exact ``E[x] = Σ_r P(r) (A_r E[z | r] + b_r)`` (prior region moments)."""
        self._check_fitted()
        tm = self._prior_region_moments()
        w = np.exp(tm.log_mass)
        part = self.partition_
        y = np.einsum("rjk,rk->rj", part.A, tm.mean) + part.b
        return w @ y

    def covariance(self) -> np.ndarray:
        """(D, D) exact ``Cov[x]``: law of total covariance over regions, plus the noise."""
        self._check_fitted()
        tm = self._prior_region_moments()
        w = np.exp(tm.log_mass)
        part = self.partition_
        y = np.einsum("rjk,rk->rj", part.A, tm.mean) + part.b
        m = w @ y
        dy = y - m
        within = np.einsum("r,rjk,rkl,rml->jm", w, part.A, tm.cov, part.A)
        between = np.einsum("r,rj,rm->jm", w, dy, dy)
        cov = within + between + np.diag(self.noise_std_**2)
        return 0.5 * (cov + cov.T)

    # ------------------------------------------------------------------ training
    _ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs")

    def _validate_params(self) -> None:
        def bad(name, what):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {what}")

        if not (isinstance(self.latent_dim, int | np.integer) and self.latent_dim >= 1):
            bad("latent_dim", "use an integer >= 1")
        hs = tuple(self.hidden_sizes)
        if not all(isinstance(h, int | np.integer) and h >= 1 for h in hs):
            bad("hidden_sizes", "use a tuple of positive integers, e.g. (12,) or (32, 32)")
        if self.activation not in self._ACTIVATIONS:
            bad("activation", f"choose one of {self._ACTIVATIONS}")
        if self.noise not in ("isotropic", "diagonal"):
            bad("noise", "choose 'isotropic' or 'diagonal'")
        if self.method not in ("em", "gradient", "lbfgs"):
            bad("method", "choose 'em', 'gradient' or 'lbfgs'")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            bad("max_iter", "use an integer >= 1")
        if not (self.tol >= 0):
            bad("tol", "use a non-negative float")
        if not (isinstance(self.n_init, int | np.integer) and self.n_init >= 1):
            bad("n_init", "use an integer >= 1")
        if self.init not in ("pca", "random"):
            bad("init", "choose 'pca' or 'random'")
        if not (self.min_noise_std > 0):
            bad("min_noise_std", "use a positive float (the likelihood is unbounded as σ -> 0)")
        if not (self.weight_decay >= 0):
            bad("weight_decay", "use a non-negative float")
        if not (self.overrelax >= 1):
            bad("overrelax", "use a float >= 1 (1 turns the over-relaxed steps off)")
        if not (self.prune_nats >= 10):
            bad("prune_nats", "use >= 10 (40 keeps the likelihood exact to double precision)")
        self._check_contamination()

    def _check_contamination(self) -> None:
        c = self.contamination
        if c is not None and not (isinstance(c, float | int) and 0.0 < c <= 0.5):
            raise ValueError(
                f"contamination={c!r} is invalid: use a fraction in (0, 0.5] (or None for no "
                "outlier threshold)"
            )

    def _e_step(self, decoder, std, X):
        t0 = time.perf_counter()
        part = partition(decoder)
        t1 = time.perf_counter()
        geom = region_geometry(part, std)
        st = self._marginal(part, geom, X)
        t2 = time.perf_counter()
        return part, geom, st, t1 - t0, t2 - t1

    # -- distributed hook (issue 14): the EM loop touches the data only through these three;
    # X is either an array or a handle from exactdgn.dask (`e_step` runs on a dask cluster and
    # returns pairs held by the workers, whose `region_stats()` are reduced there).
    def _marginal(self, part, geom, X):
        """E-step pairs with moments of ``X`` under ``geom`` (``part``: its partition); rows
        with NaN are conditioned on their observed coordinates."""
        if hasattr(X, "e_step"):
            return X.e_step(part, geom, prune_nats=self.prune_nats, chunk_bytes=self.chunk_bytes)
        return self._exact_pairs(geom, X, need_moments=True)

    @staticmethod
    def _region_stats(X, part, st, dec=None, std=None):
        """The M-step's :class:`~exactdgn.em.RegionStats` of E-step pairs ``st`` (of the
        parameters ``dec``, ``std``; missing values: ``em.missing_region_stats``)."""
        if hasattr(st, "region_stats"):
            return st.region_stats()
        args = (part.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
        obs = check_missing(X)
        if obs is None:
            return region_stats(X, *args)
        return missing_region_stats(X, obs, dec, std, *args)

    def fit(self, X, y=None, checkpoint=None) -> ExactDGN:
        """Fit by exact EM (``"em"``), exact-gradient Adam (``"gradient"``) or L-BFGS (``"lbfgs"``).

        EM: the E-step computes, for every point and region, the exact posterior region mass and
        truncated moments; the M-step solves every layer's least-squares problem in closed form
        with the activation patterns held at their E-step values, then the noise. After each
        M-step the exact log-likelihood is recomputed with the new partition; if it went down,
        the step is halved along the segment between the old and new parameters until it does
        not (``history_["backtracks"]``), so the exact training log-likelihood never decreases.
        ``"lbfgs"``: full-batch quasi-Newton steps on the exact log-likelihood (each function
        evaluation is one exact E-step, gradients by Fisher's identity, strong-Wolfe line
        search; also monotone, see ``_run_lbfgs``). Prefer EM for a first fit (no step size,
        monotone, large early gains); ``"lbfgs"`` converges much faster near an optimum, where
        layer-wise EM crawls when the noise is small (planted [1,6,2], 40 iterations: 0.003
        nats from the truth's held-out likelihood against EM's 0.14), and suits refining a
        decoder (``warm_start``); ``"gradient"`` (minibatch Adam) when the data are too many
        for full-batch E-steps.

        Parameters
        ----------
        X : array_like (N, D), NaN where missing
            Missing values are integrated exactly: the E-step conditions on ``x_obs``, the
            M-step uses the missing coordinates' conditional moments, and the recorded
            ``loglik`` is the exact observed-data ``log p(x_obs)`` (never decreasing). The
            initialisation fills them with column means. Columns with nothing observed are
            an error.
            Or a dask array while a ``distributed.Client`` is active (``method="em"``, no
            NaN): the E-steps run chunk by chunk on the cluster (see :mod:`exactdgn.dask`).
        checkpoint : path, optional
            State is written there atomically after every iteration; calling ``fit`` again with
            the same arguments resumes from it and ends with the same result.
        """
        self._validate_params()
        remote = None
        if hasattr(X, "__dask_graph__"):  # issue 14 hook: a dask array, E-steps on the cluster
            from .dask import remote_data

            X = remote = remote_data(X, method=self.method)
        obs = None
        if remote is None:
            X = check_array(X, name="X", allow_nan=True)
            if X.shape[0] == 0:
                raise ValueError(f"X has no rows (shape {X.shape}): give at least one point")
            # NaN = missing: exact EM on the observed-data likelihood (see exactdgn.em._missing)
            obs = check_missing(X, columns=True)
        self.preprocessing_ = None  # fit works in the units of X
        N, D = X.shape
        warm = self.warm_start and hasattr(self, "decoder_")
        if warm and self.decoder_.output_dim != D:
            raise ValueError(
                f"X has {D} columns but the fitted model expects {self.decoder_.output_dim}"
            )
        sizes = [self.latent_dim, *self.hidden_sizes, D]
        k = sum((a + 1) * b for a, b in itertools.pairwise(sizes)) + (
            1 if self.noise == "isotropic" else D
        )
        if N < k:
            warnings.warn(
                f"fitting {k} parameters to only {N} points: the maximum-likelihood fit is "
                "poorly determined (use a smaller decoder, weight_decay, or more data)",
                UserWarning,
                stacklevel=2,
            )
        if remote is None:
            fingerprint = hashlib.sha256(X.tobytes()).hexdigest() + f":{N}x{D}"
        else:
            fingerprint = remote.fingerprint
        config = {
            k: v for k, v in self.get_params().items() if k not in ("verbose", "progress", "device")
        }
        config["hidden_sizes"] = list(config["hidden_sizes"])
        if isinstance(config.get("random_state"), np.random.Generator):
            raise ValueError(
                "random_state must be an int or None for fit (it is saved in checkpoints)"
            )
        ck = self._load_checkpoint(checkpoint, fingerprint, config) if checkpoint else None
        rng = np.random.default_rng(self.random_state)
        seeds = rng.integers(0, 2**63 - 1, size=self.n_init)
        done = ck["done"] if ck else []
        for i in range(self.n_init):
            if i < len(done):
                continue
            if ck and ck.get("current") is not None and ck["current"]["init"] == i:
                cur = ck["current"]
                dec, std, hist, it0 = cur["decoder"], cur["std"], cur["history"], cur["iter"]
                extra = cur.get("extra")
            else:
                if warm and i == 0:
                    dec, std = self.decoder_.copy(), self.noise_std_.copy()
                else:
                    dec, std = (initialize if remote is None else remote.initialize)(
                        X if obs is None else np.where(obs, X, np.nanmean(X, axis=0)),
                        latent_dim=self.latent_dim,
                        hidden_sizes=self.hidden_sizes,
                        activation=self.activation,
                        negative_slope=self.negative_slope,
                        init=self.init,
                        diagonal=self.noise == "diagonal",
                        min_std=self.min_noise_std,
                        rng=np.random.default_rng(seeds[i]),
                    )
                hist, it0, extra = [], 0, None

            def save(dec_, std_, hist_, it_, extra_=None, i=i):
                if checkpoint:
                    self._save_checkpoint(
                        checkpoint, fingerprint, config, done, i, dec_, std_, hist_, it_, extra_
                    )

            runner = {"em": self._run_em, "gradient": self._run_gradient}.get(
                self.method, self._run_lbfgs
            )
            res = runner(X, dec, std, hist, it0, save, extra, seed=int(seeds[i]), init_index=i)
            done.append(res)
            if checkpoint:
                self._save_checkpoint(
                    checkpoint, fingerprint, config, done, None, None, None, None, 0
                )
        best = max(range(len(done)), key=lambda j: done[j]["history"][-1]["loglik"])
        res = done[best]
        self._set_state(res["decoder"], res["std"])
        self.n_iter_ = int(res["n_iter"])
        self.converged_ = bool(res["converged"])
        self.history_ = res["history"]
        self.best_init_ = best
        self.init_logliks_ = [r["history"][-1]["loglik"] for r in done]
        if self.contamination is not None:
            self.set_offset(X)
        if not self.converged_:
            warnings.warn(
                f"{self.method} did not converge in max_iter={self.max_iter} iterations "
                f"(last change above tol={self.tol}); increase max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _progress_bar(self, total, desc):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def _run_em(self, X, dec, std, hist, it0, save, extra, *, seed, init_index):
        std = np.asarray(std, dtype=np.float64)
        part, _, st, tp, te = self._e_step(dec, std, X)
        ll = _loglik(st)
        if not hist:
            hist.append(
                {
                    "iter": 0,
                    "loglik": ll,
                    "n_regions": len(part),
                    "seconds_partition": tp,
                    "seconds_estep": te,
                    "seconds_mstep": 0.0,
                    "backtracks": 0,
                    "step": 0.0,
                }
            )
            save(dec, std, hist, 0)
        converged = False
        it = it0
        # step-size state, restored from the history on resume: the relative length of a
        # gradient fallback step and the over-relaxation factor of the M-step direction
        eta = hist[-1].get("eta", 0.1)
        relax = hist[-1].get("relax", 1.0)
        bar = self._progress_bar(self.max_iter, f"EM init {init_index}")
        bar.update(it0)
        diagonal = self.noise == "diagonal"
        try:
            while it < self.max_iter:
                ll_start = ll
                # (1) output layer + noise: an exact EM block (the partition does not move)
                t0 = time.perf_counter()
                rs = self._region_stats(X, part, st, dec, std)
                last = [dec.n_layers - 1]
                dec1, std1 = m_step(
                    dec,
                    rs,
                    std,
                    X,
                    diagonal=diagonal,
                    min_std=self.min_noise_std,
                    weight_decay=self.weight_decay,
                    layers=last,
                )
                tm = time.perf_counter() - t0
                t1 = time.perf_counter()
                part1 = part.with_decoder(dec1)
                geom1 = region_geometry(part1, std1)
                st1 = self._marginal(part1, geom1, X)
                te_tot = time.perf_counter() - t1
                tp_tot = 0.0
                ll1 = _loglik(st1)
                if ll1 >= ll:
                    dec, std, part, st, ll = dec1, std1, part1, st1, ll1
                nb, step = 0, 0.0
                if dec.n_layers > 1:
                    # (2) hidden layers (patterns held at their E-step values), then the output
                    # layer and noise again; guarded by the exact likelihood with backtracking
                    t0 = time.perf_counter()
                    rs = self._region_stats(X, part, st, dec, std)
                    new_dec, new_std = m_step(
                        dec,
                        rs,
                        std,
                        X,
                        diagonal=diagonal,
                        min_std=self.min_noise_std,
                        weight_decay=self.weight_decay,
                    )
                    tm += time.perf_counter() - t0
                    # adaptive over-relaxation (Salakhutdinov & Roweis, 2003): try the step
                    # `relax` times the M-step's; on success grow it, on failure fall back to
                    # the plain step (then halve). Every accepted point has a higher exact
                    # likelihood, so monotonicity is kept.
                    step = relax
                    while nb <= self.max_backtrack:
                        c_dec = _interpolate(dec, new_dec, step)
                        c_std = np.exp((1 - step) * np.log(std) + step * np.log(new_std))
                        c_std = np.maximum(c_std, self.min_noise_std)
                        try:
                            c_part, _, c_st, tp, te = self._e_step(c_dec, c_std, X)
                        except PartitionTooLargeError:
                            if step <= 1.0:
                                raise
                            # an extrapolated decoder with too many regions: not a candidate
                            step = relax = 1.0
                            continue
                        tp_tot += tp
                        te_tot += te
                        c_ll = _loglik(c_st)
                        if c_ll >= ll:
                            dec, std, part, st, ll = c_dec, c_std, c_part, c_st, c_ll
                            if step == relax and step < self.overrelax:
                                relax = min(2.0 * relax, self.overrelax)
                            break
                        if step > 1.0:
                            step = relax = 1.0
                            continue
                        step *= 0.5
                        nb += 1
                    else:
                        step = 0.0
                        # (3) generalized-EM fallback: an exact-gradient ascent step on the
                        # hidden layers (Fisher's identity), accepted only if the exact
                        # likelihood does not drop; its length adapts across iterations.
                        g_res = self._gradient_step(X, dec, std, part, st, ll, eta)
                        if g_res is not None:
                            dec, part, st, ll, eta, tp, te = g_res
                            tp_tot += tp
                            te_tot += te
                            step = -eta  # recorded as a negative step: a gradient move
                        else:
                            eta *= 0.25
                it += 1
                bar.update(1)
                hist.append(
                    {
                        "iter": it,
                        "loglik": ll,
                        "n_regions": len(part),
                        "seconds_partition": tp_tot,
                        "seconds_estep": te_tot,
                        "seconds_mstep": tm,
                        "backtracks": nb,
                        "step": step,
                        "eta": eta,
                        "relax": relax,
                    }
                )
                bar.set_postfix(nll=f"{-ll:.4f}", regions=len(part), refresh=False)
                logger.info(
                    "EM init %d iter %d: loglik %.6f regions %d backtracks %d",
                    init_index,
                    it,
                    ll,
                    len(part),
                    nb,
                )
                save(dec, std, hist, it)
                if ll - ll_start < self.tol:
                    converged = True
                    break
        finally:
            bar.close()
        return {"decoder": dec, "std": std, "history": hist, "n_iter": it, "converged": converged}

    def _gradient_step(self, X, dec, std, part, st, ll, eta, tries: int = 3):
        """Line search along the exact gradient of the hidden layers (see ``_run_em``)."""
        if dec.n_layers < 2:
            return None
        rs = self._region_stats(X, part, st, dec, std)
        grads = exact_gradient(dec, std, rs, X)
        L = dec.n_layers - 1  # hidden layers only: the output layer had its exact EM step
        gW, gc = grads[0 : 2 * L : 2], grads[1 : 2 * L : 2]
        norm_g = np.sqrt(sum((g**2).sum() for g in gW) + sum((g**2).sum() for g in gc))
        norm_p = np.sqrt(sum((W**2).sum() for W in dec.weights[:L]))
        if not np.isfinite(norm_g) or norm_g == 0:
            return None
        tp_tot = te_tot = 0.0
        for _ in range(tries):
            scale = eta * norm_p / norm_g
            cand = dec.copy()
            for k in range(L):
                cand.weights[k] = dec.weights[k] + scale * gW[k]
                cand.biases[k] = dec.biases[k] + scale * gc[k]
            c_part, _, c_st, tp, te = self._e_step(cand, std, X)
            tp_tot += tp
            te_tot += te
            c_ll = _loglik(c_st)
            if c_ll >= ll:
                return cand, c_part, c_st, c_ll, min(2 * eta, 1.0), tp_tot, te_tot
            eta *= 0.25
        return None

    def _run_gradient(
        self,
        X,
        dec,
        std,
        hist,
        it0,
        save,
        extra,
        *,
        seed,
        init_index,
        lr: float = 1e-2,
        batch_size: int = 256,
    ):
        import torch

        N, D = X.shape
        diagonal = self.noise == "diagonal"
        params = []
        for W, c in zip(dec.weights, dec.biases, strict=True):
            params.append(torch.tensor(W, requires_grad=True))
            params.append(torch.tensor(c, requires_grad=True))
        ls = np.log(std) if diagonal else np.log(std[:1]).reshape(())
        params.append(torch.tensor(np.array(ls, dtype=np.float64), requires_grad=True))
        opt = torch.optim.Adam(params, lr=lr)
        rng = np.random.default_rng(seed)
        if extra is not None:
            rng.bit_generator.state = extra["rng"]
            _load_adam(opt, params, extra["adam"])
        if not hist:
            _, _, st, tp, te = self._e_step(dec, std, X)
            hist.append(
                {
                    "iter": 0,
                    "loglik": float(st.log_px.mean()),
                    "n_regions": 0,
                    "seconds_partition": tp,
                    "seconds_estep": te,
                    "seconds_mstep": 0.0,
                    "backtracks": 0,
                    "step": lr,
                }
            )
            save(
                dec, std, hist, 0, {"rng": rng.bit_generator.state, "adam": _dump_adam(opt, params)}
            )
        converged = False
        it = it0
        bar = self._progress_bar(self.max_iter, f"gradient init {init_index}")
        bar.update(it0)
        log_min = np.log(self.min_noise_std)
        try:
            while it < self.max_iter:
                perm = rng.permutation(N)
                tp_tot = te_tot = tm_tot = 0.0
                for s in range(0, N, batch_size):
                    idx = perm[s : s + batch_size]
                    Xb = X[idx]
                    cur = _decoder_from_params(dec, params)
                    cur_std = np.broadcast_to(np.exp(params[-1].detach().numpy()), (D,))
                    part, _geom, st, tp, te = self._e_step(cur, cur_std, Xb)
                    t0 = time.perf_counter()
                    rs = region_stats(
                        Xb, part.patterns, st.point, st.region, st.log_weight, st.mean, st.cov
                    )
                    opt.zero_grad()
                    Q = surrogate_objective(params, cur, rs, Xb)
                    loss = -Q / len(idx)
                    for k in range(0, len(params) - 1, 2):
                        loss = loss + 0.5 * self.weight_decay * (params[k] ** 2).sum()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        params[-1].clamp_(min=log_min)
                    tm_tot += time.perf_counter() - t0
                    tp_tot += tp
                    te_tot += te
                it += 1
                bar.update(1)
                dec = _decoder_from_params(dec, params)
                std = np.broadcast_to(np.exp(params[-1].detach().numpy()), (D,)).copy()
                part, _, st, tp, te = self._e_step(dec, std, X)
                ll = float(st.log_px.mean())
                delta = ll - hist[-1]["loglik"]
                hist.append(
                    {
                        "iter": it,
                        "loglik": ll,
                        "n_regions": len(part),
                        "seconds_partition": tp_tot,
                        "seconds_estep": te_tot + te,
                        "seconds_mstep": tm_tot,
                        "backtracks": 0,
                        "step": lr,
                    }
                )
                bar.set_postfix(nll=f"{-ll:.4f}", regions=len(part), refresh=False)
                save(
                    dec,
                    std,
                    hist,
                    it,
                    {"rng": rng.bit_generator.state, "adam": _dump_adam(opt, params)},
                )
                if abs(delta) < self.tol:
                    converged = True
                    break
        finally:
            bar.close()
        return {"decoder": dec, "std": std, "history": hist, "n_iter": it, "converged": converged}

    def _run_lbfgs(self, X, dec, std, hist, it0, save, extra, *, seed, init_index):
        """Full-batch L-BFGS (torch, strong-Wolfe line search) on the exact log-likelihood.

        Parameters: every weight and bias and ``s`` with ``σ = min_noise_std + exp(s)`` (the
        floor holds without bounds). Each closure call is one exact E-step: the value is the
        exact ``-mean log p(x)`` and the gradient comes from Fisher's identity. One iteration is
        one quasi-Newton step; its line search needs sufficient decrease, and a step that would
        lower the exact likelihood is undone and ends the run, so ``history_`` never decreases.
        The optimiser's state is checkpointed with the parameters: a resumed run is identical.
        """
        import torch

        N, D = X.shape
        diagonal = self.noise == "diagonal"
        shapes = [a.shape for W, c in zip(dec.weights, dec.biases, strict=True) for a in (W, c)]
        sizes = [int(np.prod(sh)) for sh in shapes]
        n_s = D if diagonal else 1
        floor = self.min_noise_std

        def pack(dec_, std_):
            sd = np.asarray(std_, dtype=np.float64)
            sd = sd if diagonal else sd[:1]
            s_ = np.log(np.maximum(sd - floor, 1e-12 * floor))
            parts = [
                a.ravel() for W, c in zip(dec_.weights, dec_.biases, strict=True) for a in (W, c)
            ]
            return np.concatenate([*parts, s_])

        def unpack(th):
            out, k = [], 0
            for sh, n in zip(shapes, sizes, strict=True):
                out.append(th[k : k + n].reshape(sh))
                k += n
            d_ = Decoder(out[0::2], out[1::2], dec.activations)
            st_ = np.broadcast_to(floor + np.exp(th[k : k + n_s]), (D,)).copy()
            return d_, st_

        theta = torch.tensor(pack(dec, std), requires_grad=True)
        opt = torch.optim.LBFGS(
            [theta],
            lr=1.0,
            max_iter=1,
            max_eval=26,  # one step per call, with up to 25 line-search evaluations
            history_size=20,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )
        if extra is not None:
            _load_lbfgs(opt, theta, extra["lbfgs"])
        cache: dict = {}
        timers = {"tp": 0.0, "te": 0.0, "tm": 0.0}

        def evaluate(th):
            key = th.tobytes()
            if key in cache:
                return cache[key]
            d_, st_ = unpack(th)
            part, _, stt, tp, te = self._e_step(d_, st_, X)
            t0 = time.perf_counter()
            rs = self._region_stats(X, part, stt, d_, st_)
            tt = torch.tensor(th, requires_grad=True)
            plist, k = [], 0
            for sh, n in zip(shapes, sizes, strict=True):
                plist.append(tt[k : k + n].reshape(sh))
                k += n
            sig = floor + torch.exp(tt[k : k + n_s])
            log_std = torch.log(sig) if diagonal else torch.log(sig[0])
            # issue 14 hook: pairs on a dask cluster give the gradient summed there
            if hasattr(rs, "remote_gradient"):
                obj = -remote_surrogate([*plist, log_std], d_, rs) / N
            else:
                obj = -surrogate_objective([*plist, log_std], d_, rs, X) / N
            penalty = sum((plist[i] ** 2).sum() for i in range(0, len(plist), 2))
            obj = obj + 0.5 * self.weight_decay * penalty
            (grad,) = torch.autograd.grad(obj, tt)
            ll = _loglik(stt)
            value = -ll + 0.5 * self.weight_decay * float(penalty.detach())
            timers["tp"] += tp
            timers["te"] += te
            timers["tm"] += time.perf_counter() - t0
            cache.clear()  # keep only the latest point
            cache[key] = (value, grad.numpy().copy(), ll, part, st_)
            return cache[key]

        def closure():
            value, grad, *_ = evaluate(theta.detach().numpy())
            theta.grad = torch.from_numpy(grad.copy())
            return torch.tensor(value, dtype=torch.float64)

        value, _, ll, part, _ = evaluate(theta.detach().numpy())
        if not hist:
            hist.append(
                {
                    "iter": 0,
                    "loglik": ll,
                    "n_regions": len(part),
                    "seconds_partition": timers["tp"],
                    "seconds_estep": timers["te"],
                    "seconds_mstep": 0.0,
                    "backtracks": 0,
                    "step": 0.0,
                }
            )
            save(dec, std, hist, 0, {"lbfgs": _dump_lbfgs(opt, theta)})
        converged = False
        it = it0
        bar = self._progress_bar(self.max_iter, f"L-BFGS init {init_index}")
        bar.update(it0)
        try:
            while it < self.max_iter:
                for k_ in timers:
                    timers[k_] = 0.0
                th_old = theta.detach().numpy().copy()
                value_old = value
                opt.step(closure)
                value, _, ll, part, st_new = evaluate(theta.detach().numpy())
                if not value <= value_old:  # line search failed to decrease: undo, stop
                    with torch.no_grad():
                        theta.copy_(torch.from_numpy(th_old))
                    value, _, ll, part, st_new = evaluate(th_old)
                    converged = True
                    break
                it += 1
                bar.update(1)
                d_new, _ = unpack(theta.detach().numpy())
                state = opt.state[theta]
                hist.append(
                    {
                        "iter": it,
                        "loglik": ll,
                        "n_regions": len(part),
                        "seconds_partition": timers["tp"],
                        "seconds_estep": timers["te"],
                        "seconds_mstep": timers["tm"],
                        "backtracks": 0,
                        "step": float(state.get("t", 0.0)),
                    }
                )
                bar.set_postfix(nll=f"{-ll:.4f}", regions=len(part), refresh=False)
                save(d_new, st_new, hist, it, {"lbfgs": _dump_lbfgs(opt, theta)})
                if value_old - value < self.tol:
                    converged = True
                    break
        finally:
            bar.close()
        dec, std = unpack(theta.detach().numpy())
        return {"decoder": dec, "std": std, "history": hist, "n_iter": it, "converged": converged}

    def exact_gradient(self, X) -> list[np.ndarray]:
        """Exact gradient of ``Σ_n log p(x_n)`` w.r.t. ``[W_1, c_1, ..., W_L, c_L, log σ]``.

        By Fisher's identity (see :mod:`exactdgn.em._gradient`). ``log σ`` is a scalar for
        isotropic noise and a (D,) vector for diagonal noise.
        """
        X = self._check_X(X)
        st = self._pairs(X, need_moments=True)
        rs = region_stats(
            X, self.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov
        )
        std = self.noise_std_ if self.noise == "diagonal" else self.noise_std_[0]
        return exact_gradient(self.decoder_, std, rs, X)

    # ------------------------------------------------------------------ persistence
    def _save_checkpoint(
        self, path, fingerprint, config, done, init_i, dec, std, hist, it, extra=None
    ):
        arrays, meta = {}, {"kind": "checkpoint", "fingerprint": fingerprint, "config": config}
        meta["done"] = []
        for j, r in enumerate(done):
            a, m = decoder_to_arrays(r["decoder"], prefix=f"done{j}_")
            arrays.update(a)
            arrays[f"done{j}_std"] = np.asarray(r["std"])
            meta["done"].append(
                {
                    "decoder": m,
                    "history": r["history"],
                    "n_iter": r["n_iter"],
                    "converged": r["converged"],
                }
            )
        if init_i is not None:
            a, m = decoder_to_arrays(dec, prefix="cur_")
            arrays.update(a)
            arrays["cur_std"] = np.asarray(std)
            cur = {"init": init_i, "decoder": m, "history": hist, "iter": it}
            if extra is not None and "lbfgs" in extra:
                lb = extra["lbfgs"]
                cur["extra"] = {
                    "lbfgs_scalars": lb["scalars"],
                    "lbfgs_arrays": sorted(lb["arrays"]),
                }
                for k, a in lb["arrays"].items():
                    arrays[f"lbfgs_{k}"] = a
            elif extra is not None:
                ex = {"rng": extra["rng"], "adam_steps": extra["adam"]["steps"]}
                for k, (m1, m2) in enumerate(
                    zip(extra["adam"]["m"], extra["adam"]["v"], strict=True)
                ):
                    arrays[f"adam_m{k}"] = m1
                    arrays[f"adam_v{k}"] = m2
                cur["extra"] = ex
            meta["current"] = cur
        write_npz_atomic(path, arrays, meta)

    def _load_checkpoint(self, path, fingerprint, config):
        from pathlib import Path

        if not Path(path).exists():
            return None
        arrays, meta = read_npz(path)
        if meta.get("kind") != "checkpoint":
            raise ModelFileError(f"{path} is not a training checkpoint")
        if meta["fingerprint"] != fingerprint or meta["config"] != config:
            raise ModelFileError(
                f"checkpoint {path} was written for other data or parameters; remove it or "
                "use another path"
            )
        done = []
        for j, r in enumerate(meta["done"]):
            done.append(
                {
                    "decoder": decoder_from_arrays(arrays, r["decoder"], prefix=f"done{j}_"),
                    "std": arrays[f"done{j}_std"],
                    "history": r["history"],
                    "n_iter": r["n_iter"],
                    "converged": r["converged"],
                }
            )
        out = {"done": done, "current": None}
        cur = meta.get("current")
        if cur is not None:
            extra = None
            if "extra" in cur and "lbfgs_scalars" in cur["extra"]:
                ex = cur["extra"]
                extra = {
                    "lbfgs": {
                        "scalars": ex["lbfgs_scalars"],
                        "arrays": {k: arrays[f"lbfgs_{k}"] for k in ex["lbfgs_arrays"]},
                    }
                }
            elif "extra" in cur:
                n = len(cur["extra"]["adam_steps"])
                extra = {
                    "rng": cur["extra"]["rng"],
                    "adam": {
                        "steps": cur["extra"]["adam_steps"],
                        "m": [arrays[f"adam_m{k}"] for k in range(n)],
                        "v": [arrays[f"adam_v{k}"] for k in range(n)],
                    },
                }
            out["current"] = {
                "init": cur["init"],
                "decoder": decoder_from_arrays(arrays, cur["decoder"], "cur_"),
                "std": arrays["cur_std"],
                "history": cur["history"],
                "iter": cur["iter"],
                "extra": extra,
            }
        return out

    def save(self, path) -> None:
        """Save a fitted model (npz arrays + JSON metadata with a version; no pickle)."""
        self._check_fitted()
        arrays, dmeta = decoder_to_arrays(self.decoder_)
        arrays["noise_std"] = self.noise_std_
        params = {k: v for k, v in self.get_params().items()}
        params["hidden_sizes"] = list(params["hidden_sizes"])
        if params.get("device") is not None:
            params["device"] = str(params["device"])
        if isinstance(params.get("random_state"), np.random.Generator):
            params["random_state"] = None
        meta = {
            "kind": "model",
            "decoder": dmeta,
            "params": params,
            "history": getattr(self, "history_", None),
            "n_iter": getattr(self, "n_iter_", None),
            "converged": getattr(self, "converged_", None),
            "offset": getattr(self, "offset_", None),
            "preprocessing": (
                self.preprocessing_.to_dict()
                if getattr(self, "preprocessing_", None) is not None
                else None
            ),
        }
        write_npz_atomic(path, arrays, meta)

    @classmethod
    def load(cls, path) -> ExactDGN:
        """Load a model written by :meth:`save` (clear error on a corrupt or foreign file).

        ``path`` is a model ``.npz`` or a run directory of ``exactdgn fit`` (its ``model.npz``).
        A model saved with its standardization carries it (``preprocessing_``); for runs saved
        before that, the ``standardizer`` of the run's ``config.json`` is attached.
        """
        from pathlib import Path

        path = Path(path)
        if path.is_dir():
            if not (path / "model.npz").exists():
                raise ModelFileError(
                    f"{path} has no model.npz (is it the --out directory of 'exactdgn fit'?)"
                )
            path = path / "model.npz"
        arrays, meta = read_npz(path)
        if meta.get("kind") != "model":
            raise ModelFileError(f"{path} holds a {meta.get('kind')!r}, not a saved model")
        try:
            dec = decoder_from_arrays(arrays, meta["decoder"])
            params = dict(meta["params"])
            params["hidden_sizes"] = tuple(params["hidden_sizes"])
            model = cls(**params)
            model._set_state(dec, arrays["noise_std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: incomplete or inconsistent model file ({exc})") from exc
        if meta.get("history") is not None:
            model.history_ = meta["history"]
            model.n_iter_ = meta["n_iter"]
            model.converged_ = meta["converged"]
        if meta.get("offset") is not None:
            model.offset_ = float(meta["offset"])
        pre = meta.get("preprocessing")
        if pre is None:
            pre = _run_config(path.parent / "config.json").get("standardizer")
        if pre is not None:
            from .datasets import Standardizer

            model.preprocessing_ = Standardizer.from_dict(pre)
        return model

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        self._check_fitted()
        n_noise = 1 if self.noise == "isotropic" else self.decoder_.output_dim
        return self.decoder_.n_params + n_noise

    def bic(self, X) -> float:
        """Bayesian information criterion ``-2 log L + k log N`` (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * ll.sum() + self._n_parameters() * np.log(len(ll)))

    def aic(self, X) -> float:
        """Akaike information criterion ``-2 log L + 2k`` (lower is better)."""
        return float(-2 * self.score_samples(X).sum() + 2 * self._n_parameters())


def _loglik(st) -> float:
    """Mean exact log-likelihood of E-step pairs (issue 14 hook: remote pairs carry it)."""
    return float(st.loglik) if hasattr(st, "loglik") else float(st.log_px.mean())


def _run_config(path) -> dict:
    """The ``config.json`` of a run directory ({} when absent); errors name the file."""
    import json

    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not a valid JSON run configuration ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path} is not a run configuration (a JSON object expected)")
    return cfg


def _interpolate(a: Decoder, b: Decoder, t: float) -> Decoder:
    """Parameters ``(1 - t) a + t b`` (same architecture and activations)."""
    if t == 1.0:
        return b
    Ws = [(1 - t) * Wa + t * Wb for Wa, Wb in zip(a.weights, b.weights, strict=True)]
    cs = [(1 - t) * ca + t * cb for ca, cb in zip(a.biases, b.biases, strict=True)]
    return Decoder(Ws, cs, a.activations)


def _decoder_from_params(template: Decoder, params) -> Decoder:
    L = template.n_layers
    Ws = [params[2 * k].detach().numpy().copy() for k in range(L)]
    cs = [params[2 * k + 1].detach().numpy().copy() for k in range(L)]
    return Decoder(Ws, cs, template.activations)


def _dump_adam(opt, params) -> dict:
    import torch

    steps, ms, vs = [], [], []
    for p in params:
        st = opt.state.get(p, {})
        steps.append(float(st["step"]) if "step" in st else 0.0)
        ms.append(
            st["exp_avg"].detach().numpy().copy() if "exp_avg" in st else np.zeros(tuple(p.shape))
        )
        vs.append(
            st["exp_avg_sq"].detach().numpy().copy()
            if "exp_avg_sq" in st
            else np.zeros(tuple(p.shape))
        )
    del torch
    return {"steps": steps, "m": ms, "v": vs}


def _load_adam(opt, params, state) -> None:
    import torch

    for p, s_, m, v in zip(params, state["steps"], state["m"], state["v"], strict=True):
        if s_ > 0:
            opt.state[p] = {
                "step": torch.tensor(float(s_)),
                "exp_avg": torch.tensor(np.asarray(m)),
                "exp_avg_sq": torch.tensor(np.asarray(v)),
            }


_LBFGS_LISTS = ("old_dirs", "old_stps", "ro")
_LBFGS_TENSORS = ("d", "H_diag", "prev_flat_grad")


def _dump_lbfgs(opt, theta) -> dict:
    """torch L-BFGS state as plain arrays and numbers (``al`` is scratch and not kept)."""
    st = opt.state.get(theta, {})
    out: dict = {"scalars": {}, "arrays": {}}
    for k in ("func_evals", "n_iter", "t", "prev_loss"):
        if k in st:
            v = st[k]
            out["scalars"][k] = float(v) if k in ("t", "prev_loss") else int(v)

    def arr(v):
        return np.array(v.detach().numpy() if hasattr(v, "detach") else v, dtype=np.float64)

    for k in _LBFGS_TENSORS:
        if k in st:
            out["arrays"][k] = arr(st[k])
    for k in _LBFGS_LISTS:
        if k in st:
            vals = [arr(v) for v in st[k]]
            out["arrays"][k] = np.stack(vals) if vals else np.zeros((0, theta.numel()))
    return out


def _load_lbfgs(opt, theta, state) -> None:
    import torch

    if not state["scalars"] and not state["arrays"]:
        return
    st: dict = {}
    for k, v in state["scalars"].items():
        st[k] = v
    for k in _LBFGS_TENSORS:
        if k in state["arrays"]:
            st[k] = torch.tensor(np.asarray(state["arrays"][k]), dtype=torch.float64)
    for k in _LBFGS_LISTS:
        if k in state["arrays"]:
            st[k] = [torch.tensor(np.asarray(a), dtype=torch.float64) for a in state["arrays"][k]]
    opt.state[theta] = st
