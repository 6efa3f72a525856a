"""Minibatch Adam on the exact log-likelihood (gradients by Fisher's identity)."""

from __future__ import annotations

import copy
import time

import numpy as np

from ..em._gradient import gradient_form
from ._base import HistoryRow, Trainer
from ._lbfgs import ParamVector

__all__ = ["GradientTrainer"]


class GradientTrainer(Trainer):
    """One iteration is one epoch of minibatch Adam steps, then an exact full-batch E-step.

    Each minibatch's gradient is exact for that minibatch (one exact E-step on it). The noise
    is parametrised as ``log σ`` clamped at ``log(min_noise_std)``. Not monotone (stochastic
    steps). State: ``θ``, the random stream of the minibatch order and Adam's public
    ``state_dict()``.

    On a dask array (``exactdgn.dask``) an epoch streams the row chunks to the client in a
    random order and shuffles the rows within each chunk (Adam's steps are sequential: the
    minibatches are small E-steps in memory); the epoch's full-data E-step is distributed. With
    one chunk this is the in-memory epoch exactly; otherwise the minibatches depend on the
    chunking (reproducible for a given seed and chunking).
    """

    method = "gradient"

    def __init__(self, est, X, decoder, std, *, seed, lr: float = 1e-2, batch_size: int = 256):
        super().__init__(est, X, decoder, std, seed=seed)
        import torch

        D = X.shape[1]
        self.lr, self.batch_size = lr, batch_size
        self.pv = ParamVector(decoder, D, est.noise == "diagonal", 0.0)
        self.params = [
            torch.tensor(p, device=self.device, requires_grad=True) for p in self._split(self.std)
        ]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.rng = np.random.default_rng(seed)

    def _split(self, std) -> list[np.ndarray]:
        ps = [
            p.copy()
            for W, c in zip(self.decoder.weights, self.decoder.biases, strict=True)
            for p in (W, c)
        ]
        ls = np.log(std) if self.pv.diagonal else np.log(std[:1]).reshape(())
        return [*ps, np.array(ls, dtype=np.float64)]

    def _current(self):
        from ..decoder import Decoder

        ps = [p.detach().cpu().numpy().copy() for p in self.params]
        dec = Decoder(ps[0:-1:2], ps[1:-1:2], self.decoder.activations)
        std = np.broadcast_to(np.exp(ps[-1]), (self.pv.D,)).copy()
        return dec, std

    def state_dict(self) -> dict:
        return {
            "params": [p.detach().cpu().numpy().copy() for p in self.params],
            "rng": self.rng.bit_generator.state,
            # a snapshot: Adam's moments and step count are live tensors updated in place
            "optimizer": copy.deepcopy(self.opt.state_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for p, v in zip(self.params, state["params"], strict=True):
                p.copy_(torch.as_tensor(np.asarray(v)))
        self.rng.bit_generator.state = state["rng"]
        self.opt.load_state_dict(copy.deepcopy(state["optimizer"]))  # steps do not edit it
        self.decoder, self.std = self._current()

    def _minibatches(self):
        """This epoch's minibatches (rows of ``X`` in a random order)."""
        X = self.X
        if hasattr(X, "chunk"):  # a dask handle: chunks in a random order, rows shuffled
            order = self.rng.permutation(X.n_chunks) if X.n_chunks > 1 else [0]
            parts = (X.chunk(int(i)) for i in order)
        else:
            parts = (X,)
        for Xc in parts:
            perm = self.rng.permutation(len(Xc))
            for s in range(0, len(Xc), self.batch_size):
                yield Xc[perm[s : s + self.batch_size]]

    def start(self) -> HistoryRow:
        e = self._estep(self.decoder, self.std, self.X)
        self.loglik = e.loglik
        return self._row(
            e, seconds_partition=e.seconds_partition, seconds_estep=e.seconds_estep, step=self.lr
        )

    def step(self) -> HistoryRow:
        import torch

        est, X = self.est, self.X
        t_start = time.perf_counter()
        tp = te = tm = 0.0
        log_min = np.log(est.min_noise_std)
        for Xb in self._minibatches():
            dec, std = self._current()
            e = self._estep(dec, std, Xb)
            t0 = time.perf_counter()
            rs = self._region_stats(e, Xb)
            self.opt.zero_grad()
            loss = -gradient_form(self.params, dec, rs, Xb, est.chunk_bytes) / len(Xb)
            for k in range(0, len(self.params) - 1, 2):
                loss = loss + 0.5 * est.weight_decay * (self.params[k] ** 2).sum()
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                self.params[-1].clamp_(min=log_min)
            tm += time.perf_counter() - t0
            tp += e.seconds_partition
            te += e.seconds_estep
        self.decoder, self.std = self._current()
        e = self._estep(self.decoder, self.std, X)
        self.loglik = e.loglik
        return self._row(
            e,
            seconds=time.perf_counter() - t_start,
            seconds_partition=tp + e.seconds_partition,
            seconds_estep=te + e.seconds_estep,
            seconds_mstep=tm,
            step=self.lr,
        )
