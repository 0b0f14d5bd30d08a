"""quantum-mind: The Well trajectories → physics features → Qiskit circuits verified by execution →
mixed with QuantumLLMInstruct → (Q)LoRA → GGUF → Ollama. Deployed as ``quantum-mind-v2``. Then the validation
suite: base vs code-only (the same circuits without their physics text) vs physics on held-out prompts, a share of
them about a PDE family never trained on; the table ends the run's output and ``summary.json`` (``validation``).

    python -m flows.quantum_mind --profile local                     # embedded Well datasets, SmolLM2-135M, no network
    python -m flows.quantum_mind --profile gpu --set instruct.path=~/data/QuantumLLMInstruct.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from prefect import flow
from pydantic import Field, model_validator

from flows.config import ProjectConfig, load_config
from flows.runner import StageTimer, project_main
from tasks.common.reporting import publish_markdown, say
from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode_trajectories
from tasks.quantum_mind.evaluate_quantum import EvaluateConfig, evaluate_quantum, validation_markdown
from tasks.training.export_gguf import export_gguf
from tasks.quantum_mind.generate_physics_examples import GenerateConfig, generate_physics_examples
from tasks.training.install_ollama import InstallConfig, install_ollama
from tasks.quantum_mind.load_instruct import InstructConfig, load_quantum_instruct
from tasks.training.mix_datasets import MixSource, available_sources, mix_datasets
from tasks.quantum_mind.select_verified import SelectConfig, select_verified
from tasks.training.train_sft import train_sft
from tasks.quantum_mind.verify_circuits import VerifyConfig, verify_circuits

PROJECT = "quantum-mind"


class QuantumMindConfig(ProjectConfig):
    """configs/quantum_mind.yaml"""

    run_name: str = Field("quantum-mind-v2", description="SFT run dir name under models/checkpoints/")
    encode: EncodeConfig = Field(default_factory=EncodeConfig, description="The Well trajectories → physics features")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Features → circuit examples")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Sandboxed circuit checks")
    select: SelectConfig = Field(default_factory=SelectConfig, description="Which verified examples to keep")
    instruct: InstructConfig = Field(default_factory=InstructConfig, description="QuantumLLMInstruct source")
    install: InstallConfig = Field(default_factory=lambda: InstallConfig(model_name="quantum-mind-v2"), description="Ollama install")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Validation suite: base vs code-only vs physics")
    code_only: bool = Field(True, description="Also train a code-only model for the validation suite, same recipe: on "
                                              "QuantumLLMInstruct alone when given, else on the verified circuits without "
                                              "their physics text (the request and the code only)")
    twins_replace_instruct: bool = Field(True, description="Without QuantumLLMInstruct records, the code-only twins take "
                                         "its place (and weight) in the physics model's mix, so the physics model trains on "
                                         "the code-only model's data plus the physics, as with QuantumLLMInstruct")
    run_evaluate: bool = Field(True, description="Run the validation suite at the end")

    @model_validator(mode="after")
    def _one_holdout_list(self):
        """The validation asks about the datasets generate holds out: one list, set under generate."""
        asked, held = self.evaluate.holdout_datasets, self.generate.holdout_datasets
        if "holdout_datasets" in self.evaluate.model_fields_set and asked != held:
            raise ValueError(f"evaluate.holdout_datasets {asked} differs from generate.holdout_datasets {held}: set "
                             "generate.holdout_datasets only (the validation asks about the datasets kept out of training)")
        self.evaluate = self.evaluate.model_copy(update={"holdout_datasets": list(held)})
        return self


@flow(name=PROJECT)
def quantum_mind(config: str | None = None, profile: str = "local", data_dir: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Run every quantum-mind stage; unchanged stages are cache hits."""
    cfg = load_config(QuantumMindConfig, PROJECT, config=config, profile=profile, overrides=overrides,
                      extra={"data_dir": data_dir} if data_dir else None)
    root = cfg.project_root(PROJECT)
    run = StageTimer(cfg.runner)
    data = data_stages(cfg, root, run)
    mixed, encoded, instruct = data.mix, data.encode, data.instruct
    dropped = _mix_sources(cfg, instruct, data.select)[2]
    tuned = run("sft", train_sft, cfg.sft, mixed, root / "models" / "checkpoints" / cfg.run_name)
    exported = run("export", export_gguf, cfg.export, [tuned, mixed / "val.jsonl"], root / "export")
    installed = run("install", install_ollama, cfg.install, exported, root / "install")
    gguf = run.manifests["export"].get("gguf", {})
    models = {"base": exported / gguf["base"]} if "base" in gguf else {}
    if cfg.run_evaluate and not models:
        say("[quantum-mind] validation: export.export_adapter is off, so there is no base GGUF to compare against")
    code_only = _code_only_model(cfg, run, root, data, dropped) if cfg.run_evaluate and cfg.code_only else None
    if code_only:
        models["code_only"] = Path(code_only["gguf"])
    if cfg.run_evaluate:
        models["physics"] = exported / gguf["f16"]
        run("evaluate", evaluate_quantum, cfg.evaluate, {"features": encoded / "features.jsonl", **models}, root / "evaluate")
    m = run.manifests
    evaluation = m["evaluate"].get("results") if "evaluate" in m else None
    table = _validation_table(cfg, evaluation) if evaluation else None
    if table:
        publish_markdown(f"{PROJECT}-validation", table, "Validation suite: each model on the held-out prompts")
    return run.write_summary(
        root / "summary.json", PROJECT, cfg.profile,
        counts={k: run.stages[k]["counts"] for k in ("encode", "generate", "verify", "select", "instruct", "mix")},
        encoder_accuracy=m["encode"]["metrics"].get("truth_accuracy"),
        verification={"pass_rate": m["verify"]["metrics"].get("pass_rate"),
                      "rejects_by_outcome": {k: v for k, v in m["select"]["counts"].items() if k.startswith("dropped_")}},
        mix={"sources": m["mix"].get("sources"), "dropped_sources": dropped},
        eval_loss_before=m["sft"]["metrics"].get("eval_loss_before"), eval_loss_after=m["sft"]["metrics"].get("eval_loss_after"),
        parity_rate=m["export"]["metrics"].get("parity_rate"),
        gguf={k: str(exported / v) for k, v in gguf.items()},
        installed=bool(m["install"].get("installed")), ollama_model=cfg.install.model_name,
        install_command=m["install"].get("command"), install_dir=str(installed),
        physics_augmented=str(data.select / "physics_augmented"),
        validation=evaluation, validation_table=table,
        validation_log=str(root / "evaluate" / "validation_log.yaml") if evaluation else None,
        code_only_model=code_only,
    )


class PhysicsData(NamedTuple):
    """The data stages' outputs the rest of the flow reads."""

    encode: Path
    select: Path
    instruct: Path
    mix: Path


def data_stages(cfg: QuantumMindConfig, root: Path, run: StageTimer) -> PhysicsData:
    """encode → generate → verify → select, + QuantumLLMInstruct → mix: the training data (``.mix``)."""
    encoded = run("encode", encode_trajectories, cfg.encode, None, root / "encode")
    generated = run("generate", generate_physics_examples, cfg.generate, encoded, root / "generate")
    verified = run("verify", verify_circuits, cfg.verify, generated / "code.jsonl", root / "verify")
    selected = run("select", select_verified, cfg.select, [generated, verified], root / "select")
    instruct = run("instruct", load_quantum_instruct, cfg.instruct, None, root / "instruct")
    mix_cfg, mix_files, dropped = _mix_sources(cfg, instruct, selected)
    if dropped:
        twins = " (the code-only twins take QuantumLLMInstruct's share)" if "code_only" in {x.name for x in mix_cfg.sources} else ""
        say(f"[quantum-mind] no records for {dropped}: mixing the remaining sources with renormalised weights{twins}")
    return PhysicsData(encoded, selected, instruct, run("mix", mix_datasets, mix_cfg, mix_files, root / "mix"))


def _mix_sources(cfg: QuantumMindConfig, instruct: Path, selected: Path):
    """(mix config, files, dropped source names): sources without records are left out, weights renormalised.

    Where QuantumLLMInstruct is dropped, the code-only twins fill its share (``twins_replace_instruct``): the seed's
    comparison is code data alone against code data plus physics, and the twins are the code data every machine has.
    """
    files = {"quantum_llm_instruct": instruct / "instruct.jsonl", "physics_augmented": selected / "physics.jsonl",
             "physics_reasoning": selected / "reasoning.jsonl", "code_only": selected / "code_only.jsonl"}
    mix_cfg, paths, dropped = available_sources(cfg.mix, files)
    if "quantum_llm_instruct" in dropped and cfg.twins_replace_instruct:
        weight = next(s.weight for s in cfg.mix.sources if s.name == "quantum_llm_instruct")
        twins = mix_cfg.model_copy(update={"sources": [MixSource(name="code_only", weight=weight), *mix_cfg.sources]})
        mix_cfg, paths, _ = available_sources(twins, files)
    return mix_cfg, paths, dropped


def code_only_source(data: PhysicsData, dropped: list[str]) -> tuple[str, Path]:
    """(mix source name, records) of the code-only model: QuantumLLMInstruct when given, else the physics circuits' twins."""
    if "quantum_llm_instruct" in dropped:
        return "code_only", data.select / "code_only.jsonl"
    return "quantum_llm_instruct", data.instruct / "instruct.jsonl"


def _code_only_model(cfg: QuantumMindConfig, run: StageTimer, root: Path, data: PhysicsData, dropped: list[str]) -> dict:
    """The validation suite's comparison model: the same SFT recipe without the physics text."""
    source, records = code_only_source(data, dropped)
    if source == "code_only":
        say("[quantum-mind] validation: no QuantumLLMInstruct records, so the code-only model trains on the same verified "
            "circuits without their physics text (the request and the code only)")
    mix_cfg = cfg.mix.model_copy(update={"sources": [MixSource(name=source)]})
    mixed = run("mix_code_only", mix_datasets, mix_cfg, [records], root / "mix_code_only")
    tuned = run("sft_code_only", train_sft, cfg.sft, mixed, root / "models" / "checkpoints" / f"{cfg.run_name}-code-only")
    export_cfg = cfg.export.model_copy(update={"outtypes": ["f16"], "export_adapter": False})
    exported = run("export_code_only", export_gguf, export_cfg, [tuned, mixed / "val.jsonl"], root / "export_code_only")
    return {"gguf": str(exported / run.manifests["export_code_only"]["gguf"]["f16"]), "trained_on": str(records)}


def _validation_table(cfg: QuantumMindConfig, results: dict) -> str:
    """The validation results as markdown, with a line saying what the novel_* rows cover."""
    novel = any("novel_prompts" in r for r in results.values())
    return validation_markdown(results) + (f"\n\nnovel_*: only the prompts about {', '.join(cfg.generate.holdout_datasets)}, "
                                           "held out of training in every split" if novel else "")


def main(argv: list[str] | None = None) -> int:
    return project_main(quantum_mind, PROJECT, QuantumMindConfig, __doc__, argv)  # WellSourceError is a UserInputError


if __name__ == "__main__":
    sys.exit(main())
