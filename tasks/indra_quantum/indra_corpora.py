"""The text corpora indra-quantum trains on, each read as a list of documents.

Kinds: ``wikitext`` (WikiText-103 paragraphs) and ``alpaca`` (Stanford Alpaca, formatted
``### Instruction / ### Input / ### Response``) from a local file or the hub; and what exists without
network: ``chat_records`` (the canonical chat records other labtune flows wrote under the data dir),
``teacher_text`` (the embedded SmolLM2 answering a fixed set of prompts, greedy, in llama.cpp; cached)
and ``repo_docs`` (labtune's own README files and module docstrings). Chat records and teacher text are
formatted like Alpaca records, so the instruction-following text has one shape whatever its source.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.common.records import RecordError, read_chat_records, read_jsonl
from tasks.common.reporting import StageProgress, say

REPO_ROOT = Path(__file__).resolve().parents[2]

TOPICS = ["photosynthesis", "the water cycle", "volcanoes", "the Roman Empire", "the printing press", "black holes",
          "the human heart", "vaccines", "plate tectonics", "the French Revolution", "electric motors", "honeybees",
          "the Silk Road", "weather fronts", "the immune system", "prime numbers", "the steam engine", "coral reefs",
          "the Moon landing", "antibiotics", "earthquakes", "the internet", "the Renaissance", "magnets", "rainforests",
          "the periodic table", "glaciers", "the Industrial Revolution", "DNA", "solar power", "ancient Egypt",
          "the speed of light", "baking bread", "migratory birds", "the stock market", "quantum computers",
          "superconductors", "entropy", "phase transitions", "neural networks"]
TEMPLATES = ["Write an encyclopedia-style paragraph about {}.", "Explain {} to a curious student.",
             "Give three surprising facts about {} and explain each one.", "Write a short story in which {} plays a part."]


def teacher_prompts(n: int) -> list[str]:
    """The first ``n`` of the fixed prompts (every topic once before any topic repeats with another template)."""
    total = len(TOPICS) * len(TEMPLATES)
    if not 1 <= n <= total:
        raise ValueError(f"teacher_text.prompts must be between 1 and {total} (the fixed prompt set), got {n}")
    return [TEMPLATES[(i + i // len(TOPICS)) % len(TEMPLATES)].format(TOPICS[i % len(TOPICS)]) for i in range(n)]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Use this source (false: leave it out)")
    max_docs: int | None = Field(None, gt=0, description="Keep at most this many documents (a seeded sample)")
    max_tokens: int | None = Field(None, gt=0, description="Keep documents (in seeded order) until this many tokens")


class WikiTextSource(_Source):
    kind: Literal["wikitext"] = Field(description="WikiText-103 paragraphs")
    path: Path | None = Field(None, description="Local copy: wiki.train.raw / .tokens / .txt, or a .parquet/.jsonl with a 'text' column")
    hub: bool = Field(False, description="Download from the hub when no path is given (needs network)")
    hub_id: str = Field("Salesforce/wikitext", description="Hub dataset id")
    hub_config: str = Field("wikitext-103-raw-v1", description="Hub dataset config")
    min_chars: int = Field(200, ge=1, description="Drop paragraphs shorter than this (headings are always dropped)")


class AlpacaSource(_Source):
    kind: Literal["alpaca"] = Field(description="Stanford Alpaca instruction records")
    path: Path | None = Field(None, description="Local alpaca_data.json (a JSON list), .jsonl or .parquet with instruction/input/output")
    hub: bool = Field(False, description="Download from the hub when no path is given (needs network)")
    hub_id: str = Field("tatsu-lab/alpaca", description="Hub dataset id")


class ChatRecordsSource(_Source):
    kind: Literal["chat_records"] = Field(description="Canonical chat records other labtune flows produced")
    globs: list[str] = Field(["*/mix/train.jsonl", "*/mix/val.jsonl"], min_length=1,
                             description="Glob patterns under root for chat-record JSONL files")
    root: Path | None = Field(None, description="Where the globs are matched (None: the data dir)")


class TeacherTextSource(_Source):
    kind: Literal["teacher_text"] = Field(description="Text the teacher writes for fixed prompts (greedy, llama.cpp)")
    prompts: int = Field(48, ge=1, description=f"How many of the {len(TOPICS) * len(TEMPLATES)} fixed prompts to answer")
    max_new_tokens: int = Field(160, ge=8, description="Longest answer, in tokens")
    gguf: Path | None = Field(None, description="GGUF that writes the text (None: the embedded SmolLM2-135M-Instruct)")
    n_threads: int = Field(1, ge=1, description="llama.cpp threads (1 on a shared 2-core CPU: more threads spin-wait)")


class RepoDocsSource(_Source):
    kind: Literal["repo_docs"] = Field(description="labtune's README files and module docstrings")


CorpusSource = Annotated[WikiTextSource | AlpacaSource | ChatRecordsSource | TeacherTextSource | RepoDocsSource,
                         Field(discriminator="kind")]


def alpaca_text(instruction: str, input_text: str, output: str) -> str:
    """One record in the Alpaca layout (the Input section only when there is an input)."""
    parts = [f"### Instruction:\n{instruction.strip()}"]
    if input_text and input_text.strip():
        parts.append(f"### Input:\n{input_text.strip()}")
    parts.append(f"### Response:\n{output.strip()}")
    return "\n\n".join(parts)


def source_files(src, data_root: Path) -> tuple[list[Path], str | None]:
    """The local files a source reads, or the reason it is unavailable (None when available)."""
    if src.kind in ("wikitext", "alpaca"):
        if src.path is not None:
            path = Path(src.path).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"{src.kind} path {path} does not exist; fix it or set it to null")
            return [path], None
        return [], None if src.hub else "no local copy (path) and hub download off (hub: false)"
    if src.kind == "chat_records":
        root = Path(src.root).expanduser() if src.root else data_root
        files = sorted({p for g in src.globs for p in root.glob(g) if p.is_file() and p.stat().st_size > 0})
        return files, None if files else f"no chat records under {root} matching {src.globs} (run another flow first)"
    if src.kind == "teacher_text":
        return [teacher_gguf(src)], None
    return [], None


def teacher_gguf(src: TeacherTextSource) -> Path:
    if src.gguf is not None:
        path = Path(src.gguf).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"teacher_text.gguf {path} does not exist")
        return path
    from adapters.models.base_models import embedded_gguf

    return embedded_gguf()


def read_documents(src, files: list[Path], cache_dir: Path) -> tuple[list[str], str]:
    """The source's documents and where they came from."""
    if src.kind == "wikitext":
        return wikitext_docs(src, files), str(files[0]) if files else f"hub:{src.hub_id}/{src.hub_config}"
    if src.kind == "alpaca":
        return alpaca_docs(src, files), str(files[0]) if files else f"hub:{src.hub_id}"
    if src.kind == "chat_records":
        return chat_record_docs(files), ", ".join(str(f) for f in files)
    if src.kind == "teacher_text":
        return teacher_docs(src, files[0], cache_dir), f"{files[0].name} answering {src.prompts} fixed prompts"
    return repo_docs(), f"{REPO_ROOT.name}: README files and module docstrings"


def _table_rows(path: Path) -> list[dict]:
    from datasets import Dataset

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path)).to_list()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of records")
        return rows
    raise RecordError(f"{path}: expected .parquet, .jsonl or .json")


def wikitext_docs(src: WikiTextSource, files: list[Path]) -> list[str]:
    """Paragraphs of at least ``min_chars`` characters; ' = Heading = ' lines are dropped."""
    if files and files[0].suffix.lower() in (".raw", ".tokens", ".txt"):
        lines = files[0].read_text(encoding="utf-8").splitlines()
    elif files:
        rows = _table_rows(files[0])
        if rows and "text" not in rows[0]:
            raise RecordError(f"{files[0]}: row 1 has no 'text' column (columns: {sorted(rows[0])})")
        lines = [r["text"] for r in rows]
    else:
        from datasets import load_dataset

        lines = load_dataset(src.hub_id, src.hub_config, split="train")["text"]
    paragraphs = (line.strip() for line in lines)
    return [p for p in paragraphs if len(p) >= src.min_chars and not p.startswith("=")]


def alpaca_docs(src: AlpacaSource, files: list[Path]) -> list[str]:
    """Alpaca rows (instruction, input, output) in the Alpaca layout."""
    if files:
        rows, origin = _table_rows(files[0]), str(files[0])
    else:
        from datasets import load_dataset

        rows, origin = load_dataset(src.hub_id, split="train").to_list(), src.hub_id
    docs = []
    for i, row in enumerate(rows, 1):
        for field in ("instruction", "output"):
            if not isinstance(row.get(field), str):
                raise RecordError(f"{origin}: record {i}: field '{field}' is missing or not text (is this Alpaca?)")
        if row["instruction"].strip() and row["output"].strip():
            docs.append(alpaca_text(row["instruction"], row.get("input") or "", row["output"]))
    return docs


def chat_record_docs(files: list[Path]) -> list[str]:
    """Each record's user/assistant turns as Alpaca-layout text (system prompts left out: they repeat)."""
    docs = []
    for path in files:
        for rec in read_chat_records(path):
            turns = [m for m in rec.messages if m.role != "system"]
            pairs = [alpaca_text(u.content, "", a.content) for u, a in zip(turns[::2], turns[1::2])
                     if u.role == "user" and a.role == "assistant"]
            if pairs:
                docs.append("\n\n".join(pairs))
    return docs


def teacher_docs(src: TeacherTextSource, gguf: Path, cache_dir: Path) -> list[str]:
    """The teacher's greedy answers to the fixed prompts; answers already written are read from the cache."""
    from adapters.models.llama_cpp import GgufChat
    from tasks.common.stage import file_digest

    prompts = teacher_prompts(src.prompts)
    cache = Path(cache_dir) / "teacher_text" / f"{gguf.stem}-{file_digest(gguf)[:12]}-{src.max_new_tokens}.jsonl"
    done = {r["prompt"]: r["text"] for r in read_jsonl(cache)} if cache.exists() else {}
    todo = [p for p in prompts if p not in done]
    if todo:
        say(f"[indra_data] the teacher ({gguf.name}) writes {len(todo)} answers of up to {src.max_new_tokens} tokens "
            f"({len(done)} cached in {cache})")
        cache.parent.mkdir(parents=True, exist_ok=True)
        with GgufChat(gguf, n_ctx=512 + src.max_new_tokens, n_threads=src.n_threads) as chat, \
                StageProgress("teacher writes text", len(todo)) as progress, open(cache, "a") as fh:
            for prompt in todo:
                text = chat.reply([{"role": "user", "content": prompt}], max_tokens=src.max_new_tokens).strip()
                done[prompt] = text
                fh.write(json.dumps({"prompt": prompt, "text": text}) + "\n")  # appended one by one: a kill loses one answer
                fh.flush()
                progress.advance()
    return [alpaca_text(p, "", done[p]) for p in prompts if done[p]]


def repo_docs() -> list[str]:
    """README files and the module docstrings of tasks/, adapters/ and flows/ (their project and kind subpackages
    included, adapters/teachers not), in file-name order within each."""
    docs = [p.read_text(encoding="utf-8") for p in (REPO_ROOT / "README.md", REPO_ROOT / "data" / "README.md") if p.is_file()]
    for pkg in ("tasks", "adapters", "flows"):
        paths = [p for p in (REPO_ROOT / pkg).rglob("*.py") if "teachers" not in p.relative_to(REPO_ROOT / pkg).parts]
        for path in sorted(paths, key=lambda p: (p.name, p.parts)):
            try:
                doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            except SyntaxError:
                continue  # a module being edited by someone else; its docstring is not training data
            if doc and len(doc) > 80:
                docs.append(doc)
    return docs


def documents_digest(docs: list[str]) -> str:
    """Content identity of a list of documents."""
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode("utf-8")).digest())
    return h.hexdigest()
