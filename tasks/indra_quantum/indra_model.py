"""The IndraQuantum student: a small causal language model whose token states are complex, Z = M·e^{iP}.

Three modes share one parameter budget, which is what makes them an ablation:

- ``fullq``: complex embedding (magnitude = softplus(raw) + ε, free phase) plus learned positions on the
  real and imaginary parts → blocks of complex attention (scores from the real and imaginary parts) and
  separate real / imaginary feed-forward blocks and norms → hybrid head (the real part of the complex
  inner product with the embedding, plus α × the magnitude path).
- ``complex_embed``: the same complex embedding, then a standard real transformer on ``[Re Z; Im Z]``.
- ``real``: a standard pre-norm GPT-style transformer (GPT-2's layout, tied head).

Sizing: a complex width of ``d_model / 2`` holds as many real numbers as the real model's ``d_model``,
so every embedding is ``vocab × d_model``. The output projection is tied to the embedding in every mode:
with SmolLM2's 49,152-token vocabulary an untied head would add another ``vocab × d_model`` (6.3M at
d_model 128, ~89% of the model). A complex linear map C→C has half the parameters of a real D→D one,
so ``fullq`` widens its feed-forward blocks until its non-embedding count matches ``real``
(``fullq_ffn_hidden``); all modes then agree within a fraction of a percent.

Logit scale: the real model's tied table starts at std 0.02, so its first logits have std ≈ 0.02·√d.
The complex table starts at the seed's magnitudes (softplus(U(-0.5, 0.5)) ≈ 0.7), so the complex
modes' final norms start with gain ``COMPLEX_HEAD_GAIN`` to give the same initial logit scale, and
both grow it at the same pace under AdamW. (A fixed 1/√d factor, as in the seed, caps the complex
heads' logit range and left them near-uniform in our runs: that is a handicap, not a finding.) The
polar table also learns at a different pace than a real one under AdamW: see ``embedding_lr_mult`` in
tasks/indra_quantum/train_indra.py.

The stages import this module lazily (it imports torch).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("fullq", "complex_embed", "real")
MAG_EPS = 1e-4
# 0.02 (the real table's std) / 0.52 (the rms of a real or imaginary part of the seed-initialised complex table)
COMPLEX_HEAD_GAIN = 0.04


class IndraOutput(NamedTuple):
    """Vocabulary logits, and the complex state's magnitude and phase (None in ``real`` mode)."""

    logits: torch.Tensor
    magnitude: torch.Tensor | None
    phase: torch.Tensor | None


def fullq_ffn_hidden(d_model: int, ffn_hidden: int) -> int:
    """Hidden width of each of fullq's two (real, imaginary) feed-forward blocks that matches the real model.

    Real layer: attention 4D² + 4D, FFN 2DF + F + D. fullq layer (C = D/2): complex attention 8C² + 8C
    = 2D² + 4D, two FFNs 2(2CH + H + C) = 2DH + 2H + D. Equal when H = (2D² + 2DF + F) / (2D + 2).
    """
    return round((2 * d_model * d_model + 2 * d_model * ffn_hidden + ffn_hidden) / (2 * d_model + 2))


def attention_mask_4d(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Boolean [B, 1, T, T] mask, True = may attend: causal, padded keys hidden.

    A query always sees itself, so a padded query (e.g. left padding) never has an empty row (NaN).
    """
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    if attention_mask is None:
        return causal.expand(batch, 1, length, length)
    keys = attention_mask.bool()[:, None, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=device)
    return causal & (keys | eye)


class ComplexEmbedding(nn.Module):
    """Token → (magnitude, phase): magnitude = softplus(raw) + ε > 0, phase unconstrained."""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.raw_magnitude = nn.Parameter(torch.empty(vocab_size, width).uniform_(-0.5, 0.5))
        self.phase = nn.Parameter(torch.empty(vocab_size, width).uniform_(-math.pi, math.pi))
        self._cached: tuple | None = None

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(self.raw_magnitude[ids]) + MAG_EPS, self.phase[ids]

    def head_weight(self, with_magnitude: bool) -> torch.Tensor:
        """[Re E | Im E (| M)] of the whole vocabulary, for the tied head.

        Without gradients (evaluation, generation) it is computed once per weight update: the parameters'
        version counters change with every in-place update, so a stale table is never used.
        """
        if torch.is_grad_enabled():
            self._cached = None
            return self._compute(with_magnitude)
        key = (with_magnitude, self.raw_magnitude._version, self.phase._version,
               self.raw_magnitude.data_ptr(), self.phase.data_ptr())
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._compute(with_magnitude))
        return self._cached[1]

    def _compute(self, with_magnitude: bool) -> torch.Tensor:
        mag = F.softplus(self.raw_magnitude) + MAG_EPS
        parts = [mag * torch.cos(self.phase), mag * torch.sin(self.phase)] + ([mag] if with_magnitude else [])
        return torch.cat(parts, dim=-1)


class ComplexLinear(nn.Module):
    """y = (A + iB)(x_r + i x_i) + (b_r + i b_i): a complex-linear map on split real/imaginary tensors."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight_re = nn.Parameter(torch.randn(d_out, d_in) * 0.02)
        self.weight_im = nn.Parameter(torch.randn(d_out, d_in) * 0.02)
        self.bias_re = nn.Parameter(torch.zeros(d_out))
        self.bias_im = nn.Parameter(torch.zeros(d_out))

    def forward(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_re = F.linear(re, self.weight_re, self.bias_re) - F.linear(im, self.weight_im)
        out_im = F.linear(re, self.weight_im, self.bias_im) + F.linear(im, self.weight_re)
        return out_re, out_im


class ComplexAttention(nn.Module):
    """Multi-head attention on complex states; score = Re(q·k̄)/√(2·d_head) = (q_r·k_r + q_i·k_i)/√(2·d_head)."""

    def __init__(self, width: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.o = (ComplexLinear(width, width) for _ in range(4))

    def forward(self, re: torch.Tensor, im: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, width = re.shape
        dh = width // self.n_heads

        def heads(x):
            return x.view(b, t, self.n_heads, dh).transpose(1, 2)

        # Real and imaginary parts side by side along the head dim: one dot product gives q_r·k_r + q_i·k_i,
        # and the (real) attention weights then mix the real and imaginary parts of v alike.
        q, k, v = (torch.cat([heads(r), heads(i)], dim=-1) for r, i in (self.q(re, im), self.k(re, im), self.v(re, im)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out_re = out[..., :dh].transpose(1, 2).reshape(b, t, width)
        out_im = out[..., dh:].transpose(1, 2).reshape(b, t, width)
        return self.o(out_re, out_im)


def feed_forward(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class ComplexBlock(nn.Module):
    """Pre-norm block: complex attention, then separate real and imaginary feed-forward blocks and norms."""

    def __init__(self, width: int, n_heads: int, ffn_hidden: int, dropout: float):
        super().__init__()
        self.norm1_re, self.norm1_im = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = ComplexAttention(width, n_heads, dropout)
        self.norm2_re, self.norm2_im = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn_re, self.ffn_im = feed_forward(width, ffn_hidden), feed_forward(width, ffn_hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, re, im, mask):
        a_re, a_im = self.attn(self.norm1_re(re), self.norm1_im(im), mask)
        re, im = re + self.drop(a_re), im + self.drop(a_im)
        re = re + self.drop(self.ffn_re(self.norm2_re(re)))
        im = im + self.drop(self.ffn_im(self.norm2_im(im)))
        return re, im


class RealBlock(nn.Module):
    """GPT-2's pre-norm block: fused QKV attention and a GELU MLP."""

    def __init__(self, width: int, n_heads: int, ffn_hidden: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ffn = feed_forward(width, ffn_hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        b, t, width = x.shape
        q, k, v = (y.view(b, t, self.n_heads, width // self.n_heads).transpose(1, 2)
                   for y in self.qkv(self.norm1(x)).split(width, dim=-1))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, width)))
        return x + self.drop(self.ffn(self.norm2(x)))


class IndraLM(nn.Module):
    """The student in one of ``MODES``; ``forward(ids, attention_mask)`` → IndraOutput."""

    def __init__(self, vocab_size: int, *, mode: str = "fullq", d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, max_len: int = 128, ffn_mult: int = 4, dropout: float = 0.1,
                 alpha_init: float = 0.05, match_params: bool = True):
        super().__init__()
        check_shape(mode, d_model, n_heads)
        self.mode, self.d_model, self.max_len, self.vocab_size = mode, d_model, max_len, vocab_size
        ffn_hidden = ffn_mult * d_model
        self.drop = nn.Dropout(dropout)
        if mode == "real":
            self.tok = nn.Embedding(vocab_size, d_model)
            nn.init.normal_(self.tok.weight, std=0.02)
        else:
            self.tok = ComplexEmbedding(vocab_size, d_model // 2)
        if mode == "fullq":
            width = d_model // 2
            hidden = fullq_ffn_hidden(d_model, ffn_hidden) if match_params else ffn_hidden
            self.pos_re, self.pos_im = nn.Embedding(max_len, width), nn.Embedding(max_len, width)
            self.blocks = nn.ModuleList(ComplexBlock(width, n_heads, hidden, dropout) for _ in range(n_layers))
            self.norm_re, self.norm_im = nn.LayerNorm(width), nn.LayerNorm(width)
            # Weight of the magnitude path in the hybrid head (the seed's learnable α).
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
            pos_std = 0.5  # the complex embedding's parts start at ~0.5; keep positions on the same scale
        else:
            self.pos = nn.Embedding(max_len, d_model)
            self.blocks = nn.ModuleList(RealBlock(d_model, n_heads, ffn_hidden, dropout) for _ in range(n_layers))
            self.norm = nn.LayerNorm(d_model)
            pos_std = 0.02 if mode == "real" else 0.5
        for emb in (self.pos_re, self.pos_im) if mode == "fullq" else (self.pos,):
            nn.init.normal_(emb.weight, std=pos_std)
        for norm in (self.norm_re, self.norm_im) if mode == "fullq" else (self.norm,) if mode == "complex_embed" else ():
            nn.init.constant_(norm.weight, COMPLEX_HEAD_GAIN)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> IndraOutput:
        b, t = ids.shape
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds the model's max_len {self.max_len}")
        mask = attention_mask_4d(attention_mask, b, t, ids.device)
        positions = torch.arange(t, device=ids.device)
        if self.mode == "real":
            x = self.drop(self.tok(ids) + self.pos(positions))
            for block in self.blocks:
                x = block(x, mask)
            return IndraOutput(F.linear(self.norm(x), self.tok.weight), None, None)
        mag, phase = self.tok(ids)
        re, im = mag * torch.cos(phase), mag * torch.sin(phase)
        if self.mode == "complex_embed":
            x = self.drop(torch.cat([re, im], dim=-1) + self.pos(positions))
            for block in self.blocks:
                x = block(x, mask)
            # Tied head: the real inner product with [Re E; Im E], i.e. Re⟨h, E⟩ for h = h_r + i h_i.
            logits = F.linear(self.norm(x), self.tok.head_weight(with_magnitude=False))
            return IndraOutput(logits, mag, phase)
        re, im = self.drop(re + self.pos_re(positions)), self.drop(im + self.pos_im(positions))
        for block in self.blocks:
            re, im = block(re, im, mask)
        re, im = self.norm_re(re), self.norm_im(im)
        out_mag = torch.sqrt(re * re + im * im + 1e-12)
        # Hybrid head: semantic channel Re⟨h, E⟩ plus α × the magnitude path ⟨|h|, M⟩, as one matmul.
        logits = F.linear(torch.cat([re, im, self.alpha * out_mag], dim=-1), self.tok.head_weight(with_magnitude=True))
        return IndraOutput(logits, out_mag, torch.atan2(im, re))


def check_shape(mode: str, d_model: int, n_heads: int) -> None:
    """Raise ValueError when the sizes cannot build ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if d_model % 2 or (d_model // 2) % n_heads:
        raise ValueError(f"d_model {d_model} must be even and d_model/2 divisible by n_heads {n_heads} "
                         "(the complex modes use a complex width of d_model/2 split over the heads)")


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total, embedding (token table) and non-embedding parameters."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for p in model.tok.parameters())
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
