"""indra-quantum checkpoints and step logs: which checkpoint a resumed run picks, what it restores, which rows survive."""

from __future__ import annotations

import random

import numpy as np
import torch

from tasks.indra_quantum.indra_checkpoints import (METRIC_COLUMNS, append_csv, read_csv, resume, save_checkpoint,
                                                   truncate_csv)


def training_state(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    return model, optimizer, scheduler


def take_step(model, optimizer, scheduler) -> None:
    model(torch.randn(4, 3)).pow(2).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def draws() -> tuple[float, float, float]:
    """The next number from each random generator a training step uses."""
    return float(torch.rand(1)), float(np.random.rand()), random.random()


def test_only_the_newest_checkpoints_are_kept_across_a_digit_boundary(tmp_path):
    model, optimizer, scheduler = training_state()
    for step in range(7, 13):
        save_checkpoint(tmp_path / "ckpt", step, model, optimizer, scheduler, keep=2)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-0000011.pt", "step-0000012.pt"]


def test_resume_restores_the_newest_readable_checkpoint_and_its_random_state(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    model, optimizer, scheduler = training_state()
    take_step(model, optimizer, scheduler)
    save_checkpoint(ckpt, 3, model, optimizer, scheduler, keep=3)
    take_step(model, optimizer, scheduler)
    save_checkpoint(ckpt, 6, model, optimizer, scheduler, keep=3)
    weights, lr = model.weight.detach().clone(), scheduler.get_last_lr()
    expected = draws()
    (ckpt / "step-0000009.pt").write_bytes(b"torn by a kill mid-save")

    fresh, fresh_opt, fresh_sched = training_state(seed=1)
    draws()  # the restarted process has moved its generators on
    assert resume(ckpt, fresh, fresh_opt, fresh_sched) == 6
    assert torch.equal(fresh.weight, weights) and fresh_sched.get_last_lr() == lr
    assert draws() == expected, "the resumed run draws the same batches and dropout as the uninterrupted one"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-0000003.pt", "step-0000006.pt"]
    assert "discarding unreadable checkpoint step-0000009.pt" in capsys.readouterr().out


def test_a_run_without_a_readable_checkpoint_starts_at_zero_and_clears_stray_temp_files(tmp_path):
    model, optimizer, scheduler = training_state()
    assert resume(tmp_path / "never-written", model, optimizer, scheduler) == 0
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / ".step-0000004.pt.tmp-1234").write_bytes(b"half a checkpoint")
    (ckpt / "step-0000002.pt").write_bytes(b"")
    assert resume(ckpt, model, optimizer, scheduler) == 0
    assert list(ckpt.iterdir()) == []


def test_a_resumed_run_cuts_its_metrics_back_to_the_checkpoint_step(tmp_path):
    metrics = tmp_path / "logs" / "metrics.csv"
    for step in range(1, 6):
        append_csv(metrics, {"step": step, "loss": 2.0 / step, "not_a_metric_column": "dropped"})
    truncate_csv(metrics, 3)
    rows = read_csv(metrics)
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0]
    assert list(rows[0]) == METRIC_COLUMNS, "metrics.csv keeps its fixed columns; unknown keys are left out"
    assert rows[1]["loss"] == 1.0 and rows[1]["kd"] is None
    evals = tmp_path / "logs" / "eval.csv"
    for step in (2, 4):
        append_csv(evals, {"step": step, "val_loss": 1.5})
    truncate_csv(evals, 3)
    assert read_csv(evals) == [{"step": 2.0, "val_loss": 1.5}], "other logs keep the columns they were written with"
