"""Ollama adapter: the Go TEMPLATE renders like the HF chat template; Modelfile text; retry classification.

Ollama is not available here, so a small interpreter of the Go text/template constructs the
template uses (if/else/range, :=, eq/ne/and/or/not/len/slice/index, field access, trim markers)
renders it the way Ollama would, given Ollama's ``.Messages`` (Role/Content) data.
"""

from __future__ import annotations

import json
import re

import pytest

from adapters.models.ollama import CHATML_STOPS, chatml_template, is_retryable, modelfile_text

# ---- a tiny Go text/template interpreter (only what chat templates use) -------------------------

# An action body may hold string literals that contain "}}".
_ACTION = re.compile(r'\{\{(-\s)?((?:"(?:\\.|[^"\\])*"|[^"}]|\}(?!\}))*?)(\s-)?\}\}', re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:\\.|[^"\\])*"|:=|,|\$[\w]*(?:\.\w+)*|(?:\.\w+)+|\.|[A-Za-z_]\w*|-?\d+)')


def _lex(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", body)] with Go's whitespace-trim markers applied."""
    out, pos, trim_next = [], 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2).strip()))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(items, i=0, stop=("end",)):
    """Nested nodes up to one of the ``stop`` keywords; returns (nodes, index, stop keyword)."""
    nodes = []
    while i < len(items):
        kind, body = items[i]
        word = body.split()[0] if kind == "action" and body else ""
        if kind == "text":
            nodes.append(("text", body))
            i += 1
        elif word in stop:
            return nodes, i, word
        elif word == "if":
            then, i, kw = _parse(items, i + 1, ("else", "end"))
            other = []
            if kw == "else":
                other, i, kw = _parse(items, i + 1, ("end",))
            nodes.append(("if", body[2:].strip(), then, other))
            i += 1
        elif word == "range":
            inner, i, _ = _parse(items, i + 1, ("end",))
            nodes.append(("range", body[5:].strip(), inner))
            i += 1
        else:
            nodes.append(("expr", body))
            i += 1
    return nodes, i, None


def _truthy(v) -> bool:
    return bool(v) if v is not None else False


def _field(obj, names):
    for n in names:
        obj = obj[n] if isinstance(obj, dict) else getattr(obj, n)
    return obj


class _Eval:
    def __init__(self, tokens, scope, dot):
        self.toks, self.i, self.scope, self.dot = tokens, 0, scope, dot

    def operand(self):
        t = self.toks[self.i]
        self.i += 1
        if t == "(":
            v = self.command(until=")")
            self.i += 1
            if self.i < len(self.toks) and self.toks[self.i].startswith(".") and self.toks[self.i] != ".":
                v = _field(v, self.toks[self.i].split(".")[1:])
                self.i += 1
            return v
        if t.startswith('"'):
            return json.loads(t)
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t == ".":
            return self.dot
        if t.startswith("."):
            return _field(self.dot, t.split(".")[1:])
        if t.startswith("$"):
            name, *fields = t.split(".")
            return _field(self.scope[name], fields)
        raise ValueError(f"unexpected token {t!r}")

    def command(self, until=None):
        t = self.toks[self.i]
        if t in _FUNCS:
            self.i += 1
            args = []
            while self.i < len(self.toks) and self.toks[self.i] != until:
                args.append(self.operand())
            return _FUNCS[t](*args)
        return self.operand()


def _and(*a):
    for v in a:
        if not _truthy(v):
            return v
    return a[-1]


def _or(*a):
    for v in a:
        if _truthy(v):
            return v
    return a[-1]


_FUNCS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "not": lambda a: not _truthy(a),
          "and": _and, "or": _or, "len": len, "index": lambda c, k: c[k], "slice": lambda c, i=0, j=None: c[i:j]}


def _eval(expr: str, scope: dict, dot):
    toks = _TOKEN.findall(expr)
    return _Eval(toks, scope, dot).command()


def _exec(nodes, scope: dict, dot, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "if":
            _exec(node[2] if _truthy(_eval(node[1], scope, dot)) else node[3], dict(scope), dot, out)
        elif node[0] == "range":
            m = re.fullmatch(r"(\$\w*)\s*,\s*(\$\w*)\s*:=\s*(.+)", node[1])
            items = _eval(m.group(3), scope, dot)
            for k, v in enumerate(items):
                _exec(node[2], {**scope, m.group(1): k, m.group(2): v}, v, out)
        else:
            m = re.fullmatch(r"(\$\w+)\s*:=\s*(.+)", node[1], re.S)
            if m:
                scope[m.group(1)] = _eval(m.group(2), scope, dot)
            else:
                v = _eval(node[1], scope, dot)
                out.append("" if v is None else str(v))


def render_go(template: str, messages: list[dict]) -> str:
    """Render an Ollama template the way Ollama does for a chat request with these messages."""
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    nodes, _, _ = _parse(_lex(template))
    out: list[str] = []
    _exec(nodes, {"$": data}, data, out)
    return "".join(out)


def test_go_renderer_itself_follows_go_semantics():
    tpl = ('{{- $x := len .Messages }}n={{ $x }} '
           '{{ if and (eq $x 2) (ne (index .Messages 0).Role "user") }}A{{ else }}B{{ end }}\n'
           '  {{- range $i, $_ := .Messages }}[{{ $i }}:{{ .Role }}]{{ end }}')
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert render_go(tpl, msgs) == "n=2 A[0:system][1:user]"
    assert render_go(tpl, msgs[1:]) == "n=1 B[0:user]"


# ---- the template against the HF chat template --------------------------------------------------

@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from adapters.models.base_models import embedded_gguf

    gguf = embedded_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATIONS = {
    "user only (template's default system turn)": [{"role": "user", "content": "What is TRI?"}],
    "system + user": [{"role": "system", "content": "You are Ben's lab assistant."},
                      {"role": "user", "content": "Run an Ising experiment\nwith size 32."}],
    "multi-turn with system": [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": "Phase types?"}],
    "multi-turn, no system, template-looking content": [
        {"role": "user", "content": "print {{ .Role }} and <b>tags</b>"},
        {"role": "assistant", "content": "  spaced  \n"}, {"role": "user", "content": "again"}],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_template_renders_like_hf_chat_template(hf_tokenizer, name):
    messages = CONVERSATIONS[name]
    want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_go(chatml_template(SMOLLM_DEFAULT_SYSTEM), messages) == want


def test_trailing_assistant_turn_is_left_open_for_continuation(hf_tokenizer):
    messages = CONVERSATIONS["multi-turn with system"][:3]
    closed = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert render_go(chatml_template(SMOLLM_DEFAULT_SYSTEM), messages) == closed.removesuffix("<|im_end|>\n")


def test_comparison_catches_a_template_without_the_default_system_turn(hf_tokenizer):
    messages = CONVERSATIONS["user only (template's default system turn)"]
    want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_go(chatml_template(None), messages) != want
    assert render_go(chatml_template(None), messages) == "<|im_start|>user\nWhat is TRI?<|im_end|>\n<|im_start|>assistant\n"


def test_default_system_with_template_syntax_is_quoted():
    tpl = chatml_template("Use {{ braces }} literally")
    assert render_go(tpl, [{"role": "user", "content": "x"}]).startswith("<|im_start|>system\nUse {{ braces }} literally<|im_end|>\n")


# ---- Modelfile and retries ------------------------------------------------------------------------

def test_modelfile_has_from_adapter_template_stops_and_system(tmp_path):
    text = modelfile_text(model=tmp_path / "base-f16.gguf", adapter=tmp_path / "adapter-f16.gguf",
                          template="T", system="Be brief.",
                          parameters={"stop": list(CHATML_STOPS), "temperature": 0.2, "top_p": 0.9})
    assert text.splitlines() == [
        f"FROM {tmp_path.resolve()}/base-f16.gguf", f"ADAPTER {tmp_path.resolve()}/adapter-f16.gguf",
        'TEMPLATE """T"""', 'SYSTEM """Be brief."""', 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"',
        "PARAMETER temperature 0.2", "PARAMETER top_p 0.9"]
    with pytest.raises(ValueError, match='cannot contain """'):
        modelfile_text(model=tmp_path / "m.gguf", adapter=None, template="T", system='say """', parameters={})


def test_only_transient_failures_are_retryable():
    import httpx
    from ollama import ResponseError

    assert is_retryable(ConnectionError("refused"))
    assert is_retryable(httpx.ReadTimeout("slow"))
    assert is_retryable(ResponseError('{"error": "overloaded"}', 503))
    assert not is_retryable(ResponseError('{"error": "invalid model name"}', 400))
    assert not is_retryable(ValueError("bug"))
