"""Check that every stage's Prefect cache key is the key its manifest records, for the parameters its flow passed.

The stage body skips work whose manifest carries its key; Prefect skips a task whose cache key it has seen. Were
the two keys different, Prefect would never hit and only the body's own check would save the work (as it was for
sft and describe). A flow test runs its flow inside ``recording_cache_keys()`` and hands what it recorded to
``check_keys``: the key Prefect computes from each stage's last parameters must be the key in that stage's manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from prefect.cache_policies import CacheKeyFnPolicy

from tasks.common.stage import prefect_cache_key, read_manifest


@contextmanager
def recording_cache_keys() -> Iterator[list[tuple]]:
    """Yields the (task, parameters) of every cache key Prefect asks a stage for, in order."""
    calls: list[tuple] = []
    compute_key = CacheKeyFnPolicy.compute_key

    def recorded(self, task_ctx, inputs, flow_parameters, **kwargs):
        calls.append((task_ctx.task, dict(inputs)))
        return compute_key(self, task_ctx, inputs, flow_parameters, **kwargs)

    with mock.patch.object(CacheKeyFnPolicy, "compute_key", recorded):
        yield calls


def check_keys(calls: list[tuple]) -> set[str]:
    """Assert that each stage output's Prefect key is its manifest key; returns the stages checked."""
    last = {Path(params["out_dir"]).resolve(): (task, params) for task, params in calls}  # a re-run's parameters win
    wrong, checked = [], set()
    for out_dir, (task, params) in last.items():
        manifest = read_manifest(out_dir)
        assert manifest, f"{task.name}: no finished output in {out_dir}"
        want = f"{manifest['key']}-{hashlib.sha256(str(out_dir).encode()).hexdigest()[:12]}"
        context = SimpleNamespace(task=task)
        got = task.cache_policy.compute_key(context, params, {})
        if task.name == "install" and not manifest.get("installed"):
            # install never lets Prefect reuse an output whose model was not installed; the key it keeps is the shared one
            got, want = (got, prefect_cache_key(context, params)), (None, want)
        if got != want:
            wrong.append(f"{task.name} ({out_dir}): Prefect's key {got}, the manifest's {want}")
        checked.add(task.name)
    assert not wrong, "Prefect's cache key is not the stage's manifest key:\n" + "\n".join(wrong)
    return checked
