"""The Jarvis lab API as pydantic models: requests with their ranges and defaults, responses as returned.

The reference server validates requests with these models (FastAPI turns violations into HTTP 422)
and the client validates every response with them. Requests forbid unknown fields, so a typo such
as ``sytem_size`` is an error instead of a silent default. Responses are liberal in what
they accept, because users' own Jarvis labs differ from the reference one (DESIGN.md): extra fields are
kept, ids may be numbers, ``top_k`` may be an int, a list or a dict, and a feature vector may carry
non-physics entries (a wall-clock time, the size, the depth) whose positions the harvest is told.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from adapters.lab.lab_physics import FEATURES, PHASE_TYPES

PhaseType = Literal["ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom"]
assert get_args(PhaseType) == PHASE_TYPES, "PhaseType must list adapters.lab.lab_physics.PHASE_TYPES"
FEATURE_LENGTH = len(FEATURES)
MAX_DEPTH = 32

Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Seed of couplings, random gates and shots")]
SystemSize = Annotated[int, Field(ge=4, le=256, description="Number of qubits in the open chain")]
Depth = Annotated[int, Field(ge=1, le=MAX_DEPTH, description="Evolution layers after preparation")]
# Some labs number their experiments; the pipeline only needs a stable string.
ExperimentId = Annotated[str, BeforeValidator(lambda v: str(v) if type(v) is int else v)]
# Which entries are physics is the harvest's business (``HarvestConfig.physics_features``), not the schema's.
FeatureVector = Annotated[list[float], Field(min_length=1, max_length=4096)]


class LabRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunPhaseRequest(LabRequest):
    """Body of ``POST /run_phase_experiment``."""

    phase_type: PhaseType = Field("ising_symmetry_breaking", description="Phase to prepare")
    system_size: SystemSize = 32
    depth: Depth = 8
    seed: Seed = 42
    bias: float | None = Field(None, ge=0, le=1, description="|1> population of the tilted preparation; None = 1/2")


class TRIRequest(LabRequest):
    """Body of ``POST /tri``: the run at ``bias`` against the run at ``1 - bias``, same seed."""

    phase_type: PhaseType = "ising_symmetry_breaking"
    system_size: SystemSize = 32
    depth: Depth = 8
    bias: float = Field(0.7, ge=0, le=1, description="Forward bias; the reverse run uses 1 - bias")
    seed: Seed = 42


class DiscoveryRequest(LabRequest):
    """Body of ``POST /discovery``. ``system_size``, ``depth`` and ``seed`` are labtune extensions
    (optional; users' labs pick their own)."""

    phases: list[PhaseType] = Field(list(PHASE_TYPES), min_length=1, description="Phases to sample (distinct)")
    num_per_phase: int = Field(20, ge=5, le=100, description="Runs per phase (seeds seed .. seed+n-1)")
    k: int | None = Field(None, ge=2, le=10, description="Clusters; default max(2, len(phases))")
    iterations: int = Field(25, ge=10, le=100, description="Lloyd iterations of k-means")
    system_size: SystemSize = 32
    depth: Depth = 8
    seed: Seed = 0

    @model_validator(mode="after")
    def _check(self) -> "DiscoveryRequest":
        if len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases must be distinct, got {self.phases}")
        if self.k is not None and self.k > len(self.phases) * self.num_per_phase:
            raise ValueError(f"k={self.k} exceeds the {len(self.phases) * self.num_per_phase} samples")
        return self

    @property
    def clusters(self) -> int:
        return self.k if self.k is not None else max(2, len(self.phases))


class ReplayDriftRequest(LabRequest):
    """Body of ``POST /replay_drift``: the same experiment replayed at ``base_depth * factor``."""

    phase_type: PhaseType = "ising_symmetry_breaking"
    system_size: SystemSize = 32
    base_depth: Depth = 6
    seed: Seed = 123
    depth_factors: list[Annotated[int, Field(ge=1)]] = Field([1, 2, 3], min_length=1, max_length=8)

    @model_validator(mode="after")
    def _check(self) -> "ReplayDriftRequest":
        deepest = self.base_depth * max(self.depth_factors)
        if deepest > MAX_DEPTH:
            raise ValueError(f"base_depth * max(depth_factors) = {deepest} exceeds the maximum depth {MAX_DEPTH}")
        return self


class LabResponse(BaseModel):
    model_config = ConfigDict(extra="allow")


class HealthResponse(LabResponse):
    """``GET /health``."""

    status: str
    lab: str
    devices: int


class PhaseSummary(LabResponse):
    """Measured quantities of one run (definitions in ``adapters.lab.lab_physics``)."""

    phase_type: str
    system_size: int
    depth: int
    seed: int
    top_k: Any = None  # a list of bitstrings here, an int (k) in users' labs: informational only
    magnetization: float
    entropy_proxy: float
    correlation_length: float
    string_order: float
    randomness_score: float
    branch_count: int
    interfered_count: int


class PhaseExperimentResponse(LabResponse):
    """``POST /run_phase_experiment``."""

    experiment_id: ExperimentId
    phase_type: str
    feature_vector: FeatureVector
    summary: PhaseSummary
    params: dict[str, Any]


class TRIResponse(LabResponse):
    """``POST /tri``."""

    forward_id: ExperimentId
    reverse_id: ExperimentId
    forward_features: FeatureVector
    reverse_features: FeatureVector
    TRI: float
    params: dict[str, Any]


class DiscoveryResponse(LabResponse):
    """``POST /discovery``: per cluster, how many runs of each phase landed in it."""

    cluster_label_stats: list[dict[str, int]]
    num_samples: int
    num_clusters: int
    phases: list[str]


class DriftRun(LabResponse):
    """One replay in ``POST /replay_drift``; ``drift`` is the L2 distance to the first run."""

    depth: int
    id: ExperimentId
    features: FeatureVector
    drift: float


class ReplayDriftResponse(LabResponse):
    """``POST /replay_drift``."""

    phase_type: str
    base_depth: int
    runs: list[DriftRun]
