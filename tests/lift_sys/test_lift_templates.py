"""The shipped lift-sys templates: every one renders IRs that pass the schema and the review pre-checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from tasks.lift_sys.lift_ir import validate_ir
from tasks.lift_sys.lift_templates import (
    CATEGORIES,
    DEFAULT_TEMPLATES,
    TemplateError,
    load_templates,
)
from tasks.lift_sys.generate_prompts import meaning_lost
from tasks.lift_sys.ir_checks import precheck

LIBRARY = load_templates()


@pytest.mark.parametrize("template_id", sorted(LIBRARY.templates))
def test_every_template_renders_irs_that_pass_schema_and_prechecks(template_id):
    template = LIBRARY.templates[template_id]
    rng = random.Random(template_id)
    for _ in range(8):
        slots = LIBRARY.sample_slots(template_id, rng)
        ir = LIBRARY.render_ir(template_id, slots)
        _, errors = validate_ir(ir)
        assert errors == [], (slots, errors)
        for k in range(len(template.phrasings)):
            prompt = LIBRARY.render_prompt(template_id, slots, phrasing=k)
            verdict = precheck(prompt, ir)
            assert verdict.decision == "accept", (prompt, verdict.problems)


@pytest.mark.parametrize("template_id", sorted(LIBRARY.templates))
def test_rewordings_keep_the_canonical_phrasings_strings_numbers_and_names(template_id):
    """The oracle offers phrasings 1.. as paraphrases of phrasing 0; the prompts stage must keep them."""
    rng = random.Random(1)
    for _ in range(5):
        slots = LIBRARY.sample_slots(template_id, rng)
        signature = LIBRARY.render_ir(template_id, slots)["signature"]
        names = [signature["name"], *(p["name"] for p in signature["parameters"])]
        canonical = LIBRARY.render_prompt(template_id, slots)
        for k in range(1, len(LIBRARY.templates[template_id].phrasings)):
            assert meaning_lost(canonical, LIBRARY.render_prompt(template_id, slots, k), names) is None


def test_library_covers_six_categories_with_three_complexities():
    per_category = LIBRARY.by_category()
    assert set(per_category) == set(CATEGORIES)
    assert all(len(templates) >= 3 for templates in per_category.values())
    assert {t.complexity for t in LIBRARY.templates.values()} == {"simple", "medium", "complex"}
    assert all(2 <= len(t.phrasings) <= 4 for t in LIBRARY.templates.values())


def test_slot_assignments_give_distinct_prompts_and_function_names_vary():
    for template_id, template in LIBRARY.templates.items():
        prompts = {LIBRARY.render_prompt(template_id, template.slots_at(i)) for i in range(template.combinations())}
        assert len(prompts) == template.combinations(), template_id
        names = {LIBRARY.render_ir(template_id, template.slots_at(i))["signature"]["name"] for i in range(template.combinations())}
        assert len(names) >= 5, template_id


def test_bundled_slots_stay_together():
    slots = LIBRARY.sample_slots("cf_sign_label", random.Random(3))
    labels = {(s["pos"], s["neg"], s["zero"]) for s in LIBRARY.templates["cf_sign_label"].slots["labels"]}
    assert (slots["pos"], slots["neg"], slots["zero"]) in labels
    ir = LIBRARY.render_ir("cf_sign_label", slots)
    assert ir["signature"]["parameters"][0]["type_hint"] == ("int" if slots["kind"] == "an integer" else "float")


def test_sampling_is_seeded():
    a = [LIBRARY.sample_slots("lo_index_of", random.Random(7)) for _ in range(3)]
    b = [LIBRARY.sample_slots("lo_index_of", random.Random(7)) for _ in range(3)]
    assert a == b


def test_missing_slot_and_unknown_template_are_named():
    slots = LIBRARY.sample_slots("ma_clamp", random.Random(0))
    del slots["lo"]
    with pytest.raises(TemplateError, match=r"ma_clamp.*missing slot\(s\) \['lo'\]"):
        LIBRARY.render_ir("ma_clamp", slots)
    with pytest.raises(KeyError, match="unknown template 'nope'"):
        LIBRARY.render_prompt("nope", {})


def _write_variant(tmp_path: Path, template_id: str, edit) -> Path:
    doc = yaml.safe_load(DEFAULT_TEMPLATES.read_text())
    edit(next(t for t in doc["templates"] if t["id"] == template_id))
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def test_ir_failing_the_schema_names_template_and_field(tmp_path):
    def bad_name(t):
        t["slots"]["fn"][0] = "Classify-Number"
    path = _write_variant(tmp_path, "cf_sign_label", bad_name)
    with pytest.raises(TemplateError, match=r"templates\.yaml: template 'cf_sign_label': ir .*signature\.name"):
        load_templates(path)


def test_phrasing_that_leaves_out_a_pool_is_refused(tmp_path):
    def drop_labels(t):
        t["phrasings"][1] = "Implement {fn}({x}) for {kind} {x}."
    path = _write_variant(tmp_path, "cf_sign_label", drop_labels)
    with pytest.raises(TemplateError, match=r"cf_sign_label': phrasings\.1: does not mention pool 'labels'"):
        load_templates(path)


def test_yaml_boolean_slot_value_asks_for_quotes(tmp_path):
    def unquoted_yes(t):
        t["slots"]["default"][0] = True  # what `yes` without quotes becomes
    path = _write_variant(tmp_path, "ec_first_or_default", unquoted_yes)
    with pytest.raises(TemplateError, match=r"ec_first_or_default': field 'slots\.default\.0'.*quote YAML words"):
        load_templates(path)


def test_unknown_slot_in_ir_is_named(tmp_path):
    def typo(t):
        t["ir"]["intent"]["summary"] = "Classify {kind} {xx} by its sign."
    path = _write_variant(tmp_path, "cf_sign_label", typo)
    with pytest.raises(TemplateError, match=r"ir\.intent\.summary: unknown slot\(s\) \['xx'\]"):
        load_templates(path)


def test_missing_category_is_reported(tmp_path):
    doc = yaml.safe_load(DEFAULT_TEMPLATES.read_text())
    doc["templates"] = [t for t in doc["templates"] if t["category"] != "edge_cases"]
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(TemplateError, match="no templates for category edge_cases"):
        load_templates(path)
