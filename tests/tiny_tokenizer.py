"""A word-level tokenizer saved in transformers' format, built in-process in milliseconds (no model download)."""

from __future__ import annotations

from pathlib import Path

WORDS = ("the", "future", "of", "ai", "is", "quantum", "mechanics", "explains", "tides", "moon", "sea", "a", "b", "c")


def write_word_tokenizer(out: Path, words: tuple[str, ...] = WORDS) -> Path:
    """``[UNK]``, ``[PAD]``, ``</s>`` (EOS) and one id per word; ``AutoTokenizer.from_pretrained(out)`` loads it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(("[UNK]", "[PAD]", "</s>", *words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    Path(out).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return Path(out)
