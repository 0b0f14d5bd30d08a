"""Stage conventions: content-hash cache keys and manifest-last atomic outputs."""

from __future__ import annotations

import json

import pytest

from tasks.common.stage import MANIFEST, cached, key_digest, stage_output


def test_key_changes_with_input_content_not_mtime(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("a\n")
    k1 = key_digest("s", {"x": 1}, f)
    f.write_text("a\n")  # same bytes, new mtime
    assert key_digest("s", {"x": 1}, f) == k1
    f.write_text("b\n")
    assert key_digest("s", {"x": 1}, f) != k1
    assert key_digest("s", {"x": 2}, f) != key_digest("s", {"x": 1}, f)
    assert key_digest("s", {"x": 1}, f, source="v2") != key_digest("s", {"x": 1}, f, source="v1")


def test_output_is_invisible_until_published(tmp_path):
    out_dir = tmp_path / "stage"
    with stage_output("s", out_dir, "k1", {"a": 1}, None) as out:
        (out.tmp / "data.txt").write_text("x")
        assert not out_dir.exists()
    manifest = json.loads((out_dir / MANIFEST).read_text())
    assert manifest["key"] == "k1" and manifest["files"] == ["data.txt"]
    assert cached(out_dir, "k1") and not cached(out_dir, "k2")


def test_a_failing_stage_leaves_the_previous_output_and_no_temp_dir(tmp_path):
    tmp_path = tmp_path / "outputs"
    out_dir = tmp_path / "stage"
    with stage_output("s", out_dir, "k1", None, None) as out:
        (out.tmp / "data.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with stage_output("s", out_dir, "k2", None, None) as out:
            (out.tmp / "data.txt").write_text("half")
            raise RuntimeError("killed")
    assert (out_dir / "data.txt").read_text() == "old"
    assert cached(out_dir, "k1")
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_the_manifest_times_the_stage_from_its_key_not_from_opening_its_output(tmp_path):
    """sft trains for minutes, then opens its output only to save: the manifest said 10 s for a 35-minute run."""
    import time

    key = key_digest("s", {"x": 1}, None)
    time.sleep(0.3)  # the stage's work, done before it writes its output
    with stage_output("s", tmp_path / "stage", key, None, None):
        pass
    assert json.loads((tmp_path / "stage" / MANIFEST).read_text())["wall_time_s"] >= 0.3
