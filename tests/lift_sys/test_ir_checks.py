"""Review pre-checks: a good IR is accepted; each kind of bad IR gets the decision its rule documents."""

from __future__ import annotations

import copy
import json

import pytest

from tasks.lift_sys.ir_checks import precheck, requested_returns

SIGN_PROMPT = ("Write a function classify(n) that takes an integer n and returns 'positive' if n is greater than zero, "
               "'negative' if it is less than zero, and 'zero' if it is exactly zero.")
SIGN_IR = {
    "intent": {"summary": "Classify n by its sign.", "rationale": "Labels are compared verbatim.", "holes": []},
    "signature": {"name": "classify", "parameters": [{"name": "n", "type_hint": "int"}], "returns": "str", "holes": []},
    "effects": [{"description": "If n > 0, return LITERAL 'positive'.", "holes": []},
                {"description": "If n < 0, return LITERAL 'negative'.", "holes": []},
                {"description": "If n == 0, return LITERAL 'zero'.", "holes": []}],
    "assertions": [{"predicate": "result in ('positive', 'negative', 'zero')", "holes": []}],
}
TYPE_PROMPT = ("Write type_name(x) that returns 'bool' for booleans, 'int' for integers and 'other' for anything else.")
TYPE_IR = {
    "intent": {"summary": "Name the type of x.", "holes": []},
    "signature": {"name": "type_name", "parameters": [{"name": "x", "type_hint": "object"}], "returns": "str", "holes": []},
    "effects": [{"description": "If isinstance(x, bool), return LITERAL 'bool'.", "holes": []},
                {"description": "Else if isinstance(x, int), return LITERAL 'int'.", "holes": []},
                {"description": "Otherwise return LITERAL 'other'.", "holes": []}],
    "assertions": [{"predicate": "isinstance(x, bool) is checked before isinstance(x, int)", "holes": []}],
}
FIND_PROMPT = "Write find(items, target) that returns the index of target in items, or -1 if it is absent."
FIND_IR = {
    "intent": {"summary": "Index of target in items, -1 when absent.", "holes": []},
    "signature": {"name": "find", "parameters": [{"name": "items", "type_hint": "list[int]"}, {"name": "target", "type_hint": "int"}],
                  "returns": "int", "holes": []},
    "effects": [{"description": "Return the index of the first element equal to target.", "holes": []},
                {"description": "If target is not in items, return -1.", "holes": []}],
}


def _with_effects(ir: dict, *descriptions: str) -> dict:
    out = copy.deepcopy(ir)
    out["effects"] = [{"description": d, "holes": []} for d in descriptions]
    return out


def _checks(verdict) -> list[str]:
    return [p.check for p in verdict.problems]


def test_good_irs_are_accepted_as_dict_or_json_text():
    assert precheck(SIGN_PROMPT, SIGN_IR).decision == "accept"
    assert precheck(TYPE_PROMPT, json.dumps(TYPE_IR)).decision == "accept"
    assert precheck(FIND_PROMPT, FIND_IR).decision == "accept"


def test_schema_invalid_ir_is_rejected_with_the_field_named():
    bad = copy.deepcopy(SIGN_IR)
    bad["signature"]["name"] = "Classify-It"
    bad["intent"]["extra"] = 1
    verdict = precheck(SIGN_PROMPT, bad)
    assert verdict.decision == "reject"
    assert {p.check for p in verdict.problems} == {"schema"}
    assert any(p.message.startswith("signature.name:") for p in verdict.problems)
    assert any(p.message.startswith("intent.extra:") for p in verdict.problems)
    assert precheck(SIGN_PROMPT, "{not json").decision == "reject"


def test_missing_literal_needs_review_and_names_the_string():
    ir = _with_effects(SIGN_IR, "If n > 0, return LITERAL 'positive'.", "If n < 0, return LITERAL 'negative'.",
                       "If n == 0, return zero.")
    verdict = precheck(SIGN_PROMPT, ir)
    assert verdict.decision == "needs_review"
    assert _checks(verdict) == ["literal"] and "LITERAL 'zero'" in verdict.problems[0].message


def test_reworded_literal_is_rejected():
    ir = _with_effects(SIGN_IR, "If n > 0, return LITERAL 'The number is positive'.", "If n < 0, return LITERAL 'negative'.",
                       "If n == 0, return LITERAL 'zero'.")
    verdict = precheck(SIGN_PROMPT, ir)
    assert verdict.decision == "reject"
    assert "'The number is positive'" in verdict.problems[0].message


def test_case_changed_literal_is_rejected():
    ir = _with_effects(SIGN_IR, "If n > 0, return LITERAL 'Positive'.", "If n < 0, return LITERAL 'negative'.",
                       "If n == 0, return LITERAL 'zero'.")
    assert precheck(SIGN_PROMPT, ir).decision == "reject"


def test_literal_without_marker_needs_review():
    ir = _with_effects(SIGN_IR, "If n > 0, return 'positive'.", "If n < 0, return LITERAL 'negative'.",
                       "If n == 0, return LITERAL 'zero'.")
    verdict = precheck(SIGN_PROMPT, ir)
    assert verdict.decision == "needs_review"
    assert "without the marker" in verdict.problems[0].message


def test_unstated_bool_int_order_needs_review():
    ir = copy.deepcopy(TYPE_IR)
    ir["assertions"] = []
    ir["effects"] = [{"description": "Return LITERAL 'bool' for booleans.", "holes": []},
                     {"description": "Return LITERAL 'int' for integers.", "holes": []},
                     {"description": "Otherwise return LITERAL 'other'.", "holes": []}]
    verdict = precheck(TYPE_PROMPT, ir)
    assert verdict.decision == "needs_review" and _checks(verdict) == ["bool_before_int"]


def test_int_tested_before_bool_is_rejected():
    ir = copy.deepcopy(TYPE_IR)
    ir["assertions"] = []
    ir["effects"] = [ir["effects"][1], ir["effects"][0], ir["effects"][2]]
    verdict = precheck(TYPE_PROMPT, ir)
    assert verdict.decision == "reject" and _checks(verdict) == ["bool_before_int"]


def test_stated_int_first_order_is_rejected_even_without_isinstance():
    ir = _with_effects(TYPE_IR, "Check int before bool.", "Return LITERAL 'bool' for booleans.",
                       "Return LITERAL 'int' for integers.", "Otherwise return LITERAL 'other'.")
    ir["assertions"] = []
    assert precheck(TYPE_PROMPT, ir).decision == "reject"


def test_bool_first_effect_order_alone_satisfies_the_rule():
    ir = copy.deepcopy(TYPE_IR)
    ir["assertions"] = []
    assert precheck(TYPE_PROMPT, ir).decision == "accept"


def test_bool_int_rule_only_applies_when_both_are_involved():
    prompt = "Write is_even(n) that returns True if the integer n is even and False otherwise."
    ir = _with_effects(FIND_IR, "Return True when n % 2 == 0.", "Return False otherwise.")
    assert precheck(prompt, ir).decision == "accept"


def test_uncovered_return_value_needs_review():
    ir = _with_effects(FIND_IR, "Return the index of the first element equal to target.")
    verdict = precheck(FIND_PROMPT, ir)
    assert verdict.decision == "needs_review"
    assert _checks(verdict) == ["return_coverage"] and "-1" in verdict.problems[0].message


def test_none_and_empty_list_returns_must_be_covered():
    prompt = "Write safe_div(a, b) that returns a / b, or None when b is zero; chunks(xs) gives an empty list for no input."
    ir = _with_effects(FIND_IR, "Return a / b.")
    verdict = precheck(prompt, ir)
    assert sorted(p.message.split(" in some case")[0] for p in verdict.problems) == \
        ["the request returns None", "the request returns an empty list"]
    assert precheck(prompt, _with_effects(FIND_IR, "If b == 0, return None.", "Empty input gives an empty list.")).decision == "accept"


@pytest.mark.parametrize("prompt, literals, values", [
    (SIGN_PROMPT, ("positive", "negative", "zero"), ()),
    ("Write is_email(s) that returns True if s has exactly one '@' and a '.' after it, and False otherwise.", (), ("True", "False")),
    ("Write count_a(text) that returns how many times 'a' occurs in the user's text.", (), ()),
    ("Write grade(s): return 'A' if s >= 90, 'B' if s >= 80, otherwise 'F'.", ("A", "B", "F"), ()),
    ("Write check(x) that gives back True or False.", (), ("True", "False")),
    ('Write label(n) returning "big" when n > 100 and "small" otherwise.', ("big", "small"), ()),
    ("Write clamp(x) that returns 0 if x is below 0, 10 if x is above 10, and x itself otherwise.", (), ("0", "10")),
])
def test_requested_returns_reads_results_not_inputs(prompt, literals, values):
    got = requested_returns(prompt)
    assert got.literals == literals
    assert got.values == values
