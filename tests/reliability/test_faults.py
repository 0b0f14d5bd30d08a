"""Faults through the real stages: a re-run completes with nothing lost or repeated, or the stage stops
with an error naming what is wrong; no stage ever takes a half-written or damaged output as finished.

Faults already proven elsewhere are listed in README "Reliability" and not repeated here: a lab failing
30% of calls (tests/ben_lab/test_harvest_experiments.py), a SIGKILL mid-SFT (tests/training/test_train_sft.py),
malformed teacher output (tests/lift_sys/test_generate_ir.py), an unreachable Ollama (tests/training/test_install_ollama.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.training.mix_datasets import MixConfig, mix, mix_datasets
from tasks.common.records import RecordError, read_jsonl
from tasks.common.stage import prefect_cache_key, read_manifest
from tests.conftest import write_chat_records
from tests.training.test_export_gguf import sft_dir, val_jsonl  # noqa: F401  (fixtures: a LoRA-tuned embedded SmolLM2 + val records)

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(condition, proc: subprocess.Popen, what: str, limit_s: float = 600) -> None:
    """Poll ``condition`` while ``proc`` runs (the limit only stops a broken run from hanging the suite)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


# ---- disk file truncated after the stage finished --------------------------------------------------------

def test_an_output_truncated_after_its_manifest_is_noticed_and_computed_again(tmp_path, capsys):
    src = write_chat_records(tmp_path / "chat.jsonl", 200)
    out = mix(MixConfig(), [src], tmp_path / "mix")
    written = {name: (out / name).read_bytes() for name in ("train.jsonl", "val.jsonl")}
    lines = written["train.jsonl"].splitlines(keepends=True)
    (out / "train.jsonl").write_bytes(b"".join(lines[: len(lines) // 2]))  # at a line boundary: it still parses

    # Prefect's cache does not hand the damaged output back either (it would skip the task).
    context = SimpleNamespace(task=SimpleNamespace(name=mix_datasets.name, fn=mix_datasets.fn))
    assert prefect_cache_key(context, {"cfg": MixConfig(), "inputs": [src], "out_dir": out}) is None

    capsys.readouterr()
    assert mix(MixConfig(), [src], out) == out
    said = capsys.readouterr().out
    assert f"{out}: train.jsonl is {len(b''.join(lines[: len(lines) // 2]))} bytes on disk but was " \
           f"{len(written['train.jsonl'])} bytes when written" in said and "runs again" in said
    assert {name: (out / name).read_bytes() for name in written} == written, "every record is back, none twice"


def test_an_output_changed_in_place_is_noticed_by_its_digest(tmp_path, capsys):
    src = write_chat_records(tmp_path / "chat.jsonl", 50)
    out = mix(MixConfig(), [src], tmp_path / "mix")
    val = (out / "val.jsonl").read_bytes()
    (out / "val.jsonl").write_bytes(val.replace(b"magnetization", b"magnetisation", 1))  # same size, other bytes
    mix(MixConfig(), [src], out)
    assert "val.jsonl no longer has the sha256 recorded when it was written" in capsys.readouterr().out
    assert (out / "val.jsonl").read_bytes() == val


def test_a_file_torn_mid_line_is_named_by_the_stage_that_reads_it(tmp_path):
    from tasks.training.train_sft import to_prompt_completion

    src = write_chat_records(tmp_path / "chat.jsonl", 40)
    out = mix(MixConfig(), [src], tmp_path / "mix")
    data = (out / "train.jsonl").read_bytes()
    (out / "train.jsonl").write_bytes(data[: data.index(b"\n", len(data) // 2) + 20])  # 20 bytes into a line
    torn_line = data[: len(data) // 2].count(b"\n") + 2
    with pytest.raises(RecordError, match=rf"train\.jsonl:{torn_line}: malformed JSON"):
        to_prompt_completion(out / "train.jsonl")  # what the SFT stage reads its mix with


# ---- process killed mid-stage ------------------------------------------------------------------------------

HARVEST = ["--set", "phase_runs_per_type=2", "--set", "tri_runs=4", "--set", "discovery_runs=1", "--set", "drift_runs=4",
           "--set", "system_sizes=[6, 8]", "--set", "depths=[1, 2]", "--set", "discovery_per_phase=[5]",
           "--set", "concurrency=1", "--set", "timeout_s=3600", "--set", "retries=0"]


def test_a_harvest_killed_mid_stage_resumes_and_loses_or_repeats_no_experiment(tmp_path):
    """The lab hangs on its 7th call (fault seed 5, one call at a time): the 6 before it are in the work log."""
    from adapters.lab.lab_server import _free_port, reference_lab
    from tasks.ben_lab.harvest_experiments import HarvestConfig, plan_experiments

    out = tmp_path / "shared" / "harvest"
    port = _free_port("127.0.0.1")
    cmd = [sys.executable, "-m", "tasks.ben_lab.harvest_experiments", "--out", str(out), "--lab-url", f"http://127.0.0.1:{port}",
           *HARVEST]
    with reference_lab(port, timeout_rate=0.25, hang_seconds=3600, fault_seed=5):
        run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        logs = lambda: list(out.parent.glob(".harvest.work-*.jsonl"))  # noqa: E731
        _wait_for(lambda: logs() and logs()[0].read_text().count("\n") >= 6, run, "6 finished experiments")
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert not out.exists(), "a killed stage publishes nothing"
    assert list(out.parent.glob(".harvest.tmp-*")), "the kill came while the stage was writing"
    finished = [json.loads(line)["id"] for line in logs()[0].read_text().splitlines()]
    assert len(finished) == 6

    with reference_lab(port):  # the same lab back up, healthy
        again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "left behind by a run that stopped mid-write" in again.stdout
    manifest = read_manifest(out)
    assert manifest["metrics"]["resumed_from_earlier_run"] == 6
    plan = plan_experiments(HarvestConfig(phase_runs_per_type=2, tri_runs=4, discovery_runs=1, drift_runs=4,
                                          system_sizes=[6, 8], depths=[1, 2], discovery_per_phase=[5]))
    rows = read_jsonl(out / "experiments.jsonl")
    assert [r["id"] for r in rows] == [p.id for p in plan]  # each planned experiment exactly once, in plan order
    assert [r["id"] for r in rows[:6]] == finished
    assert sorted(p.name for p in out.parent.iterdir()) == ["harvest"], "no temp dir, work log or lock left"


# ---- teacher answering 429 and 500 inside the stage ------------------------------------------------------

def test_teacher_429_and_500_inside_generate_ir_are_retried_and_every_prompt_gets_one_row(tmp_path):
    from tasks.lift_sys.generate_ir import GenerateIRConfig, generate
    from tests.lift_sys.test_generate_ir import BARE, RICH, ChatServer, plain_rows, write_rows

    server = ChatServer()
    try:
        server.script("rate limited", status=429)
        server.script("upstream exploded", status=500)
        server.script(RICH, BARE, RICH, RICH)
        prompts = write_rows(tmp_path / "prompts.jsonl", plain_rows(2))
        out = generate(GenerateIRConfig(teacher=f"openai:{server.url}", n=2), prompts, tmp_path / "ir")
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    rows, manifest = read_jsonl(out / "ir.jsonl"), read_manifest(out)
    assert [r["id"] for r in rows] == ["p0", "p1"] and all(r["valid_candidates"] == 2 for r in rows)
    assert read_jsonl(out / "rejects.jsonl") == []
    assert len(server.requests) == 6 and manifest["usage"]["retries"] == 2
    assert manifest["counts"]["candidates"] == 4


# ---- process killed mid-export (the real llama.cpp converter) ----------------------------------------------

@pytest.mark.slow
def test_an_export_killed_mid_conversion_leaves_no_gguf_anyone_takes_and_reruns_clean(tmp_path, sft_dir, val_jsonl):  # noqa: F811
    from adapters.models.llama_cpp import LlamaCppError, resolve_llama_cpp_dir
    from tasks.training.install_ollama import InstallConfig
    from tasks.training.install_ollama import run as install

    try:
        resolve_llama_cpp_dir()
    except LlamaCppError as e:
        pytest.skip(str(e))
    sft, val = sft_dir, val_jsonl
    out = tmp_path / "shared" / "export"
    cmd = [sys.executable, "-m", "tasks.training.export_gguf", str(sft), str(val), "--out", str(out), "--set", "outtypes=[f16]",
           "--set", "export_adapter=false", "--set", "parity_prompts=2", "--set", "parity_tokens=8"]
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # its own process group: the converter dies with it
    partial = lambda: [p for p in out.parent.glob(".export.tmp-*/.model-f16.gguf.partial") if p.stat().st_size]  # noqa: E731
    _wait_for(partial, run, "the converter writing model-f16.gguf")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    assert not out.exists() and partial(), "killed mid-write: the partial GGUF is only in the temp dir"
    with pytest.raises(FileNotFoundError, match=r"stage input \S+/shared/export does not exist"):
        install(InstallConfig(model_name="ben-lab", host="http://127.0.0.1:9", retries=0, quant="f16"), out,
                tmp_path / "shared" / "install")

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "left behind by a run that stopped mid-write" in again.stdout
    manifest = read_manifest(out)
    assert (out / "model-f16.gguf").stat().st_size == manifest["integrity"]["model-f16.gguf"]["bytes"]
    assert manifest["metrics"]["parity_rate"] >= 0.95  # llama.cpp loaded and ran the re-made file
    assert sorted(p.name for p in out.parent.iterdir()) == ["export"]
