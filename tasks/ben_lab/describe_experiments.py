"""Turn harvested experiments into instruction records grounded in the measured numbers.

Every answer is built from the experiment's own result (and, for comparisons, from statistics
over the other runs of the same harvest), and a checker rejects any answer that quotes a
number not present in that grounding. Phase verdicts come from the lab's own learnt rule and TRI
and drift are judged against this lab's quartiles (the ``calibrate`` stage), on physics features only. Writes the canonical chat records (``chat.jsonl``) and
the users' ``lab_instructions.jsonl`` shape.

    python -m tasks.ben_lab.describe_experiments --experiments data/ben_lab/harvest --calibration data/ben_lab/calibrate \
        --out data/ben_lab/describe
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.ben_lab.calibrate_phases import has_scale, load_calibration, size_word
from tasks.ben_lab.describe_phases import MEANING, PhaseCalibration, PhaseSignature, verdict_sentence
from tasks.ben_lab import lab_questions as questions
from tasks.ben_lab.lab_concepts import EVAL_PROMPTS, concept_records
from tasks.common.records import ChatRecord, RecordError, read_jsonl, write_jsonl
from tasks.common.reporting import counts_table, publish_table
from tasks.common.stage_cli import config_from_args, stage_parser
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output

STAGE = "describe"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


class DescribeConfig(BaseModel):
    """How experiments become instruction records."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(
        "You are the assistant of a quantum many-body physics lab. Answer from the measured numbers.",
        description="System message of every chat record")
    max_reject_rate: float = Field(0.05, ge=0, le=1, description="Fail the stage when more answers than this fail the number check")
    concepts: bool = Field(True, description="Add records that teach the lab itself (TRI, drift, the phases, "
                           "experiment design, discovery), several phrasings each, from this harvest's numbers")


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


def _describe_phase(row: dict, rule: PhaseCalibration, signature: PhaseSignature) -> tuple[str, str | None, dict]:
    """(question, answer, grounding); the answer is None when the spoken rule and the verdict disagree."""
    req, res = row["request"], row["response"]
    s = res["summary"]
    verdict = rule.classify(s, row.get("physics", {}).get("features"))
    phase = verdict.phase
    values = {k: fmt(s[v]) for k, v in (("m", "magnetization"), ("so", "string_order"), ("xi", "correlation_length"),
                                         ("ent", "entropy_proxy"), ("r", "randomness_score"), ("b", "branch_count"),
                                         ("n", "system_size"))}
    bias = "" if req.get("bias") is None else f", bias={fmt(req['bias'])}"
    # The question never names the requested phase: a model that can copy it learns nothing about the numbers.
    q = questions.phase_question(row["id"], values, depth=fmt(req["depth"]), seed=fmt(req["seed"]), bias=bias)
    ctx = {"phase_indicated": phase, "ambiguous_with": verdict.runner_up if verdict.ambiguous else None}
    # The readings first, one comparison each in the spoken rule's order, then the verdict: a short, regular
    # answer that a small model can follow step by step (naming the phase first, it guessed from the wording).
    reasoning, spoken = signature.reasoning(s, fmt)
    if spoken != phase:
        return q, None, {**ctx, "spoken_rule_says": spoken}
    return q, f"{reasoning}, so the measurements indicate {verdict_sentence(verdict)}: {MEANING[phase]}.", ctx


def physics_tri(row: dict) -> float:
    """TRI on the physics features (the lab's own TRI when the harvest did not recompute it)."""
    return row.get("physics", {}).get("tri", row["response"]["TRI"])


def physics_drift(row: dict) -> list[float]:
    """Drift of each replay on the physics features (the lab's own when the harvest did not recompute it)."""
    return row.get("physics", {}).get("drift") or [r["drift"] for r in row["response"]["runs"]]


def _describe_tri(row: dict, scale: dict) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    tri = physics_tri(row)
    ctx = {"tri_physics": tri, "lab_scale": scale}
    q = questions.composed(questions.TRI_OPENERS, questions.TRI_CLOSERS, row["id"], phase_type=req["phase_type"], n=fmt(req["system_size"]),
                         depth=fmt(req["depth"]), bias=fmt(req["bias"]), lab_tri=fmt(res["TRI"]), tri=fmt(tri),
                         reverse=fmt(res["params"].get("reverse_bias", 1 - req["bias"])))
    # The number and this lab's quartiles first, the verdict after them: answering "Large/Small" first, the
    # model had to decide before it had written the number, and called nearly every TRI small. The answer opens
    # with its quantity's name ("TRI", "Drift"): after "A final ..." the model wrote "depth" as often as "drift".
    verdict = {"large": "large for this lab: the forward and reverse preparations end in clearly different states",
               "small": "small for this lab: the forward and reverse preparations nearly agree",
               "typical": "typical for this lab: a moderate asymmetry between the forward and reverse preparations"}
    if has_scale(scale):
        a = (f"TRI {fmt(tri)} on the physics features, against this lab's quartiles {fmt(scale['q25'])} and "
             f"{fmt(scale['q75'])} (median {fmt(scale['q50'])}): {verdict[size_word(tri, scale)]}.")
    else:
        a = f"TRI {fmt(tri)} on the physics features: too few TRI runs in this harvest to compare it with."
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


def _describe_drift(row: dict, peers: dict[str, float], scale: dict) -> tuple[str, str, dict]:
    req, res = row["request"], row["response"]
    runs, drifts = res["runs"], physics_drift(row)
    final = drifts[-1]
    ctx = {"mean_final_drift_by_phase": peers, "drift_physics": drifts, "lab_scale": scale}
    q = questions.composed(questions.DRIFT_OPENERS, questions.DRIFT_CLOSERS, row["id"], phase_type=res["phase_type"], n=fmt(req["system_size"]),
                         base=fmt(res["base_depth"]), depths=", ".join(fmt(r["depth"]) for r in runs),
                         drifts=", ".join(fmt(d) for d in drifts),
                         steps=", ".join(f"depth {fmt(r['depth'])}: drift {fmt(d)}" for r, d in zip(runs, drifts)))
    first = drifts[1] if len(drifts) > 1 else final
    jump = size_word(first, scale) != "small"
    trend = ("keeps growing with depth" if final > 1.1 * first + 1e-9
             else "jumps at the first deeper replay and then levels off" if jump else "stays small at every depth")
    verdict = {"small": "stable under deeper replays", "typical": "moderately sensitive to replay depth",
               "large": "strongly sensitive to replay depth"}[size_word(final, scale)]
    quartiles = (f", against this lab's quartiles {fmt(scale['q25'])} and {fmt(scale['q75'])}" if has_scale(scale) else "")
    # The final drift and the lab's scale first, then the verdict (as for TRI: no verdict before its number).
    a = (f"Drift {fmt(final)} at the deepest replay (depth {fmt(runs[-1]['depth'])}){quartiles}: {verdict} for this lab. The drift "
         f"of {res['phase_type']} {trend}; its mean final drift in this harvest is {fmt(peers[res['phase_type']])}.")
    return q, a, ctx


def describe(cfg: DescribeConfig, inputs: Path, out_dir: Path) -> Path:
    """Write grounded instruction records for every harvested experiment; ``inputs = [harvest, calibrate]`` outputs."""
    out_dir = Path(out_dir)
    src, calibration_dir = _split_inputs(inputs)
    experiments_file = src / "experiments.jsonl" if src.is_dir() else src
    key = stage_key(describe, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows = read_jsonl(experiments_file)
    calibration = load_calibration(calibration_dir)
    rule = PhaseCalibration(**calibration["rule"]) if "rule" in calibration else None
    signature = PhaseSignature(**calibration["signature"]) if "signature" in calibration else None
    for i, row in enumerate(rows, 1):
        missing = {"id", "kind", "request", "response"} - row.keys()
        if missing:
            raise RecordError(f"{experiments_file}: record {i}: missing field(s) {sorted(missing)}")
    drift_by_phase = defaultdict(list)
    for r in rows:
        if r["kind"] == "replay_drift":
            drift_by_phase[r["response"]["phase_type"]].append(physics_drift(r)[-1])
    drift_means = {p: statistics.fmean(v) for p, v in drift_by_phase.items()}

    chats, legacy, rejects, unspoken = [], [], [], []
    for i, row in enumerate(rows, 1):
        kind = row["kind"]
        try:
            if kind == "phase":
                if rule is None or signature is None:
                    raise RecordError(f"{experiments_file}: phase runs of a single phase type cannot calibrate a "
                                      "phase rule; harvest at least two phase types")
                q, a, ctx = _describe_phase(row, rule, signature)
            elif kind == "tri":
                q, a, ctx = _describe_tri(row, calibration["tri"])
            elif kind == "discovery":
                q, a, ctx = _describe_discovery(row)
            elif kind == "replay_drift":
                q, a, ctx = _describe_drift(row, drift_means, calibration["final_drift"])
            else:
                raise RecordError(f"{experiments_file}: record {i}: unknown kind {kind!r}")
        except KeyError as e:
            raise RecordError(f"{experiments_file}: record {i} ({row['id']}): response lacks field {e}") from None
        if a is None:  # strict in what we train on: an answer whose spoken steps lead elsewhere teaches a wrong rule
            unspoken.append({"id": row["id"], "reason": f"the spoken rule reads {ctx['spoken_rule_says']}, the lab's rule "
                             f"{ctx['phase_indicated']}: left out of training", "answer": None})
            continue
        bad = unsupported_numbers(q + " " + a, grounding_numbers(row["request"], row["response"], ctx))
        if bad:
            rejects.append({"id": row["id"], "reason": f"numbers not in the result: {bad}", "answer": a})
            continue
        meta = {"kind": kind, "experiment_id": row["id"], "grounding": ctx}
        chats.append(ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                          {"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                source="ben_lab", kind=kind, meta=meta))
        legacy.append({"instruction": q, "input": "", "output": a, "meta": meta})

    concepts = concept_records(calibration, rows, fmt) if cfg.concepts else []
    for i, (q, a, ctx) in enumerate(concepts):
        bad = unsupported_numbers(q + " " + a, grounding_numbers(ctx))
        if bad:
            rejects.append({"id": f"concept-{i:03d}", "reason": f"numbers not in the harvest: {bad}", "answer": a})
            continue
        meta = {"kind": "concept", "experiment_id": f"concept-{i:03d}", "grounding": ctx}
        chats.append(ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                          {"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                source="ben_lab", kind="concept", meta=meta))
        legacy.append({"instruction": q, "input": "", "output": a, "meta": meta})
    _no_evaluation_prompts(chats)

    reject_rate = len(rejects) / max(1, len(rows))
    if reject_rate > cfg.max_reject_rate:
        raise ValueError(f"describe: {len(rejects)} of {len(rows)} answers quote numbers absent from their results "
                         f"(rate {reject_rate:.2f} > max_reject_rate {cfg.max_reject_rate}); first: {rejects[0]['reason']}")
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        write_jsonl(out.tmp / "chat.jsonl", chats)
        write_jsonl(out.tmp / "lab_instructions.jsonl", legacy)
        write_jsonl(out.tmp / "rejects.jsonl", rejects + unspoken)
        out.counts = {"experiments": len(rows), "records": len(chats), "rejected": len(rejects),
                      "phase_left_out": len(unspoken)}
        out.counts.update({f"records_{k}": sum(c.kind == k for c in chats)
                           for k in ("phase", "tri", "discovery", "replay_drift", "concept")})
        out.metrics = {"number_check_pass_rate": round(1 - reject_rate, 4)}
    publish_table("describe", counts_table(out.counts, out.metrics), "Grounded instruction records per experiment kind")
    return out_dir


def _no_evaluation_prompts(chats: list[ChatRecord]) -> None:
    """The user's verification prompts are evaluation: training must never hold them."""
    held_out = {q.lower().strip() for q in EVAL_PROMPTS}
    for rec in chats:
        if rec.messages[1].content.lower().strip() in held_out:
            raise AssertionError(f"an evaluation prompt is in the training records: {rec.messages[1].content!r}")


def _split_inputs(inputs) -> tuple[Path, Path]:
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(paths) != 2:
        raise ValueError(f"describe takes inputs [harvest output, calibrate output], got {len(paths)} path(s): {paths}")
    return Path(paths[0]), Path(paths[1])


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def describe_experiments(cfg: DescribeConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: experiments → grounded instruction records."""
    return describe(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.ben_lab.describe_experiments", __doc__, DescribeConfig)
    parser.add_argument("--experiments", type=Path, required=True, help="experiments.jsonl (or the harvest dir)")
    parser.add_argument("--calibration", type=Path, required=True, help="output dir of the calibrate stage")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(describe(config_from_args(DescribeConfig, args, parser), [args.experiments, args.calibration], args.out))


if __name__ == "__main__":
    main()
