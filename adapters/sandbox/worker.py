"""The worker side of adapters/sandbox/jobs.py. A zygote (started by ``Sandbox`` as ``python -I -c`` calling
``_zygote_main``; frames as in adapters/sandbox/protocol.py) imports the preload modules once, then
forks a child per job that isolates itself, runs the code and the trusted check, and reports on fd 3;
the zygote enforces the deadline and classifies what happened (``_classify``).

Threat model: the code is hostile or merely wrong. It must not read secrets, change anything outside
its job, reach the network, leave processes behind or starve the host. Layers (each child reports
which were applied in ``SandboxResult.isolation``):

* Process: zygotes are exec'd, not forked from the caller, so the caller's memory and environment
  (ANTHROPIC_API_KEY, tokens) never enter them. A child's environment holds only PATH, HOME and
  TMPDIR (its working directory), LANG and thread counts.
* Kernel (when run as root): zygotes live in an empty network namespace (no interface is up); each
  child is PID 1 of a new PID namespace (whatever it starts dies with it; its ``/proc`` shows only
  its own processes) and has a private mount namespace in which the whole filesystem is read-only
  except a size-limited, noexec ``tmpfs`` on ``/tmp`` holding its working directory. It then drops
  to an unprivileged uid (default 65534) without capabilities and with ``no_new_privs``. If Python
  lives where that uid cannot go (pyenv under ``/root``), its directories are bind-mounted back at
  their own paths over an empty ``tmpfs`` that hides the rest (``/root``).
* Limits: RLIMIT_AS (``memory_mb`` above the worker's own size), RLIMIT_CPU, RLIMIT_FSIZE,
  RLIMIT_NOFILE, RLIMIT_NPROC, no core files; the zygote enforces the wall-clock timeout and kills
  the child, and with it its PID namespace.
* Python audit hook (``sys.addaudithook``; Python code cannot remove it): denies process creation
  (fork, exec, spawn, subprocess, os.system), sockets, ctypes, building code objects, signals,
  rlimit changes, writes outside the working directory and reads outside Python's own directories,
  the working directory and a few system files. A denied operation ends the child at once with
  outcome ``denied`` and the event's name: the code cannot catch the error and carry on.

Not contained, or only partly: there is no seccomp filter, so native code already loaded (numpy,
qiskit, Aer) misused through a bug of its own meets only the kernel layers; the audit hook's path
checks can race with symlink swaps (the read-only filesystem still holds for writes, but a world-
readable file could be read); timing side channels; ``tmpfs_mb`` of memory per running child. A
check run in the code's own process (``run`` without ``extract``) can be fooled by the code.
Without root only the process, limit and audit layers apply, and ``isolation`` says so. Linux only.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

from adapters.sandbox.protocol import BASE_ENV, OUTCOMES, ROOT, parse_frames, read_frame, write_frame

WORKDIR = "/tmp/work"  # inside the child's private tmpfs
_DENIED_EXIT = 86
_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_SYS_MOUNT_SETATTR = 442  # one number on every architecture (syscalls added after 424 share a table)
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_RESULT_KEYS = {"outcome", "value", "phase", "error_type", "message", "line", "event", "signal", "isolation"}


class _Kernel:
    """The Linux calls Python 3.11's os module lacks (unshare, setns, mount, mount_setattr, prctl), via libc."""

    def __init__(self):
        import ctypes

        self.ct, self.libc = ctypes, ctypes.CDLL(None, use_errno=True)

    def __call__(self, name: str, *args) -> None:
        enc = [a.encode() if isinstance(a, str) else a for a in args]
        if getattr(self.libc, name)(*enc) != 0:
            err = self.ct.get_errno()
            raise OSError(err, f"{name}{args}: {os.strerror(err)}")

    def mount(self, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        self("mount", src, target, fstype, self.ct.c_ulong(flags), data)

    def make_readonly(self, path: str) -> None:
        """Read-only, nosuid and nodev for ``path`` and every mount below it (mount_setattr(2))."""
        ct = self.ct
        attr = (ct.c_uint64 * 4)(1 | 2 | 4, 0, 0, 0)  # MOUNT_ATTR_RDONLY | NOSUID | NODEV
        self("syscall", ct.c_long(_SYS_MOUNT_SETATTR), ct.c_int(-100), path, ct.c_uint(0x8000), ct.byref(attr),
             ct.c_size_t(32))


def _hidden_python_dirs(uid: int | None) -> dict[str, list[str]]:
    """Python's directories the sandbox uid cannot reach, keyed by the ancestor that blocks it (e.g. /root)."""
    found: dict[str, list[str]] = {}
    if uid is None:
        return found
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p and os.path.isdir(p)}
    for d in sorted(dirs):
        parts = Path(d).parts
        for i in range(2, len(parts) + 1):
            top = str(Path(*parts[:i]))
            if not os.stat(top).st_mode & 0o001:
                if not any(d == x or d.startswith(x + "/") for x in found.get(top, [])):
                    found.setdefault(top, []).append(d)
                break
    return found


class _Zygote:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        for name in cfg["preload"]:
            module, _, fn = name.partition(":")
            mod = importlib.import_module(module)
            if fn:
                getattr(mod, fn)()
        self.kernel = _Kernel()
        root = os.geteuid() == 0
        self.uid = cfg["uid"] if root else None
        self.netns = self.pidns = self.mountns = False
        self.base = tempfile.mkdtemp(prefix="labtune-sandbox-")
        os.chmod(self.base, 0o711)
        self.jobs = 0
        if root and cfg["namespaces"]:
            try:
                self.kernel("unshare", _CLONE_NEWNET)
                self.netns = True
            except OSError:
                pass
            self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
            self.pidns = self.mountns = True
        self.hidden = _hidden_python_dirs(self.uid)
        probe = self.serve({"code": None, "fn": None, "args": {}, "timeout_s": 120, "phase": "probe"})
        if probe["outcome"] != "ok" and self.mountns:  # e.g. a container without mount_setattr
            self.pidns = self.mountns = False
            probe = self.serve({"code": None, "fn": None, "args": {}, "timeout_s": 120, "phase": "probe"})
        if probe["outcome"] != "ok":
            raise RuntimeError(f"sandbox child failed to start: {probe.get('message')}")
        self.isolation = probe["isolation"]

    def serve(self, req: dict) -> dict:
        """Fork a child for one job, enforce its deadline, and describe what happened."""
        start = time.monotonic()
        r, w = os.pipe()
        out = os.memfd_create("sandbox-output")
        self.jobs += 1
        workdir = WORKDIR if self.mountns else os.path.join(self.base, f"job{self.jobs}")
        if not self.mountns:
            os.mkdir(workdir, 0o700)
        if self.pidns:
            self.kernel("unshare", _CLONE_NEWPID)  # the next child is PID 1 of a fresh PID namespace
        try:
            pid = os.fork()
        except OSError as e:
            pid, fork_error = -1, e
        if pid == 0:
            os.close(r)
            _child_main(req, w, out, workdir, self)
        if self.pidns:
            self.kernel("setns", self.own_pidns, _CLONE_NEWPID)
        os.close(w)
        if pid < 0:
            os.close(r)
            os.close(out)
            return {"outcome": "error", "phase": "isolate", "message": f"fork failed: {fork_error}", "wall_s": 0.0}
        try:
            buf, timed_out, oversize = self._collect(r, pid, start + float(req["timeout_s"]))
            if timed_out or oversize or not self.pidns:
                self._kill(pid)  # a PID-namespace child takes its descendants with it when it exits
            _, status = os.waitpid(pid, 0)
            size = os.fstat(out).st_size
            output = os.pread(out, 4000, max(0, size - 4000)).decode(errors="replace")
        finally:
            os.close(r)
            os.close(out)
            if not self.mountns:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
        result = _classify(status, parse_frames(buf), timed_out, oversize, req["timeout_s"])
        result.update(wall_s=round(time.monotonic() - start, 6), output=output)
        return result

    def _collect(self, r: int, pid: int, deadline: float) -> tuple[bytes, bool, bool]:
        pidfd = os.pidfd_open(pid)
        buf, timed_out, oversize, exited, eof = bytearray(), False, False, False, False
        try:
            while not (exited and eof):
                wait = deadline - time.monotonic()
                if wait <= 0:
                    timed_out = not exited
                    break
                watch = [fd for fd, done in ((r, eof), (pidfd, exited)) if not done]
                ready = select.select(watch, [], [], wait)[0]
                if r in ready:
                    chunk = os.read(r, 1 << 16)
                    eof = not chunk
                    buf += chunk
                    if len(buf) > self.cfg["max_result_bytes"]:
                        oversize = True
                        break
                if pidfd in ready:
                    exited = True
                    deadline = min(deadline, time.monotonic() + 2)  # left-over descendants may hold the pipe
        finally:
            os.close(pidfd)
        return bytes(buf), timed_out, oversize

    def _kill(self, pid: int) -> None:
        try:
            (os.kill if self.pidns else os.killpg)(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _classify(status: int, frames: list[dict], timed_out: bool, oversize: bool, timeout_s: float) -> dict:
    last = {k: v for k, v in (frames[-1] if frames else {}).items() if k in _RESULT_KEYS}
    base = {"isolation": last.get("isolation") if isinstance(last.get("isolation"), dict) else {}}
    if timed_out:
        return {**base, "outcome": "timeout", "message": f"no result within {timeout_s} s (wall clock)"}
    if oversize:
        return {**base, "outcome": "runtime_error", "phase": "check", "message": "result too large"}
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        if sig == "SIGXCPU":
            return {**base, "outcome": "timeout", "signal": sig, "message": "CPU time limit"}
        return {**base, "outcome": "killed", "signal": sig, "message": f"killed by {sig}"}
    code = os.WEXITSTATUS(status)
    if code == _DENIED_EXIT or last.get("outcome") == "denied":
        return {**base, "outcome": "denied", "event": str(last.get("event") or "unknown"), "phase": last.get("phase"),
                "message": str(last.get("message") or "denied operation")[:500]}
    if not last:
        why = "the code exited before the check ran" if code == 0 else f"the process exited with status {code}"
        return {**base, "outcome": "runtime_error", "phase": "exec", "message": why}
    if last.get("outcome") not in OUTCOMES:
        return {**base, "outcome": "error", "message": "malformed result"}
    last["message"] = str(last.get("message") or "")[:2000]
    last["line"] = last.get("line") if isinstance(last.get("line"), int) else None
    return {**last, **base}


def _zygote_main() -> None:
    """Entry point of a worker process: serve job frames from stdin until it closes."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints from imported libraries go to the log, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = read_frame(in_fd, None)
    try:
        zygote = _Zygote(cfg)
    except BaseException as e:  # noqa: BLE001 (reported: the caller raises SandboxError with it)
        write_frame(out_fd, {"error": f"{type(e).__name__}: {e}"})
        return
    write_frame(out_fd, {"ready": True, "isolation": zygote.isolation})
    try:
        while (req := read_frame(in_fd, None)) is not None:
            write_frame(out_fd, zygote.serve(req))
    finally:
        import shutil

        shutil.rmtree(zygote.base, ignore_errors=True)


def _child_main(req: dict, wfd: int, outfd: int, workdir: str, zygote: _Zygote) -> None:
    """Isolate, execute, check, report on fd 3; never returns."""
    state = {"phase": "isolate", "isolation": {}}
    status = 1
    try:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(outfd, 1)
        os.dup2(outfd, 2)
        os.dup2(wfd, 3)
        os.closerange(4, 1 << 16)
        fn = None
        if req["fn"]:
            module, _, name = req["fn"].partition(":")
            fn = getattr(importlib.import_module(module), name)
        state["isolation"] = _isolate(zygote, workdir, req["timeout_s"])
        code = req["code"]
        ns = {"__name__": "__main__", "__builtins__": __builtins__}
        if code is not None:
            state["phase"] = "compile"
            compiled = compile(code, "<sandbox>", "exec")
        if zygote.cfg["audit"]:
            _install_audit_hook(workdir, state)
        if code is not None:
            state["phase"] = "exec"
            exec(compiled, ns)  # noqa: S102 (the point of this module)
        state["phase"] = req["phase"]
        value = None if fn is None else fn(ns, req["args"]) if code is not None else fn(req["args"])
        _flush()
        write_frame(3, {"outcome": "ok", "value": value, "isolation": state["isolation"]})
        status = 0
    except BaseException as exc:  # noqa: BLE001 (every failure of the code is reported, never raised)
        try:
            _flush()
            write_frame(3, {**_describe_error(exc, state["phase"]), "isolation": state["isolation"]})
        except BaseException:  # noqa: BLE001, S110 (fd 3 closed by the code: the exit status tells)
            pass
    os._exit(status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 (the code may have replaced or closed them)
            pass


def _isolate(zygote: _Zygote, workdir: str, timeout_s: float) -> dict:
    import resource

    cfg, k = zygote.cfg, zygote.kernel
    with open("/proc/self/statm") as fh:
        own_size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    if zygote.mountns:
        k("unshare", _CLONE_NEWNS)
        k.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        k.make_readonly("/")
        k.mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, f"size={cfg['tmpfs_mb']}m,mode=0755")
        os.mkdir(workdir, 0o700)
        for top, dirs in zygote.hidden.items():  # e.g. pyenv's Python under /root (drwx------)
            fds = [os.open(d, os.O_PATH) for d in dirs]
            k.mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
            for d, fd in zip(dirs, fds):
                os.makedirs(d, exist_ok=True)
                k.mount(f"/proc/self/fd/{fd}", d, None, _MS_BIND | _MS_REC)
                os.close(fd)
            k.make_readonly(top)
        if zygote.pidns:
            k.mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    if zygote.uid is not None:
        os.chown(workdir, zygote.uid, zygote.uid)
        os.setgroups([])
        os.setgid(zygote.uid)
        os.setuid(zygote.uid)
    k("prctl", _PR_SET_NO_NEW_PRIVS, k.ct.c_ulong(1), 0, 0, 0)
    k("prctl", _PR_SET_PDEATHSIG, k.ct.c_ulong(signal.SIGKILL), 0, 0, 0)  # after setuid, which clears it
    cpu = int(timeout_s) + 2
    limits = {resource.RLIMIT_AS: own_size + (cfg["memory_mb"] << 20), resource.RLIMIT_CPU: (cpu, cpu + 1),
              resource.RLIMIT_FSIZE: cfg["file_size_mb"] << 20, resource.RLIMIT_NOFILE: 256, resource.RLIMIT_CORE: 0}
    if zygote.uid is not None:  # root ignores RLIMIT_NPROC
        limits[resource.RLIMIT_NPROC] = cfg["max_processes"]
    for which, value in limits.items():
        soft, hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({**BASE_ENV, "HOME": workdir, "TMPDIR": workdir})
    tempfile.tempdir = workdir
    sys.dont_write_bytecode = True
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != str(ROOT)]
    return {"network_namespace": zygote.netns, "pid_namespace": zygote.pidns, "mount_namespace": zygote.mountns,
            "uid": os.getuid(), "audit": cfg["audit"], "memory_mb": cfg["memory_mb"]}


def _describe_error(exc: BaseException, phase: str) -> dict:
    try:
        message = str(exc)[:2000]
    except Exception:  # noqa: BLE001 (a hostile __str__)
        message = "<unprintable>"
    line = None
    if isinstance(exc, SyntaxError) and phase == "compile":
        kind, line = "syntax_error", exc.lineno
    else:
        kind = "memory_limit" if isinstance(exc, MemoryError) or "bad_alloc" in message else "runtime_error"
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<sandbox>":
                line = tb.tb_lineno
            tb = tb.tb_next
    if phase == "isolate":
        kind = "error"
    return {"outcome": kind, "phase": phase, "error_type": type(exc).__name__, "message": message, "line": line}


_DENY_PREFIXES = ("socket.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "subprocess.",
                  "http.client.", "urllib.", "ftplib.", "smtplib.", "imaplib.", "poplib.", "nntplib.",
                  "telnetlib.", "webbrowser.", "resource.", "pty.", "sqlite3.enable_load", "sqlite3.load")
_DENY_EVENTS = {"os.system", "os.kill", "os.killpg", "signal.pthread_kill", "code.__new__", "sys.addaudithook"}
_DENY_IMPORTS = {"_posixsubprocess", "_ctypes"}
# event -> (positions of path arguments, positions of dir_fd arguments)
_PATH_EVENTS = {"os.mkdir": ((0,), (2,)), "os.rmdir": ((0,), (1,)), "os.remove": ((0,), (1,)),
                "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)),
                "os.truncate": ((0,), ()), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
                "os.utime": ((0,), (3,)), "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,)),
                "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "shutil.rmtree": ((0,), (1,)),
                "sqlite3.connect": ((0,), ())}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_READ_DIRS = ("/usr/lib", "/usr/lib64", "/usr/share", "/usr/local/lib", "/lib", "/lib64", "/etc/ssl",
              "/sys/devices/system/cpu", "/sys/fs/cgroup", "/proc/self", "/proc/thread-self")
_READ_FILES = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/proc/meminfo", "/proc/cpuinfo",
               "/proc/stat", "/etc/localtime", "/etc/os-release"}


def _install_audit_hook(workdir: str, state: dict) -> None:
    """Deny, report on fd 3 and exit at the first operation outside the policy."""
    real = os.path.realpath
    reads = {workdir, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             f"/proc/{os.getpid()}", *_READ_DIRS, *(p for p in sys.path if p)}
    read_roots = tuple({real(p) for p in reads} - {str(ROOT), "/"})
    write_root = real(workdir)

    def under(path: str, roots: tuple) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    def deny(event: str, detail: str) -> None:
        try:
            _flush()
            write_frame(3, {"outcome": "denied", "event": event, "phase": state["phase"], "message": detail[:500],
                             "isolation": state["isolation"]})
        finally:
            os._exit(_DENIED_EXIT)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writing = bool(isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+"))
            p = real(os.fsdecode(path))
            if writing and not (under(p, (write_root,)) or p == "/dev/null"):
                deny("open", f"write outside the working directory: {p}")
            if not writing and not (under(p, read_roots) or p in _READ_FILES):
                deny("open", f"read outside the allowed directories: {p}")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if not isinstance(path, int) and not under(real(os.fsdecode(path)), read_roots):
                deny(event, f"list {real(os.fsdecode(path))}")
        elif event in _PATH_EVENTS:
            paths, dir_fds = _PATH_EVENTS[event]
            if any(i < len(args) and isinstance(args[i], int) and args[i] >= 0 for i in dir_fds):  # -1: none
                deny(event, "dir_fd-relative path")
            for i in paths:
                p = args[i] if i < len(args) else None
                if isinstance(p, (str, bytes, os.PathLike)) and p != ":memory:" \
                        and not under(real(os.fsdecode(p)), (write_root,)):
                    deny(event, f"outside the working directory: {real(os.fsdecode(p))}")
        elif event == "import":
            if args[0] in _DENY_IMPORTS:
                deny(event, args[0])
        elif event in _DENY_EVENTS or event.startswith(_DENY_PREFIXES):
            deny(event, repr(args)[:300])

    def no_fork_exec(*args, **kwargs):  # _posixsubprocess.fork_exec raises no audit event of its own
        deny("_posixsubprocess.fork_exec", "process creation")

    import _posixsubprocess

    _posixsubprocess.fork_exec = no_fork_exec
    if "subprocess" in sys.modules:
        sys.modules["subprocess"]._fork_exec = no_fork_exec
    sys.addaudithook(hook)
