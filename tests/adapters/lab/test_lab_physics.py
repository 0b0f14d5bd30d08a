"""The reference lab's physics: each phase shows its signature, and the MPS measurements are exact."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.lab import lab_physics as lp


@pytest.fixture(scope="module")
def runs() -> dict[str, lp.PhaseRun]:
    return {phase: lp.run_phase(phase, 32, 8, 42) for phase in lp.PHASE_TYPES}


def feature(run: lp.PhaseRun, name: str) -> float:
    return run.features[lp.FEATURES.index(name)]


def test_cluster_state_has_string_order_without_magnetization(runs):
    s = runs["spt_cluster"].summary
    assert s["string_order"] > 0.9
    assert abs(s["magnetization"]) < 0.1
    assert feature(runs["spt_cluster"], "zz_far") < 0.1  # hidden order only: no local ZZ order


def test_ordered_ising_has_long_range_zz_order_and_no_string_order(runs):
    run = runs["ising_symmetry_breaking"]
    assert feature(run, "zz_near") > 0.9 and feature(run, "zz_far") > 0.9
    assert abs(run.summary["string_order"]) < 0.1
    assert run.summary["correlation_length"] >= 16  # spans the chain
    assert abs(run.summary["magnetization"]) < 0.05  # the symmetric cat state: order without <Z>


def test_trivial_product_stays_unentangled_at_any_depth_and_bias():
    for depth, bias in ((1, None), (8, 0.3), (32, 0.9)):
        run = lp.run_phase("trivial_product", 32, depth, 5, bias)
        assert run.summary["entropy_proxy"] < 1e-6
        assert feature(run, "site_entropy") < 1e-6
        assert run.summary["correlation_length"] == 0.0
        assert run.summary["randomness_score"] < 0.01  # deterministic along each spin's own axis


def test_pseudorandom_is_far_more_entangled_and_random(runs):
    others = [runs[p].summary["entropy_proxy"] for p in lp.PHASE_TYPES if p != "pseudorandom"]
    pseudo = runs["pseudorandom"].summary
    assert pseudo["entropy_proxy"] > max(others) + 1.5
    assert pseudo["randomness_score"] > 0.8
    assert runs["ising_symmetry_breaking"].summary["randomness_score"] < 0.4
    assert pseudo["branch_count"] == lp.SHOTS  # every shot a different bitstring


def test_bias_sets_the_cat_state_magnetization():
    for bias in (0.1, 0.5, 0.8):
        run = lp.run_phase("ising_symmetry_breaking", 16, 1, 0, bias)
        assert run.summary["magnetization"] == pytest.approx(1 - 2 * bias, abs=0.03)


def test_same_seed_is_bit_for_bit_identical_and_seeds_differ():
    a = lp.run_phase("pseudorandom", 16, 6, 7)
    assert a == lp.run_phase("pseudorandom", 16, 6, 7)
    assert a.features != lp.run_phase("pseudorandom", 16, 6, 8).features


def test_feature_vector_layout(runs):
    for run in runs.values():
        assert len(run.features) == len(lp.FEATURES) == 16
        assert all(isinstance(v, float) and np.isfinite(v) for v in run.features)
        assert feature(run, "string_order") == run.summary["string_order"]
        xi_fraction = run.summary["correlation_length"] / 32
        assert feature(run, "correlation_length_fraction") == pytest.approx(xi_fraction, abs=1e-6)
    top = runs["ising_symmetry_breaking"].summary["top_k"]
    assert len(top) == lp.TOP_K and {t["bitstring"] for t in top[:2]} == {"0" * 32, "1" * 32}


@pytest.mark.parametrize("phase", lp.PHASE_TYPES)
def test_mps_measurements_match_statevector(phase):
    from qiskit.quantum_info import SparsePauliOp, Statevector

    n = 6
    qc = lp.prepare_circuit(phase, n, 3, 11, 0.7)
    sv, mps = Statevector(qc), lp.simulate_mps(qc)

    def exact(label_by_site: dict[int, str]) -> float:
        label = "".join(label_by_site.get(q, "I") for q in reversed(range(n)))  # Qiskit: qubit 0 rightmost
        return float(sv.expectation_value(SparsePauliOp(label)).real)

    assert np.allclose(lp.local_expectations(mps, lp.PAULI_Z), [exact({i: "Z"}) for i in range(n)], atol=1e-6)
    assert np.allclose(lp.local_expectations(mps, lp.PAULI_X), [exact({i: "X"}) for i in range(n)], atol=1e-6)
    zz = lp.string_profile(mps, 1, lp.PAULI_Z, lp.identity_fill, lp.PAULI_Z)
    assert np.allclose(zz, [exact({1: "Z", j: "Z"}) for j in range(2, n)], atol=1e-6)
    string = lp.string_profile(mps, 1, lp.PAULI_Z, lp.cluster_string_fill, lp.PAULI_Z)[3]
    assert string == pytest.approx(exact({1: "Z", 2: "X", 4: "X", 5: "Z"}), abs=1e-5)
    # A global string feels every truncation (weight <= TRUNCATION each), hence the looser tolerance.
    assert lp.chain_parity(mps) == pytest.approx(exact(dict.fromkeys(range(n), "X")), abs=1e-4)


def test_sampling_follows_the_born_rule():
    from qiskit.quantum_info import Statevector

    qc = lp.prepare_circuit("pseudorandom", 4, 2, 3, None)
    probs = np.abs(Statevector(qc).data) ** 2
    shots = lp.sample_bitstrings(lp.simulate_mps(qc), 20000, np.random.default_rng(0))
    empirical = np.bincount(shots @ (1 << np.arange(4)), minlength=16) / 20000
    assert 0.5 * np.abs(empirical - probs).sum() < 0.03


def test_cluster_string_order_survives_the_symmetric_quench_and_drifts():
    shallow, deep = (lp.run_phase("spt_cluster", 16, d, 1) for d in (2, 24))
    assert deep.summary["string_order"] > 0.85
    assert lp.feature_distance(shallow.features, deep.features) > 0.05


@pytest.mark.parametrize("phase", ["ising_symmetry_breaking", "spt_cluster", "trivial_product"])
def test_256_sites(phase):
    s = lp.run_phase(phase, 256, 2, 0).summary
    expected = {"ising_symmetry_breaking": ("correlation_length", 256.0),
                "spt_cluster": ("string_order", 1.0), "trivial_product": ("entropy_proxy", 0.0)}[phase]
    assert s[expected[0]] == pytest.approx(expected[1], abs=0.05)


def test_correlation_length_fit():
    r = np.arange(1, 17)
    assert lp.correlation_length(np.exp(-r / 3.0), 32) == pytest.approx(3.0, rel=0.05)
    assert lp.correlation_length(np.zeros(16), 32) == 0.0
    assert lp.correlation_length(np.full(16, 0.8), 32) == 32.0


def test_kmeans_separates_well_separated_groups_deterministically():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.05, (10, 3)) for c in (0.0, 1.0, 2.0)])
    labels = lp.kmeans_labels(points, 3, 10)
    assert (labels == lp.kmeans_labels(points, 3, 10)).all()
    assert sorted(len(set(labels[i:i + 10])) for i in (0, 10, 20)) == [1, 1, 1]
    assert len(set(labels)) == 3
