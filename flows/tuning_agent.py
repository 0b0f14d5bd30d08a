"""tuning-agent: hyperparameter search around a project's SFT (FMQA: FM surrogate → QUBO → annealing/QAOA/Azure,
or random / TPE), short trials with early stopping, a person in the loop if asked; the best trial → GGUF → Ollama.

    python -m flows.tuning_agent --profile local                                   # ben-lab data, FMQA, automated
    python -m flows.tuning_agent --set project=lift-sys --set tune.methods='[fmqa, tpe]'
    python -m flows.tuning_agent --set tune.fmqa.solvers='[qaoa, annealing]'       # QAOA on Aer when ≤ 16 variables
    prefect deployment run 'tuning-agent/tuning-agent' --param mode=guided         # pauses before each trial
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import Field

from flows import ben_lab, lift_sys, quantum_mind
from flows.config import ProjectConfig, load_config
from flows.runner import StageTimer, project_main
from tasks.common.reporting import say
from tasks.training.export_gguf import export_gguf
from tasks.tuning_agent.guide_trials import ask_in_ui
from tasks.training.install_ollama import InstallConfig, install_ollama
from tasks.tuning_agent.promote_trial import promote_trial
from tasks.tuning_agent.sft_trial import TrialSpec, read_trial, sft_trial
from tasks.tuning_agent.tune_hyperparameters import TuneConfig, tune

PROJECT = "tuning-agent"
# project → (its config model, a function running its data stages and returning the training mix)
PROJECTS = {
    "ben-lab": (ben_lab.BenLabConfig, lambda cfg, root, run: ben_lab.data_stages(cfg, root, run).mix),
    "lift-sys": (lift_sys.LiftSysConfig, lift_sys.data_stages),
    "quantum-mind": (quantum_mind.QuantumMindConfig, lambda cfg, root, run: quantum_mind.data_stages(cfg, root, run).mix),
}


class TuningAgentConfig(ProjectConfig):
    """configs/tuning_agent.yaml"""

    project: Literal["ben-lab", "lift-sys", "quantum-mind"] = Field(
        "ben-lab", description="Whose data and SFT settings the trials use (its own config, same profile)")
    project_overrides: list[str] = Field(default_factory=list, description="--set overrides for the project's config")
    baseline: bool = Field(True, description="Also run one trial with the project's own SFT settings, for tuned-vs-yours")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Search methods, space, budget, guided mode")
    install: InstallConfig = Field(default_factory=lambda: InstallConfig(model_name="labtune-tuned"), description="Ollama install")


@flow(name=PROJECT)
def tuning_agent(config: str | None = None, profile: str = "local", data_dir: str | None = None,
                 overrides: list[str] | None = None, mode: str | None = None) -> dict:
    """Search hyperparameters for the configured project, then export and install the best trial."""
    extra = {"data_dir": data_dir} if data_dir else {}
    if mode:
        extra["tune"] = {"mode": mode}
    cfg = load_config(TuningAgentConfig, PROJECT, config=config, profile=profile, overrides=overrides, extra=extra)
    project_model, data_stages = PROJECTS[cfg.project]
    pcfg = load_config(project_model, cfg.project, profile=profile, overrides=cfg.project_overrides,
                       extra={"data_dir": str(cfg.data_dir)})
    run = StageTimer(cfg.runner)
    mix = data_stages(pcfg, pcfg.project_root(cfg.project), run)
    root = cfg.project_root(PROJECT)
    sft = pcfg.sft
    baseline = None
    if cfg.baseline:
        spec = TrialSpec(sft=sft, trial=cfg.tune.trial.model_copy(update={"early_stop_margin": None}),
                         values={"setting": f"{cfg.project} config"})
        trial_dir = sft_trial(spec, mix, root / "search" / "trials" / "project-settings")
        baseline = {**read_trial(trial_dir), "trial_dir": str(trial_dir)}
    search = tune(cfg.tune, sft, mix, root / "search", ask_in_ui(cfg.tune) if cfg.tune.mode == "guided" else None)
    if search["best"] is None:
        return run.write_summary(root / "summary.json", PROJECT, cfg.profile, tuned_project=cfg.project, search=search,
                                 note="stopped before any trial ran: nothing to export")
    winner = search["best"]
    if baseline and baseline["best_eval_loss"] < winner["best_eval_loss"]:
        # No searched setting beat the project's own on the same budget: hand on the project's, never a worse model.
        winner = baseline
        say(f"[tuning-agent] no trial beat the project's settings (eval loss {baseline['best_eval_loss']:.4f} < "
            f"{search['best']['best_eval_loss']:.4f}); exporting the project's settings")
    best = run("best", promote_trial, None, Path(winner["trial_dir"]), root / "best")
    exported = run("export", export_gguf, cfg.export, [best, mix / "val.jsonl"], root / "export")
    installed = run("install", install_ollama, cfg.install, exported, root / "install")
    m = run.manifests
    return run.write_summary(
        root / "summary.json", PROJECT, cfg.profile, tuned_project=cfg.project, mode=cfg.tune.mode,
        methods={k: {f: v[f] for f in ("trials", "best_eval_loss", "best_values", "trials_to_target", "stopped_early",
                                       "edited_by_person", "train_seconds")} for k, v in search["methods"].items()},
        best_values=winner["values"], best_from="project settings" if winner is baseline else "search",
        stopped_by_person=search["stopped_by_person"],
        eval_loss_before=baseline["best_eval_loss"] if baseline else None,  # the project's own settings, same budget
        eval_loss_after=winner["best_eval_loss"], search_best_eval_loss=search["best"]["best_eval_loss"],
        median_trial_eval_loss=search["median_eval_loss"], trials_run=search["trials_run"],
        parity_rate=m["export"]["metrics"].get("parity_rate"),
        gguf={k: str(exported / v) for k, v in m["export"].get("gguf", {}).items()},
        installed=bool(m["install"].get("installed")), ollama_model=cfg.install.model_name,
        install_command=m["install"].get("command"), install_dir=str(installed),
        search=str(root / "search" / "search.json"), best_so_far_plot=str(root / "search" / "best_so_far.png"),
    )


def main(argv: list[str] | None = None) -> int:
    return project_main(tuning_agent, PROJECT, TuningAgentConfig, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
