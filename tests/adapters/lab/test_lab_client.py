"""LabClient against real servers: the reference lab (plain and with injected faults) and a stand-in
for a user's own Jarvis lab that adds fields and is not deterministic."""

from __future__ import annotations

import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI

from adapters.lab.lab_client import (LabClient, LabRequestError, LabResponseError, LabServerError, LabUnreachableError)
from adapters.lab.lab_schema import PhaseExperimentResponse
from adapters.lab.lab_server import create_app, reference_lab

SMALL = {"system_size": 8, "depth": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: FastAPI):
    """Run ``app`` with uvicorn in a thread on a free loopback port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def lab() -> str:
    with reference_lab() as url:
        yield url


@pytest.fixture(scope="module")
def flaky_lab() -> str:
    with serve(create_app(fail_rate=0.3, fault_seed=1)) as url:
        yield url


def test_methods_return_validated_models(lab):
    client = LabClient(lab)
    assert client.health().status == "healthy"
    run = client.run_phase_experiment(phase_type="spt_cluster", **SMALL)
    assert run.summary.string_order > 0.9 and len(run.feature_vector) == 16
    assert client.tri(bias=0.5, **SMALL).TRI == 0.0
    assert client.discovery(num_per_phase=5, **SMALL).num_samples == 20
    assert [r.depth for r in client.replay_drift(system_size=8, base_depth=2).runs] == [2, 4, 6]
    assert client.retries_used == 0


def test_retries_through_503s_until_every_call_succeeds(flaky_lab):
    client = LabClient(flaky_lab, retries=8, backoff=0.01)
    results = [client.run_phase_experiment(phase_type="trivial_product", seed=i, **SMALL) for i in range(12)]
    assert [r.summary.seed for r in results] == list(range(12))
    assert client.retries_used > 0


def test_shared_by_a_thread_pool(flaky_lab):
    client = LabClient(flaky_lab, retries=8, backoff=0.01)
    with ThreadPoolExecutor(4) as pool:
        seeds = list(pool.map(lambda s: client.run_phase_experiment(seed=s, **SMALL).summary.seed, range(16)))
    assert seeds == list(range(16)) and client.retries_used > 0


def test_timeouts_are_retried():
    with serve(create_app(timeout_rate=0.5, hang_seconds=2.0, fault_seed=3)) as url:
        client = LabClient(url, timeout=0.5, retries=6, backoff=0.01)
        for seed in range(4):
            assert client.run_phase_experiment(seed=seed, **SMALL).summary.seed == seed
        assert client.retries_used > 0


def test_4xx_fails_at_once_with_url_status_and_body(lab):
    client = LabClient(lab, retries=4, backoff=1.0)
    started = time.monotonic()
    with pytest.raises(LabRequestError) as info:
        client.run_phase_experiment(system_size=3)
    assert time.monotonic() - started < 1.0 and client.retries_used == 0
    err = info.value
    assert err.status == 422 and err.url == f"{lab}/run_phase_experiment" and not err.retryable
    assert "system_size" in str(err) and "greater than or equal to 4" in err.body


def test_persistent_5xx_raises_after_the_retries():
    with serve(create_app(fail_rate=1.0)) as url:
        client = LabClient(url, retries=2, backoff=0.01)
        with pytest.raises(LabServerError, match="HTTP 503 on all 3 attempts") as info:
            client.tri()
        assert client.retries_used == 2 and info.value.retryable


def test_unreachable_lab_names_the_url_and_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"
    client = LabClient(url, retries=1, backoff=0.01)
    with pytest.raises(LabUnreachableError) as info:
        client.health()
    message = str(info.value)
    assert url in message and "connection refused" in message
    assert "python -m adapters.lab.lab_server --port 8000" in message and "--lab-url" in message
    assert client.retries_used == 1


def users_lab(magnetization: object = None) -> FastAPI:
    """A Jarvis lab as users run it: integer ids, a wall-clock field, random features."""
    app = FastAPI()

    @app.post("/run_phase_experiment")
    def run(body: dict) -> dict:
        started = time.perf_counter()
        summary = {"phase_type": body["phase_type"], "system_size": 16, "depth": 4, "seed": 1,
                   "top_k": 1, "magnetization": random.random() if magnetization is None else magnetization, "entropy_proxy": 1.0,
                   "correlation_length": 2.0, "string_order": 0.1, "randomness_score": 0.5, "branch_count": 40,
                   "interfered_count": 3}
        return {"experiment_id": random.randrange(10**6), "phase_type": body["phase_type"],
                "feature_vector": [random.random() for _ in range(16)], "summary": summary,
                "params": body, "execution_time": time.perf_counter() - started}

    return app


def test_accepts_a_users_lab_with_extra_fields():
    with serve(users_lab()) as url:
        run = LabClient(url).run_phase_experiment(phase_type="pseudorandom")
    assert isinstance(run, PhaseExperimentResponse) and run.experiment_id.isdigit()
    assert "execution_time" in run.model_extra and run.summary.top_k == 1, "the user's lab sends top_k as an int"


def test_malformed_response_names_endpoint_and_field():
    with serve(users_lab(magnetization="n/a")) as url:
        with pytest.raises(LabResponseError, match=r"^/run_phase_experiment .*'summary.magnetization'.*'n/a'[^\n]*$"):
            LabClient(url).run_phase_experiment(phase_type="pseudorandom")
