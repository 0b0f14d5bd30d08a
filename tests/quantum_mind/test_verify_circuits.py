"""Circuit verifier: symmetry claims are judged on what circuits do, code runs contained, plateaus are found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.common.records import RecordError
from tasks.quantum_mind.verify_circuits import CircuitVerifier, CodeItem, VerifyConfig, VerifyError, main, read_items, verify

HEADER = "from qiskit import QuantumCircuit\nfrom qiskit.circuit import ParameterVector\nfrom qiskit.circuit.library import XXPlusYYGate\n"


def givens(n: int, layers: int, occupied, extra: str = "", name: str = "theta") -> str:
    """U(1) brick of XX+YY (Givens) rotations on an X-gate reference."""
    pairs = [(q, q + 1) for layer in range(layers) for q in range(layer % 2, n - 1, 2)]
    return (HEADER + f"reference = QuantumCircuit({n})\n" + "".join(f"reference.x({q})\n" for q in occupied)
            + f"{name} = ParameterVector('{name}', {len(pairs)})\nansatz = QuantumCircuit({n})\n"
            + "".join(f"ansatz.append(XXPlusYYGate({name}[{k}]), [{a}, {b}])\n" for k, (a, b) in enumerate(pairs))
            + extra + "circuit = reference.compose(ansatz)\n")


def exchange(n: int) -> str:
    """U(1) by RXX·RYY with a shared angle: no single gate conserves N, the pair does."""
    return (HEADER + f"reference = QuantumCircuit({n})\nreference.x(range(0, {n}, 2))\nt = ParameterVector('t', {2 * n})\n"
            f"ansatz = QuantumCircuit({n})\nfor q in range({n} - 1):\n    ansatz.rxx(t[q], q, q + 1)\n"
            f"    ansatz.ryy(t[q], q, q + 1)\nfor q in range({n}):\n    ansatz.rz(t[{n} + q], q)\n"
            "circuit = reference.compose(ansatz)\n")


def ising(n: int, field: str = "rz") -> str:
    """Z2 (parity) preserving RXX + RZ layers; ``field="rx"`` breaks parity."""
    return (HEADER + f"reference = QuantumCircuit({n})\nreference.x(0)\nt = ParameterVector('t', {2 * n})\n"
            f"ansatz = QuantumCircuit({n})\nfor q in range({n} - 1):\n    ansatz.rxx(t[q], q, q + 1)\n"
            f"for q in range({n}):\n    ansatz.{field}(t[{n} + q], q)\ncircuit = reference.compose(ansatz)\n")


def hardware_efficient(n: int, layers: int) -> str:
    return (HEADER + f"reference = QuantumCircuit({n})\nt = ParameterVector('t', {2 * n * layers})\n"
            f"ansatz = QuantumCircuit({n})\nk = 0\nfor layer in range({layers}):\n    for q in range({n}):\n"
            f"        ansatz.ry(t[k], q)\n        ansatz.rz(t[k + 1], q)\n        k += 2\n"
            f"    for q in range({n} - 1):\n        ansatz.cz(q, q + 1)\ncircuit = reference.compose(ansatz)\n")


def item(code: str, n: int, symmetry: str = "u1", particles: int | None = None, id: str = "x") -> CodeItem:
    return CodeItem(id=id, code=code, claims={"n_qubits": n, "symmetry": symmetry, "particles": particles, "family": "t"})


@pytest.fixture(scope="module")
def verifier():
    with CircuitVerifier(VerifyConfig(workers=2, timeout_s=3, bp_samples=16)) as v:
        yield v


def check(verifier, *items: CodeItem) -> list[dict]:
    return verifier.verify(list(items), progress=False)


def test_u1_givens_circuits_pass(verifier):
    rows = check(verifier, item(givens(6, 3, [0, 2, 4]), 6, "u1", 3, "a"), item(givens(12, 2, range(6)), 12, "u1", 6, "b"))
    for row in rows:
        assert row["passed"] and row["outcome"] == "ok", row
        assert all(row["checks"].values()) and row["symmetry_error"] < 1e-8
        assert row["symmetry_method"] == "gatewise" and row["bp_status"] in ("high", "medium", "plateau")


def test_number_conserving_pair_of_non_conserving_gates_passes(verifier):
    [row] = check(verifier, item(exchange(6), 6, "u1", 3))
    assert row["passed"] and row["symmetry_method"] == "random_states" and row["symmetry_error"] < 1e-8


def test_ry_layer_breaks_a_u1_claim(verifier):
    extra = "b = ParameterVector('b', 6)\nfor q in range(6):\n    ansatz.ry(b[q], q)\n"
    [row] = check(verifier, item(givens(6, 2, [0, 2, 4], extra), 6, "u1", 3))
    assert (row["passed"], row["outcome"]) == (False, "symmetry_broken")
    assert row["symmetry_error"] > 1e-3 and "ry" in row["reason"] and not row["checks"]["symmetry_ok"]


def test_z2_claims(verifier):
    good, bad, not_u1 = check(verifier, item(ising(5), 5, "z2", id="good"), item(ising(5, "rx"), 5, "z2", id="bad"),
                              item(ising(5), 5, "u1", id="u1"))
    assert good["passed"] and good["symmetry_error"] < 1e-8
    assert bad["outcome"] == "symmetry_broken" and "parity" in bad["reason"]
    assert not_u1["outcome"] == "symmetry_broken"  # RXX keeps parity but not particle number


def test_wrong_qubit_count_and_particle_number(verifier):
    qubits, particles = check(verifier, item(givens(6, 2, [0]), 5, "u1", 1, "q"), item(givens(6, 2, [0, 1]), 6, "u1", 3, "p"))
    assert qubits["outcome"] == "n_qubits_mismatch" and not qubits["checks"]["n_qubits_ok"]
    assert particles["outcome"] == "particles_mismatch" and "2 particles" in particles["reason"]


def test_contract_errors(verifier):
    missing, swapped = check(verifier, item(givens(4, 1, [0]).replace("circuit =", "full ="), 4, id="m"),
                             item(givens(4, 1, [0]).replace("reference.compose(ansatz)", "ansatz.compose(reference)"), 4, id="s"))
    assert missing["outcome"] == "contract_error" and "circuit" in missing["reason"]
    assert swapped["outcome"] == "contract_error" and "reference followed by ansatz" in swapped["reason"]


def test_broken_code_is_reported(verifier):
    syntax, runtime, loop = check(
        verifier, item("reference = QuantumCircuit(2\n", 2, id="s"),
        item(givens(4, 1, [0]) + "energy = circuit.expectation_value()\n", 4, id="r"),
        item(givens(4, 1, [0]) + "while True:\n    pass\n", 4, id="l"))
    assert syntax["outcome"] == "syntax_error" and syntax["checks"] == {"parses": False, "runs": False}
    assert runtime["outcome"] == "runtime_error" and "AttributeError" in runtime["reason"] and "line" in runtime["reason"]
    assert runtime["checks"] == {"parses": True, "runs": False}
    assert loop["outcome"] == "timeout" and not loop["passed"]


def test_hostile_code_is_denied_and_cannot_fool_the_checker(verifier):
    steal = givens(4, 1, [0]) + "import os, socket\nkey = os.environ['ANTHROPIC_API_KEY']\nsocket.socket()\n"
    writes = givens(4, 1, [0]) + "open('/work/main/tasks/quantum_mind/verify_circuits.py', 'a').write('#')\n"
    # a symmetry-breaking circuit that patches the checker in its own process (already imported there)
    cheat = givens(4, 1, [0], "ansatz.ry(0.3, 1)\n") + (
        "import sys\nchecks = sys.modules['tasks.quantum_mind.circuit_checks']\n"
        "checks._check_physics = lambda reference, ansatz, circuit, claims, args, out: out\n")
    steal_row, write_row, cheat_row = check(verifier, item(steal, 4, "u1", 1, "s"), item(writes, 4, "u1", 1, "w"),
                                            item(cheat, 4, "u1", 1, "c"))
    assert steal_row["outcome"] in ("denied", "runtime_error") and not steal_row["passed"]
    assert write_row["outcome"] == "denied" and "write outside" in write_row["reason"]
    assert cheat_row["outcome"] == "symmetry_broken"


def test_barren_plateau_deep_random_versus_shallow(verifier):
    shallow, deep = check(verifier, item(hardware_efficient(10, 1), 10, "none", id="shallow"),
                          item(hardware_efficient(12, 40), 12, "none", id="deep"))
    assert shallow["bp_status"] == "high"
    assert deep["bp_status"] in ("medium", "plateau") and deep["grad_variance"] < shallow["grad_variance"] / 20


def test_structure_cache_reuses_barren_plateau_results(verifier):
    [first] = check(verifier, item(givens(8, 3, [1, 3, 5, 7]), 8, "u1", 4, "a"))
    cached = dict(verifier.bp_cache)
    renamed = "# same circuit, other names\n" + givens(8, 3, [1, 3, 5, 7], name="phi")
    [second] = check(verifier, item(renamed, 8, "u1", 4, "b"))
    assert second["structure"] == first["structure"] and verifier.bp_cache == cached
    assert second["grad_variance"] == first["grad_variance"]
    [other] = check(verifier, item(givens(8, 4, [1, 3, 5, 7]), 8, "u1", 4, "c"))
    assert other["structure"] != first["structure"] and len(verifier.bp_cache) == len(cached) + 1


def test_structure_key_separates_references_with_the_same_particle_number(verifier):
    # one particle, one ansatz: from qubit 1 the hop moves it under the cost's Z0 Z1, from qubit 0 it cannot move
    def hop(occupied: int) -> str:
        return (HEADER + f"reference = QuantumCircuit(3)\nreference.x({occupied})\nt = ParameterVector('t', 1)\n"
                "ansatz = QuantumCircuit(3)\nansatz.append(XXPlusYYGate(t[0]), [1, 2])\ncircuit = reference.compose(ansatz)\n")

    moving, frozen = check(verifier, item(hop(1), 3, "u1", 1, "m"), item(hop(0), 3, "u1", 1, "f"))
    assert moving["passed"] and frozen["passed"] and moving["structure"] != frozen["structure"]
    assert moving["bp_status"] == "high" and moving["grad_variance"] == pytest.approx(0.5, rel=0.5)
    assert frozen["bp_status"] == "plateau" and "exactly zero" in frozen["bp_reason"]


def test_a_failed_barren_plateau_batch_is_rerun_one_structure_per_job(verifier):
    # a custom gate named "h" passes the checks (they simulate its definition) but the estimate refuses it
    shadow = ("from qiskit import QuantumCircuit\nfrom qiskit.circuit import Gate, ParameterVector\n"
              "inner = QuantumCircuit(1)\ninner.ry(0.3, 0)\nodd = Gate('h', 1, [])\nodd.definition = inner\n"
              "t = ParameterVector('t', 2)\nreference = QuantumCircuit(3)\nansatz = QuantumCircuit(3)\n"
              "ansatz.ry(t[0], 0)\nansatz.append(odd, [1])\nansatz.rzz(t[1], 0, 1)\ncircuit = reference.compose(ansatz)\n")
    good, odd = check(verifier, item(hardware_efficient(5, 2), 5, "none", id="g"), item(shadow, 3, "none", id="o"))
    assert good["passed"] and good["bp_status"] in ("high", "medium", "plateau") and good["grad_variance"] > 0
    assert odd["passed"] and odd["bp_status"] == "unknown" and "to_matrix" in odd["bp_reason"]


def test_simulator_matches_qiskit_statevector():
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import XXPlusYYGate
    from qiskit.quantum_info import Statevector, random_unitary

    from tasks.quantum_mind.circuit_checks import _compile, _evolve

    qc = QuantumCircuit(5)
    qc.h(0), qc.cx(0, 3), qc.append(XXPlusYYGate(0.7, 0.2), [4, 1]), qc.ccx(2, 0, 4), qc.ry(0.4, 2)
    block = QuantumCircuit(5)
    block.unitary(random_unitary(8, seed=1), [3, 0, 2])
    block.cswap(1, 2, 3)
    qc.append(block.to_gate(label="block"), range(5))
    zero = np.zeros(32, complex)
    zero[0] = 1
    assert abs(np.vdot(_evolve(_compile(qc), zero[None])[0], Statevector(qc).data)) == pytest.approx(1, abs=1e-12)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stage_writes_results_passed_rejects_and_is_cached(tmp_path):
    rows = [{"id": "good", "code": givens(4, 2, [0, 2]), "claims": {"n_qubits": 4, "symmetry": "u1", "particles": 2}},
            {"id": "bad", "code": ising(4, "rx"), "claims": {"n_qubits": 4, "symmetry": "z2"}}]
    src = _write(tmp_path / "code.jsonl", rows)
    out = verify(VerifyConfig(workers=1, bp_samples=8), src, tmp_path / "verify")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"items": 2, "passed": 1, "rejected": 1, "outcome_ok": 1, "outcome_symmetry_broken": 1}
    assert manifest["metrics"]["pass_rate"] == 0.5 and manifest["sandbox_isolation"]["audit"]
    assert [json.loads(l) for l in (out / "passed.jsonl").read_text().splitlines()] == [{"id": "good"}]
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert reject["id"] == "bad" and "parity" in reject["reason"]
    before = (out / "manifest.json").stat().st_mtime_ns
    verify(VerifyConfig(workers=1, bp_samples=8), src, tmp_path / "verify")
    assert (out / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(VerifyError, match="1 of 2 items rejected"):
        verify(VerifyConfig(workers=1, bp_samples=8, max_reject_rate=0.2), src, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()


def test_bad_record_names_file_record_and_field(tmp_path):
    src = _write(tmp_path / "code.jsonl", [{"id": "a", "code": "x = 1", "claims": {"n_qubits": 2, "symmetry": "u1"}},
                                           {"id": "b", "code": "x = 1", "claims": {"n_qubits": 2, "symmetry": "su2"}}])
    with pytest.raises(RecordError, match=r"code\.jsonl: record 2: field 'claims.symmetry'"):
        read_items(src)


def test_plain_cli_checks_a_file(tmp_path, capsys):
    src = _write(tmp_path / "code.jsonl", [{"id": "g", "code": exchange(4), "claims": {"n_qubits": 4, "symmetry": "u1"}},
                                           {"id": "s", "code": "def f(:", "claims": {"n_qubits": 4, "symmetry": "u1"}}])
    with pytest.raises(SystemExit) as exit_:
        main(["--input", str(src), "--output", str(tmp_path / "results.jsonl"), "--set", "workers=1", "--set", "bp_samples=8"])
    assert exit_.value.code == 1 and "1/2 passed" in capsys.readouterr().out
    results = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["outcome"]) for r in results] == [("g", "ok"), ("s", "syntax_error")]
