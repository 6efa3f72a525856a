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
