"""Stage ``export``: real llama.cpp conversions of a LoRA-tuned embedded SmolLM2, checked in llama.cpp."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.llama_cpp import GgufModel, LlamaCppError, convert_hf, resolve_llama_cpp_dir
from tasks.export_gguf import ExportConfig, _check, _sft_parts, agreement, run
from tasks.records import write_jsonl
from tasks.stage import read_manifest

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = ["What is the magnetization of an Ising chain at low temperature?",
             "Explain the TRI metric in one sentence.", "What does an SPT cluster phase look like?"]


def _llama_cpp_dir() -> Path:
    try:
        return resolve_llama_cpp_dir()
    except LlamaCppError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory) -> Path:
    """An SFT stage output: embedded SmolLM2 + a random (non-zero) r=4 LoRA on q_proj/v_proj, saved and merged."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.base_models import EMBEDDED, resolve_base_model

    root = tmp_path_factory.mktemp("sft")
    base = resolve_base_model(EMBEDDED, tmp_path_factory.getbasetemp() / "base-models")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(root / "adapter")
    peft_model.merge_and_unload().save_pretrained(root / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "merged")
    (root / "manifest.json").write_text(json.dumps({"stage": "sft", "base_model": base}))
    return root


@pytest.fixture(scope="session")
def val_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mix") / "val.jsonl"
    rows = []
    for i, q in enumerate(QUESTIONS):
        system = [{"role": "system", "content": "You are Ben's lab assistant."}] if i % 2 == 0 else []
        rows.append({"messages": system + [{"role": "user", "content": q}, {"role": "assistant", "content": "An answer."}],
                     "source": "test", "kind": "phase", "meta": {}})
    write_jsonl(path, rows)
    return path


@pytest.fixture(scope="session")
def exported(sft_dir, val_jsonl, tmp_path_factory) -> Path:
    _llama_cpp_dir()
    cfg = ExportConfig(parity_prompts=3, parity_tokens=16)
    return run(cfg, [sft_dir, val_jsonl], tmp_path_factory.mktemp("data") / "export")


@pytest.mark.slow
def test_export_writes_all_ggufs_with_parity_and_template_match(exported):
    manifest = read_manifest(exported)
    assert manifest["gguf"] == {"f16": "model-f16.gguf", "q8_0": "model-q8_0.gguf",
                                "adapter": "adapter-f16.gguf", "base": "base-f16.gguf"}
    for name in manifest["gguf"].values():
        assert (exported / name).read_bytes()[:4] == b"GGUF"
    metrics = manifest["metrics"]
    assert metrics["parity_prompts"] == 3 and metrics["parity_rate"] >= 0.95
    assert metrics["adapter_parity_rate"] >= 0.95
    assert metrics["template_match"] is True and metrics["prompt_tokens_match"] == 1.0
    assert metrics["size_q8_0_mb"] < 0.6 * metrics["size_f16_mb"]
    assert (exported / "chat_template.jinja").read_text().startswith("{% for message in messages %}")
    assert manifest["tokens"] == {"bos": "<|im_start|>", "eos": "<|im_end|>"}
    rows = [json.loads(line) for line in (exported / "parity.jsonl").read_text().splitlines()]
    assert all(r["hf"] == r["f16"] and 0 < len(r["hf"]) <= 16 for r in rows)


@pytest.mark.slow
def test_adapter_gguf_changes_the_base_output(exported):
    """The LoRA GGUF really applies: base alone answers differently from base + adapter (= merged)."""
    rows = [json.loads(line) for line in (exported / "parity.jsonl").read_text().splitlines()]
    with GgufModel(exported / "base-f16.gguf", n_ctx=512) as base:
        plain = [base.greedy(r["llama_prompt_ids"], 16, stop_ids=[2]) for r in rows]
    assert any(p != r["adapter"] for p, r in zip(plain, rows))
    assert all(r["adapter"] == r["hf"] for r in rows)


@pytest.mark.slow
def test_second_run_is_a_cache_hit(exported, sft_dir, val_jsonl):
    before = read_manifest(exported)
    run(ExportConfig(parity_prompts=3, parity_tokens=16), [sft_dir, val_jsonl], exported)
    assert read_manifest(exported)["finished_at"] == before["finished_at"]


def test_parity_below_threshold_fails_showing_the_divergence():
    rows = [{"record": 1, "hf": [5, 6, 2], "f16": [5, 6, 2], "f16_agree": 3, "f16_text": "ok"},
            {"record": 2, "hf": [7, 8, 9, 2], "f16": [7, 4, 4, 4], "f16_agree": 1, "f16_text": "bad"}]
    assert agreement(rows[1]["hf"], rows[1]["f16"]) == (1, 4)
    rate = (3 + 1) / (3 + 4)
    with pytest.raises(LlamaCppError, match=r"parity of merged model-f16.gguf is 0.571.*val record 2 at generated token 1"):
        _check(ExportConfig(), {"f16": rate}, rows, [], "tpl")
    _check(ExportConfig(parity_min_rate=0.5), {"f16": rate}, rows, [], "tpl")


def test_template_mismatch_fails_unless_allowed():
    bad = [{"record": 3, "add_generation_prompt": True, "hf": "<|im_start|>user\nx", "gguf": "user: x"}]
    with pytest.raises(LlamaCppError, match="(?s)val record 3.*require_template_match"):
        _check(ExportConfig(), {"f16": 1.0}, [], bad, "tpl")
    with pytest.raises(LlamaCppError, match="no tokenizer.chat_template"):
        _check(ExportConfig(), {"f16": 1.0}, [], bad, None)
    _check(ExportConfig(require_template_match=False), {"f16": 1.0}, [], bad, "tpl")


def test_config_is_validated():
    with pytest.raises(ValidationError, match="must include 'f16'"):
        ExportConfig(outtypes=["q8_0"])
    with pytest.raises(ValidationError, match="q4_k"):
        ExportConfig(outtypes=["f16", "q4_k"])
    with pytest.raises(ValidationError, match="extra"):
        ExportConfig(parity_prompt=3)


def test_sft_dir_without_base_model_is_named(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "sft"}))
    with pytest.raises(ValueError, match=r"manifest.json: field 'base_model' is missing"):
        _sft_parts(tmp_path, need_adapter=True)
    assert _sft_parts(tmp_path, need_adapter=False)[1:] == (None, None)


def test_missing_llama_cpp_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(LlamaCppError, match=r"\$LLAMA_CPP_DIR.*adapters.llama_cpp_source .venv/share/llama.cpp"):
        resolve_llama_cpp_dir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "convert_hf_to_gguf.py").write_text("")
    assert resolve_llama_cpp_dir(tmp_path / "mine") == (tmp_path / "mine").resolve()  # explicit path wins


def test_converter_failure_shows_stderr_and_leaves_nothing(tmp_path):
    fake = tmp_path / "llama.cpp"
    fake.mkdir()
    (fake / "convert_hf_to_gguf.py").write_text(
        "import sys\nprint('loading', file=sys.stderr)\nprint('NotImplementedError: Architecture Foo', file=sys.stderr)\n"
        "open(sys.argv[sys.argv.index('--outfile') + 1], 'w').write('partial')\nsys.exit(1)\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(LlamaCppError, match="(?s)exit 1.*Architecture Foo"):
        convert_hf(model, tmp_path / "out" / "model-f16.gguf", "f16", llama_cpp_dir=fake)
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_script_extracts_only_the_converters(tmp_path):
    from adapters import llama_cpp_source as fetch

    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    members = ["vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/convert_lora_to_gguf.py",
               "vendor/llama.cpp/conversion/llama.py", "vendor/llama.cpp/gguf-py/gguf/__init__.py",
               "vendor/llama.cpp/models/templates/x.jinja", "vendor/llama.cpp/src/llama.cpp",
               "vendor/llama.cpp/models/ggml-vocab-llama.gguf", "vendor/llama.cpp/gguf-py/tests/test_x.py",
               "llama_cpp/llama.py"]
    with tarfile.open(sdist, "w:gz") as tar:
        for name in members:
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/{name}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    assert fetch.main([str(tmp_path / "dest"), "--sdist", str(sdist)]) == 0
    got = sorted(str(p.relative_to(tmp_path / "dest")) for p in (tmp_path / "dest").rglob("*") if p.is_file())
    assert got == ["SOURCE", "conversion/llama.py", "convert_hf_to_gguf.py", "convert_lora_to_gguf.py",
                   "gguf-py/gguf/__init__.py", "models/templates/x.jinja"]


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "tasks.export_gguf", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "parity_min_rate (default 0.95)" in proc.stdout
