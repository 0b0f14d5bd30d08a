"""Code in model answers: the first fenced block, and when decoding may stop because it is closed."""

from __future__ import annotations

import re

CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str) -> str | None:
    """The first fenced python block of an answer (an unterminated last block counts), else None."""
    m = CODE_BLOCK.search(answer)
    return m.group(1) if m and m.group(1).strip() else None


def code_closed(text: str) -> bool:
    """True once the first fenced code block of a reply is closed: the rest is not scored, so decoding can stop."""
    start = text.find("```")
    return start >= 0 and text.find("```", start + 3) > 0
