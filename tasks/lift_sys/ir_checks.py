"""Automatic review pre-checks of a lift-sys IR against the request it answers (pure functions).

    precheck(prompt, ir_dict) -> PreCheck(decision="accept" | "reject" | "needs_review", problems=[Problem(check, message)])

The checks are DESIGN.md's review rules, read from the request text:

    schema           the IR validates against the IR schema ......................................... else reject
    literal          every exact string the request says to return ('x' or "x") appears as
                     LITERAL 'x' in an effect ............. missing: needs_review; reworded ('The result is x'): reject
    bool_before_int  when the request names both bool and int (or the IR tests both types), an
                     effect/assertion says bool is checked before int, or the bool test comes
                     first ........................................ unstated: needs_review; int tested first: reject
    return_coverage  every other value the request says to return (None, True, False, a number,
                     an empty list/string) is mentioned by an effect ................................. else needs_review

What the request "says to return" is read from its wording: a value right after a return verb
("returns 'x'", "gives back None"), a value followed by a condition ("'x' if ...", "-1 when ...",
"'F' otherwise") in a sentence with a return verb, a value after "otherwise", and a value listed right
after one of those ("True or False"). Quoted strings elsewhere ("exactly one '@'") are inputs, not results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from tasks.lift_sys.lift_ir import validate_ir

Decision = Literal["accept", "reject", "needs_review"]

QUOTED = re.compile(r"""(?<![\w'"])(?:'([^'\n]+)'|"([^"\n]+)")(?![\w'"])""")
VALUE = re.compile(r"(?<![\w.\-])(None|True|False|-?\d+(?:\.\d+)?|an empty (?:list|string|dict|tuple|set)|\[\])(?!\w|\.\d)")
_VERB = r"(?:returns?|returning|returned|give back|gives back|giving back|gives?|outputs?|yields?|produces?|evaluates? to|answers?|responds? with)"
_FILLER = r"(?:the|a|an|exactly|just|only|either|literally|string|word|label|text|value|constant)"
AFTER_VERB = re.compile(rf"\b{_VERB}(?:\s+{_FILLER})*\s+$", re.IGNORECASE)
HAS_VERB = re.compile(rf"\b{_VERB}\b", re.IGNORECASE)
CONDITION_NEXT = re.compile(r"\s+(?:if|when|whenever|otherwise|else|unless|for|instead)\b", re.IGNORECASE)
OTHERWISE_BEFORE = re.compile(r"\botherwise,?\s+$", re.IGNORECASE)
LIST_SEPARATOR = re.compile(r"\s*(?:,|,?\s*(?:and|or))\s*")
SENTENCE_END = re.compile(r"[.!?](?=\s|$)")

LITERAL = re.compile(r"""LITERAL\s+(?:'([^'\n]*)'|"([^"\n]*)")""")
BOOL_WORD = re.compile(r"\bbool(?:ean)?s?\b", re.IGNORECASE)
INT_WORD = re.compile(r"\bint(?:eger)?s?\b", re.IGNORECASE)
ISINSTANCE_BOOL = re.compile(r"isinstance\([^()]*?,\s*bool\s*\)")
ISINSTANCE_INT = re.compile(r"isinstance\([^()]*?,\s*int\s*\)")
BOOL_FIRST = re.compile(r"\bbool(?:ean)?s?\b[^.;]*?\bbefore\b[^.;]*?\bint|\bint(?:eger)?s?\b[^.;]*?\bafter\b[^.;]*?\bbool", re.IGNORECASE)
INT_FIRST = re.compile(r"\bint(?:eger)?s?\b[^.;]*?\bbefore\b[^.;]*?\bbool|\bbool(?:ean)?s?\b[^.;]*?\bafter\b[^.;]*?\bint", re.IGNORECASE)


class Problem(BaseModel):
    """One broken review rule: which check, and what is wrong in words a reviewer can act on."""

    check: str
    message: str


class PreCheck(BaseModel):
    """The automatic verdict on one IR."""

    decision: Decision
    problems: list[Problem] = []


@dataclass(frozen=True)
class Requested:
    """What a request says its function returns: exact strings, and other values (None, -1, True, ...)."""

    literals: tuple[str, ...]
    values: tuple[str, ...]


def requested_returns(prompt: str) -> Requested:
    """The exact strings and values that ``prompt`` says to return, in order of first mention."""
    masked, found = list(prompt), []  # quoted text is masked so its words and digits are not read as values
    for m in QUOTED.finditer(prompt):
        found.append((m.start(), m.end(), "literal", m.group(1) or m.group(2)))
        masked[m.start() + 1:m.end() - 1] = "\0" * (m.end() - m.start() - 2)
    text = "".join(masked)
    found += [(m.start(), m.end(), "value", m.group(1)) for m in VALUE.finditer(text)]
    found.sort()
    literals: list[str] = []
    values: list[str] = []
    start = 0
    for end in [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]:
        sentence, prev = text[start:end], None
        has_verb = bool(HAS_VERB.search(sentence))
        for s, e, kind, value in (c for c in found if start <= c[0] < end):
            before, after = text[start:s], text[e:end]
            returned = bool(AFTER_VERB.search(before)) or has_verb and (
                bool(CONDITION_NEXT.match(after)) or bool(OTHERWISE_BEFORE.search(before))
                or (prev is not None and prev[1] and LIST_SEPARATOR.fullmatch(text[prev[0]:s]) is not None))
            if returned:
                bucket = literals if kind == "literal" else values
                if value not in bucket:
                    bucket.append(value)
            prev = (e, returned)
        start = end
    return Requested(tuple(literals), tuple(values))


def literals_in(text: str) -> list[str]:
    """The strings an effect marks as ``LITERAL 'x'``."""
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in LITERAL.finditer(text)]


def mentions_value(text: str, value: str) -> bool:
    """Whether ``text`` names ``value`` (None, True, -1, 0.0, 'an empty list', ...) as a whole token."""
    if value.startswith("an empty "):
        noun = value.removeprefix("an empty ")
        extra = {"list": r"|\[\]", "string": r"|''|\"\"", "dict": r"|\{\}"}.get(noun, "")
        return re.search(rf"\bempty {noun}\b{extra}", text) is not None
    if value == "[]":
        return re.search(r"\bempty list\b|\[\]", text) is not None
    return re.search(rf"(?<![\w.\-]){re.escape(value)}(?!\w|\.\d)", text) is not None


def _contains_word(haystack: str, needle: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(needle.lower())}(?!\w)", haystack.lower()) is not None


def _literal_problems(requested: Requested, effects: list[str]) -> list[tuple[Problem, bool]]:
    marked = [lit for text in effects for lit in literals_in(text)]
    out = []
    for x in requested.literals:
        if x in marked:
            continue
        reworded = [y for y in marked if y not in requested.literals and (y.lower() == x.lower() or _contains_word(y, x))]
        if reworded:
            out.append((Problem(check="literal", message=f"the request asks to return exactly '{x}' but an effect "
                                f"returns LITERAL '{reworded[0]}'; return the string exactly as written"), True))
        elif any(f"'{x}'" in t or f'"{x}"' in t for t in effects):
            out.append((Problem(check="literal", message=f"an effect returns '{x}' without the marker; "
                                f"write it as return LITERAL '{x}'"), False))
        else:
            out.append((Problem(check="literal", message=f"the request asks to return exactly '{x}' but no effect "
                                f"says return LITERAL '{x}'"), False))
    return out


def _bool_int_problems(prompt: str, effects: list[str], assertions: list[str]) -> list[tuple[Problem, bool]]:
    effect_text = "\n".join(effects)
    statements = effects + assertions
    bool_at = [m.start() for m in ISINSTANCE_BOOL.finditer(effect_text)]
    int_at = [m.start() for m in ISINSTANCE_INT.finditer(effect_text)]
    named_both = BOOL_WORD.search(prompt) and INT_WORD.search(prompt)
    if not (named_both or (bool_at and int_at)):
        return []
    if any(INT_FIRST.search(s) for s in statements) or (bool_at and int_at and int_at[0] < bool_at[0]):
        return [(Problem(check="bool_before_int", message="int is checked before bool, so True and False would be "
                         "treated as ints; test isinstance(x, bool) first"), True)]
    if any(BOOL_FIRST.search(s) for s in statements) or (bool_at and int_at and bool_at[0] < int_at[0]):
        return []
    return [(Problem(check="bool_before_int", message="the request involves both bool and int but no effect or "
                     "assertion says bool is checked before int (bool is a subclass of int)"), False)]


def _coverage_problems(requested: Requested, effects: list[str]) -> list[tuple[Problem, bool]]:
    return [(Problem(check="return_coverage", message=f"the request returns {v} in some case but no effect covers it"), False)
            for v in requested.values if not any(mentions_value(t, v) for t in effects)]


def precheck(prompt: str, ir: dict | str) -> PreCheck:
    """Check one IR against its request; see the module docstring for the rules and decisions."""
    model, errors = validate_ir(ir)
    if model is None:
        return PreCheck(decision="reject", problems=[Problem(check="schema", message=e) for e in errors])
    effects = [e.description for e in model.effects]
    assertions = [" ".join(filter(None, [a.predicate, a.rationale])) for a in model.assertions]
    requested = requested_returns(prompt)
    found = (_literal_problems(requested, effects) + _bool_int_problems(prompt, effects, assertions)
             + _coverage_problems(requested, effects))
    decision: Decision = "reject" if any(rejects for _, rejects in found) else "needs_review" if found else "accept"
    return PreCheck(decision=decision, problems=[p for p, _ in found])
