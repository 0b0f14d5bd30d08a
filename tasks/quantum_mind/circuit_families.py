"""Qiskit code of the circuit families the example generator writes, to the verifier's code contract.

A ``CircuitSpec`` says what to build; ``render(spec)`` returns the code block (a module defining
``reference``, ``ansatz`` and ``circuit``) and its claims. Every claim is true by construction:

* ``u1_givens``: XX+YY (Givens) hopping with ``XXPlusYYGate`` [+ RZ on-site field | + RZZ density
  interaction | + a hopping phase β]. Each gate commutes with N = Σ(1−Z_i)/2.
* ``u1_exchange``: RXX(θ)·RYY(θ) with one angle per bond, which is exp(−iθ(XX+YY)/2): the pair
  conserves N although neither gate does alone [+ RZ | + RZZ].
* ``z2_parity``: RZZ / RXX / RYY with independent angles + RZ. Every gate flips qubits in pairs or
  none, so P = Π Z_i is conserved; N is not.
* ``hardware_efficient``: RY[/RZ] on every qubit + CZ on the lattice bonds (symmetry "none").
* ``qaoa``: RZZ cost on weighted pairs + RX mixer, from |+…+⟩ (symmetry "none").

The qubits sit on a chain (open or ring) or a rows × cols grid (x along a row; periodic axes of
length ≥ 3 wrapped). Bonds are applied brick-wall (even bonds, then odd) or as a sequential sweep.
Parameters are per bond and site (``none``), one per layer and bond direction (``translation``),
shared by mirror-image bonds and sites of a chain (``mirror``), or one per layer (``per_layer``, QAOA).

The ``library`` style builds the ansatz with one Qiskit library call (``excitation_preserving``,
``n_local``) whose arguments carry the design: entanglement "circular" on a ring, "linear" on a
chain, ``reps`` the depth. The family is one word and the sizes are two numbers a request gives, so a
small model cannot blend one family's loops into another's. It needs a chain or ring, one of the
``LIBRARY`` variants, no shared angles and a reference filling the first qubits.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

FAMILIES = ("u1_givens", "u1_exchange", "z2_parity", "hardware_efficient", "qaoa")
SYMMETRY = {"u1_givens": "u1", "u1_exchange": "u1", "z2_parity": "z2", "hardware_efficient": "none", "qaoa": "none"}
BASELINES = ("hardware_efficient", "qaoa")

# variant -> terms; a term is (where, gate, parameter roles); "bond" terms act on lattice bonds,
# "pair" terms on the weighted couplings, "site" terms on every qubit
VARIANTS: dict[str, dict[str, tuple]] = {
    "u1_givens": {"hop": (("bond", "xxpy", ("hop",)),),
                  "hop_field": (("bond", "xxpy", ("hop",)), ("site", "rz", ("field",))),
                  "hop_interaction": (("bond", "xxpy", ("hop",)), ("bond", "rzz", ("pair",))),
                  "hop_phase": (("bond", "xxpy", ("hop", "phase")),)},
    "u1_exchange": {"exchange": (("bond", "exchange", ("hop",)),),
                    "exchange_field": (("bond", "exchange", ("hop",)), ("site", "rz", ("field",))),
                    "exchange_interaction": (("bond", "exchange", ("hop",)), ("bond", "rzz", ("pair",)))},
    "z2_parity": {"zz_x": (("bond", "rzz", ("pair",)), ("bond", "rxx", ("flip",)), ("site", "rz", ("field",))),
                  "xx_yy": (("bond", "rxx", ("flip",)), ("bond", "ryy", ("flip2",)), ("site", "rz", ("field",))),
                  "zz_xx_yy": (("bond", "rzz", ("pair",)), ("bond", "rxx", ("flip",)), ("bond", "ryy", ("flip2",)))},
    "hardware_efficient": {"ry_rz": (("site", "ry", ("rot",)), ("site", "rz", ("rot2",)), ("bond", "cz", ())),
                           "ry": (("site", "ry", ("rot",)), ("bond", "cz", ()))},
    "qaoa": {"ising": (("pair", "rzz_weighted", ("cost",)), ("site", "rx_mixer", ("mix",)))},
}
# Under translation sharing a uniform RZ is Σ Z_i: a global phase inside a fixed-N sector, so it adds nothing.
UNIFORM_FIELD_IS_TRIVIAL = {"hop_field", "exchange_field"}
NAMES = {"hop": ("theta", "t", "hop", "j", "th"), "phase": ("beta", "chi", "varphi"), "field": ("phi", "h", "mu", "lam"),
         "pair": ("u", "v", "zz", "eta"), "flip": ("jx", "kx", "gx"), "flip2": ("jy", "ky", "gy"),
         "rot": ("theta", "alpha", "ry_angles"), "rot2": ("phi", "delta", "rz_angles"), "cost": ("gamma", "g", "c"),
         "mix": ("beta", "bm", "mixer"), "final": ("theta_out", "final", "omega")}
STYLES = ("loop", "function", "unrolled", "library")
UNROLL_LIMIT = 36  # gate lines; longer circuits are written as loops
# family -> (the variant a library builder makes exactly, its import, the call): the library style's circuits.
# excitation_preserving (mode "iswap") is RZ layers + XX+YY; n_local repeats rotations then entanglers, ends on rotations.
LIBRARY: dict[str, tuple[str, str, str]] = {
    "u1_givens": ("hop_field", "excitation_preserving", "excitation_preserving(n_qubits, reps={reps}, entanglement=\"{ent}\")"),
    "z2_parity": ("xx_yy", "n_local", "n_local(n_qubits, \"rz\", [\"rxx\", \"ryy\"], entanglement=\"{ent}\", reps={reps})"),
    "hardware_efficient": ("ry", "n_local", "n_local(n_qubits, \"ry\", \"cz\", entanglement=\"{ent}\", reps={reps})"),
}


@dataclass(frozen=True)
class CircuitSpec:
    """What to build: family and variant, lattice, depth, ordering, sharing, reference filling, code style."""

    family: str
    variant: str
    shape: tuple[int, ...]                 # (n,) chain, or (rows, cols) grid with x along a row
    periodic: tuple[bool, ...]             # per lattice axis: (x,) or (x, y)
    layers: int
    ordering: str = "brick"                # brick | sequential
    sharing: str = "none"                  # none | translation | mirror | per_layer
    occupied: tuple[int, ...] = ()         # qubits flipped by the reference (H on all for qaoa)
    names: tuple[tuple[str, str], ...] = ()  # (role, variable name)
    couplings: tuple[tuple[int, int, float], ...] = ()  # qaoa (a, b, weight)
    style: str = "loop"                    # loop | function | unrolled | library
    compose: int = 0                       # how `circuit` is assembled (three spellings)
    fields_first: bool = False             # site terms before bond terms in each layer
    interleave: bool = True                # all bond terms per bond, or one sweep per term
    comment: str = ""                      # header comment (a design summary)

    @property
    def n_qubits(self) -> int:
        return self.shape[0] * (self.shape[1] if len(self.shape) > 1 else 1)


def wraps(shape: tuple[int, ...], periodic: tuple[bool, ...]) -> tuple[bool, ...]:
    """Per axis, whether the lattice gets a wrap-around bond (periodic and at least 3 sites long)."""
    lengths = (shape[0],) if len(shape) == 1 else (shape[1], shape[0])
    return tuple(p and length >= 3 for p, length in zip(periodic, lengths))


def connectivity(shape: tuple[int, ...], periodic: tuple[bool, ...]) -> str:
    """chain | ring | grid | cylinder | torus."""
    w = wraps(shape, periodic)
    if len(shape) == 1:
        return "ring" if w[0] else "chain"
    return ("grid", "cylinder", "torus")[sum(w)]


def lattice_bonds(shape: tuple[int, ...], periodic: tuple[bool, ...], ordering: str) -> list[tuple[int, int, int]]:
    """Nearest-neighbour bonds (a, b, direction 0=x 1=y), in brick-wall or sequential order."""
    w = wraps(shape, periodic)
    keyed = []
    if len(shape) == 1:
        n = shape[0]
        for q in range(n - 1 + w[0]):
            keyed.append(((0, q % 2, q), (q, (q + 1) % n, 0)))
    else:
        rows, cols = shape
        for i in range(rows):
            for j in range(cols - 1 + w[0]):
                keyed.append(((0, j % 2, i, j), (i * cols + j, i * cols + (j + 1) % cols, 0)))
        for j in range(cols):
            for i in range(rows - 1 + w[1]):
                keyed.append(((1, i % 2, i, j), (i * cols + j, ((i + 1) % rows) * cols + j, 1)))
    if ordering == "brick":
        keyed.sort(key=lambda kv: kv[0])
    return [bond for _, bond in keyed]


def mirror_slots(n: int, bonds: list[tuple[int, int, int]]) -> tuple[list[int], list[int]]:
    """Chain mirror classes: bond (q, q+1) ~ (n-2-q, n-1-q) and site q ~ n-1-q."""
    return [min(a, n - 2 - a) for a, _, _ in bonds], [min(q, n - 1 - q) for q in range(n)]


def parameter_count(spec: CircuitSpec) -> int:
    """Number of circuit parameters (after sharing)."""
    bonds = lattice_bonds(spec.shape, spec.periodic, spec.ordering)
    slots = mirror_slots(spec.n_qubits, bonds) if spec.sharing == "mirror" else ([], [])
    return sum(_vector_sizes(spec, len(bonds), len(set(slots[0])), len(set(slots[1]))).values())


def claims(spec: CircuitSpec) -> dict:
    """The claims of a spec's code block (checked by tasks/quantum_mind/verify_circuits.py)."""
    sym = SYMMETRY[spec.family]
    out = {"n_qubits": spec.n_qubits, "symmetry": sym, "particles": len(spec.occupied) if sym == "u1" else None,
           "family": spec.family, "variant": spec.variant, "layers": spec.layers,
           "connectivity": connectivity(spec.shape, spec.periodic), "ordering": spec.ordering,
           "parameter_sharing": spec.sharing}
    if sym == "z2":
        out["parity"] = "odd" if len(spec.occupied) % 2 else "even"
    return out


def code_fingerprint(code: str) -> str:
    """Identity of a code block up to comments and blank lines (what 'distinct code' counts)."""
    lines = [re.sub(r"\s+#.*$", "", ln).rstrip() for ln in code.splitlines()]
    body = "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def code_id(code: str, claim: dict) -> str:
    """Stable id of a (code, claims) pair: the ``id`` of its line in code.jsonl."""
    return "c" + hashlib.sha256((code + json.dumps(claim, sort_keys=True)).encode()).hexdigest()[:15]


def render(spec: CircuitSpec) -> tuple[str, dict]:
    """The code block and its claims."""
    _validate(spec)
    n = spec.n_qubits
    names = dict(spec.names)
    terms = VARIANTS[spec.family][spec.variant]
    bonds = lattice_bonds(spec.shape, spec.periodic, spec.ordering)
    two_d_shared = spec.sharing == "translation" and len(spec.shape) == 2
    if spec.style == "library":
        return _library(spec)
    lines = ["from qiskit import QuantumCircuit", "from qiskit.circuit import ParameterVector"]
    if any(gate == "xxpy" for _, gate, _ in terms):
        lines.append("from qiskit.circuit.library import XXPlusYYGate")
    lines += [""] + ([f"# {spec.comment}"] if spec.comment else [])
    lines.append(f"n_qubits, n_layers = {n}, {spec.layers}")
    uses_bonds = any(where == "bond" for where, _, _ in terms)
    if uses_bonds:
        shown = [(a, b, d) for a, b, d in bonds] if two_d_shared else [(a, b) for a, b, _ in bonds]
        lines.append(f"bonds = {shown}  # {spec.ordering} order on a {connectivity(spec.shape, spec.periodic)}")
    if spec.family == "qaoa":
        lines.append(f"couplings = {[(a, b, w) for a, b, w in spec.couplings]}  # (a, b, J_ab)")
    slots, site_slots = mirror_slots(n, bonds) if spec.sharing == "mirror" else ([], [])
    if spec.sharing == "mirror":
        if uses_bonds:
            lines.append(f"mirror = {slots}  # bond k and its mirror image share an angle")
        if any(where == "site" for where, _, _ in terms):
            lines.append(f"mirror_sites = {site_slots}")
    lines += [""] + _reference_lines(spec) + [""]
    sizes = _vector_sizes(spec, len(bonds), len(set(slots)), len(set(site_slots)))
    for role, size in sizes.items():
        lines.append(f'{names[role]} = ParameterVector("{names[role]}", {size})')
    lines.append("ansatz = QuantumCircuit(n_qubits)")
    gates = _gate_count(spec, len(bonds))
    if spec.style == "unrolled" and gates <= UNROLL_LIMIT:
        lines += _unrolled(spec, bonds, slots, site_slots, names)
    elif spec.style == "function":
        lines += ["", "", "def add_layer(qc, layer):"] + _indent(_layer_body(spec, names, "qc"), 1)
        lines += ["", "", "for layer in range(n_layers):", "    add_layer(ansatz, layer)"]
    else:
        lines += ["for layer in range(n_layers):"] + _indent(_layer_body(spec, names, "ansatz"), 1)
    if spec.family == "hardware_efficient" and "final" in names:
        lines += ["for q in range(n_qubits):", f"    ansatz.ry({names['final']}[q], q)  # final rotation layer"]
    lines += [""] + _compose_lines(spec.compose)
    return "\n".join(lines) + "\n", claims(spec)


def _library(spec: CircuitSpec) -> tuple[str, dict]:
    """The library style: one library call, then a reference of ``range(k)``; sizes from ``n_qubits``.

    The call comes first so the line that picks the family sits right above the reference it needs: written
    after a shared ``reference = QuantumCircuit(n_qubits)``, the trained model kept U(1)'s call but dropped its
    ``reference.x`` line (as Z2 at even parity has none) on 14 of 30 prompts, leaving |0...0>, a frozen state.
    """
    _, builder, call = LIBRARY[spec.family]
    k, sym = len(spec.occupied), SYMMETRY[spec.family]
    ent = entanglement(spec)
    lines = ["from qiskit import QuantumCircuit", f"from qiskit.circuit.library import {builder}", "",
             f"n_qubits = {spec.n_qubits}", f"ansatz = {call.format(reps=spec.layers, ent=ent)}", ""]
    if k:
        what = f"{k} excitation{'s' * (k != 1)}" if sym == "u1" else f"{'odd' if k % 2 else 'even'} parity"
        lines += ["reference = QuantumCircuit(n_qubits)", f"reference.x(range({k}))  # {what} on the first qubits"]
    else:
        lines.append("reference = QuantumCircuit(n_qubits)  # |0...0>" + (", even parity" if sym == "z2" else ""))
    lines.append("circuit = reference.compose(ansatz)")
    return "\n".join(lines) + "\n", claims(spec)


def entanglement(spec: CircuitSpec) -> str:
    """The library call's entanglement argument: "circular" on a ring, "linear" on a chain."""
    return "circular" if connectivity(spec.shape, spec.periodic) == "ring" else "linear"


def library_ready(spec: CircuitSpec) -> bool:
    """Whether ``spec`` can be written in the library style (see the module docstring)."""
    return (spec.family in LIBRARY and spec.variant == LIBRARY[spec.family][0] and len(spec.shape) == 1
            and spec.sharing == "none" and tuple(spec.occupied) == tuple(range(len(spec.occupied))))


def _validate(spec: CircuitSpec) -> None:
    assert spec.family in VARIANTS and spec.variant in VARIANTS[spec.family], (spec.family, spec.variant)
    assert len(spec.shape) == len(spec.periodic) and spec.layers >= 1 and spec.n_qubits >= 2
    assert spec.sharing != "mirror" or connectivity(spec.shape, spec.periodic) == "chain", "mirror sharing is defined on open chains"
    assert all(0 <= q < spec.n_qubits for q in spec.occupied)
    assert spec.style != "library" or library_ready(spec), f"the library style cannot write {spec}"
    roles = {r for _, _, rs in VARIANTS[spec.family][spec.variant] for r in rs}
    names = dict(spec.names)
    assert roles <= set(names) and len(set(names.values())) == len(names), (roles, names)


def _vector_sizes(spec: CircuitSpec, n_bonds: int, n_slots: int, n_site_slots: int) -> dict[str, int]:
    n, layers, sizes = spec.n_qubits, spec.layers, {}
    dirs = 2 if len(spec.shape) == 2 else 1
    for where, _, roles in VARIANTS[spec.family][spec.variant]:
        per_layer = {"none": {"bond": n_bonds, "site": n, "pair": 1},
                     "translation": {"bond": dirs, "site": 1, "pair": 1},
                     "mirror": {"bond": n_slots, "site": n_site_slots, "pair": 1},
                     "per_layer": {"bond": 1, "site": 1, "pair": 1}}[spec.sharing][where]
        for role in roles:
            sizes[role] = layers * per_layer
    if "final" in dict(spec.names):
        sizes["final"] = n
    return sizes


def _index(spec: CircuitSpec, where: str) -> str:
    """Parameter index expression inside the layer loop (loop variables k, d, s, q, layer)."""
    if spec.sharing in ("per_layer",) or where == "pair":
        return "layer"
    if spec.sharing == "translation":
        return ("2 * layer + d" if len(spec.shape) == 2 else "layer") if where == "bond" else "layer"
    if spec.sharing == "mirror":  # a chain of n has n // 2 bond classes and (n + 1) // 2 site classes
        return f"layer * {spec.n_qubits // 2} + s" if where == "bond" else f"layer * {(spec.n_qubits + 1) // 2} + mirror_sites[q]"
    return "layer * len(bonds) + k" if where == "bond" else "layer * n_qubits + q"


def _bond_loop(spec: CircuitSpec) -> str:
    if spec.sharing == "mirror":
        return "for (a, b), s in zip(bonds, mirror):"
    if spec.sharing == "translation":
        return "for a, b, d in bonds:" if len(spec.shape) == 2 else "for a, b in bonds:"
    return "for k, (a, b) in enumerate(bonds):"


def _gate(gate: str, roles: tuple, names: dict, idx: str, target: str, a="a", b="b", q="q", w="w") -> list[str]:
    p = [f"{names[r]}[{idx}]" for r in roles]
    if gate == "xxpy":
        return [f"{target}.append(XXPlusYYGate({', '.join(p)}), [{a}, {b}])"]
    if gate == "exchange":
        return [f"{target}.rxx({p[0]}, {a}, {b})", f"{target}.ryy({p[0]}, {a}, {b})"]
    if gate in ("rzz", "rxx", "ryy"):
        return [f"{target}.{gate}({p[0]}, {a}, {b})"]
    if gate == "cz":
        return [f"{target}.cz({a}, {b})"]
    if gate == "rzz_weighted":
        return [f"{target}.rzz(2 * {w} * {p[0]}, {a}, {b})"]
    if gate == "rx_mixer":
        return [f"{target}.rx(2 * {p[0]}, {q})"]
    return [f"{target}.{gate}({p[0]}, {q})"]  # rz, ry


def _ordered_terms(spec: CircuitSpec) -> list[tuple]:
    terms = list(VARIANTS[spec.family][spec.variant])
    if spec.fields_first:
        terms.sort(key=lambda t: t[0] != "site")
    return terms


def _layer_body(spec: CircuitSpec, names: dict, target: str) -> list[str]:
    """One layer, written with loops over ``bonds`` / ``couplings`` / qubits."""
    out: list[str] = []
    terms = _ordered_terms(spec)
    bond_terms = [t for t in terms if t[0] == "bond"]
    done_bonds = False
    for where, gate, roles in terms:
        if where == "site":
            out += ["for q in range(n_qubits):"] + _indent(_gate(gate, roles, names, _index(spec, "site"), target), 1)
        elif where == "pair":
            out += ["for a, b, w in couplings:"] + _indent(_gate(gate, roles, names, "layer", target), 1)
        elif spec.interleave:
            if not done_bonds:
                body = [ln for _, g, rs in bond_terms for ln in _gate(g, rs, names, _index(spec, "bond"), target)]
                out += [_bond_loop(spec)] + _indent(body, 1)
                done_bonds = True
        else:
            out += [_bond_loop(spec)] + _indent(_gate(gate, roles, names, _index(spec, "bond"), target), 1)
    return out


def _gate_count(spec: CircuitSpec, n_bonds: int) -> int:
    per = {"bond": n_bonds, "site": spec.n_qubits, "pair": len(spec.couplings)}
    return spec.layers * sum(per[w] * (2 if g == "exchange" else 1) for w, g, _ in VARIANTS[spec.family][spec.variant])


def _unrolled(spec: CircuitSpec, bonds, slots, site_slots, names: dict) -> list[str]:
    """Every gate on its own line, with literal qubits and parameter indices."""
    n, out = spec.n_qubits, []
    terms = _ordered_terms(spec)
    bond_terms = [t for t in terms if t[0] == "bond"]
    dirs = 2 if len(spec.shape) == 2 else 1

    def bond_index(layer, k, d):
        return {"none": layer * len(bonds) + k, "translation": layer * dirs + (d if dirs == 2 else 0),
                "mirror": layer * len(set(slots)) + (slots[k] if slots else 0), "per_layer": layer}[spec.sharing]

    def site_index(layer, q):
        return {"none": layer * n + q, "translation": layer, "per_layer": layer,
                "mirror": layer * len(set(site_slots)) + (site_slots[q] if site_slots else 0)}[spec.sharing]

    for layer in range(spec.layers):
        done_bonds = False
        for where, gate, roles in terms:
            if where == "site":
                for q in range(n):
                    out += _gate(gate, roles, names, str(site_index(layer, q)), "ansatz", q=str(q))
            elif where == "pair":
                for a, b, w in spec.couplings:
                    out += _gate(gate, roles, names, str(layer), "ansatz", str(a), str(b), w=str(w))
            elif spec.interleave:
                if not done_bonds:
                    for k, (a, b, d) in enumerate(bonds):
                        for _, g, rs in bond_terms:
                            out += _gate(g, rs, names, str(bond_index(layer, k, d)), "ansatz", str(a), str(b))
                    done_bonds = True
            else:
                for k, (a, b, d) in enumerate(bonds):
                    out += _gate(gate, roles, names, str(bond_index(layer, k, d)), "ansatz", str(a), str(b))
    return out


def _reference_lines(spec: CircuitSpec) -> list[str]:
    occ = list(spec.occupied)
    if spec.family == "qaoa":
        return ["reference = QuantumCircuit(n_qubits)", "reference.h(range(n_qubits))  # |+...+>, an eigenstate of the X mixer"]
    if not occ:
        return ["reference = QuantumCircuit(n_qubits)  # |0...0>"]
    how = (spec.compose + len(occ)) % 3
    if how == 0:
        return [f"occupied = {occ}", "reference = QuantumCircuit(n_qubits)", "reference.x(occupied)"]
    if how == 1:
        return [f"occupied = {occ}", "reference = QuantumCircuit(n_qubits)", "for q in occupied:", "    reference.x(q)"]
    return ["reference = QuantumCircuit(n_qubits)"] + [f"reference.x({q})" for q in occ]


def _compose_lines(how: int) -> list[str]:
    if how == 1:
        return ["circuit = reference.copy()", "circuit.compose(ansatz, inplace=True)"]
    if how == 2:
        return ["circuit = QuantumCircuit(n_qubits)", "circuit.compose(reference, inplace=True)", "circuit.barrier()",
                "circuit.compose(ansatz, inplace=True)"]
    return ["circuit = reference.compose(ansatz)"]


def _indent(lines: list[str], level: int) -> list[str]:
    return ["    " * level + ln for ln in lines]
