"""Training records and JSONL I/O with errors that name the file, line and field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar

import jsonlines
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRecord(BaseModel):
    """The canonical training record every project writes (DESIGN.md)."""

    model_config = ConfigDict(extra="forbid")
    messages: list[Message] = Field(min_length=2)
    source: str
    kind: str
    meta: dict[str, Any] = Field(default_factory=dict)


class RecordError(ValueError):
    """A bad record in an input file; the message names file, line and field."""


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file; a malformed line raises RecordError naming the file and line."""
    path = Path(path)
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_models(path: Path, model: type[M]) -> list[M]:
    """Read a JSONL file as pydantic ``model`` records; a bad one raises RecordError naming file, record and field."""
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(model.model_validate(row))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise RecordError(f"{path}: record {i}: field '{field}': {err['msg']}") from None
    return out


def read_chat_records(path: Path) -> list[ChatRecord]:
    """Read canonical chat records, validating each one."""
    return read_models(path, ChatRecord)


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict]) -> int:
    """Write rows atomically (temp file + rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with jsonlines.open(tmp, mode="w", compact=True) as writer:
        for row in rows:
            writer.write(row.model_dump(mode="json") if isinstance(row, BaseModel) else row)
            n += 1
    os.replace(tmp, path)
    return n
