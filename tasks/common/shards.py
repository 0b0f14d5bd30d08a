"""Scale-out of stages whose work splits into independent shards (Well files, code items).

The flow opens its configured task runner around each stage call (``runner.kind: dask`` in the
project config; see flows/runner.py) and publishes it here. A stage that can shard asks
``shard_runner()``; when one is open it hands its shards to ``map_shards``, which submits one
Prefect task per shard to that runner and returns the results in shard order, so the merged output
is the same bytes wherever and in whatever order the shards ran. With no runner open (the default,
and ``python -m tasks.<project>.<stage>``) the stage does its work in-process, as it always has.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from tasks.common.reporting import StageProgress

if TYPE_CHECKING:
    from prefect import Task
    from prefect.task_runners import TaskRunner

_RUNNER: ContextVar[TaskRunner | None] = ContextVar("labtune_shard_runner", default=None)


@contextmanager
def sharding_on(runner: TaskRunner) -> Iterator[None]:
    """Make ``runner`` (an entered Prefect task runner) the one stages submit their shards to."""
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def shard_runner() -> TaskRunner | None:
    """The task runner shards go to, or None when the stage should run in-process."""
    return _RUNNER.get()


def map_shards(shard_task: Task, shards: list[dict[str, Any]], description: str,
               sizes: list[int] | None = None) -> list[Any]:
    """Run ``shard_task(**shard)`` for every shard on the open runner; results in shard order.

    ``sizes`` (units per shard) drive the progress bar. A failed shard raises its own exception.
    """
    runner = _RUNNER.get()
    if runner is None:
        raise RuntimeError("map_shards needs an open task runner (check shard_runner() first)")
    sizes = sizes or [1] * len(shards)
    futures = [runner.submit(shard_task, parameters=shard) for shard in shards]
    results = []
    with StageProgress(description, sum(sizes)) as progress:
        for future, size in zip(futures, sizes):
            results.append(future.result())
            progress.advance(size)
    return results
