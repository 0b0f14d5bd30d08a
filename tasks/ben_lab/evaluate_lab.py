"""Stage ``evaluate``: does the trained model know the lab better than its base? Scored on held-out material.

Both the base GGUF and the trained one (the export stage's ``base-f16.gguf`` and ``model-f16.gguf``) answer
greedily in llama.cpp: (a) fresh experiments from the lab (seeds never harvested for training), asked in
wording unlike the training templates: the phase, whether a TRI is large or small for this lab, whether a
phase holds up under deeper replays; (b) the user's five verification prompts, scored by the facts a right
answer states. Also counted: the share of quoted numbers that are grounded in the question or the lab's
results, and answers that loop (an n-gram repeated to the end). ``gate_install`` stops a flow before
install when the trained model does not beat its base.

    python -m tasks.ben_lab.evaluate_lab --export data/ben_lab/export --calibration data/ben_lab/calibrate \\
        --fresh data/ben_lab/fresh --out data/ben_lab/evaluate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.user_errors import UserInputError
from tasks.ben_lab.answer_checks import repetition_loop
from tasks.ben_lab.calibrate_phases import load_calibration
from tasks.ben_lab.describe_phases import PhaseCalibration
from tasks.ben_lab.lab_answer_scoring import drift_question, phase_question, prompt_questions, score_answer, tri_question
from tasks.common.records import read_jsonl, write_jsonl
from tasks.common.reporting import StageProgress, publish_image, publish_markdown, say
from tasks.common.stage import cached, prefect_cache_key, read_manifest, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, stage_parser

STAGE = "evaluate"
METRICS = ("phase_accuracy", "tri_accuracy", "drift_accuracy", "prompt_facts", "grounded_numbers", "loops", "overall")
KIND_METRIC = {"phase": "phase_accuracy", "tri": "tri_accuracy", "drift": "drift_accuracy", "prompt": "prompt_facts"}


class EvaluateLabConfig(BaseModel):
    """Held-out material, decoding and the install gate."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the evaluation (false: skip it and the install gate, and say so)")
    phase_runs_per_type: int = Field(10, ge=1, description="Fresh phase experiments per phase type")
    tri_runs: int = Field(8, ge=0, description="Fresh /tri experiments")
    drift_runs: int = Field(8, ge=0, description="Fresh /replay_drift experiments")
    seed: int = Field(100_000, ge=10_000, description="Base seed of the fresh experiments; the training plan's seeds "
                      "stay below 10,000 (and re-asked ones are drawn above 1,000,000), so none is seen in training")
    system_sizes: list[int] | None = Field(None, description="Sizes of the fresh runs; None = the harvest's")
    system_prompt: str | None = Field(None, description="System message of every question; the ben-lab flow fills in "
                                      "install.system, the one the installed model runs with")
    max_tokens: int = Field(160, ge=16, description="Longest answer, in tokens")
    n_threads: int = Field(2, ge=1, description="llama.cpp threads")
    min_gain: float = Field(0.05, description="The trained model must beat its base's overall score by this much "
                            "for the flow to install it")
    gate_install: bool = Field(True, description="Stop the flow before install when the trained model does not "
                               "beat its base (false: install anyway and say so)")

    def fresh_plan(self, harvest_cfg):
        """The harvest config of the fresh experiments: same lab and sizes, new seeds, no discovery."""
        update = {"phase_runs_per_type": self.phase_runs_per_type, "tri_runs": self.tri_runs, "discovery_runs": 0,
                  "drift_runs": self.drift_runs, "seed": self.seed}
        if self.system_sizes:
            update["system_sizes"] = self.system_sizes
        return harvest_cfg.model_copy(update=update)


class ModelNotBetterError(UserInputError, RuntimeError):
    """The trained model does not beat its base on held-out material: it is not installed."""


def evaluate(cfg: EvaluateLabConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Score base and trained model on held-out questions; ``inputs = [export, calibrate, fresh harvest]``."""
    export_dir, calibration_dir, fresh_dir = (Path(p) for p in inputs)
    out_dir = Path(out_dir)
    key = stage_key(evaluate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    calibration = load_calibration(calibration_dir)
    items = held_out_questions(calibration, read_jsonl(fresh_dir / "experiments.jsonl"))
    models = _models(export_dir)
    rows = []
    with StageProgress(f"evaluate {len(models)} models on {len(items)} held-out questions", len(models) * len(items)) as progress:
        for name, path in models.items():
            rows += _answer_all(name, path, items, cfg, progress)
    table = {name: summarise([r for r in rows if r["model"] == name]) for name in models}
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        write_jsonl(out.tmp / "answers.jsonl", rows)
        (out.tmp / "evaluation.json").write_text(json.dumps(table, indent=2))
        _plot(table, out.tmp / "evaluation.png")
        out.counts = {"questions": len(items), **{f"questions_{k}": sum(i["kind"] == k for i in items) for k in KIND_METRIC}}
        out.metrics = {f"{name}.{m}": v for name, metrics in table.items() for m, v in metrics.items()}
        out.extra["table"] = table
    markdown = evaluation_markdown(table)
    say(markdown)
    publish_markdown("evaluate", markdown, "Base vs trained on held-out lab questions")
    publish_image("evaluate-plot", out_dir / "evaluation.png", "Base vs trained on held-out lab questions")
    return out_dir


def held_out_questions(calibration: dict, fresh_rows: list[dict]) -> list[dict]:
    """Questions about the fresh experiments, then the user's verification prompts."""
    rule = PhaseCalibration(**calibration["rule"])
    items = [phase_question(r, rule, i) for i, r in enumerate(r for r in fresh_rows if r["kind"] == "phase")]
    items += [tri_question(r, calibration["tri"]) for r in fresh_rows if r["kind"] == "tri"]
    items += [drift_question(r, calibration["final_drift"]) for r in fresh_rows if r["kind"] == "replay_drift"]
    return items + prompt_questions(calibration)


def summarise(rows: list[dict]) -> dict:
    """Per-kind accuracy, fact share, grounded-number share, loop count, and their overall mean."""
    out: dict = {}
    for kind, metric in KIND_METRIC.items():
        scores = [r["score"] for r in rows if r["kind"] == kind]
        out[metric] = round(sum(scores) / len(scores), 4) if scores else None
    numbers = sum(r["numbers"] for r in rows)
    out["grounded_numbers"] = round(1 - sum(r["ungrounded"] for r in rows) / numbers, 4) if numbers else 1.0
    out["loops"] = sum(r["loop"] for r in rows)
    parts = [out[m] for m in KIND_METRIC.values() if out[m] is not None]
    out["overall"] = round(sum(parts) / len(parts), 4) if parts else 0.0
    return out


def evaluation_markdown(table: dict) -> str:
    """The before/after table as markdown (what the flow prints at its end)."""
    names = list(table)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in METRICS:
        lines.append(f"| {m} | " + " | ".join("–" if table[n][m] is None else f"{table[n][m]:g}" for n in names) + " |")
    return "\n".join(lines)


def gate_install(cfg: EvaluateLabConfig, evaluated: Path) -> dict:
    """The verdict on the trained model; raises ``ModelNotBetterError`` when it must not be installed."""
    table = read_manifest(evaluated)["table"]
    base, trained = table["base"], table["trained"]
    gain = round(trained["overall"] - base["overall"], 4)
    verdict = {"beats_base": gain >= cfg.min_gain and trained["loops"] <= base["loops"], "gain": gain, **table}
    if not verdict["beats_base"] and cfg.gate_install:
        raise ModelNotBetterError(
            f"the trained model does not beat its base on held-out lab questions (overall {trained['overall']} vs "
            f"{base['overall']}, gain {gain} < evaluate.min_gain {cfg.min_gain}; loops {trained['loops']} vs "
            f"{base['loops']}), so it is not installed. Per metric, trained vs base: "
            + ", ".join(f"{m} {trained[m]} vs {base[m]}" for m in METRICS if m != "overall")
            + ". Train longer or on more data (sft.trainer.num_train_epochs, harvest.*), or set "
              "evaluate.gate_install=false to install it anyway")
    return verdict


def _models(export_dir: Path) -> dict[str, Path]:
    gguf = (read_manifest(export_dir) or {}).get("gguf", {})
    if "base" not in gguf or "f16" not in gguf:
        raise FileNotFoundError(f"{export_dir}: the evaluation needs base-f16.gguf and model-f16.gguf from the export "
                                "stage (export.export_adapter: true, outtypes including f16)")
    return {"base": export_dir / gguf["base"], "trained": export_dir / gguf["f16"]}


def _answer_all(name: str, path: Path, items: list[dict], cfg: EvaluateLabConfig, progress) -> list[dict]:
    from adapters.models.llama_cpp import GgufChat

    rows = []
    with GgufChat(path, n_ctx=2048, n_threads=cfg.n_threads) as chat:
        for item in items:
            system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
            answer = chat.reply(system + [{"role": "user", "content": item["question"]}], cfg.max_tokens,
                                stop_when=lambda text: repetition_loop(text)[0])
            loop, _ = repetition_loop(answer)  # generation stops at a loop: counted, not run to the token cap
            rows.append({"model": name, "kind": item["kind"], "id": item["id"], "question": item["question"],
                         "answer": answer, "loop": loop, **score_answer(item, answer)})
            progress.advance()
    return rows


def _plot(table: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in (*KIND_METRIC.values(), "grounded_numbers") if all(t[m] is not None for t in table.values())]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(table)
    for j, (name, t) in enumerate(table.items()):
        ax.bar([i + j * width for i in range(len(metrics))], [t[m] for m in metrics], width, label=name)
    ax.set_xticks([i + width * (len(table) - 1) / 2 for i in range(len(metrics))], metrics, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("Held-out lab questions: base vs trained")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def evaluate_lab(cfg: EvaluateLabConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Prefect task: score base vs trained on held-out lab questions."""
    return evaluate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m tasks.ben_lab.evaluate_lab", __doc__, EvaluateLabConfig)
    parser.add_argument("--export", type=Path, required=True, help="output dir of the export stage")
    parser.add_argument("--calibration", type=Path, required=True, help="output dir of the calibrate stage")
    parser.add_argument("--fresh", type=Path, required=True, help="a harvest of experiments never trained on")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    out = evaluate(config_from_args(EvaluateLabConfig, args, parser), [args.export, args.calibration, args.fresh], args.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
