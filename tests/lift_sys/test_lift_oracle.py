"""The template oracle: the exact IR and the other phrasings of the templated prompts it was built with, nothing else."""

from __future__ import annotations

import json

import pytest

from tasks.lift_sys.lift_ir import IR_SCHEMA, validate_ir
from tasks.lift_sys.lift_oracle import TemplateOracle
from adapters.teachers import TeacherError, wrap_request


@pytest.fixture(scope="module")
def library():
    from tasks.lift_sys.lift_templates import load_templates

    return load_templates()


def _oracle_rows(library):
    """The first template with two or more phrasings: its canonical prompt and one paraphrase, same slots."""
    import random

    tid, template = next((tid, t) for tid, t in sorted(library.templates.items()) if len(t.phrasings) >= 2)
    slots = library.sample_slots(tid, random.Random(1))
    return tid, slots, [{"id": f"{tid}-{i}", "prompt": library.render_prompt(tid, slots, phrasing=i),
                         "template_id": tid, "slots": slots} for i in range(len(template.phrasings))]


def _ask(task: str, request: str, extra: str = "") -> list[dict]:
    return [{"role": "system", "content": f"TASK: {task}\nAnswer."}, {"role": "user", "content": extra + wrap_request(request)}]


def test_oracle_answers_prompts_and_paraphrases_with_the_templates_ir(library):
    tid, slots, rows = _oracle_rows(library)
    oracle = TemplateOracle(library, rows)
    for row in rows:
        reply = oracle.generate(_ask("ir", row["prompt"]), max_tokens=1024, temperature=0, json_schema=IR_SCHEMA)
        assert json.loads(reply.text) == library.render_ir(tid, slots)
        assert validate_ir(reply.text)[1] == []
    assert oracle.usage() == {"requests": len(rows), "retries": 0, "input_tokens": 0, "output_tokens": 0,
                              "cost_usd": 0.0, "priced": True}


def test_oracle_paraphrases_are_the_other_phrasings_with_the_same_slots(library):
    _, _, rows = _oracle_rows(library)
    oracle = TemplateOracle(library, rows[:1])
    reply = oracle.generate(_ask("paraphrase", rows[0]["prompt"], "N: 1\n"), max_tokens=256, temperature=0)
    assert reply.text.splitlines() == [rows[1]["prompt"]]
    every = oracle.generate(_ask("paraphrase", rows[0]["prompt"], "N: 50\n"), max_tokens=256, temperature=0)
    assert every.text.splitlines() == [r["prompt"] for r in rows[1:]]


def test_oracle_refuses_what_it_cannot_know(library):
    _, _, rows = _oracle_rows(library)
    oracle = TemplateOracle(library, rows)
    with pytest.raises(TeacherError, match="only answers templated prompts"):
        oracle.generate(_ask("ir", "Write a web server in Rust."), max_tokens=64, temperature=0)
    with pytest.raises(TeacherError, match="TASK: ir"):
        oracle.generate(_ask("summarise", rows[0]["prompt"]), max_tokens=64, temperature=0)
