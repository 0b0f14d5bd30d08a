"""Write The Well's format: ``write_well_file`` (the runs of one parameter set of an
``adapters.well.well_solvers.SimulatedDataset`` as one file) and ``write_stats_yaml`` (the ``stats.yaml``
that the_well's ``ZScoreNormalization`` and ``RMSNormalization`` read).

stats.yaml as the real datasets ship it: top-level ``mean, std, rms`` and ``mean_delta, std_delta,
rms_delta``, each mapping a field to a float (t0), one float per component (t1) or a D×D nested list
(t2). Time-invariant fields appear only in ``mean, std, rms``; deltas are between consecutive time
steps. Statistics come from the train split only, so valid/test never leak into the normalisation.

    python -m adapters.well.well_cli stats datasets/NAME     # (re)write datasets/NAME/stats.yaml
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from adapters.well.the_well import FIELD_GROUPS, TRUTH_ATTR, read_trajectories

STATS = ("mean", "std", "rms")


def write_well_file(path: Path, ds, pset, runs) -> None:
    """Write runs of one parameter set of a ``well_solvers.SimulatedDataset`` as one Well file."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = pset.time if pset.time is not None else ds.time
    coords = pset.coords or ds.coords
    ndim = len(ds.spatial_dims)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.attrs["dataset_name"] = ds.name
        f.attrs["grid_type"] = ds.grid_type
        f.attrs["n_spatial_dims"] = ndim
        f.attrs["n_trajectories"] = len(runs)
        f.attrs["simulation_parameters"] = list(pset.params)
        for k, v in pset.params.items():
            f.attrs[k] = v
        f.attrs[TRUTH_ATTR] = json.dumps([r.truth for r in runs])
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = list(ds.spatial_dims)
        for name, values, timed in [("time", t, True)] + [(d, coords[d], False) for d in ds.spatial_dims]:
            d = dims.create_dataset(name, data=np.asarray(values, np.float32))
            d.attrs["sample_varying"], d.attrs["time_varying"] = False, timed
        bcs = f.create_group("boundary_conditions")
        for axis, kind in ds.boundary.items():
            g = bcs.create_group(f"{axis}_{kind.lower()}")
            g.attrs["bc_type"], g.attrs["associated_dims"] = kind, [axis]
            g.attrs["associated_fields"] = []
            g.attrs["sample_varying"], g.attrs["time_varying"] = False, False
            mask = np.zeros(len(coords[axis]), bool)
            mask[[0, -1]] = True
            g.create_dataset("mask", data=mask)
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = list(pset.params)
        for k, v in pset.params.items():
            d = scalars.create_dataset(k, data=np.asarray(v))
            d.attrs["sample_varying"], d.attrs["time_varying"] = False, False
        groups = [f.create_group(g) for g in FIELD_GROUPS]
        names: list[list[str]] = [[], [], []]
        for name, order in ds.field_order.items():
            d = groups[order].create_dataset(name, data=np.stack([r.fields[name] for r in runs]).astype(np.float32))
            d.attrs["dim_varying"], d.attrs["sample_varying"], d.attrs["time_varying"] = [True] * ndim, True, True
            names[order].append(name)
        for name, (order, values) in pset.constant_fields.items():
            d = groups[order].create_dataset(name, data=np.asarray(values, np.float32))
            d.attrs["dim_varying"], d.attrs["sample_varying"], d.attrs["time_varying"] = [True] * ndim, False, False
            names[order].append(name)
        for g, n in zip(groups, names):
            g.attrs["field_names"] = n
    os.replace(tmp, path)


class _Moments:
    """Count, mean and summed squared deviation per component, merged chunk by chunk (Chan et al.), so a
    dataset is never held in memory at once and large means do not swamp the variance."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape, self.n, self.mean, self.m2 = shape, 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(-1, int(np.prod(self.shape)))
        if not len(x):
            return
        mean, n = x.mean(0), self.n + len(x)
        delta = mean - self.mean
        self.m2 = self.m2 + ((x - mean) ** 2).sum(0) + delta ** 2 * self.n * len(x) / n
        self.mean, self.n = self.mean + delta * len(x) / n, n

    def stats(self) -> dict[str, float | list]:
        """mean, std, rms as floats (t0) or nested lists of the field's tensor shape (t1, t2)."""
        if not self.n:
            return {k: 0.0 if not self.shape else np.zeros(self.shape).tolist() for k in STATS}
        std = np.sqrt(self.m2 / self.n)
        values = {"mean": self.mean, "std": std, "rms": np.sqrt(std ** 2 + self.mean ** 2)}
        return {k: float(v[0]) if not self.shape else np.asarray(v).reshape(self.shape).tolist() for k, v in values.items()}


def write_stats_yaml(dataset_dir: Path | str) -> Path:
    """Write ``dataset_dir/stats.yaml`` from the dataset's train split, in the real datasets' layout."""
    import yaml

    values: dict[str, _Moments] = {}
    deltas: dict[str, _Moments] = {}
    for traj in read_trajectories(dataset_dir, splits=("train",)):
        for name, f in [*traj.fields.items(), *traj.constant_fields.items()]:
            shape = (traj.n_spatial_dims,) * traj.field_order[name]
            values.setdefault(name, _Moments(shape)).add(f)
            if name in traj.fields:
                deltas.setdefault(name, _Moments(shape)).add(np.diff(f, axis=0))
    stats: dict[str, dict] = {k + suffix: {} for suffix in ("", "_delta") for k in STATS}
    for suffix, moments in (("", values), ("_delta", deltas)):
        for name, m in moments.items():
            for key, v in m.stats().items():
                stats[key + suffix][name] = v
    path = Path(dataset_dir) / "stats.yaml"
    path.write_text(yaml.safe_dump(stats, sort_keys=True))
    return path
