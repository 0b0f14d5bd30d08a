"""One hyperparameter trial: a short LoRA SFT run on a project's mix, scored by its best eval loss.

The trial trains ``trial.steps`` steps and evaluates every ``trial.eval_every`` steps on the first
``trial.max_eval_records`` validation records, saving a checkpoint at each evaluation. A trial whose
eval loss trails the best trial so far by more than ``early_stop_margin`` at the same step stops
there; either way the Trainer reloads the best checkpoint, which the output keeps (``checkpoint/``,
resumable) beside its LoRA ``adapter/`` and ``trial.json`` (eval curve, best loss, stop step).
Trials are cached by their SFT settings, trial budget and data: the same hyperparameters are never
trained twice.

    python -m tasks.tuning_agent.sft_trial --mix data/ben_lab/mix --out /tmp/trial --set trainer.learning_rate=1e-3
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.models.base_models import resolve_base_model
from tasks.common.reporting import say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.training.train_sft import SFTStageConfig, build_trainer, last_complete_checkpoint, to_prompt_completion

STAGE = "trial"


class TrialConfig(BaseModel):
    """The budget and scoring of every trial."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(12, ge=1, description="Optimizer steps per trial (the budget; overrides sft.trainer max_steps/epochs)")
    eval_every: int = Field(4, ge=1, description="Evaluate and checkpoint every this many steps (early-stopping points)")
    max_eval_records: int = Field(32, ge=1, description="Validation records scored at each evaluation (the first N)")
    early_stop_margin: float | None = Field(0.05, ge=0, description="Stop a trial whose eval loss exceeds the best trial's at "
                                                                    "the same step by this fraction; null = never stop early")
    seed: int = Field(0, description="Training seed (same for every trial, so settings are compared on equal data order)")


class TrialSpec(BaseModel):
    """What a trial runs: the SFT settings with the trial's hyperparameters in place, and the budget."""

    model_config = ConfigDict(extra="forbid")
    sft: SFTStageConfig
    trial: TrialConfig
    values: dict = Field(description="The hyperparameters this trial sets (dimension → value), for reports")


def trial_sft(spec: TrialSpec) -> SFTStageConfig:
    """The SFT config a trial trains with: step budget, periodic eval + checkpoint, best checkpoint reloaded."""
    t = spec.trial
    trainer = {k: v for k, v in spec.sft.trainer.items() if k not in ("num_train_epochs", "max_steps")}
    trainer.update(max_steps=t.steps, eval_strategy="steps", eval_steps=t.eval_every, save_strategy="steps",
                   save_steps=t.eval_every, save_total_limit=1, load_best_model_at_end=True,
                   metric_for_best_model="eval_loss", greater_is_better=False, seed=t.seed, disable_tqdm=True)
    return spec.sft.model_copy(update={"trainer": trainer, "eval_before": False})


class EarlyStop:
    """Trainer callback: stop when this trial's eval loss trails ``best_curve`` (step → loss) by more than ``margin``."""

    def __init__(self, best_curve: dict[int, float] | None, margin: float | None) -> None:
        self.best_curve = {int(k): v for k, v in (best_curve or {}).items()}
        self.margin = margin
        self.stopped_at: int | None = None

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Cb(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, **kw):
                loss, step = (metrics or {}).get("eval_loss"), state.global_step
                ref = outer.best_curve.get(step)
                if outer.margin is None or loss is None or ref is None or step >= state.max_steps:
                    return
                if loss > ref * (1 + outer.margin):
                    say(f"[trial] stopping early at step {step}: eval loss {loss:.4f} trails the best trial's "
                        f"{ref:.4f} by more than {outer.margin:.0%}")
                    outer.stopped_at = step
                    control.should_training_stop = True

        return _Cb()


def eval_curve(log_history: list[dict]) -> dict[int, float]:
    """Step → eval loss from a Trainer's log history (survives a resume: it lives in the checkpoint)."""
    return {int(row["step"]): float(row["eval_loss"]) for row in log_history if "eval_loss" in row}


def key_of(spec: TrialSpec, inputs: Path, out_dir: Path) -> tuple[TrialSpec, list[Path]]:
    """The stage key hashes the mix's two files (not its manifest) and the trial's settings."""
    return spec, [Path(inputs) / "train.jsonl", Path(inputs) / "val.jsonl"]


def run_trial(spec: TrialSpec, inputs: Path, out_dir: Path, best_curve: dict[int, float] | None = None) -> Path:
    """Train and score one trial on ``<mix>/train.jsonl`` + ``val.jsonl``; a cache hit returns at once."""
    out_dir, mix = Path(out_dir), Path(inputs)
    files = [mix / "train.jsonl", mix / "val.jsonl"]
    key = stage_key(run_trial, spec, inputs, out_dir)
    if cached(out_dir, key) is not None:
        return out_dir
    sft = trial_sft(spec)
    base = resolve_base_model(sft.base_model, sft.model_cache_dir or out_dir.parent.parent.parent / "cache" / "models")
    train_rows = to_prompt_completion(files[0])
    val_rows = to_prompt_completion(files[1])[: spec.trial.max_eval_records]
    if not train_rows or not val_rows:
        raise ValueError(f"{mix}: a trial needs training and validation records (got {len(train_rows)} and {len(val_rows)})")
    work = out_dir.with_name(f".{out_dir.name}.work-{key}")
    stop = EarlyStop(best_curve, spec.trial.early_stop_margin)
    trainer = build_trainer(sft, base, train_rows, val_rows, work / "checkpoints", callbacks=[stop.callback()])
    resume = last_complete_checkpoint(work / "checkpoints")
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    state = trainer.state
    curve = eval_curve(state.log_history)
    with stage_output(STAGE, out_dir, key, spec, files) as out:
        trainer.model.save_pretrained(out.tmp / "adapter")  # the best checkpoint's weights (load_best_model_at_end)
        trainer.processing_class.save_pretrained(out.tmp / "adapter")
        best_ckpt = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
        if best_ckpt and best_ckpt.is_dir():
            shutil.copytree(best_ckpt, out.tmp / "checkpoint")
        out.metrics = {
            "best_eval_loss": min(curve.values()) if curve else None,
            "best_step": min(curve, key=curve.get) if curve else None,
            "final_eval_loss": curve[max(curve)] if curve else None,
            "steps_run": state.global_step, "stopped_early": stop.stopped_at is not None,
            "stopped_at_step": stop.stopped_at, "train_loss": result.training_loss,
            "train_seconds": round(seconds, 1), "resumed_from": Path(resume).name if resume else None,
        }
        out.counts = {"train_records": len(train_rows), "eval_records": len(val_rows)}
        out.extra.update(base_model=base, values=spec.values)
        (out.tmp / "trial.json").write_text(json.dumps({"values": spec.values, "eval_curve": curve, **out.metrics},
                                                       indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def sft_trial(cfg: TrialSpec, inputs: Path, out_dir: Path, best_curve: dict[int, float] | None = None) -> Path:
    """Prefect task: one short SFT trial, cached by its settings."""
    return run_trial(cfg, inputs, out_dir, best_curve)


def read_trial(out_dir: Path) -> dict:
    """A finished trial's ``trial.json``."""
    return json.loads((Path(out_dir) / "trial.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.tuning_agent.sft_trial", __doc__, SFTStageConfig)
    parser.add_argument("--mix", type=Path, required=True, help="mix stage dir holding train.jsonl and val.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="output directory of the trial")
    parser.add_argument("--steps", type=int, default=12, help="step budget")
    parser.add_argument("--eval-every", type=int, default=4, help="evaluation/checkpoint interval")
    args = parser.parse_args(argv)
    sft = config_from_args(SFTStageConfig, args, parser)
    spec = TrialSpec(sft=sft, trial=TrialConfig(steps=args.steps, eval_every=args.eval_every, early_stop_margin=None),
                     values={})
    out = run_trial(spec, args.mix, args.out)
    print(out, json.dumps({k: v for k, v in read_trial(out).items() if k != "values"}))


if __name__ == "__main__":
    run_stage_cli(main)
