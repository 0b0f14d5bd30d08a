"""Any OpenAI-compatible ``/chat/completions`` server as a teacher (vLLM, llama.cpp server, Ollama's /v1).

Structured output is ``response_format: json_schema``; an optional API key comes from the
environment variable the config names, and never appears in names, reprs, errors or usage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from adapters.teachers.protocol import TeacherError, TeacherReply, TeacherUnavailable
from adapters.teachers.retries import Failure, RetryPolicy, Usage, call_with_retries, redactor, status_failure


def api_key_missing(base_url: str, api_key_env: str | None) -> str | None:
    """What to fix when the server needs a key from ``api_key_env`` and the variable is not set (else None)."""
    if api_key_env and not os.environ.get(api_key_env):
        return f"the OpenAI-compatible teacher at {base_url.rstrip('/')} needs an API key: set {api_key_env}"
    return None


class OpenAICompatibleTeacher:
    """Any ``/chat/completions`` server (vLLM, llama.cpp server, Ollama's /v1) over ``requests``."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str | None = None,
                 timeout: float = 300.0, price: tuple[float, float] | None = None,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
        import requests

        self._requests = requests
        self.base_url, self.model, self.timeout, self.retry, self._sleep = base_url.rstrip("/"), model, timeout, retry, sleep
        missing = api_key_missing(self.base_url, api_key_env)
        if missing:
            raise TeacherUnavailable(missing)
        key = os.environ.get(api_key_env) if api_key_env else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._redact = redactor(key)
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
