"""Stage `negatives`: bad lift-sys IRs, each with its error named and paired with the accepted IR as correction.

Input: accepted IRs, a JSONL of ``{"id", "prompt", "category", "ir"}`` rows (other keys are ignored).
For every row and error type a bad variant is built where the IR allows it:

    verbose_literal         a LITERAL 'x' the request asks for becomes a wordy string ('The result is x')
    missing_bool_int_order  the bool-before-int statement is dropped and the int test moved before the bool test
    missing_return_path     the effects covering one return value of the request are dropped
    wrong_types             one parameter or the return type is changed ('float | None' loses its None)

A variant is kept only when the review pre-checks flag it for that error while the correction passes that
check (for wrong_types: when its signature types differ from the correction's), so every negative is one
the checks can tell apart. Then ``shares.<type>`` of the flagged variants of each type is sampled (seeded).
Unflagged variants go to ``rejects.jsonl``.

    python -m tasks.lift_sys.make_negatives --accepted data/lift_sys/review/accepted.jsonl --out data/lift_sys/negatives
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.lift_sys.lift_ir import validate_ir
from tasks.lift_sys.lift_templates import Category
from tasks.lift_sys.ir_checks import (
    BOOL_FIRST,
    ISINSTANCE_BOOL,
    ISINSTANCE_INT,
    literals_in,
    mentions_value,
    precheck,
    requested_returns,
)
from tasks.common.records import RecordError, read_models, write_jsonl
from tasks.common.reporting import publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "negatives"
ErrorType = Literal["verbose_literal", "missing_bool_int_order", "missing_return_path", "wrong_types"]
ERROR_TYPES: tuple[str, ...] = get_args(ErrorType)
CHECK_OF = {"verbose_literal": {"literal"}, "missing_bool_int_order": {"bool_before_int"},
            "missing_return_path": {"literal", "return_coverage"}}
VERBOSE_FORMS = ("The result is {x}", "Result: {x}", "The answer is {x}", "It is {x}", "{x} (as requested)", "Value: {x}")
TYPE_SWAPS = {"int": "str", "float": "int", "str": "int", "bool": "int", "object": "int"}
Variant = tuple[dict, str]  # (bad IR, explanation)


class NegativeShares(BaseModel):
    """Share of the flagged variants of each error type that is kept (0 turns a type off)."""

    model_config = ConfigDict(extra="forbid")
    verbose_literal: float = Field(0.5, ge=0, le=1, description="Keep this share of the verbose-literal variants")
    missing_bool_int_order: float = Field(1.0, ge=0, le=1, description="Keep this share of the bool/int-order variants (few IRs allow one)")
    missing_return_path: float = Field(0.25, ge=0, le=1, description="Keep this share of the missing-return-path variants")
    wrong_types: float = Field(0.2, ge=0, le=1, description="Keep this share of the wrong-type variants (every IR allows one)")


class NegativesConfig(BaseModel):
    """Which negatives to make, and how many."""

    model_config = ConfigDict(extra="forbid")
    shares: NegativeShares = Field(default_factory=NegativeShares, description="Per error type, the share of flagged variants kept")
    seed: int = Field(0, description="Seed of the variant details and of the sampling")


class AcceptedIR(BaseModel):
    """One accepted IR; the review stage may add more keys, which are ignored."""

    model_config = ConfigDict(extra="ignore")
    id: str
    prompt: str
    category: Category
    ir: dict

    @field_validator("ir", mode="before")
    @classmethod
    def _json_text(cls, value):
        return json.loads(value) if isinstance(value, str) else value


class NegativeRow(BaseModel):
    """A bad IR with its error type, the correct IR and why it is wrong."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str
    category: Category
    bad_ir: dict
    error_type: ErrorType
    correction: dict
    explanation: str


def _quoted(text: str) -> str:
    return f'"{text}"' if "'" in text else f"'{text}'"


def verbose_literal(prompt: str, ir: dict, rng: random.Random) -> Variant | None:
    """Replace one requested ``LITERAL 'x'`` by a wordier string that contains x."""
    marked = {lit for e in ir.get("effects", []) for lit in literals_in(e["description"])}
    options = [x for x in requested_returns(prompt).literals if x in marked]
    if not options:
        return None
    x = rng.choice(options)
    wordy = rng.choice(VERBOSE_FORMS).format(x=x)
    bad = copy.deepcopy(ir)
    pattern = re.compile(rf"""LITERAL\s+(?:'{re.escape(x)}'|"{re.escape(x)}")""")
    for effect in bad["effects"]:
        effect["description"] = pattern.sub(lambda _: f"LITERAL {_quoted(wordy)}", effect["description"])
    return bad, (f"The request asks for exactly '{x}', but the IR returns LITERAL {_quoted(wordy)}; a caller comparing "
                 f"the result with '{x}' would fail. Return LITERAL '{x}' exactly as written.")


def missing_bool_int_order(prompt: str, ir: dict, rng: random.Random) -> Variant | None:
    """Drop what says bool is checked before int, and move the bool test after the int test."""
    effects, assertions = ir.get("effects", []), ir.get("assertions", [])
    if any(BOOL_FIRST.search(e["description"]) and "return" in e["description"].lower() for e in effects):
        return None  # the statement shares an effect with a return path: dropping it would be two errors
    kept_effects = [e for e in effects if not BOOL_FIRST.search(e["description"])]
    kept_assertions = [a for a in assertions if not BOOL_FIRST.search(f"{a['predicate']} {a.get('rationale') or ''}")]
    bool_tests = [e for e in kept_effects if ISINSTANCE_BOOL.search(e["description"])]
    int_tests = [i for i, e in enumerate(kept_effects) if ISINSTANCE_INT.search(e["description"]) and e not in bool_tests]
    if len(kept_effects) == len(effects) and len(kept_assertions) == len(assertions) and not (bool_tests and int_tests):
        return None
    if bool_tests and int_tests:
        rest = [e for e in kept_effects if e not in bool_tests]
        last_int = max(i for i, e in enumerate(rest) if ISINSTANCE_INT.search(e["description"]))
        kept_effects = rest[:last_int + 1] + bool_tests + rest[last_int + 1:]
    bad = {**copy.deepcopy(ir), "effects": copy.deepcopy(kept_effects), "assertions": copy.deepcopy(kept_assertions)}
    return bad, ("bool is a subclass of int, so True and False pass isinstance(x, int). This IR no longer says that bool "
                 "is checked before int and tests int first, so booleans would be handled as integers. Test "
                 "isinstance(x, bool) before isinstance(x, int).")


def missing_return_path(prompt: str, ir: dict, rng: random.Random) -> Variant | None:
    """Drop the effects that cover one return value named in the request."""
    effects = ir.get("effects", [])
    requested = requested_returns(prompt)
    covers: dict[str, Callable[[str], bool]] = {}
    for x in requested.literals:
        covers[f"'{x}'"] = lambda text, x=x: x in literals_in(text)
    for v in requested.values:
        covers[v] = lambda text, v=v: mentions_value(text, v)
    options = [name for name, covered in covers.items() if any(covered(e["description"]) for e in effects)]
    if not options:
        return None
    name = rng.choice(options)
    dropped = [e["description"] for e in effects if covers[name](e["description"])]
    bad = {**copy.deepcopy(ir), "effects": [copy.deepcopy(e) for e in effects if not covers[name](e["description"])]}
    return bad, (f"The request returns {name} in some case, but no effect of this IR covers that path (missing: "
                 f"{' / '.join(dropped)}); code generated from it would never return {name}.")


def swap_type(type_hint: str) -> str:
    """A plausible wrong type for ``type_hint``: drop an optional None, or swap to an unrelated type."""
    if re.search(r"\|\s*None$", type_hint):
        return re.sub(r"\s*\|\s*None$", "", type_hint)
    if type_hint in TYPE_SWAPS:
        return TYPE_SWAPS[type_hint]
    return "str" if type_hint != "str" else "int"


def wrong_types(prompt: str, ir: dict, rng: random.Random) -> Variant | None:
    """Change the return type or one parameter's type."""
    signature = ir["signature"]
    targets = ([("returns", None)] if signature.get("returns") else []) + \
        [("parameter", i) for i in range(len(signature.get("parameters", [])))]
    if not targets:
        return None
    where, index = rng.choice(targets)
    bad = copy.deepcopy(ir)
    if where == "returns":
        old = signature["returns"]
        bad["signature"]["returns"] = new = swap_type(old)
        what = "the return type"
    else:
        param = bad["signature"]["parameters"][index]
        old, param["type_hint"] = param["type_hint"], swap_type(param["type_hint"])
        new, what = param["type_hint"], f"parameter '{param['name']}'"
    why = " The request returns None in some case, so the type must allow None." if re.search(r"\|\s*None$", old) else ""
    return bad, f"{what[0].upper()}{what[1:]} should be {old}, but the IR types it as {new}.{why}"


BUILDERS: dict[str, Callable[[str, dict, random.Random], Variant | None]] = {
    "verbose_literal": verbose_literal, "missing_bool_int_order": missing_bool_int_order,
    "missing_return_path": missing_return_path, "wrong_types": wrong_types}


def signature_types(ir: dict) -> list[str | None]:
    signature = ir["signature"]
    return [signature.get("returns")] + [p["type_hint"] for p in signature.get("parameters", [])]


def flagged(error_type: str, prompt: str, good: dict, bad: dict) -> bool:
    """Whether the pre-checks (or, for wrong types, a type comparison) tell ``bad`` from ``good`` for this error."""
    if error_type == "wrong_types":
        return signature_types(good) != signature_types(bad) and not validate_ir(bad)[1]
    checks = CHECK_OF[error_type]
    before = {(p.check, p.message) for p in precheck(prompt, good).problems}
    return any(p.check in checks and (p.check, p.message) not in before for p in precheck(prompt, bad).problems)


def read_accepted(path: Path) -> list[AcceptedIR]:
    """Accepted IR rows; an IR that fails the schema raises RecordError naming the file, record and field."""
    rows = read_models(path, AcceptedIR)
    for i, row in enumerate(rows, 1):
        _, errors = validate_ir(row.ir)
        if errors:
            field, _, message = errors[0].partition(": ")
            raise RecordError(f"{path}: record {i} (id {row.id}): field 'ir.{field}': {message}")
    return rows


def write_negatives(cfg: NegativesConfig, inputs: Path, out_dir: Path) -> Path:
    """Write ``negatives.jsonl`` (flagged bad variants with corrections) and ``rejects.jsonl``."""
    inputs, out_dir = Path(inputs), Path(out_dir)
    key = stage_key(write_negatives, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows = read_accepted(inputs)
    negatives, rejects, table = [], [], []
    for error_type in ERROR_TYPES:
        share = getattr(cfg.shares, error_type)
        built, ok = 0, []
        for row in rows:
            variant = BUILDERS[error_type](row.prompt, row.ir, random.Random(f"{cfg.seed}-{error_type}-{row.id}"))
            if variant is None:
                continue
            built += 1
            bad, explanation = variant
            negative = NegativeRow(id=f"{row.id}-{error_type}", prompt=row.prompt, category=row.category, bad_ir=bad,
                                   error_type=error_type, correction=row.ir, explanation=explanation)
            if flagged(error_type, row.prompt, row.ir, bad):
                ok.append(negative)
            else:
                rejects.append({"id": negative.id, "error_type": error_type, "reason": "the pre-checks do not flag this variant"})
        kept = random.Random(f"{cfg.seed}-{error_type}").sample(ok, round(share * len(ok)))
        negatives += sorted(kept, key=lambda n: n.id)
        table.append({"error_type": error_type, "applicable": built, "flagged": len(ok), "kept": len(kept)})
    with stage_output(STAGE, out_dir, key, cfg, [inputs]) as out:
        write_jsonl(out.tmp / "negatives.jsonl", negatives)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"accepted_in": len(rows), "negatives": len(negatives), **Counter(n.error_type for n in negatives)}
        out.extra["per_error_type"] = table
        out.extra["per_category"] = dict(Counter(n.category for n in negatives))
    publish_table("lift-sys-negatives", table, f"{len(negatives)} negatives from {len(rows)} accepted IRs")
    say(f"[negatives] {out.counts}")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def make_negatives(cfg: NegativesConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: named bad variants of accepted IRs, each paired with its correction."""
    return write_negatives(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.make_negatives", __doc__, NegativesConfig)
    parser.add_argument("--accepted", type=Path, required=True, help='JSONL of {"id", "prompt", "category", "ir"} rows')
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(write_negatives(config_from_args(NegativesConfig, args, parser), args.accepted, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
