"""The words of quantum-mind's examples: each design explained from the measured numbers, true by construction.

Every reason cites the measurement that decided it (drifts, symmetry confidences, periods,
correlation lengths, boundary conditions) for the design ``tasks/quantum_mind/circuit_design.py`` chose. The
example kinds: ``physics_to_circuit``, ``simulation_to_insight``, ``conservation_to_constraint``
(the seed types) and ``physics_reasoning`` (a step-by-step chain ending in the same code block).

    instruction, input, output = example_text("physics_to_circuit", features, design, families, 0.5, rng)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace
from pathlib import Path

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.circuit_design import Design, conserved_linear, translation_symmetric
from tasks.quantum_mind.encode_trajectories import PhysicsFeatures

SEED_TYPES = ("physics_to_circuit", "simulation_to_insight", "conservation_to_constraint")
REASONING = "physics_reasoning"
SYMMETRY_NAME = {"u1": "U(1)", "z2": "Z2"}


def drift(x: float) -> str:
    """A conservation drift as text: 0, scientific notation below 1e-3, else three significant digits."""
    return "0" if x == 0 else f"{x:.1e}" if x < 1e-3 else f"{x:.3g}"


def num(x: float) -> str:
    """A measured number to three significant digits."""
    return f"{x:.3g}"



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

# What the circuit must satisfy, stated after the instruction: the validation asks for a qubit count, a symmetry and
# (U(1)) a particle count, so training requests say them too, in words of their own.
REQUESTS = {
    "u1": ["Use {n} qubits and keep the excitation count fixed at {k}.",
           "Target: {n} qubits, N = Σ(1−Z_i)/2 conserved, {k} ones in the initial state.",
           "The ansatz should conserve particle number on {n} qubits, starting at N = {k}.",
           "I need a {n}-qubit circuit whose gates move excitations around but hold the excitation count at {k}.",
           "Width: {n} qubits; keep N = Σ(1−Z_i)/2 at {k}.",
           "Make it a {n}-qubit ansatz with the particle number held at {k}.",
           "Build it as a U(1) ansatz on {n} qubits with {k} particles to start with.",
           "Number conserving, please: {n} qubits, a reference holding {k} excitations.",
           "Keep it U(1)-invariant on {n} qubits; the start state has {k} qubits in |1⟩."],
    "z2": ["Use {n} qubits and keep the parity Π Z_i fixed.",
           "Target: {n} qubits, only gates that leave Π Z_i unchanged.",
           "The ansatz should act on {n} qubits and leave the Z-parity of the state unchanged.",
           "I need a {n}-qubit circuit whose gates flip qubits only in pairs, so Π Z_i never moves.",
           "Width: {n} qubits; the Z-parity must be kept.",
           "Make it a {n}-qubit ansatz that keeps the Z-parity.",
           "Build it as a Z2-symmetric ansatz on {n} qubits (parity Π Z_i conserved, excitations may change).",
           "Parity only, please: {n} qubits, gates that commute with Π Z_i."],
    "none": ["Use {n} qubits; any gates may be used.",
             "Target: {n} qubits, no conservation law to enforce.",
             "The ansatz should act on {n} qubits and needs no symmetry.",
             "I need a {n}-qubit circuit; no symmetry has to be kept.",
             "Width: {n} qubits; no conservation law to respect.",
             "Make it a {n}-qubit ansatz; any gates may be used.",
             "Build it as a plain hardware-efficient ansatz on {n} qubits, with no symmetry.",
             "No conservation law, please: {n} qubits, any gates."],
}


def stated_request(spec: cf.CircuitSpec, rng: random.Random) -> str:
    """The sentence stating what the circuit must satisfy: qubits, symmetry and (U(1)) particles."""
    return rng.choice(REQUESTS[cf.SYMMETRY[spec.family]]).format(n=spec.n_qubits, k=len(spec.occupied))


def task_text(kind: str, spec: cf.CircuitSpec, rng: random.Random) -> str:
    """An instruction of ``kind`` (what to explain, what to design)."""
    return re.sub(r"\ba (8|11|18)-", r"an \1-", rng.choice(INSTRUCTIONS[kind]).format(n=spec.n_qubits))


def instruction_text(kind: str, spec: cf.CircuitSpec, rng: random.Random) -> str:
    """An instruction of ``kind`` followed by the stated request (qubits, symmetry, particles)."""
    stated = stated_request(spec, rng)
    return f"{task_text(kind, spec, rng)} {stated}"


def focus_of(kind: str) -> str:
    """Which measurements an example of ``kind`` lists."""
    return {"simulation_to_insight": "behaviour", "conservation_to_constraint": "conservation"}.get(kind, "full")


def example_text(kind: str, f: PhysicsFeatures, d: Design, fams: list[str], symmetry_confidence: float,
                 rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, output) of one example; the output ends in the code block."""
    spec = d.spec
    instruction = instruction_text(kind, spec, rng)
    focus = focus_of(kind)
    sym, lat, share = symmetry_reason(f, spec, fams, rng), lattice_reason(f, spec), sharing_reason(f, spec, symmetry_confidence)
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
