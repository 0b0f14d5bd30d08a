"""Barren-plateau status of a circuit: the variance, over random initialisations, of the gradients of a
local cost. Runs inside the sandbox (adapters/sandbox/jobs.py) on circuits exported by
tasks/quantum_mind/circuit_checks.py; tasks/quantum_mind/verify_circuits.py calls ``barren_plateaus`` once per batch of circuit
structures (parameters unbound), for items that passed their checks.

Cost C(θ) = ⟨Z0 Z1⟩ (or ⟨Z0⟩) of circuit(θ)|0…0⟩. For each of ``bp_samples`` random θ ~ U[0, 2π)^P
it takes the gradient ∂C/∂θ_k of each of ``bp_params`` parameters spread through the cost's
backward light cone; E[∂C/∂θ_k] = 0 for a periodic cost, so the variance of the pooled values is the
mean of the per-parameter variances. Status: > bp_high "high", > bp_medium "medium", else "plateau".

Gradients are exact and are those of the circuit's own parameters: a parameter shared by M gates
(translation-invariant ansätze put one angle in up to 24 gates) has ∂C/∂θ = Σ_j c_j ∂C/∂φ_j over
its gate occurrences j (c_j = ∂φ_j/∂θ). The parameter-shift rule gives each ∂C/∂φ_j from two circuits
(2·M·samples circuits per parameter); the adjoint method gives all of them from one forward and one
backward state-vector pass per sample: ∂C/∂φ_j = 2 Re⟨λ_j|D_j|ψ_j⟩, with ψ_j the state after gate j,
λ_j = U_{j+1}†…U_N† O ψ_N and D_j = (dU_j/dφ) U_j†. Both are exact for the gates here (U = exp(−iφG/2)
with G² = 1, or a phase gate), so the values are the parameter-shift values (tests compare them).

The circuit is transpiled to rotations and Cliffords, gates outside the cost's light cone are dropped
(exact) and so are the qubits no remaining gate touches; the simulator below is batched over samples.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tasks.quantum_mind.circuit_checks import load_circuits

ROTATIONS = {"rx", "ry", "rz", "rxx", "ryy", "rzz", "rzx"}  # exp(-iφG/2), G a Pauli string
PHASES = {"p", "cp"}  # I + (e^{iφ} - 1)Π, Π a projector
BASIS = sorted(ROTATIONS | PHASES | {"cx", "cz", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg", "swap"})
_NO_OP = {"barrier", "delay", "id"}


def bp_status(variance: float, high: float = 1e-2, medium: float = 1e-4) -> str:
    """``high`` / ``medium`` / ``plateau`` from a gradient variance."""
    return "high" if variance > high else "medium" if variance > medium else "plateau"


def barren_plateaus(args: dict) -> dict:
    """``{structure key: barren_plateau result}`` for ``args["structures"]`` ({key: export_circuits payload})."""
    return {key: barren_plateau({**args, "payload": payload, "structure_key": key})
            for key, payload in args["structures"].items()}


def barren_plateau(args: dict) -> dict:
    """Pooled variance over random θ of the exact gradients ∂C/∂θ_k (see the module docstring)."""
    from qiskit import transpile

    circuit = load_circuits(args["payload"])[2]
    samples = int(args.get("bp_samples", 16))
    if not circuit.num_parameters:
        return {"bp_status": "unknown", "grad_variance": None, "reason": "no parameters"}
    cost = [0, 1] if args.get("bp_cost", "z0z1") == "z0z1" and circuit.num_qubits > 1 else [0]
    gates, width, cost = light_cone(transpile(circuit, basis_gates=BASIS, optimization_level=0), cost)
    ordered: dict = {}  # parameter -> None, in circuit order
    for op, _ in gates:
        params = [q for p in op.params for q in sorted(getattr(p, "parameters", ()), key=lambda q: q.name)]
        if params and (op.name not in ROTATIONS | PHASES or type(op) is not _standard(op.name)):
            return {"bp_status": "unknown", "grad_variance": None, "reason": f"cannot differentiate {op.name}"}
        ordered.update(dict.fromkeys(params))
    ordered = list(ordered)
    if not ordered:  # the cost does not depend on any parameter: its gradient is zero everywhere
        return {"bp_status": "plateau", "grad_variance": 0.0, "reason": "no parameter in the cost's light cone"}
    k = min(int(args.get("bp_params", 8)), len(ordered))
    chosen = [ordered[i] for i in np.linspace(0, len(ordered) - 1, k).round().astype(int)]
    rng = np.random.default_rng([int(args.get("seed", 0)), int(str(args.get("structure_key") or "0")[:12], 16)])
    thetas = rng.uniform(0, 2 * math.pi, (samples, len(ordered)))
    grads = gradients(gates, width, cost, ordered, chosen, thetas)
    variance = float(grads.var())
    out = {"bp_status": bp_status(variance, args.get("bp_high", 1e-2), args.get("bp_medium", 1e-4)),
           "grad_variance": variance, "bp_params": k, "bp_samples": samples}
    if variance < 1e-20:
        out["reason"] = "gradients exactly zero: the cost ignores these parameters (symmetry), not exponential decay"
    return out


def light_cone(circuit, qubits: list[int]) -> tuple[list, int, list[int]]:
    """(gates [(op, qubits)], width, cost qubits) of the gates that can influence a cost on ``qubits``,
    on the qubits they touch, renumbered from 0 (qubits outside stay |0⟩ and do not matter)."""
    cone, keep = set(qubits), []
    for inst in reversed(circuit.data):
        if inst.operation.name in _NO_OP:
            continue
        where = [circuit.find_bit(q).index for q in inst.qubits]
        if cone.intersection(where):
            cone.update(where)
            keep.append((inst.operation, where))
    active = {q: i for i, q in enumerate(sorted(cone))}
    return [(op, [active[q] for q in where]) for op, where in reversed(keep)], len(active), [active[q] for q in qubits]


def gradients(gates: list, width: int, cost: list[int], ordered: list, chosen: list, thetas: np.ndarray) -> np.ndarray:
    """(samples, len(chosen)) exact gradients ∂C/∂θ of ``gates`` on ``width`` qubits from |0…0⟩,
    one row of ``thetas`` (columns as in ``ordered``) per sample, by the adjoint method."""
    samples, column = len(thetas), {p: c for c, p in enumerate(ordered)}
    which = {p: i for i, p in enumerate(chosen)}
    ops = []  # (matrix or per-sample matrices, qubits, derivative matrix, {chosen index: chain coefficient})
    for op, qubits in gates:
        expr = next((p for p in op.params if getattr(p, "parameters", None)), None)
        if expr is None:
            mat = _fixed_matrix(op)
            if not np.array_equal(mat, np.eye(len(mat))):
                ops.append((mat, qubits, None, None))
            continue
        gate = _standard(op.name)
        angles, chain = _angles(expr, column, which, thetas)
        ops.append((_rotation(op.name, angles, gate), qubits, _derivative(op.name, gate), chain))
    psi = np.zeros((samples, 1 << width), complex)
    psi[:, 0] = 1
    for mat, qubits, _, _ in ops:
        psi = _apply(psi, _terms(mat, samples, len(qubits)), qubits)
    index = np.arange(1 << width)
    lam = psi * (1 - 2 * (sum((index >> q) & 1 for q in cost) & 1))  # O ψ_N for O = Π_{q in cost} Z_q
    grads = np.zeros((samples, len(chosen)))
    first = min((j for j, o in enumerate(ops) if o[3]), default=len(ops))
    both = np.concatenate([psi, lam])  # ψ_j and λ_j go back together: rows :samples and samples:
    for j in range(len(ops) - 1, first - 1, -1):
        mat, qubits, deriv, chain = ops[j]
        if chain:
            dpsi = _apply(both[:samples], _terms(deriv, samples, len(qubits)), qubits)
            g = 2 * np.einsum("si,si->s", both[samples:].conj(), dpsi).real
            for i, coeff in chain.items():
                grads[:, i] += coeff * g
        if j > first:
            inverse = mat.conj().swapaxes(-1, -2)
            both = _apply(both, _terms(np.concatenate([inverse, inverse]) if inverse.ndim == 3 else inverse,
                                       2 * samples, len(qubits)), qubits)
    return grads


def _angles(expr, column: dict, which: dict, thetas: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-sample gate angle and {chosen index: ∂angle/∂θ} (constants for the usual linear angles)."""
    params = list(expr.parameters)
    slopes = {p: expr.gradient(p) for p in params}
    if not any(getattr(s, "parameters", None) for s in slopes.values()):
        offset = float(expr.bind({p: 0.0 for p in params}))
        angles = offset + sum(float(s) * thetas[:, column[p]] for p, s in slopes.items())
        return np.asarray(angles, float), {which[p]: float(s) for p, s in slopes.items() if p in which}
    binds = [{p: thetas[s, column[p]] for p in params} for s in range(len(thetas))]

    def slope(p, b: dict) -> float:
        s = slopes[p]
        return float(s.bind({q: b[q] for q in s.parameters})) if getattr(s, "parameters", None) else float(s)

    return (np.array([float(expr.bind(b)) for b in binds]),
            {which[p]: np.array([slope(p, b) for b in binds]) for p in params if p in which})


@functools.lru_cache(maxsize=None)
def _standard(name: str) -> type:
    """Qiskit's class of a standard gate (a custom gate that took a standard name is not differentiated)."""
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return type(get_standard_gate_name_mapping()[name])


@functools.lru_cache(maxsize=None)
def _at_pi(gate) -> np.ndarray:
    return np.asarray(gate(math.pi).to_matrix(), complex)


def _rotation(name: str, angles: np.ndarray, gate) -> np.ndarray:
    """(samples, d, d) matrices of a rotation, cos(φ/2) I + sin(φ/2) U(π), or phase gate, I + (e^{iφ} − 1)Π."""
    at_pi, a = _at_pi(gate), angles[:, None, None]
    eye = np.eye(len(at_pi))
    if name in PHASES:
        return eye + (np.exp(1j * a) - 1) * (eye - at_pi) / 2
    return np.cos(a / 2) * eye + np.sin(a / 2) * at_pi


def _derivative(name: str, gate) -> np.ndarray:
    """D with dU/dφ = D U(φ): −iG/2 = U(π)/2 for rotations, iΠ = i(I − U(π))/2 for phase gates."""
    at_pi = _at_pi(gate)
    return 1j * (np.eye(len(at_pi)) - at_pi) / 2 if name in PHASES else at_pi / 2


_FIXED: dict = {}


def _fixed_matrix(op) -> np.ndarray:
    key = (type(op), op.name, repr(op.params))
    if key not in _FIXED:
        _FIXED[key] = np.asarray(op.to_matrix(), complex)
    return _FIXED[key]


def _terms(mat: np.ndarray, samples: int, k: int) -> list[list]:
    """Per output index of a gate matrix, its nonzero inputs [(input index, coefficient or None for 1)]."""
    per_sample, shape = mat.ndim == 3, (samples,) + (1,) * (k + 1)
    nonzero, ones = (mat != 0).any(0) if per_sample else mat != 0, (mat == 1).all(0) if per_sample else mat == 1
    return [[(j, None if ones[i, j] else mat[:, i, j].reshape(shape) if per_sample else mat[i, j])
             for j in np.flatnonzero(nonzero[i])] for i in range(mat.shape[-1])]


def _apply(psi: np.ndarray, terms: list[list], qubits: list[int]) -> np.ndarray:
    """Apply a 1- or 2-qubit gate (``_terms`` of its matrix) to a batch of states (Qiskit's qubit order)."""
    samples, dim = psi.shape
    out = np.empty_like(psi)
    if len(qubits) == 1:
        q = qubits[0]
        src, dst = (a.reshape(samples, dim >> (q + 1), 2, 1 << q) for a in (psi, out))
        slots = [(slice(None), slice(None), b) for b in (0, 1)]
    elif len(qubits) == 2:
        lo, hi = sorted(qubits)
        src, dst = (a.reshape(samples, dim >> (hi + 1), 2, 1 << (hi - lo - 1), 2, 1 << lo) for a in (psi, out))
        # matrix index 2·b(qubits[1]) + b(qubits[0]); the view's axes are (…, b(hi), …, b(lo), …)
        slots = [(slice(None), slice(None), i >> 1, slice(None), i & 1) if qubits[0] == lo
                 else (slice(None), slice(None), i & 1, slice(None), i >> 1) for i in range(4)]
    else:
        raise ValueError(f"{len(qubits)}-qubit gate left after transpiling")
    for i, row in enumerate(terms):
        target = dst[slots[i]]
        if not row:
            target[...] = 0
        for n, (j, m) in enumerate(row):
            if n and m is None:
                target += src[slots[j]]
            elif n:
                target += m * src[slots[j]]
            elif m is None:
                np.copyto(target, src[slots[j]])
            else:
                np.multiply(m, src[slots[j]], out=target)  # no temporary for the first term
    return out


def warm_up() -> None:
    """Import and exercise everything the estimate uses, once, in the sandbox's zygote before it forks."""
    from tasks.quantum_mind.circuit_checks import sample_payload

    barren_plateaus({"structures": {"0": sample_payload()}, "bp_samples": 4})
