"""QUBO solvers: every answer respects the one-hot groups, QAOA finds a known optimum, the Azure payload is the circuit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adapters.qubo.azure_quantum import AzureQuantumSolver, histogram_samples
from adapters.qubo.qubo import QUBO, repair
from adapters.qubo.qubo_solvers import QAOASolver
from adapters.qubo.solver_choice import make_solver, solve_in_order

GROUPS = ((0, 1, 2, 3), (4, 5), (6, 7), (8, 9, 10))


def one_hot_problem(seed: int) -> tuple[QUBO, np.ndarray]:
    """A random QUBO over four one-hot groups, penalised, and its best feasible assignment by brute force."""
    rng = np.random.default_rng(seed)
    base = QUBO(np.triu(rng.normal(size=(11, 11))), 0.0, GROUPS)
    best = min((np.bincount([a, 4 + b, 6 + c, 8 + d], minlength=11) for a, b, c, d in
                itertools.product(range(4), range(2), range(2), range(3))), key=lambda x: base.energy(x))
    weight = 1.5 * (np.abs(base.matrix).sum(0) + np.abs(base.matrix).sum(1)).max()
    return base.with_one_hot_penalty(weight), best


@pytest.mark.parametrize("solver", ["exact", "annealing", "qaoa"])
def test_every_answer_of_every_solver_keeps_one_choice_per_group(solver):
    for seed in range(2):
        qubo, best = one_hot_problem(seed)
        solution = make_solver(solver).solve(qubo, seed=seed)
        assert qubo.feasible(solution.samples).all(), f"{solver} returned an assignment breaking a one-hot group"
        assert np.array_equal(solution.best, best), f"{solver} missed the feasible optimum (seed {seed})"
        assert np.all(np.diff(solution.energies) >= 0)


def test_penalty_makes_infeasible_assignments_cost_more_and_repair_restores_one_hot():
    qubo, best = one_hot_problem(0)
    broken = best.copy()
    broken[[0, 1, 2, 3]] = [1, 1, 0, 0]  # two choices in the first group
    assert qubo.energy(broken) > qubo.energy(best)
    fixed = repair(qubo, broken)
    assert qubo.feasible(fixed).all() and np.array_equal(fixed[4:], broken[4:])


def test_ising_form_has_the_same_energy_as_the_qubo():
    qubo, _ = one_hot_problem(3)
    h, j, c = qubo.ising()
    for x in np.random.default_rng(0).integers(0, 2, size=(20, qubo.n)):
        z = 1 - 2 * x
        assert h @ z + z @ j @ z + c == pytest.approx(qubo.energy(x))


def test_qaoa_finds_the_optimum_of_a_small_known_qubo_and_points_at_it():
    # Max-cut of a 5-node ring with a chord, as a QUBO: the optimum cuts 5 edges, e.g. 10100 / 01011
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)]
    q = np.zeros((5, 5))
    for a, b in edges:
        q[a, a] -= 1
        q[b, b] -= 1
        q[a, b] += 2
    qubo = QUBO(q)
    exact = make_solver("exact").solve(qubo)
    solution = QAOASolver(reps=3, shots=4096).solve(qubo, seed=1)
    assert solution.energies[0] == pytest.approx(exact.energies[0]) == -5
    assert solution.info["best_shot_share"] > 2 / 32  # well above a uniform guess over the 32 bitstrings


def test_fallback_order_is_taken_and_said():
    qubo = QUBO(np.diag(-np.ones(20)))
    said = []
    solution = solve_in_order(qubo, ["qaoa", "annealing"], log=said.append)
    assert solution.solver == "annealing" and solution.best.sum() == 20
    assert "qaoa unavailable (20 variables > 16 qubits" in said[0]
    with pytest.raises(RuntimeError, match="no QUBO solver could take this 30-variable problem"):
        solve_in_order(QUBO(np.zeros((30, 30))), ["qaoa", "exact"], log=said.append)


def test_azure_solver_says_what_it_needs_without_a_workspace(monkeypatch):
    for var in ("AZURE_QUANTUM_CONNECTION_STRING", "AZURE_QUANTUM_RESOURCE_ID"):
        monkeypatch.delenv(var, raising=False)
    reason = AzureQuantumSolver().unavailable(QUBO(np.eye(3)))
    assert "azure-quantum not installed" in reason or "AZURE_QUANTUM_RESOURCE_ID" in reason


def test_azure_payload_is_the_qaoa_circuit_in_ionq_json():
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Statevector

    qubo, _ = one_hot_problem(1)
    small = QUBO(qubo.matrix[:6, :6], 0.0, (GROUPS[0], GROUPS[1]))
    solver = AzureQuantumSolver(reps=2)
    payload = solver.payload(small)
    assert payload["qubits"] == 6
    assert {g["gate"] for g in payload["circuit"]} <= {"h", "rx", "rz", "cnot"}
    # Rebuilt from the JSON, the circuit prepares the same state as the locally tuned QAOA circuit
    rebuilt = QuantumCircuit(6)
    for g in payload["circuit"]:
        if g["gate"] == "cnot":
            rebuilt.cx(g["control"], g["target"])
        elif g["gate"] == "h":
            rebuilt.h(g["target"])
        else:
            getattr(rebuilt, g["gate"])(g["rotation"], g["target"])
    original, _, _ = solver.qaoa.optimise(small)
    assert Statevector(rebuilt).equiv(Statevector(original))


def test_ionq_histogram_decodes_little_endian():
    samples = histogram_samples({"5": 0.7, "2": 0.3}, 3)
    assert samples.tolist() == [[1, 0, 1], [0, 1, 0]]
