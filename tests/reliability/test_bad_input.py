"""Bad input through the real stages: each stops with an error naming the file and the line, record or field.

Bad bytes and broken JSON are tried on every stage that reads a JSONL a person or another tool may
have written; where a stage owns its own reader (review's decisions file, load_instruct's
``datasets`` loader, evaluate's HumanEval file) that reader is the one under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tasks.common.records import RecordError

NOT_UTF8 = b'{"prompt": "caf\xe9 au lait"}\n'  # Latin-1 é: what a spreadsheet export or an old editor writes
BROKEN_JSON = b'{"prompt": "half a line", "ir": {"intent": \n'


def _mix(bad: Path, out: Path) -> None:
    from tasks.training.mix_datasets import MixConfig, mix

    mix(MixConfig(), [bad], out)


def _calibrate(bad: Path, out: Path) -> None:
    from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate

    calibrate(CalibrateConfig(), bad, out)


def _describe(bad: Path, out: Path) -> None:
    from tasks.ben_lab.describe_experiments import DescribeConfig, describe

    calibration = out.parent.parent / "calibrate"
    calibration.mkdir(exist_ok=True)  # empty: the experiments are read (and refused) before the calibration
    describe(DescribeConfig(), [bad, calibration], out)


def _verify(bad: Path, out: Path) -> None:
    from tasks.quantum_mind.verify_circuits import VerifyConfig, verify

    verify(VerifyConfig(), bad, out)


def _generate_ir(bad: Path, out: Path) -> None:
    from tasks.lift_sys.generate_ir import GenerateIRConfig, generate

    generate(GenerateIRConfig(), bad, out)


def _review_decisions(bad: Path, out: Path) -> None:
    from tasks.lift_sys.review_ir import ReviewConfig, review

    irs = out.parent / "ir.jsonl"
    irs.write_text(json.dumps({"id": "p0", "prompt": "Write f.", "category": "control_flow", "ir": None}) + "\n")
    review(ReviewConfig(mode="file", decisions_file=bad, decisions_store=out.parent / "store.jsonl"), irs, out)


def _negatives(bad: Path, out: Path) -> None:
    from tasks.lift_sys.make_negatives import NegativesConfig, write_negatives

    write_negatives(NegativesConfig(), bad, out)


def _compose(bad: Path, out: Path) -> None:
    from tasks.lift_sys.compose_ir_dataset import ComposeConfig, compose

    compose(ComposeConfig(), [bad], out)


def _evaluate_ir(bad: Path, out: Path) -> None:
    from tasks.lift_sys.evaluate_ir import EvaluateIRConfig, evaluate

    evaluate(EvaluateIRConfig(), {"prompts": bad, "teacher": "openai:http://127.0.0.1:9/v1"}, out)


def _sft_records(bad: Path, out: Path) -> None:
    from tasks.training.train_sft import to_prompt_completion  # what train() reads train/val.jsonl with, before any model

    to_prompt_completion(bad)


def _physics_features(bad: Path, out: Path) -> None:
    from tasks.quantum_mind.generate_physics_examples import GenerateConfig, generate

    generate(GenerateConfig(), bad, out)


def _load_instruct(bad: Path, out: Path) -> None:
    from tasks.quantum_mind.load_instruct import InstructConfig, load_instruct

    load_instruct(InstructConfig(path=bad), None, out)


def _humaneval(bad: Path, out: Path) -> None:
    from tasks.quantum_mind.evaluate_quantum import read_humaneval  # the evaluate stage's reader of evaluate.humaneval_path

    read_humaneval(bad)


READERS = [_mix, _calibrate, _describe, _verify, _generate_ir, _review_decisions, _negatives, _compose, _evaluate_ir, _sft_records,
           _physics_features, _load_instruct, _humaneval]


@pytest.mark.parametrize("content, what", [(NOT_UTF8, "not UTF-8"), (BROKEN_JSON, "malformed JSON")],
                         ids=["non_utf8", "malformed_json"])
@pytest.mark.parametrize("reader", READERS, ids=lambda f: f.__name__.lstrip("_"))
def test_bad_line_is_named_by_file_and_line_and_nothing_is_written(tmp_path, reader, content, what):
    bad = tmp_path / "input.jsonl"
    bad.write_bytes(b"\n" + content)  # line 1 blank, the bad line is line 2
    out = tmp_path / "stage" / "out"
    out.parent.mkdir()
    with pytest.raises(RecordError, match=re.escape(f"{bad}:2: {what}")):
        reader(bad, out)
    assert [p.name for p in out.parent.iterdir() if p.name != "ir.jsonl"] == []


# ---- configs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flow, setting, key", [
    ("ben_lab", "harvest.concurrency=lots", "harvest.concurrency"),
    ("quantum_mind", "verify.workers=[2]", "verify.workers"),
    ("lift_sys", "generate_ir.n=three", "generate_ir.n"),
])
def test_wrong_type_in_a_flow_config_exits_2_naming_the_key_before_any_work(flow, setting, key, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"flows.{flow}").main
    assert main(["--data-dir", str(tmp_path / "d"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and f"--set {key}=" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_wrong_type_in_a_yaml_file_names_the_file_and_the_key(tmp_path, capsys):
    from flows.ben_lab import main

    cfg = tmp_path / "ben_lab.yaml"
    cfg.write_text("mix:\n  val_fraction: ten percent\n")
    assert main(["--config", str(cfg), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "'mix.val_fraction'" in err and "ten percent" in err


# ---- HDF5 ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_well_dataset(tmp_path_factory) -> Path:
    from adapters.well import well_solvers

    return well_solvers.generate_default(tmp_path_factory.mktemp("well"), seed=0, names=["steady_plate_2d"])


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5"])
def test_a_corrupt_hdf5_file_stops_encode_naming_the_file(one_well_dataset, tmp_path, damage):
    import shutil

    from adapters.well.the_well import WellFormatError
    from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode

    src = tmp_path / "src"
    shutil.copytree(one_well_dataset, src)
    bad = sorted(src.rglob("*.hdf5"))[-1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"PK\x03\x04 a zip file, not HDF5" * 100)
    with pytest.raises(WellFormatError, match=re.escape(str(bad))):
        encode(EncodeConfig(source=str(src)), None, tmp_path / "q" / "encode")
    assert not (tmp_path / "q").exists() or list((tmp_path / "q").iterdir()) == []


# ---- IR with keys the schema does not allow --------------------------------------------------------------

def _accepted_with_extra_key(path: Path) -> Path:
    from tests.lift_sys.test_compose_ir_dataset import _accepted

    _accepted(path, range(5))
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["ir"]["intent"]["confidence"] = 0.9  # a teacher's helpful extra: additionalProperties is false
    lines[2] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ir_with_an_extra_key_is_named_by_compose_and_negatives(tmp_path):
    from tasks.lift_sys.compose_ir_dataset import ComposeConfig, compose
    from tasks.lift_sys.make_negatives import NegativesConfig, write_negatives

    acc = _accepted_with_extra_key(tmp_path / "accepted.jsonl")
    with pytest.raises(RecordError, match=r"accepted\.jsonl: record 3.*ir\.intent\.confidence.*Extra inputs"):
        compose(ComposeConfig(), [acc], tmp_path / "compose")
    with pytest.raises(RecordError, match=r"accepted\.jsonl: record 3 \(id p2\): field 'ir\.intent\.confidence'"):
        write_negatives(NegativesConfig(), acc, tmp_path / "negatives")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accepted.jsonl", "data"]  # data: conftest's empty data dir


def test_ir_with_an_extra_key_is_rejected_by_review_with_the_field_as_reason(tmp_path):
    from tasks.common.records import read_jsonl
    from tasks.lift_sys.review_ir import ReviewConfig, review

    acc = _accepted_with_extra_key(tmp_path / "ir.jsonl")
    out = review(ReviewConfig(decisions_store=tmp_path / "store.jsonl"), acc, tmp_path / "review")
    rejected = read_jsonl(out / "rejected.jsonl")
    assert [r["id"] for r in rejected] == ["p2"]
    assert rejected[0]["reasons"] == ["schema: intent.confidence: Extra inputs are not permitted"]
    assert "p2" not in {r["id"] for r in read_jsonl(out / "accepted.jsonl")}
    assert json.loads((out / "manifest.json").read_text())["counts"]["rejected"] == 1


# ---- an enormous prompt ----------------------------------------------------------------------------------

HUGE = "Write a function is_big that returns 'yes' when n > 10. " + "Here is more background on the request. " * 2500
SHORT = "Write a function is_positive that returns 'yes' when n > 0 and 'no' otherwise."


def _prompts(path: Path) -> Path:
    assert len(HUGE) > 100_000
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (SHORT, HUGE)))
    return path


def test_enormous_prompt_is_refused_by_the_local_model_and_the_evaluation_completes(tmp_path):
    from adapters.models.base_models import embedded_gguf
    from tasks.lift_sys.evaluate_ir import EvaluateIRConfig, evaluate
    from tasks.common.records import read_jsonl

    cfg = EvaluateIRConfig(max_tokens=16, n_threads=1, codegen="none")
    out = evaluate(cfg, {"prompts": _prompts(tmp_path / "prompts.jsonl"), "embedded": str(embedded_gguf())},
                   tmp_path / "evaluate")
    short, huge = read_jsonl(out / "answers.jsonl")
    assert "refused" not in short and short["answer"]
    assert huge["answer"] == "" and huge["schema_valid"] is False
    assert re.search(r"the prompt is \d{5,} tokens but only 4080 fit \(n_ctx 4096 minus max_tokens 16\)", huge["refused"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["refused"] == 1 and manifest["results"]["embedded"]["prompts"] == 2


def test_enormous_prompt_refused_by_a_teacher_server_is_recorded_not_fatal(tmp_path):
    from tasks.lift_sys.evaluate_ir import EvaluateIRConfig, evaluate
    from tasks.common.records import read_jsonl
    from tests.lift_sys.test_generate_ir import RICH, ChatServer

    server = ChatServer()
    try:
        server.script(RICH)
        server.script("This model's maximum context length is 8192 tokens, your prompt has 25113", status=400)
        out = evaluate(EvaluateIRConfig(codegen="none"), {"prompts": _prompts(tmp_path / "prompts.jsonl"),
                                                          "vllm": f"openai:{server.url}"}, tmp_path / "evaluate")
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    short, huge = read_jsonl(out / "answers.jsonl")
    assert short["schema_valid"] is True and "refused" not in short
    assert "maximum context length is 8192" in huge["refused"] and huge["schema_valid"] is False
    assert len(server.requests) == 2 and server.requests[1]["messages"][-1]["content"].count("background") == 2500
