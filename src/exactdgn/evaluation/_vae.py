"""Exact evaluation of VAE-type models: exact log p(x) beside the ELBO, IWAE bound and IS."""

from __future__ import annotations

import numpy as np

from .._validation import check_array, is_int

__all__ = ["evaluate_vae", "vae_to_exact"]


def _check_estimate_args(*, n_elbo, k_iwae, k_is, seed, min_elbo: int) -> None:
    """Refuse a bad sample count or seed by its own name (before the exact pass runs)."""
    for name, value, low, what in (
        ("n_elbo", n_elbo, min_elbo, "ELBO samples per point"),
        ("k_iwae", k_iwae, 1, "importance samples of the IWAE bound"),
        ("k_is", k_is, 1, "proposals of the importance-sampling estimate"),
        ("seed", seed, 0, "seeds the Monte Carlo estimates"),
    ):
        if not is_int(value, low):
            raise ValueError(f"{name}={value!r} is invalid: use an integer >= {low} ({what})")


def _check_vae(vae) -> None:
    """A fitted :class:`exactdgn.baselines.VAE` / ``IWAE``, or a ``TypeError`` /
    ``NotFittedError`` that says what was given."""
    from ..baselines import VAE

    if not isinstance(vae, VAE):
        raise TypeError(
            f"vae must be a fitted exactdgn.baselines.VAE or IWAE; got {type(vae).__name__} "
            "(a decoder trained elsewhere: exactdgn.evaluation.evaluate_external)"
        )
    vae._check_fitted()


def _check_exact_of(vae, exact) -> None:
    """Refuse an ``exact`` that is not the exact model of ``vae``'s decoder and noise: its
    log p(x) would be another model's, and every gap beside it wrong without a sign."""
    from ..model import ExactDGN

    if not isinstance(exact, ExactDGN):
        raise TypeError(
            f"exact must be the ExactDGN of the VAE's decoder (vae_to_exact(vae)); got "
            f"{type(exact).__name__}"
        )
    exact._check_fitted()
    dv, de = vae.decoder_, exact.decoder_
    same = (
        dv.layer_sizes == de.layer_sizes
        and list(dv.activations) == list(de.activations)
        and all(np.array_equal(a, b) for a, b in zip(dv.weights, de.weights, strict=True))
        and all(np.array_equal(a, b) for a, b in zip(dv.biases, de.biases, strict=True))
        and np.array_equal(
            np.broadcast_to(vae.noise_std_, (dv.output_dim,)),
            np.broadcast_to(exact.noise_std_, (de.output_dim,)),
        )
        and getattr(exact, "preprocessing_", None) is None
    )
    if not same:
        raise ValueError(
            "exact is not the exact model of vae: its decoder, noise or preprocessing differ "
            "from the VAE's (its log p(x) would be another model's); build it with "
            "vae_to_exact(vae)"
        )


def vae_to_exact(vae, **params):
    """The exact model (``ExactDGN``) of a trained VAE/IWAE's decoder and noise.

    Raises ``TypeError`` for anything but a VAE / IWAE and ``NotFittedError`` for one that is
    not fitted.
    """
    from ..model import ExactDGN

    _check_vae(vae)

    model = ExactDGN.from_decoder(vae.decoder_, vae.noise_std_, **params)
    if hasattr(vae, "feature_names_in_"):  # the columns the VAE was fitted on, in their order
        model.feature_names_in_ = vae.feature_names_in_.copy()
    return model


def evaluate_vae(
    vae, exact, X, *, seed: int = 0, n_elbo: int = 100, k_iwae: int = 5, k_is: int = 5000
) -> dict:
    """Exact log-likelihood next to the VAE's estimates on ``X`` (means, nats per point).

    Parameters
    ----------
    vae : exactdgn.baselines.VAE or IWAE
        Fitted (or built with ``VAE.from_parts``).
    exact : ExactDGN
        The exact model of the same decoder and noise (:func:`vae_to_exact`); another model
        is a ``ValueError``.
    X : array_like of shape (N, D)
        Complete rows (no NaN); no rows gives an empty dict.
    seed : int >= 0
        Seeds the estimates (``seed``, ``seed + 1``, ``seed + 2`` for ELBO, IWAE, IS).
    n_elbo : int >= 2
        ELBO samples per point (2 at least: the ELBO's standard error).
    k_iwae, k_is : int >= 1
        Samples of the IWAE-k bound (averaged over 10 draws) and importance-sampling proposals.

    Returns
    -------
    dict
        ``exact``, ``elbo``, ``iwae{k_iwae}`` (e.g. ``iwae5``: the IWAE-k bound),
        ``is{k_is}`` (e.g. ``is5000``: the importance-sampling estimate with proposals from
        ``q``), the per-point gap ``exact - ELBO = KL(q(z|x) || p(z|x))`` (up to the ELBO's
        Monte Carlo error) as ``gap_mean``, ``gap_median``, ``gap_p90``, ``gap_max``, and
        ``elbo_stderr_mean``.
    """
    _check_estimate_args(n_elbo=n_elbo, k_iwae=k_iwae, k_is=k_is, seed=seed, min_elbo=2)
    _check_vae(vae)
    _check_exact_of(vae, exact)
    X = check_array(X, name="X", n_features=vae.decoder_.output_dim, estimator="VAE")
    if len(X) == 0:
        return {}
    X = vae._check_X(X)  # complete rows of D features, refused before the exact pass
    ll = exact.score_samples(X)
    elbo, se = vae.elbo(X, n_samples=n_elbo, random_state=seed, return_std=True)
    iw = vae.iwae_bound(X, k=k_iwae, n_repeats=10, random_state=seed + 1)
    is_ = vae.importance_log_likelihood(X, k=k_is, random_state=seed + 2)
    gap = ll - elbo
    return {
        "exact": float(ll.mean()),
        "elbo": float(elbo.mean()),
        f"iwae{k_iwae}": float(iw.mean()),
        f"is{k_is}": float(is_.mean()),
        "gap_mean": float(gap.mean()),
        "gap_median": float(np.median(gap)),
        "gap_p90": float(np.quantile(gap, 0.9)),
        "gap_max": float(gap.max()),
        "elbo_stderr_mean": float(se.mean()),
    }
