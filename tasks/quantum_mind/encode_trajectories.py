"""Encode the physics of The Well's trajectories into ``features.jsonl``: symmetries with confidences,
conserved quantities with their drift, the dynamics class, characteristic scales and a fixed-length
feature vector (``FEATURE_LAYOUT``; ``tasks.quantum_mind.physics_features`` documents every test).

The source is a local Well dataset directory (``NAME/data/{train,valid,test}/*.hdf5`` or ``*.h5``), a
``datasets/`` root, or an ``hf://`` URL (needs the ``the_well`` package and network). With no source,
labtune's embedded datasets (real PDE solvers, The Well's exact format) are generated into
``<out_dir>/../well_data`` first. Files written by that generator carry the solvers' known physics;
after encoding, the stage scores its labels against it and fails below ``min_truth_accuracy``.
Every grid type is read; on spherical, equiangular or unknown grids the checks that assume a uniform
cartesian grid are skipped, and each record, the manifest and the log say which (``tasks.quantum_mind.grid_geometry``).
In a flow with ``runner.kind: dask``, each local Well file is one shard on the Dask cluster, merged in
reading order (the same ``features.jsonl`` as in-process).

    python -m tasks.quantum_mind.encode_trajectories --out data/quantum_mind/encode [--source data/the_well/datasets]
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.well import the_well
from tasks.quantum_mind import physics_features
from tasks.quantum_mind.physics_features import (
    AXES,
    CONSERVED,
    DYNAMICS,
    SYMMETRIES,
    NothingToMeasure,
    PhysicsThresholds,
)
from tasks.common.records import write_jsonl
from tasks.common.reporting import StageProgress, publish_table, say
from tasks.common.shards import map_shards, shard_runner
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "encode"
Split = Literal["train", "valid", "test"]
FEATURE_LAYOUT = (
    "n_spatial_dims",
    "periodic_x", "periodic_y",                          # 1 when periodic at both ends; 0 otherwise or absent
    *(f"sym_{s}" for s in SYMMETRIES),                    # confidences in [0, 1]; 0 when not applicable
    *(f"conserved_{c}" for c in CONSERVED),               # 1 yes, 0 no, -1 not applicable
    *(f"drift_{c}" for c in CONSERVED),                   # -log10(drift) clipped to [0, 8]; 0 when not applicable
    *(f"dyn_{d.replace('-', '_')}" for d in DYNAMICS),    # one-hot dynamics class
    "dyn_confidence",
    "correlation_length_frac",                           # correlation length / domain length
    "correlation_time_frac",                             # correlation time / duration
    "log10_domain_crossings",                            # log10(1 + velocity * duration / domain length)
    "log10_rms_energy",                                  # clipped to [-8, 8]
    "spectral_entropy",                                  # of the leading observables' spectrum: 0 one line, 1 flat
)


class EncodeConfig(BaseModel):
    """Where the trajectories come from and how the physics tests decide."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, description="Local Well dataset dir, datasets root or hf:// URL; None generates the "
                                                 "embedded datasets into <out_dir>/../well_data")
    splits: list[Split] = Field(["train", "valid", "test"], min_length=1, description="Splits to read (data/<split>/*.hdf5 or *.h5)")
    max_trajectories: int | None = Field(None, gt=0, description="Encode at most this many trajectories (files in sorted order)")
    generator_seed: int = Field(0, description="Seed of the embedded datasets' initial conditions (used when source is None)")
    thresholds: PhysicsThresholds = Field(default_factory=PhysicsThresholds, description="Decision thresholds of the physics tests")
    min_truth_accuracy: float = Field(0.9, ge=0, le=1, description="Fail when labels known from the generator agree with "
                                                                   "the measurements less often than this (0 disables)")
    max_reject_rate: float = Field(0.0, ge=0, le=1, description="Fail when more than this share of trajectories has nothing to "
                                                                "measure (no time-varying field)")


class ConservedQuantity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drift: float = Field(ge=0, description="Largest |Q(t) - Q(0)| over the trajectory, relative to the quantity's scale")
    conserved: bool
    form: str = Field(description="What was integrated (for energy: the best positive quadratic form)")


class Dynamics(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    label: Literal["steady", "transient", "periodic", "quasi-periodic", "chaotic"] = Field(alias="class")
    confidence: float = Field(ge=0, le=1)
    late_activity_ratio: float = Field(description="Mean rate of change over the last quarter / its peak")
    periodic_fit: float | None = Field(description="Forecast skill of one base frequency + harmonics (sustained dynamics only)")
    quasi_periodic_fit: float | None = Field(description="Forecast skill of two base frequencies + combinations")
    dominant_period: float | None = Field(description="1 / best base frequency, in the file's time unit")
    spectral_entropy: float = Field(ge=0, le=1, description="Normalised entropy of the leading observables' spectrum")


class PhysicsFeatures(BaseModel):
    """One line of ``features.jsonl``: the physics of one trajectory."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    file: str
    trajectory: int = Field(ge=0, description="Index of the trajectory in its file")
    n_spatial_dims: int = Field(ge=1, le=3)
    grid_type: str = Field("cartesian", description="The file's grid_type: cartesian, spherical, equiangular, or as written")
    skipped_checks: dict[str, str] = Field(default_factory=dict, description="Checks that assume a uniform cartesian grid, "
                                           "skipped or measured in grid cells on this grid, with why (empty when cartesian)")
    boundary_conditions: dict[str, str] = Field(description="Per axis: PERIODIC | WALL | OPEN ('LOW/HIGH' when the ends differ)")
    fields: list[str] = Field(description="Time-varying fields measured")
    constant_fields: list[str] = Field(description="Time-invariant fields (the medium)")
    symmetries: dict[str, float] = Field(description="Confidence in [0, 1] per applicable symmetry")
    conserved: dict[str, ConservedQuantity]
    dynamics: Dynamics
    scales: dict[str, float]
    feature_vector: list[float] = Field(min_length=len(FEATURE_LAYOUT), max_length=len(FEATURE_LAYOUT))
    simulation_parameters: dict[str, float | int | str | bool]

    @field_validator("symmetries")
    @classmethod
    def _confidences(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if k not in SYMMETRIES or not 0 <= c <= 1}
        if bad:
            raise ValueError(f"expected confidences in [0, 1] for names in {SYMMETRIES}, got {bad}")
        return v

    @field_validator("conserved")
    @classmethod
    def _known(cls, v: dict[str, ConservedQuantity]) -> dict[str, ConservedQuantity]:
        if set(v) - set(CONSERVED):
            raise ValueError(f"unknown conserved quantities {sorted(set(v) - set(CONSERVED))}; expected names in {CONSERVED}")
        return v

    @field_validator("feature_vector", "scales")
    @classmethod
    def _finite(cls, v):
        if not all(math.isfinite(x) for x in (v.values() if isinstance(v, dict) else v)):
            raise ValueError("must hold finite numbers only")
        return v


def well_sources(cfg: EncodeConfig, inputs: Path | list[Path] | None, out_dir: Path) -> list[str | Path]:
    """Where the Well data is: ``inputs``, else ``cfg.source``, else the embedded datasets generated beside ``out_dir``."""
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs or [])]
    if paths and cfg.source:
        raise ValueError(f"encode: Well data given both as inputs {[str(p) for p in paths]} and as source {cfg.source!r}; give one")
    return paths or [cfg.source or Path(out_dir).parent / "well_data" / "datasets"]


def key_of(cfg: EncodeConfig, inputs: Path | list[Path] | None, out_dir: Path) -> tuple[EncodeConfig, list[Path]]:
    """The stage key hashes the local Well files themselves (a hub source is named by the config alone)."""
    sources = well_sources(cfg, inputs, out_dir)
    return cfg, [f for s in sources if not str(s).startswith("hf://") for f in the_well.list_files(s, cfg.splits)]


def encode(cfg: EncodeConfig, inputs: Path | list[Path] | None, out_dir: Path) -> Path:
    """Write ``features.jsonl`` (one ``PhysicsFeatures`` per trajectory) for the Well data in ``inputs`` or ``cfg.source``."""
    out_dir = Path(out_dir)
    started = time.time()
    sources = well_sources(cfg, inputs, out_dir)
    if not (inputs or cfg.source):
        _generate(cfg, out_dir)
    local = [the_well.list_files(s, cfg.splits) for s in sources if not str(s).startswith("hf://")]
    files = [f for group in local for f in group]
    key = stage_key(encode, cfg, inputs, out_dir)  # the code hashed covers physics_features and the_well (transitive)
    if cached(out_dir, key):
        return out_dir
    generated_s = time.time() - started
    total = the_well.count_trajectories(files) if len(local) == len(sources) else (cfg.max_trajectories or 0)
    total = min(total, cfg.max_trajectories or total)
    records, rejects = [], []
    with stage_output(STAGE, out_dir, key, cfg, files) as out:
        if shard_runner() is not None and len(local) == len(sources):
            # One shard per file, merged in reading order: the same records as the loop below.
            plan = file_plan(files, cfg.max_trajectories)
            shards = [{"path": str(f), "limit": n, "thresholds": cfg.thresholds} for f, n in plan]
            for shard_records, shard_rejects in map_shards(_encode_file_shard, shards, f"encode {total} trajectories "
                                                           f"({len(plan)} files)", sizes=[n for _, n in plan]):
                records += shard_records
                rejects += shard_rejects
        else:
            if shard_runner() is not None:
                say("[encode] hf:// sources are read in this process: sharding over files needs local files")
            with StageProgress(f"encode {total} trajectories", total) as progress:
                for source in sources:
                    left = None if cfg.max_trajectories is None else cfg.max_trajectories - len(records) - len(rejects)
                    for traj in the_well.read_trajectories(source, cfg.splits, left):
                        _measure(traj, cfg.thresholds, records, rejects)
                        progress.advance()
        n = len(records) + len(rejects)
        if not n:
            raise ValueError(f"encode: no trajectories found in {[str(s) for s in sources]} (splits {cfg.splits})")
        if len(rejects) / n > cfg.max_reject_rate:
            raise ValueError(f"encode: {len(rejects)} of {n} trajectories have nothing to measure (first: {rejects[0]}); "
                             f"raise encode.max_reject_rate to skip them")
        encode_s = time.time() - started - generated_s
        write_jsonl(out.tmp / "features.jsonl", records)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        check = truth_agreement(records)
        grids = grid_report(records)
        out.counts = {"trajectories": len(records), "rejected": len(rejects), "files": len({r.file for r in records}),
                      "datasets": len({r.dataset for r in records}),
                      "non_cartesian": sum(row["trajectories"] for row in grids.values()),
                      **{f"dynamics_{d}": sum(r.dynamics.label == d for r in records) for d in DYNAMICS}}
        out.metrics = {"generate_seconds": round(generated_s, 2), "encode_seconds": round(encode_s, 2),
                       "seconds_per_trajectory": round(encode_s / n, 4), **check["metrics"]}
        out.extra.update(source=[str(s) for s in sources], feature_layout=list(FEATURE_LAYOUT),
                         per_dataset=check["per_dataset"], truth_mismatches=check["mismatches"], skipped_checks=grids)
        accuracy = check["metrics"].get("truth_accuracy")
        if accuracy is not None and accuracy < cfg.min_truth_accuracy:
            raise ValueError(f"encode: measured physics agrees with the generator's truth on {accuracy:.1%} of labels, below "
                             f"min_truth_accuracy={cfg.min_truth_accuracy}; mismatches: {check['mismatches'][:5]}")
    publish_table(STAGE, check["per_dataset"], f"Physics of {len(records)} trajectories"
                  + (f": {accuracy:.1%} of {check['metrics']['truth_labels']} known labels agree" if accuracy is not None else ""))
    return out_dir


def _measure(traj: the_well.Trajectory, thresholds: PhysicsThresholds, records: list, rejects: list) -> None:
    """Append one trajectory's record, or its reject when it has nothing to measure."""
    try:
        records.append(physics_record(physics_features.encode_trajectory(traj, thresholds)))
    except NothingToMeasure as e:
        rejects.append({"file": traj.file, "trajectory": traj.index, "reason": str(e)})


def file_plan(files: list[Path], max_trajectories: int | None) -> list[tuple[Path, int]]:
    """(file, trajectories to encode from it) in reading order, at most ``max_trajectories`` in all."""
    plan, left = [], max_trajectories
    for f in files:
        n = the_well.count_trajectories([f])
        if left is not None:
            n, left = min(n, left), left - min(n, left)
        if n:
            plan.append((f, n))
    return plan


def encode_file(path: str, limit: int, thresholds: PhysicsThresholds) -> tuple[list[PhysicsFeatures], list[dict]]:
    """Records and rejects of the first ``limit`` trajectories of one local Well file (one shard)."""
    records: list[PhysicsFeatures] = []
    rejects: list[dict] = []
    with the_well.WellFile(path) as wf:
        for traj in itertools.islice(wf, limit):
            _measure(traj, thresholds, records, rejects)
    return records, rejects


@task(name="encode-file", cache_policy=NO_CACHE, persist_result=False)
def _encode_file_shard(path: str, limit: int, thresholds: PhysicsThresholds) -> tuple[list[PhysicsFeatures], list[dict]]:
    """One shard of the encode stage on the flow's task runner (its result goes back to the stage, not to storage)."""
    return encode_file(path, limit, thresholds)


def feature_vector(m: dict) -> list[float]:
    """The fixed-length vector of one trajectory's measurements, laid out as ``FEATURE_LAYOUT``."""
    sym, cons, dyn, sc = m["symmetries"], m["conserved"], m["dynamics"], m["scales"]
    periodic = {ax: bc == "PERIODIC" for ax, bc in m["boundary_conditions"].items()}
    length, duration = sc["domain_length"], sc["duration"]
    v = [m["n_spatial_dims"]] + [float(periodic.get(ax, False)) for ax in AXES[:2]] + [sym.get(s, 0.0) for s in SYMMETRIES]
    v += [float(cons[c]["conserved"]) if c in cons else -1.0 for c in CONSERVED]
    v += [float(min(8.0, max(0.0, -math.log10(max(cons[c]["drift"], 1e-8))))) if c in cons else 0.0 for c in CONSERVED]
    v += [float(dyn["class"] == d) for d in DYNAMICS] + [dyn["confidence"]]
    v += [sc["correlation_length"] / length if length > 0 else 0.0, sc["correlation_time"] / duration if duration > 0 else 1.0,
          math.log10(1 + sc["characteristic_velocity"] * duration / max(length, 1e-12)),
          min(8.0, max(-8.0, math.log10(max(sc["rms_energy"], 1e-8)))), dyn["spectral_entropy"]]
    return [float(x) for x in v]


def physics_record(measured: dict) -> PhysicsFeatures:
    """Validate one trajectory's measurements into a ``PhysicsFeatures`` record with its feature vector."""
    return PhysicsFeatures.model_validate({**measured, "feature_vector": feature_vector(measured)})


def _generate(cfg: EncodeConfig, out_dir: Path) -> Path:
    target = out_dir.parent / "well_data"  # generate_default writes target / "datasets", as well_sources expects
    say(f"[encode] no source configured: using labtune's embedded Well datasets in {target} (generated when missing)")
    from adapters.well.well_solvers import generate_default

    return generate_default(target, cfg.generator_seed)


def grid_report(records: list[PhysicsFeatures]) -> dict[str, dict]:
    """Per dataset on a non-cartesian grid: its grid type and the checks skipped there, each said in the log."""
    report: dict[str, dict] = {}
    for r in records:
        if r.skipped_checks:
            row = report.setdefault(r.dataset, {"grid_type": r.grid_type, "trajectories": 0, "skipped_checks": {}})
            row["trajectories"] += 1
            row["skipped_checks"].update(r.skipped_checks)
    for name, row in report.items():
        why = "; ".join(f"{check}: {reason}" for check, reason in row["skipped_checks"].items())
        say(f"[encode] {name}: grid_type {row['grid_type']!r} is not a uniform cartesian grid, so on its "
            f"{row['trajectories']} trajectories these checks are skipped or changed: {why}")
    return report


def truth_agreement(records: list[PhysicsFeatures]) -> dict:
    """Agreement of the measured labels with the generator's truth (files without truth are skipped)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    per_dataset: dict[str, Counter] = defaultdict(Counter)
    mismatches, truths = [], {}
    for r in records:
        if r.file not in truths:
            truths[r.file] = the_well.read_truth(r.file) if Path(r.file).exists() else None
        truth = (truths[r.file] or [None] * (r.trajectory + 1))[r.trajectory]
        row = per_dataset[r.dataset]
        row["trajectories"] += 1
        row[r.dynamics.label] += 1
        if truth is None:
            continue
        labels = [("symmetry", k, v, r.symmetries.get(k, 0.0) >= 0.5) for k, v in truth["symmetries"].items()]
        labels += [("conservation", k, v, k in r.conserved and r.conserved[k].conserved) for k, v in truth["conserved"].items()]
        labels += [("dynamics", "class", truth["dynamics"], r.dynamics.label)]
        for kind, name, want, got in labels:
            hits[kind].append(want == got)
            row["labels"] += 1
            row["agree"] += want == got
            if want != got:
                mismatches.append({"file": r.file, "trajectory": r.trajectory, "label": name, "truth": want, "measured": got})
    metrics: dict = {}
    every = [h for kind in hits.values() for h in kind]
    if every:
        metrics = {"truth_accuracy": round(sum(every) / len(every), 4), "truth_labels": len(every),
                   **{f"truth_accuracy_{kind}": round(sum(h) / len(h), 4) for kind, h in hits.items()}}
    rows = [{"dataset": name, "trajectories": c["trajectories"],
             **{d: c[d] for d in DYNAMICS if c[d]},
             "truth_accuracy": round(c["agree"] / c["labels"], 4) if c["labels"] else None} for name, c in sorted(per_dataset.items())]
    return {"metrics": metrics, "per_dataset": rows, "mismatches": mismatches}


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def encode_trajectories(cfg: EncodeConfig, inputs: Path | list[Path] | None, out_dir: Path) -> Path:
    """Prefect task: measure the physics of every trajectory into ``features.jsonl``."""
    return encode(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.encode_trajectories", __doc__, EncodeConfig)
    parser.add_argument("--out", type=Path, required=True, help="output directory (features.jsonl, manifest.json)")
    parser.add_argument("--source", help="Well dataset dir, datasets root or hf:// URL (default: generate the embedded datasets)")
    args = parser.parse_args(argv)
    print(encode(config_from_args(EncodeConfig, args, parser, raw_keys=("source",), source=args.source), None, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
