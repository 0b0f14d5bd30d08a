"""What a stage shows people: Prefect artifacts when running inside Prefect, a terminal bar always.

Outside a flow or task run (e.g. ``python -m tasks.training.mix_datasets``) artifacts are skipped
rather than spinning up Prefect's ephemeral API for them.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Iterable


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def say(message: str) -> None:
    """A progress/decision message: the Prefect run log inside a run (shown in the UI), else the terminal.

    Used instead of flow-wide ``log_prints``, which also forwards third-party prints made under
    ``contextlib.redirect_stdout`` (datasets' fingerprinting dumps bytecode that way).
    """
    if _in_prefect_run():
        from prefect import get_run_logger

        get_run_logger().info(message)
    else:
        print(message, flush=True)


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def publish_table(key: str, rows: list[dict], description: str) -> None:
    """A table artifact (one dict per row)."""
    if rows and _in_prefect_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(key=artifact_key(key), table=rows, description=description)


def publish_markdown(key: str, markdown: str, description: str = "") -> None:
    """A markdown artifact."""
    if _in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=description)


def publish_image(key: str, png: Path, title: str) -> None:
    """A PNG shown inline in the Prefect UI (embedded as a data URI in a markdown artifact)."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    publish_markdown(key, f"### {title}\n\n![{title}](data:image/png;base64,{data})\n\nFile: `{png}`", title)


def counts_table(counts: dict, metrics: dict | None = None) -> list[dict]:
    """Rows of ``{"name", "value"}`` for a stage's counts and metrics."""
    rows = [{"name": k, "value": v} for k, v in counts.items()]
    rows += [{"name": k, "value": v} for k, v in (metrics or {}).items()]
    return rows


class StageProgress:
    """Progress of a long stage: a rich bar in the terminal and a Prefect progress artifact."""

    def __init__(self, description: str, total: int):
        self.description, self.total, self.done = description, max(total, 1), 0
        self._artifact_id = None
        self._last_pct = -1
        self._bar = None
        if _in_prefect_run():
            from prefect.artifacts import create_progress_artifact

            self._artifact_id = create_progress_artifact(progress=0.0, description=description)
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(description, total=self.total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        pct = int(100 * self.done / self.total)
        if self._artifact_id is not None and pct != self._last_pct and (pct % 5 == 0 or pct == 100):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self._artifact_id, progress=float(pct))
        self._last_pct = pct

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable, description: str, total: int) -> Iterable:
    """Iterate with progress reporting."""
    with StageProgress(description, total) as progress:
        for item in items:
            yield item
            progress.advance()
