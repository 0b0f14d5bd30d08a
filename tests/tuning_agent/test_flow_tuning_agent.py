"""tuning-agent end to end on the real embedded model: ben-lab data → FMQA + random trials → best trial → GGUF."""

from __future__ import annotations

import json

import pytest

from flows.tuning_agent import tuning_agent
from tests.cache_keys import check_keys, recording_cache_keys
from tests.ben_lab.test_flow_ben_lab import TINY as BEN_LAB_TINY

PROJECT_OVERRIDES = [o for o in BEN_LAB_TINY if o.split("=")[0].split(".")[0] in ("harvest", "mix")]


@pytest.mark.slow
def test_search_exports_the_best_of_its_trials_and_the_projects_own_setting(prefect_harness, tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    overrides = [f"project_overrides={json.dumps(PROJECT_OVERRIDES + [f'sft.model_cache_dir={model_cache}', 'sft.trainer.per_device_train_batch_size=2'])}",
                 "tune.methods=[fmqa, random]", "tune.trials=4", "tune.fmqa.initial_random=3",
                 "tune.fmqa.solvers=[qaoa, exact]", "tune.trial.steps=2", "tune.trial.eval_every=1",
                 "tune.trial.max_eval_records=6", "export.parity_prompts=2", "export.outtypes=[f16]", "install.quant=f16",
                 "install.retries=0"]
    with recording_cache_keys() as key_requests:
        summary = tuning_agent(data_dir=str(tmp_path / "data"), overrides=overrides)
    assert check_keys(key_requests) == {"harvest", "calibrate", "describe", "mix", "trial", "best", "export", "install"}
    root = tmp_path / "data" / "tuning_agent"
    assert json.loads((root / "summary.json").read_text()) == summary
    assert {m: s["trials"] for m, s in summary["methods"].items()} == {"fmqa": 4, "random": 4}
    search = json.loads((root / "search" / "search.json").read_text())
    fmqa = [json.loads(line) for line in (root / "search" / "fmqa" / "journal.jsonl").read_text().splitlines()]
    assert [e["proposer_info"].get("solver") for e in fmqa[3:]] == ["qaoa"]  # the surrogate's proposal
    assert all(e["expected_loss"] is not None for e in fmqa[3:])
    # What is exported is the best of the eight searched settings and the project's own (lr 3e-4, r 8 on four
    # modules), trained on the same budget: never a model worse than the project's settings give.
    searched = [json.loads(x) for m in ("fmqa", "random") for x in (root / "search" / m / "journal.jsonl").read_text().splitlines()]
    assert summary["search_best_eval_loss"] == min(e["best_eval_loss"] for e in searched)
    assert summary["eval_loss_after"] == min(summary["eval_loss_before"], summary["search_best_eval_loss"])
    winner = search["best"] if summary["best_from"] == "search" else {"values": {"setting": "ben-lab config"}}
    assert summary["best_values"] == winner["values"]
    best_trial = json.loads((root / "best" / "trial.json").read_text())
    assert best_trial["best_eval_loss"] == summary["eval_loss_after"]
    assert summary["parity_rate"] >= 0.95 and summary["installed"] is False
    assert (root / "best" / "merged" / "config.json").is_file() and (root / "search" / "best_so_far.png").stat().st_size > 0
    assert set(summary["stages"]) >= {"harvest", "describe", "mix", "best", "export", "install"}
