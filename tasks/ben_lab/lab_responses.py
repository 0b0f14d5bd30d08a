"""What a harvested lab response says about the physics, and whether it can be trusted.

A Jarvis lab's feature vector mixes physics with bookkeeping (the user's lab puts the wall-clock time,
the system size and the depth in entries 13-15), and its TRI and drift are distances over every entry,
so they carry timing noise. The harvest keeps only the configured physics entries for comparisons,
recomputes TRI and drift on them, and screens out degenerate responses: all physics features zero or
equal (the user's lab answers a repeated request that way), or a repeat of another experiment's answer.
"""

from __future__ import annotations

import math

from adapters.lab.lab_client import LabResponseError

FINGERPRINT_DIGITS = 6


def physics_part(vector: list[float], indices: list[int] | None, where: str) -> list[float]:
    """The physics entries of a feature vector (all of them when ``indices`` is None)."""
    if indices is None:
        return list(vector)
    if indices and max(indices) >= len(vector):
        raise LabResponseError(f"{where}: feature vector has {len(vector)} entries, but harvest.physics_features "
                               f"asks for entry {max(indices)}; set harvest.physics_features to your lab's layout")
    return [vector[i] for i in indices]


def feature_vectors(kind: str, response: dict) -> list[tuple[str, list[float]]]:
    """(field, vector) of every feature vector in a response; /discovery has none."""
    if kind == "phase":
        return [("feature_vector", response["feature_vector"])]
    if kind == "tri":
        return [("forward_features", response["forward_features"]), ("reverse_features", response["reverse_features"])]
    if kind == "replay_drift":
        return [(f"runs[{i}].features", run["features"]) for i, run in enumerate(response["runs"])]
    return []


def degenerate_reason(vector: list[float]) -> str | None:
    """Why a physics vector carries no measurement, or None when it is usable."""
    if not vector:
        return "no physics features"
    if all(v == 0 for v in vector):
        return "all physics features are zero"
    if not all(math.isfinite(v) for v in vector):
        return "a physics feature is not finite"
    if len(vector) > 1 and max(vector) == min(vector):
        return f"all physics features equal {vector[0]:g}"
    return None


def fingerprint(vector: list[float]) -> tuple[float, ...]:
    """A vector as compared for repeats (rounded, so float noise in a lab's JSON does not hide one)."""
    return tuple(round(v, FINGERPRINT_DIGITS) + 0.0 for v in vector)


def screen(row: dict, indices: list[int] | None, seen: dict[tuple, str]) -> str | None:
    """Why a harvested row is degenerate (naming the field), or None; ``seen`` maps earlier vectors to their ids."""
    vectors = [(field, physics_part(v, indices, f"{row['endpoint']} {field}"))
               for field, v in feature_vectors(row["kind"], row["response"])]
    for field, vector in vectors:
        reason = degenerate_reason(vector)
        if reason:
            return f"{field}: {reason}"
    for field, vector in vectors:
        earlier = seen.get(fingerprint(vector))
        if earlier is not None and earlier != row["id"]:
            return f"{field}: repeats the features of {earlier} (different parameters)"
    return None


def remember(row: dict, indices: list[int] | None, seen: dict[tuple, str]) -> None:
    """Record an accepted row's vectors so a later repeat of them is caught."""
    for field, v in feature_vectors(row["kind"], row["response"]):
        seen.setdefault(fingerprint(physics_part(v, indices, field)), row["id"])


def distance(a: list[float], b: list[float]) -> float:
    """L2 distance of two physics vectors."""
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def physics_view(row: dict, indices: list[int] | None) -> dict:
    """What a row says on the physics entries alone: features, TRI and drift recomputed on them."""
    kind, res = row["kind"], row["response"]
    if kind == "phase":
        return {"features": physics_part(res["feature_vector"], indices, "feature_vector")}
    if kind == "tri":
        fwd = physics_part(res["forward_features"], indices, "forward_features")
        rev = physics_part(res["reverse_features"], indices, "reverse_features")
        return {"tri": round(distance(fwd, rev), 6)}
    if kind == "replay_drift":
        runs = [physics_part(r["features"], indices, "runs.features") for r in res["runs"]]
        return {"drift": [round(distance(v, runs[0]), 6) for v in runs]}
    return {}
