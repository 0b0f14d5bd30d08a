"""lift-sys end to end on a tiny plan, offline: oracle IRs → review with a decisions file → negatives → SFT → GGUF → scored."""

from __future__ import annotations

import json

import pytest

from flows.config import load_config
from flows.lift_sys import PROJECT, LiftSysConfig, data_stages, lift_sys
from flows.runner import StageTimer
from tests.cache_keys import check_keys, recording_cache_keys
from tests.plans import TINY_SFT

# IR chat records run past TINY_SFT's 384 tokens (an IR alone is up to ~380), so this plan keeps 512
TINY = ["prompts.per_category=12", "generate_ir.n=2", *TINY_SFT, "sft.trainer.max_length=512", "export.parity_prompts=2",
        "install.retries=0", "evaluate.max_prompts=3", "evaluate.max_tokens=48"]


@pytest.mark.slow
def test_flow_runs_offline_and_reuses_review_decisions(prefect_harness, tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    data = tmp_path / "data"
    overrides = TINY + [f"sft.model_cache_dir={model_cache}"]
    with recording_cache_keys() as key_requests:
        summary = lift_sys(data_dir=str(data), overrides=overrides)
    assert check_keys(key_requests) == {"prompts", "generate_ir", "review", "negatives", "compose", "sft", "export",
                                        "install", "evaluate_ir"}
    root = data / "lift_sys"
    assert json.loads((root / "summary.json").read_text()) == summary
    assert summary["teacher"] == "oracle" and summary["schema_validity_of_teacher"] == 1.0
    c = summary["counts"]
    assert c["prompts"]["prompts"] >= 72 and c["generate_ir"]["accepted"] == c["prompts"]["prompts"]
    assert c["review"]["accepted"] == c["generate_ir"]["accepted"]  # the oracle's IRs pass every pre-check
    rows = [json.loads(line) for line in (root / "compose" / "rows.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {"good", "bad"} and all(r["error_type"] for r in rows if r["label"] == "bad")
    assert set(summary["ir_quality"]) == {"base", "trained"}
    assert summary["ir_quality"]["trained"]["prompts"] == 3
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["parity_rate"] >= 0.95 and summary["installed"] is False

    # a reviewer rejects one accepted IR in bulk: only review and what follows it re-run, and the decision persists
    # (the flow's data stages again: training on the changed data is what the first run already showed)
    first = json.loads((root / "review" / "accepted.jsonl").read_text().splitlines()[0])
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({"id": first["id"], "decision": "reject", "note": "wrong intent"}) + "\n")
    prompts_manifest = (root / "prompts" / "manifest.json").read_text()
    cfg = load_config(LiftSysConfig, PROJECT, overrides=overrides + ["review.mode=file", f"review.decisions_file={decisions}"],
                      extra={"data_dir": str(data)})
    again = StageTimer(cfg.runner)
    data_stages(cfg, root, again)
    assert again.stages["review"]["counts"]["accepted"] == c["review"]["accepted"] - 1
    assert again.stages["compose"]["counts"]["good"] == summary["counts"]["compose"]["good"] - 1
    assert (root / "prompts" / "manifest.json").read_text() == prompts_manifest  # cache hit upstream
    store = (root / "reviews" / "decisions.jsonl").read_text()
    assert first["id"] in store and "reject" in store
