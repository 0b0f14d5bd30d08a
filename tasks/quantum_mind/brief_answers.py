"""Brief answers of quantum-mind's examples: the deciding measurement, the symmetry, lattice, depth and reference in
a few sentences, then the circuit in the compact code style.

The full explanations (tasks/quantum_mind/physics_reasoning.py) run ~800 tokens before the code, more than a
135M model trained on a CPU afternoon can learn to produce and still close its code block. A brief answer keeps
every design decision and the number behind it, in one short paragraph a small model can copy the shape of.

    instruction, input, output = brief_example("physics_to_circuit", features, design, families, 0.5, rng)
"""

from __future__ import annotations

import random

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.circuit_design import Design, conserved_linear
from tasks.quantum_mind.encode_trajectories import PhysicsFeatures
from tasks.quantum_mind.physics_reasoning import drift, instruction_text, num

U1_GATES = {"hop": "XX+YY (Givens) hopping moves excitations between neighbours without creating or destroying one.",
            "hop_field": "XX+YY (Givens) hopping moves excitations without creating any, and RZ is diagonal.",
            "hop_interaction": "XX+YY (Givens) hopping moves excitations without creating any, and RZZ is diagonal.",
            "hop_phase": "XX+YY (Givens) hopping with a phase β moves excitations without creating any.",
            "exchange": "RXX·RYY with one shared angle is exp(−iθ(XX+YY)/2): hopping that keeps N.",
            "exchange_field": "RXX·RYY with one shared angle is hopping that keeps N, and RZ is diagonal.",
            "exchange_interaction": "RXX·RYY with one shared angle is hopping that keeps N, and RZZ is diagonal."}


def symmetry_sentence(f: PhysicsFeatures, spec: cf.CircuitSpec, fams: list[str]) -> str:
    """Which measurement decides the symmetry, and why the gates keep it."""
    c = f.conserved
    if cf.SYMMETRY[spec.family] == "u1":
        q = conserved_linear(f)[0]
        return (f"{q.replace('_', ' ').capitalize()} drifts by {drift(c[q].drift)}: conserved, so the circuit keeps the "
                f"excitation number N = Σ(1−Z_i)/2 (U(1)). {U1_GATES[spec.variant]}")
    if spec.family == "z2_parity":
        e, m = c["energy"], c.get("mass")
        mass = "" if m is None else f", mass {'is conserved too' if m.conserved else 'is not'}"
        return (f"Energy drifts by {drift(e.drift)}{mass} and the motion is {f.dynamics.label}: a quadratic energy keeps the "
                "parity P = Π Z_i (Z2). RZZ, RXX and RYY flip qubits in pairs and RZ flips none; no lone RX or RY.")
    symmetric = [x for x in fams if x not in cf.BASELINES]
    why = ("a baseline to compare symmetric circuits against" if symmetric
           else "nothing measured is conserved: " + ", ".join(f"{q} drifts by {drift(v.drift)}" for q, v in c.items()))
    if spec.family == "qaoa":
        return f"No symmetry is needed ({why}): a QAOA circuit, a ZZ cost on the bonds and an RX mixer that changes N."
    rot = "RY and RZ" if spec.variant == "ry_rz" else "RY"
    return f"No symmetry is needed ({why}): a hardware-efficient circuit of {rot} rotations and CZ bonds, conserving nothing."


def brief_reason(f: PhysicsFeatures, d: Design, fams: list[str]) -> str:
    """The paragraph before the code: symmetry, lattice, shared angles, depth, reference."""
    spec = d.spec
    n, k, sym = spec.n_qubits, len(spec.occupied), cf.SYMMETRY[spec.family]
    bc = f.boundary_conditions.get("x", "OPEN")
    lattice = (f"x is PERIODIC, so the {n} qubits form a ring." if cf.connectivity(spec.shape, spec.periodic) == "ring"
               else f"x ends at {bc} boundaries, so the {n} qubits form an open chain.")
    share = ""
    if spec.sharing == "translation":
        share = f" Translation symmetry (confidence {f.symmetries.get('translation_x', 0):.2f}) lets each layer share one angle per gate."
    layers = spec.layers
    depth = f" {layers} layer{'s' * (layers != 1)} (correlation length {num(d.xi_sites)} sites, suggested {d.suggested_layers})."
    if spec.family == "qaoa":
        ref = " The reference is |+…+⟩."
    elif sym == "u1":
        ref = f" The reference puts {k} excitation{'s' * (k != 1)} on the first qubits."
    elif sym == "z2":
        ref = f" The reference has {'odd' if k % 2 else 'even'} parity ({k} flipped)."
    else:
        ref = " It starts from |0…0⟩."
    return f"{symmetry_sentence(f, spec, fams)} {lattice}{share}{depth}{ref}"


def brief_features(f: PhysicsFeatures) -> str:
    """The measurements a brief answer cites, one line each: ~80 tokens where the full listing runs ~300."""
    cons = "; ".join(f"{q} drift {drift(c.drift)} ({'conserved' if c.conserved else 'not conserved'})"
                     for q, c in f.conserved.items())
    s = f.scales
    return "\n".join([
        f"system: {f.dataset} ({f.n_spatial_dims}-D; fields {', '.join(f.fields)})",
        "boundaries: " + ", ".join(f"{ax} {bc}" for ax, bc in f.boundary_conditions.items()),
        f"conservation: {cons}",
        f"translation_x confidence: {f.symmetries.get('translation_x', 0):.2f}",
        f"dynamics: {f.dynamics.label}; correlation length {num(s['correlation_length'])} in a domain of {num(s['domain_length'])}"])


CONTRACTS = ("Put the code in one python block defining reference, ansatz and circuit = reference.compose(ansatz).",
             "Give a single python block: a fixed `reference` circuit, a parameterised `ansatz`, and their composition `circuit`.")


def prose_features(f: PhysicsFeatures) -> str:
    """The same measurements told in a sentence, as a user describes a run (the validation prompts are prose too)."""
    edges = " and ".join(f"{bc.lower()} along {ax}" for ax, bc in f.boundary_conditions.items())
    kept = [f"{q.replace('_', ' ')} (drift {drift(c.drift)})" for q, c in f.conserved.items() if c.conserved]
    lost = [f"{q.replace('_', ' ')} (drift {drift(c.drift)})" for q, c in f.conserved.items() if not c.conserved]
    laws = (f"it conserves {', '.join(kept)}" if kept else "it conserves nothing") + (f" but not {', '.join(lost)}" if lost else "")
    return (f"My run is {f.dataset} in {f.n_spatial_dims}-D ({', '.join(f.fields)}), {edges}; {laws}. The motion looks "
            f"{f.dynamics.label}, translation along x scores {f.symmetries.get('translation_x', 0):.2f}, and the correlation "
            f"length is {num(f.scales['correlation_length'])} of {num(f.scales['domain_length'])}.")


def brief_example(kind: str, f: PhysicsFeatures, d: Design, fams: list[str], symmetry_confidence: float,
                  rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, output) of a brief example: the stated request, the measurements (listed or told in prose),
    a paragraph, the code. ``symmetry_confidence`` is unused: the signature is ``example_text``'s."""
    instruction = instruction_text(kind, d.spec, rng)
    if rng.random() < 0.5:  # half ask for the code contract in words, as users (and the validation prompts) do
        instruction += " " + rng.choice(CONTRACTS)
    code, _ = cf.render(d.spec)
    return (instruction, brief_features(f) if rng.random() < 0.5 else prose_features(f),
            f"{brief_reason(f, d, fams)}\n\n```python\n{code}```")
