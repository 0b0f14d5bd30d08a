"""What a user sees when their input, config or environment is wrong: one line, exit 2, before any real work.

Each case runs the real command in a fresh process, as a user would: ``python -m flows.<project>`` and,
where the stage has a CLI of its own, ``python -m tasks.<project>.<stage>``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "LABTUNE_DATA_DIR")}
ENV["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"


def run(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def assert_one_line_error(code: int, out: str, needle: str) -> str:
    lines = [line for line in out.splitlines() if needle in line]
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    return lines[0]


def stage_dirs(data: Path, project: str) -> list[str]:
    root = data / project
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_well_directory(tmp_path):
    code, out = run("flows.quantum_mind", "--data-dir", str(tmp_path), "--set", "encode.source=/nonexistent/well")
    assert_one_line_error(code, out, "/nonexistent/well")
    assert stage_dirs(tmp_path, "quantum_mind") == []  # encode is the first stage: nothing was generated or trained


def test_missing_well_directory_in_the_stage_cli(tmp_path):
    code, out = run("tasks.quantum_mind.encode_trajectories", "--out", str(tmp_path / "encode"), "--source", "/nonexistent/well")
    assert_one_line_error(code, out, "/nonexistent/well")
    assert not (tmp_path / "encode").exists()


@pytest.mark.parametrize("key, named", [("generate_ir.teacher", "'generate_ir'"),  # with secret_block: a model check
                                        ("prompts.teacher", "'prompts.teacher'")])
def test_anthropic_teacher_without_its_key_in_the_flow(tmp_path, key, named):
    code, out = run("flows.lift_sys", "--data-dir", str(tmp_path), "--set", f"{key}=anthropic")
    assert named in assert_one_line_error(code, out, "ANTHROPIC_API_KEY")
    assert not (tmp_path / "lift_sys").exists()  # refused with the config, before the first stage


@pytest.mark.parametrize("stage", ["generate_ir", "generate_prompts"])
def test_anthropic_teacher_without_its_key_in_the_stage_cli(tmp_path, stage):
    inputs = ["--prompts", str(tmp_path / "prompts.jsonl")] if stage == "generate_ir" else []
    code, out = run(f"tasks.lift_sys.{stage}", *inputs, "--out", str(tmp_path / "out"), "--set", "teacher=anthropic:claude-haiku-4-5")
    assert_one_line_error(code, out, "ANTHROPIC_API_KEY")
    assert not (tmp_path / "out").exists()


def test_unreachable_lab_is_reported_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, out = run("flows.ben_lab", "--data-dir", str(tmp_path), "--lab-url", url, "--set", "harvest.retries=0")
    line = assert_one_line_error(code, out, url)
    assert "unreachable" in line
    assert stage_dirs(tmp_path, "ben_lab") == []  # no harvest output, so nothing calibrated, described or trained


def test_unreachable_lab_in_the_stage_cli(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, out = run("tasks.ben_lab.harvest_experiments", "--out", str(tmp_path / "harvest"), "--lab-url", url, "--set", "retries=0")
    assert "unreachable" in assert_one_line_error(code, out, url)


@pytest.mark.parametrize("project, key", [("ben_lab", "harvest.phase_runs_per_type"), ("quantum_mind", "generate.examples"),
                                          ("lift_sys", "prompts.per_category")])
def test_negative_plan_count_is_a_config_error(tmp_path, project, key):
    code, out = run(f"flows.{project}", "--data-dir", str(tmp_path), "--set", f"{key}=-1")
    line = assert_one_line_error(code, out, key)
    assert "invalid config" in line and "(got -1)" in line and f"--set {key}=VALUE" in line
    assert not (tmp_path / project).exists()


def test_negative_plan_count_in_the_stage_cli(tmp_path):
    code, out = run("tasks.ben_lab.harvest_experiments", "--out", str(tmp_path / "harvest"), "--set", "phase_runs_per_type=-1")
    assert "(got -1)" in assert_one_line_error(code, out, "phase_runs_per_type")
    assert not (tmp_path / "harvest").exists()


def test_trainer_key_typo_names_the_nearest_key(tmp_path):
    code, out = run("flows.ben_lab", "--data-dir", str(tmp_path), "--set", "sft.trainer.learning_rat=1e-3")
    assert "did you mean sft.trainer.learning_rate?" in assert_one_line_error(code, out, "learning_rat")
    assert not (tmp_path / "ben_lab").exists()
