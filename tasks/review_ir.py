"""Review generated IRs: automatic pre-checks, then human decisions from a JSONL file or the Prefect UI.

Every IR is pre-checked (tasks/ir_checks.py) → accept, reject or needs review. Human decisions
(accept / reject / correct with a fixed IR) live in an append-only decisions store keyed by item id
AND a hash of the IR reviewed: a re-run never asks again about the same IR, while a re-generated,
different IR is asked about afresh. Human decisions win over the automatic ones.

Prefect pauses flow runs, never task runs, so the stage comes in two parts:
- ``review_ir`` (the task, stage ``review``) pre-checks, applies the decisions file and the stored
  decisions, and writes accepted.jsonl, rejected.jsonl and pending.jsonl. It never waits for anyone.
- ``review_in_ui(items, cfg, store)`` runs in the FLOW body (mode ``ui``): it pauses the flow run
  with a typed form per item (or per batch of ``batch_size``) and stores each answer at once.
``run_review`` chains them for the flow: task → UI pauses → task again, which folds the answers in.

A decisions file has one line per item: ``{"id", "decision": "accept"|"reject"|"correct",
"ir"?: corrected IR (decision correct only), "note"?, "ir_sha"?}``; copy ``id``/``ir_sha`` from
pending.jsonl (with ``ir_sha``, a decision about an IR that has since been re-generated is skipped).

    python -m tasks.review_ir --irs data/lift_sys/generate_ir/ir.jsonl --out data/lift_sys/review \\
        [--set mode=file --set decisions_file=my_decisions.jsonl]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.lift_ir import validate_ir
from tasks.ir_checks import precheck
from tasks.records import RecordError, iter_jsonl, read_jsonl, read_models, write_jsonl
from tasks.reporting import publish_table, say
from tasks.stage import cached, module_source, prefect_cache_key, stage_key, stage_output
from tasks.stage_cli import config_from_args, stage_parser

STAGE = "review"
Decision = Literal["accept", "reject", "correct"]


class ReviewConfig(BaseModel):
    """How IRs that the pre-checks flag get a human decision."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["none", "file", "ui"] = Field("none", description="Who reviews flagged IRs: none (stored decisions only), file (decisions_file), ui (pause the flow with a form in the Prefect UI)")
    decisions_file: Path | None = Field(None, description="JSONL of decisions {id, decision, ir?, note?, ir_sha?}; required by mode file, applied in any mode when set")
    decisions_store: Path | None = Field(None, description="Append-only store of every human decision; default <data_dir>/lift_sys/reviews/decisions.jsonl (next to the stage directory)")
    pending: Literal["exclude", "accept"] = Field("exclude", description="What happens to flagged IRs nobody has decided on yet: kept out of the accepted set, or accepted unreviewed")
    batch_size: int = Field(1, ge=1, description="Mode ui: items per form (1 = one pause per item)")
    timeout_s: int = Field(3600, gt=0, description="Mode ui: seconds a pause waits for an answer before the flow run fails (decisions given so far are kept)")
    poll_interval_s: int = Field(10, ge=1, description="Mode ui: seconds between checks whether the paused run was resumed")
    max_reject_rate: float = Field(0.5, ge=0, le=1, description="Fail when the pre-checks reject more than this share of the IRs (a broken teacher, not bad luck); reviewers' rejections do not count")

    @model_validator(mode="after")
    def _file_mode_needs_a_file(self):
        if self.mode == "file" and self.decisions_file is None:
            raise ValueError("review.mode 'file' needs review.decisions_file (a JSONL of {id, decision, ir?, note?})")
        return self


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


class IRRow(BaseModel):
    """The fields of an ir.jsonl row this stage relies on (other fields pass through)."""

    model_config = ConfigDict(extra="allow")
    id: str
    prompt: str
    category: str
    ir: dict | None


def ir_sha(ir: dict | None) -> str:
    """Identity of the IR a decision was made about (key order and spacing do not matter)."""
    text = json.dumps(ir, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def store_path(cfg: ReviewConfig, out_dir: Path) -> Path:
    """The decisions store: configured, or ``reviews/decisions.jsonl`` beside the stage directory."""
    return Path(cfg.decisions_store) if cfg.decisions_store else Path(out_dir).parent / "reviews" / "decisions.jsonl"


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


def read_items(path: Path) -> list[dict]:
    """ir.jsonl rows; a missing field or a repeated id is an error naming the file and record."""
    rows = [r.model_dump() for r in read_models(path, IRRow)]
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        if row["id"] in seen:
            raise RecordError(f"{path}: records {seen[row['id']]} and {i} share the id {row['id']!r}")
        seen[row["id"]] = i
    return rows


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


def auto_check(item: dict) -> tuple[str, list[dict]]:
    """The pre-check's decision and problems for one item (an item without an IR is rejected)."""
    if not isinstance(item.get("ir"), dict):
        return "reject", [{"check": "ir", "message": "no IR: every candidate failed the schema"}]
    result = precheck(item["prompt"], item["ir"])
    return result.decision, [{"check": p.check, "message": p.message} for p in result.problems]


def route(item: dict, human: StoredDecision | None) -> tuple[str, dict]:
    """Where one item goes ("accepted" | "rejected" | "pending") and the row written there."""
    auto, problems = auto_check(item)
    row = {**item, "ir_sha": ir_sha(item.get("ir"))}
    if human is not None:
        review = {"by": human.by, "decision": human.decision, "note": human.note, "problems": problems}
        if human.decision == "reject":
            return "rejected", {**row, "review": review,
                                "reasons": ["rejected by reviewer" + (f": {human.note}" if human.note else "")]}
        if human.decision == "correct":
            return "accepted", {**row, "ir": human.ir, "original_ir": item["ir"], "review": review}
        if item["ir"] is None or validate_ir(item["ir"])[1]:  # a stored accept cannot make a broken IR trainable
            return "rejected", {**row, "review": review, "reasons": [f"{p['check']}: {p['message']}" for p in problems]}
        return "accepted", {**row, "review": review}
    review = {"by": "auto", "decision": auto, "problems": problems}
    if auto == "accept":
        return "accepted", {**row, "review": review}
    if auto == "reject":
        return "rejected", {**row, "review": review, "reasons": [f"{p['check']}: {p['message']}" for p in problems]}
    return "pending", {**row, "problems": problems}


def _key_inputs(cfg: ReviewConfig, irs: Path, out_dir: Path) -> dict[str, Path]:
    """Everything the review's output depends on: the IRs, the decisions file and the store as it is now."""
    named = {"irs": irs}
    if cfg.decisions_file:
        named["decisions_file"] = Path(cfg.decisions_file)
    store = store_path(cfg, out_dir)
    if store.exists():
        named["store"] = store
    return named


def _irs_file(inputs: Path) -> Path:
    inputs = Path(inputs)
    return inputs / "ir.jsonl" if inputs.is_dir() else inputs


def review(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> Path:
    """Write accepted.jsonl, rejected.jsonl and pending.jsonl for the IRs in ``inputs`` (ir.jsonl or its stage dir)."""
    out_dir, irs = Path(out_dir), _irs_file(inputs)
    if cfg.decisions_file and not Path(cfg.decisions_file).exists():
        raise FileNotFoundError(f"review.decisions_file {cfg.decisions_file} does not exist")
    key = stage_key(STAGE, cfg, _key_inputs(cfg, irs, out_dir), module_source(review))
    if cached(out_dir, key):
        return out_dir
    items = read_items(irs)
    by_id = {it["id"]: it for it in items}
    store, stale = store_path(cfg, out_dir), []
    if cfg.decisions_file:
        from_file, stale = read_decisions_file(cfg.decisions_file, by_id)
        added = append_decisions(store, from_file)
        say(f"review: {len(from_file)} decisions in {cfg.decisions_file} ({added} new to the store {store})")
        if stale:
            say(f"review: skipped {len(stale)} decisions made on IRs since re-generated: {stale[:5]}")
    decided = load_store(store)
    routed: dict[str, list[dict]] = {"accepted": [], "rejected": [], "pending": []}
    checks: Counter = Counter()
    for item in items:
        where, row = route(item, decided.get((item["id"], ir_sha(item["ir"]))))
        routed[where].append(row)
        checks.update(p["check"] for p in row.get("problems") or row["review"]["problems"])
        if where == "pending" and cfg.pending == "accept":
            routed["accepted"].append({**row, "review": {"by": "auto", "decision": "accept", "unreviewed": True,
                                                         "problems": row["problems"]}})
    auto_rejected = [row for row in routed["rejected"] if row["review"]["by"] == "auto"]
    reject_rate = len(auto_rejected) / max(1, len(items))
    if reject_rate > cfg.max_reject_rate:
        reasons = Counter(r.split(":")[0] for row in auto_rejected for r in row["reasons"])
        raise ValueError(f"review: the pre-checks rejected {len(auto_rejected)}/{len(items)} IRs ({reject_rate:.0%}), above "
                         f"review.max_reject_rate={cfg.max_reject_rate}; by check: {dict(reasons.most_common(5))}. "
                         f"Look at the teacher's output in {irs}, or raise review.max_reject_rate")
    # The decisions file may have grown the store: key the output by the store as it is now,
    # so that an unchanged re-run is a cache hit.
    named = _key_inputs(cfg, irs, out_dir)
    with stage_output(STAGE, out_dir, stage_key(STAGE, cfg, named, module_source(review)), cfg, named) as out:
        for name, rows in routed.items():
            write_jsonl(out.tmp / f"{name}.jsonl", rows)
        by = Counter(row["review"]["by"] for row in routed["accepted"] + routed["rejected"])
        out.counts = {"items": len(items), "accepted": len(routed["accepted"]), "rejected": len(routed["rejected"]),
                      "pending_review": len(routed["pending"]),
                      "corrected": sum(row["review"]["decision"] == "correct" for row in routed["accepted"]),
                      "stale_decisions": len(stale), **{f"by_{k.replace('-', '_')}": n for k, n in sorted(by.items())}}
        out.metrics = {"reject_rate": round(reject_rate, 4)}
        out.extra["decisions_store"] = str(store)
        out.extra["problems_by_check"] = dict(checks)
    table = [{"category": c, **{k: sum(r["category"] == c for r in rows) for k, rows in routed.items()}}
             for c in sorted({it["category"] for it in items})]
    publish_table("lift-sys-review", table, f"Review: {out.counts['accepted']} accepted, {out.counts['rejected']} "
                  f"rejected, {out.counts['pending_review']} pending (decisions: {store})")
    return out_dir


def _prefect_key(context, parameters: dict) -> str | None:
    """prefect_cache_key over the named inputs, so a changed store or decisions file re-runs the task."""
    cfg, out_dir = parameters.get("cfg"), parameters.get("out_dir")
    if cfg is None or out_dir is None:
        return None
    named = _key_inputs(cfg, _irs_file(parameters["inputs"]), Path(out_dir))
    return prefect_cache_key(context, {**parameters, "inputs": named})


@task(name=STAGE, cache_key_fn=_prefect_key, persist_result=True)
def review_ir(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: pre-checks + file and stored decisions; never pauses (see ``review_in_ui``)."""
    return review(cfg, inputs, out_dir)


# --- Human review in the Prefect UI (flow side) ---------------------------------------------

class ReviewAnswer(BaseModel):
    """A reviewer's answer about one IR."""

    decision: Decision = Field(description="accept the IR, reject it, or correct it (paste the fixed IR in corrected_ir)")
    corrected_ir: str = Field("", description="decision 'correct': the corrected IR as JSON")
    note: str = Field("", description="why (kept with the decision)")


class ReviewForm(RunInput, ReviewAnswer):
    """The form a paused flow run shows for one IR."""


class ItemDecision(ReviewAnswer):
    id: str = Field(description="Item id (leave as given)")


class BatchReviewForm(RunInput):
    """The form a paused flow run shows for a batch of IRs: one decision per item."""

    decisions: list[ItemDecision] = Field(description="One entry per item, in the order shown")


def item_markdown(item: dict, position: str = "") -> str:
    """What a reviewer reads: the request, the pre-check problems and the IR."""
    problems = "\n".join(f"- **{p['check']}**: {p['message']}" for p in item.get("problems", [])) or "- (none)"
    quoted = "\n".join(f"> {line}" for line in item["prompt"].splitlines())
    return (f"### {position}`{item['id']}` ({item['category']})\n\n**Request**\n\n{quoted}\n\n"
            f"**Pre-check problems**\n\n{problems}\n\n**IR**\n\n```json\n{json.dumps(item['ir'], indent=2, ensure_ascii=False)}\n```\n")


def decision_from_answer(item: dict, decision: str, corrected_ir: str, note: str) -> tuple[StoredDecision | None, str]:
    """A reviewer's answer as a stored decision, or (None, what to fix) when a correction is not a valid IR."""
    fixed = None
    if decision == "correct":
        _, errors = validate_ir(corrected_ir or "")
        if errors:
            return None, f"`{item['id']}`: the corrected IR is not valid: " + "; ".join(errors[:3])
        fixed = json.loads(corrected_ir)
    return StoredDecision(id=item["id"], ir_sha=item["ir_sha"], decision=decision, ir=fixed, note=note,
                          by="human-ui"), ""


def _pause_key(items: list[dict], attempt: int) -> str:
    digest = hashlib.sha256("|".join(f"{it['id']}@{it['ir_sha']}" for it in items).encode()).hexdigest()[:16]
    return f"review-{digest}-{attempt}"  # pause keys allow letters, digits and dashes only


def _ask(items: list[dict], cfg: ReviewConfig, header: str) -> list[StoredDecision]:
    """Pause until a reviewer answers validly about ``items``; an invalid answer is asked again with the reason."""
    from prefect.flow_runs import pause_flow_run

    batch, error = cfg.batch_size > 1, ""
    for attempt in itertools.count():
        shown = "\n---\n".join(item_markdown(it, f"{i}. " if batch else "") for i, it in enumerate(items, 1))
        fix = f"**Please fix:** {error}\n\n" if error else ""
        if batch:
            hint = "Each item is pre-set to *accept*: change the ones to reject or correct (corrected_ir: the fixed IR JSON)."
            form = BatchReviewForm.with_initial_data(
                description=f"## {header}\n\n{fix}{hint}\n\n{shown}",
                decisions=[ItemDecision(id=it["id"], decision="accept").model_dump() for it in items])
        else:
            hint = "Choose a *decision*; to correct the IR, edit *corrected_ir* (pre-filled with the IR below)."
            form = ReviewForm.with_initial_data(description=f"## {header}\n\n{fix}{hint}\n\n{shown}",
                                                corrected_ir=json.dumps(items[0]["ir"], indent=2, ensure_ascii=False))
        answer = pause_flow_run(wait_for_input=form, timeout=cfg.timeout_s, poll_interval=cfg.poll_interval_s,
                                key=_pause_key(items, attempt))
        answers = answer.decisions if batch else [ItemDecision(id=items[0]["id"], **answer.model_dump())]
        by_id = {it["id"]: it for it in items}
        if sorted(a.id for a in answers) != sorted(by_id):
            error = f"answer exactly once for each of the ids {sorted(by_id)}, got {[a.id for a in answers]}"
            continue
        results = [decision_from_answer(by_id[a.id], a.decision, a.corrected_ir, a.note) for a in answers]
        error = " ".join(msg for _, msg in results if msg)
        if not error:
            return [d for d, _ in results]


def review_in_ui(items: list[dict], cfg: ReviewConfig, store: Path) -> list[StoredDecision]:
    """Ask a human about each pending item in the Prefect UI, pausing the flow run; answers go to the store at once.

    Call from the flow body between tasks: Prefect pauses flow runs, not task runs. ``items`` are
    rows of the stage's pending.jsonl. Items already in the store are skipped.
    """
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.exceptions import FlowPauseTimeout

    if FlowRunContext.get() is None or TaskRunContext.get() is not None:
        raise RuntimeError("review.mode 'ui' pauses a flow run: call review_in_ui from a flow body, not a task or a "
                           "plain script; without Prefect use review.mode: file with review.decisions_file")
    known = load_store(store)
    todo = [it for it in items if (it["id"], it["ir_sha"]) not in known]
    decided: list[StoredDecision] = []
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start:start + cfg.batch_size]
        header = (f"Review IR {start + 1} of {len(todo)}" if cfg.batch_size == 1
                  else f"Review IRs {start + 1}–{start + len(batch)} of {len(todo)}")
        say(f"review: waiting in the Prefect UI for a decision on {[it['id'] for it in batch]} (Resume form)")
        try:
            answers = _ask(batch, cfg, header)
        except FlowPauseTimeout:
            raise FlowPauseTimeout(f"review: nobody answered within review.timeout_s={cfg.timeout_s}s; the "
                                   f"{len(decided)} decisions given are kept in {store}, re-run to continue") from None
        append_decisions(store, answers)
        decided += answers
    return decided


def run_review(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> Path:
    """The review stage as a flow runs it: the task; in mode 'ui' the pauses for pending items, then the task again."""
    out = review_ir(cfg, inputs, out_dir)
    if cfg.mode != "ui":
        return out
    pending = read_jsonl(Path(out) / "pending.jsonl")
    if pending and review_in_ui(pending, cfg, store_path(cfg, out_dir)):
        out = review_ir(cfg, inputs, out_dir)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.review_ir", __doc__, ReviewConfig)
    parser.add_argument("--irs", type=Path, required=True, help="ir.jsonl of the generate_ir stage (or its directory)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = config_from_args(ReviewConfig, args, parser)
    if cfg.mode == "ui":
        parser.error("mode ui pauses a Prefect flow run: run the lift-sys flow, or use --set mode=file --set decisions_file=FILE")
    out = review(cfg, args.irs, args.out)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    print(f"{out}: {counts['accepted']} accepted, {counts['rejected']} rejected, {counts['pending_review']} pending review")


if __name__ == "__main__":
    main()
