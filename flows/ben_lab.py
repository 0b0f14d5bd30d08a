"""ben-lab: a Jarvis lab's experiments → the lab's own phase rule → grounded Q&A → LoRA → GGUF → held-out
evaluation (base vs trained) → Ollama, only for a model that beats its base.

    python -m flows.ben_lab --profile local                                # embedded defaults, no network
    python -m flows.ben_lab --lab-url http://127.0.0.1:8000 --profile gpu  # your own lab, full-size model
    python -m flows.ben_lab chat                                           # talk to the trained model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from prefect import flow
from pydantic import Field, model_validator

from flows.config import ProjectConfig, add_common_args, load_config
from flows.runner import StageTimer, flow_params, run_flow_cli
from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate_phases
from tasks.ben_lab.describe_experiments import DescribeConfig, describe_experiments
from tasks.ben_lab.evaluate_lab import EvaluateLabConfig, ModelNotBetterError, evaluate_lab, evaluation_markdown, gate_install
from tasks.training.export_gguf import export_gguf
from tasks.ben_lab.harvest_experiments import HarvestConfig, harvest_experiments
from tasks.training.install_ollama import InstallConfig, install_ollama
from tasks.training.mix_datasets import mix_datasets
from tasks.common.reporting import say
from tasks.training.train_sft import train_sft

PROJECT = "ben-lab"


class BenLabConfig(ProjectConfig):
    """configs/ben_lab.yaml"""

    harvest: HarvestConfig = Field(default_factory=HarvestConfig, description="Lab and experiment plan")
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig, description="The lab's phase rule, learnt from the harvest")
    describe: DescribeConfig = Field(default_factory=DescribeConfig, description="Experiments → instruction records")
    evaluate: EvaluateLabConfig = Field(default_factory=EvaluateLabConfig,
                                        description="Base vs trained on held-out lab questions; the install gate")
    install: InstallConfig = Field(default_factory=lambda: InstallConfig(model_name="ben-lab"), description="Ollama install")

    @model_validator(mode="after")
    def _evaluation_has_its_models(self) -> "BenLabConfig":
        if self.evaluate.enabled and not self.export.export_adapter:
            raise ValueError("evaluate compares the trained model with its base, which the export writes only with "
                             "export.export_adapter=true; set it, or evaluate.enabled=false")
        return self


@flow(name=PROJECT)
def ben_lab(config: str | None = None, profile: str = "local", data_dir: str | None = None,
            overrides: list[str] | None = None, lab_url: str | None = None) -> dict:
    """Run every ben-lab stage; unchanged stages are cache hits."""
    extra = {"harvest": {"lab_url": lab_url}} if lab_url else {}
    if data_dir:
        extra["data_dir"] = data_dir
    cfg = load_config(BenLabConfig, PROJECT, config=config, profile=profile, overrides=overrides, extra=extra)
    root = cfg.project_root(PROJECT)
    run = StageTimer(cfg.runner)
    data = data_stages(cfg, root, run)
    mixed, calibrated = data.mix, data.calibrate
    tuned = run("sft", train_sft, cfg.sft, mixed, root / "sft")
    exported = run("export", export_gguf, cfg.export, [tuned, mixed / "val.jsonl"], root / "export")
    sft, export = run.manifests["sft"], run.manifests["export"]
    report = dict(
        counts={k: run.stages[k]["counts"] for k in ("harvest", "describe", "mix")},
        calibration={"cv_accuracy": run.stages["calibrate"]["metrics"].get("cv_accuracy"),
                     "confusion": run.manifests["calibrate"].get("confusion", {})},
        eval_loss_before=sft["metrics"].get("eval_loss_before"), eval_loss_after=sft["metrics"].get("eval_loss_after"),
        parity_rate=export["metrics"].get("parity_rate"),
        gguf={k: str(exported / v) for k, v in export.get("gguf", {}).items()},
        ollama_model=cfg.install.model_name, lab_instructions=str(data.describe / "lab_instructions.jsonl"),
        evaluation=None,
    )
    if cfg.evaluate.enabled:
        fresh = run("fresh", harvest_experiments, cfg.evaluate.fresh_plan(cfg.harvest), None, root / "fresh")
        asked = cfg.evaluate.model_copy(update={"system_prompt": cfg.evaluate.system_prompt or cfg.install.system})
        scored = asked.model_copy(update={"min_gain": 0.0, "gate_install": True})  # the gate's settings never re-score
        evaluated = run("evaluate", evaluate_lab, scored, [exported, calibrated, fresh], root / "evaluate")
        report["evaluation_table"] = evaluation_markdown(run.manifests["evaluate"]["table"])
        try:
            report["evaluation"] = gate_install(asked, evaluated)
        except ModelNotBetterError:
            report["evaluation"] = {"beats_base": False, **run.manifests["evaluate"]["table"]}
            run.write_summary(root / "summary.json", PROJECT, cfg.profile, installed=False, **report)
            raise
    else:
        say("[ben-lab] evaluate.enabled=false: no held-out evaluation; the model is installed unchecked")
    installed = run("install", install_ollama, cfg.install, exported, root / "install")
    install = run.manifests["install"]
    return run.write_summary(root / "summary.json", PROJECT, cfg.profile, **report,
                             installed=bool(install.get("installed")), install_command=install.get("command"),
                             install_dir=str(installed))


class LabData(NamedTuple):
    """The data stages' outputs the rest of the flow reads."""

    harvest: Path
    calibrate: Path
    describe: Path
    mix: Path


def data_stages(cfg: BenLabConfig, root: Path, run: StageTimer) -> LabData:
    """harvest → calibrate → describe → mix: the training data (``.mix``: what the tuning agent trains its trials on)."""
    harvested = run("harvest", harvest_experiments, cfg.harvest, None, root / "harvest")
    calibrated = run("calibrate", calibrate_phases, cfg.calibrate, harvested, root / "calibrate")
    described = run("describe", describe_experiments, cfg.describe, [harvested, calibrated], root / "describe")
    return LabData(harvested, calibrated, described, run("mix", mix_datasets, cfg.mix, [described / "chat.jsonl"], root / "mix"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ben_lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["run", "chat"], default="run",
                        help="run the pipeline (default) or chat with the trained model")
    add_common_args(parser, PROJECT)
    parser.add_argument("--lab-url", help="your Jarvis lab's base URL (default: start the reference lab on loopback)")
    args = parser.parse_args(argv)
    if args.command == "chat":
        from flows.lab_chat import chat

        return chat(PROJECT, BenLabConfig, args)
    return run_flow_cli(ben_lab, PROJECT, BenLabConfig, {**flow_params(args), "lab_url": args.lab_url})


if __name__ == "__main__":
    sys.exit(main())
