"""Every shipped YAML validates under every profile, and config mistakes produce useful errors."""

from __future__ import annotations

import pytest

from flows.config import CONFIG_DIR, PROFILES, ConfigError, load_config


PROJECTS = ["ben-lab", "quantum-mind", "lift-sys", "indra-quantum", "tuning-agent"]


def project_models():
    from flows.ben_lab import BenLabConfig
    from flows.indra_quantum import IndraQuantumConfig
    from flows.lift_sys import LiftSysConfig
    from flows.quantum_mind import QuantumMindConfig
    from flows.tuning_agent import TuningAgentConfig

    return {"ben-lab": BenLabConfig, "quantum-mind": QuantumMindConfig, "lift-sys": LiftSysConfig,
            "indra-quantum": IndraQuantumConfig, "tuning-agent": TuningAgentConfig}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("project", PROJECTS)
def test_shipped_configs_validate(project, profile):
    cfg = load_config(project_models()[project], project, profile=profile)
    assert cfg.profile == profile


def test_every_yaml_belongs_to_a_project():
    shipped = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert shipped == {m.replace("-", "_") for m in project_models()}


def test_gpu_profile_uses_the_seed_sizes():
    from flows.ben_lab import BenLabConfig

    cfg = load_config(BenLabConfig, "ben-lab", profile="gpu")
    assert cfg.sft.base_model == "meta-llama/Llama-3.2-1B-Instruct"
    assert (cfg.sft.lora.r, cfg.sft.lora.alpha) == (16, 32)
    assert cfg.sft.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    t = cfg.sft.trainer
    assert (t["per_device_train_batch_size"], t["gradient_accumulation_steps"], t["learning_rate"], t["num_train_epochs"]) == (2, 4, 2e-4, 1)
    assert t["bf16"] is True and "max_steps" not in t


def test_local_profile_runs_the_embedded_model_on_cpu():
    from flows.ben_lab import BenLabConfig

    cfg = load_config(BenLabConfig, "ben-lab", profile="local")
    assert cfg.sft.base_model == "embedded:smollm2-135m-instruct"
    assert cfg.sft.trainer["bf16"] == "auto" and cfg.sft.dtype == "float32", "fp32 weights, bf16 autocast where the CPU has it"
    assert len(cfg.sft.lora.target_modules) == 7 and cfg.sft.trainer["num_train_epochs"] == 2


def test_set_overrides_nested_values_with_yaml_types():
    from flows.ben_lab import BenLabConfig

    cfg = load_config(BenLabConfig, "ben-lab", overrides=["sft.trainer.max_steps=7", "harvest.system_sizes=[4, 8]",
                                                            "harvest.lab_url=http://lab:8000", "sft.trainer.learning_rate=1e-3"])
    assert cfg.sft.trainer["learning_rate"] == 1e-3
    assert cfg.sft.trainer["max_steps"] == 7
    assert cfg.harvest.system_sizes == [4, 8]
    assert cfg.harvest.lab_url == "http://lab:8000"


def test_unknown_key_names_the_key_and_lists_valid_ones():
    from flows.ben_lab import BenLabConfig

    with pytest.raises(ConfigError) as e:
        load_config(BenLabConfig, "ben-lab", overrides=["sft.lora.rnak=4"])
    msg = str(e.value)
    assert "sft.lora.rnak" in msg and "alpha" in msg and "target_modules" in msg


def test_wrong_type_names_the_key_and_how_to_fix():
    from flows.ben_lab import BenLabConfig

    with pytest.raises(ConfigError) as e:
        load_config(BenLabConfig, "ben-lab", overrides=["harvest.concurrency=lots"])
    assert "harvest.concurrency" in str(e.value) and "--set harvest.concurrency=" in str(e.value)


def test_bad_override_syntax_is_explained():
    from flows.ben_lab import BenLabConfig

    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(BenLabConfig, "ben-lab", overrides=["sft.max_steps"])


def test_unknown_profile_is_rejected():
    from flows.ben_lab import BenLabConfig

    with pytest.raises(ConfigError, match="unknown profile"):
        load_config(BenLabConfig, "ben-lab", profile="tpu")


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from flows.ben_lab import main

    assert main(["--set", "sft.lora.rnak=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'sft.lora.rnak'" in err and "Traceback" not in err


def test_quantum_mind_gpu_profile_is_the_seeds_qlora():
    from flows.quantum_mind import QuantumMindConfig

    cfg = load_config(QuantumMindConfig, "quantum-mind", profile="gpu")
    assert cfg.sft.base_model == "Qwen/Qwen2.5-Coder-7B-Instruct" and cfg.sft.quantization == "4bit"
    assert (cfg.sft.lora.r, cfg.sft.lora.alpha) == (32, 64)
    t = cfg.sft.trainer
    assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == 16
    assert (t["learning_rate"], t["num_train_epochs"], t["max_length"]) == (2e-4, 3, 2048)
    assert [(s.name, s.weight) for s in cfg.mix.sources] == [
        ("quantum_llm_instruct", 0.5), ("physics_augmented", 0.3), ("physics_reasoning", 0.2)]


def test_prefect_yaml_deploys_every_project_flow():
    import importlib

    import yaml

    spec = yaml.safe_load((CONFIG_DIR.parent / "prefect.yaml").read_text())
    names = {d["name"]: d for d in spec["deployments"]}
    assert {"ben-lab", "quantum-mind-v2", "lift-sys", "indra-quantum", "tuning-agent"} <= set(names)
    for d in names.values():
        path, fn = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, fn).name == d["name"].removesuffix("-v2")  # 'prefect deployment run FLOW/DEPLOYMENT'
        assert d["work_pool"]["name"] == "labtune" and all(s["active"] is False for s in d["schedules"])


def test_lift_sys_gpu_profile_is_the_seed_recipe():
    from flows.lift_sys import LiftSysConfig

    cfg = load_config(LiftSysConfig, "lift-sys", profile="gpu")
    assert (cfg.sft.lora.r, cfg.sft.lora.alpha) == (16, 32) and len(cfg.sft.lora.target_modules) == 7
    t = cfg.sft.trainer
    assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == 16
    assert (t["learning_rate"], t["lr_scheduler_type"], t["warmup_steps"], t["num_train_epochs"]) == (2e-4, "cosine", 50, 3)
    assert (t["eval_steps"], t["save_steps"], t["load_best_model_at_end"], t["metric_for_best_model"]) == (50, 50, True, "eval_loss")
    local = load_config(LiftSysConfig, "lift-sys", profile="local")
    assert local.sft.base_model == "embedded:smollm2-135m-instruct" and local.generate_ir.teacher == "oracle"
    from trl import SFTConfig

    from tasks.training.train_sft import TRAINER_DEFAULTS

    args = SFTConfig(output_dir="unused", **{**TRAINER_DEFAULTS, **t, "bf16": False})  # bf16 needs a GPU here
    assert args.load_best_model_at_end and args.eval_strategy == args.save_strategy == "steps"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_tuning_trial_is_a_valid_trl_config(profile):
    """Each point of the shipped search space, with the trial budget in place, builds a TRL SFTConfig."""
    from trl import SFTConfig

    from flows.tuning_agent import PROJECTS as TUNED, TuningAgentConfig
    from tasks.tuning_agent.sft_trial import TrialSpec, trial_sft
    from tasks.training.train_sft import TRAINER_DEFAULTS

    cfg = load_config(TuningAgentConfig, "tuning-agent", profile=profile)
    project = load_config(TUNED[cfg.project][0], cfg.project, profile=profile, overrides=cfg.project_overrides)
    space = cfg.tune.space
    for point in space.all_points()[:: max(1, space.n_points // 12)]:
        spec = TrialSpec(sft=space.apply(project.sft, point), trial=cfg.tune.trial, values=space.values(point))
        trainer = {**TRAINER_DEFAULTS, **trial_sft(spec).trainer, "bf16": False}
        args = SFTConfig(output_dir="unused", **trainer)
        assert args.max_steps == cfg.tune.trial.steps and args.eval_steps == args.save_steps == cfg.tune.trial.eval_every
        assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    if profile == "gpu":  # the wider space is above QAOA's qubit limit: the solver order must hold a fallback
        assert space.n_variables > 16 and cfg.tune.fmqa.solvers[0] == "qaoa" and "annealing" in cfg.tune.fmqa.solvers


def test_a_trainer_key_typo_is_a_config_error_with_the_nearest_key():
    """Caught when the config loads, before any stage runs (it used to fail inside SFTConfig after the data stages)."""
    from flows.ben_lab import BenLabConfig

    with pytest.raises(ConfigError, match=r"sft.trainer.learning_rat is not a trl.SFTConfig field "
                                          r"\(did you mean sft.trainer.learning_rate\?\)"):
        load_config(BenLabConfig, "ben-lab", overrides=["sft.trainer.learning_rat=1e-3"])
    with pytest.raises(ConfigError, match=r"bf16 must be true, false or auto"):
        load_config(BenLabConfig, "ben-lab", overrides=["sft.trainer.bf16=sometimes"])


def test_bf16_auto_follows_the_hardware():
    from tasks.training.train_sft import SFTStageConfig, bf16_available, trainer_settings

    settings = trainer_settings(SFTStageConfig(trainer={"bf16": "auto"}))
    assert settings["bf16"] is bf16_available()
    if settings["bf16"] and not __import__("torch").cuda.is_available():
        assert settings["use_cpu"] is True, "transformers takes bf16 on a CPU only with use_cpu"


def test_every_local_profile_leaves_bf16_to_the_hardware(capsys):
    """bf16 forced on a CPU without bf16 instructions made the lift-sys SFT ~20x slower: the local profile never
    forces it, and forcing it there by hand is warned about."""
    from flows.ben_lab import BenLabConfig
    from flows.lift_sys import LiftSysConfig
    from flows.quantum_mind import QuantumMindConfig
    from tasks.training.train_sft import SFTStageConfig, bf16_available, has_cuda, trainer_settings

    for model, project in ((BenLabConfig, "ben-lab"), (LiftSysConfig, "lift-sys"), (QuantumMindConfig, "quantum-mind")):
        assert load_config(model, project, profile="local").sft.trainer["bf16"] in ("auto", False), project
    trainer_settings(SFTStageConfig(trainer={"bf16": True}))
    warned = "no bf16 instructions" in capsys.readouterr().out
    assert warned is (not has_cuda() and not bf16_available())
