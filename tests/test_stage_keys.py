"""Every stage's Prefect cache key is the key its manifest records, for the parameters its flow passed.

The stage body skips work whose manifest carries its key; Prefect skips a task whose cache key it has
seen. Were the two keys different, Prefect would never hit and only the body's own check would save the
work (as it was for sft and describe). Each flow runs here on a tiny plan while the cache-key requests
Prefect makes are recorded; afterwards the key Prefect computes from each stage's last parameters must be
the key in that stage's manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.cache_policies import CacheKeyFnPolicy

from flows.config import load_config
from flows.runner import StageTimer
from tasks.stage import prefect_cache_key, read_manifest
from tests.conftest import write_chat_records
from tests.test_flow_ben_lab import TINY as BEN_LAB_TINY
from tests.test_flow_indra_quantum import TINY as INDRA_TINY
from tests.test_flow_lift_sys import TINY as LIFT_SYS_TINY
from tests.test_flow_quantum_mind import TINY as QUANTUM_MIND_TINY
from tests.test_flow_quantum_mind import write_instruct


@pytest.fixture
def key_requests(monkeypatch) -> list[tuple]:
    """(task, parameters) of every cache key Prefect asks a stage for, in order."""
    calls: list[tuple] = []
    compute_key = CacheKeyFnPolicy.compute_key

    def recorded(self, task_ctx, inputs, flow_parameters, **kwargs):
        calls.append((task_ctx.task, dict(inputs)))
        return compute_key(self, task_ctx, inputs, flow_parameters, **kwargs)

    monkeypatch.setattr(CacheKeyFnPolicy, "compute_key", recorded)
    return calls


def check_keys(calls: list[tuple]) -> set[str]:
    """Assert that each stage output's Prefect key is its manifest key; returns the stages checked."""
    last = {Path(params["out_dir"]).resolve(): (task, params) for task, params in calls}  # a re-run's parameters win
    wrong, checked = [], set()
    for out_dir, (task, params) in last.items():
        manifest = read_manifest(out_dir)
        assert manifest, f"{task.name}: no finished output in {out_dir}"
        want = f"{manifest['key']}-{hashlib.sha256(str(out_dir).encode()).hexdigest()[:12]}"
        context = SimpleNamespace(task=task)
        got = task.cache_policy.compute_key(context, params, {})
        if task.name == "install" and not manifest.get("installed"):
            # install never lets Prefect reuse an output whose model was not installed; the key it keeps is the shared one
            got, want = (got, prefect_cache_key(context, params)), (None, want)
        if got != want:
            wrong.append(f"{task.name} ({out_dir}): Prefect's key {got}, the manifest's {want}")
        checked.add(task.name)
    assert not wrong, "Prefect's cache key is not the stage's manifest key:\n" + "\n".join(wrong)
    return checked


# ---- the data stages of each flow (fast: no model is trained) ---------------------------------------------------

DATA_STAGES = {
    "ben-lab": ("flows.ben_lab", "BenLabConfig", BEN_LAB_TINY, {"harvest", "calibrate", "describe", "mix"}),
    "lift-sys": ("flows.lift_sys", "LiftSysConfig", LIFT_SYS_TINY, {"prompts", "generate_ir", "review", "negatives", "compose"}),
    "quantum-mind": ("flows.quantum_mind", "QuantumMindConfig", QUANTUM_MIND_TINY,
                     {"encode", "generate", "verify", "select", "instruct", "mix"}),
}


@flow(name="data-stages")
def data_stages(project: str, data_dir: str, overrides: list[str]) -> None:
    """A project's data stages on its tiny plan, as its flow runs them."""
    module_name, config_name, tiny, _ = DATA_STAGES[project]
    module = importlib.import_module(module_name)
    cfg = load_config(getattr(module, config_name), project, overrides=tiny + overrides, extra={"data_dir": data_dir})
    module.data_stages(cfg, cfg.project_root(project), StageTimer(cfg.runner))


@pytest.mark.parametrize("project", DATA_STAGES)
def test_data_stages_prefect_keys_are_their_manifest_keys(project, prefect_harness, data_dir, tmp_path, key_requests):
    # quantum-mind's instruct stage keys on the file its config names
    overrides = [f"instruct.path={write_instruct(tmp_path / 'instruct.jsonl')}"] if project == "quantum-mind" else []
    data_stages(project, str(data_dir), overrides)
    assert check_keys(key_requests) == DATA_STAGES[project][3]


# ---- every stage of every flow (slow: each flow trains, exports and evaluates the 2-layer tiny model) ----------

FLOW_STAGES = {
    "ben-lab": {"harvest", "calibrate", "describe", "mix", "sft", "export", "evaluate", "install"},
    "lift-sys": {"prompts", "generate_ir", "review", "negatives", "compose", "sft", "export", "install", "evaluate_ir"},
    "quantum-mind": {"encode", "generate", "verify", "select", "instruct", "mix", "sft", "export", "install", "evaluate"},
    "indra-quantum": {"indra_data", "indra_teacher", "train_indra", "evaluate_indra"},
    "tuning-agent": {"harvest", "calibrate", "describe", "mix", "trial", "best", "export", "install"},
}


@pytest.mark.slow
@pytest.mark.parametrize("project", FLOW_STAGES)
def test_every_stage_prefect_key_is_its_manifest_key(project, prefect_harness, data_dir, tmp_path, tiny_model,
                                                     model_cache, key_requests, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens: install writes its Modelfile only
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    base = [f"sft.base_model={tiny_model}", f"sft.model_cache_dir={model_cache}"]
    if project == "ben-lab":
        from flows.ben_lab import ben_lab

        ben_lab(data_dir=str(data_dir), overrides=BEN_LAB_TINY + base)
    elif project == "lift-sys":
        from flows.lift_sys import lift_sys

        lift_sys(data_dir=str(data_dir), overrides=LIFT_SYS_TINY + base)
    elif project == "quantum-mind":
        from flows.quantum_mind import quantum_mind

        instruct = write_instruct(tmp_path / "instruct.jsonl")
        quantum_mind(data_dir=str(data_dir), overrides=QUANTUM_MIND_TINY + base + [f"instruct.path={instruct}"])
    elif project == "indra-quantum":
        from flows.indra_quantum import indra_quantum

        write_chat_records(data_dir / "ben_lab" / "mix" / "train.jsonl", 40)  # as if ben-lab had run
        indra_quantum(data_dir=str(data_dir), overrides=INDRA_TINY + [f"sft.model_cache_dir={model_cache}",
                                                                      "ablation.modes=[real]"])
    else:
        from flows.tuning_agent import tuning_agent

        ben_lab_data = [o for o in BEN_LAB_TINY if o.split(".")[0] in ("harvest", "mix")]
        tuning_agent(data_dir=str(data_dir), overrides=[
            f"project_overrides={json.dumps(ben_lab_data + base)}", "tune.methods=[random]", "tune.trials=2",
            "tune.trial.steps=2", "tune.trial.eval_every=1", "tune.trial.max_eval_records=6", "export.parity_prompts=2",
            "export.outtypes=[f16]", "install.quant=f16", "install.retries=0"])
    assert check_keys(key_requests) == FLOW_STAGES[project]


def test_a_stage_whose_body_keys_differently_from_prefect_is_caught(prefect_harness, data_dir, tmp_path, key_requests,
                                                                    monkeypatch):
    """A body that hashes other inputs than the ones Prefect was given (sft hashed the mix's files, Prefect the mix dir)."""
    import tasks.mix_datasets as mix_module
    from tasks.stage import stage_key

    def keyed_on_the_describe_dir(fn, cfg, inputs, out_dir):  # mix is given describe's chat.jsonl
        return stage_key(fn, cfg, [Path(p).parent for p in inputs], out_dir)

    monkeypatch.setattr(mix_module, "stage_key", keyed_on_the_describe_dir)
    data_stages("ben-lab", str(data_dir), [])
    with pytest.raises(AssertionError, match=r"mix \("):
        check_keys(key_requests)
