"""ben-lab's held-out evaluation: questions unlike training, scoring of crafted answers, the install gate."""

from __future__ import annotations

import json

import pytest

from adapters.lab.lab_server import reference_lab
from tasks.ben_lab.answer_checks import repetition_loop
from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate, load_calibration
from tasks.ben_lab.describe_experiments import DescribeConfig, describe
from tasks.ben_lab.evaluate_lab import EvaluateLabConfig, ModelNotBetterError, gate_install, held_out_questions, summarise
from tasks.ben_lab.harvest_experiments import HarvestConfig, harvest
from tasks.ben_lab.lab_answer_scoring import score_answer
from tasks.ben_lab.lab_concepts import EVAL_PROMPTS
from tasks.common.records import read_chat_records, read_jsonl
from tasks.common.stage import write_json_atomic

PLAN = dict(phase_runs_per_type=6, tri_runs=8, discovery_runs=2, drift_runs=8, system_sizes=[8, 12], depths=[1, 2],
            discovery_per_phase=[5])


@pytest.fixture(scope="module")
def lab_material(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = EvaluateLabConfig(phase_runs_per_type=2, tri_runs=2, drift_runs=2)
    with reference_lab() as url:
        train = HarvestConfig(lab_url=url, **PLAN)
        harvested = harvest(train, None, root / "harvest")
        fresh = harvest(cfg.fresh_plan(train), None, root / "fresh")
    calibrated = calibrate(CalibrateConfig(), harvested, root / "calibrate")
    described = describe(DescribeConfig(), [harvested, calibrated], root / "describe")
    items = held_out_questions(load_calibration(calibrated), read_jsonl(fresh / "experiments.jsonl"))
    return harvested, fresh, described, items


def test_fresh_experiments_were_never_harvested_for_training(lab_material):
    harvested, fresh, _, items = lab_material
    trained = {json.dumps(r["request"], sort_keys=True) for r in read_jsonl(harvested / "experiments.jsonl")}
    asked = [r["request"] for r in read_jsonl(fresh / "experiments.jsonl")]
    assert len(asked) == 12 and not any(json.dumps(r, sort_keys=True) in trained for r in asked)
    assert [i["kind"] for i in items].count("phase") == 8 and [i["kind"] for i in items].count("prompt") == 5


def test_held_out_questions_are_worded_unlike_training_and_the_five_prompts_stay_out(lab_material):
    _, _, described, items = lab_material
    training = [r.messages[1].content for r in read_chat_records(described / "chat.jsonl")]
    assert not set(i["question"] for i in items) & set(training)
    for prompt in EVAL_PROMPTS:
        assert all(prompt.lower() not in q.lower() for q in training), f"evaluation prompt in training: {prompt}"
    assert all(not q.startswith(("Readings from my", "Which phase produced this?", "My lab gave")) for q in training)


def test_concept_records_pass_the_number_check(lab_material):
    _, _, described, _ = lab_material
    concepts = [r for r in read_chat_records(described / "chat.jsonl") if r.kind == "concept"]
    manifest = json.loads((described / "manifest.json").read_text())
    assert len(concepts) >= 35 and manifest["counts"]["rejected"] == 0
    topics = " ".join(r.messages[2].content for r in concepts)
    for needle in ("time-reversal index", "Replay drift", "four phase types", "String order separates", "/discovery"):
        assert needle in topics


def test_right_phase_counts_and_wrong_phase_does_not(lab_material):
    item = next(i for i in lab_material[3] if i["kind"] == "phase" and len(i["right"]) == 1)
    right = item["right"][0]
    wrong = next(p for p in ("spt_cluster", "pseudorandom") if p != right)
    assert score_answer(item, f"This is the {right} phase.")["score"] == 1.0
    assert score_answer(item, f"This is the {wrong} phase, not {right}.")["score"] == 0.0
    assert score_answer(item, "I cannot tell.")["score"] == 0.0


def test_invented_numbers_are_counted_and_grounded_ones_are_not(lab_material):
    item = next(i for i in lab_material[3] if i["kind"] == "phase")
    quoted = item["question"].split("randomness")[1].split()[0].strip("=,;")
    scored = score_answer(item, f"Randomness {quoted} and 48 iterations point to a phase.")
    assert scored["numbers"] == 2 and scored["invented"] == ["48"]


def test_facts_of_a_verification_prompt_are_scored(lab_material):
    item = next(i for i in lab_material[3] if i["question"] == "What are the four phase types in Ben Lab?")
    full = "ising_symmetry_breaking, spt_cluster, trivial_product and pseudorandom."
    assert score_answer(item, full)["score"] == 1.0
    assert score_answer(item, "ising_symmetry_breaking and spt_cluster.")["score"] == 0.5


def test_a_looping_answer_is_flagged():
    looping = "The experiment ran for 48 iterations, with a depth of 4, and " * 4
    assert repetition_loop(looping)[0]
    assert not repetition_loop("The measurements indicate the spt_cluster phase. A string order of 0.912 shows it.")[0]
    rows = [{"kind": "phase", "score": 1.0, "numbers": 2, "ungrounded": 1, "loop": True},
            {"kind": "prompt", "score": 0.5, "numbers": 0, "ungrounded": 0, "loop": False}]
    assert summarise(rows) | {"tri_accuracy": None} == {"phase_accuracy": 1.0, "tri_accuracy": None, "drift_accuracy": None,
                                                        "prompt_facts": 0.5, "grounded_numbers": 0.5, "loops": 1, "overall": 0.75}


def _evaluated(tmp_path, base: dict, trained: dict):
    out = tmp_path / "evaluate"
    out.mkdir(parents=True)
    write_json_atomic(out / "manifest.json", {"key": "k", "table": {"base": base, "trained": trained}})
    return out


def test_install_refused_for_a_model_that_does_not_beat_its_base(tmp_path):
    same = {"phase_accuracy": 0.25, "tri_accuracy": 0.5, "drift_accuracy": 0.5, "prompt_facts": 0.3,
            "grounded_numbers": 0.6, "loops": 2, "overall": 0.3875}
    evaluated = _evaluated(tmp_path, same, {**same, "overall": 0.40})
    with pytest.raises(ModelNotBetterError, match=r"does not beat its base .* gain 0.0125 < evaluate.min_gain 0.05"):
        gate_install(EvaluateLabConfig(), evaluated)
    assert gate_install(EvaluateLabConfig(gate_install=False), evaluated)["beats_base"] is False


def test_install_allowed_for_a_better_model_that_does_not_loop_more(tmp_path):
    base = {"phase_accuracy": 0.25, "tri_accuracy": 0.5, "drift_accuracy": 0.5, "prompt_facts": 0.3,
            "grounded_numbers": 0.6, "loops": 2, "overall": 0.3875}
    better = {**base, "phase_accuracy": 0.95, "overall": 0.5625, "loops": 0}
    assert gate_install(EvaluateLabConfig(), _evaluated(tmp_path, base, better))["beats_base"] is True
    worse_loops = {**better, "loops": 5}
    with pytest.raises(ModelNotBetterError):
        gate_install(EvaluateLabConfig(), _evaluated(tmp_path / "b", base, worse_loops))
