"""The best trial becomes the project's fine-tuned model: its LoRA merged into the base, laid out as the SFT stage's.

Trials keep only their adapter (a few MB each); the winner gets ``merged/`` + ``adapter/`` and a
manifest naming its base model, so the export and install stages take it as they take an SFT output.

    python -m tasks.tuning_agent.promote_trial --trial data/tuning_agent/search/trials/<id> --out data/tuning_agent/best
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from prefect import task

from tasks.common.reporting import counts_table, publish_table
from tasks.common.stage import cached, prefect_cache_key, read_manifest, stage_key, stage_output
from tasks.common.stage_cli import run_stage_cli

STAGE = "best"


def key_of(cfg: None, inputs: Path, out_dir: Path) -> tuple[None, list[Path]]:
    """The stage key hashes the trial's adapter and scores, not its manifest."""
    return cfg, [Path(inputs) / "adapter", Path(inputs) / "trial.json"]


def promote(cfg: None, inputs: Path, out_dir: Path) -> Path:
    """Merge the trial's adapter into its base model; ``inputs`` is the trial's output dir."""
    trial_dir, out_dir = Path(inputs), Path(out_dir)
    adapter = trial_dir / "adapter"
    key = stage_key(promote, cfg, inputs, out_dir)
    if cached(out_dir, key) is not None:
        return out_dir
    manifest = read_manifest(trial_dir)
    if not manifest or not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{trial_dir}: not a finished trial (manifest.json or adapter/adapter_config.json missing)")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = manifest["base_model"]
    trial = json.loads((trial_dir / "trial.json").read_text())
    with stage_output(STAGE, out_dir, key, cfg, [adapter, trial_dir / "trial.json"]) as out:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.save_pretrained(out.tmp / "merged", safe_serialization=True)
        AutoTokenizer.from_pretrained(adapter).save_pretrained(out.tmp / "merged")
        shutil.copytree(adapter, out.tmp / "adapter")
        shutil.copy2(trial_dir / "trial.json", out.tmp / "trial.json")
        out.metrics = {k: trial[k] for k in ("best_eval_loss", "best_step", "steps_run", "stopped_early")}
        out.extra.update(base_model=base, trial_dir=str(trial_dir.resolve()), values=trial["values"])
    publish_table("tuning-best", counts_table({}, {**out.metrics, **trial["values"]}), "Tuning agent: the model handed to export")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def promote_trial(cfg: None, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: the best trial as a merged model for export."""
    return promote(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.tuning_agent.promote_trial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial", type=Path, required=True, help="a finished trial's directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(promote(None, args.trial, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
