"""Per-step training metrics: a crash-safe step log (a Trainer callback) and the loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path


class StepLog:
    """Appends every Trainer log line to a JSONL file, so a resumed run keeps the earlier steps.

    A run killed after its last checkpoint has logged steps that its resume trains again: those rows are cut
    on resume, so the log and the loss curve hold each step once.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tokens_at_start = 0

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Cb(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.tokens_at_start = state.num_input_tokens_seen  # restored from the checkpoint on resume
                if state.is_world_process_zero:
                    outer.cut_after(state.global_step)

            def on_log(self, args, state, control, logs=None, **kw):
                if not logs or not state.is_world_process_zero:
                    return
                row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                outer.path.parent.mkdir(parents=True, exist_ok=True)
                with open(outer.path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")

        return _Cb()

    def cut_after(self, step: int) -> None:
        """Drop the rows logged after ``step`` (the checkpoint a run resumes from), in one rename."""
        rows = self.rows()
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) == len(rows):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)

    def rows(self) -> list[dict]:
        """Logged rows, one per logging event (a torn last line from a killed run is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def plot_loss_curve(steps: list[dict], eval_before: float | None, eval_after: float | None, png: Path) -> None:
    """Training loss per step, with the eval loss before and after as reference points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in steps if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    last = train[-1][0] if train else 1
    if eval_before is not None:
        ax.scatter([0], [eval_before], color="tab:red", zorder=3, label=f"eval before {eval_before:.3f}")
    if eval_after is not None:
        ax.scatter([last], [eval_after], color="tab:green", zorder=3, label=f"eval after {eval_after:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
