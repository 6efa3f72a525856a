"""Exact EM with conditional closed-form M-steps, adaptive over-relaxation and backtracking."""

from __future__ import annotations

import time

import numpy as np

from ..decoder import Decoder
from ..em._gradient import exact_gradient
from ..em._steps import active_regions, m_step
from ..partition import PartitionTooLargeError
from ._base import EStep, HistoryRow, Trainer

__all__ = ["EMTrainer", "interpolate"]


def interpolate(a: Decoder, b: Decoder, t: float) -> Decoder:
    """Parameters ``(1 - t) a + t b`` (same architecture and activations)."""
    if t == 1.0:
        return b
    Ws = [(1 - t) * Wa + t * Wb for Wa, Wb in zip(a.weights, b.weights, strict=True)]
    cs = [(1 - t) * ca + t * cb for ca, cb in zip(a.biases, b.biases, strict=True)]
    return Decoder(Ws, cs, a.activations)


class EMTrainer(Trainer):
    """Exact EM (see :meth:`exactdgn.ExactDGN.fit`); monotone in the exact likelihood.

    One iteration: (1) the output layer and the noise by a true EM step (the partition does not
    move), (2) every layer by exact least squares with the activation patterns held at their
    E-step values, taken ``relax`` times as far (adaptive over-relaxation, Salakhutdinov &
    Roweis 2003: doubled after each accepted over-relaxed step up to ``overrelax``, reset to 1
    on a rejection), halved until the exact likelihood does not drop, (3) if no halving is
    accepted, an exact-gradient step on the hidden layers of relative length ``eta``.

    ``max_backtrack`` (default: the estimator's), ``fallback=False`` (no step (3)) and
    ``backoff=True`` (after a rejected step (2), skip (2) and (3) for the next 1, 2, 4, 8
    iterations, doubling per consecutive rejection, reset by an accepted one) make an
    iteration cheaper where step (2) keeps failing: :class:`AutoTrainer` uses
    ``max_backtrack=0, fallback=False, backoff=True`` for ``latent_dim = 1`` (see there).

    State: ``relax``, ``eta`` and the backoff counters (restored by checkpoints and warm
    starts).
    """

    method = "em"

    def __init__(
        self, est, X, decoder, std, *, seed, max_backtrack=None, fallback=True, backoff=False
    ):
        super().__init__(est, X, decoder, std, seed=seed)
        self.eta = 0.1
        self.eta_taken = 0.0  # the last accepted gradient step's eta (history)
        self.relax = 1.0
        self.max_backtrack = est.max_backtrack if max_backtrack is None else int(max_backtrack)
        self.fallback = bool(fallback)
        self.backoff = bool(backoff)
        self.wait = 0  # iterations left that skip steps (2) and (3) (backoff)
        self.next_wait = 1  # the wait after the next rejection

    def state_dict(self) -> dict:
        return {
            "eta": float(self.eta),
            "relax": float(self.relax),
            "wait": int(self.wait),
            "next_wait": int(self.next_wait),
        }

    def load_state_dict(self, state: dict) -> None:
        self.eta = float(state["eta"])
        self.relax = float(state["relax"])
        self.wait = int(state.get("wait", 0))
        self.next_wait = int(state.get("next_wait", 1))

    def start(self) -> HistoryRow:
        self._e = self._estep(self.decoder, self.std, self.X)
        self.loglik = self._e.loglik
        return self._row(
            self._e,
            seconds_partition=self._e.seconds_partition,
            seconds_estep=self._e.seconds_estep,
        )

    def _mstep_stats(self, e: EStep):
        """The M-step's region statistics of ``e``; in d >= 2 only the regions holding pairs
        (:func:`exactdgn.em._steps.active_regions`: the same sums without the exact zeros of
        the thousands of empty regions; d = 1 keeps every region, its few regions are not the
        cost and its results stay bit for bit those of before)."""
        rs = self._region_stats(e, self.X)
        return active_regions(rs) if self.decoder.latent_dim >= 2 else rs

    def _accept(self, dec, std, e: EStep) -> None:
        self.decoder, self.std, self._e, self.loglik = dec, std, e, e.loglik

    def step(self) -> HistoryRow:
        est, X = self.est, self.X
        diagonal = est.noise == "diagonal"
        kw = {"diagonal": diagonal, "min_std": est.min_noise_std, "weight_decay": est.weight_decay}
        t_start = time.perf_counter()
        # (1) output layer + noise: an exact EM block (the partition does not move)
        t0 = time.perf_counter()
        last = [self.decoder.n_layers - 1]
        dec1, std1 = m_step(
            self.decoder, self._mstep_stats(self._e), self.std, X, layers=last, **kw
        )
        tm = time.perf_counter() - t0
        e1 = self._estep(dec1, std1, X, partition=self._e.partition.with_decoder(dec1))
        tp, te = e1.seconds_partition, e1.seconds_estep
        if e1.loglik >= self.loglik:
            self._accept(dec1, std1, e1)
        nb, step = 0, 0.0
        skip, self.wait = self.wait > 0, max(self.wait - 1, 0)
        if self.decoder.n_layers > 1 and not skip:
            # (2) every layer (patterns held at their E-step values), guarded by the exact
            # likelihood; over-relaxed and halved as described in the class docstring
            t0 = time.perf_counter()
            dec, std = self.decoder, self.std
            new_dec, new_std = m_step(dec, self._mstep_stats(self._e), std, X, **kw)
            tm += time.perf_counter() - t0
            step = self.relax
            while nb <= self.max_backtrack:
                c_dec = interpolate(dec, new_dec, step)
                c_std = np.exp((1 - step) * np.log(std) + step * np.log(new_std))
                c_std = np.maximum(c_std, est.min_noise_std)
                try:
                    c_e = self._estep(c_dec, c_std, X)
                except PartitionTooLargeError:
                    if step <= 1.0:
                        raise
                    # an extrapolated decoder with too many regions: not a candidate
                    step = self.relax = 1.0
                    continue
                tp += c_e.seconds_partition
                te += c_e.seconds_estep
                if c_e.loglik >= self.loglik:
                    self._accept(c_dec, c_std, c_e)
                    self.next_wait = 1
                    if step == self.relax and step < est.overrelax:
                        self.relax = min(2.0 * self.relax, est.overrelax)
                    break
                if step > 1.0:
                    step = self.relax = 1.0
                    continue
                step *= 0.5
                nb += 1
            else:
                step = 0.0
                if self.backoff:
                    self.wait, self.next_wait = self.next_wait, min(2 * self.next_wait, 8)
                # (3) generalized-EM fallback along the exact gradient of the hidden layers
                g = self.gradient_step() if self.fallback else None
                if g is not None:
                    tp += g.seconds_partition
                    te += g.seconds_estep
                    step = -self.eta_taken  # recorded as a negative step: a gradient move
        return self._row(
            self._e,
            seconds=time.perf_counter() - t_start,
            seconds_partition=tp,
            seconds_estep=te,
            seconds_mstep=tm,
            backtracks=nb,
            step=step,
        )

    def gradient_step(self, tries: int = 3) -> EStep | None:
        """Line search along the exact gradient of the hidden layers (Fisher's identity).

        Accepted only if the exact likelihood does not drop; ``eta`` (the step's length
        relative to the weights' norm) doubles after a success and shrinks 4x per failure.
        Returns the accepted E-step, or None; ``eta_taken`` is the accepted step's ``eta``.
        """
        dec, X = self.decoder, self.X
        if dec.n_layers < 2:
            return None
        rs = self._region_stats(self._e, X)
        grads = exact_gradient(dec, self.std, rs, X, self.est.chunk_bytes)
        L = dec.n_layers - 1  # hidden layers only: the output layer had its exact EM step
        gW, gc = grads[0 : 2 * L : 2], grads[1 : 2 * L : 2]
        norm_g = np.sqrt(sum((g**2).sum() for g in gW) + sum((g**2).sum() for g in gc))
        norm_p = np.sqrt(sum((W**2).sum() for W in dec.weights[:L]))
        if not np.isfinite(norm_g) or norm_g == 0:
            self.eta *= 0.25
            return None
        for _ in range(tries):
            scale = self.eta * norm_p / norm_g
            cand = dec.copy()
            for k in range(L):
                cand.weights[k] = dec.weights[k] + scale * gW[k]
                cand.biases[k] = dec.biases[k] + scale * gc[k]
            c_e = self._estep(cand, self.std, X)
            if c_e.loglik >= self.loglik:
                self._accept(cand, self.std, c_e)
                self.eta_taken = self.eta  # the history's step (eta grows for the next one)
                self.eta = min(2 * self.eta, 1.0)
                return c_e
            self.eta *= 0.25
        return None
