"""How training questions about one experiment are worded: several phrasings per kind, one picked per record.

A small model learns the wording along with the physics; with a single template per kind it answered
fresh questions in other words no better than its base (0 of 40 phases). Each record takes one phrasing,
chosen by a hash of its experiment id, so the data stays the same size and reproducible. The held-out
wording of the evaluation (``tasks.ben_lab.lab_answer_scoring``) is none of these.
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


# TRI and drift questions are composed the same way: an opener naming the quantity in one of several ways, a
# closing question. With three fixed templates each, the model met a held-out TRI question ("... differ by
# 0.393 ...") as a drift question and answered "A final depth of ...".
TRI_OPENERS = (
    "The time-reversal test (TRI) on {phase_type} with system_size={n}, depth={depth}, bias {bias} against reverse "
    "bias {reverse} gave TRI = {lab_tri}, {tri} on the physics features.",
    "TRI for {phase_type} ({n} sites, depth {depth}) at bias {bias} vs {reverse}: {tri} on the physics features.",
    "My /tri run on {phase_type} gave a physics-feature distance of {tri} between bias {bias} and {reverse}.",
    "I prepared {phase_type} forward at bias {bias} and in reverse at {reverse}; the two end states are {tri} apart "
    "in feature space.",
    "{phase_type}, {n} sites: time-reversal asymmetry {tri} (bias {bias} forward, {reverse} reverse).",
    "Forward/reverse comparison on {phase_type} at depth {depth}: TRI {tri}.",
)
TRI_CLOSERS = ("How large is that?", "Large or small?", "How does that compare with this lab?",
               "Is that a lot for this lab?", "Is the asymmetry big?", "Big or small, for this lab?")
DRIFT_OPENERS = (
    "Replay drift for {phase_type} at system_size={n}, base depth {base}: {steps}.",
    "Drift of {phase_type} at depths {depths}: {drifts}.",
    "/replay_drift on {phase_type} (system_size {n}) moved the physics features by {drifts} at depths {depths}.",
    "{phase_type} replayed at depths {depths} drifted {drifts} in feature space.",
    "Deeper replays of {phase_type} on {n} sites (depths {depths}) gave feature drifts {drifts}.",
    "I re-ran {phase_type} at depths {depths}; relative to the base run the features shifted {drifts}.",
)
DRIFT_CLOSERS = ("Is this phase stable under deeper replays?", "Stable or not?", "How sensitive is it to depth?",
                 "Does it survive deeper circuits?", "Is that drift large for this lab?", "How robust is it to depth?")


def composed(openers: tuple[str, ...], closers: tuple[str, ...], key: str, **values) -> str:
    """An opener and a closing question, both picked per ``key``, filled with ``values``."""
    rng = random.Random(pick(key, 2**32))
    return f"{rng.choice(openers).format(**values)} {rng.choice(closers)}"


def pick(key: str, n: int) -> int:
    """A stable choice among ``n`` for a record id."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n
