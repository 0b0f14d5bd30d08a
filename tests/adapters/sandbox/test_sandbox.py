"""Sandbox: hostile code is contained and reported, and the worker pool keeps working afterwards.

Two pools: the full sandbox (kernel isolation + audit hook), and one without the audit hook to show
that the kernel layers alone (namespaces, read-only filesystem, unprivileged uid, limits) hold.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import uuid

import pytest

from adapters.sandbox.jobs import ROOT, Sandbox, SandboxJob

SECRET = "sk-ant-test-" + uuid.uuid4().hex
GLOBALS = "adapters.sandbox.jobs:module_globals"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="kernel isolation needs root")


@pytest.fixture(scope="module")
def sandbox():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", SECRET)  # present in the caller while the workers start
        with Sandbox(workers=2, timeout_s=5, memory_mb=512) as sb:
            yield sb


KERNEL_UID = 200_000 + uuid.uuid4().int % 100_000  # a uid of its own, so `ps -u` sees only this pool


@pytest.fixture(scope="module")
def kernel_only():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", SECRET)
        with Sandbox(workers=1, timeout_s=3, memory_mb=512, audit=False, max_processes=16, uid=KERNEL_UID) as sb:
            yield sb


def still_works(sb: Sandbox) -> None:
    r = sb.run("x = 6 * 7", GLOBALS)
    assert (r.outcome, r.value) == ("ok", {"x": 42})


@pytest.fixture
def listener():
    """A loopback TCP server that records every connection it accepts."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join()
    srv.close()


def test_environment_secrets_are_not_visible(sandbox):
    code = ("import os\nkey = os.environ.get('ANTHROPIC_API_KEY')\nenv = dict(os.environ)\n"
            "print(open('/proc/self/environ', 'rb').read() if os.access('/proc/self/environ', os.R_OK) else '')")
    r = sandbox.run(code, GLOBALS, {"names": ["key", "env"]})
    assert os.environ["ANTHROPIC_API_KEY"] == SECRET
    assert r.outcome in ("ok", "denied")
    assert SECRET not in json.dumps(r.to_dict())
    if r.ok:
        assert r.value["key"] is None and set(r.value["env"]) >= {"PATH", "HOME"}
    still_works(sandbox)


@pytest.mark.parametrize("target", [str(ROOT / "pwned.txt"), f"/tmp/pwned-{uuid.uuid4().hex}.txt", "../escape.txt"])
def test_writes_outside_the_temp_dir_are_denied(sandbox, target):
    r = sandbox.run(f"open({target!r}, 'w').write('owned')", GLOBALS)
    assert (r.outcome, r.event) == ("denied", "open")
    assert "write outside the working directory" in r.message
    assert not os.path.exists(os.path.join("/tmp/work", target))
    still_works(sandbox)


def test_the_temp_dir_is_writable_and_private(sandbox):
    r = sandbox.run("import os\nopen('notes.txt', 'w').write('hi')\nback = open('notes.txt').read()\nhome = os.getcwd()",
                    GLOBALS, {"names": ["back", "home"]})
    assert r.outcome == "ok" and r.value["back"] == "hi"
    assert not os.path.exists(os.path.join(r.value["home"], "notes.txt"))  # gone with the child's tmpfs


def test_reading_project_files_is_denied(sandbox):
    r = sandbox.run(f"text = open({str(ROOT / 'pyproject.toml')!r}).read()", GLOBALS)
    assert (r.outcome, r.event) == ("denied", "open")


def test_sockets_are_denied_and_nothing_reaches_a_loopback_listener(sandbox, listener):
    port, accepted = listener
    r = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", GLOBALS)
    assert r.outcome == "denied" and r.event.startswith("socket.")
    assert accepted == []
    still_works(sandbox)


@pytest.mark.parametrize("code, event", [
    ("import subprocess\nsubprocess.run(['id'])", "subprocess.Popen"),
    ("import os\nos.system('id')", "os.system"),
    ("import os\nos.execv('/bin/sh', ['sh'])", "os.exec"),
    ("import ctypes\nctypes.CDLL(None).system(b'id')", "ctypes.dlopen"),
    ("import _posixsubprocess\n_posixsubprocess.fork_exec()", "_posixsubprocess.fork_exec"),
])
def test_process_creation_and_native_calls_are_denied(sandbox, code, event):
    r = sandbox.run(code, GLOBALS)
    assert (r.outcome, r.event) == ("denied", event)
    still_works(sandbox)


def test_fork_bomb_is_denied(sandbox):
    r = sandbox.run("import os\nwhile True:\n    os.fork()", GLOBALS)
    assert (r.outcome, r.event) == ("denied", "os.fork")
    still_works(sandbox)


@pytest.mark.parametrize("code", ["data = bytearray(10 * 1024**3)", "import numpy as np\na = np.ones(10**10 // 8)"])
def test_ten_gigabyte_allocation_hits_the_memory_limit(sandbox, code):
    r = sandbox.run(code, GLOBALS)
    assert r.outcome == "memory_limit" and "MemoryError" in r.error_type
    still_works(sandbox)


def test_infinite_loop_times_out(sandbox):
    r = sandbox.run("while True:\n    pass", GLOBALS, timeout_s=1)
    assert r.outcome == "timeout" and 1 <= r.wall_s < 4
    still_works(sandbox)


def test_syntax_and_runtime_errors_name_the_line(sandbox):
    r = sandbox.run("x = 1\ndef f(:\n    pass", GLOBALS)
    assert (r.outcome, r.line, r.error_type) == ("syntax_error", 2, "SyntaxError")
    r = sandbox.run("a = 1\nb = [a][3]", GLOBALS)
    assert (r.outcome, r.phase, r.line, r.error_type) == ("runtime_error", "exec", 2, "IndexError")
    assert "out of range" in r.message
    still_works(sandbox)


def test_output_is_captured_and_map_keeps_order(sandbox):
    jobs = [SandboxJob(GLOBALS, {"names": ["i"]}, f"i = {i}\nprint('job', i)") for i in range(6)]
    results = list(sandbox.map(jobs))
    assert [r.value["i"] for r in results] == list(range(6))
    assert results[3].output == "job 3\n"


# ---- kernel layers alone (no audit hook) ---------------------------------------------------------------

@as_root
def test_isolation_is_reported(sandbox):
    assert sandbox.isolation == {"network_namespace": True, "pid_namespace": True, "mount_namespace": True,
                                 "uid": 65534, "audit": True, "memory_mb": 512}


@as_root
def test_without_the_audit_hook_the_network_is_unreachable(kernel_only, listener):
    port, accepted = listener
    r = kernel_only.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", GLOBALS)
    assert r.outcome == "runtime_error" and "unreachable" in r.message
    assert accepted == []


@as_root
def test_without_the_audit_hook_the_filesystem_is_read_only(kernel_only):
    targets = [str(ROOT / "pwned.txt"), f"/tmp/pwned-{uuid.uuid4().hex}", "/var/tmp/pwned.txt", "/dev/shm/pwned.txt"]
    for target in targets:
        r = kernel_only.run(f"open({target!r}, 'w').write('owned')", GLOBALS)
        assert not os.path.exists(target), f"{target} was written outside the sandbox"
        if not target.startswith("/tmp/"):  # the job's /tmp is a private tmpfs: writes there vanish with it
            assert r.outcome == "runtime_error" and r.error_type in ("OSError", "PermissionError"), r


@as_root
def test_without_the_audit_hook_other_processes_are_invisible(kernel_only):
    r = kernel_only.run(f"import os\npids = sorted(p for p in os.listdir('/proc') if p.isdigit())\n"
                        f"seen = os.path.exists('/proc/{os.getpid()}/environ')", GLOBALS, {"names": ["pids", "seen"]})
    assert r.value == {"pids": ["1"], "seen": False}


@as_root
def test_without_the_audit_hook_a_fork_bomb_is_capped_and_cleaned_up(kernel_only):
    r = kernel_only.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", GLOBALS,
                        timeout_s=2)
    assert r.outcome == "timeout"
    ps = subprocess.run(["ps", "-u", str(KERNEL_UID), "-o", "pid=,args="], capture_output=True, text=True, check=False).stdout
    assert ps.strip() == ""  # the whole PID namespace died with the job
    still_works(kernel_only)


def test_a_job_that_crashes_native_code_is_reported_killed_and_the_sandbox_goes_on(kernel_only):
    r = kernel_only.run("import ctypes\nctypes.string_at(0)", GLOBALS)
    assert (r.outcome, r.signal) == ("killed", "SIGSEGV")
    still_works(kernel_only)
