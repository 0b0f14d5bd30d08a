"""SFT launched as several processes: ``accelerate launch`` with configs/accelerate/cpu_2proc.yaml (DDP over gloo)
against one process on the same data and the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.training.train_sft import SFTStageConfig, train, trainer_settings
from tests.conftest import write_chat_records

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
TRAIN_RECORDS, GLOBAL_BATCH = 48, 4
SETTINGS = {"lora.r": 4, "lora.alpha": 8, "lora.target_modules": "[q_proj,v_proj]", "trainer.learning_rate": 2e-2,
            "trainer.num_train_epochs": 1, "trainer.save_steps": 6, "trainer.disable_tqdm": "true"}


def test_accelerate_configs_load_and_the_cpu_one_launches_two_processes():
    from accelerate.commands.config.config_args import load_config_from_file

    names = {p.name for p in ACCELERATE_CONFIGS}
    assert {"cpu_2proc.yaml", "ddp_multi_gpu.yaml", "fsdp.yaml", "deepspeed_zero3.yaml"} <= names
    for path in ACCELERATE_CONFIGS:
        assert path.read_text().startswith("#"), f"{path.name} starts with a comment saying what it runs"
        load_config_from_file(str(path))
    cpu = yaml.safe_load((ROOT / "configs" / "accelerate" / "cpu_2proc.yaml").read_text())
    # MULTI_CPU would go through mpirun; MULTI_GPU goes through torchrun, which works without GPUs
    assert cpu["num_processes"] == 2 and cpu["distributed_type"] == "MULTI_GPU" and cpu["use_cpu"] is True


def test_a_launch_without_cuda_trains_on_the_cpu_and_a_plain_run_is_unchanged(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    cfg = SFTStageConfig(trainer={"learning_rate": 1e-3})
    assert "use_cpu" not in trainer_settings(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun / accelerate launch set
    # without use_cpu, transformers forms no process group on a CPU and each process would train alone
    assert trainer_settings(cfg)["use_cpu"] is True
    assert trainer_settings(cfg.model_copy(update={"trainer": {"use_cpu": False}}))["use_cpu"] is False


@pytest.mark.slow
def test_two_cpu_processes_take_the_same_steps_and_reach_the_same_loss_as_one(tmp_path, tiny_model):
    """Same global batch (2 processes x 2 = 1 process x 4), one epoch: the step count comes from the data."""
    mix = tmp_path / "mix"
    write_chat_records(mix / "train.jsonl", TRAIN_RECORDS)
    write_chat_records(mix / "val.jsonl", 8, start=900)
    overrides = [f"{k}={v}" for k, v in SETTINGS.items()]

    one_cfg = SFTStageConfig.model_validate({
        "base_model": str(tiny_model), "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "trainer": {"learning_rate": 2e-2, "num_train_epochs": 1, "save_steps": 6, "disable_tqdm": True,
                    "per_device_train_batch_size": GLOBAL_BATCH}})
    one = train(one_cfg, mix, tmp_path / "sft1")

    two = tmp_path / "sft2"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), "-m", "tasks.training.train_sft", "--mix", str(mix),
           "--out", str(two), "--base-model", str(tiny_model),
           "--set", f"trainer.per_device_train_batch_size={GLOBAL_BATCH // 2}",
           *[a for o in overrides for a in ("--set", o)]]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    # both processes return the stage's path, the second only once the first has published it
    assert done.stdout.splitlines().count(str(two)) == 2, done.stdout[-2000:]

    m1 = json.loads((one / "manifest.json").read_text())["metrics"]
    m2 = json.loads((two / "manifest.json").read_text())["metrics"]
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["global_steps"] == m2["global_steps"] == TRAIN_RECORDS // GLOBAL_BATCH
    # every training token was seen once in all: the processes split the data instead of each taking all of it
    assert m2["non_padding_tokens"] == m1["non_padding_tokens"] > 0
    assert m2["eval_loss_before"] == pytest.approx(m1["eval_loss_before"], rel=1e-4)  # same start, gathered over both
    for m in (m1, m2):
        assert m["eval_loss_after"] < m["eval_loss_before"]
    assert m2["eval_loss_after"] == pytest.approx(m1["eval_loss_after"], rel=0.02)
    steps1, steps2 = ([r for r in yaml.safe_load((d / "training_log.yaml").read_text())["steps"] if "loss" in r]
                      for d in (one, two))
    assert [r["step"] for r in steps2] == [r["step"] for r in steps1] == list(range(1, 13))
    assert steps2[-1]["loss"] == pytest.approx(steps1[-1]["loss"], rel=0.05)
    print(f"1 process: {m1}\n2 processes: {m2}")

    assert (two / "adapter" / "adapter_model.safetensors").exists() and (two / "merged" / "model.safetensors").exists()
    assert not (two / "adapter" / "training_args.bin").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".sft2.")]
    assert not leftovers, f"temp, work or lock files left behind: {leftovers}"
