"""The lab chat: shortcuts and the model's one-line tool calls run real experiments; Ollama at the HTTP boundary."""

from __future__ import annotations

import json

import pytest

from adapters.lab_client import LabClient
from adapters.lab_server import reference_lab
from flows.lab_chat import OllamaChat, chat_turn, parse_shortcut, parse_tool_call
from tests.test_install_ollama import FakeOllama


def test_shortcut_and_tool_call_parsing():
    assert parse_shortcut("/run phase_type=spt_cluster system_size=16") == (
        "run_phase_experiment", {"phase_type": "spt_cluster", "system_size": 16})
    assert parse_shortcut("/drift phase_type=pseudorandom depth_factors=[1,2]") == (
        "replay_drift", {"phase_type": "pseudorandom", "depth_factors": [1, 2]})
    assert parse_shortcut("what is TRI?") is None
    with pytest.raises(ValueError, match="key=value"):
        parse_shortcut("/tri spt_cluster")
    text = 'Let me check.\nCALL tri {"phase_type": "spt_cluster", "bias": 0.9}\n'
    assert parse_tool_call(text) == ("tri", {"phase_type": "spt_cluster", "bias": 0.9})
    assert parse_tool_call("CALL tri {not json}") is None and parse_tool_call("no call here") is None


def test_model_tool_call_runs_the_experiment_and_gets_the_result_back():
    server = FakeOllama()
    server.models["ben-lab"] = {}
    server.chat_replies = ['CALL run_phase_experiment {"phase_type": "spt_cluster", "system_size": 8, "depth": 2, "seed": 3}',
                           "String order near 1 with no magnetization: the SPT cluster phase."]
    said: list[str] = []
    try:
        with reference_lab() as url:
            client = LabClient(url)
            history = [{"role": "system", "content": "lab assistant"}]
            chat_turn(OllamaChat(server.host, "ben-lab"), lambda ep, p: getattr(client, ep)(**p).model_dump(mode="json"),
                      history, "Is a cluster state on 8 sites topological?", said.append)
    finally:
        server.close()
    lab_line = next(s for s in said if s.startswith("[lab] run_phase_experiment"))
    result = json.loads(lab_line.split("→ ", 1)[1])
    assert result["summary"]["string_order"] > 0.9
    assert said[-1].startswith("String order near 1")
    second_request = server.calls("POST", "/api/chat")[1]["json"]
    assert second_request["messages"][-1]["content"].startswith("Result: ") and '"string_order"' in second_request["messages"][-1]["content"]
