"""Held-out validation prompts for quantum-mind: requests as a user would type them.

The wording shares nothing with the training templates (tasks/quantum_mind/physics_reasoning.py): the
physics is told as prose, not as the measurement listings the model was trained on, and each prompt
asks for something checkable — a qubit count, a symmetry (U(1) particle number, Z2 parity, or none)
and, for U(1), the number of particles in the reference state. Trajectories come from the held-out
split (``test``, which the generate stage skips) when the features have any; a ``novel_share`` of the
prompts asks instead about datasets held out of training in every split (``generate.holdout_datasets``:
PDE families the model never saw).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.quantum_mind import circuit_families as cf
from tasks.quantum_mind.circuit_design import conserved_linear, eligible_families
from tasks.quantum_mind.encode_trajectories import PhysicsFeatures
from tasks.quantum_mind.physics_reasoning import drift

HOLDOUT_SPLIT = "test"
CONTRACT = ("Answer with a short justification, then one ```python code block that defines at module level: "
            "`reference` (a QuantumCircuit without parameters that prepares the start state from |0…0⟩), "
            "`ansatz` (a parameterised QuantumCircuit on the same qubits) and `circuit = reference.compose(ansatz)`.")
TEMPLATES: dict[str, list[str]] = {
    "u1": ["I'm modelling {system}. Since {law}, I want a variational circuit on {n} qubits that never changes the number "
           "of excitations. Start from {k} excitations.",
           "Write me a particle-number-conserving ansatz ({n} qubits, {k} particles) suited to {system}; {law}.",
           "For {system}, where {law}, I need a U(1)-symmetric trial circuit: {n} qubits, a reference state with exactly "
           "{k} qubits set to 1."],
    "z2": ["I'm modelling {system}; {law}. Give me a {n}-qubit ansatz that preserves the parity Z⊗Z⊗…⊗Z but may change "
           "the number of excitations.",
           "Need a parity-conserving (Z2) variational circuit on {n} qubits for {system}; {law}.",
           "Design a {n}-qubit trial circuit for {system} that commutes with the parity operator P = Π Z_i ({law})."],
    "none": ["Give me an expressive {n}-qubit baseline circuit with no built-in symmetry, to compare symmetric ansätze "
             "against for {system}.",
             "Write a generic hardware-efficient ansatz on {n} qubits for {system}; it does not need to conserve anything.",
             "For {system}, where {law}, propose a {n}-qubit variational circuit; no symmetry is required."],
}


class EvalPrompt(BaseModel):
    """One validation prompt and what a correct answer must satisfy."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str
    symmetry: Literal["u1", "z2", "none"]
    n_qubits: int = Field(ge=1)
    particles: int | None = Field(None, ge=0, description="Particles in the reference state (u1 requests)")
    template: int = Field(ge=0, description="Index into TEMPLATES[symmetry]")
    dataset: str
    file: str
    trajectory: int
    novel: bool = Field(False, description="About a dataset kept out of training in every split (novel physics)")

    @property
    def claims(self) -> dict:
        return {"n_qubits": self.n_qubits, "symmetry": self.symmetry, "particles": self.particles, "family": "requested"}


def split_of(f: PhysicsFeatures) -> str:
    """The Well split a trajectory's file sits in (``.../data/<split>/file.hdf5``)."""
    return Path(f.file).parent.name


def system_text(f: PhysicsFeatures) -> str:
    """The simulated system in a sentence: dimension, dataset, boundaries, fields, behaviour."""
    bcs = sorted(set(f.boundary_conditions.values()))
    edges = "periodic" if bcs == ["PERIODIC"] else "walled" if bcs == ["WALL"] else "/".join(b.lower() for b in bcs)
    return (f"a {f.n_spatial_dims}-D {f.dataset.replace('_', ' ')} simulation with {edges} boundaries "
            f"whose {' and '.join(f.fields[:2])} evolve in a {f.dynamics.label} way")


def law_text(f: PhysicsFeatures, symmetry: str) -> str:
    """The conservation fact behind a request, in words."""
    c = f.conserved
    if symmetry == "u1":
        q = conserved_linear(f)[0]
        return f"the total {q.replace('_', ' ')} stays constant (relative drift {drift(c[q].drift)})"
    if symmetry == "z2":
        m = c.get("mass")
        mass = f", while the mass {'is conserved too' if m.conserved else 'is not'}" if m else ""
        return f"the energy is conserved (relative drift {drift(c['energy'].drift)}){mass}"
    moving = [q for q, v in c.items() if not v.conserved]
    return (f"the {' and '.join(q.replace('_', ' ') for q in moving)} drift{'s' * (len(moving) == 1)} over the run"
            if moving else "the conserved quantities do not matter for this baseline")


def requestable(f: PhysicsFeatures) -> list[str]:
    """Symmetries the physics of ``f`` supports (always including 'none')."""
    syms = {cf.SYMMETRY[fam] for fam in eligible_families(f, list(cf.FAMILIES))}
    return [s for s in ("u1", "z2", "none") if s in syms | {"none"}]


def build_prompts(features: list[PhysicsFeatures], n: int, min_qubits: int, max_qubits: int, seed: int = 0,
                  novel_datasets: list[str] = (), novel_share: float = 0.0) -> tuple[list[EvalPrompt], bool]:
    """``n`` prompts (a symmetric request 80% of the time when the physics allows one) and whether they are held out.

    The last ``round(n * novel_share)`` ask about trajectories of ``novel_datasets`` (any split), when there are any.
    """
    novel = [f for f in features if f.dataset in novel_datasets]
    others = [f for f in features if f.dataset not in novel_datasets]
    held = [f for f in others if split_of(f) == HOLDOUT_SPLIT]
    seen = held or others
    if not seen and not novel:
        raise ValueError("evaluate: no trajectories to build validation prompts from")
    n_novel = n if not seen else round(n * novel_share) if novel else 0
    draws = [(seen, i) for i in range(n - n_novel)] + [(novel, i) for i in range(n_novel)]
    rng = random.Random(seed)
    prompts = []
    for i, (pool, j) in enumerate(draws):
        f = pool[j % len(pool)] if j < len(pool) else rng.choice(pool)
        options = requestable(f)
        symmetric = [s for s in options if s != "none"]
        sym = rng.choice(symmetric) if symmetric and rng.random() < 0.8 else "none"
        n_q = rng.randint(min_qubits, max_qubits)
        k = rng.randint(1, n_q - 1) if sym == "u1" else None
        t = rng.randrange(len(TEMPLATES[sym]))
        text = TEMPLATES[sym][t].format(system=system_text(f), law=law_text(f, sym), n=n_q, k=k)
        prompts.append(EvalPrompt(id=f"qm-eval-{i:03d}", prompt=f"{text}\n\n{CONTRACT}", symmetry=sym, n_qubits=n_q,
                                  particles=k, template=t, dataset=f.dataset, file=f.file, trajectory=f.trajectory,
                                  novel=pool is novel))
    return prompts, bool(held) or n_novel == n
