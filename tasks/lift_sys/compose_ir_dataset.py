"""Compose lift-sys training data: reviewed IRs (good) and negatives (bad), as rows and chat records, split 80/10/10.

Rows keep lift-sys's own shape ``{"prompt", "completion": "<IR JSON>", "label": "good"|"bad", "error_type"?}``.
Chat records (tasks/common/records.py) are what SFT trains on: system + request → IR JSON (kind ``ir``), and
per negative a correction (kind ``ir_correction``): request + bad IR → the error named and the fixed IR.

A prompt's split comes from a hash of the prompt alone, with the same thresholds in every category:
adding prompts never moves existing ones, and each category lands at ~80/10/10 (the manifest counts
split × category). The hash is of the template and slots when a row carries them (so a paraphrase,
which keeps its parent's slots and IR, never sits in train while its parent is in test), else of the
normalised prompt text. A negative goes to its source prompt's split, so no val/test request is ever
trained on through a negative.

    python -m tasks.lift_sys.compose_ir_dataset --accepted data/lift_sys/review/accepted.jsonl \\
        --negatives data/lift_sys/negatives/negatives.jsonl --out data/lift_sys/compose
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.lift_sys.lift_ir import IR, ir_json, validate_ir
from tasks.common.records import ChatRecord, Message, RecordError, read_models, write_jsonl
from tasks.common.reporting import publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "compose"
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]
SYSTEM_PROMPT = ("You translate a function request into a lift-sys IR: one JSON object with intent, signature, "
                 "effects and assertions. Exact strings from the request appear as return LITERAL 'x' effects.")


class ComposeConfig(BaseModel):
    """Record shapes and split of the lift-sys dataset."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(SYSTEM_PROMPT, min_length=1, description="System message of every chat record (evaluation must use the same)")
    corrections: float = Field(1.0, ge=0, le=1, description="Share of negatives that also get a correction chat record "
                               "(bad IR → error named + fixed IR), picked by a hash of the negative's id: stable across "
                               "re-runs. Below 1 spends less training compute on copying IR (true = 1, false = 0)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts in the validation split")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts in the test split")

    @model_validator(mode="after")
    def _train_left(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"compose: val_fraction + test_fraction = {self.val_fraction + self.test_fraction} leaves "
                             "nothing to train on; keep their sum below 1")
        return self


class AcceptedRow(BaseModel):
    """The fields of an accepted.jsonl row (review stage) this stage uses; the rest passes into record meta."""

    model_config = ConfigDict(extra="allow")
    id: str
    prompt: str = Field(min_length=1)
    category: str
    ir: dict


class NegativeRow(BaseModel):
    """A row of negatives.jsonl: a bad IR, its error named, and its correction."""

    model_config = ConfigDict(extra="allow")
    id: str
    prompt: str = Field(min_length=1)
    category: str
    bad_ir: dict
    error_type: str
    correction: dict
    explanation: str


def prompt_digest(prompt: str) -> str:
    """Identity of a prompt for dedup and split: case and spacing do not matter."""
    return hashlib.sha256(" ".join(prompt.split()).casefold().encode()).hexdigest()


def split_key(row: dict) -> str:
    """What a row's split hangs on: its template and slots when known (one request, however phrased), else its text."""
    if row.get("template_id") and isinstance(row.get("slots"), dict):
        return "slots:" + row["template_id"] + json.dumps(row["slots"], sort_keys=True, ensure_ascii=False)
    return "prompt:" + prompt_digest(row["prompt"])


def hash_unit(key: str) -> float:
    """A fixed number in [0, 1) per key: where a key falls in the hash bands below."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def split_of(key: str, val_fraction: float, test_fraction: float) -> Split:
    """Fixed per key: test takes the lowest hash band, val the next, train the rest."""
    u = hash_unit(key)
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def takes_share(key: str, share: float) -> bool:
    """Whether ``key`` is among a stable ``share`` of all keys (a hash band independent of the split's)."""
    return share >= 1 or hash_unit(f"share:{key}") < share


def request_messages(prompt: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """The messages a model sees for a request; training and evaluation share them."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]


def correction_request(prompt: str, bad_ir: str) -> str:
    """User message of a correction record: the request and the IR to fix."""
    return f"{prompt}\n\nThis IR for the request above has an error:\n{bad_ir}\n\nName the error and give the corrected IR."


def correction_answer(error_type: str, explanation: str, fixed_ir: str) -> str:
    """Assistant message of a correction record: the error named, then the corrected IR JSON."""
    return f"Error: {error_type}: {explanation}\nCorrected IR:\n{fixed_ir}"


def _valid_ir(path: Path, index: int, field: str, data: dict) -> IR:
    ir, errors = validate_ir(data)
    if errors:
        raise RecordError(f"{path}: record {index}: field '{field}.{errors[0]}'")
    return ir


def _ir_text(data: dict) -> str:
    """Canonical JSON when the IR validates, else its compact JSON (a negative may break the schema on purpose)."""
    ir, errors = validate_ir(data)
    return ir_json(ir) if not errors else json.dumps(data, ensure_ascii=False)


def _meta(row: BaseModel, split: str, **extra) -> dict:
    keep = ("id", "category", "complexity", "template_id", "origin", "teacher")
    data = row.model_dump()
    meta = {k: data[k] for k in keep if data.get(k) is not None}
    return {**meta, "split": split, **extra}


def compose(cfg: ComposeConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Rows and chat records per split from accepted.jsonl (+ negatives.jsonl), given as files or stage directories."""
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not 1 <= len(inputs) <= 2:
        raise ValueError(f"compose: expected accepted.jsonl and optionally negatives.jsonl, got {len(inputs)} inputs")
    files = [p / name if p.is_dir() else p for p, name in zip(inputs, ("accepted.jsonl", "negatives.jsonl"))]
    key = stage_key(compose, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    records: dict[str, list[ChatRecord]] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, Counter]] = {label: {s: Counter() for s in SPLITS} for label in ("good", "bad")}
    split_by_prompt: dict[str, Split] = {}
    duplicates = 0
    for i, row in enumerate(read_models(files[0], AcceptedRow), 1):
        if (digest := prompt_digest(row.prompt)) in split_by_prompt:
            duplicates += 1
            continue
        completion = ir_json(_valid_ir(files[0], i, "ir", row.ir))
        split = split_by_prompt[digest] = split_of(split_key(row.model_dump()), cfg.val_fraction, cfg.test_fraction)
        rows[split].append({"prompt": row.prompt, "completion": completion, "label": "good"})
        messages = request_messages(row.prompt, cfg.system_prompt) + [{"role": "assistant", "content": completion}]
        records[split].append(ChatRecord(messages=[Message(**m) for m in messages], source="lift_sys", kind="ir",
                                         meta=_meta(row, split, review=(row.model_extra.get("review") or {}).get("by"))))
        counts["good"][split][row.category] += 1
    negatives = read_models(files[1], NegativeRow) if len(files) > 1 else []
    for i, neg in enumerate(negatives, 1):
        fixed = ir_json(_valid_ir(files[1], i, "correction", neg.correction))
        bad = _ir_text(neg.bad_ir)
        split = split_by_prompt.get(prompt_digest(neg.prompt)) or split_of(split_key(neg.model_dump()), cfg.val_fraction,
                                                                            cfg.test_fraction)
        rows[split].append({"prompt": neg.prompt, "completion": bad, "label": "bad", "error_type": neg.error_type})
        counts["bad"][split][neg.category] += 1
        if takes_share(neg.id, cfg.corrections):
            messages = [Message(role="system", content=cfg.system_prompt),
                        Message(role="user", content=correction_request(neg.prompt, bad)),
                        Message(role="assistant", content=correction_answer(neg.error_type, neg.explanation, fixed))]
            records[split].append(ChatRecord(messages=messages, source="lift_sys", kind="ir_correction",
                                             meta=_meta(neg, split, error_type=neg.error_type)))
    categories = sorted({c for label in counts.values() for per in label.values() for c in per})
    wanted = [s for s, share in zip(SPLITS, (1, cfg.val_fraction, cfg.test_fraction)) if share > 0]
    for c in categories:
        empty = [s for s in wanted if not counts["good"][s][c]]
        if empty and sum(counts["good"][s][c] for s in SPLITS) >= 10:
            say(f"compose: category {c!r} has no prompt in {empty} (hash split of few prompts); add prompts to fill it")
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        write_jsonl(out.tmp / "rows.jsonl", [r for s in SPLITS for r in rows[s]])
        for s in SPLITS:
            write_jsonl(out.tmp / f"rows_{s}.jsonl", rows[s])
            write_jsonl(out.tmp / f"{s}.jsonl", records[s])
        out.counts = {"good": sum(sum(c.values()) for c in counts["good"].values()),
                      "bad": sum(sum(c.values()) for c in counts["bad"].values()),
                      "duplicate_prompts": duplicates,
                      "corrections": sum(r.kind == "ir_correction" for s in SPLITS for r in records[s]),
                      **{f"records_{s}": len(records[s]) for s in SPLITS}}
        out.extra["split_counts"] = {label: {s: dict(sorted(per[s].items())) for s in SPLITS}
                                     for label, per in counts.items()}
    table = [{"category": c, **{f"{label}_{s}": counts[label][s][c] for label in counts for s in SPLITS}}
             for c in categories]
    publish_table("lift-sys-compose", table, f"Compose: {out.counts['good']} good + {out.counts['bad']} bad rows, "
                  f"records train/val/test {[out.counts[f'records_{s}'] for s in SPLITS]}")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def compose_ir_dataset(cfg: ComposeConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Prefect task: rows + chat records, split 80/10/10 by prompt hash."""
    return compose(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.compose_ir_dataset", __doc__, ComposeConfig)
    parser.add_argument("--accepted", type=Path, required=True, help="accepted.jsonl of the review stage (or its directory)")
    parser.add_argument("--negatives", type=Path, help="negatives.jsonl of the negatives stage (or its directory)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    inputs = [args.accepted] + ([args.negatives] if args.negatives else [])
    out = compose(config_from_args(ComposeConfig, args, parser), inputs, args.out)
    print(f"{out}: {json.loads((out / 'manifest.json').read_text())['counts']}")


if __name__ == "__main__":
    run_stage_cli(main)
