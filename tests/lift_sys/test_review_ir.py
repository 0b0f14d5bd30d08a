"""Reviewing IRs: pre-check routing, decisions from a file or the Prefect UI, persisted and reused."""

from __future__ import annotations

import contextvars
import copy
import json
import threading

import pytest
from prefect import flow

from tasks.common.records import RecordError, read_jsonl
from tasks.lift_sys.review_decisions import StoredDecision, append_decisions, ir_sha, load_store
from tasks.lift_sys.review_ir import ReviewConfig, review
from tasks.lift_sys.review_ui import review_in_ui, run_review
from tests.conftest import answer_pauses

PROMPT = ("Write a function classify_sign(n: int) -> str that returns 'positive' when n > 0, "
          "'negative' when n < 0 and 'zero' otherwise.")


def _ir(positive: str = "return LITERAL 'positive'") -> dict:
    return {"intent": {"summary": "Classify an integer by its sign", "holes": []},
            "signature": {"name": "classify_sign", "parameters": [{"name": "n", "type_hint": "int"}], "returns": "str",
                          "holes": []},
            "effects": [{"description": f"if n > 0: {positive}", "holes": []},
                        {"description": "if n < 0: return LITERAL 'negative'", "holes": []},
                        {"description": "otherwise: return LITERAL 'zero'", "holes": []}],
            "assertions": [{"predicate": "isinstance(n, int)", "holes": []}]}


GOOD = _ir()
FLAGGED = _ir(positive="return a string saying that the number is positive")  # exact string not a LITERAL
BROKEN = {**_ir(), "signature": {"name": "Classify Sign", "parameters": []}}      # fails the schema


def _items(path, *irs):
    """ir.jsonl with one item per IR (ids i0, i1, ...)."""
    with open(path, "w") as fh:
        for i, ir in enumerate(irs):
            fh.write(json.dumps({"id": f"i{i}", "prompt": PROMPT, "category": "control_flow", "complexity": "simple",
                                 "template_id": "sign", "origin": "template", "ir": ir, "score": 1.0,
                                 "teacher": "oracle", "candidates": 1, "valid_candidates": 1}) + "\n")
    return path


def _decisions(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _out(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {name: {r["id"]: r for r in read_jsonl(out / f"{name}.jsonl")} for name in ("accepted", "rejected", "pending")}, manifest


def test_prechecks_route_items_and_flagged_ones_wait_for_review(tmp_path):
    out, manifest = _out(review(ReviewConfig(), _items(tmp_path / "ir.jsonl", GOOD, FLAGGED, BROKEN), tmp_path / "review"))
    assert set(out["accepted"]) == {"i0"} and out["accepted"]["i0"]["review"]["by"] == "auto"
    assert set(out["rejected"]) == {"i2"} and any("signature.name" in r for r in out["rejected"]["i2"]["reasons"])
    assert set(out["pending"]) == {"i1"} and out["pending"]["i1"]["problems"]
    assert manifest["counts"]["pending_review"] == 1 and manifest["counts"]["accepted"] == 1


def test_pending_items_can_be_accepted_unreviewed(tmp_path):
    out, manifest = _out(review(ReviewConfig(pending="accept"), _items(tmp_path / "ir.jsonl", GOOD, FLAGGED), tmp_path / "review"))
    assert out["accepted"]["i1"]["review"] == {"by": "auto", "decision": "accept", "unreviewed": True,
                                               "problems": out["pending"]["i1"]["problems"]}
    assert manifest["counts"]["pending_review"] == 1


def test_file_decisions_are_applied_persisted_and_reused_without_the_file(tmp_path):
    irs = _items(tmp_path / "ir.jsonl", GOOD, FLAGGED, FLAGGED)
    decisions = _decisions(tmp_path / "decisions.jsonl",
                           {"id": "i0", "decision": "reject", "note": "duplicate of another item"},
                           {"id": "i1", "decision": "accept", "note": "wording is fine"},
                           {"id": "i2", "decision": "correct", "ir": GOOD, "note": "made the string a literal"})
    out, manifest = _out(review(ReviewConfig(mode="file", decisions_file=decisions), irs, tmp_path / "review"))
    assert out["rejected"]["i0"]["reasons"] == ["rejected by reviewer: duplicate of another item"]
    assert out["accepted"]["i1"]["review"]["by"] == "human-file" and out["accepted"]["i1"]["ir"] == FLAGGED
    assert out["accepted"]["i2"]["ir"] == GOOD and out["accepted"]["i2"]["original_ir"] == FLAGGED
    assert {k: manifest["counts"][k] for k in ("corrected", "pending_review", "by_human_file")} == \
        {"corrected": 1, "pending_review": 0, "by_human_file": 3}
    store = tmp_path / "reviews" / "decisions.jsonl"
    assert {(d.id, d.decision) for d in load_store(store).values()} == {("i0", "reject"), ("i1", "accept"), ("i2", "correct")}

    again, _ = _out(review(ReviewConfig(mode="none"), irs, tmp_path / "review"))
    assert {k: set(v) for k, v in again.items()} == {"accepted": {"i1", "i2"}, "rejected": {"i0"}, "pending": set()}
    assert again["accepted"]["i2"]["ir"] == GOOD and again["accepted"]["i2"]["review"]["by"] == "human-file"


def test_a_regenerated_ir_is_asked_about_again(tmp_path):
    decisions = _decisions(tmp_path / "d.jsonl", {"id": "i0", "decision": "accept"})
    review(ReviewConfig(mode="file", decisions_file=decisions), _items(tmp_path / "ir.jsonl", FLAGGED), tmp_path / "review")
    regenerated = copy.deepcopy(FLAGGED)
    regenerated["intent"]["rationale"] = "a second teacher sample"
    out, _ = _out(review(ReviewConfig(), _items(tmp_path / "ir.jsonl", regenerated), tmp_path / "review"))
    assert set(out["pending"]) == {"i0"} and out["pending"]["i0"]["ir_sha"] != ir_sha(FLAGGED)


def test_a_decision_made_on_an_older_ir_is_skipped(tmp_path):
    decisions = _decisions(tmp_path / "d.jsonl", {"id": "i0", "decision": "accept", "ir_sha": ir_sha(GOOD)})
    out, manifest = _out(review(ReviewConfig(mode="file", decisions_file=decisions),
                                _items(tmp_path / "ir.jsonl", FLAGGED), tmp_path / "review"))
    assert set(out["pending"]) == {"i0"} and manifest["counts"]["stale_decisions"] == 1


@pytest.mark.parametrize("row, message", [
    ({"id": "nope", "decision": "accept"}, r"d\.jsonl: decisions about ids that are not in the IRs under review: 'nope'"),
    ({"id": "i0", "decision": "maybe"}, r"d\.jsonl:2: field 'decision'"),
    ({"id": "i0", "decision": "correct"}, r"d\.jsonl:2: field 'ir': decision 'correct' needs the corrected IR"),
    ({"id": "i0", "decision": "correct", "ir": BROKEN}, r"d\.jsonl:2: field 'ir\.signature\.name"),
    ({"id": "i0", "decision": "accept", "ir": GOOD}, r"d\.jsonl:2: field 'ir': only decision 'correct'"),
    ({"id": "i1", "decision": "accept"}, r"d\.jsonl:2: id 'i1': cannot accept an IR that fails the schema"),
    ({"id": "i2", "decision": "accept"}, r"d\.jsonl:2: id 'i2' already decided on line 1"),
])
def test_bad_decisions_files_name_the_line_and_field_and_change_nothing(tmp_path, row, message):
    decisions = _decisions(tmp_path / "d.jsonl", {"id": "i2", "decision": "reject"}, row)
    with pytest.raises(RecordError, match=message):
        review(ReviewConfig(mode="file", decisions_file=decisions), _items(tmp_path / "ir.jsonl", FLAGGED, BROKEN, FLAGGED),
               tmp_path / "review")
    assert not (tmp_path / "reviews").exists() and not (tmp_path / "review").exists()


def test_malformed_decisions_line_names_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": "i0", "decision": "accept"}\n\n{"id": "i0", \n')
    with pytest.raises(RecordError, match=r"d\.jsonl:3: malformed JSON"):
        review(ReviewConfig(mode="file", decisions_file=tmp_path / "d.jsonl"), _items(tmp_path / "ir.jsonl", FLAGGED),
               tmp_path / "review")


def test_file_mode_without_a_file_is_a_config_error():
    with pytest.raises(ValueError, match="needs review.decisions_file"):
        ReviewConfig(mode="file")


def test_store_appends_only_new_or_changed_decisions(tmp_path):
    store = tmp_path / "decisions.jsonl"
    d = StoredDecision(id="i0", ir_sha="abc", decision="accept", by="human-ui")
    assert append_decisions(store, [d]) == 1
    assert append_decisions(store, [d.model_copy(update={"by": "human-file"})]) == 0
    assert append_decisions(store, [d.model_copy(update={"decision": "reject", "note": "on second thought"})]) == 1
    assert len(store.read_text().splitlines()) == 2
    assert load_store(store)[("i0", "abc")].decision == "reject"


def test_rerun_with_the_same_decisions_is_a_cache_hit(tmp_path):
    irs = _items(tmp_path / "ir.jsonl", GOOD, FLAGGED)
    cfg = ReviewConfig(mode="file", decisions_file=_decisions(tmp_path / "d.jsonl", {"id": "i1", "decision": "accept"}))
    out = review(cfg, irs, tmp_path / "review")
    before = (out / "manifest.json").stat().st_mtime_ns
    review(cfg, irs, tmp_path / "review")
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_too_many_automatic_rejections_fail_the_stage(tmp_path):
    with pytest.raises(ValueError, match="rejected 2/3 IRs"):
        review(ReviewConfig(max_reject_rate=0.5), _items(tmp_path / "ir.jsonl", GOOD, BROKEN, BROKEN), tmp_path / "review")


def test_ui_review_outside_a_flow_run_says_what_to_do_instead(tmp_path):
    with pytest.raises(RuntimeError, match="review.mode: file"):
        review_in_ui([{"id": "i0", "ir_sha": "x"}], ReviewConfig(mode="ui"), tmp_path / "store.jsonl")


# --- a real Prefect flow run that pauses for review and is resumed with the reviewer's answers ---

RUN: dict = {}


@flow
def review_flow(cfg: ReviewConfig, irs: str, out_dir: str) -> str:
    from prefect.runtime import flow_run

    RUN["id"] = flow_run.id
    return str(run_review(cfg, irs, out_dir))


def _run_with_reviewer(cfg, irs, out_dir, answers):
    RUN.clear()
    shown, errors = [], []
    reviewer = threading.Thread(target=contextvars.copy_context().run, args=(answer_pauses, RUN, answers, shown, errors), daemon=True)
    reviewer.start()
    result = review_flow(cfg, str(irs), str(out_dir))
    reviewer.join(timeout=30)
    assert not errors, errors
    return result, shown


def test_flow_pauses_for_review_and_resumes_with_the_decision(prefect_harness, tmp_path):
    irs = _items(tmp_path / "ir.jsonl", GOOD, FLAGGED)
    cfg = ReviewConfig(mode="ui", poll_interval_s=1, timeout_s=120)
    answers = [{"decision": "correct", "corrected_ir": "{not json", "note": "typo"},
               {"decision": "correct", "corrected_ir": json.dumps(GOOD), "note": "made the string a literal"}]
    out, shown = _run_with_reviewer(cfg, irs, tmp_path / "review", answers)
    assert PROMPT in shown[0] and "`i1`" in shown[0] and "return a string saying" in shown[0]
    assert "Please fix" in shown[1] and "not valid" in shown[1]  # the broken correction was asked again
    rows, manifest = _out(tmp_path / "review")
    assert out == str(tmp_path / "review")
    assert rows["accepted"]["i1"]["ir"] == GOOD and rows["accepted"]["i1"]["review"]["by"] == "human-ui"
    assert manifest["counts"]["pending_review"] == 0
    stored = load_store(tmp_path / "reviews" / "decisions.jsonl")
    assert stored[("i1", ir_sha(FLAGGED))].note == "made the string a literal"

    # Decided before: a second flow run goes through without pausing and keeps the reviewer's IR.
    review_flow(cfg, str(irs), str(tmp_path / "review"))
    assert _out(tmp_path / "review")[0]["accepted"]["i1"]["ir"] == GOOD


def test_batch_review_asks_once_for_several_items(prefect_harness, tmp_path):
    irs = _items(tmp_path / "ir.jsonl", FLAGGED, FLAGGED, GOOD)
    cfg = ReviewConfig(mode="ui", batch_size=5, poll_interval_s=1, timeout_s=120)
    answers = [{"decisions": [{"id": "i0", "decision": "accept"}, {"id": "i1", "decision": "reject", "note": "vague"}]}]
    _, shown = _run_with_reviewer(cfg, irs, tmp_path / "review", answers)
    assert len(shown) == 1 and "`i0`" in shown[0] and "`i1`" in shown[0]
    rows, _ = _out(tmp_path / "review")
    assert set(rows["accepted"]) == {"i0", "i2"} and set(rows["rejected"]) == {"i1"}
    assert rows["rejected"]["i1"]["review"] == {"by": "human-ui", "decision": "reject", "note": "vague",
                                                "problems": rows["rejected"]["i1"]["review"]["problems"]}
