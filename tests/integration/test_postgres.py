"""Prefect on PostgreSQL: a real PostgreSQL (Debian's binaries) on loopback, `make server`'s code path with
PREFECT_API_DATABASE_CONNECTION_URL set, migrations at start, a labtune stage run as a flow, recorded in PostgreSQL."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ops.prefect_local import start_server, stop_all
from tests.conftest import write_chat_records
from tests.integration.conftest import REPO, free_port, isolated_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def postgres_bin_dir() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/<version>/bin), else wherever pg_ctl is on PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    found = shutil.which("pg_ctl")
    candidates += [Path(found).resolve().parent] if found else []
    return next((d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


class Postgres:
    """A throwaway cluster on 127.0.0.1:port; run as the `postgres` user when we are root (postgres refuses root)."""

    def __init__(self, bindir: Path):
        self.bindir, self.port = bindir, free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # not under pytest's tmp dir: that is 0700 root, and the postgres user must reach its data dir
        self.base = Path(tempfile.mkdtemp(prefix="labtune-pg-"))
        if self.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.data, self.log = self.base / "data", self.base / "postgres.log"

    def _run(self, *cmd: str, timeout: float = 120) -> str:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "120", "start")

    def sql(self, query: str, db: str = "postgres") -> str:
        psql = shutil.which("psql") or str(self.bindir / "psql")
        return self._run(psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-XAtq", "-c", query)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        if (self.data / "postmaster.pid").exists():  # fast shutdown did not finish: end the postmaster and its children
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "kill", "KILL", str(pid)], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    bindir = postgres_bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as (apt-get install postgresql creates it)")
    pg = Postgres(bindir)
    try:
        pg.start()
        pg.sql("CREATE DATABASE prefect")
        yield pg
    finally:
        pg.stop()


FLOW = textwrap.dedent("""
    import sys
    from pathlib import Path

    from prefect import flow

    from tasks.training.mix_datasets import MixConfig, mix_datasets


    @flow(name="labtune-postgres-check")
    def mix_on_postgres(src: str, out: str) -> str:
        return str(mix_datasets(MixConfig(), [Path(src)], Path(out)))


    print(mix_on_postgres(sys.argv[1], sys.argv[2]))
""")


def test_prefect_server_on_postgres_migrates_and_records_a_flow_run(postgres, tmp_path):
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/prefect"
    env = isolated_env(tmp_path, PREFECT_API_DATABASE_CONNECTION_URL=url)  # what a user exports before `make server`
    state = tmp_path / "state"
    try:
        server = start_server(state, port=free_port(), env=env, timeout=300)
        assert server.database == url and not (state / "prefect.db").exists()
        assert postgres.sql("SELECT count(*) FROM alembic_version", db="prefect").strip() == "1"  # migrations ran

        src = write_chat_records(tmp_path / "records.jsonl", 20)
        script = tmp_path / "flow_on_postgres.py"
        script.write_text(FLOW)
        done = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "mix")], capture_output=True, text=True,
                              env={**env, "PREFECT_API_URL": server.api_url, "PYTHONPATH": str(REPO)}, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "mix" / "train.jsonl").exists()
    finally:
        stop_all(state, grace=20)

    rows = postgres.sql("SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id", db="prefect")
    assert "labtune-postgres-check|COMPLETED" in rows.splitlines()
    tasks = postgres.sql("SELECT name, state_type FROM task_run", db="prefect")
    assert any(line.startswith("mix") and line.endswith("|COMPLETED") for line in tasks.splitlines()), tasks
    assert postgres.sql("SELECT key FROM artifact WHERE key = 'mix'", db="prefect").strip() == "mix"
