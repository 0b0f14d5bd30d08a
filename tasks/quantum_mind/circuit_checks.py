"""Physics checks of a code block's circuits. They run inside the sandbox (adapters/sandbox/jobs.py), called
by tasks/quantum_mind/verify_circuits.py; nothing here trusts the code.

* ``export_circuits(ns, args)`` runs in the code's own process after the code ran: it takes
  ``reference``, ``ansatz`` and ``circuit`` from the namespace and returns them as QPY (base64).
* ``check_claims(args)`` runs in a fresh process on that QPY: contract, qubit count, composition,
  particle number and symmetry; it also returns the circuit's structure key.

The barren-plateau estimate on the same QPY is tasks/quantum_mind/barren_plateau.py.

Symmetry (charge Q = Σ Z_i, i.e. particle number N = Σ(1−Z_i)/2, for "u1"; Q = Π Z_i for "z2"):

1. Gate-wise certificate, exact at any size: every gate of the ansatz commutes with Q on its own
   qubits. Q's local part is diagonal and invariant under qubit permutations, so this is
   |G_ij| = 0 wherever the local charges of i and j differ. Symbolic angles are checked at random
   values: the commutator is analytic in the angle, so it vanishes at a random point only if it
   vanishes everywhere (with probability 1). Sufficient, not necessary (RXX·RYY conserves N,
   RXX alone does not), hence step 2.
2. Random-state test, when step 1 fails: for each random parameter draw θ,
   ‖Q U(θ) g − U(θ) Q g‖ for a Gaussian random state g. A nonzero [U(θ), Q] maps all but a
   measure-zero set of g to a nonzero vector, so this sampled test is exact with probability 1
   at any width, for two state evolutions instead of the full unitary or a basis of every sector
   (so the same method serves ≤ 12 qubits and above, up to ``max_qubits``).
3. Always: circuit(θ)|0⟩ has zero variance of N (u1) or of Π Z_i (z2) for every draw, circuit
   equals reference followed by ansatz, and reference|0⟩ has the claimed particle number.

The state-vector simulator below applies gate matrices with numpy (~25 µs per gate at 12 qubits,
batched over states); the tests compare it with Qiskit's ``Statevector``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math

import numpy as np

CONTRACT = ("reference", "ansatz", "circuit")
_SKIP = {"barrier", "delay", "id", "global_phase"}


class ContractError(ValueError):
    """The code's circuits break the code contract (see tasks/quantum_mind/verify_circuits.py)."""


# ---- step A: in the code's process ----------------------------------------------------------------

def export_circuits(ns: dict, args: dict) -> dict:
    """``{"qpy": base64}`` of (reference, ansatz, circuit), or ``{"contract_error": why}``."""
    from qiskit import QuantumCircuit, qpy

    missing = [name for name in CONTRACT if name not in ns]
    if missing:
        return {"contract_error": f"the code does not define {', '.join(missing)} at module level"}
    for name in CONTRACT:
        if not isinstance(ns[name], QuantumCircuit):
            return {"contract_error": f"{name} is a {type(ns[name]).__name__}, not a QuantumCircuit"}
    buf = io.BytesIO()
    try:
        qpy.dump([ns[name] for name in CONTRACT], buf)
    except Exception as e:  # noqa: BLE001 — any failure to serialise is the code's problem
        return {"contract_error": f"cannot serialise the circuits: {type(e).__name__}: {e}"}
    return {"qpy": base64.b64encode(buf.getvalue()).decode()}


def load_circuits(payload: dict):
    """(reference, ansatz, circuit) from an ``export_circuits`` payload, final measurements removed."""
    from qiskit import qpy

    circuits = qpy.load(io.BytesIO(base64.b64decode(payload["qpy"])))
    return tuple(c.remove_final_measurements(inplace=False) if _measures(c) else c for c in circuits)


def _measures(circuit) -> bool:
    return any(inst.operation.name == "measure" for inst in circuit.data)


# ---- step B: fresh process ------------------------------------------------------------------------------

def check_claims(args: dict) -> dict:
    """Check the claims of one item against its circuits (see the module docstring)."""
    claims, payload = args["claims"], args["payload"]
    out = {"outcome": "ok", "reason": "", "checks": {"parses": True, "runs": True}, "symmetry_error": None}
    try:
        if "contract_error" in payload:
            raise ContractError(payload["contract_error"])
        reference, ansatz, circuit = load_circuits(payload)
        out.update(n_qubits=circuit.num_qubits, n_params=ansatz.num_parameters, n_gates=len(circuit.data),
                   depth=circuit.depth(), structure_key=structure_key(circuit))
        _check_contract(reference, ansatz, circuit)
        out["checks"]["contract_ok"] = True
        return _check_physics(reference, ansatz, circuit, claims, args, out)
    except ContractError as e:
        out["checks"]["contract_ok"] = False
        return {**out, "outcome": "contract_error", "reason": str(e)}


def _check_contract(reference, ansatz, circuit) -> None:
    widths = {reference.num_qubits, ansatz.num_qubits, circuit.num_qubits}
    if len(widths) > 1:
        raise ContractError(f"reference, ansatz and circuit act on different qubit counts {sorted(widths)}")
    if reference.num_parameters:
        raise ContractError(f"reference has free parameters {[p.name for p in reference.parameters]}")
    if not ansatz.num_parameters:
        raise ContractError("ansatz has no parameters (it must be the parameterised block)")
    if {p.name for p in ansatz.parameters} != {p.name for p in circuit.parameters}:
        raise ContractError("circuit and ansatz have different parameters (circuit must be reference + ansatz)")


def _fail(out: dict, outcome: str, reason: str) -> dict:
    return {**out, "outcome": outcome, "reason": reason}


def _check_physics(reference, ansatz, circuit, claims: dict, args: dict, out: dict) -> dict:
    n, tol, checks = circuit.num_qubits, float(args.get("tolerance", 1e-8)), out["checks"]
    checks["n_qubits_ok"] = bool(n == claims["n_qubits"])
    if not checks["n_qubits_ok"]:
        return _fail(out, "n_qubits_mismatch", f"circuit has {n} qubits, claims say {claims['n_qubits']}")
    if n > args.get("max_qubits", 16):
        return _fail(out, "too_large", f"{n} qubits is above the state-vector limit max_qubits={args.get('max_qubits', 16)}")
    sym = claims.get("symmetry", "none")
    rng = np.random.default_rng([int(args.get("seed", 0)), int(out["structure_key"][:12], 16)])
    counts = _popcounts(n)
    charge = None if sym == "none" else (n - 2 * counts) if sym == "u1" else (1 - 2 * (counts & 1))
    zero = np.zeros(1 << n, complex)
    zero[0] = 1
    ref_state = _evolve(_compile(reference), zero[None])[0]
    out["particle_number"] = round(float(np.dot(np.abs(ref_state) ** 2, counts)), 9)
    particles = claims.get("particles")
    if sym == "u1" and particles is not None:
        checks["particles_ok"] = bool(abs(out["particle_number"] - particles) < 1e-6)
        if not checks["particles_ok"]:
            return _fail(out, "particles_mismatch",
                         f"reference state has {out['particle_number']:g} particles, claims say {particles}")
    leak, culprit = _gatewise_leak(ansatz, sym, rng) if charge is not None else (0.0, "")
    certified = leak <= tol
    out["symmetry_method"] = "none" if charge is None else "gatewise" if certified else "random_states"
    names = {p.name: i for i, p in enumerate(sorted(ansatz.parameters, key=lambda p: p.name))}
    state_err = comm_err = composition_err = 0.0
    for draw in range(max(1, int(args.get("random_draws", 3))) if charge is not None else 1):
        theta = rng.uniform(0, 2 * math.pi, len(names))
        states = [ref_state]
        if charge is not None and not certified:
            g = rng.normal(size=1 << n) + 1j * rng.normal(size=1 << n)
            g /= np.linalg.norm(g)
            states += [g, charge * g]
        evolved = _evolve(_compile(_bind(ansatz, theta, names)), np.stack(states))
        finals = [evolved[0]]
        if draw == 0:
            prepared = _evolve(_compile(_bind(circuit, theta, names)), zero[None])[0]
            composition_err = 1 - abs(np.vdot(prepared, evolved[0]))
            finals.append(prepared)
        if charge is not None:
            for psi in finals:
                p = np.abs(psi) ** 2
                q = counts if sym == "u1" else charge
                state_err = max(state_err, float(np.dot(p, q * q) - np.dot(p, q) ** 2))
            if not certified:
                comm_err = max(comm_err, float(np.linalg.norm(charge * evolved[1] - evolved[2])))
    checks["composition_ok"] = bool(composition_err < 1e-6)
    if not checks["composition_ok"]:
        return _fail(out, "contract_error", f"circuit is not reference followed by ansatz (1 - fidelity = {composition_err:.2e})")
    out["symmetry_error"] = float(max(state_err, comm_err, leak if certified else 0.0))
    checks["symmetry_ok"] = bool(out["symmetry_error"] <= tol)
    if not checks["symmetry_ok"]:
        what = "particle number" if sym == "u1" else "parity"
        reason = (f"ansatz does not conserve {what}: ‖[U, Q]g‖ = {comm_err:.3g}" if comm_err > tol
                  else f"prepared state has no definite {what} (variance {state_err:.3g})")
        return _fail(out, "symmetry_broken", reason + (f"; first offending gate: {culprit}" if culprit else ""))
    return out


def _popcounts(n: int) -> np.ndarray:
    idx = np.arange(1 << n)
    return sum((idx >> q) & 1 for q in range(n)) if n else np.zeros(1, int)


def _bind(circuit, theta: np.ndarray, names: dict):
    return circuit.assign_parameters({p: theta[names[p.name]] for p in circuit.parameters}) if circuit.parameters else circuit


# ---- state-vector simulation ---------------------------------------------------------------------------

def _matrix(op) -> np.ndarray | None:
    if op.num_qubits > 4:
        return None  # expand its definition instead of building a 2^k x 2^k matrix
    try:
        return np.asarray(op.to_matrix(), dtype=complex)
    except Exception:  # noqa: BLE001 — no closed form: build it from the definition
        if op.definition is None:
            return None
        from qiskit.quantum_info import Operator

        return Operator(op.definition).data


def _compile(circuit, qubits: list[int] | None = None, ops: list | None = None) -> list:
    """[(matrix, qubit indices)] of a bound circuit, custom gates expanded; non-unitary ops are a ContractError."""
    ops = [] if ops is None else ops
    index = {q: (qubits[i] if qubits else i) for i, q in enumerate(circuit.qubits)}
    for inst in circuit.data:
        op, where = inst.operation, [index[q] for q in inst.qubits]
        if op.name in _SKIP:
            continue
        if op.name in ("measure", "reset") or getattr(op, "blocks", None) or inst.clbits:
            raise ContractError(f"non-unitary instruction {op.name!r} in a circuit that must be unitary")
        if any(getattr(p, "parameters", None) for p in op.params):
            raise ContractError(f"unbound parameter in {op.name!r}")
        mat = _matrix(op)
        if mat is not None:
            ops.append((mat, where))
        elif op.definition is not None:
            _compile(op.definition, where, ops)
        else:
            raise ContractError(f"cannot simulate instruction {op.name!r}")
    return ops


def _evolve(ops: list, states: np.ndarray) -> np.ndarray:
    """Apply ``ops`` to a batch of state vectors (Qiskit's little-endian qubit order)."""
    batch, dim = states.shape
    n = dim.bit_length() - 1
    psi = states.reshape((batch,) + (2,) * n)
    for mat, qubits in ops:
        k = len(qubits)
        axes = [n - q for q in reversed(qubits)]  # axis 0 is the batch
        psi = np.tensordot(mat.reshape((2,) * (2 * k)), psi, axes=(list(range(k, 2 * k)), axes))
        psi = np.moveaxis(psi, list(range(k)), axes)
    return psi.reshape(batch, dim)


def _gatewise_leak(ansatz, sym: str, rng) -> tuple[float, str]:
    """Largest charge-changing matrix element over the ansatz's gates, and the first gate that has one."""
    from qiskit import QuantumCircuit

    worst, culprit, seen, standard = 0.0, "", {}, _standard_gates()
    for i, inst in enumerate(ansatz.data):
        op = inst.operation
        if op.name in _SKIP:
            continue
        key = (op.name, op.num_qubits, tuple("θ" if getattr(p, "parameters", None) else repr(p) for p in op.params),
               None if op.name in standard else i)  # custom gates share names, not definitions
        if key not in seen:
            probe = QuantumCircuit(op.num_qubits)
            probe.append(op, range(op.num_qubits))
            if probe.parameters:
                probe.assign_parameters({p: rng.uniform(0, 2 * math.pi) for p in probe.parameters}, inplace=True)
            try:
                seen[key] = max((_leak(m, len(q), sym) for m, q in _compile(probe)), default=0.0)
            except ContractError:
                seen[key] = 0.0  # reported by the simulation step
        if seen[key] > worst:
            where = [ansatz.find_bit(q).index for q in inst.qubits]
            worst, culprit = seen[key], culprit or f"{op.name} on qubits {where} (instruction {i})"
    return worst, culprit


def _leak(mat: np.ndarray, k: int, sym: str) -> float:
    local = _popcounts(k)
    if sym == "z2":
        local = local & 1
    mask = local[:, None] != local[None, :]
    return float(np.abs(mat[mask]).max()) if mask.any() else 0.0


@functools.lru_cache(maxsize=1)
def _standard_gates() -> frozenset:
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping())


# ---- structure key -------------------------------------------------------------------------------------

def structure_key(circuit) -> str:
    """Hash of the circuit with parameters unbound: gates, qubits, fixed angles, parameter pattern."""
    from qiskit.circuit import Parameter, ParameterExpression

    standard = _standard_gates()
    order: dict = {}
    h = hashlib.sha256(str(circuit.num_qubits).encode())

    def canon(p) -> str:
        if isinstance(p, Parameter):
            return f"§{order.setdefault(p, len(order))}"
        if isinstance(p, ParameterExpression):
            for q in sorted(p.parameters, key=lambda q: q.name):
                order.setdefault(q, len(order))
            return str(p.subs({q: Parameter(f"§{order[q]}") for q in p.parameters}))
        if isinstance(p, (int, float, complex, np.number)):
            return repr(np.round(complex(p), 10))
        return repr(np.round(np.asarray(p), 10).tolist()) if isinstance(p, np.ndarray) else repr(p)

    def walk(c, qubits) -> None:
        index = {q: (qubits[i] if qubits else i) for i, q in enumerate(c.qubits)}
        for inst in c.data:
            op = inst.operation
            where = [index[q] for q in inst.qubits]
            h.update(f"{op.name}{where}{[canon(p) for p in op.params]};".encode())
            if op.name not in standard and op.definition is not None:
                walk(op.definition, where)

    walk(circuit, None)
    return h.hexdigest()[:20]


def sample_payload() -> dict:
    """A tiny exported U(1) circuit (one particle, 2 qubits): what the zygotes warm their code paths on."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.circuit.library import XXPlusYYGate

    theta = ParameterVector("t", 2)
    reference, ansatz = QuantumCircuit(2), QuantumCircuit(2)
    reference.x(0)
    ansatz.append(XXPlusYYGate(theta[0]), [0, 1])
    ansatz.rz(theta[1], 0)
    return export_circuits({"reference": reference, "ansatz": ansatz, "circuit": reference.compose(ansatz)}, {})


def warm_up() -> None:
    """Import and exercise everything the checks use, once, in the sandbox's zygote before it forks."""
    check_claims({"claims": {"n_qubits": 2, "symmetry": "u1", "particles": 1}, "payload": sample_payload()})
