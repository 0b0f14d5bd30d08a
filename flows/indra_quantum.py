"""indra-quantum: small complex-valued ("quantum projection") language models trained from scratch, with and
without distillation from a teacher, against a real transformer of the same size (3 modes × KD on/off).

    python -m flows.indra_quantum --profile local     # offline: lab chat records + teacher-written text + repo docs
    python -m flows.indra_quantum --profile gpu       # WikiText-103 + Alpaca from the hub, TinyLlama as the teacher
    python -m flows.indra_quantum --set data.sources.wikitext.path=~/wikitext-103-raw/wiki.train.raw
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.models.teacher_logits import TeacherError
from adapters.user_errors import one_line, user_error_types
from flows.config import ProjectConfig, add_common_args, load_config
from flows.runner import StageTimer, flow_params, user_errors_printed_once
from tasks.indra_quantum.evaluate_indra import EvaluateIndraConfig, ablation_markdown, evaluate_indra
from tasks.indra_quantum.indra_data import IndraDataConfig, indra_data
from tasks.indra_quantum.indra_objective import ObjectiveConfig
from tasks.indra_quantum.indra_teacher import TeacherConfig, indra_teacher
from tasks.indra_quantum.train_indra import OptimConfig, TrainIndraConfig, train_indra

PROJECT = "indra-quantum"


class AblationConfig(BaseModel):
    """The grid of training runs."""

    model_config = ConfigDict(extra="forbid")
    modes: list[Literal["fullq", "complex_embed", "real"]] = Field(["fullq", "complex_embed", "real"], min_length=1,
                                                                   description="Student modes to train")
    distill: list[bool] = Field([True, False], min_length=1, description="Train each mode with KD (true) and/or CE only (false)")
    optim_by_mode: dict[Literal["fullq", "complex_embed", "real"], dict] = Field(
        default_factory=dict, description="Per-mode overrides of train.optim (e.g. each mode's best learning rate from one "
                                          "shared pilot grid), e.g. {fullq: {lr: 3.0e-3}}")

    def optim_for(self, mode: str, base: OptimConfig) -> OptimConfig:
        """train.optim with this mode's overrides (unknown keys are errors)."""
        return OptimConfig.model_validate({**base.model_dump(), **self.optim_by_mode.get(mode, {})})


class IndraQuantumConfig(ProjectConfig):
    """configs/indra_quantum.yaml (the mix/sft/export blocks every project has are unused here)."""

    data: IndraDataConfig = Field(default_factory=IndraDataConfig, description="Corpora → token blocks")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Teacher top-k log-probabilities")
    train: TrainIndraConfig = Field(default_factory=TrainIndraConfig, description="One training run (mode and KD set per run)")
    ablation: AblationConfig = Field(default_factory=AblationConfig, description="Which runs to train")
    evaluate: EvaluateIndraConfig = Field(default_factory=EvaluateIndraConfig, description="Perplexity, samples, latency")

    @model_validator(mode="after")
    def _blocks_fit_the_model(self):
        for mode in self.ablation.optim_by_mode:  # a bad override fails here, before any work
            try:
                self.ablation.optim_for(mode, self.train.optim)
            except ValidationError as e:
                bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"ablation.optim_by_mode.{mode}: {bad} (valid keys: {', '.join(OptimConfig.model_fields)})") from None
        if "block_len" in self.data.model_fields_set and self.data.block_len != self.train.model.max_len:
            raise ValueError(f"data.block_len ({self.data.block_len}) must equal train.model.max_len "
                             f"({self.train.model.max_len}); leave data.block_len unset to follow the model")
        self.data.block_len = self.train.model.max_len
        return self


@flow(name=PROJECT)
def indra_quantum(config: str | None = None, profile: str = "local", data_dir: str | None = None,
                  overrides: list[str] | None = None) -> dict:
    """Data → teacher top-k → the ablation grid of training runs → evaluation; unchanged stages are cache hits."""
    cfg = load_config(IndraQuantumConfig, PROJECT, config=config, profile=profile, overrides=overrides,
                      extra={"data_dir": data_dir} if data_dir else None)
    root = cfg.project_root(PROJECT)
    cache = {"model_cache_dir": cfg.sft.model_cache_dir}
    teacher_cfg = cfg.teacher.model_copy(update=cache)
    run = StageTimer(cfg.runner)
    data = run("data", indra_data, cfg.data.model_copy(update=cache), None, root / "data")
    live = cfg.train.objective.teacher == "live"
    precompute = any(cfg.ablation.distill) and not live
    teacher = run("teacher", indra_teacher, teacher_cfg, data, root / "teacher") if precompute else None
    runs = {}
    for mode in cfg.ablation.modes:
        for distill in cfg.ablation.distill:
            name = f"{mode}-{'kd' if distill else 'ce'}"
            train_cfg = cfg.train.model_copy(update={
                "model": cfg.train.model.model_copy(update={"mode": mode}),
                "optim": cfg.ablation.optim_for(mode, cfg.train.optim),
                # a CE-only run does not depend on the KD settings, so changing them does not retrain it
                "objective": cfg.train.objective if distill else ObjectiveConfig(distill=False),
                "live_teacher": teacher_cfg if distill and live else None})
            inputs = {"data": data, **({"teacher": teacher} if distill and teacher else {})}
            runs[name] = run(f"train_{name}", train_indra, train_cfg, inputs, root / "train" / name)
    run("evaluate", evaluate_indra, cfg.evaluate.model_copy(update=cache),
        {"data": data, **({"teacher": teacher} if teacher else {}), **runs}, root / "evaluate")
    m = run.manifests
    used = {r["kind"] for r in m["data"]["sources"]}
    return run.write_summary(
        root / "summary.json", PROJECT, cfg.profile,
        data={"sources": m["data"]["sources"], "dropped": m["data"]["dropped"], **m["data"]["counts"],
              "offline_default": not used & {"wikitext", "alpaca"}},
        teacher={"model": m["teacher"]["teacher"], "backend": m["teacher"]["backend"], "top_k": m["teacher"]["top_k"],
                 **m["teacher"]["metrics"]} if teacher else None,
        ablation=m["evaluate"]["runs"], fairness=m["evaluate"]["fairness"], best_run=m["evaluate"]["best"],
        verdict=m["evaluate"]["verdict"], teacher_val_perplexity=m["evaluate"]["teacher_val_perplexity"],
        runs={name: str(path) for name, path in runs.items()}, evaluation=str(root / "evaluate" / "results.json"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.indra_quantum", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PROJECT)
    params = flow_params(parser.parse_args(argv))
    errors = user_error_types(TeacherError)  # IndraDataError is a UserInputError already
    try:
        load_config(IndraQuantumConfig, PROJECT, config=params["config"], profile=params["profile"], overrides=params["overrides"])
        with user_errors_printed_once(errors):
            summary = indra_quantum(**params)
    except errors as e:
        print(one_line(e), file=sys.stderr)
        return 2
    print(ablation_markdown(summary["ablation"], summary["teacher_val_perplexity"]))
    print(summary["verdict"])
    print(f"summary: {summary['summary_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
