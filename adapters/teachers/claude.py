"""Claude as a teacher, through the official ``anthropic`` SDK, with token prices for the stage's cost.

The key comes from ``$ANTHROPIC_API_KEY`` or a Prefect Secret block, and never appears in names,
reprs, errors or usage. Structured output is a forced tool call whose input schema is the JSON schema.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from adapters.teachers.protocol import TeacherReply, TeacherUnavailable
from adapters.teachers.retries import Failure, RetryPolicy, Usage, call_with_retries, redactor, status_failure

log = logging.getLogger(__name__)

ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"
# USD per million (input, output) tokens; a model matches its entry by prefix (dated snapshots included).
ANTHROPIC_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
MISSING_KEY = (f"the Anthropic teacher needs an API key: set {ANTHROPIC_KEY_ENV} "
               "(or name a Prefect Secret block holding it)")


def anthropic_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a Claude model, by longest matching prefix."""
    matches = [name for name in ANTHROPIC_PRICES if model.startswith(name)]
    return ANTHROPIC_PRICES[max(matches, key=len)] if matches else None


def anthropic_key_missing(secret_block: str | None = None) -> str | None:
    """What to fix when no key can be had without asking Prefect (None: the variable is set, or a block is named)."""
    return None if os.environ.get(ANTHROPIC_KEY_ENV) or secret_block else MISSING_KEY


def anthropic_key(secret_block: str | None = None) -> str:
    """The API key from ``$ANTHROPIC_API_KEY``, else from the Prefect Secret block ``secret_block``."""
    if os.environ.get(ANTHROPIC_KEY_ENV):
        return os.environ[ANTHROPIC_KEY_ENV]
    if not secret_block:
        raise TeacherUnavailable(MISSING_KEY)
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
        self._redact = redactor(key)
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
