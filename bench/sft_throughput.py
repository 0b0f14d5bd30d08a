"""SFT throughput on the embedded model: labtune's batches vs the seed's, against this CPU's peak.

Measures, in one run:
  * the CPU's fp32 matmul peak (torch, 2048x2048, all threads) in GFLOP/s;
  * labtune's SFT (TRL SFTTrainer with labtune's defaults: length-grouped padded batches, loss on
    answers) in non-padding tokens/s;
  * the seed's approach (every example padded to 1024, loss on every position incl. padding);
  * labtune's SFT again with bf16 autocast (``sft.trainer.bf16: true``; the CPU's bf16 instructions);
and prints them as tokens/s and as a fraction of peak. Padding tokens are computed but not counted. FLOPs per trained token are counted as
4 x (matmul parameters): forward 2P, backward 2P for input gradients (LoRA freezes the base
weights, so no weight gradients), plus attention scores; LoRA's own FLOPs are negligible.

    python bench/sft_throughput.py [--steps 8] [--batch 16] [--records 160]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def matmul_peak_gflops(sizes=(1024, 2048, 3072), reps: int = 8) -> float:
    """The best fp32 GEMM rate over a few square sizes (the most flattering peak, so the fraction is honest)."""
    import torch

    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_token(model, seq_len: float) -> float:
    """Training FLOPs per token with a frozen base (see module docstring)."""
    import torch

    cfg = model.config
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 2 * cfg.num_hidden_layers * seq_len * cfg.hidden_size  # QK^T and AV, forward, per token
    return 2 * (2 * matmul_params + 2 * attention)


def lab_records(n: int, workdir: Path) -> Path:
    """Real ben-lab Q&A: harvest a small plan from the reference lab and describe it."""
    from tasks.ben_lab.calibrate_phases import CalibrateConfig, calibrate
    from tasks.ben_lab.describe_experiments import DescribeConfig, describe
    from tasks.ben_lab.harvest_experiments import HarvestConfig, harvest

    per_type = max(2, n // 6)
    cfg = HarvestConfig(phase_runs_per_type=per_type, tri_runs=n // 6, discovery_runs=2, drift_runs=n // 6,
                        system_sizes=[8, 12, 16], discovery_per_phase=[5])
    harvested = harvest(cfg, None, workdir / "harvest")
    calibrated = calibrate(CalibrateConfig(), harvested, workdir / "calibrate")
    return describe(DescribeConfig(), [harvested, calibrated], workdir / "describe") / "chat.jsonl"


def labtune_tokens_per_s(base: str, rows: list[dict], steps: int, batch: int, workdir: Path,
                         bf16: bool = False) -> tuple[float, float]:
    from transformers import TrainerCallback

    from tasks.training.train_sft import SFTStageConfig, build_trainer

    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), state.num_input_tokens_seen))

    cfg = SFTStageConfig(base_model=base, trainer={"max_steps": steps + 1, "per_device_train_batch_size": batch,
                                                   "save_strategy": "no", "logging_steps": 1000, "disable_tqdm": True,
                                                   "bf16": bf16})
    trainer = build_trainer(cfg, base, rows, [], workdir / "labtune", callbacks=[Clock()])
    trainer.train()
    (t0, n0), (t1, n1) = marks[0], marks[-1]  # the first step is warm-up
    tokens = n1 - n0
    return tokens / (t1 - t0), tokens / (steps * batch)


def seed_tokens_per_s(base: str, rows: list[dict], steps: int, batch: int, max_len: int = 1024) -> tuple[float, int]:
    """The seed's recipe: chat text padded to max_len, labels = input_ids everywhere (padding included)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    texts = [tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    real_tokens, elapsed = 0, 0.0
    for step in range(steps + 1):
        chunk = [texts[(step * batch + i) % len(texts)] for i in range(batch)]
        enc = tok(chunk, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        t = time.perf_counter()
        loss = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step:  # the first step is warm-up
            elapsed += time.perf_counter() - t
            real_tokens += int(enc.attention_mask.sum())
    return real_tokens / elapsed, max_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per approach (after 1 warm-up step)")
    parser.add_argument("--batch", type=int, default=16, help="labtune examples per step")
    parser.add_argument("--seed-batch", type=int, default=4, help="the seed's examples per step (padded to 1024)")
    parser.add_argument("--records", type=int, default=160)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from adapters.models.base_models import EMBEDDED, resolve_base_model
    from tasks.training.train_sft import to_prompt_completion

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = resolve_base_model(EMBEDDED, Path("data/cache/models"))
        rows = to_prompt_completion(lab_records(args.records, work))
        peak = matmul_peak_gflops()
        ours, mean_len = labtune_tokens_per_s(base, rows, args.steps, args.batch, work)
        ours_bf16, _ = labtune_tokens_per_s(base, rows, args.steps, args.batch, work, bf16=True)
        seed, _ = seed_tokens_per_s(base, rows, max(2, args.steps // 2), args.seed_batch)
        model = AutoModelForCausalLM.from_pretrained(base)
        ours_gflops = ours * flops_per_token(model, mean_len) / 1e9
        seed_gflops_useful = seed * flops_per_token(model, mean_len) / 1e9
    result = {
        "threads": torch.get_num_threads(), "matmul_peak_gflops": round(peak, 1),
        "records": len(rows), "mean_tokens_per_example": round(mean_len, 1),
        "labtune_tokens_per_s": round(ours, 1), "labtune_gflops": round(ours_gflops, 1),
        "labtune_fraction_of_peak": round(ours_gflops / peak, 3),
        "seed_tokens_per_s": round(seed, 1), "seed_useful_fraction_of_peak": round(seed_gflops_useful / peak, 3),
        "speedup_vs_seed": round(ours / seed, 2),
        "labtune_bf16_tokens_per_s": round(ours_bf16, 1), "bf16_speedup": round(ours_bf16 / ours, 2),
    }
    print(json.dumps(result, indent=2))
    print(f"\nlabtune: {ours:.0f} non-padding tok/s = {100 * ours_gflops / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak "
          f"(target >= 40%); seed: {seed:.0f} tok/s; speed-up {ours / seed:.1f}x (target >= 3x); "
          f"with bf16 autocast: {ours_bf16:.0f} tok/s ({ours_bf16 / ours:.2f}x fp32)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
