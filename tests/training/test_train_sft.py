"""SFT: the adapter learns, loss covers only the answer, outputs are complete, a killed run resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.training.train_sft import SFTStageConfig, build_trainer, load_quantized, to_prompt_completion, train

ROOT = Path(__file__).resolve().parents[2]


def tiny_cfg(tiny_model, **trainer) -> SFTStageConfig:
    return SFTStageConfig(base_model=str(tiny_model), lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                          trainer={"max_steps": 6, "learning_rate": 5e-3, "save_steps": 3, "disable_tqdm": True, **trainer})


def test_lora_parameters_change_and_outputs_are_complete(tmp_path, tiny_model, mix_dir):
    import torch
    from safetensors.torch import load_file

    out = train(tiny_cfg(tiny_model), mix_dir, tmp_path / "sft")
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b), "LoRA B starts at zero; training must move it"
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["global_steps"] == 6 and m["eval_loss_before"] > 0 and m["eval_loss_after"] > 0
    assert m["non_padding_tokens"] > 0 and m["tokens_per_s"] > 0
    log = yaml.safe_load((out / "training_log.yaml").read_text())
    assert [r["step"] for r in log["steps"] if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "merged" / "model.safetensors").exists() and (out / "merged" / "chat_template.jinja").exists()
    assert manifest["base_model"] == str(tiny_model)
    assert not list(tmp_path.glob(".sft.work-*")), "the checkpoint work dir is removed once the stage is published"


def test_eval_loss_can_be_measured_on_the_first_records_of_the_validation_set(tmp_path, tiny_model, mix_dir):
    """A fixed subset, the same before and after: its loss is the loss of a validation file holding only those records."""
    import shutil

    subset = tmp_path / "first-two"
    shutil.copytree(mix_dir, subset)
    (subset / "val.jsonl").write_text("".join((mix_dir / "val.jsonl").read_text().splitlines(keepends=True)[:2]))
    cfg = tiny_cfg(tiny_model, max_steps=1)
    capped = json.loads((train(cfg.model_copy(update={"max_eval_records": 2}), mix_dir, tmp_path / "capped")
                         / "manifest.json").read_text())
    alone = json.loads((train(cfg, subset, tmp_path / "alone") / "manifest.json").read_text())
    assert capped["counts"]["val_records"] == 8 and capped["counts"]["eval_records"] == 2
    assert capped["metrics"]["eval_loss_before"] == pytest.approx(alone["metrics"]["eval_loss_before"], rel=1e-6)
    assert capped["metrics"]["eval_loss_after"] == pytest.approx(alone["metrics"]["eval_loss_after"], rel=1e-6)


def test_loss_is_on_the_assistant_answer_only(tiny_model, mix_dir, tmp_path):
    rows = to_prompt_completion(mix_dir / "train.jsonl")
    trainer = build_trainer(tiny_cfg(tiny_model), str(tiny_model), rows[:4], [], tmp_path / "ckpt")
    tok = trainer.processing_class
    example = trainer.train_dataset[0]
    trained = tok.decode([t for t in example["labels"] if t != -100])
    answer = rows[0]["completion"][0]["content"]
    assert trained.startswith(answer) and "<|im_end|>" in trained
    assert "Which phase?" not in trained and "You are a lab assistant" not in trained


def test_killed_run_resumes_from_its_checkpoint(tmp_path, tiny_model, mix_dir):
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "tasks.training.train_sft", "--mix", str(mix_dir), "--out", str(out), "--base-model", str(tiny_model),
           "--set", "trainer.max_steps=120", "--set", "trainer.save_steps=8", "--set", "trainer.per_device_train_batch_size=1",
           "--set", "trainer.disable_tqdm=true", "--set", "trainer.learning_rate=1e-3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(tmp_path.glob(".sft.work-*/checkpoints/checkpoint-8/trainer_state.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "a killed run publishes nothing"

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["resumed_from_step"] >= 8
    assert metrics["global_steps"] == 120
    assert "resuming from" in done.stdout


def test_qlora_code_path_builds_a_4bit_model(tiny_model):
    """On a CPU, bitsandbytes still quantises: check the QLoRA model the GPU profile trains."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    cfg = SFTStageConfig(base_model=str(tiny_model), quantization="4bit")
    model = load_quantized(cfg, str(tiny_model))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_4bit_without_gpu_says_so_and_trains_unquantised(tmp_path, tiny_model, mix_dir, capsys):
    out = train(tiny_cfg(tiny_model, max_steps=2).model_copy(update={"quantization": "4bit"}), mix_dir, tmp_path / "sft")
    assert "no CUDA GPU is present" in capsys.readouterr().out
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_bf16_trains_on_a_cpu(tmp_path, tiny_model, mix_dir):
    out = train(tiny_cfg(tiny_model, max_steps=2, bf16=True), mix_dir, tmp_path / "sft")
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["global_steps"] == 2 and m["eval_loss_after"] > 0
    assert (out / "merged" / "model.safetensors").exists()


def test_last_message_must_be_the_answer(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
                               "source": "s", "kind": "k"}) + "\n")
    with pytest.raises(ValueError, match="record 1: the last message must be the assistant"):
        to_prompt_completion(bad)


def test_a_checkpoint_torn_by_a_kill_is_never_resumed_from(tmp_path):
    from tasks.training.train_sft import last_complete_checkpoint

    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint-4").mkdir(parents=True)
    (ckpts / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (ckpts / "checkpoint-8").mkdir()
    (ckpts / "checkpoint-8" / "adapter_model.safetensors").write_bytes(b"partial")
    (ckpts / "checkpoint-12").mkdir()
    (ckpts / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')
    assert last_complete_checkpoint(ckpts) == str(ckpts / "checkpoint-4")
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]


@pytest.mark.gpu
def test_qlora_trains_on_a_gpu(tmp_path, tiny_model, mix_dir):
    """The gpu profile's path: NF4 base + LoRA in bf16 on CUDA, merged into a full-precision copy."""
    cfg = tiny_cfg(tiny_model, max_steps=3, bf16=True).model_copy(update={"quantization": "4bit", "dtype": "bfloat16"})
    out = train(cfg, mix_dir, tmp_path / "sft")
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["global_steps"] == 3 and (out / "merged" / "model.safetensors").exists()
