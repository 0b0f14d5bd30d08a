"""FMQA (annealing), FMQA (QAOA), random search and Optuna TPE on the same budget and objective, over several seeds.

The objective is the tuning agent's own: best eval loss of a short LoRA SFT trial on a project's mix
(ben-lab by default, embedded model, CPU), with early stopping off so every method sees the same
numbers. Trials are cached by their settings, so the grid is trained at most once: ``--grid`` trains
every point first, which also gives the true optimum and a target (the loss at ``--target-quantile``
of the grid). Then each method runs ``--trials`` proposals per seed against the cached objective.

Prints, per method: trials needed to reach the target (mean ± std over seeds, and how many seeds
reached it within the budget) and best loss found (mean ± std); writes JSON + a best-so-far plot.

    python bench/tuning_search.py --grid --seeds 5 --trials 10          # ~20 min to train the 32-point grid once
    python bench/tuning_search.py --methods fmqa-annealing random --seeds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = {"fmqa-annealing": ("fmqa", ["annealing", "exact"]), "fmqa-qaoa": ("fmqa", ["qaoa", "exact"]),
           "fmqa-exact": ("fmqa", ["exact"]), "random": ("random", None), "tpe": ("tpe", None)}


class Objective:
    """Eval loss of an SFT trial per point, trained once and then read from the trial cache."""

    def __init__(self, cfg, sft, mix: Path, trials_dir: Path) -> None:
        self.cfg, self.sft, self.mix, self.trials_dir = cfg, sft, mix, trials_dir
        self.losses: dict[tuple, float] = {}
        self.trained_seconds = 0.0

    def __call__(self, point: tuple) -> float:
        if point not in self.losses:
            from tasks.tuning_agent.search_space import point_id
            from tasks.tuning_agent.sft_trial import TrialSpec, read_trial, run_trial

            space = self.cfg.tune.space
            values = space.values(point)
            spec = TrialSpec(sft=space.apply(self.sft, point), trial=self.cfg.tune.trial, values=values)
            trial = read_trial(run_trial(spec, self.mix, self.trials_dir / point_id(values)))
            self.losses[point] = trial["best_eval_loss"]
            self.trained_seconds += trial["train_seconds"]
        return self.losses[point]


def search(method: str, objective: Objective, space, fmqa_cfg, trials: int, seed: int) -> tuple[list[float], float]:
    """One run of ``method``: losses in trial order, and seconds spent proposing."""
    from tasks.tuning_agent.search_methods import make_method

    name, solvers = METHODS[method]
    cfg = fmqa_cfg.model_copy(update={"solvers": solvers}) if solvers else fmqa_cfg
    proposer = make_method(name, space, cfg, log=lambda _: None)
    history, proposing = [], 0.0
    for i in range(trials):
        started = time.perf_counter()
        point = proposer.propose(history, np.random.default_rng([seed, i])).point
        proposing += time.perf_counter() - started
        history.append((point, objective(point)))
    return [loss for _, loss in history], proposing


def main(argv: list[str] | None = None) -> int:
    from flows.config import load_config
    from flows.runner import StageTimer
    from flows.tuning_agent import PROJECTS, TuningAgentConfig
    from tasks.tuning_agent.tune_hyperparameters import best_so_far, plot_best_so_far, trials_to_target

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["fmqa-annealing", "fmqa-qaoa", "random", "tpe"], choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=10, help="budget per method and seed")
    p.add_argument("--grid", action="store_true", help="train every point of the space first (true optimum + target)")
    p.add_argument("--target", type=float, help="target eval loss (default: the --target-quantile of the grid)")
    p.add_argument("--target-quantile", type=float, default=0.1)
    p.add_argument("--profile", default="local")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="tuning-agent config override")
    args = p.parse_args(argv)

    cfg = load_config(TuningAgentConfig, "tuning-agent", profile=args.profile, overrides=args.overrides,
                      extra={"data_dir": str(args.data_dir)})
    cfg.tune.trial = cfg.tune.trial.model_copy(update={"early_stop_margin": None})
    project_model, data_stages = PROJECTS[cfg.project]
    pcfg = load_config(project_model, cfg.project, profile=args.profile, overrides=cfg.project_overrides,
                       extra={"data_dir": str(args.data_dir)})
    mix = data_stages(pcfg, pcfg.project_root(cfg.project), StageTimer())
    space = cfg.tune.space
    out = cfg.project_root("tuning-agent") / "bench"
    objective = Objective(cfg, pcfg.sft, mix, out / "trials")
    print(f"space: {space.n_points} settings, {space.n_variables} binary variables; trial: {cfg.tune.trial.steps} steps, "
          f"eval every {cfg.tune.trial.eval_every} on {cfg.tune.trial.max_eval_records} records ({cfg.project} mix)")

    grid = None
    if args.grid:
        for i, point in enumerate(space.all_points(), 1):
            loss = objective(point)
            print(f"  grid {i}/{space.n_points}: {space.label(point)} → {loss:.4f}", flush=True)
        grid = sorted(objective.losses.values())
    target = args.target if args.target is not None else (float(np.quantile(grid, args.target_quantile)) if grid else None)

    results = {}
    for method in args.methods:
        runs = [search(method, objective, space, cfg.tune.fmqa, args.trials, seed) for seed in range(args.seeds)]
        curves = np.array([best_so_far(losses) for losses, _ in runs])
        reached = [trials_to_target(losses, target) for losses, _ in runs]
        hits = [r for r in reached if r is not None]
        to_best = [trials_to_target(losses, grid[0]) for losses, _ in runs] if grid else []
        best_hits = [r for r in to_best if r is not None]
        results[method] = {
            "trials_to_target": reached, "reached": f"{len(hits)}/{len(runs)}",
            "trials_to_target_mean": float(np.mean(hits)) if hits else None,
            "trials_to_target_std": float(np.std(hits)) if hits else None,
            "found_grid_best": f"{len(best_hits)}/{len(runs)}" if grid else None,
            "trials_to_grid_best_mean": float(np.mean(best_hits)) if best_hits else None,
            "trials_to_grid_best_std": float(np.std(best_hits)) if best_hits else None,
            "best_loss_mean": float(curves[:, -1].mean()), "best_loss_std": float(curves[:, -1].std()),
            "propose_seconds_mean": float(np.mean([s for _, s in runs])),
            "best_so_far_mean": curves.mean(0).tolist(), "best_so_far_min": curves.min(0).tolist(),
            "best_so_far_max": curves.max(0).tolist(),
        }
    print(f"\ntarget eval loss {target if target is None else round(target, 4)}"
          + (f" (grid: best {grid[0]:.4f}, median {np.median(grid):.4f}, worst {grid[-1]:.4f})" if grid else ""))
    print(f"{'method':16} {'reached':>8} {'trials to target':>18} {'found best':>10} {'trials to best':>16} "
          f"{'best loss':>17} {'propose s/run':>14}")
    for method, r in results.items():
        print(f"{method:16} {r['reached']:>8} {_spread(r, 'trials_to_target'):>18} {r['found_grid_best'] or '—':>10} "
              f"{_spread(r, 'trials_to_grid_best'):>16} {r['best_loss_mean']:>9.4f} ± {r['best_loss_std']:.4f} "
              f"{r['propose_seconds_mean']:>14.1f}")
    out.mkdir(parents=True, exist_ok=True)
    report = {"target": target, "grid": grid, "seeds": args.seeds, "trials": args.trials, "space": space.dimensions,
              "trial": cfg.tune.trial.model_dump(), "settings_trained": len(objective.losses),
              "train_seconds": round(objective.trained_seconds, 1), "methods": results}
    (out / "tuning_search.json").write_text(json.dumps(report, indent=2))
    plot_best_so_far({m: r["best_so_far_mean"] for m, r in results.items()}, target, out / "tuning_search.png",
                     spread={m: (r["best_so_far_min"], r["best_so_far_max"]) for m, r in results.items()})
    print(f"\nwrote {out / 'tuning_search.json'} and {out / 'tuning_search.png'}")
    return 0


def _spread(r: dict, key: str) -> str:
    mean = r.get(f"{key}_mean")
    return "—" if mean is None else f"{mean:.1f} ± {r[f'{key}_std']:.1f}"


if __name__ == "__main__":
    sys.exit(main())
