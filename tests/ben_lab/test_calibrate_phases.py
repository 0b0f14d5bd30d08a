"""The lab's own phase rule, learnt from a real harvest of the reference lab in both of its modes."""

from __future__ import annotations

import json

import pytest

from adapters.lab.lab_server import reference_lab
from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate, load_calibration, size_word
from tasks.ben_lab.describe_phases import PhaseCalibration, Verdict, fit_calibration, verdict_sentence
from tasks.ben_lab.harvest_experiments import HarvestConfig, harvest

PHASES_ONLY = dict(phase_runs_per_type=12, tri_runs=0, discovery_runs=0, drift_runs=0, system_sizes=[8, 12, 16],
                   depths=[1, 2, 4], timeout_s=60)


@pytest.fixture(scope="module", params=[False, True], ids=["reference", "quirks"])
def calibrated(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    with reference_lab(quirks=request.param) as url:
        harvested = harvest(HarvestConfig(lab_url=url, **PHASES_ONLY), None, root / "harvest")
    return calibrate(CalibrateConfig(), harvested, root / "calibrate")


def test_learnt_rule_agrees_with_the_requested_phase_on_90_percent(calibrated):
    manifest = json.loads((calibrated / "manifest.json").read_text())
    confusion = manifest["confusion"]
    assert set(confusion) == {"ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom"}
    assert sum(sum(row.values()) for row in confusion.values()) == 48, "every phase run is scored once, held out"
    assert manifest["metrics"]["cv_accuracy"] >= 0.9
    assert load_calibration(calibrated)["cv_accuracy"] == manifest["metrics"]["cv_accuracy"]


def test_quirks_lab_defeats_fixed_thresholds_but_not_the_learnt_rule(tmp_path):
    """The user's lab reports correlation length as a fraction: a rule of 'xi >= N/2 sites' never says Ising."""
    with reference_lab(quirks=True) as url:
        harvested = harvest(HarvestConfig(lab_url=url, **PHASES_ONLY), None, tmp_path / "harvest")
    rows = [json.loads(line) for line in (harvested / "experiments.jsonl").read_text().splitlines()]
    ising = [r["response"]["summary"] for r in rows if r["request"]["phase_type"] == "ising_symmetry_breaking"]
    assert all(s["correlation_length"] < 0.5 * s["system_size"] for s in ising)
    report = load_calibration(calibrate(CalibrateConfig(), harvested, tmp_path / "calibrate"))
    assert report["per_phase_accuracy"]["ising_symmetry_breaking"] >= 0.9
    assert report["rule"]["correlation_in_sites"] is False


def test_runs_the_measurements_cannot_separate_are_said_to_be_ambiguous():
    """Two phases with identical measurements: the verdict names both instead of asserting one."""
    base = {"magnetization": 0.0, "entropy_proxy": 1.0, "correlation_length": 2.0, "string_order": 0.0,
            "randomness_score": 0.5, "branch_count": 100, "interfered_count": 4, "system_size": 8}
    summaries = [dict(base, randomness_score=0.5 + 0.01 * (i % 3)) for i in range(6)] + \
                [dict(base, string_order=0.9 + 0.01 * (i % 3)) for i in range(3)]
    labels = ["trivial_product", "pseudorandom"] * 3 + ["spt_cluster"] * 3
    rule = fit_calibration(summaries, [None] * 9, labels)
    verdict = rule.classify(dict(base, randomness_score=0.51), None)
    assert verdict.ambiguous and {verdict.phase, verdict.runner_up} == {"trivial_product", "pseudorandom"}
    assert "do not clearly separate" in verdict_sentence(verdict)
    clear = rule.classify(dict(base, string_order=0.91), None)
    assert clear == Verdict("spt_cluster", clear.runner_up, False) and verdict_sentence(clear) == "the spt_cluster phase"


def test_rule_round_trips_through_its_json():
    summaries = [{"magnetization": m, "entropy_proxy": 0.0, "correlation_length": 1.0, "string_order": s,
                  "randomness_score": 0.0, "branch_count": 1, "interfered_count": 0, "system_size": 8}
                 for m, s in ((0.9, 0.0), (0.8, 0.1), (0.0, 0.9), (0.1, 0.95))]
    rule = fit_calibration(summaries, [[1.0, 0.0]] * 4, ["ising_symmetry_breaking"] * 2 + ["spt_cluster"] * 2)
    again = PhaseCalibration(**json.loads(rule.model_dump_json()))
    assert again.classify(summaries[2], [1.0, 0.0]).phase == "spt_cluster"


def test_sizes_are_relative_to_the_labs_quartiles():
    scale = {"n": 20, "q25": 0.1, "q75": 0.4}
    assert [size_word(v, scale) for v in (0.05, 0.2, 0.9)] == ["small", "typical", "large"]
    assert size_word(0.9, {"n": 2}) == "typical", "too few runs to call anything large"
