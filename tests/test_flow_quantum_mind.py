"""quantum-mind end to end on a tiny plan: Well files → features → verified circuits → mix → SFT → GGUF."""

from __future__ import annotations

import json

import pytest

from flows.config import load_config
from flows.quantum_mind import PROJECT, QuantumMindConfig, data_stages, quantum_mind
from flows.runner import StageTimer

# Its own SFT plan rather than TINY_SFT: at other settings this model's digits became near-ties that llama.cpp and
# transformers broke differently (parity < 0.95), and these are the settings known to export cleanly.
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
    root = data / "quantum_mind"
    overrides = TINY + [f"sft.model_cache_dir={model_cache}"]

    # without QuantumLLMInstruct the data stages mix the two physics sources, weights renormalised
    first = StageTimer()
    data_stages(load_config(QuantumMindConfig, PROJECT, overrides=overrides, extra={"data_dir": str(data)}), root, first)
    m = first.manifests
    assert m["encode"]["metrics"]["truth_accuracy"] >= 0.9
    assert m["verify"]["metrics"]["pass_rate"] == 1.0
    shares = {s["source"]: s["share"] for s in m["mix"]["sources"]}
    assert set(shares) == {"physics_augmented", "physics_reasoning"}
    assert shares["physics_augmented"] == pytest.approx(0.6, abs=0.05)
    assert m["select"]["counts"]["physics"] > 0 and m["select"]["counts"]["reasoning"] > 0
    train = [json.loads(line) for line in (root / "select" / "physics_augmented" / "train.jsonl").read_text().splitlines()]
    assert train and {"type", "instruction", "input", "output", "metadata"} == set(train[0])
    assert train[0]["output"].count("```python") == 1

    # the whole flow with QuantumLLMInstruct present: three sources mixed, a code-only model joins the validation suite
    instruct = write_instruct(tmp_path / "instruct.jsonl")
    upstream = {stage: (root / stage / "manifest.json").read_text() for stage in ("encode", "generate", "verify", "select")}
    summary = quantum_mind(data_dir=str(data), overrides=overrides + [f"instruct.path={instruct}"])
    assert json.loads((root / "summary.json").read_text()) == summary
    assert upstream == {stage: (root / stage / "manifest.json").read_text() for stage in upstream}  # cache hits
    assert summary["mix"]["dropped_sources"] == [] and len(summary["mix"]["sources"]) == 3
    assert (root / "models" / "checkpoints" / "quantum-mind-v2" / "training_log.yaml").exists()
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["parity_rate"] >= 0.95 and summary["installed"] is False
    assert set(summary["validation"]) == {"base", "code_only", "physics"}
    assert (root / "evaluate" / "validation_log.yaml").exists()
    assert {"syntax_valid", "verified", "symmetry_respected", "bp_free"} <= set(summary["validation"]["physics"])
    code_only_train = (root / "mix_code_only" / "train.jsonl").read_text().splitlines()
    assert code_only_train and all(json.loads(line)["source"] == "quantum_llm_instruct" for line in code_only_train)
