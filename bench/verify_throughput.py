"""Throughput of the circuit verifier: generate N varied code blocks, verify them all, report the cost.

The items mimic the example generator: U(1) Givens (XX+YY) and exchange (RXX·RYY) ansätze, Z2
(RXX + RZ) and hardware-efficient (RY/RZ + CZ) circuits on 4–12 qubits and 1–6 layers, written in a
few styles (names, comments, loops), plus broken ones: a symmetry-breaking layer under a U(1) or Z2
claim, wrong qubit or particle claims, syntax and runtime errors, a missing ``ansatz``, a socket.
Prints total time, cost per check, pass rate, outcomes and the share of distinct code blocks.

    python bench/verify_throughput.py [--n 5000] [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HEADER = """from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import XXPlusYYGate
"""


def _reference(n: int, occupied: list[int]) -> str:
    return f"reference = QuantumCircuit({n})\n" + "".join(f"reference.x({q})\n" for q in occupied)


def _layers(family: str, n: int, depth: int, p: str) -> tuple[str, int]:
    """Ansatz body and parameter count; ``p`` is the ParameterVector's variable name."""
    if family == "givens_u1":
        pairs = [(q, q + 1) for layer in range(depth) for q in range(layer % 2, n - 1, 2)]
        body = "".join(f"ansatz.append(XXPlusYYGate({p}[{k}]), [{a}, {b}])\n" for k, (a, b) in enumerate(pairs))
        return body, len(pairs)
    if family == "exchange_u1":
        pairs = [(q, q + 1) for layer in range(depth) for q in range(layer % 2, n - 1, 2)]
        body = "".join(f"ansatz.rxx({p}[{k}], {a}, {b})\nansatz.ryy({p}[{k}], {a}, {b})\n" for k, (a, b) in enumerate(pairs))
        body += "".join(f"ansatz.rz({p}[{len(pairs) + q}], {q})\n" for q in range(n))
        return body, len(pairs) + n
    if family == "z2_ising":
        body = (f"k = 0\nfor layer in range({depth}):\n    for q in range({n} - 1):\n        ansatz.rxx({p}[k], q, q + 1)\n"
                f"        k += 1\n    for q in range({n}):\n        ansatz.rz({p}[k], q)\n        k += 1\n")
        return body, depth * (2 * n - 1)
    if family == "hea_none":
        body = (f"k = 0\nfor layer in range({depth}):\n    for q in range({n}):\n        ansatz.ry({p}[k], q)\n"
                f"        ansatz.rz({p}[k + 1], q)\n        k += 2\n    for q in range({n} - 1):\n        ansatz.cz(q, q + 1)\n")
        return body, 2 * n * depth
    raise ValueError(family)


def make_item(i: int, rng: random.Random) -> dict:
    """One code item; about one in six is broken on purpose."""
    family = rng.choice(["givens_u1", "exchange_u1", "z2_ising", "hea_none"])
    n, depth = rng.randint(4, 12), rng.randint(1, 6)
    p = rng.choice(["theta", "t", "params"])
    symmetry = {"givens_u1": "u1", "exchange_u1": "u1", "z2_ising": "z2", "hea_none": "none"}[family]
    half = n // 2
    occupied = [] if symmetry == "none" else rng.choice([list(range(0, n, 2))[:half], list(range(half)), [0]])
    body, n_params = _layers(family, n, depth, p)
    extra = ""
    claims = {"n_qubits": n, "symmetry": symmetry, "particles": len(occupied) if symmetry == "u1" else None,
              "family": family}
    flaw = rng.choices(["none", "break", "qubits", "particles", "syntax", "runtime", "contract", "socket"],
                       [84, 7, 2, 2, 2, 1, 1, 1])[0]
    if (flaw == "break" and symmetry == "none") or (flaw == "particles" and symmetry != "u1"):
        flaw = "none"
    if flaw == "break" and symmetry != "none":
        gate = "ry" if symmetry == "u1" else "rx"  # RY changes particle number, RX flips parity
        extra = f"broken = ParameterVector('b', {n})\nfor q in range({n}):\n    ansatz.{gate}(broken[q], q)\n"
    elif flaw == "qubits":
        claims["n_qubits"] = n + rng.choice([-1, 1])
    elif flaw == "particles" and symmetry == "u1":
        claims["particles"] = len(occupied) + 1
    comment = rng.choice(["", f"# {family} ansatz, {depth} layers\n", "# reference state first, then the block\n"])
    code = (HEADER + comment + _reference(n, occupied) + f"{p} = ParameterVector('{p}', {n_params})\n"
            + f"ansatz = QuantumCircuit({n})\n" + body + extra + "circuit = reference.compose(ansatz)\n")
    if flaw == "syntax":
        code = code.replace("ansatz = QuantumCircuit(", "ansatz = QuantumCircuit((", 1)
    elif flaw == "runtime":
        code += "energy = circuit.expectation_value()\n"
    elif flaw == "contract":
        code = code.replace("circuit = reference.compose(ansatz)\n", "full = reference.compose(ansatz)\n").replace(
            "ansatz", "block")
    elif flaw == "socket":
        code += "import socket\nsocket.create_connection(('127.0.0.1', 80))\n"
    return {"id": f"bench-{i}", "code": code, "claims": claims, "flaw": flaw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from tasks.quantum_mind.verify_circuits import CircuitVerifier, CodeItem, VerifyConfig, summarize

    rng = random.Random(args.seed)
    raw = [make_item(i, rng) for i in range(args.n)]
    items = [CodeItem.model_validate(r) for r in raw]
    distinct = len({r["code"] for r in raw})
    t0 = time.perf_counter()
    with CircuitVerifier(VerifyConfig(workers=args.workers)) as verifier:
        t1 = time.perf_counter()
        rows = verifier.verify(items, progress=sys.stderr.isatty())
        t2 = time.perf_counter()
    _, metrics = summarize(rows)
    checks = t2 - t1
    print(f"items: {args.n}  distinct code blocks: {distinct} ({distinct / args.n:.1%})  "
          f"distinct structures: {metrics['distinct_structures']}")
    print(f"worker start-up: {t1 - t0:.1f} s   verification: {checks:.1f} s   ({args.n / checks:.1f} items/s, "
          f"{1000 * checks / args.n:.1f} ms per item wall, {1000 * checks * args.workers / args.n:.1f} ms per item per worker)")
    print(f"mean sandbox time per item (run + checks): {metrics['mean_check_ms']:.1f} ms; "
          f"barren-plateau structures: {len(verifier.bp_cache)}")
    print(f"pass rate: {metrics['pass_rate']:.1%}   outcomes: {dict(Counter(r['outcome'] for r in rows))}")
    print(f"bp status: { {k: v for k, v in metrics.items() if k.startswith('bp_')} }")
    wrong = [(r["id"], x["flaw"], r["outcome"]) for r, x in zip(rows, raw) if (x["flaw"] == "none") != r["passed"]]
    print(f"verdicts disagreeing with the planted flaw: {len(wrong)} {wrong[:5]}")


if __name__ == "__main__":
    main()
