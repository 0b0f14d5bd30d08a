"""Physics of the reference Jarvis lab: four phases of an open qubit chain, prepared and evolved as
Qiskit circuits, simulated as matrix product states (MPS) by Aer, and measured on the simulated state.

Why MPS: cat, cluster and product states have bond dimension <= 2 and the weak-field Trotter layers
keep it small, so a 256-site chain runs in about a second. Pseudorandom circuits are truncated at
``MAX_BOND``: their half-chain entanglement saturates at log2(MAX_BOND) = 4 bits, the largest this
lab resolves (``entropy_proxy`` is the entanglement of the state as represented).

Preparation (``bias`` b tilts it: Ry(2 asin sqrt(b))|0> has P(1) = b; None means b = 1/2, i.e. H),
then ``depth`` layers, each one Trotter step dt = 0.2 (J = 1) or one brickwork period:

- ising_symmetry_breaking: cat state sqrt(1-b)|0..0> + sqrt(b)|1..1> (tilt on qubit 0 + CNOT chain),
  quenched by H = -sum J_i Z_i Z_i+1 - sum h_i X_i with h = 0.25 J, deep in the ordered phase (h_c = J).
- spt_cluster: cluster state CZ-chain Ry|0>^N, quenched by H = -sum J_i K_i - sum h_i X_i
  (K_i = Z X Z). X fields respect the Z2 x Z2 symmetry, so the state stays SPT (transition at h = J).
- trivial_product: Ry|0> on every site, Larmor precession in H = -sum (X_i + g_i Z_i); no
  interactions, so the state stays a product state at every depth.
- pseudorandom: Ry|0> on every site, then brickwork layers of Haar-random single-qubit gates + CZ.

The seed picks a disorder realisation (couplings +-10 %, fields g_i, random gates) and the shot record.

Measurements (exact contractions of the MPS unless said): magnetization = signed mean <Z_i> (the
symmetric cat state has 0; its order shows in |<Z_i Z_j>| ~ 1); string_order = cluster string
<Z_a X_a+1 1 X_a+3 ... X_b-1 Z_b> (the product of stabilisers K_a+1 K_a+3 ... K_b-1, so exactly 1 on the
cluster state; the plain Z X X..X Z string vanishes there), averaged over two windows of length ~N/2;
correlation_length = exponential fit of the connected <Z_i Z_i+r> (0 when none, capped at N);
entropy_proxy = von Neumann entropy (bits) of the half chain from the Schmidt values; 512 shots are
sampled from the MPS (seeded): branch_count = distinct bitstrings, top_k = 5 most frequent (Qiskit
order, qubit 0 rightmost); randomness_score = Shannon entropy of the shots per 8-site block,
normalised to [0, 1], minimised over two readouts: the computational basis, and every qubit measured
along its own Bloch vector (which makes any product state deterministic), so what remains is
randomness that no local readout removes, i.e. from entanglement and scrambling; interfered_count =
sites whose Bloch vector has a transverse part sqrt(<X>^2 + <Y>^2) > 0.1, i.e. coherent superpositions
of |0> and |1> that show interference fringes when a Hadamard precedes readout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

PHASE_TYPES = ("ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom")
SHOTS = 512
TOP_K = 5
MAX_BOND = 16
TRUNCATION = 1e-8  # discarded Schmidt weight per truncation: below anything the features resolve
DT = 0.2
ISING_FIELD = 0.25
CLUSTER_FIELD = 0.25
PRECESSION_FIELD = 1.0
DISORDER = 0.1
CORRELATION_FLOOR = 1e-3  # |connected ZZ| below this counts as decayed
COHERENCE_FLOOR = 0.1

FEATURES = (
    "magnetization",         # mean <Z_i>, signed
    "polarization",          # mean |<Z_i>|
    "transverse_magnetization",  # mean <X_i>
    "zz_near",               # |<Z_i Z_i+1>| in the bulk
    "zz_far",                # |<Z_i Z_i+N/2>|: long-range order
    "connected_zz_near",     # <Z_i Z_i+1> - <Z_i><Z_i+1>
    "string_order",
    "correlation_length_fraction",  # correlation_length / N
    "entropy_fraction",      # half-chain entropy / min(N/2, log2 MAX_BOND)
    "site_entropy",          # mean single-site entanglement entropy (bits)
    "randomness_score",
    "branch_fraction",       # branch_count / min(shots, 2^N)
    "interfered_fraction",   # interfered_count / N
    "top1_probability",      # frequency of the most common bitstring
    "schmidt_weight",        # largest Schmidt weight at the half cut
    "z2_parity",             # <prod X_i>, the Ising symmetry generator
)

PAULI_I = np.eye(2, dtype=complex)
PAULI_X = np.array([[0, 1], [1, 0]], dtype=complex)
PAULI_Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
PAULI_Z = np.diag([1.0, -1.0]).astype(complex)


@dataclass(frozen=True)
class PhaseRun:
    """One experiment: the 16-float feature vector and the summary the Jarvis API returns."""

    features: tuple[float, ...]
    summary: dict


@dataclass(frozen=True)
class ChainMPS:
    """Right-canonical MPS: ``tensors[i]`` is B_i with shape (2, left, right); ``bonds[i]`` the
    Schmidt values between sites i and i+1."""

    tensors: list[np.ndarray]
    bonds: list[np.ndarray]


def tilt_angle(bias: float | None) -> float:
    """Ry angle whose |1> population is ``bias`` (None -> 1/2, an equal superposition)."""
    return math.pi / 2 if bias is None else 2 * math.asin(math.sqrt(bias))


def _stream(seed: int, purpose: int) -> np.random.Generator:
    """Independent random stream per purpose (0: couplings and gates, 1: shots) for one seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose,)))


def prepare_circuit(phase_type: str, system_size: int, depth: int, seed: int, bias: float | None = None):
    """The Qiskit circuit that prepares ``phase_type`` and evolves it ``depth`` layers."""
    from qiskit import QuantumCircuit

    if phase_type not in PHASE_TYPES:
        raise ValueError(f"unknown phase_type {phase_type!r}; expected one of {', '.join(PHASE_TYPES)}")
    n, theta = system_size, tilt_angle(bias)
    rng = _stream(seed, 0)
    qc = QuantumCircuit(n, name=phase_type)
    bonds = [range(0, n - 1, 2), range(1, n - 1, 2)]  # brickwork: even bonds, then odd bonds

    def jitter(scale: float, size: int) -> np.ndarray:
        return scale * (1 + DISORDER * rng.uniform(-1, 1, size))

    def cz_chain() -> None:
        for layer in bonds:
            for i in layer:
                qc.cz(i, i + 1)

    if phase_type == "ising_symmetry_breaking":
        qc.ry(theta, 0)
        for i in range(n - 1):
            qc.cx(i, i + 1)
        J, h = jitter(1.0, n - 1), jitter(ISING_FIELD, n)
        for _ in range(depth):
            for layer in bonds:
                for i in layer:
                    qc.rzz(-2 * J[i] * DT, i, i + 1)
            for i in range(n):
                qc.rx(-2 * h[i] * DT, i)
    elif phase_type == "spt_cluster":
        for i in range(n):
            qc.ry(theta, i)
        cz_chain()
        J, h = jitter(1.0, n), jitter(CLUSTER_FIELD, n)
        for _ in range(depth):
            for i in range(n):
                qc.rx(-2 * h[i] * DT, i)
            # exp(i dt sum J_i K_i) = U exp(i dt sum J_i X_i) U with U the CZ chain (K_i = U X_i U).
            cz_chain()
            for i in range(n):
                qc.rx(-2 * J[i] * DT, i)
            cz_chain()
    elif phase_type == "trivial_product":
        g = rng.uniform(-0.5, 0.5, n)
        for i in range(n):
            qc.ry(theta, i)
        for _ in range(depth):
            for i in range(n):
                qc.rx(-2 * PRECESSION_FIELD * DT, i)
                qc.rz(-2 * g[i] * DT, i)
    else:
        for i in range(n):
            qc.ry(theta, i)
        for _ in range(depth):
            for layer in bonds:
                for i in range(n):  # Haar-random SU(2): polar angle with cos uniform in [-1, 1]
                    qc.u(math.acos(1 - 2 * rng.random()), *rng.uniform(0, 2 * math.pi, 2), i)
                for i in layer:
                    qc.cz(i, i + 1)
    return qc


def simulate_mps(circuit, seed: int = 0) -> ChainMPS:
    """Run ``circuit`` on Aer's MPS simulator and return the final state in right-canonical form."""
    from qiskit_aer import AerSimulator

    qc = circuit.copy()
    qc.save_matrix_product_state(label="mps")
    sim = AerSimulator(method="matrix_product_state", matrix_product_state_max_bond_dimension=MAX_BOND,
                       matrix_product_state_truncation_threshold=TRUNCATION,
                       max_parallel_threads=1, seed_simulator=seed)  # one thread: bit-for-bit reproducible
    gammas, lambdas = sim.run(qc, shots=1).result().data(0)["mps"]
    bonds = [np.asarray(lam, dtype=float) / np.linalg.norm(lam) for lam in lambdas]
    tensors = []
    for i, (g0, g1) in enumerate(gammas):
        b = np.stack([np.asarray(g0), np.asarray(g1)])
        tensors.append(b * bonds[i][None, None, :] if i < len(bonds) else b)  # Vidal Gamma*Lambda = B
    return ChainMPS(tensors, bonds)


def _left_env(mps: ChainMPS, i: int) -> np.ndarray:
    """Reduced left environment at site i: diag(lambda^2) of the bond to its left."""
    return np.ones((1, 1), complex) if i == 0 else np.diag(mps.bonds[i - 1] ** 2).astype(complex)


def _transfer(env: np.ndarray, b: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Carry the environment across one site with ``op`` sandwiched between bra and ket."""
    ket = np.tensordot(op, b, axes=(1, 0))
    return (b.conj().transpose(0, 2, 1) @ env @ ket).sum(axis=0)


def local_expectations(mps: ChainMPS, op: np.ndarray) -> np.ndarray:
    """<op_i> on every site."""
    return np.array([np.trace(_transfer(_left_env(mps, i), b, op)).real for i, b in enumerate(mps.tensors)])


def string_profile(mps: ChainMPS, start: int, first: np.ndarray, fill: Callable[[int], np.ndarray],
                   last: np.ndarray) -> np.ndarray:
    """<first_start (prod_r fill(r)) last_start+r> for r = 1 .. N-1-start, in one sweep."""
    env = _transfer(_left_env(mps, start), mps.tensors[start], first)
    values = []
    for r, b in enumerate(mps.tensors[start + 1:], start=1):
        values.append(np.trace(_transfer(env, b, last)).real)
        env = _transfer(env, b, fill(r))
    return np.array(values)


def chain_parity(mps: ChainMPS) -> float:
    """<prod_i X_i>: the Ising Z2 symmetry generator."""
    env = np.ones((1, 1), complex)
    for b in mps.tensors:
        env = _transfer(env, b, PAULI_X)
    return float(np.trace(env).real)


def half_chain_entropy(mps: ChainMPS) -> tuple[float, float]:
    """(von Neumann entropy in bits, largest Schmidt weight) across the middle bond."""
    if not mps.bonds:
        return 0.0, 1.0
    p = mps.bonds[len(mps.tensors) // 2 - 1] ** 2
    p = p[p > 1e-15] / p.sum()
    return float(-(p * np.log2(p)).sum()), float(p.max())


def sample_bitstrings(mps: ChainMPS, shots: int, rng: np.random.Generator,
                      bases: list[np.ndarray] | None = None) -> np.ndarray:
    """(shots, N) outcomes sampled site by site; ``bases[i]`` rotates site i's readout basis."""
    v = np.ones((shots, 1), complex)
    out = np.empty((shots, len(mps.tensors)), np.uint8)
    for i, b in enumerate(mps.tensors):
        if bases is not None:
            b = np.tensordot(bases[i], b, axes=(1, 0))
        w = np.einsum("ka,sab->skb", v, b)
        p = (np.abs(w) ** 2).sum(axis=2)
        bit = rng.random(shots) * (p[0] + p[1]) < p[1]
        out[:, i] = bit
        chosen = np.where(bit[:, None], w[1], w[0])
        v = chosen / np.linalg.norm(chosen, axis=1, keepdims=True)
    return out


def bloch_bases(bloch: np.ndarray) -> list[np.ndarray]:
    """Per-site unitaries whose outcome 0 is the spin's own Bloch direction (Z where it has none)."""
    bases = []
    for x, y, z in bloch:
        r = math.sqrt(x * x + y * y + z * z)
        if r < 1e-9:
            bases.append(PAULI_I)
            continue
        theta, phi = math.acos(max(-1.0, min(1.0, z / r))), math.atan2(y, x)
        up = np.array([math.cos(theta / 2), np.exp(1j * phi) * math.sin(theta / 2)])
        down = np.array([math.sin(theta / 2), -np.exp(1j * phi) * math.cos(theta / 2)])
        bases.append(np.stack([up.conj(), down.conj()]))
    return bases


def shot_statistics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``samples`` and their counts, most frequent first (ties by bitstring)."""
    rows, counts = np.unique(samples, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return rows[order], counts[order]


def window_entropy(samples: np.ndarray, window: int = 8) -> float:
    """Mean Shannon entropy per ``window``-site block of the shot record, normalised to [0, 1].

    Blocks keep the score intensive: over a whole long chain 512 shots are all distinct as soon as
    each site carries a little entropy, which would say nothing about the state.
    """
    shots, n = samples.shape
    w = min(window, n)
    codes = samples[:, : n - n % w].reshape(shots, -1, w).astype(np.int64) @ (1 << np.arange(w))
    values = []
    for block in codes.T:
        p = np.bincount(block) / shots
        p = p[p > 0]
        values.append(-(p * np.log2(p)).sum())
    return float(np.mean(values) / math.log2(min(shots, 2**w)))


def correlation_length(connected: np.ndarray, n_sites: int) -> float:
    """Decay length (sites) of |C(r)|, r = 1, 2, ..., fitted over its leading run above the floor."""
    c = np.abs(connected)
    if c.size == 0 or c[0] <= CORRELATION_FLOOR:
        return 0.0
    run = int(np.argmax(c <= CORRELATION_FLOOR)) if (c <= CORRELATION_FLOOR).any() else c.size
    r = np.arange(1, run + 1, dtype=float)
    y = np.log(c[:run])
    if run < c.size:  # the first point that has decayed pins the fit's far end
        r, y = np.append(r, run + 1), np.append(y, math.log(CORRELATION_FLOOR))
    slope = np.polyfit(r, y, 1)[0] if r.size > 1 else -math.inf
    return float(n_sites) if slope >= -1.0 / n_sites else float(min(n_sites, -1.0 / slope))


def identity_fill(r: int) -> np.ndarray:
    """Nothing between the ends: a plain two-point correlator."""
    return PAULI_I


def cluster_string_fill(r: int) -> np.ndarray:
    """X on a+1, a+3, ..., identity in between: the string K_a+1 K_a+3 ... K_b-1 of the cluster state."""
    return PAULI_X if r % 2 else PAULI_I


def run_phase(phase_type: str, system_size: int, depth: int, seed: int, bias: float | None = None) -> PhaseRun:
    """Prepare, simulate and measure one phase experiment; deterministic for a given seed."""
    n = system_size
    mps = simulate_mps(prepare_circuit(phase_type, n, depth, seed, bias), seed)
    shot_rng = _stream(seed, 1)
    bloch = np.stack([local_expectations(mps, op) for op in (PAULI_X, PAULI_Y, PAULI_Z)], axis=1)
    z, x = bloch[:, 2], bloch[:, 0]

    reach = max(2, n // 2)  # ZZ distances probed, from two reference sites around the centre
    refs = [i for i in ((n - reach) // 2 - 1, (n - reach) // 2) if 0 <= i and i + reach < n] or [0]
    zz = np.mean([string_profile(mps, i, PAULI_Z, identity_fill, PAULI_Z)[:reach] for i in refs], axis=0)
    connected = zz - np.mean([z[i] * z[i + 1:i + 1 + reach] for i in refs], axis=0)

    window = 2 * max(1, n // 4)  # even, so the string ends on the sublattice of its start
    starts = [a for a in ((n - window) // 2, (n - window) // 2 - 1) if 0 <= a and a + window < n]
    string = float(np.mean([string_profile(mps, a, PAULI_Z, cluster_string_fill, PAULI_Z)[window - 1]
                            for a in starts]))

    entropy, schmidt = half_chain_entropy(mps)
    length = np.linalg.norm(bloch, axis=1).clip(0, 1)
    p_up = (1 + length) / 2
    site_entropy = -(p_up * np.log2(p_up) + (1 - p_up) * np.log2(np.clip(1 - p_up, 1e-300, 1)))
    coherent = int((np.hypot(bloch[:, 0], bloch[:, 1]) > COHERENCE_FLOOR).sum())

    z_shots = sample_bitstrings(mps, SHOTS, shot_rng)
    bloch_shots = sample_bitstrings(mps, SHOTS, shot_rng, bloch_bases(bloch))
    randomness = min(window_entropy(z_shots), window_entropy(bloch_shots))
    rows, counts = shot_statistics(z_shots)
    top_k = [{"bitstring": "".join(map(str, row[::-1])), "count": int(c),
              "probability": round(float(c) / SHOTS, 6)} for row, c in zip(rows[:TOP_K], counts[:TOP_K])]
    xi = correlation_length(connected, n)

    values = [z.mean(), np.abs(z).mean(), x.mean(), abs(zz[0]), abs(zz[-1]), connected[0], string, xi / n,
              entropy / min(n / 2, math.log2(MAX_BOND)), site_entropy.mean(), randomness,
              len(counts) / min(SHOTS, 2 ** min(n, 62)), coherent / n, counts[0] / SHOTS, schmidt, chain_parity(mps)]
    features = tuple(round(float(v), 6) + 0.0 for v in values)  # + 0.0 turns -0.0 into 0.0
    if not all(math.isfinite(v) for v in features):
        raise ArithmeticError(f"non-finite feature in {phase_type} run: {dict(zip(FEATURES, features))}")
    summary = {"phase_type": phase_type, "system_size": n, "depth": depth, "seed": seed, "top_k": top_k,
               "magnetization": features[0], "entropy_proxy": round(max(0.0, entropy), 6),  # max(0.0, -0.0) is 0.0
               "correlation_length": round(xi, 6), "string_order": features[6], "randomness_score": features[10],
               "branch_count": len(counts), "interfered_count": coherent}
    return PhaseRun(features, summary)


def feature_distance(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """L2 distance between two feature vectors (TRI and replay drift)."""
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def kmeans_labels(points: np.ndarray, k: int, iterations: int, seed: int = 0) -> np.ndarray:
    """Cluster index of each row: k-means++ seeding, then ``iterations`` Lloyd steps; deterministic."""
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        pick = rng.choice(len(points), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(points))
        centres.append(points[pick])
    centres = np.array(centres)
    labels = np.zeros(len(points), dtype=int)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        for j in range(k):
            if (labels == j).any():  # an emptied cluster keeps its centre
                centres[j] = points[labels == j].mean(axis=0)
    return labels
