"""Negatives stage: named bad variants the pre-checks can tell from their corrections."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from tasks.lift_sys.lift_ir import validate_ir
from tasks.lift_sys.lift_templates import CATEGORIES, load_templates
from tasks.lift_sys.generate_prompts import template_prompts
from tasks.lift_sys.ir_checks import precheck
from tasks.lift_sys.make_negatives import (
    ERROR_TYPES,
    NegativeRow,
    NegativesConfig,
    NegativeShares,
    main,
    missing_return_path,
    verbose_literal,
    write_negatives,
)
from tasks.common.records import RecordError, read_jsonl, read_models

LIBRARY = load_templates()
ALL = NegativeShares(verbose_literal=1, missing_bool_int_order=1, missing_return_path=1, wrong_types=1)


def _accepted_row(row) -> dict:
    return {"id": row.id, "prompt": row.prompt, "category": row.category,
            "ir": LIBRARY.render_ir(row.template_id, row.slots), "decision": "accept"}


@pytest.fixture(scope="module")
def accepted(tmp_path_factory):
    """Oracle IRs of 8 template prompts per category (every template at least once), as review would accept them."""
    path = tmp_path_factory.mktemp("review") / "accepted.jsonl"
    rows = template_prompts(LIBRARY, dict.fromkeys(CATEGORIES, 8), seed=5)
    path.write_text("".join(json.dumps(_accepted_row(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def all_negatives(accepted, tmp_path_factory):
    out = write_negatives(NegativesConfig(shares=ALL), accepted, tmp_path_factory.mktemp("neg") / "negatives")
    return read_models(out / "negatives.jsonl", NegativeRow), json.loads((out / "manifest.json").read_text())


def test_every_error_type_is_made_and_flagged_against_an_accepted_correction(all_negatives):
    negatives, manifest = all_negatives
    assert set(Counter(n.error_type for n in negatives)) == set(ERROR_TYPES)
    for n in negatives:
        assert validate_ir(n.bad_ir)[1] == [] and n.bad_ir != n.correction
        assert precheck(n.prompt, n.correction).decision == "accept"
        if n.error_type == "wrong_types":
            assert n.bad_ir["signature"] != n.correction["signature"]
            assert n.bad_ir["effects"] == n.correction["effects"]
        else:
            assert precheck(n.prompt, n.bad_ir).decision != "accept", n.id
    assert manifest["counts"]["negatives"] == len(negatives)
    assert {r["error_type"]: r["kept"] for r in manifest["per_error_type"]} == dict(Counter(n.error_type for n in negatives))


def test_each_error_type_is_caught_by_its_own_check(all_negatives):
    negatives, _ = all_negatives
    expected = {"verbose_literal": ("reject", {"literal"}), "missing_bool_int_order": ("reject", {"bool_before_int"}),
                "missing_return_path": (None, {"literal", "return_coverage"})}
    for n in negatives:
        if n.error_type in expected:
            decision, checks = expected[n.error_type]
            verdict = precheck(n.prompt, n.bad_ir)
            assert {p.check for p in verdict.problems} <= checks, (n.id, verdict.problems)
            assert decision is None or verdict.decision == decision


def test_verbose_literal_keeps_the_string_inside_a_wordier_one():
    row = next(r for r in template_prompts(LIBRARY, dict.fromkeys(CATEGORIES, 4), seed=1) if r.template_id == "cf_sign_label")
    ir = LIBRARY.render_ir(row.template_id, row.slots)
    bad, explanation = verbose_literal(row.prompt, ir, random.Random(0))
    changed = [(g["description"], b["description"]) for g, b in zip(ir["effects"], bad["effects"]) if g != b]
    assert len(changed) == 1
    label = next(row.slots[k] for k in ("pos", "neg", "zero") if f"LITERAL '{row.slots[k]}'" in changed[0][0])
    assert f"LITERAL '{label}'" not in changed[0][1] and label in changed[0][1]
    assert f"exactly '{label}'" in explanation


def test_missing_return_path_drops_the_none_branch_of_safe_divide():
    prompt = "Write a function safe_div(a, b) that returns a divided by b as a float, or None when b is zero."
    ir = LIBRARY.render_ir("ec_safe_divide", {"fn": "safe_div", "a": "a", "b": "b"})
    bad, explanation = missing_return_path(prompt, ir, random.Random(0))
    assert [e["description"] for e in bad["effects"]] == ["Otherwise return a / b as a float."]
    assert "returns None" in explanation
    assert [p.check for p in precheck(prompt, bad).problems] == ["return_coverage"]


def test_wrong_types_that_drop_none_explain_why(all_negatives):
    negatives, _ = all_negatives
    dropped_none = [n for n in negatives if n.error_type == "wrong_types" and "must allow None" in n.explanation]
    assert dropped_none
    for n in dropped_none:
        assert n.correction["signature"]["returns"].endswith("| None")
        assert "None" not in n.bad_ir["signature"]["returns"]


def test_shares_choose_how_many_and_seed_is_stable(accepted, tmp_path):
    only_types = NegativeShares(verbose_literal=0, missing_bool_int_order=0, missing_return_path=0, wrong_types=0.5)
    out = write_negatives(NegativesConfig(shares=only_types), accepted, tmp_path / "a")
    rows = read_jsonl(out / "negatives.jsonl")
    table = {r["error_type"]: r for r in json.loads((out / "manifest.json").read_text())["per_error_type"]}
    assert {r["error_type"] for r in rows} == {"wrong_types"}
    assert len(rows) == table["wrong_types"]["kept"] == round(0.5 * table["wrong_types"]["flagged"])
    again = write_negatives(NegativesConfig(shares=only_types), accepted, tmp_path / "b")
    assert (again / "negatives.jsonl").read_text() == (out / "negatives.jsonl").read_text()
    other = write_negatives(NegativesConfig(shares=only_types, seed=1), accepted, tmp_path / "c")
    assert {r["id"] for r in read_jsonl(other / "negatives.jsonl")} != {r["id"] for r in rows}


def test_variant_the_checks_cannot_see_is_not_kept(tmp_path):
    """An order statement in an IR whose request never mentions bool or int: dropping it changes nothing the checks read."""
    ir = LIBRARY.render_ir("ec_safe_divide", {"fn": "safe_div", "a": "a", "b": "b"})
    ir["assertions"].append({"predicate": "bool is checked before int", "holes": []})
    path = tmp_path / "accepted.jsonl"
    path.write_text(json.dumps({"id": "x1", "prompt": "Write safe_div(a, b) returning a / b, or None when b is zero.",
                                "category": "edge_cases", "ir": json.dumps(ir)}) + "\n")
    out = write_negatives(NegativesConfig(shares=ALL), path, tmp_path / "neg")
    kinds = {r["error_type"] for r in read_jsonl(out / "negatives.jsonl")}
    assert "missing_bool_int_order" not in kinds and "wrong_types" in kinds
    assert read_jsonl(out / "rejects.jsonl") == [{"id": "x1-missing_bool_int_order", "error_type": "missing_bool_int_order",
                                                  "reason": "the pre-checks do not flag this variant"}]


def test_schema_invalid_input_names_file_record_and_field(tmp_path):
    ir = LIBRARY.render_ir("ec_safe_divide", {"fn": "safe_div", "a": "a", "b": "b"})
    ir["signature"]["name"] = "Safe Div"
    path = tmp_path / "accepted.jsonl"
    path.write_text(json.dumps({"id": "ok", "prompt": "p", "category": "edge_cases",
                                "ir": LIBRARY.render_ir("ec_safe_divide", {"fn": "f", "a": "a", "b": "b"})}) + "\n"
                    + json.dumps({"id": "bad", "prompt": "p", "category": "edge_cases", "ir": ir}) + "\n")
    with pytest.raises(RecordError, match=r"accepted\.jsonl: record 2 \(id bad\): field 'ir\.signature\.name'"):
        write_negatives(NegativesConfig(), path, tmp_path / "neg")
    path.write_text('{"id": "x", "prompt": "p", "category": "sorting", "ir": {}}\n')
    with pytest.raises(RecordError, match=r"record 1: field 'category'"):
        write_negatives(NegativesConfig(), path, tmp_path / "neg")
    assert not (tmp_path / "neg").exists()


def test_cli_runs_with_share_overrides(accepted, tmp_path):
    main(["--accepted", str(accepted), "--out", str(tmp_path / "n"), "--set", "shares.verbose_literal=0", "--set", "seed=3"])
    manifest = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert manifest["config"]["shares"]["verbose_literal"] == 0 and manifest["config"]["shares"]["wrong_types"] == 0.2
    assert "verbose_literal" not in {r["error_type"] for r in read_jsonl(tmp_path / "n" / "negatives.jsonl")}
