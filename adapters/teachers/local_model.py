"""A local GGUF (the embedded model or a trained one) in llama.cpp as a teacher.

A JSON schema becomes a llama.cpp decoding grammar, with every free string and array bounded so
that a constrained reply ends within ``max_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.teachers.protocol import TeacherError, TeacherReply
from adapters.teachers.retries import Usage


def grammar_schema(schema: Any, max_string_chars: int, max_items: int) -> Any:
    """``schema`` with every free string and array bounded, so a constrained reply ends within max_tokens.

    Also drops ``items: {}`` (any item), which llama-cpp-python's schema converter cannot read.
    """
    if isinstance(schema, list):
        return [grammar_schema(v, max_string_chars, max_items) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_schema(v, max_string_chars, max_items) for k, v in schema.items()}
    if out.get("type") == "string" and not {"maxLength", "pattern", "enum", "const"} & out.keys():
        out["maxLength"] = max_string_chars
    if out.get("type") == "array":
        out.setdefault("maxItems", max_items)
        if out.get("items") == {}:
            del out["items"]
    return out


# llama-cpp-python's schema converter lets raw control characters into strings ([^"\\]), which JSON forbids;
# llama.cpp's own converter excludes them, as this does.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_gbnf(schema: dict) -> str:
    """GBNF grammar text for ``schema`` whose every output is valid JSON (no raw control characters in strings)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    if _LOOSE_CHAR not in gbnf and "char ::=" in gbnf:
        raise RuntimeError("llama-cpp-python's JSON grammar changed its string rule; "
                           "review adapters/teachers/local_model.py json_gbnf")
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


class LocalModelTeacher:
    """A GGUF (the embedded or a trained model) in llama.cpp; a JSON schema becomes a decoding grammar."""

    def __init__(self, path: str | Path, *, lora_path: Path | None = None, n_ctx: int = 4096, n_threads: int = 1,
                 seed: int = 0, max_string_chars: int = 200, max_items: int = 8, n_gpu_layers: int = 0):
        from adapters.models.llama_cpp import GgufChat

        self.path = Path(path)
        self._chat = GgufChat(self.path, n_ctx=n_ctx, n_threads=n_threads, lora_path=lora_path, n_gpu_layers=n_gpu_layers)
        self.name = f"local:{self.path.name}" + (f"+{Path(lora_path).name}" if lora_path else "")
        self.seed, self.max_string_chars, self.max_items = seed, max_string_chars, max_items
        self._grammars: dict[str, Any] = {}
        self._usage = Usage()

    def __repr__(self) -> str:
        return f"LocalModelTeacher(path={str(self.path)!r})"

    def _grammar(self, schema: dict):
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp import LlamaGrammar

            bounded = grammar_schema(schema, self.max_string_chars, self.max_items)
            self._grammars[key] = LlamaGrammar.from_string(json_gbnf(bounded), verbose=False)
        return self._grammars[key]

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float,
                 json_schema: dict | None = None) -> TeacherReply:
        llm = self._chat.model.llm
        ids = self._chat.prompt_tokens(messages)
        room = self._chat.model.n_ctx - max_tokens
        if len(ids) > room:
            # Cutting the prompt would drop the system message and the start of the request: refuse instead.
            raise TeacherError(f"{self.name}: the prompt is {len(ids)} tokens but only {max(room, 0)} fit "
                               f"(n_ctx {self._chat.model.n_ctx} minus max_tokens {max_tokens}); shorten it or raise n_ctx")
        eos = llm.token_eos()
        if temperature > 0:
            # A different seed per request, so Best-of-N candidates differ yet a re-run repeats them.
            llm.set_seed(self.seed + self._usage.requests)
            sampling = {"temp": temperature, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
        else:
            sampling = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}
        grammar = self._grammar(json_schema) if json_schema is not None else None
        out: list[int] = []
        # Evaluate the whole prompt every time: reusing the previous request's cached prefix decodes the rest in a
        # smaller batch, whose rounding flips near-ties, so the same request could get a different greedy reply.
        llm.reset()
        for token in llm.generate(ids, repeat_penalty=1.0, reset=True, grammar=grammar, **sampling):
            if token == eos:
                break
            out.append(int(token))
            if len(out) >= max_tokens:
                break
        return self._usage.add(TeacherReply(self._chat.model.detokenize(out), len(ids), len(out), 0.0))

    def usage(self) -> dict:
        return self._usage.as_dict()

    def close(self) -> None:
        self._chat.close()
