"""Code-only twins: the verified circuits of the physics records, asked for plainly and answered by the code alone."""

from __future__ import annotations

import json

from tasks.quantum_mind.code_only_records import REQUESTS, code_only_record, request_text
from tasks.quantum_mind.quantum_eval_prompts import TEMPLATES
from tasks.common.records import ChatRecord, read_chat_records, write_jsonl
from tasks.quantum_mind.select_verified import SelectConfig, select

CODE = "from qiskit import QuantumCircuit\n\nreference = QuantumCircuit({n})\nansatz = QuantumCircuit({n})\ncircuit = reference.compose(ansatz)\n"


def physics_record(i: int, kind: str, claims: dict, code: bool = True) -> ChatRecord:
    answer = ("Mass drifts by 3e-12 over the run, so it is conserved; the x axis is PERIODIC, so the qubits form a ring."
              + (f"\n\nThe circuit:\n```python\n{CODE.format(n=claims['n_qubits'])}```" if code else ""))
    return ChatRecord(messages=[{"role": "system", "content": "You are a physicist."},
                                {"role": "user", "content": "Design a circuit for this simulation.\n\n- system: diffusion_2d, drift 3e-12"},
                                {"role": "assistant", "content": answer}],
                      source="physics_augmented", kind=kind,
                      meta={"id": f"gen-{i}", "code_id": f"c{i}", "dataset": "diffusion_2d", **claims})


def test_twin_asks_for_the_claims_and_answers_with_the_code_only():
    rec = physics_record(1, "physics_to_circuit", {"n_qubits": 6, "symmetry": "u1", "particles": 2, "family": "u1_givens"})
    twin = code_only_record(rec)
    request, answer = twin.messages[1].content, twin.messages[2].content
    assert "6 qubits" in request and "U(1)" in request and ("2 excitations" in request or "2 particles" in request)
    assert "diffusion" not in request and "drift" not in request and "PERIODIC" not in answer
    assert answer == f"```python\n{CODE.format(n=6)}```"
    assert twin.source == "code_only" and twin.meta["code_id"] == "c1" and twin.meta["twin_of"] == "physics_to_circuit"
    assert "odd parity" in request_text({"n_qubits": 4, "symmetry": "z2", "parity": "odd"}, 0)
    assert code_only_record(physics_record(2, "physics_reasoning", {"n_qubits": 4, "symmetry": "none"}, code=False)) is None


def test_requests_share_no_wording_with_the_validation_prompts():
    validation = [t.split("{")[0][:40] for ts in TEMPLATES.values() for t in ts]
    for sym, texts in REQUESTS.items():
        for pick in range(len(texts)):
            text = request_text({"n_qubits": 5, "symmetry": sym, "particles": 2, "parity": "even"}, pick)
            assert not any(phrase and phrase in text for phrase in validation)


def test_select_writes_a_twin_for_every_kept_circuit(tmp_path):
    gen, ver = tmp_path / "generate", tmp_path / "verify"
    u1 = {"n_qubits": 4, "symmetry": "u1", "particles": 1}
    write_jsonl(gen / "chat_physics.jsonl", [physics_record(1, "physics_to_circuit", u1),
                                             physics_record(2, "physics_to_circuit", {**u1, "n_qubits": 5})])
    write_jsonl(gen / "chat_reasoning.jsonl", [physics_record(3, "physics_reasoning", {"n_qubits": 6, "symmetry": "none"})])
    write_jsonl(ver / "results.jsonl", [{"id": "c1", "passed": True, "bp_status": "high"},
                                        {"id": "c2", "passed": False, "outcome": "symmetry_broken"},
                                        {"id": "c3", "passed": True, "bp_status": "medium"}])
    out = select(SelectConfig(), [gen, ver], tmp_path / "select")
    twins = read_chat_records(out / "code_only.jsonl")
    assert [t.meta["code_id"] for t in twins] == ["c1", "c3"]  # the failed circuit has no twin
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["code_only"] == 2 and counts["dropped_symmetry_broken"] == 1
