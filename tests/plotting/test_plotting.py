"""Plotting functions take and return an ``ax`` and draw something that saves to PNG (Agg)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from exactdgn import Decoder, ExactDGN, partition
from exactdgn import plotting as P

matplotlib.use("Agg")


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _saved(ax, tmp_path) -> int:
    f = tmp_path / "fig.png"
    ax.figure.savefig(f, dpi=50)
    assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return f.stat().st_size


@pytest.fixture(scope="module")
def model1():
    return ExactDGN.from_decoder(Decoder.random([1, 6, 2], seed=0), noise_std=0.2)


@pytest.fixture(scope="module")
def model2():
    return ExactDGN.from_decoder(Decoder.random([2, 5, 3], seed=1), noise_std=0.3)


def test_plot_partition_1d_and_2d(ax, tmp_path, model2):
    part = partition(Decoder.random([1, 6, 2], seed=0))
    assert P.plot_partition(part, ax=ax) is ax
    assert len(ax.lines) >= 2
    _saved(ax, tmp_path)
    fig, ax2 = plt.subplots()
    assert P.plot_partition(model2.partition_, ax=ax2) is ax2
    assert len(ax2.collections[0].get_paths()) == model2.n_regions_
    _saved(ax2, tmp_path)
    plt.close(fig)


def test_plot_curves_with_bands(ax, tmp_path):
    x = np.arange(1, 6)
    curves = {"a": (x, 1.0 / x), "b": {"x": x, "y": 2.0 / x, "spread": 0.1 * np.ones(5)}}
    assert P.plot_curves(curves, ax=ax, logx=True) is ax
    assert [ln.get_label() for ln in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 2.0 / x)
    assert len(ax.collections) == 1  # one spread band
    _saved(ax, tmp_path)
    with pytest.raises(ValueError, match="equal length"):
        P.plot_curves({"bad": (x, x[:3])}, ax=ax)
    # malformed entries are named (they were an IndexError / KeyError)
    with pytest.raises(ValueError, match=r"curve 'c': give \(x, y\).* tuple of length 1"):
        P.plot_curves({"c": (x,)}, ax=ax)
    with pytest.raises(ValueError, match="curve 'd': a dict curve needs keys 'x' and 'y'"):
        P.plot_curves({"d": {"x": x}}, ax=ax)


def test_plot_samples_and_images(ax, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    assert P.plot_samples_2d(X, {"model": X + 1}, ax=ax) is ax
    assert len(ax.collections) == 2
    _saved(ax, tmp_path)
    fig, ax2 = plt.subplots()
    imgs = rng.random((5, 16))
    assert P.plot_images(imgs, ax=ax2, ncols=3) is ax2
    mosaic = ax2.images[0].get_array()
    assert mosaic.shape == (2 * 5 + 1, 3 * 5 + 1)
    np.testing.assert_array_equal(mosaic[1:5, 1:5], imgs[0].reshape(4, 4))
    _saved(ax2, tmp_path)
    plt.close(fig)
    with pytest.raises(ValueError, match="not square"):
        P.plot_images(rng.random((2, 15)))
    with pytest.raises(ValueError, match=r"shape must be \(H, W\)"):  # was an unpacking error
        P.plot_images(imgs, shape=(2, 2, 4))
    with pytest.raises(ValueError, match="ncols must be at least 1, got 0"):  # was taken as 1
        P.plot_images(imgs, ncols=0)


def test_loglog_slope_and_plot(ax, tmp_path):
    x = np.array([1.0, 2, 4, 8, 16])
    y = 3.0 * x**1.5
    s, c = P.loglog_slope(x, y)
    assert s == pytest.approx(1.5, abs=1e-12) and np.exp(c) == pytest.approx(3.0, rel=1e-12)
    assert P.plot_loglog_fit(x, y, ax=ax, label="t") is ax
    assert "slope 1.50" in ax.get_legend().get_texts()[0].get_text()
    _saved(ax, tmp_path)
    with pytest.raises(ValueError, match="positive"):
        P.loglog_slope(x, -y)


def test_plot_posterior_1d_density_integrates_to_one(ax, tmp_path, model1):
    x = model1.sample(1, random_state=3)[0]
    assert P.plot_posterior_1d(model1, x, ax=ax, q=(0.0, 1.0), n_grid=4001) is ax
    z, dens = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    # the drawn exact density is normalised (the view spans the mean ± 6 posterior std)
    assert np.trapezoid(dens, z) == pytest.approx(1.0, abs=1e-3)
    _saved(ax, tmp_path)
    with pytest.raises(ValueError, match="latent_dim = 1"):
        P.plot_posterior_1d(ExactDGN.from_decoder(Decoder.random([2, 3, 2], seed=0), 0.1), x)


def test_plot_posterior_2d(ax, tmp_path, model2):
    x = model2.sample(1, random_state=0)[0]
    assert P.plot_posterior_2d(model2, x, ax=ax, q=(np.zeros(2), np.ones(2)), n_grid=41) is ax
    assert len(ax.collections) >= 2  # filled contours + region edges (+ q contours)
    _saved(ax, tmp_path)


def test_region_polygon_indices_and_dimension(model1, model2):
    """A negative index is the region counted from the end (it drew the whole view); a bad
    index or a partition that is not 2-D is a clear error (they were numpy IndexErrors)."""
    part = model2.partition_
    R = len(part)
    np.testing.assert_array_equal(
        P.region_polygon(part, -1, 50.0), P.region_polygon(part, R - 1, 50.0)
    )
    with pytest.raises(IndexError, match=f"out of range for {R} regions"):
        P.region_polygon(part, R, 50.0)
    with pytest.raises(ValueError, match="latent_dim = 2"):
        P.region_polygon(model1.partition_, 0, 50.0)


@pytest.mark.parametrize("which", [1, 2])
def test_plot_posterior_takes_one_point(ax, model1, model2, which):
    """Several rows were flattened into one long row ("X has 6 columns but 3 are expected")."""
    model = model1 if which == 1 else model2
    plot = P.plot_posterior_1d if which == 1 else P.plot_posterior_2d
    X = model.sample(2, random_state=0)
    assert plot(model, X[:1], ax=ax, n_grid=31) is ax  # a (1, D) row is one point
    with pytest.raises(ValueError, match=r"one data point of shape \(D,\) or \(1, D\)"):
        plot(model, X, ax=ax, n_grid=31)


def test_plot_partition_1d_with_no_outputs_draws_only_breakpoints(ax, tmp_path):
    """outputs=0 warned "No artists with labels" (an error under -W error); a negative count
    drew all outputs but the last ones."""
    part = partition(Decoder.random([1, 6, 2], seed=0))
    assert P.plot_partition(part, ax=ax, outputs=0) is ax
    assert all(ln.get_label().startswith("_") for ln in ax.lines)  # only the grey breakpoints
    assert ax.get_legend() is None
    _saved(ax, tmp_path)
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match=r"outputs must be an integer >= 0"):
            P.plot_partition(part, ax=ax, outputs=bad)


@pytest.mark.parametrize("q", [(0.0, 0.0), (0.0, -1.0), (0.0, np.nan), (np.inf, 1.0)])
def test_plot_posterior_1d_refuses_a_degenerate_q(ax, model1, q):
    """A zero std was a divide-by-zero RuntimeWarning; a negative one drew a negative density."""
    x = model1.sample(1, random_state=3)[0]
    with pytest.raises(ValueError, match=r"q = \(mean, std\) needs a finite mean and a positive"):
        P.plot_posterior_1d(model1, x, ax=ax, q=q, n_grid=31)


def test_plot_posterior_2d_refuses_a_degenerate_q(ax, model2):
    x = model2.sample(1, random_state=0)[0]
    with pytest.raises(ValueError, match=r"q = \(mean, std\) needs a finite mean and a positive"):
        P.plot_posterior_2d(model2, x, ax=ax, q=(np.zeros(2), np.array([1.0, 0.0])), n_grid=21)


def test_plot_samples_2d_refuses_samples_that_are_not_2d(ax):
    """(M, 3) samples were drawn silently from their first two columns."""
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"samples 'm' must have shape \(M, 2\), got \(4, 3\)"):
        P.plot_samples_2d(X, {"m": np.zeros((4, 3))}, ax=ax)
    with pytest.raises(ValueError, match=r"samples 'v' must have shape \(M, 2\), got \(2,\)"):
        P.plot_samples_2d(X, {"v": np.zeros(2)}, ax=ax)


def test_plot_curves_spread_of_the_wrong_length_is_a_clear_error(ax):
    """It was a numpy broadcast error."""
    x = np.arange(5.0)
    with pytest.raises(ValueError, match=r"curve 'a': spread has shape \(3,\) but x and y \(5,\)"):
        P.plot_curves({"a": (x, x, np.ones(3))}, ax=ax)
    with pytest.raises(ValueError, match=r"curve 'b': spread has shape \(5, 1\)"):
        P.plot_curves({"b": {"x": x, "y": x, "spread": np.ones((5, 1))}}, ax=ax)
    P.plot_curves({"c": (x, x, 0.1)}, ax=ax)  # a scalar spread is one band width
    assert len(ax.collections) == 1


def test_a_model_and_a_history_are_taken_and_other_objects_named(ax, model1):
    """``plot_partition(model)`` was ``TypeError: object of type 'ExactDGN' has no len()`` and
    ``plot_curves(model.history_)`` ``AttributeError: 'list' object has no attribute 'items'``:
    the model's partition and the history's training NLL are drawn now, anything else is
    named."""
    from sklearn.exceptions import NotFittedError

    P.plot_partition(model1, ax=ax, outputs=1)
    fig, ax2 = plt.subplots()
    P.plot_partition(model1.partition_, ax=ax2, outputs=1)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), ax2.lines[0].get_ydata())
    plt.close(fig)
    with pytest.raises(NotFittedError, match="no decoder yet"):
        P.plot_partition(ExactDGN(), ax=ax)
    with pytest.raises(TypeError, match="Partition or a fitted ExactDGN, got list"):
        P.plot_partition([1, 2], ax=ax)
    history = [{"loglik": -3.0}, {"loglik": -2.5}, {"loglik": -2.25}]
    fig, ax3 = plt.subplots()
    P.plot_curves(history, ax=ax3)
    np.testing.assert_array_equal(ax3.lines[0].get_ydata(), [3.0, 2.5, 2.25])
    plt.close(fig)
    with pytest.raises(TypeError, match=r"dict label -> \(x, y\).*got list"):
        P.plot_curves([1, 2], ax=ax)


def _bad_calls(model1, model2):
    """(label, call) pairs that must raise, each without an ``ax`` (so one is created)."""
    m3 = ExactDGN.from_decoder(Decoder.random([3, 4, 3], seed=0), noise_std=0.3)
    x2 = model2.sample(1, random_state=0)
    return [
        ("partition d=3", lambda: P.plot_partition(m3.partition_)),
        ("posterior_1d d=2", lambda: P.plot_posterior_1d(model2, x2)),
        ("posterior_2d d=3", lambda: P.plot_posterior_2d(m3, m3.sample(1, random_state=0))),
        ("posterior_1d wrong D", lambda: P.plot_posterior_1d(model1, x2)),
        ("images 1-D", lambda: P.plot_images(np.ones(4))),
        ("samples 3-D", lambda: P.plot_samples_2d(np.ones((3, 3)))),
        ("curves ragged", lambda: P.plot_curves({"a": ([1, 2], [1])})),
        ("loglog same x", lambda: P.plot_loglog_fit([1, 1], [1, 2])),
    ]


def test_a_refused_call_leaves_no_open_figure(model1, model2):
    """Without ``ax`` each function opened a figure and then validated its arguments: every
    refused call left one more open figure (matplotlib warns past 20)."""
    before = set(plt.get_fignums())
    for label, call in _bad_calls(model1, model2):
        with pytest.raises(ValueError):
            call()
        assert set(plt.get_fignums()) == before, label
    ax = P.plot_images(np.ones((2, 4)))  # a call that succeeds keeps its figure
    assert ax.figure.number not in before
    plt.close(ax.figure)


@pytest.mark.parametrize("which", [1, 2])
def test_unfitted_model_is_a_not_fitted_error(ax, which):
    """It was ``AttributeError: 'ExactDGN' object has no attribute 'decoder_'``."""
    from sklearn.exceptions import NotFittedError

    plot = P.plot_posterior_1d if which == 1 else P.plot_posterior_2d
    with pytest.raises(NotFittedError, match="not fitted"):
        plot(ExactDGN(latent_dim=which), np.zeros(3), ax=ax)


def test_loglog_fit_with_fewer_than_two_points_draws_without_warning(ax):
    """Under two positive points there is no line, and ``legend()`` warned "No artists with
    labels found" (an error under -W error); x and y of different lengths were a numpy
    broadcast error."""
    assert P.plot_loglog_fit([1.0, 2.0], [-1.0, 0.0], ax=ax) is ax
    assert P.plot_loglog_fit([3.0], [2.0], ax=ax, label="one") is ax
    assert ax.get_legend() is None
    with pytest.raises(
        ValueError, match=r"x and y must be 1-D of equal length, got \(3,\), \(2,\)"
    ):
        P.plot_loglog_fit([1, 2, 3], [1, 2], ax=ax)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m1, m2, ax: P.plot_partition(m2.partition_, ax=ax, lim=0), "lim must be"),
        (
            lambda m1, m2, ax: P.plot_posterior_1d(m1, np.zeros(2), ax=ax, n_grid=1),
            "n_grid must be an integer >= 2",
        ),
        (lambda m1, m2, ax: P.plot_posterior_1d(m1, np.zeros(2), ax=ax, lim=-1), "lim must be"),
        (
            lambda m1, m2, ax: P.plot_posterior_2d(m2, np.zeros(3), ax=ax, n_grid=1),
            "n_grid must be an integer >= 2",
        ),
        (
            lambda m1, m2, ax: P.plot_posterior_2d(m2, np.zeros(3), ax=ax, levels=0),
            "levels must be an integer >= 1",
        ),
    ],
)
def test_view_and_grid_arguments_are_checked(ax, model1, model2, call, match):
    """lim=0 was a matplotlib "identical low and high xlims" warning, lim=-1 a reversed axis,
    n_grid=1 and levels=0 matplotlib errors about contour shapes and levels."""
    with pytest.raises(ValueError, match=match):
        call(model1, model2, ax)


def test_plot_samples_2d_takes_the_axes_by_name():
    """``plot_samples_2d(X, ax)`` failed deep in matplotlib ('Axes' has no 'items')."""
    fig, ax = plt.subplots()
    X = np.zeros((4, 2))
    with pytest.raises(TypeError, match=r"plot_samples_2d\(X, ax=ax\)"):
        P.plot_samples_2d(X, ax)
    assert P.plot_samples_2d(X, ax=ax) is ax
    plt.close(fig)


@pytest.mark.parametrize(
    ("which", "q"),
    [(1, ([0.0, 5.0], [1.0, 1.0])), (1, 0.5), (2, (0.0, 1.0)), (2, (np.zeros(3), np.ones(3)))],
)
def test_a_q_of_another_length_is_named(ax, model1, model2, which, q):
    # 1-D silently drew the first of two means; 2-D raised numpy's IndexError / broadcast error
    model = model1 if which == 1 else model2
    x = model.sample(1, random_state=0)[0]
    plot = P.plot_posterior_1d if which == 1 else P.plot_posterior_2d
    with pytest.raises(ValueError, match=rf"each {which} number\(s\) for a latent_dim = {which}"):
        plot(model, x, ax=ax, q=q, n_grid=21)


def test_a_vae_is_named_and_its_history_labelled_as_a_bound(ax, model1):
    # a VAE's history_ was drawn as "exact NLL" (its -ELBO); the posterior plots and
    # plot_partition failed with AttributeError
    from exactdgn.baselines import VAE

    X = model1.sample(64, random_state=0)
    vae = VAE([1, 6, 2], max_epochs=2, random_state=0, validation_fraction=0).fit(X)
    P.plot_curves(vae.history_, ax=ax)
    assert ax.get_ylabel() == "training -ELBO (nats / point)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training -ELBO"]
    _, ax2 = plt.subplots()
    P.plot_curves([{"loglik": -1.0}, {"loglik": -0.5}], ax=ax2)  # an ExactDGN history_
    assert ax2.get_ylabel() == "exact NLL (nats / point)"
    plt.close(ax2.figure)
    for call in (
        lambda: P.plot_posterior_1d(vae, X[0], ax=ax),
        lambda: P.plot_partition(vae, ax=ax),
    ):
        with pytest.raises(TypeError, match="VAE"):
            call()


def test_loglog_slope_names_non_finite_values():
    # LAPACK's "DLASCL illegal value" lines, then LinAlgError: SVD did not converge
    with pytest.raises(ValueError, match="finite values"):
        P.loglog_slope([1.0, np.nan, 3.0], [1.0, 4.0, 9.0])
