"""The complex layers and the three student modes: shapes, masks, positive magnitudes, gradients, sizes."""

from __future__ import annotations

import pytest
import torch

from tasks.indra_quantum.indra_model import (
    MODES,
    ComplexAttention,
    ComplexLinear,
    IndraLM,
    attention_mask_4d,
    parameter_counts,
)

VOCAB = 101
SMALL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_len": 12, "dropout": 0.0}


def tiny(mode: str, **kw) -> IndraLM:
    torch.manual_seed(0)
    return IndraLM(VOCAB, mode=mode, **{**SMALL, **kw}).eval()


@pytest.mark.parametrize("mode", MODES)
def test_forward_shapes(mode):
    out = tiny(mode)(torch.randint(0, VOCAB, (3, 10)))
    assert out.logits.shape == (3, 10, VOCAB)
    if mode == "real":
        assert out.magnitude is None and out.phase is None
    else:
        assert out.magnitude.shape == out.phase.shape == (3, 10, SMALL["d_model"] // 2)


@pytest.mark.parametrize("mode", MODES)
def test_causal_mask_hides_the_future(mode):
    model = tiny(mode)
    ids = torch.randint(0, VOCAB, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 7) % VOCAB
    a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


@pytest.mark.parametrize("mode", MODES)
def test_padding_mask_hides_padded_tokens(mode):
    """Left padding: what sits in the padded slots must not change the real positions' logits."""
    model = tiny(mode)
    real = torch.randint(0, VOCAB, (1, 6))
    pads_a, pads_b = torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), 55)
    mask = torch.tensor([[0] * 4 + [1] * 6])
    a = model(torch.cat([pads_a, real], 1), mask).logits[0, 4:]
    b = model(torch.cat([pads_b, real], 1), mask).logits[0, 4:]
    assert torch.allclose(a, b, atol=1e-6)
    unmasked = model(torch.cat([pads_b, real], 1)).logits[0, 4:]
    assert not torch.allclose(a, unmasked, atol=1e-4)  # without the mask the pads leak in: the test can fail


def test_a_padded_query_never_has_an_empty_attention_row():
    mask = attention_mask_4d(torch.tensor([[0, 0, 1, 1]]), 1, 4, "cpu")
    assert mask.any(-1).all()
    assert not mask[0, 0, 3, 0] and mask[0, 0, 3, 2] and not mask[0, 0, 2, 3]


@pytest.mark.parametrize("mode", ["fullq", "complex_embed"])
def test_magnitude_is_positive_even_for_very_negative_raw_values(mode):
    model = tiny(mode)
    with torch.no_grad():
        model.tok.raw_magnitude.fill_(-60.0)
    mag, _ = model.tok(torch.arange(VOCAB))
    assert (mag > 0).all()
    out = model(torch.randint(0, VOCAB, (2, 8)))
    assert torch.isfinite(out.logits).all() and (out.magnitude > 0).all()


def test_gradients_reach_the_real_and_imaginary_parts_of_every_complex_layer():
    model = tiny("fullq").train()
    out = model(torch.randint(0, VOCAB, (2, 8)))
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, VOCAB), torch.randint(0, VOCAB, (16,)))
    (loss + out.magnitude.mean() + out.phase.abs().mean()).backward()
    block = model.blocks[0]
    for name, p in {"raw_magnitude": model.tok.raw_magnitude, "phase": model.tok.phase,
                    "q.weight_re": block.attn.q.weight_re, "q.weight_im": block.attn.q.weight_im,
                    "o.weight_im": block.attn.o.weight_im, "ffn_re": block.ffn_re[0].weight, "ffn_im": block.ffn_im[0].weight,
                    "norm_re": model.norm_re.weight, "norm_im": model.norm_im.weight, "alpha": model.alpha}.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_complex_embed_trains_both_parts_of_its_embedding():
    model = tiny("complex_embed").train()
    out = model(torch.randint(0, VOCAB, (2, 8)))
    torch.nn.functional.cross_entropy(out.logits.reshape(-1, VOCAB), torch.randint(0, VOCAB, (16,))).backward()
    assert model.tok.raw_magnitude.grad.abs().sum() > 0 and model.tok.phase.grad.abs().sum() > 0


def test_complex_linear_is_complex_matrix_multiplication():
    torch.manual_seed(1)
    layer = ComplexLinear(5, 3)
    with torch.no_grad():
        layer.bias_re.normal_(), layer.bias_im.normal_()
    x = torch.randn(4, 5, dtype=torch.complex64)
    w = torch.complex(layer.weight_re, layer.weight_im)
    expected = x @ w.T + torch.complex(layer.bias_re, layer.bias_im)
    re, im = layer(x.real, x.imag)
    assert torch.allclose(torch.complex(re, im), expected, atol=1e-5)


def test_complex_attention_scores_are_the_real_part_of_q_times_conjugate_k():
    torch.manual_seed(2)
    width, heads, t = 4, 1, 5
    attn = ComplexAttention(width, heads, dropout=0.0)
    re, im = torch.randn(1, t, width), torch.randn(1, t, width)
    mask = attention_mask_4d(None, 1, t, "cpu")
    got_re, got_im = attn(re, im, mask)

    def cplx(layer):
        r, i = layer(re, im)
        return torch.complex(r, i)[0]

    q, k, v = cplx(attn.q), cplx(attn.k), cplx(attn.v)
    scores = (q @ k.conj().T).real / (2 * width) ** 0.5
    weights = torch.softmax(scores.masked_fill(~mask[0, 0], float("-inf")), dim=-1)
    mixed = weights.to(torch.complex64) @ v
    o_re, o_im = attn.o(mixed.real[None], mixed.imag[None])
    assert torch.allclose(got_re, o_re, atol=1e-5) and torch.allclose(got_im, o_im, atol=1e-5)


@pytest.mark.parametrize("shape", [{"d_model": 128, "n_layers": 4, "n_heads": 4, "max_len": 128},  # the seed's defaults
                                   {"d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": 64}])    # the local profile
def test_every_mode_has_a_standard_transformers_parameter_count(shape):
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = 49152  # SmolLM2's vocabulary: the tied embedding dominates the count
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=shape["d_model"], n_layer=shape["n_layers"],
                                      n_head=shape["n_heads"], n_positions=shape["max_len"], bos_token_id=0, eos_token_id=0))
    reference = sum(p.numel() for p in gpt2.parameters())
    reference_body = reference - vocab * shape["d_model"]
    counts = {mode: parameter_counts(IndraLM(vocab, mode=mode, **shape)) for mode in MODES}
    assert counts["real"]["total"] == reference  # the real mode is GPT-2's layout with a tied head
    for mode, c in counts.items():
        assert abs(c["total"] - reference) / reference < 0.05, mode
        # the layers too, not just the (shared-size) embedding: fullq widens its FFNs to make up the difference
        assert abs(c["non_embedding"] - reference_body) / reference_body < 0.05, mode


def test_without_matching_fullq_would_be_smaller():
    shape = {"d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": 64}
    real = parameter_counts(IndraLM(VOCAB, mode="real", **shape))["non_embedding"]
    unmatched = parameter_counts(IndraLM(VOCAB, mode="fullq", match_params=False, **shape))["non_embedding"]
    assert unmatched < 0.9 * real


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        IndraLM(VOCAB, mode="fullq", d_model=12, n_heads=4)
    with pytest.raises(ValueError, match="unknown mode"):
        IndraLM(VOCAB, mode="quantum")
    with pytest.raises(ValueError, match="max_len"):
        tiny("real")(torch.zeros(1, SMALL["max_len"] + 1, dtype=torch.long))


@pytest.mark.parametrize("mode", ["fullq", "complex_embed"])
def test_the_cached_head_table_follows_every_weight_update(mode):
    """Generation reuses the vocabulary table between calls, but never after the weights changed."""
    model = tiny(mode)
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        first = model(ids).logits
        assert torch.equal(model(ids).logits, first)
    opt = torch.optim.SGD(model.tok.parameters(), lr=1.0)
    model.train()
    model(ids).logits.sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        cached_after = model(ids).logits
    model.tok._cached = None
    with torch.no_grad():
        fresh = model(ids).logits
    assert not torch.allclose(cached_after, first) and torch.equal(cached_after, fresh)
