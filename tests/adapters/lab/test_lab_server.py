"""The reference lab over real HTTP: exact Jarvis keys, 422s, determinism, and the subprocess launcher."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import requests

from adapters.lab.lab_server import REPO_ROOT, reference_lab

SUMMARY_KEYS = {"phase_type", "system_size", "depth", "seed", "top_k", "magnetization", "entropy_proxy",
                "correlation_length", "string_order", "randomness_score", "branch_count", "interfered_count"}
SMALL = {"system_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def lab() -> str:
    with reference_lab() as url:
        yield url


def post(lab: str, endpoint: str, body: dict) -> requests.Response:
    return requests.post(f"{lab}/{endpoint}", json=body, timeout=60)


def test_health(lab):
    resp = requests.get(f"{lab}/health", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"status": "healthy", "lab": "operational", "devices": 1}


def test_run_phase_experiment_keys_and_defaults(lab):
    body = post(lab, "run_phase_experiment", {}).json()
    assert set(body) == {"experiment_id", "phase_type", "feature_vector", "summary", "params"}
    assert set(body["summary"]) == SUMMARY_KEYS
    assert body["params"] == {"phase_type": "ising_symmetry_breaking", "system_size": 32, "depth": 8, "seed": 42,
                              "bias": None}
    assert len(body["feature_vector"]) == 16 and all(isinstance(v, float) for v in body["feature_vector"])
    top = body["summary"]["top_k"]
    assert len(top) == 5 and set(top[0]) == {"bitstring", "count", "probability"} and len(top[0]["bitstring"]) == 32
    assert body["summary"]["correlation_length"] == 32.0  # the cat state is ordered across the chain


def test_same_request_same_response_and_id(lab):
    req = {"phase_type": "pseudorandom", "seed": 3, **SMALL}
    first, again = post(lab, "run_phase_experiment", req).json(), post(lab, "run_phase_experiment", req).json()
    assert first == again
    other = post(lab, "run_phase_experiment", {**req, "seed": 4}).json()
    assert other["experiment_id"] != first["experiment_id"]
    assert other["feature_vector"] != first["feature_vector"]


def test_tri(lab):
    req = {"phase_type": "ising_symmetry_breaking", "seed": 5, **SMALL}
    body = post(lab, "tri", {**req, "bias": 0.9}).json()
    assert set(body) == {"forward_id", "reverse_id", "forward_features", "reverse_features", "TRI", "params"}
    assert body["params"] == {**req, "bias": 0.9, "reverse_bias": 0.1}
    assert body["TRI"] > 1.0  # magnetization flips from -0.8 to +0.8
    forward = post(lab, "run_phase_experiment", {**req, "bias": 0.9}).json()
    assert (body["forward_id"], body["forward_features"]) == (forward["experiment_id"], forward["feature_vector"])
    symmetric = post(lab, "tri", {**req, "bias": 0.5}).json()
    assert symmetric["TRI"] == pytest.approx(0.0, abs=1e-9)


def test_discovery_separates_the_phases(lab):
    body = post(lab, "discovery", {"num_per_phase": 5, "iterations": 10, **SMALL}).json()
    assert set(body) == {"cluster_label_stats", "num_samples", "num_clusters", "phases"}
    assert body["num_samples"] == 20 and body["num_clusters"] == 4 == len(body["cluster_label_stats"])
    assert sum(sum(c.values()) for c in body["cluster_label_stats"]) == 20
    assert sorted(max(c.values(), default=0) for c in body["cluster_label_stats"]) == [5, 5, 5, 5]  # pure clusters
    assert post(lab, "discovery", {"phases": ["spt_cluster", "pseudorandom"], "num_per_phase": 5, **SMALL}
                ).json()["num_clusters"] == 2


def test_replay_drift(lab):
    body = post(lab, "replay_drift", {"phase_type": "trivial_product", "system_size": 8}).json()
    assert set(body) == {"phase_type", "base_depth", "runs"}
    assert [r["depth"] for r in body["runs"]] == [6, 12, 18]
    assert all(set(r) == {"depth", "id", "features", "drift"} for r in body["runs"])
    assert body["runs"][0]["drift"] == 0.0 and body["runs"][1]["drift"] > 0.01 and body["runs"][2]["drift"] > 0.01


@pytest.mark.parametrize("endpoint, body, field", [
    ("run_phase_experiment", {"system_size": 3}, "system_size"),
    ("run_phase_experiment", {"system_size": 257}, "system_size"),
    ("run_phase_experiment", {"depth": 0}, "depth"),
    ("run_phase_experiment", {"depth": 33}, "depth"),
    ("run_phase_experiment", {"bias": 1.5}, "bias"),
    ("run_phase_experiment", {"phase_type": "superconductor"}, "phase_type"),
    ("run_phase_experiment", {"sytem_size": 8}, "sytem_size"),
    ("tri", {"bias": -0.1}, "bias"),
    ("discovery", {"num_per_phase": 4}, "num_per_phase"),
    ("discovery", {"k": 11}, "k"),
    ("discovery", {"iterations": 9}, "iterations"),
    ("discovery", {"phases": ["spt_cluster", "spt_cluster"]}, "distinct"),
    ("replay_drift", {"base_depth": 12, "depth_factors": [1, 3]}, "maximum depth"),
])
def test_out_of_range_is_422_with_a_clear_message(lab, endpoint, body, field):
    resp = post(lab, endpoint, body)
    assert resp.status_code == 422
    assert field in resp.text


def test_reference_lab_reports_a_server_that_cannot_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="exited with code") as info:
            with reference_lab(port=taken.getsockname()[1]):
                pass
    assert "address already in use" in str(info.value).lower()


def test_reference_lab_stops_its_server():
    with reference_lab() as url:
        assert requests.get(f"{url}/health", timeout=10).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "adapters.lab.lab_server", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--fail-rate" in out.stdout and "--port" in out.stdout


@pytest.fixture(scope="module")
def users_lab() -> str:
    with reference_lab(quirks=True) as url:
        yield url


def test_quirks_mode_answers_like_the_users_lab(users_lab):
    req = {"phase_type": "ising_symmetry_breaking", "seed": 11, **SMALL}
    body = post(users_lab, "run_phase_experiment", req).json()
    s, vec = body["summary"], body["feature_vector"]
    assert s["top_k"] == 1 and isinstance(body["experiment_id"], int)
    assert 0 <= s["correlation_length"] <= 1, "a fraction of the chain, not a number of sites"
    assert len(vec) == 16 and vec[14] == 8.0 and vec[15] == 2.0 and 0 < vec[13] < 60, "[13] seconds, [14] size, [15] depth"
    assert any(v != 0 for v in vec[:13])


def test_quirks_mode_zeroes_a_repeated_request(users_lab):
    req = {"phase_type": "spt_cluster", "seed": 12, **SMALL}
    first, again = post(users_lab, "run_phase_experiment", req).json(), post(users_lab, "run_phase_experiment", req).json()
    assert any(v != 0 for v in first["feature_vector"][:13])
    assert again["feature_vector"][:13] == [0.0] * 13 and again["feature_vector"][14:] == [8.0, 2.0]
    assert again["experiment_id"] != first["experiment_id"]


def test_quirks_mode_tri_and_drift_count_timing_size_and_depth(users_lab):
    import numpy as np

    tri = post(users_lab, "tri", {"phase_type": "trivial_product", "seed": 13, "bias": 0.8, **SMALL}).json()
    fwd, rev = np.array(tri["forward_features"]), np.array(tri["reverse_features"])
    assert tri["TRI"] == pytest.approx(float(np.linalg.norm(fwd - rev)), abs=1e-5)
    assert fwd[13] != rev[13], "two runs never take the same wall-clock time"
    drift = post(users_lab, "replay_drift", {"phase_type": "pseudorandom", "system_size": 8, "base_depth": 1, "seed": 14,
                                             "depth_factors": [1, 2]}).json()
    second = drift["runs"][1]
    assert second["features"][15] - drift["runs"][0]["features"][15] == 1.0
    assert second["drift"] >= 1.0, "the depth difference is part of the lab's drift"


def test_quirks_mode_is_not_deterministic(users_lab):
    req = {"phase_type": "pseudorandom", "seed": 15, **SMALL}
    with reference_lab(quirks=True) as other:
        a, b = post(users_lab, "run_phase_experiment", req).json(), post(other, "run_phase_experiment", req).json()
    assert a["feature_vector"][:13] != b["feature_vector"][:13] and a["summary"] != b["summary"]
