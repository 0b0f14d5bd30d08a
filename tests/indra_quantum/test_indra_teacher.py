"""indra_teacher: top-k log-probability arrays from the embedded teacher, resumable, tokenizer-checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adapters.models.teacher_logits import GgufTopK, TeacherError
from tasks.indra_quantum.indra_data import IndraDataConfig, build
from tasks.indra_quantum.indra_teacher import TeacherConfig, compute
from tests.conftest import write_chat_records

K = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model_cache):
    """A small indra_data output (test chat records), tokenised with the embedded tokenizer."""
    root = tmp_path_factory.mktemp("teacher-data")
    write_chat_records(root / "ben_lab" / "mix" / "train.jsonl", 12)
    cfg = IndraDataConfig.model_validate({"block_len": 16, "val_fraction": 0.3, "min_train_blocks": 8,
                                          "model_cache_dir": str(model_cache), "cache_dir": str(root / "cache"),
                                          "sources": {"lab_chats": {"kind": "chat_records"}}})
    return build(cfg, None, root / "indra_quantum" / "data")


def test_top_k_arrays_hold_the_teachers_distribution(corpus, tmp_path, model_cache):
    out = compute(TeacherConfig(top_k=K, model_cache_dir=model_cache), corpus, tmp_path / "teacher")
    values = np.load(out / "train_values.npy").astype(np.float32)
    indices = np.load(out / "train_indices.npy")
    target = np.load(out / "train_target_logprob.npy")
    blocks, lengths = np.load(corpus / "train_blocks.npy"), np.load(corpus / "train_lengths.npy")
    assert values.shape == indices.shape == (len(blocks), 16, K) and values.dtype == np.float32
    real = np.arange(16)[None, :] < np.minimum(lengths, 16)[:, None]
    v = values[real]
    assert (np.diff(v, axis=-1) <= 1e-3).all() and (v <= 1e-3).all() and (np.exp(v).sum(-1) <= 1.01).all()
    has_target = np.arange(16)[None, :] < (lengths[:, None] - 1)
    assert np.isfinite(target[has_target]).all() and np.isnan(target[~has_target]).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "llama_cpp" and 1 < manifest["metrics"]["val_perplexity"] < 49152

    # the llama.cpp teacher (Q4_1) predicts what the dequantised transformers model predicts
    import torch
    from transformers import AutoModelForCausalLM

    from adapters.models.base_models import EMBEDDED, resolve_base_model

    hf = AutoModelForCausalLM.from_pretrained(resolve_base_model(EMBEDDED, model_cache), dtype=torch.float32).eval()
    full = lengths == 17
    with torch.no_grad():
        top1 = hf(torch.as_tensor(blocks[full][:, :16].astype(np.int64))).logits.argmax(-1).numpy()
    assert (top1 == indices[full][..., 0]).mean() >= 0.9

    before = (out / "manifest.json").read_text()
    assert compute(TeacherConfig(top_k=K, model_cache_dir=model_cache), corpus, out) == out
    assert (out / "manifest.json").read_text() == before  # reused, not recomputed


def test_a_killed_run_continues_from_its_last_save(corpus, tmp_path, model_cache, monkeypatch):
    cfg = TeacherConfig(top_k=K, save_every_blocks=2, model_cache_dir=model_cache)
    reference = compute(cfg, corpus, tmp_path / "a" / "teacher")
    real_topk, calls = GgufTopK.topk, {"n": 0}

    def dies_after_five(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_topk(self, *args, **kw)

    monkeypatch.setattr(GgufTopK, "topk", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        compute(cfg, corpus, tmp_path / "b" / "teacher")
    monkeypatch.setattr(GgufTopK, "topk", real_topk)
    work = next((tmp_path / "b").glob(".teacher.work-*"))
    assert json.loads((work / "train_progress.json").read_text())["blocks"] == 4
    out = compute(cfg, corpus, tmp_path / "b" / "teacher")
    assert json.loads((out / "manifest.json").read_text())["counts"]["tokens_scored_now"] < \
        json.loads((reference / "manifest.json").read_text())["counts"]["tokens_scored_now"]
    for name in ("train_values.npy", "train_indices.npy", "val_target_logprob.npy"):
        assert np.array_equal(np.load(out / name), np.load(reference / name), equal_nan=True), name


def test_a_teacher_with_another_tokenizer_is_refused(corpus, tmp_path, model_cache):
    other = tmp_path / "data"
    shutil.copytree(corpus, other, dirs_exist_ok=True)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["probe_ids"] = [5, 6, 7]  # as if tokenised by another model
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TeacherError, match="Set data.tokenizer to the teacher's model"):
        compute(TeacherConfig(top_k=K, model_cache_dir=model_cache), other, tmp_path / "teacher")


def test_live_distillation_matches_the_precomputed_arrays(corpus, tmp_path, model_cache):
    """objective.teacher=live runs the teacher per batch: the same KD terms as the stored top-k (float32)."""
    import csv

    from tasks.indra_quantum.train_indra import TrainIndraConfig, train

    teacher_cfg = TeacherConfig(top_k=K, values_dtype="float32", model_cache_dir=model_cache)
    teacher = compute(teacher_cfg, corpus, tmp_path / "teacher")
    base = {"model": {"mode": "fullq", "d_model": 8, "n_layers": 1, "n_heads": 2, "max_len": 16, "dropout": 0.0},
            "objective": {"kd_gate": 0.0}, "batch_size": 2, "max_steps": 3}
    stored = train(TrainIndraConfig.model_validate(base), {"data": corpus, "teacher": teacher}, tmp_path / "stored")
    live_cfg = TrainIndraConfig.model_validate({**base, "objective": {"kd_gate": 0.0, "teacher": "live"},
                                                "live_teacher": teacher_cfg.model_dump()})
    live = train(live_cfg, {"data": corpus}, tmp_path / "live")

    def kd(run):
        with open(run / "metrics.csv") as fh:
            return [float(r["kd"]) for r in csv.DictReader(fh)]

    assert kd(live) == pytest.approx(kd(stored), rel=1e-4) and all(k > 0 for k in kd(live))
