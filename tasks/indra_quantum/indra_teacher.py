"""Teacher top-k next-token log-probabilities for every training block, computed once (stage ``indra_teacher``).

The teacher scores each block of the ``indra_data`` output with the same context the student sees. For
every position it keeps the ``top_k`` largest log-probabilities (normalised over the whole vocabulary)
and their token ids, as on-disk arrays the training stage memory-maps: ``train_values.npy`` (float16 or
float32 [N, L, k]) and ``train_indices.npy`` (int32 [N, L, k]); plus the log-probability of the actual
next token (``{train,val}_target_logprob.npy``, float32 [N, L]) for the teacher's own perplexity. The
output is keyed by the data and the teacher, so every training run (and every re-run) reuses it. Work
is saved every ``save_every_blocks`` blocks: a killed run continues where it stopped.

    python -m tasks.indra_quantum.indra_teacher --data data/indra_quantum/data --out data/indra_quantum/teacher
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.models.base_models import EMBEDDED, embedded_gguf, resolve_base_model
from adapters.models.teacher_logits import GgufTopK, HFTopK, TeacherError, same_tokenizer
from tasks.indra_quantum.indra_data import load_blocks
from tasks.common.reporting import StageProgress, counts_table, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, read_manifest, stage_key, stage_output, write_json_atomic
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "indra_teacher"


class TeacherConfig(BaseModel):
    """Which teacher, through which backend, and how much of its distribution to keep."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(EMBEDDED, description=f"'{EMBEDDED}', a .gguf file, a local HF dir or a hub id "
                                             "(e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0); its tokenizer must be the data's")
    backend: Literal["auto", "llama_cpp", "transformers"] = Field(
        "auto", description="auto: llama.cpp for the embedded model and .gguf files (2x faster on CPU), transformers otherwise")
    top_k: int = Field(100, ge=1, description="Log-probabilities kept per position (the seed's top-100)")
    values_dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of the kept log-probabilities")
    n_threads: int = Field(1, ge=1, description="llama.cpp threads (1 on a shared 2-core CPU: more threads spin-wait)")
    batch_size: int = Field(8, ge=1, description="Blocks per forward pass (transformers backend)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="transformers weights dtype")
    save_every_blocks: int = Field(64, ge=1, description="Save progress every this many blocks (a killed run resumes there)")
    model_cache_dir: Path | None = Field(None, description="Where the embedded model is cached (default: <data_dir>/cache/models)")


def backend_of(cfg: TeacherConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "llama_cpp" if cfg.model == EMBEDDED or cfg.model.endswith(".gguf") else "transformers"


def teacher_files(cfg: TeacherConfig) -> list[Path]:
    """The teacher's weights file when it is local and single (a GGUF), for the cache key."""
    if backend_of(cfg) != "llama_cpp":
        return []
    path = embedded_gguf() if cfg.model == EMBEDDED else Path(cfg.model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"teacher GGUF {path} does not exist")
    return [path]


def open_teacher(cfg: TeacherConfig, n_ctx: int, data_root: Path):
    """The configured teacher as a top-k scorer (adapters/models/teacher_logits.py)."""
    if backend_of(cfg) == "llama_cpp":
        return GgufTopK(teacher_files(cfg)[0], n_ctx=n_ctx, n_threads=cfg.n_threads)
    name = resolve_base_model(cfg.model, cfg.model_cache_dir or Path(data_root) / "cache" / "models")
    return HFTopK(name, dtype=cfg.dtype)


def check_tokenizer(teacher, data_manifest: dict) -> None:
    """Raise when the teacher's tokenizer is not the one the data was tokenised with."""
    tok = data_manifest["tokenizer"]
    why = same_tokenizer(teacher, tok["probe_text"], tok["probe_ids"], tok["vocab_size"])
    if why:
        raise TeacherError(f"teacher {teacher.name} cannot distil into data tokenised with {tok['name']}: {why}. "
                           "Set data.tokenizer to the teacher's model so both use one tokenizer.")


def key_of(cfg: TeacherConfig, inputs: Path, out_dir: Path) -> tuple[dict, list[Path]]:
    """The stage key hashes the config less its speed and cache settings, the data and the teacher's files."""
    keyed = cfg.model_dump(mode="json", exclude={"model_cache_dir", "n_threads", "batch_size", "save_every_blocks"})
    return keyed, [Path(inputs), *teacher_files(cfg)]


def compute(cfg: TeacherConfig, inputs: Path, out_dir: Path) -> Path:
    """Score every train and val block; write the top-k arrays and the teacher's perplexity."""
    out_dir, data_dir = Path(out_dir), Path(inputs)
    files = [data_dir, *teacher_files(cfg)]
    key = stage_key(compute, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    data = read_manifest(data_dir)
    if not data or "tokenizer" not in data:
        raise FileNotFoundError(f"{data_dir} is not a finished indra_data output (no manifest): run indra_data first")
    length = data["block_len"]
    work = out_dir.with_name(f".{out_dir.name}.work-{key}")
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    teacher = open_teacher(cfg, n_ctx=length + 8, data_root=data_dir.resolve().parent.parent)
    try:
        check_tokenizer(teacher, data)
        scored = {split: _score_split(cfg, teacher, data_dir, split, work) for split in ("train", "val")}
    finally:
        teacher.close()
    metrics = {f"{split}_{k}": v for split, m in _metrics(work, data_dir).items() for k, v in m.items()}
    tokens = sum(scored.values())
    metrics["tokens_per_s"] = round(tokens / max(time.time() - started, 1e-9), 1) if tokens else None
    with stage_output(STAGE, out_dir, key, cfg, files) as out:
        for f in work.glob("*.npy"):
            shutil.move(str(f), out.tmp / f.name)
        out.counts = {"train_blocks": int(np.load(out.tmp / "train_target_logprob.npy", mmap_mode="r").shape[0]),
                      "val_blocks": int(np.load(out.tmp / "val_target_logprob.npy", mmap_mode="r").shape[0]),
                      "tokens_scored_now": tokens}
        out.metrics = metrics
        out.extra.update(teacher=teacher.name, backend=backend_of(cfg), top_k=cfg.top_k, block_len=length)
    shutil.rmtree(work, ignore_errors=True)
    say(f"[indra_teacher] {teacher.name}: held-out perplexity {metrics['val_perplexity']}, top-{cfg.top_k} keeps "
        f"{metrics['train_topk_mass']:.1%} of its probability mass")
    publish_table("indra-teacher", counts_table(out.counts, out.metrics), f"Teacher {teacher.name}: top-{cfg.top_k} log-probabilities")
    return out_dir


def _score_split(cfg: TeacherConfig, teacher, data_dir: Path, split: str, work: Path) -> int:
    """Fill the split's memmaps from where the last run stopped; returns the tokens scored now."""
    blocks, lengths = load_blocks(data_dir, split)
    n, length = blocks.shape[0], blocks.shape[1] - 1
    progress_file = work / f"{split}_progress.json"
    done = json.loads(progress_file.read_text())["blocks"] if progress_file.exists() else 0
    mode = "r+" if done else "w+"
    target = np.lib.format.open_memmap(work / f"{split}_target_logprob.npy", mode=mode, dtype=np.float32, shape=(n, length))
    if split == "train":
        values = np.lib.format.open_memmap(work / "train_values.npy", mode=mode, dtype=np.dtype(cfg.values_dtype),
                                           shape=(n, length, cfg.top_k))
        indices = np.lib.format.open_memmap(work / "train_indices.npy", mode=mode, dtype=np.int32, shape=(n, length, cfg.top_k))
    if done:
        say(f"[indra_teacher] {split}: resuming at block {done} of {n}")
    scored = 0
    with StageProgress(f"teacher top-{cfg.top_k} ({split})", n) as progress:
        progress.advance(done)
        step = cfg.batch_size if backend_of(cfg) == "transformers" else 1
        for start in range(done, n, step):
            stop = min(start + step, n)
            n_in = np.minimum(lengths[start:stop], length)
            vals, idx, tgt = teacher.topk(np.asarray(blocks[start:stop, :length]), n_in,
                                          np.asarray(blocks[start:stop, 1:]), cfg.top_k)
            tgt[np.arange(length)[None, :] >= (lengths[start:stop, None] - 1)] = np.nan  # no real next token there
            target[start:stop] = tgt
            if split == "train":
                values[start:stop], indices[start:stop] = vals, idx
            scored += int(n_in.sum())
            progress.advance(stop - start)
            if stop == n or stop // cfg.save_every_blocks > start // cfg.save_every_blocks:
                for arr in (target, *((values, indices) if split == "train" else ())):
                    arr.flush()
                write_json_atomic(progress_file, {"blocks": stop})
    return scored


def _metrics(work: Path, data_dir: Path) -> dict[str, dict]:
    """The teacher's perplexity per split, and on train its mean confidence, entropy and kept mass."""
    out = {}
    for split in ("train", "val"):
        lp = np.load(work / f"{split}_target_logprob.npy", mmap_mode="r")
        valid = lp[~np.isnan(lp)]
        out[split] = {"perplexity": round(float(np.exp(-valid.mean())), 3) if valid.size else None}
    values = np.load(work / "train_values.npy", mmap_mode="r")
    _, lengths = load_blocks(data_dir, "train")
    mass = top = count = 0.0
    for start in range(0, values.shape[0], 256):  # in chunks: the full array can be gigabytes
        chunk = np.exp(values[start:start + 256].astype(np.float32))
        mask = np.arange(chunk.shape[1])[None, :] < (lengths[start:start + 256, None] - 1)
        mass, top, count = mass + chunk.sum(-1)[mask].sum(), top + chunk[..., 0][mask].sum(), count + mask.sum()
    out["train"].update(topk_mass=round(float(mass / max(count, 1)), 4), confidence=round(float(top / max(count, 1)), 4))
    return out


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def indra_teacher(cfg: TeacherConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: teacher top-k log-probabilities for every block, computed once."""
    return compute(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.indra_quantum.indra_teacher", __doc__, TeacherConfig)
    parser.add_argument("--data", type=Path, required=True, help="indra_data output dir")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(compute(config_from_args(TeacherConfig, args, parser), args.data, args.out))


if __name__ == "__main__":
    run_stage_cli(main, TeacherError)
