"""Geometry of a Well trajectory's grid for the physics checks: spacings, extents, gradients, cell
volumes, and the checks that need a uniform cartesian grid (``skipped_checks``, written to the record).

The Well's grids are "cartesian" (uniform x, y, z), "spherical" (r, theta, phi) and "equiangular"
(theta, phi on a sphere). Mirror, rotation and translation checks flip, rotate and roll array indices
and momentum integrates vector components along the axes: on a curvilinear grid those are no mirrors,
rotations, shifts or fixed directions of space (the_well's own augmentations skip non-cartesian grids
for the same reason), so they are skipped there. What holds on any grid: stationarity, the dynamics
class, the correlation time. On spherical and equiangular grids, mass and the amplitude terms of energy
are integrated with the cell volumes r² sinθ Δr Δθ Δφ (theta is the colatitude when it lies in [0, π],
else the latitude in [-π/2, π/2], weighted by cos), and lengths and velocities are counted in grid cells.
An unknown grid type, or axes other than r, theta, phi, leave no volumes: mass and energy are skipped too.
"""

from __future__ import annotations

import numpy as np

from adapters.well.the_well import GRID_TYPES, Trajectory

SPHERICAL_AXES = ("r", "theta", "phi")
CARTESIAN_ONLY = {
    "reflection": "mirrors flip array indices: a mirror of space only on a uniform cartesian grid",
    "rotation_90": "rotates array indices: a rotation of space only on a uniform cartesian grid",
    "translation": "shifts array indices: a translation of space only on a uniform cartesian grid",
    "momentum": "integrates vector components along curvilinear axes, which are no fixed directions",
    "energy_gradient_terms": "|grad f|^2 needs the grid's metric: energy is fitted from amplitude terms only",
}
IN_CELLS = "correlation length, domain length and characteristic velocity are in grid cells, not lengths"


def periodic(traj: Trajectory, axis: str) -> bool:
    return traj.boundary.get(axis) == ("PERIODIC", "PERIODIC")


def spacing(traj: Trajectory) -> list[float]:
    """Step per axis: the physical spacing on a cartesian grid, one grid cell on any other."""
    if not traj.cartesian:
        return [1.0] * traj.n_spatial_dims
    return [abs(c[1] - c[0]) if len(c) > 1 else 1.0 for c in traj.coords.values()]


def extents(traj: Trajectory) -> list[float]:
    """Length of the domain along each axis, in the units of ``spacing``."""
    out = []
    for (axis, c), dx in zip(traj.coords.items(), spacing(traj)):
        span = (c[-1] - c[0]) if traj.cartesian else (len(c) - 1) * dx
        out.append(len(c) * dx if periodic(traj, axis) else (span or dx))
    return out


def gradient_sq(f: np.ndarray, traj: Trajectory) -> np.ndarray:
    """|grad f|^2 summed over components, (n_t, *spatial), in the units of ``spacing``."""
    total = 0
    for a, (axis, dx) in enumerate(zip(traj.spatial_dims, spacing(traj))):
        if len(traj.coords[axis]) < 2:
            continue
        if periodic(traj, axis):
            g = (np.roll(f, -1, 1 + a) - np.roll(f, 1, 1 + a)) / (2 * dx)
        else:
            g = np.gradient(f, dx, axis=1 + a)
        total = total + (g ** 2).sum(-1)
    return total


def cell_volumes(traj: Trajectory) -> tuple[float | np.ndarray | None, str]:
    """Volume of each grid cell for integrals (a constant on a cartesian grid, an array on a sphere), or
    None with the reason when the grid's measure is unknown."""
    if traj.cartesian:
        return float(np.prod(spacing(traj))), ""
    if traj.grid_type.lower() not in GRID_TYPES:
        return None, f"grid_type {traj.grid_type!r} is unknown to labtune (known: {', '.join(GRID_TYPES)}): no cell volumes"
    other = [d for d in traj.spatial_dims if d not in SPHERICAL_AXES]
    if other:
        return None, f"axes {other} of a {traj.grid_type} grid: cell volumes are known for {', '.join(SPHERICAL_AXES)} only"
    volume = np.ones(traj.shape)
    for a, (axis, c) in enumerate(traj.coords.items()):
        factor = np.abs(np.gradient(c)) if len(c) > 1 else np.ones(1)
        if axis == "r":
            factor = factor * c ** 2
        if axis == "theta":
            polar = _polar_weight(c)
            if polar is None:
                return None, "theta lies outside [0, π] (colatitude) and [-π/2, π/2] (latitude) radians: no cell volumes"
            factor = factor * polar
        volume = volume * factor.reshape([-1 if i == a else 1 for i in range(len(traj.shape))])
    return volume, ""


def _polar_weight(theta: np.ndarray) -> np.ndarray | None:
    """sin(colatitude) or cos(latitude): the sphere's area factor along the polar axis."""
    eps = 1e-6
    if theta.min() >= -eps and theta.max() <= np.pi + eps:
        return np.abs(np.sin(theta))
    if theta.min() >= -np.pi / 2 - eps and theta.max() <= np.pi / 2 + eps:
        return np.abs(np.cos(theta))
    return None


def integrate(a: np.ndarray, volumes: float | np.ndarray, nd: int) -> np.ndarray:
    """Integral over space of ``a`` (n_t, *spatial) at each time step."""
    sp = tuple(range(1, nd + 1))
    return a.sum(axis=sp) * volumes if np.ndim(volumes) == 0 else (a * volumes).sum(axis=sp)


def space_mean(arr: np.ndarray, volumes: float | np.ndarray, nd: int) -> np.ndarray:
    """Mean over space of ``arr`` (n_t, *spatial, C), weighted by cell volume, keeping dims."""
    sp = tuple(range(1, nd + 1))
    if np.ndim(volumes) == 0:
        return arr.mean(axis=sp, keepdims=True)
    w = volumes[..., None]
    return (arr * w).sum(axis=sp, keepdims=True) / w.sum()


def skipped_checks(traj: Trajectory) -> dict[str, str]:
    """Checks not run, or run in grid cells, on this trajectory's grid, each with why (empty when cartesian)."""
    if traj.cartesian:
        return {}
    skipped = {}
    if traj.grid_type.lower() not in GRID_TYPES:
        skipped["grid_type"] = f"{traj.grid_type!r} is unknown to labtune: read and measured as a non-cartesian grid"
    orders = {traj.field_order[name] for name in traj.fields}
    vectors = 1 in orders
    skipped.update({k: why for k, why in CARTESIAN_ONLY.items()
                    if not (k == "momentum" and not vectors) and not (k == "rotation_90" and traj.n_spatial_dims < 2)})
    _, why = cell_volumes(traj)
    if why:
        skipped.update({"mass": why} if 0 in orders else {}, energy=why)
        del skipped["energy_gradient_terms"]
    skipped["spatial_scales"] = IN_CELLS
    return skipped
