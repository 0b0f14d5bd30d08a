"""The server way of running labtune, as a user does it: server + worker on loopback, `prefect deploy --all`,
`prefect deployment run` with --param overrides, runs Completed with their artifacts and outputs; every process stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.prefect_local import POOL, _alive, _read_pid, start_server, start_worker, stop_all
from tests.integration.conftest import created_run_id, free_port, isolated_env, prefect_cli, wait_for_final_states
from tests.ben_lab.test_flow_ben_lab import TINY as BEN_LAB_TINY
from tests.quantum_mind.test_flow_quantum_mind import TINY as QUANTUM_MIND_TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tinier still than the end-to-end tests (which check the training itself): two optimizer steps, one parity prompt
# of 8 tokens, merged f16 only (installed from f16), no validation suite. Later overrides win.
FASTER = ["sft.trainer.max_steps=2", "export.parity_prompts=1", "export.parity_tokens=8", "export.outtypes=[f16]",
          "export.export_adapter=false", "install.quant=f16"]
PLANS = {
    "ben-lab/ben-lab": BEN_LAB_TINY + FASTER + ["evaluate.enabled=false"],
    "quantum-mind/quantum-mind-v2": QUANTUM_MIND_TINY + FASTER + ["run_evaluate=false"],
}
ARTIFACTS = {
    "ben-lab/ben-lab": {"harvest", "calibrate", "calibrate-confusion", "describe", "mix", "sft", "export-summary", "install-summary", "ben-lab-summary"},
    "quantum-mind/quantum-mind-v2": {"encode", "generate", "verify", "select", "instruct", "mix", "sft",
                                     "export-summary", "install-summary", "quantum-mind-summary"},
}


@dataclass
class Stack:
    state: Path
    api_url: str
    env: dict[str, str]
    data: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, embedded_model):
    """Server (temp SQLite) + worker on a free loopback port; the embedded model is dequantised before any run,
    so the two concurrent flow runs only read the shared cache."""
    root = tmp_path_factory.mktemp("prefect-stack")
    env = isolated_env(root)
    state = root / "state"
    try:
        server = start_server(state, port=free_port(), env=env, timeout=300)
        start_worker(state, env=env, timeout=180)
        yield Stack(state=state, api_url=server.api_url, env={**env, "PREFECT_API_URL": server.api_url}, data=root / "data")
    finally:
        pids = [_read_pid(state / f) for f in ("worker.pid", "server.pid")]
        stop_all(state, grace=20)
        assert not any(p and _alive(p) for p in pids), f"processes left running: {pids}"


def test_deploy_all_then_run_ben_lab_and_quantum_mind_on_a_tiny_plan(stack, model_cache, tiny_model):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    prefect_cli(["--no-prompt", "deploy", "--all"], stack.env)
    with SyncPrefectClient(stack.api_url) as client:
        deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
        assert set(PLANS) | {"lift-sys/lift-sys"} <= set(deployments)
        for name, d in deployments.items():
            assert d.work_pool_name == POOL, name
            assert d.schedules and not any(s.active for s in d.schedules), f"{name}: example schedules must start inactive"

        run_ids = {}
        for name, overrides in PLANS.items():
            # the 2-layer model: this test is about deployments, the worker and artifacts, not what a model learns
            params = overrides + [f"sft.base_model={tiny_model}", f"sft.model_cache_dir={model_cache}"]
            out = prefect_cli(["deployment", "run", name, "--param", "profile=local",
                               "--param", f"overrides={json.dumps(params)}"], stack.env)
            run_ids[name] = created_run_id(out)
        for name, rid in run_ids.items():  # the list parameter arrived as a list, intact
            assert client.read_flow_run(rid).parameters["overrides"][-1] == f"sft.model_cache_dir={model_cache}", name

        states = wait_for_final_states(client, list(run_ids.values()), timeout=2400, log=stack.state / "worker.log")
        worker_log = (stack.state / "worker.log").read_text(errors="replace")
        assert set(states.values()) == {"COMPLETED"}, f"{states}\nworker log tail:\n{worker_log[-6000:]}"

        for name, rid in run_ids.items():
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[rid])))
            keys = {a.key for a in artifacts if a.key}
            assert ARTIFACTS[name] <= keys, f"{name}: missing artifacts {ARTIFACTS[name] - keys}"

    # the worker ran the flows from LABTUNE_HOME with its environment: outputs under the worker's data dir
    ben = json.loads((stack.data / "ben_lab" / "summary.json").read_text())
    assert ben["profile"] == "local" and ben["counts"]["harvest"]["total"] == 34
    assert ben["stages"]["sft"]["metrics"] and Path(ben["gguf"]["f16"]).exists()
    qm = json.loads((stack.data / "quantum_mind" / "summary.json").read_text())
    assert qm["verification"]["pass_rate"] == 1.0 and qm["validation"] is None
    assert Path(qm["gguf"]["f16"]).exists()
