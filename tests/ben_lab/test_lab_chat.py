"""The lab chat: shortcuts and the model's one-line tool calls run real experiments, shown as short tables;
invented numbers are flagged and looping answers cut. Ollama at the HTTP boundary."""

from __future__ import annotations

import re

import pytest

from adapters.lab.lab_client import LabClient
from adapters.lab.lab_server import reference_lab
from flows.lab_chat import (RECENT_TURNS, STOPPED, LabGrounding, OllamaChat, chat_turn, lab_result_prompt,
                            lab_result_table, parse_shortcut, parse_tool_call, ungrounded_numbers)
from tasks.ben_lab.answer_checks import repetition_loop
from tests.training.test_install_ollama import FakeOllama

# Shaped like the reference lab's answers (feature vectors and top_k included: they must not reach the table).
PHASE = {"experiment_id": "exp-6185a545bb00b574", "phase_type": "spt_cluster", "feature_vector": [0.0467, 0.9330, 0.1234],
         "summary": {"phase_type": "spt_cluster", "system_size": 12, "depth": 4, "seed": 777,
                     "top_k": [{"bitstring": "010000000000", "count": 3, "probability": 0.005859}],
                     "magnetization": 0.046731, "entropy_proxy": 1.023632, "correlation_length": 0.0,
                     "string_order": 0.933045, "randomness_score": 0.846321, "branch_count": 447, "interfered_count": 12},
         "params": {"phase_type": "spt_cluster", "system_size": 12, "depth": 4, "seed": 777, "bias": None}}
TRI = {"forward_id": "exp-b49e", "reverse_id": "exp-a0fc", "forward_features": [0.5, 0.25], "reverse_features": [0.125, 0.75],
       "TRI": 1.065167, "params": {"phase_type": "spt_cluster", "system_size": 8, "depth": 2, "seed": 42,
                                   "bias": 0.9, "reverse_bias": 0.1}}
DISCOVERY = {"cluster_label_stats": [{"pseudorandom": 5}, {"spt_cluster": 4, "trivial_product": 1}, {}],
             "num_samples": 10, "num_clusters": 3, "phases": ["spt_cluster", "trivial_product", "pseudorandom"]}
DRIFT = {"phase_type": "pseudorandom", "base_depth": 2,
         "runs": [{"depth": 2, "id": "a", "features": [0.3], "drift": 0.0},
                  {"depth": 4, "id": "b", "features": [0.4], "drift": 0.558863},
                  {"depth": 6, "id": "c", "features": [0.5], "drift": 1.271134}]}
PHASE_ANSWER = ("Measured: magnetization 0.047, string order 0.933, correlation length 0.000, entanglement entropy proxy 1.024, "
                "randomness score 0.846 and 447 distinct measured bitstrings. The measurements indicate the spt_cluster phase, "
                "as requested. String order 0.933 with magnetization 0.047 shows hidden topological order.")
DISCOVERY_ANSWER = ("cluster 1 holds 5 samples, 5 of them spt_cluster (purity 1.000); cluster 2 holds 5 samples, 5 of them "
                    "spt_cluster (purity 1.000); cluster 3 holds 5 samples, 5 of them spt_cluster (purity 1.000); cluster 4 "
                    "holds 5 samples, 5 of them spt_cluster (purity 1.000). Overall purity is 1.000.")


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


def no_raw_json(text: str) -> bool:
    """No JSON punctuation and no number at the lab's own 6-decimal precision."""
    return not any(c in text for c in '{}"') and not re.search(r"\d\.\d{4}", text)


def test_phase_table_shows_the_request_and_measurements_at_three_decimals_aligned():
    table = lab_result_table("run_phase_experiment", PHASE)
    lines = table.splitlines()
    assert lines[0] == "run_phase_experiment: phase_type=spt_cluster system_size=12 depth=4 seed=777 bias=none"
    rows = dict(line.split() for line in lines[1:])
    assert rows == {"magnetization": "0.047", "string_order": "0.933", "correlation_length": "0.000", "entropy_proxy": "1.024",
                    "randomness_score": "0.846", "branch_count": "447", "interfered_count": "12"}
    assert len({len(line) for line in lines[1:]}) == 1, "values right-aligned in one column"
    assert no_raw_json(table) and "0.046731" not in table and "0.005859" not in table and "exp-" not in table


def test_tri_discovery_and_drift_tables_hold_their_key_numbers():
    tri = lab_result_table("tri", TRI)
    assert tri.splitlines()[0] == "tri: phase_type=spt_cluster system_size=8 depth=2 seed=42"
    assert [line.split() for line in tri.splitlines()[1:]] == [["bias", "0.900"], ["reverse_bias", "0.100"], ["TRI", "1.065"]]
    # a lab that does not echo reverse_bias: the reverse run is at 1 - bias
    no_echo = {**TRI, "params": {k: v for k, v in TRI["params"].items() if k != "reverse_bias"}}
    assert lab_result_table("tri", no_echo).splitlines()[2].split() == ["reverse_bias", "0.100"]

    disc = lab_result_table("discovery", DISCOVERY).splitlines()
    assert disc[0] == "discovery: 10 samples of 3 phases in 3 clusters, overall purity 0.900"
    assert disc[1].split() == ["cluster", "size", "purity", "phases"]
    assert disc[2].split() == ["1", "5", "1.000", "pseudorandom", "5"]
    assert disc[3].split() == ["2", "5", "0.800", "spt_cluster", "4,", "trivial_product", "1"]
    assert disc[4].split() == ["3", "0", "none", "empty"]

    drift = lab_result_table("replay_drift", DRIFT).splitlines()
    assert drift[0] == "replay_drift: phase_type=pseudorandom base_depth=2"
    assert [line.split() for line in drift[1:]] == [["depth", "drift"], ["2", "0.000"], ["4", "0.559"], ["6", "1.271"]]
    for endpoint, result in (("tri", TRI), ("discovery", DISCOVERY), ("replay_drift", DRIFT)):
        assert no_raw_json(lab_result_table(endpoint, result)), endpoint


def test_an_error_result_is_one_line_and_the_model_prompt_is_a_question_without_json():
    line = lab_result_table("tri", {"error": "POST /tri: HTTP 422\n  bias: Input should be less than or equal to 1"})
    assert line == "tri: error: POST /tri: HTTP 422 bias: Input should be less than or equal to 1"
    prompt = lab_result_prompt("run_phase_experiment", PHASE)
    assert lab_result_table("run_phase_experiment", PHASE) in prompt
    assert prompt.endswith("What do the measurements say about the phase?") and no_raw_json(prompt)


def test_an_invented_number_is_flagged_and_grounded_ones_are_not():
    table = lab_result_table("run_phase_experiment", PHASE)
    sources = [PHASE, table, "/run phase_type=spt_cluster system_size=12 depth=4 seed=777"]
    assert ungrounded_numbers(PHASE_ANSWER, sources) == []
    invented = "The experiment ran for 48 iterations on 12 sites; string order 0.933, then 48 more and 0.93."
    assert ungrounded_numbers(invented, sources) == ["48", "0.93"]  # once each; 0.93 is not how the lab's 0.933 prints
    assert ungrounded_numbers("purity 0.800 over 10 samples", [DISCOVERY, lab_result_table("discovery", DISCOVERY)]) == []


def test_the_number_check_applies_only_while_a_lab_result_is_recent():
    g = LabGrounding()
    g.user_turn("what is string order?")
    assert g.unsupported("It is 0.5 or so.") == [], "no lab result in the conversation: nothing to check against"
    g.user_turn("/run phase_type=spt_cluster")
    g.lab_result({"error": "HTTP 422"}, "run_phase_experiment: error: HTTP 422")
    assert g.unsupported("It is 0.5.") == [], "an error is not a lab result"
    g.lab_result(PHASE, lab_result_table("run_phase_experiment", PHASE))
    assert g.unsupported("0.933 and 0.5") == ["0.5"]
    for i in range(RECENT_TURNS - 1):
        g.user_turn(f"and question {i}?")
        assert g.unsupported("0.933 and 0.5") == ["0.5"]
    g.user_turn("something else entirely")
    assert g.unsupported("0.933 and 0.5") == []


def test_a_looping_answer_is_detected_and_cut_after_its_first_copy():
    once = "The experiment ran for 48 iterations, and the string order is 0.933. "
    text = "Measured: string order 0.933. " + once + once.upper().replace(",", ";") + once + once[:30]
    loop, cut = repetition_loop(text)
    assert loop and text[:cut] == "Measured: string order 0.933. " + once
    assert repetition_loop("the the the the the the the the the")[0]
    assert repetition_loop("A B C D E F. " * 3) == (True, len("A B C D E F. "))


def test_normal_answers_are_not_loops_even_when_their_items_share_wording():
    for answer in (PHASE_ANSWER, DISCOVERY_ANSWER, "Yes.", "", "Drift 0.000, 0.000, 0.559."):
        assert repetition_loop(answer) == (False, len(answer)), answer
    two = "The experiment ran for 48 iterations today. " * 2  # said twice is not yet a loop
    assert not repetition_loop(two)[0]


class FixedReply:
    """The model side of the chat: always the same reply; remembers what it was given."""

    def __init__(self, *replies: str):
        self.replies, self.seen = list(replies), []

    def reply(self, messages, max_tokens, stop_when=None):
        self.seen.append({"messages": [dict(m) for m in messages], "max_tokens": max_tokens, "stop_when": stop_when})
        return self.replies.pop(0)


def test_chat_turn_on_the_reference_lab_shows_the_table_flags_invented_numbers_and_cuts_a_loop():
    loop = "String order is high. " + "The chain ran 48 iterations on 12 sites. " * 5
    model = FixedReply("The experiment ran for 48 iterations on 12 sites.", loop)
    said: list[str] = []
    grounding = LabGrounding()
    history = [{"role": "system", "content": "lab assistant"}]
    with reference_lab() as url:
        client = LabClient(url)

        def run_lab(endpoint, params):
            return getattr(client, endpoint)(**params).model_dump(mode="json")

        chat_turn(model, run_lab, history, "/run phase_type=spt_cluster system_size=12 depth=4 seed=777", said.append,
                  grounding=grounding)
        chat_turn(model, run_lab, history, "Why?", said.append, grounding=grounding)
        expected = lab_result_table("run_phase_experiment", run_lab("run_phase_experiment", {
            "phase_type": "spt_cluster", "system_size": 12, "depth": 4, "seed": 777}))
    assert said[:3] == [f"[lab] {expected}", "The experiment ran for 48 iterations on 12 sites.",
                        "[check] numbers not in the lab result: 48"]
    assert "string_order" in said[0] and all(no_raw_json(s) for s in said)
    assert said[3:] == ["String order is high. The chain ran 48 iterations on 12 sites.", STOPPED,
                        "[check] numbers not in the lab result: 48"]
    first = model.seen[0]
    assert first["messages"][-1]["content"] == ("I ran this lab experiment:\n" + expected
                                                + "\nWhat do the measurements say about the phase?")
    assert first["max_tokens"] < 200 and first["stop_when"](loop) and not first["stop_when"](said[1])
    assert history[-1]["content"] == said[3], "the loop is not fed back to the model"


def test_model_tool_call_runs_the_experiment_and_gets_the_table_back():
    server = FakeOllama()
    server.models["ben-lab"] = {}
    server.chat_replies = ['CALL run_phase_experiment {"phase_type": "spt_cluster", "system_size": 8, "depth": 2, "seed": 3}',
                           "String order near one with no magnetization: the SPT cluster phase."]
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
    string_order = dict(line.split() for line in lab_line.splitlines()[1:])["string_order"]
    assert float(string_order) > 0.9 and len(string_order.split(".")[1]) == 3
    assert said[-1] == "String order near one with no magnetization: the SPT cluster phase."
    second_request = server.calls("POST", "/api/chat")[1]["json"]
    assert second_request["messages"][-1]["content"] == (
        "I ran this lab experiment:\n" + lab_line.removeprefix("[lab] ") + "\nWhat do the measurements say about the phase?")
