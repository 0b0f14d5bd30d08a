"""Stage conventions shared by every labtune task: content hashes, manifests, atomic outputs.

A stage writes into a temporary sibling directory, writes ``manifest.json`` last and renames
the directory into place, so a reader never sees half-written output. A stage whose
manifest carries the same key (config + input contents + stage source) is a cache hit.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import BaseModel

MANIFEST = "manifest.json"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (names + bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(file_digest(f).encode())
        return h.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_digests(inputs: Path | Sequence[Path] | dict[str, Path] | None) -> dict[str, str]:
    """Content digests of a stage's inputs, keyed by path; named inputs ({name: path}) carry their name."""
    if inputs is None:
        return {}
    if isinstance(inputs, dict):
        return {f"{name}={p}": f"{name}={d}" for name, path in inputs.items() for p, d in input_digests(path).items()}
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"stage input {p} does not exist (did the previous stage run?)")
        # A stage directory is represented by its manifest: cheap, and changes with its contents.
        out[str(p)] = file_digest(p / MANIFEST) if (p / MANIFEST).exists() else file_digest(p)
    return out


def stage_key(stage: str, cfg: BaseModel | dict | None, inputs, source: str = "") -> str:
    """Cache key of one stage run: its config, the contents of its inputs, and its code."""
    cfg_json = cfg.model_dump_json() if isinstance(cfg, BaseModel) else json.dumps(cfg, sort_keys=True, default=str)
    digests = sorted(input_digests(inputs).values())
    blob = json.dumps([stage, cfg_json, digests, hashlib.sha256(source.encode()).hexdigest()])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


OWN_PACKAGES = ("tasks", "adapters", "flows")


def module_source(obj: Any) -> str:
    """Source of the module defining ``obj`` and of every labtune module it uses, transitively.

    Part of each stage's cache key, so editing a helper the stage relies on (a physics encoder,
    a lab adapter) invalidates the stage's cached output just like editing the stage itself.
    """
    root = inspect.getmodule(obj)
    seen: dict[str, str] = {}
    todo = [root] if root else []
    while todo:
        mod = todo.pop()
        if mod is None or mod.__name__ in seen:
            continue
        try:
            seen[mod.__name__] = inspect.getsource(mod)
        except (OSError, TypeError):
            seen[mod.__name__] = ""
        for value in vars(mod).values():
            dep = value if inspect.ismodule(value) else inspect.getmodule(value) if callable(value) else None
            if dep is not None and dep.__name__.split(".")[0] in OWN_PACKAGES:
                todo.append(dep)
    return "".join(seen[name] for name in sorted(seen))


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest of a finished stage output, or None when the output is absent or unfinished."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def cached(out_dir: Path, key: str) -> dict | None:
    """The manifest if ``out_dir`` holds a finished output made with ``key``."""
    manifest = read_manifest(out_dir)
    return manifest if manifest and manifest.get("key") == key else None


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON via a temp file + rename so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class StageOutput:
    """A stage's output under construction; ``publish`` makes it visible in one rename."""

    def __init__(self, stage: str, out_dir: Path, key: str, cfg: BaseModel | dict | None, inputs):
        self.stage, self.out_dir, self.key = stage, Path(out_dir), key
        self.cfg = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
        self.inputs = input_digests(inputs)
        self.tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}")
        self.started = time.time()
        self.counts: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def publish(self) -> dict:
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "config": self.cfg,
            "inputs": self.inputs,
            "counts": self.counts,
            "metrics": self.metrics,
            "files": sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*") if p.is_file()),
            "wall_time_s": round(time.time() - self.started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        write_json_atomic(self.tmp / MANIFEST, manifest)
        trash = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
        if self.out_dir.exists():
            os.replace(self.out_dir, trash)
        os.replace(self.tmp, self.out_dir)
        shutil.rmtree(trash, ignore_errors=True)
        return manifest


@contextmanager
def stage_output(stage: str, out_dir: Path, key: str, cfg, inputs) -> Iterator[StageOutput]:
    """Build a stage output in a temp dir; publish it only if the block finishes."""
    out = StageOutput(stage, out_dir, key, cfg, inputs)
    shutil.rmtree(out.tmp, ignore_errors=True)
    out.tmp.mkdir(parents=True)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out.tmp, ignore_errors=True)
        raise
    out.publish()


def prefect_cache_key(context, parameters: dict) -> str | None:
    """Prefect ``cache_key_fn``: the stage key, but only while its output is still on disk.

    Returning None when the output was deleted makes Prefect run the stage again instead of
    handing back a path to nothing.
    """
    cfg, inputs, out_dir = parameters.get("cfg"), parameters.get("inputs"), parameters.get("out_dir")
    if out_dir is None:
        return None
    fn = context.task.fn
    try:
        key = stage_key(context.task.name, cfg, inputs, module_source(fn))
    except FileNotFoundError:
        return None
    if not cached(Path(out_dir), key):
        return None
    # The same config and inputs written to another directory is another result: Prefect's result
    # store is shared by every run on the machine, and must not hand back a path to someone else's output.
    return f"{key}-{hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:12]}"
