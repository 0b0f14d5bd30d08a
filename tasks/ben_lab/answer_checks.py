"""Checks on a model's free-text answer that need no model: does it loop?

Small models decoded greedily (or nearly) fall into cycles: once a stretch of text repeats back to
back, the same state keeps producing it until the token cap. ``repetition_loop`` finds the first such
cycle, word by word (case and punctuation ignored), so the chat can cut the shown answer there and an
evaluation can count looping answers.

    python -c "from tasks.ben_lab.answer_checks import repetition_loop; print(repetition_loop('a b c d e f. ' * 3))"
"""

from __future__ import annotations

import re

# A word: letters, digits and underscores, with inner dots, apostrophes or hyphens (0.933, don't, L2-norm).
WORD = re.compile(r"\w+(?:[.'’-]\w+)*")
SENTENCE_END = re.compile(r"[.!?;:\n]")
LOOP_WORDS = 6
LOOP_TIMES = 3


def repetition_loop(text: str, n: int = LOOP_WORDS, times: int = LOOP_TIMES) -> tuple[bool, int]:
    """(True, where to cut) when a run of ``n``+ words repeats ``times`` times back to back; else (False, len(text)).

    The cut is where the second copy starts, moved to the first sentence end within it when there is
    one, so ``text[:cut]`` keeps what was said once and ends on a whole sentence. Back to back means the
    whole stretch between two occurrences repeats too: a list whose items share wording but not numbers
    ("cluster 1 holds 5 samples, ... cluster 2 holds 5 samples, ...") is not a loop.
    """
    assert n >= 1 and times >= 2, "a loop needs at least one word repeated at least twice"
    ws = list(WORD.finditer(text))
    tokens = [m.group().lower() for m in ws]
    seen: dict[tuple[str, ...], list[int]] = {}
    for c in range(len(tokens) - n + 1):
        gram = tuple(tokens[c:c + n])
        starts = seen.setdefault(gram, [])
        for b in starts:
            start = _cycle_start(tokens, b, c, times)
            if start is not None:
                return True, _cut(text, ws, start + (c - b), c - b)
        starts.append(c)
    return False, len(text)


def _cut(text: str, ws: list[re.Match], second: int, period: int) -> int:
    """The start of the first word of the second copy that follows a sentence end (else of the copy itself)."""
    for k in range(second, min(second + period, len(ws))):
        if SENTENCE_END.search(text, ws[k - 1].end(), ws[k].start()):
            return ws[k].start()
    return ws[second].start()


def _cycle_start(tokens: list[str], b: int, c: int, times: int) -> int | None:
    """Where ``times`` back-to-back copies of the period ``c - b`` end at ``c`` begin, if they do."""
    period = c - b
    first = c - (times - 1) * period
    if first < 0:
        return None
    if all(tokens[first + i] == tokens[first + i + period] for i in range(c - period - first)):
        return first
    return None
