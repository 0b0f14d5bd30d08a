"""What every teacher and every prompt builder share: the reply, the protocol, the errors and the request markers.

The system message starts with ``TASK: ir`` or ``TASK: paraphrase`` and the user's function request
sits between ``<request>`` and ``</request>``, so a teacher that reads prompts (the template oracle)
finds them the same way whoever built the messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from adapters.user_errors import UserInputError

REQUEST_OPEN, REQUEST_CLOSE = "<request>", "</request>"
TASK_IR, TASK_PARAPHRASE = "ir", "paraphrase"


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


class TeacherUnavailable(TeacherError, UserInputError):
    """The teacher cannot answer anything: no key, not reachable, auth refused, or failing through every retry."""


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
