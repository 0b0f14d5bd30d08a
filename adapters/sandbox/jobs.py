"""Isolated execution of untrusted Python (code written by a model or a teacher) in warm, forked workers.

A worker is a "zygote": a ``python -I`` process, started with a scrubbed environment, that imports
numpy, qiskit, qiskit_aer and the check modules once and then forks a fresh child per job (a few ms,
against ~1 s for a cold interpreter). The child isolates itself, executes the code, calls a trusted
check function (``"package.module:function"``) and sends a JSON result back over a pipe.

    with Sandbox(workers=2, timeout_s=10, memory_mb=1024) as sandbox:
        result = sandbox.run(code, "adapters.sandbox.jobs:module_globals")
        result.outcome  # ok | syntax_error | runtime_error | timeout | memory_limit | killed | denied | error

``run(code, check, args)`` calls ``check(namespace, args)`` in the code's own process. With
``extract=`` it calls ``extract(namespace, args)`` there instead and then ``check({**args, "payload":
value})`` in a fresh child that never ran the code, so the code cannot fool the checker (monkeypatched
libraries, forged results). ``call(fn, args)`` runs trusted code on untrusted data; ``map(jobs)``
spreads jobs over all workers. Always use the sandbox as a context manager so its workers stop.

Each job runs in a child forked from a zygote with a scrubbed environment, kernel namespaces (when
run as root), resource limits and a Python audit hook; ``SandboxResult.isolation`` says which
layers applied. Linux only. The worker side, with the threat model and what is not contained, is
adapters/sandbox/worker.py; the frames both sides exchange are in adapters/sandbox/protocol.py.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from adapters.sandbox import worker as sandbox_worker  # the zygote's code; named here so stage keys cover it too
from adapters.sandbox.protocol import BASE_ENV, OUTCOMES, ROOT, read_frame, write_frame

__all__ = ["DEFAULT_PRELOAD", "OUTCOMES", "ROOT", "Sandbox", "SandboxError", "SandboxJob", "SandboxResult",
           "module_globals"]

# numpy.char is loaded lazily (on first ``np.char``), which a child cannot do once its file access is locked down;
# Statevector.probabilities_dict needs it
DEFAULT_PRELOAD = ("numpy", "numpy.char", "qiskit", "qiskit.quantum_info", "qiskit_aer")
# The zygote imports this module too, so a child finds the built-in check (module_globals) loaded
_BOOT = ("import sys; sys.dont_write_bytecode = True; sys.path.insert(0, {root!r}); "
         "import adapters.sandbox.jobs; from {worker} import _zygote_main; _zygote_main()")


@dataclass
class SandboxResult:
    """What happened to one job."""

    outcome: str
    value: Any = None
    phase: str | None = None  # compile | exec | extract | check | isolate, where a failure happened
    error_type: str | None = None
    message: str = ""
    line: int | None = None  # line of the code where the error was raised
    event: str | None = None  # the audit event that was denied
    signal: str | None = None
    wall_s: float = 0.0
    output: str = ""  # tail of the code's stdout + stderr
    isolation: dict = field(default_factory=dict)
    extracted: Any = None  # the extract step's value, for jobs with ``extract``

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SandboxJob:
    """One unit of ``Sandbox.map``: ``code`` None means a trusted call ``check(args)``."""

    check: str
    args: dict = field(default_factory=dict)
    code: str | None = None
    extract: str | None = None
    timeout_s: float | None = None


class SandboxError(RuntimeError):
    """A worker could not start (the message carries its error output)."""


class Sandbox:
    """A pool of warm zygote workers that run untrusted code in isolated children."""

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
                 preload: Iterable[str] = DEFAULT_PRELOAD, *, file_size_mb: int = 16, tmpfs_mb: int = 64,
                 max_processes: int = 64, uid: int | None = 65534, audit: bool = True,
                 namespaces: bool = True, max_result_mb: int = 32, startup_timeout_s: float = 300.0):
        if workers < 1 or timeout_s <= 0 or memory_mb < 64:
            raise ValueError("Sandbox needs workers >= 1, timeout_s > 0 and memory_mb >= 64")
        self.workers, self.timeout_s = workers, timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._config = {"preload": list(preload), "memory_mb": memory_mb, "file_size_mb": file_size_mb,
                        "tmpfs_mb": tmpfs_mb, "max_processes": max_processes, "uid": uid, "audit": audit,
                        "namespaces": namespaces, "max_result_bytes": max_result_mb << 20}
        self._all: list[_Worker] = []
        self._free: queue.Queue[_Worker] = queue.Queue()
        self.isolation: dict = {}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start every worker (they import in parallel) and wait until all are ready."""
        self._all = [_Worker(self._config) for _ in range(self.workers)]
        try:
            for w in self._all:
                w.spawn()
            for w in self._all:
                w.handshake(self.startup_timeout_s)
                self._free.put(w)
        except BaseException:
            self.close()
            raise
        self.isolation = self._all[0].isolation

    def close(self) -> None:
        """Stop every worker."""
        for w in self._all:
            w.stop()
        self._all, self._free = [], queue.Queue()

    def run(self, code: str, check: str, args: dict | None = None, *, extract: str | None = None,
            timeout_s: float | None = None) -> SandboxResult:
        """Execute ``code`` and check it (see the module docstring for ``extract``)."""
        return self._execute(SandboxJob(check, args or {}, code, extract, timeout_s))

    def call(self, fn: str, args: dict | None = None, *, timeout_s: float | None = None) -> SandboxResult:
        """Run the trusted ``fn(args)`` in an isolated child (for untrusted data)."""
        return self._execute(SandboxJob(fn, args or {}, None, None, timeout_s))

    def map(self, jobs: Iterable[SandboxJob]) -> Iterator[SandboxResult]:
        """Run jobs on all workers; results come back in input order."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        try:
            futures = [pool.submit(self._execute, job) for job in jobs]
            for i, f in enumerate(futures):
                futures[i] = None  # let results go once they are consumed
                yield f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _execute(self, job: SandboxJob) -> SandboxResult:
        if not self._all:
            raise RuntimeError("Sandbox is not started: use it as a context manager (with Sandbox(...) as sb)")
        timeout = job.timeout_s or self.timeout_s
        worker = self._free.get()
        try:
            if job.extract is None:
                return worker.execute(job.code, job.check, job.args, timeout, "check")
            first = worker.execute(job.code, job.extract, job.args, timeout, "extract")
            if not first.ok:
                return first
            second = worker.execute(None, job.check, {**job.args, "payload": first.value}, timeout, "check")
            second.extracted, second.wall_s = first.value, first.wall_s + second.wall_s
            second.output = first.output
            return second
        finally:
            self._free.put(worker)


class _Worker:
    """The caller's handle on one zygote process."""

    def __init__(self, config: dict):
        self.config, self.proc, self.isolation = config, None, {}

    def spawn(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (the worker's stderr, read when it fails)
        boot = _BOOT.format(root=str(ROOT), worker=sandbox_worker.__name__)
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", boot],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env={**BASE_ENV, "HOME": "/nonexistent"}, cwd="/", bufsize=0,
                                     start_new_session=True)
        write_frame(self.proc.stdin.fileno(), self.config)

    def handshake(self, timeout_s: float) -> None:
        try:
            ready = read_frame(self.proc.stdout.fileno(), time.monotonic() + timeout_s)
        except (TimeoutError, EOFError):
            ready = None
        if not ready or "error" in ready:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-2000:]
            self.stop()
            raise SandboxError(f"sandbox worker failed to start: {(ready or {}).get('error', 'no answer')}\n{tail}")
        self.isolation = ready["isolation"]

    def execute(self, code: str | None, fn: str, args: dict, timeout_s: float, phase: str) -> SandboxResult:
        request = {"code": code, "fn": fn, "args": args, "timeout_s": timeout_s, "phase": phase}
        for attempt in (1, 2):
            try:
                write_frame(self.proc.stdin.fileno(), request)
                reply = read_frame(self.proc.stdout.fileno(), time.monotonic() + timeout_s + 60)
                if reply is None:
                    raise EOFError("worker exited")
                if reply["outcome"] != "ok" and not reply.get("phase"):
                    reply["phase"] = "exec" if code is not None else phase
                return SandboxResult(**reply)
            except (OSError, EOFError, TimeoutError) as e:
                self.stop()  # a zygote only runs trusted code: restart it and retry once
                self.spawn()
                self.handshake(300)
                if attempt == 2:
                    return SandboxResult("error", phase="worker", error_type=type(e).__name__,
                                         message=f"sandbox worker failed: {e}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


def module_globals(ns: dict, args: dict) -> dict:
    """The code's JSON-serialisable module-level values (``args["names"]`` to pick some)."""
    names = args.get("names") or [k for k in ns if not k.startswith("__")]
    out = {}
    for k in names:
        try:
            json.dumps(ns.get(k))
            out[k] = ns.get(k)
        except (TypeError, ValueError):
            out[k] = repr(ns.get(k))[:200]
    return out
