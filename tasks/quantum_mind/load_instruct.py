"""Load QuantumLLMInstruct (problem → solution pairs) as canonical chat records.

Reads a local parquet or JSONL copy (columns ``problem_text`` — some copies say ``problem`` —
and ``solution``), or the hub dataset ``BoltzmannEntropy/QuantumLLMInstruct`` when
``hub: true`` and the network allows. When no copy is configured or found, the stage records
``available: false`` with the reason and writes an empty file, so the flow can say so and
renormalise the mix instead of failing silently or pretending.

    python -m tasks.quantum_mind.load_instruct --out data/quantum_mind/instruct --set path=~/data/QuantumLLMInstruct.parquet
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.common.records import ChatRecord, RecordError, read_json_rows, write_jsonl
from tasks.common.reporting import counts_table, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser

STAGE = "instruct"
HUB_ID = "BoltzmannEntropy/QuantumLLMInstruct"


class InstructConfig(BaseModel):
    """Where QuantumLLMInstruct comes from."""

    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="Local .parquet / .jsonl / .json copy of QuantumLLMInstruct (None: not available)")
    hub: bool = Field(False, description=f"Download {HUB_ID} from the Hugging Face hub when no path is given (needs network)")
    max_records: int | None = Field(None, gt=0, description="Keep at most this many rows (in file order)")
    system_prompt: str = Field("You are a quantum computing assistant. Answer with reasoning and Qiskit code.",
                               description="System message of every record")
    min_chars: int = Field(20, ge=0, description="Rows whose problem or solution is shorter are dropped as rejects")


def _rows_from_file(path: Path) -> list[dict]:
    from datasets import Dataset

    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return read_json_rows(path)  # not datasets' loader: its errors name neither the file nor the line
    if suffix != ".parquet":
        raise RecordError(f"{path}: expected a .parquet, .jsonl or .json file of QuantumLLMInstruct")
    return Dataset.from_parquet(str(path)).to_list()


def _rows_from_hub() -> list[dict]:
    from datasets import load_dataset

    return load_dataset(HUB_ID, split="train").to_list()


def to_records(rows: list[dict], cfg: InstructConfig, origin: str) -> tuple[list[ChatRecord], list[dict]]:
    """Rows with ``problem_text``/``problem`` and ``solution`` → chat records (+ rejects with reasons)."""
    records, rejects = [], []
    for i, row in enumerate(rows, 1):
        problem = row.get("problem_text") if row.get("problem_text") is not None else row.get("problem")
        solution = row.get("solution")
        if problem is None and solution is None:
            raise RecordError(f"{origin}: row {i}: no 'problem_text'/'problem' and no 'solution' column "
                              f"(columns: {sorted(row)}); is this QuantumLLMInstruct?")
        if not isinstance(problem, str) or not isinstance(solution, str) or min(len(problem), len(solution)) < cfg.min_chars:
            rejects.append({"row": i, "reason": "missing or too short problem/solution"})
            continue
        meta = {k: row[k] for k in ("main_domain", "sub_domain", "tags") if k in row and row[k] is not None}
        records.append(ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                            {"role": "user", "content": problem.strip()},
                                            {"role": "assistant", "content": solution.strip()}],
                                  source="quantum_llm_instruct", kind="instruct", meta={"row": i, **meta}))
        if cfg.max_records and len(records) >= cfg.max_records:
            break
    return records, rejects


def key_of(cfg: InstructConfig, inputs: None, out_dir: Path) -> tuple[InstructConfig, list[Path] | None]:
    """The stage key hashes the local QuantumLLMInstruct file the config names, when it is there."""
    source = Path(cfg.path).expanduser() if cfg.path else None
    return cfg, [source] if source and source.exists() else None


def load_instruct(cfg: InstructConfig, inputs: None, out_dir: Path) -> Path:
    """Write ``instruct.jsonl`` (possibly empty) and say in the manifest whether the data was available."""
    out_dir = Path(out_dir)
    source = Path(cfg.path).expanduser() if cfg.path else None
    key = stage_key(load_instruct, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows, reason = [], None
    if source is not None:
        if not source.exists():
            raise FileNotFoundError(f"instruct.path {source} does not exist; fix the path or set it to null")
        rows = _rows_from_file(source)
    elif cfg.hub:
        rows = _rows_from_hub()
    else:
        reason = "no local copy configured (instruct.path) and hub download off (instruct.hub)"
    records, rejects = to_records(rows, cfg, str(source or HUB_ID))
    with stage_output(STAGE, out_dir, key, cfg, None) as out:
        write_jsonl(out.tmp / "instruct.jsonl", records)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"rows": len(rows), "records": len(records), "rejected": len(rejects)}
        out.extra.update(available=bool(records), reason=reason, origin=str(source) if source else (HUB_ID if cfg.hub else None))
    if reason:
        say(f"[instruct] QuantumLLMInstruct not available: {reason}")
    publish_table(STAGE, counts_table(out.counts), f"QuantumLLMInstruct: {'available' if records else 'not available'}")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def load_quantum_instruct(cfg: InstructConfig, inputs: None, out_dir: Path) -> Path:
    """Prefect task: QuantumLLMInstruct → chat records (or a recorded absence)."""
    return load_instruct(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.load_instruct", __doc__, InstructConfig)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(load_instruct(config_from_args(InstructConfig, args, parser), None, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
