"""Human review of IRs in the Prefect UI: the flow run pauses with a typed form per pending IR (or per batch).

Prefect pauses flow runs, never task runs, so this runs in the FLOW body (review.mode ``ui``):
``run_review`` chains the review task (which never waits), the pauses for what it left pending, and
the task again, which folds the answers in. Each answer goes to the decisions store at once, so a
pause that times out keeps every decision given before it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from prefect.input import RunInput
from pydantic import BaseModel, Field

from tasks.lift_sys.lift_ir import validate_ir
from tasks.common.records import read_jsonl
from tasks.common.reporting import say
from tasks.lift_sys.review_decisions import Decision, StoredDecision, append_decisions, load_store
from tasks.lift_sys.review_ir import ReviewConfig, review_ir, store_path


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
