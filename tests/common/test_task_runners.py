"""Scale-out of the data stages: encode (one shard per Well file) and verify (blocks of code items) give the
same outputs on the default runner and as Prefect tasks on a local Dask cluster (2 worker processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import ConfigError, RunnerConfig, load_config
from flows.quantum_mind import QuantumMindConfig
from flows.runner import StageTimer
from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode_trajectories
from tasks.quantum_mind.verify_circuits import VerifyConfig, verify_circuits
from tests.quantum_mind.test_verify_circuits import exchange, givens, ising

SHARD_ITEMS = 4
TIMING = {"generate_seconds", "encode_seconds", "seconds_per_trajectory", "mean_check_ms"}


@flow(name="scale-out-check")
def data_stages(well: str, code: str, root: str, kind: str) -> dict:
    """The two sharded quantum-mind stages, wired the way the project flow wires them."""
    run = StageTimer(RunnerConfig(kind=kind, n_workers=2))
    run("encode", encode_trajectories, EncodeConfig(source=well), None, Path(root) / "encode")
    verify_cfg = VerifyConfig(workers=1, shard_items=SHARD_ITEMS, bp_samples=4, bp_params=2, max_reject_rate=1.0)
    run("verify", verify_circuits, verify_cfg, Path(code), Path(root) / "verify")
    return run.write_summary(Path(root) / "summary.json", "scale-out-check", "local")


def write_code_items(path: Path) -> Path:
    """Eleven code blocks, passing and failing ones (broken symmetry, wrong particle count, syntax error)."""
    blocks = [(givens(4, 2, [0, 2]), 4, "u1", 2), (givens(5, 3, [1]), 5, "u1", 1), (exchange(4), 4, "u1", 2),
              (ising(4), 4, "z2", None), (ising(5), 5, "z2", None), (ising(4, field="rx"), 4, "z2", None),
              (givens(4, 2, [0, 1]), 4, "u1", 1), (givens(6, 2, [0, 2, 4]), 6, "u1", 3), (exchange(5), 5, "u1", 3),
              ("reference = QuantumCircuit(\n", 4, "none", None), (ising(6), 6, "z2", None)]
    path.write_text("".join(json.dumps({"id": f"item-{i:02d}", "code": code, "claims": {
        "n_qubits": n, "symmetry": symmetry, "particles": particles, "family": "test"}}) + "\n"
        for i, (code, n, symmetry, particles) in enumerate(blocks)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness) -> dict:
    """Both runners over the same inputs: {kind: (output root, flow run id, seconds)}."""
    from adapters.well.well_solvers import generate_default

    base = tmp_path_factory.mktemp("scale-out")
    well = generate_default(base / "well", seed=0)
    code = write_code_items(base / "code.jsonl")
    out = {}
    for kind in ("default", "dask"):
        started = time.time()
        state = data_stages(str(well), str(code), str(base / kind), kind, return_state=True)
        out[kind] = (base / kind, state.state_details.flow_run_id, round(time.time() - started, 1))
        assert state.is_completed(), state.message
    return out


def manifest(root: Path, stage: str) -> dict:
    return json.loads((root / stage / "manifest.json").read_text())


def task_run_names(flow_run_id) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r.name.rsplit("-", 1)[0] for r in runs]


@pytest.mark.slow  # ~50 s: a local Dask cluster per sharded stage, sandboxes in its workers
def test_encode_writes_the_same_bytes_on_both_runners(runs):
    (default, _, _), (dask, _, _) = runs["default"], runs["dask"]
    for name in ("features.jsonl", "rejects.jsonl"):
        assert (dask / "encode" / name).read_bytes() == (default / "encode" / name).read_bytes(), name
    a, b = manifest(default, "encode"), manifest(dask, "encode")
    assert a["counts"] == b["counts"] and a["counts"]["trajectories"] == 34
    assert {k: v for k, v in a["metrics"].items() if k not in TIMING} == {k: v for k, v in b["metrics"].items() if k not in TIMING}
    for key in ("key", "files", "per_dataset", "truth_mismatches", "feature_layout", "source"):
        assert a[key] == b[key], key


@pytest.mark.slow  # ~50 s: a local Dask cluster per sharded stage, sandboxes in its workers
def test_verify_reaches_the_same_verdicts_on_both_runners(runs):
    (default, _, _), (dask, _, _) = runs["default"], runs["dask"]
    for name in ("passed.jsonl", "rejects.jsonl"):
        assert (dask / "verify" / name).read_bytes() == (default / "verify" / name).read_bytes(), name

    def rows(root):  # each row's wall time is a measurement, everything else a verdict
        return [{k: v for k, v in json.loads(line).items() if k != "wall_ms"}
                for line in (root / "verify" / "results.jsonl").read_text().splitlines()]

    assert rows(dask) == rows(default)
    a, b = manifest(default, "verify"), manifest(dask, "verify")
    assert a["counts"] == b["counts"] and 0 < a["counts"]["passed"] < a["counts"]["items"] == 11
    assert {k: v for k, v in a["metrics"].items() if k not in TIMING} == {k: v for k, v in b["metrics"].items() if k not in TIMING}
    assert a["sandbox_isolation"] == b["sandbox_isolation"]


@pytest.mark.slow  # ~50 s: a local Dask cluster per sharded stage, sandboxes in its workers
def test_dask_runs_every_shard_as_a_prefect_task_and_the_default_runner_none(runs):
    dask_tasks = task_run_names(runs["dask"][1])
    files = manifest(runs["dask"][0], "encode")["counts"]["files"]
    assert files > 1 and dask_tasks.count("encode-file") == files  # one shard per Well file
    assert dask_tasks.count("verify-shard") == -(-11 // SHARD_ITEMS)
    default_tasks = task_run_names(runs["default"][1])
    assert "encode-file" not in default_tasks and "verify-shard" not in default_tasks
    assert {"encode", "verify"} <= set(default_tasks)
    summaries = {kind: json.loads((root / "summary.json").read_text()) for kind, (root, _, _) in runs.items()}
    assert summaries["dask"]["runner"] == "dask" and summaries["default"]["runner"] == "default"
    print({kind: seconds for kind, (_, _, seconds) in runs.items()})


@task(cache_policy=NO_CACHE, persist_result=False)
def _slow_first(i: int, n: int) -> int:
    time.sleep(0.05 * (n - i))  # the first shard finishes last
    return i


def test_map_shards_returns_results_in_shard_order(prefect_harness):
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks.common.shards import map_shards, sharding_on

    @flow
    def fan_out() -> list[int]:
        with ThreadPoolTaskRunner(max_workers=4) as runner, sharding_on(runner):
            return map_shards(_slow_first, [{"i": i, "n": 6} for i in range(6)], "order check")

    assert fan_out() == list(range(6))


def test_dask_without_prefect_dask_is_a_config_error_naming_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prefect_dask" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install prefect-dask==0\.3\.7"):
        load_config(QuantumMindConfig, "quantum-mind", overrides=["runner.kind=dask"])


def test_a_cluster_address_needs_the_dask_runner():
    with pytest.raises(ConfigError, match="only used with runner.kind=dask"):
        load_config(QuantumMindConfig, "quantum-mind", overrides=["runner.address=tcp://10.0.0.5:8786"])
    cfg = load_config(QuantumMindConfig, "quantum-mind", overrides=["runner.kind=dask", "runner.address=tcp://10.0.0.5:8786"])
    assert cfg.runner.address == "tcp://10.0.0.5:8786"
