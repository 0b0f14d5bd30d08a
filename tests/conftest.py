"""Shared fixtures: outputs under tmp_path, one Prefect test server per session, tiny models."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none present)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    """Every test writes its outputs under its own tmp dir, never into the repo's data/."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("LABTUNE_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def prefect_harness():
    """A Prefect API on a temporary SQLite database, shared by the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Cache of the dequantised embedded model, shared by the session (built once, ~10 s)."""
    shared = os.environ.get("LABTUNE_TEST_MODEL_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedded_model(model_cache) -> Path:
    from adapters.models.base_models import EMBEDDED, resolve_base_model

    return Path(resolve_base_model(EMBEDDED, model_cache))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_model) -> Path:
    """A 2-layer Llama with hidden size 8 and SmolLM2's tokenizer: trains in milliseconds per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def mix_dir(tmp_path) -> Path:
    """A mix stage's output: 48 training and 8 validation chat records."""
    d = tmp_path / "mix"
    write_chat_records(d / "train.jsonl", 48)
    write_chat_records(d / "val.jsonl", 8, start=900)
    return d


def write_chat_records(path: Path, n: int, start: int = 0) -> Path:
    """n distinct, learnable chat records (the answer follows from the question)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i in range(start, start + n):
            a, b = (i * 7) % 50 / 50, (i * 13) % 50 / 50
            phase = "spt_cluster" if b > a else "ising_symmetry_breaking"
            fh.write(json.dumps({
                "messages": [{"role": "system", "content": "You are a lab assistant."},
                             {"role": "user", "content": f"Run {i}: magnetization {a:.3f}, string order {b:.3f}. Which phase?"},
                             {"role": "assistant", "content": f"{phase}: string order {b:.3f}, magnetization {a:.3f}."}],
                "source": "test", "kind": "phase", "meta": {"i": i}}) + "\n")
    return path


def answer_pauses(run: dict, answers: list[dict], shown: list[str], errors: list[BaseException]) -> None:
    """A person at the Prefect UI: wait for each pause of the flow run ``run["id"]``, read its form text,
    resume it with the next answer. Exceptions go to ``errors`` (the test asserts it is empty)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    try:
        answered: set[str] = set()
        with get_client(sync_client=True) as client:
            for answer in answers:
                deadline = time.monotonic() + 90
                while True:
                    state = client.read_flow_run(run["id"]).state if "id" in run else None
                    if state is not None and state.is_paused() and state.state_details.pause_key not in answered:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the flow run never paused for answer {answer}")
                    time.sleep(0.2)
                answered.add(state.state_details.pause_key)
                shown.append(read_flow_run_input(keyset_from_paused_state(state)["description"], flow_run_id=run["id"]))
                resume_flow_run(run["id"], run_input=answer)
    except Exception as e:
        errors.append(e)
