"""Teachers picked by name: a spec such as ``anthropic:claude-haiku-4-5`` names the backend and its argument.

``oracle`` is a valid spec too, but the template oracle answers only the prompt rows it is built with,
so the lift-sys stages build it themselves (``tasks.lift_sys.lift_oracle.TemplateOracle``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.teachers.claude import DEFAULT_ANTHROPIC_MODEL, AnthropicTeacher, anthropic_key_missing
from adapters.teachers.local_model import LocalModelTeacher
from adapters.teachers.openai_compatible import OpenAICompatibleTeacher, api_key_missing
from adapters.teachers.protocol import Teacher

ORACLE = "oracle"


def _anthropic(arg: str, model: str | None = None, **kw) -> AnthropicTeacher:
    return AnthropicTeacher(arg or model or DEFAULT_ANTHROPIC_MODEL, **kw)


def _openai_url(arg: str) -> tuple[str, str]:
    base_url, _, model = arg.partition("#")
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"teacher 'openai:{arg}': expected openai:<http(s) base url>[#model], e.g. "
                         "openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    return base_url, model


def _openai(arg: str, model: str | None = None, **kw) -> OpenAICompatibleTeacher:
    base_url, spec_model = _openai_url(arg)
    return OpenAICompatibleTeacher(base_url, spec_model or model, **kw)


def _local(arg: str, **kw) -> LocalModelTeacher:
    if arg in ("", "embedded"):
        from adapters.models.base_models import embedded_gguf

        return LocalModelTeacher(embedded_gguf(), **kw)
    return LocalModelTeacher(Path(arg).expanduser(), **kw)


BACKENDS: dict[str, Callable[..., Teacher]] = {"anthropic": _anthropic, "openai": _openai, "local": _local}


def parse_teacher_spec(spec: str) -> tuple[str, str]:
    """``"anthropic:claude-haiku-4-5"`` → ``("anthropic", "claude-haiku-4-5")``; an unknown kind is a ValueError."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in BACKENDS and kind != ORACLE:
        raise ValueError(f"unknown teacher {spec!r}: expected one of oracle, anthropic[:model], "
                         "openai:<base_url>[#model], local:<path.gguf>|local:embedded")
    return kind, arg


def missing_credentials(spec: str, *, secret_block: str | None = None, api_key_env: str | None = None) -> str | None:
    """What to set before the teacher named by ``spec`` can start (a key it needs is absent), or None.

    Cheap: reads the environment only (a named Prefect Secret block is trusted until the teacher loads it),
    so a config can be checked before any stage runs.
    """
    kind, arg = parse_teacher_spec(spec)
    if kind == "anthropic":
        return anthropic_key_missing(secret_block)
    if kind == "openai":
        return api_key_missing(_openai_url(arg)[0], api_key_env)
    return None


def make_teacher(spec: str, **kw) -> Teacher:
    """The teacher named by ``spec``; keyword arguments go to its backend (None values are left out)."""
    kind, arg = parse_teacher_spec(spec)
    if kind == ORACLE:
        raise ValueError("the template oracle answers only the prompt rows it is built with: "
                         "build it as tasks.lift_sys.lift_oracle.TemplateOracle(library, rows=...)")
    return BACKENDS[kind](arg, **{k: v for k, v in kw.items() if v is not None})
