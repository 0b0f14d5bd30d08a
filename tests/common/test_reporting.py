"""What a stage shows when run from the terminal (``python -m tasks....``): printed messages, and no Prefect API needed."""

from __future__ import annotations

import pytest

from tasks.common.reporting import (StageProgress, artifact_key, counts_table, publish_image, publish_markdown,
                                    publish_table, say, track)


@pytest.fixture
def unreachable_prefect_api():
    """Any call to a Prefect API fails at once: outside a run, the helpers must not make one."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}):
        yield


def test_outside_a_run_say_prints_the_message_to_the_terminal(capsys):
    say("[select] kept 12 of 14 examples")
    assert capsys.readouterr().out == "[select] kept 12 of 14 examples\n"


def test_outside_a_run_publishing_and_progress_need_no_prefect_api(tmp_path, unreachable_prefect_api, capsys):
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    publish_table("indra-ablation", [{"run": "a", "ppl": 3.2}], "ablation")
    publish_markdown("indra-samples", "**a** -> b", "samples")
    publish_image("indra-chart", png, "chart")
    assert list(track(iter("abc"), "items", total=3)) == ["a", "b", "c"]
    with StageProgress("empty stage", total=0) as progress:  # a zero total is shown as one step, not a division by zero
        progress.advance()
    assert progress.done == 1 and progress.total == 1
    assert capsys.readouterr().out == "", "nothing is printed in place of an artifact"


def test_artifact_keys_keep_only_lowercase_letters_digits_and_dashes():
    assert artifact_key("Tuning_best") == "tuning-best"
    assert artifact_key("  Indra Ablation (v2)! ") == "indra-ablation-v2"
    assert artifact_key("select") == "select"


def test_counts_table_lists_the_counts_then_the_metrics():
    rows = counts_table({"physics": 12, "dropped_symmetry_broken": 2}, {"best_eval_loss": 1.25})
    assert rows == [{"name": "physics", "value": 12}, {"name": "dropped_symmetry_broken", "value": 2},
                    {"name": "best_eval_loss", "value": 1.25}]
    assert counts_table({"runs": 2}) == [{"name": "runs", "value": 2}]
