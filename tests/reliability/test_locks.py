"""Runs sharing a data dir take turns per stage output (tasks/common/stage.py locks): one computes, the other
waits and then finds the cache hit; a failed or killed run never leaves its lock or temp dir behind.

Each test makes the overlap certain rather than hoping for it: the test holds the output's lock
while it starts the runs, and lets go only once every run has said that it is waiting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.training.mix_datasets import MixConfig, mix
from tasks.common.records import RecordError
from tasks.common.stage import cached, key_digest, read_manifest
from tasks.common.stage_locks import stage_lock
from tests.conftest import write_chat_records

ROOT = Path(__file__).resolve().parents[2]


def _mix_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tasks.training.mix_datasets", "--source", f"lab={src}:1.0", "--out", str(out)]


def _start(cmd: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def test_two_runs_of_one_stage_take_turns_and_the_second_gets_the_first_ones_output(tmp_path):
    src = write_chat_records(tmp_path / "chat.jsonl", 300)
    reference = mix(MixConfig(), [src], tmp_path / "reference")
    out = tmp_path / "shared" / "mix"
    with stage_lock(out):
        runs = [_start(_mix_cmd(src, out)) for _ in range(2)]
        for run in runs:  # each one blocks on the lock we hold (a broken lock: they finish and print the path)
            assert "waiting for it to finish" in run.stdout.readline()
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]

    reused = [i for i, (stdout, _) in enumerate(results) if "while this run waited: a cache hit" in stdout]
    assert len(reused) == 1, [stdout for stdout, _ in results]
    computed = runs[1 - reused[0]].pid
    manifest = read_manifest(out)
    assert manifest["written_by"]["pid"] == computed
    assert f"finished by pid {computed} " in results[reused[0]][0]
    for name in ("train.jsonl", "val.jsonl"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mix"], "no lock file, temp or trash dir left"


def test_a_stage_that_fails_before_publishing_lets_go_of_its_lock_at_once(tmp_path):
    out = tmp_path / "shared" / "mix"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [\n')
    with pytest.raises(RecordError, match="malformed JSON"):
        mix(MixConfig(), [bad], out)  # fails after its cache miss took the lock, before stage_output
    assert sorted(p.name for p in out.parent.iterdir()) == []
    good = write_chat_records(tmp_path / "chat.jsonl", 40)
    done = subprocess.run(_mix_cmd(good, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "waiting" not in done.stdout, done.stderr[-2000:]
    assert cached(out, read_manifest(out)["key"])


def test_the_lock_is_held_from_the_cache_miss_until_the_stage_lets_go_of_its_key(tmp_path):
    out = tmp_path / "shared" / "mix"
    key = key_digest("mix", {"any": 1}, None)
    assert cached(out, key) is None
    lock_file = out.with_name(".mix.lock")
    assert lock_file.read_text().startswith(f"pid {os.getpid()} ")
    probe = _start([sys.executable, "-c", "import fcntl, sys\n"
                    f"fh = open({str(lock_file)!r})\n"
                    "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"])
    assert probe.wait(timeout=60) == 3, "another process could take the lock while this stage computes"
    del key  # what happens when a stage raises or returns: its frame, and with it the key, goes away
    assert not lock_file.exists()


def test_non_zero_ranks_of_a_distributed_launch_do_not_wait_for_rank_zero(tmp_path):
    """Under torchrun/accelerate every rank runs the stage; rank 0 holds the lock for the group."""
    out = tmp_path / "shared" / "sft"
    check = [sys.executable, "-c", "import sys\nfrom tasks.common.stage import cached\n"
             f"print('miss' if cached({str(out)!r}, 'k') is None else 'hit')"]
    with stage_lock(out):
        rank1 = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "RANK": "1", "WORLD_SIZE": "2"})
        rank0 = _start(check, RANK="0", WORLD_SIZE="2")
        assert "waiting for it to finish" in rank0.stdout.readline()
    assert rank1.stdout.strip() == "miss" and "waiting" not in rank1.stdout
    assert rank0.communicate(timeout=120)[0].strip() == "miss"


def test_runs_of_different_stages_do_not_wait_for_each_other(tmp_path):
    src = write_chat_records(tmp_path / "chat.jsonl", 40)
    with stage_lock(tmp_path / "shared" / "mix"):
        done = subprocess.run(_mix_cmd(src, tmp_path / "shared" / "mix_code_only"), cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0 and "waiting" not in done.stdout, done.stdout + done.stderr[-2000:]
    assert re.fullmatch(r"\S+mix_code_only\n", done.stdout)
