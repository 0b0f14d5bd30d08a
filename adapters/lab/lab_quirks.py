"""The user's own Jarvis lab, as measured (DESIGN.md): the reference lab's ``--quirks`` mode.

A harvester must survive a lab that differs from ours, so the reference lab can answer the way the
user's ``jarvis_api.py`` does, over a real socket:

- ``summary.top_k`` is an int (1); ``correlation_length`` is a fraction of the chain in [0, 1];
  ``string_order`` carries noise and can be slightly negative; ``magnetization`` is signed;
- ``feature_vector`` entries 0-12 are physics, [13] is the wall-clock seconds of the run, [14] the
  system size, [15] the depth, and TRI / drift are L2 distances over all 16 entries;
- a repeated identical experiment in the same server process returns physics features 0-12 all zero;
- nothing is deterministic (experiment ids, small noise on every measurement, the timing feature).
"""

from __future__ import annotations

import itertools
import random
import threading

PHYSICS_FEATURES = 13  # entries 0-12 describe the physics; 13-15 are time, size and depth
NOISE = 0.01           # relative jitter of each measurement: the user's lab is not deterministic
STRING_ORDER_NOISE = 0.01


class JarvisQuirks:
    """Turns a reference experiment into what the user's lab answers; remembers what it has served."""

    def __init__(self) -> None:
        self._rng = random.Random()  # unseeded on purpose
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(random.Random().randrange(1000, 9000))

    def experiment(self, exp: dict, seconds: float) -> dict:
        """The user's lab's answer for one reference experiment (``exp`` as the reference lab builds it)."""
        params = exp["params"]
        key = tuple(params[k] for k in ("phase_type", "system_size", "depth", "seed", "bias"))
        with self._lock:
            repeated = key in self._seen
            self._seen.add(key)
            jitter = [self._rng.gauss(0.0, NOISE) for _ in range(PHYSICS_FEATURES + 8)]
            timing = seconds + self._rng.uniform(0.001, 0.05)
            run_id = next(self._ids)
        physics = [0.0] * PHYSICS_FEATURES if repeated else [
            round(v * (1 + j), 6) + 0.0 for v, j in zip(exp["feature_vector"][:PHYSICS_FEATURES], jitter)]
        n, depth = params["system_size"], params["depth"]
        s = dict(exp["summary"])
        s["top_k"] = 1
        s["correlation_length"] = round(min(1.0, s["correlation_length"] / n * (1 + jitter[-1])), 6)
        s["string_order"] = round(s["string_order"] + self._rng.gauss(0.0, STRING_ORDER_NOISE), 6)
        for k, j in zip(("magnetization", "entropy_proxy", "randomness_score"), jitter[-4:-1]):
            s[k] = round(s[k] * (1 + j), 6) + 0.0
        return {**exp, "experiment_id": run_id, "summary": s,
                "feature_vector": physics + [round(timing, 6), float(n), float(depth)]}

