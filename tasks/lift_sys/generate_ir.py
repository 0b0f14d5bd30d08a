"""lift-sys IRs for every prompt from a teacher, Best-of-N, scored the way lift-sys scores them.

For each prompt the teacher writes N candidate IRs; schema-invalid ones are discarded (reasons in
``rejects.jsonl``) and the best-scoring valid one is kept in ``ir.jsonl``. A prompt whose N
candidates are all invalid is rejected, and the stage fails when rejects pass ``max_reject_rate``.
The default teacher is the template oracle (offline, exact for templated prompts).

    python -m tasks.lift_sys.generate_ir --prompts data/lift_sys/prompts --out data/lift_sys/ir
    python -m tasks.lift_sys.generate_ir --prompts prompts.jsonl --out ir --set teacher=anthropic:claude-haiku-4-5 --set n=3
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.lift_sys.lift_ir import IR, IR_SCHEMA, ir_json, validate_ir
from tasks.lift_sys.lift_oracle import TemplateOracle
from tasks.lift_sys.lift_templates import DEFAULT_TEMPLATES, load_templates
from adapters.teachers import (TASK_IR, Teacher, TeacherError, TeacherUnavailable, make_teacher, missing_credentials,
                               parse_teacher_spec, wrap_request)
from tasks.lift_sys.generate_prompts import PromptRow
from tasks.common.records import read_models, write_jsonl
from tasks.common.reporting import StageProgress, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "generate_ir"


class GenerateIRConfig(BaseModel):
    """Which teacher writes the IRs, how many candidates it writes, and how many failures are tolerated."""

    model_config = ConfigDict(extra="forbid")
    teacher: str = Field("oracle", description="oracle | anthropic[:model] | openai:<base_url>[#model] | local:<path.gguf>|local:embedded")
    n: int = Field(3, ge=1, le=16, description="Candidates per prompt (Best-of-N); lift-sys uses 3")
    temperature: float = Field(0.5, ge=0, le=2, description="Sampling temperature of the candidates (lift-sys uses 0.5; "
                                                            "Claude takes none under API 2026-10-21)")
    max_tokens: int = Field(2048, ge=64, description="Longest reply asked of the teacher, in tokens")
    max_reject_rate: float = Field(0.2, ge=0, le=1, description="Fail when more than this share of prompts gets no valid IR")
    max_prompts: int | None = Field(None, gt=0, description="Only the first this-many prompts (quick runs); default all")
    anthropic_model: str | None = Field(None, description="Claude model when teacher is plain 'anthropic' (default claude-sonnet-4-5)")
    anthropic_price: tuple[float, float] | None = Field(None, description="USD per million input and output tokens, "
                                                                          "overriding the built-in price table")
    secret_block: str | None = Field(None, description="Prefect Secret block holding the Anthropic key, used when "
                                                       "ANTHROPIC_API_KEY is not set")
    openai_api_key_env: str | None = Field(None, description="Environment variable with the OpenAI-compatible server's API key")
    templates: Path | None = Field(None, description="Templates YAML the oracle reads (default: the shipped data/lift_sys/templates.yaml)")

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, spec: str) -> str:
        parse_teacher_spec(spec)
        return spec

    @model_validator(mode="after")
    def _teacher_has_its_key(self):
        missing = missing_credentials(self.teacher, secret_block=self.secret_block, api_key_env=self.openai_api_key_env)
        if missing:  # checked with the config, before any stage runs
            raise ValueError(missing)
        return self


# ---- prompt building and output parsing (pure) ------------------------------------------------------

GUIDANCE = """\
You turn a natural-language function request into a lift-sys intermediate representation (IR).
Answer with one JSON object and nothing else.

Rules:
- signature.name and every parameter name are snake_case.
- Every parameter has a Python type hint (int, str, list[int], dict[str, int], int | None, ...); set signature.returns.
- effects describe what the function does, step by step, with explicit return statements ("return x * 2").
- When the request gives an exact string to return, write it as return LITERAL 'x' with the exact characters.
- When inputs can be bool or int, check bool before int (in Python, isinstance(True, int) is True).
- Cover every return path and every edge case the request implies (empty input, zero, negative, None) in the
  effects, and state conditions as assertions.
- intent.summary says what the function does (at least 10 characters); intent.rationale says why.
- Use holes only for what the request leaves open."""


def _schema_type(node: dict, defs: dict) -> str:
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in node:
        return " | ".join(_schema_type(alt, defs) for alt in node["anyOf"] if alt.get("type") != "null")
    if "enum" in node:
        return "|".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        return f"[{_schema_type(node['items'], defs) if node.get('items') else 'any'}]"
    if kind == "object":
        return _schema_object(node, defs) if node.get("properties") else "{}"
    extra = [f"≥{node['minLength']} chars"] if "minLength" in node else []
    extra += [f"matching {node['pattern']}"] if "pattern" in node else []
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}.get(kind, "any") + \
        (f" ({', '.join(extra)})" if extra else "")


def _schema_object(node: dict, defs: dict) -> str:
    required = set(node.get("required", []))
    fields = [f'"{name}"{"" if name in required else "?"}: {_schema_type(prop, defs)}'
              for name, prop in node["properties"].items()]
    return "{" + ", ".join(fields) + "}"


def schema_outline(schema: dict = IR_SCHEMA) -> str:
    """A compact, exact outline of the IR JSON Schema for the prompt ("?" marks optional keys)."""
    defs = schema.get("$defs", {})
    lines = [f"IR = {_schema_object(schema, defs)}"]
    lines += [f"{name} = {_schema_object(node, defs)}" for name, node in defs.items() if node.get("properties")]
    return "\n".join(lines) + "\nEvery object is closed: no keys beyond these."


IR_SYSTEM_PROMPT = f"TASK: {TASK_IR}\n{GUIDANCE}\n\nSchema:\n{schema_outline()}"


def build_ir_messages(prompt: str) -> list[dict]:
    """The chat messages asking a teacher for the IR of one function request."""
    return [{"role": "system", "content": IR_SYSTEM_PROMPT},
            {"role": "user", "content": f"Write the IR for this request.\n{wrap_request(prompt)}"}]


def _find_ir_object(text: str) -> tuple[dict | None, str | None]:
    """The reply's IR object: the whole text, a fenced block, or the first IR-looking object amid prose."""
    for chunk in [text, *text.split("```")[1:-1:2]]:
        try:
            obj = json.loads(chunk.strip().removeprefix("json").removeprefix("JSON"))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj, None
    decoder, first_error = json.JSONDecoder(), None
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            first_error = first_error or e
            continue
        # An inner object of a cut-off reply (say, one parameter) is not the answer.
        if isinstance(obj, dict) and obj.keys() & {"intent", "signature"}:
            return obj, None
    if first_error is not None:
        return None, (f"not valid JSON ({first_error.msg} at character {first_error.pos}; cut off at max_tokens?): "
                      f"{text[:120]!r}")
    return None, f"no JSON object in the reply: {text[:120]!r}"


def parse_ir_output(text: str) -> tuple[dict | None, str | None]:
    """(canonical IR dict, None) when ``text`` holds a schema-valid IR, else (None, why not)."""
    found, error = _find_ir_object(text)
    if found is None:
        return None, error
    ir, errors = validate_ir(found)
    if ir is None:
        return None, "schema: " + "; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
    return json.loads(ir_json(ir)), None


# ---- scoring (lift-sys Best-of-N) -------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreWeights:
    """Points per quality signal; the criteria and weights of lift-sys's BestOfNIRTranslator._score_ir
    (lift_sys/forward_mode/best_of_n_translator.py). Higher is better; schema validity is a precondition."""

    per_assertion: float = 10          # more assertions, up to assertions_cap
    assertions_cap: float = 50
    effect_detail_cap: float = 20      # mean effect description length / 10, up to this
    per_literal_effect: float = 15     # an effect naming a LITERAL / exact value
    per_quirk_pair: float = 10         # both words of a Python-quirk pair appear (bool/int, None/empty, ...)
    typed_parameters: float = 10       # every parameter has a type hint
    typed_return: float = 10           # the signature names a return type
    per_edge_assertion: float = 5      # an assertion about an edge case (empty, zero, negative, None, ...)
    clear_summary: float = 5           # intent.summary longer than 20 characters
    rationale: float = 5               # intent.rationale given


LITERAL_MARKERS = ("literal", "exact", "exactly", "LITERAL", "EXACT")
QUIRK_PAIRS = (("bool", "int"), ("mutable", "immutable"), ("none", "empty"), ("before", "after"))
EDGE_WORDS = ("empty", "boundary", "edge case", "invalid", "error", "failure", "none", "zero", "negative")


def score_ir(ir: dict | IR, weights: ScoreWeights = ScoreWeights()) -> float:
    """lift-sys's quality score of a schema-valid IR (see ScoreWeights for the points)."""
    ir = ir if isinstance(ir, IR) else IR.model_validate(ir)
    w, score = weights, 0.0
    score += min(len(ir.assertions) * w.per_assertion, w.assertions_cap)
    if ir.effects:
        score += min(statistics.fmean(len(e.description) for e in ir.effects) / 10, w.effect_detail_cap)
    score += w.per_literal_effect * sum(any(m in e.description for m in LITERAL_MARKERS) for e in ir.effects)
    text = ir_json(ir).lower()
    score += w.per_quirk_pair * sum(all(word in text for word in pair) for pair in QUIRK_PAIRS)
    score += w.typed_parameters if all(p.type_hint.strip() for p in ir.signature.parameters) else 0
    score += w.typed_return if ir.signature.returns else 0
    score += w.per_edge_assertion * sum(any(word in a.predicate.lower() for word in EDGE_WORDS) for a in ir.assertions)
    score += w.clear_summary if len(ir.intent.summary) > 20 else 0
    score += w.rationale if ir.intent.rationale else 0
    return round(score, 3)


@dataclass
class BestOfN:
    """The kept IR of one prompt (None when every candidate was invalid) and why the others were dropped."""

    ir: dict | None
    score: float | None
    candidates: int
    invalid: list[dict] = field(default_factory=list)  # {"candidate", "reason", "output"}


def best_of_n(teacher: Teacher, prompt: str, *, n: int, temperature: float, max_tokens: int) -> BestOfN:
    """Ask ``teacher`` for ``n`` IRs of ``prompt`` and keep the highest-scoring valid one (first on ties).

    A refused request (TeacherError) is an invalid candidate; an unavailable teacher stops the stage.
    """
    messages = build_ir_messages(prompt)
    best: tuple[float, dict] | None = None
    invalid = []
    for i in range(n):
        try:
            text = teacher.generate(messages, max_tokens=max_tokens, temperature=temperature, json_schema=IR_SCHEMA).text
        except TeacherUnavailable:
            raise
        except TeacherError as e:
            invalid.append({"candidate": i, "reason": f"teacher refused: {e}", "output": ""})
            continue
        ir, error = parse_ir_output(text)
        if ir is None:
            invalid.append({"candidate": i, "reason": error, "output": text[:2000]})
            continue
        score = score_ir(ir)
        if best is None or score > best[0]:
            best = (score, ir)
    return BestOfN(ir=best[1] if best else None, score=best[0] if best else None, candidates=n, invalid=invalid)


# ---- the stage --------------------------------------------------------------------------------------

def _prompts_file(inputs: Path) -> Path:
    """prompts.jsonl, given the file or the generate_prompts output dir."""
    path = Path(inputs)
    path = path / "prompts.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"generate_ir: no prompts file at {path} (run generate_prompts first)")
    return path


def key_of(cfg: GenerateIRConfig, inputs: Path, out_dir: Path) -> tuple[GenerateIRConfig, list[Path]]:
    """The stage key hashes the prompts and, for the oracle, the templates file it reads."""
    return cfg, [Path(inputs)] + ([template_path(cfg)] if parse_teacher_spec(cfg.teacher)[0] == "oracle" else [])


def template_path(cfg: GenerateIRConfig) -> Path:
    return Path(cfg.templates) if cfg.templates else DEFAULT_TEMPLATES


def build_teacher(cfg: GenerateIRConfig, rows: list[PromptRow]) -> Teacher:
    """The configured teacher, built inside the stage (clients never cross a Prefect task boundary)."""
    kind, _ = parse_teacher_spec(cfg.teacher)
    if kind == "oracle":
        return TemplateOracle(load_templates(template_path(cfg)), rows)
    if kind == "anthropic":
        return make_teacher(cfg.teacher, model=cfg.anthropic_model, price=cfg.anthropic_price, secret_block=cfg.secret_block)
    if kind == "openai":
        return make_teacher(cfg.teacher, api_key_env=cfg.openai_api_key_env)
    return make_teacher(cfg.teacher)


def generate(cfg: GenerateIRConfig, inputs: Path, out_dir: Path) -> Path:
    """Write ``ir.jsonl`` (best valid IR per prompt) and ``rejects.jsonl`` (every discarded candidate)."""
    out_dir, prompts_file = Path(out_dir), _prompts_file(inputs)
    key = stage_key(generate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows = read_models(prompts_file, PromptRow)[:cfg.max_prompts]
    if not rows:
        raise ValueError(f"generate_ir: {prompts_file} has no prompts")
    teacher = build_teacher(cfg, rows)
    say(f"generate_ir: {len(rows)} prompts × {cfg.n} candidates from {teacher.name}")
    accepted, rejects, per_category = [], [], defaultdict(lambda: {"prompts": 0, "accepted": 0, "scores": []})
    invalid_total, rejected_prompts = 0, 0
    try:
        with StageProgress(f"IRs from {teacher.name}", len(rows)) as progress:
            for row in rows:
                result = best_of_n(teacher, row.prompt, n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
                cat = per_category[row.category]
                cat["prompts"] += 1
                invalid_total += len(result.invalid)
                rejects += [{"id": row.id, "prompt": row.prompt, "prompt_rejected": result.ir is None, **bad}
                            for bad in result.invalid]
                if result.ir is None:
                    rejected_prompts += 1
                else:
                    cat["accepted"] += 1
                    cat["scores"].append(result.score)
                    accepted.append({"id": row.id, "prompt": row.prompt, "category": row.category,
                                     "complexity": row.complexity, "template_id": row.template_id, "origin": row.origin,
                                     # slots + parent let compose keep a paraphrase in its parent's split
                                     "slots": row.slots, "parent_id": row.parent_id, "ir": result.ir, "score": result.score, "teacher": teacher.name,
                                     "candidates": result.candidates,
                                     "valid_candidates": result.candidates - len(result.invalid)})
                progress.advance()
        usage = teacher.usage()
    finally:
        teacher.close()
    reject_rate = rejected_prompts / len(rows)
    if reject_rate > cfg.max_reject_rate:
        first = next(r for r in rejects if r["prompt_rejected"])
        raise ValueError(f"generate_ir: {rejected_prompts} of {len(rows)} prompts got no schema-valid IR from "
                         f"{teacher.name} (rate {reject_rate:.2f} > max_reject_rate {cfg.max_reject_rate}); "
                         f"first: {first['id']}: {first['reason']}")
    candidates = len(rows) * cfg.n
    with stage_output(STAGE, out_dir, key, cfg, key_of(cfg, inputs, out_dir)[1]) as out:
        write_jsonl(out.tmp / "ir.jsonl", accepted)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"prompts": len(rows), "accepted": len(accepted), "rejected": rejected_prompts,
                      "candidates": candidates, "invalid_candidates": invalid_total}
        scores = [r["score"] for r in accepted]
        out.metrics = {"teacher_requests": usage["requests"], "teacher_retries": usage["retries"],
                       "input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
                       "cost_usd": usage["cost_usd"], "mean_score": round(statistics.fmean(scores), 3) if scores else None,
                       "schema_validity_rate": round(1 - invalid_total / candidates, 4)}
        out.extra["teacher"], out.extra["usage"] = teacher.name, usage
    table = [{"category": name, "prompts": c["prompts"], "accepted": c["accepted"], "rejected": c["prompts"] - c["accepted"],
              "mean_score": round(statistics.fmean(c["scores"]), 1) if c["scores"] else None}
             for name, c in sorted(per_category.items())]
    publish_table("generate-ir", table, f"IRs from {teacher.name}: {len(accepted)}/{len(rows)} prompts, "
                  f"validity {out.metrics['schema_validity_rate']:.1%}, cost ${usage['cost_usd']:.4f}")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def generate_ir(cfg: GenerateIRConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: prompts → best-of-N teacher IRs."""
    return generate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.generate_ir", __doc__, GenerateIRConfig)
    parser.add_argument("--prompts", type=Path, required=True, help="prompts.jsonl (or the generate_prompts output dir)")
    parser.add_argument("--templates", type=Path, help="templates YAML the oracle reads (default: the shipped one)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(generate(config_from_args(GenerateIRConfig, args, parser, templates=args.templates), args.prompts, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
