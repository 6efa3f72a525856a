"""``ExactDGN``: a deep generative network with a CPA decoder and exact inference.

Model: ``z ~ N(0, I_d)``, ``x = g(z) + ε`` with ``ε ~ N(0, diag(σ_j²))`` (isotropic: all ``σ_j``
equal). Every quantity below is exact (closed forms over the linear regions of ``g``), except
for ``latent_dim >= 3`` where the Gaussian masses of the regions come with error estimates.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import numbers
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning

from . import gaussian
from ._validation import (
    NOISE_STD_RANGE,
    NotFittedError,
    check_array,
    check_feature_names,
    check_generator,
    check_noise_std,
    check_training_values,
    feature_names,
    is_int,
    output_dtype,
)
from .decoder import Decoder
from .em._gradient import exact_gradient
from .em._init import initialize
from .em._missing import missing_region_stats
from .em._steps import region_stats
from .gaussian._polytope import dimension_limit
from .inference._geometry import RegionGeometry, region_geometry
from .inference._marginal import PairStats, check_reach, marginal_pairs
from .inference._missing import check_missing, observed_pairs
from .inference._posterior import ExactPosterior, log_joint
from .io import (
    CheckpointMismatchError,
    ModelFileError,
    decoder_from_arrays,
    decoder_to_arrays,
    read_npz,
    write_npz_atomic,
)
from .outliers import TypicalityResult, contamination_offset, typicality_test
from .partition import Partition, partition
from .training import (
    TRAINERS,
    EStep,
    callback_stops,
    check_callback,
    converged,
    pack_state,
    to_host,
    unpack_state,
)
from .training._cost import check_training_cost

_partition = partition  # ``_e_step`` has a parameter of that name

# A run is "expensive" when its first exact E-step is estimated above this many seconds
# (exactdgn.training._cost, worst case at the start, 2-core machine): wide d >= 2 decoders on
# hundreds of points or more. Such runs scout on a subsample and stop on diminishing returns
# (see ``init`` and ``rel_tol``); every d = 1 run of the toy sets and the digits is far below.
_EXPENSIVE_SECONDS = 1.0
# fit warns when the decoder's outputs lie farther than this many data (or noise) sd, root mean
# square, from the data's mean in a column (exact, from the prior region moments)
_FAR = 10.0
_SCOUT_POINTS = 256  # subsample of the scouting of an expensive run
_SCOUT_ITERS = 5  # iterations of each start there (at most n_iter_no_change)
_REL_TOL = 0.04  # rel_tol="auto" of an expensive run

__all__ = ["ConvergenceWarning", "ExactDGN", "NotFittedError"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _log_to_stderr(verbose: int):
    """While open, the package's records at INFO (``verbose == 1``) or DEBUG (``>= 2``) also
    go to stderr: ``verbose`` as scikit-learn's estimators read it (progress on stderr)."""
    if not verbose:
        yield
        return
    level = logging.INFO if verbose == 1 else logging.DEBUG
    package = logging.getLogger("exactdgn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    before = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > level:
        package.setLevel(level)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(before)


def _output_moments(part: Partition, full: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``E[g(z)]`` (D,) and ``Cov[g(z)]`` (D, D), ``z ~ N(0, I)``, of a partition's decoder in
    its own units: ``Σ_r P(r) (A_r E[z | r] + b_r)`` and the law of total covariance over the
    regions, from the prior's truncated moments on each (``full=False``: the diagonal (D,)
    only)."""
    normals, offsets = part.padded_halfspaces()
    tm = gaussian.truncated_moments(normals, offsets)
    w = np.exp(tm.log_mass)
    y = np.einsum("rjk,rk->rj", part.A, tm.mean) + part.b
    m = w @ y
    dy = y - m
    if not full:
        within = np.einsum("r,rjk,rkl,rjl->j", w, part.A, tm.cov, part.A)
        return m, within + w @ (dy * dy)
    within = np.einsum("r,rjk,rkl,rml->jm", w, part.A, tm.cov, part.A)
    between = np.einsum("r,rj,rm->jm", w, dy, dy)
    cov = within + between
    return m, 0.5 * (cov + cov.T)


def _far_from_data(part: Partition, noise_std, X: np.ndarray) -> tuple[float, int]:
    """How far the decoder's outputs ``g(z)``, ``z ~ N(0, I)``, lie from the data (N, D), NaN
    where missing: the largest over columns ``j`` of the root mean square distance to the
    data's mean in units of ``max(data sd, noise sd)``, exact from the prior region moments
    (``E[(g_j - x̄_j)²] = Var[g_j] + (E[g_j] - x̄_j)²``), and that column. Above ``_FAR``, prior
    mass is mapped far from the data: seen on the digits from random starts (7-30% of the
    draws beyond 10 sd), which longer EM moves back. The noise is left out (isotropic noise
    spreads a nearly constant column far beyond its own sd)."""
    m, var = _output_moments(part, full=False)
    with np.errstate(all="ignore"):
        xbar = np.nanmean(X, axis=0)
        scale = np.maximum(np.nanstd(X, axis=0), np.broadcast_to(noise_std, xbar.shape))
        far = np.sqrt(np.maximum(var, 0.0) + (m - xbar) ** 2) / scale
    far = np.where(scale > 0, far, 0.0)
    j = int(np.argmax(far))
    return float(far[j]), j


class ExactDGN(DensityMixin, BaseEstimator):
    """Deep generative network with a piecewise-affine decoder, exact likelihood and posterior.

    Parameters
    ----------
    latent_dim : int
        1 to 4 (:data:`exactdgn.gaussian._polytope.MAX_DIM`): the exact Gaussian masses of
        d >= 5 regions take seconds to minutes per point and region, and are refused up front.
    hidden_sizes : tuple of int
    activation : {"relu", "leaky_relu", "prelu", "abs"}
        ``"prelu"``: per-unit negative slopes, which training holds fixed (every method trains
        the weights, biases and noise only): a new model starts them at ``negative_slope`` and
        trains as ``"leaky_relu"``; a PReLU decoder trained elsewhere (``from_decoder``,
        ``VAE(activation="prelu")``) keeps its own slopes, refined with ``warm_start=True``.
    negative_slope : float
    noise : {"isotropic", "diagonal"}
    method : {"auto", "em", "lbfgs", "gradient"}
        Training method (see ``fit``). ``"auto"`` (default): exact EM while it gains fast,
        then L-BFGS from where EM slowed down (:class:`exactdgn.training.AutoTrainer`).
    max_iter : int
        Most iterations per ``fit`` call (default 1000; the stopping rules below end nearly
        every run long before: planted [2,6,3] seed 0 needs 371 to converge, L-BFGS crawling
        along a valley out of a poor basin (621 with 20 curvature pairs), and was cut 0.08 nats
        short at the former 200).
    tol : float or "auto"
        Stop when the mean gain of the exact training log-likelihood per iteration, over the
        last ``n_iter_no_change`` iterations, is below ``tol`` nats per point. ``"auto"``
        (default): 1e-3 for ``latent_dim = 1``, 1e-5 otherwise. In d = 1 the runs at 1e-4 spent
        their last third to half gaining < 0.03 nats/point in training log-likelihood; 1e-3
        cut the toy fits' time ~1.5-2x for held-out NLLs 0-0.1 nats higher on most (still
        1.1-2.0 nats below the IWAE's; README "Training"); a slow staircase of plateaus fools
        it more easily. In d = 2 (planted [2,6,3], noise 0.1, 1,000 points, seeds 0-4) 1e-3
        stopped 0.06-0.33 nats short of the true decoder's held-out NLL; 1e-4 ended 0.084 /
        0.024 / 0.043 / 0.052 / 0.002 short (seed 0 at max_iter 200; 0.067 with more
        iterations); 1e-5 0.016 / 0.023 / 0.044 / 0.044 / 0.006 (all within 0.05) in 15-40 s
        of CPU instead of 8-16, and 0.011 / 0.023 / 0.045 / 0.040 / 0.006 in 11-27 s with
        L-BFGS keeping 100 curvature pairs (README "Training"). Expensive runs stop on
        ``rel_tol`` first.
    n_iter_no_change : int
        Window of that rule, and the fewest iterations a run takes (default 10; ``rel_tol``
        can end a run sooner): a start that gains little at first (near a saddle) is not
        mistaken for convergence.
    rel_tol : float or "auto"
        Diminishing returns: from the third iteration on, also stop when the last two
        iterations gained less than ``rel_tol`` times what the run has gained since its start,
        per iteration (0: off; two iterations, so one slow step between fast ones does not end
        the run: see :func:`exactdgn.training.converged`).
        ``"auto"`` (default): 0.04 for an *expensive* run (first E-step estimated above 1 s
        before training, :func:`exactdgn.training.estimate_training_cost`: wide d >= 2
        decoders on many points), else 0. On the digits with [2,32,32,64] the held-out NLL is
        flat after 2-3 full-data iterations (57.83, 57.46, 57.38) while the training
        likelihood still gains 0.5-1 nats/point per iteration (6-8 % of the run's gain), each
        iteration 2-3 E-steps of 10-20 s there; on MNIST all digits 28x28 with
        [2,32,32,784] the two-iteration gain fell to 5.9, 4.4, 3.8 and 0.9 % of the run's gain
        at iterations 3-6 while the held-out NLL went 791.0, 784.3, 782.6, 782.6: 0.04 stops
        there after 5 (README, Training).
    n_init : int
        Starts; the one with the highest final training likelihood is kept (default 1).
    init : {"auto", "pca", "random"}
        ``"pca"``: random hidden layers, output layer fitted to the probabilistic-PCA map; on
        symmetric data (circle, mixture) that start is a saddle that EM leaves late or never.
        ``"random"``: all layers random (He), the output rescaled to the data. ``"auto"``
        (default): both run ``n_iter_no_change`` iterations, the better one goes on (the
        first iterations of the run: ``history_`` holds the winner's). For ``latent_dim = 1``
        the PCA start and two random starts run 3 iterations each, and a start that gained
        less than ``tol`` per iteration (stuck, as the PCA start is on circle and mixture)
        goes on only if all are stuck: the 10-iteration scout cost ~40% of a default d = 1
        fit; the stuck PCA start is behind after 2-3 iterations in 11 of 12 cases (8 toy
        settings and digits [1,12,64], seeds 0-2); between two moving starts the 3- and
        10-iteration leaders differ in ~1 case of 4; the second random start and the
        stuck rule rescued seed 3 of circle and mixture, where the one random start
        was still behind the PCA saddle after 3 iterations (README "Training").
        In an *expensive* run
        (see ``rel_tol``) the starts scout for 5 iterations on a random subsample of 256
        training points instead, and the winner's parameters start the full-data run
        (``history_`` begins there; ``scout_logliks_`` holds the starts' subsample
        log-likelihoods): the first E-steps are the dearest (broad posteriors: ~2,000
        point-region pairs per point for [2,32,32,64] on the digits, ~200 after a few
        iterations), so they run on few points. With ``latent_dim >= 2`` the random start
        scouts only if the PCA start is stuck (gained less than ``tol`` per iteration): the
        PCA start won all 17 such scouts measured, by 1.3-6.3 nats/point on the digits
        ([2,32,32,64], two splits x 5 seeds), 12-23 on MNIST digit 4 14x14 ([2,32,32,196],
        5 seeds) and 57-59 on MNIST 28x28 ([2,32,32,784], 2 seeds), and the random start's
        scout was ~40% of the scouting time (README "Training").
    min_noise_std, random_state, warm_start, progress :
        Training options (see ``fit``). ``min_noise_std`` (in [1e-50, 1e50]) is a floor on
        every noise std; a warm start with a raised floor lifts the fitted noise to it first.
    weight_decay : float >= 0
        An L2 penalty on the weights (not the biases), 0 by default. Its scale is not the same
        in every method: ``"lbfgs"`` and ``"gradient"`` minimise ``-loglik + ½ weight_decay
        ||W||²`` per point; EM adds ``weight_decay`` as a ridge to each layer's least-squares
        M-step (the output layer's without the ``1/σ²`` the hidden layers' carry) and accepts
        a step by the exact log-likelihood alone. With ``weight_decay > 0`` the recorded
        exact log-likelihood of ``"lbfgs"`` / ``"auto"`` may decrease (the penalised
        objective does not), and the stopping rule no longer treats a drop as a restart.
    verbose : int
        0: silent (the ``exactdgn`` loggers as the application configured them). 1: during
        ``fit`` the package's INFO records go to stderr as well: the cost estimate, one line
        per iteration (log-likelihood, regions, step, seconds) and each start's end. 2: DEBUG
        records too (partition and integration details). The handler is removed when ``fit``
        returns; an application that already logs ``exactdgn`` at INFO sees those lines twice.
    prune_nats : float
        Exact pruning margin: skipped point-region pairs contribute less than
        ``exp(-prune_nats)`` relative to ``p(x)`` in total.
    chunk_bytes : int
        Memory bound of one block's (points x regions) work arrays, per worker thread
        (``EXACTDGN_NUM_THREADS``); larger inputs are split into blocks.
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
        ``log p(x)`` (of its rows without NaN; ``set_offset`` does it for a model built with
        ``from_decoder``); ``decision_function = score_samples - offset_`` and ``predict``
        gives +1 (inlier) or -1 (outlier), for complete rows. None: no threshold (``fit``
        drops the ``offset_`` of an earlier fit or ``set_offset``: it was a quantile of the
        former density).
    device : None, str or torch.device
        Where the exact likelihood, posterior statistics and training run: ``None`` (default)
        the numpy path; ``"cpu"``, ``"cuda"`` or a ``torch.device`` the torch backend on that
        device (float64, the same results to ~1e-13; latent_dim 1 and 2). ``fit`` keeps the
        E-step's pairs, the M-step's statistics and solves, the exact gradient and the
        optimisers' state there (only the new parameters come back; the partition is
        enumerated on the host). The backend covers complete data: a call (``fit``,
        ``score_samples``, ``posterior``, ``impute``, ...) whose ``X`` holds a NaN runs on the
        numpy path, all its rows (the same results). With an :mod:`exactdgn.dask` array each
        worker scores and E-steps its row chunks on that device (its own GPU, say). Results
        are returned as numpy arrays either way.

    Attributes
    ----------
    decoder_ : Decoder
    n_features_in_ : int
        D, the number of outputs (data columns).
    feature_names_in_ : ndarray of str
        The column names of a data frame given to ``fit`` (pandas, polars; only when all are
        strings, as scikit-learn); a frame with other names or another order is then an error.
    noise_std_ : ndarray of shape (D,)
    partition_ : Partition
    offset_ : float
        Outlier threshold on ``log p(x)`` (with ``contamination``).
    history_ : list of dict
        One row per iteration of the kept run (:class:`exactdgn.training.HistoryRow`; row 0
        the start), continued by ``warm_start=True``.
    n_iter_ : int
        Iterations of the last ``fit`` call.
    converged_ : bool
        Whether the kept run met the stopping rule (not ``max_iter``, not the callback).
    best_init_ : int
        The start kept out of ``n_init``; ``init_logliks_`` their final training
        log-likelihoods.
    scout_logliks_ : dict
        ``init="auto"``: each scouted start's training (or subsample) log-likelihood after its
        scouting iterations, for the kept run (absent when it did not scout).
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
        method: str = "auto",
        max_iter: int = 1000,
        tol: float | str = "auto",
        n_iter_no_change: int = 10,
        rel_tol="auto",
        n_init: int = 1,
        init: str = "auto",
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
        self.n_iter_no_change = n_iter_no_change
        self.rel_tol = rel_tol
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
            backend). ``noise`` defaults to ``"isotropic"`` for a scalar ``noise_std`` and
            ``"diagonal"`` for an array; pass ``noise="isotropic"`` with an array of one value
            (another ``ExactDGN``'s ``noise_std_``, always (D,)) to keep one noise parameter
            (``bic``, ``aic`` and a warm fit count and train one).
        """
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be an exactdgn.Decoder, got {type(decoder).__name__}")
        std = check_noise_std(noise_std, size=decoder.output_dim)
        noise = params.pop("noise", "isotropic" if std.ndim == 0 else "diagonal")
        if noise not in ("isotropic", "diagonal"):
            raise ValueError(f"noise={noise!r} is invalid: choose 'isotropic' or 'diagonal'")
        if noise == "isotropic" and std.ndim and np.ptp(std) > 0:
            raise ValueError(
                f"noise='isotropic' needs one noise std, but noise_std holds {std.size} values "
                f"from {std.min():.6g} to {std.max():.6g}: pass noise='diagonal' (or one value)"
            )
        why = dimension_limit(decoder.latent_dim)
        if why is not None:
            raise ValueError(why)
        acts = {a.kind for a in decoder.activations}
        slope = next(
            (float(np.mean(a.negative_slope)) for a in decoder.activations if a.kind != "relu"),
            0.0,
        )
        model = cls(
            latent_dim=decoder.latent_dim,
            hidden_sizes=tuple(decoder.hidden_sizes),
            activation=acts.pop() if len(acts) == 1 else ("mixed" if acts else "leaky_relu"),
            negative_slope=slope,
            noise=noise,
            **params,
        )
        model._set_state(decoder, std)  # (partition copies it: a caller's edit is not seen)
        model.preprocessing_ = None
        return model

    @classmethod
    def from_torch(cls, module, noise_std, input_shape=None, **params) -> ExactDGN:
        """A model around a PyTorch decoder (see :meth:`exactdgn.Decoder.from_torch`)."""
        return cls.from_decoder(
            Decoder.from_torch(module, input_shape=input_shape), noise_std, **params
        )

    def _set_state(self, decoder: Decoder, noise_std, part: Partition | None = None) -> None:
        D = decoder.output_dim
        self.n_features_in_ = D
        self.noise_std_ = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (D,)).copy()
        self.partition_ = part if part is not None else partition(decoder)
        self.decoder_ = self.partition_.decoder  # one object (partition() keeps its own copy)
        self._geom = None
        self._fitted_noise = self.noise  # the noise model of these parameters (warm starts)
        self._fitted_activation = (self.activation, self.negative_slope)

    def __getstate__(self):
        # the region geometry (and its missing-data caches) is derived from partition_ and
        # noise_std_, rebuilt on first use (geometry_): a pickled, copied or joblib-dumped model
        # leaves it behind (several times the fitted model's size), as the training data
        state = dict(super().__getstate__())  # a copy: object.__getstate__ is our __dict__
        state["_geom"] = None
        state.pop("_fit_data", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN marks a missing value (exact marginalisation)
        return tags

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "decoder_"):
            raise NotFittedError(
                "this ExactDGN has no decoder yet: call fit(X) or build it with "
                "ExactDGN.from_decoder / ExactDGN.from_torch"
            )

    def _check_X(
        self, X, name="X", allow_nan: bool = False, standardize: bool = True
    ) -> np.ndarray:
        """Validated ``X`` in the decoder's units (standardized when ``preprocessing_`` is set;
        with ``standardize=False`` in the data's own units)."""
        self._check_fitted()
        check_feature_names(self, X)
        X = check_array(
            X,
            name=name,
            n_features=self.decoder_.output_dim,
            allow_nan=allow_nan,
            estimator=type(self).__name__,
        )
        if X.shape[0] == 0:
            raise ValueError(f"{name} has no rows (shape {X.shape}): give at least one point")
        return self._standardized(X) if standardize else X

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        pre = getattr(self, "preprocessing_", None)
        return X if pre is None else (X - pre.mean_) / pre.scale_  # NaN stays NaN

    def _log_jacobian(self, X: np.ndarray):
        """(N,) ``log |det ∂x_std/∂x|`` of ``preprocessing_`` over each row's observed
        coordinates, ``-Σ_{j obs} log scale_j`` (0 without a preprocessing)."""
        pre = getattr(self, "preprocessing_", None)
        if pre is None:
            return 0.0
        return pre.log_abs_det_jacobian_rows(X)

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
        """Exact pairs of ``X`` (checked by the caller: ``_check_X``); rows with NaN are
        conditioned on their observed coordinates."""
        obs = check_missing(X)
        check_reach(geom, X)
        kw = {"prune_nats": self.prune_nats, "need_moments": need_moments, "check_input": False}
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
            Also return the estimated absolute error of each value: the integration error of
            the region masses (~1e-13 for ``latent_dim <= 2``), the rounding estimate of each
            pair's ``log κ`` (``8 ε`` times the size of its terms, at most 1e-10
            ``max(1, |log κ|)``: larger pairs are recomputed without cancellation; ~1e-11
            relative on MNIST decoders) and the pruning bound, weighted by the pairs'
            posterior probabilities.

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
        post = self._posterior(self._check_X(X, allow_nan=True))
        # its output moments in the data's units, as the rest of the model's API
        post._output_units = getattr(self, "preprocessing_", None)
        return post

    def _posterior(self, X: np.ndarray, need_moments: bool = False) -> ExactPosterior:
        """:meth:`posterior` of validated ``X`` in the decoder's units (``need_moments``: the
        pairs' truncated moments computed in the pairs' pass, as the E-step's; its output
        moments in the decoder's units too)."""
        return ExactPosterior(
            X,
            self.geometry_,
            self._pairs(X, need_moments),
            self.decoder_,
            self.noise_std_,
            self._log_jacobian(X),
        )

    # ------------------------------------------------------------------ outliers
    def set_offset(self, X) -> ExactDGN:
        """Set ``offset_`` so that the fraction ``contamination`` of ``X`` are outliers.

        ``fit`` calls it on the training data (its complete rows); call it for a model from
        ``from_decoder``. ``X`` must be complete (see :meth:`decision_function`).
        """
        self._check_contamination()
        if self.contamination is None:
            raise ValueError("set contamination (a fraction in (0, 0.5]) to set an offset")
        check_feature_names(self, X)
        X = _complete_rows(X)
        self.offset_ = contamination_offset(self.score_samples(X), self.contamination)
        self._offset_interrupted = False
        return self

    def decision_function(self, X) -> np.ndarray:
        """(N,) ``log p(x) - offset_``: negative for outliers (scikit-learn's convention).

        Rows with NaN are an error: ``offset_`` is a quantile of complete rows' ``log p(x)``,
        and ``log p(x_obs)`` of a row with fewer coordinates is on another scale (each missing
        value shifts it by about that coordinate's conditional entropy, which depends on the
        units), so the threshold would flag such rows by their missing count, not their
        density. Score them with :meth:`score_samples` among rows missing the same values.
        """
        if not hasattr(self, "offset_"):
            if self.contamination is not None:
                self._check_fitted()  # contamination is set: the model is what is missing
            if self.contamination is not None and getattr(self, "_offset_interrupted", False):
                raise NotFittedError(
                    f"no outlier threshold: the fit that sets it (contamination="
                    f"{self.contamination}) did not finish (interrupted?); call set_offset(X) "
                    "on the training data, or fit again (warm_start=True continues the run)"
                )
            if self.contamination is not None and hasattr(self, "decoder_"):
                # a model from from_decoder or load, or contamination set after its fit
                raise NotFittedError(
                    f"no outlier threshold: contamination={self.contamination} was not applied "
                    "to this model (fit sets offset_ when it ends); call set_offset(X) on the "
                    "training data"
                )
            raise NotFittedError(
                "no outlier threshold: set contamination before fit, or call set_offset(X) "
                "on reference data"
            )
        check_feature_names(self, X)
        return self.score_samples(_complete_rows(X)) - self.offset_

    def predict(self, X) -> np.ndarray:
        """(N,) +1 for inliers, -1 for outliers (``decision_function < 0``; complete rows)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)  # (a NaN score is no inlier)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` then ``predict(X)`` (needs ``contamination`` and complete rows)."""
        if self.contamination is None:
            raise ValueError("fit_predict needs contamination (a fraction in (0, 0.5])")
        if not hasattr(X, "__dask_graph__"):
            _complete_rows(X)  # before training: predict(X) would refuse them after it
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

        Notes
        -----
        A row with nothing observed conditions on nothing: it gets the model's marginal, as
        scikit-learn's imputers fill such rows: :meth:`mean` (``"mean"``), ``g(0)`` (the prior's
        mode, ``"mode"``), a draw of :meth:`sample` (``"sample"``) and the square root of the
        diagonal of :meth:`covariance` (``return_std``). :meth:`score_samples` and
        :meth:`posterior` refuse such rows.
        """
        if method not in self._IMPUTE_METHODS:
            raise ValueError(f"method={method!r} is invalid: use one of {self._IMPUTE_METHODS}")
        if not is_int(n_samples, 1):  # a bool is not a count (True failed inside numpy)
            raise ValueError(f"n_samples={n_samples!r} is invalid: use an integer >= 1")
        if n_samples != 1 and method != "sample":
            raise ValueError(
                f"n_samples={n_samples} is for method='sample' (draws per row); "
                f"method={method!r} gives one value per entry: drop n_samples"
            )
        keep = output_dtype(X)  # float32 / float16 in, the same out (as sklearn's imputers)
        raw = self._check_X(X, allow_nan=True, standardize=False)
        X = self._standardized(raw)
        miss = np.isnan(X)
        none = miss.all(axis=1)  # rows with nothing observed: the model's marginal
        seen = np.flatnonzero(~none) if none.any() else slice(None)
        Xs = X[seen]
        N, D = X.shape
        want_var = return_std or method == "mean"
        mean = np.empty((N, D)) if want_var else None
        var = np.empty((N, D)) if return_std else None
        if Xs.shape[0]:
            post = self._posterior(Xs, need_moments=want_var)
            if return_std:
                mean[seen], var[seen] = post.output_moments()
            elif method == "mean":
                mean[seen] = post.output_mean()
        if none.any() and want_var:
            m_prior, var_prior = _output_moments(self.partition_, full=False)
            mean[none] = m_prior
            if return_std:
                var[none] = np.maximum(var_prior, 0.0)
        out = X.copy()
        if method == "mean":
            out[miss] = mean[miss]
        elif method == "mode":
            Zmap = np.zeros((N, self.decoder_.latent_dim))  # the prior's mode where none seen
            if Xs.shape[0]:
                Zmap[seen] = post.mode
            out[miss] = self.decoder_(Zmap)[miss]
        else:
            rng = check_generator(random_state)
            Z = np.empty((n_samples, N, self.decoder_.latent_dim))
            if Xs.shape[0]:
                Z[:, seen] = post.sample((n_samples,), random_state=rng)  # (S, N, d)
            if none.any():
                Z[:, none] = rng.standard_normal((n_samples, int(none.sum()), Z.shape[-1]))
            G = self.decoder_(Z.reshape(-1, Z.shape[-1])).reshape(n_samples, *X.shape)
            G += rng.standard_normal(G.shape) * self.noise_std_
            out = np.where(miss, G, X)
            if n_samples == 1:
                out = out[0]
        # the observed values are returned as given (not through the preprocessing and back)
        out = np.where(miss, self._to_data_units(out), raw)
        if not return_std:
            return out.astype(keep, copy=False)
        std = np.where(miss, np.sqrt(var + self.noise_std_**2), 0.0)
        pre = getattr(self, "preprocessing_", None)
        std = std if pre is None else std * pre.scale_
        return out.astype(keep, copy=False), std.astype(keep, copy=False)

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
        return log_joint(self.decoder_, self.noise_std_, X, Z)

    # ------------------------------------------------------------------ generation
    def sample(self, n_samples: int = 1, random_state=None, return_latent: bool = False):
        """Draw ``x = g(z) + ε`` with ``z ~ N(0, I)``.

        Parameters
        ----------
        n_samples : int
            Number of points, >= 1.
        random_state : int, Generator or None
            Seed or generator (``numpy.random.default_rng``).
        return_latent : bool
            Also return the latent draws ``z``.

        Returns
        -------
        X : ndarray (n_samples, D)
        Z : ndarray (n_samples, d) (only with ``return_latent``)
        """
        self._check_fitted()
        if not is_int(n_samples, 1):  # a bool is not a count
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        n_samples = int(n_samples)
        rng = check_generator(random_state)
        Z = rng.standard_normal((n_samples, self.decoder_.latent_dim))
        X = self.decoder_(Z) + rng.standard_normal((n_samples, self.decoder_.output_dim)) * (
            self.noise_std_
        )
        X = self._to_data_units(X)
        return (X, Z) if return_latent else X

    def mean(self) -> np.ndarray:
        """(D,) exact ``E[x] = Σ_r P(r) (A_r E[z | r] + b_r)`` (prior region moments), in the
        data's units (as :meth:`sample`: through ``preprocessing_`` where a model has one)."""
        self._check_fitted()
        return self._to_data_units(_output_moments(self.partition_, full=False)[0])

    def covariance(self) -> np.ndarray:
        """(D, D) exact ``Cov[x]``: law of total covariance over regions, plus the noise, in
        the data's units (as :meth:`mean`)."""
        self._check_fitted()
        cov = _output_moments(self.partition_)[1] + np.diag(self.noise_std_**2)
        pre = getattr(self, "preprocessing_", None)
        return cov if pre is None else cov * np.outer(pre.scale_, pre.scale_)

    # ------------------------------------------------------------------ training
    _ACTIVATIONS = ("relu", "leaky_relu", "prelu", "abs")

    def _validate_params(self, loading: bool = False) -> None:
        """Refuse invalid parameters (``loading``: of a saved model, whose ``activation`` may
        name its decoder's kinds as ``from_decoder`` does: ``"mixed"``, ``"identity"``)."""

        def bad(name, what):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {what}")

        def is_real(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool)

        if not is_int(self.latent_dim, 1):
            bad("latent_dim", "use an integer >= 1")
        if dimension_limit(self.latent_dim) is not None:
            raise ValueError(dimension_limit(self.latent_dim, name="latent_dim"))
        try:
            hs = tuple(self.hidden_sizes)
        except TypeError:
            hs = (None,)
        if isinstance(self.hidden_sizes, str) or not all(is_int(h, 1) for h in hs):
            bad("hidden_sizes", "use a tuple of positive integers, e.g. (12,) or (32, 32)")
        warm_mixed = self.activation == "mixed" and self.warm_start and hasattr(self, "decoder_")
        built = loading and self.activation in ("mixed", "identity")
        if self.activation not in self._ACTIVATIONS and not (warm_mixed or built):
            what = f"choose one of {self._ACTIVATIONS}"
            if self.activation == "mixed":  # set by from_decoder for several activation kinds
                what = (
                    "the decoder from from_decoder / from_torch has several activation kinds, "
                    "so fit cannot build a new one like it: fit with warm_start=True to train "
                    f"that decoder, or {what}"
                )
            bad("activation", what)
        if self.noise not in ("isotropic", "diagonal"):
            bad("noise", "choose 'isotropic' or 'diagonal'")
        if self.method not in TRAINERS:
            bad("method", f"choose one of {tuple(TRAINERS)}")
        if not is_int(self.max_iter, 1):
            bad("max_iter", "use an integer >= 1")
        if not (self.tol == "auto" or (is_real(self.tol) and self.tol >= 0)):
            bad("tol", "use a non-negative float or 'auto'")
        if not is_int(self.n_iter_no_change, 1):
            bad("n_iter_no_change", "use an integer >= 1")
        if not (self.rel_tol == "auto" or (is_real(self.rel_tol) and self.rel_tol >= 0)):
            bad("rel_tol", "use 'auto' or a non-negative float")
        if not is_int(self.n_init, 1):
            bad("n_init", "use an integer >= 1")
        if self.device is not None:  # checked before training (it was at the first E-step)
            from .inference._torch_marginal import resolve_device

            resolve_device(self.device)
        if self.init not in ("auto", "pca", "random"):
            bad("init", "choose 'auto', 'pca' or 'random'")
        lo, hi = NOISE_STD_RANGE
        if not (is_real(self.min_noise_std) and lo <= self.min_noise_std <= hi):
            bad(
                "min_noise_std",
                f"use a float in [{lo:g}, {hi:g}] (the likelihood is unbounded as σ -> 0; "
                "outside that range the noise is beyond the float64 path)",
            )
        if not (is_real(self.weight_decay) and 0 <= self.weight_decay < np.inf):
            bad("weight_decay", "use a finite non-negative float")
        if not (is_real(self.overrelax) and 1 <= self.overrelax < np.inf):
            bad("overrelax", "use a finite float >= 1 (1 turns the over-relaxed steps off)")
        if not (is_real(self.prune_nats) and self.prune_nats >= 10):
            bad("prune_nats", "use >= 10 (40 keeps the likelihood exact to double precision)")
        if not is_int(self.chunk_bytes, 1):
            bad("chunk_bytes", "use a positive integer (bytes of one block's work arrays)")
        if not is_int(self.max_backtrack, 0):
            bad("max_backtrack", "use an integer >= 0")
        if not isinstance(self.warm_start, bool | np.bool_):
            bad("warm_start", "use True (continue the fitted run) or False")
        if not isinstance(self.progress, bool | np.bool_):
            bad("progress", "use True (show a progress bar) or False")
        if not (isinstance(self.verbose, bool | np.bool_) or is_int(self.verbose, 0)):
            bad("verbose", "use an integer >= 0")
        rs = self.random_state
        if isinstance(rs, np.random.Generator | np.random.RandomState):
            bad("random_state", "use an int or None for fit (it is saved in checkpoints)")
        if not (rs is None or is_int(rs, 0)):
            bad("random_state", "use None or an integer >= 0")
        self._check_contamination()

    def _check_contamination(self) -> None:
        c = self.contamination
        real = isinstance(c, float | int | np.floating | np.integer) and not isinstance(c, bool)
        if c is not None and not (real and 0.0 < c <= 0.5):
            raise ValueError(
                f"contamination={c!r} is invalid: use a fraction in (0, 0.5] (or None for no "
                "outlier threshold)"
            )

    def _e_step(self, decoder: Decoder, std, X: np.ndarray, partition: Partition | None = None):
        """The exact E-step of every trainer: partition, geometry and point-region statistics.

        This is the one place where training computes sufficient statistics: the pairs come
        from :meth:`_marginal` (NaN rows conditioned on their observed coordinates; a dask
        handle's pairs stay on the workers), the trainers reduce them with
        :meth:`_region_stats`. ``partition``: reuse this partition (already built for
        ``decoder``, e.g. after an output-layer-only update) instead of enumerating.

        Returns
        -------
        exactdgn.training.EStep
        """
        t0 = time.perf_counter()
        part = partition if partition is not None else _partition(decoder)
        t1 = time.perf_counter()
        geom = region_geometry(part, std)
        st = self._marginal(part, geom, X)
        t2 = time.perf_counter()
        return EStep(part, geom, st, t1 - t0, t2 - t1, loglik=_loglik(st), decoder=decoder, std=std)

    # -- distributed hook (issue 14): training touches the data only through these three
    # (`_marginal`, `_region_stats`, `_loglik`); X is either an array or a handle from
    # exactdgn.dask (`e_step` runs on a dask cluster and returns pairs held by the workers,
    # whose `region_stats()` are reduced there).
    def _marginal(self, part, geom, X):
        """E-step pairs with moments of ``X`` under ``geom`` (``part``: its partition); rows
        with NaN are conditioned on their observed coordinates. With ``device`` (complete
        data) the pairs stay on the device (:class:`TorchPairs` carrying the data tensor), so
        the M-step and the gradient run there too."""
        if hasattr(X, "e_step"):
            return X.e_step(
                part,
                geom,
                prune_nats=self.prune_nats,
                chunk_bytes=self.chunk_bytes,
                device=self.device,
            )
        if self._train_device(X) is not None:
            from .inference._torch_marginal import pairs_torch

            Xt = self._device_data(X)
            st = pairs_torch(
                geom,
                Xt,
                Xt.device,
                prune_nats=self.prune_nats,
                need_moments=True,
                chunk_bytes=self.chunk_bytes,
            )
            st.X = Xt
            return st
        return self._exact_pairs(geom, X, need_moments=True)

    def _train_device(self, X):
        """The torch device of training on ``X`` (None: the numpy path): ``device`` is set and
        ``X`` is an in-memory array without missing values. During a ``fit`` whose data hold
        a NaN, None for every ``X`` (a complete minibatch too: the trainer's parameters live
        where the whole data's rule put them)."""
        if self.device is None or not isinstance(X, np.ndarray) or np.isnan(X).any():
            return None
        fit_data = getattr(self, "_fit_data", None)
        if fit_data is not None and fit_data[2]:
            return None
        from .inference._torch_marginal import resolve_device

        return resolve_device(self.device)

    def _device_data(self, X: np.ndarray):
        """``X`` as a float64 tensor on the device; the training data of the running ``fit``
        is copied there once."""
        from .inference._torch_marginal import as_data_tensor

        dev = self._train_device(X)
        cache = getattr(self, "_fit_data", None)
        if cache is not None and cache[0] is X:
            if cache[1] is None:
                cache[1] = as_data_tensor(X, dev)
            return cache[1]
        return as_data_tensor(X, dev)

    @staticmethod
    def _region_stats(X, part, st, dec=None, std=None):
        """The M-step's :class:`~exactdgn.em.RegionStats` of E-step pairs ``st`` (of the
        parameters ``dec``, ``std``; missing values: ``em.missing_region_stats``; pairs on a
        torch device: ``TorchRegionStats`` on that device)."""
        if getattr(st, "X", None) is not None and hasattr(st, "numpy"):  # TorchPairs
            from .em._torch_steps import region_stats_t

            return region_stats_t(
                st.X, part.patterns, st.point, st.region, st.log_weight, st.mean, st.cov
            )
        if hasattr(st, "region_stats"):
            return st.region_stats()
        args = (part.patterns, st.point, st.region, st.log_weight, st.mean, st.cov)
        obs = check_missing(X)
        if obs is None:
            return region_stats(X, *args)
        return missing_region_stats(X, obs, dec, std, *args)

    def fit(self, X, y=None, checkpoint=None, callback=None) -> ExactDGN:
        """Maximise the exact log-likelihood (method ``"auto"``, ``"em"``, ``"lbfgs"`` or
        ``"gradient"``).

        EM: the E-step computes, for every point and region, the exact posterior region mass and
        truncated moments; the M-step solves every layer's least-squares problem in closed form
        with the activation patterns held at their E-step values, then the noise (a hidden
        layer of more than 8,192 weights and biases by conjugate gradients from its current
        weights, at most 100 iterations: ``Q`` rises, possibly short of its maximum). After each
        M-step the exact log-likelihood is recomputed with the new partition; if it went down,
        the step is halved along the segment between the old and new parameters until it does
        not (``history_["backtracks"]``), so the exact training log-likelihood never decreases.
        ``"lbfgs"``: full-batch quasi-Newton steps on the exact log-likelihood (each function
        evaluation is one exact E-step, gradients by Fisher's identity, strong-Wolfe line
        search; also monotone). ``"auto"`` runs EM while it gains fast and hands over to
        L-BFGS when EM's gain per E-step drops (see :class:`exactdgn.training.AutoTrainer`).
        ``"gradient"``: minibatch Adam, for data too many for full-batch E-steps.

        Stopping: after at least ``n_iter_no_change`` iterations, when the mean gain per
        iteration over the last ``n_iter_no_change`` iterations is below ``tol`` (nats per
        point; ``tol="auto"``: 1e-3 for ``latent_dim = 1``, 1e-5 otherwise), or at
        ``max_iter`` iterations of this call (``ConvergenceWarning``).

        Parameters
        ----------
        X : array_like (N, D), NaN where missing
            Missing values are integrated exactly: the E-step conditions on ``x_obs``, the
            M-step uses the missing coordinates' conditional moments, and the recorded
            ``loglik`` is the exact observed-data ``log p(x_obs)`` (never decreasing). The
            initialisation fills them with column means. Columns with nothing observed are
            an error.
            Or a dask array while a ``distributed.Client`` is active (``method`` ``"em"``,
            ``"lbfgs"`` or ``"auto"``, no NaN): the E-steps run chunk by chunk on the cluster
            (see :mod:`exactdgn.dask`).
        checkpoint : path, optional
            State is written there atomically when a start begins and ends, at most every few
            seconds of training in between (``_CHECKPOINT_SECONDS``, 5 s) and when training is
            interrupted (Ctrl-C, an error: the last completed iteration); calling ``fit`` again
            with the same arguments resumes from it and ends with the same result (the first
            save follows ``init="auto"``'s scouting, which a resume before it runs again; a
            process killed outright resumes from the last write and repeats the iterations
            since). A resume
            may raise ``max_iter`` and change ``tol`` (the stopping rule): the starts go on
            under the new ones and end as a run with them from the start would (with
            ``init="auto"``, whose choice of starts depends on them, the starts the checkpoint
            chose are kept, with a warning: a fresh run may choose others), a start that
            has already met the new rule stops where the checkpoint holds it, and a
            ``max_iter`` below the iterations run is refused. Other parameters or other data:
            :class:`exactdgn.io.CheckpointMismatchError` naming them.
        callback : callable, optional
            Called after every iteration as ``callback(iteration, snapshot)``; ``snapshot()``
            returns the current ``(Decoder, noise_std (D,))`` (as :class:`exactdgn.baselines.VAE`
            does). Training stops early, without a warning, if it returns ``False`` (or
            ``numpy.False_``; with ``n_init > 1`` the starts not yet run are skipped; the best
            one run is kept). Anything but None or a callable of two positional arguments is a
            ``TypeError`` before training starts.

        Returns
        -------
        self

        Notes
        -----
        ``warm_start=True`` continues the previous run: its parameters, its step-size state
        (EM's over-relaxation factor and gradient step; L-BFGS's curvature memory) and its
        ``history_`` (rows are appended). ``n_iter_`` counts the iterations of this call. The
        parameters that build a new model (``latent_dim``, ``hidden_sizes``, ``activation``,
        ``negative_slope``; ``init`` for the first of ``n_init`` starts) are not read then, as
        for :class:`exactdgn.baselines.VAE`; ``noise`` must be the fitted model's. A warm start
        with another ``method`` continues from the parameters with that method's fresh
        step-size state (the old method's state does not apply); the history's ``method``
        column shows the switch.
        Ctrl-C (``KeyboardInterrupt``) leaves the estimator at the last completed iteration
        and the checkpoint file intact, then propagates.
        """
        before = {k: v for k, v in vars(self).items() if k.endswith("_") and k[0] != "_"}
        interrupted = self.__dict__.get("_offset_interrupted", False)
        try:
            self._validate_params()
            with _log_to_stderr(self.verbose):
                return self._fit(X, checkpoint, callback)
        except BaseException as exc:
            if self.__dict__.get("history_") is before.get("history_"):
                # no iterate was kept (an error, or Ctrl-C before the first iteration): the
                # fitted attributes stay as they were (offset_, preprocessing_, names)
                for k in [k for k in vars(self) if k.endswith("_") and k[0] != "_"]:
                    del self.__dict__[k]
                self.__dict__.update(before)
                self._offset_interrupted = interrupted  # the threshold's state as well
                if isinstance(exc, KeyboardInterrupt):
                    logger.warning(
                        "training interrupted before an iteration completed: the model is unchanged"
                    )
            raise
        finally:
            self._fit_data = None  # no reference to the training data (or its device copy)

    def _fit(self, X, checkpoint, callback) -> ExactDGN:
        """The body of :meth:`fit`."""
        self._validate_params()
        check_callback(callback)
        data = X
        remote = None
        if hasattr(X, "__dask_graph__"):  # issue 14 hook: a dask array, E-steps on the cluster
            from .dask import remote_data

            X = remote = remote_data(X, method=self.method)
        else:
            X = check_array(X, name="X", allow_nan=True)
            if X.shape[0] == 0:
                raise ValueError(f"X has no rows (shape {X.shape}): give at least one point")
            if X.shape[1] == 0:
                raise ValueError(
                    f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: "
                    "give at least one feature"
                )
            check_training_values(X)
            # NaN = missing: exact EM on the observed-data likelihood (see exactdgn.em._missing)
            check_missing(X, columns=True)
            if self.contamination is not None and np.isnan(X).any(axis=1).all():
                raise ValueError(
                    "X has no complete row: contamination sets offset_ on the training rows "
                    "without NaN (log p(x_obs) of an incomplete row is on another scale); "
                    "give some complete rows, or fit with contamination=None"
                )
            # its device copy, made once (``_device_data``), and whether it holds a NaN (then
            # every E-step of this fit, minibatches included, runs on the numpy path)
            self._fit_data = [X, None, bool(np.isnan(X).any())]
        self.preprocessing_ = None  # fit works in the units of X
        warm = self.warm_start and hasattr(self, "decoder_")
        if warm and self.decoder_.output_dim != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} columns but the fitted model expects "
                f"{self.decoder_.output_dim}"
            )
        if warm:  # the run goes on with the columns in the order it was started with
            check_feature_names(self, data)
            self._check_warm_start()
        # a dask array's E-step runs chunk by chunk on the workers: no local memory bound
        cost = check_training_cost(self, X, in_memory=remote is None)
        self._expensive = cost.seconds > _EXPENSIVE_SECONDS
        if remote is None:
            fingerprint = hashlib.sha256(X.tobytes()).hexdigest() + f":{X.shape[0]}x{X.shape[1]}"
        else:
            fingerprint = remote.fingerprint
        config = {
            k: v for k, v in self.get_params().items() if k not in ("verbose", "progress", "device")
        }
        config["hidden_sizes"] = list(config["hidden_sizes"])
        ck = self._load_checkpoint(checkpoint, fingerprint, config) if checkpoint else None
        if ck:
            self._check_resume(checkpoint, ck)
        # a threshold belongs to the density it was a quantile of: set again below (with
        # contamination), never carried over to the new parameters
        self.__dict__.pop("offset_", None)
        self._offset_interrupted = False
        names = None if remote is not None else feature_names(data)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        seeds = np.random.default_rng(self.random_state).integers(0, 2**63 - 1, size=self.n_init)
        prior = ck["done"] if ck else []  # finished starts: kept, or going on (_goes_on)
        done = []
        # init="auto" records each start's scouts: the kept run's are kept (a warm run keeps
        # those of the run it continues), a fit without scouting has none
        scouts = {0: self.__dict__.pop("scout_logliks_", None)} if warm else {}
        if ck:  # the starts scouted before the checkpoint was written (not scouted again)
            scouts.update(ck["scouts"])
        saver = _CheckpointSaver(self._CHECKPOINT_SECONDS)
        try:
            for i in range(self.n_init):
                if any(r["stopped"] for r in done):  # the callback stopped training: no more
                    break
                if i < len(prior) and not self._goes_on(prior[i], ck["config"]):
                    if prior[i]["stopped"]:
                        logger.warning(
                            "checkpoint %s: start %d was stopped by a callback at iteration %d; "
                            "a resume keeps the stop (the run is returned as it was): to train "
                            "on, fit the returned model again with warm_start=True, or remove "
                            "the checkpoint to start over",
                            checkpoint,
                            i,
                            prior[i]["n_iter"],
                        )
                    done.append(prior[i])
                    continue
                if i < len(prior):  # a higher max_iter or another tol: the start goes on
                    cur = {**prior[i], "init": i, "iter": prior[i]["n_iter"]}
                elif ck and ck["current"] and ck["current"]["init"] == i:
                    cur = ck["current"]
                else:
                    cur = None
                self.__dict__.pop("scout_logliks_", None)
                trainer, hist, it0, replay = self._trainer(X, int(seeds[i]), cur, warm and i == 0)
                scouts[i] = getattr(self, "scout_logliks_", scouts.get(i))

                def save(run, i=i):
                    if checkpoint:
                        saver.offer(
                            lambda: self._save_checkpoint(
                                checkpoint, fingerprint, config, done, i, run, scouts
                            )
                        )

                # a resume under another stopping rule: the rule is checked before a step too
                recheck = cur is not None and any(
                    ck["config"].get(k) != config[k] for k in self._RESUME_MAY_CHANGE
                )
                done.append(
                    self._train(trainer, hist, it0, replay, save, callback, i, recheck, saver.flush)
                )
                if checkpoint:  # every finished start is written at once
                    saver.offer(
                        lambda: self._save_checkpoint(
                            checkpoint, fingerprint, config, done, None, None, scouts
                        ),
                        force=True,
                    )
        except KeyboardInterrupt as exc:
            # the model: the best of the starts run and the last completed iteration of the
            # interrupted one (none of either: fit leaves the model as it was)
            runs = [*done, *([exc.exactdgn_run] if hasattr(exc, "exactdgn_run") else [])]
            if runs:
                best = self._keep_best(runs, scouts)
                self._offset_interrupted = self.contamination is not None
                logger.warning(
                    "training interrupted: the model holds iteration %d of start %d (loglik "
                    "%.6f)%s",
                    self.history_[-1]["iter"],
                    best,
                    self.history_[-1]["loglik"],
                    (
                        " (a checkpoint keeps it: fit again with the same one to resume)"
                        if checkpoint
                        else " (fit again with warm_start=True to continue the run; the "
                        "command line resumes only a run given --checkpoint)"
                    )
                    + (
                        "; no outlier threshold yet: call set_offset(X) before predict"
                        if self.contamination is not None
                        else ""
                    ),
                )
            raise
        best = self._keep_best(done, scouts)
        if self.contamination is not None:
            if remote is None:  # the complete rows (decision_function takes no others)
                self.set_offset(X[~np.isnan(X).any(axis=1)])
            else:  # the training data's log p(x) computed on the cluster
                from .dask import score_samples

                log_px = score_samples(self, data).compute()
                self.offset_ = contamination_offset(log_px, self.contamination)
        if not (self.converged_ or done[best]["stopped"]):
            warnings.warn(
                f"{self.method} did not converge in max_iter={self.max_iter} iterations (mean "
                f"gain over the last {self.n_iter_no_change} iterations above tol={self._tol()}); "
                "increase max_iter or tol (command line: --max-iter, --tol), or continue the run: "
                "fit again with warm_start=True (command line: a run given --checkpoint goes on "
                "when run again with a higher --max-iter)",
                ConvergenceWarning,
                stacklevel=3,  # the caller of fit (fit -> _fit)
            )
        if remote is None and self.latent_dim <= 2:
            self._check_prior_mass(X)
        return self

    def _check_prior_mass(self, X: np.ndarray) -> None:
        """Warn when the fitted decoder maps prior mass far from the data
        (:func:`_far_from_data` above ``_FAR``): the likelihood loses only ``log 1 / (1 -
        mass)`` for it, but samples go there. d <= 2, where the prior region moments cost
        little."""
        far, j = _far_from_data(self.partition_, self.noise_std_, X)
        if far > _FAR:
            warnings.warn(
                f"the fitted decoder's outputs g(z), z ~ N(0, I), lie {far:.3g} data standard "
                f"deviations (root mean square) from the data's mean in column {j}: part of the "
                "prior is mapped far from the data, so samples land there; fit on with "
                "method='em' (warm_start=True) or from another random_state",
                ConvergenceWarning,
                stacklevel=4,  # the caller of fit (fit -> _fit -> here)
            )

    def _keep_best(self, done: list, scouts: dict) -> int:
        """Set the run of ``done`` with the highest final training likelihood; its index."""
        best = max(range(len(done)), key=lambda j: done[j]["history"][-1]["loglik"])
        self._set_run(done[best])
        self.best_init_ = best
        self.__dict__.pop("scout_logliks_", None)
        if scouts.get(best) is not None:
            self.scout_logliks_ = scouts[best]
        self.init_logliks_ = [r["history"][-1]["loglik"] for r in done]
        return best

    def _check_warm_start(self) -> None:
        """A warm start continues the fitted model, whose noise model ``noise`` must be, and
        whose architecture (``latent_dim``, ``hidden_sizes``, ``activation``,
        ``negative_slope``) the parameters must still describe."""
        fitted = getattr(self, "_fitted_noise", self.noise)
        if self.noise != fitted:
            raise ValueError(
                f"noise={self.noise!r} is invalid with warm_start=True: the fitted model has "
                f"{fitted} noise; set noise={fitted!r} to continue it (or warm_start=False to "
                "start anew)"
            )
        self._check_architecture("warm_start=True continues the fitted model")

    def _check_architecture(self, why: str) -> None:
        """Raise a ``ValueError`` if the architecture parameters no longer describe the fitted
        decoder (changed by ``set_params`` after ``fit``): ``why`` says what needs them."""
        dec = self.decoder_
        act, slope = getattr(self, "_fitted_activation", (self.activation, self.negative_slope))
        fitted = {
            "latent_dim": dec.latent_dim,
            "hidden_sizes": tuple(int(h) for h in dec.hidden_sizes),
            "activation": act,
            "negative_slope": slope,
        }
        if act == "relu":  # no negative slope to keep
            del fitted["negative_slope"]
        for name, value in fitted.items():
            now = getattr(self, name)
            if name == "hidden_sizes":
                now = tuple(np.atleast_1d(now).tolist())
            if now != value:
                raise ValueError(
                    f"{name}={now!r} but the fitted decoder has {name}={value!r} ({why}): set "
                    f"{name}={value!r} back, or fit with warm_start=False for a new model"
                )

    def _tol(self, tol=None) -> float:
        """``tol`` (or the given one), with ``"auto"`` resolved (1e-3 for ``latent_dim = 1``,
        1e-5 otherwise)."""
        tol = self.tol if tol is None else tol
        if tol == "auto":
            return 1e-3 if self.latent_dim == 1 else 1e-5
        return float(tol)

    def _check_resume(self, path, ck: dict) -> None:
        """A resume may raise ``max_iter``, not lower it below the iterations already run.

        With ``init="auto"`` a resume keeps the starts the checkpoint chose; their choice
        depends on ``tol`` and ``max_iter`` (the scouting's length and its "stuck" test), so a
        resume that changes them warns that a fresh run may choose other starts."""
        runs = [*ck["done"], *([ck["current"]] if ck["current"] else [])]
        ran = max((int(r["n_iter"]) for r in runs), default=0)
        if ran > self.max_iter:
            raise CheckpointMismatchError(
                f"max_iter={self.max_iter} is below the {ran} iterations checkpoint {path} has "
                "run: raise it, or remove the checkpoint to start over",
                ["max_iter"],
                ran=ran,
            )
        old = ck.get("config", {})
        moved = [k for k in self._RESUME_MAY_CHANGE if k in old and old[k] != getattr(self, k)]
        if self.init == "auto" and runs and moved:
            what = ", ".join(f"{k}={old[k]!r} (now {getattr(self, k)!r})" for k in moved)
            warnings.warn(
                f"resuming checkpoint {path} with {what}: its starts were chosen by "
                "init='auto' under the old values and are kept; a fresh run with the new ones "
                "may choose other starts (remove the checkpoint to choose again)",
                UserWarning,
                stacklevel=4,
            )

    def _stops(self, lls: list, tol: float) -> bool:
        """The stopping rule (:func:`exactdgn.training.converged`) on the log-likelihoods
        ``lls`` of a start; monotone for EM, auto and L-BFGS without weight decay."""
        monotone = self.method in ("em", "auto", "lbfgs") and not self.weight_decay
        return converged(
            lls,
            tol=tol,
            window=self.n_iter_no_change,
            rel_tol=self._rel_tol(),
            monotone=monotone,
        )

    def _goes_on(self, run: dict, old: dict) -> bool:
        """Whether a finished start of a checkpoint written with the parameters ``old`` goes on
        under this fit's stopping rule: it ended at a lower ``max_iter``, or met the rule of a
        larger ``tol`` and not this one (a start the method itself finished, or the callback
        stopped, stays as it is)."""
        if run["stopped"] or run["state"] is None:
            return False
        lls = [h["loglik"] for h in run["history"]]

        def rule(tol):
            return self._stops(lls, tol)

        if run["converged"]:
            return rule(self._tol(old["tol"])) and not rule(self._tol())
        return int(run["n_iter"]) < self.max_iter

    def _set_run(self, run: dict) -> None:
        self._set_state(run["decoder"], run["std"])
        self.n_iter_ = int(run["n_iter"])
        self.converged_ = bool(run["converged"])
        self.history_ = run["history"]
        self._train_state = {"method": self.method, "state": to_host(run["state"])}

    def _trainer(self, X, seed: int, cur: dict | None, warm: bool):
        """The trainer of one start: resumed from a checkpoint, warm, or initialised."""
        state = None
        if cur is not None:
            dec, std, hist, it0, state = (
                cur["decoder"],
                cur["std"],
                cur["history"],
                cur["iter"],
                cur["state"],
            )
        elif warm:
            dec, std, hist, it0 = self.decoder_.copy(), self.noise_std_.copy(), [], 0
            # a raised min_noise_std holds from the first step (EM kept the old, smaller
            # noise: every candidate at the floor lost likelihood and was rejected)
            std = np.maximum(std, self.min_noise_std)
            prev = getattr(self, "_train_state", None)
            if getattr(self, "history_", None):
                hist = [dict(h) for h in self.history_]
            if prev is not None and prev["method"] == self.method:
                state = prev["state"]
        elif self.init == "auto":
            return self._scout(X, seed)
        else:
            dec, std = self._initial(X, self.init, seed)
            hist, it0 = [], 0
        trainer = TRAINERS[self.method](self, X, dec, std, seed=seed)
        if state is not None:
            trainer.load_state_dict(state)
        return trainer, hist, it0, []

    def _initial(self, X, init: str, seed: int):
        """Starting parameters: missing values (NaN) filled with their column means; a dask
        handle initialises from moments reduced on the cluster (``remote.initialize``)."""
        if hasattr(X, "initialize"):
            init_fn = X.initialize
        else:
            init_fn = initialize
            obs = check_missing(X)
            if obs is not None:
                X = np.where(obs, X, np.nanmean(X, axis=0))
        return init_fn(
            X,
            latent_dim=self.latent_dim,
            hidden_sizes=self.hidden_sizes,
            activation=self.activation,
            negative_slope=self.negative_slope,
            init=init,
            diagonal=self.noise == "diagonal",
            min_std=self.min_noise_std,
            rng=np.random.default_rng(seed),
        )

    _SCOUT_ITERS_1D = 3  # scouting iterations per start with latent_dim = 1

    def _rel_tol(self) -> float:
        if self.rel_tol == "auto":
            return _REL_TOL if getattr(self, "_expensive", False) else 0.0
        return float(self.rel_tol)

    def _scout_rows(self, X, seed: int):
        """Rows of the subsample an expensive in-memory run scouts on (None: scout on X)."""
        if not getattr(self, "_expensive", False) or hasattr(X, "e_step"):
            return None
        if X.shape[0] <= 2 * _SCOUT_POINTS:
            return None
        rng = np.random.default_rng([seed, 1])
        return np.sort(rng.choice(X.shape[0], _SCOUT_POINTS, replace=False))

    def _scout(self, X, seed: int):
        """``init="auto"``: the PCA and the random start each run ``n_iter_no_change``
        iterations; the one with the higher exact training likelihood goes on (its trainer,
        history and snapshots for the callback). An expensive run scouts on a subsample
        (:meth:`_scout_rows`) and the winner's parameters start a new trainer on all of X.

        ``latent_dim = 1``: the PCA start and two random starts run 3 iterations each, and a
        start that gained less than ``tol`` per iteration (stuck at a fixed point, as the PCA
        start is on symmetric data) goes on only if every start is stuck. An expensive run with
        ``latent_dim >= 2`` scouts the random start only if the PCA start is stuck.
        """
        d1 = self.latent_dim == 1
        k = min(self._SCOUT_ITERS_1D if d1 else self.n_iter_no_change, self.max_iter)
        rows = self._scout_rows(X, seed)
        if rows is not None:
            k = min(k, _SCOUT_ITERS)
        Xs = X if rows is None else X[rows]
        expensive_2d = not d1 and getattr(self, "_expensive", False)
        starts = [("pca", "pca", seed), ("random", "random", seed)]
        if d1:
            second = int(np.random.default_rng([seed, 1]).integers(2**63 - 1))
            starts.append(("random-2", "random", second))
        best, best_key = None, None
        self.scout_logliks_ = {}
        for name, init, s in starts:
            trainer = TRAINERS[self.method](self, Xs, *self._initial(X, init, s), seed=seed)
            hist, snaps = [trainer.start().as_dict()], []
            for it in range(1, k + 1):
                row = trainer.step()
                row.iter = it
                hist.append(row.as_dict())
                snaps.append((it, trainer.decoder, trainer.std))
                logger.info(
                    "%s scout %s iter %d: loglik %.6f regions %d (%.2fs)",
                    row.method,
                    name,
                    it,
                    row.loglik,
                    row.n_regions,
                    row.seconds,
                )
                if trainer.finished:
                    break
            logger.info("init %s: loglik %.6f after %d iterations", init, trainer.loglik, it)
            self.scout_logliks_[name] = float(trainer.loglik)
            gained = trainer.loglik - hist[0]["loglik"] >= k * self._tol()
            moving = not d1 or gained
            key = (moving, trainer.loglik)
            if best is None or key > best_key:
                best, best_key = (trainer, hist, len(hist) - 1, snaps), key
            if expensive_2d and gained:  # the PCA start moves: no random start (see init)
                break
        if rows is not None:  # the winner's parameters start the run on all of X
            won = best[0]
            return TRAINERS[self.method](self, X, won.decoder, won.std, seed=seed), [], 0, []
        return best

    def _train(
        self,
        trainer,
        hist,
        it0,
        replay,
        save,
        callback,
        init_index: int,
        recheck=False,
        flush=None,
    ) -> dict:
        """Run one start to convergence, ``max_iter`` or a ``False`` from ``callback``.

        ``save(run)`` is offered every iteration's run (a checkpoint writes some of them, see
        :class:`_CheckpointSaver`); ``flush()`` writes the last one offered when an exception
        (Ctrl-C) ends the start, so the checkpoint holds the last completed iteration.

        ``recheck``: the start (resumed from a checkpoint under another stopping rule) may
        meet the rule already: it then ends where it is, without a step.

        ``replay``: ``(iteration, decoder, std)`` of iterations already run (by ``_scout``),
        shown to ``callback`` first. A ``KeyboardInterrupt`` propagates with the run of the
        last completed iteration as its ``exactdgn_run`` (``fit`` keeps the best run).
        """
        if not replay:  # a scouted trainer (init="auto") has started: no second E-step
            row = trainer.start()
            if not hist:
                hist.append(row.as_dict())

        def run(it, converged=False, stopped=False):
            return {
                "decoder": trainer.decoder,
                "std": trainer.std,
                "history": list(hist),  # the rows so far (hist grows on)
                "n_iter": it,
                "converged": converged,
                "stopped": stopped,
                "state": trainer.state_dict(),
            }

        last = run(it0)
        save(last)
        lls = [h["loglik"] for h in hist]
        if recheck and self._stops(lls, self._tol()):
            last["converged"] = True
            return last
        bar = self._progress_bar(self.max_iter, f"{self.method} init {init_index}")
        bar.update(it0)
        try:
            for it, dec, std in replay if callback is not None else []:
                if callback_stops(callback(it, lambda d=dec, s=std: (d.copy(), s.copy()))):
                    # stopped within the scout's iterations: the model of that iteration (the
                    # trainer's step-size state belongs to a later one: a warm start rebuilds
                    # it)
                    last.update(decoder=dec, std=std, n_iter=it, stopped=True, state=None)
                    last["history"] = [h for h in hist if h["iter"] <= it]
                    return last
            for it in range(it0 + 1, self.max_iter + 1):
                row = trainer.step()
                row.iter = hist[-1]["iter"] + 1
                hist.append(row.as_dict())
                lls.append(row.loglik)
                done = trainer.finished or self._stops(lls, self._tol())
                last = run(it, converged=done)
                save(last)
                bar.update(1)
                bar.set_postfix(nll=f"{-row.loglik:.4f}", regions=row.n_regions, refresh=False)
                logger.info(
                    "%s init %d iter %d: loglik %.6f regions %d step %.3g (%.2fs)",
                    row.method,
                    init_index,
                    row.iter,
                    row.loglik,
                    row.n_regions,
                    row.step,
                    row.seconds,
                )
                if callback is not None:
                    dec, std = trainer.decoder, trainer.std
                    if callback_stops(
                        callback(row.iter, lambda d=dec, s=std: (d.copy(), s.copy()))
                    ):
                        last["stopped"] = True
                        break
                if done:
                    break
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                exc.exactdgn_run = last
            if flush is not None:
                try:
                    flush()  # the checkpoint: the last completed iteration
                except (Exception, KeyboardInterrupt) as err:  # the one that ends the run is shown
                    logger.warning("the checkpoint could not be written on the way out: %s", err)
            raise
        finally:
            bar.close()
        return last

    def _progress_bar(self, total, desc):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def exact_gradient(self, X) -> list[np.ndarray]:
        """Exact gradient of ``Σ_n log p(x_n)`` w.r.t. ``[W_1, c_1, ..., W_L, c_L, log σ]``.

        By Fisher's identity (see :mod:`exactdgn.em._gradient`). ``log σ`` is a scalar for
        isotropic noise and a (D,) vector for diagonal noise.
        """
        X = self._check_X(X)
        if self._train_device(X) is not None:  # pairs, statistics and gradient on the device
            rs = self._region_stats(X, self.partition_, self._marginal(None, self.geometry_, X))
        else:
            st = self._pairs(X, need_moments=True)
            rs = region_stats(
                X, self.partition_.patterns, st.point, st.region, st.log_weight, st.mean, st.cov
            )
        std = self.noise_std_ if self.noise == "diagonal" else self.noise_std_[0]
        return exact_gradient(self.decoder_, std, rs, X, self.chunk_bytes)

    # ------------------------------------------------------------------ persistence
    _CHECKPOINT_VERSION = 2
    #: a checkpoint is written at most every this many seconds of training (and when a start
    #: ends or training is interrupted); see :class:`_CheckpointSaver`
    _CHECKPOINT_SECONDS = 5.0

    def _save_checkpoint(
        self, path, fingerprint, config, done, init_i, current, scouts=None
    ) -> None:
        """Finished starts and the current one: parameters, history, trainer state, and the
        starts' scouting log-likelihoods (``scout_logliks_`` of a resumed run)."""
        arrays: dict = {}
        meta = {
            "kind": "checkpoint",
            "checkpoint_version": self._CHECKPOINT_VERSION,
            "fingerprint": fingerprint,
            "config": config,
            "method": self.method,
        }

        def pack(run, prefix):
            a, m = decoder_to_arrays(run["decoder"], prefix=f"{prefix}_")
            arrays.update(a)
            arrays[f"{prefix}_std"] = np.asarray(run["std"])
            out = {k: run[k] for k in ("history", "n_iter", "converged", "stopped")}
            out["decoder"] = m
            out["state"] = pack_state(run["state"], arrays, f"{prefix}_state_")
            return out

        meta["done"] = [pack(r, f"done{j}") for j, r in enumerate(done)]
        meta["current"] = None
        meta["scouts"] = {str(i): v for i, v in (scouts or {}).items() if v is not None}
        if init_i is not None:
            meta["current"] = {"init": init_i, **pack(current, "cur")}
        write_npz_atomic(path, arrays, meta)

    def _load_checkpoint(self, path, fingerprint, config):
        from pathlib import Path

        if not Path(path).exists():
            return None
        arrays, meta = read_npz(path)
        if meta.get("kind") != "checkpoint":
            raise ModelFileError(f"{path} is not a training checkpoint")
        if meta.get("checkpoint_version") != self._CHECKPOINT_VERSION:
            raise ModelFileError(
                f"checkpoint {path} has format {meta.get('checkpoint_version', 1)}, this exactdgn "
                f"writes format {self._CHECKPOINT_VERSION}; remove it to start over"
            )
        with _as_file_error(f"checkpoint {path} is corrupt", "; remove it to start over"):
            return self._checkpoint_runs(path, arrays, meta, fingerprint, config)

    #: the parameters a resume may change (the stopping rule's; see ``fit``'s checkpoint)
    _RESUME_MAY_CHANGE = ("max_iter", "tol")

    @classmethod
    def _checkpoint_runs(cls, path, arrays: dict, meta: dict, fingerprint, config) -> dict:
        """The finished and current starts of a checkpoint's arrays and metadata, and the
        parameters it was written with (``config``)."""
        old = meta["config"]
        changed = sorted(
            k
            for k in {*old, *config}
            if k not in cls._RESUME_MAY_CHANGE and old.get(k) != config.get(k)
        )
        if changed:
            what = ", ".join(f"{k}={old.get(k)!r} (now {config.get(k)!r})" for k in changed)
            raise CheckpointMismatchError(
                f"checkpoint {path} was written for other parameters: {what}; remove it or use "
                "another path",
                changed,
            )
        if meta["fingerprint"] != fingerprint:
            how = ""
            if str(fingerprint).startswith("dask:") and str(meta["fingerprint"]).startswith(
                "dask:"
            ):
                how = (
                    " (a dask array is known by its graph's name, X.name, not by its values: "
                    "one rebuilt from impure tasks, e.g. dask.delayed without pure=True, gets a "
                    "new name each time; build it with pure=True, da.from_array(..., name=...) "
                    "or exactdgn.dask.read_npy to resume)"
                )
            raise CheckpointMismatchError(
                f"checkpoint {path} was written for other data{how}; remove it or use another path",
                ["X"],
            )

        def unpack(r, prefix):
            return {
                **{k: r[k] for k in ("history", "n_iter", "converged", "stopped")},
                "decoder": decoder_from_arrays(arrays, r["decoder"], prefix=f"{prefix}_"),
                "std": arrays[f"{prefix}_std"],
                "state": unpack_state(r["state"], arrays),
            }

        done = [unpack(r, f"done{j}") for j, r in enumerate(meta["done"])]
        cur = meta["current"]
        if cur is not None:
            cur = {**unpack(cur, "cur"), "init": cur["init"], "iter": cur["n_iter"]}
        scouts = {int(i): v for i, v in meta.get("scouts", {}).items()}
        return {"done": done, "current": cur, "config": old, "scouts": scouts}

    _START_ATTRS = ("best_init_", "init_logliks_", "scout_logliks_")

    def save(self, path) -> None:
        """Save a fitted model (npz arrays + JSON metadata with a version; no pickle).

        The file keeps the training state too: a loaded model fitted again with
        ``warm_start=True`` continues the same run. Refused when ``set_params`` has changed the
        architecture parameters since the fit (the file's would not describe its decoder).
        """
        self._check_fitted()
        self._check_architecture("save writes the fitted model")
        arrays, dmeta = decoder_to_arrays(self.decoder_)
        arrays["noise_std"] = self.noise_std_
        params = {k: v for k, v in self.get_params().items()}
        params["hidden_sizes"] = list(params["hidden_sizes"])
        if params.get("device") is not None:
            params["device"] = str(params["device"])
        if isinstance(params.get("random_state"), np.random.Generator | np.random.RandomState):
            params["random_state"] = None
        meta = {
            "kind": "model",
            "decoder": dmeta,
            "params": params,
            "history": getattr(self, "history_", None),
            "n_iter": getattr(self, "n_iter_", None),
            "converged": getattr(self, "converged_", None),
            "offset": getattr(self, "offset_", None),
            "starts": {  # the n_init starts' record
                k: getattr(self, k) for k in self._START_ATTRS if hasattr(self, k)
            },
            "feature_names": (
                self.feature_names_in_.tolist() if hasattr(self, "feature_names_in_") else None
            ),
            "preprocessing": (
                self.preprocessing_.to_dict()
                if getattr(self, "preprocessing_", None) is not None
                else None
            ),
        }
        ts = getattr(self, "_train_state", None)
        if ts is not None:  # so that warm_start=True after load continues the same run
            meta["train_state"] = {
                "method": ts["method"],
                "state": pack_state(ts["state"], arrays, "train_state_"),
            }
        write_npz_atomic(path, arrays, meta)

    @classmethod
    def load(cls, path) -> ExactDGN:
        """Load a model written by :meth:`save` (clear error on a corrupt or foreign file).

        ``path`` is a model ``.npz`` or a run directory of ``exactdgn fit`` (its ``model.npz``).
        A saved model carries its standardization (``preprocessing_``, or none); for files
        saved before models carried it, the ``standardizer`` of the run's ``config.json`` is
        attached.
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
        with _as_file_error(f"{path}: incomplete or inconsistent model file"):
            return cls._from_file(path, arrays, meta)

    @classmethod
    def _from_file(cls, path, arrays: dict, meta: dict) -> ExactDGN:
        """The model of a file's arrays and metadata (``load``); any inconsistency raises."""
        dec = decoder_from_arrays(arrays, meta["decoder"])
        params = dict(meta["params"])
        params["hidden_sizes"] = tuple(params["hidden_sizes"])
        model = cls(**params)
        model._validate_params(loading=True)
        found = {"latent_dim": dec.latent_dim, "hidden_sizes": tuple(dec.hidden_sizes)}
        for name, value in found.items():
            if tuple(np.atleast_1d(params[name])) != tuple(np.atleast_1d(value)):
                raise ValueError(f"{name}={params[name]} but its decoder has {value}")
        std = np.asarray(arrays["noise_std"], dtype=np.float64)
        if std.shape not in ((1,), (dec.output_dim,)) or not np.all(np.isfinite(std) & (std > 0)):
            raise ValueError(
                f"noise_std must hold 1 or {dec.output_dim} positive finite values (got shape "
                f"{std.shape}, smallest {np.min(std, initial=np.inf)})"
            )
        model._set_state(dec, std)
        if meta.get("history") is not None:
            hist = meta["history"]
            if not (isinstance(hist, list) and all(isinstance(h, dict) for h in hist)):
                raise ValueError(f"history is not a list of rows (got {type(hist).__name__})")
            model.history_ = hist
            model.n_iter_ = int(meta["n_iter"])
            model.converged_ = bool(meta["converged"])
        starts = meta.get("starts", {})  # absent in files saved before it was kept
        if not (isinstance(starts, dict) and set(starts) <= set(cls._START_ATTRS)):
            raise ValueError(f"starts is not a record of the starts (got {starts!r})")
        for k, v in starts.items():
            setattr(model, k, v)
        ts = meta.get("train_state")
        if ts is not None:
            try:
                state = unpack_state(ts["state"], arrays)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"train_state is corrupt ({exc!r})") from exc
            model._train_state = {"method": ts["method"], "state": state}
        if meta.get("offset") is not None:
            try:
                model.offset_ = float(meta["offset"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"offset is not a number ({meta['offset']!r})") from exc
        names = meta.get("feature_names")
        if names is not None:
            if len(names) != dec.output_dim:
                raise ValueError(
                    f"{len(names)} feature_names for a decoder with {dec.output_dim} outputs"
                )
            model.feature_names_in_ = np.asarray(names, dtype=object)
        pre = meta.get("preprocessing")
        if "preprocessing" not in meta:  # a file from before models carried it: the run's
            pre = _run_config(path.parent / "config.json").get("standardizer")
        model.preprocessing_ = None
        if pre is not None:
            from .datasets import Standardizer

            model.preprocessing_ = Standardizer.from_dict(pre)
            if model.preprocessing_.n_features_in_ != dec.output_dim:
                raise ValueError(
                    f"its standardization has {model.preprocessing_.n_features_in_} features "
                    f"for a decoder with {dec.output_dim} outputs"
                )
        return model

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        self._check_fitted()
        fitted = getattr(self, "_fitted_noise", self.noise)  # not a noise set after the fit
        n_noise = 1 if fitted == "isotropic" else self.decoder_.output_dim
        return self.decoder_.n_params + n_noise

    def bic(self, X) -> float:
        """Bayesian information criterion ``-2 log L + k log N`` (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * ll.sum() + self._n_parameters() * np.log(len(ll)))

    def aic(self, X) -> float:
        """Akaike information criterion ``-2 log L + 2k`` (lower is better)."""
        return float(-2 * self.score_samples(X).sum() + 2 * self._n_parameters())


class _CheckpointSaver:
    """Writes a training checkpoint at most every ``every`` seconds (and at most ~5% of the
    training time: never sooner than 20 times the last write took after it), plus whenever
    asked to (``force``, a finished start) and on the way out of an interrupted start
    (:meth:`flush`).

    Every iteration offers its write (a function); one that is not due is kept as pending and
    replaced by the next. Writing the whole state after every iteration (L-BFGS's 200 curvature
    vectors, the history) and ``fsync``-ing it made a small run 2.7x slower. A run killed
    without the chance to flush (SIGKILL, a power cut) resumes from the last written
    iteration, up to ``every`` seconds back, and ends bitwise as it would have: training is
    deterministic.
    """

    def __init__(self, every: float):
        self.every = float(every)
        self.wait = self.every
        self.pending = None
        self.last: float | None = None  # when the last write ended (time.perf_counter)

    def offer(self, write, force: bool = False) -> None:
        """Keep ``write`` as the latest state and call it if a write is due (or ``force``)."""
        self.pending = write
        if force or self.last is None or time.perf_counter() - self.last >= self.wait:
            self.flush()

    def flush(self) -> None:
        """Write the pending state, if any (it stays pending if the write fails)."""
        if self.pending is None:
            return
        t0 = time.perf_counter()
        self.pending()
        self.pending = None
        self.last = time.perf_counter()
        self.wait = max(self.every, 20.0 * (self.last - t0))


def _complete_rows(X) -> np.ndarray:
    """``X`` (validated, float64) if it has no NaN, else a ValueError naming the rows that have:
    the outlier threshold is on complete rows' ``log p(x)`` (see ``decision_function``)."""
    X = check_array(X, name="X", allow_nan=True)
    rows = np.flatnonzero(np.isnan(X).any(axis=1))
    if rows.size:
        raise ValueError(
            f"X has {rows.size} rows with NaN (first: {rows[:5].tolist()}): the outlier "
            "threshold offset_ is a quantile of complete rows' log p(x), and log p(x_obs) of "
            "a row with missing values is on another scale; drop those rows, or compare their "
            "score_samples with rows missing the same values"
        )
    return X


def _loglik(st) -> float:
    """Mean exact log-likelihood of E-step pairs (issue 14 hook: remote pairs carry it)."""
    return float(st.loglik) if hasattr(st, "loglik") else float(st.log_px.mean())


@contextlib.contextmanager
def _as_file_error(what: str, advice: str = ""):
    """A KeyError, TypeError, ... of reading a file's fields in the block becomes one
    :class:`ModelFileError` ``"{what} ({why}){advice}"`` (a ModelFileError passes through)."""
    try:
        yield
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        why = f"missing {exc}" if type(exc) is KeyError else str(exc)
        raise ModelFileError(f"{what} ({why}){advice}") from exc


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
