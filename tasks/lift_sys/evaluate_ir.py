"""Stage ``evaluate_ir``: how well each model writes lift-sys IR, side by side.

Each model (a GGUF in llama.cpp, or any teacher spec such as ``anthropic`` or ``openai:URL``) answers
every prompt greedily, with the same messages training used (tasks/lift_sys/compose_ir_dataset.py
``request_messages``), and without a decoding grammar: schema validity is what the model learned. With
``schema_decoding`` the IR's JSON Schema constrains decoding instead (a llama.cpp grammar with bounded strings,
Claude's forced tool, OpenAI ``response_format``), as a deployment using Ollama's ``format`` would: then the
other metrics say what the structure holds. Per model:

    schema_valid           share of answers holding a schema-valid IR
    literal_accuracy       of prompts that ask to return exact strings: all appear as ``return LITERAL 'x'``
    quirk_handling         of prompts involving both bool and int: the IR checks bool before int
    return_coverage        share whose effects cover every return value the prompt names
    assertion_completeness share with at least as many assertions as the reference IR (at least one without one)
    precheck_accept        share the review pre-checks would accept outright
    name_match             share whose signature name is the expected function name (when one is known)
    tests_pass_rate        where prompts carry tests: the IR is turned into code by ``codegen`` (the same model by
                           default) and the tests run in the sandbox; share of tests passed

Prompts come from the compose stage's ``rows_test.jsonl`` (label good; completion = reference IR) or any JSONL
of ``{"prompt", "function_name"?, "tests"?: [[args, expected], ...]}``.

    python -m tasks.lift_sys.evaluate_ir --model trained=data/lift_sys/export/model-f16.gguf --model base=base-f16.gguf \\
        --prompts data/lift_sys/compose/rows_test.jsonl --out data/lift_sys/evaluate
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.lift_sys.lift_ir import IR_SCHEMA
from adapters.sandbox.jobs import Sandbox, SandboxJob
from adapters.teachers import TeacherError, TeacherUnavailable
from tasks.common.code_blocks import code_closed, extract_code
from tasks.lift_sys.compose_ir_dataset import SYSTEM_PROMPT, request_messages
from tasks.lift_sys.generate_ir import parse_ir_output
from tasks.lift_sys.ir_checks import BOOL_WORD, INT_WORD, precheck, requested_returns
from tasks.common.records import RecordError, read_jsonl, write_jsonl
from tasks.common.reporting import StageProgress, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "evaluate_ir"
METRICS = ("schema_valid", "literal_accuracy", "quirk_handling", "return_coverage", "assertion_completeness",
           "precheck_accept", "name_match", "tests_pass_rate")
CODEGEN_SYSTEM = ("You implement Python functions from a lift-sys IR. Follow its signature, effects and assertions "
                  "exactly (LITERAL strings verbatim). Answer with one ```python block holding the function.")


class EvaluateIRConfig(BaseModel):
    """Decoding, prompts and code generation of the IR evaluation."""

    model_config = ConfigDict(extra="forbid")
    max_prompts: int | None = Field(None, ge=1, description="Evaluate only the first N prompts")
    max_tokens: int = Field(768, ge=16, description="Tokens per IR answer at most (canonical IRs run ~250-450)")
    system_prompt: str = Field(SYSTEM_PROMPT, description="System message; keep it the one training used (compose.system_prompt)")
    n_ctx: int = Field(4096, ge=256, description="llama.cpp context length for GGUF models")
    n_threads: int = Field(2, ge=1, description="llama.cpp threads")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all); needs llama-cpp-python built "
                                                    "with CUDA (CMAKE_ARGS=-DGGML_CUDA=on)")
    schema_decoding: bool = Field(False, description="Decode with the IR's JSON Schema as a grammar / structured "
                                  "output (as Ollama's `format` would); off = free decoding, what the model learned")
    codegen: str = Field("same", description="Who turns IR into code for prompts with tests: 'same' (the model "
                                             "itself), 'none', or a teacher spec (anthropic, openai:URL, local:PATH)")
    codegen_max_tokens: int = Field(512, ge=16, description="Tokens per generated function at most")
    test_timeout_s: float = Field(10.0, gt=0, description="Time limit of one prompt's tests in the sandbox")


class EvalRow(BaseModel):
    """One evaluation prompt."""

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)
    completion: str | None = Field(None, description="Reference IR JSON (compose rows)")
    label: str = "good"
    category: str | None = None
    function_name: str | None = None
    tests: list[tuple[list[Any], Any]] | None = None


def read_eval_rows(path: Path, limit: int | None = None) -> list[EvalRow]:
    """Prompt rows (bad-label compose rows skipped); a bad row raises RecordError naming file, record and field."""
    rows = []
    for n, raw in enumerate(read_jsonl(Path(path)), 1):
        try:
            row = EvalRow.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise RecordError(f"{path}: record {n}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
        if row.label == "good":
            rows.append(row)
    if not rows:
        raise ValueError(f"evaluate_ir: no prompts in {path}")
    return rows[:limit] if limit else rows


def reference_of(row: EvalRow) -> dict | None:
    if not row.completion:
        return None
    ir, _ = parse_ir_output(row.completion)
    return ir


def judge(row: EvalRow, answer: str) -> dict:
    """The metrics of one answer (None where a metric does not apply to this prompt)."""
    ir, error = parse_ir_output(answer)
    ref = reference_of(row)
    wants_literals = bool(requested_returns(row.prompt).literals)
    quirk = bool(BOOL_WORD.search(row.prompt) and INT_WORD.search(row.prompt))
    expected_name = row.function_name or (ref["signature"]["name"] if ref else None)
    out = {"schema_valid": ir is not None, "error": error, "ir": ir,
           "literal_accuracy": False if wants_literals else None, "quirk_handling": False if quirk else None,
           "return_coverage": False, "assertion_completeness": False, "precheck_accept": False,
           "name_match": False if expected_name else None, "problems": []}
    if ir is None:
        return out
    check = precheck(row.prompt, ir)
    kinds = {p.check for p in check.problems}
    need = max(1, len(ref.get("assertions", []))) if ref else 1
    out.update(literal_accuracy="literal" not in kinds if wants_literals else None,
               quirk_handling="bool_before_int" not in kinds if quirk else None,
               return_coverage="return_coverage" not in kinds,
               assertion_completeness=len(ir.get("assertions", [])) >= need,
               precheck_accept=check.decision == "accept",
               name_match=ir["signature"]["name"] == expected_name if expected_name else None,
               problems=[p.model_dump() for p in check.problems])
    return out


def tests_program(code: str, function: str, tests: list) -> str:
    """The generated function, then each test case's verdict in ``__results__`` (an exception fails the case)."""
    return (f"{code}\n\n__tests__ = {json.dumps(tests)}\n__results__ = []\nfor __args, __expected in __tests__:\n"
            f"    try:\n        __results__.append({function}(*__args) == __expected)\n"
            "    except Exception:\n        __results__.append(False)\n")


def summarize(judged: list[dict]) -> dict:
    """Share of applicable prompts per metric (None when no prompt applies)."""
    out = {"prompts": len(judged)}
    for m in METRICS:
        vals = [j[m] for j in judged if j.get(m) is not None]
        out[m] = round(sum(vals) / len(vals), 4) if vals else None
    return out


def _open_model(spec: str, cfg: EvaluateIRConfig):
    from adapters.teachers import LocalModelTeacher, make_teacher

    if spec.endswith(".gguf"):
        return LocalModelTeacher(spec, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, n_gpu_layers=cfg.n_gpu_layers)
    return make_teacher(spec)


def answer_and_judge(cfg: EvaluateIRConfig, name: str, spec: str, rows: list[EvalRow], bar: StageProgress) -> list[dict]:
    """One model's answers to every prompt, judged; code for prompts with tests written by ``cfg.codegen``."""
    model = _open_model(spec, cfg)
    try:
        judged = []
        for row in rows:
            try:
                text = model.generate(request_messages(row.prompt, cfg.system_prompt), max_tokens=cfg.max_tokens,
                                      temperature=0.0, json_schema=IR_SCHEMA if cfg.schema_decoding else None).text
            except TeacherUnavailable:
                raise
            except TeacherError as e:  # this prompt was refused (too long for the model, a 4xx): it scores as a miss
                say(f"evaluate_ir: {name} refused prompt {len(judged) + 1} ({len(row.prompt)} chars): {e}")
                judged.append({"model": name, "prompt": row.prompt, "category": row.category, "answer": "",
                               **judge(row, ""), "refused": str(e)})
                bar.advance()
                continue
            judged.append({"model": name, "prompt": row.prompt, "category": row.category, "answer": text,
                           **judge(row, text)})
            bar.advance()
        if cfg.codegen == "same":
            _write_code(model, cfg, rows, judged)
    finally:
        model.close()
    if cfg.codegen not in ("same", "none"):
        coder = _open_model(cfg.codegen, cfg)
        try:
            _write_code(coder, cfg, rows, judged)
        finally:
            coder.close()
    return judged


def _write_code(model, cfg: EvaluateIRConfig, rows: list[EvalRow], judged: list[dict]) -> None:
    for row, j in zip(rows, judged):
        if row.tests and j["ir"] is not None:
            messages = [{"role": "system", "content": CODEGEN_SYSTEM}, {"role": "user", "content": json.dumps(j["ir"])}]
            try:
                j["code"] = extract_code(model.generate(messages, max_tokens=cfg.codegen_max_tokens, temperature=0.0).text)
            except TeacherUnavailable:
                raise
            except TeacherError as e:  # no code: its tests count as failed
                j["codegen_refused"] = str(e)


def run_tests(cfg: EvaluateIRConfig, rows: list[EvalRow], judged: dict[str, list[dict]]) -> None:
    """Fill ``tests_pass_rate`` per answer by running the generated code's tests in the sandbox."""
    todo = [(row, j) for js in judged.values() for row, j in zip(rows, js) if row.tests]
    if not todo:
        return
    runnable = [(row, j) for row, j in todo if j.get("code")]
    for row, j in todo:
        j["tests_pass_rate"] = 0.0
    if not runnable:
        return
    with Sandbox(workers=1, timeout_s=cfg.test_timeout_s, preload=("numpy",)) as sandbox:
        jobs = [SandboxJob("adapters.sandbox.jobs:module_globals", {"names": ["__results__"]},
                           tests_program(j["code"], row.function_name or j["ir"]["signature"]["name"], row.tests))
                for row, j in runnable]
        for (row, j), result in zip(runnable, sandbox.map(jobs)):
            got = result.value.get("__results__") if result.ok else None
            j["tests_pass_rate"] = sum(map(bool, got)) / len(row.tests) if isinstance(got, list) else 0.0
            j["tests_outcome"] = result.outcome


def key_parts(cfg: EvaluateIRConfig, inputs: dict[str, Path | str]) -> tuple[dict, dict[str, Path], dict[str, str]]:
    """(keyed config incl. model specs, input files to hash, models) of a run."""
    inputs = dict(inputs)
    if "prompts" not in inputs or len(inputs) < 2:
        raise ValueError(f"evaluate_ir: inputs need 'prompts' and at least one model, got {sorted(inputs)}")
    prompts = Path(inputs.pop("prompts"))
    models = {name: str(spec) for name, spec in inputs.items()}
    files = {"prompts": prompts, **{n: Path(s) for n, s in models.items() if s.endswith(".gguf")}}
    return {"cfg": cfg.model_dump(mode="json"), "models": models}, files, models


def key_of(cfg: EvaluateIRConfig, inputs: dict[str, Path | str], out_dir: Path) -> tuple[dict, dict[str, Path]]:
    """The stage key hashes the config with every model's spec (teacher specs are config, not files) and the files:
    the prompts and each GGUF."""
    keyed, files, _ = key_parts(cfg, inputs)
    return keyed, files


def evaluate(cfg: EvaluateIRConfig, inputs: dict[str, Path | str], out_dir: Path) -> Path:
    """``inputs`` = {"prompts": JSONL, model name: GGUF path or teacher spec, ...}; writes answers + a comparison."""
    keyed, files, models = key_parts(cfg, inputs)
    prompts = files["prompts"]
    out_dir = Path(out_dir)
    key = stage_key(evaluate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows = read_eval_rows(prompts, cfg.max_prompts)
    judged = {}
    with StageProgress(f"evaluate_ir: {len(models)} models × {len(rows)} prompts", len(models) * len(rows)) as bar:
        for name, spec in models.items():
            judged[name] = answer_and_judge(cfg, name, spec, rows, bar)
    run_tests(cfg, rows, judged)
    results = {name: summarize(js) for name, js in judged.items()}
    with stage_output(STAGE, out_dir, key, keyed, files) as out:
        write_jsonl(out.tmp / "answers.jsonl", (j for js in judged.values() for j in js))
        out.counts = {"prompts": len(rows), "models": len(models), "with_tests": sum(bool(r.tests) for r in rows),
                      "refused": sum("refused" in j for js in judged.values() for j in js)}
        out.metrics = {f"{name}.{k}": v for name, r in results.items() for k, v in r.items() if v is not None}
        out.extra.update(results=results, models=models)
    publish_table(STAGE, [{"model": name, **r} for name, r in results.items()],
                  f"lift-sys IR quality on {len(rows)} prompts ({prompts.name})")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def evaluate_ir(cfg: EvaluateIRConfig, inputs: dict[str, Path | str], out_dir: Path) -> Path:
    """Prefect task: score each model's IR on the test prompts."""
    return evaluate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.evaluate_ir", __doc__, EvaluateIRConfig)
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH_OR_SPEC",
                        help="a GGUF file or a teacher spec (anthropic, openai:URL#model); repeatable")
    parser.add_argument("--prompts", type=Path, required=True, help="JSONL of {prompt, function_name?, tests?} or compose rows")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    cfg = config_from_args(EvaluateIRConfig, args, parser)
    models = {}
    for spec in args.model:
        name, sep, value = spec.partition("=")
        if not sep or re.search(r"[:/]", name):  # no NAME= given (or the '=' belongs to the spec)
            name, value = Path(spec).stem if spec.endswith(".gguf") else spec.split(":")[0], spec
        if name == "prompts":
            parser.error("--model NAME must not be 'prompts'")
        models[name] = value
    out = evaluate(cfg, {"prompts": args.prompts, **models}, args.out)
    results = json.loads((out / "manifest.json").read_text())["results"]
    for name, r in results.items():
        print(name, " ".join(f"{k}={v}" for k, v in r.items() if v is not None))
    sys.exit(0)


if __name__ == "__main__":
    run_stage_cli(main)
