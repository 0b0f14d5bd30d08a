"""QUBO solvers behind one interface: exact enumeration, simulated annealing, QAOA on Qiskit Aer, Azure Quantum.

Every solver answers ``solve(qubo, *, seed) -> Solution`` with its samples ranked feasible-first
(``adapters.qubo.qubo.rank``) and says in ``unavailable(qubo)`` why it cannot take a problem (too many
variables, a package or credentials missing). Choosing among them by name, with fallbacks, is
``adapters/qubo/solver_choice.py`` (which also knows the Azure Quantum solver built on ``QAOASolver``).

    solution = QAOASolver(reps=3).solve(qubo, seed=0)
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import numpy as np

from adapters.qubo.qubo import QUBO, Solution, rank


def installed(module: str) -> bool:
    """Whether ``module`` (dotted names too) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


class Solver(Protocol):
    name: str

    def unavailable(self, qubo: QUBO) -> str | None:
        """Why this solver cannot take ``qubo`` here, or None."""

    def solve(self, qubo: QUBO, *, seed: int = 0) -> Solution:
        """Low-energy assignments of ``qubo``, best first."""


class ExactSolver:
    """Every one of the 2^n assignments, in blocks: the reference answer for small problems."""

    name = "exact"

    def __init__(self, max_variables: int = 22, keep: int = 32) -> None:
        self.max_variables, self.keep = max_variables, keep

    def unavailable(self, qubo: QUBO) -> str | None:
        if qubo.n > self.max_variables:
            return f"{qubo.n} variables > {self.max_variables} (2^n assignments)"
        return None

    def solve(self, qubo: QUBO, *, seed: int = 0) -> Solution:
        n, best = qubo.n, []
        block = 1 << min(n, 16)
        for start in range(0, 1 << n, block):
            ints = np.arange(start, min(start + block, 1 << n), dtype=np.int64)
            x = (ints[:, None] >> np.arange(n)) & 1
            e = qubo.energy(x)
            keep = np.argsort(e, kind="stable")[: self.keep]
            best.append(x[keep])
        return rank(qubo, np.concatenate(best), self.name, {"assignments": 1 << n})


class AnnealingSolver:
    """Simulated annealing (D-Wave's ``dwave-samplers``) on the QUBO as a dimod model."""

    name = "annealing"

    def __init__(self, num_reads: int = 200, num_sweeps: int = 1000) -> None:
        self.num_reads, self.num_sweeps = num_reads, num_sweeps

    def unavailable(self, qubo: QUBO) -> str | None:
        if not (installed("dwave.samplers") and installed("dimod")):
            return "dwave-samplers/dimod not installed (pip install dwave-samplers dimod)"
        return None

    def solve(self, qubo: QUBO, *, seed: int = 0) -> Solution:
        import dimod
        from dwave.samplers import SimulatedAnnealingSampler

        terms = {(i, j): float(qubo.matrix[i, j]) for i, j in zip(*np.nonzero(qubo.matrix))}
        bqm = dimod.BinaryQuadraticModel.from_qubo(terms, offset=qubo.offset)
        bqm.add_variables_from((i, 0.0) for i in range(qubo.n))  # variables with all-zero coefficients
        result = SimulatedAnnealingSampler().sample(bqm, num_reads=self.num_reads, num_sweeps=self.num_sweeps,
                                                    seed=seed)
        samples = result.record.sample[:, np.argsort(result.variables)]
        return rank(qubo, samples, self.name, {"num_reads": self.num_reads, "num_sweeps": self.num_sweeps})


class QAOASolver:
    """QAOA on Qiskit: angles tuned by COBYLA on the exact statevector expectation, then the circuit is sampled.

    Simulated in this thread with ``qiskit.quantum_info.Statevector``: Aer's primitives run each job in a
    worker thread, where copying the circuit segfaulted (qiskit 2.6 / qiskit-aer 0.18) in a process whose
    other threads had run Qiskit before. A device run goes through the ``azure`` solver.

    The cost Hamiltonian is the QUBO's Ising form scaled to unit largest coefficient, so one angle
    range suits every problem. Angles start from a linear ramp (a discretised anneal), which makes
    depth 2–3 land near the optimum on small problems without random restarts.
    """

    name = "qaoa"

    def __init__(self, reps: int = 3, shots: int = 4096, max_variables: int = 16, maxiter: int = 200) -> None:
        self.reps, self.shots, self.max_variables, self.maxiter = reps, shots, max_variables, maxiter

    def unavailable(self, qubo: QUBO) -> str | None:
        if qubo.n > self.max_variables:
            return f"{qubo.n} variables > {self.max_variables} qubits (statevector simulation)"
        if not installed("qiskit"):
            return "qiskit not installed (pip install qiskit)"
        return None

    def hamiltonian(self, qubo: QUBO):
        """The QUBO's Ising form as a ``SparsePauliOp`` (qubit i = variable i; constant dropped), unit scale."""
        from qiskit.quantum_info import SparsePauliOp

        h, j = _unit_ising(qubo)
        terms = [("Z", [i], h[i]) for i in range(qubo.n) if h[i]]
        terms += [("ZZ", [a, b], j[a, b]) for a, b in zip(*np.nonzero(j))]
        return SparsePauliOp.from_sparse_list(terms or [("I", [0], 0.0)], num_qubits=qubo.n)

    def ansatz(self, qubo: QUBO):
        """The QAOA circuit: |+>^n, then per layer exp(-iγC) as RZ/RZZ and exp(-iβΣX) as RX; parameters β then γ.

        Built gate by gate with real angles: ``qaoa_ansatz`` on the operator gives complex-valued angle
        expressions, which Aer 0.18 fails to bind and which crashed the interpreter while copying the circuit.
        """
        from qiskit import QuantumCircuit
        from qiskit.circuit import ParameterVector

        h, j = _unit_ising(qubo)
        beta, gamma = ParameterVector("β", self.reps), ParameterVector("γ", self.reps)
        qc = QuantumCircuit(qubo.n)
        qc.h(range(qubo.n))
        for layer in range(self.reps):
            for i in range(qubo.n):
                if h[i]:
                    qc.rz(2 * float(h[i]) * gamma[layer], i)
            for a, b in zip(*np.nonzero(j)):
                qc.rzz(2 * float(j[a, b]) * gamma[layer], int(a), int(b))
            qc.rx(2 * beta[layer], range(qubo.n))
        return qc, [*beta, *gamma]

    def optimise(self, qubo: QUBO, seed: int = 0):
        """(bound circuit without measurements, angles, expected scaled energy) after COBYLA."""
        from qiskit.quantum_info import Statevector
        from scipy.optimize import minimize

        cost = self.hamiltonian(qubo)
        ansatz, params = self.ansatz(qubo)

        def bound(theta: np.ndarray):
            return ansatz.assign_parameters(dict(zip(params, map(float, theta))))

        def expectation(theta: np.ndarray) -> float:
            return float(Statevector(bound(theta)).expectation_value(cost).real)

        ramp = (np.arange(self.reps) + 0.5) / self.reps
        start = np.concatenate([0.6 * (1 - ramp), 0.6 * ramp])  # β falls, γ rises: a discretised anneal
        best = minimize(expectation, start, method="COBYLA", options={"maxiter": self.maxiter, "rhobeg": 0.3})
        return bound(best.x), best.x, float(best.fun)

    def solve(self, qubo: QUBO, *, seed: int = 0) -> Solution:
        from qiskit.quantum_info import Statevector

        circuit, angles, expected = self.optimise(qubo, seed)
        state = Statevector(circuit)
        state.seed(seed)
        counts = state.sample_counts(self.shots)  # the shots an ideal device (or Aer) would return
        solution = rank(qubo, bitstring_samples(counts, qubo.n), self.name,
                        {"reps": self.reps, "shots": self.shots, "angles": angles.round(4).tolist(),
                         "expected_scaled_energy": round(expected, 4), "distinct_bitstrings": len(counts)})
        solution.info["best_shot_share"] = shot_share(counts, solution.best)
        return solution


def _unit_ising(qubo: QUBO) -> tuple[np.ndarray, np.ndarray]:
    """The QUBO's Ising fields and couplings scaled to unit largest magnitude (one angle range suits every problem)."""
    h, j, _ = qubo.ising()
    scale = max(np.abs(h).max(initial=0), np.abs(j).max(initial=0)) or 1.0
    return h / scale, j / scale


def bitstring_samples(counts: dict[str, int], n: int, keep: int = 256) -> np.ndarray:
    """The ``keep`` most frequent bitstrings as rows of variables (Qiskit: the rightmost character is qubit 0)."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:keep]
    return np.array([[int(bits[n - 1 - i]) for i in range(n)] for bits, _ in top], dtype=int)


def shot_share(counts: dict[str, int], x: np.ndarray) -> float:
    """The share of shots that measured exactly assignment ``x`` (how strongly the circuit points at it)."""
    bits = "".join(str(int(b)) for b in reversed(x))
    return round(counts.get(bits, 0) / max(1, sum(counts.values())), 4)
