"""The SFT step log: a resumed run keeps the earlier steps, only one process writes, a torn line is skipped; the loss plot."""

from __future__ import annotations

import json

from tasks.training.training_log import StepLog, plot_loss_curve


def trainer_state(step: int, tokens: int = 0, main_process: bool = True):
    from transformers import TrainerState

    return TrainerState(global_step=step, num_input_tokens_seen=tokens, is_world_process_zero=main_process)


def test_a_resumed_run_appends_its_steps_after_the_earlier_ones(tmp_path):
    path = tmp_path / "work" / "steps.jsonl"
    first = StepLog(path).callback()
    for step, loss in ((2, 2.5), (4, 2.0)):
        first.on_log(None, trainer_state(step), None, logs={"loss": loss, "learning_rate": 1e-4, "note": "text is dropped"})

    resumed = StepLog(path)  # a new process after a kill, resuming from the step-4 checkpoint
    callback = resumed.callback()
    callback.on_train_begin(None, trainer_state(4, tokens=1234), None)
    callback.on_log(None, trainer_state(6, tokens=2000), None, logs={"loss": 1.5, "grad_norm": 0.8})
    assert resumed.tokens_at_start == 1234, "tokens are counted from the checkpoint, not from zero"
    assert resumed.rows() == [{"step": 2, "loss": 2.5, "learning_rate": 1e-4}, {"step": 4, "loss": 2.0, "learning_rate": 1e-4},
                              {"step": 6, "loss": 1.5, "grad_norm": 0.8}]


def test_steps_logged_after_the_last_checkpoint_are_logged_once_after_a_resume(tmp_path):
    """Killed at step 10 with its last checkpoint at 8: the resume trains 9 and 10 again, and the log holds them once."""
    path = tmp_path / "steps.jsonl"
    first = StepLog(path).callback()
    for step in range(1, 11):
        first.on_log(None, trainer_state(step), None, logs={"loss": 1.0})
    resumed = StepLog(path)
    callback = resumed.callback()
    callback.on_train_begin(None, trainer_state(8), None)
    for step in range(9, 13):
        callback.on_log(None, trainer_state(step), None, logs={"loss": 0.5})
    assert [r["step"] for r in resumed.rows()] == list(range(1, 13))
    assert [r["loss"] for r in resumed.rows()][8:] == [0.5] * 4, "the resumed run's numbers win"


def test_only_the_main_process_writes_the_step_log(tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    callback = log.callback()
    callback.on_log(None, trainer_state(2, main_process=False), None, logs={"loss": 2.5})
    callback.on_log(None, trainer_state(2), None, logs={})
    assert not log.path.exists() and log.rows() == []
    callback.on_log(None, trainer_state(2), None, logs={"loss": 2.5})
    assert log.rows() == [{"step": 2, "loss": 2.5}]


def test_a_torn_last_line_from_a_killed_run_is_skipped(tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    log.path.write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n" + json.dumps({"step": 2, "loss": 2.8}) + '\n{"step": 3, "lo')
    assert log.rows() == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.8}]


def test_the_loss_curve_is_drawn_with_or_without_logged_training_steps(tmp_path):
    plot_loss_curve([{"step": 1, "loss": 3.0, "learning_rate": 1e-4}, {"step": 2, "eval_loss": 2.9}, {"step": 3, "loss": 2.5}],
                    2.9, 2.4, tmp_path / "curve.png")
    plot_loss_curve([], None, 2.4, tmp_path / "eval_only.png")  # a run that logged no step before it ended
    for png in ("curve.png", "eval_only.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
