"""The quantum-mind validation suite: held-out prompts, answer scoring by execution, Qiskit HumanEval, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode
from tasks.common.code_blocks import code_closed, extract_code
from tasks.quantum_mind.evaluate_quantum import (EvaluateConfig, check_answers, evaluate, humaneval_program, novel_score, read_humaneval,
                                    score, validation_markdown)
from tasks.quantum_mind.generate_physics_examples import GenerateConfig, generate, read_features
from tasks.quantum_mind.physics_reasoning import INSTRUCTIONS
from tasks.quantum_mind.quantum_eval_prompts import CONTRACT, build_prompts, requestable, split_of
from tasks.common.records import RecordError

HUMANEVAL = Path(__file__).parents[1] / "assets" / "qiskit_humaneval_sample.json"


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qm") / "encode"
    return encode(EncodeConfig(), None, out) / "features.jsonl"


def u1_answer(n: int, k: int, extra_qubit: bool = False, broken: bool = False) -> str:
    """A hand-written answer: XX+YY hops on a chain from k particles (or RY rotations, which break U(1))."""
    gate = "ansatz.ry(theta[i], i)" if broken else "ansatz.append(XXPlusYYGate(theta[i]), [i, i + 1])"
    return f"""Hops conserve the particle number.

```python
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import XXPlusYYGate

n = {n + extra_qubit}
reference = QuantumCircuit(n)
for q in [0, *range(2, {k} + 1)]:  # qubit 1 empty: the first hop moves a particle, so <Z0 Z1> has gradients
    reference.x(q)
theta = ParameterVector("t", n - 1)
ansatz = QuantumCircuit(n)
for i in range(n - 1):
    {gate}
circuit = reference.compose(ansatz)
```
Done."""


def test_code_is_extracted_from_fenced_blocks_even_unterminated():
    assert extract_code("text\n```python\nx = 1\n```\nmore ```python\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nx = 1\n") == "x = 1\n"
    assert extract_code("no code at all") is None and extract_code("```python\n\n```") is None
    assert not code_closed("Here:\n```python\nx = 1\n") and code_closed("```python\nx = 1\n```")


def test_prompts_are_held_out_by_trajectory_and_wording(features, tmp_path):
    rows = read_features(features)
    prompts, held_out = build_prompts(rows, 30, 4, 8, seed=1)
    assert held_out and len({p.id for p in prompts}) == 30
    assert {split_of(r) for r in rows} == {"train", "valid", "test"}
    test_files = {r.file for r in rows if split_of(r) == "test"}
    assert {p.file for p in prompts} <= test_files
    training_phrases = [t.split("{")[0][:40] for ts in INSTRUCTIONS.values() for t in ts]
    for p in prompts:
        assert not any(phrase in p.prompt for phrase in training_phrases)
        assert CONTRACT in p.prompt and f"{p.n_qubits}" in p.prompt and 4 <= p.n_qubits <= 8
        f = next(r for r in rows if r.file == p.file and r.trajectory == p.trajectory)
        assert p.symmetry in requestable(f)  # never asks for a symmetry the physics does not have
        assert (p.particles is not None) == (p.symmetry == "u1")
    assert {p.symmetry for p in prompts} >= {"u1", "none"}
    # the generator keeps the held-out split out of training
    gen = generate(GenerateConfig(examples=40, max_qubits=6, max_layers=2), features, tmp_path / "generate")
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["counts"]["held_out_trajectories"] == len([r for r in rows if split_of(r) == "test"])
    trained = {json.loads(line)["metadata"]["file"] for line in (gen / "physics_augmented.jsonl").read_text().splitlines()}
    assert not trained & test_files


def test_a_share_of_prompts_asks_about_a_pde_family_never_trained_on(features):
    rows = read_features(features)
    prompts, held_out = build_prompts(rows, 10, 4, 8, seed=1, novel_datasets=["diffusion_2d"], novel_share=0.4)
    novel = [p for p in prompts if p.novel]
    assert held_out and len(novel) == 4 and {p.dataset for p in novel} == {"diffusion_2d"}
    assert {split_of(r) for r in rows if r.file in {p.file for p in novel}} > {"test"}  # any split: none was trained on
    assert all(split_of(r) == "test" and r.dataset != "diffusion_2d"
               for p in prompts if not p.novel for r in rows if r.file == p.file)
    assert all("diffusion" in p.prompt for p in novel)
    assert not any(p.novel for p in build_prompts(rows, 10, 4, 8, seed=1, novel_datasets=["no_such_pde"], novel_share=0.4)[0])


def test_novel_prompts_are_scored_apart_and_tabled(features):
    prompts, _ = build_prompts(read_features(features), 4, 4, 6, seed=2, novel_datasets=["diffusion_2d"], novel_share=0.5)
    passed = {"passed": True, "outcome": "passed", "checks": {"parses": True, "symmetry_ok": True}, "bp_status": "high"}
    failed = {"passed": False, "outcome": "no_code", "checks": {"parses": False}, "bp_status": None}
    rows = [passed if p.novel else failed for p in prompts]
    novel = novel_score(prompts, rows)
    assert novel["novel_prompts"] == 2 and novel["novel_verified"] == 1.0 and score(prompts, rows)["verified"] == 0.5
    assert novel_score(prompts, [failed] * 4)["novel_verified"] == 0.0 and novel_score(prompts[:2], rows[:2]) == {}
    results = {"base": {**score(prompts, [failed] * 4), "humaneval_pass@1": None},
               "physics": {**score(prompts, rows), **novel, "humaneval_pass@1": 0.25}}
    table = validation_markdown({name: dict(sorted(r.items())) for name, r in results.items()}).splitlines()
    assert table[0] == "| metric | base | physics |"
    assert [row.split(" | ")[0] for row in table[2:9]] == ["| prompts", "| syntax_valid", "| verified", "| symmetry_respected",
                                                            "| bp_free", "| n_qubits_ok", "| humaneval_pass@1"]
    assert "| verified | 0 | 0.5 |" in table and "| novel_verified | – | 1 |" in table
    assert "| humaneval_pass@1 | – | 0.25 |" in table and "| outcomes | no_code 4 | no_code 2, passed 2 |" in table


def test_answers_are_scored_by_running_them(features):
    prompts, _ = build_prompts(read_features(features), 40, 4, 6, seed=2)
    u1 = [p for p in prompts if p.symmetry == "u1"][:3]
    assert len(u1) == 3
    answers = {"good": [u1_answer(p.n_qubits, p.particles) for p in u1],
               "broken": [u1_answer(p.n_qubits, p.particles, broken=True) for p in u1],
               "wrong_width": [u1_answer(p.n_qubits, p.particles, extra_qubit=True) for p in u1],
               "prose": ["I would use a hopping ansatz.", "```python\ndef f(:\n```", "```python\nraise ValueError('x')\n```"]}
    cfg = EvaluateConfig(verify={"workers": 1})
    verdicts, _ = check_answers(cfg, u1, answers, [], {})
    s = {name: score(u1, rows) for name, rows in verdicts.items()}
    assert s["good"]["verified"] == 1.0 and s["good"]["symmetry_respected"] == 1.0 and s["good"]["syntax_valid"] == 1.0
    assert s["good"]["bp_free"] == 1.0
    assert s["broken"]["syntax_valid"] == 1.0 and s["broken"]["verified"] == 0.0 and s["broken"]["symmetry_respected"] == 0.0
    assert s["broken"]["outcomes"] == {"symmetry_broken": 3}
    assert s["wrong_width"]["verified"] == 0.0 and s["wrong_width"]["outcomes"] == {"n_qubits_mismatch": 3}
    assert s["prose"]["outcomes"] == {"no_code": 1, "runtime_error": 1, "syntax_error": 1}
    assert s["prose"]["syntax_valid"] == pytest.approx(1 / 3, abs=1e-3)  # only the block that raises parses


def test_qiskit_humaneval_runs_check_in_the_sandbox():
    tasks = read_humaneval(HUMANEVAL)
    canonical = [f"```python\n{t.prompt}{t.canonical_solution}```" for t in tasks]
    body_only = [t.canonical_solution for t in tasks]  # a completion that continues the prompt
    wrong = ["    return None\n"] * len(tasks)
    hostile = ["    import socket\n    socket.create_connection(('1.1.1.1', 80))\n"] * len(tasks)
    assert "def bell_circuit" in humaneval_program(tasks[0], body_only[0])
    _, rows = check_answers(EvaluateConfig(verify={"workers": 1}), [], {}, tasks,
                            {"canonical": canonical, "body_only": body_only, "wrong": wrong, "hostile": hostile})
    assert [r["passed"] for r in rows["canonical"]] == [True] * 3
    assert [r["passed"] for r in rows["body_only"]] == [True] * 3
    assert not any(r["passed"] for r in rows["wrong"])
    assert {r["outcome"] for r in rows["wrong"]} == {"runtime_error"}
    assert {r["outcome"] for r in rows["hostile"]} == {"denied"}


def test_bad_humaneval_file_names_the_record(tmp_path):
    bad = tmp_path / "he.jsonl"
    bad.write_text(json.dumps({"task_id": "a", "prompt": "def f():\n", "test": "", "entry_point": "f"}) + "\n"
                   + json.dumps({"task_id": "b", "prompt": "def g():\n"}) + "\n")
    with pytest.raises(RecordError, match=r"he.jsonl: record 2: field 'test'"):
        read_humaneval(bad)


def test_stage_compares_models_and_is_cached(features, tmp_path):
    from adapters.models.base_models import embedded_gguf

    gguf = embedded_gguf()
    cfg = EvaluateConfig(prompts=2, max_tokens=48, humaneval_path=HUMANEVAL, humaneval_limit=1, verify={"workers": 1})
    out = evaluate(cfg, {"features": features, "base": gguf, "physics": gguf}, tmp_path / "evaluate")
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert set(log["results"]) == {"base", "physics"} and log["suite"]["held_out_trajectories"] is True
    assert log["results"]["base"] == log["results"]["physics"] | {k: log["results"]["base"][k] for k in
                                                                  ("generation_s", "tokens_per_s")}  # same model, same answers
    assert log["results"]["base"]["prompts"] == 2 and "humaneval_pass@1" in log["results"]["base"]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(a["outcome"] for a in answers)
    assert (out / "comparison.png").stat().st_size > 0
    before = (out / "manifest.json").read_text()
    evaluate(cfg, {"features": features, "base": gguf, "physics": gguf}, tmp_path / "evaluate")
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(ValueError, match="at least one model GGUF"):
        evaluate(cfg, {"features": features}, tmp_path / "x")
