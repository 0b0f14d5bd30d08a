"""Keep only the generated examples whose code passed verification.

Examples without a code block (pure reasoning) are kept as they are; every example whose code
block failed is dropped and counted by the verifier's outcome. Also writes the users' record
shape as ``physics_augmented/{train,val}.jsonl``, split with the mix stage's per-record rule so
the two splits agree, and ``code_only.jsonl``: each kept circuit requested plainly and answered by its
code alone (tasks/quantum_mind/code_only_records.py), what the code-only model trains on without QuantumLLMInstruct.

    python -m tasks.quantum_mind.select_verified --generated data/quantum_mind/generate --verified data/quantum_mind/verify --out DIR
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.quantum_mind.code_only_records import code_only_record
from tasks.training.mix_datasets import is_validation, record_digest
from tasks.common.records import read_chat_records, read_jsonl, write_jsonl
from tasks.common.reporting import counts_table, publish_table
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "select"
SOURCES = {"chat_physics.jsonl": "physics.jsonl", "chat_reasoning.jsonl": "reasoning.jsonl"}


class SelectConfig(BaseModel):
    """What counts as a usable example."""

    model_config = ConfigDict(extra="forbid")
    keep_plateau: bool = Field(True, description="Keep circuits whose gradients sit on a barren plateau (they are still correct)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Validation share of physics_augmented/{train,val}.jsonl (use mix.val_fraction)")
    min_kept: int = Field(1, ge=0, description="Fail when fewer examples than this survive verification")


def files_read(inputs: list[Path]) -> list[Path]:
    """The generate stage's chat records and the verify stage's results."""
    generated, verified = (Path(p) for p in inputs)
    return [generated / name for name in SOURCES] + [verified / "results.jsonl"]


def key_of(cfg: SelectConfig, inputs: list[Path], out_dir: Path) -> tuple[SelectConfig, list[Path]]:
    """The stage key hashes the files read, not the two stages' manifests."""
    return cfg, files_read(inputs)


def select(cfg: SelectConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Filter ``chat_physics.jsonl``/``chat_reasoning.jsonl`` of the generate stage by ``results.jsonl`` of verify."""
    out_dir = Path(out_dir)
    generated, verified = (Path(p) for p in inputs)
    files = files_read(inputs)
    key = stage_key(select, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    results = {r["id"]: r for r in read_jsonl(verified / "results.jsonl")}
    dropped: Counter = Counter()
    with stage_output(STAGE, out_dir, key, cfg, files) as out:
        users_shape: dict[str, list[dict]] = {"train": [], "val": []}
        code_only = []
        for src, dest in SOURCES.items():
            kept = []
            for rec in read_chat_records(generated / src):
                code_id = rec.meta.get("code_id")
                result = results.get(code_id) if code_id else None
                if code_id and result is None:
                    dropped["not_verified"] += 1
                    continue
                if result and not result["passed"]:
                    dropped[result.get("outcome", "failed")] += 1
                    continue
                if result and not cfg.keep_plateau and result.get("bp_status") == "plateau":
                    dropped["plateau"] += 1
                    continue
                kept.append(rec)
                twin = code_only_record(rec)
                if twin is not None:
                    code_only.append(twin)
                split = "val" if is_validation(record_digest(rec), cfg.val_fraction) else "train"
                users_shape[split].append({"type": rec.kind, "instruction": rec.messages[-2].content, "input": "",
                                           "output": rec.messages[-1].content, "metadata": rec.meta})
            write_jsonl(out.tmp / dest, kept)
            out.counts[dest.removesuffix(".jsonl")] = len(kept)
        write_jsonl(out.tmp / "code_only.jsonl", code_only)
        out.counts["code_only"] = len(code_only)
        for split, rows in users_shape.items():
            write_jsonl(out.tmp / "physics_augmented" / f"{split}.jsonl", rows)
        out.counts.update({f"dropped_{k}": v for k, v in sorted(dropped.items())})
        kept_total = out.counts["physics"] + out.counts["reasoning"]
        if kept_total < cfg.min_kept:
            raise ValueError(f"select: only {kept_total} examples passed verification (min_kept {cfg.min_kept}); "
                             f"drops by outcome: {dict(dropped)} — see {verified / 'rejects.jsonl'}")
    publish_table(STAGE, counts_table(out.counts), "Examples kept after circuit verification")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def select_verified(cfg: SelectConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Prefect task: keep examples whose circuits passed verification."""
    return select(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.select_verified", __doc__, SelectConfig)
    parser.add_argument("--generated", type=Path, required=True, help="generate stage dir")
    parser.add_argument("--verified", type=Path, required=True, help="verify stage dir (results.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(select(config_from_args(SelectConfig, args, parser), [args.generated, args.verified], args.out))


if __name__ == "__main__":
    run_stage_cli(main)
