"""labtune's reference Jarvis lab: the Jarvis HTTP API served over the physics in ``adapters.lab.lab_physics``.

Flows start it on loopback when no lab URL is configured; it answers exactly like a user's own
Jarvis server, except that it is deterministic (same request, same response and experiment id).
``--quirks`` makes it answer like the user's own lab as measured (``adapters.lab.lab_quirks``: int top_k,
fractional correlation length, a timing feature, zeros on a repeated request, noise). Fault injection
(HTTP 503s, hangs) lets tests exercise a client's retries against a real server.

    python -m adapters.lab.lab_server --port 8000 [--host 127.0.0.1] [--quirks] [--fail-rate 0.3] [--timeout-rate 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from adapters.lab import lab_physics
from adapters.lab.lab_quirks import JarvisQuirks
from adapters.lab.lab_schema import (DiscoveryRequest, DiscoveryResponse, HealthResponse, PhaseExperimentResponse,
                                 ReplayDriftRequest, ReplayDriftResponse, RunPhaseRequest, TRIRequest, TRIResponse)

REPO_ROOT = Path(__file__).resolve().parents[2]
FAULT_FLAGS = {"fail_rate": "--fail-rate", "timeout_rate": "--timeout-rate", "hang_seconds": "--hang-seconds",
               "fault_seed": "--fault-seed"}
MODE_FLAGS = {"quirks": "--quirks"}


def experiment_id(params: dict) -> str:
    """Stable id of one run: a hash of its parameters, so a repeated request gets the same id."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return "exp-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


# FastAPI serves requests from a thread pool; Qiskit/Aer circuits built and simulated from several threads at
# once crashed the process (segfaults, qiskit 2.6 / qiskit-aer 0.18), so one simulation runs at a time.
_SIMULATING = threading.Lock()


@lru_cache(maxsize=4096)
def _run(phase_type: str, system_size: int, depth: int, seed: int, bias: float | None) -> lab_physics.PhaseRun:
    # Runs are pure functions of their parameters; TRI at bias 1/2, discovery and drift reuse them.
    with _SIMULATING:
        return lab_physics.run_phase(phase_type, system_size, depth, seed, bias)


def _experiment(phase_type: str, system_size: int, depth: int, seed: int, bias: float | None,
                quirks: JarvisQuirks | None = None) -> dict:
    params = {"phase_type": phase_type, "system_size": system_size, "depth": depth, "seed": seed, "bias": bias}
    started = time.perf_counter()
    run = _run(phase_type, system_size, depth, seed, bias)
    exp = {"experiment_id": experiment_id(params), "phase_type": phase_type, "feature_vector": list(run.features),
           "summary": dict(run.summary), "params": params}
    return quirks.experiment(exp, time.perf_counter() - started) if quirks else exp


class FaultInjector:
    """Decides, call by call, whether a POST fails (503), hangs, or is served; reproducible from a seed."""

    def __init__(self, fail_rate: float, timeout_rate: float, hang_seconds: float, seed: int):
        if not (0 <= fail_rate <= 1 and 0 <= timeout_rate <= 1 and fail_rate + timeout_rate <= 1):
            raise ValueError(f"fail_rate ({fail_rate}) and timeout_rate ({timeout_rate}) must be in [0, 1] "
                             "and sum to at most 1")
        if hang_seconds < 0:
            raise ValueError(f"hang_seconds must be >= 0, got {hang_seconds}")
        self.fail_rate, self.timeout_rate, self.hang_seconds = fail_rate, timeout_rate, hang_seconds
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.injected = Counter()

    def draw(self) -> str | None:
        """'fail', 'hang' or None for the next call."""
        with self._lock:
            u = self._rng.random()
            fault = "fail" if u < self.fail_rate else "hang" if u < self.fail_rate + self.timeout_rate else None
            if fault:
                self.injected[fault] += 1
            return fault


def create_app(fail_rate: float = 0.0, timeout_rate: float = 0.0, hang_seconds: float = 5.0,
               fault_seed: int = 0, quirks: bool = False) -> FastAPI:
    """The Jarvis lab API; ``fail_rate``/``timeout_rate`` of POST calls get a 503 / wait ``hang_seconds``;
    ``quirks`` answers like the user's own lab (``adapters.lab.lab_quirks``)."""
    faults = FaultInjector(fail_rate, timeout_rate, hang_seconds, fault_seed)
    lab_quirks = JarvisQuirks() if quirks else None

    def answer(body: dict):
        # The user's lab sends its own JSON (integer ids); the schema's response models would turn them into strings.
        return JSONResponse(body) if lab_quirks else body
    app = FastAPI(title="labtune reference Jarvis lab",
                  description="Quantum phases of a qubit chain simulated with Qiskit Aer (matrix product states).")
    app.state.faults = faults

    @app.middleware("http")
    async def inject_faults(request: Request, call_next):
        fault = faults.draw() if request.method == "POST" else None
        if fault == "fail":
            return JSONResponse({"detail": f"injected fault: lab busy, retry later (fail_rate={fail_rate})"},
                                status_code=503)
        if fault == "hang":
            await asyncio.sleep(hang_seconds)
        return await call_next(request)

    # Sync endpoints: FastAPI runs them in its thread pool, so simulations do not block the event loop.
    @app.get("/health", response_model=HealthResponse)
    def health() -> dict:
        return {"status": "healthy", "lab": "operational", "devices": 1}

    @app.post("/run_phase_experiment", response_model=PhaseExperimentResponse)
    def run_phase_experiment(req: RunPhaseRequest | None = None) -> dict:
        req = req or RunPhaseRequest()
        return answer(_experiment(**req.model_dump(), quirks=lab_quirks))

    @app.post("/tri", response_model=TRIResponse)
    def tri(req: TRIRequest | None = None) -> dict:
        req = req or TRIRequest()
        reverse_bias = round(1.0 - req.bias, 12)  # 1 - 0.7 would otherwise be 0.30000000000000004
        common = {"phase_type": req.phase_type, "system_size": req.system_size, "depth": req.depth, "seed": req.seed}
        forward = _experiment(**common, bias=req.bias, quirks=lab_quirks)
        reverse = _experiment(**common, bias=reverse_bias, quirks=lab_quirks)
        return answer({"forward_id": forward["experiment_id"], "reverse_id": reverse["experiment_id"],
                       "forward_features": forward["feature_vector"], "reverse_features": reverse["feature_vector"],
                       "TRI": round(lab_physics.feature_distance(forward["feature_vector"], reverse["feature_vector"]), 6),
                       "params": {**common, "bias": req.bias, "reverse_bias": reverse_bias}})

    @app.post("/discovery", response_model=DiscoveryResponse)
    def discovery(req: DiscoveryRequest | None = None) -> dict:
        req = req or DiscoveryRequest()
        labels_of = [phase for phase in req.phases for _ in range(req.num_per_phase)]
        points = np.array([_run(phase, req.system_size, req.depth, req.seed + i, None).features
                           for phase in req.phases for i in range(req.num_per_phase)])
        clusters = lab_physics.kmeans_labels(points, req.clusters, req.iterations, seed=req.seed)
        stats = [dict(Counter(p for p, c in zip(labels_of, clusters) if c == j).most_common())
                 for j in range(req.clusters)]
        return {"cluster_label_stats": stats, "num_samples": len(points), "num_clusters": req.clusters,
                "phases": list(req.phases)}

    @app.post("/replay_drift", response_model=ReplayDriftResponse)
    def replay_drift(req: ReplayDriftRequest | None = None) -> dict:
        req = req or ReplayDriftRequest()
        runs = []
        for factor in req.depth_factors:
            depth = req.base_depth * factor
            exp = _experiment(req.phase_type, req.system_size, depth, req.seed, None, quirks=lab_quirks)
            drift = lab_physics.feature_distance(exp["feature_vector"], runs[0]["features"]) if runs else 0.0
            runs.append({"depth": depth, "id": exp["experiment_id"], "features": exp["feature_vector"],
                         "drift": round(drift, 6)})
        return answer({"phase_type": req.phase_type, "base_depth": req.base_depth, "runs": runs})

    return app


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _stderr_tail(log, lines: int = 30) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:]) or "(no output)"


@contextmanager
def reference_lab(port: int | None = None, *, host: str = "127.0.0.1", startup_timeout: float = 30.0,
                  **fault_kwargs) -> Iterator[str]:
    """Run the reference lab in a subprocess on loopback; yields its base URL and always stops it.

    ``fault_kwargs``: the fault options of ``create_app``, and ``quirks=True`` for the user's-lab mode."""
    unknown = set(fault_kwargs) - set(FAULT_FLAGS) - set(MODE_FLAGS)
    if unknown:
        raise TypeError(f"reference_lab() got unknown options {sorted(unknown)}; "
                        f"expected {sorted(FAULT_FLAGS) + sorted(MODE_FLAGS)}")
    port = port or _free_port(host)
    url = f"http://{host}:{port}"
    cmd = [sys.executable, "-m", "adapters.lab.lab_server", "--host", host, "--port", str(port)]
    for key, value in fault_kwargs.items():
        if key in MODE_FLAGS:
            cmd += [MODE_FLAGS[key]] if value else []
        else:
            cmd += [FAULT_FLAGS[key], str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"reference lab exited with code {proc.returncode} before answering "
                                       f"{url}/health:\n{_stderr_tail(log)}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reference lab did not answer {url}/health within {startup_timeout:.0f} s:\n"
                                       f"{_stderr_tail(log)}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--quirks", action="store_true",
                        help="answer like the user's own Jarvis lab (int top_k, fractional correlation length, "
                             "timing feature, zeros on a repeated request, noise)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of POST calls answered with HTTP 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0,
                        help="fraction of POST calls that wait --hang-seconds before answering")
    parser.add_argument("--hang-seconds", type=float, default=5.0, help="delay of a hanging call (default 5)")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault sequence")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = create_app(args.fail_rate, args.timeout_rate, args.hang_seconds, args.fault_seed, quirks=args.quirks)
    except ValueError as exc:
        parser.error(str(exc))
    mode = " (quirks: the user's-lab mode)" if args.quirks else ""
    print(f"reference Jarvis lab{mode} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
