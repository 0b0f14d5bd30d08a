"""Runs that share a data dir take turns per stage output.

On a cache miss ``tasks.common.stage.cached`` takes an exclusive ``flock`` on ``<parent>/.<name>.lock`` and hands
it to the stage's key (a ``StageKey``); it is held while the stage computes and until ``stage_output``
has renamed the result into place, or until the stage fails and drops its key. A second run of the same
stage waits there, then finds the first one's output as a cache hit instead of computing it again. In a
distributed launch only rank 0 locks, for the group. Under the lock, temp dirs left by a run that was
killed mid-write are removed.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import socket
import time
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tasks.common.reporting import say


class StageKey(str):
    """A stage's cache key. After a miss in ``cached`` it also carries the output's lock, so the lock
    lives as long as the stage computing that output: ``stage_output`` releases it once the result is
    in place, and a stage that raises (or returns) before that drops its key and with it the lock.
    ``made_at`` is when the stage body derived it, before any work: its output's manifest times the run from there.
    """

    _lock: "OutputLock | None" = None
    made_at: float | None = None

    def __reduce__(self):  # pickled and copied as a plain string, never with its lock
        return (str, (str(self),))


class OutputLock:
    """An exclusive ``flock`` on ``<parent>/.<name>.lock``; the file is removed as the lock is let go."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir.with_name(f".{out_dir.name}.lock")
        self.waited_for: str | None = None  # who held the lock when this run had to wait
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = ""
                for _ in range(20):  # the holder writes its name just after taking the lock: give it a moment
                    fh.seek(0)
                    holder = fh.read().strip()
                    if holder:
                        break
                    time.sleep(0.025)
                holder = holder or "another run"
                if self.waited_for is None:
                    say(f"[labtune] {self.out_dir} is being written by {holder}; waiting for it to finish")
                self.waited_for = holder
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            fh.close()  # the holder removed the file as it let go: lock the one that is there now
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so that nobody is left waiting on a removed file
        except FileNotFoundError:
            pass
        fh.close()  # closing lets go of the flock

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the flock with the process anyway
            pass


_held = threading.local()  # per thread: output dir → its lock, while some key or stage_output holds it


def _locking() -> bool:
    """False in the non-zero ranks of a distributed launch (torchrun, accelerate): rank 0 locks for the group."""
    try:
        return int(os.environ.get("WORLD_SIZE") or 1) <= 1 or int(os.environ.get("RANK") or 0) == 0
    except ValueError:
        return True


def hold_lock(out_dir: Path, key: str | None) -> OutputLock | None:
    """The output's lock, taken now (waiting for another run) unless this thread already holds it."""
    if not _locking():
        return None
    locks = getattr(_held, "locks", None)
    if locks is None:
        locks = _held.locks = weakref.WeakValueDictionary()
    name = str(Path(out_dir).resolve())
    lock = locks.get(name)
    carried = getattr(key, "_lock", None)
    if carried is not None and carried.held and str(carried.out_dir) == name:
        lock = carried  # taken by ``cached`` for this key, perhaps on another thread
    if lock is None or not lock.held:
        lock = OutputLock(Path(name))
        lock.acquire()
        locks[name] = lock
    if isinstance(key, StageKey):
        key._lock = lock
    return lock


@contextmanager
def stage_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock (after any run writing it has finished): no stage writes it meanwhile."""
    lock = hold_lock(Path(out_dir), None)
    try:
        yield
    finally:
        let_go(lock, None)


def let_go(lock: OutputLock | None, key: str | None) -> None:
    """Release the output's lock, and the key's hold on it."""
    if lock is not None:
        lock.release()
    if isinstance(key, StageKey):
        key._lock = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_leftovers(out_dir: Path) -> None:
    """Temp and trash dirs of runs that died mid-write (under the lock, no live locking run owns one).

    ``tasks.common.stage`` names them ``.<name>.tmp-<pid>-<hex>`` and ``.<name>.old-<pid>-<hex>``.
    """
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:tmp|old)-(\d+)(?:-[0-9a-f]+)?")
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*-*"):
        m = pattern.fullmatch(path.name)
        if m and path.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            say(f"[labtune] removed {path}: left behind by a run that stopped mid-write")
