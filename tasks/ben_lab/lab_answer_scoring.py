"""Held-out questions about a lab and how an answer to each is scored (pure functions, no model).

Fresh experiments are asked about in wording unlike the training templates (``tasks.ben_lab.describe_experiments``):
the readings come as a user would paste them, in another order and other words. An answer is right when
the first phase it names is the one the lab's learnt rule indicates (either, where the rule cannot separate
two), when its size word for a TRI or a final drift matches this lab's quartiles, or, for the user's own
verification prompts, by the share of required facts it states.
"""

from __future__ import annotations

import re

from tasks.ben_lab.calibrate_phases import size_word
from tasks.ben_lab.describe_experiments import fmt, grounding_numbers, unsupported_numbers
from tasks.ben_lab.describe_phases import PhaseCalibration
from tasks.ben_lab.lab_concepts import EVAL_PROMPTS

PHASE_WORDS = [("ising_symmetry_breaking", r"ising"), ("spt_cluster", r"\bspt\b|spt_cluster|cluster phase|cluster state"),
               ("trivial_product", r"trivial|product state"), ("pseudorandom", r"pseudo-?random")]
SIZE_WORDS = [("large", r"\blarge\b|\bbig\b|\bhigh\b|strongly sensitive"), ("typical", r"typical|moderate|medium"),
              ("small", r"\bsmall\b|\blow\b|nearly agree|\bstable\b")]

PHASE_TEMPLATES = (
    "Readings from my {n}-qubit chain: string order parameter {so}, mean magnetization {m}, correlation length {xi}, "
    "half-chain entanglement {ent}, randomness {r}, {b} distinct bitstrings. Which of the four phase types is this?",
    "Which phase produced this? N={n}, randomness={r}, string_order={so}, xi={xi}, S={ent}, m={m}, branches={b}.",
    "My lab gave magnetisation {m}; correlation length {xi}; string order {so}; entropy {ent}; randomness {r} "
    "on {n} sites. Name the phase.",
)
TRI_TEMPLATE = ("Forward and reverse {phase} runs at bias {b} and {rb} differ by {tri} on the physics features. "
                "Is that a big time-reversal asymmetry for my lab, or a small one?")
DRIFT_TEMPLATE = ("I replayed {phase} at depths {depths}; the physics features moved by {drifts} from the first run. "
                  "Does this phase hold up under deeper circuits?")


def first_match(text: str, words: list[tuple[str, str]]) -> str | None:
    """The label whose pattern occurs earliest in ``text`` (case-insensitive), or None."""
    hits = [(m.start(), label) for label, pattern in words for m in [re.search(pattern, text, re.IGNORECASE)] if m]
    return min(hits)[1] if hits else None


def phase_question(row: dict, rule: PhaseCalibration, i: int) -> dict:
    """A held-out question about one fresh phase run, with the answers that count as right."""
    s = row["response"]["summary"]
    verdict = rule.classify(s, row.get("physics", {}).get("features"))
    q = PHASE_TEMPLATES[i % len(PHASE_TEMPLATES)].format(
        n=s["system_size"], so=fmt(s["string_order"]), m=fmt(s["magnetization"]), xi=fmt(s["correlation_length"]),
        ent=fmt(s["entropy_proxy"]), r=fmt(s["randomness_score"]), b=s["branch_count"])
    right = [verdict.phase] + ([verdict.runner_up] if verdict.ambiguous else [])
    return {"kind": "phase", "id": row["id"], "question": q, "right": right, "grounding": [row["request"], row["response"]]}


def tri_question(row: dict, scale: dict) -> dict:
    req, tri = row["request"], row["physics"]["tri"]
    q = TRI_TEMPLATE.format(phase=req["phase_type"], b=fmt(req["bias"]), rb=fmt(1 - req["bias"]), tri=fmt(tri))
    return {"kind": "tri", "id": row["id"], "question": q, "right": [size_word(tri, scale)],
            "grounding": [row["request"], row["physics"], scale]}


def drift_question(row: dict, scale: dict) -> dict:
    runs, drifts = row["response"]["runs"], row["physics"]["drift"]
    q = DRIFT_TEMPLATE.format(phase=row["request"]["phase_type"], depths=", ".join(str(r["depth"]) for r in runs),
                              drifts=", ".join(fmt(d) for d in drifts))
    return {"kind": "drift", "id": row["id"], "question": q, "right": [size_word(drifts[-1], scale)],
            "grounding": [row["request"], row["physics"], scale]}


def prompt_questions(calibration: dict) -> list[dict]:
    """The user's verification prompts, with the facts (alternatives per fact) a right answer states."""
    means = calibration.get("mean_tri_by_phase") or {}
    best = max(means, key=means.get) if means else "ising_symmetry_breaking"
    return [{"kind": "prompt", "id": f"prompt-{i}", "question": q,
             "facts": [[alt.replace("{best_phase}", best) for alt in fact] for fact in facts], "grounding": [calibration]}
            for i, (q, facts) in enumerate(EVAL_PROMPTS.items())]


def score_answer(item: dict, answer: str) -> dict:
    """Right or wrong (or the share of facts stated), and the numbers the answer quotes without grounds."""
    text = answer.lower()
    if item["kind"] == "prompt":
        stated = [any(alt.lower() in f" {text} " for alt in fact) for fact in item["facts"]]
        score = sum(stated) / len(stated)
    else:
        picked = first_match(answer, PHASE_WORDS if item["kind"] == "phase" else SIZE_WORDS)
        score = float(picked in item["right"])
    quoted = re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", answer)
    invented = unsupported_numbers(answer, grounding_numbers(*item["grounding"], item["question"]))
    return {"score": score, "numbers": len(quoted), "ungrounded": len(invented), "invented": invented}
