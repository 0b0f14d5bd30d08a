"""IR evaluation: judging answers against the review rules, running generated code's tests, the stage on a real GGUF."""

from __future__ import annotations

import copy
import json
import random

import pytest

from tasks.lift_sys.lift_ir import IR, ir_json
from tasks.lift_sys.lift_templates import load_templates
from tasks.lift_sys.evaluate_ir import EvalRow, EvaluateIRConfig, evaluate, judge, read_eval_rows, run_tests, summarize
from tasks.common.records import RecordError


@pytest.fixture(scope="module")
def sign_case() -> tuple[str, dict]:
    lib = load_templates()
    slots = lib.sample_slots("cf_sign_label", random.Random(0))
    return lib.render_prompt("cf_sign_label", slots), lib.render_ir("cf_sign_label", slots)


def test_a_correct_ir_scores_on_every_metric(sign_case):
    prompt, ir = sign_case
    row = EvalRow(prompt=prompt, completion=ir_json(IR.model_validate(ir)))
    j = judge(row, f"Here is the IR:\n```json\n{json.dumps(ir)}\n```")
    assert j["schema_valid"] and j["literal_accuracy"] and j["return_coverage"] and j["assertion_completeness"]
    assert j["precheck_accept"] and j["name_match"] and j["quirk_handling"] is None  # no bool/int in this prompt


def test_wrong_answers_lose_the_metric_they_break(sign_case):
    prompt, ir = sign_case
    row = EvalRow(prompt=prompt, completion=json.dumps(ir))
    verbose = copy.deepcopy(ir)
    verbose["effects"][0]["description"] = "If the number is above zero, say that it is a positive number."
    renamed = copy.deepcopy(ir) | {"assertions": []}
    renamed["signature"] = {**ir["signature"], "name": "something_else"}
    assert judge(row, json.dumps(verbose))["literal_accuracy"] is False
    j = judge(row, json.dumps(renamed))
    assert j["schema_valid"] and not j["name_match"] and not j["assertion_completeness"]
    broken = judge(row, '{"intent": {"summary": "short"}}')
    assert not broken["schema_valid"] and "schema" in broken["error"]
    assert judge(row, "I cannot do that.")["error"].startswith("no JSON object")
    s = summarize([judge(row, json.dumps(ir)), judge(row, json.dumps(verbose)), broken])
    assert s["schema_valid"] == pytest.approx(2 / 3, abs=1e-3) and s["literal_accuracy"] == pytest.approx(1 / 3, abs=1e-3)


def test_generated_code_is_tested_in_the_sandbox():
    rows = [EvalRow(prompt="Write add(a, b).", function_name="add", tests=[[[1, 2], 3], [[2, 2], 4], [[0, 0], 1]]),
            EvalRow(prompt="Write loop(n).", function_name="loop", tests=[[[1], 1]])]
    ir = {"signature": {"name": "add"}}
    judged = {"m": [{"ir": ir, "code": "def add(a, b):\n    return a + b\n"},
                    {"ir": ir, "code": "def loop(n):\n    while True:\n        pass\n"}],
              "none": [{"ir": ir, "code": None}, {"ir": None}]}
    run_tests(EvaluateIRConfig(test_timeout_s=2), rows, judged)
    assert judged["m"][0]["tests_pass_rate"] == pytest.approx(2 / 3)  # the third expected value is wrong on purpose
    assert judged["m"][1]["tests_pass_rate"] == 0.0 and judged["m"][1]["tests_outcome"] == "timeout"
    assert judged["none"][0]["tests_pass_rate"] == 0.0 and judged["none"][1]["tests_pass_rate"] == 0.0


def test_prompt_rows_are_validated(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Write f()."}) + "\n" + json.dumps({"prompt": "", "tests": []}) + "\n")
    with pytest.raises(RecordError, match=r"p.jsonl: record 2: field 'prompt'"):
        read_eval_rows(f)
    f.write_text(json.dumps({"prompt": "x", "completion": "{}", "label": "bad"}) + "\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_eval_rows(f)


def test_stage_scores_a_real_model_and_is_cached(sign_case, tmp_path):
    from adapters.models.base_models import embedded_gguf

    prompt, ir = sign_case
    prompts = tmp_path / "rows_test.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": prompt, "completion": json.dumps(ir), "label": "good", "category": "control_flow"},
        {"prompt": "Write add(a, b) returning the sum.", "function_name": "add", "tests": [[[1, 2], 3]]}]))
    cfg = EvaluateIRConfig(max_tokens=48, codegen_max_tokens=32)
    out = evaluate(cfg, {"prompts": prompts, "base": str(embedded_gguf())}, tmp_path / "eval")
    manifest = json.loads((out / "manifest.json").read_text())
    base = manifest["results"]["base"]
    assert base["prompts"] == 2 and set(base) >= {"schema_valid", "literal_accuracy", "tests_pass_rate"}
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(a["answer"] for a in answers)
    before = (out / "manifest.json").read_text()
    evaluate(cfg, {"prompts": prompts, "base": str(embedded_gguf())}, tmp_path / "eval")
    assert (out / "manifest.json").read_text() == before


def test_schema_decoding_makes_even_the_base_model_answer_in_ir_json(sign_case, tmp_path):
    from adapters.models.base_models import embedded_gguf

    prompt, ir = sign_case
    prompts = tmp_path / "rows_test.jsonl"
    prompts.write_text(json.dumps({"prompt": prompt, "completion": json.dumps(ir), "label": "good"}) + "\n")
    answers = {}
    for mode in (False, True):
        out = evaluate(EvaluateIRConfig(max_tokens=32, schema_decoding=mode), {"prompts": prompts, "base": str(embedded_gguf())},
                       tmp_path / f"eval-{mode}")
        answers[mode] = json.loads((out / "answers.jsonl").read_text())["answer"]
    assert not answers[False].lstrip().startswith("{")  # free, the base model writes prose or code
    assert answers[True].startswith('{ "intent"')
