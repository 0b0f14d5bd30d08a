"""The indra-quantum training objective: cross-entropy + distillation + phase/magnitude alignment.

    loss = CE + w_kd(t) · T² · KL(teacher_T ‖ student_T) + w_aux(t) · (L_phase + L_mag)

- KD: the teacher's top-k log-probabilities (renormalised over the k kept tokens) at temperature T
  against the student's full-vocabulary log-softmax at T, gathered at the same k tokens.
- Phase: mean |phase| of the student's complex state against π × the teacher's normalised entropy
  (a confused teacher → phases spread towards π; a sure one → aligned at 0), as in the seed.
- Magnitude: mean magnitude of the student's complex state against the teacher's confidence (max prob).
- Curriculum: w_kd rises linearly from ``kd_weight_start`` to ``kd_weight_end``; w_aux is 0 until
  ``aux_start`` of training, then ramps to ``aux_weight`` over ``aux_ramp``.
- Confidence gating: a token counts in KD only where the teacher's max probability exceeds ``kd_gate``,
  in the alignment terms only above ``aux_gate``. Gated sums are divided by all valid tokens (the seed's rule).

The teacher's confidence and entropy are those of its own (T = 1) distribution; the entropy counts the
mass outside the top k as spread evenly over the rest of the vocabulary (an upper bound). ``real`` mode
has no magnitude or phase, so its distillation is the KD term alone.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ObjectiveConfig(BaseModel):
    """Loss weights, curriculum and gating (every weight configurable)."""

    model_config = ConfigDict(extra="forbid")
    distill: bool = Field(True, description="Distil from the teacher (KD + alignment terms); false = cross-entropy only")
    teacher: Literal["precomputed", "live"] = Field("precomputed", description="Teacher top-k from the indra_teacher "
                                                                                 "arrays, or computed per batch during training")
    temperature: float = Field(2.0, gt=0, description="Distillation temperature T (the KL term is scaled by T²)")
    kd_weight_start: float = Field(0.01, ge=0, description="KD weight at the start of training")
    kd_weight_end: float = Field(0.05, ge=0, description="KD weight at the end (linear in between)")
    aux_weight: float = Field(0.1, ge=0, description="Weight of the phase and magnitude alignment terms once ramped in")
    aux_start: float = Field(0.2, ge=0, le=1, description="Fraction of training before the alignment terms start")
    aux_ramp: float = Field(0.3, gt=0, le=1, description="Fraction of training over which their weight ramps to aux_weight")
    kd_gate: float = Field(0.2, ge=0, lt=1, description="KD counts only where the teacher's max probability exceeds this")
    aux_gate: float = Field(0.3, ge=0, lt=1, description="Alignment counts only where the teacher's max probability exceeds this")

    @model_validator(mode="after")
    def _ramp_fits(self):
        if self.aux_start + self.aux_ramp > 1 + 1e-9:
            raise ValueError(f"aux_start + aux_ramp must be at most 1 (got {self.aux_start} + {self.aux_ramp})")
        return self


def curriculum(cfg: ObjectiveConfig, progress: float) -> tuple[float, float]:
    """(w_kd, w_aux) at ``progress`` ∈ [0, 1] of training; both 0 without distillation."""
    if not cfg.distill:
        return 0.0, 0.0
    p = min(max(progress, 0.0), 1.0)
    w_kd = cfg.kd_weight_start + (cfg.kd_weight_end - cfg.kd_weight_start) * p
    w_aux = cfg.aux_weight * min(max((p - cfg.aux_start) / cfg.aux_ramp, 0.0), 1.0)
    return w_kd, w_aux


def teacher_stats(values, vocab_size: int):
    """Teacher confidence (max probability) and normalised entropy ∈ [0, 1] from top-k log-probabilities [..., k]."""
    import torch

    values = values.float()
    probs = values.exp()
    confidence = probs.max(dim=-1).values
    entropy = -(probs * values).sum(-1)
    k = values.shape[-1]
    tail = (1 - probs.sum(-1)).clamp(min=0)
    if vocab_size > k:
        spread = torch.where(tail > 0, tail * torch.log(tail.clamp(min=1e-12) / (vocab_size - k)), torch.zeros_like(tail))
        entropy = entropy - spread
    return confidence, (entropy / math.log(vocab_size)).clamp(0, 1)


def combined_loss(cfg: ObjectiveConfig, progress: float, logits, targets, loss_mask, magnitude=None, phase=None,
                  t_values=None, t_indices=None):
    """(total loss, dict of float terms) for one batch; ``loss_mask`` [B, T] marks real targets."""
    import torch
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    mask = loss_mask.bool()
    n_valid = mask.sum().clamp(min=1)
    ce = F.cross_entropy(logits.reshape(-1, vocab), targets.masked_fill(~mask, -100).reshape(-1).long(), ignore_index=-100)
    w_kd, w_aux = curriculum(cfg, progress)
    zero = logits.new_zeros(())
    kd = phase_loss = mag_loss = zero
    terms = {"kd_gate_frac": 0.0, "aux_gate_frac": 0.0}
    if cfg.distill:
        if t_values is None or t_indices is None:
            raise ValueError("distillation needs the teacher's top-k values and indices for the batch")
        t_values = t_values.float()
        confidence, entropy = teacher_stats(t_values, vocab)
        temp = cfg.temperature
        kd_gate = mask & (confidence > cfg.kd_gate)
        t_logp = torch.log_softmax(t_values / temp, dim=-1)
        s_logp = torch.log_softmax(logits / temp, dim=-1).gather(-1, t_indices.long())
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        kd = (kl * kd_gate).sum() / n_valid * temp * temp
        terms["kd_gate_frac"] = kd_gate.sum().item() / n_valid.item()
        if magnitude is not None and phase is not None:
            aux_gate = (mask & (confidence > cfg.aux_gate)).float()
            phase_stat = phase.abs().mean(-1)
            phase_loss = ((phase_stat - math.pi * entropy) ** 2 * aux_gate).sum() / n_valid
            mag_loss = ((magnitude.mean(-1) - confidence) ** 2 * aux_gate).sum() / n_valid
            terms["aux_gate_frac"] = aux_gate.sum().item() / n_valid.item()
    total = ce + w_kd * kd + w_aux * (phase_loss + mag_loss)
    terms.update(loss=total.item(), ce=ce.item(), kd=kd.item(), aux_phase=phase_loss.item(), aux_mag=mag_loss.item(),
                 w_kd=w_kd, w_aux=w_aux)
    if magnitude is not None:
        with torch.no_grad():
            m = mask.unsqueeze(-1)
            terms["magnitude_mean"] = float((magnitude * m).sum() / (m.sum() * magnitude.shape[-1]).clamp(min=1))
            terms["phase_abs_mean"] = float((phase.abs() * m).sum() / (m.sum() * phase.shape[-1]).clamp(min=1))
    return total, terms
