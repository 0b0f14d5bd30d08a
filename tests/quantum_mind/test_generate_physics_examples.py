"""Physics examples: claims the real verifier accepts, designs that follow the physics, varied code, valid records."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict

import pytest

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode, physics_record
from tasks.quantum_mind.circuit_design import design, eligible_families
from tasks.quantum_mind.generate_physics_examples import GenerateConfig, generate, main
from tasks.quantum_mind.physics_reasoning import REASONING, REQUESTS, SEED_TYPES, drift
from tasks.common.records import RecordError, read_chat_records, read_jsonl
from tasks.quantum_mind.verify_circuits import CircuitVerifier, CodeItem, VerifyConfig, read_items

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def trajectory(dataset: str, bc: dict, conserved: dict, symmetries: dict, dynamics: str = "transient",
               period: float | None = None, constant: tuple = ()) -> dict:
    """A PhysicsFeatures line with chosen measurements (conserved: name -> (drift, conserved))."""
    nd = len(bc)
    measured = {
        "dataset": dataset, "file": f"/data/{dataset}.hdf5", "trajectory": 0, "n_spatial_dims": nd,
        "boundary_conditions": bc, "fields": ["u"], "constant_fields": list(constant), "symmetries": symmetries,
        "conserved": {q: {"drift": d, "conserved": c, "form": f"∫{q}"} for q, (d, c) in conserved.items()},
        "dynamics": {"class": dynamics, "confidence": 0.9, "late_activity_ratio": 0.8 if period else 0.05,
                     "periodic_fit": 0.99 if period else None, "quasi_periodic_fit": 0.99 if period else None,
                     "dominant_period": period, "spectral_entropy": 0.3},
        "scales": {"correlation_length": 1.5, "correlation_time": 0.7, "characteristic_velocity": 0.3, "rms_energy": 0.5,
                   "domain_length": 6.0, "duration": 20.0},
        "simulation_parameters": {"c": 1.0},
    }
    return physics_record(measured).model_dump(mode="json", by_alias=True)


MASS_RING = trajectory("mass_ring_1d", {"x": "PERIODIC"}, {"mass": (3e-12, True), "energy": (0.31, False)},
                       {"translation_x": 0.98, "reflection_x": 0.02, "time_translation": 0.1})
WAVE = trajectory("wave_2d", {"x": "PERIODIC", "y": "PERIODIC"}, {"mass": (0.2, False), "energy": (4e-8, True)},
                  {"translation_x": 0.98, "translation_y": 0.98, "reflection_x": 0.0, "reflection_y": 0.0, "time_translation": 1.0},
                  "periodic", 2.5)
PLATE = trajectory("plate_2d", {"x": "WALL", "y": "WALL"}, {"mass": (1e-9, True), "energy": (1e-9, True)},
                   {"translation_x": 0.02, "translation_y": 0.02, "reflection_x": 0.99, "reflection_y": 0.0, "time_translation": 1.0},
                   "steady")
REACTION = trajectory("reaction_2d", {"x": "PERIODIC", "y": "PERIODIC"}, {"mass": (0.4, False), "energy": (0.2, False)},
                      {"translation_x": 0.02, "translation_y": 0.02, "reflection_x": 0.0, "reflection_y": 0.0, "time_translation": 0.0},
                      "chaotic", 30.0, constant=("velocity",))


def write_features(path, *rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def features(row: dict):
    from tasks.quantum_mind.encode_trajectories import PhysicsFeatures

    return PhysicsFeatures.model_validate(row)


@pytest.fixture(scope="module")
def embedded_features(tmp_path_factory):
    """features.jsonl of labtune's 34 embedded trajectories (generated and encoded in a few seconds)."""
    return encode(EncodeConfig(), None, tmp_path_factory.mktemp("qm") / "encode") / "features.jsonl"


@pytest.fixture(scope="module")
def default_run(embedded_features, tmp_path_factory):
    """The stage with its default config (5,000 examples) on the embedded features."""
    return generate(GenerateConfig(), embedded_features, tmp_path_factory.mktemp("gen") / "generate")


def records(out) -> list[dict]:
    return read_jsonl(out / "physics_augmented.jsonl") + read_jsonl(out / "physics_reasoning.jsonl")


def test_mass_conservation_periodic_boundary_and_translation_choose_u1_ring_with_shared_angles():
    f, rng = features(MASS_RING), random.Random(0)
    assert eligible_families(f, list(cf.FAMILIES)) == ["u1_givens", "u1_exchange", "hardware_efficient", "qaoa"]
    for _ in range(100):
        d = design(f, GenerateConfig(), rng, family=rng.choice(["u1_givens", "u1_exchange"]))
        code, claims = cf.render(d.spec)
        n = claims["n_qubits"]
        assert (claims["symmetry"], claims["connectivity"], claims["parameter_sharing"]) == ("u1", "ring", "translation")
        assert (n - 1, 0) in {(a, b) for a, b, _ in cf.lattice_bonds(d.spec.shape, d.spec.periodic, d.spec.ordering)}
        assert f"({n - 1}, 0)" in code  # the ring's closing bond is in the code
        assert cf.parameter_count(d.spec) < cf.parameter_count(cf.CircuitSpec(**{**d.spec.__dict__, "sharing": "none"}))


def test_energy_without_mass_allows_z2_and_nothing_conserved_leaves_baselines():
    assert eligible_families(features(WAVE), list(cf.FAMILIES)) == ["z2_parity", "hardware_efficient", "qaoa"]
    assert eligible_families(features(REACTION), list(cf.FAMILIES)) == ["hardware_efficient", "qaoa"]
    rng = random.Random(1)
    picks = {design(features(REACTION), GenerateConfig(), rng).spec.family for _ in range(50)}
    assert picks == {"hardware_efficient", "qaoa"}


def test_walls_give_open_lattices_and_a_mirror_symmetry_shares_mirror_angles():
    f, rng = features(PLATE), random.Random(2)
    seen = defaultdict(set)
    for _ in range(200):
        spec = design(f, GenerateConfig(), rng, family="u1_givens").spec
        seen["connectivity"].add(cf.connectivity(spec.shape, spec.periodic))
        seen["sharing"].add(spec.sharing)
    assert seen["connectivity"] == {"chain", "grid"}
    assert seen["sharing"] == {"mirror", "none"}


def test_generated_claims_pass_the_real_verifier(embedded_features, tmp_path):
    """Up to 5 code blocks per family and size, 4 and 12 qubits, every sharing and style; plus a false claim it must catch."""
    out = generate(GenerateConfig(examples=800, seed=3), embedded_features, tmp_path / "gen")
    by_group = defaultdict(list)
    for item in read_items(out / "code.jsonl"):
        if item.claims.n_qubits in (4, 12):
            by_group[(item.claims.family, item.claims.n_qubits)].append(item)
    assert len(by_group) == 10  # 5 families x {4, 12}
    sample = [it for group in by_group.values() for it in group[:5]]
    assert len(sample) >= 40 and all(len(group) >= 3 for group in by_group.values())
    assert {it.claims.symmetry for it in sample} == {"u1", "z2", "none"}
    assert {it.claims.parameter_sharing for it in sample} >= {"none", "translation", "per_layer"}
    u1 = next(it for it in sample if it.claims.symmetry == "u1")
    false_claim = CodeItem(id="false", code=u1.code, claims={**u1.claims.model_dump(), "particles": u1.claims.particles + 1})
    with CircuitVerifier(VerifyConfig(workers=2, bp_samples=4, bp_params=1)) as verifier:
        rows = verifier.verify(sample + [false_claim], progress=False)
    failed = [(r["id"], r["family"], r["reason"]) for r in rows[:-1] if not r["passed"]]
    assert not failed
    assert rows[-1]["outcome"] == "particles_mismatch"


def test_every_output_has_exactly_one_python_block_holding_its_code(default_run):
    code = {r["id"]: r["code"] for r in read_jsonl(default_run / "code.jsonl")}
    for r in records(default_run):
        blocks = PYTHON_BLOCK.findall(r["output"])
        assert len(blocks) == 1 and r["output"].count("```") == 2, r["metadata"]["id"]
        assert blocks[0] == code[r["metadata"]["code_id"]]


def test_default_run_is_varied_and_fast(default_run):
    rows = records(default_run)
    manifest = json.loads((default_run / "manifest.json").read_text())
    assert len(rows) == 5000
    blocks = [re.sub(r"#.*", "", PYTHON_BLOCK.findall(r["output"])[0]) for r in rows]
    distinct = len({re.sub(r"\s+", " ", b).strip() for b in blocks}) / len(blocks)
    assert distinct >= 0.9 and manifest["metrics"]["distinct_code_share"] >= 0.9
    assert manifest["metrics"]["generation_seconds"] < 10
    meta = [r["metadata"] for r in rows]
    assert {m["n_qubits"] for m in meta} == set(range(4, 13))
    assert {m["layers"] for m in meta} == set(range(1, 7))
    assert {m["family"] for m in meta} == set(cf.FAMILIES)
    assert {m["connectivity"] for m in meta} >= {"chain", "ring", "grid", "torus"}


def test_outputs_cite_the_measurements(default_run, embedded_features):
    feats = {(r["file"], r["trajectory"]): r for r in read_jsonl(embedded_features)}
    for r in records(default_run)[:1500]:
        m = r["metadata"]
        f = feats[(m["file"], m["trajectory"])]
        text = r["output"]
        assert f"{m['n_qubits']} qubits" in text or f"{m['n_qubits']} sites" in text
        if m["symmetry"] == "u1":
            q = next(q for q in ("mass", "momentum_x", "momentum_y") if q in f["conserved"] and f["conserved"][q]["conserved"])
            c = f["conserved"][q]
            assert f"({c['form']}) drifts by only {drift(c['drift'])}" in text or c["drift"] == 0 and "drift at all" in text
        if m["parameter_sharing"] == "translation":
            assert f"confidence {f['symmetries']['translation_x']:.2f}" in text


def test_chat_records_validate_and_carry_the_code_id(default_run):
    physics, reasoning = (read_chat_records(default_run / name) for name in ("chat_physics.jsonl", "chat_reasoning.jsonl"))
    assert len(physics) == 4000 and len(reasoning) == 1000
    assert {r.source for r in physics} == {"physics_augmented"} and {r.source for r in reasoning} == {"physics_reasoning"}
    assert {r.kind for r in physics} == set(SEED_TYPES) and {r.kind for r in reasoning} == {REASONING}
    ids = {r["id"] for r in read_jsonl(default_run / "code.jsonl")}
    assert all(r.meta["code_id"] in ids and r.messages[-1].role == "assistant" for r in physics + reasoning)


def test_manifest_counts(default_run):
    m = json.loads((default_run / "manifest.json").read_text())
    c = m["counts"]
    assert c["records"] == 5000 and c["physics_reasoning"] == 1000
    assert [c[f"type_{t}"] for t in SEED_TYPES] == [1334, 1333, 1333]
    assert sum(v for k, v in c.items() if k.startswith("family_")) == 5000
    assert sum(v for k, v in c.items() if k.startswith("qubits_")) == 5000
    assert c["code_blocks"] == len(read_jsonl(default_run / "code.jsonl"))
    assert c["trajectories"] == 28 and c["rejected_trajectories"] == 0 and c["held_out_trajectories"] == 6  # test split


def test_conservation_examples_use_the_conserved_symmetry(default_run, embedded_features):
    feats = {(r["file"], r["trajectory"]): features(r) for r in read_jsonl(embedded_features)}
    for r in read_jsonl(default_run / "physics_augmented.jsonl"):
        m = r["metadata"]
        if r["type"] == "conservation_to_constraint":
            fams = eligible_families(feats[(m["file"], m["trajectory"])], list(cf.FAMILIES))
            want = {cf.SYMMETRY[x] for x in fams if x not in cf.BASELINES} or {"none"}
            assert m["symmetry"] in want, m


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    src = write_features(tmp_path / "f.jsonl", MASS_RING, WAVE, PLATE, REACTION)
    a, b, c = (generate(GenerateConfig(examples=300, seed=s), src, tmp_path / name) for s, name in ((5, "a"), (5, "b"), (6, "c")))
    for name in ("physics_augmented.jsonl", "physics_reasoning.jsonl", "code.jsonl", "chat_physics.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "code.jsonl").read_bytes() != (c / "code.jsonl").read_bytes()


def test_second_run_is_a_cache_hit(tmp_path):
    src = write_features(tmp_path / "f.jsonl", MASS_RING, PLATE)
    out = generate(GenerateConfig(examples=40), src, tmp_path / "gen")
    before = (out / "manifest.json").stat().st_mtime_ns
    generate(GenerateConfig(examples=40), src, tmp_path / "gen")
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_held_out_datasets_never_become_examples(tmp_path):
    src = write_features(tmp_path / "f.jsonl", MASS_RING, WAVE, PLATE)
    out = generate(GenerateConfig(examples=60, holdout_datasets=["wave_2d"]), src, tmp_path / "gen")
    rows = records(out)
    assert {r["metadata"]["dataset"] for r in rows} == {"mass_ring_1d", "plate_2d"}
    assert not any("wave" in f"{r['instruction']} {r['input']} {r['output']}" for r in rows)
    assert not any(r["claims"]["symmetry"] == "z2" for r in read_jsonl(out / "code.jsonl"))  # only the wave allowed Z2
    assert json.loads((out / "manifest.json").read_text())["counts"]["held_out_dataset_trajectories"] == 1
    with pytest.raises(ValueError, match=r"outside the held-out splits .* and datasets .*hold out fewer"):
        generate(GenerateConfig(examples=10, holdout_datasets=["mass_ring_1d", "wave_2d", "plate_2d"]), src, tmp_path / "all")


def test_bad_feature_record_names_file_record_and_field(tmp_path):
    bad = {**WAVE, "symmetries": {**WAVE["symmetries"], "translation_x": 1.5}}
    src = write_features(tmp_path / "f.jsonl", MASS_RING, bad)
    with pytest.raises(RecordError, match=r"f\.jsonl: record 2: field 'symmetries'"):
        generate(GenerateConfig(examples=10), src, tmp_path / "gen")
    assert not (tmp_path / "gen").exists()


def test_trajectories_no_enabled_family_fits_are_rejected_with_a_reason(tmp_path):
    src = write_features(tmp_path / "f.jsonl", MASS_RING, REACTION)
    with pytest.raises(ValueError, match="enable hardware_efficient or qaoa"):
        generate(GenerateConfig(examples=10, families=["u1_givens"], max_reject_rate=0.25), src, tmp_path / "gen")
    out = generate(GenerateConfig(examples=10, families=["u1_givens"]), src, tmp_path / "gen")
    [reject] = read_jsonl(out / "rejects.jsonl")
    assert reject["dataset"] == "reaction_2d" and "nothing" in reject["reason"]
    assert {r["metadata"]["family"] for r in records(out)} == {"u1_givens"}


def test_config_rejects_an_empty_qubit_range():
    with pytest.raises(ValueError, match="min_qubits"):
        GenerateConfig(min_qubits=10, max_qubits=6)


def test_cli(tmp_path, capsys):
    src = write_features(tmp_path / "f.jsonl", MASS_RING, WAVE)
    main(["--features", str(src), "--out", str(tmp_path / "gen"), "--set", "examples=30", "--set", "max_qubits=6"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "gen")
    assert max(r["metadata"]["n_qubits"] for r in records(tmp_path / "gen")) <= 6


@pytest.fixture(scope="module")
def brief_run(embedded_features, tmp_path_factory):
    """The local profile's shape: brief answers, each circuit one Qiskit library call."""
    cfg = GenerateConfig(examples=400, answer="brief", max_qubits=10, max_layers=3, reasoning_share=0.4, baseline_share=0.4,
                         min_distinct_share=0.5)
    return generate(cfg, embedded_features, tmp_path_factory.mktemp("brief") / "generate")


def test_brief_answers_are_short_and_their_library_code_passes_the_real_verifier(brief_run, tmp_path):
    """Every library family on chains and rings: the request read back, one paragraph, then the sizes the request gave
    written into one library call; the real verifier passes each."""
    rows = records(brief_run)
    for r in rows:
        reason, code = r["output"].split("```python\n")
        assert len(reason) < 700 and reason.count("\n\n") == 1  # one paragraph, then the code
        meta = r["metadata"]
        n, layers, k = meta["n_qubits"], meta["layers"], meta.get("particles")
        assert reason.startswith(f"Request: {n} qubits, ")
        assert f"n_qubits = {n}\n" in code and f"reps={layers}" in code
        ent = "circular" if meta["connectivity"] == "ring" else "linear"
        call = cf.LIBRARY[meta["family"]][2].format(reps=layers, ent=ent)
        assert f"ansatz = {call}\n" in code and code.count("ansatz =") == 1, code
        # the call that picks the family comes right before the reference it needs (an x line for every excitation)
        assert code.index("ansatz =") < code.index("reference = QuantumCircuit(n_qubits)")
        if k:
            assert f"reference = QuantumCircuit(n_qubits)\nreference.x(range({k}))" in code
            assert reason.startswith(f"Request: {n} qubits, N conserved with {k} excitation")  # read back, then copied
    # the simulation's dimension sits right before the qubit count in some requests; the read-back keeps the count
    led = [r for r in rows if re.search(r"\d-D[^\n]*?(Use|Target|Width|I need|The ansatz|Make it|Build it|Number|Keep|Parity|No conservation)",
                                        r["instruction"] + "\n" + r["input"])]
    assert 0.2 * len(rows) < len(led) and any(r["metadata"]["n_qubits"] != int(re.search(r"(\d)-D", r["input"] + r["instruction"])[1])
                                              for r in led)
    shares = Counter(r["metadata"]["symmetry"] for r in rows)
    assert shares["none"] >= 0.3 * len(rows) and shares["z2"] > 0, shares  # the dedupe redraw keeps the drawn family
    items = read_items(brief_run / "code.jsonl")
    by_family = defaultdict(list)
    for it in items:
        by_family[(it.claims.family, it.claims.connectivity)].append(it)
    assert {f for f, _ in by_family} == set(cf.LIBRARY) and {c for _, c in by_family} == {"chain", "ring"}
    sample = [it for group in by_family.values() for it in group[:3]]
    with CircuitVerifier(VerifyConfig(workers=2, bp_samples=4, bp_params=1)) as verifier:
        rows = verifier.verify(sample, progress=False)
    assert not [(r["id"], r["family"], r["reason"]) for r in rows if not r["passed"]]


def test_every_request_states_what_the_validation_checks(brief_run, default_run):
    """Qubit count, symmetry and (U(1)) particle count are asked for, in words the validation prompts never use."""
    from tasks.quantum_mind.quantum_eval_prompts import TEMPLATES

    validation = [t.split("{")[0][:40] for ts in TEMPLATES.values() for t in ts]
    words = {"u1": ("excitation count", "N = Σ(1−Z_i)/2", "particle number", "U(1)", "excitations"),
             "z2": ("Π Z_i", "Z-parity"), "none": ("any gates", "no conservation law", "no symmetry", "No conservation law")}
    for sym, texts in REQUESTS.items():
        for t in texts:
            assert re.search(r"\{n\}[ -]qubit", t) and any(w in t for w in words[sym]), t
            assert sym != "u1" or t.index("{k}") > t.index("{n}"), t
    for run in (brief_run, default_run):
        for r in records(run)[:400]:
            meta = r["metadata"]
            stated = [re.escape(t).replace(r"\{n\}", str(meta["n_qubits"])).replace(r"\{k\}", str(meta.get("particles")))
                      for t in REQUESTS[meta["symmetry"]]]
            # the request sits after the instruction, or (brief answers, half the time) after the measurements
            assert any(re.search(p, r["instruction"] + "\n\n" + r["input"]) for p in stated), (r["instruction"], r["input"])
    stated = [t.format(n=5, k=2) for ts in REQUESTS.values() for t in ts]
    assert not any(phrase in text for phrase in validation for text in stated)
