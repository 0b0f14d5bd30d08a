"""The template oracle: exact lift-sys answers for templated prompts, looked up from the template library.

It speaks the teacher protocol (``adapters/teachers``) but reaches nothing outside: a prompt it was
built with maps back to its template and slots, and the answer is that template's IR (``TASK: ir``)
or its other phrasings (``TASK: paraphrase``). The offline default teacher of the lift-sys stages.

    oracle = TemplateOracle(load_templates(), rows=prompt_rows)
    oracle.generate(build_ir_messages(row.prompt), max_tokens=1024, temperature=0.0).text   # the IR JSON
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from adapters.teachers.protocol import (
    REQUEST_CLOSE,
    REQUEST_OPEN,
    TASK_IR,
    TASK_PARAPHRASE,
    TeacherError,
    TeacherReply,
    request_of,
    requested_count,
    task_of,
)
from adapters.teachers.retries import Usage


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


class TemplateOracle:
    """Exact answers for templated prompts: the template's IR from the prompt's slots, or its other phrasings.

    Knows exactly the prompts in ``rows`` (paraphrases carry their parent's template and slots);
    any other request is an error, since the oracle cannot read free text.
    """

    name = "oracle"

    def __init__(self, library: Any, rows: Iterable[Any]):
        self.library = library
        self._known: dict[str, tuple[str, dict]] = {}
        for row in rows:
            text, found = " ".join(_field(row, "prompt").split()), (_field(row, "template_id"), dict(_field(row, "slots")))
            if found[0] not in library.templates:
                raise ValueError(f"template oracle: prompt row {_field(row, 'id')} names template '{found[0]}', which "
                                 f"the template library does not have")
            seen = self._known.setdefault(text, found)
            if seen != found and library.render_ir(*seen) != library.render_ir(*found):
                raise ValueError(f"template oracle: the prompt {text!r} comes from {seen[0]} and {found[0]} "
                                 "with different IRs; the oracle cannot tell which one is meant")
        self._usage = Usage()

    def __repr__(self) -> str:
        return f"TemplateOracle({len(self._known)} prompts)"

    def _lookup(self, messages: list[dict]) -> tuple[str, str, dict]:
        request = request_of(messages)
        if request is None:
            raise TeacherError(f"template oracle: no {REQUEST_OPEN}...{REQUEST_CLOSE} request in the user message")
        found = self._known.get(" ".join(request.split()))
        if found is None:
            raise TeacherError(f"template oracle: {request[:80]!r} is not one of the {len(self._known)} templated "
                               "prompts it was built with (the oracle only answers templated prompts and their paraphrases)")
        return request, *found

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        task = task_of(messages)
        if task == TASK_IR:
            _, template_id, slots = self._lookup(messages)
            text = json.dumps(self.library.render_ir(template_id, slots), ensure_ascii=False)
        elif task == TASK_PARAPHRASE:
            request, template_id, slots = self._lookup(messages)
            phrasings = self.library.templates[template_id].phrasings
            rendered = [self.library.render_prompt(template_id, slots, phrasing=i) for i in range(len(phrasings))]
            others = [p for p in rendered if " ".join(p.split()) != " ".join(request.split())]
            text = "\n".join(others[:requested_count(messages)])
        else:
            raise TeacherError(f"template oracle: the system message must start with 'TASK: {TASK_IR}' or "
                               f"'TASK: {TASK_PARAPHRASE}', got task {task!r}")
        return self._usage.add(TeacherReply(text))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        pass
