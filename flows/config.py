"""Project configuration: YAML + profile overlay + ``--set`` overrides, validated by pydantic.

Order of precedence (later wins): ``configs/<project>.yaml`` → ``configs/profiles/<profile>.yaml``
(its ``default:`` block, then its ``<project>:`` block) → ``--set key=value`` → explicit CLI flags.
``LABTUNE_DATA_DIR`` in the environment replaces ``data_dir`` unless ``--data-dir`` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.user_errors import UserInputError
from tasks.training.export_gguf import ExportConfig
from tasks.training.mix_datasets import MixConfig
from tasks.common.stage_cli import deep_merge, explain_invalid, parse_override
from tasks.training.train_sft import SFTStageConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
PROFILES = ("local", "gpu")

M = TypeVar("M", bound=BaseModel)


class RunnerConfig(BaseModel):
    """Where sharded data stages run: in the flow's process, or on a Dask cluster (prefect-dask)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["default", "dask"] = Field("default", description="'default' runs every stage in the flow's process; "
                                         "'dask' runs the shards of the data stages that split their work (quantum-mind "
                                         "encode: one per Well file; verify: blocks of code items) as Prefect tasks on Dask")
    address: str | None = Field(None, description="Scheduler of a running Dask cluster (e.g. tcp://10.0.0.5:8786); None starts "
                                                  "a local cluster of n_workers processes for each sharded stage")
    n_workers: int = Field(2, ge=1, description="Worker processes of the local Dask cluster (one per core)")
    threads_per_worker: int = Field(1, ge=1, description="Threads per local Dask worker (1: the stages are CPU-bound Python)")

    @model_validator(mode="after")
    def _usable(self):
        if self.kind == "default" and self.address:
            raise ValueError(f"runner.address={self.address!r} is only used with runner.kind=dask")
        if self.kind == "dask" and importlib.util.find_spec("prefect_dask") is None:
            raise ValueError("runner.kind=dask needs the prefect-dask package: pip install prefect-dask==0.3.7 "
                             "(or set runner.kind=default)")
        return self


class ProjectConfig(BaseModel):
    """What every project config has: where outputs go, and the shared mix → SFT → export stages."""

    model_config = ConfigDict(extra="forbid")
    profile: str = Field("local", description="Profile the config was loaded with")
    data_dir: Path = Field(Path("data"), description="Root of all outputs; a project writes to <data_dir>/<project>")
    mix: MixConfig = Field(default_factory=MixConfig, description="Source shares and validation split")
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig, description="Fine-tuning")
    export: ExportConfig = Field(default_factory=ExportConfig, description="GGUF export and llama.cpp parity check")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Task runner of the sharded data stages")

    def project_root(self, project: str) -> Path:
        """``<data_dir>/<project>``, and the embedded-model cache next to it unless configured."""
        root = self.data_dir.resolve() / project.replace("-", "_")
        if self.sft.model_cache_dir is None:
            self.sft.model_cache_dir = root.parent / "cache" / "models"
        return root


class ConfigError(ValueError, UserInputError):
    """A config problem, with the key and how to fix it (one line: the CLIs print it as it is)."""


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(
    model: type[M],
    project: str,
    *,
    config: Path | None = None,
    profile: str = "local",
    overrides: list[str] | None = None,
    extra: dict | None = None,
) -> M:
    """Load and validate a project's config; raises ConfigError naming the bad key."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    path = Path(config) if config else CONFIG_DIR / f"{project.replace('-', '_')}.yaml"
    data = _load_yaml(path)
    prof = _load_yaml(CONFIG_DIR / "profiles" / f"{profile}.yaml")
    data = deep_merge(data, prof.get("default", {}))
    data = deep_merge(data, prof.get(project.replace("-", "_"), {}))
    for item in overrides or []:
        try:
            data = deep_merge(data, parse_override(item))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    data = deep_merge(data, extra or {})
    if os.environ.get("LABTUNE_DATA_DIR") and "data_dir" not in (extra or {}):
        data["data_dir"] = os.environ["LABTUNE_DATA_DIR"]
    data["profile"] = profile
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain_invalid(e, f"{path} + profile {profile}", model)) from None


def add_common_args(parser: argparse.ArgumentParser, project: str) -> None:
    """The options every ``python -m flows.<project>`` accepts."""
    parser.add_argument("--config", type=Path, help=f"project YAML (default: configs/{project.replace('-', '_')}.yaml)")
    parser.add_argument("--profile", choices=PROFILES, default="local",
                        help="local = CPU + embedded SmolLM2-135M (default); gpu = full-size model on a GPU")
    parser.add_argument("--data-dir", type=Path, help="where outputs go (default: data/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. --set sft.trainer.max_steps=20 (repeatable)")
