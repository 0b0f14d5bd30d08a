"""A local Prefect server and process worker for labtune's deployments: started in the background, stopped cleanly.

    python -m ops.prefect_local server [--port 4200]   # = make server: API + UI on 127.0.0.1, SQLite under <data>/prefect/
    python -m ops.prefect_local worker                 # = make worker: process worker on pool 'labtune', LABTUNE_HOME=<repo>
    python -m ops.prefect_local deploy                 # = make deploy: prefect --no-prompt deploy --all against that server
    python -m ops.prefect_local status                 # what runs, where it listens, where its logs are
    python -m ops.prefect_local stop                   # = make stop: the worker (SIGINT) first, then the server
    eval "$(python -m ops.prefect_local env)"          # point this shell's prefect CLI at the server

PostgreSQL instead of SQLite: export PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER:PASS@HOST:5432/DB
before ``server`` (the server runs its migrations at start). PID files, logs and server.json live in <data>/prefect/,
where <data> is $LABTUNE_DATA_DIR or the repo's data/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL = "labtune"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


class OpsError(RuntimeError):
    """A problem the user can fix; the message says how."""


@dataclass
class Server:
    """Where a server started by this module listens, and what it runs on."""

    pid: int
    api_url: str
    ui_url: str
    database: str  # password masked
    log: str


def default_state_dir() -> Path:
    """``<data>/prefect``: $LABTUNE_DATA_DIR or the repo's data/ (flows use the same rule)."""
    return Path(os.environ.get("LABTUNE_DATA_DIR") or REPO / "data").resolve() / "prefect"


def sqlite_url(state: Path) -> str:
    return f"sqlite+aiosqlite:///{state.resolve() / 'prefect.db'}"


def mask_password(url: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def healthy(api_url: str, timeout: float = 3.0) -> bool:
    """True when a Prefect API answers ``GET /health``."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count as busy
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def read_server(state: Path) -> Server | None:
    try:
        return Server(**json.loads((state / "server.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def start_server(state: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, database_url: str | None = None,
                 timeout: float = 180, env: Mapping[str, str] | None = None) -> Server:
    """Start ``prefect server start`` in the background, wait for /health, create the labtune pool."""
    state.mkdir(parents=True, exist_ok=True)
    running = read_server(state)
    if running and _alive(running.pid):
        if healthy(running.api_url):
            print(f"A Prefect server started from {state} already runs (pid {running.pid}).")
            return running
        raise OpsError(f"the server started from {state} (pid {running.pid}) runs but does not answer at "
                       f"{running.api_url}/health; see {running.log}, or stop it: make stop")
    api = f"http://{host}:{port}/api"
    if not port_free(host, port):
        what = "another Prefect server" if healthy(api) else "another program"
        raise OpsError(f"port {port} on {host} is in use by {what}; stop it or pick another port: "
                       f"make server PREFECT_PORT={port + 100}")
    base = dict(os.environ if env is None else env)
    db = database_url or base.get("PREFECT_API_DATABASE_CONNECTION_URL") or sqlite_url(state)
    server_env = {**base, "PREFECT_API_DATABASE_CONNECTION_URL": db, "PREFECT_API_URL": api,
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = state / "server.log"
    proc = _spawn([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                  server_env, log, cwd=REPO)
    (state / "server.pid").write_text(f"{proc.pid}\n")
    server = Server(pid=proc.pid, api_url=api, ui_url=f"http://{host}:{port}", database=mask_password(db), log=str(log))
    (state / "server.json").write_text(json.dumps(asdict(server), indent=2) + "\n")
    try:
        _wait_until(lambda: healthy(api), proc, timeout, f"the Prefect server at {api}", log)
        ensure_pool(api, base)
    except BaseException:
        stop_server(state)
        raise
    return server


def ensure_pool(api_url: str, env: Mapping[str, str] | None = None, pool: str = POOL) -> bool:
    """Create the ``process`` work pool unless it exists; True when it was created."""
    try:
        with urllib.request.urlopen(f"{api_url}/work_pools/{pool}", timeout=10):
            return False
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise OpsError(f"reading work pool {pool!r} from {api_url} failed: HTTP {e.code}") from None
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "work-pool", "create", pool, "--type", "process"]
    done = subprocess.run(cmd, env={**(os.environ if env is None else env), "PREFECT_API_URL": api_url},
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise OpsError(f"creating work pool {pool!r} failed ({' '.join(cmd[2:])}):\n{done.stdout}{done.stderr}")
    return True


def start_worker(state: Path, api_url: str | None = None, pool: str = POOL, home: Path = REPO, limit: int | None = None,
                 timeout: float = 120, env: Mapping[str, str] | None = None) -> int:
    """Start a process worker on ``pool`` with LABTUNE_HOME=``home``; returns its pid once the API sees it online."""
    server = read_server(state)
    api = api_url or (server.api_url if server else None) or os.environ.get("PREFECT_API_URL")
    if not api:
        raise OpsError(f"no server recorded in {state} and PREFECT_API_URL is not set: run `make server` first")
    if not healthy(api):
        raise OpsError(f"no Prefect server answers at {api}/health: run `make server` first")
    pidfile = state / "worker.pid"
    old = _read_pid(pidfile)
    if old and _alive(old):
        print(f"A worker started from {state} already runs (pid {old}); log: {state / 'worker.log'}")
        return old
    base = dict(os.environ if env is None else env)
    ensure_pool(api, base, pool)
    name = f"{pool}-{socket.gethostname()}"
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "worker", "start", "--pool", pool, "--type", "process",
           "--name", name] + (["--limit", str(limit)] if limit else [])
    log = state / "worker.log"
    started = datetime.now(UTC) - timedelta(seconds=5)  # heartbeats are stamped by the server's clock
    proc = _spawn(cmd, {**base, "PREFECT_API_URL": api, "LABTUNE_HOME": str(home.resolve())}, log, cwd=home)
    pidfile.write_text(f"{proc.pid}\n")
    try:
        _wait_until(lambda: _worker_online(api, pool, name, started), proc, timeout, f"worker {name!r} on pool {pool!r}", log)
    except BaseException:
        _stop_group(pidfile, signal.SIGINT)
        raise
    return proc.pid


def stop_server(state: Path, grace: float = 30) -> str:
    msg = _stop_group(state / "server.pid", signal.SIGINT, grace)
    (state / "server.json").unlink(missing_ok=True)
    return f"server: {msg}"


def stop_worker(state: Path, grace: float = 30) -> str:
    return f"worker: {_stop_group(state / 'worker.pid', signal.SIGINT, grace)}"


def stop_all(state: Path, grace: float = 30) -> list[str]:
    """The worker first (SIGINT: it stops polling and lets go of its runs), then the server."""
    return [stop_worker(state, grace), stop_server(state, grace)]


def deploy(state: Path, names: list[str] | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``prefect --no-prompt deploy --all`` (or ``--name N`` each) from the repo, against the recorded server."""
    server = read_server(state)
    api = (server.api_url if server else None) or os.environ.get("PREFECT_API_URL")
    if not api or not healthy(api):
        raise OpsError(f"no Prefect server answers at {api or '(none recorded in ' + str(state) + ')'}: run `make server` first")
    which = [a for n in names for a in ("--name", n)] if names else ["--all"]
    return subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", *which], cwd=REPO,
                          env={**(os.environ if env is None else env), "PREFECT_API_URL": api})


def _worker_online(api_url: str, pool: str, name: str, since: datetime) -> bool:
    req = urllib.request.Request(f"{api_url}/work_pools/{pool}/workers/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            workers = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    for w in workers:
        beat = w.get("last_heartbeat_time")
        if w.get("name") == name and w.get("status") == "ONLINE" and beat and datetime.fromisoformat(beat) >= since:
            return True
    return False


def _spawn(cmd: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Run ``cmd`` detached in its own session (own process group: stopped as a whole), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n==== {datetime.now().isoformat(timespec='seconds')} {shlex.join(cmd)}\n".encode())
        fh.flush()
        return subprocess.Popen(cmd, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise OpsError(f"{what} exited with code {proc.returncode} before it was ready; "
                           f"last lines of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise OpsError(f"{what} was not ready after {timeout:.0f} s (stopped it); see {log}:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reap it
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _is_ours(pid: int) -> bool:
    """The pid leads its own process group and runs prefect: a stale pid file never gets another program killed."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        return os.getpgid(pid) == pid and b"prefect" in cmdline
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop_group(pidfile: Path, sig: signal.Signals, grace: float = 30) -> str:
    """Signal the process group led by the pid in ``pidfile``; escalate to SIGTERM, then SIGKILL, if it lingers."""
    pid = _read_pid(pidfile)
    if pid is None:
        return "not running"
    if not _alive(pid):
        _end_leftovers(pid)  # the leader died; children it left in its group go too
        pidfile.unlink(missing_ok=True)
        return f"not running (removed stale {pidfile.name})"
    if not _is_ours(pid):
        pidfile.unlink(missing_ok=True)
        return f"pid {pid} is no prefect process started here: left it alone, removed stale {pidfile.name}"
    for sent, wait in ((sig, grace), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        _kill_group(pid, sent)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _alive(pid):
            break
    _end_leftovers(pid)
    pidfile.unlink(missing_ok=True)
    return f"stopped pid {pid} ({sent.name})"


def _end_leftovers(pgid: int) -> None:
    """Whatever is left in a group whose leader exited (a flow run, a server service): SIGTERM, then SIGKILL."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(pgid):
            return
        _kill_group(pgid, sent)
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def status(state: Path) -> list[str]:
    server, wpid = read_server(state), _read_pid(state / "worker.pid")
    lines = []
    if server and _alive(server.pid):
        health = "healthy" if healthy(server.api_url) else "NOT answering /health"
        lines.append(f"server: pid {server.pid}, {health}; UI {server.ui_url}, API {server.api_url}, "
                     f"database {server.database}, log {server.log}")
    else:
        lines.append("server: not running (make server)")
    lines.append(f"worker: pid {wpid}, pool {POOL!r}, log {state / 'worker.log'}" if wpid and _alive(wpid)
                 else "worker: not running (make worker)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.prefect_local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where PID files, logs and the SQLite database go (default: $LABTUNE_DATA_DIR/prefect or data/prefect)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("server", help="start the Prefect server in the background and create the labtune pool")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for /health (migrations run first)")
    w = sub.add_parser("worker", help="start a process worker on pool 'labtune' in the background")
    w.add_argument("--limit", type=int, default=None, help="at most this many flow runs at once (default: no limit)")
    w.add_argument("--timeout", type=float, default=120, help="seconds to wait for the worker to come online")
    d = sub.add_parser("deploy", help="prefect --no-prompt deploy --all (or --name NAME ...) from the repo")
    d.add_argument("--name", action="append", help="one deployment (repeatable); default: all of prefect.yaml")
    sub.add_parser("stop", help="stop the worker (SIGINT), then the server")
    sub.add_parser("status", help="what runs and where")
    sub.add_parser("env", help="print the export lines that point the prefect CLI at the server")
    args = parser.parse_args(argv)
    state = (args.state_dir or default_state_dir()).resolve()
    try:
        if args.command == "server":
            s = start_server(state, args.host, args.port, timeout=args.timeout)
            print(f"Prefect server: pid {s.pid}, database {s.database}\n"
                  f"  UI:  {s.ui_url}\n  API: {s.api_url}   (log: {s.log})\n"
                  f"Point the prefect CLI at it:\n  export PREFECT_API_URL={s.api_url}\n"
                  f"Next: make worker; make deploy; prefect deployment run 'ben-lab/ben-lab'; make stop")
        elif args.command == "worker":
            pid = start_worker(state, limit=args.limit, timeout=args.timeout)
            server = read_server(state)
            ui = f"{server.ui_url}/work-pools/work-pool/{POOL}" if server else "the Prefect UI"
            print(f"Worker on pool {POOL!r}: pid {pid}, LABTUNE_HOME={REPO}, log {state / 'worker.log'}\n"
                  f"  pool in the UI: {ui}\n  follow its runs: tail -f {state / 'worker.log'}")
        elif args.command == "deploy":
            return deploy(state, args.name).returncode
        elif args.command == "stop":
            server = read_server(state)
            print("\n".join(stop_all(state)))
            if server and os.environ.get("PREFECT_API_URL") == server.api_url:
                print("This shell still points prefect at it: unset PREFECT_API_URL (flows run by hand then use "
                      "Prefect's ephemeral mode again)")
        elif args.command == "status":
            print("\n".join(status(state)))
        elif args.command == "env":
            server = read_server(state)
            if not server:
                raise OpsError(f"no server recorded in {state}: run `make server` first")
            print(f"export PREFECT_API_URL={server.api_url}\nexport LABTUNE_HOME={REPO}")
    except OpsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
