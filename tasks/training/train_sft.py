"""Supervised fine-tuning with TRL's SFTTrainer + a PEFT LoRA (QLoRA on a GPU when asked).

Loss is on the assistant's answer only (records become conversational prompt/completion pairs,
so TRL's completion-only loss masks the prompt, whatever the model's chat template). Batches
are padded to their longest example and grouped by length (fastest on CPU; see TRAINER_DEFAULTS). Eval loss is measured on the validation split before and after
training. Checkpoints go to a work dir that survives a killed run; re-running resumes from the
last checkpoint. The finished stage holds ``adapter/``, ``merged/``, ``training_log.yaml`` and
``loss_curve.png``.

Several processes (``accelerate launch``/``torchrun``: DDP, FSDP, DeepSpeed; configs/accelerate/) split
every global batch between them: ``per_device_train_batch_size`` x processes x accumulation samples per
optimizer step. Process 0 decides cache hits, holds the output's lock and alone writes the outputs; the
others wait for it at a barrier, so none reads a half-written output. On a machine without CUDA the
processes train on CPU over gloo.

    python -m tasks.training.train_sft --mix data/ben_lab/mix --out data/ben_lab/sft --set trainer.max_steps=10
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m tasks.training.train_sft --mix data/ben_lab/mix \
        --out data/ben_lab/sft --set trainer.per_device_train_batch_size=2
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Literal

import yaml
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.models.base_models import EMBEDDED, resolve_base_model
from tasks.common.records import read_chat_records
from tasks.common.reporting import counts_table, publish_image, publish_table, say
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output, write_json_atomic
from tasks.training.trainer_keys import unknown_trainer_keys
from tasks.training.training_log import StepLog, plot_loss_curve

STAGE = "sft"


class LoraSettings(BaseModel):
    """PEFT LoRA adapter shape."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1,
                                      description="Module names to adapt, e.g. q_proj k_proj v_proj o_proj gate_proj up_proj down_proj")


class SFTStageConfig(BaseModel):
    """Base model, adapter, quantisation and TRL trainer settings."""

    model_config = ConfigDict(extra="forbid")
    base_model: str = Field(EMBEDDED, description=f"'{EMBEDDED}' (offline default), a local HF model dir, or a hub id")
    model_cache_dir: Path | None = Field(None, description="Where the embedded model is cached as safetensors (default: <data_dir>/cache/models)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings")
    quantization: Literal["none", "4bit"] = Field("none", description="'4bit' = QLoRA (bitsandbytes NF4); used only when a CUDA GPU is present")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype for training (float32 on CPU)")
    attn_implementation: str | None = Field(None, description="transformers attention kernel (None = its default, sdpa); "
                                                               "'flash_attention_2' on a GPU with flash-attn installed")
    eval_before: bool = Field(True, description="Measure validation loss before training")
    max_eval_records: int | None = Field(None, ge=1, description="Measure the eval loss on the first N validation records "
                                         "only, the same N before and after (quantum-mind's ~1k-token records took 7.5 min "
                                         "on 2 cores each side); null = all of them")
    trainer: dict = Field(default_factory=dict, description="Passed as-is into trl.SFTConfig (learning_rate, max_steps, ...); "
                          "bf16: auto turns bf16 on where the GPU or CPU has it")

    @field_validator("trainer")
    @classmethod
    def _known_keys(cls, v: dict) -> dict:
        # Checked with the rest of the config, before any stage runs (a typo once failed after the data stages).
        problems = unknown_trainer_keys(v)
        if problems:
            raise ValueError("; ".join(problems))
        if isinstance(v.get("bf16"), str) and v["bf16"] != "auto":
            raise ValueError(f"sft.trainer.bf16 must be true, false or auto, got {v['bf16']!r}")
        return v


# Our defaults for SFTConfig; anything in cfg.trainer wins.
TRAINER_DEFAULTS = {
    "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1,
    "learning_rate": 2e-4, "num_train_epochs": 1, "lr_scheduler_type": "cosine", "warmup_steps": 0,
    "logging_steps": 1, "save_strategy": "steps", "save_steps": 25, "save_total_limit": 2,
    # Padded batches grouped by length: on CPU (and with SDPA anywhere) a padding-free batch is one long
    # sequence under a block-diagonal mask, so attention cost grows with the square of the whole batch
    # (measured 56 vs 167 non-padding tok/s on the embedded model). With FlashAttention installed,
    # set padding_free: true and sft.attn_implementation: flash_attention_2.
    "eval_strategy": "no", "max_length": 1024, "padding_free": False, "train_sampling_strategy": "group_by_length",
    "bf16": False, "fp16": False,
    # TRL 1.16 turns activation (gradient) checkpointing on by default: it saves memory a 135M model on a CPU does not
    # need and costs ~30% of the speed. The gpu profile turns it back on for the full-size models.
    "gradient_checkpointing": False,
    "report_to": "none", "seed": 0, "dataloader_num_workers": 0,
    "include_num_input_tokens_seen": "non_padding", "disable_tqdm": False,
}


def to_prompt_completion(path: Path) -> list[dict]:
    """Chat records → TRL conversational prompt/completion rows (the last assistant turn is the target)."""
    rows = []
    for i, rec in enumerate(read_chat_records(path), 1):
        msgs = [m.model_dump() for m in rec.messages]
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"{path}: record {i}: the last message must be the assistant's answer (got {msgs[-1]['role']})")
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return rows


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_available() -> bool:
    """bf16 compute: a CUDA GPU that supports it, or a CPU with bf16 instructions (AVX512-BF16 or AMX)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def launch_world_size() -> int:
    """Processes of the distributed launch this process belongs to (torchrun, accelerate, mpirun); 1 for a plain run."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(var):
            return int(os.environ[var])
    return 1


class TrainingProcesses:
    """The processes training together: this one alone, or a distributed launch (accelerate's PartialState)."""

    def __init__(self) -> None:
        self.state = None
        if launch_world_size() > 1:
            from accelerate import PartialState

            # Without CUDA, transformers only forms a process group when told to use the CPU (gloo)
            self.state = PartialState(cpu=not has_cuda())

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def main_first(self, local: bool = False) -> AbstractContextManager:
        """Process 0 (with ``local``: each machine's first process) runs the block before the others enter it."""
        if self.state is None:
            return nullcontext()
        return self.state.local_main_process_first() if local else self.state.main_process_first()

    def agree(self, value):
        """Process 0's ``value``, on every process."""
        if self.state is None:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def trainer_settings(cfg: SFTStageConfig) -> dict:
    """What goes into ``SFTConfig``: our defaults, then ``cfg.trainer``.

    transformers takes a multi-process run or ``bf16`` on a CPU only with ``use_cpu`` set, so it is set
    for them unless given. bf16 on a CPU is autocast over fp32 weights: 188 vs 122 tok/s for the embedded
    model's LoRA on avx512_bf16 cores, but ~20x slower than fp32 on CPUs without bf16 instructions.
    """
    settings = {**TRAINER_DEFAULTS, **cfg.trainer}
    if settings.get("bf16") == "auto":  # detected, not assumed: autocast only where the hardware has bf16
        settings["bf16"] = bf16_available()
    elif settings.get("bf16") is True and not has_cuda() and not bf16_available():
        # Measured: the lift-sys tiny SFT took 189 s a step instead of 10 s on an AVX2 CPU (a reference matmul runs bf16).
        say("warning: sft.trainer.bf16 is true but this CPU has no bf16 instructions (avx512_bf16/amx_bf16): bf16 "
            "autocast runs ~20x slower than fp32 here; set sft.trainer.bf16: auto")
    if not has_cuda() and (launch_world_size() > 1 or settings.get("bf16")):
        settings.setdefault("use_cpu", True)
    return settings


def load_model(cfg: SFTStageConfig, base: str):
    """The base model, 4-bit quantised for QLoRA when asked and a GPU is present."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.quantization == "4bit":
        if has_cuda():
            return load_quantized(cfg, base)
        say("[sft] quantization: 4bit asks for QLoRA, but no CUDA GPU is present: training an unquantised LoRA "
              "instead (bitsandbytes 4-bit on CPU is 2x slower than fp32). Set sft.quantization=none to silence this.")
    return AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, cfg.dtype), attn_implementation=cfg.attn_implementation)


def load_quantized(cfg: SFTStageConfig, base: str):
    """QLoRA base: NF4 weights prepared for k-bit training (layer norms in fp32, input grads on)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=qlora_config(cfg), dtype=getattr(torch, cfg.dtype),
                                                 attn_implementation=cfg.attn_implementation)
    settings = trainer_settings(cfg)  # the setting the trainer will use, defaults included
    checkpointing = bool(settings.get("activation_checkpointing") or settings.get("gradient_checkpointing"))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)


def qlora_config(cfg: SFTStageConfig):
    """bitsandbytes NF4 config (double quantisation, compute in the training dtype)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, cfg.dtype))


def build_trainer(cfg: SFTStageConfig, base: str, train_rows: list[dict], val_rows: list[dict], output_dir: Path,
                  callbacks=()):
    """An SFTTrainer with a fresh LoRA on the base model."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = SFTConfig(output_dir=str(output_dir), **trainer_settings(cfg))
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=load_model(cfg, base), args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(val_rows) if val_rows else None, processing_class=tokenizer,
                      peft_config=lora, callbacks=list(callbacks))


def key_of(cfg: SFTStageConfig, inputs: Path, out_dir: Path) -> tuple[SFTStageConfig, list[Path]]:
    """The stage key hashes the mix's two files, not its manifest: a re-mix into the same records is a cache hit."""
    return cfg, [Path(inputs) / "train.jsonl", Path(inputs) / "val.jsonl"]


def train(cfg: SFTStageConfig, inputs: Path, out_dir: Path) -> Path:
    """Fine-tune on ``<mix>/train.jsonl``, evaluate on ``<mix>/val.jsonl``; resumable."""
    out_dir, mix_dir = Path(out_dir), Path(inputs)
    train_file, val_file = mix_dir / "train.jsonl", mix_dir / "val.jsonl"
    key = stage_key(train, cfg, inputs, out_dir)
    procs = TrainingProcesses()
    # Process 0 alone asks (a miss takes the output's lock, held until it publishes); the others follow its answer.
    if procs.agree(cached(out_dir, key) is not None if procs.is_main else None):
        return out_dir
    cache_dir = cfg.model_cache_dir or out_dir.parent.parent / "cache" / "models"
    with procs.main_first(local=True):  # one process per machine builds the embedded model's cache
        base = resolve_base_model(cfg.base_model, cache_dir)
    train_rows, all_val = to_prompt_completion(train_file), to_prompt_completion(val_file)
    val_rows = all_val[: cfg.max_eval_records]  # a fixed subset: the top of the file, as the export's parity check reads it
    if not train_rows:
        raise ValueError(f"{train_file}: no training records")
    work = out_dir.with_name(f".{out_dir.name}.work-{key}")
    ckpt_dir = work / "checkpoints"
    log = StepLog(work / "steps.jsonl")
    trainer = build_trainer(cfg, base, train_rows, val_rows, ckpt_dir, callbacks=[log.callback()])
    with procs.main_first():  # process 0 deletes torn checkpoints before anyone picks one
        resume = last_complete_checkpoint(ckpt_dir)
    before_file = work / "eval_before.json"
    eval_before = None
    if resume:
        say(f"[sft] resuming from {resume}")
        eval_before = json.loads(before_file.read_text()).get("eval_loss") if before_file.exists() else None
    elif cfg.eval_before and val_rows:
        eval_before = trainer.evaluate().get("eval_loss")  # every process takes part; the loss is gathered
        if procs.is_main:
            write_json_atomic(before_file, {"eval_loss": eval_before})

    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - started
    eval_after = trainer.evaluate().get("eval_loss") if val_rows else None
    adapter = None
    if procs.state is not None:
        # Collective: gathers sharded weights (FSDP, ZeRO-3); only process 0 writes them
        adapter = work / "adapter"
        trainer.save_model(str(adapter))
        procs.wait()

    if procs.is_main:
        with stage_output(STAGE, out_dir, key, cfg, [train_file, val_file]) as out:
            _save(trainer, cfg, base, out.tmp, adapter)
            steps = log.rows()
            tokens = int(trainer.state.num_input_tokens_seen - log.tokens_at_start)  # summed over all processes
            out.metrics = {
                "eval_loss_before": eval_before, "eval_loss_after": eval_after,
                "train_loss": result.training_loss, "global_steps": trainer.state.global_step,
                "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else 0,
                "non_padding_tokens": tokens, "tokens_per_s": round(tokens / train_seconds, 1) if train_seconds else None,
                "train_seconds": round(train_seconds, 1), "processes": trainer.args.world_size,
            }
            out.counts = {"train_records": len(train_rows), "val_records": len(all_val), "eval_records": len(val_rows)}
            out.extra["base_model"] = base
            training_log = {"config": cfg.model_dump(mode="json"), "trainer": trainer_settings(cfg),
                            "metrics": out.metrics, "steps": steps}
            (out.tmp / "training_log.yaml").write_text(yaml.safe_dump(training_log, sort_keys=False))
            plot_loss_curve(steps, eval_before, eval_after, out.tmp / "loss_curve.png")
        shutil.rmtree(work, ignore_errors=True)
        publish_table("sft", counts_table(out.counts, out.metrics), "SFT: eval loss before/after, throughput")
        publish_image("sft-loss-curve", out_dir / "loss_curve.png", "SFT loss curve")
    procs.wait()  # the other processes return once process 0 has published the output
    return out_dir


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that was fully written; torn ones (a kill mid-save) are deleted.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file parses is whole.
    """
    if not ckpt_dir.exists():
        return None
    for ckpt in sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return str(ckpt)
        except (FileNotFoundError, json.JSONDecodeError):
            say(f"[sft] discarding incomplete checkpoint {ckpt.name} (the run was killed while saving it)")
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def _save(trainer, cfg: SFTStageConfig, base: str, dest: Path, adapter: Path | None = None) -> None:
    """Adapter + merged model, both with the tokenizer's original chat template.

    ``adapter``: the adapter as ``Trainer.save_model`` wrote it in a distributed run (else the model in memory).
    """
    tokenizer = trainer.processing_class
    if adapter is None:
        trainer.model.save_pretrained(dest / "adapter")
    else:
        shutil.copytree(adapter, dest / "adapter", ignore=shutil.ignore_patterns("training_args.bin"))
    tokenizer.save_pretrained(dest / "adapter")
    if adapter is not None or (cfg.quantization == "4bit" and has_cuda()):
        # Merging into 4-bit weights loses precision, and a sharded model (FSDP, ZeRO-3) holds no full
        # weights in memory: merge the saved adapter into a full-precision copy of the base.
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        full = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, cfg.dtype))
        merged = PeftModel.from_pretrained(full, dest / "adapter").merge_and_unload()
    else:
        merged = trainer.model.merge_and_unload()
    merged.save_pretrained(dest / "merged", safe_serialization=True)
    tokenizer.save_pretrained(dest / "merged")


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def train_sft(cfg: SFTStageConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: LoRA SFT on the mixed data."""
    return train(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.training.train_sft", __doc__, SFTStageConfig)
    parser.add_argument("--mix", type=Path, required=True, help="mix stage dir holding train.jsonl and val.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--base-model", help=f"base model (default: {EMBEDDED})")
    args = parser.parse_args(argv)
    print(train(config_from_args(SFTStageConfig, args, parser, base_model=args.base_model), args.mix, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
