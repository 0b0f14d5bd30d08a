"""The hyperparameter search space: named choices per SFT setting, one-hot encoded as binary variables.

A dimension is a dotted path into the SFT stage config (``trainer.learning_rate``, ``lora.r``,
``lora.target_modules``, ...) with a list of values. A point is one choice index per dimension;
its encoding sets one variable per dimension, and the groups of variables are the QUBO's one-hot
constraints.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.qubo.qubo import QUBO
from tasks.common.stage_cli import deep_merge
from tasks.training.train_sft import SFTStageConfig

Point = tuple[int, ...]


class SearchSpace(BaseModel):
    """Dimensions to search: dotted SFT-config path → the values to choose from."""

    model_config = ConfigDict(extra="forbid")
    dimensions: dict[str, list[Any]] = Field(
        default_factory=lambda: {
            "trainer.learning_rate": [3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3],
            "lora.r": [4, 16],
            "lora.alpha": [8, 32],
            "lora.target_modules": [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]],
        },
        description="SFT setting (dotted path into sft:, e.g. trainer.learning_rate, lora.r, lora.dropout, "
                    "trainer.gradient_accumulation_steps, trainer.warmup_steps) → list of values to choose from")

    @field_validator("dimensions")
    @classmethod
    def _valid(cls, dims: dict[str, list]) -> dict[str, list]:
        if not dims:
            raise ValueError("the search space needs at least one dimension")
        for path, values in dims.items():
            if len(values) < 2:
                raise ValueError(f"dimension {path!r} needs at least two values to choose from, got {values}")
            head = path.split(".")[0]
            if head not in SFTStageConfig.model_fields:
                raise ValueError(f"dimension {path!r}: {head!r} is not an sft setting "
                                 f"(choose from {', '.join(SFTStageConfig.model_fields)})")
            for v in values:  # every value must make a valid SFT config
                SFTStageConfig.model_validate(_nested(path, v))
        return dims

    @property
    def names(self) -> list[str]:
        return list(self.dimensions)

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.dimensions.values()]

    @property
    def n_variables(self) -> int:
        return sum(self.sizes)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.sizes))

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Variable indices of each dimension (the one-hot groups)."""
        starts = np.cumsum([0, *self.sizes])
        return tuple(tuple(range(starts[d], starts[d + 1])) for d in range(len(self.sizes)))

    def encode(self, point: Point) -> np.ndarray:
        x = np.zeros(self.n_variables, dtype=int)
        for g, choice in zip(self.groups(), point):
            x[g[choice]] = 1
        return x

    def decode(self, x: np.ndarray) -> Point:
        """The point of a feasible assignment (exactly one variable per group)."""
        point = []
        for g in self.groups():
            on = [i for i, v in enumerate(np.asarray(x)[list(g)]) if v]
            if len(on) != 1:
                raise ValueError(f"assignment breaks the one-hot group {g}: {list(np.asarray(x)[list(g)])}")
            point.append(on[0])
        return tuple(point)

    def values(self, point: Point) -> dict[str, Any]:
        return {name: self.dimensions[name][i] for name, i in zip(self.names, point)}

    def point_of(self, values: dict[str, Any]) -> Point:
        """The point whose values these are; a value outside the space is an error naming the choices."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise ValueError(f"not in the search space: {sorted(unknown)} (dimensions: {self.names})")
        point = []
        for name in self.names:
            choices = self.dimensions[name]
            if name not in values or values[name] not in choices:
                raise ValueError(f"{name} = {values.get(name)!r} is not one of its choices {choices}")
            point.append(choices.index(values[name]))
        return tuple(point)

    def all_points(self) -> list[Point]:
        return list(itertools.product(*(range(s) for s in self.sizes)))

    def apply(self, sft: SFTStageConfig, point: Point) -> SFTStageConfig:
        """``sft`` with this point's values in place."""
        data = sft.model_dump()
        for path, value in self.values(point).items():
            data = deep_merge(data, _nested(path, value))
        return SFTStageConfig.model_validate(data)

    def label(self, point: Point) -> str:
        """Short human form: ``learning_rate=3e-04 r=16 ...``."""
        return " ".join(f"{name.split('.')[-1]}={_short(v)}" for name, v in self.values(point).items())

    def empty_qubo(self) -> QUBO:
        return QUBO(np.zeros((self.n_variables, self.n_variables)), 0.0, self.groups())


def point_id(values: dict[str, Any]) -> str:
    """A stable short id of a hyperparameter setting (trial directory names)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _nested(path: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(path.split(".")):
        node = {part: node}
    return node


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0e}"
    if isinstance(v, list):
        return f"{len(v)}mod" if all(isinstance(s, str) for s in v) else str(v)
    return str(v)
