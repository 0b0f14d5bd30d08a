"""Prompts stage: balanced distinct template prompts, and teacher paraphrases that keep their meaning."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.lift_sys.lift_oracle import TemplateOracle
from tasks.lift_sys.lift_templates import CATEGORIES, DEFAULT_TEMPLATES, load_templates
from adapters.teachers import request_of
from tasks.lift_sys.generate_prompts import (
    PromptRow,
    PromptsConfig,
    build_paraphrase_messages,
    category_counts,
    main,
    meaning_lost,
    normalized,
    parse_paraphrases,
    template_prompts,
    write_prompts,
)
from tasks.common.records import read_jsonl, read_models

LIBRARY = load_templates()


class ParaphraseServer:
    """An OpenAI-compatible /v1/chat/completions on loopback that answers every paraphrase request with:
    a preamble, one faithful rewrite, a whitespace-only variant of the request (a duplicate) and a
    rewrite that loses the function name. With ``status`` set it refuses every request instead."""

    def __init__(self, status: int = 200):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append({"path": self.path, "body": body, "authorization": self.headers.get("authorization")})
                if status != 200:
                    payload = {"error": {"message": "request refused by policy"}}
                else:
                    original = request_of(body["messages"])
                    text = "\n".join(["Here are the rewrites:",
                                      "1. " + original.replace("Write a function", "Please write a Python function"),
                                      "2. " + "  ".join(original.split()),
                                      "3. Write some code that does this task."])
                    payload = {"choices": [{"message": {"role": "assistant", "content": text}}],
                               "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def paraphrase_server():
    server = ParaphraseServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = write_prompts(PromptsConfig(), None, tmp_path_factory.mktemp("run") / "prompts")
    return out, read_models(out / "prompts.jsonl", PromptRow), json.loads((out / "manifest.json").read_text())


def test_default_run_gives_300_plus_distinct_balanced_template_prompts(default_run):
    _, rows, manifest = default_run
    templated = [r for r in rows if r.origin == "template"]
    assert len(templated) >= 300
    assert len({normalized(r.prompt) for r in rows}) == len(rows)
    assert len({r.id for r in rows}) == len(rows)
    per_category = Counter(r.category for r in templated)
    assert set(per_category) == set(CATEGORIES) and len(set(per_category.values())) == 1
    assert {r.complexity for r in rows} == {"simple", "medium", "complex"}
    for r in templated:
        assert r.prompt == LIBRARY.render_prompt(r.template_id, r.slots)
        assert r.complexity == LIBRARY.templates[r.template_id].complexity and r.teacher is None
    # within a category, templates share the prompts evenly
    for category in CATEGORIES:
        per_template = Counter(r.template_id for r in templated if r.category == category)
        assert max(per_template.values()) - min(per_template.values()) <= 1
    assert manifest["counts"] == {"prompts": len(rows), "template": len(templated), "paraphrase": len(rows) - len(templated)}
    assert manifest["per_complexity"] == dict(Counter(r.complexity for r in rows))


def test_oracle_paraphrases_are_other_phrasings_of_the_same_slots(default_run):
    _, rows, manifest = default_run
    by_id = {r.id: r for r in rows}
    paraphrases = [r for r in rows if r.origin == "paraphrase"]
    seeds = {r.parent_id for r in paraphrases}
    assert len(paraphrases) == 2 * len(seeds) and len(seeds) == round(0.25 * 360)
    assert Counter(r.category for r in paraphrases) == {c: 30 for c in CATEGORIES}
    for p in paraphrases:
        parent = by_id[p.parent_id]
        assert (p.template_id, p.slots, p.category, p.teacher) == (parent.template_id, parent.slots, parent.category, "oracle")
        others = [LIBRARY.render_prompt(p.template_id, p.slots, k) for k in range(1, len(LIBRARY.templates[p.template_id].phrasings))]
        assert p.prompt in others
    stats = manifest["paraphrases"]
    assert (stats["kept"], stats["returned"], stats["dropped_meaning"], stats["dropped_duplicate"]) == (180, 180, 0, 0)
    assert manifest["teacher_usage"]["requests"] == 90


def test_teacher_paraphrases_are_filtered_for_meaning_and_duplicates(tmp_path, paraphrase_server):
    cfg = PromptsConfig(per_category=5, paraphrase_share=0.4, paraphrases_per_prompt=2,
                        teacher=f"openai:{paraphrase_server.url}#tiny")
    out = write_prompts(cfg, None, tmp_path / "prompts")
    rows = read_models(out / "prompts.jsonl", PromptRow)
    paraphrases = [r for r in rows if r.origin == "paraphrase"]
    assert len(paraphrase_server.requests) == 12  # 2 seeds in each of 6 categories
    first = paraphrase_server.requests[0]["body"]["messages"]
    assert first[0]["content"].startswith("TASK: paraphrase") and "N: 2" in first[1]["content"].splitlines()
    assert len(paraphrases) == 12
    assert all(p.prompt.startswith("Please write a Python function") and p.teacher == f"openai:{paraphrase_server.url}#tiny"
               for p in paraphrases)
    manifest = json.loads((out / "manifest.json").read_text())
    stats = manifest["paraphrases"]
    assert (stats["returned"], stats["kept"], stats["dropped_duplicate"], stats["dropped_meaning"]) == (36, 12, 12, 12)
    assert manifest["teacher_usage"]["input_tokens"] == 120
    reasons = Counter(r["reason"].split(" ")[0] for r in read_jsonl(out / "rejects.jsonl"))
    assert reasons == {"duplicates": 12, "drops": 12}


def test_refusing_teacher_fails_the_stage_and_leaves_nothing(tmp_path):
    server = ParaphraseServer(status=400)
    try:
        cfg = PromptsConfig(per_category=4, paraphrase_share=0.5, teacher=f"openai:{server.url}")
        with pytest.raises(RuntimeError, match=r"refused 12 of 12 paraphrase requests.*first: teacher refused: .*HTTP 400: "
                                               r"request refused by policy"):
            write_prompts(cfg, None, tmp_path / "prompts")
    finally:
        server.close()
    assert not (tmp_path / "prompts").exists()


def test_build_paraphrase_messages_is_what_the_oracle_answers():
    row = template_prompts(LIBRARY, dict.fromkeys(CATEGORIES, 1), seed=3)[0]
    oracle = TemplateOracle(LIBRARY, [row])
    reply = oracle.generate(build_paraphrase_messages(row, 2), max_tokens=100, temperature=0)
    phrasings = len(LIBRARY.templates[row.template_id].phrasings)
    assert parse_paraphrases(reply.text) == [LIBRARY.render_prompt(row.template_id, row.slots, k) for k in range(1, min(3, phrasings))]


def test_parse_paraphrases_strips_list_markers_quotes_and_preambles():
    text = ("Sure! Here are two rewrites:\n\n1. Implement f(x) returning 'a' when x > 0.\n"
            "- \"Create f(x) that gives back 'a' for x above 0.\"\n(3) Code f(x): 'a' if x is positive.\nOK\n")
    assert parse_paraphrases(text) == ["Implement f(x) returning 'a' when x > 0.",
                                       "Create f(x) that gives back 'a' for x above 0.",
                                       "Code f(x): 'a' if x is positive."]


def test_case_counts_only_inside_quoted_strings():
    assert normalized("Write  F(x) that returns 'a'.") == normalized("write f(x)\nthat RETURNS 'a'.")
    assert normalized("Write f(x) that returns 'A'.") != normalized("Write f(x) that returns 'a'.")


def test_meaning_lost_names_the_missing_string_number_or_name():
    original = "Write clamp(x) that returns 'low' below 0 and 'high' above 10."
    assert meaning_lost(original, "Implement clamp(x): 'low' under 0, 'high' over 10.", ["clamp", "x"]) is None
    assert meaning_lost(original, "Implement clamp(x): 'Low' under 0, 'high' over 10.", ["clamp"]) == "drops the exact string 'low'"
    assert meaning_lost(original, "Implement clamp(x): 'low' under 0, 'high' over 100.", ["clamp"]) == "drops the number 10"
    assert meaning_lost(original, "Implement limit(x): 'low' under 0, 'high' over 10.", ["clamp"]) == "drops the name clamp"


def test_total_is_split_evenly_and_capacity_is_checked():
    assert list(category_counts(PromptsConfig(total=100)).values()) == [17, 17, 17, 17, 16, 16]
    capacity = sum(t.combinations() for t in LIBRARY.by_category()["type_operations"])
    rows = template_prompts(LIBRARY, {**dict.fromkeys(CATEGORIES, 0), "type_operations": capacity}, seed=0)
    assert len({normalized(r.prompt) for r in rows}) == capacity  # the whole slot space, no collisions
    with pytest.raises(ValueError, match=rf"category type_operations asks for {capacity + 1} prompts but its templates allow {capacity}"):
        template_prompts(LIBRARY, {**dict.fromkeys(CATEGORIES, 1), "type_operations": capacity + 1}, seed=0)


def test_second_run_is_a_cache_hit_and_editing_templates_invalidates_it(tmp_path):
    templates = tmp_path / "templates.yaml"
    shutil.copy(DEFAULT_TEMPLATES, templates)
    cfg = PromptsConfig(templates=templates, per_category=4, paraphrase_share=0)
    out = write_prompts(cfg, None, tmp_path / "prompts")
    before = (out / "manifest.json").read_text()
    write_prompts(cfg, None, tmp_path / "prompts")
    assert (out / "manifest.json").read_text() == before
    templates.write_text(templates.read_text().replace("[classify_number, sign_label,", "[classify_value, sign_label,"))
    write_prompts(cfg, None, tmp_path / "prompts")
    assert json.loads((out / "manifest.json").read_text())["key"] != json.loads(before)["key"]


def test_cli_writes_prompts(tmp_path, capsys):
    main(["--out", str(tmp_path / "p"), "--set", "per_category=6", "--set", "paraphrase_share=0"])
    rows = read_jsonl(tmp_path / "p" / "prompts.jsonl")
    assert len(rows) == 36 and capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "p")
