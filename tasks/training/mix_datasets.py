"""Mix record sources by weight, drop exact duplicates, and split off a stable validation set.

A record's split is decided by a hash of its content alone, so changing weights, adding a
source or re-running never moves a record between train and validation. Weights are shares
of the final training mix; a source may be upsampled (repeated) only when it allows it.

    python -m tasks.training.mix_datasets --source lab=data/ben_lab/describe/chat.jsonl:1.0 --out data/ben_lab/mix
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.common.records import ChatRecord, read_chat_records, write_jsonl
from tasks.common.reporting import publish_table
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output

STAGE = "mix"


class MixSource(BaseModel):
    """One input of the mix."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name reported in counts (e.g. 'lab', 'quantum_llm_instruct')")
    weight: float = Field(1.0, gt=0, description="Share of the final training mix (weights are normalised)")
    upsample: bool = Field(False, description="Allow repeating this source's records to reach its share")


class MixConfig(BaseModel):
    """Weights, split and size of the training mix."""

    model_config = ConfigDict(extra="forbid")
    sources: list[MixSource] = Field(default_factory=lambda: [MixSource(name="lab")],
                                     description="Sources, in the same order as the stage's input files")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of distinct records held out for validation")
    total: int | None = Field(None, gt=0, description="Training records in the mix; default: the most the weights allow without upsampling")
    seed: int = Field(0, description="Seed of the sampling order")

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"mix.sources: names must be unique, got {names}")
        return self


def available_sources(cfg: MixConfig, files: dict[str, Path]) -> tuple[MixConfig, list[Path], list[str]]:
    """Drop configured sources whose file is missing or empty; the remaining weights renormalise.

    Returns the reduced config, its input files in order, and the names that were dropped (so the
    flow can say so in its summary rather than silently training on a different mix).
    """
    kept, paths, dropped = [], [], []
    for src in cfg.sources:
        path = files.get(src.name)
        if path is None:
            raise ValueError(f"mix: source '{src.name}' has no input file; known: {sorted(files)}")
        if Path(path).exists() and Path(path).stat().st_size > 0:
            kept.append(src)
            paths.append(Path(path))
        else:
            dropped.append(src.name)
    if not kept:
        raise ValueError(f"mix: none of the sources {[s.name for s in cfg.sources]} has any records")
    return cfg.model_copy(update={"sources": kept}), paths, dropped


def record_digest(rec: ChatRecord) -> str:
    """Identity of a record for dedup and split: its messages only (not source or meta)."""
    payload = json.dumps([[m.role, m.content.strip()] for m in rec.messages], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def is_validation(digest: str, val_fraction: float) -> bool:
    """Fixed per record: the same record always lands in the same split."""
    return int(digest[:8], 16) / 0xFFFFFFFF < val_fraction


def plan_counts(sizes: dict[str, int], cfg: MixConfig) -> dict[str, int]:
    """Training records to take from each source so that shares match the weights."""
    total_w = sum(s.weight for s in cfg.sources)
    shares = {s.name: s.weight / total_w for s in cfg.sources}
    capped = [sizes[s.name] / shares[s.name] for s in cfg.sources if not s.upsample]
    total = cfg.total or int(min(capped) if capped else max(sizes[n] / shares[n] for n in shares))
    counts = {}
    for s in cfg.sources:
        want = round(shares[s.name] * total)
        if want > sizes[s.name] and not s.upsample:
            raise ValueError(f"mix: source '{s.name}' has {sizes[s.name]} training records but its weight asks for {want}; "
                             f"lower mix.total, lower its weight, or set upsample: true for it")
        if want and not sizes[s.name]:
            raise ValueError(f"mix: source '{s.name}' has no training records")
        counts[s.name] = want
    return counts


def mix(cfg: MixConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Write ``train.jsonl`` and ``val.jsonl`` from the weighted sources."""
    out_dir, inputs = Path(out_dir), [Path(p) for p in inputs]
    if len(inputs) != len(cfg.sources):
        raise ValueError(f"mix: {len(inputs)} input files but {len(cfg.sources)} configured sources; list one source per input")
    key = stage_key(mix, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    seen: set[str] = set()
    train: dict[str, list[ChatRecord]] = {}
    val: list[ChatRecord] = []
    rows = []
    for src, path in zip(cfg.sources, inputs):
        records = read_chat_records(path)
        dupes = 0
        train[src.name] = []
        for rec in records:
            d = record_digest(rec)
            if d in seen:
                dupes += 1
                continue
            seen.add(d)
            (val if is_validation(d, cfg.val_fraction) else train[src.name]).append(rec)
        rows.append({"source": src.name, "file": str(path), "records": len(records), "duplicates_dropped": dupes,
                     "train_available": len(train[src.name])})
    counts = plan_counts({n: len(v) for n, v in train.items()}, cfg)
    rng = random.Random(cfg.seed)
    mixed: list[ChatRecord] = []
    for row in rows:
        pool = train[row["source"]]
        order = rng.sample(pool, len(pool))
        take = [order[i % len(order)] for i in range(counts[row["source"]])] if order else []
        row["train_taken"] = len(take)
        row["share"] = round(len(take) / max(1, sum(counts.values())), 4)
        mixed.extend(take)
    rng.shuffle(mixed)
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        write_jsonl(out.tmp / "train.jsonl", mixed)
        write_jsonl(out.tmp / "val.jsonl", val)
        out.counts = {"train": len(mixed), "val": len(val), "duplicates_dropped": sum(r["duplicates_dropped"] for r in rows)}
        out.extra["sources"] = rows
    publish_table("mix", rows, f"Mix: {len(mixed)} train / {len(val)} val records")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def mix_datasets(cfg: MixConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Prefect task: weighted mix + dedup + stable validation split."""
    return mix(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.training.mix_datasets", __doc__, MixConfig)
    parser.add_argument("--source", action="append", required=True, metavar="NAME=FILE[:WEIGHT]",
                        help="a chat-record JSONL and its weight (repeatable, in order)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sources, files = [], []
    for spec in args.source:
        name, _, rest = spec.partition("=")
        path, _, weight = rest.partition(":")
        sources.append({"name": name, "weight": float(weight or 1)})
        files.append(Path(path))
    print(mix(config_from_args(MixConfig, args, parser, sources=sources), files, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
