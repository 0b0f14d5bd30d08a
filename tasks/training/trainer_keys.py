"""The keys ``trl.SFTConfig`` accepts, read from the installed sources without importing them.

``sft.trainer`` is passed as-is into ``SFTConfig(**...)``; a typo there used to surface as a TypeError
only after the data stages had run. Importing trl to check would load torch into every config check, so
the dataclass fields are read from the source files (``SFTConfig`` and its bases) with ``ast`` instead.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from functools import lru_cache

# (module, class) of SFTConfig and the classes it extends, most specific first.
SOURCES = (("trl.trainer.sft_config", "SFTConfig"), ("trl.trainer.base_config", "_BaseConfig"),
           ("transformers.training_args", "TrainingArguments"))
LABTUNE_VALUES = {"bf16": ("auto",)}  # values labtune resolves before SFTConfig sees them


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    """Field names of ``trl.SFTConfig`` (empty when trl is not installed: nothing can be checked)."""
    names: set[str] = set()
    for module, cls in SOURCES:
        spec = importlib.util.find_spec(module.rsplit(".", 1)[0]) and importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls:
                names.update(n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
    return frozenset(n for n in names if not n.startswith("_"))


def unknown_trainer_keys(trainer: dict) -> list[str]:
    """One message per key of ``trainer`` that SFTConfig does not have, with the nearest real key."""
    fields = sft_config_fields()
    if not fields:
        return []
    problems = []
    for key in trainer:
        if key not in fields:
            near = difflib.get_close_matches(key, sorted(fields), n=1)
            problems.append(f"sft.trainer.{key} is not a trl.SFTConfig field"
                            + (f" (did you mean sft.trainer.{near[0]}?)" if near else ""))
    return problems
