"""Stage ``evaluate``: the quantum-mind validation suite.

Held-out prompts (tasks/quantum_mind/quantum_eval_prompts.py) are answered greedily by each model's GGUF in
llama.cpp — typically ``base`` (untrained), ``code_only`` (trained without the physics sources) and
``physics`` (the physics-augmented model). Every answer's python block runs in the sandbox through
the same checker as the verify stage, with the claims the prompt asked for. Per model:

    syntax_valid        share of answers with a python block that parses
    verified            share whose code runs, meets the reference/ansatz/circuit contract and the requested
                        qubit count, particle number and symmetry
    symmetry_respected  of prompts that request U(1) or Z2: share whose circuit passed the numerical symmetry check
    bp_free             share verified and off a barren plateau (gradient variance above bp_medium)
    humaneval_pass@1    Qiskit HumanEval from a local JSON/JSONL file (``humaneval_path``): the model's function
                        plus the task's ``check()`` run in the same sandbox
    novel_*             the same metrics on the prompts about ``holdout_datasets`` alone (PDE families never trained on)

Writes prompts.jsonl, answers.jsonl, humaneval.jsonl, validation_log.yaml and comparison.png;
``validation_markdown`` turns the results into the table the flow prints.

    python -m tasks.quantum_mind.evaluate_quantum --features data/quantum_mind/encode --model base=base-f16.gguf \\
        --model physics=model-f16.gguf --out data/quantum_mind/evaluate [--set prompts=20]
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import yaml
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.sandbox.jobs import SandboxJob
from tasks.common.code_blocks import code_closed, extract_code
from tasks.quantum_mind.generate_physics_examples import read_features
from tasks.quantum_mind.quantum_eval_prompts import EvalPrompt, build_prompts
from tasks.common.records import RecordError, read_json_rows, write_jsonl
from tasks.common.reporting import StageProgress, publish_image, publish_table
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.quantum_mind.verify_circuits import Claims, CircuitVerifier, CodeItem, VerifyConfig

STAGE = "evaluate"
LOG_FILE = "validation_log.yaml"
METRICS = ("syntax_valid", "verified", "symmetry_respected", "bp_free")
SCORED = ("prompts", *METRICS, "n_qubits_ok")
TABLE_ROWS = (*SCORED, "humaneval_pass@1", "outcomes", *(f"novel_{k}" for k in SCORED),
              "generated_tokens", "mean_answer_tokens", "generation_s", "tokens_per_s")


class EvaluateConfig(BaseModel):
    """Validation prompts, decoding and the checks the answers go through."""

    model_config = ConfigDict(extra="forbid")
    prompts: int = Field(100, ge=1, description="Held-out validation prompts answered by every model")
    min_qubits: int = Field(4, ge=2, le=16, description="Smallest qubit count a prompt asks for")
    max_qubits: int = Field(8, ge=2, le=16, description="Largest qubit count a prompt asks for")
    max_tokens: int = Field(1024, ge=16, description="Greedy tokens per answer at most (decoding also stops once the "
                                                     "first code block is closed); training answers run ~800 tokens")
    n_ctx: int = Field(4096, ge=256, description="llama.cpp context length")
    n_threads: int = Field(2, ge=1, description="llama.cpp threads")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all); needs llama-cpp-python "
                                                    "built with CUDA (CMAKE_ARGS=-DGGML_CUDA=on)")
    system_prompt: str = Field("You are a physicist who designs quantum circuits. Justify the design briefly, then give "
                               "one Qiskit code block.", description="System message of every validation prompt")
    humaneval_path: Path | None = Field(None, description="Qiskit HumanEval tasks (JSON list or JSONL of {task_id, prompt, "
                                        "canonical_solution, test, entry_point}); null skips HumanEval")
    humaneval_limit: int | None = Field(None, ge=1, description="Use only the first N HumanEval tasks")
    humaneval_timeout_s: float = Field(60.0, gt=0, description="Time limit of one HumanEval program in the sandbox")
    humaneval_system_prompt: str = Field("You write correct Python with Qiskit. Answer with the complete function in one "
                                         "```python block.", description="System message of the HumanEval prompts")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Sandbox limits and physics-check thresholds")
    holdout_datasets: list[str] = Field([], description="Well datasets kept out of training in every split (in the flow: "
                                                        "generate.holdout_datasets); `novel_share` of the prompts ask about them")
    novel_share: float = Field(0.3, ge=0, le=1, description="Share of the prompts about `holdout_datasets` (novel physics), "
                                                            "scored again on their own as novel_*")
    seed: int = Field(0, description="Seed of the prompt draw")


class HumanEvalTask(BaseModel):
    """One Qiskit HumanEval row."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    prompt: str
    canonical_solution: str = ""
    test: str
    entry_point: str


def read_humaneval(path: Path, limit: int | None = None) -> list[HumanEvalTask]:
    """Tasks from a JSON list or a JSONL file; a bad row raises RecordError naming file, record and field."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"evaluate: humaneval_path {path} does not exist")
    rows = read_json_rows(path)
    tasks = []
    for n, row in enumerate(rows[:limit] if limit else rows, 1):
        try:
            tasks.append(HumanEvalTask.model_validate(row))
        except ValidationError as e:
            err = e.errors()[0]
            raise RecordError(f"{path}: record {n}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    if not tasks:
        raise ValueError(f"evaluate: no HumanEval tasks in {path}")
    return tasks


def humaneval_program(t: HumanEvalTask, completion: str) -> str:
    """The program a HumanEval answer is judged by: the function (the model's whole def, or prompt + body), the test, the call."""
    code = extract_code(completion) or completion
    body = code if re.search(rf"^\s*def\s+{re.escape(t.entry_point)}\s*\(", code, re.MULTILINE) else t.prompt + code
    return f"{body}\n\n{t.test}\n\ncheck({t.entry_point})\n"


def humaneval_jobs(tasks: list[HumanEvalTask], completions: list[str], timeout_s: float) -> list[SandboxJob]:
    return [SandboxJob("adapters.sandbox.jobs:module_globals", {"names": ["__name__"]}, humaneval_program(t, c), timeout_s=timeout_s)
            for t, c in zip(tasks, completions)]


def score(prompts: list[EvalPrompt], rows: list[dict]) -> dict:
    """A model's validation metrics from its verdict rows (aligned with ``prompts``)."""
    n = len(prompts)
    symmetric = [r for p, r in zip(prompts, rows) if p.symmetry != "none"]
    out = {"prompts": n,
           "syntax_valid": sum(r["checks"].get("parses", False) and r["outcome"] != "no_code" for r in rows) / n,
           "verified": sum(r["passed"] for r in rows) / n,
           "symmetry_respected": (sum(bool(r["checks"].get("symmetry_ok")) for r in symmetric) / len(symmetric)
                                  if symmetric else None),
           "bp_free": sum(r["passed"] and r["bp_status"] in ("high", "medium") for r in rows) / n,
           "n_qubits_ok": sum(bool(r["checks"].get("n_qubits_ok")) for r in rows) / n}
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()} | {"outcomes": dict(sorted(outcomes.items()))}


def novel_score(prompts: list[EvalPrompt], rows: list[dict]) -> dict:
    """The metrics on the novel-physics prompts alone, as ``novel_<metric>``; empty when there are none."""
    pairs = [(p, r) for p, r in zip(prompts, rows) if p.novel]
    if not pairs:
        return {}
    s = score([p for p, _ in pairs], [r for _, r in pairs])
    return {f"novel_{k}": v for k, v in s.items() if k != "outcomes"}


def validation_markdown(results: dict[str, dict]) -> str:
    """The results as a markdown table, one column per model, rows in TABLE_ROWS order (what the flow prints and publishes)."""
    names = list(results)
    present = dict.fromkeys(k for r in results.values() for k in r)  # read back from a manifest, keys come sorted
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in [k for k in TABLE_ROWS if k in present] + [k for k in present if k not in TABLE_ROWS]:
        lines.append(f"| {m} | " + " | ".join(_cell(results[n].get(m)) for n in names) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):  # outcomes: "passed 3, no_code 1"
        return ", ".join(f"{k} {n}" for k, n in value.items()) or "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _no_code_row(item_id: str) -> dict:
    return {"id": item_id, "passed": False, "outcome": "no_code", "checks": {"parses": False, "runs": False},
            "reason": "the answer has no python code block", "bp_status": None, "symmetry_error": None}


def answer_models(cfg: EvaluateConfig, models: dict[str, Path], prompts: list[EvalPrompt],
                  tasks: list[HumanEvalTask]) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, dict]]:
    """Every model's answers to the prompts and HumanEval tasks, and its decoding throughput."""
    from adapters.models.llama_cpp import GgufChat

    answers, completions, speed = {}, {}, {}
    total = len(models) * (len(prompts) + len(tasks))
    with StageProgress(f"evaluate: {len(models)} models × {len(prompts) + len(tasks)} prompts", total) as bar:
        for name, gguf in models.items():
            with GgufChat(gguf, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, n_gpu_layers=cfg.n_gpu_layers) as chat:
                started, tokens_before = time.perf_counter(), chat.tokens_generated
                answers[name] = []
                for p in prompts:
                    answers[name].append(chat.reply([{"role": "system", "content": cfg.system_prompt},
                                                     {"role": "user", "content": p.prompt}], cfg.max_tokens, code_closed))
                    bar.advance()
                completions[name] = []
                for t in tasks:
                    completions[name].append(chat.reply([{"role": "system", "content": cfg.humaneval_system_prompt},
                                                         {"role": "user", "content": t.prompt}], cfg.max_tokens, code_closed))
                    bar.advance()
                seconds, tokens = time.perf_counter() - started, chat.tokens_generated - tokens_before
            speed[name] = {"generated_tokens": tokens, "generation_s": round(seconds, 2),
                           "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                           "mean_answer_tokens": round(tokens / max(1, len(prompts) + len(tasks)), 1)}
    return answers, completions, speed


def check_answers(cfg: EvaluateConfig, prompts: list[EvalPrompt], answers: dict[str, list[str]],
                  tasks: list[HumanEvalTask], completions: dict[str, list[str]]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Verdicts per model: each answer's code against its prompt's claims, each HumanEval program's ``check()``."""
    verdicts, he_rows = {}, {}
    with CircuitVerifier(cfg.verify) as verifier:
        for name, texts in answers.items():
            codes = [extract_code(a) for a in texts]
            items = [CodeItem(id=f"{name}/{p.id}", code=c, claims=Claims(**p.claims))
                     for p, c in zip(prompts, codes) if c is not None]
            checked = iter(verifier.verify(items, progress=False))
            verdicts[name] = [next(checked) if c is not None else _no_code_row(f"{name}/{p.id}")
                              for p, c in zip(prompts, codes)]
        for name, comps in completions.items():
            results = verifier.sandbox.map(humaneval_jobs(tasks, comps, cfg.humaneval_timeout_s))
            he_rows[name] = [{"model": name, "task_id": t.task_id, "passed": r.ok, "outcome": r.outcome,
                              "reason": "" if r.ok else f"{r.error_type or r.outcome}: {r.message}"[:300],
                              "completion": c} for t, c, r in zip(tasks, comps, results)]
    return verdicts, he_rows


def plot_comparison(results: dict[str, dict], path: Path) -> None:
    """Grouped bars: each metric for each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in (*METRICS, "humaneval_pass@1") if any(r.get(m) is not None for r in results.values())]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(results))
    for i, (name, r) in enumerate(results.items()):
        ax.bar([j + i * width for j in range(len(metrics))], [r.get(m) or 0 for m in metrics], width, label=name)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of prompts")
    ax.set_title("quantum-mind validation suite")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def key_of(cfg: EvaluateConfig, inputs: dict[str, Path], out_dir: Path) -> tuple[EvaluateConfig, dict[str, Path]]:
    """The stage key hashes ``features.jsonl`` (not the encode manifest), each model and the HumanEval file configured."""
    features = Path(inputs["features"])
    models = {k: Path(v) for k, v in inputs.items() if k != "features"}
    humaneval = {"humaneval": cfg.humaneval_path} if cfg.humaneval_path else {}
    return cfg, {"features": features / "features.jsonl" if features.is_dir() else features, **models, **humaneval}


def evaluate(cfg: EvaluateConfig, inputs: dict[str, Path], out_dir: Path) -> Path:
    """Run the suite; ``inputs`` = {"features": features.jsonl (or the encode dir), model name: GGUF file, ...}."""
    if "features" not in inputs or len(inputs) < 2:
        raise ValueError(f"evaluate: inputs need 'features' and at least one model GGUF, got {sorted(inputs)}")
    if cfg.min_qubits > cfg.max_qubits:
        raise ValueError(f"evaluate: min_qubits ({cfg.min_qubits}) is above max_qubits ({cfg.max_qubits})")
    out_dir = Path(out_dir)
    key = stage_key(evaluate, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    hashed = key_of(cfg, inputs, out_dir)[1]
    features, models = hashed["features"], {k: Path(v) for k, v in inputs.items() if k != "features"}
    prompts, held_out = build_prompts(read_features(features), cfg.prompts, cfg.min_qubits, cfg.max_qubits, cfg.seed,
                                      cfg.holdout_datasets, cfg.novel_share)
    tasks = read_humaneval(cfg.humaneval_path, cfg.humaneval_limit) if cfg.humaneval_path else []
    answers, completions, speed = answer_models(cfg, models, prompts, tasks)
    verdicts, he_rows = check_answers(cfg, prompts, answers, tasks, completions)
    results = {name: {**score(prompts, verdicts[name]),
                      **({"humaneval_pass@1": round(sum(r["passed"] for r in he_rows[name]) / len(tasks), 4)} if tasks else {}),
                      **novel_score(prompts, verdicts[name]), **speed[name]}
               for name in models}
    with stage_output(STAGE, out_dir, key, cfg, hashed) as out:
        write_jsonl(out.tmp / "prompts.jsonl", (p.model_dump() for p in prompts))
        write_jsonl(out.tmp / "answers.jsonl", ({"model": name, "prompt_id": p.id, **p.claims, "answer": a, **v}
                                                for name in models
                                                for p, a, v in zip(prompts, answers[name], verdicts[name])))
        write_jsonl(out.tmp / "humaneval.jsonl", (r for rows in he_rows.values() for r in rows))
        log = {"suite": {"prompts": len(prompts), "held_out_trajectories": held_out,
                         "novel_prompts": sum(p.novel for p in prompts),
                         "novel_datasets": sorted({p.dataset for p in prompts if p.novel}),
                         "requested": {s: sum(p.symmetry == s for p in prompts) for s in ("u1", "z2", "none")},
                         "humaneval_tasks": len(tasks), "humaneval_path": str(cfg.humaneval_path) if tasks else None,
                         "max_tokens": cfg.max_tokens, "decoding": "greedy (llama.cpp)"},
               "models": {name: str(path) for name, path in models.items()}, "results": results}
        (out.tmp / LOG_FILE).write_text(yaml.safe_dump(log, sort_keys=False))
        plot_comparison(results, out.tmp / "comparison.png")
        out.counts = {"prompts": len(prompts), "models": len(models), "humaneval_tasks": len(tasks)}
        out.metrics = {f"{name}.{k}": v for name, r in results.items() for k, v in r.items() if not isinstance(v, dict)}
        out.extra.update(results=results, held_out_trajectories=held_out)
    publish_table(STAGE, [{"model": name, **{k: v for k, v in r.items() if not isinstance(v, dict)}}
                          for name, r in results.items()],
                  f"quantum-mind validation: {len(prompts)} held-out prompts"
                  + (f" + {len(tasks)} Qiskit HumanEval tasks" if tasks else ""))
    publish_image(f"{STAGE}-comparison", out_dir / "comparison.png", "Validation metrics per model")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def evaluate_quantum(cfg: EvaluateConfig, inputs: dict[str, Path], out_dir: Path) -> Path:
    """Prefect task: answer held-out prompts with each model and check the circuits in the sandbox."""
    return evaluate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.quantum_mind.evaluate_quantum", __doc__, EvaluateConfig)
    parser.add_argument("--features", type=Path, required=True, help="features.jsonl (or the encode stage's directory)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=GGUF",
                        help="a model to evaluate (repeatable), e.g. physics=data/quantum_mind/export/model-f16.gguf")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    cfg = config_from_args(EvaluateConfig, args, parser)
    models = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name == "features":
            parser.error(f"--model expects NAME=PATH.gguf (NAME not 'features'), got {spec!r}")
        models[name] = Path(path)
    out = evaluate(cfg, {"features": args.features, **models}, args.out)
    print(yaml.safe_dump(yaml.safe_load((out / LOG_FILE).read_text())["results"], sort_keys=False))


if __name__ == "__main__":
    run_stage_cli(main)
