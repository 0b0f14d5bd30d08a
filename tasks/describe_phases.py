"""Naming a phase from its measured summary, and the physics reasons quoted in answers."""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field


class PhaseThresholds(BaseModel):
    """Cut-offs on the lab's summary numbers that separate the four phases."""

    model_config = ConfigDict(extra="forbid")
    string_order: float = Field(0.5, description="string_order above this → SPT cluster phase")
    randomness: float = Field(0.3, description="randomness_score above this (no string order, short correlations) → pseudorandom")
    ordered_correlation_fraction: float = Field(0.5, description="correlation_length / system_size above this → ordered Ising")


def classify_phase(summary: dict, th: PhaseThresholds) -> str:
    """The phase the measurements indicate (independent of what was requested)."""
    if summary["string_order"] >= th.string_order:
        return "spt_cluster"
    if summary["correlation_length"] >= th.ordered_correlation_fraction * summary["system_size"]:
        return "ising_symmetry_breaking"
    if summary["randomness_score"] >= th.randomness:
        return "pseudorandom"
    return "trivial_product"


def phase_reasoning(phase: str, s: dict, th: PhaseThresholds, fmt: Callable) -> str:
    """Why the numbers point to ``phase``; quotes only numbers from the summary."""
    so, m, xi, ent, r = (fmt(s[k]) for k in ("string_order", "magnetization", "correlation_length", "entropy_proxy", "randomness_score"))
    if phase == "spt_cluster":
        return (f"A string order of {so} with magnetization {m} means hidden, non-local order without a local order "
                "parameter: the signature of the symmetry-protected topological cluster phase.")
    if phase == "pseudorandom":
        return (f"The randomness score {r} and entanglement proxy {ent}, with no string order ({so}), show a scrambled state "
                "whose measurement outcomes spread over many bitstrings: pseudorandom, not an ordered phase.")
    if phase == "ising_symmetry_breaking":
        return (f"A correlation length of {xi} spanning the chain, with string order {so}, shows long-range ZZ order: "
                "the Ising symmetry-broken (ferromagnetic) phase.")
    return (f"A short correlation length ({xi}), string order {so} and low entanglement ({ent}) describe an unentangled "
            "product state: the trivial phase.")
