"""Hyperparameter search around SFT: propose (FMQA / random / TPE) → optionally ask a person → run a trial.

Each method gets ``trials`` short SFT runs (``tasks.tuning_agent.sft_trial``) on the same project data and
budget. Trials are cached by their settings, so methods share any setting they both try, and a
re-run replays finished trials from the journal (``<out>/<method>/journal.jsonl``, one line per
finished trial, appended after the trial's output is in place) without asking anyone again.
Called from the flow body: guided mode pauses the flow run before each trial.

    python -m flows.tuning_agent --profile local                         # FMQA on ben-lab, automated
    python -m flows.tuning_agent --set tune.methods='[fmqa, random, tpe]' --set tune.trials=8
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.common.reporting import StageProgress, publish_image, publish_table, say
from tasks.tuning_agent.search_methods import METHODS, FMQAConfig, Proposal, make_method
from tasks.tuning_agent.search_space import Point, SearchSpace, point_id
from tasks.tuning_agent.sft_trial import TrialConfig, TrialSpec, read_trial, sft_trial
from tasks.common.stage import write_json_atomic
from tasks.training.train_sft import SFTStageConfig


class TuneConfig(BaseModel):
    """Search methods, budget, space and how a person takes part."""

    model_config = ConfigDict(extra="forbid")
    methods: list[Literal["fmqa", "random", "tpe"]] = Field(["fmqa"], min_length=1,
                                                            description=f"Search methods to run in turn ({', '.join(METHODS)})")
    trials: int = Field(10, ge=1, description="Trials per method")
    seed: int = Field(0, description="Seed of the proposals (the trials' own training seed is trial.seed)")
    mode: Literal["automated", "guided"] = Field("automated", description="guided: pause before each trial for a person "
                                                 "to accept, edit or stop (Prefect UI form)")
    target_loss: float | None = Field(None, description="Report how many trials each method needed to reach this eval loss")
    space: SearchSpace = Field(default_factory=SearchSpace, description="Hyperparameters and their choices")
    trial: TrialConfig = Field(default_factory=TrialConfig, description="Budget and early stopping of each trial")
    fmqa: FMQAConfig = Field(default_factory=FMQAConfig, description="FM surrogate and QUBO solver order")
    guide_timeout_s: int = Field(24 * 3600, ge=10, description="guided: how long a pause waits for an answer")
    guide_poll_interval_s: int = Field(10, ge=1, description="guided: how often a paused run checks for the answer")

    @model_validator(mode="after")
    def _budget_fits(self):
        if self.trials > self.space.n_points:
            raise ValueError(f"tune.trials={self.trials} is more than the {self.space.n_points} settings of the search space: "
                             f"lower tune.trials or add choices to tune.space.dimensions")
        if self.trial.eval_every > self.trial.steps:
            raise ValueError(f"tune.trial.eval_every={self.trial.eval_every} > tune.trial.steps={self.trial.steps}: "
                             "a trial would never be evaluated")
        return self


class Decision(BaseModel):
    """What happens to a proposal: run it as proposed, run edited values instead, or end the search."""

    action: Literal["accept", "edit", "stop"]
    values: dict | None = None
    note: str = ""


Ask = Callable[[Proposal, SearchSpace, list[dict], str], Decision]


def tune(cfg: TuneConfig, sft: SFTStageConfig, mix: Path, out_dir: Path, ask: Ask | None = None) -> dict:
    """Run every configured method; returns the search summary (also written to ``<out>/search.json``)."""
    out_dir = Path(out_dir)
    space = cfg.space
    progress = StageProgress("tuning trials", cfg.trials * len(cfg.methods))
    journals: dict[str, list[dict]] = {}
    stopped = False
    with progress:
        for m_index, method_name in enumerate(cfg.methods):
            method = make_method(method_name, space, cfg.fmqa)
            journal_path = out_dir / method_name / "journal.jsonl"
            journal = read_journal(journal_path)[: cfg.trials]
            progress.advance(len(journal))
            while len(journal) < cfg.trials and not stopped:
                i = len(journal)
                rng = np.random.default_rng([cfg.seed, m_index, i])
                # Each method learns from its own trials only, so the comparison between methods stays fair
                history = [(space.point_of(e["values"]), e["best_eval_loss"]) for e in journal]
                proposal = method.propose(history, rng)
                decision = ask(proposal, space, journal, method_name) if ask else Decision(action="accept")
                if decision.action == "stop":
                    say(f"[tune] {method_name}: stopped by a person after {i} trials ({decision.note or 'no note'})")
                    stopped = True
                    break
                point = space.point_of(decision.values) if decision.action == "edit" else proposal.point
                entry = run_one(cfg, sft, space, point, mix, out_dir, best_curve(journal, out_dir))
                entry.update(index=i, method=method_name, proposed=space.values(proposal.point),
                             decision="auto" if ask is None else decision.action, note=decision.note,
                             expected_loss=proposal.expected_loss, proposer_info=proposal.info)
                append_journal(journal_path, entry)
                journal.append(entry)
                progress.advance()
                say(f"[tune] {method_name} trial {i + 1}/{cfg.trials}: {space.label(point)} → eval loss "
                    f"{entry['best_eval_loss']:.4f}{' (stopped early)' if entry['stopped_early'] else ''}")
            journals[method_name] = journal
            if stopped:
                break
    summary = summarise(cfg, journals, stopped)
    write_json_atomic(out_dir / "search.json", summary)
    report(cfg, journals, summary, out_dir)
    return summary


def run_one(cfg: TuneConfig, sft: SFTStageConfig, space: SearchSpace, point: Point, mix: Path, out_dir: Path,
            curve: dict[int, float] | None) -> dict:
    """Run (or reuse) the trial for ``point``; its journal entry."""
    values = space.values(point)
    spec = TrialSpec(sft=space.apply(sft, point), trial=cfg.trial, values=values)
    started = time.time()
    trial_dir = sft_trial(spec, mix, out_dir / "trials" / point_id(values), curve)
    result = read_trial(trial_dir)
    return {"values": values, "label": space.label(point), "trial_dir": str(trial_dir),
            "best_eval_loss": result["best_eval_loss"], "best_step": result["best_step"],
            "stopped_early": result["stopped_early"], "steps_run": result["steps_run"],
            "train_seconds": result["train_seconds"], "wall_seconds": round(time.time() - started, 1)}


def best_curve(journal: list[dict], out_dir: Path) -> dict[int, float] | None:
    """Eval curve of this method's best full-length trial so far (the early-stopping reference)."""
    full = [e for e in journal if not e["stopped_early"]]
    if not full:
        return None
    best = min(full, key=lambda e: e["best_eval_loss"])
    return {int(k): v for k, v in read_trial(Path(best["trial_dir"]))["eval_curve"].items()}


def read_journal(path: Path) -> list[dict]:
    """Finished trials in order; a torn last line (a kill mid-append) is dropped, and so is any trial whose output is gone."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break
        if not (Path(entry["trial_dir"]) / "trial.json").is_file():
            break
        entries.append(entry)
    return entries


def append_journal(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
        fh.flush()


def trials_to_target(losses: list[float], target: float | None) -> int | None:
    """1-based index of the first trial at or below ``target`` (None: never reached, or no target)."""
    if target is None:
        return None
    return next((i + 1 for i, loss in enumerate(losses) if loss <= target), None)


def best_so_far(losses: list[float]) -> list[float]:
    return list(np.minimum.accumulate(losses)) if losses else []


def summarise(cfg: TuneConfig, journals: dict[str, list[dict]], stopped: bool) -> dict:
    """Per method: trials, best loss and setting, trials to target; overall best trial."""
    methods, everything = {}, []
    for name, journal in journals.items():
        losses = [e["best_eval_loss"] for e in journal]
        best = min(journal, key=lambda e: e["best_eval_loss"]) if journal else None
        methods[name] = {
            "trials": len(journal), "best_eval_loss": best["best_eval_loss"] if best else None,
            "best_values": best["values"] if best else None, "best_trial_dir": best["trial_dir"] if best else None,
            "trials_to_target": trials_to_target(losses, cfg.target_loss), "best_so_far": best_so_far(losses),
            "stopped_early": sum(e["stopped_early"] for e in journal),
            "edited_by_person": sum(e["decision"] == "edit" for e in journal),
            "train_seconds": round(sum(e["train_seconds"] for e in journal), 1),
        }
        everything += journal
    best = min(everything, key=lambda e: e["best_eval_loss"]) if everything else None
    losses = [e["best_eval_loss"] for e in everything]
    return {"methods": methods, "target_loss": cfg.target_loss, "stopped_by_person": stopped,
            "best": best, "trials_run": len(everything),
            "median_eval_loss": float(np.median(losses)) if losses else None,
            "worst_eval_loss": max(losses) if losses else None}


def report(cfg: TuneConfig, journals: dict[str, list[dict]], summary: dict, out_dir: Path) -> None:
    """Table of trials and the best-so-far plot, as Prefect artifacts and files."""
    rows = [{"method": e["method"], "trial": e["index"] + 1, "setting": e["label"], "decision": e["decision"],
             "expected_loss": None if e["expected_loss"] is None else round(e["expected_loss"], 4),
             "eval_loss": round(e["best_eval_loss"], 4), "stopped_early": e["stopped_early"],
             "steps": e["steps_run"], "seconds": e["train_seconds"]}
            for journal in journals.values() for e in journal]
    publish_table("tuning-trials", rows, "Tuning agent: every trial (eval loss = best checkpoint's)")
    if rows:
        plot_best_so_far({m: s["best_so_far"] for m, s in summary["methods"].items()}, cfg.target_loss,
                         out_dir / "best_so_far.png")
        publish_image("tuning-best-so-far", out_dir / "best_so_far.png", "Best eval loss so far vs trial, per method")


def plot_best_so_far(curves: dict[str, list[float]], target: float | None, png: Path, spread: dict | None = None) -> None:
    """Best-so-far eval loss vs trial, one line per method (``spread``: method → (low, high) bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, curve in curves.items():
        xs = range(1, len(curve) + 1)
        line, = ax.plot(xs, curve, marker="o", label=name)
        if spread and name in spread:
            ax.fill_between(xs, *spread[name], color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", label=f"target {target:.3f}")
    ax.set_xlabel("trial")
    ax.set_ylabel("best eval loss so far")
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)
