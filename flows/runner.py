"""What every project flow does around its stages: open the configured task runner, time them and
write ``summary.json``."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.user_errors import one_line, user_error_types
from tasks.common.reporting import publish_table
from tasks.common.shards import sharding_on
from tasks.common.stage import read_manifest, write_json_atomic

if TYPE_CHECKING:
    from flows.config import RunnerConfig


class StageTimer:
    """Calls stages inside the configured task runner, recording each one's wall time and output for the summary."""

    def __init__(self, runner: RunnerConfig | None = None) -> None:
        self.runner = runner
        self.stages: dict[str, dict[str, Any]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, task: Callable, *args, **kwargs) -> Path:
        started = time.time()
        with scale_out(self.runner):
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
            "runner": self.runner.kind if self.runner else "default",
            "stages": self.stages,
            **extra,
        }
        write_json_atomic(path, summary)
        rows = [{"stage": k, "wall_time_s": v["wall_time_s"], "work_time_s": v["work_time_s"],
                 **{f"count.{c}": n for c, n in v["counts"].items()}} for k, v in self.stages.items()]
        publish_table(f"{project}-summary", rows, f"{project}: stage outputs and wall times (summary: {path})")
        return summary


@contextmanager
def scale_out(cfg: RunnerConfig | None) -> Iterator[None]:
    """Around one stage call: with ``runner.kind: dask``, a Dask task runner for the stage's shards.

    The cluster starts when the stage submits its first shard (prefect-dask connects lazily), so a
    cached stage or one that does not shard costs nothing, and it stops when the stage returns.
    """
    if cfg is None or cfg.kind == "default":
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runner = dask_task_runner(cfg)
    # Shard tasks report to the flow's Prefect API. In ephemeral mode that API is a temporary server
    # known to this process only; without its URL each Dask worker would start a server of its own.
    api_url = PREFECT_API_URL.value() or _ephemeral_api_url()
    with temporary_settings({PREFECT_API_URL: api_url}) if api_url else nullcontext(), runner, sharding_on(runner):
        yield


def dask_task_runner(cfg: RunnerConfig):
    """A prefect-dask ``DaskTaskRunner``: on the cluster at ``cfg.address``, or on a local cluster of processes."""
    # Dask logs every scheduler, nanny and worker start and stop at INFO, in this process and in each
    # worker (which read the variable at import): keep its warnings unless the user asked for more.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(os.environ["DASK_LOGGING__DISTRIBUTED"].upper())
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RuntimeError("runner.kind=dask needs the prefect-dask package: pip install prefect-dask==0.3.7 "
                           "(or set runner.kind=default)") from None
    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.n_workers, "threads_per_worker": cfg.threads_per_worker,
                                          "processes": True, "dashboard_address": ":0"})


def _ephemeral_api_url() -> str | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.client.api_url) if ctx and ctx.client else None


def flow_params(args) -> dict:
    """The flow parameters every project takes, from parsed ``add_common_args`` options."""
    return dict(config=str(args.config) if args.config else None, profile=args.profile,
                data_dir=str(args.data_dir) if args.data_dir else None, overrides=args.overrides)


class _UserErrorsOnce(logging.Filter):
    """Keeps Prefect's console from printing a user error (with its traceback) that the CLI prints as one line.

    Only the terminal is spared: the API log handler still sends the full record to the Prefect UI.
    """

    FAILED = re.compile(r"^Finished in state Failed\(.*?exception:? (\w+):")

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.errors):
            return False
        failed = self.FAILED.match(record.getMessage())
        return not (failed and failed.group(1) in _names(self.errors))


def _names(classes) -> set[str]:
    """Names of the classes and all their subclasses (how Prefect's state messages name an exception)."""
    names, todo = set(), list(classes)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return names


@contextmanager
def user_errors_printed_once(errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """While a flow runs from the CLI, leave the reporting of ``errors`` to the CLI's one line."""
    handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    quiet = _UserErrorsOnce(errors)
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def run_flow_cli(flow_fn, project: str, config_model, params: dict, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Validate the config (cheap, before any work), run the flow, print its headline.

    A ``UserInputError`` (a config error, a bad record, a missing key or directory, an unreachable lab),
    a missing file, or one of ``user_errors`` (errors of modules outside that family) ends as one line
    on stderr and exit 2.
    """
    import sys

    from flows.config import load_config

    errors = user_error_types(*user_errors)
    try:
        load_config(config_model, project, config=params["config"], profile=params["profile"], overrides=params["overrides"])
        with user_errors_printed_once(errors):
            summary = flow_fn(**params)
    except errors as e:
        print(one_line(e), file=sys.stderr)
        return 2
    if summary.get("evaluation_table"):
        print(f"{project}: held-out evaluation, base vs trained\n{summary['evaluation_table']}")
    if summary.get("validation_table"):
        print(f"{project}: validation suite, one column per model\n{summary['validation_table']}")
    print(f"{project}: eval loss {summary.get('eval_loss_before')} → {summary.get('eval_loss_after')}; "
          f"GGUF parity {summary.get('parity_rate')}; installed in Ollama: {summary.get('installed')}")
    print(f"summary: {summary.get('summary_path')}")
    return 0


def project_main(flow_fn, project: str, config_model, doc: str, argv: list[str] | None = None,
                 user_errors: tuple[type[Exception], ...] = ()) -> int:
    """``python -m flows.<project>`` for a flow that takes only the common options."""
    import argparse

    from flows.config import add_common_args

    parser = argparse.ArgumentParser(prog=f"python -m flows.{project.replace('-', '_')}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, project)
    return run_flow_cli(flow_fn, project, config_model, flow_params(parser.parse_args(argv)), user_errors)
