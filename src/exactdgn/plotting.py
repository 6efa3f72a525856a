"""Plots of partitions, densities and posteriors; each function takes and returns an ``ax``.

matplotlib is imported lazily, inside the functions.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from ._validation import is_int
from .partition import Partition

__all__ = [
    "loglog_slope",
    "plot_curves",
    "plot_images",
    "plot_loglog_fit",
    "plot_partition",
    "plot_posterior_1d",
    "plot_posterior_2d",
    "plot_samples_2d",
    "region_polygon",
]


def _closes_its_figure_on_error(func):
    """Close the figure ``func`` opened (called without ``ax``) when it raises: a refused call
    leaves no open figure behind."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        plt = sys.modules.get("matplotlib.pyplot")
        before = set(plt.get_fignums()) if plt is not None else set()
        try:
            return func(*args, **kwargs)
        except Exception:
            plt = sys.modules.get("matplotlib.pyplot")
            for num in set(plt.get_fignums()) - before if plt is not None else ():
                plt.close(num)
            raise

    return wrapper


def _check_lim(lim, name: str = "lim") -> float:
    lim = float(lim)
    if not (np.isfinite(lim) and lim > 0):
        raise ValueError(
            f"{name} must be a finite number > 0 (the half-width of the view), got {lim}"
        )
    return lim


def _check_count(value, name: str, low: int) -> int:
    if not is_int(value, low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_model(model, latent_dim: int, func: str) -> None:
    """A fitted model (scikit-learn's NotFittedError otherwise) of the given latent dimension."""
    from sklearn.utils.validation import check_is_fitted

    if not callable(getattr(model, "posterior", None)):  # e.g. a VAE: no exact posterior
        raise TypeError(
            f"{func} needs a fitted ExactDGN, got {type(model).__name__}: for a VAE / IWAE "
            "plot its exact model, exactdgn.evaluation.vae_to_exact(vae)"
        )
    check_is_fitted(model, "decoder_")
    if model.decoder_.latent_dim != latent_dim:
        raise ValueError(
            f"{func} needs a latent_dim = {latent_dim} model, got latent_dim = "
            f"{model.decoder_.latent_dim}"
        )


def _new_ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 5))
    return ax


def region_polygon(part: Partition, r: int, far: float) -> np.ndarray:
    """(k, 2) drawable polygon of a 2-D region, rays extended to length ``far``.

    Only for drawing: unbounded regions are cut off far outside the view.
    """
    if part.latent_dim != 2:
        raise ValueError(f"region_polygon needs a latent_dim = 2 partition, got {part.latent_dim}")
    G = part._generators(r)
    if len(G) == 0:
        return np.array([[-far, -far], [far, -far], [far, far], [-far, far]])
    fin = np.nonzero(G[:, 2] != 0)[0]
    if len(fin) == 0:
        return np.array([[-far, -far], [far, -far], [far, far], [-far, far]])
    n = len(G)
    pts = []
    for k in range(n):
        if G[k, 2] != 0:
            pts.append(G[k, :2])
            continue
        prev_k = (k - 1) % n
        next_k = (k + 1) % n
        prev_pt = G[fin[fin < k][-1] if np.any(fin < k) else fin[-1], :2]
        next_pt = G[fin[fin > k][0] if np.any(fin > k) else fin[0], :2]
        if G[prev_k, 2] != 0:
            pts.append(prev_pt + far * G[k, :2])
        if G[next_k, 2] != 0:
            pts.append(next_pt + far * G[k, :2])
        if G[prev_k, 2] == 0 and G[next_k, 2] == 0:
            pts.append(prev_pt + far * G[k, :2])
    return np.array(pts)


@_closes_its_figure_on_error
def plot_partition(
    part: Partition,
    ax=None,
    *,
    lim: float = 4.0,
    outputs: int = 3,
    cmap: str = "tab20",
    edgecolor: str = "k",
    linewidth: float = 0.3,
):
    """Draw the linear regions of a partition (d = 1 or 2).

    Parameters
    ----------
    part : Partition, or a fitted model (its ``partition_``)
    ax : matplotlib Axes, optional
    lim : float
        The view is ``[-lim, lim]`` (per latent axis); regions are not clipped in the data.
    outputs : int
        (d = 1) number of output coordinates of ``g`` drawn against ``z`` (>= 0): those with
        the largest range over the view. With 0 only the breakpoints are drawn.

    Returns
    -------
    ax
    """
    if not is_int(outputs, 0):
        raise ValueError(
            f"outputs must be an integer >= 0 (outputs drawn for d = 1), got {outputs!r}"
        )
    if not isinstance(part, Partition) and callable(getattr(part, "_check_fitted", None)):
        part._check_fitted()  # an unfitted model: sklearn's NotFittedError
        if not hasattr(part, "partition_"):  # a VAE / IWAE
            raise TypeError(
                f"part must be a Partition or a fitted ExactDGN, got {type(part).__name__}: "
                "for a VAE / IWAE give exactdgn.partition(vae.decoder_)"
            )
        part = part.partition_
    if not isinstance(part, Partition):
        raise TypeError(
            f"part must be a Partition or a fitted ExactDGN, got {type(part).__name__}: give "
            "model.partition_ or exactdgn.partition(decoder)"
        )
    lim = _check_lim(lim)
    ax = _new_ax(ax)
    d = part.latent_dim
    if d == 1:
        z = np.linspace(-lim, lim, 2001)[:, None]
        g = part.decoder(z)
        # the outputs that vary most along z (flat ones, e.g. border pixels, show nothing)
        top = np.sort(np.argsort(-np.ptp(g, axis=0), kind="stable")[:outputs])
        for j in top:
            ax.plot(z[:, 0], g[:, j], lw=1, label=f"g_{j}(z)")
        ax.set_ylabel("decoder output g_j(z)")
        bps = part.facet_offsets[part.facet_normals[:, 0] > 0]
        bps = bps[np.abs(bps) <= lim]
        for t in bps:
            ax.axvline(t, color="0.7", lw=0.5, zorder=0)
        ax.set_xlim(-lim, lim)
        ax.set_xlabel("z")
        ax.set_title(f"{len(part)} regions (breakpoints in grey)")
        if len(top):  # no legend without labelled lines (matplotlib warns)
            ax.legend(loc="best", fontsize="small")
        return ax
    if d != 2:
        raise ValueError(f"plot_partition draws latent_dim 1 or 2, got {d}")
    from matplotlib.collections import PolyCollection

    far = 20.0 * lim
    polys = [region_polygon(part, r, far) for r in range(len(part))]
    colors = np.arange(len(part)) % 20
    coll = PolyCollection(
        polys, array=colors, cmap=cmap, edgecolors=edgecolor, linewidths=linewidth
    )
    ax.add_collection(coll)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"{len(part)} linear regions")
    return ax


# ---------------------------------------------------------------------- curves and data
@_closes_its_figure_on_error
def plot_curves(
    curves: dict,
    ax=None,
    *,
    xlabel: str = "iteration",
    ylabel: str = "exact NLL (nats / point)",
    logx: bool = False,
    title: str | None = None,
    band: bool = True,
):
    """Draw labelled curves (e.g. exact NLL against iteration or seconds).

    Parameters
    ----------
    curves : dict or list of dict
        ``label -> (x, y)``, ``label -> (x, y, spread)`` or ``label -> {"x", "y", "spread",
        "color", "ls"}`` (the last three optional), with 1-D arrays of equal length. A spread
        (e.g. the standard deviation over seeds; an array like ``y`` or a scalar) is drawn as a
        shaded band ``y ± spread``. A fitted model's ``history_`` (rows with ``"loglik"``) is
        drawn as its training NLL ``-loglik`` against the row number (a VAE's / IWAE's as its
        negative training bound, so labelled).
    ax : matplotlib Axes, optional
    xlabel, ylabel, title : str
    logx : bool
        Logarithmic x axis (useful for seconds).
    band : bool
        Draw the spread bands.

    Returns
    -------
    ax
    """
    if isinstance(curves, list | tuple) and all(
        isinstance(h, dict) and "loglik" in h for h in curves
    ):  # a history_ (ExactDGN, VAE)
        y = [-float(h["loglik"]) for h in curves]
        bound = {h.get("method") for h in curves} & {"vae", "iwae"}
        if bound:  # a VAE's loglik is its training bound (ELBO / IWAE-k), not log p(x)
            name = "-ELBO" if bound == {"vae"} else "-IWAE bound"
            if ylabel == "exact NLL (nats / point)":
                ylabel = f"training {name} (nats / point)"
            curves = {f"training {name}": (np.arange(len(y), dtype=np.float64), y)}
        else:
            curves = {"training": (np.arange(len(y), dtype=np.float64), y)}
    if not isinstance(curves, dict):
        raise TypeError(
            f"curves must be a dict label -> (x, y) (or a fitted model's history_), got "
            f"{type(curves).__name__}"
        )
    ax = _new_ax(ax)
    for label, c in curves.items():
        if isinstance(c, dict):
            if not {"x", "y"} <= c.keys():
                raise ValueError(
                    f"curve {label!r}: a dict curve needs keys 'x' and 'y' (and optionally "
                    f"'spread', 'color', 'ls'), got {sorted(c)}"
                )
            x, y = c["x"], c["y"]
            spread, color, ls = c.get("spread"), c.get("color"), c.get("ls", "-")
        else:
            sized = hasattr(c, "__len__") and not isinstance(c, str)
            if not sized or len(c) not in (2, 3):
                raise ValueError(
                    f"curve {label!r}: give (x, y) or (x, y, spread), or a dict with 'x' and "
                    f"'y'; got {type(c).__name__}" + (f" of length {len(c)}" if sized else "")
                )
            x, y = c[0], c[1]
            spread = c[2] if len(c) > 2 else None
            color, ls = None, "-"
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"curve {label!r}: x and y must be 1-D of equal length")
        (line,) = ax.plot(x, y, ls, color=color, lw=1.3, label=label, marker=".", ms=3)
        if band and spread is not None:
            s = np.asarray(spread, dtype=np.float64)
            if s.shape not in ((), x.shape):
                raise ValueError(
                    f"curve {label!r}: spread has shape {s.shape} but x and y {x.shape}: give "
                    "one spread per point (or a scalar)"
                )
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2, lw=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="best", fontsize="small")
    return ax


@_closes_its_figure_on_error
def plot_samples_2d(
    X,
    samples: dict | None = None,
    ax=None,
    *,
    title: str | None = None,
    s: float = 4.0,
):
    """Scatter 2-D data (grey) and, on top, samples of one or more models.

    Parameters
    ----------
    X : array_like of shape (N, 2)
    samples : dict, optional
        ``label -> (M, 2) array`` (samples of another dimension are refused: project them
        first).
    ax : matplotlib Axes, optional

    Returns
    -------
    ax
    """
    if samples is not None and not isinstance(samples, dict):
        raise TypeError(
            f"samples must be a dict of label -> (M, 2) array, got {type(samples).__name__} "
            "(the axes go by name: plot_samples_2d(X, ax=ax))"
        )
    ax = _new_ax(ax)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_samples_2d needs (N, 2) data, got shape {X.shape}")
    ax.scatter(X[:, 0], X[:, 1], s=s, c="0.6", label="data", lw=0)
    for label, S in (samples or {}).items():
        S = np.asarray(S, dtype=np.float64)
        if S.ndim != 2 or S.shape[1] != 2:
            raise ValueError(f"samples {label!r} must have shape (M, 2), got {S.shape}")
        ax.scatter(S[:, 0], S[:, 1], s=s, label=label, alpha=0.7, lw=0)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small", markerscale=3)
    return ax


@_closes_its_figure_on_error
def plot_images(X, ax=None, *, shape=None, ncols: int = 8, title: str | None = None):
    """Tile flattened images (rows of ``X``) into one grey-scale mosaic.

    Parameters
    ----------
    X : array_like of shape (N, H*W)
    ax : matplotlib Axes, optional
    shape : (H, W), optional
        Image shape (default: square).
    ncols : int

    Returns
    -------
    ax
    """
    ax = _new_ax(ax)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"plot_images needs a 2-D array of flattened images, got {X.shape}")
    N, P = X.shape
    if shape is None:
        side = math.isqrt(P)
        if side * side != P:
            raise ValueError(f"images of {P} pixels are not square: pass shape=(H, W)")
        shape = (side, side)
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W) of one grey-scale image, got {tuple(shape)}")
    H, W = shape
    if H * W != P:
        raise ValueError(f"shape {shape} does not match {P} pixels")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(int(ncols), max(N, 1))
    nrows = -(-N // ncols)
    mosaic = np.full((nrows * (H + 1) + 1, ncols * (W + 1) + 1), np.nan)
    for i in range(N):
        r, c = divmod(i, ncols)
        mosaic[1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = X[
            i
        ].reshape(H, W)
    ax.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


@_closes_its_figure_on_error
def plot_loglog_fit(x, y, ax=None, *, label: str = "", xlabel: str = "", ylabel: str = ""):
    """Log-log scatter of ``y`` against ``x`` with the least-squares line of ``log y`` on ``log x``.

    Parameters
    ----------
    x, y : array_like of shape (n,), positive
    ax : matplotlib Axes, optional
    label : str
        Legend prefix; the fitted slope is appended (``y ∝ x^slope``).

    Returns
    -------
    ax
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape}, {y.shape}")
    ax = _new_ax(ax)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    slope = loglog_slope(x[ok], y[ok]) if ok.sum() >= 2 else (np.nan, np.nan)
    (pts,) = ax.plot(x[ok], y[ok], "o", ms=4)
    if ok.sum() >= 2:
        xx = np.geomspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(
            xx,
            np.exp(slope[1]) * xx ** slope[0],
            "-",
            color=pts.get_color(),
            lw=1,
            label=f"{label} slope {slope[0]:.2f}".strip(),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ok.sum() >= 2:  # no legend without the labelled line (matplotlib warns)
        ax.legend(loc="best", fontsize="small")
    return ax


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit ``log y = slope * log x + intercept``; returns ``(slope, intercept)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError("loglog_slope needs two 1-D arrays of equal length >= 2")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(
            "loglog_slope needs finite values (NaN or inf found): drop those points first"
        )
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("loglog_slope needs positive values")
    lx, ly = np.log(x), np.log(y)
    if np.ptp(lx) == 0:
        raise ValueError("loglog_slope needs at least two distinct x values")
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


# ---------------------------------------------------------------------- posteriors
def _one_point(x) -> np.ndarray:
    """One data point of shape (D,) or (1, D) as a (1, D) array."""
    arr = np.asarray(x, dtype=np.float64)
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)):
        raise ValueError(
            f"x must be one data point of shape (D,) or (1, D), got shape {arr.shape}: "
            "plot the rows one at a time (e.g. X[i])"
        )
    return arr.reshape(1, -1)


def _parse_q(q, d: int) -> tuple[np.ndarray, np.ndarray]:
    """``q = (mean, std)`` as two (d,) float arrays; a ``ValueError`` for anything else (another
    length, no density: std <= 0, not finite)."""
    try:
        qm, qs = (np.ravel(np.asarray(v, dtype=np.float64)) for v in q)
    except (TypeError, ValueError):
        qm = qs = None
    if qm is None or qm.shape != (d,) or qs.shape != (d,):
        raise ValueError(
            f"q must be (mean, std) of the Gaussian q(z | x), each {d} number(s) for a "
            f"latent_dim = {d} model, got {q!r}"
        )
    if not (np.all(np.isfinite(qm)) and np.all(np.isfinite(qs)) and np.all(qs > 0)):
        raise ValueError(
            f"q = (mean, std) needs a finite mean and a positive, finite std, got {q!r}"
        )
    return qm, qs


def _log_posterior_grid(model, x: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``log p(z | x) = log p(x, z) - log p(x)``: one point ``x`` (1, D), grid ``Z`` (G, d)."""
    log_px = model.score_samples(x)[0]
    return model.log_prob_joint(np.repeat(x, len(Z), axis=0), Z) - log_px


@_closes_its_figure_on_error
def plot_posterior_1d(
    model,
    x,
    ax=None,
    *,
    q=None,
    lim: float | None = None,
    n_grid: int = 2001,
    show_regions: bool = True,
):
    """Exact posterior density ``p(z | x)`` of a ``latent_dim = 1`` model (and a Gaussian ``q``).

    The density is ``exp(log p(x, z) - log p(x))`` with the exact ``log p(x)``.

    Parameters
    ----------
    model : ExactDGN
        Fitted, ``latent_dim = 1``.
    x : array_like of shape (D,) or (1, D)
        One data point.
    ax : matplotlib Axes, optional
    q : (mean, std), optional
        A Gaussian approximation (e.g. a VAE encoder's ``q(z | x)``), drawn dashed; ``std > 0``.
    lim : float, optional
        View ``[-lim, lim]``; default: the exact posterior mean ± 6 posterior std (and the same
        for ``q``).
    n_grid : int
    show_regions : bool
        Draw the region boundaries (breakpoints) as grey lines.

    Returns
    -------
    ax
    """
    _check_model(model, 1, "plot_posterior_1d")
    n_grid = _check_count(n_grid, "n_grid", 2)
    lim = None if lim is None else _check_lim(lim)
    x = _one_point(x)
    ax = _new_ax(ax)
    post = model.posterior(x)
    m = float(post.mean[0, 0])
    s = float(np.sqrt(post.variance[0, 0]))
    lo, hi = m - 6 * s, m + 6 * s
    if q is not None:
        qm, qs = (float(v[0]) for v in _parse_q(q, 1))
        lo, hi = min(lo, qm - 6 * qs), max(hi, qm + 6 * qs)
    if lim is not None:
        lo, hi = -float(lim), float(lim)
    z = np.linspace(lo, hi, n_grid)
    dens = np.exp(_log_posterior_grid(model, x, z[:, None]))
    ax.plot(z, dens, "k-", lw=1.3, label="exact p(z|x)")
    if q is not None:
        qd = np.exp(-0.5 * ((z - qm) / qs) ** 2) / (qs * np.sqrt(2 * np.pi))
        ax.plot(z, qd, "C1--", lw=1.3, label="q(z|x)")
    if show_regions:
        part = model.partition_
        bps = part.facet_offsets[part.facet_normals[:, 0] > 0]
        for t in bps[(bps >= lo) & (bps <= hi)]:
            ax.axvline(t, color="0.8", lw=0.5, zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("z")
    ax.set_ylabel("density")
    ax.legend(loc="best", fontsize="small")
    return ax


@_closes_its_figure_on_error
def plot_posterior_2d(
    model,
    x,
    ax=None,
    *,
    q=None,
    lim: float | None = None,
    n_grid: int = 151,
    show_regions: bool = True,
    levels: int = 8,
):
    """Contour map of the exact posterior ``p(z | x)`` of a ``latent_dim = 2`` model.

    The exact density ``exp(log p(x, z) - log p(x))`` is filled (``contourf``) over a square
    around the exact posterior mean (half-width ``lim``, default 5 posterior std and enough to
    hold ``q``'s mean ± 3 std); region boundaries are drawn in grey; a Gaussian
    ``q = (mean, std)`` with diagonal covariance is drawn as orange contour lines at the same
    levels.

    Parameters
    ----------
    model : ExactDGN
        Fitted, ``latent_dim = 2``.
    x : array_like of shape (D,) or (1, D)
    ax : matplotlib Axes, optional
    q : (mean (2,), std (2,)), optional
        Stds positive.
    lim : float
    n_grid : int
        Grid points per axis.
    show_regions : bool
    levels : int

    Returns
    -------
    ax
    """
    _check_model(model, 2, "plot_posterior_2d")
    n_grid = _check_count(n_grid, "n_grid", 2)
    levels = _check_count(levels, "levels", 1)
    lim = None if lim is None else _check_lim(lim)
    x = _one_point(x)
    ax = _new_ax(ax)
    post = model.posterior(x)
    c = post.mean[0]
    half = 5 * float(np.sqrt(post.variance[0].max()))
    if q is not None:
        qm, qs = _parse_q(q, 2)
        half = max(half, float(np.max(np.abs(qm - c) + 3 * qs)))
    if lim is not None:
        half = float(lim)
    g1 = np.linspace(c[0] - half, c[0] + half, int(n_grid))
    g2 = np.linspace(c[1] - half, c[1] + half, int(n_grid))
    Z1, Z2 = np.meshgrid(g1, g2)
    Z = np.stack([Z1.ravel(), Z2.ravel()], axis=1)
    dens = np.exp(_log_posterior_grid(model, x, Z)).reshape(Z1.shape)
    lv = np.linspace(0, dens.max(), int(levels) + 1)[1:] if dens.max() > 0 else int(levels)
    ax.contourf(Z1, Z2, dens, levels=np.r_[0, lv] if np.ndim(lv) else lv, cmap="Blues")
    if q is not None:
        u = (Z - qm) / qs
        qd = np.exp(-0.5 * np.sum(u * u, axis=1)) / (2 * np.pi * np.prod(qs))
        qlv = lv if np.ndim(lv) else int(levels)
        ax.contour(Z1, Z2, qd.reshape(Z1.shape), levels=qlv, colors="C1", linewidths=0.8)
        ax.plot([qm[0]], [qm[1]], "x", color="C1", label="q(z|x) mean")
    if show_regions:
        from matplotlib.collections import PolyCollection

        part = model.partition_
        far = 20.0 * (abs(c).max() + half)
        polys = [region_polygon(part, r, far) for r in range(len(part))]
        ax.add_collection(
            PolyCollection(polys, facecolors="none", edgecolors="0.5", linewidths=0.3)
        )
    ax.plot([c[0]], [c[1]], "k+", label="exact E[z|x]")
    ax.set_xlim(g1[0], g1[-1])
    ax.set_ylim(g2[0], g2[-1])
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.legend(loc="best", fontsize="small")
    return ax
