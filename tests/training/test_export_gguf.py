"""Stage ``export``: real llama.cpp conversions of a LoRA-tuned embedded SmolLM2, checked in llama.cpp."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.models.llama_cpp import GgufModel, LlamaCppError, convert_hf, resolve_llama_cpp_dir
from tasks.training.export_gguf import ExportConfig, _check, _sft_parts, _verify, run
from tasks.training.gguf_parity import conversation_ids, hf_logits, parity_failure, summarize, teacher_forced_agreement
from tasks.common.records import read_chat_records, write_jsonl
from tasks.common.stage import read_manifest

ROOT = Path(__file__).resolve().parents[2]

BROKEN_TENSOR = "blk.3.attn_output.weight"  # zeroed in a copy of model-f16.gguf: a conversion that lost a tensor
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

    from adapters.models.base_models import EMBEDDED, resolve_base_model

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
    """The plain export differs from transformers only by f16 rounding: every gated position agrees, KL is tiny."""
    manifest = read_manifest(exported)
    assert manifest["gguf"] == {"f16": "model-f16.gguf", "q8_0": "model-q8_0.gguf",
                                "adapter": "adapter-f16.gguf", "base": "base-f16.gguf"}
    for name in manifest["gguf"].values():
        assert (exported / name).read_bytes()[:4] == b"GGUF"
    metrics, cfg = manifest["metrics"], ExportConfig()
    assert metrics["parity_prompts"] == 3 and metrics["parity_positions"] > 60
    for prefix in ("parity", "adapter_parity"):
        assert metrics[f"{prefix}_rate"] >= 0.95 and metrics[f"{prefix}_real_disagreements"] == 0
        assert metrics[f"{prefix}_kl_mean"] < cfg.parity_max_kl / 10
    assert "q8_0_parity_rate" in metrics and "q8_0_parity_kl_mean" in metrics  # reported, not gated
    assert metrics["template_match"] is True and metrics["prompt_tokens_match"] == 1.0
    assert metrics["size_q8_0_mb"] < 0.6 * metrics["size_f16_mb"]
    assert (exported / "chat_template.jinja").read_text().startswith("{% for message in messages %}")
    assert manifest["tokens"] == {"bos": "<|im_start|>", "eos": "<|im_end|>"}
    rows = [json.loads(line) for line in (exported / "parity.jsonl").read_text().splitlines()]
    assert [r["record"] for r in rows] == [1, 2, 3]
    assert all(r["f16"]["positions"] == r["tokens"] and r["f16"]["real"] == 0 for r in rows)
    sample = manifest["sample"]
    assert sample["transformers"] and sample["llama_cpp"] and 0 < metrics["sample_tokens"] <= 16


@pytest.mark.slow
def test_adapter_gguf_changes_the_base_output(exported, sft_dir, val_jsonl):
    """The LoRA GGUF really applies: base alone reads the val conversations differently from base + adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_dir / "merged")
    model = AutoModelForCausalLM.from_pretrained(sft_dir / "merged", dtype=torch.float32).eval()
    ids = conversation_ids(tok, read_chat_records(val_jsonl)[0].model_dump()["messages"])[1]
    with GgufModel(exported / "base-f16.gguf", n_ctx=len(ids), logits_all=True) as base:
        plain = teacher_forced_agreement(hf_logits(model, ids), base.next_token_logits(ids), margin=0.05)
    adapter = json.loads((exported / "parity.jsonl").read_text().splitlines()[0])["adapter"]
    assert adapter["real"] == 0 and plain.summary()["kl_mean"] > 100 * adapter["kl_mean"]


@pytest.mark.slow
def test_second_run_is_a_cache_hit(exported, sft_dir, val_jsonl):
    before = read_manifest(exported)
    run(ExportConfig(parity_prompts=3, parity_tokens=16), [sft_dir, val_jsonl], exported)
    assert read_manifest(exported)["finished_at"] == before["finished_at"]


def _break_tensor(gguf: Path, name: str) -> None:
    """Zero one weight tensor of a GGUF in place, as a converter that lost it would."""
    from gguf import GGUFReader

    tensor = next(t for t in GGUFReader(gguf, "r+").tensors if t.name == name)
    tensor.data[...] = 0
    tensor.data.flush()


@pytest.mark.slow
def test_broken_tensor_fails_naming_the_file_and_the_worst_position(exported, sft_dir, val_jsonl, tmp_path):
    (tmp_path / "model-f16.gguf").write_bytes((exported / "model-f16.gguf").read_bytes())
    _break_tensor(tmp_path / "model-f16.gguf", BROKEN_TENSOR)
    records = [r.model_dump()["messages"] for r in read_chat_records(val_jsonl)]
    cfg = ExportConfig(outtypes=["f16"], export_adapter=False, parity_tokens=4)
    with pytest.raises(LlamaCppError) as err:
        _verify(cfg, sft_dir / "merged", tmp_path, {"f16": "model-f16.gguf"}, records)
    msg = str(err.value)
    assert msg.startswith("llama.cpp parity of merged model-f16.gguf failed")
    assert re.search(r"differs from transformers' at \d+ positions .* where transformers is not near a tie", msg)
    assert re.search(r"Worst position: val record [123], token \d+ of \d+, after …'.*': transformers picks '.*' "
                     r"\(log-prob -?\d+\.\d+; llama.cpp gives it -?\d+\.\d+\), llama.cpp picks", msg)
    assert "conversion is likely broken" in msg and "llama_cpp_dir" in msg


def _logits(*rows: list[float]) -> "np.ndarray":
    import numpy as np

    return np.array(rows, dtype=np.float32)


def test_near_ties_are_told_apart_from_real_disagreements():
    hf = _logits([5, 1, 0, 0],        # both pick 0
                 [2.00, 1.98, 0, 0],  # transformers' top two 0.02 nats apart: llama.cpp's flip is a near-tie
                 [3, 0, 0, 0],        # transformers is sure of 0, llama.cpp picks 1: real
                 [0, 2.00, 1.99, 0])  # near-tie the other way round
    llama = _logits([5, 1, 0, 0], [1.98, 2.00, 0, 0], [0, 3, 0, 0], [0, 1.99, 2.00, 0])
    a = teacher_forced_agreement(hf, llama, margin=0.05)
    assert a.near_tie.tolist() == [False, True, False, True] and a.real.tolist() == [False, False, True, False]
    assert a.kl[0] == pytest.approx(0, abs=1e-9) and a.kl[2] > 1 and 0 < a.kl[1] < 1e-3
    assert a.summary() | {"kl_mean": 0, "kl_max": 0} == {
        "positions": 4, "agree": 1, "near_ties": 2, "real": 1, "kl_mean": 0, "kl_max": 0,
        "near_tie_positions": [1, 3], "real_positions": [2]}
    assert teacher_forced_agreement(hf, llama, margin=0.01).real.tolist() == [False, True, True, False]
    s = summarize([a, a])
    assert s["positions"] == 8 and s["rate"] == 0.25 and s["rate_ex_near_ties"] == 0.75


def test_parity_below_threshold_fails_showing_the_divergence():
    hf = _logits(*([[4, 0, 0]] * 18 + [[2.00, 1.99, 0], [4, 0, 0]]))
    llama = _logits(*([[4, 0, 0]] * 18 + [[1.99, 2.00, 0], [0, 4, 0]]))  # one near-tie, one real flip
    ids = list(range(20))
    a = teacher_forced_agreement(hf, llama, margin=0.05)
    decode = lambda toks: "".join(f"<{t}>" for t in toks)  # noqa: E731
    kw = dict(min_rate=0.95, max_kl=1.0, margin=0.05, hint="Check the converter.")
    msg = parity_failure("merged model-f16.gguf", [a], [ids], [7], decode, **{**kw, "min_rate": 0.99})
    assert msg is not None and msg.startswith("llama.cpp parity of merged model-f16.gguf failed")
    assert "at 1 positions (5.0%) where transformers is not near a tie" in msg and "1 more differ at near-ties" in msg
    assert "Worst position: val record 7, token 19 of 20, after …'" in msg
    assert ("<17><18><19>': transformers picks '<0>' "
            "(log-prob -0.04; llama.cpp gives it -4.04), llama.cpp picks '<1>' (log-prob -0.04; transformers gives "
            "it -4.04)") in msg
    assert msg.endswith("Check the converter.")
    assert parity_failure("merged model-f16.gguf", [a], [ids], [7], decode, **kw) is None  # 95% ex near-ties passes
    assert "limit parity_max_kl 0.01" in parity_failure("x", [a], [ids], [7], decode, **{**kw, "max_kl": 0.01})
    with pytest.raises(LlamaCppError, match="Check the converter"):
        _check(ExportConfig(), [msg], [], "tpl")


def test_template_mismatch_fails_unless_allowed():
    bad = [{"record": 3, "add_generation_prompt": True, "hf": "<|im_start|>user\nx", "gguf": "user: x"}]
    with pytest.raises(LlamaCppError, match="(?s)val record 3.*require_template_match"):
        _check(ExportConfig(), [], bad, "tpl")
    with pytest.raises(LlamaCppError, match="no tokenizer.chat_template"):
        _check(ExportConfig(), [], bad, None)
    _check(ExportConfig(require_template_match=False), [], bad, "tpl")


def test_config_is_validated():
    with pytest.raises(ValidationError, match="must include 'f16'"):
        ExportConfig(outtypes=["q8_0"])
    with pytest.raises(ValidationError, match="q4_k"):
        ExportConfig(outtypes=["f16", "q4_k"])
    with pytest.raises(ValidationError, match="extra"):
        ExportConfig(parity_prompt=3)
    with pytest.raises(ValidationError, match="parity_near_tie_margin"):
        ExportConfig(parity_near_tie_margin=-0.1)


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
    with pytest.raises(LlamaCppError, match=r"\$LLAMA_CPP_DIR.*adapters.models.llama_cpp_source .venv/share/llama.cpp"):
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
    from adapters.models import llama_cpp_source as fetch

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
    proc = subprocess.run([sys.executable, "-m", "tasks.training.export_gguf", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "parity_min_rate (default 0.95)" in proc.stdout
    assert "parity_near_tie_margin" in proc.stdout and "teacher" in proc.stdout
