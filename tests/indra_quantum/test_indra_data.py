"""indra_data: corpora → packed token blocks; the offline default, local WikiText/Alpaca files, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.indra_quantum.indra_corpora import (
    AlpacaSource,
    WikiTextSource,
    alpaca_docs,
    teacher_prompts,
    wikitext_docs,
)
from tasks.indra_quantum.indra_data import IndraDataConfig, IndraDataError, build, pack
from tasks.common.records import RecordError
from tests.conftest import write_chat_records


def test_packing_makes_every_token_after_the_first_a_target_exactly_once():
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, 50, rng.integers(1, 30))) for _ in range(20)]
    blocks, lengths = pack(docs, block_len=8, eos=0)
    stream = [t for d in docs for t in (*d, 0)]
    targets = [t for b, n in zip(blocks, lengths) for t in b[1:n]]
    assert targets == stream[1:]
    assert blocks.shape[1] == 9 and (lengths[:-1] == 9).all() and 2 <= lengths[-1] <= 9
    assert (blocks[-1, lengths[-1]:] == 0).all()  # the last block is padded


def tokenizer(model_cache):
    from transformers import AutoTokenizer

    from adapters.models.base_models import EMBEDDED, resolve_base_model

    return AutoTokenizer.from_pretrained(resolve_base_model(EMBEDDED, model_cache))


def decoded(out, split, tok) -> str:
    blocks, lengths = np.load(out / f"{split}_blocks.npy"), np.load(out / f"{split}_lengths.npy")
    return tok.decode([t for b, n in zip(blocks, lengths) for t in b[1:n]])


def test_offline_default_mixes_lab_records_teacher_text_and_docs_and_says_what_it_dropped(data_dir, model_cache):
    write_chat_records(data_dir / "ben_lab" / "mix" / "train.jsonl", 30)
    cfg = IndraDataConfig.model_validate({
        "block_len": 32, "val_fraction": 0.2, "model_cache_dir": str(model_cache),
        "sources": {"wikitext": {"kind": "wikitext"}, "lab_chats": {"kind": "chat_records"},
                    "teacher_text": {"kind": "teacher_text", "prompts": 2, "max_new_tokens": 24},
                    "repo_docs": {"kind": "repo_docs", "max_tokens": 600}}})
    out = build(cfg, None, data_dir / "indra_quantum" / "data")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["source"] for r in manifest["sources"]] == ["lab_chats", "teacher_text", "repo_docs"]
    assert "hub download off" in manifest["dropped"]["wikitext"]
    shares = {r["source"]: r for r in manifest["sources"]}
    assert shares["teacher_text"]["docs"] == 2 and shares["repo_docs"]["tokens"] <= 600
    assert sum(r["share"] for r in manifest["sources"]) == pytest.approx(1, abs=1e-3)
    tok = tokenizer(model_cache)
    text = decoded(out, "train", tok) + decoded(out, "val", tok)
    assert "### Instruction:" in text and "### Response:" in text and "magnetization" in text
    assert "You are a lab assistant" not in text  # system prompts repeat in every record: left out
    assert manifest["counts"]["train_blocks"] > 0 and manifest["counts"]["val_blocks"] > 0
    assert manifest["tokenizer"]["vocab_size"] == len(tok) and np.load(out / "train_blocks.npy").max() < len(tok)
    cached_answers = list((data_dir / "cache" / "indra" / "teacher_text").glob("*.jsonl"))
    assert len(cached_answers) == 1 and len(cached_answers[0].read_text().splitlines()) == 2

    before = (out / "manifest.json").read_text()
    assert build(cfg, None, out) == out and (out / "manifest.json").read_text() == before  # cache hit
    write_chat_records(data_dir / "quantum_mind" / "mix" / "val.jsonl", 5, start=100)  # another flow wrote records
    build(cfg, None, out)
    assert json.loads((out / "manifest.json").read_text())["key"] != json.loads(before)["key"]


def write_wikitext(path):
    long = "The river valley was settled early, and its farms fed the towns downstream for centuries. " * 3
    path.write_text(f" = Valley = \n\n {long}\n\n = = History = = \n\n short line \n\n {long.replace('river', 'mountain')}\n")
    return path


def write_alpaca(path, rows=None):
    rows = rows or [{"instruction": "Name a prime number.", "input": "", "output": "Seven."},
                    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
                    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    path.write_text(json.dumps(rows))
    return path


def test_local_wikitext_keeps_paragraphs_and_drops_headings(tmp_path):
    docs = wikitext_docs(WikiTextSource(kind="wikitext", path=tmp_path / "wiki.train.raw"), [write_wikitext(tmp_path / "wiki.train.raw")])
    assert len(docs) == 2 and all(not d.startswith("=") and "short line" not in d for d in docs)


def test_alpaca_records_use_the_instruction_input_response_layout(tmp_path):
    path = write_alpaca(tmp_path / "alpaca_data.json")
    docs = alpaca_docs(AlpacaSource(kind="alpaca", path=path), [path])
    assert docs[0] == "### Instruction:\nName a prime number.\n\n### Response:\nSeven."
    assert docs[1] == "### Instruction:\nTranslate to French.\n\n### Input:\ncat\n\n### Response:\nchat"


def test_local_files_build_a_mix_with_a_document_cap(data_dir, tmp_path, model_cache):
    wiki, alpaca = write_wikitext(tmp_path / "wiki.train.raw"), write_alpaca(tmp_path / "alpaca.json")
    cfg = IndraDataConfig.model_validate({
        "block_len": 16, "val_fraction": 0.5, "min_train_blocks": 1, "model_cache_dir": str(model_cache),
        "sources": {"wikitext": {"kind": "wikitext", "path": str(wiki)}, "alpaca": {"kind": "alpaca", "path": str(alpaca), "max_docs": 2}}})
    out = build(cfg, None, data_dir / "indra_quantum" / "data")
    rows = {r["source"]: r for r in json.loads((out / "manifest.json").read_text())["sources"]}
    assert rows["wikitext"]["docs"] == 2 and rows["alpaca"]["docs"] == 2  # max_docs caps Alpaca's three
    assert rows["wikitext"]["val_docs"] == 1  # the split is by text hash: fixed for these two paragraphs
    assert rows["wikitext"]["origin"] == str(wiki)


def test_bad_inputs_are_named(data_dir, tmp_path, model_cache):
    bad = write_alpaca(tmp_path / "alpaca.json", [{"instruction": "ok", "output": "fine"}, {"instruction": "no answer"}])
    with pytest.raises(RecordError, match=r"alpaca.json: record 2: field 'output'"):
        alpaca_docs(AlpacaSource(kind="alpaca", path=bad), [bad])
    missing = IndraDataConfig.model_validate({"sources": {"wikitext": {"kind": "wikitext", "path": str(tmp_path / "nope.raw")}}})
    with pytest.raises(FileNotFoundError, match="nope.raw does not exist"):
        build(missing, None, data_dir / "indra_quantum" / "data")
    nothing = IndraDataConfig.model_validate({"sources": {"wikitext": {"kind": "wikitext"}, "alpaca": {"kind": "alpaca"}}})
    with pytest.raises(IndraDataError, match="no source is available"):
        build(nothing, None, data_dir / "indra_quantum" / "data")
    with pytest.raises(ValueError, match="kind"):
        IndraDataConfig.model_validate({"sources": {"x": {"kind": "tweets"}}})


def test_too_few_documents_for_a_validation_split_is_an_error(data_dir, model_cache):
    write_chat_records(data_dir / "ben_lab" / "mix" / "train.jsonl", 3)
    cfg = IndraDataConfig.model_validate({"val_fraction": 0.001, "model_cache_dir": str(model_cache),
                                          "sources": {"lab_chats": {"kind": "chat_records"}}})
    with pytest.raises(IndraDataError, match="raise val_fraction"):
        build(cfg, None, data_dir / "indra_quantum" / "data")
    assert not (data_dir / "indra_quantum" / "data").exists()  # nothing partial left behind


def test_teacher_prompts_cover_every_topic_before_repeating_one():
    prompts = teacher_prompts(160)
    assert len(set(prompts)) == 160
    assert teacher_prompts(2) == prompts[:2]
    with pytest.raises(ValueError, match="between 1 and 160"):
        teacher_prompts(161)
