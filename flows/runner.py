"""What every project flow does around its stages: time them and write ``summary.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tasks.reporting import publish_table
from tasks.stage import read_manifest, write_json_atomic


class StageTimer:
    """Calls stages, recording each one's wall time and output directory for the summary."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, task: Callable, *args, **kwargs) -> Path:
        started = time.time()
        out = task(*args, **kwargs)
        manifest = read_manifest(out) or {}
        self.stages[name] = {
            "output": str(out),
            "wall_time_s": round(time.time() - started, 2),
            "work_time_s": manifest.get("wall_time_s"),  # time spent when the output was made (cached runs reuse it)
            "counts": manifest.get("counts", {}),
            "metrics": manifest.get("metrics", {}),
        }
        self.manifests[name] = manifest
        return out

    def write_summary(self, path: Path, project: str, profile: str, **extra) -> dict:
        """Write the flow's summary (stable keys: project, profile, stages, total_wall_time_s, ...)."""
        summary = {
            "project": project,
            "profile": profile,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "total_wall_time_s": round(sum(s["wall_time_s"] for s in self.stages.values()), 2),
            "summary_path": str(path),
            "stages": self.stages,
            **extra,
        }
        write_json_atomic(path, summary)
        rows = [{"stage": k, "wall_time_s": v["wall_time_s"], "work_time_s": v["work_time_s"],
                 **{f"count.{c}": n for c, n in v["counts"].items()}} for k, v in self.stages.items()]
        publish_table(f"{project}-summary", rows, f"{project}: stage outputs and wall times (summary: {path})")
        return summary


def flow_params(args) -> dict:
    """The flow parameters every project takes, from parsed ``add_common_args`` options."""
    return dict(config=str(args.config) if args.config else None, profile=args.profile,
                data_dir=str(args.data_dir) if args.data_dir else None, overrides=args.overrides)


def run_flow_cli(flow_fn, project: str, config_model, params: dict, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Validate the config (cheap, before any work), run the flow, print its headline; user errors exit 2."""
    import sys

    from flows.config import ConfigError, load_config
    from tasks.records import RecordError

    try:
        load_config(config_model, project, config=params["config"], profile=params["profile"], overrides=params["overrides"])
        summary = flow_fn(**params)
    except (ConfigError, RecordError, FileNotFoundError, *user_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{project}: eval loss {summary.get('eval_loss_before')} → {summary.get('eval_loss_after')}; "
          f"GGUF parity {summary.get('parity_rate')}; installed in Ollama: {summary.get('installed')}")
    print(f"summary: {summary.get('summary_path')}")
    return 0
