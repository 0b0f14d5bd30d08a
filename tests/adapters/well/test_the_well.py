"""The Well's HDF5 format: the embedded generator writes it exactly, the reader reads it (and files
written by the_well's own code), bad files fail naming the file and what is missing, and the
generator's solvers obey the physics their truth labels claim. The official the_well package reading
labtune's files is tests/adapters/well/test_well_official.py."""

from __future__ import annotations

import json
import shutil
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

ASSETS = Path(__file__).parents[2] / "assets"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return ws.generate_default(tmp_path_factory.mktemp("well"), seed=0)


def _one(generated: Path, name: str, split: str = "train") -> Path:
    return min((generated / name / "data" / split).glob("*.hdf5"))


def _names(value) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)] if np.size(value) else []


def test_generated_files_follow_the_format_exactly(generated):
    files = sorted(generated.glob("*/data/*/*.hdf5"))
    assert {f.parent.name for f in files} == {"train", "valid", "test"}
    assert {f.parents[2].name for f in files} == set(ws.SOLVERS)
    for f in files:
        with h5py.File(f, "r") as h:
            for attr in ("dataset_name", "grid_type", "n_spatial_dims", "n_trajectories", "simulation_parameters"):
                assert attr in h.attrs, (f, attr)
            assert h.attrs["grid_type"] == "cartesian" and h.attrs["dataset_name"] == f.parents[2].name
            params = _names(h.attrs["simulation_parameters"])
            assert params and all(p in h.attrs and p in h["scalars"] for p in params)
            assert _names(h["scalars"].attrs["field_names"]) == params
            for group in ("dimensions", "boundary_conditions", "scalars", "t0_fields", "t1_fields", "t2_fields"):
                assert isinstance(h[group], h5py.Group), (f, group)
            dims = _names(h["dimensions"].attrs["spatial_dims"])
            assert len(dims) == h.attrs["n_spatial_dims"]
            for d in ["time", *dims]:
                assert {"sample_varying", "time_varying"} <= set(h["dimensions"][d].attrs), (f, d)
            n_traj, n_t = int(h.attrs["n_trajectories"]), len(h["dimensions/time"])
            sizes = [len(h["dimensions"][d]) for d in dims]
            assert set(h["boundary_conditions"]) == {f"{d}_{bc}" for d, bc in zip(dims, [h["boundary_conditions"][g].attrs["bc_type"].lower() for g in h["boundary_conditions"]])}
            for name, bc in h["boundary_conditions"].items():
                assert {"bc_type", "associated_dims", "associated_fields", "sample_varying", "time_varying"} <= set(bc.attrs)
                assert bc.attrs["bc_type"] in ("PERIODIC", "WALL", "OPEN")
                (axis,) = _names(bc.attrs["associated_dims"])
                mask = bc["mask"][()]
                assert mask.dtype == bool and mask.shape == (sizes[dims.index(axis)],)
                assert mask[0] and mask[-1] and not mask[1:-1].any()
            for order, group in enumerate(("t0_fields", "t1_fields", "t2_fields")):
                for name in _names(h[group].attrs["field_names"]):
                    ds = h[group][name]
                    assert {"dim_varying", "sample_varying", "time_varying"} <= set(ds.attrs)
                    lead = [n_traj, n_t] if ds.attrs["time_varying"] else []
                    assert ds.shape == tuple(lead + sizes + [len(dims)] * order), (f, name)


def _shape(value) -> tuple[int, ...]:
    return np.shape(np.asarray(value, float)) if isinstance(value, list) else ()


def test_stats_yaml_has_the_real_datasets_layout(generated):
    """One number per component (t1: D, t2: D×D), constant fields only in mean/std/rms: the layout
    the_well's normalisers index (a missing constant field was a KeyError, a t1 field one number)."""
    for name in ws.SOLVERS:
        stats = yaml.safe_load((generated / name / "stats.yaml").read_text())
        assert set(stats) == {"mean", "std", "rms", "mean_delta", "std_delta", "rms_delta"}
        traj = next(tw.read_trajectories(generated / name, splits=("train",)))
        for field, order in traj.field_order.items():
            want = (traj.n_spatial_dims,) * order
            timed = field in traj.fields
            for key in ("mean", "std", "rms") + (("mean_delta", "std_delta", "rms_delta") if timed else ()):
                assert _shape(stats[key][field]) == want, (name, key, field)
            if not timed:
                assert all(field not in stats[k] for k in ("mean_delta", "std_delta", "rms_delta")), (name, field)
    cellular = yaml.safe_load((generated / "cellular_flow_2d" / "stats.yaml").read_text())
    assert "velocity" in cellular["mean"] and "velocity" not in cellular["mean_delta"]


def test_stats_come_from_the_train_split_per_component(tmp_path):
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 4)
    ds = ws.SimulatedDataset("tiny", ("x", "y"), {"x": x, "y": x}, np.arange(3.0), {"x": "WALL", "y": "WALL"},
                             {"rho": 0, "v": 1, "stress": 2}, [])
    medium = rng.random((4, 4, 2))

    def runs(offset):
        return [ws.Run({"rho": offset + rng.random((3, 4, 4)), "v": offset + rng.random((3, 4, 4, 2)) * [1, 10],
                        "stress": offset + rng.random((3, 4, 4, 2, 2))}, {}) for _ in range(2)]
    for split, offset in (("train", 0.0), ("valid", 5.0), ("test", 10.0)):
        pset = ws.ParameterSet({"a": 1.0}, runs(offset), constant_fields={"medium": (1, medium)})
        ww.write_well_file(tmp_path / "tiny" / "data" / split / f"{split}.h5", ds, pset, pset.runs)
    stats = yaml.safe_load(ww.write_stats_yaml(tmp_path / "tiny").read_text())
    train = list(tw.read_trajectories(tmp_path / "tiny", splits=("train",)))
    for field, order in (("rho", 0), ("v", 1), ("stress", 2)):
        values = np.stack([t.fields[field] for t in train])
        deltas = np.diff(values, axis=1)
        over = tuple(range(values.ndim - order))
        for suffix, data in (("", values), ("_delta", deltas)):
            np.testing.assert_allclose(stats["mean" + suffix][field], data.mean(over), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(stats["std" + suffix][field], data.std(over), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(stats["rms" + suffix][field], np.sqrt((data ** 2).mean(over)), rtol=1e-9)
    assert isinstance(stats["mean"]["rho"], float) and np.shape(stats["mean"]["stress"]) == (2, 2)
    assert stats["mean"]["rho"] == pytest.approx(0.5, abs=0.1)  # valid (+5) and test (+10) would raise it
    np.testing.assert_allclose(stats["mean"]["medium"], medium.reshape(-1, 2).mean(0), rtol=1e-6)
    assert "medium" not in stats["mean_delta"] and "medium" not in stats["rms_delta"]


def test_reader_round_trips_what_the_writer_wrote(tmp_path):
    rng = np.random.default_rng(1)
    x, y = np.linspace(0, 1, 6), np.linspace(0, 2, 5)
    runs = [ws.Run({"rho": rng.random((4, 6, 5)), "v": rng.random((4, 6, 5, 2))},
                   ws.truth("transient", {"translation_x": i == 0}, {"mass": True})) for i in range(2)]
    medium = rng.random((6, 5))
    ds = ws.SimulatedDataset("tiny", ("x", "y"), {"x": x, "y": y}, np.arange(4.0), {"x": "PERIODIC", "y": "WALL"},
                             {"rho": 0, "v": 1}, [])
    pset = ws.ParameterSet({"nu": 0.5, "k": 3}, runs, constant_fields={"medium": (0, medium)})
    path = tmp_path / "tiny.hdf5"
    ww.write_well_file(path, ds, pset, runs)
    trajs = list(tw.read_trajectories(path))
    assert [t.index for t in trajs] == [0, 1]
    for t, run in zip(trajs, runs):
        assert t.dataset == "tiny" and t.file == str(path) and t.spatial_dims == ("x", "y") and t.shape == (6, 5)
        np.testing.assert_allclose(t.fields["rho"], run.fields["rho"], rtol=1e-6)
        np.testing.assert_allclose(t.fields["v"], run.fields["v"], rtol=1e-6)
        np.testing.assert_allclose(t.constant_fields["medium"], medium, rtol=1e-6)
        np.testing.assert_allclose(t.coords["y"], y, rtol=1e-6)
        assert t.field_order == {"rho": 0, "v": 1, "medium": 0}
        assert t.boundary == {"x": ("PERIODIC", "PERIODIC"), "y": ("WALL", "WALL")}
        assert t.parameters == {"nu": 0.5, "k": 3} and t.scalars == {"nu": 0.5, "k": 3}
    assert tw.read_truth(path) == [r.truth for r in runs]
    assert tw.count_trajectories([path]) == 2
    assert len(list(tw.read_trajectories(path, max_trajectories=1))) == 1


@pytest.mark.parametrize("grid, dims", [("spherical", ("r", "theta", "phi")), ("equiangular", ("theta", "phi")),
                                         ("icosahedral", ("cell", "level"))])
def test_every_grid_type_is_read_and_kept(tmp_path, grid, dims):
    """Real datasets use spherical (convective_envelope_rsg, post_neutron_star_merger) and equiangular (planetswe)
    grids; a grid type labtune does not know is read too, and the encoder names it."""
    coords = {d: np.geomspace(1, 2, 5) if d == "r" else np.linspace(0.1, 3.0, 4 + i) for i, d in enumerate(dims)}
    shape = tuple(len(c) for c in coords.values())
    run = ws.Run({"rho": np.random.default_rng(0).random((3, *shape))}, {})
    ds = ws.SimulatedDataset("sky", dims, coords, np.arange(3.0), {dims[-1]: "PERIODIC"}, {"rho": 0}, [], grid_type=grid)
    ww.write_well_file(tmp_path / "sky.h5", ds, ws.ParameterSet({"a": 1.0}, [run]), [run])
    (t,) = tw.read_trajectories(tmp_path / "sky.h5")
    assert t.grid_type == grid and not t.cartesian and t.spatial_dims == dims and t.shape == shape
    np.testing.assert_allclose(t.coords[dims[0]], coords[dims[0]], rtol=1e-6)
    assert t.boundary[dims[-1]] == ("PERIODIC", "PERIODIC")


def test_reads_a_file_written_by_the_wells_own_dummy_writer():
    """tests/assets/the_well_dummy.hdf5 was written by the_well 1.2.0's utils.dummy_data.write_dummy_data."""
    trajs = list(tw.read_trajectories(ASSETS / "the_well_dummy.hdf5"))
    assert len(trajs) == 2
    t = trajs[1]
    assert t.dataset == "dummy_dataset" and t.parameters == {"a": 0.25, "b": 0.75}
    assert t.fields["field"].shape == (10, 32, 32, 2) and t.field_order["field"] == 1
    assert t.constant_fields["constant_field"].shape == (32, 32)  # sample-varying, not time-varying
    assert t.scalars["time_varying_scalar"].shape == (10,)
    # Its masks mark no boundary index, so, as in the_well's own reader, no end is periodic.
    assert t.boundary == {"x": ("OPEN", "OPEN"), "y": ("OPEN", "OPEN")}
    assert tw.read_truth(ASSETS / "the_well_dummy.hdf5") is None


def test_missing_t1_fields_names_the_file_and_the_group(generated, tmp_path):
    bad = tmp_path / "no_t1.hdf5"
    shutil.copy(_one(generated, "diffusion_2d"), bad)
    with h5py.File(bad, "a") as h:
        del h["t1_fields"]
    with pytest.raises(tw.WellFormatError, match=r"no_t1\.hdf5: missing group 't1_fields'"):
        list(tw.read_trajectories(bad))


def test_truncated_file_is_a_clear_error(generated, tmp_path):
    bad = tmp_path / "truncated.hdf5"
    bad.write_bytes(_one(generated, "acoustic_wave_2d").read_bytes()[:5000])
    with pytest.raises(tw.WellFormatError, match=r"truncated\.hdf5: not a readable HDF5 file"):
        list(tw.read_trajectories(bad))


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.attrs.__delitem__("n_trajectories"), "missing attribute 'n_trajectories' on the root group"),
    (lambda h: h["t0_fields/u"].attrs.__delitem__("dim_varying"), "missing attribute 'dim_varying' on dataset 't0_fields/u'"),
    (lambda h: h["boundary_conditions/x_periodic"].attrs.__setitem__("bc_type", "SPONGE"), "boundary_conditions/x_periodic: bc_type 'SPONGE' is not one of"),
    (lambda h: h.attrs.__setitem__("n_trajectories", 3), r"dataset 't0_fields/u' has shape \(1, 50, 32, 32\), expected \(3, 50, 32, 32\)"),
])
def test_malformed_files_say_what_is_wrong(generated, tmp_path, edit, message):
    bad = tmp_path / "bad.hdf5"
    shutil.copy(_one(generated, "diffusion_2d"), bad)
    with h5py.File(bad, "a") as h:
        edit(h)
    with pytest.raises(tw.WellFormatError, match=rf"bad\.hdf5: {message}"):
        tw.WellFile(bad)


def test_list_files_accepts_every_layout(generated, tmp_path):
    dataset = generated / "burgers_1d"
    all_files = sorted(dataset.glob("data/*/*.hdf5"))
    assert set(tw.list_files(dataset)) == set(all_files)
    assert set(tw.list_files(dataset, splits=("valid",))) == set(dataset.glob("data/valid/*.hdf5"))
    assert set(all_files) <= set(tw.list_files(generated)) == set(tw.list_files(generated.parent))
    assert tw.list_files(dataset / "data" / "train") == sorted((dataset / "data" / "train").glob("*.hdf5"))
    assert tw.list_files(all_files[0]) == [all_files[0]]
    assert all(f.parent.name == "test" for f in tw.list_files(generated, splits=("test",)))  # burgers_1d has no test split
    with pytest.raises(tw.WellSourceError, match="no Well data found"):
        tw.list_files(tmp_path)
    with pytest.raises(ValueError, match="unknown splits"):
        tw.list_files(dataset, splits=("training",))


def test_h5_files_are_found_and_read_like_hdf5(generated, tmp_path):
    """Real Well datasets name some files *.h5; the_well's reader globs both suffixes, so labtune does too."""
    dataset = tmp_path / "burgers_1d"
    shutil.copytree(generated / "burgers_1d", dataset)
    renamed = [f.rename(f.with_suffix(".h5")) for f in sorted(dataset.glob("data/train/*.hdf5"))]
    assert renamed and set(renamed) <= set(tw.list_files(dataset))
    assert {f.suffix for f in tw.list_files(dataset)} == {".h5", ".hdf5"}  # valid/ keeps its .hdf5 files
    assert tw.list_files(dataset, splits=("train",)) == renamed
    assert tw.list_files(tmp_path, splits=("train",)) == renamed
    assert tw.list_files(dataset / "data" / "train") == renamed
    assert tw.count_trajectories(renamed) == len(list(tw.read_trajectories(dataset, splits=("train",)))) > 0


def test_hf_paths_without_the_well_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "the_well", None)  # import the_well -> ImportError
    with pytest.raises(tw.WellSourceError, match=r"hf://datasets/polymathic-ai/x: .*needs the `the_well` package"):
        list(tw.read_trajectories("hf://datasets/polymathic-ai/x"))


def test_generation_is_seeded_and_reused(tmp_path):
    a = ws.generate_default(tmp_path / "a", seed=3, names=["diffusion_2d"])
    stamp = (a / "generator.json").stat().st_mtime_ns
    assert ws.generate_default(tmp_path / "a", seed=3, names=["diffusion_2d"]) == a
    assert (a / "generator.json").stat().st_mtime_ns == stamp
    b = ws.generate_default(tmp_path / "b", seed=4, names=["diffusion_2d"])
    pairs = list(zip(tw.read_trajectories(a), tw.read_trajectories(b)))
    assert any(not np.allclose(ta.fields["u"], tb.fields["u"]) for ta, tb in pairs)  # random initial conditions
    assert any(np.array_equal(ta.fields["u"], tb.fields["u"]) for ta, tb in pairs)  # symmetric ones are fixed
    with pytest.raises(ValueError, match="unknown embedded datasets"):
        ws.generate_default(tmp_path / "c", names=["navier_stokes"])


def test_cli_generates_into_a_datasets_directory(tmp_path, capsys):
    well_cli.main(["generate", "--out", str(tmp_path / "the_well"), "--datasets", "steady_plate_2d"])
    assert json.loads((tmp_path / "the_well/datasets/generator.json").read_text())["trajectories"] == {"steady_plate_2d": 4}
    well_cli.main(["inspect", str(tmp_path / "the_well")])
    assert capsys.readouterr().out.count("steady_plate_2d_conductivity") == 4


# The truth labels are only as good as the solvers: check the physics they claim on the raw arrays.

def _integrals(f: np.ndarray) -> np.ndarray:
    return f.reshape(f.shape[0], -1).sum(1)


def test_solvers_conserve_what_their_truth_says(generated):
    for path in sorted(generated.glob("*/data/*/*.hdf5")):
        for traj, truth in zip(tw.read_trajectories(path), tw.read_truth(path)):
            scalars = [f for n, f in traj.fields.items() if traj.field_order[n] == 0]
            if "mass" in truth["conserved"]:
                mass = _integrals(sum(scalars))
                drifted = np.abs(mass - mass[0]).max() / np.abs(sum(scalars)).reshape(len(mass), -1).sum(1).mean()
                assert (drifted < 1e-4) == truth["conserved"]["mass"], (path, drifted)
            if truth["conserved"].get("momentum_x"):
                (v,) = [f for n, f in traj.fields.items() if traj.field_order[n] == 1]
                p = _integrals(v[..., 0])
                assert np.abs(p - p[0]).max() < 1e-4 * np.abs(v).sum() / len(p)


def test_acoustic_energy_is_conserved_and_the_blob_diffuses(generated):
    path = _one(generated, "acoustic_wave_2d")
    c = tw.WellFile(path).trajectory(0).parameters["sound_speed"]
    traj = next(tw.read_trajectories(path))
    p, v = traj.fields["pressure"], traj.fields["velocity"]
    energy = _integrals(p ** 2 / c ** 2 + (v ** 2).sum(-1))
    assert np.ptp(energy) < 1e-5 * energy.mean()
    u = next(tw.read_trajectories(_one(generated, "diffusion_2d"))).fields["u"]
    assert u[-1].std() < 0.5 * u[0].std()  # heat spreads out
    assert abs(u[-1].sum() - u[0].sum()) < 1e-4 * u[0].sum()
