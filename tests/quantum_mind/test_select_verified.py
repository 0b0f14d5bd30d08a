"""select_verified: which generated examples survive circuit verification, how drops are counted, the users' splits."""

from __future__ import annotations

import json

import pytest

from tasks.common.records import ChatRecord, read_chat_records, read_jsonl, write_jsonl
from tasks.quantum_mind.select_verified import SelectConfig, select
from tasks.training.mix_datasets import is_validation, record_digest

CODE = "```python\nfrom qiskit import QuantumCircuit\ncircuit = QuantumCircuit({n})\n```"


def example(i: int, kind: str = "physics_to_circuit", code_id: str | None = "auto") -> ChatRecord:
    """A generated example; with a code_id its answer holds a circuit the verify stage judged."""
    code_id = f"c{i}" if code_id == "auto" else code_id
    answer = f"Example {i}: a ring of {i % 5 + 2} qubits." + (f"\n\n{CODE.format(n=i % 5 + 2)}" if code_id else "")
    return ChatRecord(messages=[{"role": "system", "content": "You are a physicist."},
                                {"role": "user", "content": f"Question {i}: design a circuit for this simulation."},
                                {"role": "assistant", "content": answer}],
                      source="physics_augmented", kind=kind,
                      meta={"id": f"gen-{i}", "n_qubits": i % 5 + 2, "symmetry": "none",
                            **({"code_id": code_id} if code_id else {})})


def write_stage_inputs(tmp_path, physics: list[ChatRecord], reasoning: list[ChatRecord], results: list[dict]):
    gen, ver = tmp_path / "generate", tmp_path / "verify"
    write_jsonl(gen / "chat_physics.jsonl", physics)
    write_jsonl(gen / "chat_reasoning.jsonl", reasoning)
    write_jsonl(ver / "results.jsonl", results)
    return [gen, ver]


def kept_ids(path) -> list[str]:
    return [r.meta["id"] for r in read_chat_records(path)]


def test_only_examples_whose_circuit_passed_are_kept_and_drops_are_counted_by_outcome(tmp_path):
    inputs = write_stage_inputs(
        tmp_path,
        physics=[example(1), example(2), example(3), example(4)],
        reasoning=[example(5, "physics_reasoning", code_id=None), example(6, "physics_reasoning")],
        results=[{"id": "c1", "passed": True, "bp_status": "high"}, {"id": "c2", "passed": False, "outcome": "runtime_error"},
                 {"id": "c4", "passed": False}, {"id": "c6", "passed": True, "bp_status": "medium"}])  # c3 never verified
    out = select(SelectConfig(), inputs, tmp_path / "select")
    assert kept_ids(out / "physics.jsonl") == ["gen-1"]
    assert kept_ids(out / "reasoning.jsonl") == ["gen-5", "gen-6"], "pure reasoning needs no verification"
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert {k: v for k, v in counts.items() if k.startswith("dropped_")} == {
        "dropped_runtime_error": 1, "dropped_failed": 1, "dropped_not_verified": 1}


@pytest.mark.parametrize("keep_plateau, kept", [(True, ["gen-1", "gen-2"]), (False, ["gen-1"])])
def test_circuits_on_a_barren_plateau_are_dropped_only_when_the_config_says_so(tmp_path, keep_plateau, kept):
    inputs = write_stage_inputs(tmp_path, [example(1), example(2)], [],
                                [{"id": "c1", "passed": True, "bp_status": "high"},
                                 {"id": "c2", "passed": True, "bp_status": "plateau"}])
    out = select(SelectConfig(keep_plateau=keep_plateau), inputs, tmp_path / "select")
    assert kept_ids(out / "physics.jsonl") == kept
    assert json.loads((out / "manifest.json").read_text())["counts"].get("dropped_plateau", 0) == 2 - len(kept)


def test_too_few_survivors_fail_the_stage_and_leave_no_output(tmp_path):
    inputs = write_stage_inputs(tmp_path, [example(1), example(2)], [],
                                [{"id": "c1", "passed": True}, {"id": "c2", "passed": False, "outcome": "symmetry_broken"}])
    with pytest.raises(ValueError, match=r"only 1 examples passed verification \(min_kept 2\); "
                                         r"drops by outcome: \{'symmetry_broken': 1\} — see .*rejects.jsonl"):
        select(SelectConfig(min_kept=2), inputs, tmp_path / "select")
    assert not (tmp_path / "select").exists()


def test_the_users_splits_hold_each_kept_example_once_where_the_mix_stage_would_put_it(tmp_path):
    physics = [example(i) for i in range(1, 13)]
    reasoning = [example(i, "physics_reasoning", code_id=None) for i in range(13, 17)]
    results = [{"id": f"c{i}", "passed": i != 7, "outcome": "runtime_error"} for i in range(1, 13)]
    out = select(SelectConfig(val_fraction=0.3), write_stage_inputs(tmp_path, physics, reasoning, results),
                 tmp_path / "select")
    split = {s: read_jsonl(out / "physics_augmented" / f"{s}.jsonl") for s in ("train", "val")}
    kept = [r for r in physics + reasoning if r.meta["id"] != "gen-7"]
    assert sorted(r["metadata"]["id"] for s in split.values() for r in s) == sorted(r.meta["id"] for r in kept)
    assert {r["metadata"]["id"] for r in split["val"]} == \
           {r.meta["id"] for r in kept if is_validation(record_digest(r), 0.3)}
    assert split["train"] and split["val"], "a 30% split of 15 examples puts some in each"
    row = next(r for s in split.values() for r in s if r["metadata"]["id"] == "gen-1")
    assert row == {"type": "physics_to_circuit", "instruction": physics[0].messages[1].content, "input": "",
                   "output": physics[0].messages[2].content, "metadata": physics[0].meta}
