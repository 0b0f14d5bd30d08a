"""Instruction records from real lab results: grounded in the numbers, checked, in both shapes."""

from __future__ import annotations

import json

import pytest

from adapters.lab.lab_server import reference_lab
from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate
from tasks.ben_lab.describe_experiments import DescribeConfig, describe, grounding_numbers, unsupported_numbers
from tasks.ben_lab.harvest_experiments import HarvestConfig, harvest
from tasks.common.records import RecordError, read_chat_records, read_jsonl


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    cfg = HarvestConfig(phase_runs_per_type=4, tri_runs=8, discovery_runs=2, drift_runs=8, system_sizes=[8, 12],
                        depths=[1, 2], discovery_per_phase=[5])
    with reference_lab() as url:
        return harvest(cfg.model_copy(update={"lab_url": url}), None, tmp_path_factory.mktemp("h") / "harvest")


@pytest.fixture(scope="module")
def calibrated(harvested, tmp_path_factory):
    return calibrate(CalibrateConfig(), harvested, tmp_path_factory.mktemp("c") / "calibrate")


@pytest.fixture(scope="module")
def described(harvested, calibrated, tmp_path_factory):
    return describe(DescribeConfig(), [harvested, calibrated], tmp_path_factory.mktemp("d") / "describe")


def test_every_experiment_becomes_one_record_in_both_shapes(harvested, described):
    experiments = read_jsonl(harvested / "experiments.jsonl")
    chats = [r for r in read_chat_records(described / "chat.jsonl") if r.kind != "concept"]
    legacy = [r for r in read_jsonl(described / "lab_instructions.jsonl") if r["meta"]["kind"] != "concept"]
    assert len(chats) == len(legacy) == len(experiments) == 34
    assert all(set(r) == {"instruction", "input", "output", "meta"} and r["input"] == "" for r in legacy)
    assert {r["meta"]["kind"] for r in legacy} == {"phase", "tri", "discovery", "replay_drift"}
    assert [m.role for m in chats[0].messages] == ["system", "user", "assistant"]


def test_every_quoted_number_is_in_the_experiment_result(harvested, described):
    experiments = {r["id"]: r for r in read_jsonl(harvested / "experiments.jsonl")}
    for rec in read_chat_records(described / "chat.jsonl"):
        if rec.kind == "concept":
            continue  # grounded in the harvest as a whole: tests/ben_lab/test_evaluate_lab.py
        exp = experiments[rec.meta["experiment_id"]]
        text = rec.messages[1].content + " " + rec.messages[2].content
        assert unsupported_numbers(text, grounding_numbers(exp["request"], exp["response"], rec.meta["grounding"])) == []


def test_answers_are_specific_not_boilerplate(harvested, described):
    experiments = {r["id"]: r for r in read_jsonl(harvested / "experiments.jsonl")}
    records = [r for r in read_chat_records(described / "chat.jsonl") if r.kind != "concept"]
    answers = [r.messages[2].content for r in records]
    assert len(set(answers)) >= 0.9 * len(answers), "only runs that measured the same numbers share an answer"
    for rec in records:
        if rec.kind == "phase":  # the reasons quote this run's own measurement
            s = experiments[rec.meta["experiment_id"]]["response"]["summary"]
            assert any(f"{s[k]:.3f}" in rec.messages[2].content for k in ("string_order", "correlation_length",
                                                                          "randomness_score", "entropy_proxy"))


def test_unbiased_phase_runs_are_named_after_what_the_lab_prepared(harvested, described):
    experiments = {r["id"]: r for r in read_jsonl(harvested / "experiments.jsonl")}
    for rec in read_chat_records(described / "chat.jsonl"):
        if rec.kind != "phase":
            continue
        exp = experiments[rec.meta["experiment_id"]]
        if exp["request"]["bias"] is None and not rec.meta["grounding"]["ambiguous_with"]:
            assert rec.meta["grounding"]["phase_indicated"] == exp["request"]["phase_type"]
            assert f"indicate the {exp['request']['phase_type']} phase" in rec.messages[2].content


def test_tri_answers_judge_size_against_this_labs_quartiles(described, calibrated):
    scale = json.loads((calibrated / "calibration.json").read_text())["tri"]
    for r in (r for r in read_chat_records(described / "chat.jsonl") if r.kind == "tri"):
        tri, answer = r.meta["grounding"]["tri_physics"], r.messages[2].content
        word = "large" if tri > scale["q75"] else "small" if tri < scale["q25"] else "typical"
        assert answer.startswith(f"TRI {tri:.3f} on the physics features, against this lab's quartiles "
                                 f"{scale['q25']:.3f} and {scale['q75']:.3f}"), "the number and the scale come first"
        assert f": {word} for this lab" in answer, "then the verdict"


def test_drift_answers_give_the_number_and_scale_before_the_verdict(described, calibrated):
    scale = json.loads((calibrated / "calibration.json").read_text())["final_drift"]
    verdicts = {"large": "strongly sensitive to replay depth", "typical": "moderately sensitive to replay depth",
                "small": "stable under deeper replays"}
    drift_records = [r for r in read_chat_records(described / "chat.jsonl") if r.kind == "replay_drift"]
    assert drift_records
    for r in drift_records:
        final, answer = r.meta["grounding"]["drift_physics"][-1], r.messages[2].content
        word = "large" if final > scale["q75"] else "small" if final < scale["q25"] else "typical"
        assert answer.startswith(f"Drift {final:.3f} at the deepest replay (depth ")
        assert answer.index(f"quartiles {scale['q25']:.3f} and {scale['q75']:.3f}") < answer.index(verdicts[word])


def test_tri_and_drift_questions_come_in_many_wordings_none_of_them_the_evaluations(described):
    """Three fixed templates each: the model took a held-out TRI question for a drift question."""
    from tasks.ben_lab.lab_answer_scoring import DRIFT_TEMPLATE, TRI_TEMPLATE

    for kind, held_out in (("tri", TRI_TEMPLATE), ("replay_drift", DRIFT_TEMPLATE)):
        questions = [r.messages[1].content for r in read_chat_records(described / "chat.jsonl") if r.kind == kind]
        openers = {q.split(":")[0].split(",")[0][:12] for q in questions}
        closers = {q.rsplit(". ", 1)[-1] for q in questions}
        assert len(openers) >= 3 and len(closers) >= 3, (kind, openers, closers)
        held_open, held_close = held_out.split(" {")[0], held_out.rsplit(". ", 1)[-1]
        assert not any(q.startswith(held_open) or q.endswith(held_close) for q in questions), kind


def test_users_lab_answers_judge_physics_not_timing(tmp_path):
    """On the user's lab the TRI answer states the physics distance, never the lab's timing-laden TRI as a size."""
    cfg = HarvestConfig(phase_runs_per_type=4, tri_runs=8, discovery_runs=1, drift_runs=4, system_sizes=[8, 12],
                        depths=[1, 2], discovery_per_phase=[5])
    with reference_lab(quirks=True) as url:
        harvested = harvest(cfg.model_copy(update={"lab_url": url}), None, tmp_path / "harvest")
    out = describe(DescribeConfig(), [harvested, calibrate(CalibrateConfig(), harvested, tmp_path / "cal")], tmp_path / "d")
    experiments = {r["id"]: r for r in read_jsonl(harvested / "experiments.jsonl")}
    for rec in read_chat_records(out / "chat.jsonl"):
        if rec.kind == "tri":
            exp = experiments[rec.meta["experiment_id"]]
            assert f"TRI {exp['physics']['tri']:.3f} on the physics features" in rec.messages[2].content


def test_checker_catches_an_invented_number():
    grounding = grounding_numbers({"TRI": 0.4217, "system_size": 16})
    assert unsupported_numbers("TRI = 0.422 on 16 sites", grounding) == []
    assert unsupported_numbers("TRI = 0.523 on 16 sites", grounding) == ["0.523"]


def test_a_response_missing_a_field_is_named(tmp_path, harvested, calibrated):
    rows = read_jsonl(harvested / "experiments.jsonl")
    del rows[0]["response"]["summary"]
    bad = tmp_path / "experiments.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"record 1 \(phase-ising_symmetry_breaking-000\): response lacks field 'summary'"):
        describe(DescribeConfig(), [bad, calibrated], tmp_path / "describe")
    assert not (tmp_path / "describe").exists()


def test_phase_answers_follow_the_spoken_rule_before_naming_the_phase(described, calibrated):
    """Each reading of the lab's decision list is copied from the question and called high/low, then the phase."""
    from tasks.ben_lab.describe_phases import READINGS, PhaseSignature

    signature = PhaseSignature(**json.loads((calibrated / "calibration.json").read_text())["signature"])
    phase_records = [r for r in read_chat_records(described / "chat.jsonl") if r.kind == "phase"]
    assert phase_records
    for rec in phase_records:
        answer, phase = rec.messages[2].content, rec.meta["grounding"]["phase_indicated"]
        reasoning = answer.split(", so the measurements indicate")[0]
        spoken = reasoning.split("; ")
        words = []
        for step, said in zip(signature.steps, spoken):
            name, high, low = READINGS[step.reading]
            value = float(said.lower().removeprefix(name + " ").split(" ")[0])
            words.append(high if value > step.cutoff else low)
            assert said.lower() == f"{name} {value:.3f} is {words[-1]}"
            assert f"{value:.3f}" in rec.messages[1].content, "the number is copied from the question"
        decided = signature.steps[len(spoken) - 1].phase if words[-1] in ("high", "long") else signature.otherwise
        assert words[:-1] == [READINGS[s.reading][2] for s in signature.steps[:len(spoken) - 1]], "read until one decides"
        assert decided == phase
        assert answer.index(phase) > answer.index(", so the measurements indicate"), "the phase is named after its signature"
        assert "phase_type" not in rec.messages[1].content and phase not in rec.messages[1].content, \
            "the question never gives the phase away"