"""Search space encoding, the FM surrogate → QUBO (FMQA), and the three ways of proposing a trial."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.qubo.solver_choice import make_solver
from tasks.tuning_agent.fm_surrogate import fit_fm, one_hot_penalty_weight
from tasks.tuning_agent.search_methods import FMQAConfig, make_method
from tasks.tuning_agent.search_space import SearchSpace
from tasks.training.train_sft import SFTStageConfig

SPACE = SearchSpace(dimensions={"trainer.learning_rate": [1e-5, 1e-4, 1e-3, 1e-2], "lora.r": [4, 8, 16],
                                "lora.alpha": [8, 32], "lora.dropout": [0.0, 0.1]})
PLANTED = (2, 1, 1, 0)


def planted_loss(p) -> float:
    """A loss surface with one best setting and an interaction (a low alpha only hurts at a high learning rate)."""
    lr, r, alpha, dropout = p
    return (1.0 + 0.4 * abs(lr - 2) + 0.15 * abs(r - 1) + 0.3 * (alpha == 0) * (lr >= 2) + 0.1 * (alpha == 0)
            + 0.05 * dropout)


def test_points_encode_one_hot_and_apply_to_the_sft_config():
    point = (3, 0, 1, 1)
    x = SPACE.encode(point)
    assert x.sum() == 4 and SPACE.decode(x) == point and SPACE.n_variables == 11 and SPACE.n_points == 48
    cfg = SPACE.apply(SFTStageConfig(trainer={"max_steps": 5}), point)
    assert cfg.trainer == {"max_steps": 5, "learning_rate": 1e-2} and cfg.lora.r == 4 and cfg.lora.alpha == 32
    with pytest.raises(ValueError, match="lora.r = 5 is not one of its choices"):
        SPACE.point_of({**SPACE.values(point), "lora.r": 5})


def test_a_dimension_that_is_not_an_sft_setting_is_refused():
    with pytest.raises(ValueError, match="'optimizer' is not an sft setting"):
        SearchSpace(dimensions={"optimizer.lr": [1, 2]})
    with pytest.raises(ValueError, match="at least two values"):
        SearchSpace(dimensions={"lora.r": [8]})


def test_fm_fitted_on_synthetic_trials_recovers_the_planted_optimum():
    points = SPACE.all_points()
    rng = np.random.default_rng(0)
    seen = [points[i] for i in rng.choice(len(points), 24, replace=False) if points[i] != PLANTED]
    fm = fit_fm(np.array([SPACE.encode(p) for p in seen]), np.array([planted_loss(p) for p in seen]), factors=4, seed=0)
    surrogate = fm.qubo(SPACE.groups())
    qubo = surrogate.with_one_hot_penalty(one_hot_penalty_weight(surrogate))
    solution = make_solver("exact").solve(qubo)
    assert SPACE.decode(solution.best) == PLANTED  # never seen in training, found by minimising the QUBO
    assert fm.predict(SPACE.encode(PLANTED))[0] == pytest.approx(planted_loss(PLANTED), abs=0.1)


@pytest.mark.parametrize("method", ["fmqa", "random", "tpe"])
def test_methods_never_repeat_a_trial_and_fmqa_says_what_it_expects(method):
    proposer = make_method(method, SPACE, FMQAConfig(initial_random=4, epochs=300), log=lambda _: None)
    history = []
    for i in range(10):
        proposal = proposer.propose(history, np.random.default_rng([0, i]))
        assert proposal.point not in [p for p, _ in history]
        history.append((proposal.point, planted_loss(proposal.point)))
    if method == "fmqa":
        assert proposal.expected_loss is not None and proposal.info["solver"] == "annealing"


def test_fmqa_reaches_the_planted_optimum_within_a_small_budget():
    proposer = make_method("fmqa", SPACE, FMQAConfig(initial_random=4), log=lambda _: None)
    history = []
    for i in range(14):
        point = proposer.propose(history, np.random.default_rng([1, i])).point
        history.append((point, planted_loss(point)))
    assert PLANTED in [p for p, _ in history]  # 14 of 48 settings


def test_fmqa_with_qaoa_proposes_from_the_surrogate():
    # FM QUBOs once broke Aer's parameter binding; the QAOA solver must take any of them
    proposer = make_method("fmqa", SPACE, FMQAConfig(initial_random=3, epochs=300, solvers=["qaoa"],
                                                     solver_options={"qaoa": {"reps": 1, "maxiter": 40}}), log=lambda _: None)
    history = [(p, planted_loss(p)) for p in [(0, 0, 0, 0), (3, 2, 1, 1), (1, 1, 0, 1)]]
    proposal = proposer.propose(history, np.random.default_rng(0))
    assert proposal.info["solver"] == "qaoa" and proposal.point not in [p for p, _ in history]
