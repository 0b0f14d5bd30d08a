"""Harvest against a real reference lab: plan coverage, faults, resume, and unreachable labs."""

from __future__ import annotations

import json

import pytest

from adapters.lab.lab_client import LabUnreachableError
from adapters.lab.lab_server import reference_lab
from tasks.ben_lab.harvest_experiments import DegenerateLabError, HarvestConfig, harvest, plan_experiments
from tasks.common.records import read_jsonl
from tasks.common.stage import stage_key


def tiny_plan(**kw) -> HarvestConfig:
    base = dict(phase_runs_per_type=2, tri_runs=4, discovery_runs=1, drift_runs=4, system_sizes=[6, 8], depths=[1, 2],
                discovery_per_phase=[5], concurrency=4, timeout_s=10, retries=6)
    return HarvestConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def lab():
    with reference_lab() as url:
        yield url


def test_default_plan_is_355_experiments_with_60_runs_per_phase(tmp_path):
    """The seed planned 275 (40 runs per phase); 60 per phase gives the spoken rule's cutoffs enough examples."""
    plan = plan_experiments(HarvestConfig())
    kinds = [p.kind for p in plan]
    assert (kinds.count("phase"), kinds.count("tri"), kinds.count("discovery"), kinds.count("replay_drift")) == (240, 60, 15, 40)
    assert len({p.id for p in plan}) == 355
    phases = [p.request["phase_type"] for p in plan if p.kind == "phase"]
    assert {ph: phases.count(ph) for ph in set(phases)} == {ph: 60 for ph in set(phases)} and len(set(phases)) == 4


def test_harvest_writes_one_validated_row_per_planned_experiment(tmp_path, lab):
    cfg = tiny_plan(lab_url=lab)
    out = harvest(cfg, None, tmp_path / "harvest")
    rows = read_jsonl(out / "experiments.jsonl")
    assert [r["id"] for r in rows] == [p.id for p in plan_experiments(cfg)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"phase": 8, "tri": 4, "discovery": 1, "replay_drift": 4, "total": 17,
                                  "degenerate_responses": 0, "substituted": 0, "rejected": 0}
    phase = next(r for r in rows if r["kind"] == "phase")
    assert len(phase["response"]["feature_vector"]) == 16 and "string_order" in phase["response"]["summary"]
    assert not list(tmp_path.glob(".harvest.work-*")), "the resume log is removed once the stage is published"


def test_flaky_lab_is_harvested_once_each_with_retries(tmp_path):
    cfg = tiny_plan(timeout_s=1.0, retries=8)
    with reference_lab(fail_rate=0.3, timeout_rate=0.1, hang_seconds=3, fault_seed=7) as url:
        out = harvest(cfg.model_copy(update={"lab_url": url}), None, tmp_path / "harvest")
    rows = read_jsonl(out / "experiments.jsonl")
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(p.id for p in plan_experiments(cfg)) and len(ids) == len(set(ids))
    assert json.loads((out / "manifest.json").read_text())["metrics"]["retries"] > 0


def test_interrupted_harvest_resumes_without_repeating_work(tmp_path, lab):
    cfg = tiny_plan(lab_url=lab)
    first = harvest(cfg, None, tmp_path / "first")
    rows = read_jsonl(first / "experiments.jsonl")
    # What an interrupted run leaves: the work log with the finished half (and a torn last line).
    out_dir = tmp_path / "second"
    key = stage_key(harvest, cfg, None, out_dir)
    log = tmp_path / f".second.work-{key}.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows[:9]) + '{"id": "tri-00')
    out = harvest(cfg, None, out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_earlier_run"] == 9
    assert [r["id"] for r in read_jsonl(out / "experiments.jsonl")] == [r["id"] for r in rows]


def test_unreachable_lab_names_the_url_and_leaves_nothing(tmp_path):
    with pytest.raises(LabUnreachableError, match=r"http://127\.0\.0\.1:9"):
        harvest(tiny_plan(lab_url="http://127.0.0.1:9", retries=1), None, tmp_path / "harvest")
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_second_run_is_a_cache_hit_and_needs_no_lab(tmp_path, lab):
    cfg = tiny_plan(lab_url=lab)
    out = harvest(cfg, None, tmp_path / "harvest")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    harvest(cfg, None, tmp_path / "harvest")
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_users_lab_is_harvested_with_physics_comparisons(tmp_path):
    """The quirks mode: int top_k, fractional correlation, a timing feature; TRI and drift recomputed on 0-12."""
    with reference_lab(quirks=True) as url:
        out = harvest(tiny_plan(lab_url=url), None, tmp_path / "harvest")
    rows = read_jsonl(out / "experiments.jsonl")
    assert len(rows) == 17 and all(r["response"]["summary"]["top_k"] == 1 for r in rows if r["kind"] == "phase")
    tri = next(r for r in rows if r["kind"] == "tri")
    fwd, rev = tri["response"]["forward_features"], tri["response"]["reverse_features"]
    physics = sum((a - b) ** 2 for a, b in zip(fwd[:13], rev[:13])) ** 0.5
    everything = sum((a - b) ** 2 for a, b in zip(fwd, rev)) ** 0.5  # the lab's TRI counts wall-clock seconds too
    assert tri["response"]["TRI"] == pytest.approx(everything, abs=1e-5)
    assert tri["physics"]["tri"] == pytest.approx(physics, abs=1e-5)
    # The two differ unless forward and reverse happened to take the same time to within ~1 ms
    assert tri["physics"]["tri"] != tri["response"]["TRI"] or abs(fwd[13] - rev[13]) < 2e-3
    drift = next(r for r in rows if r["kind"] == "replay_drift")
    assert drift["physics"]["drift"][0] == 0 and all(d < r["drift"] for d, r in zip(drift["physics"]["drift"][1:],
                                                                                   drift["response"]["runs"][1:]))


def test_second_harvest_from_the_same_lab_process_reruns_zeroed_answers_with_fresh_seeds(tmp_path):
    with reference_lab(quirks=True) as url:
        harvest(tiny_plan(lab_url=url), None, tmp_path / "first")
        out = harvest(tiny_plan(lab_url=url, seed=0, concurrency=2), None, tmp_path / "second")
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    rows = read_jsonl(out / "experiments.jsonl")
    assert counts["total"] == 17 and counts["rejected"] == 0
    assert counts["degenerate_responses"] >= 16 and counts["substituted"] == 16, "all but discovery came back zeroed"
    for row in rows:
        if row["kind"] != "discovery":
            assert row["substituted_for"]["reason"].endswith("all physics features are zero")
            assert row["request"]["seed"] != row["substituted_for"]["request"]["seed"]
        vectors = [row["response"].get("feature_vector")] + [r["features"] for r in row["response"].get("runs", [])]
        assert all(any(v[:13]) for v in vectors if v), "no zeroed measurement reaches experiments.jsonl"


def test_degenerate_answers_that_stay_degenerate_are_rejected_and_counted(tmp_path):
    with reference_lab(quirks=True) as url:
        harvest(tiny_plan(lab_url=url), None, tmp_path / "first")
        with pytest.raises(DegenerateLabError, match=r"16 of 17 planned experiments .* restart the lab server"):
            harvest(tiny_plan(lab_url=url, degenerate_retries=0), None, tmp_path / "strict")
        assert not (tmp_path / "strict").exists()
        out = harvest(tiny_plan(lab_url=url, degenerate_retries=0, max_degenerate_share=1.0), None, tmp_path / "lax")
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len(rejects) == 16 and all("all physics features are zero" in r["reason"] for r in rejects)
    assert [r["kind"] for r in read_jsonl(out / "experiments.jsonl")] == ["discovery"]


def test_a_repeat_of_another_experiments_answer_is_degenerate():
    from tasks.ben_lab.lab_responses import remember, screen

    seen: dict = {}
    row = {"id": "phase-a", "kind": "phase", "endpoint": "/run_phase_experiment", "response": {"feature_vector": [0.1, 0.2, 0.3]}}
    assert screen(row, None, seen) is None
    remember(row, None, seen)
    twin = {**row, "id": "phase-b"}
    assert screen(twin, None, seen) == "feature_vector: repeats the features of phase-a (different parameters)"
    flat = {**row, "id": "phase-c", "response": {"feature_vector": [0.5, 0.5, 0.5, 7.0]}}
    assert screen(flat, [0, 1, 2], seen) == "feature_vector: all physics features equal 0.5"
