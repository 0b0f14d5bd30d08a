"""Barren-plateau estimate: adjoint gradients are the parameter-shift gradients, shared angles included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.quantum_mind.barren_plateau import BASIS, barren_plateaus, gradients, light_cone
from tasks.quantum_mind.circuit_checks import export_circuits

N = 5


def shared_circuit(angles: dict):
    """A translation-invariant ansatz: one hopping angle in all 8 RXX/RYY gates, one field in 5 RZ, one
    interaction in 4 RZZ, plus phase gates with a non-linear angle; ``angles[(group, gate)]`` sets each
    gate's own angle (a number, or the group's Parameter so the gates share it)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(N)
    qc.x([0, 2])
    qc.h(4)
    for q in range(N - 1):
        qc.rxx(angles[("hop", 2 * q)], q, q + 1)
        qc.ryy(angles[("hop", 2 * q + 1)], q, q + 1)
    for q in range(N):
        qc.rz(angles[("field", q)], q)
    for q in range(N - 1):
        qc.rzz(angles[("pair", q)], q + 1, q)
    qc.cp(angles[("phase", 0)], 4, 0)
    qc.p(angles[("phase", 1)], 1)
    qc.rzx(angles[("hop", 8)], 3, 1)
    return qc


GROUPS = {"hop": 9, "field": N, "pair": N - 1, "phase": 2}


def cost(qc) -> float:
    from qiskit.quantum_info import SparsePauliOp, Statevector

    return Statevector(qc).expectation_value(SparsePauliOp.from_sparse_list([("ZZ", [0, 1], 1.0)], N)).real


def test_shared_parameter_gradient_is_the_parameter_shift_sum_over_its_gates():
    from qiskit import transpile
    from qiskit.circuit import Parameter

    theta = {g: Parameter(g) for g in GROUPS}
    symbolic = {(g, j): (theta[g] * theta[g] if g == "phase" else 0.5 * theta[g] + 0.1 if g == "pair" else theta[g])
                for g, m in GROUPS.items() for j in range(m)}
    gates, width, cost_qubits = light_cone(transpile(shared_circuit(symbolic), basis_gates=BASIS, optimization_level=0), [0, 1])
    ordered = list(dict.fromkeys(q for op, _ in gates for p in op.params for q in getattr(p, "parameters", ())))
    assert set(ordered) == set(theta.values())
    rng = np.random.default_rng(3)
    thetas = rng.uniform(0, 2 * math.pi, (3, len(ordered)))
    adjoint = gradients(gates, width, cost_qubits, ordered, ordered, thetas)

    for s, row in enumerate(thetas):
        value = {p.name: v for p, v in zip(ordered, row)}
        angle = {(g, j): value[g] ** 2 if g == "phase" else 0.5 * value[g] + 0.1 if g == "pair" else value[g]
                 for g, m in GROUPS.items() for j in range(m)}
        for k, p in enumerate(ordered):
            g = p.name
            shift = 0.0  # Σ over the parameter's gates of chain coefficient x the two-circuit shift rule
            for j in range(GROUPS[g]):
                chain = 2 * value[g] if g == "phase" else 0.5 if g == "pair" else 1.0
                plus, minus = dict(angle), dict(angle)
                plus[(g, j)] += math.pi / 2
                minus[(g, j)] -= math.pi / 2
                shift += chain * (cost(shared_circuit(plus)) - cost(shared_circuit(minus))) / 2
            assert adjoint[s, k] == pytest.approx(shift, abs=1e-10), (s, g)
    assert np.abs(adjoint).max() > 0.1  # the comparison is not between zeros


def test_light_cone_drops_gates_and_idle_qubits():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    qc = QuantumCircuit(6)
    a, b = Parameter("a"), Parameter("b")
    qc.ry(a, 0)
    qc.cx(0, 2)
    qc.ry(b, 5)  # never reaches qubits 0 and 1
    qc.barrier()  # a no-op, not a link between all qubits
    qc.cz(2, 1)
    gates, width, cost_qubits = light_cone(qc, [0, 1])
    assert [(op.name, q) for op, q in gates] == [("ry", [0]), ("cx", [0, 2]), ("cz", [2, 1])]
    assert (width, cost_qubits) == (3, [0, 1])


def payload(build, n: int = 4) -> dict:
    from qiskit import QuantumCircuit

    reference, ansatz = QuantumCircuit(n), QuantumCircuit(n)
    build(reference, ansatz)
    return export_circuits({"reference": reference, "ansatz": ansatz, "circuit": reference.compose(ansatz)}, {})


def test_status_high_and_exact_zero():
    from qiskit.circuit import Parameter

    t = Parameter("t")
    out = barren_plateaus({"bp_samples": 8, "structures": {
        "0a": payload(lambda ref, ans: ans.ry(t, 0)),  # C = cos t: Var[-sin t] = 1/2
        "0b": payload(lambda ref, ans: (ref.x(1), ans.rzz(t, 0, 1))),  # RZZ commutes with Z0 Z1
    }})
    assert out["0a"]["bp_status"] == "high" and out["0a"]["grad_variance"] > 0.1
    assert out["0b"]["bp_status"] == "plateau" and "exactly zero" in out["0b"]["reason"]
