"""What both sides of the sandbox share: the frame format on their pipes, the outcome names, the
project root and the scrubbed environment.

A frame is a 4-byte big-endian length followed by that many bytes of JSON. The caller
(adapters/sandbox/jobs.py) and a zygote (adapters/sandbox/worker.py) exchange one config frame, one
ready frame, then a request frame and a reply frame per job; a job's child reports on its own pipe,
where ``parse_frames`` keeps whatever complete frames arrived before it died. It imports nothing
else of the sandbox, so both sides use it without an import cycle.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "syntax_error", "runtime_error", "timeout", "memory_limit", "killed", "denied", "error")
ROOT = Path(__file__).resolve().parents[2]
# The whole environment of a zygote (plus HOME) and of a child (plus HOME and TMPDIR)
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "QISKIT_PARALLEL": "FALSE", "MALLOC_ARENA_MAX": "2",
            "QISKIT_SUPPRESS_PACKAGING_WARNINGS": "Y", "MPLBACKEND": "Agg"}


def write_frame(fd: int, obj: Any) -> None:
    """Write ``obj`` as one frame, however many writes it takes."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None, eof_ok: bool = False) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("no answer from the sandbox worker")
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            if buf or not eof_ok:
                raise EOFError("sandbox worker closed the pipe mid-frame")
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd: int, deadline: float | None) -> Any:
    """The next frame, or None at end of stream."""
    header = _read_exact(fd, 4, deadline, eof_ok=True)
    return None if header is None else json.loads(_read_exact(fd, struct.unpack(">I", header)[0], deadline))


def parse_frames(buf: bytes) -> list[dict]:
    """Complete frames in ``buf`` (a child may die mid-frame; garbage is skipped)."""
    frames, pos = [], 0
    while pos + 4 <= len(buf) and pos + 4 + (n := struct.unpack(">I", buf[pos:pos + 4])[0]) <= len(buf):
        try:
            frames.append(json.loads(buf[pos + 4:pos + 4 + n]))
        except ValueError:
            pass
        pos += 4 + n
    return [f for f in frames if isinstance(f, dict)]
