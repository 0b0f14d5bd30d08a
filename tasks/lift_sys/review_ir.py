"""Review generated IRs: automatic pre-checks, then human decisions from a JSONL file or the Prefect UI.

Every IR is pre-checked (tasks/lift_sys/ir_checks.py) → accept, reject or needs review. Human decisions
(accept / reject / correct with a fixed IR) live in an append-only store keyed by item id AND a hash
of the IR reviewed (tasks/lift_sys/review_decisions.py, which also reads decisions files). Human decisions win
over the automatic ones.

Prefect pauses flow runs, never task runs, so the stage comes in two parts:
- ``review_ir`` (the task, stage ``review``) pre-checks, applies the decisions file and the stored
  decisions, and writes accepted.jsonl, rejected.jsonl and pending.jsonl. It never waits for anyone.
- ``review_in_ui(items, cfg, store)`` (tasks/lift_sys/review_ui.py) runs in the FLOW body (mode ``ui``): it pauses
  the flow run with a typed form per item (or per batch of ``batch_size``) and stores each answer at once.
``run_review`` (tasks/lift_sys/review_ui.py) chains them for the flow: task → UI pauses → task again.

    python -m tasks.lift_sys.review_ir --irs data/lift_sys/generate_ir/ir.jsonl --out data/lift_sys/review \\
        [--set mode=file --set decisions_file=my_decisions.jsonl]
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.lift_sys.lift_ir import validate_ir
from tasks.lift_sys.ir_checks import precheck
from tasks.common.records import RecordError, read_models, write_jsonl
from tasks.common.reporting import publish_table, say
from tasks.lift_sys.review_decisions import StoredDecision, append_decisions, ir_sha, load_store, read_decisions_file
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "review"


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



class IRRow(BaseModel):
    """The fields of an ir.jsonl row this stage relies on (other fields pass through)."""

    model_config = ConfigDict(extra="allow")
    id: str
    prompt: str
    category: str
    ir: dict | None



def store_path(cfg: ReviewConfig, out_dir: Path) -> Path:
    """The decisions store: configured, or ``reviews/decisions.jsonl`` beside the stage directory."""
    return Path(cfg.decisions_store) if cfg.decisions_store else Path(out_dir).parent / "reviews" / "decisions.jsonl"



def read_items(path: Path) -> list[dict]:
    """ir.jsonl rows; a missing field or a repeated id is an error naming the file and record."""
    rows = [r.model_dump() for r in read_models(path, IRRow)]
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        if row["id"] in seen:
            raise RecordError(f"{path}: records {seen[row['id']]} and {i} share the id {row['id']!r}")
        seen[row["id"]] = i
    return rows



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


def key_of(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> tuple[ReviewConfig, dict[str, Path]]:
    """The stage key hashes everything the review's output depends on: the IRs, the decisions file and the store as
    it is now (an answer given in the UI changes the store, and so the key)."""
    named = {"irs": _irs_file(inputs)}
    if cfg.decisions_file:
        named["decisions_file"] = Path(cfg.decisions_file)
    store = store_path(cfg, out_dir)
    if store.exists():
        named["store"] = store
    return cfg, named


def _irs_file(inputs: Path) -> Path:
    inputs = Path(inputs)
    return inputs / "ir.jsonl" if inputs.is_dir() else inputs


def review(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> Path:
    """Write accepted.jsonl, rejected.jsonl and pending.jsonl for the IRs in ``inputs`` (ir.jsonl or its stage dir)."""
    out_dir, irs = Path(out_dir), _irs_file(inputs)
    if cfg.decisions_file and not Path(cfg.decisions_file).exists():
        raise FileNotFoundError(f"review.decisions_file {cfg.decisions_file} does not exist")
    key = stage_key(review, cfg, inputs, out_dir)
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
    named = key_of(cfg, inputs, out_dir)[1]
    with stage_output(STAGE, out_dir, stage_key(review, cfg, inputs, out_dir), cfg, named) as out:
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


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def review_ir(cfg: ReviewConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: pre-checks + file and stored decisions; never pauses (see ``review_in_ui``)."""
    return review(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.review_ir", __doc__, ReviewConfig)
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
    run_stage_cli(main)
