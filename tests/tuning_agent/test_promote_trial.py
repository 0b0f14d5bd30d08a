"""promote_trial: the winning trial becomes a merged model that answers as the trial did, laid out as an SFT output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tasks.tuning_agent.promote_trial import promote
from tests.tiny_tokenizer import WORDS, write_word_tokenizer

TRIAL_SCORES = {"best_eval_loss": 1.25, "best_step": 4, "steps_run": 6, "stopped_early": False}


@pytest.fixture
def trial(tmp_path) -> Path:
    """A finished trial: a tiny Llama base, a LoRA adapter with non-zero weights, its manifest and trial.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=3 + len(WORDS), hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    base.save_pretrained(tmp_path / "base")
    tuned = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    trial = tmp_path / "trials" / "t1"
    tuned.save_pretrained(trial / "adapter")
    write_word_tokenizer(trial / "adapter")
    (trial / "trial.json").write_text(json.dumps({"values": {"learning_rate": 3e-4, "lora_r": 2}, **TRIAL_SCORES}))
    (trial / "manifest.json").write_text(json.dumps({"stage": "trial", "key": "t1", "base_model": str(tmp_path / "base")}))
    return trial


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_the_promoted_model_answers_as_the_trial_did(tmp_path, trial):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = promote(None, trial, tmp_path / "best")

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), out / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    ids = AutoTokenizer.from_pretrained(out / "merged")("the future of ai is")["input_ids"]
    assert torch.allclose(logits(merged, ids), logits(tuned, ids), atol=1e-5)
    assert not torch.allclose(logits(merged, ids), logits(base, ids), atol=1e-3), "the adapter was merged in"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == str(tmp_path / "base") and manifest["metrics"] == TRIAL_SCORES
    assert manifest["values"] == {"learning_rate": 3e-4, "lora_r": 2}
    assert {"merged/config.json", "merged/model.safetensors", "merged/tokenizer.json", "adapter/adapter_config.json",
            "trial.json"} <= set(manifest["files"])


def test_promoting_the_same_trial_again_is_a_cache_hit(tmp_path, trial):
    out = promote(None, trial, tmp_path / "best")
    written = (out / "manifest.json").read_text()
    (tmp_path / "base" / "model.safetensors").unlink()  # a second merge would need the base model
    assert promote(None, trial, tmp_path / "best") == out
    assert (out / "manifest.json").read_text() == written


@pytest.mark.parametrize("missing", ["manifest.json", "adapter/adapter_config.json"])
def test_an_unfinished_trial_is_refused_and_nothing_is_written(tmp_path, trial, missing):
    (trial / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{trial}: not a finished trial"):
        promote(None, trial, tmp_path / "best")
    assert not (tmp_path / "best").exists()
