"""Physics measured on one Well trajectory: symmetries, conserved quantities, dynamics class, scales.

Every test reads only the recorded fields, grids and boundary conditions (never a solver, never the
generator's truth). Fields are compared on equal footing by dividing each by its space-time spread.

- reflection_x/y, rotation_90: the normalised correlation <g, R g>/<g, g> of the state g with its
  mirror/rotated image R g (vector and tensor components transform along; scalar fields have their
  spatial mean removed), for one fixed mirror axis/rotation centre; the axis is searched over all
  positions on periodic axes and is the domain centre otherwise. Score = best axis of the smallest
  correlation over time: a symmetric trajectory is symmetric at every frame about the same axis.
- translation_x/y (the dynamics commutes with shifts): the axis is periodic at both ends; no
  time-invariant field (a medium: velocity of a fixed flow, coefficients, obstacles) varies along it;
  and the periodic seam is as smooth as the interior (a mislabelled wall shows a jump there).
- time_translation (statistical stationarity): no observable (spatial mean and spread of every
  field component, rate of change) differs between the two halves of the record by more than
  ``stationarity`` of its spread over the record.
- conserved: mass = integral of the scalar fields, momentum = integral of the vector fields, drift
  relative to the integral of their absolute values; energy = the positive combination of quadratic
  candidates (integral of |f - mean|^2 and |grad f|^2 per field) that varies least, drift relative
  to its mean. A quantity is conserved when its largest drift from t=0 is below ``conservation_tolerance``.
- dynamics: steady when no frame changes by more than ``steady_tolerance``; transient when the rate
  of change in the last quarter falls below ``transient_ratio`` of its peak; otherwise harmonic fits
  to the leading POD coefficients decide: periodic (one base frequency + 2 harmonics), quasi-periodic
  (two incommensurate base frequencies + combinations), else chaotic.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.the_well import Trajectory

SYMMETRIES = ("translation_x", "translation_y", "reflection_x", "reflection_y", "rotation_90", "time_translation")
CONSERVED = ("mass", "energy", "momentum_x", "momentum_y")
DYNAMICS = ("steady", "transient", "periodic", "quasi-periodic", "chaotic")
AXES = ("x", "y", "z")
FEATURE_LAYOUT = (
    "n_spatial_dims",
    "periodic_x", "periodic_y",                   # 1 when periodic at both ends; 0 otherwise or absent
    *(f"sym_{s}" for s in SYMMETRIES),             # confidences in [0, 1]; 0 when not applicable
    *(f"conserved_{c}" for c in CONSERVED),        # 1 yes, 0 no, -1 not applicable
    *(f"drift_{c}" for c in CONSERVED),            # -log10(drift) clipped to [0, 8]; 0 when not applicable
    *(f"dyn_{d.replace('-', '_')}" for d in DYNAMICS),  # one-hot
    "dyn_confidence",
    "correlation_length_frac",                    # correlation length / domain length
    "correlation_time_frac",                      # correlation time / duration
    "log10_domain_crossings",                     # log10(1 + velocity * duration / domain length)
    "log10_rms_energy",                           # clipped to [-8, 8]
    "spectral_entropy",                           # of the POD coefficients' spectrum: 0 one line, 1 flat
)


class PhysicsThresholds(BaseModel):
    """Decision thresholds of the physics tests (see the module docstring for each test)."""

    model_config = ConfigDict(extra="forbid")
    conservation_tolerance: float = Field(5e-3, gt=0, description="Largest relative drift of a conserved quantity")
    symmetry_score: float = Field(0.95, gt=0, lt=1, description="Mirror/rotation correlation at which a symmetry's confidence is 0.5")
    symmetry_width: float = Field(0.01, gt=0, description="Correlation change that moves a symmetry's confidence from 0.5 to 0.73")
    steady_tolerance: float = Field(1e-4, gt=0, description="Largest relative change between frames of a steady trajectory")
    transient_ratio: float = Field(0.25, gt=0, lt=1, description="Late/peak rate of change below which dynamics relaxes (transient)")
    periodic_fit: float = Field(0.95, gt=0, le=1, description="Variance share a harmonic fit must explain for periodic / quasi-periodic")
    stationarity: float = Field(1.0, gt=0, description="Largest half-to-half change of an observable, in units of its spread, for stationarity")
    homogeneity: float = Field(0.05, gt=0, description="Relative variation along an axis of a time-invariant field that breaks translation symmetry")


class ConservedQuantity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drift: float = Field(ge=0, description="Largest |Q(t) - Q(0)| relative to the quantity's scale")
    conserved: bool
    form: str = Field(description="What was integrated")


class Dynamics(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    label: Literal["steady", "transient", "periodic", "quasi-periodic", "chaotic"] = Field(alias="class")
    confidence: float = Field(ge=0, le=1)
    late_activity_ratio: float = Field(description="Mean rate of change in the last quarter / its peak")
    periodic_fit: float = Field(description="Variance share explained by one base frequency + harmonics")
    quasi_periodic_fit: float = Field(description="Variance share explained by two base frequencies + combinations")
    dominant_period: float | None = Field(description="1 / best base frequency, in the file's time unit")


class PhysicsFeatures(BaseModel):
    """One line of ``features.jsonl``: the physics of one trajectory."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    file: str
    trajectory: int = Field(ge=0)
    n_spatial_dims: int = Field(ge=1, le=3)
    boundary_conditions: dict[str, str] = Field(description="Per axis: PERIODIC | WALL | OPEN, 'LOW/HIGH' when the ends differ")
    fields: list[str]
    constant_fields: list[str]
    symmetries: dict[str, float]
    conserved: dict[str, ConservedQuantity]
    dynamics: Dynamics
    scales: dict[str, float]
    feature_vector: list[float] = Field(min_length=len(FEATURE_LAYOUT), max_length=len(FEATURE_LAYOUT))
    simulation_parameters: dict[str, float | int | str | bool]

    @field_validator("symmetries")
    @classmethod
    def _confidences(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if k not in SYMMETRIES or not 0 <= c <= 1}
        if bad:
            raise ValueError(f"symmetry confidences must be in [0, 1] for names in {SYMMETRIES}, got {bad}")
        return v

    @field_validator("feature_vector", "scales")
    @classmethod
    def _finite(cls, v):
        values = v.values() if isinstance(v, dict) else v
        if not all(math.isfinite(x) for x in values):
            raise ValueError("must be finite numbers")
        return v


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


def _periodic(traj: Trajectory, axis: str) -> bool:
    return traj.boundary.get(axis) == ("PERIODIC", "PERIODIC")


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
    """Symmetry confidences and the raw scores behind them."""
    nd = traj.n_spatial_dims
    axes = traj.spatial_dims
    conf, raw = {}, {}
    squash = lambda s: _sigmoid((s - th.symmetry_score) / th.symmetry_width)  # noqa: E731
    for a, axis in enumerate(axes[:2]):
        g, h = _centred(comps, lambda x, order, a=a: np.flip(x, 1 + a) * _component_signs(order, nd, a))
        raw[f"reflection_{axis}"] = _mirror_score(g, h, (1 + a,) if _periodic(traj, axis) else ())
        conf[f"reflection_{axis}"] = squash(raw[f"reflection_{axis}"])
    if nd == 2 and traj.shape[0] == traj.shape[1]:
        g, h = _centred(comps, lambda x, order: _rotate_components(np.rot90(x, 1, axes=(1, 2)), order))
        both = _periodic(traj, axes[0]) and _periodic(traj, axes[1])
        raw["rotation_90"] = _mirror_score(g, h, (1, 2) if both else ())
        conf["rotation_90"] = squash(raw["rotation_90"])
    elif nd == 2:
        conf["rotation_90"] = raw["rotation_90"] = 0.0
    for a, axis in enumerate(axes[:2]):
        periodic = 1.0 if _periodic(traj, axis) else 0.0
        medium = max([_variation_along(f, a, traj.n_spatial_dims) for f in traj.constant_fields.values()], default=0.0)
        seam = max((_seam_ratio(arr, a) for _, _, arr in comps), default=0.0)
        raw[f"translation_{axis}_medium"], raw[f"translation_{axis}_seam"] = medium, seam
        homogeneous = float(np.clip(2 - medium / th.homogeneity, 0, 1))
        smooth = float(np.clip((4 - seam) / 2, 0, 1))
        conf[f"translation_{axis}"] = 0.02 + 0.96 * periodic * homogeneous * smooth
    raw["time_translation"] = _nonstationarity(comps)
    conf["time_translation"] = _sigmoid((th.stationarity - raw["time_translation"]) / (0.1 * th.stationarity))
    return conf, raw


def _variation_along(field: np.ndarray, axis: int, nd: int) -> float:
    """How far a time-invariant field is from constant along ``axis`` (0 = constant)."""
    f = field.reshape(field.shape[:nd] + (-1,))
    norm = np.sqrt((f ** 2).sum())
    return float(np.sqrt(((f - f.mean(axis=axis, keepdims=True)) ** 2).sum()) / norm) if norm > 0 else 0.0


def _seam_ratio(arr: np.ndarray, axis: int) -> float:
    """Jump across the periodic seam relative to the largest jump between interior neighbours."""
    x = np.moveaxis(arr, 1 + axis, 0)
    steps = ((x[1:] - x[:-1]) ** 2).reshape(x.shape[0] - 1, -1).mean(1)
    seam = float(((x[0] - x[-1]) ** 2).mean())
    return seam / steps.max() if steps.max() > 0 else (0.0 if seam == 0 else np.inf)


def _activity(comps) -> tuple[np.ndarray, float]:
    """Rate of change between frames relative to the state's spatial spread, and its scale."""
    x = np.concatenate([arr.reshape(arr.shape[0], -1) for _, _, arr in comps], 1)
    spread = np.sqrt(np.mean([((arr - arr.mean(axis=tuple(range(1, arr.ndim - 1)), keepdims=True)) ** 2).reshape(arr.shape[0], -1).sum(1)
                              for _, _, arr in comps], axis=0).sum())
    scale = spread + 1e-9 * np.abs(x).max() if x.size else 0.0
    steps = np.linalg.norm(np.diff(x, axis=0), axis=1)
    return (steps / scale if scale > 0 else np.zeros_like(steps)), scale


def _nonstationarity(comps) -> float:
    """Largest half-to-half change of an observable in units of its spread over the record."""
    obs = []
    for _, _, arr in comps:
        sp = tuple(range(1, arr.ndim - 1))
        obs += [arr.mean(axis=sp).T, arr.std(axis=sp).T]
    act, _ = _activity(comps)
    series = np.concatenate(obs + [act[None]], 0)
    h = series.shape[1] // 2
    floor = 1e-3 * (np.abs(series).mean(1) + 1e-12)
    d = np.abs(series[:, :h].mean(1) - series[:, -h:].mean(1)) / (series.std(1) + floor)
    return float(d.max())


def _integral(traj: Trajectory) -> float:
    return float(np.prod([abs(c[1] - c[0]) if len(c) > 1 else 1.0 for c in traj.coords.values()]))


def _gradient_sq(f: np.ndarray, traj: Trajectory) -> np.ndarray:
    """|grad f|^2 summed over components, (n_t, *spatial)."""
    total = 0
    for a, axis in enumerate(traj.spatial_dims):
        c = traj.coords[axis]
        dx = abs(c[1] - c[0]) if len(c) > 1 else 1.0
        if len(c) < 2:
            continue
        if _periodic(traj, axis):
            g = (np.roll(f, -1, 1 + a) - np.roll(f, 1, 1 + a)) / (2 * dx)
        else:
            g = np.gradient(f, dx, axis=1 + a)
        total = total + (g ** 2).sum(-1)
    return total


def measure_conservation(traj: Trajectory, th: PhysicsThresholds) -> dict[str, ConservedQuantity]:
    """Drift of mass, momentum components and the best quadratic energy over the trajectory."""
    nd, dv = traj.n_spatial_dims, _integral(traj)
    sp = tuple(range(1, nd + 1))
    out: dict[str, ConservedQuantity] = {}

    def linear(name, parts, form):
        q = sum(p.sum(axis=sp) for p, _ in parts) * dv
        scale = np.mean(sum(s.sum(axis=sp) for _, s in parts)) * dv
        drift = float(np.abs(q - q[0]).max() / scale) if scale > 0 else 0.0
        out[name] = ConservedQuantity(drift=drift, conserved=drift < th.conservation_tolerance, form=form)

    scalars = [n for n, f in traj.fields.items() if traj.field_order[n] == 0]
    vectors = [n for n, f in traj.fields.items() if traj.field_order[n] == 1]
    if scalars:
        linear("mass", [(traj.fields[n], np.abs(traj.fields[n])) for n in scalars], " + ".join(f"∫{n}" for n in scalars))
    for a, axis in enumerate(traj.spatial_dims[:2]):
        if vectors:
            linear(f"momentum_{axis}", [(traj.fields[n][..., a], np.linalg.norm(traj.fields[n], axis=-1)) for n in vectors],
                   " + ".join(f"∫{n}_{axis}" for n in vectors))
    candidates, names = [], []
    for name, f in traj.fields.items():
        arr = f.reshape(f.shape[:1 + nd] + (-1,))
        fluct = arr - arr.mean(axis=sp, keepdims=True)
        candidates += [(fluct ** 2).sum(-1).sum(axis=sp) * dv, _gradient_sq(arr, traj).sum(axis=sp) * dv]
        names += [f"∫|{name}'|²", f"∫|∇{name}|²"]
    if candidates:
        out["energy"] = _best_energy(np.stack(candidates, 1), names, th)
    return out


def _best_energy(q: np.ndarray, names: list[str], th: PhysicsThresholds) -> ConservedQuantity:
    """The positive combination of quadratic candidates (columns of q) that varies least over time."""
    from scipy.optimize import nnls

    means = q.mean(0)
    keep = means > 1e-12 * max(means.max(), 1e-300)
    if not keep.any():
        return ConservedQuantity(drift=0.0, conserved=True, form="0 (fields vanish)")
    qn = q[:, keep] / means[keep]
    big = 1e3 * math.sqrt(len(qn))
    w, _ = nnls(np.vstack([qn - qn.mean(0), big * np.ones((1, qn.shape[1]))]), np.r_[np.zeros(len(qn)), big])
    e = qn @ w
    drift = float(np.abs(e - e[0]).max() / e.mean()) if e.mean() > 0 else 0.0
    weights = w / means[keep]
    kept = [n for n, k in zip(names, keep) if k]
    form = " + ".join(f"{wi / weights.max():.3g}·{n}" for wi, n in zip(weights, kept) if wi > 1e-6 * weights.max())
    return ConservedQuantity(drift=drift, conserved=drift < th.conservation_tolerance, form=form)
