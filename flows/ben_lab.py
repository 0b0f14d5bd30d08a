"""ben-lab: a Jarvis lab's experiments → grounded Q&A → LoRA → GGUF → Ollama.

    python -m flows.ben_lab --profile local                                # embedded defaults, no network
    python -m flows.ben_lab --lab-url http://127.0.0.1:8000 --profile gpu  # your own lab, full-size model
    python -m flows.ben_lab chat                                           # talk to the trained model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow
from pydantic import Field

from flows.config import ProjectConfig, add_common_args, load_config
from adapters.lab_client import LabUnreachableError
from flows.runner import StageTimer, flow_params, run_flow_cli
from tasks.describe_experiments import DescribeConfig, describe_experiments
from tasks.export_gguf import export_gguf
from tasks.harvest_experiments import HarvestConfig, harvest_experiments
from tasks.install_ollama import InstallConfig, install_ollama
from tasks.mix_datasets import mix_datasets
from tasks.train_sft import train_sft

PROJECT = "ben-lab"


class BenLabConfig(ProjectConfig):
    """configs/ben_lab.yaml"""

    harvest: HarvestConfig = Field(default_factory=HarvestConfig, description="Lab and experiment plan")
    describe: DescribeConfig = Field(default_factory=DescribeConfig, description="Experiments → instruction records")
    install: InstallConfig = Field(default_factory=lambda: InstallConfig(model_name="ben-lab"), description="Ollama install")


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
    mixed = data_stages(cfg, root, run)
    described = run.stages["describe"]["output"]
    tuned = run("sft", train_sft, cfg.sft, mixed, root / "sft")
    exported = run("export", export_gguf, cfg.export, [tuned, mixed / "val.jsonl"], root / "export")
    installed = run("install", install_ollama, cfg.install, exported, root / "install")
    sft, export, install = (run.manifests[k] for k in ("sft", "export", "install"))
    return run.write_summary(
        root / "summary.json", PROJECT, cfg.profile,
        counts={k: run.stages[k]["counts"] for k in ("harvest", "describe", "mix")},
        eval_loss_before=sft["metrics"].get("eval_loss_before"), eval_loss_after=sft["metrics"].get("eval_loss_after"),
        parity_rate=export["metrics"].get("parity_rate"),
        gguf={k: str(exported / v) for k, v in export.get("gguf", {}).items()},
        installed=bool(install.get("installed")), ollama_model=cfg.install.model_name,
        install_command=install.get("command"), install_dir=str(installed),
        lab_instructions=str(Path(described) / "lab_instructions.jsonl"),
    )


def data_stages(cfg: BenLabConfig, root: Path, run: StageTimer) -> Path:
    """harvest → describe → mix: the training data (also what the tuning agent trains its trials on)."""
    harvested = run("harvest", harvest_experiments, cfg.harvest, None, root / "harvest")
    described = run("describe", describe_experiments, cfg.describe, harvested, root / "describe")
    return run("mix", mix_datasets, cfg.mix, [described / "chat.jsonl"], root / "mix")


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
    return run_flow_cli(ben_lab, PROJECT, BenLabConfig, {**flow_params(args), "lab_url": args.lab_url},
                        user_errors=(LabUnreachableError,))


if __name__ == "__main__":
    sys.exit(main())
