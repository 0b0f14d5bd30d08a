"""evaluate_indra: the ablation a user reads (best run, samples, chart) and the unfair comparisons it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.indra_quantum.evaluate_indra import EvaluateIndraConfig, evaluate, main
from tasks.indra_quantum.indra_data import pack
from tasks.indra_quantum.indra_model import IndraLM
from tests.tiny_tokenizer import WORDS, write_word_tokenizer

BLOCK_LEN, VOCAB = 8, 3 + len(WORDS)
# The last prompt is longer than the models' 8-token window: it must be continued from its tail, not refused.
PROMPTS = ["the future of ai is", "quantum mechanics explains the tides of the sea and the moon"]


@pytest.fixture
def data(tmp_path) -> Path:
    """An indra_data-shaped dir whose tokenizer is the tiny word-level one."""
    tokenizer = write_word_tokenizer(tmp_path / "tokenizer")
    rng = np.random.default_rng(0)
    out = tmp_path / "indra" / "blocks"
    out.mkdir(parents=True)
    docs = [[int(t) for t in rng.integers(3, VOCAB, size=int(rng.integers(4, 12)))] for _ in range(12)]
    blocks, lengths = pack(docs, BLOCK_LEN, eos=2)
    np.save(out / "val_blocks.npy", blocks)
    np.save(out / "val_lengths.npy", lengths)
    (out / "manifest.json").write_text(json.dumps({"stage": "indra_data", "key": "test", "block_len": BLOCK_LEN,
                                                   "tokenizer": {"name": str(tokenizer), "vocab_size": VOCAB, "eos_id": 2}}))
    return out


def write_run(root: Path, seed: int, *, distill: bool = False, tokens: int = 4096, max_len: int = BLOCK_LEN,
              with_model: bool = True) -> Path:
    """A finished train_indra output: an untrained real-mode student (its seed sets its perplexity)."""
    torch.manual_seed(seed)
    shape = {"mode": "real", "d_model": 8, "n_layers": 1, "n_heads": 2, "max_len": max_len, "dropout": 0.0}
    root.mkdir(parents=True)
    if with_model:
        torch.save(IndraLM(VOCAB, **shape).state_dict(), root / "model.pt")
    (root / "model_config.json").write_text(json.dumps({"vocab_size": VOCAB, **shape}))
    (root / "manifest.json").write_text(json.dumps({"stage": "train_indra", "key": f"run-{seed}", "distill": distill,
                                                    "metrics": {"tokens_trained": tokens}}))
    return root


def config(tmp_path) -> EvaluateIndraConfig:
    return EvaluateIndraConfig(prompts=PROMPTS, max_new_tokens=3, latency_repeats=1, batch_size=4,
                               model_cache_dir=tmp_path / "cache")


def test_the_ablation_names_the_lowest_perplexity_run_and_writes_samples_and_chart(tmp_path, data):
    # 1,088 and 1,120 parameters (a longer position table): 2.9% apart, within the 5% allowed
    runs = {"real-ce": write_run(tmp_path / "real-ce", seed=1),
            "real-kd": write_run(tmp_path / "real-kd", seed=2, distill=True, max_len=12)}
    out = evaluate(config(tmp_path), {"data": data, **runs}, tmp_path / "evaluate")

    results = json.loads((out / "results.json").read_text())
    ppl = {r["run"]: r["val_perplexity"] for r in results["runs"]}
    assert ppl["real-ce"] != ppl["real-kd"]
    assert results["best"] == min(ppl, key=ppl.get)
    assert results["verdict"].startswith(f"Lowest held-out perplexity: {results['best']} ({ppl[results['best']]}).")
    assert f"KD moved real from {ppl['real-ce']} to {ppl['real-kd']}" in results["verdict"]
    assert results["fairness"] == {"parameter_spread": round(32 / 1088, 6), "tokens_trained": 4096}
    assert all(r["forward_ms"] > 0 and r["ms_per_token"] > 0 for r in results["runs"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(s["run"], s["prompt"]) for s in samples] == [(run, p) for run in runs for p in PROMPTS]
    assert (out / "ablation.png").read_bytes().startswith(b"\x89PNG")
    assert {"results.json", "samples.jsonl", "ablation.png"} <= set(json.loads((out / "manifest.json").read_text())["files"])


@pytest.mark.parametrize("second, refusal", [
    (dict(tokens=8192), r"different token budgets \[4096, 8192\]"),
    (dict(max_len=16), r"parameter counts differ by 5.9% .* more than max_param_spread 5%"),
], ids=["token-budget", "model-size"])
def test_an_unfair_comparison_is_refused_and_nothing_is_written(tmp_path, data, second, refusal):
    runs = {"a": write_run(tmp_path / "a", seed=1), "b": write_run(tmp_path / "b", seed=2, **second)}
    with pytest.raises(ValueError, match=refusal):
        evaluate(config(tmp_path), {"data": data, **runs}, tmp_path / "evaluate")
    assert not (tmp_path / "evaluate").exists()


def test_a_run_without_its_weights_is_refused_by_name(tmp_path, data):
    runs = {"a": write_run(tmp_path / "a", seed=1), "b": write_run(tmp_path / "b", seed=2, with_model=False)}
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'b'} is not a finished train_indra output"):
        evaluate(config(tmp_path), {"data": data, **runs}, tmp_path / "evaluate")


@pytest.mark.parametrize("spec", ["data=somewhere", "fullq-kd"])
def test_the_cli_refuses_a_run_that_is_not_name_equals_dir(tmp_path, capsys, spec):
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--run", spec])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--run {spec!r}: expected NAME=DIR with NAME other than ('data', 'teacher')" in err
