"""Training examples that turn measured physics into circuits (quantum-mind stage 3).

Each trajectory's ``PhysicsFeatures`` (tasks/encode_trajectories.py) decides a circuit design, and
each example explains that design from the measured numbers (drifts, symmetry confidences, periods,
correlation lengths, boundary conditions) and ends in exactly one ```python block that follows the
verifier's code contract (tasks/verify_circuits.py), with claims that are true by construction:

- ``physics_to_circuit``: physics description → circuit
- ``simulation_to_insight``: simulation behaviour → physics insight + circuit implications
- ``conservation_to_constraint``: conservation law → circuit constraint
- ``physics_reasoning``: a step-by-step chain from the features to the circuit (the mix's
  physics-reasoning source). It too ends in a code block, so the select step after verification
  treats every record alike.

Design rules: a conserved linear integral (mass, or a momentum component) → U(1) families (number
N = Σ(1−Z)/2 conserved); a conserved quadratic energy with mass not conserved, or with oscillating
(periodic, quasi-periodic) motion → Z2 parity family; hardware-efficient and QAOA baselines (claim
"none") always, and alone when nothing is conserved. PERIODIC x → ring, walls → open chain; 2-D
fields may use a rows × cols grid (periodic axes wrapped). Translation-symmetric trajectories share
one angle per layer across bonds; mirror-symmetric walled ones share angles between mirror images.
Depth follows the correlation length in sites (a brick layer spreads correlations by two sites)
plus the dynamics; particle number, parity and filling come from the reference state.

``examples`` counts the records of both files; ``reasoning_share`` of them are physics_reasoning,
the rest are split evenly over the three seed types. Trajectories are used round-robin.

Outputs: ``physics_augmented.jsonl`` and ``physics_reasoning.jsonl`` (the users' record shape),
``chat_physics.jsonl`` and ``chat_reasoning.jsonl`` (ChatRecords), ``code.jsonl`` ({id, code, claims}
per distinct code block: the verify stage's input), ``rejects.jsonl`` (trajectories no enabled
family fits), ``manifest.json``.

    python -m tasks.generate_physics_examples --features data/quantum_mind/encode/features.jsonl --out data/quantum_mind/generate
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks import circuit_families as cf
from tasks.encode_trajectories import PhysicsFeatures
from tasks.records import ChatRecord, read_models, write_jsonl
from tasks.reporting import StageProgress, counts_table, publish_table
from tasks.stage import (
    cached,
    module_source,
    prefect_cache_key,
    stage_key,
    stage_output,
)
from tasks.stage_cli import config_from_args, stage_parser

STAGE = "generate"
SEED_TYPES = ("physics_to_circuit", "simulation_to_insight", "conservation_to_constraint")
REASONING = "physics_reasoning"
LINEAR = ("mass", "momentum_x", "momentum_y")
SYMMETRY_NAME = {"u1": "U(1)", "z2": "Z2"}
Family = Literal["u1_givens", "u1_exchange", "z2_parity", "hardware_efficient", "qaoa"]


class GenerateConfig(BaseModel):
    """How many examples, of which kinds, and the range of circuits they may use."""

    model_config = ConfigDict(extra="forbid")
    examples: int = Field(5000, ge=1, description="Records written in total (physics_augmented + physics_reasoning)")
    reasoning_share: float = Field(0.2, ge=0, le=1, description="Share of `examples` that are physics_reasoning records "
                                                                "(the rest split evenly over the three seed types)")
    min_qubits: int = Field(4, ge=2, le=16, description="Smallest circuit width")
    max_qubits: int = Field(12, ge=2, le=16, description="Largest circuit width (the verifier simulates up to its max_qubits)")
    max_layers: int = Field(6, ge=1, le=12, description="Deepest ansatz, in layers")
    families: list[Family] = Field(list(cf.FAMILIES), min_length=1, description="Circuit families allowed")
    baseline_share: float = Field(0.2, ge=0, le=1, description="Share of baseline families (hardware_efficient, qaoa) where "
                                                               "a symmetric family also fits (conservation examples never use them then)")
    symmetry_confidence: float = Field(0.5, gt=0, lt=1, description="Confidence from which a measured symmetry shapes the circuit")
    holdout_splits: list[str] = Field(["test"], description="Well splits whose trajectories are kept out of training "
                                                            "(the validation suite builds its prompts from them)")
    min_distinct_share: float = Field(0.9, ge=0, le=1, description="Fail when fewer code blocks than this share are distinct")
    max_reject_rate: float = Field(0.5, ge=0, le=1, description="Fail when more trajectories than this share fit no enabled family")
    system_prompt: str = Field("You are a physicist who designs quantum circuits from measured simulation data. Cite the "
                               "measurements, then give one Qiskit code block.", description="System message of the chat records")
    seed: int = Field(0, description="Seed of every choice (same seed + features → same files)")

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_qubits > self.max_qubits:
            raise ValueError(f"generate: min_qubits ({self.min_qubits}) is above max_qubits ({self.max_qubits})")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"generate: families repeat: {self.families}")
        return self


@dataclass(frozen=True)
class Design:
    """A circuit chosen for one trajectory, with the physics facts that chose it."""

    spec: cf.CircuitSpec
    suggested_layers: int
    xi_sites: float
    sites_x: int


def drift(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}" if x < 1e-3 else f"{x:.3g}"


def num(x: float) -> str:
    return f"{x:.3g}"


def read_features(path: Path) -> list[PhysicsFeatures]:
    """PhysicsFeatures records; a bad one raises RecordError naming the file, record and field."""
    return read_models(path, PhysicsFeatures)


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


def design(f: PhysicsFeatures, cfg: GenerateConfig, rng: random.Random, family: str | None = None) -> Design:
    """A circuit for trajectory ``f``: family (given or drawn), lattice, sharing, depth, reference, spelling."""
    fams = eligible_families(f, cfg.families)
    if family is None:
        symmetric = [x for x in fams if x not in cf.BASELINES]
        baselines = [x for x in fams if x in cf.BASELINES]
        pool = baselines if not symmetric or (baselines and rng.random() < cfg.baseline_share) else symmetric
        # where the parity family fits, it is the most specific choice half of the time
        family = "z2_parity" if "z2_parity" in pool and rng.random() < 0.5 else rng.choice(pool)
    n = rng.randint(cfg.min_qubits, cfg.max_qubits)
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
    variants = [v for v in cf.VARIANTS[family] if not (sharing == "translation" and v in cf.UNIFORM_FIELD_IS_TRIVIAL)]
    variant = rng.choice(variants)
    sites_x = shape[-1]
    xi_sites = f.scales["correlation_length"] / max(f.scales["domain_length"], 1e-12) * sites_x
    extra = {"periodic": 1, "quasi-periodic": 1, "chaotic": 2}.get(f.dynamics.label, 0)
    suggested = max(1, min(cfg.max_layers, math.ceil(xi_sites / 2) + extra))
    layers = suggested if rng.random() < 0.4 else rng.randint(1, cfg.max_layers)
    roles = sorted({r for _, _, rs in cf.VARIANTS[family][variant] for r in rs})
    if family == "hardware_efficient" and rng.random() < 0.5:
        roles.append("final")
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
    return Design(replace(spec, comment=comment), suggested, xi_sites, sites_x)


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


# ---- text ---------------------------------------------------------------------------------------------

def describe_features(f: PhysicsFeatures, focus: str, rng: random.Random) -> str:
    """The ``input`` of an example: the measurements, as prose, bullets or key: value lines."""
    system = (f"{f.dataset}, trajectory {f.trajectory} of {Path(f.file).name} ({f.n_spatial_dims}-D; fields "
              f"{', '.join(f.fields)}; time-invariant medium: {', '.join(f.constant_fields) or 'none'})")
    items = [("system", system)]
    items.append(("boundaries", ", ".join(f"{ax} {bc}" for ax, bc in f.boundary_conditions.items())))
    cons = "; ".join(f"{q} ({c.form}): drift {drift(c.drift)} → {'conserved' if c.conserved else 'not conserved'}"
                     for q, c in f.conserved.items())
    syms = ", ".join(f"{s} {v:.2f}" for s, v in f.symmetries.items())
    if focus != "behaviour":
        items += [("conservation", cons), ("symmetry confidences", syms)]
    d, s = f.dynamics, f.scales
    dyn = f"{d.label} (confidence {d.confidence:.2f}), late/peak activity {num(d.late_activity_ratio)}, spectral entropy {d.spectral_entropy:.2f}"
    if d.dominant_period is not None:
        dyn += f", dominant period {num(d.dominant_period)} (periodic fit {num(d.periodic_fit)}, quasi-periodic fit {num(d.quasi_periodic_fit)})"
    scales = (f"correlation length {num(s['correlation_length'])} in a domain of {num(s['domain_length'])}, correlation time "
              f"{num(s['correlation_time'])} over {num(s['duration'])}, characteristic velocity {num(s['characteristic_velocity'])}")
    if focus != "conservation":
        items += [("dynamics", dyn), ("scales", scales)]
    if focus == "behaviour":
        items.append(("drifts", cons))
    if f.simulation_parameters:
        items.append(("parameters", ", ".join(f"{k}={v}" for k, v in f.simulation_parameters.items())))
    form = rng.randrange(3)
    if form == 0:
        return "\n".join(f"- {k}: {v}" for k, v in items)
    if form == 1:
        return " ".join(f"{k.capitalize()}: {v}." for k, v in items)
    return "\n".join(f"{k} = {v}" for k, v in items)


def symmetry_reason(f: PhysicsFeatures, spec: cf.CircuitSpec, fams: list[str], rng: random.Random) -> str:
    """Why the family (and its symmetry claim) follows from the conservation measurements."""
    c = f.conserved
    if spec.family in ("u1_givens", "u1_exchange"):
        q = conserved_linear(f)[0]
        moves = f"drifts by only {drift(c[q].drift)}" if c[q].drift else "does not drift at all (drift 0)"
        text = (f"{q.replace('_', ' ').capitalize()} ({c[q].form}) {moves} over the run, so it is conserved. " + rng.choice([
                    ("A conserved integral maps to a conserved excitation number N = Σ(1−Z_i)/2 on the qubits: every gate "
                     "must commute with N (U(1) symmetry)."),
                    ("On qubits the analogue of a conserved charge is the excitation number N = Σ(1−Z_i)/2, so the ansatz "
                     "must be U(1)-symmetric: [U(θ), N] = 0 for every θ.")]))
        if spec.family == "u1_givens":
            text += (" XX+YY (Givens) rotations move an excitation between neighbouring qubits without creating or "
                     "destroying one" + {"hop": ".", "hop_field": "; RZ on each site is diagonal, so it keeps N too.",
                                         "hop_interaction": "; RZZ is a diagonal density–density interaction and keeps N.",
                                         "hop_phase": "; their phase β (a hopping phase) keeps N as well."}[spec.variant])
        else:
            text += (" RXX(θ)·RYY(θ) with one angle is exp(−iθ(XX+YY)/2): neither gate conserves N alone, the pair does, "
                     "so the two always share an angle and sit back to back"
                     + {"exchange": ".", "exchange_field": "; the RZ layer is diagonal.",
                        "exchange_interaction": "; RZZ is diagonal."}[spec.variant])
        return text
    if spec.family == "z2_parity":
        e, m = c["energy"], c.get("mass")
        why = (f"the motion is {f.dynamics.label} (period {num(f.dynamics.dominant_period)})" if f.dynamics.dominant_period
               else f"the motion is {f.dynamics.label}")
        mass = ("" if m is None else f"mass drifts by {drift(m.drift)} ({'conserved too' if m.conserved else 'not conserved'}) and ")
        return (f"Energy ({e.form}) is conserved (drift {drift(e.drift)}), {mass}{why}. A quadratic energy is unchanged by the "
                "sign flip f → −f; its qubit counterpart is the parity P = Π Z_i. RZZ and RZ are diagonal and RXX, RYY flip "
                "qubits in pairs, so every gate commutes with P (Z2 symmetry), while a lone RX or RY would flip it. "
                "With independent RXX/RYY angles the number N is not conserved, only its parity.")
    symmetric = [x for x in fams if x not in cf.BASELINES]
    drifts = ", ".join(f"{q} drifts by {drift(v.drift)}" for q, v in c.items())
    lead = (f"This is the unconstrained baseline: the trajectory would allow a {SYMMETRY_NAME[cf.SYMMETRY[symmetric[0]]]}-symmetric "
            f"circuit ({drifts}), and a symmetric ansatz is best judged against one without symmetry. " if symmetric else
            f"Nothing measured is conserved ({drifts}), so there is no symmetry to build in. ")
    if spec.family == "hardware_efficient":
        return lead + (f"A hardware-efficient ansatz ({'RY and RZ' if spec.variant == 'ry_rz' else 'RY'} rotations on every "
                       "qubit, CZ on the lattice bonds) is expressive but conserves nothing, so it claims no symmetry.")
    j = sorted({w for _, _, w in spec.couplings}, reverse=True)
    return lead + (f"A problem-inspired QAOA circuit: an Ising cost Σ J_ab Z_a Z_b whose couplings decay as J(d) = exp(−d/ξ) "
                   f"with the measured correlation length (J = {', '.join(map(str, j))}), alternated with an RX mixer from "
                   "|+…+⟩. The mixer changes N, so it claims no symmetry.")


def lattice_reason(f: PhysicsFeatures, spec: cf.CircuitSpec) -> str:
    n, conn, bcx = spec.n_qubits, cf.connectivity(spec.shape, spec.periodic), f.boundary_conditions.get("x", "OPEN")
    if len(spec.shape) == 2:
        r, c = spec.shape
        wrap = {"torus": "both axes are PERIODIC, so rows and columns wrap around (a torus)",
                "cylinder": "the PERIODIC axis wraps around (a cylinder)",
                "grid": "no axis wraps (" + ", ".join(f"{ax} {bc}" for ax, bc in f.boundary_conditions.items()) + ")"}[conn]
        return f"The field is 2-D, so the {n} qubits form a {r}×{c} grid (x along rows of {c}); {wrap}."
    cut = "Along an x cut of the 2-D field, " if f.n_spatial_dims >= 2 else ""
    if conn == "ring":
        return f"{cut}x is PERIODIC, so the {n} qubits form a ring: qubit {n - 1} couples back to qubit 0."
    return f"{cut}x ends at {bcx} boundaries, so the chain of {n} qubits stays open (no bond between qubit {n - 1} and 0)."


def sharing_reason(f: PhysicsFeatures, spec: cf.CircuitSpec, threshold: float) -> str:
    total = cf.parameter_count(spec)
    if spec.family == "qaoa":
        return f"Two angles per layer (one cost, one mixer angle): {total} parameters."
    axes = ("x", "y")[:len(spec.shape)]
    conf = " and ".join(f"{f.symmetries.get(f'translation_{ax}', 0):.2f} along {ax}" for ax in axes)
    if spec.family == "hardware_efficient":
        ignored = (f"The baseline ignores the measured translation symmetry (confidence {conf}); "
                   if translation_symmetric(f, axes, threshold) else "")
        return f"{ignored}{'e' if ignored else 'E'}very rotation has its own angle, {total} parameters in all."
    free = cf.parameter_count(replace(spec, sharing="none"))
    if spec.sharing == "translation":
        return (f"Translation symmetry has confidence {conf}, so each layer uses one angle per gate type"
                f"{' and bond direction' if len(axes) == 2 else ''} on every bond: {total} parameters instead of {free}.")
    why = f"the medium {', '.join(f.constant_fields)} varies in space" if f.constant_fields else (
        "the boundaries are walls" if "PERIODIC" not in f.boundary_conditions.values() else "the field is not homogeneous")
    if spec.sharing == "mirror":
        return (f"Translation symmetry is absent (confidence {conf}: {why}), but reflection_x has confidence "
                f"{f.symmetries['reflection_x']:.2f}, so mirror-image bonds and sites share angles: {total} parameters instead of {free}.")
    return f"Translation confidence is only {conf} ({why}), so every bond and site gets its own angle: {total} parameters."


def depth_reason(f: PhysicsFeatures, d: Design) -> str:
    spec, s = d.spec, f.scales
    reach = math.ceil(d.xi_sites / 2)
    text = (f"The correlation length {num(s['correlation_length'])} (domain length {num(s['domain_length'])}) spans "
            f"{d.xi_sites:.1f} of the {d.sites_x} sites along x; a brick-wall layer spreads correlations by up to two sites, "
            f"so about {reach} layer{'s' * (reach != 1)} reach{'es' * (reach == 1)} it")
    extra = d.suggested_layers - min(reach, d.suggested_layers)
    if extra:
        text += f", plus {extra} for the {f.dynamics.label} dynamics"
    text += f" (suggested: {d.suggested_layers}). "
    if d.xi_sites < 1:
        text += "Each qubit covers more than one correlation length, so neighbouring sites are only weakly correlated. "
    if spec.layers == d.suggested_layers:
        text += f"The ansatz uses {spec.layers} layer{'s' * (spec.layers != 1)}."
    elif spec.layers > d.suggested_layers:
        text += f"The ansatz uses {spec.layers} layers, more than suggested: more expressive, at a higher barren-plateau risk."
    else:
        text += (f"The ansatz uses {spec.layers} layer{'s' * (spec.layers != 1)}, fewer than suggested: cheaper, but it cannot "
                 "build correlations over the full length.")
    order = ("Bonds are applied brick-wall (even bonds, then odd bonds)" if spec.ordering == "brick"
             else "Bonds are applied as a sequential sweep, which carries correlations along a whole row in one layer")
    return text + f" {order}."


def reference_reason(spec: cf.CircuitSpec) -> str:
    n, k, sym = spec.n_qubits, len(spec.occupied), cf.SYMMETRY[spec.family]
    where = f"qubits {list(spec.occupied)}" if k else "no qubit"
    if spec.family == "qaoa":
        return "The reference is |+…+⟩ (H on every qubit), the usual QAOA start."
    if sym == "u1":
        return (f"The reference flips {where}: N = {k} particle{'s' * (k != 1)} on {n} sites (filling {k}/{n}), so the circuit explores "
                f"only the {math.comb(n, k)}-dimensional N = {k} sector of the 2^{n} = {2 ** n} states.")
    if sym == "z2":
        return (f"The reference flips {where}: {'odd' if k % 2 else 'even'} parity, so the circuit stays in that "
                f"{2 ** (n - 1)}-dimensional parity sector.")
    return f"The reference flips {where}; with no symmetry it is only a starting point."


def dynamics_insight(f: PhysicsFeatures) -> str:
    d, s = f.dynamics, f.scales
    tt = f.symmetries.get("time_translation")
    if d.label == "steady":
        return (f"No frame changes beyond the steady tolerance: the field is a stationary solution (time-translation confidence "
                f"{tt:.2f}). A static profile calls for a state-preparation circuit; depth only has to build its spatial correlations.")
    if d.label == "transient":
        e = f.conserved.get("energy")
        lost = f" while energy drifts by {drift(e.drift)}" if e and not e.conserved else ""
        return (f"The rate of change falls to {num(d.late_activity_ratio)} of its peak in the last quarter{lost}: the field "
                "relaxes (transient). A unitary circuit cannot dissipate, so it targets the relaxed state and the quantities "
                "that survive the relaxation; moderate depth suffices.")
    if d.label in ("periodic", "quasi-periodic"):
        cycles = s["duration"] / d.dominant_period if d.dominant_period else 0
        fit = (f"one frequency plus harmonics forecasts the last third with skill {num(d.periodic_fit)}" if d.label == "periodic"
               else f"two base frequencies forecast it with skill {num(d.quasi_periodic_fit)} against {num(d.periodic_fit)} for one")
        return (f"The motion is {d.label}: {fit}; the dominant period {num(d.dominant_period)} repeats {cycles:.1f} times in "
                f"{num(s['duration'])}, and the late/peak activity {num(d.late_activity_ratio)} shows no decay. An undamped "
                "oscillation is what unitary evolution does, so a layered, symmetry-preserving circuit fits; extra depth "
                "represents the oscillation's phase.")
    return (f"No harmonic forecast works (periodic fit {num(d.periodic_fit or 0)}, quasi-periodic {num(d.quasi_periodic_fit or 0)}) and "
            f"the spectral entropy is {d.spectral_entropy:.2f}: chaotic, decorrelating after {num(s['correlation_time'])} of a "
            f"{num(s['duration'])} run. Broad-band states need deeper circuits; keeping the symmetry and a local cost limits "
            "the search space and the barren-plateau risk.")


def constraint_text(f: PhysicsFeatures, spec: cf.CircuitSpec) -> str:
    n, sym = spec.n_qubits, cf.SYMMETRY[spec.family]
    laws = "; ".join(f"{q} ({c.form}): drift {drift(c.drift)}, {'conserved' if c.conserved else 'not conserved'}"
                     for q, c in f.conserved.items())
    if sym == "u1":
        return (f"Measured: {laws}. Constraint: [U(θ), N] = 0 for every θ, with N = Σ_i (1 − Z_i)/2. Allowed gates: RZ, RZZ, "
                "XX+YY (XXPlusYYGate), RXX·RYY with a shared angle, SWAP; not allowed on their own: RX, RY, H, CX. "
                f"The reference fixes N = {len(spec.occupied)}, a {math.comb(n, len(spec.occupied))}-dimensional sector of 2^{n}.")
    if sym == "z2":
        return (f"Measured: {laws}. Constraint: [U(θ), P] = 0 with P = Π_i Z_i (parity). Allowed gates: RZ, RZZ, RXX, RYY "
                "(any angles), XX+YY; not allowed: a lone RX, RY or H. "
                f"The reference fixes the {'odd' if len(spec.occupied) % 2 else 'even'} sector, 2^{n - 1} = {2 ** (n - 1)} states.")
    return (f"Measured: {laws}. With no conserved quantity there is no constraint to impose: the circuit is a baseline that "
            "claims no symmetry, so only its contract can be checked.")


INSTRUCTIONS = {
    "physics_to_circuit": ["Design a parameterised Qiskit circuit whose structure respects the physics of this simulation.",
                           "Propose a variational ansatz for the system below. Say which measurements decide its structure, then give the code.",
                           "From the measured physics, choose a circuit family, connectivity and depth, and write the Qiskit code.",
                           "Build a {n}-qubit ansatz for the following simulation, justified by its measurements."],
    "simulation_to_insight": ["What does this simulation's behaviour say about its physics, and what does that imply for a quantum circuit?",
                              "Interpret the dynamics below and turn the insight into a circuit design (Qiskit).",
                              "Explain the physics behind these measurements, then give a {n}-qubit circuit that reflects it."],
    "conservation_to_constraint": ["Turn the conservation laws of this simulation into a constraint on a quantum circuit, and give a circuit that meets it.",
                                   "Which circuit constraint follows from these conservation measurements? Write a {n}-qubit ansatz that satisfies it.",
                                   "State the symmetry constraint the measured conservation laws impose on an ansatz, then implement it."],
    REASONING: ["Reason step by step from the measured features to a circuit: symmetries, conservation laws, dynamics, then the design.",
                "Walk through these measurements one step at a time and conclude with a quantum circuit that respects them.",
                "Think step by step: what do the measurements imply physically, and what circuit on {n} qubits follows?"],
}


def example_text(kind: str, f: PhysicsFeatures, d: Design, fams: list[str], cfg: GenerateConfig,
                 rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, output) of one example; the output ends in the code block."""
    spec = d.spec
    instruction = rng.choice(INSTRUCTIONS[kind]).format(n=spec.n_qubits)
    focus = {"simulation_to_insight": "behaviour", "conservation_to_constraint": "conservation"}.get(kind, "full")
    sym, lat, share = symmetry_reason(f, spec, fams, rng), lattice_reason(f, spec), sharing_reason(f, spec, cfg.symmetry_confidence)
    depth, ref = depth_reason(f, d), reference_reason(spec)
    if kind == "physics_to_circuit":
        parts = [sym, lat, share, depth, ref]
    elif kind == "simulation_to_insight":
        parts = [dynamics_insight(f), "Implications for the circuit: " + sym, lat, share, depth, ref]
    elif kind == "conservation_to_constraint":
        parts = [constraint_text(f, spec), sym, lat, share, ref, depth]
    else:
        syms = ", ".join(f"{s} {v:.2f}" for s, v in f.symmetries.items())
        parts = [f"Step 1 — boundaries: {lat}", f"Step 2 — symmetries: measured confidences {syms}. {share}",
                 f"Step 3 — conservation: {sym}", f"Step 4 — dynamics: {dynamics_insight(f)}",
                 f"Step 5 — scales and depth: {depth}", f"Step 6 — reference state: {ref}",
                 f"Conclusion: a {spec.family} circuit claiming symmetry '{cf.SYMMETRY[spec.family]}'."]
    code, _ = cf.render(spec)
    closing = rng.choice(["The circuit:", "Qiskit code:", "Implementation:", "The code defines reference, ansatz and circuit:"])
    sep = "\n\n" if kind == REASONING or rng.random() < 0.5 else " "
    return instruction, describe_features(f, focus, rng), sep.join(parts) + f"\n\n{closing}\n```python\n{code}```"


def generate(cfg: GenerateConfig, inputs: Path, out_dir: Path) -> Path:
    """Write the example files, code.jsonl and chat records for the trajectories in ``inputs``."""
    out_dir, src = Path(out_dir), Path(inputs)
    features_file = src / "features.jsonl" if src.is_dir() else src
    key = stage_key(STAGE, cfg, features_file, module_source(generate))
    if cached(out_dir, key):
        return out_dir
    started = time.time()
    trajectories, rejects = [], []
    features = read_features(features_file)
    kept = [f for f in features if Path(f.file).parent.name not in cfg.holdout_splits]
    held_out = len(features) - len(kept)
    for f in kept:
        fams = eligible_families(f, cfg.families)
        if fams:
            trajectories.append((f, fams))
        else:
            rejects.append({"dataset": f.dataset, "file": f.file, "trajectory": f.trajectory,
                            "reason": f"no enabled family fits (enabled: {cfg.families}; conserved: "
                                      f"{[q for q, c in f.conserved.items() if c.conserved] or 'nothing'})"})
    n_in = len(trajectories) + len(rejects)
    if not n_in:
        raise ValueError(f"generate: no trajectories in {features_file}"
                         + (f" outside the held-out splits {cfg.holdout_splits}" if held_out else ""))
    if not trajectories or len(rejects) / n_in > cfg.max_reject_rate:
        raise ValueError(f"generate: {len(rejects)} of {n_in} trajectories fit none of the enabled families {cfg.families} "
                         f"(first: {rejects[0]['reason']}); enable hardware_efficient or qaoa, or raise max_reject_rate")
    rng = random.Random(cfg.seed)
    n_reason = round(cfg.examples * cfg.reasoning_share)
    kinds = [SEED_TYPES[i % 3] for i in range(cfg.examples - n_reason)] + [REASONING] * n_reason
    order = rng.sample(trajectories, len(trajectories))
    rows, code_rows, seen, fingerprints = [], {}, set(), []
    with StageProgress(f"generate {cfg.examples} examples", cfg.examples) as progress:
        for i, kind in enumerate(kinds):
            f, fams = order[i % len(order)]
            symmetric = [x for x in fams if x not in cf.BASELINES]
            forced = rng.choice(symmetric) if kind == "conservation_to_constraint" and symmetric else None
            for _ in range(30):  # redraw a design whose code another example already uses
                d = design(f, cfg, rng, forced)
                code, claims = cf.render(d.spec)
                fp = cf.code_fingerprint(code)
                if fp not in seen:
                    break
            seen.add(fp)
            fingerprints.append(fp)
            cid = cf.code_id(code, claims)
            code_rows.setdefault(cid, {"id": cid, "code": code, "claims": claims})
            instruction, inp, output = example_text(kind, f, d, fams, cfg, rng)
            meta = {"id": f"gen-{cfg.seed}-{i:06d}", "code_id": cid, "dataset": f.dataset, "file": f.file,
                    "trajectory": f.trajectory, **{k: v for k, v in claims.items() if k != "n_qubits"},
                    "n_qubits": claims["n_qubits"], "suggested_layers": d.suggested_layers}
            rows.append({"type": kind, "instruction": instruction, "input": inp, "output": output, "metadata": meta})
            progress.advance()
    distinct = len(seen) / max(1, len(fingerprints))
    if distinct < cfg.min_distinct_share:
        raise ValueError(f"generate: only {distinct:.1%} of code blocks are distinct (min_distinct_share {cfg.min_distinct_share}); "
                         f"widen the qubit range, max_layers or families, or lower examples")
    augmented = [r for r in rows if r["type"] != REASONING]
    reasoning = [r for r in rows if r["type"] == REASONING]
    with stage_output(STAGE, out_dir, key, cfg, features_file) as out:
        write_jsonl(out.tmp / "physics_augmented.jsonl", augmented)
        write_jsonl(out.tmp / "physics_reasoning.jsonl", reasoning)
        write_jsonl(out.tmp / "chat_physics.jsonl", (chat_record(r, "physics_augmented", cfg) for r in augmented))
        write_jsonl(out.tmp / "chat_reasoning.jsonl", (chat_record(r, "physics_reasoning", cfg) for r in reasoning))
        write_jsonl(out.tmp / "code.jsonl", code_rows.values())
        write_jsonl(out.tmp / "rejects.jsonl", rejects)
        out.counts = {"records": len(rows), "physics_augmented": len(augmented), "physics_reasoning": len(reasoning),
                      "code_blocks": len(code_rows), "trajectories": len(trajectories), "rejected_trajectories": len(rejects),
                      "held_out_trajectories": held_out,
                      **_tally(rows, "type", "type"), **_tally(rows, "family"), **_tally(rows, "symmetry"),
                      **_tally(rows, "n_qubits", "qubits"), **_tally(rows, "layers"), **_tally(rows, "connectivity"),
                      **_tally(rows, "parameter_sharing", "sharing")}
        out.metrics = {"distinct_code_share": round(distinct, 4), "generation_seconds": round(time.time() - started, 3)}
    publish_table(STAGE, counts_table(out.counts, out.metrics), f"Generated {len(rows)} physics examples ({len(code_rows)} code blocks)")
    return out_dir


def _tally(rows: list[dict], field: str, label: str | None = None) -> dict[str, int]:
    values = Counter(r["type"] if field == "type" else r["metadata"][field] for r in rows)
    return {f"{label or field}_{v}": c for v, c in sorted(values.items(), key=lambda kv: str(kv[0]))}


def chat_record(row: dict, source: str, cfg: GenerateConfig) -> ChatRecord:
    """The canonical chat record of one example (user = instruction + input)."""
    return ChatRecord(messages=[{"role": "system", "content": cfg.system_prompt},
                                {"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"},
                                {"role": "assistant", "content": row["output"]}],
                      source=source, kind=row["type"], meta=row["metadata"])


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True)
def generate_physics_examples(cfg: GenerateConfig, inputs: Path, out_dir: Path) -> Path:
    """Prefect task: physics features → verified-ready circuit examples."""
    return generate(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m tasks.generate_physics_examples", __doc__, GenerateConfig)
    parser.add_argument("--features", type=Path, required=True, help="features.jsonl (or the encode stage's directory)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(generate(config_from_args(GenerateConfig, args, parser), args.features, args.out))


if __name__ == "__main__":
    main()
