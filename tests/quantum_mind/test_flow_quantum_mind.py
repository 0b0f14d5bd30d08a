"""quantum-mind end to end on a tiny plan: Well files → features → verified circuits → mix → SFT → GGUF → validation."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.config import load_config
from flows.quantum_mind import PROJECT, QuantumMindConfig, code_only_source, data_stages, main
from flows.runner import StageTimer
from tests.cache_keys import check_keys, recording_cache_keys

HELD_OUT = "kuramoto_sivashinsky_1d"  # configs/quantum_mind.yaml generate.holdout_datasets
# Its own SFT plan rather than TINY_SFT: at other settings this model's digits became near-ties that llama.cpp and
# transformers broke differently (parity < 0.95), and these are the settings known to export cleanly.
TINY = ["generate.examples=60", "generate.max_qubits=6", "generate.max_layers=2",
        "sft.trainer.max_steps=6", "sft.trainer.per_device_train_batch_size=4", "sft.trainer.max_length=512",
        "mix.val_fraction=0.2", "export.parity_prompts=2", "export.outtypes=[f16]", "install.quant=f16",
        "install.retries=0", "evaluate.prompts=2", "evaluate.max_tokens=64", "evaluate.verify.workers=1"]


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


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_never_trained_on(mix_dir, dataset: str) -> None:
    """No record of the mix (train or val) comes from ``dataset`` or names it."""
    rows = records(mix_dir / "train.jsonl") + records(mix_dir / "val.jsonl")
    assert rows
    for r in rows:
        assert r["meta"].get("dataset") != dataset and dataset not in r["meta"].get("file", "")
        assert not any(dataset.split("_")[0] in m["content"].lower() for m in r["messages"]), r["messages"][1]["content"]


@pytest.mark.slow
def test_flow_compares_physics_with_code_only_on_novel_physics(prefect_harness, tmp_path, model_cache, tiny_model,
                                                              monkeypatch, capsys):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    data = tmp_path / "data"
    root = data / "quantum_mind"
    # the 2-layer model: this test is about what the flow wires and reports (two SFTs of the embedded model were
    # 8 of its 9 minutes); what the embedded model learns is the default local run's, measured in the README
    overrides = TINY + [f"sft.model_cache_dir={model_cache}", f"sft.base_model={tiny_model}"]

    # with QuantumLLMInstruct the data stages mix three sources, and the code-only model would train on it alone
    instruct = write_instruct(tmp_path / "instruct.jsonl")
    first = StageTimer()
    cfg = load_config(QuantumMindConfig, PROJECT, overrides=overrides + [f"instruct.path={instruct}"],
                      extra={"data_dir": str(data)})
    assert cfg.evaluate.holdout_datasets == cfg.generate.holdout_datasets == [HELD_OUT]
    given = data_stages(cfg, root, first)
    m = first.manifests
    assert m["encode"]["metrics"]["truth_accuracy"] >= 0.9 and m["encode"]["counts"]["datasets"] == 7
    assert m["verify"]["metrics"]["pass_rate"] == 1.0
    assert {s["source"] for s in m["mix"]["sources"]} == {"quantum_llm_instruct", "physics_augmented", "physics_reasoning"}
    assert code_only_source(given, dropped=[]) == ("quantum_llm_instruct", given.instruct / "instruct.jsonl")
    assert m["generate"]["counts"]["held_out_dataset_trajectories"] == 4
    assert m["select"]["counts"]["physics"] > 0 and m["select"]["counts"]["reasoning"] > 0
    train = records(root / "select" / "physics_augmented" / "train.jsonl")
    assert train and {"type", "instruction", "input", "output", "metadata"} == set(train[0])
    assert train[0]["output"].count("```python") == 1
    assert_never_trained_on(root / "mix", HELD_OUT)

    # without it (any offline machine): the whole flow from the CLI, the code-only model trained on the same circuits
    upstream = {stage: (root / stage / "manifest.json").read_text() for stage in ("encode", "generate", "verify", "select")}
    with recording_cache_keys() as key_requests:
        assert main(["--data-dir", str(data), *(arg for o in overrides for arg in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((root / "summary.json").read_text())
    assert upstream == {stage: (root / stage / "manifest.json").read_text() for stage in upstream}  # cache hits
    assert check_keys(key_requests) == {"encode", "generate", "verify", "select", "instruct", "mix", "sft", "export",
                                        "install", "evaluate"}
    shares = {s["source"]: s["share"] for s in summary["mix"]["sources"]}
    assert summary["mix"]["dropped_sources"] == ["quantum_llm_instruct"]
    # the code-only twins take QuantumLLMInstruct's share: physics = the code-only model's data + the physics records
    assert set(shares) == {"code_only", "physics_augmented", "physics_reasoning"}
    assert shares["code_only"] == pytest.approx(0.5, abs=0.05) and shares["physics_augmented"] == pytest.approx(0.3, abs=0.05)
    assert (root / "models" / "checkpoints" / "quantum-mind-v2" / "training_log.yaml").exists()
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["parity_rate"] >= 0.95 and summary["installed"] is False

    # the code-only model: the physics records' circuits, asked for plainly and answered with the code alone
    assert summary["code_only_model"]["trained_on"].endswith("quantum_mind/select/code_only.jsonl")
    assert (root / "models" / "checkpoints" / "quantum-mind-v2-code-only" / "training_log.yaml").exists()
    physics_code = {r["meta"]["code_id"] for r in records(root / "select" / "physics.jsonl") + records(root / "select" / "reasoning.jsonl")}
    code_only = records(root / "mix_code_only" / "train.jsonl") + records(root / "mix_code_only" / "val.jsonl")
    assert code_only and {r["meta"]["code_id"] for r in code_only} <= physics_code
    for r in code_only:
        request, answer = r["messages"][1]["content"], r["messages"][2]["content"]
        assert r["source"] == "code_only" and answer.startswith("```python\n") and answer.endswith("```")
        assert r["meta"]["dataset"].split("_")[0] not in request.lower() and "drift" not in request
    assert_never_trained_on(root / "mix", HELD_OUT)
    assert_never_trained_on(root / "mix_code_only", HELD_OUT)

    # the validation: three models, a novel-physics share scored apart, the table in summary.json and the CLI's last lines
    validation = summary["validation"]
    assert set(validation) == {"base", "code_only", "physics"}
    assert {"syntax_valid", "verified", "symmetry_respected", "bp_free", "novel_verified"} <= set(validation["physics"])
    assert validation["physics"]["novel_prompts"] == 1  # round(2 prompts × novel_share 0.3)
    suite = yaml.safe_load((root / "evaluate" / "validation_log.yaml").read_text())["suite"]
    assert suite["novel_datasets"] == [HELD_OUT] and suite["held_out_trajectories"] is True
    novel = [p for p in records(root / "evaluate" / "prompts.jsonl") if p["novel"]]
    assert len(novel) == 1 and "kuramoto" in novel[0]["prompt"]  # what assert_never_trained_on looks for
    table = summary["validation_table"]
    assert "| metric | base | code_only | physics |" in table and "| novel_verified |" in table
    assert printed.rstrip().splitlines()[-2 - len(table.splitlines()):-2] == table.splitlines()


def test_validation_asks_about_the_datasets_generate_holds_out():
    moved = load_config(QuantumMindConfig, PROJECT, overrides=["generate.holdout_datasets=[burgers_1d]"])
    assert moved.evaluate.holdout_datasets == ["burgers_1d"]
    with pytest.raises(ValueError, match="set generate.holdout_datasets only"):
        load_config(QuantumMindConfig, PROJECT, overrides=["evaluate.holdout_datasets=[burgers_1d]"])
