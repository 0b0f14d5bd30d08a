"""QUBO problems and the solvers that take them (classical, QAOA, Azure Quantum)."""
