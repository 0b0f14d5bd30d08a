"""Naming a phase from its measurements with a rule learnt from the lab's own harvest.

Labs differ in scale (the user's lab reports the correlation length as a fraction of the chain, ours in
sites; its string order is noisy), so no fixed threshold names phases on every lab. Every harvested
phase run is labelled by the phase that was requested, so the harvest teaches its own rule: the
measurements are standardised over the harvest and a run is named after the nearest phase centroid.
When the two nearest centroids are almost equally near, the verdict says the measurements do not
separate those two phases instead of asserting one.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SUMMARY_STATS = ("magnetization", "entropy_proxy", "correlation_length", "string_order", "randomness_score",
                 "branch_count", "interfered_count")


class Verdict(NamedTuple):
    phase: str
    runner_up: str | None
    ambiguous: bool


class PhaseCalibration(BaseModel):
    """A lab's phase rule, learnt from one harvest: standardisation and one centroid per phase."""

    model_config = ConfigDict(extra="forbid")
    features: list[str] = Field(description="Names of the measurements the rule uses, in order")
    mean: list[float] = Field(description="Harvest mean of each measurement")
    scale: list[float] = Field(description="Harvest standard deviation of each measurement")
    centroids: dict[str, list[float]] = Field(description="Standardised centroid of each phase")
    ambiguity_ratio: float = Field(0.8, description="Nearest / second-nearest centroid distance above this → "
                                   "the measurements do not separate the two phases")
    correlation_in_sites: bool = Field(description="The lab reports correlation_length in sites (else as a fraction of the chain)")

    def classify(self, summary: dict, physics: list[float] | None) -> Verdict:
        """The phase the measurements indicate (independent of what was requested)."""
        x = (measurement_vector(summary, physics, self.correlation_in_sites) - np.array(self.mean)) / np.array(self.scale)
        dist = sorted((float(np.linalg.norm(x - np.array(c))), p) for p, c in self.centroids.items())
        if len(dist) == 1:
            return Verdict(dist[0][1], None, False)
        (d1, p1), (d2, p2) = dist[:2]
        return Verdict(p1, p2, d2 > 0 and d1 / d2 > self.ambiguity_ratio)


def measurement_vector(summary: dict, physics: list[float] | None, correlation_in_sites: bool) -> np.ndarray:
    """The numbers a verdict rests on: summary statistics (size-free) and the physics features."""
    n = max(1.0, float(summary["system_size"]))
    xi = float(summary["correlation_length"]) / (n if correlation_in_sites else 1.0)
    values = [abs(float(summary["magnetization"])), float(summary["entropy_proxy"]), xi, float(summary["string_order"]),
              float(summary["randomness_score"]), math.log1p(max(0.0, float(summary["branch_count"]))),
              float(summary["interfered_count"]) / n]
    return np.array(values + list(physics or []), dtype=float)


def fit_calibration(summaries: list[dict], physics: list[list[float] | None], labels: list[str],
                    ambiguity_ratio: float = 0.8) -> PhaseCalibration:
    """Learn the rule from labelled runs (``labels``: the requested phase of each run)."""
    in_sites = any(float(s["correlation_length"]) > 1.0 for s in summaries)
    width = min((len(p or []) for p in physics), default=0)
    X = np.array([measurement_vector(s, (p or [])[:width], in_sites) for s, p in zip(summaries, physics)])
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant measurement says nothing; leave it unscaled
    Z = (X - mean) / scale
    phases = sorted(set(labels))
    centroids = {p: Z[[lab == p for lab in labels]].mean(axis=0).round(6).tolist() for p in phases}
    names = [*SUMMARY_STATS, *(f"feature_{i}" for i in range(width))]
    return PhaseCalibration(features=names, mean=mean.round(9).tolist(), scale=scale.round(9).tolist(),
                            centroids=centroids, ambiguity_ratio=ambiguity_ratio, correlation_in_sites=in_sites)


def verdict_sentence(verdict: Verdict) -> str:
    """'the X phase', or, when the measurements do not separate two phases, says so."""
    if verdict.ambiguous:
        return (f"either the {verdict.phase} or the {verdict.runner_up} phase: in this lab the measurements do not "
                f"clearly separate the two, with {verdict.phase} slightly nearer")
    return f"the {verdict.phase} phase"


MEANING = {"spt_cluster": "hidden, non-local string order without a local order parameter: symmetry-protected "
                          "topological order",
           "ising_symmetry_breaking": "long-range ZZ order across the chain, as in a symmetry-broken ferromagnet",
           "pseudorandom": "a scrambled state without order, its outcomes spread over many bitstrings",
           "trivial_product": "an unentangled product state without order"}


# The readings a spoken rule may use, with the words for a value above and below its cutoff.
READINGS = {"string_order": ("string order", "high", "low"),
            "randomness_score": ("randomness", "high", "low"),
            "correlation_length": ("correlation length", "long", "short")}


class SignatureStep(BaseModel):
    """One line of a spoken rule: a reading above ``cutoff`` decides ``phase``."""

    model_config = ConfigDict(extra="forbid")
    reading: str = Field(description="Summary statistic read at this step (a key of READINGS)")
    cutoff: float = Field(description="Values above this read high (long) and decide the phase")
    phase: str = Field(description="The phase a high reading decides")


class PhaseSignature(BaseModel):
    """A lab's phase rule as a short decision list a small model can say aloud and follow.

    The centroid rule weighs twenty standardised numbers; no 135M model reproduces that in words. A
    decision list reads one number at a time against a cutoff, so an answer can spell out every step
    before naming the phase, and each step is a single comparison.
    """

    model_config = ConfigDict(extra="forbid")
    steps: list[SignatureStep] = Field(description="Readings in the order they are checked")
    otherwise: str = Field(description="The phase when every reading is low")
    accuracy: float = Field(description="Share of the harvest's phase runs the list names as requested")

    def decide(self, summary: dict) -> tuple[str, int]:
        """(phase, number of steps read) for a run's summary statistics."""
        for i, step in enumerate(self.steps):
            if float(summary[step.reading]) > step.cutoff:
                return step.phase, i + 1
        return self.otherwise, len(self.steps)

    def reasoning(self, summary: dict, fmt: Callable) -> tuple[str, str]:
        """(the readings up to the deciding one, each called high or low, the phase they decide)."""
        phase, read = self.decide(summary)
        said = []
        for step in self.steps[:read]:
            name, high, low = READINGS[step.reading]
            said.append(f"{name} {fmt(summary[step.reading])} is {high if float(summary[step.reading]) > step.cutoff else low}")
        # One separator whatever follows: with "a, b and c" the model had to choose "," or "and" before reading
        # the next number, and a wrong guess at that comma carried it past the reading that decides.
        text = "; ".join(said)
        return text[0].upper() + text[1:], phase


def fit_signature(summaries: list[dict], labels: list[str]) -> PhaseSignature:
    """Greedy decision list: at each step the (reading, phase) whose cutoff best splits that phase off the rest.

    Ties go to the wider gap between the two sides (in units of the reading's spread), so a clean
    separation is preferred over a lucky one; the phase left at the end is the ``otherwise``.
    """
    remaining, runs, steps = sorted(set(labels)), list(range(len(labels))), []
    while len(remaining) > 1:
        best = None
        for phase in remaining:
            for reading in READINGS:
                values = [float(summaries[i][reading]) for i in runs]
                cutoff, right, gap = _best_cutoff(values, [labels[i] == phase for i in runs])
                score = (right, gap, -list(READINGS).index(reading))
                if best is None or score > best[0]:
                    best = (score, SignatureStep(reading=reading, cutoff=round(cutoff, 6), phase=phase))
        steps.append(best[1])
        remaining.remove(best[1].phase)
        runs = [i for i in runs if labels[i] != best[1].phase]
    rule = PhaseSignature(steps=steps, otherwise=remaining[0], accuracy=0.0)
    right = sum(rule.decide(s)[0] == lab for s, lab in zip(summaries, labels))
    return rule.model_copy(update={"accuracy": round(right / max(1, len(labels)), 4)})


def _best_cutoff(values: list[float], positive: list[bool]) -> tuple[float, int, float]:
    """(cutoff, runs split right, normalised gap) of the best 'positive when above' threshold."""
    order = sorted(zip(values, positive))
    spread = float(np.std(values)) or 1.0
    total_pos = sum(positive)
    best = (order[0][0] - 1.0, total_pos, 0.0)  # everything above: all positives right, no negatives
    neg_below = pos_below = 0
    for j, (v, pos) in enumerate(order):
        neg_below += not pos
        pos_below += pos
        nxt = order[j + 1][0] if j + 1 < len(order) else None
        if nxt is not None and nxt == v:
            continue
        right = neg_below + (total_pos - pos_below)
        gap = 0.0 if nxt is None else (nxt - v) / spread
        cut = v + 1.0 if nxt is None else (v + nxt) / 2
        if (right, gap) > best[1:]:
            best = (cut, right, gap)
    return best
