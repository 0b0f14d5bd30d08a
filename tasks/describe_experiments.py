"""Turn harvested experiments into instruction records grounded in the measured numbers.

Every answer is built from the experiment's own result (and, for comparisons, from statistics
over the other runs of the same harvest), and a checker rejects any answer that quotes a
number not present in that grounding. Writes the canonical chat records (``chat.jsonl``) and
the users' ``lab_instructions.jsonl`` shape.

    python -m tasks.describe_experiments --experiments data/ben_lab/harvest/experiments.jsonl --out data/ben_lab/describe
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import defaultdict
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.describe_phases import PhaseThresholds, classify_phase, phase_reasoning
from tasks.records import ChatRecord, RecordError, read_jsonl, write_jsonl
from tasks.reporting import counts_table, publish_table
from tasks.stage_cli import config_from_args, stage_parser
from tasks.stage import cached, module_source, prefect_cache_key, stage_key, stage_output

STAGE = "describe"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


class DescribeConfig(BaseModel):
    """How experiments become instruction records."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(
        "You are the assistant of a quantum many-body physics lab. Answer from the measured numbers.",
        description="System message of every chat record")
    thresholds: PhaseThresholds = Field(default_factory=PhaseThresholds, description="Measurement thresholds used to name a phase")
    max_reject_rate: float = Field(0.05, ge=0, le=1, description="Fail the stage when more answers than this fail the number check")


def fmt(x) -> str:
    """The one way numbers are printed in answers (and looked up by the checker)."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{float(x):.3f}"


def grounding_numbers(*sources) -> set[str]:
    """Every number in the grounding, printed the way answers print numbers."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                found.update(NUMBER.findall(str(k)))
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            found.add(fmt(v))
            if isinstance(v, float) and v.is_integer():
                found.add(str(int(v)))
        elif isinstance(v, str):
            found.update(NUMBER.findall(v))

    for s in sources:
        walk(s)
    return found


def unsupported_numbers(text: str, grounding: set[str]) -> list[str]:
    """Numbers quoted in ``text`` that the grounding does not contain."""
    return [n for n in NUMBER.findall(text) if n not in grounding and n.lstrip("-") not in grounding]


def _pick(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n


def _describe_phase(row: dict, th: PhaseThresholds) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    s = res["summary"]
    phase = classify_phase(s, th)
    measured = (f"magnetization {fmt(s['magnetization'])}, string order {fmt(s['string_order'])}, "
                f"correlation length {fmt(s['correlation_length'])}, entanglement entropy proxy {fmt(s['entropy_proxy'])}, "
                f"randomness score {fmt(s['randomness_score'])} and {fmt(s['branch_count'])} distinct measured bitstrings")
    bias = "" if req.get("bias") is None else f", bias={fmt(req['bias'])}"
    if _pick(row["id"], 2) == 0:
        q = (f"I ran run_phase_experiment with phase_type={req['phase_type']}, system_size={fmt(req['system_size'])}, "
             f"depth={fmt(req['depth'])}, seed={fmt(req['seed'])}{bias}. What do the measurements say about the phase?")
        verdict = (f"The measurements indicate the {phase} phase, as requested." if phase == req["phase_type"]
                   else f"The measurements indicate the {phase} phase, not the requested {req['phase_type']}.")
    else:
        q = f"A {fmt(s['system_size'])}-site chain measured {measured}. Which phase of matter does this indicate, and why?"
        verdict = f"The measurements indicate the {phase} phase."
    a = f"Measured: {measured}. {verdict} {phase_reasoning(phase, s, th, fmt)}"
    return q, a, {"phase_indicated": phase}


def _describe_tri(row: dict, peers: list[float]) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    tri = res["TRI"]
    ctx = {"runs": len(peers), "min": min(peers), "max": max(peers), "median": statistics.median(peers),
           "rank": 1 + sum(t > tri for t in peers)}
    q = (f"The time-reversal test (TRI) on {req['phase_type']} with system_size={fmt(req['system_size'])}, "
         f"depth={fmt(req['depth'])}, bias {fmt(req['bias'])} against reverse bias {fmt(res['params'].get('reverse_bias', 1 - req['bias']))} "
         f"gave TRI = {fmt(tri)}. How large is that?")
    relation = "above" if tri > ctx["median"] else "at or below"
    size = ("essentially symmetric: the forward and reverse preparations give the same features" if tri < 0.05
            else "a clear asymmetry between the forward and reverse preparations")
    a = (f"TRI = {fmt(tri)} is the L2 distance between the forward and reverse feature vectors, which is {size}. "
         f"Across the {fmt(ctx['runs'])} TRI runs of {req['phase_type']} in this harvest, TRI ranged from {fmt(ctx['min'])} "
         f"to {fmt(ctx['max'])} with median {fmt(ctx['median'])}; this run is {relation} the median "
         f"(rank {fmt(ctx['rank'])} of {fmt(ctx['runs'])}, largest first).")
    return q, a, ctx


def _describe_discovery(row: dict) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    clusters, parts = [], []
    for i, stats in enumerate(res["cluster_label_stats"], 1):
        total = sum(stats.values())
        if not total:
            continue
        top, n = max(stats.items(), key=lambda kv: kv[1])
        clusters.append({"cluster": i, "size": total, "dominant": top, "dominant_count": n, "purity": n / total})
        parts.append(f"cluster {i} holds {fmt(total)} samples, {fmt(n)} of them {top} (purity {fmt(n / total)})")
    purity = sum(c["dominant_count"] for c in clusters) / max(1, sum(c["size"] for c in clusters))
    ctx = {"clusters": clusters, "overall_purity": purity}
    q = (f"I clustered {fmt(res['num_samples'])} experiments from the phases {', '.join(res['phases'])} "
         f"({fmt(req['num_per_phase'])} per phase) into {fmt(res['num_clusters'])} clusters. What did the clustering find?")
    quality = ("The phases separate cleanly in feature space" if purity > 0.9
               else "Some phases share clusters, so their feature vectors overlap" if purity > 0.6
               else "The clusters mix phases heavily; the features do not separate these phases")
    a = f"{'; '.join(parts)}. Overall purity is {fmt(purity)}. {quality}."
    return q, a, ctx


def _describe_drift(row: dict, peers: dict[str, float]) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    runs = res["runs"]
    final = runs[-1]["drift"]
    ctx = {"mean_final_drift_by_phase": peers}
    steps = ", ".join(f"depth {fmt(r['depth'])}: drift {fmt(r['drift'])}" for r in runs)
    q = (f"Replay drift for {res['phase_type']} at system_size={fmt(req['system_size'])}, base depth {fmt(res['base_depth'])}: "
         f"{steps}. Is this phase stable under deeper replays?")
    others = ", ".join(f"{p} {fmt(v)}" for p, v in sorted(peers.items()))
    mine = peers[res["phase_type"]]
    first = runs[1]["drift"] if len(runs) > 1 else final
    trend = ("keeps growing with depth" if final > 1.1 * first + 1e-9
             else "jumps at the first deeper replay and then levels off" if first >= 0.1 else "stays small at every depth")
    verdict = "stable" if final < 0.1 else "moderately sensitive" if final < 0.5 else "strongly sensitive"
    a = (f"Drift {trend}, reaching {fmt(final)} at depth {fmt(runs[-1]['depth'])}, so {res['phase_type']} is {verdict} to replay depth here. "
         f"Mean final drift per phase in this harvest: {others}; this phase's mean is {fmt(mine)}.")
    return q, a, ctx


def describe(cfg: DescribeConfig, inputs: Path, out_dir: Path) -> Path:
    """Write grounded instruction records for every harvested experiment."""
    out_dir, src = Path(out_dir), Path(inputs)
    experiments_file = src / "experiments.jsonl" if src.is_dir() else src
    key = stage_key(STAGE, cfg, experiments_file, module_source(describe))
    if cached(out_dir, key):
        return out_dir
    rows = read_jsonl(experiments_file)
    for i, row in enumerate(rows, 1):
        missing = {"id", "kind", "request", "response"} - row.keys()
        if missing:
            raise RecordError(f"{experiments_file}: record {i}: missing field(s) {sorted(missing)}")
    tri_by_phase, drift_by_phase = defaultdict(list), defaultdict(list)
    for r in rows:
        if r["kind"] == "tri":
            tri_by_phase[r["request"]["phase_type"]].append(r["response"]["TRI"])
        elif r["kind"] == "replay_drift":
            drift_by_phase[r["response"]["phase_type"]].append(r["response"]["runs"][-1]["drift"])
    drift_means = {p: statistics.fmean(v) for p, v in drift_by_phase.items()}

    chats, legacy, rejects = [], [], []
    for i, row in enumerate(rows, 1):
        kind = row["kind"]
        try:
            if kind == "phase":
                q, a, ctx = _describe_phase(row, cfg.thresholds)
            elif kind == "tri":
                q, a, ctx = _describe_tri(row, tri_by_phase[row["request"]["phase_type"]])
            elif kind == "discovery":
                q, a, ctx = _describe_discovery(row)
            elif kind == "replay_drift":
                q, a, ctx = _describe_drift(row, drift_means)
            else:
                raise RecordError(f"{experiments_file}: record {i}: unknown kind {kind!r}")
        except KeyError as e:
            raise RecordError(f"{experiments_file}: record {i} ({row['id']}): response lacks field {e}") from None
        bad = unsupported_numbers(q + " " + a, grounding_numbers(row["request"], row["response"], ctx))
        if bad:
            rejects.append({"id": row["id"], "reason": f"numbers not in the result: {bad}", "answer": a})
            continue
        meta = {"kind": kind, "experiment_id": row["id"], "grounding": ctx}
        chats.append(ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                          {"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                source="ben_lab", kind=kind, meta=meta))
        legacy.append({"instruction": q, "input": "", "output": a, "meta": meta})

    reject_rate = len(rejects) / max(1, len(rows))
    if reject_rate > cfg.max_reject_rate:
        raise ValueError(f"describe: {len(rejects)} of {len(rows)} answers quote numbers absent from their results "
                         f"(rate {reject_rate:.2f} > max_reject_rate {cfg.max_reject_rate}); first: {rejects[0]['reason']}")
    with stage_output(STAGE, out_dir, key, cfg, experiments_file) as out:
        write_jsonl(out.tmp / "chat.jsonl", chats)
        write_jsonl(out.tmp / "lab_instructions.jsonl", legacy)
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"experiments": len(rows), "records": len(chats), "rejected": len(rejects)}
        out.counts.update({f"records_{k}": sum(c.kind == k for c in chats) for k in ("phase", "tri", "discovery", "replay_drift")})
        out.metrics = {"number_check_pass_rate": round(1 - reject_rate, 4)}
    publish_table("describe", counts_table(out.counts, out.metrics), "Grounded instruction records per experiment kind")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def describe_experiments(cfg: DescribeConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: experiments → grounded instruction records."""
    return describe(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.describe_experiments", __doc__, DescribeConfig)
    parser.add_argument("--experiments", type=Path, required=True, help="experiments.jsonl (or the harvest dir)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(describe(config_from_args(DescribeConfig, args, parser), args.experiments, args.out))


if __name__ == "__main__":
    main()
