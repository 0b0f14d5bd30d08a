"""Brief answers of quantum-mind's examples: the deciding measurement, the symmetry, lattice, depth and reference in
a few sentences, then the circuit as one Qiskit library call (circuit_families' library style).

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
from tasks.quantum_mind.physics_reasoning import drift, num, stated_request, task_text

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
        pairs = " and ".join(g.upper() for where, g, _ in cf.VARIANTS["z2_parity"][spec.variant] if where == "bond")
        return (f"Energy drifts by {drift(e.drift)}{mass} and the motion is {f.dynamics.label}: a quadratic energy keeps the "
                f"parity P = Π Z_i (Z2). {pairs} flip qubits in pairs and RZ flips none; no lone RX or RY.")
    symmetric = [x for x in fams if x not in cf.BASELINES]
    why = ("a baseline to compare symmetric circuits against" if symmetric
           else "nothing measured is conserved: " + ", ".join(f"{q} drifts by {drift(v.drift)}" for q, v in c.items()))
    if spec.family == "qaoa":
        return f"No symmetry is needed ({why}): a QAOA circuit, a ZZ cost on the bonds and an RX mixer that changes N."
    rot = "RY and RZ" if spec.variant == "ry_rz" else "RY"
    return f"No symmetry is needed ({why}): a hardware-efficient circuit of {rot} rotations and CZ bonds, conserving nothing."


def brief_reason(f: PhysicsFeatures, d: Design, fams: list[str]) -> str:
    """The paragraph before the code: the symmetry and why, then one ``Design:`` line (the library call's entanglement
    and reps, the reference), each choice with the number behind it. One fixed line, not a sentence each: on prompts
    unlike its training a small model looped on free-form depth and lattice sentences."""
    spec = d.spec
    k, sym, layers = len(spec.occupied), cf.SYMMETRY[spec.family], spec.layers
    ent = cf.entanglement(spec)
    lattice = f'entanglement "{ent}" ' + ("(x is periodic)" if ent == "circular"
                                          else f'(x has {f.boundary_conditions.get("x", "open").lower()} boundaries)')
    depth = f"reps={layers} (correlation length {num(d.xi_sites)} sites)"
    ref = (f"{k} excitation{'s' * (k != 1)} on the first qubits" if sym == "u1"
           else f"{'odd' if k % 2 else 'even'} parity ({k} flipped)" if sym == "z2" else "|0…0⟩")
    return f"{symmetry_sentence(f, spec, fams)} Design: {lattice}, {depth}, reference {ref}."


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
    laws = (f"it conserves {', '.join(kept)}" + (f" but not {', '.join(lost)}" if lost else "") if kept
            else f"nothing is conserved: {', '.join(lost)}")
    return (f"My run is {f.dataset} in {f.n_spatial_dims}-D ({', '.join(f.fields)}), {edges}; {laws}. The motion looks "
            f"{f.dynamics.label}, translation along x scores {f.symmetries.get('translation_x', 0):.2f}, and the correlation "
            f"length is {num(f.scales['correlation_length'])} of {num(f.scales['domain_length'])}.")


# Lead-ins naming the simulation's dimension (and its dataset, whose name often ends in "_2d") right before the
# qubit count: without them a small model read back "2 qubits" for "a 6-qubit circuit for a 2-D flow", 10 of 30 times.
SITUATIONS = ("For this {d}-D run: ", "The simulation is {d}-D. ", "My {d}-D {name} run needs a circuit. ",
              "It is a {d}-D field ({name}). ", "Context: a {d}-D {name} simulation. ")


def situated_request(f: PhysicsFeatures, spec: cf.CircuitSpec, rng: random.Random) -> str:
    """The stated request, half the time after a lead-in that names the simulation's dimension: the qubit count is the
    number the request ties to qubits, not the first number in the prompt."""
    stated = stated_request(spec, rng)
    if rng.random() < 0.5:
        return stated
    return rng.choice(SITUATIONS).format(d=f.n_spatial_dims, name=f.dataset) + stated


def brief_example(kind: str, f: PhysicsFeatures, d: Design, fams: list[str], symmetry_confidence: float,
                  rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, output) of a brief example: the stated request, the measurements (listed or told in prose),
    a paragraph, the code. ``symmetry_confidence`` is unused: the signature is ``example_text``'s."""
    stated, task = situated_request(f, d.spec, rng), task_text(kind, d.spec, rng)
    measured = brief_features(f) if rng.random() < 0.5 else prose_features(f)
    if rng.random() < 0.5:  # the request before or after the measurements: users put it either way
        instruction, measured = task, f"{measured}\n\n{stated}"
    else:
        instruction = f"{task} {stated}"
    if rng.random() < 0.5:  # half ask for the code contract in words, as users (and the validation prompts) do
        instruction += " " + rng.choice(CONTRACTS)
    code, _ = cf.render(d.spec)
    return instruction, measured, f"{request_echo(d.spec)} {brief_reason(f, d, fams)}\n\n```python\n{code}```"


def request_echo(spec: cf.CircuitSpec) -> str:
    """The answer's first sentence: the request read back (qubits, symmetry, particles), which the code then copies."""
    n, k, sym = spec.n_qubits, len(spec.occupied), cf.SYMMETRY[spec.family]
    kept = {"u1": f"N conserved with {k} excitation{'s' * (k != 1)}", "z2": "parity Π Z_i kept", "none": "no symmetry"}[sym]
    return f"Request: {n} qubits, {kept}."
