"""Stage conventions shared by every labtune task: cache keys, manifests, atomic outputs.

A stage's key (``stage_key``) hashes its config, the contents of its inputs and the source of its
module and of every labtune module that one uses; the stage body and Prefect's cache
(``prefect_cache_key``) both take it from ``stage_key``. A stage writes into a temporary sibling
directory, writes ``manifest.json`` last and renames the directory into place, so a reader never
sees half-written output. A stage whose manifest carries the same key, and whose files still have
the sizes and digests the manifest recorded, is a cache hit; a damaged output is computed again.
Runs sharing a data dir take turns per output (tasks/common/stage_locks.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pydantic import BaseModel

from tasks.common.reporting import say
from tasks.common.stage_locks import StageKey, hold_lock, let_go, remove_leftovers

MANIFEST = "manifest.json"
# Output files up to this size are re-hashed at every cache check; larger ones (model weights, GGUFs)
# are checked by size only, which still catches truncation without reading gigabytes per run.
VERIFY_SHA256_MAX_BYTES = 64 * 2**20


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


def stage_key(stage: Callable, cfg, inputs, out_dir: Path) -> StageKey:
    """The cache key of one run of a stage: what its manifest records and what Prefect's cache looks up.

    The one place a stage's key is derived: the stage body calls it before computing, and
    ``prefect_cache_key`` calls it with the task's parameters. ``stage`` is the stage function; its
    module names the stage (``STAGE``) and, when the key hashes something other than the arguments
    as given (a subset of the config, the files inside an input directory, a file the config names),
    says what in ``key_of(cfg, inputs, out_dir) -> (cfg_part, inputs_part)``.
    """
    module = inspect.getmodule(stage)
    key_of = getattr(module, "key_of", None)
    cfg_part, inputs_part = key_of(cfg, inputs, Path(out_dir)) if key_of else (cfg, inputs)
    return key_digest(module.STAGE, cfg_part, inputs_part, module_source(stage))


def key_digest(stage: str, cfg: BaseModel | dict | None, inputs, source: str = "") -> StageKey:
    """Hash of a stage's name, its config, the contents of its inputs, and its code."""
    cfg_json = cfg.model_dump_json() if isinstance(cfg, BaseModel) else json.dumps(cfg, sort_keys=True, default=str)
    digests = sorted(input_digests(inputs).values())
    blob = json.dumps([stage, cfg_json, digests, hashlib.sha256(source.encode()).hexdigest()])
    key = StageKey(hashlib.sha256(blob.encode()).hexdigest()[:24])
    key.made_at = time.time()
    return key


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
        # Under `python -m tasks.<project>.x` the stage module is `__main__`; its spec still says `tasks.<project>.x`,
        # so a stage CLI and a flow give the same key (and resume each other's checkpoints).
        if mod is None:
            continue
        name = getattr(mod.__spec__, "name", None) or mod.__name__
        if name in seen:
            continue
        try:
            seen[name] = inspect.getsource(mod)
        except (OSError, TypeError):
            seen[name] = ""
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
    """The manifest if ``out_dir`` holds an intact output made with ``key``.

    On a miss the caller holds the output's lock from here until ``stage_output`` publishes (or
    the stage drops ``key``): another run of the same stage waits in here, then gets the hit.
    """
    out_dir = Path(out_dir)
    manifest = _finished(out_dir, key)
    if manifest is not None:
        return manifest
    lock = hold_lock(out_dir, key)
    manifest = _finished(out_dir, key, report=True)
    if manifest is not None and lock is not None:
        if lock.waited_for:
            say(f"[labtune] {out_dir}: finished by {lock.waited_for} while this run waited: a cache hit")
        let_go(lock, key)
    return manifest


def _finished(out_dir: Path, key: str, report: bool = False) -> dict | None:
    """The manifest of an intact output made with ``key``, without locking (what Prefect's cache asks)."""
    manifest = read_manifest(out_dir)
    if not manifest or manifest.get("key") != key:
        return None
    problem = _damage(Path(out_dir), manifest)
    if problem:
        if report:
            say(f"[labtune] {out_dir}: {problem}; the output was changed after it was written, so the stage runs again")
        return None
    return manifest


def _damage(out_dir: Path, manifest: dict) -> str | None:
    """What differs between the files on disk and the sizes/digests the manifest recorded, if anything."""
    for rel, facts in (manifest.get("integrity") or {}).items():
        path = out_dir / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{rel} is missing"
        if size != facts.get("bytes"):
            return f"{rel} is {size} bytes on disk but was {facts.get('bytes')} bytes when written (truncated or changed)"
        if facts.get("sha256") and file_digest(path) != facts["sha256"]:
            return f"{rel} no longer has the sha256 recorded when it was written"
    return None


def _file_facts(path: Path) -> dict:
    size = path.stat().st_size
    return {"bytes": size, "sha256": file_digest(path) if size <= VERIFY_SHA256_MAX_BYTES else None}


def _unique_suffix() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON via a temp file + rename so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{_unique_suffix()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class StageOutput:
    """A stage's output under construction; ``publish`` makes it visible in one rename."""

    def __init__(self, stage: str, out_dir: Path, key: str, cfg: BaseModel | dict | None, inputs):
        self.stage, self.out_dir, self.key = stage, Path(out_dir), key
        self.cfg = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
        self.inputs = input_digests(inputs)
        self.tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{_unique_suffix()}")
        # from the key's making: a stage that trains first and opens its output only to save (sft) is timed in full
        self.started = getattr(key, "made_at", None) or time.time()
        self.counts: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def publish(self) -> dict:
        files = sorted(p for p in self.tmp.rglob("*") if p.is_file())
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "config": self.cfg,
            "inputs": self.inputs,
            "counts": self.counts,
            "metrics": self.metrics,
            "files": [str(p.relative_to(self.tmp)) for p in files],
            "integrity": {str(p.relative_to(self.tmp)): _file_facts(p) for p in files},
            "written_by": {"pid": os.getpid(), "host": socket.gethostname()},
            "wall_time_s": round(time.time() - self.started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        write_json_atomic(self.tmp / MANIFEST, manifest)
        trash = self.out_dir.with_name(f".{self.out_dir.name}.old-{_unique_suffix()}")
        if self.out_dir.exists() and _exchange(self.tmp, self.out_dir):
            os.replace(self.tmp, trash)  # the temp name now holds the previous output
        else:
            if self.out_dir.exists():
                os.replace(self.out_dir, trash)
            os.replace(self.tmp, self.out_dir)
        shutil.rmtree(trash, ignore_errors=True)
        return manifest


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so that a reader of ``b`` never finds
    it missing while a new output replaces an old one; False where the kernel or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def stage_output(stage: str, out_dir: Path, key: str, cfg, inputs) -> Iterator[StageOutput]:
    """Build a stage output in a temp dir; publish it only if the block finishes. Holds the output's lock."""
    lock = hold_lock(Path(out_dir), key)
    try:
        if lock is not None:
            remove_leftovers(Path(out_dir))
        out = StageOutput(stage, out_dir, key, cfg, inputs)
        out.tmp.mkdir(parents=True)
        try:
            yield out
        except BaseException:
            shutil.rmtree(out.tmp, ignore_errors=True)
            raise
        out.publish()
    finally:
        let_go(lock, key)


def code_digest(module: str) -> str:
    """SHA-256 of a module's source file, found without importing it (for code a stage imports lazily)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    return hashlib.sha256(Path(spec.origin).read_bytes() if spec and spec.origin else b"").hexdigest()


def prefect_cache_key(context, parameters: dict) -> str | None:
    """Prefect's ``cache_key_fn`` for every stage: ``stage_key`` of the task's parameters, while its output is on disk.

    None (Prefect runs the stage) when ``out_dir`` holds no intact output made with that key, so that
    Prefect never hands back a path to nothing, and when the key cannot be derived (a missing input,
    a bad config): the stage then runs and says what is wrong itself.
    """
    out_dir = parameters.get("out_dir")
    if out_dir is None or read_manifest(out_dir) is None:
        return None
    try:
        key = stage_key(context.task.fn, parameters.get("cfg"), parameters.get("inputs"), out_dir)
    except Exception:
        return None
    if not _finished(Path(out_dir), key):
        return None
    # The same config and inputs written to another directory is another result: Prefect's result
    # store is shared by every run on the machine, and must not hand back a path to someone else's output.
    return f"{key}-{hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:12]}"
