"""train_indra: resume restores the exact state, KD moves the student towards the teacher, the curriculum and gating."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.indra_quantum.indra_data import pack
from tasks.indra_quantum.indra_objective import ObjectiveConfig, combined_loss, curriculum
from tasks.indra_quantum.train_indra import Interrupted, TrainIndraConfig, train

VOCAB, LEN, K = 32, 16, 4


def data_rule(t: int) -> int:
    return (3 * t + 1) % VOCAB


def teacher_rule(t: int) -> int:
    return (5 * t + 2) % VOCAB  # deliberately not the data's rule: only distillation can teach it


def write_data(root: Path, n_docs: int = 120, seed: int = 0) -> Path:
    """An indra_data-shaped dir: documents that follow data_rule, packed into blocks."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        t = int(rng.integers(1, VOCAB))
        doc = [t]
        for _ in range(int(rng.integers(8, 20))):
            t = data_rule(t)
            doc.append(t)
        docs.append(doc)
    out = root / "blocks"  # (tmp_path/data is the autouse data dir)
    out.mkdir(parents=True)
    for split, part in (("train", docs[: n_docs - 20]), ("val", docs[n_docs - 20:])):
        blocks, lengths = pack(part, LEN, eos=0)
        np.save(out / f"{split}_blocks.npy", blocks)
        np.save(out / f"{split}_lengths.npy", lengths)
    (out / "manifest.json").write_text(json.dumps({"stage": "indra_data", "key": "test", "block_len": LEN,
                                                   "tokenizer": {"name": "test", "vocab_size": VOCAB, "eos_id": 0}}))
    return out


def write_teacher(root: Path, data: Path, confidence: float = 0.9) -> Path:
    """An indra_teacher-shaped dir whose teacher puts ``confidence`` on teacher_rule(input token)."""
    blocks = np.load(data / "train_blocks.npy")
    n = len(blocks)
    indices = np.zeros((n, LEN, K), np.int32)
    rest = np.log((1 - confidence) / (K - 1))
    values = np.tile(np.array([np.log(confidence)] + [rest] * (K - 1), np.float16), (n, LEN, 1))
    for b in range(n):
        for p in range(LEN):
            top = teacher_rule(int(blocks[b, p]))
            indices[b, p] = [top] + [(top + j) % VOCAB for j in range(1, K)]
    out = root / "teacher"
    out.mkdir(parents=True)
    np.save(out / "train_values.npy", values)
    np.save(out / "train_indices.npy", indices)
    (out / "manifest.json").write_text(json.dumps({"stage": "indra_teacher", "key": "test"}))
    return out


def config(**kw) -> TrainIndraConfig:
    base = {"model": {"mode": "fullq", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": LEN, "dropout": 0.1},
            "optim": {"lr": 1e-2, "warmup_steps": 2}, "batch_size": 8, "epochs": 2, "save_every_steps": 2, "seed": 3}
    for key, value in kw.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return TrainIndraConfig.model_validate(base)


def read_steps(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def final_state(run: Path) -> dict:
    return torch.load(run / "model.pt")


def test_an_interrupted_run_resumes_at_the_same_step_and_ends_where_an_uninterrupted_one_does(tmp_path):
    data = write_data(tmp_path)
    teacher = write_teacher(tmp_path, data)
    cfg = config(max_steps=10)
    inputs = {"data": data, "teacher": teacher}
    straight = train(cfg, inputs, tmp_path / "a" / "run")

    captured = {}

    def kill_at_6(step, model, optimizer):
        if step == 6:
            captured["optimizer"] = copy.deepcopy(optimizer.state_dict())
            captured["model"] = copy.deepcopy(model.state_dict())
            raise Interrupted("killed")

    out = tmp_path / "b" / "run"
    with pytest.raises(Interrupted):
        train(cfg, inputs, out, on_step=kill_at_6)
    assert not out.exists()  # nothing published by a killed run
    work = next(out.parent.glob(".run.work-*"))
    saved = torch.load(max((work / "checkpoints").glob("step-*.pt")), weights_only=False)
    assert saved["step"] == 6
    for pid, state in captured["optimizer"]["state"].items():  # the checkpoint holds the optimizer as it was
        assert torch.equal(saved["optimizer"]["state"][pid]["exp_avg"], state["exp_avg"])
        assert torch.equal(saved["optimizer"]["state"][pid]["exp_avg_sq"], state["exp_avg_sq"])
    assert saved["scheduler"]["last_epoch"] == 6

    # a checkpoint torn by a kill mid-save is newer but unreadable: it is discarded, not trusted
    (work / "checkpoints" / "step-0000009.pt").write_bytes(b"torn")
    resumed_at = {}

    def first_step(step, model, optimizer):
        resumed_at.setdefault("step", step)

    train(cfg, inputs, out, on_step=first_step)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] == 6 and resumed_at["step"] == 7
    assert manifest["metrics"]["steps"] == 10
    a, b = final_state(straight), final_state(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same batches, same dropout, same optimizer: the same model
    assert [int(r["step"]) for r in read_steps(out)] == list(range(1, 11))  # every step logged exactly once
    assert [r["loss"] for r in read_steps(out)] == [r["loss"] for r in read_steps(straight)]
    assert not work.exists()


def test_distillation_teaches_what_only_the_teacher_knows(tmp_path):
    """The data follows one rule, the teacher another: only the KD run picks up the teacher's."""
    data = write_data(tmp_path)
    teacher = write_teacher(tmp_path, data)
    strong = {"kd_weight_start": 3.0, "kd_weight_end": 3.0, "temperature": 1.0, "kd_gate": 0.0}
    common = {"epochs": 6, "model": {"dropout": 0.0}}
    kd_run = train(config(objective=strong, **common), {"data": data, "teacher": teacher}, tmp_path / "kd")
    ce_run = train(config(objective={"distill": False}, **common), {"data": data}, tmp_path / "ce")

    def agreement(run: Path, rule) -> float:
        from tasks.indra_quantum.indra_model import IndraLM

        shape = json.loads((run / "model_config.json").read_text())
        model = IndraLM(shape.pop("vocab_size"), **shape)
        model.load_state_dict(final_state(run))
        model.eval()
        ids = torch.arange(1, VOCAB)[None, :LEN]
        pred = model(ids).logits.argmax(-1)[0]
        return float(np.mean([int(p) == rule(int(t)) for t, p in zip(ids[0], pred)]))

    assert agreement(kd_run, teacher_rule) >= 0.6
    assert agreement(ce_run, teacher_rule) <= 0.2
    assert agreement(ce_run, data_rule) >= 0.6
    kd_steps, ce_steps = read_steps(kd_run), read_steps(ce_run)
    assert all(float(r["kd"]) > 0 for r in kd_steps) and all(float(r["kd"]) == 0 for r in ce_steps)
    assert {p.name for p in kd_run.iterdir()} >= {"model.pt", "metrics.csv", "eval.csv", "loss.png", "ce_vs_kd.png",
                                                  "phase_magnitude.png", "model_config.json", "manifest.json"}


def test_curriculum_ramps_kd_linearly_and_brings_the_alignment_terms_in_after_20_percent():
    cfg = ObjectiveConfig()
    assert curriculum(cfg, 0.0) == pytest.approx((0.01, 0.0))
    assert curriculum(cfg, 1.0) == pytest.approx((0.05, 0.1))
    assert curriculum(cfg, 0.5)[0] == pytest.approx(0.03)
    assert curriculum(cfg, 0.2)[1] == 0.0 and curriculum(cfg, 0.35)[1] == pytest.approx(0.05)
    assert curriculum(ObjectiveConfig(distill=False), 0.7) == (0.0, 0.0)
    with pytest.raises(ValueError, match="aux_start"):
        ObjectiveConfig(aux_start=0.8, aux_ramp=0.3)


def test_confidence_gating_drops_tokens_the_teacher_is_unsure_of():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, VOCAB, requires_grad=True)
    targets, mask = torch.randint(0, VOCAB, (1, 4)), torch.ones(1, 4, dtype=torch.bool)
    idx = torch.randint(0, VOCAB, (1, 4, K))
    unsure = torch.log(torch.full((1, 4, K), 0.15))  # max probability 0.15 < kd_gate 0.2
    sure = unsure.clone()
    sure[..., 0] = np.log(0.55)
    mag, phase = torch.rand(1, 4, 8) + 0.1, torch.rand(1, 4, 8)
    _, gated = combined_loss(ObjectiveConfig(), 0.9, logits, targets, mask, mag, phase, unsure, idx)
    _, open_ = combined_loss(ObjectiveConfig(), 0.9, logits, targets, mask, mag, phase, sure, idx)
    assert gated["kd"] == 0 and gated["aux_phase"] == 0 and gated["kd_gate_frac"] == 0
    assert open_["kd"] > 0 and open_["aux_mag"] > 0 and open_["aux_gate_frac"] == 1.0
    assert gated["ce"] == pytest.approx(open_["ce"])


def test_a_finished_run_is_a_cache_hit(tmp_path):
    data = write_data(tmp_path)
    cfg = config(objective={"distill": False}, max_steps=3, model={"mode": "real"})
    out = train(cfg, {"data": data}, tmp_path / "run")
    before = (out / "manifest.json").read_text()
    assert train(cfg, {"data": data}, out) == out and (out / "manifest.json").read_text() == before


def test_clear_errors_for_missing_or_mismatched_teacher_arrays(tmp_path):
    data = write_data(tmp_path)
    with pytest.raises(ValueError, match="needs inputs\\['teacher'\\]"):
        train(config(), {"data": data}, tmp_path / "run")
    other = write_data(tmp_path / "other", n_docs=60)
    teacher = write_teacher(tmp_path / "other", other)
    with pytest.raises(ValueError, match="computed for other data"):
        train(config(), {"data": data, "teacher": teacher}, tmp_path / "run")
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train(config(objective={"distill": False}, batch_size=4096), {"data": data}, tmp_path / "run")
