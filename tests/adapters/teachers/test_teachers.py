"""Teachers at the HTTP boundary: a local server speaks the Anthropic Messages and OpenAI chat APIs.

The server answers from a script of recorded-shape responses and records every request it gets,
so the tests see retries, headers and bodies exactly as a real server would.
"""

from __future__ import annotations

import json
import re
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.lift_sys.lift_ir import IR_SCHEMA, validate_ir
from adapters.teachers import (REQUEST_CLOSE, REQUEST_OPEN, AnthropicTeacher, OpenAICompatibleTeacher, RetryPolicy,
                               TeacherError, TeacherUnavailable, grammar_schema, make_teacher, parse_teacher_spec,
                               request_of, requested_count, task_of, wrap_request)

KEY = "sk-ant-test-5ecret-key-0123456789"
FAST = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.02)
MESSAGES = [{"role": "system", "content": "TASK: ir\nWrite the IR."},
            {"role": "user", "content": wrap_request("Write a function that returns 'yes' when n > 0.")}]
IR = {"intent": {"summary": "Say yes for positive numbers"},
      "signature": {"name": "is_positive", "parameters": [{"name": "n", "type_hint": "int"}], "returns": "str"}}


def anthropic_message(text: str | None = None, tool_input: dict | None = None, tokens=(120, 40)) -> dict:
    content = [{"type": "tool_use", "id": "toolu_01", "name": "emit_json", "input": tool_input}] if tool_input \
        else [{"type": "text", "text": text}]
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": content,
            "stop_reason": "tool_use" if tool_input else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}


def anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def chat_completion(text: str, tokens=(50, 20)) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "qwen",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)}}


class ScriptedServer:
    """Answers POSTs with the next scripted (status, body, headers); records path, headers and JSON body."""

    def __init__(self):
        self.script: list[tuple[int, dict | str, dict]] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": json.loads(body)})
                status, payload, headers = server.script.pop(0)
                raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, status: int, body: dict | str, **headers) -> ScriptedServer:
        self.script.append((status, body, {k.replace("_", "-"): v for k, v in headers.items()}))
        return self

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def claude(server, sleeps, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return AnthropicTeacher("claude-sonnet-4-5", base_url=server.url, timeout=5, retry=FAST, sleep=sleeps.append)


def _never_shows_key(teacher, caplog, *extra):
    seen = [repr(teacher), teacher.name, json.dumps(teacher.usage()), *map(str, extra),
            *(r.getMessage() for r in caplog.records)]
    assert all(KEY not in s for s in seen)


# ---- markers -------------------------------------------------------------------------------------

def test_markers_round_trip():
    messages = [{"role": "system", "content": "TASK: paraphrase\nReword it."},
                {"role": "user", "content": f"N: 3\n{wrap_request('  Sum a list.  ')}"}]
    assert (task_of(messages), request_of(messages), requested_count(messages)) == ("paraphrase", "Sum a list.", 3)
    assert wrap_request("x").startswith(REQUEST_OPEN) and wrap_request("x").endswith(REQUEST_CLOSE)
    assert task_of([{"role": "user", "content": "hi"}]) is None


def test_teacher_specs_are_checked():
    assert parse_teacher_spec("openai:http://h:1/v1#m") == ("openai", "http://h:1/v1#m")
    with pytest.raises(ValueError, match="unknown teacher 'gpt'"):
        parse_teacher_spec("gpt")
    with pytest.raises(ValueError, match="base url"):
        make_teacher("openai:localhost:8000")
    assert parse_teacher_spec("oracle") == ("oracle", "")
    with pytest.raises(ValueError, match="TemplateOracle"):  # it answers only its own prompt rows: the stages build it
        make_teacher("oracle")


# ---- Anthropic -------------------------------------------------------------------------------------

def test_anthropic_retries_429_honouring_retry_after(server, claude, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    server.reply(429, anthropic_error("rate_limit_error", "slow down"), retry_after="7")
    server.reply(200, anthropic_message("hello"))
    reply = claude.generate(MESSAGES, max_tokens=64, temperature=0.0)
    assert reply.text == "hello"
    assert sleeps == [7.0]
    assert claude.usage()["requests"] == 1 and claude.usage()["retries"] == 1
    sent = server.requests[-1]
    assert sent["path"] == "/v1/messages"
    # SDK 2.x sends the key as a bearer token (API version 2026-10-21), and no sampling parameters.
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert "temperature" not in sent["body"]
    assert sent["body"]["system"].startswith("TASK: ir")
    assert [m["role"] for m in sent["body"]["messages"]] == ["user"]
    _never_shows_key(claude, caplog, reply)


def test_anthropic_retries_5xx_with_backoff_then_answers(server, claude, sleeps):
    server.reply(500, anthropic_error("api_error", "boom")).reply(529, anthropic_error("overloaded_error", "busy"))
    server.reply(200, anthropic_message("ok"))
    assert claude.generate(MESSAGES, max_tokens=64, temperature=0.0).text == "ok"
    assert len(server.requests) == 3 and claude.usage()["retries"] == 2
    assert len(sleeps) == 2 and all(0 < s <= FAST.max_backoff_s for s in sleeps)


def test_anthropic_400_fails_at_once_with_the_servers_message(server, claude, caplog):
    server.reply(400, anthropic_error("invalid_request_error", "max_tokens: must be at most 64000"))
    with pytest.raises(TeacherError, match="must be at most 64000") as err:
        claude.generate(MESSAGES, max_tokens=10**6, temperature=0.0)
    assert not isinstance(err.value, TeacherUnavailable)
    assert len(server.requests) == 1 and claude.usage()["retries"] == 0
    _never_shows_key(claude, caplog, err.value, repr(err.value))


def test_anthropic_401_stops_everything_without_echoing_the_key(server, claude, caplog):
    server.reply(401, anthropic_error("authentication_error", f"invalid x-api-key {KEY}"))
    with pytest.raises(TeacherUnavailable, match="401") as err:
        claude.generate(MESSAGES, max_tokens=64, temperature=0.0)
    _never_shows_key(claude, caplog, err.value)


def test_anthropic_gives_up_after_the_retry_budget(server, claude):
    for _ in range(FAST.retries + 1):
        server.reply(503, anthropic_error("api_error", "down"))
    with pytest.raises(TeacherUnavailable, match="4 attempt"):
        claude.generate(MESSAGES, max_tokens=64, temperature=0.0)
    assert len(server.requests) == 4


def test_anthropic_structured_output_is_a_forced_tool_call(server, claude):
    server.reply(200, anthropic_message(tool_input=IR))
    reply = claude.generate(MESSAGES, max_tokens=512, temperature=0.0, json_schema=IR_SCHEMA)
    body = server.requests[-1]["body"]
    assert body["tools"][0]["input_schema"] == IR_SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": body["tools"][0]["name"]}
    assert validate_ir(reply.text)[1] == []


def test_anthropic_prose_reply_comes_back_as_text(server, claude):
    server.reply(200, anthropic_message("Sure! Here is the IR: {not json"))
    assert claude.generate(MESSAGES, max_tokens=64, temperature=0.0).text == "Sure! Here is the IR: {not json"


def test_anthropic_usage_sums_tokens_and_cost(server, claude):
    server.reply(200, anthropic_message("a", tokens=(1000, 200))).reply(200, anthropic_message("b", tokens=(3000, 800)))
    first = claude.generate(MESSAGES, max_tokens=64, temperature=0.0)
    claude.generate(MESSAGES, max_tokens=64, temperature=0.0)
    usage = claude.usage()
    assert (usage["requests"], usage["input_tokens"], usage["output_tokens"]) == (2, 4000, 1000)
    # claude-sonnet-4-5: $3 in / $15 out per million tokens
    assert first.cost_usd == pytest.approx((1000 * 3 + 200 * 15) / 1e6)
    assert usage["cost_usd"] == pytest.approx((4000 * 3 + 1000 * 15) / 1e6)


def test_anthropic_price_override_and_unknown_models(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    custom = AnthropicTeacher("claude-new-9", base_url=server.url, price=(10.0, 20.0), retry=FAST)
    server.reply(200, anthropic_message("x", tokens=(100, 100)))
    assert custom.generate(MESSAGES, max_tokens=8, temperature=0).cost_usd == pytest.approx(3000 / 1e6)
    unknown = AnthropicTeacher("claude-new-9", base_url=server.url, retry=FAST)
    assert unknown.usage()["priced"] is False


def test_missing_anthropic_key_names_the_variable_and_the_block(monkeypatch, prefect_harness):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(TeacherUnavailable, match="ANTHROPIC_API_KEY"):
        make_teacher("anthropic")
    with pytest.raises(TeacherUnavailable, match="ANTHROPIC_API_KEY.*'no-such-block-xyz'"):
        make_teacher("anthropic:claude-haiku-4-5", secret_block="no-such-block-xyz")


def test_anthropic_key_from_a_prefect_secret_block(monkeypatch, prefect_harness, server, caplog):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    Secret(value=KEY).save("claude-key", overwrite=True)
    teacher = make_teacher("anthropic:claude-haiku-4-5", secret_block="claude-key", base_url=server.url, retry=FAST)
    server.reply(200, anthropic_message("from the block"))
    assert teacher.generate(MESSAGES, max_tokens=8, temperature=0).text == "from the block"
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    _never_shows_key(teacher, caplog)


# ---- OpenAI-compatible -------------------------------------------------------------------------------

@pytest.fixture
def vllm(server, sleeps, monkeypatch):
    monkeypatch.setenv("VLLM_KEY", KEY)
    return make_teacher(f"openai:{server.url}/v1#qwen", api_key_env="VLLM_KEY", retry=FAST, sleep=sleeps.append)


def test_openai_sends_bearer_key_and_json_schema(server, vllm, caplog):
    caplog.set_level(logging.DEBUG)
    server.reply(200, chat_completion(json.dumps(IR)))
    reply = vllm.generate(MESSAGES, max_tokens=256, temperature=0.7, json_schema=IR_SCHEMA)
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["body"]["model"] == "qwen" and sent["body"]["temperature"] == 0.7
    assert sent["body"]["response_format"]["json_schema"] == {"name": "ir", "schema": IR_SCHEMA, "strict": True}
    assert validate_ir(reply.text)[1] == []
    assert (reply.input_tokens, reply.output_tokens, reply.cost_usd) == (50, 20, 0.0)
    _never_shows_key(vllm, caplog, reply)


def test_openai_retries_429_and_5xx_but_not_400(server, vllm, sleeps, caplog):
    server.reply(429, {"error": {"message": "busy"}}, retry_after="2").reply(502, "bad gateway")
    server.reply(200, chat_completion("fine"))
    assert vllm.generate(MESSAGES, max_tokens=8, temperature=0).text == "fine"
    assert vllm.usage()["retries"] == 2 and sleeps[0] == 2.0
    server.reply(400, {"error": {"message": "This model's maximum context length is 4096 tokens", "type": "BadRequestError"}})
    with pytest.raises(TeacherError, match="maximum context length is 4096") as err:
        vllm.generate(MESSAGES, max_tokens=9999, temperature=0)
    assert len(server.requests) == 4
    _never_shows_key(vllm, caplog, err.value)


def test_openai_unreachable_server_is_retried_then_unavailable(sleeps):
    teacher = OpenAICompatibleTeacher("http://127.0.0.1:9/v1", retry=FAST, timeout=2, sleep=sleeps.append)
    with pytest.raises(TeacherUnavailable, match="4 attempt"):
        teacher.generate(MESSAGES, max_tokens=8, temperature=0)
    assert teacher.usage()["retries"] == 3


def test_openai_missing_key_names_the_variable(monkeypatch, server):
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    with pytest.raises(TeacherUnavailable, match="MY_VLLM_KEY"):
        make_teacher(f"openai:{server.url}/v1", api_key_env="MY_VLLM_KEY")


# ---- the local model -------------------------------------------------------------------------------

def test_grammar_schema_bounds_free_strings_and_arrays():
    bounded = grammar_schema(IR_SCHEMA, 50, 3)
    intent = bounded["$defs"]["Intent"]["properties"]
    assert intent["summary"]["maxLength"] == 50 and intent["holes"]["maxItems"] == 3
    assert "maxLength" not in bounded["$defs"]["Signature"]["properties"]["name"]  # the pattern already bounds it
    assert "items" not in bounded["$defs"]["Metadata"]["properties"]["evidence"]


def test_local_model_with_the_ir_schema_replies_valid_json():
    from adapters.models.base_models import embedded_gguf

    teacher = make_teacher(f"local:{embedded_gguf()}", max_string_chars=40, max_items=2)
    try:
        reply = teacher.generate(MESSAGES, max_tokens=160, temperature=0.0, json_schema=IR_SCHEMA)
        again = teacher.generate(MESSAGES, max_tokens=160, temperature=0.0, json_schema=IR_SCHEMA)
    finally:
        teacher.close()
    json.loads(reply.text)
    assert validate_ir(reply.text)[1] == []
    assert again.text == reply.text  # temperature 0 is greedy
    assert teacher.usage()["requests"] == 2 and reply.output_tokens > 0


def test_schema_constrained_strings_never_hold_raw_control_characters():
    """Asked for a function's IR, the base model starts its summary with code and newlines: they must be escaped."""
    from adapters.models.base_models import embedded_gguf
    from tasks.lift_sys.compose_ir_dataset import request_messages

    messages = request_messages("Write a function add(a, b) that returns the sum of the integers a and b.")
    teacher = make_teacher(f"local:{embedded_gguf()}")
    try:
        reply = teacher.generate(messages, max_tokens=48, temperature=0.0, json_schema=IR_SCHEMA)
    finally:
        teacher.close()
    assert reply.text.startswith('{ "intent"')
    assert not re.search(r"[\x00-\x1f\x7f]", reply.text)  # JSON forbids them raw in strings; the grammar has no other place
