"""The encode stage: physics measured from Well trajectories agrees with what the solvers know, the
record validates, and the stage caches, fails cleanly and never reads the generator's truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from adapters.well import the_well as tw
from adapters.well import well_solvers as ws
from adapters.well import well_writer as ww
from tasks.quantum_mind import encode_trajectories as enc
from tasks.quantum_mind.encode_trajectories import (
    FEATURE_LAYOUT,
    EncodeConfig,
    PhysicsFeatures,
    encode,
)
from tasks.quantum_mind.physics_features import PhysicsThresholds, encode_trajectory

TWO_PI = 2 * np.pi


@pytest.fixture(scope="module")
def well(tmp_path_factory) -> Path:
    return ws.generate_default(tmp_path_factory.mktemp("well"), seed=0)


@pytest.fixture(scope="module")
def encoded(well, tmp_path_factory) -> tuple[dict, list[PhysicsFeatures]]:
    out = encode(EncodeConfig(source=str(well)), None, tmp_path_factory.mktemp("q") / "encode")
    rows = [PhysicsFeatures.model_validate_json(line) for line in (out / "features.jsonl").read_text().splitlines()]
    return json.loads((out / "manifest.json").read_text()), rows


def records(encoded, dataset: str) -> list[tuple[PhysicsFeatures, dict]]:
    """Records of one dataset with the generator's truth for each."""
    return [(r, tw.read_truth(r.file)[r.trajectory]) for r in encoded[1] if r.dataset == dataset]


def traj(fields: dict, order: dict, coords: dict, t: np.ndarray, bc: str = "PERIODIC", constant: dict | None = None) -> tw.Trajectory:
    return tw.Trajectory(dataset="test", file="in-memory", index=0, time=t, coords=coords,
                         boundary={ax: (bc, bc) for ax in coords}, parameters={}, fields=fields, field_order=order,
                         constant_fields=constant or {})


def measure(tr: tw.Trajectory, **thresholds) -> PhysicsFeatures:
    return enc.physics_record(encode_trajectory(tr, PhysicsThresholds(**thresholds)))


def grid2d(n: int = 32):
    x = np.arange(n) * TWO_PI / n
    return x, *np.meshgrid(x, x, indexing="ij")


# --- accuracy against the solvers' known physics --------------------------------------------

def test_labels_agree_with_the_generators_truth(encoded):
    manifest, rows = encoded
    m = manifest["metrics"]
    assert m["truth_accuracy"] >= 0.9, manifest["truth_mismatches"]
    for kind in ("symmetry", "conservation", "dynamics"):
        assert m[f"truth_accuracy_{kind}"] >= 0.9, (kind, manifest["truth_mismatches"])
    assert m["truth_labels"] >= 250 and manifest["counts"]["trajectories"] == len(rows) == 34
    assert {r["dataset"] for r in manifest["per_dataset"]} == set(ws.SOLVERS)
    assert all(r["truth_accuracy"] >= 0.8 for r in manifest["per_dataset"])
    assert {r.dynamics.label for r in rows} == {"steady", "transient", "periodic", "quasi-periodic", "chaotic"}


def test_every_record_carries_the_documented_vector(encoded):
    _, rows = encoded
    for r in rows:
        assert len(r.feature_vector) == len(FEATURE_LAYOUT) == 28
        v = dict(zip(FEATURE_LAYOUT, r.feature_vector))
        assert v["n_spatial_dims"] == r.n_spatial_dims
        assert v[f"dyn_{r.dynamics.label.replace('-', '_')}"] == 1.0 and sum(v[k] for k in FEATURE_LAYOUT if k.startswith("dyn_") and k != "dyn_confidence") == 1
        for name, q in r.conserved.items():
            assert v[f"conserved_{name}"] == float(q.conserved)
        for name, conf in r.symmetries.items():
            assert v[f"sym_{name}"] == conf
        assert 0 <= v["correlation_length_frac"] <= 1 and 0 <= v["correlation_time_frac"] <= 1


def test_diffusion_conserves_mass_not_energy_and_keeps_its_symmetry(encoded):
    for r, truth in records(encoded, "diffusion_2d"):
        assert r.conserved["mass"].conserved and r.conserved["mass"].drift < 1e-5
        assert not r.conserved["energy"].conserved
        assert r.dynamics.label == "transient"
        assert r.symmetries["translation_x"] > 0.9 and r.symmetries["time_translation"] < 0.5
        assert (r.symmetries["reflection_x"] > 0.5) == truth["symmetries"]["reflection_x"]
        assert (r.symmetries["rotation_90"] > 0.5) == truth["symmetries"]["rotation_90"]


def test_gray_scott_does_not_conserve_mass_and_noise_breaks_its_symmetry(encoded):
    rows = records(encoded, "gray_scott_2d")
    assert all(not r.conserved["mass"].conserved and r.conserved["mass"].drift > 1e-2 for r, _ in rows)
    noisy = [r for r, truth in rows if not truth["symmetries"]["reflection_x"]]
    clean = [r for r, truth in rows if truth["symmetries"]["reflection_x"]]
    assert noisy and clean
    assert all(r.symmetries["reflection_x"] < 0.5 and r.symmetries["rotation_90"] < 0.5 for r in noisy)
    assert all(r.symmetries["reflection_x"] > 0.5 and r.symmetries["rotation_90"] > 0.5 for r in clean)


def test_wave_energy_is_the_acoustic_form_and_motion_is_periodic(encoded):
    standing = 0
    for r, truth in records(encoded, "acoustic_wave_2d"):
        e = r.conserved["energy"]
        assert e.conserved and e.drift < 1e-5
        p = tw.WellFile(r.file).trajectory(r.trajectory).fields["pressure"]
        if np.ptp((p ** 2).sum((1, 2))) > 0.1 * (p ** 2).sum((1, 2)).mean():  # standing waves trade p and v energy
            c = r.simulation_parameters["sound_speed"]
            weights = dict(reversed(term.split("·")) for term in e.form.split(" + "))
            assert set(weights) == {"∫|pressure'|²", "∫|velocity'|²"}
            # E = ∫ p²/c² + |v|²: the fitted weights recover the sound speed
            assert float(weights["∫|pressure'|²"]) / float(weights["∫|velocity'|²"]) == pytest.approx(1 / c ** 2, rel=0.02)
            standing += 1
        assert r.conserved["momentum_x"].conserved and r.conserved["momentum_y"].conserved
        assert r.dynamics.label == truth["dynamics"] and r.dynamics.label in ("periodic", "quasi-periodic")
        assert r.symmetries["time_translation"] > 0.5
    assert standing >= 4


def test_burgers_conserves_momentum_but_dissipates_energy(encoded):
    for r, _ in records(encoded, "burgers_1d"):
        assert r.conserved["momentum_x"].conserved and not r.conserved["energy"].conserved
        assert "mass" not in r.conserved and "rotation_90" not in r.symmetries  # 1D, velocity only
        assert r.boundary_conditions == {"x": "PERIODIC"}


def test_kuramoto_sivashinsky_is_chaotic_and_stationary(encoded):
    for r, _ in records(encoded, "kuramoto_sivashinsky_1d"):
        assert r.dynamics.label == "chaotic"
        assert r.dynamics.quasi_periodic_fit < 0.5
        assert r.symmetries["time_translation"] > 0.5


def test_a_fixed_flow_breaks_translation_symmetry(encoded):
    for r, _ in records(encoded, "cellular_flow_2d"):
        assert r.constant_fields == ["velocity"]
        assert r.symmetries["translation_x"] < 0.5 and r.symmetries["translation_y"] < 0.5
        assert r.conserved["mass"].conserved


# --- constructed trajectories with known physics --------------------------------------------

def test_constructed_steady_field_is_steady_with_walls():
    x = np.linspace(0, 1, 24)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = np.sinh(np.pi * Y) * np.sin(np.pi * X) / np.sinh(np.pi)  # harmonic: a steady temperature in a plate
    r = measure(traj({"T": np.repeat(u[None], 30, 0)}, {"T": 0}, {"x": x, "y": x}, np.linspace(0, 1, 30), bc="WALL"))
    assert r.dynamics.label == "steady"
    assert r.symmetries["reflection_x"] > 0.5 and r.symmetries["reflection_y"] < 0.5
    assert r.symmetries["translation_x"] < 0.5  # walls
    assert r.conserved["mass"].conserved and r.conserved["energy"].conserved
    assert r.symmetries["time_translation"] > 0.5


def test_a_travelling_wave_is_periodic_but_not_mirror_symmetric():
    """Every frame of cos(x - ct) is mirror-symmetric about its own crest, but no fixed mirror maps the motion onto itself."""
    x = np.arange(64) * TWO_PI / 64
    t = np.linspace(0, 4 * TWO_PI, 60)
    u = np.cos(x[None] - t[:, None]) + 0.4 * np.cos(2 * (x[None] - t[:, None]))
    r = measure(traj({"u": u}, {"u": 0}, {"x": x}, t))
    assert r.dynamics.label == "periodic" and r.dynamics.dominant_period == pytest.approx(TWO_PI, rel=0.01)
    assert r.symmetries["reflection_x"] < 0.5
    standing = measure(traj({"u": np.cos(x[None]) * np.cos(t[:, None])}, {"u": 0}, {"x": x}, t))
    assert standing.symmetries["reflection_x"] > 0.5


def test_two_incommensurate_frequencies_are_quasi_periodic_and_noise_is_chaotic():
    _, X, Y = grid2d(16)
    t = np.linspace(0, 30, 80)
    u = np.cos(X)[None] * np.cos(t)[:, None, None] + np.cos(2 * Y)[None] * np.sin(np.sqrt(3) * t)[:, None, None]
    coords = {"x": X[:, 0], "y": X[:, 0]}
    assert measure(traj({"u": u}, {"u": 0}, coords, t)).dynamics.label == "quasi-periodic"
    rng = np.random.default_rng(0)
    noise = np.cumsum(rng.standard_normal((80, 16, 16)), 0) * 0.1 + rng.standard_normal((80, 16, 16))
    assert measure(traj({"u": noise}, {"u": 0}, coords, t)).dynamics.label == "chaotic"


def test_vector_fields_reflect_with_their_components():
    """A rotating flow v = (-y, x) around the centre is mirror-symmetric only if v_x flips sign under x -> -x."""
    x = np.linspace(-1, 1, 17)
    X, Y = np.meshgrid(x, x, indexing="ij")
    v = np.stack([-Y, X], -1) * np.exp(-(X ** 2 + Y ** 2))[..., None]
    frames = v[None] * np.linspace(1, 0.2, 20)[:, None, None, None]
    r = measure(traj({"v": frames}, {"v": 1}, {"x": x, "y": x}, np.linspace(0, 1, 20), bc="WALL"))
    assert r.symmetries["rotation_90"] > 0.5
    # a vortex maps onto its mirror image with the opposite sense of rotation: not a symmetry
    assert r.symmetries["reflection_x"] < 0.5 and r.symmetries["reflection_y"] < 0.5


# --- the stage -------------------------------------------------------------------------------

def _subset(well: Path, tmp_path: Path, names=("steady_plate_2d", "burgers_1d")) -> Path:
    root = tmp_path / "src"
    for name in names:
        shutil.copytree(well / name, root / name)
    return root


def test_second_run_is_a_cache_hit_and_a_changed_file_is_not(well, tmp_path):
    src = _subset(well, tmp_path)
    cfg = EncodeConfig(source=str(src))
    out = encode(cfg, None, tmp_path / "encode")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["trajectories"] == 8 and manifest["metrics"]["truth_accuracy"] >= 0.9
    assert set(manifest["files"]) == {"features.jsonl", "rejects.jsonl"}
    before = (out / "manifest.json").stat().st_mtime_ns
    encode(cfg, None, tmp_path / "encode")
    assert (out / "manifest.json").stat().st_mtime_ns == before
    with h5py.File(min(src.glob("burgers_1d/data/train/*.hdf5")), "a") as h:
        h["t1_fields/velocity"][0, 0] *= 2
    encode(cfg, None, tmp_path / "encode")
    assert (out / "manifest.json").stat().st_mtime_ns != before
    encode(cfg.model_copy(update={"max_trajectories": 3}), None, tmp_path / "encode")
    assert json.loads((out / "manifest.json").read_text())["counts"]["trajectories"] == 3


def test_encoder_never_reads_the_truth(well, tmp_path):
    src = _subset(well, tmp_path, names=("gray_scott_2d",))
    with_truth = (encode(EncodeConfig(source=str(src)), None, tmp_path / "a") / "features.jsonl").read_text()
    for path in src.glob("*/data/*/*.hdf5"):
        with h5py.File(path, "a") as h:
            del h.attrs[tw.TRUTH_ATTR]
    out = encode(EncodeConfig(source=str(src)), None, tmp_path / "b")
    assert (out / "features.jsonl").read_text() == with_truth
    assert "truth_accuracy" not in json.loads((out / "manifest.json").read_text())["metrics"]


def test_a_corrupt_file_fails_naming_it_and_leaves_nothing(well, tmp_path):
    src = _subset(well, tmp_path, names=("steady_plate_2d",))
    bad = min(src.glob("*/data/train/*.hdf5"))
    with h5py.File(bad, "a") as h:
        del h["t1_fields"]
    with pytest.raises(tw.WellFormatError, match=rf"{bad.name}: missing group 't1_fields'"):
        encode(EncodeConfig(source=str(src)), None, tmp_path / "q" / "encode")
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_disagreeing_with_the_truth_fails_the_stage(well, tmp_path):
    src = _subset(well, tmp_path, names=("acoustic_wave_2d",))
    strict = EncodeConfig(source=str(src), thresholds=PhysicsThresholds(conservation_tolerance=1e-30), min_truth_accuracy=0.99)
    with pytest.raises(ValueError, match="agrees with the generator's truth on .* below min_truth_accuracy"):
        encode(strict, None, tmp_path / "q" / "encode")
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_default_source_is_generated_next_to_the_output_and_cli_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ws, "SOLVERS", {"steady_plate_2d": ws.SOLVERS["steady_plate_2d"]})  # keep the test fast
    enc.main(["--out", str(tmp_path / "quantum_mind" / "encode"), "--set", "max_trajectories=2"])
    assert "no source configured" in capsys.readouterr().out
    assert json.loads((tmp_path / "quantum_mind/well_data/datasets/generator.json").read_text())["trajectories"] == {"steady_plate_2d": 4}
    assert len((tmp_path / "quantum_mind/encode/features.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="give one"):
        encode(EncodeConfig(source="x"), [tmp_path], tmp_path / "other")


def test_trajectories_without_time_varying_fields_are_rejected(tmp_path):
    x = np.linspace(0, 1, 8)
    ds = ws.SimulatedDataset("static", ("x",), {"x": x}, np.arange(5.0), {"x": "WALL"}, {}, [])
    pset = ws.ParameterSet({"a": 1.0}, [ws.Run({}, {})], constant_fields={"density": (0, x ** 2)})
    ww.write_well_file(tmp_path / "src" / "static.hdf5", ds, pset, pset.runs)
    with pytest.raises(ValueError, match="1 of 1 trajectories have nothing to measure"):
        encode(EncodeConfig(source=str(tmp_path / "src")), None, tmp_path / "a")
    out = encode(EncodeConfig(source=str(tmp_path / "src"), max_reject_rate=1.0), None, tmp_path / "b")
    assert "no time-varying fields" in (out / "rejects.jsonl").read_text()
    assert (out / "features.jsonl").read_text() == ""


# --- grids other than cartesian --------------------------------------------------------------

def sphere(n_theta: int = 32, n_phi: int = 64):
    """Cell-centred colatitudes and periodic longitudes, as meshgrids (theta, phi)."""
    theta = (np.arange(n_theta) + 0.5) * np.pi / n_theta
    phi = np.arange(n_phi) * TWO_PI / n_phi
    return theta, phi, *np.meshgrid(theta, phi, indexing="ij")


SPHERE_BC = {"theta": ("OPEN", "OPEN"), "phi": ("PERIODIC", "PERIODIC")}


def test_mass_on_a_sphere_is_integrated_over_its_cell_areas():
    """A decaying P2(cos θ) pattern keeps ∫h sinθ dθ dφ fixed while the plain sum over grid points drifts by ~40%."""
    theta, phi, T, P = sphere()
    t = np.linspace(0, 2, 40)
    h = 1 + 0.8 * np.exp(-6 * t)[:, None, None] * (3 * np.cos(T) ** 2 - 1)[None]
    tr = tw.Trajectory("planet", "in-memory", 0, t, {"theta": theta, "phi": phi}, SPHERE_BC, {}, {"h": h}, {"h": 0},
                       grid_type="equiangular")
    r = measure(tr)
    plain = h.sum((1, 2))
    assert np.abs(plain - plain[0]).max() / plain.mean() > 0.1  # unweighted, mass would look broken
    assert r.grid_type == "equiangular" and r.conserved["mass"].conserved and r.conserved["mass"].drift < 1e-3
    assert set(r.symmetries) == {"time_translation"}  # mirrors/shifts of array indices are not those of a sphere
    assert {"reflection", "rotation_90", "translation", "energy_gradient_terms", "spatial_scales"} <= set(r.skipped_checks)
    assert "∇" not in r.conserved["energy"].form and r.dynamics.label == "transient"
    assert len(r.feature_vector) == len(FEATURE_LAYOUT) and r.scales["domain_length"] == 64  # phi wraps: 64 cells

    spinning = 1 + (np.sin(T)[None] * np.cos(P[None] - t[:, None, None] * 12))  # rigid rotation about the pole, 4 turns
    r = measure(tw.Trajectory("planet", "in-memory", 0, t, {"theta": theta, "phi": phi}, SPHERE_BC, {}, {"h": spinning},
                              {"h": 0}, grid_type="equiangular"))
    assert r.conserved["mass"].conserved and r.conserved["energy"].conserved and r.dynamics.label == "periodic"


def test_a_spherical_shell_weighs_log_spaced_radii_by_r_squared_and_skips_momentum():
    edges = np.geomspace(1, 2, 25)
    radius = np.sqrt(edges[1:] * edges[:-1])
    theta, phi, _, _ = sphere(16, 16)
    R = radius[:, None, None] * np.ones((1, 16, 16))
    t = np.linspace(0, 1, 30)
    decay = np.exp(-3 * t)[:, None, None, None]
    rho = 1 + decay * np.cos(TWO_PI * (R - 1)) / R ** 2  # ∫ r² (rho - 1) dr = 0 at every time
    v = np.repeat((decay * np.ones_like(R)[None])[..., None], 3, -1)  # a vector (v_r, v_theta, v_phi)
    tr = tw.Trajectory("shell", "in-memory", 0, t, {"r": radius, "theta": theta, "phi": phi},
                       {"r": ("WALL", "WALL"), **SPHERE_BC}, {}, {"rho": rho, "v": v}, {"rho": 0, "v": 1}, grid_type="spherical")
    r = measure(tr)
    plain = rho.sum((1, 2, 3))
    assert np.abs(plain - plain[0]).max() / plain.mean() > 0.03
    assert r.conserved["mass"].conserved and r.conserved["mass"].drift < 1e-3
    assert not any(k.startswith("momentum") for k in r.conserved) and "momentum" in r.skipped_checks


def test_every_grid_type_goes_through_the_stage_and_is_named(tmp_path, capsys):
    theta, phi, T, _ = sphere(16, 32)
    t = np.linspace(0, 2, 20)
    h = 1 + 0.8 * np.exp(-6 * t)[:, None, None] * (3 * np.cos(T) ** 2 - 1)[None]
    for grid, conserved in (("equiangular", {"mass": True}), ("spherical", {"mass": True}), ("icosahedral", {})):
        ds = ws.SimulatedDataset(f"{grid}_planet", ("theta", "phi"), {"theta": theta, "phi": phi}, t,
                                 {"theta": "OPEN", "phi": "PERIODIC"}, {"h": 0}, [], grid_type=grid)
        pset = ws.ParameterSet({"nu": 0.1}, [ws.Run({"h": h}, ws.truth("transient", {}, conserved))])
        ww.write_well_file(tmp_path / "src" / ds.name / "data" / "train" / f"{grid}.h5", ds, pset, pset.runs)
    out = encode(EncodeConfig(source=str(tmp_path / "src")), None, tmp_path / "encode")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {r.dataset: r for r in map(PhysicsFeatures.model_validate_json, (out / "features.jsonl").read_text().splitlines())}
    assert manifest["counts"]["non_cartesian"] == 3 and manifest["metrics"]["truth_accuracy"] == 1.0
    assert {name: g["grid_type"] for name, g in manifest["skipped_checks"].items()} == {
        "equiangular_planet": "equiangular", "spherical_planet": "spherical", "icosahedral_planet": "icosahedral"}
    assert rows["spherical_planet"].conserved["mass"].conserved  # a (theta, phi) sphere in the spherical layout
    unknown = rows["icosahedral_planet"]
    assert "icosahedral" in unknown.skipped_checks["grid_type"] and "icosahedral" in unknown.skipped_checks["mass"]
    assert unknown.conserved == {} and set(unknown.symmetries) == {"time_translation"}
    log = capsys.readouterr().out
    assert "grid_type 'icosahedral' is not a uniform cartesian grid" in log and "grid_type 'equiangular'" in log
