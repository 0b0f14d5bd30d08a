"""Checkpoints and step logs of an indra-quantum training run: atomic saves, exact resume, CSVs cut back on resume."""

from __future__ import annotations

import csv
import os
import pickle
import random
from pathlib import Path

import numpy as np

from tasks.common.reporting import say

METRIC_COLUMNS = ["step", "epoch", "lr", "loss", "ce", "kd", "aux_phase", "aux_mag", "w_kd", "w_aux", "kd_gate_frac",
                  "aux_gate_frac", "grad_norm", "magnitude_mean", "phase_abs_mean", "alpha", "tokens", "elapsed_s"]


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, keep: int) -> Path:
    """Write ``step-NNNNNNN.pt`` atomically and drop all but the newest ``keep``."""
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{step:07d}.pt"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}, tmp)
    os.replace(tmp, path)
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def resume(ckpt_dir: Path, model, optimizer, scheduler) -> int:
    """Restore the newest checkpoint that loads; returns its step (0 when there is none). Torn ones are deleted."""
    import torch

    for path in sorted(ckpt_dir.glob("step-*.pt"), reverse=True) if ckpt_dir.exists() else []:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, EOFError, KeyError, ValueError, OSError, pickle.UnpicklingError) as e:
            say(f"[train_indra] discarding unreadable checkpoint {path.name} ({type(e).__name__}: the run was killed while saving it)")
            path.unlink()
            continue
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return int(state["step"])
    for stray in ckpt_dir.glob(".step-*.tmp-*") if ckpt_dir.exists() else []:
        stray.unlink()
    return 0


def append_csv(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = METRIC_COLUMNS if path.name == "metrics.csv" else list(row)
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({c: row.get(c, "") for c in columns})


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def truncate_csv(path: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run redoes the steps after its checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        path.unlink()
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if float(r["step"]) <= step)
