"""Small PDE solvers whose physics is known, and ``generate_default``, which writes them as the embedded
default Well datasets (``datasets/NAME/data/{train,valid,test}/*.hdf5`` + ``stats.yaml``, in ~2 s).

Each ``simulate_*`` returns a ``SimulatedDataset``: grids, boundary conditions and, per parameter
set, a few runs (trajectories with different initial conditions) together with each run's known
truth (which symmetries hold, which quantities are conserved, the dynamics class). Every solver
is exact or spectrally accurate on a periodic grid (float64; the writer stores float32), so
conserved quantities are conserved to rounding and symmetric initial data stays symmetric.

Truth labels, as the encoder is checked against them:
- translation_x/y: the dynamics commutes with shifts along the axis (periodic along it and a
  homogeneous medium); reflection_x/y, rotation_90: the mirror/rotation maps the whole trajectory
  onto itself about one fixed axis/centre (vector components transform along);
- time_translation: the trajectory is statistically stationary (steady, periodic, quasi-periodic,
  or on a chaotic attractor), not a relaxation towards an end state;
- conserved: mass = integral of the scalar fields, energy = a positive quadratic form of the
  fields, momentum_x/y = integral of the time-varying vector fields.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adapters.well import the_well, well_writer
from adapters.well.the_well import SPLITS
from adapters.well.well_writer import write_stats_yaml, write_well_file

TWO_PI = 2 * np.pi


@dataclass
class Run:
    """One trajectory: time-varying fields (t0 ``(n_t, *spatial)``, t1 ``(n_t, *spatial, d)``) and its truth."""

    fields: dict[str, np.ndarray]
    truth: dict


@dataclass
class ParameterSet:
    """One simulation-parameter set (one Well file per split), its runs and its own grids, if any."""

    params: dict[str, float]
    runs: list[Run]
    time: np.ndarray | None = None                 # overrides the dataset's time grid
    coords: dict[str, np.ndarray] | None = None    # overrides the dataset's coordinates
    constant_fields: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)  # name -> (order, array)


@dataclass
class SimulatedDataset:
    name: str
    spatial_dims: tuple[str, ...]
    coords: dict[str, np.ndarray]
    time: np.ndarray
    boundary: dict[str, str]                      # axis -> PERIODIC | WALL | OPEN
    field_order: dict[str, int]                   # time-varying field -> tensor order
    parameter_sets: list[ParameterSet]
    grid_type: str = "cartesian"                  # the file's grid_type attribute


def truth(dynamics: str, symmetries: dict[str, bool], conserved: dict[str, bool]) -> dict:
    return {"dynamics": dynamics, "symmetries": symmetries, "conserved": conserved}


def _sym2d(tx=True, ty=True, rx=False, ry=False, rot=False, time=False) -> dict[str, bool]:
    return {"translation_x": tx, "translation_y": ty, "reflection_x": rx, "reflection_y": ry,
            "rotation_90": rot, "time_translation": time}


def _k(n: int, length: float) -> np.ndarray:
    return TWO_PI * np.fft.fftfreq(n, d=length / n)


def _periodic_grid(n: int = 32, length: float = TWO_PI) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.arange(n) * length / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    return x, X, Y


def _blob(X, Y, cx, cy, sx, sy, amp, length=TWO_PI):
    """A Gaussian on the periodic domain (distances wrapped)."""
    dx = (X - cx + length / 2) % length - length / 2
    dy = (Y - cy + length / 2) % length - length / 2
    return amp * np.exp(-0.5 * ((dx / sx) ** 2 + (dy / sy) ** 2))


def _dealias(k: np.ndarray) -> np.ndarray:
    return np.abs(k) < (2 / 3) * np.abs(k).max()


# --- 2D diffusion: u_t = D lap u, exact in Fourier space ---------------------------------------

def simulate_diffusion(rng: np.random.Generator) -> SimulatedDataset:
    x, X, Y = _periodic_grid()
    t = np.linspace(0, 8, 50)
    k = _k(32, TWO_PI)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    c = np.pi  # a grid point, so mirrored/rotated grids map onto themselves

    def star():
        return 0.2 + _blob(X, Y, c, c, 0.5, 0.5, 1.0) + sum(
            _blob(X, Y, c + dx, c + dy, 0.35, 0.35, 0.5) for dx, dy in ((1.6, 0), (-1.6, 0), (0, 1.6), (0, -1.6)))

    def ellipse():
        return 0.2 + _blob(X, Y, c, c, 0.4, 0.9, 1.0) + _blob(X, Y, c, c + 2.0, 0.3, 0.3, 0.6) + _blob(X, Y, c, c - 2.0, 0.3, 0.3, 0.6)

    def scattered():
        return 0.2 + sum(_blob(X, Y, *rng.uniform(0, TWO_PI, 2), *rng.uniform(0.3, 0.8, 2), rng.uniform(0.5, 1.0))
                         for _ in range(3))

    sets = []
    for D, shapes in ((0.05, (star, scattered, ellipse)), (0.12, (ellipse, scattered, star))):
        runs = []
        for make in shapes:
            u0 = make()
            uh = np.fft.fft2(u0)
            u = np.fft.ifft2(uh[None] * np.exp(-D * k2[None] * t[:, None, None]), axes=(1, 2)).real
            sym = make is not scattered
            runs.append(Run({"u": u}, truth("transient", _sym2d(rx=sym, ry=sym, rot=make is star),
                                            {"mass": True, "energy": False})))
        sets.append(ParameterSet({"diffusivity": D}, runs))
    return SimulatedDataset("diffusion_2d", ("x", "y"), {"x": x, "y": x}, t,
                            {"x": "PERIODIC", "y": "PERIODIC"}, {"u": 0}, sets)


# --- 2D linear acoustics: p_t = -c^2 div v, v_t = -grad p, exact per Fourier mode ----------------

def simulate_acoustic_wave(rng: np.random.Generator) -> SimulatedDataset:
    x, X, Y = _periodic_grid()
    k = _k(32, TWO_PI)
    KX, KY = np.meshgrid(k, k, indexing="ij")
    kabs = np.hypot(KX, KY)
    safe = np.where(kabs == 0, 1.0, kabs)
    nt = 60

    def evolve(p0, v0, c, t):
        ph, vxh, vyh = np.fft.fft2(p0), np.fft.fft2(v0[..., 0]), np.fft.fft2(v0[..., 1])
        w0 = (KX * vxh + KY * vyh) / safe                    # longitudinal velocity
        tx, ty = vxh - KX / safe * w0, vyh - KY / safe * w0  # transverse part: constant in time
        om = c * kabs[None] * t[:, None, None]
        p = ph * np.cos(om) - 1j * c * w0 * np.sin(om)
        w = w0 * np.cos(om) - 1j * ph / c * np.sin(om)
        w = np.where(kabs == 0, 0, w)
        vx, vy = tx + KX / safe * w, ty + KY / safe * w
        back = lambda a: np.fft.ifft2(a, axes=(1, 2)).real
        return back(p), np.stack([back(vx), back(vy)], -1)

    zero = np.zeros((32, 32, 2))
    a = lambda: rng.uniform(0.6, 1.0)
    cases = {
        # (p0, v0, dynamics, reflection_x, reflection_y, rotation_90)
        "standing_square": lambda c: (a() * (np.cos(X) + np.cos(Y)), zero, "periodic", True, True, True),
        "two_modes": lambda c: (a() * np.cos(X) + a() * np.cos(X) * np.cos(Y), zero, "quasi-periodic", True, True, False),
        "travelling": lambda c: ((p := a() * np.cos(X + Y)), np.stack([p, p], -1) / (np.sqrt(2) * c), "periodic", False, False, False),
        "harmonics": lambda c: (a() * np.cos(X) + 0.5 * np.cos(2 * X), zero, "periodic", True, True, False),
        "oblique": lambda c: (a() * np.cos(X + 0.4) + a() * np.sin(X + 2 * Y), zero, "quasi-periodic", False, False, False),
    }
    sets = []
    for c, names in ((1.0, ("standing_square", "two_modes", "travelling")), (1.5, ("harmonics", "oblique", "standing_square"))):
        t = np.linspace(0, 5 * TWO_PI / c, nt)
        runs = []
        for name in names:
            p0, v0, dyn, rx, ry, rot = cases[name](c)
            p, v = evolve(p0, v0, c, t)
            runs.append(Run({"pressure": p, "velocity": v},
                            truth(dyn, _sym2d(rx=rx, ry=ry, rot=rot, time=True),
                                  {"mass": True, "energy": True, "momentum_x": True, "momentum_y": True})))
        sets.append(ParameterSet({"sound_speed": c}, runs, time=t))
    return SimulatedDataset("acoustic_wave_2d", ("x", "y"), {"x": x, "y": x}, sets[0].time,
                            {"x": "PERIODIC", "y": "PERIODIC"}, {"pressure": 0, "velocity": 1}, sets)


# --- Gray-Scott reaction-diffusion, explicit Euler in grid units -------------------------------

def _lap_periodic(u: np.ndarray) -> np.ndarray:
    # Pairs summed first so that mirrored/rotated points see bit-identical sums: symmetric data stays
    # exactly symmetric (the Turing instability would amplify any rounding asymmetry).
    return (np.roll(u, 1, -2) + np.roll(u, -1, -2)) + (np.roll(u, 1, -1) + np.roll(u, -1, -1)) - 4 * u


def simulate_gray_scott(rng: np.random.Generator) -> SimulatedDataset:
    n, nt, every = 32, 50, 100
    da, db = 0.2, 0.1
    x = np.arange(n, dtype=float)
    sets = []
    for F, kk in ((0.037, 0.06), (0.03, 0.062)):
        a = np.ones((3, n, n))
        b = np.zeros((3, n, n))
        a[0, 13:19, 13:19], b[0, 13:19, 13:19] = 0.5, 0.25  # centred square seed: D4-symmetric
        for i in (1, 2):                                    # scattered noisy seeds
            for _ in range(3):
                cx, cy = rng.integers(0, n - 5, 2)
                a[i, cx:cx + 5, cy:cy + 5], b[i, cx:cx + 5, cy:cy + 5] = 0.5, 0.25
            a[i] += 0.05 * rng.standard_normal((n, n))
            b[i] += 0.05 * rng.standard_normal((n, n)).clip(0)
        frames_a, frames_b = [], []
        for step in range(nt * every):
            if step % every == 0:
                frames_a.append(a.copy())
                frames_b.append(b.copy())
            ab2 = a * b * b
            a, b = a + da * _lap_periodic(a) - ab2 + F * (1 - a), b + db * _lap_periodic(b) + ab2 - (F + kk) * b
        A, B = np.stack(frames_a, 1), np.stack(frames_b, 1)
        runs = [Run({"A": A[i], "B": B[i]}, truth("transient", _sym2d(rx=i == 0, ry=i == 0, rot=i == 0),
                                                  {"mass": False, "energy": False})) for i in range(3)]
        sets.append(ParameterSet({"F": F, "k": kk}, runs))
    return SimulatedDataset("gray_scott_2d", ("x", "y"), {"x": x, "y": x}, np.arange(nt, dtype=float) * every,
                            {"x": "PERIODIC", "y": "PERIODIC"}, {"A": 0, "B": 0}, sets)


# --- 1D viscous Burgers: u_t + (u^2/2)_x = nu u_xx, pseudo-spectral, integrating-factor RK4 ------

def simulate_burgers(rng: np.random.Generator) -> SimulatedDataset:
    n, nt, t_end, dt = 128, 50, 6.0, 0.005
    x = np.arange(n) * TWO_PI / n
    k = _k(n, TWO_PI)
    keep = _dealias(k)
    sets = []
    for nu in (0.08, 0.15):
        smooth = sum(rng.uniform(0.2, 0.6) * np.sin(m * x + rng.uniform(0, TWO_PI)) for m in (1, 2, 3))
        u0 = np.stack([np.sin(x), 0.4 + smooth])
        uh = np.fft.fft(u0)
        lin = np.exp(-nu * k ** 2 * dt / 2)

        def nonlinear(vh):
            v = np.fft.ifft(vh).real
            return -0.5j * k * np.fft.fft(v * v) * keep

        frames, steps_per = [], round(t_end / (nt - 1) / dt)
        for step in range((nt - 1) * steps_per + 1):
            if step % steps_per == 0:
                frames.append(np.fft.ifft(uh).real)
            k1 = nonlinear(uh)
            k2 = nonlinear(lin * (uh + dt / 2 * k1))
            k3 = nonlinear(lin * uh + dt / 2 * k2)
            k4 = nonlinear(lin * lin * uh + dt * lin * k3)
            uh = lin * lin * uh + dt / 6 * (lin * lin * k1 + 2 * lin * (k2 + k3) + k4)
        u = np.stack(frames, 1)[..., None]  # (run, t, x, 1): a vector field in one dimension
        runs = [Run({"velocity": u[i]}, truth("transient", {"translation_x": True, "reflection_x": i == 0, "time_translation": False},
                                               {"energy": False, "momentum_x": True})) for i in range(2)]
        sets.append(ParameterSet({"viscosity": nu}, runs))
    return SimulatedDataset("burgers_1d", ("x",), {"x": x}, np.linspace(0, t_end, nt), {"x": "PERIODIC"},
                            {"velocity": 1}, sets)


# --- 1D Kuramoto-Sivashinsky: u_t + u u_x + u_xx + u_xxxx = 0, ETDRK4 (Kassam & Trefethen 2005) --

def simulate_kuramoto_sivashinsky(rng: np.random.Generator) -> SimulatedDataset:
    n, nt, dt, burn_in, every = 128, 60, 0.25, 600, 16
    sets = []
    for length in (64.0, 80.0):
        x = np.arange(n) * length / n
        k = TWO_PI * np.fft.rfftfreq(n, d=length / n)  # real transforms: no spurious imaginary part can grow
        L = k ** 2 - k ** 4
        E, E2 = np.exp(dt * L), np.exp(dt * L / 2)
        r = np.exp(1j * np.pi * (np.arange(1, 17) - 0.5) / 16)
        LR = dt * L[:, None] + r[None, :]
        Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
        f1 = dt * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR ** 2)) / LR ** 3, axis=1))
        f2 = dt * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR ** 3, axis=1))
        f3 = dt * np.real(np.mean((-4 - 3 * LR - LR ** 2 + np.exp(LR) * (4 - LR)) / LR ** 3, axis=1))
        g = -0.5j * k * (k < (2 / 3) * k.max())
        N = lambda vh, g=g: g * np.fft.rfft(np.fft.irfft(vh, n) ** 2)
        u0 = 0.1 * rng.standard_normal((2, n))
        vh = np.fft.rfft(u0 - u0.mean(axis=1, keepdims=True))
        frames = []
        for step in range(burn_in + nt * every):
            if step >= burn_in and (step - burn_in) % every == 0:
                frames.append(np.fft.irfft(vh, n))
            Nv = N(vh)
            a = E2 * vh + Q * Nv
            Na = N(a)
            b = E2 * vh + Q * Na
            Nb = N(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = N(c)
            vh = E * vh + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        u = np.stack(frames, 1)
        runs = [Run({"u": u[i]}, truth("chaotic", {"translation_x": True, "reflection_x": False, "time_translation": True},
                                       {"mass": True, "energy": False})) for i in range(2)]
        sets.append(ParameterSet({"domain_length": length}, runs, coords={"x": x}))
    return SimulatedDataset("kuramoto_sivashinsky_1d", ("x",), sets[0].coords, np.arange(nt) * dt * every,
                            {"x": "PERIODIC"}, {"u": 0}, sets)


# --- Steady heat conduction in a plate with walls held at fixed temperatures --------------------

def simulate_steady_plate(rng: np.random.Generator) -> SimulatedDataset:
    from scipy.sparse import diags, identity, kron
    from scipy.sparse.linalg import spsolve

    n, nt = 32, 40
    s = np.linspace(0, 1, n)
    m = n - 2
    lap1 = diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(m, m))
    lap = (kron(lap1, identity(m)) + kron(identity(m), lap1)).tocsc()

    def solve(left, right, bottom, top):
        """Laplace's equation with Dirichlet walls: x runs along axis 0, y along axis 1."""
        u = np.zeros((n, n))
        u[0, :], u[-1, :], u[:, 0], u[:, -1] = left, right, bottom, top
        rhs = np.zeros((m, m))
        rhs[0, :] -= u[0, 1:-1]
        rhs[-1, :] -= u[-1, 1:-1]
        rhs[:, 0] -= u[1:-1, 0]
        rhs[:, -1] -= u[1:-1, -1]
        u[1:-1, 1:-1] = spsolve(lap, rhs.ravel()).reshape(m, m)
        return u

    bump = np.sin(np.pi * s)
    walls = [
        ((0, 0, 0, bump), True, False, False),                    # hot top: mirror-symmetric left-right
        ((bump, bump, 0.2 * bump, 0.2 * bump), True, True, False),  # hot sides: both mirrors
        ((bump, bump, bump, bump), True, True, True),              # same profile on all walls
        ((0.3 * bump, bump, 0.6 * bump, 0.1 * bump), False, False, False),
    ]
    sets = []
    for conductivity, cases in ((1.0, walls[:2]), (0.5, walls[2:])):
        runs = []
        for (left, right, bottom, top), rx, ry, rot in cases:
            u = np.broadcast_to(solve(left, right, bottom, top), (nt, n, n)).copy()
            runs.append(Run({"temperature": u}, truth("steady", _sym2d(False, False, rx, ry, rot, True),
                                                      {"mass": True, "energy": True})))
        sets.append(ParameterSet({"conductivity": conductivity}, runs))
    return SimulatedDataset("steady_plate_2d", ("x", "y"), {"x": s, "y": s}, np.linspace(0, 1, nt),
                            {"x": "WALL", "y": "WALL"}, {"temperature": 0}, sets)


# --- Passive scalar in a steady cellular flow: c_t + div(v c) = kappa lap c ----------------------

def simulate_cellular_flow(rng: np.random.Generator) -> SimulatedDataset:
    x, X, Y = _periodic_grid()
    nt, t_end, dt, kappa = 50, 12.0, 0.02, 0.08
    k = _k(32, TWO_PI)
    KX, KY = np.meshgrid(k, k, indexing="ij")
    keep = _dealias(KX) & _dealias(KY)
    cell = np.stack([np.sin(X) * np.cos(Y), -np.cos(X) * np.sin(Y)], -1)
    sets = []
    for speed in (1.0, 2.0):
        v = speed * cell
        c0 = np.stack([0.1 + _blob(X, Y, *rng.uniform(0.3, 2.8, 2), 0.6, 0.6, 1.0) for _ in range(2)])
        ch = np.fft.fft2(c0)

        def rhs(h, v=v):
            c = np.fft.ifft2(h).real
            flux = 1j * (KX * np.fft.fft2(v[..., 0] * c) + KY * np.fft.fft2(v[..., 1] * c))
            return -flux * keep - kappa * (KX ** 2 + KY ** 2) * h

        frames, steps_per = [], round(t_end / (nt - 1) / dt)
        for step in range((nt - 1) * steps_per + 1):
            if step % steps_per == 0:
                frames.append(np.fft.ifft2(ch).real)
            k1 = rhs(ch)
            k2 = rhs(ch + dt / 2 * k1)
            k3 = rhs(ch + dt / 2 * k2)
            k4 = rhs(ch + dt * k3)
            ch = ch + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        c = np.stack(frames, 1)
        runs = [Run({"concentration": c[i]}, truth("transient", _sym2d(False, False), {"mass": True, "energy": False}))
                for i in range(2)]
        sets.append(ParameterSet({"flow_speed": speed}, runs, constant_fields={"velocity": (1, v)}))
    return SimulatedDataset("cellular_flow_2d", ("x", "y"), {"x": x, "y": x}, np.linspace(0, t_end, nt),
                            {"x": "PERIODIC", "y": "PERIODIC"}, {"concentration": 0}, sets)


SOLVERS: dict[str, Callable[[np.random.Generator], SimulatedDataset]] = {
    "diffusion_2d": simulate_diffusion,
    "acoustic_wave_2d": simulate_acoustic_wave,
    "gray_scott_2d": simulate_gray_scott,
    "burgers_1d": simulate_burgers,
    "kuramoto_sivashinsky_1d": simulate_kuramoto_sivashinsky,
    "steady_plate_2d": simulate_steady_plate,
    "cellular_flow_2d": simulate_cellular_flow,
}


def _split_of(run: int, n_runs: int) -> str:
    """Runs of one parameter set across splits: the last to test, the one before to valid, the rest to train."""
    if n_runs >= 3 and run == n_runs - 1:
        return "test"
    return "valid" if n_runs >= 2 and run == n_runs - (2 if n_runs >= 3 else 1) else "train"


def generator_fingerprint(seed: int, names: Sequence[str]) -> str:
    """Identity of a generated set: seed, dataset names and the solver and writer code."""
    code = [inspect.getsource(m) for m in (inspect.getmodule(generator_fingerprint), the_well, well_writer)]
    blob = json.dumps([seed, list(names), *code])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generate_default(out: Path, seed: int = 0, names: Sequence[str] | None = None) -> Path:
    """Write the embedded datasets under ``out/datasets`` (reused when already generated the same way)."""
    names = list(names or SOLVERS)
    unknown = set(names) - set(SOLVERS)
    if unknown:
        raise ValueError(f"unknown embedded datasets {sorted(unknown)}; choose from {sorted(SOLVERS)}")
    out = Path(out)
    target, stamp = out / "datasets", out / "datasets" / "generator.json"
    fingerprint = generator_fingerprint(seed, names)
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return target
    tmp = out / f".datasets.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.time()
    counts = {}
    for name in names:
        ds = SOLVERS[name](np.random.default_rng([seed, list(SOLVERS).index(name)]))
        counts[name] = 0
        for pset in ds.parameter_sets:
            tag = "_".join(f"{k}_{v:g}" for k, v in pset.params.items())
            for split in SPLITS:
                runs = [r for j, r in enumerate(pset.runs) if _split_of(j, len(pset.runs)) == split]
                if runs:
                    write_well_file(tmp / name / "data" / split / f"{name}_{tag}.hdf5", ds, pset, runs)
                    counts[name] += len(runs)
        write_stats_yaml(tmp / name)  # read back from the train files: the values the_well will normalise
    (tmp / "generator.json").write_text(json.dumps({"fingerprint": fingerprint, "seed": seed, "trajectories": counts,
                                                    "seconds": round(time.time() - started, 2)}, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
