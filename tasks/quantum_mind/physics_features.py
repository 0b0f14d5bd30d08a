"""Physics measured on one Well trajectory: symmetries, conserved quantities, dynamics class, scales.

Only the recorded fields, grids and boundary conditions are read (never a solver, never the
generator's truth). Each field is divided by its space-time spread so that fields weigh alike.

- reflection_x/y, rotation_90: correlation <g, Rg>/<g, g> of the state with its mirror/rotated image
  (vector/tensor components transform along; scalars lose their spatial mean) about one fixed axis or
  centre, searched over all positions on periodic axes, the domain centre otherwise. Score = best
  axis of the smallest correlation over time (symmetric at every frame about the same axis).
- translation_x/y (the dynamics commutes with shifts): periodic at both ends, no time-invariant field
  (a medium: a fixed flow, coefficients, obstacles) varies along the axis, and the periodic seam is as
  smooth as the interior (a mislabelled wall shows a jump there).
- time_translation (statistical stationarity): no observable (spatial mean and spread of each field
  component, rate of change) moves its median between the first and last third by more than
  ``stationarity`` IQRs, and the rate of change does not relax (see transient below).
- conserved: mass = integral of the scalar fields, momentum = integral of the vector fields (drift
  relative to the integral of their absolute values); energy = the positive combination of quadratic
  candidates (integral of |f - mean|^2 and |grad f|^2 per field) that varies least (drift relative
  to its mean). Conserved when the largest drift from t=0 is below ``conservation_tolerance``.
- dynamics: steady when no frame changes by more than ``steady_tolerance``; transient when the rate of
  change in the last quarter is below ``transient_ratio`` of its peak; otherwise sinusoids fitted to
  the leading POD coefficients over the first two thirds must forecast the last third: periodic
  (one base frequency + 2 harmonics), quasi-periodic (two base frequencies + combinations), else chaotic.
- grids: the spatial checks above assume a uniform cartesian grid; on a spherical, equiangular or unknown
  grid, ``tasks.quantum_mind.grid_geometry`` says which are skipped or measured in grid cells (the record's ``skipped_checks``).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.well.the_well import Trajectory
from tasks.quantum_mind.grid_geometry import (
    cell_volumes,
    extents,
    gradient_sq,
    integrate,
    periodic,
    skipped_checks,
    space_mean,
    spacing,
)

SYMMETRIES = ("translation_x", "translation_y", "reflection_x", "reflection_y", "rotation_90", "time_translation")
CONSERVED = ("mass", "energy", "momentum_x", "momentum_y")
DYNAMICS = ("steady", "transient", "periodic", "quasi-periodic", "chaotic")
AXES = ("x", "y", "z")


class NothingToMeasure(ValueError):
    """A trajectory without time-varying fields."""


class PhysicsThresholds(BaseModel):
    """Decision thresholds of the physics tests (see the module docstring for each test)."""

    model_config = ConfigDict(extra="forbid")
    conservation_tolerance: float = Field(5e-3, gt=0, description="Largest relative drift of a conserved quantity")
    symmetry_score: float = Field(0.95, gt=0, lt=1, description="Mirror/rotation correlation at which a symmetry's confidence is 0.5")
    symmetry_width: float = Field(0.01, gt=0, description="Correlation change that moves a symmetry's confidence from 0.5 to 0.73")
    steady_tolerance: float = Field(1e-4, gt=0, description="Largest relative change between frames of a steady trajectory")
    transient_ratio: float = Field(0.25, gt=0, lt=1, description="Late/peak rate of change below which dynamics relaxes (transient)")
    periodic_fit: float = Field(0.95, gt=0, le=1, description="Variance share a harmonic fit must explain for periodic / quasi-periodic")
    stationarity: float = Field(1.25, gt=0, description="Largest first-to-last-third change of an observable's median, in IQRs, of a stationary record")
    homogeneity: float = Field(0.05, gt=0, description="Relative variation along an axis of a time-invariant field that breaks translation symmetry")


def _sigmoid(x: float) -> float:
    return float(1 / (1 + math.exp(-max(-50.0, min(50.0, x)))))


def _components(traj: Trajectory) -> list[tuple[str, int, np.ndarray]]:
    """(name, tensor order, array (n_t, *spatial, C)) of each time-varying field, scaled to unit spread."""
    out = []
    for name, f in traj.fields.items():
        arr = f.reshape(f.shape[:1 + traj.n_spatial_dims] + (-1,))
        spread = arr.std()
        out.append((name, traj.field_order[name], arr / spread if spread > 0 else arr))
    return out


def _component_signs(order: int, d: int, axis: int) -> np.ndarray:
    """Sign of each flattened component under a reflection of ``axis``."""
    idx = np.indices((d,) * order).reshape(order, -1) if order else np.zeros((0, 1), int)
    return np.where((idx == axis).sum(0) % 2 == 1, -1.0, 1.0)


def _rotate_components(arr: np.ndarray, order: int) -> np.ndarray:
    """Rotate vector/tensor components by +90 degrees in the x-y plane (Q = [[0, -1], [1, 0]])."""
    if order == 0:
        return arr
    q = np.array([[0.0, -1.0], [1.0, 0.0]])
    t = arr.reshape(arr.shape[:-1] + (2,) * order)
    t = np.einsum("ij,...j->...i", q, t) if order == 1 else np.einsum("ik,jl,...kl->...ij", q, q, t)
    return t.reshape(arr.shape)


def _centred(comps, transform) -> tuple[np.ndarray, np.ndarray]:
    """State g (scalar components mean-free) and its transformed image, both (n_t, *spatial, C_total)."""
    gs, hs = [], []
    for _, order, arr in comps:
        g = arr - arr.mean(axis=tuple(range(1, arr.ndim - 1)), keepdims=True) if order == 0 else arr
        gs.append(g)
        hs.append(transform(g, order))
    return np.concatenate(gs, -1), np.concatenate(hs, -1)


def _mirror_score(g: np.ndarray, h: np.ndarray, shift_axes: tuple[int, ...]) -> float:
    """Best fixed shift of the smallest-over-time correlation <g, shifted h> / <g, g>."""
    energy = (g ** 2).sum(axis=tuple(range(1, g.ndim)))
    valid = energy > 1e-10 * energy.max() if energy.max() > 0 else np.zeros_like(energy, bool)
    if not valid.any():
        return 1.0  # a uniform state is mapped onto itself by any mirror
    if shift_axes:
        G, H = np.fft.fftn(g, axes=shift_axes), np.fft.fftn(h, axes=shift_axes)
        corr = np.fft.ifftn(G * np.conj(H), axes=shift_axes).real.sum(-1)
    else:
        corr = (g * h).sum(-1)
    other = tuple(a for a in range(1, g.ndim - 1) if a not in shift_axes)
    corr = corr.sum(axis=other) if other else corr
    corr = corr[valid] / energy[valid].reshape((-1,) + (1,) * (corr.ndim - 1))
    return float(corr.min(axis=0).max())


def measure_symmetries(traj: Trajectory, comps, th: PhysicsThresholds) -> tuple[dict[str, float], dict[str, float]]:
    """Symmetry confidences and the raw scores behind them (spatial ones on a cartesian grid only)."""
    conf, raw = _spatial_symmetries(traj, comps, th) if traj.cartesian else ({}, {})
    raw["time_translation"], (_, late) = _nonstationarity(comps), _late_activity(comps)
    drifting = _sigmoid((raw["time_translation"] - th.stationarity) / (0.1 * th.stationarity))
    relaxing = _sigmoid((th.transient_ratio - late) / (0.1 * th.transient_ratio)) if late > 0 else 0.0
    conf["time_translation"] = (1 - drifting) * (1 - relaxing)
    return conf, raw


def _spatial_symmetries(traj: Trajectory, comps, th: PhysicsThresholds) -> tuple[dict[str, float], dict[str, float]]:
    """Mirrors, the 90-degree rotation and translations, as flips, rotations and shifts of array indices."""
    nd = traj.n_spatial_dims
    axes = traj.spatial_dims
    conf, raw = {}, {}
    squash = lambda s: _sigmoid((s - th.symmetry_score) / th.symmetry_width)
    for a, axis in enumerate(axes[:2]):
        g, h = _centred(comps, lambda x, order, a=a: np.flip(x, 1 + a) * _component_signs(order, nd, a))
        raw[f"reflection_{axis}"] = _mirror_score(g, h, (1 + a,) if periodic(traj, axis) else ())
        conf[f"reflection_{axis}"] = squash(raw[f"reflection_{axis}"])
    if nd == 2 and traj.shape[0] == traj.shape[1]:
        g, h = _centred(comps, lambda x, order: _rotate_components(np.rot90(x, 1, axes=(1, 2)), order))
        both = periodic(traj, axes[0]) and periodic(traj, axes[1])
        raw["rotation_90"] = _mirror_score(g, h, (1, 2) if both else ())
        conf["rotation_90"] = squash(raw["rotation_90"])
    for a, axis in enumerate(axes[:2]):
        wraps = 1.0 if periodic(traj, axis) else 0.0
        medium = max([_variation_along(f, a) for f in traj.constant_fields.values()], default=0.0)
        seam = max((_seam_ratio(arr, a) for _, _, arr in comps), default=0.0)
        raw[f"translation_{axis}_medium"], raw[f"translation_{axis}_seam"] = medium, seam
        homogeneous = float(np.clip(2 - medium / th.homogeneity, 0, 1))
        smooth = float(np.clip((4 - seam) / 2, 0, 1))
        conf[f"translation_{axis}"] = 0.02 + 0.96 * wraps * homogeneous * smooth
    return conf, raw


def _variation_along(f: np.ndarray, axis: int) -> float:
    """How far a time-invariant field is from constant along ``axis`` (0 = constant)."""
    norm = np.sqrt((f ** 2).sum())
    return float(np.sqrt(((f - f.mean(axis=axis, keepdims=True)) ** 2).sum()) / norm) if norm > 0 else 0.0


def _seam_ratio(arr: np.ndarray, axis: int) -> float:
    """Jump across the periodic seam relative to the largest jump between interior neighbours."""
    x = np.moveaxis(arr, 1 + axis, 0)
    steps = ((x[1:] - x[:-1]) ** 2).reshape(x.shape[0] - 1, -1).mean(1)
    seam = float(((x[0] - x[-1]) ** 2).mean())
    return seam / steps.max() if steps.max() > 0 else (0.0 if seam == 0 else np.inf)


def _flat(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(arr.shape[0], -1)


def _activity(comps) -> np.ndarray:
    """Change between consecutive frames relative to the state's RMS spatial fluctuation."""
    x = np.concatenate([_flat(arr) for _, _, arr in comps], 1)
    g = np.concatenate([_flat(arr - arr.mean(axis=tuple(range(1, arr.ndim - 1)), keepdims=True)) for _, _, arr in comps], 1)
    scale = np.sqrt((g ** 2).sum(1).mean()) + 1e-9 * np.abs(x).max()
    steps = np.linalg.norm(np.diff(x, axis=0), axis=1)
    return steps / scale if scale > 0 else np.zeros_like(steps)


def _nonstationarity(comps) -> float:
    """Largest change of an observable's median between the first and last third, in units of its IQR."""
    obs = []
    for _, _, arr in comps:
        sp = tuple(range(1, arr.ndim - 1))
        obs += [arr.mean(axis=sp).T[:, 1:], arr.std(axis=sp).T[:, 1:]]
    series = np.concatenate(obs + [_activity(comps)[None]], 0)
    k = max(1, series.shape[1] // 3)
    q75, q25 = np.percentile(series, [75, 25], axis=1)
    floor = 1e-3 * (np.abs(series).mean(1) + 1e-12)
    return float((np.abs(np.median(series[:, :k], 1) - np.median(series[:, -k:], 1)) / (q75 - q25 + floor)).max())


def measure_conservation(traj: Trajectory, th: PhysicsThresholds) -> dict[str, dict]:
    """Drift of mass, momentum components and the best quadratic energy over the trajectory."""
    nd = traj.n_spatial_dims
    volumes, _ = cell_volumes(traj)  # None on a grid of unknown measure: nothing to integrate
    out: dict[str, dict] = {}
    if volumes is None:
        return out

    def linear(name, parts, form):
        q = sum(integrate(p, volumes, nd) for p, _ in parts)
        scale = np.mean(sum(integrate(s, volumes, nd) for _, s in parts))
        drift = float(np.abs(q - q[0]).max() / scale) if scale > 0 else 0.0
        out[name] = {"drift": drift, "conserved": drift < th.conservation_tolerance, "form": form}

    scalars, vectors = ([n for n in traj.fields if traj.field_order[n] == o] for o in (0, 1))
    if scalars:
        linear("mass", [(traj.fields[n], np.abs(traj.fields[n])) for n in scalars], " + ".join(f"∫{n}" for n in scalars))
    for a, axis in enumerate(traj.spatial_dims[:2] if vectors and traj.cartesian else ()):
        linear(f"momentum_{axis}", [(traj.fields[n][..., a], np.linalg.norm(traj.fields[n], axis=-1)) for n in vectors],
               " + ".join(f"∫{n}_{axis}" for n in vectors))
    candidates, names, amplitude = [], [], []
    for name, f in traj.fields.items():
        arr = f.reshape(f.shape[:1 + nd] + (-1,))
        fluct = arr - space_mean(arr, volumes, nd)
        candidates.append(integrate((fluct ** 2).sum(-1), volumes, nd))
        names.append(f"∫|{name}'|²")
        amplitude.append(True)
        if traj.cartesian:
            candidates.append(integrate(gradient_sq(arr, traj), volumes, nd))
            names.append(f"∫|∇{name}|²")
            amplitude.append(False)
    if candidates:
        out["energy"] = _best_energy(np.stack(candidates, 1), names, np.array(amplitude), th)
    return out


def _best_energy(q: np.ndarray, names: list[str], amplitude: np.ndarray, th: PhysicsThresholds) -> dict:
    """The positive combination of quadratic candidates (columns of q) that varies least over time; the
    amplitude terms alone are tried first, so the simplest conserved form is the one reported."""
    from scipy.optimize import nnls

    means = q.mean(0)
    if not (means > 0).any():
        return {"drift": 0.0, "conserved": True, "form": "0 (fields vanish)"}
    best = None
    for subset in (np.flatnonzero(amplitude), np.arange(q.shape[1])):
        cols = subset[means[subset] > 1e-12 * means.max()]
        if not len(cols):
            continue
        qn = q[:, cols] / means[cols]
        big = 1e3 * math.sqrt(len(qn))
        w, _ = nnls(np.vstack([qn - qn.mean(0), big * np.ones((1, len(cols)))]), np.r_[np.zeros(len(qn)), big])
        e = qn @ w
        drift = float(np.abs(e - e[0]).max() / e.mean())
        if best is None or drift < best[0]:
            best = (drift, w / means[cols], cols)
        if drift < th.conservation_tolerance:
            break
    drift, weights, cols = best
    form = " + ".join(f"{wi / weights.max():.3g}·{names[c]}" for wi, c in zip(weights, cols) if wi > 1e-6 * weights.max())
    return {"drift": drift, "conserved": drift < th.conservation_tolerance, "form": form}


def _pod_series(comps, energy: float = 0.99, max_modes: int = 6) -> np.ndarray:
    """Temporal coefficients of the leading POD modes (the state's main global observables)."""
    x = np.concatenate([_flat(arr) for _, _, arr in comps], 1)
    x = x - x.mean(0)
    lam, u = np.linalg.eigh(x @ x.T)  # n_t x n_t Gram matrix: same temporal modes as the SVD, far cheaper
    lam, u = np.clip(lam[::-1], 0, None), u[:, ::-1]
    if lam.max(initial=0) == 0:
        return np.zeros((x.shape[0], 1))
    m = min(max_modes, int(np.searchsorted(np.cumsum(lam) / lam.sum(), energy)) + 1)
    return u[:, :m] * np.sqrt(lam[:m])


def _fit(y: np.ndarray, t: np.ndarray, freqs, nyquist: float, split: int | None = None) -> float:
    """Share of the variance of y (n_t, m) explained by sinusoids at ``freqs`` plus a constant. With ``split``
    the amplitudes are fitted on the first ``split`` frames and the share is measured on the rest: a forecast."""
    freqs = [f for f in freqs if 0 < f < nyquist]
    design = np.stack([np.ones_like(t)] + [g(2 * np.pi * f * t) for f in freqs for g in (np.cos, np.sin)], 1)
    n = split or len(t)
    coef, *_ = np.linalg.lstsq(design[:n], y[:n], rcond=None)
    rows = slice(n, None) if split else slice(None)
    total = ((y[rows] - y[rows].mean(0)) ** 2).sum()
    return float(1 - ((y[rows] - design[rows] @ coef) ** 2).sum() / total) if total > 0 else 1.0


def _best_frequency(score, grid: np.ndarray) -> float:
    """Argmax of ``score`` over the grid, refined twice on 8x finer local grids."""
    f, step = float(grid[int(np.argmax([score(g) for g in grid]))]), float(grid[1] - grid[0])
    for _ in range(2):
        local = np.linspace(f - step, f + step, 17)
        local = local[local > 0]
        f, step = float(local[int(np.argmax([score(g) for g in local]))]), step / 8
    return f


def _spectral_entropy(y: np.ndarray) -> float:
    power = (np.abs(np.fft.rfft((y - y.mean(0)) * np.hanning(len(y))[:, None], axis=0)) ** 2).sum(1)[1:]
    if len(power) < 2 or power.sum() == 0:
        return 0.0
    p = power / power.sum()
    return float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(p)))


def _late_activity(comps) -> tuple[float, float]:
    """Largest relative change between frames, and the mean change in the last quarter over that peak."""
    act = _activity(comps)
    if not len(act) or act.max() == 0:
        return 0.0, 0.0
    return float(act.max()), float(act[-max(1, len(act) // 4):].mean() / act.max())


def measure_dynamics(traj: Trajectory, comps, th: PhysicsThresholds) -> dict:
    """Dynamics class with its evidence (including the spectral entropy of the leading observables)."""
    peak, late = _late_activity(comps)
    t = traj.time - traj.time[0]
    if not (len(t) > 1 and t[-1] > 0):
        t = np.arange(len(t), dtype=float)
    duration = float(max(t[-1], 1e-12)) if len(t) > 1 else 1.0
    y = _pod_series(comps)
    out = {"late_activity_ratio": late, "spectral_entropy": _spectral_entropy(y), "periodic_fit": None,
           "quasi_periodic_fit": None, "dominant_period": None}
    if peak < th.steady_tolerance:
        return {"class": "steady", "confidence": 1 - 0.5 * peak / th.steady_tolerance, **out}
    if late < th.transient_ratio:
        return {"class": "transient", "confidence": 1 - 0.5 * late / th.transient_ratio, **out}
    nyq, split = 0.5 * (len(t) - 1) / duration, (2 * len(t)) // 3
    grid = np.arange(1.5 / duration, nyq, 1 / (8 * duration))
    r1 = r2 = 0.0
    if len(grid) > 1:
        harmonics = lambda f: (f, 2 * f, 3 * f)
        f0 = _best_frequency(lambda f: _fit(y, t, harmonics(f), nyq), grid)
        f1 = _best_frequency(lambda f: _fit(y, t, (f,), nyq), grid)
        combos = lambda f: (f1, f, 2 * f1, 2 * f, f1 + f, abs(f1 - f))
        others = grid[np.abs(grid - f1) > 1 / duration]
        f2 = _best_frequency(lambda f: _fit(y, t, combos(f), nyq), others) if len(others) > 1 else f1
        r1, r2 = (max(0.0, _fit(y, t, fs, nyq, split)) for fs in (harmonics(f0), combos(f2)))
        out.update(periodic_fit=r1, quasi_periodic_fit=max(r1, r2), dominant_period=1 / f0)
    margin = 1 - th.periodic_fit + 1e-12
    if r1 >= th.periodic_fit:
        label, conf = "periodic", 0.5 + 0.5 * (r1 - th.periodic_fit) / margin
    elif r2 >= th.periodic_fit:
        label, conf = "quasi-periodic", 0.5 + 0.5 * min(1.0, (r2 - r1) / margin)
    else:
        label, conf = "chaotic", 0.5 + 0.5 * (th.periodic_fit - r2) / th.periodic_fit
    return {"class": label, "confidence": float(np.clip(conf, 0, 1)), **out}


def _first_below(c: np.ndarray, level: float = math.exp(-1)) -> float | None:
    """Lag (in samples, interpolated) where a normalised autocorrelation first drops below ``level``."""
    below = np.nonzero(c < level)[0]
    if not len(below):
        return None
    i = int(below[0])
    return float(i - 1 + (c[i - 1] - level) / (c[i - 1] - c[i])) if i > 0 else 0.0


def measure_scales(traj: Trajectory, comps) -> dict[str, float]:
    """Correlation length and time, characteristic velocity, RMS energy, domain length, duration."""
    nd = traj.n_spatial_dims
    steps = spacing(traj)
    duration = float(traj.time[-1] - traj.time[0]) if len(traj.time) > 1 else 0.0
    g = np.concatenate([arr - arr.mean(axis=tuple(range(1, nd + 1)), keepdims=True) for _, _, arr in comps], -1)
    lengths = []
    for a, dx in enumerate(steps):
        n = g.shape[1 + a]
        pad = n if periodic(traj, traj.spatial_dims[a]) else 2 * n
        spec = np.abs(np.fft.fft(g, n=pad, axis=1 + a)) ** 2
        c = np.fft.ifft(spec, axis=1 + a).real.sum(axis=tuple(i for i in range(g.ndim) if i != 1 + a))
        lag = _first_below(c[: n // 2 + 1] / c[0]) if c[0] > 0 else None
        lengths.append((lag if lag is not None else n / 2) * dx)
    h = np.concatenate([_flat(arr) for _, _, arr in comps], 1)
    h = h - h.mean(0)
    total = (h ** 2).sum()
    moving = total > 1e-12 * ((h + h.mean(0)) ** 2).sum()  # frames identical up to rounding: no decorrelation
    ct = np.array([(h[: len(h) - k] * h[k:]).sum() / total for k in range(len(h))]) if moving else np.ones(len(h))
    lag = _first_below(ct)
    dt = duration / (len(traj.time) - 1) if len(traj.time) > 1 else 1.0
    vectors = [f for n, f in traj.fields.items() if traj.field_order[n] == 1]
    if vectors:
        velocity = math.sqrt(np.mean([(v ** 2).sum(-1).mean() for v in vectors]))
    else:
        rates = [np.diff(f, axis=0) / dt for n, f in traj.fields.items() if traj.field_order[n] == 0]
        grads = [gradient_sq(f[..., None], traj) for n, f in traj.fields.items() if traj.field_order[n] == 0]
        num, den = sum((r ** 2).mean() for r in rates), sum(gr.mean() for gr in grads)
        velocity = math.sqrt(num / den) if den > 0 and len(traj.time) > 1 else 0.0
    fluct = [(f - f.mean(axis=tuple(range(nd + 1)))) ** 2 for f in traj.fields.values()]
    energy = math.sqrt(sum(x.reshape(x.shape[:nd + 1] + (-1,)).sum(-1).mean() for x in fluct)) if fluct else 0.0
    return {"correlation_length": float(np.mean(lengths)), "correlation_time": float(lag * dt) if lag is not None else duration,
            "characteristic_velocity": float(velocity), "rms_energy": float(energy),
            "domain_length": float(max(extents(traj))), "duration": duration}


def encode_trajectory(traj: Trajectory, th: PhysicsThresholds) -> dict:
    """All physics measurements of one trajectory (the measured fields of a ``PhysicsFeatures`` record)."""
    if not traj.fields:
        raise NothingToMeasure(f"{traj.file}: trajectory {traj.index} has no time-varying fields to measure")
    comps = _components(traj)
    symmetries, _ = measure_symmetries(traj, comps, th)
    return {
        "dataset": traj.dataset, "file": str(traj.file), "trajectory": traj.index, "n_spatial_dims": traj.n_spatial_dims,
        "grid_type": traj.grid_type, "skipped_checks": skipped_checks(traj),
        "boundary_conditions": {ax: lo if lo == hi else f"{lo}/{hi}" for ax, (lo, hi) in traj.boundary.items()},
        "fields": list(traj.fields), "constant_fields": list(traj.constant_fields),
        "symmetries": {k: float(np.clip(v, 0, 1)) for k, v in symmetries.items()},
        "conserved": measure_conservation(traj, th), "dynamics": measure_dynamics(traj, comps, th),
        "scales": measure_scales(traj, comps),
        "simulation_parameters": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in traj.parameters.items()},
    }
