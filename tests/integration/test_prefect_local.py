"""ops.prefect_local's process handling without a Prefect server: clear errors, and stop ends exactly what it started."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from ops.prefect_local import OpsError, _alive, _spawn, _stop_group, main, start_server, start_worker

# A stand-in for `prefect server start`: ignores SIGINT (as a hung server would) and has a child in its group.
STUBBORN = ("import signal, subprocess, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "child = subprocess.Popen(['sleep', '300']); print('child', child.pid, flush=True); time.sleep(300)  # prefect")


def test_busy_port_is_refused_with_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OpsError, match=f"port {port} on 127.0.0.1 is in use by another program.*PREFECT_PORT="):
            start_server(tmp_path, port=port)
    assert not (tmp_path / "server.pid").exists()


def test_worker_without_a_server_says_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(OpsError, match="run `make server` first"):
        start_worker(tmp_path)


def test_stop_escalates_and_ends_the_whole_group(tmp_path):
    log = tmp_path / "server.log"
    proc = _spawn([sys.executable, "-c", STUBBORN], {"PATH": "/usr/bin:/bin"}, log, cwd=tmp_path)
    (tmp_path / "server.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not log.read_text().splitlines()[-1].startswith("child ") and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().splitlines()[-1].split()[1])
    msg = _stop_group(tmp_path / "server.pid", signal.SIGINT, grace=1)
    assert msg == f"stopped pid {proc.pid} (SIGTERM)"  # SIGINT was ignored
    assert not _alive(proc.pid) and not _alive(child)
    assert not (tmp_path / "server.pid").exists()


def test_stop_never_signals_a_process_it_did_not_start(tmp_path, capsys):
    stranger = subprocess.Popen(["sleep", "60"])  # a pid file left behind, its pid now someone else's
    try:
        (tmp_path / "worker.pid").write_text(f"{stranger.pid}\n")
        (tmp_path / "server.pid").write_text("999999999\n")
        assert main(["--state-dir", str(tmp_path), "stop"]) == 0
        out = capsys.readouterr().out
        assert f"pid {stranger.pid} is no prefect process started here" in out and "server: not running" in out
        assert stranger.poll() is None
        assert not (tmp_path / "worker.pid").exists() and not (tmp_path / "server.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()
