"""The lab's phase rules as a user meets them: the spoken decision list and the centroid rule's verdicts."""

from __future__ import annotations

import pytest

from tasks.ben_lab.describe_phases import fit_calibration, fit_signature

FOUR_PHASES = ("spt_cluster", "pseudorandom", "ising_symmetry_breaking", "trivial_product")


def reading(string_order=0.05, randomness=0.1, correlation=1.0, i=0) -> dict:
    """A run's summary readings, with a little run-to-run noise."""
    noise = 0.01 * (i % 3)
    return {"string_order": string_order + noise, "randomness_score": randomness + noise,
            "correlation_length": correlation + 10 * noise}


def harvest_of_four_phases(runs_per_phase: int = 6) -> tuple[list[dict], list[str]]:
    """Each phase stands out on one reading; the trivial product is low on all of them."""
    by_phase = {"spt_cluster": dict(string_order=0.9), "pseudorandom": dict(randomness=0.9),
                "ising_symmetry_breaking": dict(correlation=8.0), "trivial_product": {}}
    summaries, labels = [], []
    for i in range(runs_per_phase):
        for phase in FOUR_PHASES:
            summaries.append(reading(**by_phase[phase], i=i))
            labels.append(phase)
    return summaries, labels


def fmt(value) -> str:
    return f"{float(value):.3f}"


def test_a_run_whose_string_order_is_high_is_called_spt():
    rule = fit_signature(*harvest_of_four_phases())
    assert rule.accuracy == 1.0
    assert rule.otherwise == "trivial_product", "the phase low on every reading is the fallback"
    assert rule.decide(reading(string_order=0.8)) == ("spt_cluster", 1)
    assert rule.decide(reading(randomness=0.8))[0] == "pseudorandom"
    assert rule.decide(reading(correlation=7.0))[0] == "ising_symmetry_breaking"
    assert rule.decide(reading()) == ("trivial_product", 3), "every reading is read before the fallback"


def test_the_spoken_reasoning_calls_each_reading_low_until_one_decides():
    rule = fit_signature(*harvest_of_four_phases())
    assert [s.reading for s in rule.steps] == ["string_order", "randomness_score", "correlation_length"]
    text, phase = rule.reasoning(reading(correlation=8.0), fmt)
    assert phase == "ising_symmetry_breaking"
    assert text == "String order 0.050 is low; randomness 0.100 is low; correlation length 8.000 is long"
    text, phase = rule.reasoning(reading(string_order=0.9, correlation=8.0), fmt)
    assert (text, phase) == ("String order 0.900 is high", "spt_cluster"), "reading stops at the deciding step"


def test_of_two_clean_splits_the_rule_reads_the_one_with_the_wider_gap():
    """String order separates the phases by a hair, correlation length by a wide margin: the rule reads the latter."""
    spt = [{"string_order": s, "randomness_score": 0.1, "correlation_length": xi}
           for s, xi in ((0.50, 9.0), (0.6, 9.1), (0.7, 9.2), (0.8, 9.3))]
    trivial = [{"string_order": s, "randomness_score": 0.1, "correlation_length": xi}
               for s, xi in ((0.1, 1.0), (0.2, 1.1), (0.3, 1.2), (0.49, 1.3))]
    rule = fit_signature(spt + trivial, ["spt_cluster"] * 4 + ["trivial_product"] * 4)
    assert [(s.reading, s.phase) for s in rule.steps] == [("correlation_length", "spt_cluster")]
    assert rule.steps[0].cutoff == pytest.approx((1.3 + 9.0) / 2) and rule.accuracy == 1.0  # the middle of the gap


def summary(system_size: int, correlation_length: float, magnetization: float = 0.015) -> dict:
    return {"magnetization": magnetization, "entropy_proxy": 1.0, "correlation_length": correlation_length,
            "string_order": 0.0, "randomness_score": 0.2, "branch_count": 10, "interfered_count": 0,
            "system_size": system_size}


def test_a_lab_reporting_correlation_in_sites_is_judged_relative_to_the_chain():
    """Ising runs span half the chain, trivial ones a tenth: on a chain size the harvest never saw, the
    absolute length would mislead (1.6 sites looks short, 64 long), the fraction does not."""
    summaries = [summary(n, 0.5 * n, m) for n, m in ((8, 0.01), (10, 0.02))] + \
                [summary(n, 0.1 * n, m) for n, m in ((48, 0.01), (64, 0.02))]
    rule = fit_calibration(summaries, [None] * 4, ["ising_symmetry_breaking"] * 2 + ["trivial_product"] * 2)
    assert rule.correlation_in_sites
    assert rule.classify(summary(16, 1.6), None).phase == "trivial_product"
    assert rule.classify(summary(128, 64.0), None).phase == "ising_symmetry_breaking"
    assert not rule.classify(summary(128, 64.0), None).ambiguous
