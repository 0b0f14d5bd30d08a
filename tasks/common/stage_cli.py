"""Command-line plumbing shared by every ``python -m tasks.<project>.<stage>``: ``--config`` YAML and ``--set`` overrides."""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from adapters.user_errors import one_line, user_error_types

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
    """The stage config from ``--config`` + ``--set`` (+ ``fixed`` values); a bad value is one line and exit 2."""
    source = f"{args.config} + --set" if args.config else "--set"
    try:
        data = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
        for item in args.overrides:
            data = deep_merge(data, parse_override(item, raw_keys))
        return model.model_validate(deep_merge(data, {k: v for k, v in fixed.items() if v is not None}))
    except ValidationError as e:
        parser.exit(2, one_line(explain_invalid(e, source, model)) + "\n")
    except (OSError, yaml.YAMLError, ValueError) as e:
        parser.exit(2, one_line(f"invalid config ({source}): {e}") + "\n")


def explain_invalid(e: ValidationError, source: str, model: type[BaseModel]) -> str:
    """Every problem of ``e`` on one line: the key, what is wrong, and how to fix it."""
    problems = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            known = ", ".join(sorted(parent.model_fields)) if parent else "see the YAML"
            problems.append(f"unknown key '{key}' (valid keys here: {known})")
        elif err["type"] == "value_error":  # a validator's own message, which says how to fix it
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"'{key}': {message}" if key else message)
        else:
            got = err.get("input")
            problems.append(f"'{key}': {err['msg']} (got {got!r}); fix it in the YAML or with --set {key}=VALUE")
    return f"invalid config ({source}): " + "; ".join(problems)


def _model_at(model: type[BaseModel], loc) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def run_stage_cli(main: Callable[[], int | None], *user_errors: type[BaseException]) -> NoReturn:
    """``python -m tasks.<project>.<stage>``: run ``main``; a user error (``adapters.user_errors``) is one line and exit 2."""
    errors = user_error_types(*user_errors)
    try:
        code = main()
    except errors as e:
        print(one_line(e), file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
