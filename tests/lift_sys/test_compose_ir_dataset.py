"""Composing lift-sys rows and chat records: stratified, stable, leak-free splits."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from tasks.lift_sys.lift_ir import validate_ir
from tasks.lift_sys.compose_ir_dataset import ComposeConfig, compose
from tasks.common.records import RecordError, read_chat_records, read_jsonl

CATEGORIES = ("control_flow", "list_operations", "string_manipulation", "type_operations", "mathematical", "edge_cases")


def _ir(i: int, literal: str = "even") -> dict:
    return {"intent": {"summary": f"Classify number {i} as even or odd", "holes": []},
            "signature": {"name": f"classify_{i}", "parameters": [{"name": "n", "type_hint": "int"}], "returns": "str",
                          "holes": []},
            "effects": [{"description": f"return LITERAL '{literal}' when n % 2 == 0", "holes": []}],
            "assertions": [{"predicate": "isinstance(n, int)", "holes": []}]}


def _accepted(path, ids, start=0):
    with open(path, "w") as fh:
        for i in ids:
            fh.write(json.dumps({"id": f"p{i}", "prompt": f"Write a function number {i} that says 'even' for even n",
                                 "category": CATEGORIES[i % 6], "complexity": "simple", "template_id": f"t{i % 18}",
                                 "origin": "template", "ir": _ir(i), "teacher": "oracle",
                                 "review": {"by": "auto", "decision": "accept", "problems": []}}) + "\n")
    return path


def _negatives(path, ids):
    with open(path, "w") as fh:
        for i in ids:
            bad = _ir(i, literal="a string saying the number is even")
            fh.write(json.dumps({"id": f"n{i}", "prompt": f"Write a function number {i} that says 'even' for even n",
                                 "category": CATEGORIES[i % 6], "bad_ir": bad, "error_type": "verbose_literal",
                                 "correction": _ir(i), "explanation": "the exact string 'even' must be a LITERAL"}) + "\n")
    return path


def _splits(out, name="rows_{}.jsonl"):
    return {s: read_jsonl(out / name.format(s)) for s in ("train", "val", "test")}


def _within_sampling_noise(count: int, n: int, share: float) -> bool:
    """A hash split draws each prompt's split independently: allow 4 binomial standard deviations."""
    return abs(count / n - share) <= 4 * math.sqrt(share * (1 - share) / n)


def test_every_category_is_split_about_80_10_10(tmp_path):
    out = compose(ComposeConfig(), [_accepted(tmp_path / "acc.jsonl", range(300))], tmp_path / "compose")
    good = json.loads((out / "manifest.json").read_text())["split_counts"]["good"]
    shares = {"train": 0.8, "val": 0.1, "test": 0.1}
    for c in CATEGORIES:
        per = {s: good[s].get(c, 0) for s in shares}
        assert sum(per.values()) == 50
        assert all(per[s] >= 1 and _within_sampling_noise(per[s], 50, shares[s]) for s in shares), (c, per)
    sizes = {s: len(rows) for s, rows in _splits(out).items()}
    assert all(_within_sampling_noise(sizes[s], 300, shares[s]) for s in shares), sizes


def test_adding_prompts_never_moves_existing_ones(tmp_path):
    first = compose(ComposeConfig(), [_accepted(tmp_path / "a.jsonl", range(150))], tmp_path / "c1")
    second = compose(ComposeConfig(), [_accepted(tmp_path / "b.jsonl", reversed(range(300)))], tmp_path / "c2")
    before = {r["prompt"]: s for s, rows in _splits(first).items() for r in rows}
    after = {r["prompt"]: s for s, rows in _splits(second).items() for r in rows}
    assert len(before) == 150 and len(after) == 300
    assert all(after[p] == s for p, s in before.items())


def test_negatives_follow_their_prompt_so_no_held_out_prompt_is_trained_on(tmp_path):
    acc = _accepted(tmp_path / "acc.jsonl", range(120))
    neg = _negatives(tmp_path / "neg.jsonl", range(120))
    out = compose(ComposeConfig(), [acc, neg], tmp_path / "compose")
    rows = _splits(out)
    for split, split_rows in rows.items():
        good = {r["prompt"] for r in split_rows if r["label"] == "good"}
        bad = {r["prompt"] for r in split_rows if r["label"] == "bad"}
        assert bad == good, split  # each negative sits with its source prompt
    held_out = {r["prompt"] for s in ("val", "test") for r in rows[s]}
    assert held_out
    train_text = " ".join(m.content for rec in read_chat_records(out / "train.jsonl") for m in rec.messages)
    assert not [p for p in held_out if p in train_text]


def test_a_paraphrase_shares_its_parents_split(tmp_path):
    acc = tmp_path / "acc.jsonl"
    with open(acc, "w") as fh:
        for i in range(100):
            for k, wording in enumerate(("Write a function that says 'even' for even n, case {i}",
                                         "Case {i}: make a function answering 'even' when n is even",
                                         "For case {i}, return 'even' whenever n is divisible by two")):
                fh.write(json.dumps({"id": f"p{i}-{k}", "prompt": wording.format(i=i), "category": CATEGORIES[i % 6],
                                     "template_id": "even", "slots": {"case": i}, "ir": _ir(i),
                                     "origin": "paraphrase" if k else "template"}) + "\n")
    out = compose(ComposeConfig(), [acc], tmp_path / "compose")
    split_of_family: dict[str, set] = {}
    for split in ("train", "val", "test"):
        for rec in read_chat_records(out / f"{split}.jsonl"):
            split_of_family.setdefault(rec.meta["id"].split("-")[0], set()).add(split)
    assert len(split_of_family) == 100 and all(len(s) == 1 for s in split_of_family.values())
    assert {s for fam in split_of_family.values() for s in fam} == {"train", "val", "test"}


def test_rows_and_records_have_the_training_formats(tmp_path):
    out = compose(ComposeConfig(), [_accepted(tmp_path / "acc.jsonl", range(40)), _negatives(tmp_path / "neg.jsonl", range(40))],
                  tmp_path / "compose")
    rows = read_jsonl(out / "rows.jsonl")
    assert Counter(r["label"] for r in rows) == {"good": 40, "bad": 40}
    for r in rows:
        assert set(r) == ({"prompt", "completion", "label"} if r["label"] == "good" else {"prompt", "completion", "label", "error_type"})
        assert isinstance(r["completion"], str) and json.loads(r["completion"])
    records = [rec for s in ("train", "val", "test") for rec in read_chat_records(out / f"{s}.jsonl")]
    good = [r for r in records if r.kind == "ir"]
    fixes = [r for r in records if r.kind == "ir_correction"]
    assert len(good) == 40 and len(fixes) == 40
    completions = {r["prompt"]: r["completion"] for r in rows if r["label"] == "good"}
    for rec in good:
        assert [m.role for m in rec.messages] == ["system", "user", "assistant"]
        assert rec.messages[2].content == completions[rec.messages[1].content]
        assert validate_ir(rec.messages[2].content)[1] == []
        assert rec.meta["category"] in CATEGORIES and rec.meta["review"] == "auto"
    for rec in fixes:
        user, answer = rec.messages[1].content, rec.messages[2].content
        assert "a string saying the number is even" in user
        assert answer.startswith("Error: verbose_literal:")
        fixed = answer.split("Corrected IR:\n", 1)[1]
        assert validate_ir(fixed)[1] == [] and "LITERAL 'even'" in fixed


def test_corrections_can_be_switched_off_and_bad_rows_stay(tmp_path):
    out = compose(ComposeConfig(corrections=False),
                  [_accepted(tmp_path / "acc.jsonl", range(30)), _negatives(tmp_path / "neg.jsonl", range(30))], tmp_path / "c")
    records = [rec for s in ("train", "val", "test") for rec in read_chat_records(out / f"{s}.jsonl")]
    assert {r.kind for r in records} == {"ir"}
    assert sum(r["label"] == "bad" for r in read_jsonl(out / "rows.jsonl")) == 30


def test_a_share_of_corrections_is_the_same_negatives_on_every_run(tmp_path):
    inputs = [_accepted(tmp_path / "acc.jsonl", range(60)), _negatives(tmp_path / "neg.jsonl", range(60))]

    def corrected(out):
        return sorted(r.meta["id"] for s in ("train", "val", "test") for r in read_chat_records(out / f"{s}.jsonl")
                      if r.kind == "ir_correction")

    first = corrected(compose(ComposeConfig(corrections=0.3), inputs, tmp_path / "a"))
    assert 8 <= len(first) <= 30  # about 18 of 60
    assert corrected(compose(ComposeConfig(corrections=0.3), inputs, tmp_path / "b")) == first
    assert set(first) < set(corrected(compose(ComposeConfig(corrections=0.6), inputs, tmp_path / "c")))
    assert sum(r["label"] == "bad" for r in read_jsonl(tmp_path / "a" / "rows.jsonl")) == 60  # bad rows all stay


def test_prompts_differing_only_in_case_and_spacing_are_kept_once(tmp_path):
    acc = _accepted(tmp_path / "acc.jsonl", range(20))
    copies = [json.loads(line) for line in acc.read_text().splitlines()]
    for row in copies:
        row["id"] += "-copy"
        row["prompt"] = "  " + row["prompt"].upper().replace(" ", "   ")
    acc.write_text(acc.read_text() + "".join(json.dumps(r) + "\n" for r in copies))
    out = compose(ComposeConfig(), [acc], tmp_path / "c")
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["good"] == 20 and m["counts"]["duplicate_prompts"] == 20


def test_invalid_ir_names_the_record_and_field_and_leaves_nothing(tmp_path):
    acc = _accepted(tmp_path / "acc.jsonl", range(5))
    lines = acc.read_text().splitlines()
    row = json.loads(lines[3])
    row["ir"]["signature"]["name"] = "Not A Name"
    lines[3] = json.dumps(row)
    acc.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"acc\.jsonl: record 4: field 'ir\.signature\.name"):
        compose(ComposeConfig(), [acc], tmp_path / "compose")
    assert not any(p.name.startswith(".compose") or p.name == "compose" for p in tmp_path.iterdir())


def test_fractions_that_leave_no_training_data_are_refused():
    with pytest.raises(ValueError, match="nothing to train on"):
        ComposeConfig(val_fraction=0.5, test_fraction=0.5)


def test_second_run_is_a_cache_hit(tmp_path):
    acc = _accepted(tmp_path / "acc.jsonl", range(30))
    out = compose(ComposeConfig(), [acc], tmp_path / "compose")
    before = (out / "manifest.json").stat().st_mtime_ns
    compose(ComposeConfig(), [acc], tmp_path / "compose")
    assert (out / "manifest.json").stat().st_mtime_ns == before
