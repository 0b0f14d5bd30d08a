"""QuantumLLMInstruct from local parquet/JSONL, both column spellings, and an honest absence."""

from __future__ import annotations

import json

import pytest

from tasks.quantum_mind.load_instruct import InstructConfig, load_instruct
from tasks.common.records import RecordError, read_chat_records

ROWS = [{"problem_text": "Prepare a Bell state on two qubits and explain each gate.",
         "solution": "Apply H to qubit 0, then CNOT(0, 1).\n```python\nqc.h(0); qc.cx(0, 1)\n```",
         "main_domain": "Quantum Computing", "sub_domain": "Entanglement", "tags": "bell"},
        {"problem_text": "Too short", "solution": "x"},
        {"problem_text": "Write a QAOA cost layer for a 4-node ring MaxCut instance.",
         "solution": "Use RZZ(2*gamma) on every edge of the ring, then RX(2*beta) on every qubit."}]


def test_parquet_with_problem_text(tmp_path):
    import pandas as pd

    path = tmp_path / "qli.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    out = load_instruct(InstructConfig(path=path), None, tmp_path / "instruct")
    recs = read_chat_records(out / "instruct.jsonl")
    assert [r.messages[1].content for r in recs] == [ROWS[0]["problem_text"], ROWS[2]["problem_text"]]
    assert recs[0].meta["sub_domain"] == "Entanglement"
    m = json.loads((out / "manifest.json").read_text())
    assert m["available"] is True and m["counts"] == {"rows": 3, "records": 2, "rejected": 1}


def test_jsonl_with_problem_column(tmp_path):
    path = tmp_path / "qli.jsonl"
    path.write_text("".join(json.dumps({"problem": r["problem_text"], "solution": r["solution"]}) + "\n" for r in ROWS))
    out = load_instruct(InstructConfig(path=path, max_records=1), None, tmp_path / "instruct")
    assert len(read_chat_records(out / "instruct.jsonl")) == 1


def test_absent_dataset_is_recorded_not_hidden(tmp_path, capsys):
    out = load_instruct(InstructConfig(), None, tmp_path / "instruct")
    m = json.loads((out / "manifest.json").read_text())
    assert m["available"] is False and "instruct.path" in m["reason"]
    assert (out / "instruct.jsonl").read_text() == ""
    assert "not available" in capsys.readouterr().out


def test_wrong_file_names_its_columns(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(RecordError, match=r"row 1: no 'problem_text'/'problem'.*columns: \['answer', 'question'\]"):
        load_instruct(InstructConfig(path=path), None, tmp_path / "instruct")


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="instruct.path"):
        load_instruct(InstructConfig(path=tmp_path / "nope.parquet"), None, tmp_path / "instruct")
