"""Every data stage's Prefect cache key is the key its manifest records (see tests/cache_keys.py).

Each project's data stages run here on its tiny plan, with no model trained; the flow tests check the same for
every stage of every flow while they run it. A stage whose body keys on other inputs than Prefect's is caught.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from prefect import flow

from flows.config import load_config
from flows.runner import StageTimer
from tests.cache_keys import check_keys, recording_cache_keys
from tests.ben_lab.test_flow_ben_lab import TINY as BEN_LAB_TINY
from tests.lift_sys.test_flow_lift_sys import TINY as LIFT_SYS_TINY
from tests.quantum_mind.test_flow_quantum_mind import TINY as QUANTUM_MIND_TINY
from tests.quantum_mind.test_flow_quantum_mind import write_instruct


@pytest.fixture
def key_requests():
    with recording_cache_keys() as calls:
        yield calls


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


def test_a_stage_whose_body_keys_differently_from_prefect_is_caught(prefect_harness, data_dir, tmp_path, key_requests,
                                                                    monkeypatch):
    """A body that hashes other inputs than the ones Prefect was given (sft hashed the mix's files, Prefect the mix dir)."""
    import tasks.training.mix_datasets as mix_module
    from tasks.common.stage import stage_key

    def keyed_on_the_describe_dir(fn, cfg, inputs, out_dir):  # mix is given describe's chat.jsonl
        return stage_key(fn, cfg, [Path(p).parent for p in inputs], out_dir)

    monkeypatch.setattr(mix_module, "stage_key", keyed_on_the_describe_dir)
    data_stages("ben-lab", str(data_dir), [])
    with pytest.raises(AssertionError, match=r"mix \("):
        check_keys(key_requests)
