"""Trials and the search loop on a tiny model: best checkpoint kept, early stop, cache, journal resume, guided pauses."""

from __future__ import annotations

import contextvars
import json
import threading
from pathlib import Path

import pytest
from prefect import flow

from tasks.tuning_agent.guide_trials import ask_in_ui
from tasks.tuning_agent.search_space import SearchSpace
from tasks.tuning_agent.sft_trial import TrialConfig, TrialSpec, read_trial, run_trial
from tasks.common.stage import read_manifest
from tasks.training.train_sft import SFTStageConfig, last_complete_checkpoint
from tasks.tuning_agent.tune_hyperparameters import TuneConfig, read_journal, tune
from tests.conftest import answer_pauses

SPACE = SearchSpace(dimensions={"trainer.learning_rate": [1e-3, 3e-2], "lora.r": [2, 4]})


def tiny_sft(tiny_model) -> SFTStageConfig:
    return SFTStageConfig(base_model=str(tiny_model), lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                          trainer={"per_device_train_batch_size": 4, "learning_rate": 1e-2, "disable_tqdm": True})


def test_trial_keeps_its_best_checkpoint_and_is_not_trained_twice(tmp_path, tiny_model, mix_dir):
    spec = TrialSpec(sft=tiny_sft(tiny_model), trial=TrialConfig(steps=6, eval_every=2, early_stop_margin=None), values={"x": 1})
    out = run_trial(spec, mix_dir, tmp_path / "trial")
    trial = read_trial(out)
    assert sorted(int(s) for s in trial["eval_curve"]) == [2, 4, 6] and trial["steps_run"] == 6
    assert trial["best_eval_loss"] == min(trial["eval_curve"].values()) and not trial["stopped_early"]
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == trial["best_step"]  # the kept checkpoint is the best one
    finished = read_manifest(out)["finished_at"]
    run_trial(spec, mix_dir, tmp_path / "trial")
    assert read_manifest(out)["finished_at"] == finished


def test_early_stopped_trial_leaves_a_valid_checkpoint(tmp_path, tiny_model, mix_dir):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    spec = TrialSpec(sft=tiny_sft(tiny_model), trial=TrialConfig(steps=8, eval_every=2, early_stop_margin=0.05), values={})
    out = run_trial(spec, mix_dir, tmp_path / "trial", best_curve={2: 0.5, 4: 0.4})  # a far better trial ran before
    trial = read_trial(out)
    assert trial["stopped_early"] and trial["stopped_at_step"] == 2 and trial["steps_run"] == 2
    assert last_complete_checkpoint(out) is None and (out / "checkpoint" / "trainer_state.json").is_file()
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["global_step"] == 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "checkpoint")
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert saved and all(torch.equal(saved[k], loaded[k.replace(".weight", ".default.weight")]) for k in saved)


def test_search_resumes_from_its_journal_without_repeating_trials(tmp_path, tiny_model, mix_dir):
    cfg = TuneConfig(methods=["random"], trials=2, space=SPACE,
                     trial=TrialConfig(steps=2, eval_every=1, max_eval_records=4, early_stop_margin=None))
    first = tune(cfg, tiny_sft(tiny_model), mix_dir, tmp_path / "search")
    assert first["trials_run"] == 2 and len(list((tmp_path / "search" / "trials").iterdir())) == 2
    more = tune(cfg.model_copy(update={"trials": 3}), tiny_sft(tiny_model), mix_dir, tmp_path / "search")
    journal = read_journal(tmp_path / "search" / "random" / "journal.jsonl")
    assert [e["index"] for e in journal] == [0, 1, 2] and journal[:2] == read_journal_prefix(first, journal)
    assert len({json.dumps(e["values"], sort_keys=True) for e in journal}) == 3  # no setting trained twice
    assert more["best"]["best_eval_loss"] == min(e["best_eval_loss"] for e in journal)
    assert (tmp_path / "search" / "best_so_far.png").stat().st_size > 0


def read_journal_prefix(summary: dict, journal: list[dict]) -> list[dict]:
    """The first search's trials, as the resumed journal must still hold them."""
    return [e for e in journal if e["index"] < summary["trials_run"]]


# --- guided mode: a real Prefect flow run pauses before each trial and is resumed with a person's answers ---

RUN: dict = {}


@flow
def guided_flow(cfg: TuneConfig, sft: SFTStageConfig, mix: str, out_dir: str) -> dict:
    from prefect.runtime import flow_run

    RUN["id"] = flow_run.id
    return tune(cfg, sft, Path(mix), Path(out_dir), ask_in_ui(cfg))


def test_guided_search_runs_the_edited_trial_and_stops_when_told(prefect_harness, tmp_path, tiny_model, mix_dir):
    cfg = TuneConfig(methods=["fmqa"], trials=4, mode="guided", space=SPACE, guide_poll_interval_s=1, guide_timeout_s=120,
                     trial=TrialConfig(steps=2, eval_every=1, max_eval_records=4, early_stop_margin=None))
    edited = {"trainer.learning_rate": 3e-2, "lora.r": 2}
    answers = [{"action": "edit", "values": {"trainer.learning_rate": 5e-2, "lora.r": 2}},  # not a choice: asked again
               {"action": "edit", "values": edited, "note": "try the high rate"},
               {"action": "stop", "values": {}, "note": "good enough"}]
    RUN.clear()
    shown, errors = [], []
    person = threading.Thread(target=contextvars.copy_context().run, args=(answer_pauses, RUN, answers, shown, errors),
                              daemon=True)
    person.start()
    summary = guided_flow(cfg, tiny_sft(tiny_model), str(mix_dir), str(tmp_path / "search"))
    person.join(timeout=30)
    assert not errors, errors
    assert "Expected eval loss" in shown[0] and "`trainer.learning_rate`" in shown[0]
    assert "Please fix" in shown[1] and "is not one of its choices" in shown[1]
    assert "Trials so far" in shown[2]
    journal = read_journal(tmp_path / "search" / "fmqa" / "journal.jsonl")
    assert len(journal) == 1 and journal[0]["values"] == edited and journal[0]["decision"] == "edit"
    assert journal[0]["note"] == "try the high rate"
    assert summary["stopped_by_person"] and summary["best"]["values"] == edited
