"""bench/gpu_check.py: the gpu profile's SFT, resume and merge, as a user runs it (CPU path here, GPU path on a GPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEVEN = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_trains_the_gpu_profiles_settings(gpu_check, tmp_path):
    budget = {"steps": 200, "trainer": {}, "sft": {}}
    lora, changes = gpu_check.gpu_profile_sft("lora", budget, tmp_path)
    assert set(lora.lora.target_modules) == SEVEN and lora.lora.r == 16
    assert lora.dtype == "bfloat16" and lora.trainer["bf16"] is True and lora.quantization == "none"
    assert lora.trainer["load_best_model_at_end"] is True and lora.trainer["save_steps"] == 50
    assert changes == {"max_steps": 200, "logging_steps": 10, "disable_tqdm": True, "eval_steps": 50}
    qlora, _ = gpu_check.gpu_profile_sft("qlora", budget, tmp_path)
    assert qlora.quantization == "4bit" and set(qlora.lora.target_modules) == SEVEN and qlora.trainer["bf16"] is True


def test_a_short_budget_still_leaves_a_checkpoint_to_resume_from(gpu_check, tmp_path):
    cfg, changes = gpu_check.gpu_profile_sft("lora", {"steps": 6, "trainer": {"bf16": False}, "sft": {"dtype": "float32"}}, tmp_path)
    assert cfg.trainer["save_steps"] == cfg.trainer["eval_steps"] == 3 and cfg.trainer["warmup_steps"] == 1
    assert cfg.dtype == "float32" and cfg.trainer["bf16"] is False


def test_a_run_that_did_not_resume_is_a_failure(gpu_check):
    run = {"eval_loss_before": 2.5, "eval_loss_after": 2.1, "merged_eval_loss": 2.1, "global_steps": 200,
           "resumed_from_step": 0, "killed_at_checkpoint": 100, "config": {"lora": {"target_modules": sorted(SEVEN)}},
           "throughput": {"lora_modules": sorted(SEVEN), "tokens_per_s": 1e4, "device": "cuda:0", "bf16_autocast": True,
                          "base_weight_dtype": "torch.bfloat16", "base_weights_4bit": False}}
    budget = {"steps": 200, "gpu": True, "require_improvement": True}
    assert gpu_check.variant_problems("lora", run, budget, 0.1, resume=True) == [
        "lora: resumed from step 0, not from checkpoint 100"]
    assert gpu_check.variant_problems("lora", {**run, "resumed_from_step": 100}, budget, 0.1, resume=True) == []
    fp32 = {**run, "resumed_from_step": 100, "throughput": {**run["throughput"], "base_weight_dtype": "torch.float32"}}
    assert gpu_check.variant_problems("lora", fp32, budget, 0.1, resume=True) == [
        "lora: not bf16: autocast True, base weights torch.float32"]


def test_an_error_exits_non_zero_and_still_writes_the_results(gpu_check, tmp_path, model_cache, monkeypatch, capsys):
    def broken_harvest(*a, **kw):
        raise gpu_check.CheckFailed("the reference lab did not answer")

    monkeypatch.setattr(gpu_check, "make_mix", broken_harvest)
    assert gpu_check.main(["--cpu-smoke", "--out", str(tmp_path / "check"), "--model-cache", str(model_cache)]) == 1
    err = capsys.readouterr().err
    assert "GPU CHECK FAILED" in err and "the reference lab did not answer" in err
    results = json.loads((tmp_path / "check" / "results.json").read_text())
    assert results["ok"] is False and results["problems"] == ["CheckFailed: the reference lab did not answer"]


def test_a_given_mix_is_used_instead_of_a_harvest_and_checked(gpu_check, tmp_path, model_cache, monkeypatch, capsys):
    """A GPU box without the reference lab's dependencies passes a mix; one missing a split fails by name."""
    def no_harvest(*a, **kw):
        raise AssertionError("harvested although --mix was given")

    monkeypatch.setattr(gpu_check, "make_mix", no_harvest)
    mix = tmp_path / "mix"
    mix.mkdir()
    (mix / "train.jsonl").write_text("")
    assert gpu_check.main(["--cpu-smoke", "--mix", str(mix), "--out", str(tmp_path / "check"),
                           "--model-cache", str(model_cache)]) == 1
    results = json.loads((tmp_path / "check" / "results.json").read_text())
    assert results["problems"] == [f"CheckFailed: --mix {mix}: val.jsonl missing"]


@pytest.mark.slow
def test_cpu_path_trains_resumes_and_merges(gpu_check, tmp_path, model_cache, capsys):
    out = tmp_path / "check"
    code = gpu_check.main(["--cpu-smoke", "--out", str(out), "--model-cache", str(model_cache)])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    assert "QLoRA 4-bit: SKIPPED, --cpu-smoke" in printed.out and "bf16 on CUDA (the CPU path trains fp32): SKIPPED" in printed.out
    assert "peak GPU memory: SKIPPED" in printed.out and "gpu_check: all checks passed" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert results["ok"] and results["mode"] == "cpu-smoke" and set(results["runs"]) == {"lora"}
    lora = results["runs"]["lora"]
    assert lora["eval_loss_before"] > 0 and lora["eval_loss_after"] > 0
    assert abs(lora["merged_eval_loss"] - lora["eval_loss_after"]) < 0.02, "fp32 merge must not change the model"
    assert lora["throughput"]["tokens_per_s"] > 0 and lora["tokens_per_s"] > 0
    assert 0 < lora["killed_at_checkpoint"] <= lora["resumed_from_step"] < lora["global_steps"] == results["steps"]
    assert set(lora["throughput"]["lora_modules"]) == SEVEN
    merged = Path(lora["merged_dir"])
    assert (merged / "model.safetensors").exists() and (merged / "config.json").exists()
    assert lora["peak_gpu_memory_gib"] is None


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_path_on_a_cuda_gpu(tmp_path, model_cache):
    """bf16 LoRA killed + resumed, QLoRA when bitsandbytes loads, merged models, GPU memory: a short run."""
    out = tmp_path / "check"
    cmd = [sys.executable, "bench/gpu_check.py", "--steps", "40", "--throughput-steps", "10", "--records", "80",
           "--val-records", "16", "--out", str(out), "--model-cache", str(model_cache)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "gpu" and results["ok"]
    lora = results["runs"]["lora"]
    assert lora["throughput"]["bf16_autocast"] and lora["throughput"]["device"].startswith("cuda")
    assert lora["resumed_from_step"] >= lora["killed_at_checkpoint"] > 0
    assert lora["eval_loss_after"] < lora["eval_loss_before"]
    assert lora["peak_gpu_memory_gib"] > 0 and 0 < lora["throughput"]["fraction_of_peak"] < 1
    if "qlora" in results["runs"]:
        assert results["runs"]["qlora"]["throughput"]["base_weights_4bit"]
    else:
        assert "QLoRA 4-bit: SKIPPED" in done.stdout and "bitsandbytes" in results["skipped"]["qlora"]
