"""A teacher language model's next-token distribution as top-k log-probabilities, for distillation.

Two backends with one interface (``vocab_size``, ``tokenize``, ``topk``, ``close``):

- ``GgufTopK``: a GGUF in llama.cpp (the embedded SmolLM2 Q4_1). One thread by default: with two
  threads on two shared cores llama.cpp spin-waits (see adapters/models/llama_cpp.py). Measured ~200 tok/s
  of scored context on this kind of CPU, 2x the transformers model on two threads.
- ``HFTopK``: a transformers model (a local dir or a hub id such as TinyLlama), on a GPU when present.

Log-probabilities are normalised over the full vocabulary before the top k are kept, so the kept
values are exact, and the mass outside the top k is ``1 - sum(exp(values))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class TeacherError(RuntimeError):
    """The teacher cannot be loaded or cannot score the given tokens."""


class TopKTeacher(Protocol):
    name: str
    vocab_size: int

    def tokenize(self, text: str) -> list[int]: ...

    def topk(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def topk_rows(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest log-probabilities of each row, in descending order, with their token ids."""
    idx = np.argpartition(-logprobs, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(logprobs, idx, axis=-1)
    order = np.argsort(-vals, axis=-1)
    return np.take_along_axis(vals, order, axis=-1), np.take_along_axis(idx, order, axis=-1).astype(np.int32)


def _check_batch(inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, k: int, vocab_size: int) -> None:
    if inputs.ndim != 2 or targets.shape != inputs.shape or lengths.shape != (inputs.shape[0],):
        raise TeacherError(f"expected inputs and targets [B, T] and lengths [B], got {inputs.shape}, {targets.shape}, {lengths.shape}")
    if not 1 <= k <= vocab_size:
        raise TeacherError(f"top_k {k} must be between 1 and the vocabulary size {vocab_size}")
    top = max(int(inputs.max(initial=0)), int(targets.max(initial=0)))
    if min(int(inputs.min(initial=0)), int(targets.min(initial=0))) < 0 or top >= vocab_size:
        raise TeacherError(f"token ids outside the teacher's vocabulary of {vocab_size} (max id {top}): "
                           "the data was tokenised with another tokenizer")


def _target_logprob(lp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.take_along_axis(lp, targets[:, None].astype(np.int64), axis=-1)[:, 0]


class GgufTopK:
    """Top-k next-token log-probabilities from a GGUF in llama-cpp-python (each block scored from a fresh context)."""

    def __init__(self, path: Path, *, n_ctx: int, n_threads: int = 1):
        try:
            import llama_cpp
        except ImportError as e:
            raise TeacherError(f"llama-cpp-python is not importable ({e}); pip install llama-cpp-python") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(f"teacher GGUF {self.path} does not exist")
        self.name = self.path.name
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                       n_threads=n_threads, n_threads_batch=n_threads, logits_all=True, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise TeacherError(f"llama.cpp could not load the teacher {self.path}: {e}") from None
        self.n_ctx = n_ctx
        self.vocab_size = int(self.llm.n_vocab())

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def topk(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k values [B, T, k] float32 and token ids [B, T, k] int32 of each position's next-token
        log-probabilities, and the log-probability of ``targets`` [B, T] at each position. Positions at or
        past a row's length hold zeros (values, ids) and NaN (target log-probability)."""
        _check_batch(inputs, lengths, targets, k, self.vocab_size)
        b, t = inputs.shape
        if t > self.n_ctx:
            raise TeacherError(f"blocks of {t} tokens exceed the teacher context n_ctx={self.n_ctx}")
        vals = np.zeros((b, t, k), np.float32)
        idx = np.zeros((b, t, k), np.int32)
        tgt = np.full((b, t), np.nan, np.float32)
        for row in range(b):
            n = int(lengths[row])
            if n == 0:
                continue
            self.llm.reset()
            self.llm.eval([int(x) for x in inputs[row, :n]])
            lp = log_softmax(np.asarray(self.llm.scores[:n]))
            vals[row, :n], idx[row, :n] = topk_rows(lp, k)
            tgt[row, :n] = _target_logprob(lp, targets[row, :n])
        return vals, idx, tgt

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


class HFTopK:
    """Top-k next-token log-probabilities from a transformers causal LM (GPU when available)."""

    def __init__(self, model: str, *, dtype: str = "float32", device: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        except OSError as e:
            raise TeacherError(f"cannot load the teacher {model!r} with transformers: {e}") from None
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.name = model
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def topk(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Same contract as ``GgufTopK.topk``, in one batched forward pass."""
        import torch

        _check_batch(inputs, lengths, targets, k, self.vocab_size)
        ids = torch.as_tensor(np.asarray(inputs), dtype=torch.long, device=self.device)
        tg = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=self.device)
        n = torch.as_tensor(np.asarray(lengths), device=self.device)
        mask = torch.arange(ids.shape[1], device=self.device)[None, :] < n[:, None]
        with torch.inference_mode():
            lp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask.long()).logits.float(), dim=-1)
            vals, idx = lp.topk(k, dim=-1)
            tgt = lp.gather(-1, tg[..., None]).squeeze(-1)
            tgt = torch.where(mask, tgt, torch.full_like(tgt, float("nan")))
            vals, idx = vals * mask[..., None], idx * mask[..., None]
        return vals.cpu().numpy(), idx.int().cpu().numpy(), tgt.cpu().numpy()

    def close(self) -> None:
        self.model = None


def same_tokenizer(teacher: TopKTeacher, probe_text: str, probe_ids: Sequence[int], vocab_size: int) -> str | None:
    """None when the teacher tokenises ``probe_text`` to ``probe_ids`` and has ``vocab_size`` tokens, else why not."""
    if teacher.vocab_size != vocab_size:
        return f"the teacher has {teacher.vocab_size} tokens, the data's tokenizer {vocab_size}"
    got = teacher.tokenize(probe_text)
    if list(got) != list(probe_ids):
        return f"the teacher tokenises {probe_text!r} as {got[:12]}..., the data's tokenizer as {list(probe_ids)[:12]}..."
    return None
