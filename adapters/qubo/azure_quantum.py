"""Azure Quantum: the QAOA circuit of a QUBO, run on a workspace's gate-model target (IonQ's JSON circuit format).

Microsoft retired Azure Quantum's optimisation (QIO) targets, and the ``azure-quantum`` SDK (3.x) no
longer has an optimisation module, so a QUBO reaches Azure as a circuit: the QAOA angles are tuned
locally on the exact statevector (``QAOASolver.optimise``), the bound circuit is lowered to IonQ's gate set and
submitted as ``ionq.circuit.v1`` JSON; the returned histogram is decoded into ranked samples.

Credentials stay in the environment: ``AZURE_QUANTUM_CONNECTION_STRING``, or ``AZURE_QUANTUM_RESOURCE_ID``
+ ``AZURE_QUANTUM_LOCATION`` with any credential ``azure-identity`` finds (``az login``, a service
principal in ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``). Install: ``pip install azure-quantum``.
"""

from __future__ import annotations

import os

import numpy as np

from adapters.qubo.qubo import QUBO, Solution, rank
from adapters.qubo.qubo_solvers import QAOASolver, installed

QAOA_GATES = ("h", "rz", "rzz", "rx")


class AzureQuantumSolver:
    """QAOA for ``qubo`` sampled on an Azure Quantum target (default: IonQ's free simulator)."""

    name = "azure"

    def __init__(self, target: str = "ionq.simulator", shots: int = 1000, reps: int = 3, max_variables: int = 16,
                 timeout_s: int = 1800) -> None:
        self.target, self.shots, self.timeout_s = target, shots, timeout_s
        self.qaoa = QAOASolver(reps=reps, max_variables=max_variables)

    def unavailable(self, qubo: QUBO) -> str | None:
        if not installed("azure.quantum"):
            return "azure-quantum not installed (pip install azure-quantum)"
        if not (os.environ.get("AZURE_QUANTUM_CONNECTION_STRING") or os.environ.get("AZURE_QUANTUM_RESOURCE_ID")):
            return "no workspace: set AZURE_QUANTUM_CONNECTION_STRING, or AZURE_QUANTUM_RESOURCE_ID and AZURE_QUANTUM_LOCATION"
        return self.qaoa.unavailable(qubo)

    def payload(self, qubo: QUBO, seed: int = 0) -> dict:
        """The ``ionq.circuit.v1`` job input for ``qubo``'s QAOA circuit with locally tuned angles."""
        circuit, _, _ = self.qaoa.optimise(qubo, seed)
        return ionq_circuit(circuit)

    def solve(self, qubo: QUBO, *, seed: int = 0) -> Solution:
        from azure.quantum.target import IonQ

        payload = self.payload(qubo, seed)
        job = IonQ(workspace=_workspace(), name=self.target).submit(payload, name="labtune-qubo",
                                                                  input_params={"shots": self.shots})
        result = job.get_results(timeout_secs=self.timeout_s)
        samples = histogram_samples(result.get("histogram", result), qubo.n)
        return rank(qubo, samples, self.name, {"target": self.target, "job_id": job.id, "shots": self.shots,
                                                "gates": len(payload["circuit"])})


def _workspace():
    from azure.quantum import Workspace

    if os.environ.get("AZURE_QUANTUM_CONNECTION_STRING"):
        return Workspace.from_connection_string(os.environ["AZURE_QUANTUM_CONNECTION_STRING"])
    return Workspace(resource_id=os.environ["AZURE_QUANTUM_RESOURCE_ID"], location=os.environ.get("AZURE_QUANTUM_LOCATION"))


def ionq_circuit(circuit) -> dict:
    """A bound QAOA circuit (h, rz, rzz, rx; no measurements) in IonQ's JSON: ``{"qubits", "circuit": [...]}``.

    RZZ(θ) is lowered as CNOT · RZ(θ) on the target · CNOT; rotations in radians; IonQ measures every qubit at
    the end. Lowered by hand rather than with ``transpile``, whose 1-qubit optimisation pass crashed the
    interpreter here (qiskit 2.6) once other threads had run Qiskit.
    """
    gates = []
    for inst in circuit.data:
        name, qubits = inst.operation.name, [circuit.find_bit(q).index for q in inst.qubits]
        if name == "h":
            gates.append({"gate": "h", "target": qubits[0]})
        elif name in ("rx", "rz"):
            gates.append({"gate": name, "target": qubits[0], "rotation": float(inst.operation.params[0])})
        elif name == "rzz":
            a, b = qubits
            gates += [{"gate": "cnot", "control": a, "target": b},
                      {"gate": "rz", "target": b, "rotation": float(inst.operation.params[0])},
                      {"gate": "cnot", "control": a, "target": b}]
        elif name != "barrier":
            raise ValueError(f"gate {name!r} has no IonQ JSON form here (expected {', '.join(QAOA_GATES)})")
    return {"qubits": circuit.num_qubits, "circuit": gates}


def histogram_samples(histogram: dict[str, float], n: int, keep: int = 256) -> np.ndarray:
    """IonQ's result histogram (basis-state integer → probability; qubit 0 is the lowest bit) as sample rows."""
    top = sorted(histogram.items(), key=lambda kv: -float(kv[1]))[:keep]
    return np.array([[(int(state) >> i) & 1 for i in range(n)] for state, _ in top], dtype=int)
