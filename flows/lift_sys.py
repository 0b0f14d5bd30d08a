"""lift-sys: templated prompts → teacher IRs (Claude, or the offline template oracle) → checks + human review +
negatives → LoRA → GGUF → Ollama, scored on held-out prompts against the base model.

    python -m flows.lift_sys --profile local                          # template oracle + SmolLM2-135M, no network
    ANTHROPIC_API_KEY=... python -m flows.lift_sys --set generate_ir.teacher=anthropic --set generate_ir.n=3
    python -m flows.lift_sys --set review.mode=file --set review.decisions=reviews.jsonl   # bulk human decisions
    prefect deployment run 'lift-sys/lift-sys' --param profile=local                     # review.mode=ui pauses for review
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow
from pydantic import Field

from flows.config import ProjectConfig, load_config
from flows.runner import StageTimer, project_main
from tasks.lift_sys.compose_ir_dataset import ComposeConfig, compose_ir_dataset
from tasks.lift_sys.evaluate_ir import EvaluateIRConfig, evaluate_ir
from tasks.training.export_gguf import export_gguf
from tasks.lift_sys.generate_ir import GenerateIRConfig, generate_ir
from tasks.lift_sys.generate_prompts import PromptsConfig, generate_prompts
from tasks.training.install_ollama import InstallConfig, install_ollama
from tasks.lift_sys.make_negatives import NegativesConfig, make_negatives
from tasks.lift_sys.review_ir import ReviewConfig
from tasks.lift_sys.review_ui import run_review
from tasks.training.train_sft import train_sft

PROJECT = "lift-sys"


class LiftSysConfig(ProjectConfig):
    """configs/lift_sys.yaml"""

    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="Templated prompts + paraphrases")
    generate_ir: GenerateIRConfig = Field(default_factory=GenerateIRConfig, description="Teacher IRs, best of N")
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Pre-checks and human review")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig, description="Named bad variants with corrections")
    compose: ComposeConfig = Field(default_factory=ComposeConfig, description="Training rows, chat records, 80/10/10 split")
    evaluate: EvaluateIRConfig = Field(default_factory=EvaluateIRConfig, description="IR quality: base vs trained")
    install: InstallConfig = Field(default_factory=lambda: InstallConfig(model_name="lift-sys"), description="Ollama install")


@flow(name=PROJECT)
def lift_sys(config: str | None = None, profile: str = "local", data_dir: str | None = None,
             overrides: list[str] | None = None) -> dict:
    """Run every lift-sys stage; unchanged stages are cache hits and reviewed decisions are reused."""
    cfg = load_config(LiftSysConfig, PROJECT, config=config, profile=profile, overrides=overrides,
                      extra={"data_dir": data_dir} if data_dir else None)
    cfg.evaluate = cfg.evaluate.model_copy(update={"system_prompt": cfg.compose.system_prompt})
    root = cfg.project_root(PROJECT)
    run = StageTimer(cfg.runner)
    composed = data_stages(cfg, root, run)
    tuned = run("sft", train_sft, cfg.sft, composed, root / "sft")
    exported = run("export", export_gguf, cfg.export, [tuned, composed / "val.jsonl"], root / "export")
    installed = run("install", install_ollama, cfg.install, exported, root / "install")
    gguf = run.manifests["export"].get("gguf", {})
    models = {**({"base": exported / gguf["base"]} if "base" in gguf else {}), "trained": exported / gguf["f16"]}
    run("evaluate", evaluate_ir, cfg.evaluate, {"prompts": composed / "rows_test.jsonl", **models}, root / "evaluate")
    m = run.manifests
    return run.write_summary(
        root / "summary.json", PROJECT, cfg.profile,
        counts={k: run.stages[k]["counts"] for k in ("prompts", "generate_ir", "review", "negatives", "compose")},
        teacher=m["generate_ir"].get("teacher"), teacher_usage=m["generate_ir"].get("usage"),
        schema_validity_of_teacher=m["generate_ir"]["metrics"].get("schema_validity_rate"),
        eval_loss_before=m["sft"]["metrics"].get("eval_loss_before"), eval_loss_after=m["sft"]["metrics"].get("eval_loss_after"),
        parity_rate=m["export"]["metrics"].get("parity_rate"),
        ir_quality=m["evaluate"].get("results"),
        gguf={k: str(exported / v) for k, v in gguf.items()},
        installed=bool(m["install"].get("installed")), ollama_model=cfg.install.model_name,
        install_command=m["install"].get("command"), install_dir=str(installed),
        dataset=str(composed),
    )


def data_stages(cfg: LiftSysConfig, root: Path, run: StageTimer) -> Path:
    """prompts → teacher IRs → review → negatives → compose: the training data (train/val/test splits)."""
    prompts = run("prompts", generate_prompts, cfg.prompts, None, root / "prompts")
    irs = run("generate_ir", generate_ir, cfg.generate_ir, prompts, root / "generate_ir")
    reviewed = run("review", run_review, cfg.review, irs, root / "review")
    negatives = run("negatives", make_negatives, cfg.negatives, reviewed / "accepted.jsonl", root / "negatives")
    return run("compose", compose_ir_dataset, cfg.compose, [reviewed, negatives], root / "compose")


def main(argv: list[str] | None = None) -> int:
    return project_main(lift_sys, PROJECT, LiftSysConfig, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
