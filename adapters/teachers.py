"""Teachers: the models that write lift-sys IRs and paraphrases, behind one small protocol.

    teacher = make_teacher("anthropic:claude-sonnet-4-5")          # key from $ANTHROPIC_API_KEY or a Secret block
    teacher = make_teacher("openai:http://127.0.0.1:8000/v1#qwen")  # vLLM, llama.cpp server, Ollama's /v1
    teacher = make_teacher("local:embedded")                        # a GGUF in llama.cpp (or local:/path/model.gguf)
    teacher = make_teacher("oracle", rows=prompt_rows)              # exact IRs from template slots, offline
    reply = teacher.generate(messages, max_tokens=1024, temperature=0.0, json_schema=IR_SCHEMA)
    teacher.usage()   # {"requests", "retries", "input_tokens", "output_tokens", "cost_usd", "priced"}

Prompt builders and teachers share the markers below: the system message starts with ``TASK: ir`` or
``TASK: paraphrase`` and the user's function request sits between ``<request>`` and ``</request>``.
HTTP backends retry 429/5xx/connection failures with exponential backoff and jitter (honouring
``retry-after``) and fail at once on any other 4xx. API keys never appear in names, reprs, errors or usage.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_OPEN, REQUEST_CLOSE = "<request>", "</request>"
TASK_IR, TASK_PARAPHRASE = "ir", "paraphrase"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"
# USD per million (input, output) tokens; a model matches its entry by prefix (dated snapshots included).
ANTHROPIC_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}


@dataclass(frozen=True)
class TeacherReply:
    """One reply: its text (JSON text when a schema was given and honoured) and what it cost."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Teacher(Protocol):
    """What every backend offers; ``name`` says which teacher produced a row."""

    name: str

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply: ...

    def usage(self) -> dict: ...

    def close(self) -> None: ...


class TeacherError(RuntimeError):
    """The teacher refused or could not answer this request (e.g. HTTP 400); other requests may succeed."""


class TeacherUnavailable(TeacherError):
    """The teacher cannot answer anything: no key, not reachable, auth refused, or failing through every retry."""


# ---- markers ---------------------------------------------------------------------------------

def wrap_request(prompt: str) -> str:
    """The user's function request between the shared markers."""
    return f"{REQUEST_OPEN}\n{prompt.strip()}\n{REQUEST_CLOSE}"


def task_of(messages: list[dict]) -> str | None:
    """The ``TASK: x`` first line of the system message, or None."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    first = system.strip().splitlines()[0] if system.strip() else ""
    return first.split(":", 1)[1].strip() if first.upper().startswith("TASK:") else None


def request_of(messages: list[dict]) -> str | None:
    """The request between the markers in the last user message, or None."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    start, end = user.find(REQUEST_OPEN), user.rfind(REQUEST_CLOSE)
    return user[start + len(REQUEST_OPEN):end].strip() if 0 <= start < end else None


def requested_count(messages: list[dict], default: int = 1) -> int:
    """The ``N: <int>`` line of the last user message (how many paraphrases are asked for)."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    match = re.search(r"^N:\s*(\d+)\s*$", user, re.MULTILINE)
    return int(match.group(1)) if match else default


# ---- usage and retries -----------------------------------------------------------------------

@dataclass
class Usage:
    """Cumulative requests, retries, tokens and cost of one teacher, for the stage manifest."""

    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True

    def add(self, reply: TeacherReply) -> TeacherReply:
        self.requests += 1
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.cost_usd += reply.cost_usd
        return reply

    def as_dict(self) -> dict:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6)}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt k waits backoff_s·2^k (capped), halved plus a random half."""

    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        cap = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return cap / 2 + random.uniform(0, cap / 2)


@dataclass(frozen=True)
class Failure:
    """A failed HTTP call, classified: retry it or not, after how long the server asked, and what to say."""

    retryable: bool
    message: str
    retry_after: float | None = None
    fatal: bool = False  # auth/not-found: no other request can succeed either


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait from ``retry-after-ms`` or ``retry-after`` (seconds), if it gave one."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers[name]) / scale
        except (KeyError, TypeError, ValueError):  # absent, no headers, or an HTTP date (then: our own backoff)
            continue
    return None


def status_failure(status: int, message: str, headers: Any = None) -> Failure:
    """429 and 5xx are transient; 401/403/404 mean nothing will work; other 4xx refuse this request only."""
    return Failure(retryable=status == 429 or status >= 500, message=f"HTTP {status}: {message}",
                   retry_after=retry_after_seconds(headers), fatal=status in (401, 403, 404))


def call_with_retries(call: Callable[[], T], classify: Callable[[Exception], Failure | None], *, what: str,
                      policy: RetryPolicy, usage: Usage, redact: Callable[[str], str] = str,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``call``; retry transient failures per ``policy`` (counted in ``usage.retries``), fail at once otherwise."""
    for attempt in range(policy.retries + 1):
        try:
            return call()
        except Exception as e:  # classified right below; what classify does not know re-raises
            failure = classify(e)
            if failure is None:
                raise
            message = redact(failure.message)
        if not failure.retryable:
            raise (TeacherUnavailable if failure.fatal else TeacherError)(f"{what}: {message}") from None
        if attempt == policy.retries:
            raise TeacherUnavailable(f"{what}: still failing after {policy.retries + 1} attempt(s): {message}") from None
        wait = policy.delay(attempt, failure.retry_after)
        log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", what, message, wait, attempt + 2, policy.retries + 1)
        usage.retries += 1
        sleep(wait)
    raise AssertionError("unreachable")


def _redactor(secret: str | None) -> Callable[[str], str]:
    return (lambda text: text.replace(secret, "***")) if secret else str


# ---- Anthropic ---------------------------------------------------------------------------------

def anthropic_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a Claude model, by longest matching prefix."""
    matches = [name for name in ANTHROPIC_PRICES if model.startswith(name)]
    return ANTHROPIC_PRICES[max(matches, key=len)] if matches else None


def anthropic_key(secret_block: str | None = None) -> str:
    """The API key from ``$ANTHROPIC_API_KEY``, else from the Prefect Secret block ``secret_block``."""
    if os.environ.get(ANTHROPIC_KEY_ENV):
        return os.environ[ANTHROPIC_KEY_ENV]
    if not secret_block:
        raise TeacherUnavailable(f"the Anthropic teacher needs an API key: set {ANTHROPIC_KEY_ENV} "
                                 "(or name a Prefect Secret block holding it)")
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(secret_block).get())
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing to the user
        raise TeacherUnavailable(f"the Anthropic teacher needs an API key: {ANTHROPIC_KEY_ENV} is not set and the "
                                 f"Prefect Secret block '{secret_block}' could not be loaded ({e})") from None


class AnthropicTeacher:
    """Claude through the official ``anthropic`` SDK (2.x); structured output as a forced tool call.

    ``temperature`` is not sent: API version 2026-10-21 (the SDK 2.x default) rejects sampling
    parameters, so Best-of-N candidates from Claude differ by the model's own sampling.
    """

    tool_name = "emit_json"

    def __init__(self, model: str = DEFAULT_ANTHROPIC_MODEL, *, secret_block: str | None = None,
                 base_url: str | None = None, timeout: float = 120.0, price: tuple[float, float] | None = None,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
        try:
            import anthropic
        except ImportError as e:
            raise TeacherUnavailable(f"the anthropic SDK is not installed ({e}); pip install anthropic") from None
        key = anthropic_key(secret_block)
        self._redact = _redactor(key)
        self._anthropic = anthropic
        # The SDK's own retries are off so that every retry goes through (and is counted by) our policy.
        self._client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self.model, self.base_url, self.retry, self._sleep = model, base_url, retry, sleep
        self.name = f"anthropic:{model}"
        self.price = price or anthropic_price(model)
        self._usage = Usage(priced=self.price is not None)
        if self.price is None:
            log.warning("no price known for Anthropic model %s: cost_usd stays 0 (give a price to count it)", model)

    def __repr__(self) -> str:
        return f"AnthropicTeacher(model={self.model!r}, base_url={self.base_url!r})"

    def _classify(self, e: Exception) -> Failure | None:
        if isinstance(e, self._anthropic.APIStatusError):
            return status_failure(e.status_code, e.message, e.response.headers)
        if isinstance(e, self._anthropic.APIConnectionError):  # includes timeouts
            return Failure(retryable=True, message=f"{type(e).__name__}: {e}")
        return None

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        params: dict[str, Any] = {
            "model": self.model, "max_tokens": max_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"],
        }
        if system:
            params["system"] = system
        if json_schema is not None:
            params["tools"] = [{"name": self.tool_name, "description": "Return the answer as JSON matching this schema.",
                                "input_schema": json_schema}]
            params["tool_choice"] = {"type": "tool", "name": self.tool_name}
        response = call_with_retries(lambda: self._client.messages.create(**params), self._classify,
                                     what=f"Anthropic {self.model}", policy=self.retry, usage=self._usage,
                                     redact=self._redact, sleep=self._sleep)
        tool_inputs = [b.input for b in response.content if b.type == "tool_use"]
        text = json.dumps(tool_inputs[0], ensure_ascii=False) if tool_inputs else \
            "".join(b.text for b in response.content if b.type == "text")
        tokens_in, tokens_out = response.usage.input_tokens, response.usage.output_tokens
        cost = (tokens_in * self.price[0] + tokens_out * self.price[1]) / 1e6 if self.price else 0.0
        return self._usage.add(TeacherReply(text, tokens_in, tokens_out, cost))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        self._client.close()


# ---- OpenAI-compatible servers ---------------------------------------------------------------------

class OpenAICompatibleTeacher:
    """Any ``/chat/completions`` server (vLLM, llama.cpp server, Ollama's /v1) over ``requests``."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str | None = None,
                 timeout: float = 300.0, price: tuple[float, float] | None = None,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
        import requests

        self._requests = requests
        self.base_url, self.model, self.timeout, self.retry, self._sleep = base_url.rstrip("/"), model, timeout, retry, sleep
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise TeacherUnavailable(f"the OpenAI-compatible teacher at {self.base_url} needs an API key: set {api_key_env}")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._redact = _redactor(key)
        self.name = f"openai:{self.base_url}" + (f"#{model}" if model else "")
        self.price = price
        self._usage = Usage(priced=price is not None)

    def __repr__(self) -> str:
        return f"OpenAICompatibleTeacher(base_url={self.base_url!r}, model={self.model!r})"

    def _classify(self, e: Exception) -> Failure | None:
        if isinstance(e, _HTTPStatus):
            return status_failure(e.status, e.message, e.headers)
        if isinstance(e, (self._requests.ConnectionError, self._requests.Timeout)):
            return Failure(retryable=True, message=f"{type(e).__name__}: {e}")
        return None

    def _post(self, body: dict) -> dict:
        response = self._requests.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers,
                                       timeout=self.timeout)
        if response.status_code >= 400:
            try:
                err = response.json().get("error", response.text)
                message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            except (ValueError, AttributeError):  # not JSON, or JSON without an error object
                message = response.text[:500]
            raise _HTTPStatus(response.status_code, message, response.headers)
        try:
            return response.json()
        except ValueError:
            raise _HTTPStatus(502, f"not JSON: {response.text[:200]!r}", response.headers) from None

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if self.model:
            body["model"] = self.model
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "ir", "schema": json_schema, "strict": True}}
        data = call_with_retries(lambda: self._post(body), self._classify, what=f"OpenAI-compatible {self.base_url}",
                                 policy=self.retry, usage=self._usage, redact=self._redact, sleep=self._sleep)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise TeacherError(f"OpenAI-compatible {self.base_url}: reply has no choices[0].message.content: "
                               f"{json.dumps(data)[:200]}") from None
        usage = data.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        cost = (tokens_in * self.price[0] + tokens_out * self.price[1]) / 1e6 if self.price else 0.0
        return self._usage.add(TeacherReply(text, tokens_in, tokens_out, cost))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        pass


class _HTTPStatus(Exception):
    def __init__(self, status: int, message: str, headers: Any):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.headers = status, message, headers


# ---- a local GGUF in llama.cpp -------------------------------------------------------------------

def grammar_schema(schema: Any, max_string_chars: int, max_items: int) -> Any:
    """``schema`` with every free string and array bounded, so a constrained reply ends within max_tokens.

    Also drops ``items: {}`` (any item), which llama-cpp-python's schema converter cannot read.
    """
    if isinstance(schema, list):
        return [grammar_schema(v, max_string_chars, max_items) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_schema(v, max_string_chars, max_items) for k, v in schema.items()}
    if out.get("type") == "string" and not {"maxLength", "pattern", "enum", "const"} & out.keys():
        out["maxLength"] = max_string_chars
    if out.get("type") == "array":
        out.setdefault("maxItems", max_items)
        if out.get("items") == {}:
            del out["items"]
    return out


# llama-cpp-python's schema converter lets raw control characters into strings ([^"\\]), which JSON forbids;
# llama.cpp's own converter excludes them, as this does.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_gbnf(schema: dict) -> str:
    """GBNF grammar text for ``schema`` whose every output is valid JSON (no raw control characters in strings)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    if _LOOSE_CHAR not in gbnf and "char ::=" in gbnf:
        raise RuntimeError("llama-cpp-python's JSON grammar changed its string rule; review adapters/teachers.py json_gbnf")
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


class LocalModelTeacher:
    """A GGUF (the embedded or a trained model) in llama.cpp; a JSON schema becomes a decoding grammar."""

    def __init__(self, path: str | Path, *, lora_path: Path | None = None, n_ctx: int = 4096, n_threads: int = 1,
                 seed: int = 0, max_string_chars: int = 200, max_items: int = 8, n_gpu_layers: int = 0):
        from adapters.llama_cpp import GgufChat

        self.path = Path(path)
        self._chat = GgufChat(self.path, n_ctx=n_ctx, n_threads=n_threads, lora_path=lora_path, n_gpu_layers=n_gpu_layers)
        self.name = f"local:{self.path.name}" + (f"+{Path(lora_path).name}" if lora_path else "")
        self.seed, self.max_string_chars, self.max_items = seed, max_string_chars, max_items
        self._grammars: dict[str, Any] = {}
        self._usage = Usage()

    def __repr__(self) -> str:
        return f"LocalModelTeacher(path={str(self.path)!r})"

    def _grammar(self, schema: dict):
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp import LlamaGrammar

            bounded = grammar_schema(schema, self.max_string_chars, self.max_items)
            self._grammars[key] = LlamaGrammar.from_string(json_gbnf(bounded), verbose=False)
        return self._grammars[key]

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        llm = self._chat.model.llm
        ids = self._chat.prompt_tokens(messages)
        room = self._chat.model.n_ctx - max_tokens
        if len(ids) > room:
            # Cutting the prompt would drop the system message and the start of the request: refuse instead.
            raise TeacherError(f"{self.name}: the prompt is {len(ids)} tokens but only {max(room, 0)} fit "
                               f"(n_ctx {self._chat.model.n_ctx} minus max_tokens {max_tokens}); shorten it or raise n_ctx")
        eos = llm.token_eos()
        if temperature > 0:
            # A different seed per request, so Best-of-N candidates differ yet a re-run repeats them.
            llm.set_seed(self.seed + self._usage.requests)
            sampling = {"temp": temperature, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
        else:
            sampling = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}
        grammar = self._grammar(json_schema) if json_schema is not None else None
        out: list[int] = []
        for token in llm.generate(ids, repeat_penalty=1.0, reset=True, grammar=grammar, **sampling):
            if token == eos:
                break
            out.append(int(token))
            if len(out) >= max_tokens:
                break
        return self._usage.add(TeacherReply(self._chat.model.detokenize(out), len(ids), len(out), 0.0))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        self._chat.close()


# ---- the template oracle ---------------------------------------------------------------------------

def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


class TemplateOracle:
    """Exact answers for templated prompts: the template's IR from the prompt's slots, or its other phrasings.

    Knows exactly the prompts in ``rows`` (paraphrases carry their parent's template and slots);
    any other request is an error, since the oracle cannot read free text.
    """

    name = "oracle"

    def __init__(self, library: Any, rows: Iterable[Any]):
        self.library = library
        self._known: dict[str, tuple[str, dict]] = {}
        for row in rows:
            text, found = " ".join(_field(row, "prompt").split()), (_field(row, "template_id"), dict(_field(row, "slots")))
            if found[0] not in library.templates:
                raise ValueError(f"template oracle: prompt row {_field(row, 'id')} names template '{found[0]}', which "
                                 f"the template library does not have")
            seen = self._known.setdefault(text, found)
            if seen != found and library.render_ir(*seen) != library.render_ir(*found):
                raise ValueError(f"template oracle: the prompt {text!r} comes from {seen[0]} and {found[0]} "
                                 "with different IRs; the oracle cannot tell which one is meant")
        self._usage = Usage()

    def __repr__(self) -> str:
        return f"TemplateOracle({len(self._known)} prompts)"

    def _lookup(self, messages: list[dict]) -> tuple[str, str, dict]:
        request = request_of(messages)
        if request is None:
            raise TeacherError(f"template oracle: no {REQUEST_OPEN}...{REQUEST_CLOSE} request in the user message")
        found = self._known.get(" ".join(request.split()))
        if found is None:
            raise TeacherError(f"template oracle: {request[:80]!r} is not one of the {len(self._known)} templated "
                               "prompts it was built with (the oracle only answers templated prompts and their paraphrases)")
        return request, *found

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        task = task_of(messages)
        if task == TASK_IR:
            _, template_id, slots = self._lookup(messages)
            text = json.dumps(self.library.render_ir(template_id, slots), ensure_ascii=False)
        elif task == TASK_PARAPHRASE:
            request, template_id, slots = self._lookup(messages)
            phrasings = self.library.templates[template_id].phrasings
            rendered = [self.library.render_prompt(template_id, slots, phrasing=i) for i in range(len(phrasings))]
            others = [p for p in rendered if " ".join(p.split()) != " ".join(request.split())]
            text = "\n".join(others[:requested_count(messages)])
        else:
            raise TeacherError(f"template oracle: the system message must start with 'TASK: {TASK_IR}' or "
                               f"'TASK: {TASK_PARAPHRASE}', got task {task!r}")
        return self._usage.add(TeacherReply(text))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        pass


# ---- picking a teacher by name ---------------------------------------------------------------------

def _oracle(arg: str, library: Any = None, rows: Iterable[Any] | None = None) -> TemplateOracle:
    if rows is None:
        raise ValueError("the oracle teacher needs the prompt rows it may be asked about (rows=...)")
    if library is None:
        from adapters.lift_templates import load_templates

        library = load_templates()
    return TemplateOracle(library, rows)


def _anthropic(arg: str, model: str | None = None, **kw) -> AnthropicTeacher:
    return AnthropicTeacher(arg or model or DEFAULT_ANTHROPIC_MODEL, **kw)


def _openai(arg: str, model: str | None = None, **kw) -> OpenAICompatibleTeacher:
    base_url, _, spec_model = arg.partition("#")
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"teacher 'openai:{arg}': expected openai:<http(s) base url>[#model], e.g. "
                         "openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    return OpenAICompatibleTeacher(base_url, spec_model or model, **kw)


def _local(arg: str, **kw) -> LocalModelTeacher:
    if arg in ("", "embedded"):
        from adapters.base_models import embedded_gguf

        return LocalModelTeacher(embedded_gguf(), **kw)
    return LocalModelTeacher(Path(arg).expanduser(), **kw)


BACKENDS: dict[str, Callable[..., Teacher]] = {"oracle": _oracle, "anthropic": _anthropic,
                                              "openai": _openai, "local": _local}


def parse_teacher_spec(spec: str) -> tuple[str, str]:
    """``"anthropic:claude-haiku-4-5"`` → ``("anthropic", "claude-haiku-4-5")``; an unknown kind is a ValueError."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in BACKENDS:
        raise ValueError(f"unknown teacher {spec!r}: expected one of oracle, anthropic[:model], "
                         "openai:<base_url>[#model], local:<path.gguf>|local:embedded")
    return kind, arg


def make_teacher(spec: str, **kw) -> Teacher:
    """The teacher named by ``spec``; keyword arguments go to its backend (None values are left out)."""
    kind, arg = parse_teacher_spec(spec)
    return BACKENDS[kind](arg, **{k: v for k, v in kw.items() if v is not None})
