"""Command-line plumbing shared by every ``python -m tasks.<stage>``: ``--config`` YAML and ``--set`` overrides."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def deep_merge(base: dict, overlay: dict) -> dict:
    """Recursively merge ``overlay`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in (overlay or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def parse_override(item: str, raw_keys: tuple[str, ...] = ()) -> dict:
    """``a.b.c=VALUE`` → ``{"a": {"b": {"c": VALUE}}}``; VALUE is parsed as YAML unless its key is in ``raw_keys``."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set sft.trainer.max_steps=20")
    key, raw = (s.strip() for s in item.split("=", 1))
    value: Any = raw if key in raw_keys else (yaml.safe_load(raw) if raw else "")
    if isinstance(value, str) and key not in raw_keys:
        try:
            value = float(value)  # YAML 1.1 reads "1e-3" as a string; people mean a number
        except ValueError:
            pass
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def config_help(model: type[BaseModel]) -> str:
    """An argparse epilog listing the config's fields."""
    def default(f) -> str:
        return "required" if f.is_required() else "computed default" if f.default_factory else f"default {f.default!r}"

    return "config fields (--set KEY=VALUE, values parsed as YAML):\n" + "\n".join(
        f"  {name} ({default(f)}): {f.description}" for name, f in model.model_fields.items())


def stage_parser(prog: str, doc: str | None, model: type[BaseModel]) -> argparse.ArgumentParser:
    """A parser with ``--config`` and ``--set`` for ``model``; the stage adds its own input/output arguments."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, epilog=config_help(model),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help=f"YAML file with {model.__name__} fields")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (repeatable)")
    return parser


def config_from_args(model: type[M], args: argparse.Namespace, parser: argparse.ArgumentParser,
                     raw_keys: tuple[str, ...] = (), **fixed) -> M:
    """The stage config from ``--config`` + ``--set`` (+ ``fixed`` values); a bad value exits with the parser's error."""
    data = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
    try:
        for item in args.overrides:
            data = deep_merge(data, parse_override(item, raw_keys))
        return model.model_validate(deep_merge(data, {k: v for k, v in fixed.items() if v is not None}))
    except (ValueError, ValidationError) as e:
        parser.error(str(e))
