"""Teacher-forced parity of a GGUF in llama.cpp against the transformers model it was converted from.

Both models read the same tokens (a val conversation, prompt + reference answer, tokenized once by the
HF tokenizer) and their next-token distributions are compared at every position: the argmax, and
KL(transformers ‖ llama.cpp) in nats. An argmax disagreement where transformers rates llama.cpp's pick
within ``margin`` nats (log-prob) of its own top token is a near-tie that f16 rounding can flip; any other
disagreement is real. Unlike comparing two free-running generations, one flipped near-tie cannot derail
every later token, so the check catches a broken conversion, not rounding. Used by ``tasks.training.export_gguf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from adapters.models.llama_cpp import GgufModel, LlamaCppError

CHUNK = 64  # rows of [positions, vocab] handled at once, to bound float64 temporaries


@dataclass
class Agreement:
    """Position-by-position comparison of two models' next-token logits over the same tokens."""

    hf_top: np.ndarray    # [T] transformers' argmax
    llama_top: np.ndarray  # [T] llama.cpp's argmax
    hf_lp: np.ndarray     # [T, 2] transformers' log-prob of (its top, llama.cpp's top)
    llama_lp: np.ndarray  # [T, 2] llama.cpp's log-prob of (transformers' top, its top)
    kl: np.ndarray        # [T] KL(p_transformers ‖ p_llama.cpp), nats
    near_tie: np.ndarray  # [T] bool: argmaxes differ, but within the margin in transformers' log-probs
    real: np.ndarray      # [T] bool: argmaxes differ by more than the margin

    def summary(self) -> dict:
        """Counts, KL and the disagreeing positions, as written per record to parity.jsonl."""
        return {"positions": len(self.kl), "agree": int((self.hf_top == self.llama_top).sum()),
                "near_ties": int(self.near_tie.sum()), "real": int(self.real.sum()),
                "kl_mean": float(self.kl.mean()) if len(self.kl) else 0.0,
                "kl_max": float(self.kl.max()) if len(self.kl) else 0.0,
                "near_tie_positions": np.flatnonzero(self.near_tie).tolist(),
                "real_positions": np.flatnonzero(self.real).tolist()}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def teacher_forced_agreement(hf_logits: np.ndarray, llama_logits: np.ndarray, margin: float) -> Agreement:
    """Compare next-token logits ``[positions, vocab]`` of transformers and llama.cpp on the same tokens."""
    hf_logits, llama_logits = np.asarray(hf_logits), np.asarray(llama_logits)
    assert hf_logits.shape == llama_logits.shape and hf_logits.ndim == 2, (hf_logits.shape, llama_logits.shape)
    hf_top, llama_top = hf_logits.argmax(-1), llama_logits.argmax(-1)
    rows = np.arange(len(hf_top))
    hf_lp, llama_lp, kl = np.empty((len(rows), 2)), np.empty((len(rows), 2)), np.empty(len(rows))
    for start in range(0, len(rows), CHUNK):
        s = slice(start, start + CHUNK)
        lp_hf, lp_ll = _log_softmax(hf_logits[s]), _log_softmax(llama_logits[s])
        r = rows[s] - start
        hf_lp[s] = np.stack([lp_hf[r, hf_top[s]], lp_hf[r, llama_top[s]]], axis=1)
        llama_lp[s] = np.stack([lp_ll[r, hf_top[s]], lp_ll[r, llama_top[s]]], axis=1)
        kl[s] = np.maximum((np.exp(lp_hf) * (lp_hf - lp_ll)).sum(-1), 0.0)  # ≥ 0 up to float error
    differ = hf_top != llama_top
    near = differ & (hf_lp[:, 0] - hf_lp[:, 1] < margin)
    return Agreement(hf_top, llama_top, hf_lp, llama_lp, kl, near, differ & ~near)


def summarize(agreements: Sequence[Agreement]) -> dict:
    """Totals over records: argmax agreement (``rate``), the same counting near-ties as agreeing, KL mean/max."""
    positions = sum(len(a.kl) for a in agreements)
    agree = sum(int((a.hf_top == a.llama_top).sum()) for a in agreements)
    near = sum(int(a.near_tie.sum()) for a in agreements)
    real = sum(int(a.real.sum()) for a in agreements)
    kl_sum = sum(float(a.kl.sum()) for a in agreements)
    return {"positions": positions, "agree": agree, "near_ties": near, "real": real,
            "rate": agree / max(positions, 1), "rate_ex_near_ties": (positions - real) / max(positions, 1),
            "kl_mean": kl_sum / max(positions, 1), "kl_max": max((float(a.kl.max()) for a in agreements if len(a.kl)),
                                                                 default=0.0)}


def worst_position(agreements: Sequence[Agreement]) -> tuple[int, int] | None:
    """(record index, position) of the real disagreement transformers is surest about, else of the largest KL."""
    best, where = -np.inf, None
    for i, a in enumerate(agreements):
        for p in np.flatnonzero(a.real):
            if a.hf_lp[p, 0] - a.hf_lp[p, 1] > best:
                best, where = a.hf_lp[p, 0] - a.hf_lp[p, 1], (i, int(p))
    if where is None:
        for i, a in enumerate(agreements):
            if len(a.kl) and a.kl.max() > best:
                best, where = a.kl.max(), (i, int(a.kl.argmax()))
    return where


def describe_position(a: Agreement, pos: int, ids: Sequence[int], decode: Callable[[list[int]], str]) -> str:
    """One position in words: the text read so far and what each model predicts next, with log-probs."""
    context = decode(list(ids[: pos + 1]))[-60:]
    hf_tok, ll_tok = decode([int(a.hf_top[pos])]), decode([int(a.llama_top[pos])])
    text = (f"after …{context!r}: transformers picks {hf_tok!r} (log-prob {a.hf_lp[pos, 0]:.2f}; "
            f"llama.cpp gives it {a.llama_lp[pos, 0]:.2f})")
    if a.hf_top[pos] == a.llama_top[pos]:
        return f"{text}, and so does llama.cpp; KL there {a.kl[pos]:.3f} nats"
    return (f"{text}, llama.cpp picks {ll_tok!r} (log-prob {a.llama_lp[pos, 1]:.2f}; "
            f"transformers gives it {a.hf_lp[pos, 1]:.2f}); KL there {a.kl[pos]:.3f} nats")


def parity_failure(what: str, agreements: Sequence[Agreement], sequences: Sequence[Sequence[int]],
                   records: Sequence[int], decode: Callable[[list[int]], str], *, min_rate: float, max_kl: float,
                   margin: float, hint: str) -> str | None:
    """Why ``what`` fails the parity gate, in words a user can act on; None when it passes."""
    s = summarize(agreements)
    if s["rate_ex_near_ties"] >= min_rate and s["kl_mean"] <= max_kl:
        return None
    where = worst_position(agreements)
    worst = ""
    if where is not None:
        i, pos = where
        worst = (f"\nWorst position: val record {records[i]}, token {pos} of {len(sequences[i])}, "
                 f"{describe_position(agreements[i], pos, sequences[i], decode)}.")
    return (f"llama.cpp parity of {what} failed. Reading the same {s['positions']} tokens of {len(agreements)} val "
            f"conversations (teacher-forced), llama.cpp's next-token choice differs from transformers' at "
            f"{s['real']} positions ({1 - s['rate_ex_near_ties']:.1%}) where transformers is not near a tie "
            f"(it rates llama.cpp's pick at least parity_near_tie_margin {margin} nats below its own); at most "
            f"{1 - min_rate:.1%} may (parity_min_rate {min_rate}). {s['near_ties']} more differ at near-ties and do "
            f"not count. "
            f"Mean KL(transformers ‖ llama.cpp) per position: {s['kl_mean']:.4f} nats (max {s['kl_max']:.3f}; "
            f"limit parity_max_kl {max_kl}).{worst}\n"
            f"This is more than rounding: the GGUF computes a different function from the transformers model. {hint}")


def conversation_ids(tok, messages: list[dict]) -> tuple[str, list[int]]:
    """A whole val conversation (prompt + reference answer) as chat-templated text and its HF token ids."""
    text = tok.apply_chat_template(messages, tokenize=False)
    return text, tok(text, add_special_tokens=False)["input_ids"]


def hf_logits(model, ids: Sequence[int]) -> np.ndarray:
    """Transformers' next-token logits ``[len(ids), vocab]`` (float32) after each prefix of ``ids``."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].float().numpy()


def measure(model, sequences: Sequence[Sequence[int]], checks: dict[str, tuple[Path, Path | None]], *,
            margin: float, n_threads: int, advance: Callable[[], None] = lambda: None) -> dict[str, list[Agreement]]:
    """Teacher-forced agreement of each GGUF (``name → (model file, LoRA file or None)``) with ``model``, per sequence."""
    from contextlib import ExitStack

    n_ctx = max(64, max(len(ids) for ids in sequences))
    out: dict[str, list[Agreement]] = {name: [] for name in checks}
    with ExitStack() as stack:
        llms = {name: stack.enter_context(GgufModel(path, n_ctx=n_ctx, n_threads=n_threads, lora_path=lora,
                                                    logits_all=True))
                for name, (path, lora) in checks.items()}
        for ids in sequences:  # one record at a time: transformers' logits are [tokens, vocab] floats
            ref = hf_logits(model, ids)
            for name, llm in llms.items():
                got = llm.next_token_logits(ids)
                if got.shape != ref.shape:
                    raise LlamaCppError(f"{llm.path.name}: llama.cpp returns logits of shape {got.shape}, "
                                     f"transformers {ref.shape}; the vocabularies differ, so the conversion is broken")
                out[name].append(teacher_forced_agreement(ref, got, margin))
                advance()
    return out
