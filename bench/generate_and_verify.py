"""Generate the default physics examples from the embedded trajectories and verify every code block.

Encodes the embedded Well datasets first when no features file is given (into a temp dir), runs the
generate stage with its defaults, then checks every line of code.jsonl with the circuit verifier
(2 workers). Prints generation time, verification time (split into the claim checks and the
barren-plateau estimates, one per distinct circuit structure, bp_batch per sandbox job), total, cost
per check, pass rate, outcomes and the share of distinct code blocks and circuit structures.

    python bench/generate_and_verify.py [--features /tmp/qm/encode/features.jsonl] [--n 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, help="features.jsonl from the encode stage (default: encode the embedded datasets)")
    parser.add_argument("--n", "--examples", dest="examples", type=int, default=None,
                        help="records to generate (default: GenerateConfig's, 5000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bp-samples", type=int, default=None, help="VerifyConfig.bp_samples (default: its default)")
    parser.add_argument("--bp-params", type=int, default=None, help="VerifyConfig.bp_params (default: its default)")
    args = parser.parse_args(argv)
    from tasks.quantum_mind.circuit_families import code_fingerprint
    from tasks.quantum_mind.generate_physics_examples import GenerateConfig, generate
    from tasks.common.records import read_jsonl
    from tasks.quantum_mind.verify_circuits import (
        CircuitVerifier,
        VerifyConfig,
        read_items,
        summarize,
    )

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="labtune-bench-") as tmp:
        features = args.features
        if features is None:
            from tasks.quantum_mind.encode_trajectories import EncodeConfig, encode

            t = time.perf_counter()
            features = encode(EncodeConfig(), None, Path(tmp) / "encode") / "features.jsonl"
            print(f"encoded the embedded datasets in {time.perf_counter() - t:.1f} s")
        cfg = GenerateConfig(seed=args.seed, **({"examples": args.examples} if args.examples else {}))
        t0 = time.perf_counter()
        out = generate(cfg, features, Path(tmp) / "generate")
        t1 = time.perf_counter()
        items = read_items(out / "code.jsonl")
        records = read_jsonl(out / "physics_augmented.jsonl") + read_jsonl(out / "physics_reasoning.jsonl")
        codes = {it.id: it.code for it in items}
        overrides = {k: v for k, v in {"bp_samples": args.bp_samples, "bp_params": args.bp_params}.items() if v}
        vcfg = VerifyConfig(workers=args.workers, **overrides)
        with CircuitVerifier(vcfg) as verifier:
            bp_seconds = _time_barren_plateaus(verifier)
            t2 = time.perf_counter()
            rows = verifier.verify(items, progress=sys.stderr.isatty())
            t3 = time.perf_counter()
    _, metrics = summarize(rows)
    passed = {r["id"] for r in rows if r["passed"]}
    fps = [code_fingerprint(codes[r["metadata"]["code_id"]]) for r in records]
    checks = t3 - t2
    print(f"records: {len(records)}  code blocks: {len(items)}  distinct code (comments ignored): "
          f"{len(set(fps))} ({len(set(fps)) / len(fps):.1%})  distinct circuit structures: {metrics['distinct_structures']} "
          f"({metrics['distinct_structures'] / len(items):.1%})")
    print(f"generation: {t1 - t0:.2f} s   verifier start-up: {t2 - t1:.1f} s   verification: {checks:.1f} s "
          f"(claim checks {checks - bp_seconds[0]:.1f} s, barren-plateau jobs {bp_seconds[0]:.1f} s)   total: {t3 - t0:.1f} s")
    claim_s = checks - bp_seconds[0]
    print(f"per item: {1000 * checks / len(items):.1f} ms wall in all; claim check {1000 * claim_s / len(items):.1f} ms wall "
          f"({1000 * claim_s * args.workers / len(items):.1f} ms per worker, mean sandbox time {metrics['mean_check_ms']:.1f} ms); "
          f"barren-plateau estimate {1000 * bp_seconds[0] * args.workers / max(1, len(verifier.bp_cache)):.1f} ms per worker "
          f"x {len(verifier.bp_cache)} structures (bp_samples={vcfg.bp_samples}, bp_params={vcfg.bp_params}, "
          f"bp_batch={vcfg.bp_batch})")
    print(f"pass rate: {metrics['pass_rate']:.2%} of code blocks, {sum(r['metadata']['code_id'] in passed for r in records) / len(records):.2%} "
          f"of records   outcomes: {dict(Counter(r['outcome'] for r in rows))}")
    by_family = Counter((r["family"], r["passed"]) for r in rows)
    print("per family (passed/total): " + ", ".join(f"{fam} {by_family[(fam, True)]}/{by_family[(fam, True)] + by_family[(fam, False)]}"
                                                   for fam in sorted({r['family'] for r in rows})))
    print(f"bp status: { {k: v for k, v in metrics.items() if k.startswith('bp_')} }")
    unknown = Counter(f"{r['family']}: {r['bp_reason'][:90]}" for r in rows if r["bp_status"] == "unknown")
    if unknown:
        print(f"bp unknown: {dict(unknown.most_common(4))}")
    failed = [r for r in rows if not r["passed"]][:5]
    for r in failed:
        print(f"  FAILED {r['id']} ({r['family']}): {r['outcome']}: {r['reason']}")


def _time_barren_plateaus(verifier) -> list[float]:
    """Wrap the verifier's barren-plateau phase to time it apart from the claim checks (bench-only instrumentation)."""
    spent = [0.0]
    inner = verifier._barren_plateaus

    def timed(todo, progress):
        t = time.perf_counter()
        inner(todo, progress)
        spent[0] += time.perf_counter() - t

    verifier._barren_plateaus = timed
    return spent


if __name__ == "__main__":
    main()
