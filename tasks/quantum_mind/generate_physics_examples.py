"""Training examples that turn measured physics into circuits (quantum-mind stage 3).

Each trajectory's ``PhysicsFeatures`` (tasks/quantum_mind/encode_trajectories.py) decides a circuit design, and
each example explains that design from the measured numbers (drifts, symmetry confidences, periods,
correlation lengths, boundary conditions) and ends in exactly one ```python block that follows the
verifier's code contract (tasks/quantum_mind/verify_circuits.py), with claims that are true by construction:

- ``physics_to_circuit``: physics description → circuit
- ``simulation_to_insight``: simulation behaviour → physics insight + circuit implications
- ``conservation_to_constraint``: conservation law → circuit constraint
- ``physics_reasoning``: a step-by-step chain from the features to the circuit (the mix's
  physics-reasoning source). It too ends in a code block, so the select step after verification
  treats every record alike.

The design rules live in tasks/quantum_mind/circuit_design.py, the explanations in tasks/quantum_mind/physics_reasoning.py.

``examples`` counts the records of both files; ``reasoning_share`` of them are physics_reasoning,
the rest are split evenly over the three seed types. Trajectories are used round-robin. Trajectories of
``holdout_splits`` and every trajectory of ``holdout_datasets`` (whole PDE families) never become
examples: the validation suite asks about them.

Outputs: ``physics_augmented.jsonl`` and ``physics_reasoning.jsonl`` (the users' record shape),
``chat_physics.jsonl`` and ``chat_reasoning.jsonl`` (ChatRecords), ``code.jsonl`` ({id, code, claims}
per distinct code block: the verify stage's input), ``rejects.jsonl`` (trajectories no enabled
family fits), ``manifest.json``.

    python -m tasks.quantum_mind.generate_physics_examples --features data/quantum_mind/encode/features.jsonl --out data/quantum_mind/generate
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.brief_answers import brief_example
from tasks.quantum_mind.circuit_design import design, eligible_families, enabled_families
from tasks.quantum_mind.encode_trajectories import PhysicsFeatures
from tasks.quantum_mind.physics_reasoning import REASONING, SEED_TYPES, example_text
from tasks.common.records import ChatRecord, read_models, write_jsonl
from tasks.common.reporting import StageProgress, counts_table, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "generate"
Family = Literal["u1_givens", "u1_exchange", "z2_parity", "hardware_efficient", "qaoa"]


class GenerateConfig(BaseModel):
    """How many examples, of which kinds, and the range of circuits they may use."""

    model_config = ConfigDict(extra="forbid")
    examples: int = Field(5000, ge=1, description="Records written in total (physics_augmented + physics_reasoning)")
    reasoning_share: float = Field(0.2, ge=0, le=1, description="Share of `examples` that are physics_reasoning records "
                                                                "(the rest split evenly over the three seed types)")
    min_qubits: int = Field(4, ge=2, le=16, description="Smallest circuit width")
    max_qubits: int = Field(12, ge=2, le=16, description="Largest circuit width (the verifier simulates up to its max_qubits)")
    max_layers: int = Field(6, ge=1, le=12, description="Deepest ansatz, in layers")
    families: list[Family] = Field(list(cf.FAMILIES), min_length=1, description="Circuit families allowed")
    baseline_share: float = Field(0.2, ge=0, le=1, description="Share of baseline families (hardware_efficient, qaoa) where "
                                                               "a symmetric family also fits (conservation examples never use them then)")
    symmetry_confidence: float = Field(0.5, gt=0, lt=1, description="Confidence from which a measured symmetry shapes the circuit")
    answer: Literal["full", "brief"] = Field("full", description="full: every design decision explained from the "
                                             "measurements (~800 tokens) before the code; brief: one paragraph, then one "
                                             "Qiskit library call on a chain or ring (the families with a library "
                                             "builder), what a small model learns on a CPU")
    holdout_splits: list[str] = Field(["test"], description="Well splits whose trajectories are kept out of training "
                                                            "(the validation suite builds its prompts from them)")
    holdout_datasets: list[str] = Field([], description="Well datasets (whole PDE families) kept out of training in every "
                                                        "split: the validation suite's novel-physics prompts ask about them")
    min_distinct_share: float = Field(0.9, ge=0, le=1, description="Fail when fewer code blocks than this share are distinct")
    max_reject_rate: float = Field(0.5, ge=0, le=1, description="Fail when more trajectories than this share fit no enabled family")
    system_prompt: str = Field("You are a physicist who designs quantum circuits from measured simulation data. Cite the "
                               "measurements, then give one Qiskit code block.", description="System message of the chat records")
    seed: int = Field(0, description="Seed of every choice (same seed + features → same files)")

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_qubits > self.max_qubits:
            raise ValueError(f"generate: min_qubits ({self.min_qubits}) is above max_qubits ({self.max_qubits})")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"generate: families repeat: {self.families}")
        return self



def read_features(path: Path) -> list[PhysicsFeatures]:
    """PhysicsFeatures records; a bad one raises RecordError naming the file, record and field."""
    return read_models(path, PhysicsFeatures)



def features_path(inputs: Path) -> Path:
    """``features.jsonl``, given as the file or as the encode stage's output dir."""
    return Path(inputs) / "features.jsonl" if Path(inputs).is_dir() else Path(inputs)


def key_of(cfg: GenerateConfig, inputs: Path, out_dir: Path) -> tuple[GenerateConfig, Path]:
    """The stage key hashes ``features.jsonl``, not the encode stage's manifest."""
    return cfg, features_path(inputs)


def generate(cfg: GenerateConfig, inputs: Path, out_dir: Path) -> Path:
    """Write the example files, code.jsonl and chat records for the trajectories in ``inputs``."""
    out_dir, features_file = Path(out_dir), features_path(inputs)
    key = stage_key(generate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    started = time.time()
    trajectories, rejects = [], []
    features = read_features(features_file)
    kept = [f for f in features if Path(f.file).parent.name not in cfg.holdout_splits and f.dataset not in cfg.holdout_datasets]
    held_out = len(features) - len(kept)
    absent = sorted(set(cfg.holdout_datasets) - {f.dataset for f in features})
    if absent:
        say(f"[generate] holdout_datasets {absent} are not among the encoded datasets "
            f"{sorted({f.dataset for f in features})}: nothing of theirs to hold out")
    for f in kept:
        fams = eligible_families(f, enabled_families(cfg))
        if fams:
            trajectories.append((f, fams))
        else:
            rejects.append({"dataset": f.dataset, "file": f.file, "trajectory": f.trajectory,
                            "reason": f"no enabled family fits (enabled: {cfg.families}; conserved: "
                                      f"{[q for q, c in f.conserved.items() if c.conserved] or 'nothing'})"})
    n_in = len(trajectories) + len(rejects)
    if not n_in:
        raise ValueError(f"generate: no trajectories in {features_file}"
                         + (f" outside the held-out splits {cfg.holdout_splits} and datasets {cfg.holdout_datasets} "
                            "(hold out fewer: generate.holdout_splits, generate.holdout_datasets)" if held_out else ""))
    if not trajectories or len(rejects) / n_in > cfg.max_reject_rate:
        raise ValueError(f"generate: {len(rejects)} of {n_in} trajectories fit none of the enabled families {cfg.families} "
                         f"(first: {rejects[0]['reason']}); enable hardware_efficient or qaoa, or raise max_reject_rate")
    rng = random.Random(cfg.seed)
    n_reason = round(cfg.examples * cfg.reasoning_share)
    kinds = [SEED_TYPES[i % 3] for i in range(cfg.examples - n_reason)] + [REASONING] * n_reason
    order = rng.sample(trajectories, len(trajectories))
    rows, code_rows, seen, fingerprints = [], {}, set(), []
    with StageProgress(f"generate {cfg.examples} examples", cfg.examples) as progress:
        for i, kind in enumerate(kinds):
            f, fams = order[i % len(order)]
            symmetric = [x for x in fams if x not in cf.BASELINES]
            forced = rng.choice(symmetric) if kind == "conservation_to_constraint" and symmetric else None
            family = forced
            for _ in range(30):  # redraw a design whose code another example already uses, in the family first drawn:
                d = design(f, cfg, rng, family)  # else the families with fewer distinct circuits lose their share
                family = d.spec.family
                code, claims = cf.render(d.spec)
                fp = cf.code_fingerprint(code)
                if fp not in seen:
                    break
            seen.add(fp)
            fingerprints.append(fp)
            cid = cf.code_id(code, claims)
            code_rows.setdefault(cid, {"id": cid, "code": code, "claims": claims})
            write = brief_example if cfg.answer == "brief" else example_text
            instruction, inp, output = write(kind, f, d, fams, cfg.symmetry_confidence, rng)
            meta = {"id": f"gen-{cfg.seed}-{i:06d}", "code_id": cid, "dataset": f.dataset, "file": f.file,
                    "trajectory": f.trajectory, **{k: v for k, v in claims.items() if k != "n_qubits"},
                    "n_qubits": claims["n_qubits"], "suggested_layers": d.suggested_layers}
            rows.append({"type": kind, "instruction": instruction, "input": inp, "output": output, "metadata": meta})
            progress.advance()
    distinct = len(seen) / max(1, len(fingerprints))
    if distinct < cfg.min_distinct_share:
        raise ValueError(f"generate: only {distinct:.1%} of code blocks are distinct (min_distinct_share {cfg.min_distinct_share}); "
                         f"widen the qubit range, max_layers or families, or lower examples")
    augmented = [r for r in rows if r["type"] != REASONING]
    reasoning = [r for r in rows if r["type"] == REASONING]
    with stage_output(STAGE, out_dir, key, cfg, features_file) as out:
        write_jsonl(out.tmp / "physics_augmented.jsonl", augmented)
        write_jsonl(out.tmp / "physics_reasoning.jsonl", reasoning)
        write_jsonl(out.tmp / "chat_physics.jsonl", (chat_record(r, "physics_augmented", cfg) for r in augmented))
        write_jsonl(out.tmp / "chat_reasoning.jsonl", (chat_record(r, "physics_reasoning", cfg) for r in reasoning))
        write_jsonl(out.tmp / "code.jsonl", code_rows.values())
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"records": len(rows), "physics_augmented": len(augmented), "physics_reasoning": len(reasoning),
                      "code_blocks": len(code_rows), "trajectories": len(trajectories), "rejected_trajectories": len(rejects),
                      "held_out_trajectories": held_out,
                      "held_out_dataset_trajectories": sum(f.dataset in cfg.holdout_datasets for f in features),
                      **_tally(rows, "type", "type"), **_tally(rows, "family"), **_tally(rows, "symmetry"),
                      **_tally(rows, "n_qubits", "qubits"), **_tally(rows, "layers"), **_tally(rows, "connectivity"),
                      **_tally(rows, "parameter_sharing", "sharing")}
        out.metrics = {"distinct_code_share": round(distinct, 4), "generation_seconds": round(time.time() - started, 3)}
    publish_table(STAGE, counts_table(out.counts, out.metrics), f"Generated {len(rows)} physics examples ({len(code_rows)} code blocks)")
    return out_dir


def _tally(rows: list[dict], field: str, label: str | None = None) -> dict[str, int]:
    values = Counter(r["type"] if field == "type" else r["metadata"][field] for r in rows)
    return {f"{label or field}_{v}": c for v, c in sorted(values.items(), key=lambda kv: str(kv[0]))}


def chat_record(row: dict, source: str, cfg: GenerateConfig) -> ChatRecord:
    """The canonical chat record of one example (user = instruction + input)."""
    return ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                {"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"},
                                {"role": "assistant", "content": row["output"]}],
                      source=source, kind=row["type"], meta=row["metadata"])


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def generate_physics_examples(cfg: GenerateConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: physics features → verified-ready circuit examples."""
    return generate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.generate_physics_examples", __doc__, GenerateConfig)
    parser.add_argument("--features", type=Path, required=True, help="features.jsonl (or the encode stage's directory)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(generate(config_from_args(GenerateConfig, args, parser), args.features, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
