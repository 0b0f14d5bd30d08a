"""Verify model- and teacher-written Qiskit code: run every block in the sandbox and check its physics claims.

Input: JSONL lines ``{"id": str, "code": str, "claims": {...}}``.

Code contract. A code block is a Python module; run as ``__main__`` with numpy and qiskit (incl.
qiskit_aer) available and nothing else (no files outside its temp dir, no network, no subprocesses),
it defines at module level:

    reference  QuantumCircuit without parameters that prepares the reference state from |0…0⟩
               (e.g. X gates on the occupied qubits; may be empty)
    ansatz     QuantumCircuit on the same qubits with at least one Parameter (ParameterVector
               elements count): the parameterised block whose symmetry is claimed
    circuit    reference followed by ansatz, e.g. ``reference.compose(ansatz)``, with the same
               parameters as ansatz

All three must be unitary: barriers are allowed, final measurements are ignored, mid-circuit
measurements, resets and control flow are contract errors.

Claims: ``{"n_qubits": int, "symmetry": "u1" | "z2" | "none", "particles": int | null, "family": str, ...}``;
``particles`` is the reference state's particle number (u1); further keys are kept.

Result per item: ``{"id", "passed", "outcome", "checks": {"parses", "runs", "contract_ok", "n_qubits_ok",
"particles_ok", "composition_ok", "symmetry_ok"}, "symmetry_error", "symmetry_method", "bp_status",
"grad_variance", "bp_reason", "reason", "structure", ...}``. ``outcome`` is ok, a sandbox failure (syntax_error,
runtime_error, timeout, memory_limit, killed, denied, error) or a failed check (contract_error,
n_qubits_mismatch, particles_mismatch, symmetry_broken, too_large, plateau). The checks are in
tasks/quantum_mind/circuit_checks.py, the containment in adapters/sandbox/worker.py. Barren-plateau status
(tasks/quantum_mind/barren_plateau.py) is computed once per circuit structure (parameters unbound) and only for
items that passed, ``bp_batch`` structures per sandbox job.

    python -m tasks.quantum_mind.verify_circuits --input code.jsonl --output results.jsonl   # plain checker; exit 1 if any item fails
    python -m tasks.quantum_mind.verify_circuits --input code.jsonl --out data/quantum_mind/verify   # the stage

In a flow with ``runner.kind: dask``, blocks of ``shard_items`` items are shards on the Dask cluster, each
with a sandbox of its own; rows are merged in input order (the same verdicts as in-process).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, Self

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.sandbox.jobs import DEFAULT_PRELOAD, Sandbox, SandboxJob, SandboxResult
from tasks.quantum_mind import barren_plateau, circuit_checks  # run in the sandbox; imported here (no qiskit at import) so the stage key covers them
from tasks.common.records import RecordError, read_jsonl, write_jsonl
from tasks.common.reporting import StageProgress, publish_table
from tasks.common.shards import map_shards, shard_runner
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "verify"
CHECKS, BP = circuit_checks.__name__, barren_plateau.__name__
PRELOAD = (*DEFAULT_PRELOAD, "qiskit.qpy", "qiskit_aer.primitives", "matplotlib.pyplot", f"{CHECKS}:warm_up", f"{BP}:warm_up")
log = logging.getLogger(__name__)


class VerifyConfig(BaseModel):
    """Sandbox limits, symmetry checks and barren-plateau thresholds."""

    model_config = ConfigDict(extra="forbid")
    workers: int = Field(2, ge=1, description="Sandbox workers (warm processes that fork one child per check); one per core")
    timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit for running one code block, and for each check")
    memory_mb: int = Field(1024, ge=128, description="Memory a code block may allocate (above the worker's own size)")
    random_draws: int = Field(3, ge=1, description="Random parameter draws for the symmetry checks")
    tolerance: float = Field(1e-8, gt=0, description="Largest number/parity variance or commutator norm still counted as conserved")
    max_qubits: int = Field(16, ge=1, le=24, description="Widest circuit simulated as a state vector; wider ones fail as too_large")
    bp_samples: int = Field(16, ge=4, description="Random initialisations for the barren-plateau gradient variance; each gives "
                                                 "the exact gradient of every sampled parameter (all its gates), so the "
                                                 "variance pools bp_samples x bp_params values")
    bp_params: int = Field(8, ge=1, description="Parameters, spread through the cost's light cone, whose gradients are sampled")
    bp_batch: int = Field(16, ge=1, description="Circuit structures per barren-plateau sandbox job (each structure is "
                                                "re-run in a job of its own when its batch fails)")
    bp_cost: Literal["z0z1", "z0"] = Field("z0z1", description="Local cost of the gradients: <Z0 Z1> or <Z0>")
    bp_high: float = Field(1e-2, gt=0, description="Gradient variance above this is 'high'")
    bp_medium: float = Field(1e-4, gt=0, description="Gradient variance above this (up to bp_high) is 'medium', below it 'plateau'")
    fail_on_plateau: bool = Field(False, description="Reject items whose circuit sits on a barren plateau")
    max_reject_rate: float = Field(0.5, ge=0, le=1, description="The stage fails when a larger share of items is rejected")
    seed: int = Field(0, description="Seed of the random parameter draws")
    shard_items: int = Field(500, ge=1, description="Items per shard when the flow runs on Dask (runner.kind: dask); "
                                                    "each shard starts a sandbox of its own (a few seconds)")

    @model_validator(mode="after")
    def _thresholds(self):
        if self.bp_medium >= self.bp_high:
            raise ValueError(f"verify: bp_medium ({self.bp_medium}) must be below bp_high ({self.bp_high})")
        return self


class Claims(BaseModel):
    """What an item says its circuit does."""

    model_config = ConfigDict(extra="allow")
    n_qubits: int = Field(ge=1)
    symmetry: Literal["u1", "z2", "none"]
    particles: int | None = Field(None, ge=0)
    family: str = ""


class CodeItem(BaseModel):
    """One code block to verify."""

    model_config = ConfigDict(extra="allow")
    id: str
    code: str
    claims: Claims


class VerifyError(RuntimeError):
    """Too many items were rejected."""


def read_items(paths: Path | list[Path]) -> list[CodeItem]:
    """Items from JSONL files; a bad record raises RecordError naming file, record and field."""
    items, seen = [], {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for n, row in enumerate(read_jsonl(Path(path)), 1):
            try:
                item = CodeItem.model_validate(row)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(p) for p in err["loc"])
                raise RecordError(f"{path}: record {n}: field '{field}': {err['msg']}") from None
            if item.id in seen:
                raise RecordError(f"{path}: record {n}: id {item.id!r} repeats {seen[item.id]}")
            seen[item.id] = f"{path}: record {n}"
            items.append(item)
    return items


class CircuitVerifier:
    """A warm sandbox and a barren-plateau cache keyed by circuit structure; use as a context manager."""

    def __init__(self, cfg: VerifyConfig):
        self.cfg, self.bp_cache = cfg, {}
        self.sandbox = Sandbox(cfg.workers, cfg.timeout_s, cfg.memory_mb, PRELOAD)

    def __enter__(self) -> Self:
        self.sandbox.start()
        if not all(self.sandbox.isolation.get(k) for k in ("network_namespace", "pid_namespace", "mount_namespace")):
            log.warning("verify: kernel isolation unavailable (not root or no namespaces); running with limits and "
                        "the audit hook only: %s", self.sandbox.isolation)
        return self

    def __exit__(self, *exc) -> None:
        self.sandbox.close()

    def verify(self, items: list[CodeItem], progress: bool = True) -> list[dict]:
        """One result row per item, in order (see the module docstring)."""
        cfg = self.cfg
        args = cfg.model_dump(include={"random_draws", "tolerance", "max_qubits", "seed"})
        jobs = (SandboxJob(f"{CHECKS}:check_claims", {**args, "claims": it.claims.model_dump()}, it.code,
                           f"{CHECKS}:export_circuits") for it in items)
        rows, todo = [], {}
        with StageProgress("verify: running code", len(items)) if progress else nullcontext() as bar:
            for item, result in zip(items, self.sandbox.map(jobs)):
                row = result_row(item, result)
                if row["outcome"] == "ok" and row["structure"] not in self.bp_cache:
                    todo.setdefault(row["structure"], result.extracted)
                rows.append(row)
                if bar:
                    bar.advance()
        self._barren_plateaus(todo, progress)
        for row in rows:
            if row["outcome"] == "ok":
                bp = self.bp_cache[row["structure"]]
                row.update(bp_status=bp["bp_status"], grad_variance=bp["grad_variance"], bp_reason=bp.get("reason", ""))
                if cfg.fail_on_plateau and bp["bp_status"] == "plateau":
                    row.update(passed=False, outcome="plateau",
                               reason=f"barren plateau: gradient variance {bp['grad_variance']:.2e} <= {cfg.bp_medium}")
        return rows

    def _barren_plateaus(self, todo: dict[str, Any], progress: bool) -> None:
        """Fill ``bp_cache`` for ``todo`` ({structure: payload}), ``bp_batch`` structures per sandbox job."""
        cfg = self.cfg
        keys = list(todo)
        batches = [keys[i:i + cfg.bp_batch] for i in range(0, len(keys), cfg.bp_batch)]
        failed = []
        with StageProgress("verify: barren plateaus", len(keys)) if progress else nullcontext() as bar:
            for batch, result in zip(batches, self.sandbox.map(self._bp_job(todo, b) for b in batches)):
                if result.ok:
                    self.bp_cache.update(result.value)
                elif len(batch) == 1:
                    self.bp_cache[batch[0]] = _bp_failure(result)
                else:  # one structure's timeout or crash must not decide the others': re-run them one by one
                    failed += batch
                if bar:
                    bar.advance(len(batch))
        for key, result in zip(failed, self.sandbox.map(self._bp_job(todo, [key]) for key in failed)):
            self.bp_cache[key] = result.value[key] if result.ok else _bp_failure(result)

    def _bp_job(self, todo: dict[str, Any], batch: list[str]) -> SandboxJob:
        args = self.cfg.model_dump(include={"bp_samples", "bp_params", "bp_cost", "bp_high", "bp_medium", "seed"})
        return SandboxJob(f"{BP}:barren_plateaus", {**args, "structures": {key: todo[key] for key in batch}},
                          timeout_s=self.cfg.timeout_s * len(batch))


def _bp_failure(result: SandboxResult) -> dict:
    return {"bp_status": "unknown", "grad_variance": None, "reason": f"{result.outcome}: {result.message}"}


def result_row(item: CodeItem, r: SandboxResult) -> dict:
    """The verdict on one item from its sandbox result."""
    row = {"id": item.id, "family": item.claims.family, "symmetry": item.claims.symmetry, "passed": False,
           "symmetry_error": None, "symmetry_method": None, "bp_status": None, "grad_variance": None, "bp_reason": "",
           "structure": None, "wall_ms": round(r.wall_s * 1000, 2)}
    if not r.ok:
        ran = r.phase in ("extract", "check")
        where = f" (line {r.line})" if r.line else ""
        what = f"{r.event}: {r.message}" if r.outcome == "denied" else f"{r.error_type or r.outcome}: {r.message}"
        return {**row, "outcome": r.outcome, "checks": {"parses": r.outcome != "syntax_error", "runs": ran},
                "reason": f"{r.outcome} while {'checking' if r.phase == 'check' else 'running'} the code{where}: {what}"}
    v = r.value
    return {**row, "passed": v["outcome"] == "ok", "outcome": v["outcome"], "checks": v["checks"], "reason": v["reason"],
            "symmetry_error": v.get("symmetry_error"), "symmetry_method": v.get("symmetry_method"),
            "structure": v.get("structure_key"), "n_qubits": v.get("n_qubits"), "n_params": v.get("n_params"),
            "depth": v.get("depth")}


def verify_items(cfg: VerifyConfig, items: list[CodeItem]) -> list[dict]:
    """Verify items with a sandbox of its own (the plain checker)."""
    with CircuitVerifier(cfg) as verifier:
        return verifier.verify(items)


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    """(counts, metrics) of a verification run."""
    outcomes = Counter(r["outcome"] for r in rows)
    passed = sum(r["passed"] for r in rows)
    counts = {"items": len(rows), "passed": passed, "rejected": len(rows) - passed,
              **{f"outcome_{k}": v for k, v in sorted(outcomes.items())}}
    bp = Counter(r["bp_status"] for r in rows if r["bp_status"])
    metrics = {"pass_rate": round(passed / max(1, len(rows)), 4),
               "distinct_structures": len({r["structure"] for r in rows if r["structure"]}),
               "mean_check_ms": round(sum(r["wall_ms"] for r in rows) / max(1, len(rows)), 2),
               **{f"bp_{k}": v for k, v in sorted(bp.items())}}
    return counts, metrics


def verify(cfg: VerifyConfig, inputs: Path | list[Path], out_dir: Path) -> Path:
    """Write ``results.jsonl``, ``passed.jsonl`` (ids) and ``rejects.jsonl`` (with reasons)."""
    out_dir = Path(out_dir)
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    key = stage_key(verify, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    items = read_items(paths)
    if not items:
        raise ValueError(f"verify: no items in {', '.join(map(str, paths))}")
    if shard_runner() is not None:
        blocks = [items[i:i + cfg.shard_items] for i in range(0, len(items), cfg.shard_items)]
        shards = map_shards(_verify_shard, [{"cfg": cfg, "items": b} for b in blocks],
                            f"verify {len(items)} code blocks ({len(blocks)} shards)", sizes=[len(b) for b in blocks])
        rows = [row for shard_rows, _ in shards for row in shard_rows]
        isolation = _weakest([iso for _, iso in shards])
    else:
        with CircuitVerifier(cfg) as verifier:
            rows = verifier.verify(items)
            isolation = verifier.sandbox.isolation
    counts, metrics = summarize(rows)
    if counts["rejected"] > cfg.max_reject_rate * len(rows):
        first = next(r for r in rows if not r["passed"])
        raise VerifyError(f"verify: {counts['rejected']} of {len(rows)} items rejected, above max_reject_rate "
                          f"{cfg.max_reject_rate}: {', '.join(f'{k}={v}' for k, v in counts.items() if k.startswith('outcome_'))}; "
                          f"first: {first['id']}: {first['reason']} (see every reason with --output results.jsonl)")
    with stage_output(STAGE, out_dir, key, cfg, paths) as out:
        write_jsonl(out.tmp / "results.jsonl", rows)
        write_jsonl(out.tmp / "passed.jsonl", [{"id": r["id"]} for r in rows if r["passed"]])
        write_jsonl(out.tmp / "rejects.jsonl", [{k: r[k] for k in ("id", "outcome", "reason", "checks")}
                                                for r in rows if not r["passed"]])
        out.counts, out.metrics = counts, metrics
        out.extra["sandbox_isolation"] = isolation
    publish_table(STAGE, [{"name": k, "value": v} for k, v in {**counts, **metrics}.items()],
                  f"Verify: {counts['passed']}/{counts['items']} code blocks passed")
    return out_dir


@task(name="verify-shard", cache_policy=NO_CACHE, persist_result=False)
def _verify_shard(cfg: VerifyConfig, items: list[CodeItem]) -> tuple[list[dict], dict]:
    """One shard of the verify stage on the flow's task runner: (result rows in item order, sandbox isolation)."""
    with CircuitVerifier(cfg) as verifier:
        return verifier.verify(items, progress=False), verifier.sandbox.isolation


def _weakest(isolations: list[dict]) -> dict:
    """The isolation every shard had: a layer counts only when it applied on every worker."""
    first = isolations[0]
    return {k: all(iso.get(k) for iso in isolations) if isinstance(v, bool) else v for k, v in first.items()}


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def verify_circuits(cfg: VerifyConfig, inputs: Path | list[Path], out_dir: Path) -> Path:
    """Prefect task: run each code block in the sandbox and check its claims."""
    return verify(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.verify_circuits", __doc__, VerifyConfig)
    parser.add_argument("--input", type=Path, action="append", required=True, help="JSONL of {id, code, claims} (repeatable)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", type=Path, help="plain checker: write one result per item to this JSONL")
    where.add_argument("--out", type=Path, help="stage: output directory (results, passed, rejects, manifest)")
    args = parser.parse_args(argv)
    cfg = config_from_args(VerifyConfig, args, parser)
    if args.out:
        print(verify(cfg, args.input, args.out))
        return
    rows = verify_items(cfg, read_items(args.input))
    write_jsonl(args.output, rows)
    counts, metrics = summarize(rows)
    print(f"{counts['passed']}/{counts['items']} passed -> {args.output}  "
          + " ".join(f"{k}={v}" for k, v in {**counts, **metrics}.items() if k.startswith(("outcome_", "bp_"))))
    sys.exit(0 if counts["passed"] == counts["items"] else 1)


if __name__ == "__main__":
    run_stage_cli(main)
