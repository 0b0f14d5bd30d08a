"""quantum-mind end to end on a tiny plan: Well files → features → verified circuits → mix → SFT → GGUF."""

from __future__ import annotations

import json

import pytest

from flows.quantum_mind import quantum_mind

TINY = ["encode.max_trajectories=8", "generate.examples=60", "generate.max_qubits=6", "generate.max_layers=2",
        "sft.trainer.max_steps=6", "sft.trainer.per_device_train_batch_size=4", "sft.trainer.max_length=512",
        "mix.val_fraction=0.2", "export.parity_prompts=2", "install.retries=0", "evaluate.prompts=2",
        "evaluate.max_tokens=64", "evaluate.verify.workers=1"]


def write_instruct(path, n: int = 40):
    """A QuantumLLMInstruct-shaped JSONL (problem_text, solution): GHZ preparations of several widths."""
    with open(path, "w") as fh:
        for i in range(n):
            width = 2 + i % 9
            code = (f"from qiskit import QuantumCircuit\n\nqc = QuantumCircuit({width})\nqc.h(0)\n"
                    f"for q in range({width - 1}):\n    qc.cx(q, q + 1)\n")
            fh.write(json.dumps({"problem_text": f"Problem {i}: prepare a {width}-qubit GHZ state in Qiskit.",
                                 "solution": f"A Hadamard then a CX chain.\n```python\n{code}```",
                                 "main_domain": "quantum computing"}) + "\n")
    return path


@pytest.mark.slow
def test_flow_runs_on_the_embedded_data_and_says_what_it_mixed(prefect_harness, tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    data = tmp_path / "data"
    summary = quantum_mind(data_dir=str(data), overrides=TINY + [f"sft.model_cache_dir={model_cache}"])
    root = data / "quantum_mind"
    assert json.loads((root / "summary.json").read_text()) == summary
    assert summary["encoder_accuracy"] >= 0.9
    assert summary["verification"]["pass_rate"] == 1.0
    assert summary["mix"]["dropped_sources"] == ["quantum_llm_instruct"]
    shares = {s["source"]: s["share"] for s in summary["mix"]["sources"]}
    assert set(shares) == {"physics_augmented", "physics_reasoning"}
    assert shares["physics_augmented"] == pytest.approx(0.6, abs=0.05)
    assert summary["counts"]["select"]["physics"] > 0 and summary["counts"]["select"]["reasoning"] > 0
    assert (root / "models" / "checkpoints" / "quantum-mind-v2" / "training_log.yaml").exists()
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["parity_rate"] >= 0.95 and summary["installed"] is False
    train = [json.loads(line) for line in (root / "select" / "physics_augmented" / "train.jsonl").read_text().splitlines()]
    assert train and {"type", "instruction", "input", "output", "metadata"} == set(train[0])
    assert train[0]["output"].count("```python") == 1
    # the validation suite ran base vs physics; with no QuantumLLMInstruct there is no code-only model, and it says so
    assert set(summary["validation"]) == {"base", "physics"}
    assert summary["code_only_model"].startswith("skipped: no QuantumLLMInstruct")
    assert (root / "evaluate" / "validation_log.yaml").exists()
    assert {"syntax_valid", "verified", "symmetry_respected", "bp_free"} <= set(summary["validation"]["physics"])

    # with QuantumLLMInstruct present: three sources are mixed and a code-only model joins the comparison
    instruct = write_instruct(tmp_path / "instruct.jsonl")
    upstream = {stage: (root / stage / "manifest.json").read_text() for stage in ("encode", "generate", "verify", "select")}
    again = quantum_mind(data_dir=str(data), overrides=TINY + [f"sft.model_cache_dir={model_cache}", f"instruct.path={instruct}"])
    assert again["mix"]["dropped_sources"] == [] and set(again["validation"]) == {"base", "code_only", "physics"}
    assert upstream == {stage: (root / stage / "manifest.json").read_text() for stage in upstream}  # cache hits
    code_only_train = (root / "mix_code_only" / "train.jsonl").read_text().splitlines()
    assert code_only_train and all(json.loads(line)["source"] == "quantum_llm_instruct" for line in code_only_train)
