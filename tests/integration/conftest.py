"""Helpers for tests that start real servers (Prefect, PostgreSQL) on loopback and always stop them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for the servers, worker and CLI calls of one test: its own PREFECT_HOME and data dir.

    One OpenMP thread per flow run: two runs share the 2 cores, and spin-waiting threads of a busy machine
    made one SFT step take 100+ s instead of a few.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # default 10: runs start sooner
        "LABTUNE_DATA_DIR": str(root / "data"),
        "OLLAMA_HOST": "http://127.0.0.1:9",  # nothing listens: the install stage keeps the Modelfile and says so
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **extra,
    })
    return env


def prefect_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """Run ``prefect ARGS`` from the repo (where prefect.yaml is); fail the test with its output on error."""
    done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def created_run_id(cli_output: str) -> str:
    """The flow run id that ``prefect deployment run`` printed (``└── UUID: ...``)."""
    m = re.search(r"UUID: ([0-9a-f-]{36})", cli_output)
    assert m, f"no flow run id in:\n{cli_output}"
    return m.group(1)


def wait_for_final_states(client, run_ids: list[str], timeout: float, log: Path) -> dict[str, str]:
    """Poll the API until every run is in a final state; returns {run id: state type}."""
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {rid: client.read_flow_run(rid).state.type.value for rid in run_ids}
        if all(s in final for s in states.values()):
            return states
        time.sleep(5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else "(no worker log)"
    raise AssertionError(f"flow runs not finished after {timeout:.0f} s: {states}; worker log {log}:\n{tail}")
