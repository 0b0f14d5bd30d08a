"""The code-only twin of a verified physics example: the circuit asked for plainly, answered by its code alone.

quantum-mind's validation compares the physics model with a "code-only" model. When QuantumLLMInstruct
is absent, that model trains on these twins: the same verified circuits, requested by what the
validation prompts check (qubit count, symmetry, particles or parity of the reference) and answered
with the code block only — no measurements, no physics reasoning, no dataset named. The select stage
writes them (``code_only.jsonl``) beside the physics records they come from.

    twin = code_only_record(physics_record)   # None when the record has no code block
"""

from __future__ import annotations

import hashlib

from tasks.common.code_blocks import extract_code
from tasks.common.records import ChatRecord

SOURCE = "code_only"
SYSTEM_PROMPT = "You write parameterised Qiskit circuits. Answer with one Python code block."
REQUESTS: dict[str, list[str]] = {
    "u1": ["Write a Qiskit variational circuit on {n} qubits that keeps the number of excitations fixed (U(1)); "
           "its reference state holds {k} excitations.",
           "Qiskit code for a U(1)-symmetric ansatz: {n} qubits, {k} particles in the reference state."],
    "z2": ["Write a Qiskit variational circuit on {n} qubits that commutes with the parity Π Z_i (Z2); its reference "
           "state has {parity} parity.",
           "Qiskit code for a Z2 (parity-preserving) ansatz on {n} qubits, starting in the {parity}-parity sector."],
    "none": ["Write a Qiskit variational circuit on {n} qubits; no symmetry is required.",
             "Qiskit code for a {n}-qubit ansatz without a built-in symmetry."],
}


# as the physics records (tasks/quantum_mind/brief_answers.py), a share of the requests name the code contract
CONTRACTS = ("", " Define reference, ansatz and circuit = reference.compose(ansatz) in one python block.",
             " One python block: a fixed `reference`, a parameterised `ansatz`, their composition `circuit`.")


def request_text(claims: dict, pick: int = 0) -> str:
    """The plain request for a circuit with these claims (``pick`` chooses the wording)."""
    sym = claims["symmetry"]
    options = REQUESTS[sym]
    return options[pick % len(options)].format(n=claims["n_qubits"], k=claims.get("particles"), parity=claims.get("parity"))


def code_only_record(rec: ChatRecord) -> ChatRecord | None:
    """``rec``'s circuit as a request and its code block only; None when its answer holds no code."""
    code = extract_code(rec.messages[-1].content)
    if code is None:
        return None
    pick = int(hashlib.sha256(rec.meta.get("code_id", code).encode()).hexdigest()[:8], 16)
    return ChatRecord(messages=[{"role": "system", "content": SYSTEM_PROMPT},
                                {"role": "user", "content": request_text(rec.meta, pick) + CONTRACTS[pick % 3]},
                                {"role": "assistant", "content": f"```python\n{code}```"}],
                      source=SOURCE, kind=SOURCE, meta={**rec.meta, "twin_of": rec.kind})
