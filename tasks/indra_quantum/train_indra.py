"""Train one indra-quantum student from scratch (stage ``train_indra``): one mode, with or without distillation.

AdamW (no weight decay on embeddings, biases and norms; the token table at its own learning rate, see
``OptimConfig.embedding_lr_mult``), linear warm-up then a cosine schedule to
``min_lr_ratio``, gradient clipping, the combined objective of tasks/indra_quantum/indra_objective.py. A checkpoint
(model, optimizer, scheduler, step and RNG states) is written at the end of every epoch and every
``save_every_steps`` steps to a work dir that survives a killed run; re-running resumes from the newest
checkpoint that loads (a torn one is discarded) and continues at the same step with the same batch
order, so an interrupted run ends where an uninterrupted one would. Every step goes to ``metrics.csv``;
the held-out loss after each epoch to ``eval.csv``; plots (total loss, CE vs KD, phase/magnitude
statistics) are PNG artifacts. The finished stage holds ``model.pt``, ``model_config.json``, the CSVs
and the plots.

    python -m tasks.indra_quantum.train_indra --data data/indra_quantum/data --teacher data/indra_quantum/teacher \
        --out data/indra_quantum/train/fullq-kd --set model.mode=fullq --set max_steps=50
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.indra_quantum.indra_checkpoints import (
    append_csv,
    read_csv,
    resume,
    save_checkpoint,
    truncate_csv,
)
from tasks.indra_quantum.indra_data import add_input_args, cli_inputs, load_blocks
from tasks.indra_quantum.indra_objective import ObjectiveConfig, combined_loss
from tasks.indra_quantum.indra_plots import plot_training
from tasks.indra_quantum.indra_teacher import TeacherConfig, open_teacher
from tasks.common.reporting import (
    StageProgress,
    counts_table,
    publish_image,
    publish_table,
    say,
)
from tasks.common.stage import cached, code_digest, prefect_cache_key, read_manifest, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "train_indra"


class IndraModelConfig(BaseModel):
    """The student's shape (see tasks/indra_quantum/indra_model.py for how the modes are sized alike)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["fullq", "complex_embed", "real"] = Field("fullq", description="fullq (all complex), complex_embed "
                                                                                "(complex embedding only) or real (plain transformer)")
    d_model: int = Field(128, ge=4, description="Real width (the complex modes use d_model/2 complex numbers)")
    n_layers: int = Field(4, ge=1, description="Transformer blocks")
    n_heads: int = Field(4, ge=1, description="Attention heads")
    max_len: int = Field(128, ge=8, description="Longest context, in tokens")
    ffn_mult: int = Field(4, ge=1, description="Real feed-forward width = ffn_mult × d_model")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings, residual branches and attention")
    alpha_init: float = Field(0.05, description="Initial weight of fullq's magnitude path in the hybrid head")
    match_params: bool = Field(True, description="Widen fullq's feed-forward blocks so its parameter count matches real")


class OptimConfig(BaseModel):
    """AdamW and its schedule."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (the seed's 3e-4)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay on matrices (not embeddings, biases, norms)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps before the cosine decay")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine ends at lr × min_lr_ratio")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping")
    embedding_lr_mult: float = Field(
        1.0, gt=0, description="Learning-rate multiplier of the token table (the real table, or the complex magnitude and "
                               "phase table; no weight decay). AdamW moves every value by ~lr per step: a real table at std "
                               "0.02 changes by ~lr/0.02 of itself per step, the polar one (magnitudes ~0.7, phases in "
                               "radians) by ~lr, so the two need different values. The ablation picks it per mode "
                               "(ablation.optim_by_mode) from one shared pilot grid; 1 = the seed")


class TrainIndraConfig(BaseModel):
    """One training run."""

    model_config = ConfigDict(extra="forbid")
    model: IndraModelConfig = Field(default_factory=IndraModelConfig, description="Student shape and mode")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="Loss weights, curriculum, gating")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule")
    batch_size: int = Field(16, ge=1, description="Blocks per step")
    epochs: int = Field(1, ge=1, description="Passes over the training blocks")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (the token budget) even mid-epoch")
    save_every_steps: int = Field(50, ge=1, description="Checkpoint every this many steps (and at every epoch end)")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept in the work dir")
    seed: int = Field(0, description="Seed of initialisation, batch order and dropout")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    live_teacher: TeacherConfig | None = Field(None, description="Teacher run per batch when objective.teacher is live "
                                                                 "(the flow fills it from its teacher: block)")


class Interrupted(RuntimeError):
    """Raised by a test's ``on_step`` to stop training as a kill would."""


def key_of(cfg: TrainIndraConfig, inputs: dict[str, Path], out_dir: Path) -> tuple[dict, dict[str, Path]]:
    """The stage key hashes the config less its speed and checkpoint settings and the model's code (imported lazily,
    so not in the stage's module source)."""
    return ({"config": cfg.model_dump(mode="json", exclude={"threads", "save_every_steps", "keep_checkpoints"}),
             "model_code": code_digest("tasks.indra_quantum.indra_model")}, inputs)


def train(cfg: TrainIndraConfig, inputs: dict[str, Path], out_dir: Path,
          on_step: Callable[[int, object, object], None] | None = None) -> Path:
    """Train on ``inputs['data']`` (+ ``inputs['teacher']`` when distilling from precomputed logits); resumable."""
    out_dir = Path(out_dir)
    inputs = {k: Path(v) for k, v in inputs.items()}
    _check_inputs(cfg, inputs)
    key = stage_key(train, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    import torch

    from tasks.indra_quantum.indra_model import IndraLM, parameter_counts

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data_manifest = read_manifest(inputs["data"]) or {}
    vocab, block_len = data_manifest["tokenizer"]["vocab_size"], data_manifest["block_len"]
    if block_len > cfg.model.max_len:
        raise ValueError(f"the data's blocks have {block_len} tokens but model.max_len is {cfg.model.max_len}; "
                         "make them equal (indra_data block_len)")
    blocks, lengths = load_blocks(inputs["data"], "train")
    val_blocks, val_lengths = load_blocks(inputs["data"], "val")
    steps_per_epoch = len(blocks) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(blocks)} training blocks are fewer than batch_size {cfg.batch_size}; lower batch_size")
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or 1 << 62)
    teacher = _TeacherBatches(cfg, inputs, blocks, block_len) if cfg.objective.distill else None

    torch.manual_seed(cfg.seed)
    model = IndraLM(vocab, **cfg.model.model_dump())
    optimizer = _optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.optim, total_steps))
    work = out_dir.with_name(f".{out_dir.name}.work-{key}")
    ckpt_dir = work / "checkpoints"
    step = resume(ckpt_dir, model, optimizer, scheduler)
    if step:
        say(f"[train_indra] {out_dir.name}: resuming at step {step} of {total_steps}")
    resumed_from = step
    metrics_csv, eval_csv = work / "metrics.csv", work / "eval.csv"
    for path in (metrics_csv, eval_csv):
        truncate_csv(path, step)
    started, tokens_now = time.time(), 0
    try:
        with StageProgress(f"train {out_dir.name}", total_steps) as progress:
            progress.advance(step)
            while step < total_steps:
                epoch, pos = divmod(step, steps_per_epoch)
                order = epoch_order(cfg.seed, epoch, len(blocks))
                idx = np.sort(order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size])
                batch = _batch(blocks, lengths, idx, block_len)
                t_vals, t_idx = teacher.batch(idx, batch) if teacher else (None, None)
                model.train()
                out = model(batch["inputs"], batch["attention"])
                loss, terms = combined_loss(cfg.objective, step / total_steps, out.logits, batch["targets"], batch["loss_mask"],
                                            out.magnitude, out.phase, t_vals, t_idx)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{out_dir.name}: loss is {float(loss)} at step {step + 1}; lower optim.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1
                tokens_now += int(batch["loss_mask"].sum())
                append_csv(metrics_csv, {**terms, "step": step, "epoch": epoch + 1, "lr": lr, "grad_norm": float(grad_norm),
                                          "alpha": model.alpha.item() if cfg.model.mode == "fullq" else "",
                                          "tokens": step * cfg.batch_size * block_len,
                                          "elapsed_s": round(time.time() - started, 3)})
                epoch_end = step % steps_per_epoch == 0
                if epoch_end or step == total_steps:
                    val_loss = evaluate_loss(model, val_blocks, val_lengths, block_len, cfg.batch_size)
                    append_csv(eval_csv, {"step": step, "epoch": epoch + 1 if epoch_end else epoch + pos / steps_per_epoch,
                                           "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))})
                if epoch_end or step % cfg.save_every_steps == 0 or step == total_steps:
                    save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, cfg.keep_checkpoints)
                progress.advance()
                if on_step:
                    on_step(step, model, optimizer)
    finally:
        if teacher:
            teacher.close()
    seconds = time.time() - started
    final = read_csv(eval_csv)[-1]
    steps_rows = read_csv(metrics_csv)
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        torch.save(model.state_dict(), out.tmp / "model.pt")
        counts = parameter_counts(model)
        (out.tmp / "model_config.json").write_text(json.dumps({"vocab_size": vocab, **cfg.model.model_dump()}, indent=2))
        shutil.copy(metrics_csv, out.tmp / "metrics.csv")
        shutil.copy(eval_csv, out.tmp / "eval.csv")
        plots = plot_training(steps_rows, read_csv(eval_csv), out.tmp, f"{cfg.model.mode} ({'KD' if cfg.objective.distill else 'CE only'})")
        last = steps_rows[-min(10, len(steps_rows)):]
        out.metrics = {"val_loss": round(final["val_loss"], 4), "val_perplexity": round(final["val_perplexity"], 3),
                       "train_ce_last10": round(sum(r["ce"] for r in last) / len(last), 4),
                       "steps": step, "tokens_trained": step * cfg.batch_size * block_len,
                       "resumed_from_step": resumed_from, "tokens_per_s": round(tokens_now / seconds, 1) if seconds else None,
                       "train_seconds": round(seconds, 1)}
        out.counts = {"parameters": counts["total"], "parameters_non_embedding": counts["non_embedding"],
                      "parameters_embedding": counts["embedding"], "train_blocks": len(blocks)}
        out.extra.update(mode=cfg.model.mode, distill=cfg.objective.distill, plots=[p.name for p in plots])
    shutil.rmtree(work, ignore_errors=True)
    name = out_dir.name
    publish_table(f"train-indra-{name}", counts_table(out.counts, out.metrics), f"indra-quantum run {name}")
    for png in plots:
        publish_image(f"train-indra-{name}-{png.stem}", out_dir / png.name, f"{name}: {png.stem.replace('_', ' ')}")
    return out_dir


def _check_inputs(cfg: TrainIndraConfig, inputs: dict[str, Path]) -> None:
    if "data" not in inputs:
        raise ValueError("train_indra needs inputs['data'] (the indra_data output)")
    needs_arrays = cfg.objective.distill and cfg.objective.teacher == "precomputed"
    if needs_arrays and "teacher" not in inputs:
        raise ValueError("objective.distill with objective.teacher=precomputed needs inputs['teacher'] (the indra_teacher "
                         "output); run it, set objective.teacher=live, or set objective.distill=false")
    if cfg.objective.distill and cfg.objective.teacher == "live" and cfg.live_teacher is None:
        raise ValueError("objective.teacher=live needs live_teacher (the teacher to run per batch)")


class _TeacherBatches:
    """The teacher's top-k for a batch: slices of the precomputed arrays, or the live teacher's output."""

    def __init__(self, cfg: TrainIndraConfig, inputs: dict[str, Path], blocks, block_len: int):
        self.live = None
        if cfg.objective.teacher == "live":
            self.live = open_teacher(cfg.live_teacher, n_ctx=block_len + 8, data_root=inputs["data"].resolve().parent.parent)
            self.k = cfg.live_teacher.top_k
            return
        self.values = np.load(inputs["teacher"] / "train_values.npy", mmap_mode="r")
        self.indices = np.load(inputs["teacher"] / "train_indices.npy", mmap_mode="r")
        if self.values.shape[:2] != (len(blocks), block_len):
            raise ValueError(f"{inputs['teacher']}: teacher arrays cover {self.values.shape[:2]} (blocks, positions) but the "
                             f"data has {(len(blocks), block_len)}: the teacher was computed for other data; re-run indra_teacher")

    def batch(self, idx: np.ndarray, batch: dict):
        import torch

        if self.live is not None:
            vals, ind, _ = self.live.topk(batch["inputs"].numpy(), batch["attention"].sum(1).numpy(),
                                          batch["targets"].numpy(), self.k)
        else:
            vals, ind = self.values[idx], self.indices[idx]
        return torch.from_numpy(np.asarray(vals, np.float32)), torch.from_numpy(np.asarray(ind, np.int64))

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The batch order of an epoch: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _batch(blocks, lengths, idx: np.ndarray, block_len: int) -> dict:
    import torch

    rows = torch.from_numpy(np.asarray(blocks[idx], np.int64))
    n = torch.from_numpy(np.asarray(lengths[idx], np.int64))
    pos = torch.arange(block_len)[None, :]
    return {"inputs": rows[:, :block_len], "targets": rows[:, 1:block_len + 1],
            "attention": (pos < n[:, None].clamp(max=block_len)).long(), "loss_mask": pos < (n[:, None] - 1)}


def evaluate_loss(model, blocks, lengths, block_len: int, batch_size: int) -> float:
    """Mean cross-entropy per target token over all blocks (dropout off)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            b = _batch(blocks, lengths, np.arange(start, min(start + batch_size, len(blocks))), block_len)
            logits = model(b["inputs"], b["attention"]).logits
            mask = b["loss_mask"]
            total += float(F.cross_entropy(logits[mask], b["targets"][mask], reduction="sum"))
            count += int(mask.sum())
    return total / max(count, 1)


def _optimizer(model, cfg: OptimConfig):
    """AdamW: decay on matrices only; the token table at lr × embedding_lr_mult."""
    import torch

    decay, no_decay, table = [], [], []
    for name, p in model.named_parameters():
        if name.startswith("tok."):
            table.append(p)
        elif p.ndim >= 2 and not name.startswith("pos"):
            decay.append(p)
        else:
            no_decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
                              {"params": table, "weight_decay": 0.0, "lr": cfg.lr * cfg.embedding_lr_mult}],
                             lr=cfg.lr, betas=cfg.betas)


def _schedule(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def train_indra(cfg: TrainIndraConfig, inputs: dict[str, Path], out_dir: Path) -> Path:
    """Prefect task: one indra-quantum training run (resumable)."""
    return train(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.indra_quantum.train_indra", __doc__, TrainIndraConfig)
    add_input_args(parser, "indra_teacher output dir (needed when distilling from precomputed logits)")
    args = parser.parse_args(argv)
    print(train(config_from_args(TrainIndraConfig, args, parser), cli_inputs(args), args.out))


if __name__ == "__main__":
    run_stage_cli(main)
