"""Stage ``export``: an SFT output → GGUF files, verified in llama.cpp against transformers.

    python -m tasks.export_gguf SFT_DIR VAL_JSONL --out OUT_DIR [--set parity_prompts=4] [--set outtypes='[f16]']

Writes ``model-<outtype>.gguf`` for each outtype (llama.cpp's own ``convert_hf_to_gguf.py``), and with
``export_adapter`` the LoRA as ``adapter-f16.gguf`` plus the base it applies to as ``base-f16.gguf``
(so Ollama can run FROM base + ADAPTER). Then, on the first N val prompts: greedy output of the
merged f16 GGUF (and of base + adapter GGUF) in llama.cpp must match transformers (float32) token
for token (q8_0 agreement is only reported), and the chat template embedded in the GGUF must render
the same prompt text as the tokenizer's ``apply_chat_template``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.llama_cpp import GgufModel, LlamaCppError, convert_hf, convert_lora, render_chat_template, resolve_llama_cpp_dir
from tasks.records import read_chat_records
from tasks.reporting import StageProgress, counts_table, publish_table
from tasks.stage_cli import config_from_args, stage_parser
from tasks.stage import MANIFEST, cached, module_source, prefect_cache_key, read_manifest, stage_key, stage_output

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
    parity_prompts: int = Field(8, ge=1, description="how many val prompts (from the top of the file) the parity check uses")
    parity_tokens: int = Field(32, ge=1, description="greedy tokens generated per prompt and compared by id")
    parity_min_rate: float = Field(0.95, ge=0, le=1, description="minimum share of generated tokens that agree with "
                                   "transformers (matching prefix / compared length, summed over prompts) for model-f16 "
                                   "and for base-f16 + adapter-f16; below it the stage fails (q8_0 is only reported)")
    require_template_match: bool = Field(True, description="fail when the GGUF's chat template renders a prompt "
                                         "differently from the tokenizer's apply_chat_template")
    n_ctx: int = Field(2048, ge=64, description="llama.cpp context length for the checks; longer prompts are skipped")
    n_threads: int = Field(1, ge=1, description="llama.cpp threads for the checks; 1 because on a shared 2-core "
                           "machine 2 threads spin-wait on each other (32 tokens: 75 s vs 0.5 s while another job ran)")
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
    key = stage_key(STAGE, cfg, [sft_dir, val_path], module_source(run))
    if cached(out_dir, key):
        return out_dir
    llama_dir = resolve_llama_cpp_dir(cfg.llama_cpp_dir)
    merged, adapter, base = _sft_parts(sft_dir, cfg.export_adapter)
    prompts = [r.model_dump()["messages"] for r in read_chat_records(val_path)[: cfg.parity_prompts]]
    if not prompts:
        raise ValueError(f"{val_path}: no records; the parity check needs at least one val prompt")

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

        report = _verify(cfg, merged, out.tmp, gguf, prompts)
        out.counts.update(report.pop("counts"))
        out.metrics.update(report.pop("metrics"))
        out.extra.update(gguf=gguf, chat_template=CHAT_TEMPLATE_FILE if report["has_template"] else None,
                         tokens=report["tokens"],
                         sft_dir=str(Path(sft_dir).resolve()), base_model=str(base) if base else None)

    publish_table(f"{STAGE}-summary", counts_table(out.counts, out.metrics), "GGUF export and llama.cpp parity")
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


def _prompt_messages(messages: list[dict]) -> list[dict]:
    """The prompt part of a record: everything before its last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


def _verify(cfg: ExportConfig, merged: Path, tmp: Path, gguf: dict[str, str], records: list[list[dict]]) -> dict:
    """Parity of llama.cpp vs transformers greedy output, and the chat-template round trip."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    gen_eos = model.generation_config.eos_token_id
    stop_ids = sorted({tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None})
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=cfg.parity_tokens, eos_token_id=stop_ids,
                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0])
    checks = [("f16", gguf["f16"], None)] + ([("adapter", gguf["base"], gguf["adapter"])] if "adapter" in gguf else [])
    checks += [("q8_0", gguf["q8_0"], None)] if "q8_0" in gguf else []
    rows, skipped = [], 0
    with GgufModel(tmp / gguf["f16"], n_ctx=cfg.n_ctx, n_threads=cfg.n_threads) as ref:
        template, tokens = ref.chat_template, {"bos": ref.bos_token, "eos": ref.eos_token}
        template_fail = _template_mismatches(tok, template, tokens, records)
        for i, messages in enumerate(records):
            text = tok.apply_chat_template(_prompt_messages(messages), tokenize=False, add_generation_prompt=True)
            row = {"record": i + 1, "prompt": text, "hf_prompt_ids": tok(text, add_special_tokens=False)["input_ids"],
                   "llama_prompt_ids": ref.tokenize(text)}
            if max(len(row["hf_prompt_ids"]), len(row["llama_prompt_ids"])) + cfg.parity_tokens > cfg.n_ctx:
                skipped += 1
            else:
                rows.append(row)
    if not rows:
        raise ValueError(f"every parity prompt is longer than n_ctx={cfg.n_ctx} minus parity_tokens; raise n_ctx")

    timings = {}
    with StageProgress("llama.cpp parity", total=len(rows) * (1 + len(checks))) as progress:
        started = time.perf_counter()
        for row in rows:
            with torch.no_grad():
                ids = torch.tensor([row["hf_prompt_ids"]])
                out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_cfg)
            row["hf"] = out[0, ids.shape[1]:].tolist()
            progress.advance()
        timings["hf"] = time.perf_counter() - started
        for name, model_file, lora_file in checks:
            started = time.perf_counter()
            with GgufModel(tmp / model_file, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                           lora_path=tmp / lora_file if lora_file else None) as llm:
                for row in rows:
                    row[name] = llm.greedy(row["llama_prompt_ids"], cfg.parity_tokens, stop_ids)
                    row[f"{name}_text"] = llm.detokenize(row[name])
                    progress.advance()
            timings[name] = time.perf_counter() - started
    rates = {}
    for name, _, _ in checks:
        agree = [agreement(row["hf"], row[name]) for row in rows]
        rates[name] = sum(a for a, _ in agree) / sum(n for _, n in agree)
        for row, (a, n) in zip(rows, agree):
            row[f"{name}_agree"] = a
    with open(tmp / PARITY_FILE, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    if template:
        (tmp / CHAT_TEMPLATE_FILE).write_text(template)

    hf_tokens = sum(len(r["hf"]) for r in rows)
    metrics = {
        "parity_rate": round(rates["f16"], 4),
        "parity_prompts": len(rows),
        "parity_exact_prompts": sum(r["f16_agree"] == len(r["hf"]) == len(r["f16"]) for r in rows),
        "prompt_tokens_match": round(sum(r["hf_prompt_ids"] == r["llama_prompt_ids"] for r in rows) / len(rows), 4),
        "template_match": not template_fail,
        "hf_generate_s": round(timings["hf"], 2),
        "hf_tokens_per_s": round(hf_tokens / timings["hf"], 1),
    }
    for name in rates:
        if name != "f16":
            metrics[f"{name}_parity_rate"] = round(rates[name], 4)
        metrics[f"llama_{name}_generate_s"] = round(timings[name], 2)
        metrics[f"llama_{name}_tokens_per_s"] = round(sum(len(r[name]) for r in rows) / timings[name], 1)
    _check(cfg, rates, rows, template_fail, template)
    return {"counts": {"parity_prompts": len(rows), "skipped_too_long": skipped, "template_mismatches": len(template_fail)},
            "metrics": metrics, "tokens": tokens, "has_template": template is not None}


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


def _check(cfg: ExportConfig, rates: dict, rows: list[dict], template_fail: list[dict], template: str | None) -> None:
    """Fail the stage on a parity or template mismatch, showing the first difference."""
    for name in ("f16", "adapter"):
        if name in rates and rates[name] < cfg.parity_min_rate:
            row = next(r for r in rows if r[f"{name}_agree"] < max(len(r["hf"]), len(r[name])))
            what = "merged model-f16.gguf" if name == "f16" else "base-f16.gguf + adapter-f16.gguf"
            raise LlamaCppError(
                f"llama.cpp parity of {what} is {rates[name]:.3f} < parity_min_rate {cfg.parity_min_rate} "
                f"over {len(rows)} val prompts. First divergence: val record {row['record']} at generated token "
                f"{row[f'{name}_agree']}\n  transformers: {row['hf']}\n  llama.cpp:    {row[name]}\n"
                f"  llama.cpp text: {row[f'{name}_text']!r}")
    if template_fail and cfg.require_template_match:
        bad = template_fail[0]
        why = "the GGUF has no tokenizer.chat_template" if template is None else "it renders differently"
        raise LlamaCppError(
            f"the GGUF's chat template does not match the tokenizer's ({why}); val record {bad['record']} "
            f"(add_generation_prompt={bad['add_generation_prompt']}):\n  tokenizer: {bad['hf']!r}\n  gguf:      {bad['gguf']!r}\n"
            "Check merged/chat_template.jinja (the SFT stage must restore the original template), "
            "or set require_template_match: false")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m tasks.export_gguf", __doc__, ExportConfig)
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
    sys.exit(main())
