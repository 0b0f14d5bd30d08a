"""indra-quantum: its configs, its CLI, and the whole ablation end to end on a tiny plan."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from flows.config import CONFIG_DIR, ConfigError, load_config
from flows.indra_quantum import PROJECT, IndraQuantumConfig, indra_quantum, main
from tests.cache_keys import check_keys, recording_cache_keys
from tests.conftest import write_chat_records


def test_the_shipped_config_keeps_the_seed_sizes_and_the_local_profile_shrinks_them():
    gpu = load_config(IndraQuantumConfig, PROJECT, profile="gpu")
    assert (gpu.train.model.d_model, gpu.train.model.n_layers, gpu.train.model.n_heads, gpu.train.model.max_len) == (128, 4, 4, 128)
    assert gpu.teacher.model == gpu.data.tokenizer == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert gpu.data.sources["wikitext"].hub and gpu.data.sources["alpaca"].hub and not gpu.data.sources["teacher_text"].enabled
    assert (gpu.data.sources["wikitext"].max_docs, gpu.data.sources["alpaca"].max_docs) == (22000, 52000)
    local = load_config(IndraQuantumConfig, PROJECT, profile="local")
    assert local.teacher.model == local.data.tokenizer == "embedded:smollm2-135m-instruct"
    assert local.train.model.d_model < 128 and local.data.block_len == local.train.model.max_len
    assert (local.train.objective.kd_weight_start, local.train.objective.kd_weight_end, local.train.objective.aux_start) == (0.01, 0.05, 0.2)
    assert len(local.ablation.modes) * len(local.ablation.distill) == 6


def test_blocks_longer_than_the_model_are_refused():
    with pytest.raises(ConfigError, match="data.block_len"):
        load_config(IndraQuantumConfig, PROJECT, overrides=["data.block_len=256"])


def test_per_mode_optimizer_settings_apply_to_their_mode_only_and_are_validated():
    from flows.indra_quantum import AblationConfig
    from tasks.indra_quantum.train_indra import OptimConfig

    ablation = AblationConfig(optim_by_mode={"fullq": {"lr": 0.02}})
    base = OptimConfig(lr=0.001, embedding_lr_mult=7)
    assert (ablation.optim_for("fullq", base).lr, ablation.optim_for("fullq", base).embedding_lr_mult) == (0.02, 7)
    assert ablation.optim_for("real", base) == base
    with pytest.raises(ConfigError, match=r"ablation.optim_by_mode.fullq: lrr.*valid keys: lr"):
        load_config(IndraQuantumConfig, PROJECT, overrides=["ablation.optim_by_mode.fullq.lrr=0.02"])


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["--set", "train.model.mode=quantum"]) == 2
    err = capsys.readouterr().err
    assert "train.model.mode" in err and "Traceback" not in err


def test_prefect_yaml_deploys_the_flow():
    import importlib

    spec = yaml.safe_load((CONFIG_DIR.parent / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == "indra-quantum"]
    path, fn = deployment["entrypoint"].split(":")
    assert getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), fn).name == "indra-quantum"
    assert deployment["work_pool"]["name"] == "labtune" and all(s["active"] is False for s in deployment["schedules"])


TINY = ["data.sources.lab_chats.max_tokens=1500", "data.sources.teacher_text.prompts=2",
        "data.sources.teacher_text.max_new_tokens=24", "data.sources.repo_docs.max_tokens=1500", "data.val_fraction=0.2",
        "train.model.d_model=16", "train.model.n_layers=1", "train.model.n_heads=2", "train.model.max_len=32",
        "train.model.dropout=0.0", "train.batch_size=4", "train.epochs=50", "train.max_steps=16", "train.save_every_steps=8",
        "train.optim.lr=3e-3", "train.optim.warmup_steps=2", "teacher.top_k=16", "evaluate.max_new_tokens=4",
        "evaluate.latency_repeats=1"]


@pytest.mark.slow
def test_flow_trains_the_ablation_and_reports_it(prefect_harness, data_dir, model_cache):
    write_chat_records(data_dir / "ben_lab" / "mix" / "train.jsonl", 40)  # as if ben-lab had run
    overrides = TINY + [f"sft.model_cache_dir={model_cache}"]
    with recording_cache_keys() as key_requests:
        summary = indra_quantum(data_dir=str(data_dir), overrides=overrides)
    assert check_keys(key_requests) == {"indra_data", "indra_teacher", "train_indra", "evaluate_indra"}
    root = data_dir / "indra_quantum"
    assert json.loads((root / "summary.json").read_text()) == summary

    # the offline default, stated
    assert [s["source"] for s in summary["data"]["sources"]] == ["lab_chats", "teacher_text", "repo_docs"]
    assert set(summary["data"]["dropped"]) == {"wikitext", "alpaca"} and summary["data"]["offline_default"] is True
    assert summary["teacher"]["backend"] == "llama_cpp" and math.isfinite(summary["teacher"]["val_perplexity"])

    # 3 modes x KD on/off, at one parameter count and one token budget
    rows = summary["ablation"]
    assert {(r["mode"], r["distill"]) for r in rows} == {(m, d) for m in ("fullq", "complex_embed", "real") for d in (True, False)}
    assert summary["fairness"]["parameter_spread"] < 0.05
    assert {r["tokens_trained"] for r in rows} == {16 * 4 * 32}
    for r in rows:
        assert r["val_loss"] < math.log(49152), r["run"]  # every student got better than uniform guessing
        assert r["forward_ms"] > 0 and r["ms_per_token"] > 0 and isinstance(r["sample"], str)
    assert summary["best_run"] in {r["run"] for r in rows} and summary["verdict"].startswith("Lowest held-out perplexity")
    samples = [json.loads(line) for line in (root / "evaluate" / "samples.jsonl").read_text().splitlines()]
    assert sum(s["prompt"] == "The future of AI is" for s in samples) == 6

    for name, path in summary["runs"].items():
        with open(f"{path}/metrics.csv") as fh:
            kd = [float(r["kd"]) for r in csv.DictReader(fh)]
        assert len(kd) == 16 and (all(k > 0 for k in kd) if name.endswith("-kd") else all(k == 0 for k in kd)), name
    assert (root / "train" / "fullq-kd" / "phase_magnitude.png").exists() and (root / "evaluate" / "ablation.png").exists()

    # a second run reuses every stage
    stages = ["data", "teacher", "evaluate"] + [f"train/{n}" for n in summary["runs"]]
    before = {s: (root / s / "manifest.json").read_text() for s in stages}
    again = indra_quantum(data_dir=str(data_dir), overrides=overrides)
    assert {s: (root / s / "manifest.json").read_text() for s in stages} == before
    assert again["ablation"] == summary["ablation"]
