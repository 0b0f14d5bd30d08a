"""IR generation: prompt building and parsing, lift-sys's Best-of-N score, and the stage end to end.

LLM teachers run through the real OpenAI-compatible client against a local server that answers
with scripted chat completions; the oracle runs on real templated prompts.
"""

from __future__ import annotations

import json
import random
import threading
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from tasks.lift_sys.lift_ir import IR_SCHEMA, validate_ir
from tasks.lift_sys.lift_templates import load_templates
from adapters.teachers import TeacherUnavailable, make_teacher, request_of, task_of
from tasks.lift_sys.generate_ir import (GenerateIRConfig, ScoreWeights, best_of_n, build_ir_messages, generate,
                               generate_ir, parse_ir_output, schema_outline, score_ir)
from tasks.lift_sys.generate_prompts import PromptRow
from tasks.common.records import RecordError
from tasks.common.stage import prefect_cache_key

BARE = {"intent": {"summary": "Check whether a number is positive"},
        "signature": {"name": "is_positive", "parameters": [{"name": "n", "type_hint": "int"}]}}
RICH = {"intent": {"summary": "Return 'yes' for positive numbers, 'no' otherwise",
                   "rationale": "Callers branch on the exact string"},
        "signature": {"name": "is_positive", "parameters": [{"name": "n", "type_hint": "int"}], "returns": "str"},
        "effects": [{"description": "if n > 0: return LITERAL 'yes'"}, {"description": "otherwise return LITERAL 'no'"}],
        "assertions": [{"predicate": "n is an int, not a bool"}, {"predicate": "zero returns 'no'"}]}


class ChatServer:
    """An OpenAI-compatible /chat/completions endpoint answering with scripted replies, recording requests."""

    def __init__(self):
        self.replies: list[tuple[int, str]] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.requests.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                status, text = server.replies.pop(0)
                body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 30}} if status == 200 else \
                    {"error": {"message": text}}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def script(self, *texts: str | dict, status: int = 200) -> None:
        self.replies += [(status, t if isinstance(t, str) else json.dumps(t)) for t in texts]


@pytest.fixture
def chat_server():
    s = ChatServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(scope="module")
def library():
    return load_templates()


def templated_rows(library, seed: int = 0) -> list[PromptRow]:
    """One slot draw per template, every phrasing: phrasing 0 as the template prompt, the rest as its paraphrases."""
    rng, rows = random.Random(seed), []
    for tid, template in sorted(library.templates.items()):
        slots = library.sample_slots(tid, rng)
        for i in range(len(template.phrasings)):
            rows.append(PromptRow(id=f"{tid}-{i}", prompt=library.render_prompt(tid, slots, phrasing=i),
                                  category=template.category, complexity=template.complexity, template_id=tid,
                                  slots=slots, origin="template" if i == 0 else "paraphrase",
                                  parent_id=None if i == 0 else f"{tid}-0", teacher=None if i == 0 else "oracle"))
    return rows


def write_rows(path, rows) -> str:
    path.write_text("".join((r.model_dump_json() if isinstance(r, PromptRow) else json.dumps(r)) + "\n" for r in rows))
    return path


def plain_rows(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"Write a function number {i} that returns 'yes' when n > {i}.",
             "category": "control_flow", "complexity": "simple", "template_id": "t", "slots": {}, "origin": "template",
             "parent_id": None, "teacher": None} for i in range(n)]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- building and parsing ------------------------------------------------------------------------

def test_ir_messages_carry_task_guidance_schema_and_request():
    prompt = "Write a function that returns 'even' for even numbers and 'odd' otherwise."
    messages = build_ir_messages(prompt)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert task_of(messages) == "ir" and request_of(messages) == prompt
    system = messages[0]["content"]
    for rule in ("snake_case", "type hint", "return LITERAL 'x'", "bool before int", "every return path"):
        assert rule in system
    assert schema_outline() in system


def test_schema_outline_names_every_field_of_the_schema():
    outline = schema_outline()
    for name, node in IR_SCHEMA["$defs"].items():
        for prop in node["properties"]:
            assert f'"{prop}"' in outline, (name, prop)
    assert '"summary": str (≥10 chars)' in outline and '"rationale"?: str' in outline
    assert '"kind": "intent"|"signature"|"effect"|"assertion"|"implementation"' in outline


@pytest.mark.parametrize("text", [
    json.dumps(RICH),
    f"Here is the IR:\n```json\n{json.dumps(RICH, indent=2)}\n```\nLet me know if you need changes.",
    f"Sure. {json.dumps(RICH)} That covers both return paths.",
])
def test_parse_accepts_bare_fenced_and_prose_wrapped_json(text):
    ir, error = parse_ir_output(text)
    assert error is None
    assert ir["signature"]["name"] == "is_positive" and ir["effects"][0]["description"] == "if n > 0: return LITERAL 'yes'"
    assert validate_ir(ir)[1] == []


def test_parse_names_what_is_wrong():
    assert parse_ir_output("I cannot help with that.") == (None, "no JSON object in the reply: 'I cannot help with that.'")
    _, cut = parse_ir_output(json.dumps(RICH)[:-40])  # a reply that ran out of tokens
    assert cut.startswith("not valid JSON") and "max_tokens" in cut
    _, missing = parse_ir_output(json.dumps({"intent": {"summary": "long enough summary"}}))
    assert missing.startswith("schema:") and "signature" in missing
    _, extra = parse_ir_output(json.dumps({**BARE, "code": "def f(): pass"}))
    assert "code" in extra and "Extra inputs" in extra
    _, bad_name = parse_ir_output(json.dumps({**BARE, "signature": {"name": "IsPositive"}}))
    assert "signature.name" in bad_name


# ---- scoring ---------------------------------------------------------------------------------------

def test_score_follows_lift_sys_weights():
    w = ScoreWeights()
    # assertions 2×10; effect detail (30+29)/2/10; two LITERAL effects 2×15; quirk pair bool/int 10;
    # typed params 10 + return 10; edge-case assertion ("zero") 5; summary > 20 chars 5; rationale 5
    expected = 2 * w.per_assertion + (30 + 29) / 2 / 10 + 2 * w.per_literal_effect + w.per_quirk_pair \
        + w.typed_parameters + w.typed_return + w.per_edge_assertion + w.clear_summary + w.rationale
    assert score_ir(RICH) == pytest.approx(expected)
    assert score_ir(BARE) == pytest.approx(w.typed_parameters + w.clear_summary)
    many = {**BARE, "assertions": [{"predicate": f"n != {i}"} for i in range(9)]}
    assert score_ir(many) - score_ir(BARE) == pytest.approx(w.assertions_cap)


# ---- Best-of-N through the real client -------------------------------------------------------------------

def test_best_of_n_keeps_the_highest_scoring_valid_candidate(chat_server):
    teacher = make_teacher(f"openai:{chat_server.url}#qwen")
    chat_server.script("Sorry, here it is: {intent: oops}", BARE, f"```json\n{json.dumps(RICH)}\n```")
    result = best_of_n(teacher, "Return 'yes' for positive n.", n=3, temperature=0.7, max_tokens=512)
    assert result.ir["effects"][0]["description"] == RICH["effects"][0]["description"]
    assert result.score == score_ir(RICH)
    assert result.candidates == 3 and [bad["candidate"] for bad in result.invalid] == [0]
    assert all(r["temperature"] == 0.7 and r["response_format"]["json_schema"]["schema"] == IR_SCHEMA
               for r in chat_server.requests)


def test_stage_discards_invalid_candidates_and_rejects_prompts_without_any(tmp_path, chat_server):
    prompts = write_rows(tmp_path / "prompts.jsonl", plain_rows(3))
    chat_server.script(BARE, "not json at all", {"intent": {"summary": "short"}, "signature": {"name": "f"}}, "still no",
                       RICH, RICH)
    cfg = GenerateIRConfig(teacher=f"openai:{chat_server.url}#qwen", n=2, max_reject_rate=0.5)
    out = generate(cfg, prompts, tmp_path / "ir")
    rows, rejects = read_jsonl(out / "ir.jsonl"), read_jsonl(out / "rejects.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["id"] for r in rows] == ["p0", "p2"]
    assert rows[0]["valid_candidates"] == 1 and rows[1]["valid_candidates"] == 2
    assert rows[0]["teacher"] == f"openai:{chat_server.url}#qwen"
    assert [(r["id"], r["prompt_rejected"]) for r in rejects] == [("p0", False), ("p1", True), ("p1", True)]
    assert "intent.summary" in rejects[1]["reason"] and rejects[2]["reason"].startswith("no JSON object")
    assert rejects[0]["output"] == "not json at all"
    assert manifest["counts"] == {"prompts": 3, "accepted": 2, "rejected": 1, "candidates": 6, "invalid_candidates": 3}
    assert manifest["metrics"]["schema_validity_rate"] == 0.5
    assert (manifest["metrics"]["teacher_requests"], manifest["metrics"]["input_tokens"]) == (6, 600)
    assert manifest["teacher"] == f"openai:{chat_server.url}#qwen" and manifest["usage"]["output_tokens"] == 180


def test_stage_fails_above_the_reject_rate_and_leaves_nothing(tmp_path, chat_server):
    prompts = write_rows(tmp_path / "prompts.jsonl", plain_rows(2))
    chat_server.script("no", "no", BARE, BARE)
    cfg = GenerateIRConfig(teacher=f"openai:{chat_server.url}", n=2, max_reject_rate=0.2)
    with pytest.raises(ValueError, match=r"1 of 2 prompts got no schema-valid IR .* first: p0: no JSON object"):
        generate(cfg, prompts, tmp_path / "ir")
    assert not (tmp_path / "ir").exists()


def test_an_unavailable_teacher_stops_the_stage(tmp_path, chat_server):
    prompts = write_rows(tmp_path / "prompts.jsonl", plain_rows(2))
    chat_server.script("invalid API key", status=401)
    with pytest.raises(TeacherUnavailable, match="401: invalid API key"):
        generate(GenerateIRConfig(teacher=f"openai:{chat_server.url}", n=1), prompts, tmp_path / "ir")
    assert not (tmp_path / "ir").exists() and len(chat_server.requests) == 1


# ---- the oracle on real templated prompts --------------------------------------------------------------------

def test_oracle_gives_every_templated_prompt_its_templates_ir(tmp_path, library):
    rows = templated_rows(library)
    assert {r.origin for r in rows} == {"template", "paraphrase"}
    prompts = write_rows(tmp_path / "prompts.jsonl", rows)
    out = generate(GenerateIRConfig(n=2), prompts, tmp_path / "ir")
    manifest = json.loads((out / "manifest.json").read_text())
    irs = read_jsonl(out / "ir.jsonl")
    assert manifest["counts"]["accepted"] == len(rows) and manifest["counts"]["invalid_candidates"] == 0
    assert manifest["metrics"]["schema_validity_rate"] == 1.0 and manifest["metrics"]["cost_usd"] == 0
    by_id = {r.id: r for r in rows}
    for got in irs:
        row = by_id[got["id"]]
        assert validate_ir(got["ir"])[1] == []
        assert got["ir"] == parse_ir_output(json.dumps(library.render_ir(row.template_id, row.slots)))[0]
        assert (got["teacher"], got["origin"], got["category"]) == ("oracle", row.origin, row.category)


def test_rerun_is_a_cache_hit_until_teacher_or_n_changes(tmp_path, library):
    prompts = write_rows(tmp_path / "prompts.jsonl", templated_rows(library)[:6])
    out = generate(GenerateIRConfig(n=1), prompts, tmp_path / "ir")
    first = json.loads((out / "manifest.json").read_text())
    again = generate(GenerateIRConfig(n=1), prompts, tmp_path / "ir")
    assert json.loads((again / "manifest.json").read_text())["finished_at"] == first["finished_at"]
    assert (out / "manifest.json").stat().st_mtime_ns == (again / "manifest.json").stat().st_mtime_ns
    # Prefect's cache key is the stage's own key (so a Prefect re-run is a hit too)
    task_context = SimpleNamespace(task=SimpleNamespace(name=generate_ir.name, fn=generate_ir.fn))
    prefect_key = prefect_cache_key(task_context, {"cfg": GenerateIRConfig(n=1), "inputs": prompts, "out_dir": out})
    assert prefect_key is not None and prefect_key.startswith(first["key"])
    rerun = generate(GenerateIRConfig(n=2), prompts, tmp_path / "ir")
    assert json.loads((rerun / "manifest.json").read_text())["key"] != first["key"]


def test_the_oracles_templates_file_is_part_of_the_cache_key(tmp_path, library):
    prompts = write_rows(tmp_path / "prompts.jsonl", templated_rows(library)[:2])
    templates = tmp_path / "templates.yaml"
    templates.write_text(library.path.read_text())
    first = json.loads((generate(GenerateIRConfig(n=1, templates=templates), prompts, tmp_path / "ir") / "manifest.json").read_text())
    templates.write_text(library.path.read_text() + "\n# edited\n")
    second = json.loads((generate(GenerateIRConfig(n=1, templates=templates), prompts, tmp_path / "ir") / "manifest.json").read_text())
    assert second["key"] != first["key"]


# ---- config and input errors ---------------------------------------------------------------------------------

def test_config_rejects_unknown_teachers_and_fields():
    with pytest.raises(ValidationError, match="unknown teacher 'gpt-4'"):
        GenerateIRConfig(teacher="gpt-4")
    with pytest.raises(ValidationError, match="best_of"):
        GenerateIRConfig(best_of=3)


def test_bad_prompt_record_names_file_record_and_field(tmp_path):
    rows = plain_rows(2)
    rows[1]["category"] = "recursion"
    prompts = write_rows(tmp_path / "prompts.jsonl", rows)
    with pytest.raises(RecordError, match=r"prompts.jsonl: record 2: field 'category'"):
        generate(GenerateIRConfig(), prompts, tmp_path / "ir")
