"""The Well (PolymathicAI) HDF5 trajectories: read them exactly as the format lays them out (files in
the same format are written by ``adapters.well.well_writer``; the embedded datasets come from ``adapters.well.well_solvers``).

Layout: ``datasets/NAME/data/{train,valid,test}/*.hdf5`` (or ``*.h5``; + ``datasets/NAME/stats.yaml``). One file
holds ``n_trajectories`` runs of one parameter set. Reading a local directory needs only h5py;
``hf://`` paths need the ``the_well`` package and network (imported lazily; it pins
``fsspec==2024.10.0``, so it is no dependency of labtune).

Generated files carry each run's known physics in the root attribute ``labtune_truth`` (a JSON list,
one entry per trajectory); ``read_truth`` is the only reader of it, so encoders never see it.

    python -m adapters.well.well_cli inspect data/the_well            # one line per trajectory (generate, stats: see there)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from adapters.user_errors import UserInputError

SPLITS = ("train", "valid", "test")
WELL_SUFFIXES = ("*.hdf5", "*.h5")  # the_well's reader globs both
GRID_TYPES = ("cartesian", "spherical", "equiangular")  # in the real datasets; any other string is read too
BC_TYPES = ("PERIODIC", "WALL", "OPEN")
TRUTH_ATTR = "labtune_truth"
ROOT_ATTRS = ("dataset_name", "grid_type", "n_spatial_dims", "n_trajectories", "simulation_parameters")
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")
FIELD_ATTRS = ("dim_varying", "sample_varying", "time_varying")
BC_ATTRS = ("bc_type", "associated_dims", "associated_fields", "sample_varying", "time_varying")


class WellFormatError(UserInputError, ValueError):
    """A file that does not follow The Well's layout; the message names the file and what is wrong."""


class WellSourceError(UserInputError, RuntimeError):
    """A Well source that cannot be reached (missing directory, ``the_well`` not installed, offline)."""


@dataclass
class Trajectory:
    """One trajectory of a Well file, as numpy arrays.

    ``fields``: time-varying fields by name, t0 ``(n_t, *spatial)``, t1 ``(n_t, *spatial, d)``,
    t2 ``(n_t, *spatial, d, d)``; ``constant_fields`` the same without the time axis.
    ``boundary``: per axis, the (low end, high end) condition; open unless a mask marks it.
    ``grid_type``: as the file says: "cartesian" (x, y, z), "spherical" (r, theta, phi), "equiangular"
    (theta, phi on a sphere) or a string labtune does not know, kept so the encoder can name it.
    """

    dataset: str
    file: str
    index: int
    time: np.ndarray
    coords: dict[str, np.ndarray]
    boundary: dict[str, tuple[str, str]]
    parameters: dict[str, Any]
    fields: dict[str, np.ndarray]
    field_order: dict[str, int]
    constant_fields: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    grid_type: str = "cartesian"

    @property
    def cartesian(self) -> bool:
        return self.grid_type.lower() == "cartesian"

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return tuple(self.coords)

    @property
    def n_spatial_dims(self) -> int:
        return len(self.coords)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.coords.values())


def _names(value) -> list[str]:
    """A list-of-strings attribute as h5py returns it (str, bytes, or an array, possibly empty float)."""
    if isinstance(value, (str, bytes)):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value).tolist()] if np.size(value) else []


def _plain(value):
    value = value.decode() if isinstance(value, bytes) else value
    return value.item() if isinstance(value, np.generic) else value


class WellFile:
    """One Well HDF5 file, validated on open; iterate for its trajectories."""

    def __init__(self, path: Path | str, fileobj: IO[bytes] | None = None):
        import h5py

        self.path = str(path)
        try:
            self._h5 = h5py.File(fileobj if fileobj is not None else path, "r")
        except OSError as e:
            raise WellFormatError(f"{self.path}: not a readable HDF5 file ({e})") from None
        try:
            self._validate()
        except BaseException:
            self._h5.close()
            raise

    def _fail(self, what: str):
        raise WellFormatError(f"{self.path}: {what} (The Well's layout: see adapters/well/the_well.py)")

    def _need_attrs(self, obj, names: Sequence[str], where: str) -> None:
        for name in names:
            if name not in obj.attrs:
                self._fail(f"missing attribute '{name}' on {where}")

    def _need(self, path: str, kind: str) -> Any:
        import h5py

        obj = self._h5.get(path)
        want = h5py.Group if kind == "group" else h5py.Dataset
        if not isinstance(obj, want):
            self._fail(f"missing {kind} '{path}'")
        return obj

    def _validate(self) -> None:
        f = self._h5
        self._need_attrs(f, ROOT_ATTRS, "the root group")
        self.grid_type = str(_plain(f.attrs["grid_type"])).strip()
        self.dataset_name = str(_plain(f.attrs["dataset_name"]))
        self.n_trajectories = int(f.attrs["n_trajectories"])
        self.parameter_names = _names(f.attrs["simulation_parameters"])
        self._need_attrs(f, self.parameter_names, "the root group (listed in simulation_parameters)")
        dims = self._need("dimensions", "group")
        self._need_attrs(dims, ["spatial_dims"], "group 'dimensions'")
        self.spatial_dims = _names(dims.attrs["spatial_dims"])
        if len(self.spatial_dims) != int(f.attrs["n_spatial_dims"]):
            self._fail(f"n_spatial_dims is {int(f.attrs['n_spatial_dims'])} but dimensions/spatial_dims lists {self.spatial_dims}")
        for d in ["time", *self.spatial_dims]:
            self._need_attrs(self._need(f"dimensions/{d}", "dataset"), ["sample_varying"], f"dataset 'dimensions/{d}'")
        self.n_t = dims["time"].shape[-1]
        self.sizes = [dims[d].shape[-1] for d in self.spatial_dims]
        bcs = self._need("boundary_conditions", "group")
        for name in bcs:
            self._need_attrs(bcs[name], BC_ATTRS, f"group 'boundary_conditions/{name}'")
            self._need(f"boundary_conditions/{name}/mask", "dataset")
            if str(_plain(bcs[name].attrs["bc_type"])).upper() not in BC_TYPES:
                self._fail(f"boundary_conditions/{name}: bc_type {_plain(bcs[name].attrs['bc_type'])!r} is not one of {BC_TYPES}")
            unknown = set(_names(bcs[name].attrs["associated_dims"])) - set(self.spatial_dims)
            if unknown:
                self._fail(f"boundary_conditions/{name}: associated_dims {sorted(unknown)} are not spatial dims {self.spatial_dims}")
        scalars = self._need("scalars", "group")
        self._need_attrs(scalars, ["field_names"], "group 'scalars'")
        for name in _names(scalars.attrs["field_names"]):
            self._need_attrs(self._need(f"scalars/{name}", "dataset"), ["sample_varying", "time_varying"], f"dataset 'scalars/{name}'")
        for order, group in enumerate(FIELD_GROUPS):
            g = self._need(group, "group")
            self._need_attrs(g, ["field_names"], f"group '{group}'")
            for name in _names(g.attrs["field_names"]):
                ds = self._need(f"{group}/{name}", "dataset")
                self._need_attrs(ds, FIELD_ATTRS, f"dataset '{group}/{name}'")
                want = self._field_shape(ds, order)
                if tuple(ds.shape) != want:
                    self._fail(f"dataset '{group}/{name}' has shape {tuple(ds.shape)}, expected {want} from its "
                               f"sample_varying/time_varying/dim_varying attributes and the dimensions")

    def _field_shape(self, ds, order: int) -> tuple[int, ...]:
        varying = [bool(v) for v in np.atleast_1d(ds.attrs["dim_varying"])]
        if len(varying) != len(self.sizes):
            self._fail(f"dataset '{ds.name.lstrip('/')}': dim_varying has {len(varying)} entries for {len(self.sizes)} spatial dims")
        lead = ([self.n_trajectories] if ds.attrs["sample_varying"] else []) + ([self.n_t] if ds.attrs["time_varying"] else [])
        return tuple(lead + [n for n, v in zip(self.sizes, varying) if v] + [len(self.sizes)] * order)

    def _coords(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        dims = self._h5["dimensions"]
        pick = lambda d: np.asarray(dims[d][index] if dims[d].attrs["sample_varying"] else dims[d][()], float)
        return pick("time"), {d: pick(d) for d in self.spatial_dims}

    def _boundary(self, index: int) -> dict[str, tuple[str, str]]:
        """Per axis (low, high) like the_well's reader: a mask marks where the condition holds."""
        ends = {d: ["OPEN", "OPEN"] for d in self.spatial_dims}
        for bc in self._h5["boundary_conditions"].values():
            kind = str(_plain(bc.attrs["bc_type"])).upper()
            dims = _names(bc.attrs["associated_dims"])
            mask = np.asarray(bc["mask"][()], bool)
            if bc.attrs["sample_varying"]:
                mask = mask[index]
            if bc.attrs["time_varying"]:
                mask = mask.any(axis=0)
            reduce = np.all if kind == "WALL" else np.any
            for axis, d in enumerate(dims):
                for end, pos in ((0, 0), (1, -1)):
                    if reduce(np.take(mask, pos, axis=axis)):
                        ends[d][end] = kind
        return {d: (lo, hi) for d, (lo, hi) in ends.items()}

    def _expand(self, data: np.ndarray, ds, time_axis: bool) -> np.ndarray:
        """Broadcast a field stored without some spatial axes (dim_varying False) to the full grid."""
        varying = [bool(v) for v in np.atleast_1d(ds.attrs["dim_varying"])]
        lead = 1 if time_axis else 0
        for axis, v in enumerate(varying):
            if not v:
                data = np.expand_dims(data, lead + axis)
        shape = (data.shape[:lead] + tuple(self.sizes) + data.shape[lead + len(self.sizes):])
        return np.broadcast_to(data, shape).copy()

    def trajectory(self, index: int) -> Trajectory:
        """Trajectory ``index`` (0-based) of this file."""
        if not 0 <= index < self.n_trajectories:
            raise IndexError(f"{self.path}: trajectory {index} out of range (n_trajectories={self.n_trajectories})")
        f = self._h5
        t, coords = self._coords(index)
        fields, orders, constants = {}, {}, {}
        for order, group in enumerate(FIELD_GROUPS):
            for name in _names(f[group].attrs["field_names"]):
                ds = f[group][name]
                data = np.asarray(ds[index] if ds.attrs["sample_varying"] else ds[()], dtype=np.float64)
                timed = bool(ds.attrs["time_varying"])
                (fields if timed else constants)[name] = self._expand(data, ds, timed)
                orders[name] = order
        scalars = {}
        for name in _names(f["scalars"].attrs["field_names"]):
            ds = f["scalars"][name]
            value = ds[index] if ds.attrs["sample_varying"] else ds[()]
            scalars[name] = _plain(value) if np.ndim(value) == 0 else np.asarray(value)
        return Trajectory(dataset=self.dataset_name, file=self.path, index=index, time=t, coords=coords,
                          boundary=self._boundary(index), parameters={p: _plain(f.attrs[p]) for p in self.parameter_names},
                          fields=fields, field_order=orders, constant_fields=constants, scalars=scalars,
                          grid_type=self.grid_type)

    def __iter__(self) -> Iterator[Trajectory]:
        return (self.trajectory(i) for i in range(self.n_trajectories))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_files(root: Path | str, splits: Sequence[str] = SPLITS) -> list[Path]:
    """The Well files (``.h5`` or ``.hdf5``, like the_well's reader) under a file, split dir, dataset dir
    (``NAME/data/...``), ``datasets/`` root or its parent."""
    root = Path(root)
    bad = set(splits) - set(SPLITS)
    if bad:
        raise ValueError(f"unknown splits {sorted(bad)}; The Well's splits are {SPLITS}")
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise WellSourceError(f"{root}: no such file or directory")
    if any((root / "data" / s).is_dir() for s in SPLITS):
        files = sorted(p for s in splits for p in _well_files(root / "data" / s))
    elif (root / "datasets").is_dir():
        return list_files(root / "datasets", splits)
    elif subdirs := sorted(d for d in root.iterdir() if any((d / "data" / s).is_dir() for s in SPLITS)):
        files = sorted(p for d in subdirs for s in splits for p in _well_files(d / "data" / s))
    else:
        files = _well_files(root)
    if not files:
        raise WellSourceError(f"{root}: no Well data found for splits {list(splits)} (expected NAME/data/{{train,valid,test}}/"
                              f"*.hdf5 or *.h5, a datasets/ directory of those, or such files)")
    return files


def _well_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in WELL_SUFFIXES for p in directory.glob(pattern))


def count_trajectories(files: Sequence[Path]) -> int:
    """Trajectories in local Well files, from their ``n_trajectories`` attribute (no data is read)."""
    import h5py

    total = 0
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                total += int(f.attrs["n_trajectories"])
        except (OSError, KeyError) as e:
            raise WellFormatError(f"{path}: cannot read the root attribute 'n_trajectories' ({e})") from None
    return total


def read_trajectories(source: Path | str, splits: Sequence[str] = SPLITS, max_trajectories: int | None = None) -> Iterator[Trajectory]:
    """Every trajectory under ``source`` (local path or ``hf://`` URL), file by file, in sorted order."""
    count = 0
    for name, opener in _sources(source, splits):
        with opener() as fileobj, WellFile(name, fileobj) as wf:
            for traj in wf:
                if max_trajectories is not None and count >= max_trajectories:
                    return
                yield traj
                count += 1


def _sources(source: Path | str, splits: Sequence[str]):
    """(name, opener) per file; a local file is opened by path (its opener yields None)."""
    if str(source).startswith("hf://"):
        return _remote_files(str(source), splits)
    return [(str(p), contextlib.nullcontext) for p in list_files(source, splits)]


def _remote_files(url: str, splits: Sequence[str]):
    """Well files behind an ``hf://`` URL, through the_well's filesystem stack (needs the package and network)."""
    try:
        import fsspec
        import the_well  # noqa: F401  (brings the fsspec version the Hub filesystem was tested with)
    except ImportError:
        raise WellSourceError(
            f"{url}: reading hf:// paths needs the `the_well` package and network access. Install it in its own "
            f"environment (pip install the_well huggingface_hub; it pins fsspec==2024.10.0), or download the dataset "
            f"with `the-well-download --base-path DIR --dataset NAME` and pass the local directory") from None
    try:
        fs, root = fsspec.url_to_fs(url)
        roots = [root] if fs.isdir(f"{root}/data") else [f"{root}/{d}" for d in sorted(fs.ls(root, detail=False))]
        files = sorted(p for r in roots for s in splits for pattern in WELL_SUFFIXES for p in fs.glob(f"{r}/data/{s}/{pattern}"))
    except Exception as e:  # the Hub client raises many types (offline, 404, auth)
        raise WellSourceError(f"{url}: cannot list The Well on the Hugging Face Hub ({type(e).__name__}: {e}); check "
                              f"the network, or download the dataset and pass the local directory") from e
    if not files:
        raise WellSourceError(f"{url}: no .hdf5 or .h5 files under data/{{{','.join(splits)}}}")
    return [(f"hf://{p}", lambda p=p: fs.open(p, "rb")) for p in files]


def read_truth(path: Path | str) -> list[dict] | None:
    """The generator's known physics per trajectory of a file, or None for files it did not write."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get(TRUTH_ATTR)
    return None if raw is None else json.loads(_plain(raw))
