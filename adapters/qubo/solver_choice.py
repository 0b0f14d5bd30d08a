"""Choosing a QUBO solver by name, with fallbacks: ``exact``, ``annealing``, ``qaoa`` and ``azure``.

``solve_in_order`` walks a preference list and names each solver it skipped and why (too many
variables, a package or credentials missing), so a run's log states the fallback it took.

    solution = solve_in_order(qubo, ["qaoa", "annealing", "exact"], seed=0)
"""

from __future__ import annotations

from adapters.qubo.azure_quantum import AzureQuantumSolver
from adapters.qubo.qubo import QUBO, Solution
from adapters.qubo.qubo_solvers import AnnealingSolver, ExactSolver, QAOASolver, Solver

SOLVERS: dict[str, type] = {"exact": ExactSolver, "annealing": AnnealingSolver, "qaoa": QAOASolver,
                            "azure": AzureQuantumSolver}


def make_solver(name: str, **options) -> Solver:
    """A solver by name (exact, annealing, qaoa, azure) with its options."""
    if name not in SOLVERS:
        raise ValueError(f"unknown QUBO solver {name!r}: choose from {', '.join(SOLVERS)}")
    return SOLVERS[name](**options)


def solve_in_order(qubo: QUBO, order: list[str], *, seed: int = 0, options: dict[str, dict] | None = None,
                   log=print) -> Solution:
    """Solve with the first solver in ``order`` that can take ``qubo``; each one skipped is logged with why."""
    skipped = []
    for name in order:
        solver = make_solver(name, **(options or {}).get(name, {}))
        reason = solver.unavailable(qubo)
        if reason is None:
            if skipped:
                log(f"[qubo] {'; '.join(skipped)}: using {name}")
            solution = solver.solve(qubo, seed=seed)
            solution.info["skipped"] = skipped
            return solution
        skipped.append(f"{name} unavailable ({reason})")
    raise RuntimeError(f"no QUBO solver could take this {qubo.n}-variable problem: {'; '.join(skipped)}. "
                       f"Add 'exact' or 'annealing' to the solver order.")
