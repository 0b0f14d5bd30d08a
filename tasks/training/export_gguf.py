"""Stage ``export``: an SFT output → GGUF files, verified in llama.cpp against transformers.

    python -m tasks.training.export_gguf SFT_DIR VAL_JSONL --out OUT_DIR [--set parity_prompts=4] [--set outtypes='[f16]']

Writes ``model-<outtype>.gguf`` for each outtype (llama.cpp's own ``convert_hf_to_gguf.py``), and with
``export_adapter`` the LoRA as ``adapter-f16.gguf`` plus the base it applies to as ``base-f16.gguf`` (so
Ollama can run FROM base + ADAPTER). Then the parity gate (``tasks.training.gguf_parity``): the first N val
conversations (prompt + reference answer, tokenized once) are read by transformers (float32) and by llama.cpp,
and at every position the next-token argmax and KL(transformers ‖ llama.cpp) are compared. An argmax flip
where transformers rates llama.cpp's pick within ``parity_near_tie_margin`` nats of its own top token is a
near-tie (f16 rounding) and only reported; the stage fails when model-f16 or base-f16 + adapter-f16 disagrees
for real at too many positions or its mean KL is too high (q8_0 is only reported). The chat template embedded
in the GGUF must render the same text as the tokenizer's ``apply_chat_template``. A short free-running greedy
sample of transformers and llama.cpp on the first val prompt is kept in the manifest (shown, not gated).
Per-record teacher-forced counts go to ``parity.jsonl``.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.models.llama_cpp import GgufModel, LlamaCppError, convert_hf, convert_lora, render_chat_template, resolve_llama_cpp_dir
from tasks.training.gguf_parity import conversation_ids, measure, parity_failure, summarize
from tasks.common.records import read_chat_records
from tasks.common.reporting import StageProgress, counts_table, publish_table
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.common.stage import MANIFEST, cached, prefect_cache_key, read_manifest, stage_key, stage_output

STAGE = "export"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
PARITY_FILE = "parity.jsonl"


class ExportConfig(BaseModel):
    """How the SFT output is exported to GGUF and checked in llama.cpp."""

    model_config = ConfigDict(extra="forbid")

    llama_cpp_dir: Path | None = Field(None, description="llama.cpp checkout holding convert_hf_to_gguf.py; "
                                       "default $LLAMA_CPP_DIR, then <venv>/share/llama.cpp (make setup)")
    outtypes: list[Literal["f32", "f16", "bf16", "q8_0"]] = Field(
        ["f16", "q8_0"], description="GGUF types of the merged model; f16 is required (the parity check runs on it)")
    export_adapter: bool = Field(True, description="also write the LoRA as adapter-f16.gguf and its base as base-f16.gguf")
    parity_prompts: int = Field(8, ge=1, description="how many val records (from the top of the file) the parity "
                                "check reads, each as a whole conversation: prompt + reference answer")
    parity_max_tokens: int = Field(256, ge=8, description="each val conversation is cut to its first N tokens; "
                                   "transformers and llama.cpp read the same tokens and every position's next-token "
                                   "prediction is compared (teacher forcing)")
    parity_min_rate: float = Field(0.95, ge=0, le=1, description="minimum share of positions where llama.cpp's "
                                   "next-token argmax agrees with transformers', near-ties counted as agreeing, for "
                                   "model-f16 and for base-f16 + adapter-f16; below it the stage fails (q8_0 is only "
                                   "reported)")
    parity_near_tie_margin: float = Field(0.05, ge=0, description="an argmax disagreement is a near-tie (reported, "
                                          "never failed on) when transformers' log-prob of llama.cpp's pick is within "
                                          "this many nats of its own top token: f16 rounding can flip such a choice")
    parity_max_kl: float = Field(0.005, gt=0, description="largest mean KL(transformers ‖ llama.cpp) per position, "
                                 "in nats, for model-f16 and base-f16 + adapter-f16 (embedded SmolLM2: f16 2e-5, q8_0 "
                                 "0.02, one attention projection zeroed 0.4)")
    parity_tokens: int = Field(16, ge=1, description="greedy tokens of the free-running sample (first val prompt, "
                               "transformers vs model-f16 in llama.cpp) kept in the manifest; shown, not gated")
    require_template_match: bool = Field(True, description="fail when the GGUF's chat template renders a prompt "
                                         "differently from the tokenizer's apply_chat_template")
    n_ctx: int = Field(2048, ge=64, description="llama.cpp context length of the free-running sample; a first "
                       "val prompt longer than n_ctx - parity_tokens gets no sample")
    n_threads: int = Field(1, ge=1, description="llama.cpp and torch threads for the checks; 1 because on a shared "
                           "2-core machine 2 threads spin-wait on each other (llama.cpp, 32 tokens: 75 s vs 0.5 s while "
                           "another job ran); raise it on a machine with cores to spare")
    timeout_s: float = Field(3600, gt=0, description="time limit of one converter run, in seconds")

    @field_validator("outtypes")
    @classmethod
    def _needs_f16(cls, v: list[str]) -> list[str]:
        if "f16" not in v:
            raise ValueError("outtypes must include 'f16': the llama.cpp parity check runs on model-f16.gguf")
        return list(dict.fromkeys(v))


def run(cfg: ExportConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Export ``inputs = [sft_dir, val_jsonl]`` to GGUF in ``out_dir`` and verify it; returns ``out_dir``."""
    sft_dir, val_path = _split_inputs(inputs)
    out_dir = Path(out_dir)
    key = stage_key(run, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    llama_dir = resolve_llama_cpp_dir(cfg.llama_cpp_dir)
    merged, adapter, base = _sft_parts(sft_dir, cfg.export_adapter)
    records = [r.model_dump()["messages"] for r in read_chat_records(val_path)[: cfg.parity_prompts]]
    if not records:
        raise ValueError(f"{val_path}: no records; the parity check needs at least one val record")

    with stage_output(STAGE, out_dir, key, cfg, [sft_dir, val_path]) as out:
        gguf: dict[str, str] = {}
        for outtype in cfg.outtypes:
            gguf[outtype] = f"model-{outtype}.gguf"
            out.metrics[f"convert_{outtype}_s"] = round(
                convert_hf(merged, out.tmp / gguf[outtype], outtype, llama_cpp_dir=llama_dir, timeout=cfg.timeout_s), 2)
        if cfg.export_adapter:
            gguf["adapter"], gguf["base"] = "adapter-f16.gguf", "base-f16.gguf"
            out.metrics["convert_adapter_s"] = round(convert_lora(
                adapter, base, out.tmp / gguf["adapter"], llama_cpp_dir=llama_dir, timeout=cfg.timeout_s), 2)
            out.metrics["convert_base_s"] = round(
                convert_hf(base, out.tmp / gguf["base"], "f16", llama_cpp_dir=llama_dir, timeout=cfg.timeout_s), 2)
        for name, file in gguf.items():
            out.metrics[f"size_{name}_mb"] = round((out.tmp / file).stat().st_size / 2**20, 2)

        report = _verify(cfg, merged, out.tmp, gguf, records)
        out.counts.update(report.pop("counts"))
        out.metrics.update(report.pop("metrics"))
        out.extra.update(gguf=gguf, chat_template=CHAT_TEMPLATE_FILE if report["has_template"] else None,
                         tokens=report["tokens"], sample=report["sample"],
                         sft_dir=str(Path(sft_dir).resolve()), base_model=str(base) if base else None)

    publish_table(f"{STAGE}-summary", counts_table(out.counts, out.metrics), "GGUF export and llama.cpp parity "
                  "(teacher-forced)")
    return out_dir


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def export_gguf(cfg: ExportConfig, inputs: list[Path], out_dir: Path) -> Path:
    """Prefect task: export the SFT output to GGUF and verify it in llama.cpp."""
    return run(cfg, inputs, out_dir)


def _split_inputs(inputs) -> tuple[Path, Path]:
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(paths) != 2:
        raise ValueError(f"export takes inputs [sft_dir, val_jsonl], got {len(paths)} path(s): {paths}")
    return Path(paths[0]), Path(paths[1])


def _sft_parts(sft_dir: Path, need_adapter: bool) -> tuple[Path, Path | None, Path | None]:
    """merged/, adapter/ and the base model dir of an SFT output, with errors naming what is missing."""
    merged = sft_dir / "merged"
    if not (merged / "config.json").is_file():
        raise FileNotFoundError(f"{sft_dir}: no merged/ model (merged/config.json missing); did the SFT stage finish?")
    if not need_adapter:
        return merged, None, None
    adapter = sft_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{sft_dir}: no adapter/adapter_config.json; set export_adapter: false to export "
                                "the merged model only")
    manifest = read_manifest(sft_dir)
    if not manifest or not manifest.get("base_model"):
        raise ValueError(f"{sft_dir / MANIFEST}: field 'base_model' is missing; the LoRA export needs the base model dir")
    base = Path(manifest["base_model"]).expanduser()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{sft_dir / MANIFEST}: base_model {manifest['base_model']!r} is not a local HF model dir; "
                                "the LoRA converter needs the base weights on disk (or set export_adapter: false)")
    return merged, adapter, base


def agreement(ref: list[int], got: list[int]) -> tuple[int, int]:
    """(length of the common prefix, compared length) of two generated token id sequences."""
    n = 0
    for a, b in zip(ref, got):
        if a != b:
            break
        n += 1
    return n, max(len(ref), len(got), 1)


@contextmanager
def _torch_threads(n: int):
    """Run transformers on ``n`` threads, restoring the setting after (2 on 2 busy cores: 40 tokens 4.7 s vs 0.4 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prompt_messages(messages: list[dict]) -> list[dict]:
    """The prompt part of a record: everything before its last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


WHAT = {"f16": "merged model-f16.gguf", "adapter": "base-f16.gguf + adapter-f16.gguf", "q8_0": "model-q8_0.gguf"}
HINT = {"f16": "The conversion is likely broken: check that the llama.cpp converter (llama_cpp_dir, shipped with the "
               "installed llama-cpp-python) supports this architecture and matches the llama.cpp that runs it, and that "
               "merged/ still holds the weights the SFT stage wrote.",
        "adapter": "The LoRA conversion is likely broken: check that adapter-f16.gguf was converted against this base "
                   "(the SFT manifest's base_model, written as base-f16.gguf), that the llama.cpp converter supports the "
                   "adapter's target_modules, and that merged/ is that base with this adapter merged in."}
GATED = ("f16", "adapter")


def _verify(cfg: ExportConfig, merged: Path, tmp: Path, gguf: dict[str, str], records: list[list[dict]]) -> dict:
    """Teacher-forced parity of llama.cpp vs transformers, the chat-template round trip and a greedy sample."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    checks = {"f16": (tmp / gguf["f16"], None)}
    if "adapter" in gguf:
        checks["adapter"] = (tmp / gguf["base"], tmp / gguf["adapter"])
    if "q8_0" in gguf:
        checks["q8_0"] = (tmp / gguf["q8_0"], None)
    with _torch_threads(cfg.n_threads), GgufModel(tmp / gguf["f16"], n_ctx=cfg.n_ctx, n_threads=cfg.n_threads) as ref:
        template, tokens = ref.chat_template, {"bos": ref.bos_token, "eos": ref.eos_token}
        template_fail = _template_mismatches(tok, template, tokens, records)
        texts = [conversation_ids(tok, messages) for messages in records]
        tokens_match = [ref.tokenize(text) == ids for text, ids in texts]
        sample = _greedy_sample(cfg, tok, model, ref, records[0])
    sequences = [ids[: cfg.parity_max_tokens] for _, ids in texts]

    started = time.perf_counter()
    progress = StageProgress("llama.cpp parity", total=len(sequences) * len(checks))
    with _torch_threads(cfg.n_threads), progress:
        results = measure(model, sequences, checks, margin=cfg.parity_near_tie_margin, n_threads=cfg.n_threads,
                          advance=progress.advance)
    parity_s = time.perf_counter() - started
    with open(tmp / PARITY_FILE, "w") as fh:
        for i, ids in enumerate(sequences):
            row = {"record": i + 1, "tokens": len(ids), "tokens_match": tokens_match[i]}
            fh.write(json.dumps(row | {name: results[name][i].summary() for name in checks}) + "\n")
    if template:
        (tmp / CHAT_TEMPLATE_FILE).write_text(template)

    metrics = {"parity_prompts": len(sequences), "parity_positions": sum(len(ids) for ids in sequences),
               "prompt_tokens_match": round(sum(tokens_match) / len(tokens_match), 4),
               "template_match": not template_fail, "parity_s": round(parity_s, 2)}
    for name in checks:
        s = summarize(results[name])
        prefix = "parity" if name == "f16" else f"{name}_parity"
        metrics.update({f"{prefix}_rate": round(s["rate"], 4),
                        f"{prefix}_rate_ex_near_ties": round(s["rate_ex_near_ties"], 4),
                        f"{prefix}_near_ties": s["near_ties"], f"{prefix}_real_disagreements": s["real"],
                        f"{prefix}_kl_mean": float(f"{s['kl_mean']:.3g}"),
                        f"{prefix}_kl_max": float(f"{s['kl_max']:.3g}")})
    if sample:
        metrics.update(sample.pop("metrics"))
    failures = [parity_failure(WHAT[name], results[name], sequences, range(1, len(sequences) + 1), tok.decode,
                               min_rate=cfg.parity_min_rate, max_kl=cfg.parity_max_kl,
                               margin=cfg.parity_near_tie_margin, hint=HINT[name])
                for name in GATED if name in results]
    _check(cfg, [f for f in failures if f], template_fail, template)
    return {"counts": {"parity_prompts": len(sequences), "parity_positions": metrics["parity_positions"],
                       "template_mismatches": len(template_fail)},
            "metrics": metrics, "tokens": tokens, "has_template": template is not None, "sample": sample}


def _greedy_sample(cfg: ExportConfig, tok, model, llm: GgufModel, messages: list[dict]) -> dict | None:
    """Free-running greedy output of transformers and llama.cpp on one val prompt, with decode speeds; not gated."""
    import torch
    from transformers import GenerationConfig

    text = tok.apply_chat_template(_prompt_messages(messages), tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) + cfg.parity_tokens > llm.n_ctx:
        return None
    gen_eos = model.generation_config.eos_token_id
    stop_ids = sorted({tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None})
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=cfg.parity_tokens, eos_token_id=stop_ids,
                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0])
    started = time.perf_counter()
    with torch.no_grad():
        prompt = torch.tensor([ids])
        hf = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=gen_cfg)
    hf = hf[0, len(ids):].tolist()
    hf_s = time.perf_counter() - started
    started = time.perf_counter()
    got = llm.greedy(ids, cfg.parity_tokens, stop_ids)
    llama_s = time.perf_counter() - started
    return {"record": 1, "prompt": text, "transformers": tok.decode(hf), "llama_cpp": llm.detokenize(got),
            "metrics": {"sample_same_prefix_tokens": agreement(hf, got)[0], "sample_tokens": max(len(hf), len(got)),
                        "hf_tokens_per_s": round(len(hf) / hf_s, 1),
                        "llama_f16_tokens_per_s": round(len(got) / llama_s, 1)}}


def _template_mismatches(tok, template: str | None, tokens: dict, records: list[list[dict]]) -> list[dict]:
    """Prompts (with generation prompt) and whole conversations the GGUF template renders differently."""
    bad = []
    for i, messages in enumerate(records):
        for msgs, gen in ((_prompt_messages(messages), True), (messages, False)):
            want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            got = render_chat_template(template, msgs, bos_token=tokens["bos"], eos_token=tokens["eos"],
                                       add_generation_prompt=gen) if template else None
            if got != want:
                bad.append({"record": i + 1, "add_generation_prompt": gen, "hf": want, "gguf": got})
    return bad


def _check(cfg: ExportConfig, parity_failures: list[str], template_fail: list[dict], template: str | None) -> None:
    """Fail the stage on a parity failure (already in words) or a chat-template mismatch, showing the first difference."""
    if parity_failures:
        raise LlamaCppError("\n\n".join(parity_failures))
    if template_fail and cfg.require_template_match:
        bad = template_fail[0]
        why = "the GGUF has no tokenizer.chat_template" if template is None else "it renders differently"
        raise LlamaCppError(
            f"the GGUF's chat template does not match the tokenizer's ({why}); val record {bad['record']} "
            f"(add_generation_prompt={bad['add_generation_prompt']}):\n  tokenizer: {bad['hf']!r}\n  gguf:      {bad['gguf']!r}\n"
            "Check merged/chat_template.jinja (the SFT stage must restore the original template), "
            "or set require_template_match: false")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m tasks.training.export_gguf", __doc__, ExportConfig)
    parser.add_argument("sft_dir", type=Path, help="SFT stage output (merged/, adapter/, manifest.json)")
    parser.add_argument("val_jsonl", type=Path, help="val split: canonical chat records (JSONL)")
    parser.add_argument("--out", type=Path, required=True, help="output dir of this stage")
    args = parser.parse_args(argv)
    cfg = config_from_args(ExportConfig, args, parser)
    out = run(cfg, [args.sft_dir, args.val_jsonl], args.out)
    manifest = read_manifest(out)
    print(json.dumps({"out": str(out), "counts": manifest["counts"], "metrics": manifest["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    run_stage_cli(main)
