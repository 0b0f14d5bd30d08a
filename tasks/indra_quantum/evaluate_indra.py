"""Compare the indra-quantum runs (stage ``evaluate_indra``): held-out perplexity, samples, latency, size.

Every run is reloaded from its ``model.pt`` and scored on the same held-out blocks (mean cross-entropy
per target token → perplexity). Each also continues the fixed prompts greedily, is timed on a full
forward pass and per generated token (batch 1, no KV cache), and has its parameters counted. Timings go
round-robin over the models, ``latency_repeats`` rounds, keeping each model's fastest: on a shared
machine a burst of load then slows every model alike instead of whichever was being timed. The stage checks the comparison is fair (the same token budget for every run, parameter counts
within ``max_param_spread``) and writes ``results.json``, ``samples.jsonl``, a table artifact and
``ablation.png``.

    python -m tasks.indra_quantum.evaluate_indra --data data/indra_quantum/data --teacher data/indra_quantum/teacher \
        --run fullq-kd=data/indra_quantum/train/fullq-kd --run real-ce=data/indra_quantum/train/real-ce --out ...
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.models.base_models import resolve_base_model
from tasks.indra_quantum.indra_data import add_input_args, cli_inputs, load_blocks
from tasks.indra_quantum.indra_plots import plot_ablation
from tasks.common.reporting import publish_image, publish_markdown, publish_table, say
from tasks.common.stage import cached, code_digest, prefect_cache_key, read_manifest, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.indra_quantum.train_indra import evaluate_loss

STAGE = "evaluate_indra"
RESERVED = ("data", "teacher")


class EvaluateIndraConfig(BaseModel):
    """Prompts, generation length and timing repeats."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(["The future of AI is", "Quantum mechanics explains",
                                "### Instruction:\nExplain what causes the tides.\n\n### Response:\n"], min_length=1,
                               description="Fixed prompts every model continues (the seed's 'The future of AI is' first)")
    max_new_tokens: int = Field(24, ge=1, description="Tokens generated per prompt (greedy)")
    latency_repeats: int = Field(5, ge=1, description="Round-robin timing rounds (each model's fastest is reported)")
    latency_threads: int = Field(1, ge=1, description="torch threads while timing (batch 1: on a shared 2-core CPU two "
                                                      "threads measured 30-70x slower than one, from spin-waiting)")
    batch_size: int = Field(16, ge=1, description="Blocks per forward pass when scoring")
    max_param_spread: float = Field(0.05, ge=0, description="Fail when parameter counts differ by more than this fraction")
    model_cache_dir: Path | None = Field(None, description="Where the embedded model (its tokenizer) is cached "
                                                           "(default: <data_dir>/cache/models)")


def key_of(cfg: EvaluateIndraConfig, inputs: dict[str, Path], out_dir: Path) -> tuple[dict, dict[str, Path]]:
    """The stage key hashes the config less its cache dir and the model's code (imported lazily, so not in the
    stage's module source)."""
    return ({"config": cfg.model_dump(mode="json", exclude={"model_cache_dir"}), "model_code": code_digest("tasks.indra_quantum.indra_model")},
            inputs)


def evaluate(cfg: EvaluateIndraConfig, inputs: dict[str, Path], out_dir: Path) -> Path:
    """Score every run in ``inputs`` (all keys but 'data' and 'teacher') on the held-out blocks."""
    out_dir = Path(out_dir)
    inputs = {k: Path(v) for k, v in inputs.items()}
    runs = {k: v for k, v in inputs.items() if k not in RESERVED}
    if "data" not in inputs or not runs:
        raise ValueError("evaluate_indra needs inputs['data'] and at least one run dir")
    key = stage_key(evaluate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    import torch
    from transformers import AutoTokenizer

    from tasks.indra_quantum.indra_model import IndraLM, parameter_counts

    data = read_manifest(inputs["data"]) or {}
    data_root = inputs["data"].resolve().parent.parent
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(data["tokenizer"]["name"],
                                                                 cfg.model_cache_dir or data_root / "cache" / "models"))
    val_blocks, val_lengths = load_blocks(inputs["data"], "val")
    block_len = data["block_len"]
    rows, samples, models = [], [], {}
    for name, run_dir in runs.items():
        manifest = read_manifest(run_dir)
        if not manifest or not (run_dir / "model.pt").exists():
            raise FileNotFoundError(f"{run_dir} is not a finished train_indra output (no manifest or model.pt)")
        shape = json.loads((run_dir / "model_config.json").read_text())
        model = IndraLM(shape.pop("vocab_size"), **shape)
        model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu"))
        model.eval()
        val_loss = evaluate_loss(model, val_blocks, val_lengths, block_len, cfg.batch_size)
        counts = parameter_counts(model)
        outputs = [tokenizer.decode(greedy(model, tokenizer(p, add_special_tokens=False)["input_ids"], cfg.max_new_tokens,
                                           tokenizer.eos_token_id), skip_special_tokens=True) for p in cfg.prompts]
        models[name] = model
        rows.append({"run": name, "mode": shape["mode"], "distill": manifest.get("distill"),
                     "val_loss": round(val_loss, 4), "val_perplexity": round(math.exp(val_loss), 2),
                     "parameters": counts["total"], "parameters_non_embedding": counts["non_embedding"],
                     "tokens_trained": manifest["metrics"]["tokens_trained"], "sample": outputs[0]})
        samples += [{"run": name, "prompt": p, "continuation": o} for p, o in zip(cfg.prompts, outputs)]
    timings = latencies(models, tokenizer(cfg.prompts[0], add_special_tokens=False)["input_ids"], val_blocks[:1, :block_len],
                        cfg.max_new_tokens, cfg.latency_repeats, cfg.latency_threads)
    for row in rows:
        row.update(timings[row["run"]])
    teacher = read_manifest(inputs["teacher"]) if "teacher" in inputs else None
    teacher_ppl = (teacher or {}).get("metrics", {}).get("val_perplexity")
    fairness = _fairness(rows, cfg)
    best = min(rows, key=lambda r: r["val_perplexity"])
    summary = verdict(rows, fairness)
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out:
        (out.tmp / "results.json").write_text(json.dumps({"runs": rows, "fairness": fairness, "best": best["run"],
                                                          "verdict": summary, "teacher_val_perplexity": teacher_ppl}, indent=2))
        with open(out.tmp / "samples.jsonl", "w") as fh:
            fh.writelines(json.dumps(s) + "\n" for s in samples)
        plot_ablation(rows, out.tmp / "ablation.png", teacher_ppl)
        out.counts = {"runs": len(rows), "prompts": len(cfg.prompts), "val_blocks": len(val_blocks)}
        out.metrics = {f"{r['run']}.val_perplexity": r["val_perplexity"] for r in rows}
        out.extra.update(runs=rows, fairness=fairness, best=best["run"], verdict=summary, teacher_val_perplexity=teacher_ppl)
    say(f"[evaluate_indra] {summary}")
    publish_table("indra-ablation", [{k: v for k, v in r.items() if k != "sample"} for r in rows],
                  f"indra-quantum ablation: held-out perplexity (teacher: {teacher_ppl}), equal tokens, "
                  f"parameter spread {fairness['parameter_spread']:.2%}")
    publish_image("indra-ablation-chart", out_dir / "ablation.png", "indra-quantum: held-out perplexity per mode")
    publish_markdown("indra-samples", "\n\n".join(f"**{s['run']}** · `{s['prompt']!r}` → `{s['continuation']!r}`" for s in samples),
                     "Greedy continuations of the fixed prompts")
    return out_dir


def verdict(rows: list[dict], fairness: dict) -> str:
    """One paragraph stating the measured result, whichever model wins."""
    best = min(rows, key=lambda r: r["val_perplexity"])
    ppl = {(r["mode"], r["distill"]): r["val_perplexity"] for r in rows}
    parts = [f"Lowest held-out perplexity: {best['run']} ({best['val_perplexity']})."]
    for distill in (False, True):
        have = [m for m in ("fullq", "complex_embed", "real") if (m, distill) in ppl]
        if len(have) > 1:
            parts.append(f"{'With KD' if distill else 'CE only'}: " + ", ".join(f"{m} {ppl[(m, distill)]}" for m in have) + ".")
    for mode in ("fullq", "complex_embed", "real"):
        if (mode, True) in ppl and (mode, False) in ppl:
            ce, kd = ppl[(mode, False)], ppl[(mode, True)]
            parts.append(f"KD moved {mode} from {ce} to {kd} ({(kd - ce) / ce:+.1%}).")
    parts.append(f"Every run trained on {fairness['tokens_trained']} tokens; parameter counts agree within "
                 f"{fairness['parameter_spread']:.2%}.")
    return " ".join(parts)


def ablation_markdown(rows: list[dict], teacher_perplexity: float | None = None) -> str:
    """The ablation as a Markdown table (for the terminal and the README)."""
    lines = ["| run | mode | KD | held-out ppl | parameters | non-embedding | forward ms | ms/token |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['mode']} | {'yes' if r['distill'] else 'no'} | {r['val_perplexity']} | {r['parameters']:,} | "
              f"{r['parameters_non_embedding']:,} | {r['forward_ms']} | {r['ms_per_token']} |" for r in rows]
    if teacher_perplexity is not None:
        lines.append(f"| teacher | (reference) | | {teacher_perplexity} | | | | |")
    return "\n".join(lines)


def _fairness(rows: list[dict], cfg: EvaluateIndraConfig) -> dict:
    params = [r["parameters"] for r in rows]
    spread = (max(params) - min(params)) / min(params)
    if spread > cfg.max_param_spread:
        raise ValueError(f"parameter counts differ by {spread:.1%} ({ {r['run']: r['parameters'] for r in rows} }), "
                         f"more than max_param_spread {cfg.max_param_spread:.0%}: the comparison would not be at equal size")
    budgets = {r["tokens_trained"] for r in rows}
    if len(budgets) > 1:
        raise ValueError(f"runs trained on different token budgets {sorted(budgets)}: give them the same steps and batch size")
    return {"parameter_spread": round(spread, 6), "tokens_trained": budgets.pop()}


def latencies(models: dict, prompt_ids: list[int], block, max_new_tokens: int, rounds: int,
              threads: int = 1) -> dict[str, dict]:
    """Per model: ms of a batch-1 forward pass over ``block`` and ms per greedily generated token, fastest of
    ``rounds`` round-robin rounds (each round times every model once), on ``threads`` torch threads."""
    import torch

    x = torch.as_tensor(block.astype("int64"))
    best = {name: {"forward_ms": math.inf, "ms_per_token": math.inf} for name in models}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _time_rounds(models, x, prompt_ids, max_new_tokens, rounds, best)
    finally:
        torch.set_num_threads(before)
    return best


def _time_rounds(models: dict, x, prompt_ids: list[int], max_new_tokens: int, rounds: int, best: dict) -> None:
    import torch

    with torch.no_grad():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                started = time.perf_counter()
                model(x)
                forward = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                greedy(model, prompt_ids, max_new_tokens, eos_id=None)  # a fixed number of tokens: no EOS stop
                per_token = (time.perf_counter() - started) * 1000 / max_new_tokens
                best[name] = {"forward_ms": min(best[name]["forward_ms"], round(forward, 2)),
                              "ms_per_token": min(best[name]["ms_per_token"], round(per_token, 2))}


def greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
    """Greedy continuation (the context is cut to the model's last max_len tokens); stops at EOS."""
    import torch

    ids, new = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            context = torch.tensor([ids[-model.max_len:]])
            token = int(model(context).logits[0, -1].argmax())
            if token == eos_id:
                break
            ids.append(token)
            new.append(token)
    return new


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def evaluate_indra(cfg: EvaluateIndraConfig, inputs: dict[str, Path], out_dir: Path) -> Path:
    """Prefect task: the ablation table (perplexity, samples, latency, parameters)."""
    return evaluate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.indra_quantum.evaluate_indra", __doc__, EvaluateIndraConfig)
    add_input_args(parser, "indra_teacher output dir (its perplexity is the reference line)")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="a train_indra output (repeatable)")
    args = parser.parse_args(argv)
    inputs = cli_inputs(args)
    for spec in args.run:
        name, _, path = spec.partition("=")
        if not path or name in RESERVED:
            parser.error(f"--run {spec!r}: expected NAME=DIR with NAME other than {RESERVED}")
        inputs[name] = Path(path)
    print(evaluate(config_from_args(EvaluateIndraConfig, args, parser), inputs, args.out))


if __name__ == "__main__":
    run_stage_cli(main)
