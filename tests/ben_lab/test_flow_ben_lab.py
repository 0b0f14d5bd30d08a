"""ben-lab end to end on the real embedded model: harvest → ... → GGUF that llama.cpp answers with."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from pathlib import Path

import pytest

from flows.ben_lab import BenLabConfig, ben_lab, main
from tests.cache_keys import check_keys, recording_cache_keys
from tests.plans import TINY_SFT

TINY = ["harvest.phase_runs_per_type=4", "harvest.tri_runs=8", "harvest.discovery_runs=2", "harvest.drift_runs=8",
        "harvest.system_sizes=[6, 8]", "harvest.depths=[1, 2]", "harvest.discovery_per_phase=[5]",
        "mix.val_fraction=0.2", *TINY_SFT, "export.parity_prompts=4", "install.retries=0",
        "evaluate.phase_runs_per_type=1", "evaluate.tri_runs=1", "evaluate.drift_runs=1", "evaluate.max_tokens=32",
        "evaluate.gate_install=false"]


def manifests(root: Path) -> dict[str, str]:
    return {s: json.loads((root / s / "manifest.json").read_text())["finished_at"] + json.loads(
        (root / s / "manifest.json").read_text())["key"] for s in ("harvest", "calibrate", "describe", "mix", "sft", "export")}


@pytest.fixture(scope="module")
def first_run(prefect_harness, tmp_path_factory, model_cache):
    import os

    os.environ["OLLAMA_HOST"] = "http://127.0.0.1:9"  # nothing listens: the install must say it did not happen
    data = tmp_path_factory.mktemp("flow") / "data"
    overrides = TINY + [f"sft.model_cache_dir={model_cache}"]
    with recording_cache_keys() as key_requests:
        summary = ben_lab(data_dir=str(data), overrides=overrides)
    return data, overrides, summary, key_requests


@pytest.mark.slow
def test_flow_trains_exports_and_reports(first_run):
    data, _, summary, _ = first_run
    root = data / "ben_lab"
    assert json.loads((root / "summary.json").read_text()) == summary
    assert summary["counts"]["harvest"]["total"] == 34 and summary["counts"]["describe"]["experiments"] == 34
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["parity_rate"] >= 0.95
    assert summary["installed"] is False and summary["install_command"].startswith("ollama create ben-lab -f ")
    assert set(summary["stages"]) == {"harvest", "calibrate", "describe", "mix", "sft", "export", "fresh", "evaluate",
                                      "install"}
    evaluation = summary["evaluation"]
    assert set(evaluation) >= {"beats_base", "gain", "base", "trained"} and evaluation["base"]["phase_accuracy"] is not None
    assert "| phase_accuracy |" in summary["evaluation_table"]
    assert (root / "evaluate" / "evaluation.png").exists() and (root / "evaluate" / "answers.jsonl").exists()
    assert summary["calibration"]["cv_accuracy"] >= 0.75 and set(summary["calibration"]["confusion"]) == {
        "ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom"}
    assert all(s["wall_time_s"] >= 0 for s in summary["stages"].values())
    assert (root / "describe" / "lab_instructions.jsonl").exists() and (root / "install" / "Modelfile").exists()


@pytest.mark.slow
def test_every_stage_prefect_key_is_its_manifest_key(first_run):
    *_, key_requests = first_run
    assert check_keys(key_requests) == {"harvest", "calibrate", "describe", "mix", "sft", "export", "evaluate", "install"}


@pytest.mark.slow
def test_exported_gguf_loads_in_llama_cpp_and_answers(first_run):
    from adapters.models.llama_cpp import GgufModel, render_chat_template

    _, _, summary, _ = first_run
    with GgufModel(Path(summary["gguf"]["q8_0"])) as model:
        prompt = render_chat_template(model.chat_template, [{"role": "user", "content": "Which phase has string order 0.98?"}],
                                      bos_token=model.bos_token, eos_token=model.eos_token)
        out = model.detokenize(model.greedy(model.tokenize(prompt), 24))
    assert len(out.strip()) > 0


@pytest.mark.slow
def test_rerun_with_nothing_changed_reexecutes_no_stage(first_run):
    data, overrides, *_ = first_run
    before = manifests(data / "ben_lab")
    ben_lab(data_dir=str(data), overrides=overrides)
    assert manifests(data / "ben_lab") == before


@pytest.mark.slow
def test_changing_an_sft_setting_reruns_only_sft_and_later(first_run, tmp_path):
    import shutil

    data, overrides, *_ = first_run
    data = Path(shutil.copytree(data, tmp_path / "copy"))  # the other tests keep the first run's model
    before = manifests(data / "ben_lab")
    ben_lab(data_dir=str(data), overrides=overrides + ["sft.lora.dropout=0.1"])
    after = manifests(data / "ben_lab")
    assert {s for s in before if before[s] != after[s]} == {"sft", "export"}


@pytest.mark.slow
def test_chat_runs_a_lab_experiment_and_the_model_answers(first_run):
    from flows.lab_chat import chat

    data, overrides, *_ = first_run
    said: list[str] = []
    args = Namespace(config=None, profile="local", data_dir=data, overrides=overrides, lab_url=None)
    stdin = io.StringIO("/run phase_type=spt_cluster system_size=8 depth=2 seed=5\nquit\n")
    assert chat("ben-lab", BenLabConfig, args, stdin=stdin, say=said.append) == 0
    lab_lines = [s for s in said if s.startswith("[lab] run_phase_experiment")]
    assert lab_lines and "string_order" in lab_lines[0] and "{" not in lab_lines[0], "a short table, not the raw JSON"
    assert said.index(lab_lines[0]) < len(said) - 1, "the model answers after the lab result"


def test_unreachable_lab_fails_with_one_clear_error(tmp_path, capsys, prefect_harness):
    code = main(["--lab-url", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "d"), "--set", "harvest.retries=0"])
    err = capsys.readouterr().err
    assert code == 2 and "http://127.0.0.1:9" in err and "unreachable" in err
    assert not (tmp_path / "d" / "ben_lab" / "harvest").exists()


def test_prefect_cache_never_returns_another_directorys_output(tmp_path, prefect_harness):
    """Same config and inputs, two output dirs: each run must get its own directory back."""
    from prefect import flow

    from tasks.training.mix_datasets import MixConfig, mix_datasets
    from tests.conftest import write_chat_records

    src = write_chat_records(tmp_path / "a.jsonl", 20)

    @flow
    def twice(out: str) -> str:
        return str(mix_datasets(MixConfig(), [src], Path(out)))

    for name in ("one", "one", "two", "two"):
        assert twice(str(tmp_path / name)) == str(tmp_path / name)


def test_a_lab_answer_that_breaks_the_api_is_one_line_and_exit_2(tmp_path):
    """Run as a user would (a fresh process): the one 'error:' line names endpoint, field and value; no traceback."""
    import os
    import subprocess
    import sys

    from tests.adapters.lab.test_lab_client import serve, users_lab

    app = users_lab(magnetization="n/a")
    app.get("/health")(lambda: {"status": "healthy", "lab": "operational", "devices": 1})
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    with serve(app) as url:
        proc = subprocess.run([sys.executable, "-m", "flows.ben_lab", "--lab-url", url, "--data-dir", str(tmp_path / "d"),
                               "--set", "harvest.phase_runs_per_type=1"], capture_output=True, text=True, env=env,
                              timeout=300, cwd=Path(__file__).resolve().parents[2])
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if "magnetization" in line]
    assert proc.returncode == 2, out
    assert errors == ["error: /run_phase_experiment response does not match the Jarvis API: field 'summary.magnetization': "
                      "Input should be a valid number, unable to parse string as a number (got 'n/a'; 1 problem(s) in all)"], out
    assert "Traceback" not in out


@pytest.mark.slow
def test_install_is_refused_when_the_model_does_not_beat_its_base(first_run, capsys):
    data, overrides, *_ = first_run
    gated = overrides + ["evaluate.gate_install=true", "evaluate.min_gain=1.0"]  # no model gains 1.0: always refused
    code = main(["--data-dir", str(data), *[arg for o in gated for arg in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2 and "does not beat its base on held-out lab questions" in err and "not installed" in err
    summary = json.loads((data / "ben_lab" / "summary.json").read_text())
    assert summary["installed"] is False and summary["evaluation"]["beats_base"] is False
