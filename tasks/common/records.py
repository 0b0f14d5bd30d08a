"""Training records and JSONL I/O with errors that name the file, line and field."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, TypeVar

import jsonlines
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.user_errors import UserInputError

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


class RecordError(ValueError, UserInputError):
    """A bad record in an input file; the message names file, line and field."""


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file; a malformed line raises RecordError naming the file and line."""
    return [row for _, row in iter_jsonl(path)]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) per non-blank line; bad bytes or JSON raise RecordError naming file and line."""
    path = Path(path)
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
            yield lineno, row


def read_json_rows(path: Path) -> list[dict]:
    """Rows of a JSON array of objects or of a JSONL file; bad bytes or JSON raise RecordError naming file and line."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.lstrip().startswith(b"["):
        return read_jsonl(path)
    try:
        rows = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RecordError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise RecordError(f"{path}: record {i}: expected a JSON object, got {type(row).__name__}")
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # unique per writer
    n = 0
    try:
        with jsonlines.open(tmp, mode="w", compact=True) as writer:
            for row in rows:
                writer.write(row.model_dump(mode="json") if isinstance(row, BaseModel) else row)
                n += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return n
