"""Factorization machine surrogate whose weights are a QUBO (the FMQA method, Kitai et al. 2020).

A second-order FM predicts ``y(x) = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j`` for a binary x: exactly
a QUBO with diagonal ``w`` and couplings ``<v_i, v_j>``. Fitted on the trials so far (losses
standardised), minimising its QUBO proposes the setting the surrogate expects to be best,
interactions between hyperparameters (learning rate × LoRA alpha) included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapters.qubo.qubo import QUBO


@dataclass
class FactorizationMachine:
    """Second-order FM on binary features, trained by Adam on mean squared error with L2."""

    w0: float
    w: np.ndarray
    v: np.ndarray
    y_mean: float = 0.0
    y_std: float = 1.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted target (original units) for rows of ``x``."""
        return self._raw(np.atleast_2d(x)) * self.y_std + self.y_mean

    def _raw(self, x: np.ndarray) -> np.ndarray:
        xv = x @ self.v
        return self.w0 + x @ self.w + 0.5 * ((xv ** 2).sum(1) - ((x ** 2) @ (self.v ** 2)).sum(1))

    def qubo(self, groups: tuple[tuple[int, ...], ...] = ()) -> QUBO:
        """The FM as a QUBO in standardised units (same minimiser as the prediction)."""
        q = np.triu(self.v @ self.v.T, 1) + np.diag(self.w)
        return QUBO(q, self.w0, groups)


def fit_fm(x: np.ndarray, y: np.ndarray, *, factors: int = 8, epochs: int = 2000, lr: float = 0.02, l2: float = 1e-3,
           seed: int = 0) -> FactorizationMachine:
    """Fit an FM to binary rows ``x`` and targets ``y`` (full-batch Adam; small data, so a few ms per hundred epochs)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"an FM needs at least two (x, y) pairs, got {len(x)} rows and {len(y)} targets")
    mean, std = float(y.mean()), float(y.std()) or 1.0
    t = (y - mean) / std
    rng = np.random.default_rng(seed)
    n = x.shape[1]
    params = [np.zeros(1), np.zeros(n), rng.normal(0, 0.1, size=(n, factors))]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(1, epochs + 1):
        fm = FactorizationMachine(float(params[0][0]), params[1], params[2])
        err = fm._raw(x) - t  # d(MSE)/d(pred) = 2·err/m
        g_pred = 2 * err / len(x)
        xv = x @ params[2]
        grads = [np.array([g_pred.sum()]),
                 x.T @ g_pred + 2 * l2 * params[1],
                 x.T @ (g_pred[:, None] * xv) - params[2] * ((x ** 2).T @ g_pred)[:, None] + 2 * l2 * params[2]]
        for p, g, (m, s) in zip(params, grads, moments):
            m *= 0.9
            m += 0.1 * g
            s *= 0.999
            s += 0.001 * g * g
            p -= lr * (m / (1 - 0.9 ** step)) / (np.sqrt(s / (1 - 0.999 ** step)) + 1e-8)
    return FactorizationMachine(float(params[0][0]), params[1].copy(), params[2].copy(), mean, std)


def one_hot_penalty_weight(qubo: QUBO, scale: float = 1.5) -> float:
    """A penalty large enough that leaving a one-hot group never pays: ``scale`` × the largest row of |Q|."""
    a = np.abs(qubo.matrix)
    rows = a.sum(axis=1) + a.sum(axis=0) - np.diag(a)
    return float(scale * max(rows.max(initial=0.0), 1e-6))
