"""How measured physics decides a circuit: the design rules of quantum-mind's examples (and of its validation prompts).

A conserved linear integral (mass, or a momentum component) → U(1) families (number N = Σ(1−Z)/2
conserved); a conserved quadratic energy with mass not conserved, or with oscillating (periodic,
quasi-periodic) motion → Z2 parity family; hardware-efficient and QAOA baselines (claim "none")
always, and alone when nothing is conserved. PERIODIC x → ring, walls → open chain; 2-D fields may
use a rows × cols grid (periodic axes wrapped). Translation-symmetric trajectories share one angle
per layer across bonds; mirror-symmetric walled ones share angles between mirror images. Depth
follows the correlation length in sites (a brick layer spreads correlations by two sites) plus the
dynamics; particle number, parity and filling come from the reference state.

    d = design(features, generate_config, random.Random(0))   # d.spec renders with circuit_families.render
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Protocol

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.encode_trajectories import PhysicsFeatures

LINEAR = ("mass", "momentum_x", "momentum_y")


class DesignLimits(Protocol):
    """The range a design may draw from (the generate stage's config has these fields)."""

    families: list[str]
    min_qubits: int
    max_qubits: int
    max_layers: int
    baseline_share: float
    symmetry_confidence: float
    answer: str  # "full" | "brief": brief answers use the library code style (a chain or ring, one library call)


@dataclass(frozen=True)
class Design:
    """A circuit chosen for one trajectory, with the physics facts that chose it."""

    spec: cf.CircuitSpec
    suggested_layers: int
    xi_sites: float
    sites_x: int


def conserved_linear(f: PhysicsFeatures) -> list[str]:
    return [q for q in LINEAR if q in f.conserved and f.conserved[q].conserved]


def eligible_families(f: PhysicsFeatures, families: list[str]) -> list[str]:
    """Enabled families whose symmetry claim the trajectory's physics supports (baselines always)."""
    energy = f.conserved.get("energy")
    mass = f.conserved.get("mass")
    wave = f.dynamics.label in ("periodic", "quasi-periodic")
    ok = {"u1_givens": bool(conserved_linear(f)), "u1_exchange": bool(conserved_linear(f)),
          "z2_parity": bool(energy and energy.conserved and (wave or not (mass and mass.conserved))),
          "hardware_efficient": True, "qaoa": True}
    return [fam for fam in cf.FAMILIES if fam in families and ok[fam]]


def translation_symmetric(f: PhysicsFeatures, axes: tuple[str, ...], threshold: float) -> bool:
    return all(f.boundary_conditions.get(ax) == "PERIODIC" and f.symmetries.get(f"translation_{ax}", 0) >= threshold for ax in axes)


def enabled_families(cfg: DesignLimits) -> list[str]:
    """The configured families a design may use: brief answers only those with a library builder (``cf.LIBRARY``)."""
    return [x for x in cfg.families if cfg.answer != "brief" or x in cf.LIBRARY]


def design(f: PhysicsFeatures, cfg: DesignLimits, rng: random.Random, family: str | None = None) -> Design:
    """A circuit for trajectory ``f``: family (given or drawn), lattice, sharing, depth, reference, spelling."""
    fams = eligible_families(f, enabled_families(cfg))
    if family is None:
        symmetric = [x for x in fams if x not in cf.BASELINES]
        baselines = [x for x in fams if x in cf.BASELINES]
        pool = baselines if not symmetric or (baselines and rng.random() < cfg.baseline_share) else symmetric
        # where the parity family fits, it is the most specific choice half of the time
        family = "z2_parity" if "z2_parity" in pool and rng.random() < 0.5 else rng.choice(pool)
    n = rng.randint(cfg.min_qubits, cfg.max_qubits)
    if cfg.answer == "brief":
        return _library_design(f, cfg, rng, family, n)
    px, py = (f.boundary_conditions.get(ax) == "PERIODIC" for ax in ("x", "y"))
    # a 2-D field may sit on a rows x cols grid; a periodic axis needs >= 3 sites to wrap around
    grids = [(r, n // r) for r in range(2, n) if n % r == 0 and n // r >= 2
             and (not px or n // r >= 3) and (not py or r >= 3)] if f.n_spatial_dims >= 2 else []
    if grids and rng.random() < 0.5:
        shape, periodic = rng.choice(grids), (px, py)
    else:
        shape, periodic = (n,), (px,)
    axes = ("x", "y")[:len(shape)]
    sym = cf.SYMMETRY[family]
    if family == "qaoa":
        sharing = "per_layer"
    elif family == "hardware_efficient":
        sharing = "none"
    elif translation_symmetric(f, axes, cfg.symmetry_confidence):
        sharing = "translation"
    elif (cf.connectivity(shape, periodic) == "chain" and f.symmetries.get("reflection_x", 0) >= cfg.symmetry_confidence
          and rng.random() < 0.7):
        sharing = "mirror"
    else:
        sharing = "none"
    variant = _variant(family, sharing, rng)
    xi_sites, suggested, layers = _depth(f, cfg, rng, shape[-1])
    roles = _roles(family, variant, rng)
    used: set[str] = set()
    names = []
    for role in roles:
        name = rng.choice([x for x in cf.NAMES[role] if x not in used])
        used.add(name)
        names.append((role, name))
    couplings = _couplings(shape, periodic, xi_sites) if family == "qaoa" else ()
    spec = cf.CircuitSpec(
        family=family, variant=variant, shape=shape, periodic=periodic, layers=layers,
        ordering="brick" if sharing == "translation" or rng.random() < 0.65 else "sequential", sharing=sharing,
        occupied=_reference(sym, n, shape, rng) if family != "qaoa" else (), names=tuple(names), couplings=couplings,
        style=rng.choice(("loop", "loop", "function", "unrolled")), compose=rng.randrange(3),
        fields_first=rng.random() < 0.3, interleave=rng.random() < 0.6)
    conn = cf.connectivity(shape, periodic)
    comment = f"{family} ({variant}), {n} qubits on a {conn}, {layers} layer{'s' * (layers > 1)}, sharing: {sharing}"
    return Design(replace(spec, comment=comment), suggested, xi_sites, shape[-1])


def _variant(family: str, sharing: str, rng: random.Random) -> str:
    """A variant of ``family``; under translation sharing not one whose uniform field would be trivial."""
    return rng.choice([v for v in cf.VARIANTS[family] if not (sharing == "translation" and v in cf.UNIFORM_FIELD_IS_TRIVIAL)])


def _roles(family: str, variant: str, rng: random.Random | None) -> list[str]:
    """The parameter roles of a variant (with ``rng``, a hardware-efficient circuit ends in a rotation layer half of the
    time; without, never)."""
    roles = sorted({r for _, _, rs in cf.VARIANTS[family][variant] for r in rs})
    if family == "hardware_efficient" and rng is not None and rng.random() < 0.5:
        roles.append("final")
    return roles


def _depth(f: PhysicsFeatures, cfg: DesignLimits, rng: random.Random, sites_x: int) -> tuple[float, int, int]:
    """(correlation length in sites, suggested layers, chosen layers): ξ over two sites per layer, plus the dynamics."""
    xi_sites = f.scales["correlation_length"] / max(f.scales["domain_length"], 1e-12) * sites_x
    extra = {"periodic": 1, "quasi-periodic": 1, "chaotic": 2}.get(f.dynamics.label, 0)
    suggested = max(1, min(cfg.max_layers, math.ceil(xi_sites / 2) + extra))
    return xi_sites, suggested, suggested if rng.random() < 0.4 else rng.randint(1, cfg.max_layers)


def _library_design(f: PhysicsFeatures, cfg: DesignLimits, rng: random.Random, family: str, n: int) -> Design:
    """The design of a brief answer: a chain or ring of ``n`` qubits written as one library call (the family's
    ``cf.LIBRARY`` variant, an angle per gate, a reference filling the first qubits)."""
    periodic = (f.boundary_conditions.get("x") == "PERIODIC",)
    variant = cf.LIBRARY[family][0]
    sym = cf.SYMMETRY[family]
    k = rng.randint(1, n - 1) if sym == "u1" else rng.choice((0, 1, 2)) if sym == "z2" else 0
    xi_sites, suggested, layers = _depth(f, cfg, rng, n)
    spec = cf.CircuitSpec(family=family, variant=variant, shape=(n,), periodic=periodic, layers=layers, ordering="sequential",
                          sharing="none", occupied=tuple(range(k)),
                          names=tuple((r, cf.NAMES[r][0]) for r in _roles(family, variant, None)),
                          style="library", interleave=False)
    return Design(spec, suggested, xi_sites, n)


def _couplings(shape, periodic, xi_sites: float) -> tuple:
    """Ising couplings J(d) = exp(-d / xi) on the bonds, plus distance-2 pairs of a chain when J(2) >= 0.1."""
    j1, j2 = (round(math.exp(-d / max(xi_sites, 1e-6)), 3) for d in (1, 2))
    pairs = [(a, b, j1) for a, b, _ in cf.lattice_bonds(shape, periodic, "brick")]
    n = shape[0]
    if len(shape) == 1 and j2 >= 0.1 and n >= 5:
        pairs += [(q, (q + 2) % n, j2) for q in range(n if periodic[0] else n - 2)]
    return tuple(pairs)


def _reference(sym: str, n: int, shape, rng: random.Random) -> tuple[int, ...]:
    """Occupied qubits of the reference state: varied fillings (u1), parities (z2), empty or Néel (baselines)."""
    cols = shape[-1]
    neel = tuple(q for q in range(n) if (q // cols + q % cols) % 2 == 0) if len(shape) == 2 else tuple(range(0, n, 2))
    if sym == "none":
        return neel if rng.random() < 0.3 else ()
    if sym == "z2":
        return rng.choice([(), (n // 2,), (0, 1), neel, (0,)])
    k = rng.randint(1, n - 1)
    return rng.choice([neel, tuple(range(n // 2)), (rng.randrange(n),), tuple(range(0, n, 3)), tuple(range(n - k, n)),
                       tuple(sorted(rng.sample(range(n), k)))])
