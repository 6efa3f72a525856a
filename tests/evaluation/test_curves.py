"""Training curves (:func:`exactdgn.evaluation.em_curve`): one run, every list one row per
iteration of the history."""

import numpy as np
import pytest

from exactdgn import ExactDGN
from exactdgn.datasets import wave
from exactdgn.evaluation import em_curve


def test_em_curve_lists_follow_the_history_and_n_init_is_refused():
    """With ``n_init=2`` the callback recorded a test value for each start's iterations (7)
    beside the kept start's history (4 rows): test values stood against other iterations."""
    X = wave(120, random_state=0)
    Xtr, Xte = X[:80], X[80:]
    kw = dict(latent_dim=1, hidden_sizes=(6,), random_state=0)
    with pytest.raises(ValueError, match=r"n_init=2 is invalid, use 1"):
        em_curve(Xtr, Xte, max_iter=3, n_init=2, **kw)
    model, curve = em_curve(Xtr, Xte, max_iter=3, **kw)
    lengths = {k: len(v) for k, v in curve.items()}
    assert set(lengths.values()) == {len(model.history_)}, lengths
    # each test value is the held-out NLL of that iteration's model: the last is the model's
    assert curve["test_nll"][-1] == pytest.approx(-model.score(Xte), rel=1e-12)
    assert np.isnan(curve["test_nll"][0]) and isinstance(model, ExactDGN)


def test_curves_check_their_data_and_schedule_before_training():
    # Xte=None was "object of type 'NoneType' has no len()"; a wrong width was found only in
    # the callback after an iteration; refit_curve took a VAE's ELBO for the exact NLL and then
    # failed on n_regions_; a decreasing schedule was accepted
    from exactdgn.baselines import VAE
    from exactdgn.evaluation import refit_curve, vae_curve, vae_to_exact

    X = wave(60, random_state=0)
    trained = []

    def make(e):
        trained.append(e)
        return VAE([1, 4, 2], max_epochs=max(e, 1), random_state=0, validation_fraction=0)

    wrong = (X[:5, :1], "Xte has 1 columns but 2 are expected")
    for bad, match in ((None, "Xte must be 2-D"), wrong):
        with pytest.raises(ValueError, match=match):
            em_curve(X, bad, max_iter=2, latent_dim=1, hidden_sizes=(4,))
        with pytest.raises(ValueError, match=match):
            vae_curve(make, X, bad, [1])
        with pytest.raises(ValueError, match=match):
            refit_curve(make, X, bad, [1], to_exact=vae_to_exact)
    with pytest.raises(ValueError, match="schedule must be increasing"):
        refit_curve(make, X, X[:5], [3, 1], to_exact=vae_to_exact)
    with pytest.raises(TypeError, match="pass to_exact"):
        refit_curve(make, X, X[:5], [1, 2])
    assert trained == [1]  # made, never fitted
    _, curve = refit_curve(make, X, X[:5], [1, 2], to_exact=vae_to_exact)
    assert curve["iter"] == [1, 2] and np.all(np.isfinite(curve["test_nll"]))
