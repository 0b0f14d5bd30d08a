"""Human decisions about generated IRs: an append-only store, and the decisions files people write.

The store keeps every decision keyed by item id AND a hash of the IR reviewed: a re-run never asks
again about the same IR, while a re-generated, different IR is asked about afresh. Lines are only
ever appended (rewrite + rename, so a crash never leaves half a line); later lines win.

A decisions file has one line per item: ``{"id", "decision": "accept"|"reject"|"correct",
"ir"?: corrected IR (decision correct only), "note"?, "ir_sha"?}``; copy ``id``/``ir_sha`` from the
review stage's pending.jsonl (with ``ir_sha``, a decision about an IR that has since been re-generated is skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.lift_sys.lift_ir import validate_ir
from tasks.common.records import RecordError, iter_jsonl, read_models

Decision = Literal["accept", "reject", "correct"]


class StoredDecision(BaseModel):
    """One human decision as the store keeps it: about item ``id`` with the IR hashing to ``ir_sha``."""

    model_config = ConfigDict(extra="forbid")
    id: str
    ir_sha: str
    decision: Decision
    ir: dict | None = Field(None, description="The corrected IR (decision 'correct')")
    note: str = ""
    by: Literal["human-ui", "human-file"]
    decided_at: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


class FileDecision(BaseModel):
    """One line of a decisions file."""

    model_config = ConfigDict(extra="forbid")
    id: str
    decision: Decision
    ir: dict | None = None
    note: str = ""
    ir_sha: str | None = None



def ir_sha(ir: dict | None) -> str:
    """Identity of the IR a decision was made about (key order and spacing do not matter)."""
    text = json.dumps(ir, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]



def load_store(path: Path) -> dict[tuple[str, str], StoredDecision]:
    """Latest decision per (id, ir_sha); later lines win."""
    if not Path(path).exists():
        return {}
    return {(d.id, d.ir_sha): d for d in read_models(path, StoredDecision)}


def append_decisions(path: Path, decisions: list[StoredDecision]) -> int:
    """Append decisions not already the latest for their key; rewrite + rename, so a crash never leaves half a line."""
    path = Path(path)
    latest = load_store(path)
    fresh = [d for d in decisions if (old := latest.get((d.id, d.ir_sha))) is None
             or (old.decision, old.ir, old.note) != (d.decision, d.ir, d.note)]
    if not fresh:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    old_bytes = path.read_bytes() if path.exists() else b""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(old_bytes if not old_bytes or old_bytes.endswith(b"\n") else old_bytes + b"\n")
        fh.writelines(d.model_dump_json().encode() + b"\n" for d in fresh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(fresh)



def read_decisions_file(path: Path, items: dict[str, dict]) -> tuple[list[StoredDecision], list[str]]:
    """Decisions of a file about the current IRs, and the ids whose decision is stale (made on another IR)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"review.decisions_file {path} does not exist")
    decisions, stale, lines, unknown = [], [], {}, []
    for lineno, row in _numbered_rows(path):
        try:
            fd = FileDecision.model_validate(row)
        except ValidationError as e:
            err = e.errors()[0]
            raise RecordError(f"{path}:{lineno}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
        if fd.id not in items:
            unknown.append(fd.id)
            continue
        if fd.id in lines:
            raise RecordError(f"{path}:{lineno}: id {fd.id!r} already decided on line {lines[fd.id]}")
        lines[fd.id] = lineno
        current = items[fd.id]["ir"]
        if fd.ir_sha and fd.ir_sha != ir_sha(current):
            stale.append(fd.id)
            continue
        if fd.decision == "correct":
            if fd.ir is None:
                raise RecordError(f"{path}:{lineno}: field 'ir': decision 'correct' needs the corrected IR")
            _, errors = validate_ir(fd.ir)
            if errors:
                raise RecordError(f"{path}:{lineno}: field 'ir.{errors[0]}'" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
        elif fd.ir is not None:
            raise RecordError(f"{path}:{lineno}: field 'ir': only decision 'correct' carries an IR (got {fd.decision!r})")
        elif fd.decision == "accept" and (current is None or validate_ir(current)[1]):
            raise RecordError(f"{path}:{lineno}: id {fd.id!r}: cannot accept an IR that fails the schema; use decision 'correct' with a fixed IR")
        decisions.append(StoredDecision(id=fd.id, ir_sha=ir_sha(current), decision=fd.decision, ir=fd.ir,
                                        note=fd.note, by="human-file"))
    if unknown:
        shown = ", ".join(map(repr, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise RecordError(f"{path}: decisions about ids that are not in the IRs under review: {shown}")
    return decisions, stale


def _numbered_rows(path: Path):
    """(line number, JSON object) per non-blank line; bad bytes or malformed JSON name file and line."""
    return iter_jsonl(path)
