"""The gpu profile, run for real: SFT (LoRA bf16, then QLoRA 4-bit), a killed run resumed, the merge.

One prepared run on the embedded model (SmolLM2-135M-Instruct), through the SFT stage's own code
(``tasks.training.train_sft``) with the gpu profile's settings as ``--profile gpu`` loads them:

  * ``lora``: lift-sys's gpu block (bf16, LoRA r16 on q/k/v/o/gate/up/down, batch 4 x accumulation 4,
    eval + save every 50 steps, best checkpoint by eval loss). The stage's CLI (``tasks.training.train_sft.main``,
    in a child process) is SIGKILLed once a checkpoint past half the steps is complete, then the stage
    runs again in this process and must resume from that checkpoint;
  * ``qlora``: quantum-mind's gpu block (NF4 via bitsandbytes, r32 on all seven projections), when
    CUDA and bitsandbytes are importable; otherwise it says why it is skipped;
  * each run's ``merged/`` is loaded back and its eval loss measured again through the stage's trainer;
  * a timed run per variant (``build_trainer``, as ``bench/sft_throughput.py`` does) gives non-padding
    tokens/s, the fraction of the H200's bf16 dense peak (FLOPs counted by sft_throughput's
    ``flops_per_token``) and the peak GPU memory.

Training data are ben-lab records harvested from the reference lab on loopback (nothing downloaded).
Without CUDA (or with ``--cpu-smoke``) the same stages run on a tiny fp32 budget and the GPU-only
parts (bf16 on CUDA, QLoRA, GPU memory) are skipped with a message. Any error or failed check exits 1;
``<out>/results.json`` is written either way. On an H200 (2026-12-04) ``--steps 30`` took 245 s; the
default 200 steps take ~8 min for the LoRA half alone (a 135M model is launch-bound there).

    python bench/gpu_check.py                       # on the GPU box (its first GPU unless CUDA_VISIBLE_DEVICES is set)
    python bench/gpu_check.py --cpu-smoke           # CPU path (~2 min on 2 cores)
    python bench/gpu_check.py --steps 400 --out /tmp/gpu_check
    python bench/gpu_check.py --mix data/ben_lab/mix        # your own mix instead of a harvest from the reference lab
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

H200_BF16_DENSE_TFLOPS = 790.0
# Variant → (project whose gpu-profile sft block it uses, |merged - trained| eval-loss tolerance)
VARIANTS = {"lora": ("lift-sys", 0.1), "qlora": ("quantum-mind", 0.5)}
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class CheckFailed(RuntimeError):
    """A gpu-profile code path ran but did not do what it should."""


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def gpu_profile_sft(variant: str, budget: dict, model_cache: Path):
    """The variant's project config under ``--profile gpu``, on the embedded model, with the run's budget."""
    from adapters.models.base_models import EMBEDDED
    from flows.config import load_config

    if variant == "lora":
        from flows.lift_sys import PROJECT, LiftSysConfig as Config
    else:
        from flows.quantum_mind import PROJECT, QuantumMindConfig as Config
    profile = load_config(Config, PROJECT, profile="gpu").sft
    trainer = dict(profile.trainer)
    steps = budget["steps"]
    changes = {"max_steps": steps, "logging_steps": max(1, steps // 20), "disable_tqdm": True}
    every = trainer.get("save_steps", 25)
    if 2 * every > steps:  # the resume needs a checkpoint at or past half the steps, before the last one
        every = max(1, steps // 2)
        changes["save_steps"] = every
    if trainer.get("eval_strategy") == "steps":
        changes["eval_steps"] = every  # load_best_model_at_end wants saves on eval steps
    if trainer.get("warmup_steps", 0) > steps // 4:
        changes["warmup_steps"] = steps // 4
    changes.update(budget.get("trainer", {}))
    extra = {"base_model": EMBEDDED, "model_cache_dir": str(model_cache), "trainer": changes, **budget.get("sft", {})}
    return load_config(Config, PROJECT, profile="gpu", extra={"sft": extra}).sft, changes


def make_mix(records: int, val: int, work: Path) -> Path:
    """Harvest + describe ben-lab records from the reference lab, split into ``mix/{train,val}.jsonl``."""
    from bench.sft_throughput import lab_records

    lines = lab_records(records, work).read_text().splitlines()
    if len(lines) < val + 4:
        raise CheckFailed(f"the harvest gave {len(lines)} records, too few for {val} validation records")
    step = len(lines) // val
    val_idx = set(range(0, step * val, step))
    mix = work / "mix"
    mix.mkdir(parents=True, exist_ok=True)
    (mix / "train.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if i not in val_idx))
    (mix / "val.jsonl").write_text("".join(lines[i] + "\n" for i in sorted(val_idx)))
    return mix


def kill_after_checkpoint(cfg, mix: Path, out: Path, at_step: int, timeout: float) -> int:
    """Run the stage's CLI on ``cfg`` and SIGKILL it once a checkpoint at or past ``at_step`` is complete."""
    import yaml

    cfg_file = out.parent / "sft_config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    child_log = out.parent / "killed_run.log"
    # The stage's CLI, with tasks.training.train_sft imported rather than run as __main__: the stage key hashes its
    # code by module name, so a run started by `python -m tasks.training.train_sft` is never resumed (nor a cache hit)
    # when the stage runs imported, as in a flow and below.
    cmd = [sys.executable, "-c", "import sys; from tasks.training.train_sft import main; main(sys.argv[1:])",
           "--config", str(cfg_file), "--mix", str(mix), "--out", str(out)]
    with open(child_log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline, seen = time.time() + timeout, None
    try:
        while time.time() < deadline and proc.poll() is None and seen is None:
            for state in out.parent.glob(f".{out.name}.work-*/checkpoints/checkpoint-*/trainer_state.json"):
                step = int(state.parent.name.split("-")[-1])
                if step >= at_step:
                    seen = step
            time.sleep(0.05)
        if proc.poll() is not None:
            tail = child_log.read_text()[-3000:]
            raise CheckFailed(f"the run to be killed exited (code {proc.returncode}) before checkpoint {at_step}:\n{tail}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    if seen is None:
        raise CheckFailed(f"no checkpoint >= {at_step} within {timeout:.0f} s; see {child_log}")
    if (out / "manifest.json").exists():
        raise CheckFailed(f"{out}: a killed run published its output")
    return seen


def train_stage(cfg, mix: Path, out: Path) -> dict:
    """The SFT stage itself (resumes when a killed run left checkpoints); its manifest metrics + GPU memory."""
    from tasks.training.train_sft import train

    reset_gpu_peak()
    train(cfg, mix, out)
    peak = gpu_peak_gib()
    free_memory()
    manifest = json.loads((out / "manifest.json").read_text())
    return {**manifest["metrics"], "base_model": manifest.get("base_model"), "peak_gpu_memory_gib": peak}


def measure_throughput(cfg, base: str, mix: Path, warmup: int, timed: int, work: Path) -> dict:
    """Non-padding tokens/s over ``timed`` optimizer steps after ``warmup``, with the stage's trainer."""
    import torch
    from transformers import TrainerCallback

    from tasks.training.train_sft import build_trainer, to_prompt_completion

    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), state.num_input_tokens_seen))

    trainer_cfg = {**cfg.trainer, "max_steps": warmup + timed, "save_strategy": "no", "eval_strategy": "no",
                   "load_best_model_at_end": False, "logging_steps": 1000}
    cfg = cfg.model_copy(update={"trainer": trainer_cfg})
    reset_gpu_peak()
    trainer = build_trainer(cfg, base, to_prompt_completion(mix / "train.jsonl"), [], work, callbacks=[Clock()])
    model = trainer.model
    adapted = sorted({n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)})
    quantized = any(type(m).__name__ == "Linear4bit" for m in model.modules())
    trainable_dtypes = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})
    base_dtype = str(next(p for n, p in model.named_parameters() if "q_proj.base_layer.weight" in n).dtype)
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    trainer.train()
    (t0, n0), (t1, n1) = marks[warmup - 1], marks[-1]
    tokens, seconds = int(n1 - n0), t1 - t0
    out = {"tokens_per_s": round(tokens / seconds, 1), "timed_steps": timed, "timed_tokens": tokens,
           "seconds": round(seconds, 2), "mean_tokens_per_example": round(sum(lengths) / len(lengths), 1),
           "lora_modules": adapted, "base_weights_4bit": quantized, "base_weight_dtype": base_dtype,
           "trainable_dtypes": trainable_dtypes, "bf16_autocast": bool(trainer.args.bf16),
           "activation_checkpointing": bool(trainer.args.activation_checkpointing),
           "device": str(next(model.parameters()).device), "peak_gpu_memory_gib": gpu_peak_gib()}
    del trainer, model
    free_memory()
    return out


def check_merged(cfg, merged: Path, mix: Path, work: Path) -> dict:
    """Load ``merged/`` and measure its eval loss with the stage's trainer (a fresh LoRA is a no-op: B = 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.training.train_sft import build_trainer, to_prompt_completion

    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        if not (merged / name).exists():
            raise CheckFailed(f"{merged}: {name} is missing")
    val = to_prompt_completion(mix / "val.jsonl")
    plain = cfg.model_copy(update={"quantization": "none", "trainer": {
        **cfg.trainer, "eval_strategy": "no", "load_best_model_at_end": False, "save_strategy": "no"}})
    trainer = build_trainer(plain, str(merged), val[:2], val, work)
    loss = trainer.evaluate()["eval_loss"]
    del trainer
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    ids = tok.apply_chat_template(val[0]["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    del model
    free_memory()
    return {"merged_eval_loss": loss, "merged_sample_answer": answer}


def run_variant(variant: str, budget: dict, args, mix: Path, model_cache: Path, flops: float | None, peak_flops: float | None,
                resume: bool) -> dict:
    """Stage run (killed + resumed for ``lora``), merged-model check, timed run; raises CheckFailed on a bad result."""
    from adapters.models.base_models import resolve_base_model

    project, tol = VARIANTS[variant]
    cfg, changes = gpu_profile_sft(variant, budget, model_cache)
    log(f"{variant}: --profile gpu sft block of {project}: dtype {cfg.dtype}, quantization {cfg.quantization}, "
        f"LoRA r{cfg.lora.r}/a{cfg.lora.alpha} on {','.join(cfg.lora.target_modules)}; budget overrides {changes}")
    out = args.out / variant / "sft"
    shutil.rmtree(args.out / variant, ignore_errors=True)
    out.parent.mkdir(parents=True)
    result: dict = {"profile_block": project, "config": cfg.model_dump(mode="json"), "budget_overrides": changes}
    started = time.time()
    if resume:
        every = cfg.trainer.get("save_steps", 25)
        at = math.ceil(budget["steps"] / 2 / every) * every
        log(f"{variant}: running the stage's CLI (tasks.training.train_sft.main) in a child process, to be SIGKILLed at checkpoint {at}")
        result["killed_at_checkpoint"] = kill_after_checkpoint(cfg, mix, out, at, args.kill_timeout)
        log(f"{variant}: killed after checkpoint {result['killed_at_checkpoint']}; running the stage again (it must resume)")
    result.update(train_stage(cfg, mix, out))
    result["stage_seconds"] = round(time.time() - started, 1)
    log(f"{variant}: eval loss {result['eval_loss_before']:.4f} -> {result['eval_loss_after']:.4f}, "
        f"{result['global_steps']} steps, resumed from step {result['resumed_from_step']}")
    result.update(check_merged(cfg, out / "merged", mix, args.out / variant / "merged_check"))
    result["merged_dir"] = str(out / "merged")
    log(f"{variant}: merged/ loads; its eval loss {result['merged_eval_loss']:.4f}; "
        f"greedy answer to a val prompt: {result['merged_sample_answer']!r}")
    base = resolve_base_model(cfg.base_model, model_cache)
    timed = measure_throughput(cfg, base, mix, args.warmup_steps, args.throughput_steps, args.out / variant / "throughput")
    result["throughput"] = timed
    if flops and peak_flops:
        per_token = flops(timed["mean_tokens_per_example"])
        result["throughput"]["flops_per_token"] = per_token
        result["throughput"]["fraction_of_peak"] = round(timed["tokens_per_s"] * per_token / peak_flops, 5)
    log(f"{variant}: {timed['tokens_per_s']:.0f} non-padding tokens/s over {timed['timed_steps']} steps"
        + (f" = {100 * result['throughput']['fraction_of_peak']:.3f}% of peak" if "fraction_of_peak" in result["throughput"] else ""))
    result["checks"] = variant_problems(variant, result, budget, tol, resume)
    return result


def variant_problems(variant: str, r: dict, budget: dict, tol: float, resume: bool) -> list[str]:
    """What a correct gpu-profile run must show; each miss is one line."""
    problems = []
    before, after, merged = r["eval_loss_before"], r["eval_loss_after"], r["merged_eval_loss"]
    if not all(isinstance(x, float) and math.isfinite(x) for x in (before, after, merged)):
        problems.append(f"eval losses not finite: before {before}, after {after}, merged {merged}")
    elif budget["require_improvement"] and not after < before:
        problems.append(f"eval loss did not drop: {before:.4f} -> {after:.4f}")
    elif abs(merged - after) > tol:
        problems.append(f"merged model's eval loss {merged:.4f} differs from the trained one's {after:.4f} by more than {tol}")
    if r["global_steps"] != budget["steps"]:
        problems.append(f"{r['global_steps']} optimizer steps, expected {budget['steps']}")
    if resume and not r["resumed_from_step"] >= r["killed_at_checkpoint"]:
        problems.append(f"resumed from step {r['resumed_from_step']}, not from checkpoint {r['killed_at_checkpoint']}")
    t = r["throughput"]
    wanted = set(r["config"]["lora"]["target_modules"])
    if set(t["lora_modules"]) != wanted:
        problems.append(f"LoRA on {t['lora_modules']}, configured {sorted(wanted)}")
    if not t["tokens_per_s"] > 0:
        problems.append("no tokens trained in the timed run")
    if budget["gpu"]:
        if not t["device"].startswith("cuda"):
            problems.append(f"trained on {t['device']}, not CUDA")
        if not t["bf16_autocast"] or "bfloat16" not in t["base_weight_dtype"] and not t["base_weights_4bit"]:
            problems.append(f"not bf16: autocast {t['bf16_autocast']}, base weights {t['base_weight_dtype']}")
        if variant == "qlora" and not t["base_weights_4bit"]:
            problems.append("QLoRA asked, but the base weights are not bitsandbytes 4-bit")
    return [f"{variant}: {p}" for p in problems]


def reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def qlora_unavailable() -> str | None:
    """Why QLoRA cannot run here (None when it can)."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU (QLoRA's NF4 kernels are the GPU path; on a CPU the stage would train an unquantised LoRA)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # an ImportError or a CUDA-library error while loading its kernels
        return f"bitsandbytes is not importable: {type(e).__name__}: {e}"
    return None


def environment(gpu: bool) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    return {"device": device, "cuda": torch.version.cuda if gpu else None, "versions": versions}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    data = Path(os.environ.get("LABTUNE_DATA_DIR", ROOT / "data"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="optimizer steps per stage run (default: 200 on a GPU, 4 on CPU)")
    p.add_argument("--throughput-steps", type=int, help="timed steps after the warm-up (default: 30 on a GPU, 2 on CPU)")
    p.add_argument("--warmup-steps", type=int, help="untimed steps before the timed ones (default: 3 on a GPU, 1 on CPU)")
    p.add_argument("--records", type=int, help="ben-lab records to harvest (default: 240 on a GPU, 24 on CPU)")
    p.add_argument("--val-records", type=int, help="validation records (default: 32 on a GPU, 4 on CPU)")
    p.add_argument("--mix", type=Path, help="train on this mix dir (train.jsonl + val.jsonl, chat records) instead of "
                   "harvesting ben-lab records: a GPU box without the reference lab's dependencies, or your own data")
    p.add_argument("--out", type=Path, default=data / "gpu_check", help="output dir (results.json, runs, data)")
    p.add_argument("--model-cache", type=Path, default=data / "cache" / "models", help="embedded model cache")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS, help="GPU bf16 dense peak for the fraction")
    p.add_argument("--kill-timeout", type=float, default=300, help="seconds to wait for the checkpoint before the kill")
    p.add_argument("--cpu-smoke", action="store_true", help="hide CUDA and run the CPU path even on a GPU box")
    return p.parse_args(argv)


def budget_for(gpu: bool, args: argparse.Namespace) -> dict:
    """Steps, records and (on CPU) the settings that keep the run to ~2 minutes on 2 cores."""
    if gpu:
        budget = {"steps": 200, "trainer": {}, "sft": {}, "records": 240, "val": 32, "timed": 30, "warmup": 3}
    else:  # fp32 (no bf16 on CUDA), small batches, short sequences
        budget = {"steps": 4, "records": 24, "val": 4, "timed": 2, "warmup": 1, "sft": {"dtype": "float32"},
                  "trainer": {"bf16": False, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                              "per_device_eval_batch_size": 8, "max_length": 256}}
    budget["steps"] = args.steps or budget["steps"]
    args.throughput_steps = args.throughput_steps or budget.pop("timed")
    args.warmup_steps = args.warmup_steps or budget.pop("warmup")
    budget.update(gpu=gpu, require_improvement=gpu, records=args.records or budget["records"],
                  val=args.val_records or budget["val"])
    if budget["steps"] < 2:
        raise SystemExit("--steps must be at least 2 (one checkpoint to resume from, one step after it)")
    return budget


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch initialises CUDA; the killed run inherits it. One GPU: with several visible the
    # Trainer would wrap the model in DataParallel, and the figures would not be one chip's.
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # the killed child inherits these too
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    gpu = torch.cuda.is_available()
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    budget = budget_for(gpu, args)
    results: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "mode": "gpu" if gpu else "cpu-smoke", **environment(gpu), "steps": budget["steps"],
                     "runs": {}, "skipped": {}, "problems": []}
    log(f"device: {results['device']}; versions {results['versions']}")
    if not gpu:
        why = "--cpu-smoke" if args.cpu_smoke else "no CUDA GPU is present"
        for part, text in {"bf16": "bf16 on CUDA (the CPU path trains fp32)", "qlora": "QLoRA 4-bit",
                           "gpu_memory": "peak GPU memory", "fraction_of_h200_peak": "fraction of the H200 bf16 peak"}.items():
            results["skipped"][part] = f"{text}: SKIPPED, {why}"
            log(results["skipped"][part])
        log(f"CPU budget: {budget['steps']} steps of {budget['trainer']['per_device_train_batch_size']} examples, "
            f"max_length {budget['trainer']['max_length']}, fp32")
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        from adapters.models.base_models import EMBEDDED, resolve_base_model
        from bench.sft_throughput import flops_per_token, matmul_peak_gflops

        base = resolve_base_model(EMBEDDED, args.model_cache)
        with torch.device("meta"):  # the architecture only: FLOPs count the unquantised matmul weights
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
        if gpu:
            peak_flops = args.peak_tflops * 1e12
            results["peak"] = {"what": "H200 bf16 dense (given)", "tflops": args.peak_tflops}
        else:
            peak_flops = matmul_peak_gflops(sizes=(1024, 2048), reps=4) * 1e9
            results["peak"] = {"what": "this CPU's fp32 matmul peak (measured)", "tflops": round(peak_flops / 1e12, 4)}
        t = time.time()
        if args.mix:
            mix, source = args.mix, f"the mix in {args.mix}"
            missing = [n for n in ("train.jsonl", "val.jsonl") if not (mix / n).is_file()]
            if missing:
                raise CheckFailed(f"--mix {mix}: {', '.join(missing)} missing")
        else:
            mix = make_mix(budget["records"], budget["val"], args.out / "data")
            source = "ben-lab harvest from the reference lab on loopback"
        counts = {n: sum(1 for _ in open(mix / f"{n}.jsonl")) for n in ("train", "val")}
        results["data"] = {"source": source, **counts, "seconds": round(time.time() - t, 1)}
        log(f"data: {counts['train']} train / {counts['val']} val records ({source}) in {results['data']['seconds']} s")
        variants = ["lora"]
        why_not = qlora_unavailable()
        if why_not:
            results["skipped"]["qlora"] = f"QLoRA 4-bit: SKIPPED, {why_not}"
            if gpu:
                log(results["skipped"]["qlora"])
        else:
            variants.append("qlora")
        for variant in variants:
            r = run_variant(variant, budget, args, mix, args.model_cache, lambda n: flops_per_token(skeleton, n),
                            peak_flops, resume=variant == "lora")
            results["runs"][variant] = r
            results["problems"] += r.pop("checks")
    except Exception as e:
        results["problems"].append(f"{type(e).__name__}: {e}")
        results["traceback"] = traceback.format_exc()
        print(results["traceback"], file=sys.stderr, flush=True)
    results["seconds"] = round(time.time() - started, 1)
    results["ok"] = not results["problems"]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_summary(results, args.out / "results.json")
    return 0 if results["ok"] else 1


def print_summary(results: dict, path: Path) -> None:
    print(f"\n== gpu_check ({results['mode']}, {results['device']}, {results['seconds']} s) ==")
    for name, r in results["runs"].items():
        t = r["throughput"]
        frac = f"{100 * t['fraction_of_peak']:.3f}% of {results['peak']['what']}" if "fraction_of_peak" in t else "n/a"
        mem = f"{t['peak_gpu_memory_gib']:.2f} GiB (timed run), {r['peak_gpu_memory_gib']:.2f} GiB (stage)" \
            if t["peak_gpu_memory_gib"] is not None else "n/a (no GPU)"
        print(f"{name:6s} eval loss {r['eval_loss_before']:.4f} -> {r['eval_loss_after']:.4f} (merged {r['merged_eval_loss']:.4f}); "
              f"{r['global_steps']} steps, resumed from {r['resumed_from_step']}; {t['tokens_per_s']:.0f} tokens/s "
              f"= {frac}; peak memory {mem}; base {t['base_weight_dtype']}{' NF4' if t['base_weights_4bit'] else ''}, "
              f"bf16 autocast {t['bf16_autocast']}, activation checkpointing {t['activation_checkpointing']}")
    for text in results["skipped"].values():
        print(text)
    print(f"results: {path}")
    if results["problems"]:
        print("GPU CHECK FAILED:\n  " + "\n  ".join(results["problems"]), file=sys.stderr, flush=True)
    else:
        print("gpu_check: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
