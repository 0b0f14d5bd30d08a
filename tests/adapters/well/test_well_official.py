"""labtune's Well files and stats.yaml through the official the_well 1.2.0: its WellDataset loads every
embedded dataset (and a sphere written as .h5) with ZScoreNormalization, RMSNormalization and, for
deltas, DeltaWellDataset, and normalises each channel with the train split's statistics.

the_well pins fsspec==2024.10.0, so it is no dependency of labtune: `make setup` installs it with
--no-deps into .venv/the_well_official, and it only runs here, in a subprocess with that directory on
PYTHONPATH, so its imports never meet the test process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from adapters.well import the_well as tw
from adapters.well import well_cli
from adapters.well import well_solvers as ws
from adapters.well import well_writer as ww

OFFICIAL = Path(sys.prefix) / "the_well_official"
pytestmark = pytest.mark.skipif(
    not (OFFICIAL / "the_well").is_dir(),
    reason=f"the official the_well is not installed at {OFFICIAL}: run `make setup` (it installs the_well==1.2.0 "
           f"there with --no-deps, beside the venv, because it pins an old fsspec)")

# Runs under the official package: one JSON object per dataset split, with the channel means of the first
# sample raw and under each normaliser, so the test can check which statistic reached which channel.
PROBE = r"""
import json, os, sys
from the_well.data import DeltaWellDataset, WellDataset
from the_well.data.normalization import RMSNormalization, ZScoreNormalization

def channel_means(t):
    return t.reshape(-1, t.shape[-1]).double().mean(0).tolist()

out = {}
for path in sys.argv[1:]:
    for split in ("train", "valid", "test"):
        if not os.path.isdir(os.path.join(path, "data", split)):
            continue
        raw = WellDataset(path=path, well_split_name=split)
        sample = raw[0]
        row = {"fields": raw.core_field_names, "constants": raw.core_constant_field_names,
               "grid_type": str(raw.metadata.grid_type), "shape": list(sample["input_fields"].shape),
               "raw": channel_means(sample["input_fields"]), "raw_output": channel_means(sample["output_fields"])}
        for norm in (ZScoreNormalization, RMSNormalization):
            ds = WellDataset(path=path, well_split_name=split, use_normalization=True, normalization_type=norm)
            got = ds[0]
            # the benchmark trainer's channel-wise path: fails on a wrong number of statistics per field
            ds.norm.normalize_flattened(sample["input_fields"], "variable")
            if "constant_fields" in sample:
                ds.norm.normalize_flattened(sample["constant_fields"], "constant")
            row[norm.__name__] = channel_means(got["input_fields"])
        delta = DeltaWellDataset(path=path, well_split_name=split, use_normalization=True, normalization_type=ZScoreNormalization)
        row["delta_output"] = channel_means(delta[0]["output_fields"])
        out[f"{os.path.basename(path)}/{split}"] = row
print(json.dumps(out))
"""


def sphere_dataset(root: Path) -> Path:
    """A small equiangular dataset with a scalar and a vector field, written as .h5 files."""
    theta = (np.arange(8) + 0.5) * np.pi / 8
    phi = np.arange(16) * 2 * np.pi / 16
    T, P = np.meshgrid(theta, phi, indexing="ij")
    t = np.linspace(0, 1, 6)
    rng = np.random.default_rng(5)
    ds = ws.SimulatedDataset("sphere", ("theta", "phi"), {"theta": theta, "phi": phi}, t, {"theta": "OPEN", "phi": "PERIODIC"},
                             {"h": 0, "wind": 1}, [], grid_type="equiangular")
    for split, shift in (("train", 0.0), ("valid", 3.0)):
        runs = [ws.Run({"h": shift + np.cos(T - k)[None] * (1 + t[:, None, None]),
                        "wind": shift + rng.random((len(t), 8, 16, 2)) * [1.0, 5.0]}, {}) for k in range(2)]
        pset = ws.ParameterSet({"g": 9.8}, runs, constant_fields={"orography": (0, np.sin(P))})
        ww.write_well_file(root / "sphere" / "data" / split / f"sphere_{split}.h5", ds, pset, runs)
    ww.write_stats_yaml(root / "sphere")
    return root / "sphere"


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, list[Path], dict]:
    root = tmp_path_factory.mktemp("well")
    well_cli.main(["generate", "--out", str(root)])
    datasets = [root / "datasets" / name for name in ws.SOLVERS] + [sphere_dataset(root / "extra")]
    env = {**os.environ, "PYTHONPATH": str(OFFICIAL)}
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, datasets)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"the official WellDataset failed on labtune's files:\n{done.stderr[-4000:]}"
    return root, datasets, json.loads(done.stdout.splitlines()[-1])


def _flat(stats: dict, key: str, names: list[str]) -> np.ndarray:
    return np.concatenate([np.ravel(stats[key][n]) for n in names]) if names else np.zeros(0)


def test_the_official_reader_and_normalisers_take_every_dataset(official):
    _, datasets, rows = official
    for path in datasets:
        splits = [s for s in tw.SPLITS if (path / "data" / s).is_dir()]
        assert {f"{path.name}/{s}" for s in splits} <= set(rows), path.name
        stats = yaml.safe_load((path / "stats.yaml").read_text())
        first = next(tw.read_trajectories(path))
        for split in splits:
            row = rows[f"{path.name}/{split}"]
            assert row["shape"][1:-1] == list(first.shape) and row["grid_type"] == first.grid_type
            names = row["fields"]
            raw = np.array(row["raw"])
            mean = _flat(stats, "mean", names)
            std, rms = (np.maximum(_flat(stats, k, names), 1e-4) for k in ("std", "rms"))
            # each channel is normalised by its own component's statistics (min_denom 1e-4, as the_well clips)
            np.testing.assert_allclose(row["ZScoreNormalization"], (raw - mean) / std, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(row["RMSNormalization"], raw / rms, rtol=1e-4, atol=1e-5)
            mean_d, std_d = _flat(stats, "mean_delta", names), np.maximum(_flat(stats, "std_delta", names), 1e-4)
            raw_delta = np.array(row["raw_output"]) - raw  # one input and one output step
            np.testing.assert_allclose(row["delta_output"], (raw_delta - mean_d) / std_d, rtol=1e-4, atol=1e-4)
    assert rows["cellular_flow_2d/train"]["constants"] == ["velocity"]  # a time-invariant field, normalised too
    assert rows["sphere/valid"]["constants"] == ["orography"] and rows["sphere/train"]["grid_type"] == "equiangular"
    assert rows["acoustic_wave_2d/train"]["shape"][-1] == 3  # pressure + 2 velocity components


def _pooled_mean(dataset: Path, name: str, order: int, splits: list[str]) -> np.ndarray:
    """Mean per component of a time-varying field over the files of ``splits``, read with h5py."""
    arrays = []
    for f in sorted(p for s in splits for p in (dataset / "data" / s).glob("*.h*5")):
        with h5py.File(f, "r") as h:
            data = h[f"t{order}_fields/{name}"][()].astype(np.float64)
        arrays.append(data.reshape((-1,) + data.shape[data.ndim - order:]))
    return np.concatenate(arrays).mean(0)


def test_stats_are_the_train_splits_own(official):
    """Means per component over the train files (read with h5py, not labtune's reader) match stats.yaml; the
    same over all splits would not."""
    _, datasets, _ = official
    differs = []
    for path in datasets:
        stats = yaml.safe_load((path / "stats.yaml").read_text())
        for name, order in next(tw.read_trajectories(path)).field_order.items():
            if name not in stats["mean_delta"]:
                continue  # time-invariant: stored once per file, not per sample
            train = _pooled_mean(path, name, order, ["train"])
            np.testing.assert_allclose(stats["mean"][name], train, rtol=1e-6, atol=1e-9, err_msg=f"{path.name}/{name}")
            every = _pooled_mean(path, name, order, [s for s in tw.SPLITS if (path / "data" / s).is_dir()])
            differs.append(not np.allclose(every, train, rtol=1e-3, atol=1e-6))
    assert sum(differs) >= 5, "the splits hardly differ: this test could not tell train-only statistics apart"
