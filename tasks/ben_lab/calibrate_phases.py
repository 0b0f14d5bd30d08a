"""Stage ``calibrate``: learn this lab's phase rule and the scale of its TRI and drift from the harvest.

Every phase run of the harvest is labelled by the phase that was requested; the rule
(``tasks.ben_lab.describe_phases``: nearest centroid on standardised measurements) is fitted to them and
cross-validated (stratified folds), and its confusion matrix goes to the manifest and a Prefect
artifact. A short decision list (``PhaseSignature``) is fitted beside it: the rule training answers
spell out, one reading at a time. TRI and final replay drift, recomputed on the physics features by the harvest, are
summarised as quantiles so that answers call a value large or small relative to this lab.

    python -m tasks.ben_lab.calibrate_phases --experiments data/ben_lab/harvest --out data/ben_lab/calibrate
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.ben_lab.describe_phases import SUMMARY_STATS, fit_calibration, fit_signature
from tasks.common.records import RecordError, read_jsonl
from tasks.common.reporting import publish_markdown, publish_table, say
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, stage_parser

STAGE = "calibrate"
CALIBRATION = "calibration.json"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class CalibrateConfig(BaseModel):
    """How the lab's phase rule is learnt and checked."""

    model_config = ConfigDict(extra="forbid")
    folds: int = Field(5, ge=2, description="Stratified cross-validation folds for the reported accuracy")
    ambiguity_ratio: float = Field(0.8, gt=0, le=1, description="Nearest / second-nearest centroid distance above "
                                   "which a verdict names both phases instead of asserting one")
    min_accuracy: float = Field(0.0, ge=0, le=1, description="Fail when the cross-validated accuracy is below this "
                                "(0 = only report it)")


def calibrate(cfg: CalibrateConfig, inputs: Path, out_dir: Path) -> Path:
    """Write ``calibration.json`` (rule, cross-validation, TRI/drift scales) for a harvest."""
    out_dir, src = Path(out_dir), Path(inputs)
    experiments_file = src / "experiments.jsonl" if src.is_dir() else src
    key = stage_key(calibrate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    rows = read_jsonl(experiments_file)
    phase_rows = [r for r in rows if r.get("kind") == "phase"]
    for i, r in enumerate(phase_rows, 1):
        if "summary" not in r.get("response", {}) or "phase_type" not in r.get("request", {}):
            raise RecordError(f"{experiments_file}: phase record {r.get('id', i)} lacks response.summary or request.phase_type")
    summaries = [r["response"]["summary"] for r in phase_rows]
    physics = [r.get("physics", {}).get("features") for r in phase_rows]
    labels = [r["request"]["phase_type"] for r in phase_rows]
    report: dict = {"phase_runs": len(phase_rows)}
    if len(set(labels)) >= 2:
        rule = fit_calibration(summaries, physics, labels, cfg.ambiguity_ratio)
        report.update(cross_validate(summaries, physics, labels, cfg))
        report["rule"] = rule.model_dump()
        report["signature"] = fit_signature(summaries, labels).model_dump()
    report["typical"] = typical_values(phase_rows)
    tri_rows = [r for r in rows if r.get("kind") == "tri" and "physics" in r]
    report["tri"] = _quantiles([r["physics"]["tri"] for r in tri_rows])
    report["mean_tri_by_phase"] = {p: round(float(np.mean([r["physics"]["tri"] for r in tri_rows
                                                           if r["request"]["phase_type"] == p])), 6)
                                   for p in sorted({r["request"]["phase_type"] for r in tri_rows})}
    report["final_drift"] = _quantiles([r["physics"]["drift"][-1] for r in rows
                                        if r.get("kind") == "replay_drift" and "physics" in r])
    accuracy = report.get("cv_accuracy")
    if accuracy is not None and accuracy < cfg.min_accuracy:
        raise ValueError(f"calibrate: the learnt phase rule agrees with the requested phase on {accuracy:.1%} of "
                         f"{len(phase_rows)} runs (cross-validated) < calibrate.min_accuracy {cfg.min_accuracy}; "
                         f"confusion: {report['confusion']}")
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        (out.tmp / CALIBRATION).write_text(json.dumps(report, indent=2))
        out.counts = {"phase_runs": len(phase_rows), "tri_runs": report["tri"].get("n", 0),
                      "drift_runs": report["final_drift"].get("n", 0)}
        out.metrics = {"cv_accuracy": accuracy, "ambiguous_share": report.get("ambiguous_share"),
                       "signature_accuracy": report.get("signature", {}).get("accuracy")}
        out.extra["confusion"] = report.get("confusion", {})
    if accuracy is not None:
        say(f"[calibrate] phase rule agrees with the requested phase on {accuracy:.1%} of {len(phase_rows)} runs "
            f"({cfg.folds}-fold cross-validation); the spoken rule ({signature_words(report['signature'])}) on "
            f"{report['signature']['accuracy']:.1%}")
        publish_markdown("calibrate-confusion", confusion_markdown(report["confusion"], accuracy),
                         "Learnt phase rule: requested (rows) vs indicated (columns), cross-validated")
    publish_table("calibrate", [{"quantity": k, **v} for k, v in (("TRI", report["tri"]), ("final drift", report["final_drift"]))],
                  "This lab's TRI and drift on the physics features (quantiles)")
    return out_dir


def load_calibration(out_dir: Path) -> dict:
    """The calibration report a ``calibrate`` output holds."""
    path = Path(out_dir) / CALIBRATION
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the calibrate stage first")
    return json.loads(path.read_text())


def cross_validate(summaries: list[dict], physics: list, labels: list[str], cfg: CalibrateConfig) -> dict:
    """Accuracy and confusion matrix of the rule on held-out folds (stratified, deterministic)."""
    by_phase: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_phase[lab].append(i)
    fold = [0] * len(labels)
    for members in by_phase.values():
        for j, i in enumerate(members):
            fold[i] = j % cfg.folds
    confusion = {p: {q: 0 for q in sorted(by_phase)} for p in sorted(by_phase)}
    ambiguous = 0
    for k in range(cfg.folds):
        train = [i for i in range(len(labels)) if fold[i] != k]
        test = [i for i in range(len(labels)) if fold[i] == k]
        if not test or len({labels[i] for i in train}) < 2:
            continue
        rule = fit_calibration([summaries[i] for i in train], [physics[i] for i in train], [labels[i] for i in train],
                               cfg.ambiguity_ratio)
        for i in test:
            verdict = rule.classify(summaries[i], physics[i])
            confusion[labels[i]][verdict.phase] += 1
            ambiguous += verdict.ambiguous
    total = sum(sum(row.values()) for row in confusion.values())
    right = sum(confusion[p][p] for p in confusion)
    return {"cv_accuracy": round(right / max(1, total), 4), "confusion": confusion,
            "ambiguous_share": round(ambiguous / max(1, total), 4),
            "per_phase_accuracy": {p: round(row[p] / max(1, sum(row.values())), 4) for p, row in confusion.items()}}


def typical_values(phase_rows: list[dict]) -> dict:
    """Per requested phase: 10th, 50th and 90th percentile of each summary statistic in this harvest."""
    out: dict[str, dict] = {}
    for phase in sorted({r["request"]["phase_type"] for r in phase_rows}):
        runs = [r["response"]["summary"] for r in phase_rows if r["request"]["phase_type"] == phase]
        out[phase] = {stat: {q: round(float(np.quantile([float(s[stat]) for s in runs], p)), 6)
                             for q, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))} for stat in SUMMARY_STATS}
    return out


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), **{f"q{int(q * 100)}": round(float(np.quantile(values, q)), 6) for q in QUANTILES}}


MIN_SCALE_RUNS = 4  # fewer runs than this give no quartiles worth quoting


def has_scale(scale: dict) -> bool:
    """Whether a quantile summary holds enough runs to call a value large or small."""
    return scale.get("n", 0) >= MIN_SCALE_RUNS


def size_word(value: float, scale: dict) -> str:
    """'small', 'typical' or 'large' relative to this lab's quartiles."""
    if not has_scale(scale):
        return "typical"
    return "large" if value > scale["q75"] else "small" if value < scale["q25"] else "typical"


def signature_words(signature: dict) -> str:
    """'string_order > 0.3 → spt_cluster, …, else trivial_product': the spoken rule in one line."""
    steps = [f"{s['reading']} > {s['cutoff']:.3g} → {s['phase']}" for s in signature["steps"]]
    return ", ".join(steps + [f"else {signature['otherwise']}"])


def confusion_markdown(confusion: dict, accuracy: float) -> str:
    """The confusion matrix as a markdown table."""
    phases = list(confusion)
    lines = [f"Cross-validated agreement with the requested phase: **{accuracy:.1%}**", "",
             "| requested \\ indicated | " + " | ".join(phases) + " |", "|---|" + "---:|" * len(phases)]
    lines += [f"| {p} | " + " | ".join(str(confusion[p][q]) for q in phases) + " |" for p in phases]
    return "\n".join(lines)


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def calibrate_phases(cfg: CalibrateConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: learn the lab's phase rule and TRI/drift scales from the harvest."""
    return calibrate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.ben_lab.calibrate_phases", __doc__, CalibrateConfig)
    parser.add_argument("--experiments", type=Path, required=True, help="experiments.jsonl (or the harvest dir)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(calibrate(config_from_args(CalibrateConfig, args, parser), args.experiments, args.out))


if __name__ == "__main__":
    main()
