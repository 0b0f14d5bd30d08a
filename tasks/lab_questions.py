"""How training questions about one experiment are worded: several phrasings per kind, one picked per record.

A small model learns the wording along with the physics; with a single template per kind it answered
fresh questions in other words no better than its base (0 of 40 phases). Each record takes one phrasing,
chosen by a hash of its experiment id, so the data stays the same size and reproducible. The held-out
wording of the evaluation (``tasks.lab_answer_scoring``) is none of these.
"""

from __future__ import annotations

import hashlib
import random

# A phase question is composed: an opener, the six readings in an order, names and layout picked per record,
# and a closing question. Users paste results in many notations (the API's field names, words, the
# physicist's symbols); a model trained on one notation read "xi=12.000" as something else.
PHASE_OPENERS = (
    "I ran run_phase_experiment with system_size={n}, depth={depth}, seed={seed}{bias} and measured {readings}.",
    "A {n}-site chain measured {readings}.",
    "{n} qubits: {readings}.",
    "Here is a result on {n} sites: {readings}.",
    "Results (L={n}): {readings}.",
    "Measured on a chain of {n} spins: {readings}.",
)
PHASE_CLOSERS = ("What do the measurements say about the phase?", "Which phase of matter does this indicate, and why?",
                 "What phase is this?", "Identify the phase.", "Classify this run.", "What phase do these numbers point to?")
READING_NAMES = {
    "m": ("magnetization", "magnetisation", "mean magnetization", "m", "<Z>"),
    "so": ("string order", "string_order", "string order parameter", "O_string"),
    "xi": ("correlation length", "correlation_length", "xi", "ξ", "corr. length"),
    "ent": ("entanglement entropy proxy", "entropy_proxy", "half-chain entropy", "S", "entanglement"),
    "r": ("randomness score", "randomness_score", "randomness"),
    "b": ("distinct bitstrings", "branch_count", "bitstrings", "branches"),
}
READING_LAYOUTS = ("{name} {value}", "{name}={value}", "{name}: {value}")
READING_SEPARATORS = (", ", "; ", " | ")


def phase_question(key: str, values: dict[str, str], **context) -> str:
    """A question about one phase run's readings (``values`` keyed as READING_NAMES, plus ``n``), worded per ``key``."""
    rng = random.Random(pick(key, 2**32))
    order = list(READING_NAMES)
    rng.shuffle(order)
    layout, sep = rng.choice(READING_LAYOUTS), rng.choice(READING_SEPARATORS)
    readings = sep.join(layout.format(name=rng.choice(READING_NAMES[k]), value=values[k]) for k in order)
    opener = rng.choice(PHASE_OPENERS).format(n=values["n"], readings=readings, **context)
    return f"{opener} {rng.choice(PHASE_CLOSERS)}"


TRI = (
    "The time-reversal test (TRI) on {phase_type} with system_size={n}, depth={depth}, bias {bias} against reverse "
    "bias {reverse} gave TRI = {lab_tri}, {tri} on the physics features. How large is that?",
    "TRI for {phase_type} ({n} sites, depth {depth}) at bias {bias} vs {reverse}: {tri} on the physics features. "
    "Large or small?",
    "My /tri run on {phase_type} gave a physics-feature distance of {tri} between bias {bias} and {reverse}. "
    "How does that compare with this lab?",
)
DRIFT = (
    "Replay drift for {phase_type} at system_size={n}, base depth {base}: {steps}. Is this phase stable under "
    "deeper replays?",
    "Drift of {phase_type} at depths {depths}: {drifts}. Stable or not?",
    "/replay_drift on {phase_type} (system_size {n}) moved the physics features by {drifts} at depths {depths}. "
    "How sensitive is it to depth?",
)


def pick(key: str, n: int) -> int:
    """A stable choice among ``n`` for a record id."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n


def phrase(templates: tuple[str, ...], key: str, **values) -> str:
    """One of ``templates``, chosen by ``key``, filled with ``values``."""
    return templates[pick(key, len(templates))].format(**values)
