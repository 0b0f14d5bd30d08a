"""Corpora → tokenised, mixed, fixed-length token blocks for indra-quantum (stage ``indra_data``).

Each configured source (see tasks/indra_quantum/indra_corpora.py) is read, sampled (``max_docs``, ``max_tokens``) with
a fixed seed and tokenised once with the teacher's tokenizer (cached under ``cache_dir``). A document's
split is decided by a hash of its text, so it never moves between train and validation. The training
documents of all sources are shuffled together with the seed and packed, separated by EOS, into blocks
of ``block_len + 1`` tokens (stride ``block_len``: every token is a target once); the last block is
padded and its length recorded. A source that is not available (no local copy and no hub download, no
chat records yet) is dropped and the manifest says why.

Outputs: ``{train,val}_blocks.npy`` (int32 [N, block_len + 1]), ``{train,val}_lengths.npy`` (int32 [N]),
``composition.json``.

    python -m tasks.indra_quantum.indra_data --out data/indra_quantum/data --set block_len=64
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.models.base_models import EMBEDDED, resolve_base_model
from adapters.user_errors import UserInputError
from tasks.indra_quantum.indra_corpora import (
    ChatRecordsSource,
    CorpusSource,
    RepoDocsSource,
    TeacherTextSource,
    documents_digest,
    read_documents,
    repo_docs,
    source_files,
)
from tasks.common.reporting import publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "indra_data"
PROBE_TEXT = "### Instruction:\nThe future of AI is\n\n### Response:\n"


def _offline_sources() -> dict:
    return {"lab_chats": ChatRecordsSource(kind="chat_records"), "teacher_text": TeacherTextSource(kind="teacher_text"),
            "repo_docs": RepoDocsSource(kind="repo_docs")}


class IndraDataConfig(BaseModel):
    """Which corpora, how they are tokenised, split and packed."""

    model_config = ConfigDict(extra="forbid")
    sources: dict[str, CorpusSource] = Field(default_factory=_offline_sources,
                                             description="Corpora by name; each has a 'kind' (wikitext, alpaca, "
                                                         "chat_records, teacher_text, repo_docs) and its own fields")
    tokenizer: str = Field(EMBEDDED, description="The teacher's tokenizer: the embedded model, a local HF dir or a hub id")
    block_len: int = Field(128, ge=8, description="Tokens per training block (the model's max_len)")
    val_fraction: float = Field(0.05, gt=0, lt=1, description="Share of documents held out for validation (by text hash)")
    seed: int = Field(0, description="Seed of sampling and mixing")
    min_train_blocks: int = Field(8, ge=1, description="Fail when the corpora give fewer training blocks than this")
    cache_dir: Path | None = Field(None, description="Tokenised sources and teacher text (default: <data_dir>/cache/indra)")
    model_cache_dir: Path | None = Field(None, description="Where the embedded model is cached (default: <data_dir>/cache/models)")


class IndraDataError(ValueError, UserInputError):
    """The corpora cannot make a usable training set; the message says what to change."""


def key_parts(cfg: IndraDataConfig, out_dir: Path) -> tuple[dict, list[Path], dict[str, list[Path]], dict[str, str]]:
    """(keyed config, input files, files per available source, reasons per dropped source)."""
    data_root = Path(out_dir).resolve().parent.parent
    files, dropped = {}, {}
    for name, src in cfg.sources.items():
        if not src.enabled:
            dropped[name] = "disabled (enabled: false)"
            continue
        found, reason = source_files(src, data_root)
        if reason:
            dropped[name] = reason
        else:
            files[name] = found
    keyed = {"config": cfg.model_dump(mode="json", exclude={"cache_dir", "model_cache_dir"})}
    if any(cfg.sources[n].kind == "repo_docs" for n in files):
        keyed["repo_docs"] = documents_digest(repo_docs())  # the docstrings, not the code around them
    return keyed, sorted({p for fs in files.values() for p in fs}), files, dropped


def key_of(cfg: IndraDataConfig, inputs: None, out_dir: Path) -> tuple[dict, list[Path]]:
    """The stage key hashes the config (less its cache dirs), the source files found and the repo docs' text."""
    keyed, all_files, _, _ = key_parts(cfg, out_dir)
    return keyed, all_files


def build(cfg: IndraDataConfig, inputs: None, out_dir: Path) -> Path:
    """Write the packed train/val blocks and the composition of the mix."""
    out_dir = Path(out_dir)
    _, all_files, files, dropped = key_parts(cfg, out_dir)
    key = stage_key(build, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    if not files:
        raise IndraDataError(f"indra_data: no source is available ({dropped}); configure a local WikiText/Alpaca copy, "
                             "set hub: true, or enable teacher_text")
    data_root = out_dir.resolve().parent.parent
    cache_dir = Path(cfg.cache_dir or data_root / "cache" / "indra")
    tokenizer = _tokenizer(cfg, data_root)
    eos = tokenizer.eos_token_id
    rng = random.Random(cfg.seed)
    train_docs, val_docs, rows = [], [], []
    for name, found in files.items():
        src = cfg.sources[name]
        docs, origin = read_documents(src, found, cache_dir)
        docs = [d for d in docs if d.strip()]
        if src.max_docs and len(docs) > src.max_docs:
            docs = rng.sample(docs, src.max_docs)
        tokens = _tokenise(tokenizer, cfg.tokenizer, docs, cache_dir)
        kept = _take_tokens(docs, tokens, src.max_tokens, rng)
        n_val = 0
        for text, ids in kept:
            if is_validation(text, cfg.val_fraction):
                val_docs.append(ids)
                n_val += 1
            else:
                train_docs.append(ids)
        rows.append({"source": name, "kind": src.kind, "origin": origin, "docs": len(kept), "val_docs": n_val,
                     "tokens": sum(len(ids) + 1 for _, ids in kept)})
    if not val_docs:
        raise IndraDataError(f"indra_data: no document landed in validation ({sum(r['docs'] for r in rows)} documents, "
                             f"val_fraction {cfg.val_fraction}); raise val_fraction or add documents")
    rng.shuffle(train_docs)
    train_blocks, train_lengths = pack(train_docs, cfg.block_len, eos)
    val_blocks, val_lengths = pack(val_docs, cfg.block_len, eos)
    if len(train_blocks) < cfg.min_train_blocks:
        raise IndraDataError(f"indra_data: only {len(train_blocks)} training blocks of {cfg.block_len} tokens "
                             f"(min_train_blocks {cfg.min_train_blocks}); add sources or raise their max_tokens")
    total = sum(r["tokens"] for r in rows)
    for r in rows:
        r["share"] = round(r["tokens"] / total, 4)
    with stage_output(STAGE, out_dir, key, cfg, all_files) as out:
        for split, blocks, lengths in (("train", train_blocks, train_lengths), ("val", val_blocks, val_lengths)):
            np.save(out.tmp / f"{split}_blocks.npy", blocks)
            np.save(out.tmp / f"{split}_lengths.npy", lengths)
        (out.tmp / "composition.json").write_text(json.dumps({"sources": rows, "dropped": dropped}, indent=2))
        out.counts = {"train_blocks": len(train_blocks), "val_blocks": len(val_blocks),
                      "train_tokens": int(train_lengths.sum()), "val_tokens": int(val_lengths.sum()),
                      "train_docs": len(train_docs), "val_docs": len(val_docs)}
        out.extra.update(sources=rows, dropped=dropped, block_len=cfg.block_len, tokenizer={
            "name": cfg.tokenizer, "vocab_size": len(tokenizer), "eos_id": eos, "probe_text": PROBE_TEXT,
            "probe_ids": tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]})
    say(f"[indra_data] {out.counts['train_tokens']} training tokens from "
        + ", ".join(f"{r['source']} {r['share']:.0%}" for r in rows)
        + (f"; dropped: {', '.join(f'{k} ({v})' for k, v in dropped.items())}" if dropped else ""))
    publish_table("indra-data", [{k: v for k, v in r.items() if k != "origin"} for r in rows],
                  f"indra-quantum corpus: {out.counts['train_blocks']} train / {out.counts['val_blocks']} val blocks")
    return out_dir


def _tokenizer(cfg: IndraDataConfig, data_root: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base_model(cfg.tokenizer, cfg.model_cache_dir or data_root / "cache" / "models"))


def _tokenise(tokenizer, tokenizer_name: str, docs: list[str], cache_dir: Path) -> list[list[int]]:
    """Token ids of each document, cached by (tokenizer, documents) so a re-mix never re-tokenises."""
    digest = hashlib.sha256(f"{tokenizer_name}|{len(tokenizer)}|{documents_digest(docs)}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "tokens" / f"{digest}.npz"
    if path.exists():
        with np.load(path) as z:
            flat, offsets = z["tokens"], z["offsets"]
        return [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, tokens=np.fromiter((t for d in ids for t in d), np.int32),
             offsets=np.cumsum([0] + [len(d) for d in ids]).astype(np.int64))
    tmp.replace(path)
    return ids


def _take_tokens(docs: list[str], tokens: list[list[int]], max_tokens: int | None, rng: random.Random):
    """(text, ids) pairs in seeded order within ``max_tokens`` (one EOS counted per document); a document
    that does not fit is skipped, so the budget is never exceeded."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    kept, total = [], 0
    for i in order:
        size = len(tokens[i]) + 1
        if not tokens[i] or (max_tokens and total + size > max_tokens):
            continue
        kept.append((docs[i], tokens[i]))
        total += size
    return kept


def is_validation(text: str, val_fraction: float) -> bool:
    """Fixed per document: the same text always lands in the same split."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF < val_fraction


def pack(docs: list[list[int]], block_len: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents joined by EOS → blocks [N, block_len + 1] with stride block_len, and each block's length.

    Block i holds stream[i·L : i·L + L + 1]: inputs are its first L tokens, targets its last L, so every
    stream token after the first is a target exactly once. The last block is padded with EOS.
    """
    stream = np.fromiter((t for d in docs for t in (*d, eos)), np.int32)
    if len(stream) < 2:
        return np.zeros((0, block_len + 1), np.int32), np.zeros(0, np.int32)
    n = -(-(len(stream) - 1) // block_len)
    blocks = np.full((n, block_len + 1), eos, np.int32)
    lengths = np.zeros(n, np.int32)
    for i in range(n):
        piece = stream[i * block_len: i * block_len + block_len + 1]
        blocks[i, :len(piece)] = piece
        lengths[i] = len(piece)
    return blocks, lengths


def add_input_args(parser, teacher_help: str) -> None:
    """``--data``, ``--teacher`` and ``--out`` for the stages that read the token blocks (train, evaluate)."""
    parser.add_argument("--data", type=Path, required=True, help="indra_data output dir")
    parser.add_argument("--teacher", type=Path, help=teacher_help)
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def cli_inputs(args) -> dict[str, Path]:
    """The stage inputs from ``add_input_args`` options."""
    return {"data": args.data, **({"teacher": args.teacher} if args.teacher else {})}


def load_blocks(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, lengths) of a split, memory-mapped."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}_blocks.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the indra_data stage first")
    return np.load(path, mmap_mode="r"), np.load(data_dir / f"{split}_lengths.npy")


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def indra_data(cfg: IndraDataConfig, inputs: None, out_dir: Path) -> Path:
    """Prefect task: corpora → tokenised, mixed token blocks."""
    return build(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.indra_quantum.indra_data", __doc__, IndraDataConfig)
    parser.add_argument("--out", type=Path, required=True, help="output directory (<data_dir>/indra_quantum/data)")
    args = parser.parse_args(argv)
    print(build(config_from_args(IndraDataConfig, args, parser), None, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
