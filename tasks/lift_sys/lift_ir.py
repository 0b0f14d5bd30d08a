"""The lift-sys intermediate representation (IR): pydantic models and the JSON Schema, in one place.

An IR describes a function before code exists: its intent, signature, effects (what it does, with
exact ``return LITERAL 'x'`` strings), assertions and holes (what is still unknown). Every object is
closed (``additionalProperties: false``), so IR written by lift-sys validates here and ours there.

    ir, errors = validate_ir(json_text_or_dict)   # errors: ["signature.name: String should match ...", ...]
    IR_SCHEMA                                      # JSON Schema (draft 2020-12) for structured output / other tools
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HoleKind = Literal["intent", "signature", "effect", "assertion", "implementation"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hole(_Closed):
    """Something the IR leaves open, typed and constrained."""

    identifier: str
    type_hint: str
    description: str
    constraints: dict[str, Any] = Field(default_factory=dict)
    kind: HoleKind


class Intent(_Closed):
    summary: str = Field(min_length=10)
    rationale: str | None = None
    holes: list[Hole] = Field(default_factory=list)


class Parameter(_Closed):
    name: str
    type_hint: str
    description: str | None = None


class Signature(_Closed):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    parameters: list[Parameter] = Field(default_factory=list)
    returns: str | None = None
    holes: list[Hole] = Field(default_factory=list)


class Effect(_Closed):
    description: str
    holes: list[Hole] = Field(default_factory=list)


class Assertion(_Closed):
    predicate: str
    rationale: str | None = None
    holes: list[Hole] = Field(default_factory=list)


class Metadata(_Closed):
    source_path: str | None = None
    language: str | None = None
    origin: str | None = None
    evidence: list[Any] = Field(default_factory=list)


class IR(_Closed):
    """One lift-sys IR."""

    intent: Intent
    signature: Signature
    effects: list[Effect] = Field(default_factory=list)
    assertions: list[Assertion] = Field(default_factory=list)
    metadata: Metadata | None = None


def _closed_schema() -> dict:
    """IR.model_json_schema() with ``additionalProperties: false`` on every object that has properties."""
    schema = IR.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


IR_SCHEMA: dict = _closed_schema()


def validate_ir(data: dict | str) -> tuple[IR | None, list[str]]:
    """(IR, []) when ``data`` (a dict or JSON text) is a valid IR, else (None, ["path: message", ...])."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            return None, [f"not JSON: {e}"]
    if not isinstance(data, dict):
        return None, [f"expected a JSON object, got {type(data).__name__}"]
    try:
        return IR.model_validate(data), []
    except ValidationError as e:
        return None, [f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors()]


def ir_json(ir: IR) -> str:
    """Canonical JSON text of an IR (unset optional fields left out), as training completions use it."""
    return json.dumps(ir.model_dump(mode="json", exclude_none=True), ensure_ascii=False)
