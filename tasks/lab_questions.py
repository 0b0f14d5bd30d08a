"""How training questions about one experiment are worded: several phrasings per kind, one picked per record.

A small model learns the wording along with the physics; with a single template per kind it answered
fresh questions in other words no better than its base (0 of 40 phases). Each record takes one phrasing,
chosen by a hash of its experiment id, so the data stays the same size and reproducible. The held-out
wording of the evaluation (``tasks.lab_answer_scoring``) is none of these.
"""

from __future__ import annotations

import hashlib

PHASE = (
    "I ran run_phase_experiment with system_size={n}, depth={depth}, seed={seed}{bias} and "
    "measured {measured}. What do the measurements say about the phase?",
    "A {n}-site chain measured {measured}. Which phase of matter does this indicate, and why?",
    "{n} qubits: magnetization={m}, string_order={so}, correlation_length={xi}, entropy_proxy={ent}, "
    "randomness_score={r}, branch_count={b}. What phase is this?",
    "Here is a result: string order {so}, randomness score {r}, correlation length {xi}, magnetization {m}, "
    "entanglement {ent}, {b} bitstrings, on {n} sites. Identify the phase.",
    "Classify this run ({n} sites). entropy_proxy {ent}; randomness_score {r}; string_order {so}; "
    "correlation_length {xi}; magnetization {m}.",
    "What phase do these numbers point to? correlation length {xi}, string order {so}, randomness {r}, "
    "magnetization {m}, entropy {ent} (system_size {n})",
)
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
