"""How the next trial is chosen: FMQA (FM surrogate → QUBO → solver), random search, Optuna's TPE.

Each method answers ``propose(history, rng) -> Proposal`` from the (point, loss) pairs seen so far,
whoever chose them (a person's edits in guided mode count like any other trial). None proposes a
point already tried while untried ones remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.qubo.solver_choice import solve_in_order
from tasks.tuning_agent.fm_surrogate import fit_fm, one_hot_penalty_weight
from tasks.common.reporting import say
from tasks.tuning_agent.search_space import Point, SearchSpace

METHODS = ("fmqa", "random", "tpe")


@dataclass
class Proposal:
    point: Point
    method: str
    expected_loss: float | None = None
    info: dict = field(default_factory=dict)


class FMQAConfig(BaseModel):
    """FM surrogate and QUBO solvers."""

    model_config = ConfigDict(extra="forbid")
    initial_random: int = Field(4, ge=2, description="Random trials before the first surrogate (an FM needs data)")
    factors: int = Field(4, ge=1, description="FM latent factors per variable (rank of the pairwise couplings)")
    epochs: int = Field(1500, ge=10, description="Adam epochs per FM fit")
    l2: float = Field(1e-3, ge=0, description="L2 penalty on FM weights")
    penalty_scale: float = Field(1.5, gt=1, description="One-hot penalty as a multiple of the largest |QUBO| row sum")
    solvers: list[str] = Field(["annealing", "exact"], min_length=1,
                               description="Solver preference: qaoa, annealing, exact, azure; the first that can take the "
                                           "problem is used and each skipped one is logged with why")
    solver_options: dict[str, dict] = Field(default_factory=dict,
                                            description="Per-solver options, e.g. {qaoa: {reps: 3, shots: 4096}, azure: {target: ionq.simulator}}")


def untried(space: SearchSpace, history: list[tuple[Point, float]]) -> list[Point]:
    seen = {p for p, _ in history}
    return [p for p in space.all_points() if p not in seen]


class RandomSearch:
    name = "random"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def propose(self, history: list[tuple[Point, float]], rng: np.random.Generator) -> Proposal:
        left = untried(self.space, history) or self.space.all_points()
        return Proposal(left[rng.integers(len(left))], self.name)


class TPESearch:
    """Optuna's TPE sampler over the same categorical choices (history replayed into a fresh in-memory study)."""

    name = "tpe"

    def __init__(self, space: SearchSpace, initial_random: int = 4) -> None:
        self.space, self.initial_random = space, initial_random

    def propose(self, history: list[tuple[Point, float]], rng: np.random.Generator) -> Proposal:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = {name: optuna.distributions.CategoricalDistribution(list(range(size)))
                 for name, size in zip(self.space.names, self.space.sizes)}
        sampler = optuna.samplers.TPESampler(seed=int(rng.integers(2**31)), n_startup_trials=self.initial_random)
        study = optuna.create_study(sampler=sampler, direction="minimize")
        for point, loss in history:
            study.add_trial(optuna.trial.create_trial(params=dict(zip(self.space.names, point)), distributions=dists,
                                                      value=loss))
        seen = {p for p, _ in history}
        for _ in range(50):  # TPE may repeat a point on a small grid; ask again, then fall back to an untried one
            trial = study.ask(dists)
            point = tuple(trial.params[name] for name in self.space.names)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            if point not in seen:
                return Proposal(point, self.name)
        left = untried(self.space, history) or self.space.all_points()
        return Proposal(left[rng.integers(len(left))], self.name, info={"note": "TPE repeated tried points; random untried"})


class FMQASearch:
    """Fit an FM on the history, turn it into a QUBO with one-hot penalties, take the solver's best untried answer."""

    name = "fmqa"

    def __init__(self, space: SearchSpace, cfg: FMQAConfig, log=say) -> None:
        self.space, self.cfg, self.log = space, cfg, log

    def propose(self, history: list[tuple[Point, float]], rng: np.random.Generator) -> Proposal:
        left = untried(self.space, history) or self.space.all_points()
        if len(history) < self.cfg.initial_random:
            return Proposal(left[rng.integers(len(left))], self.name, info={"phase": "initial random"})
        x = np.array([self.space.encode(p) for p, _ in history])
        y = np.array([loss for _, loss in history])
        fm = fit_fm(x, y, factors=self.cfg.factors, epochs=self.cfg.epochs, l2=self.cfg.l2, seed=int(rng.integers(2**31)))
        surrogate = fm.qubo(self.space.groups())
        qubo = surrogate.with_one_hot_penalty(one_hot_penalty_weight(surrogate, self.cfg.penalty_scale))
        solution = solve_in_order(qubo, self.cfg.solvers, seed=int(rng.integers(2**31)), options=self.cfg.solver_options,
                                  log=self.log)
        seen = {p for p, _ in history}
        ranked = [self.space.decode(s) for s in solution.samples]
        fresh = [p for p in ranked if p not in seen]
        info = {"solver": solution.solver, "variables": qubo.n, "rank_in_solver_answers": None,
                **{k: v for k, v in solution.info.items() if k in ("skipped", "infeasible_repaired", "best_shot_share")}}
        if fresh:
            point = fresh[0]
            info["rank_in_solver_answers"] = ranked.index(point)
        else:  # the solver only found tried points: the surrogate's best untried point by prediction
            preds = fm.predict(np.array([self.space.encode(p) for p in left]))
            point = left[int(np.argmin(preds))]
            info["note"] = "solver answers all tried; surrogate's best untried point"
        expected = float(fm.predict(self.space.encode(point))[0])
        return Proposal(point, self.name, expected_loss=expected, info=info)


def make_method(name: str, space: SearchSpace, fmqa: FMQAConfig | None = None, log=say):
    """A search method by name: fmqa, random or tpe."""
    fmqa = fmqa or FMQAConfig()
    if name == "fmqa":
        return FMQASearch(space, fmqa, log)
    if name == "random":
        return RandomSearch(space)
    if name == "tpe":
        return TPESearch(space, fmqa.initial_random)
    raise ValueError(f"unknown search method {name!r}: choose from {', '.join(METHODS)}")
