"""Stage `prompts`: lift-sys function requests from templates, balanced over six categories, plus teacher paraphrases.

Template prompts use each template's canonical phrasing with distinct slot assignments, spread evenly over
the templates of each category. A share of them (the seeds) goes to a teacher for N paraphrases each; a
paraphrase is kept only when it keeps the request's meaning (every quoted string and number of the
original, and the function and parameter names it mentions) and does not repeat, up to case and
whitespace, a prompt already present. A paraphrase inherits its parent's template and slots, so its IR is
the parent's. Dropped paraphrases and refused requests go to ``rejects.jsonl`` with the reason.

    python -m tasks.lift_sys.generate_prompts --out data/lift_sys/prompts [--set per_category=80] [--set teacher=anthropic]
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.lift_sys.lift_oracle import TemplateOracle
from tasks.lift_sys.lift_templates import (
    CATEGORIES,
    DEFAULT_TEMPLATES,
    Category,
    Complexity,
    TemplateLibrary,
    load_templates,
)
from adapters.teachers import (
    REQUEST_CLOSE,
    REQUEST_OPEN,
    TASK_PARAPHRASE,
    Teacher,
    TeacherError,
    TeacherUnavailable,
    make_teacher,
    missing_credentials,
    parse_teacher_spec,
    wrap_request,
)
from tasks.lift_sys.ir_checks import QUOTED
from tasks.common.records import write_jsonl
from tasks.common.reporting import StageProgress, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "prompts"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w|\.\d)")
PARAPHRASE_INSTRUCTIONS = (
    "You rewrite requests for Python functions. Rewrite the request between {open} and {close} in {n} different "
    "ways that mean exactly the same thing. Keep the function name and the parameter names, every quoted string "
    "character for character with its quotes, and every number. Change only the wording and the sentence structure. "
    "Write one rewrite per line: no numbering, no quotes around the line, no commentary."
)


class PromptsConfig(BaseModel):
    """How many prompts, from which templates, and how they are paraphrased."""

    model_config = ConfigDict(extra="forbid")
    templates: Path | None = Field(None, description="Templates YAML; None = the shipped data/lift_sys/templates.yaml")
    per_category: int = Field(60, ge=1, description="Template prompts per category (ignored when total is set)")
    total: int | None = Field(None, ge=6, description="Template prompts in all, split evenly over the six categories")
    seed: int = Field(0, description="Seed of slot sampling and of the choice of paraphrase seeds")
    paraphrase_share: float = Field(0.25, ge=0, le=1, description="Share of template prompts sent to the teacher for paraphrases")
    paraphrases_per_prompt: int = Field(2, ge=0, description="Paraphrases asked for, and kept at most, per seed prompt")
    teacher: str = Field("oracle", description="Paraphrase teacher: oracle | anthropic[:model] | openai:<base_url>[#model] | local:embedded | local:<path.gguf>")
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of paraphrase requests")
    max_tokens: int = Field(600, ge=16, description="Token budget of one paraphrase reply")
    max_failed_share: float = Field(0.2, ge=0, le=1, description="Fail the stage when more than this share of paraphrase requests is refused")

    @field_validator("teacher")
    @classmethod
    def _teacher_can_start(cls, spec: str) -> str:
        missing = missing_credentials(spec)  # also rejects an unknown teacher; checked before any stage runs
        if missing:
            raise ValueError(missing)
        return spec


class PromptRow(BaseModel):
    """One function request (``prompts.jsonl``); a paraphrase keeps its parent's template_id and slots."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str
    category: Category
    complexity: Complexity
    template_id: str
    slots: dict[str, str | int | float]
    origin: Literal["template", "paraphrase"]
    parent_id: str | None = None
    teacher: str | None = None


def template_path(cfg: PromptsConfig) -> Path:
    return Path(cfg.templates) if cfg.templates else DEFAULT_TEMPLATES


def normalized(text: str) -> str:
    """Identity of a prompt for de-duplication: whitespace and case do not count, except inside quoted strings
    (asking for 'POSITIVE' is another request than asking for 'positive')."""
    parts, last = [], 0
    for m in QUOTED.finditer(text):
        parts += [text[last:m.start()].lower(), m.group(0)]
        last = m.end()
    return " ".join(("".join(parts) + text[last:].lower()).split())


def category_counts(cfg: PromptsConfig) -> dict[str, int]:
    """Template prompts wanted per category (balanced; a remainder of ``total`` goes to the first categories)."""
    if cfg.total is None:
        return {c: cfg.per_category for c in CATEGORIES}
    base, extra = divmod(cfg.total, len(CATEGORIES))
    return {c: base + (i < extra) for i, c in enumerate(CATEGORIES)}


def _quotas(want: int, capacities: dict[str, int]) -> dict[str, int]:
    """Split ``want`` evenly over templates; what a small template cannot hold goes to the others."""
    quota = dict.fromkeys(capacities, 0)
    while want:
        open_ = [t for t in capacities if quota[t] < capacities[t]]
        share, extra = divmod(want, len(open_))
        for i, t in enumerate(open_):
            take = min(share + (i < extra), capacities[t] - quota[t])
            quota[t] += take
            want -= take
    return quota


def template_prompts(library: TemplateLibrary, counts: dict[str, int], seed: int) -> list[PromptRow]:
    """Distinct canonical prompts, ``counts[category]`` per category, spread evenly over its templates."""
    rng, rows, seen = random.Random(seed), [], set()
    for category, templates in library.by_category().items():
        capacity = sum(t.combinations() for t in templates)
        if counts[category] > capacity:
            raise ValueError(f"prompts: category {category} asks for {counts[category]} prompts but its templates allow "
                             f"{capacity} distinct ones; lower per_category/total or add slot values to {library.path}")
        for tpl_id, quota in _quotas(counts[category], {t.id: t.combinations() for t in templates}).items():
            tpl = library.template(tpl_id)
            order = iter(rng.sample(range(tpl.combinations()), tpl.combinations()))
            for k in range(quota):
                while True:
                    index = next(order, None)
                    if index is None:
                        raise ValueError(f"prompts: template {tpl_id} ran out of distinct prompts after {k}; "
                                         "its renderings collide with other templates' prompts")
                    slots = tpl.slots_at(index)
                    prompt = library.render_prompt(tpl_id, slots)
                    if normalized(prompt) not in seen:
                        break
                seen.add(normalized(prompt))
                rows.append(PromptRow(id=f"{tpl_id}-{k:04d}", prompt=prompt, category=category, complexity=tpl.complexity,
                                      template_id=tpl_id, slots=slots, origin="template"))
    return rows


def build_paraphrase_messages(row: PromptRow, n: int) -> list[dict]:
    """The chat messages asking a teacher for ``n`` paraphrases of ``row.prompt``."""
    system = f"TASK: {TASK_PARAPHRASE}\n" + PARAPHRASE_INSTRUCTIONS.format(open=REQUEST_OPEN, close=REQUEST_CLOSE, n=n)
    return [{"role": "system", "content": system}, {"role": "user", "content": f"N: {n}\n{wrap_request(row.prompt)}"}]


def parse_paraphrases(text: str) -> list[str]:
    """Candidate paraphrases from a teacher's reply: one per line, list markers and wrapping quotes removed."""
    out = []
    for raw in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s+", "", raw).strip()
        if len(line) > 2 and line[0] == line[-1] and line[0] in "\"'" and line.count(line[0]) == 2:
            line = line[1:-1].strip()
        if len(line.split()) < 4 or line.endswith(":") or "<request>" in line or "</request>" in line:
            continue  # preambles ("Here are two rewrites:"), echoed markers, fragments
        out.append(line)
    return out


def meaning_lost(original: str, candidate: str, names: Iterable[str] = ()) -> str | None:
    """Why ``candidate`` does not keep ``original``'s meaning, or None when it keeps every string, number and name."""
    kept_strings = {m.group(1) or m.group(2) for m in QUOTED.finditer(candidate)}
    for m in QUOTED.finditer(original):
        if (m.group(1) or m.group(2)) not in kept_strings:
            return f"drops the exact string {m.group(0)}"
    kept_numbers = set(NUMBER.findall(candidate))
    for number in NUMBER.findall(original):
        if number not in kept_numbers:
            return f"drops the number {number}"
    for name in names:
        word = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
        if word.search(original) and not word.search(candidate):
            return f"drops the name {name}"
    return None


def _signature_names(library: TemplateLibrary, row: PromptRow) -> list[str]:
    signature = library.render_ir(row.template_id, row.slots)["signature"]
    return [signature["name"], *(p["name"] for p in signature.get("parameters", []))]


def _teacher(cfg: PromptsConfig, library: TemplateLibrary, rows: list[PromptRow]) -> Teacher:
    kind, _ = parse_teacher_spec(cfg.teacher)
    return TemplateOracle(library, rows) if kind == "oracle" else make_teacher(cfg.teacher)


def paraphrase_seeds(rows: list[PromptRow], share: float, seed: int) -> list[int]:
    """Indices of the rows to paraphrase: ``share`` of each category, so paraphrases stay balanced too."""
    rng, picks = random.Random(seed + 1), []
    for category in CATEGORIES:
        members = [i for i, r in enumerate(rows) if r.category == category]
        picks += rng.sample(members, round(share * len(members)))
    return sorted(picks)


def paraphrase(cfg: PromptsConfig, library: TemplateLibrary, rows: list[PromptRow], teacher: Teacher,
               ) -> tuple[list[PromptRow], list[dict], Counter]:
    """Paraphrases of a seeded share of ``rows``: (kept rows, rejects with reasons, counts)."""
    n = cfg.paraphrases_per_prompt
    picks = paraphrase_seeds(rows, cfg.paraphrase_share, cfg.seed)
    seen = {normalized(r.prompt) for r in rows}
    kept, rejects = [], []
    stats = Counter(dict.fromkeys(["returned", "kept", "dropped_meaning", "dropped_duplicate", "dropped_extra",
                                   "teacher_failures"], 0), seeds=len(picks))
    with StageProgress(f"paraphrase {len(picks)} prompts with {teacher.name}", len(picks)) as progress:
        for i in picks:
            row = rows[i]
            try:
                reply = teacher.generate(build_paraphrase_messages(row, n), max_tokens=cfg.max_tokens, temperature=cfg.temperature)
            except TeacherUnavailable:
                raise
            except TeacherError as e:
                stats["teacher_failures"] += 1
                rejects.append({"parent_id": row.id, "paraphrase": None, "reason": f"teacher refused: {e}"})
                progress.advance()
                continue
            names, count = _signature_names(library, row), 0
            for candidate in parse_paraphrases(reply.text):
                stats["returned"] += 1
                if count == n:
                    kind, reason = "extra", f"beyond the {n} asked for"
                elif lost := meaning_lost(row.prompt, candidate, names):
                    kind, reason = "meaning", lost
                elif normalized(candidate) in seen:
                    kind, reason = "duplicate", "duplicates a prompt already present"
                else:
                    seen.add(normalized(candidate))
                    count += 1
                    kept.append(row.model_copy(update={"id": f"{row.id}-p{count}", "prompt": candidate, "origin": "paraphrase",
                                                       "parent_id": row.id, "teacher": teacher.name}))
                    continue
                stats[f"dropped_{kind}"] += 1
                rejects.append({"parent_id": row.id, "paraphrase": candidate, "reason": reason})
            stats["kept"] += count
            progress.advance()
    if picks and stats["teacher_failures"] / len(picks) > cfg.max_failed_share:
        first = next(r["reason"] for r in rejects if r["paraphrase"] is None)
        raise RuntimeError(f"prompts: the teacher {teacher.name} refused {stats['teacher_failures']} of {len(picks)} "
                           f"paraphrase requests (bound max_failed_share={cfg.max_failed_share}); first: {first}")
    return kept, rejects, stats


def key_of(cfg: PromptsConfig, inputs: None, out_dir: Path) -> tuple[PromptsConfig, list[Path]]:
    """The stage key hashes the templates file the config names (the stage takes no inputs)."""
    return cfg, [template_path(cfg)]


def write_prompts(cfg: PromptsConfig, inputs: None, out_dir: Path) -> Path:
    """Write ``prompts.jsonl`` (template prompts, then kept paraphrases) and ``rejects.jsonl``."""
    out_dir, templates = Path(out_dir), template_path(cfg)
    key = stage_key(write_prompts, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    library = load_templates(templates)
    rows = template_prompts(library, category_counts(cfg), cfg.seed)
    kept, rejects, stats, usage = [], [], Counter(), {}
    if cfg.paraphrase_share > 0 and cfg.paraphrases_per_prompt > 0:
        teacher = _teacher(cfg, library, rows)
        try:
            kept, rejects, stats = paraphrase(cfg, library, rows, teacher)
            usage = teacher.usage()
        finally:
            teacher.close()
    rows += kept
    with stage_output(STAGE, out_dir, key, cfg, [templates]) as out:
        write_jsonl(out.tmp / "prompts.jsonl", rows)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"prompts": len(rows), "template": len(rows) - len(kept), "paraphrase": len(kept)}
        out.extra["per_category"] = {c: dict(Counter(r.origin for r in rows if r.category == c)) for c in CATEGORIES}
        out.extra["per_complexity"] = dict(Counter(r.complexity for r in rows))
        out.extra["paraphrases"] = {"teacher": cfg.teacher, **stats}
        out.extra["teacher_usage"] = usage
    table = [{"category": c, "template": v.get("template", 0), "paraphrase": v.get("paraphrase", 0)}
             for c, v in out.extra["per_category"].items()]
    publish_table("lift-sys-prompts", table, f"{len(rows)} prompts; paraphrases kept {stats['kept']} of {stats['returned']} returned")
    say(f"[prompts] {out.counts}; paraphrases {dict(stats)}")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def generate_prompts(cfg: PromptsConfig, inputs: None, out_dir: Path) -> Path:
    """Prefect task: template prompts + teacher paraphrases into ``prompts.jsonl``."""
    return write_prompts(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.lift_sys.generate_prompts", __doc__, PromptsConfig)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--templates", type=Path, help="templates YAML (default: the shipped one)")
    parser.add_argument("--teacher", help="paraphrase teacher spec (default: oracle)")
    args = parser.parse_args(argv)
    cfg = config_from_args(PromptsConfig, args, parser, templates=args.templates, teacher=args.teacher)
    print(write_prompts(cfg, None, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
