"""Binary quadratic problems (QUBO) with one-hot groups: the shape every solver in ``adapters.qubo.qubo_solvers`` takes.

A hyperparameter choice is one-hot encoded, one group of binary variables per hyperparameter, so a
valid answer has exactly one 1 in every group. The surrogate's QUBO carries a penalty that makes
other answers costly; solvers still may return them, so each answer is ranked with feasible ones
first and ``repair`` turns an infeasible one into the cheapest feasible neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class QUBO:
    """Minimise ``x·Q·x + offset`` over x in {0,1}^n (Q upper-triangular; its diagonal is the linear part)."""

    matrix: np.ndarray
    offset: float = 0.0
    groups: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        q = np.asarray(self.matrix, dtype=float)
        if q.ndim != 2 or q.shape[0] != q.shape[1]:
            raise ValueError(f"QUBO matrix must be square, got shape {q.shape}")
        object.__setattr__(self, "matrix", np.triu(q) + np.tril(q, -1).T)  # fold any lower part into the upper
        seen = [i for g in self.groups for i in g]
        if len(seen) != len(set(seen)) or any(not 0 <= i < q.shape[0] for i in seen):
            raise ValueError(f"one-hot groups must be disjoint variable indices below {q.shape[0]}: {self.groups}")

    @property
    def n(self) -> int:
        return self.matrix.shape[0]

    def energy(self, x: np.ndarray) -> np.ndarray:
        """Energy of one assignment (n,) or of a batch (k, n)."""
        x = np.asarray(x, dtype=float)
        return np.einsum("...i,ij,...j->...", x, self.matrix, x) + self.offset

    def feasible(self, x: np.ndarray) -> np.ndarray:
        """True where every one-hot group has exactly one variable set."""
        x = np.atleast_2d(np.asarray(x))
        ok = np.ones(len(x), dtype=bool)
        for g in self.groups:
            ok &= x[:, list(g)].sum(axis=1) == 1
        return ok

    def with_one_hot_penalty(self, weight: float) -> QUBO:
        """This QUBO plus ``weight·(Σ_g x − 1)²`` per group: −weight on each member, +2·weight per pair, +weight."""
        q = self.matrix.copy()
        for g in self.groups:
            for a, i in enumerate(g):
                q[i, i] -= weight
                for j in g[a + 1:]:
                    q[min(i, j), max(i, j)] += 2 * weight
        return QUBO(q, self.offset + weight * len(self.groups), self.groups)

    def ising(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(h, J, c) with x = (1 − z)/2: energy = Σ h_i z_i + Σ_{i<j} J_ij z_i z_j + c for spins z in {±1}."""
        q = self.matrix
        diag, upper = np.diag(q), np.triu(q, 1)
        row = upper.sum(axis=1) + upper.sum(axis=0)  # Σ_j Q_ij over j ≠ i, each pair once per endpoint
        h = -diag / 2 - row / 4
        c = self.offset + diag.sum() / 2 + upper.sum() / 4
        return h, upper / 4, float(c)

    def scale(self) -> float:
        """The largest coefficient's magnitude (1 for an all-zero problem)."""
        return float(np.abs(self.matrix).max()) or 1.0


@dataclass
class Solution:
    """A solver's answers, best first: feasible ones by energy, then (repaired) the rest."""

    samples: np.ndarray
    energies: np.ndarray
    solver: str
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> np.ndarray:
        return self.samples[0]


def repair(qubo: QUBO, x: np.ndarray) -> np.ndarray:
    """The cheapest feasible neighbour of ``x``: each broken group set to its best single choice, the rest kept."""
    y = np.asarray(x, dtype=int).copy()
    for g in qubo.groups:
        if y[list(g)].sum() == 1:
            continue
        best, best_e = None, np.inf
        for i in g:
            trial = y.copy()
            trial[list(g)] = 0
            trial[i] = 1
            e = float(qubo.energy(trial))
            if e < best_e:
                best, best_e = trial, e
        y = best
    return y


def rank(qubo: QUBO, samples: np.ndarray, solver: str, info: dict | None = None) -> Solution:
    """Distinct samples, infeasible ones repaired, sorted by energy; ``info`` records how many needed repair."""
    samples = np.atleast_2d(np.asarray(samples, dtype=int))
    feasible = qubo.feasible(samples)
    fixed = np.array([s if ok else repair(qubo, s) for s, ok in zip(samples, feasible)])
    unique = np.unique(fixed, axis=0)
    energies = qubo.energy(unique)
    order = np.argsort(energies, kind="stable")
    info = {**(info or {}), "samples": int(len(samples)), "infeasible_repaired": int((~feasible).sum())}
    return Solution(unique[order], energies[order], solver, info)
