"""Weighted mixing, exact dedup and a validation split that never moves."""

from __future__ import annotations

import json

import pytest

from tasks.training.mix_datasets import MixConfig, MixSource, mix
from tasks.common.records import RecordError, read_chat_records
from tests.conftest import write_chat_records


def _digests(path):
    return {json.dumps([m.model_dump() for m in r.messages]) for r in read_chat_records(path)}


def test_weights_are_shares_of_the_training_mix(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 200)
    b = write_chat_records(tmp_path / "b.jsonl", 200, start=1000)
    cfg = MixConfig(sources=[MixSource(name="a", weight=3), MixSource(name="b", weight=1)], val_fraction=0.1)
    out = mix(cfg, [a, b], tmp_path / "mix")
    sources = {r["source"]: r for r in json.loads((out / "manifest.json").read_text())["sources"]}
    assert sources["a"]["share"] == pytest.approx(0.75, abs=0.01)
    assert sources["b"]["share"] == pytest.approx(0.25, abs=0.01)


def test_validation_split_is_stable_when_weights_change(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 150)
    b = write_chat_records(tmp_path / "b.jsonl", 150, start=500)
    v1 = mix(MixConfig(sources=[MixSource(name="a", weight=1), MixSource(name="b", weight=1)]), [a, b], tmp_path / "m1")
    v2 = mix(MixConfig(sources=[MixSource(name="a", weight=5), MixSource(name="b", weight=1, upsample=True)]), [a, b], tmp_path / "m2")
    assert _digests(v1 / "val.jsonl") == _digests(v2 / "val.jsonl")
    assert _digests(v1 / "val.jsonl").isdisjoint(_digests(v2 / "train.jsonl"))


def test_exact_duplicates_are_dropped(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 50)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(a.read_text() + a.read_text())
    out = mix(MixConfig(sources=[MixSource(name="a")], val_fraction=0.2), [dup], tmp_path / "mix")
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["duplicates_dropped"] == 50
    assert m["counts"]["train"] + m["counts"]["val"] == 50


def test_upsampling_must_be_allowed(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 100)
    b = write_chat_records(tmp_path / "b.jsonl", 10, start=500)
    with pytest.raises(ValueError, match="upsample: true"):
        mix(MixConfig(sources=[MixSource(name="a"), MixSource(name="b")], total=100), [a, b], tmp_path / "mix")
    out = mix(MixConfig(sources=[MixSource(name="a"), MixSource(name="b", upsample=True)], total=100), [a, b], tmp_path / "mix")
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] == 100


def test_malformed_line_names_file_and_line_and_leaves_nothing(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 5)
    lines = a.read_text().splitlines()
    lines[2] = lines[2][:-5]
    a.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"a\.jsonl:3: malformed JSON"):
        mix(MixConfig(), [a], tmp_path / "mix")
    assert not any(p.name.startswith(".mix") or p.name == "mix" for p in tmp_path.iterdir())


def test_wrong_field_type_names_the_record_and_field(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}],
                             "source": "s", "kind": "k"}) + "\n")
    with pytest.raises(RecordError, match=r"record 1: field 'messages.1.role'"):
        mix(MixConfig(), [a], tmp_path / "mix")


def test_second_run_is_a_cache_hit(tmp_path):
    a = write_chat_records(tmp_path / "a.jsonl", 40)
    out = mix(MixConfig(), [a], tmp_path / "mix")
    before = (out / "manifest.json").stat().st_mtime_ns
    mix(MixConfig(), [a], tmp_path / "mix")
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_a_missing_source_is_dropped_and_weights_renormalise(tmp_path):
    from tasks.training.mix_datasets import available_sources

    a = write_chat_records(tmp_path / "a.jsonl", 100)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    b = write_chat_records(tmp_path / "b.jsonl", 100, start=500)
    cfg = MixConfig(sources=[MixSource(name="instruct", weight=0.5), MixSource(name="a", weight=0.3), MixSource(name="b", weight=0.2)])
    reduced, files, dropped = available_sources(cfg, {"instruct": empty, "a": a, "b": b})
    assert dropped == ["instruct"] and files == [a, b]
    out = mix(reduced, files, tmp_path / "mix")
    shares = {r["source"]: r["share"] for r in json.loads((out / "manifest.json").read_text())["sources"]}
    assert shares == {"a": pytest.approx(0.6, abs=0.01), "b": pytest.approx(0.4, abs=0.01)}
