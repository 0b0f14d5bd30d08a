"""Ollama: Modelfile text, a ChatML chat template in Ollama's Go-template syntax, and model creation.

Creation goes through the official ``ollama`` client (blobs, then ``/api/create`` with ``files`` /
``adapters``), so it works against a remote server too. Connection failures, timeouts and 5xx
answers are retried with exponential backoff; a 4xx fails at once with the server's message.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

DEFAULT_HOST = "http://127.0.0.1:11434"
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")
T = TypeVar("T")


def default_host() -> str:
    """``$OLLAMA_HOST`` or Ollama's default local address."""
    return os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


class OllamaError(RuntimeError):
    """The server answered but refused or failed the request."""


class OllamaUnavailable(OllamaError):
    """No server answered at the host, or it kept failing (5xx) through every retry."""


def chatml_template(default_system: str | None = None) -> str:
    """A ChatML TEMPLATE for Ollama (``.Messages`` form) that renders like the HF ChatML chat template.

    ``default_system`` is the system turn the HF template inserts when a conversation has none
    (SmolLM2's does); Ollama's own SYSTEM, when set, arrives as a first system message instead.
    A trailing assistant message is left open so Ollama can continue it.
    """
    head = ""
    if default_system is not None:
        text = json.dumps(default_system).join(("{{ ", " }}")) if "{{" in default_system else default_system
        head = ('{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
                f"<|im_start|>system\n{text}<|im_end|>\n{{{{ end }}}}\n")
    return head + (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}\n"
        '{{- if or (ne .Role "assistant") (not $last) }}<|im_end|>\n'
        "{{ end }}\n"
        '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n'
        "{{ end }}\n"
        "{{- end }}"
    )


def _quoted_block(keyword: str, text: str) -> str:
    if '"""' in text:
        raise ValueError(f'{keyword} text cannot contain """ (the Modelfile block delimiter)')
    return f'{keyword} """{text}"""'


def modelfile_text(*, model: Path, adapter: Path | None, template: str, system: str | None,
                   parameters: Mapping[str, Any]) -> str:
    """The Modelfile for ``ollama create -f``: FROM, ADAPTER, TEMPLATE, SYSTEM and PARAMETER lines."""
    lines = [f"FROM {Path(model).resolve()}"]
    if adapter is not None:
        lines.append(f"ADAPTER {Path(adapter).resolve()}")
    lines.append(_quoted_block("TEMPLATE", template))
    if system:
        lines.append(_quoted_block("SYSTEM", system))
    for name, value in parameters.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(f"PARAMETER {name} {json.dumps(v) if isinstance(v, str) else v}")
    return "\n".join(lines) + "\n"


def is_retryable(exc: BaseException) -> bool:
    """Transient failures only: no connection, timeouts/broken transfers, or a 5xx answer."""
    import httpx
    from ollama import ResponseError

    if isinstance(exc, ResponseError):
        return exc.status_code >= 500
    return isinstance(exc, (ConnectionError, httpx.TransportError))


class OllamaServer:
    """The Ollama calls an install needs, with backoff on transient failures."""

    def __init__(self, host: str, *, timeout: float = 600.0, connect_timeout: float = 5.0,
                 retries: int = 3, backoff_s: float = 1.0):
        try:
            import httpx
            from ollama import Client, ResponseError
        except ImportError as e:
            raise RuntimeError(f"the ollama client is not installed ({e}); pip install ollama") from None
        self.host, self.retries, self.backoff_s = host, retries, backoff_s
        self._response_error = ResponseError
        self._client = Client(host=host, timeout=httpx.Timeout(timeout, connect=connect_timeout))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified right below
                if isinstance(e, self._response_error) and not is_retryable(e):
                    raise OllamaError(f"Ollama at {self.host}: {what} failed: {e}") from None
                if not is_retryable(e):
                    raise
                if attempt == self.retries:
                    raise OllamaUnavailable(
                        f"Ollama at {self.host}: {what} failed ({self.retries + 1} attempt(s)): {e}") from None
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """Raise OllamaUnavailable unless a server answers ``GET /api/tags``."""
        self._call("listing models (reachability check)", self._client.list)

    def push_blob(self, path: Path) -> str:
        """Upload one file as a blob; returns its ``sha256:<hex>`` digest."""
        return self._call(f"uploading {Path(path).name}", lambda: self._client.create_blob(path))

    def create(self, model: str, *, files: dict[str, str], adapters: dict[str, str] | None = None,
               template: str | None = None, system: str | None = None,
               parameters: Mapping[str, Any] | None = None) -> str:
        """``/api/create`` from uploaded blobs; returns the final status."""
        resp = self._call(f"creating model {model!r}", lambda: self._client.create(
            model=model, files=files, adapters=adapters or None, template=template, system=system,
            parameters=dict(parameters) if parameters else None, stream=False))
        if resp.status != "success":
            raise OllamaError(f"Ollama at {self.host}: creating model {model!r} ended with status {resp.status!r}")
        return resp.status

    def generate(self, model: str, prompt: str, *, num_predict: int = 32) -> str:
        """One short non-streaming completion, to prove the model loads and answers."""
        resp = self._call(f"generating with {model!r}", lambda: self._client.generate(
            model=model, prompt=prompt, stream=False, options={"num_predict": num_predict}))
        return resp.response or ""

    def chat(self, model: str, messages: list[dict], *, num_predict: int = 200) -> str:
        """One non-streaming chat reply (the Modelfile's template and stops apply)."""
        resp = self._call(f"chatting with {model!r}", lambda: self._client.chat(
            model=model, messages=messages, stream=False, options={"num_predict": num_predict}))
        return resp.message.content or ""

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OllamaServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
