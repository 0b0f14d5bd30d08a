"""Harvest lab experiments over HTTP into ``experiments.jsonl``.

Works against any Jarvis-compatible lab (the user's own, or labtune's reference lab, which is
started on loopback when no URL is given). Every planned experiment is harvested exactly once:
finished results are appended to a work log as they arrive, so an interrupted harvest resumes
where it stopped, and a retried request can never produce a second copy. A degenerate response (all
physics features zero or equal, or a repeat of another experiment's answer: ``tasks.ben_lab.lab_responses``)
is asked again with a fresh seed, the substitution recorded in the row; one that stays degenerate goes
to ``rejects.jsonl`` with its reason and never reaches training.

    python -m tasks.ben_lab.harvest_experiments --out data/ben_lab/harvest [--lab-url http://127.0.0.1:8000]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.lab.lab_client import LabClient, LabError, LabServerError
from tasks.ben_lab.lab_responses import physics_view, remember, screen
from tasks.common.reporting import StageProgress, counts_table, publish_table, say
from tasks.common.stage_cli import config_from_args, stage_parser
from tasks.common.stage import cached, prefect_cache_key, stage_key, stage_output

STAGE = "harvest"
PHASES = ("ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom")
Kind = Literal["phase", "tri", "discovery", "replay_drift"]
ENDPOINT = {"phase": "run_phase_experiment", "tri": "tri", "discovery": "discovery", "replay_drift": "replay_drift"}


class HarvestConfig(BaseModel):
    """Which experiments to run and how to talk to the lab."""

    model_config = ConfigDict(extra="forbid")
    lab_url: str | None = Field(None, description="Base URL of a Jarvis-compatible lab; None starts labtune's reference lab on loopback")
    phase_runs_per_type: int = Field(60, ge=0, description="run_phase_experiment calls per phase type")
    tri_runs: int = Field(60, ge=0, description="/tri calls, spread over the phase types")
    discovery_runs: int = Field(15, ge=0, description="/discovery calls")
    drift_runs: int = Field(40, ge=0, description="/replay_drift calls, spread over the phase types")
    system_sizes: list[int] = Field([16, 32, 64], min_length=1, description="System sizes cycled through (4-256)")
    depths: list[int] = Field([2, 4, 8], min_length=1, description="Circuit depths cycled through (1-32)")
    discovery_per_phase: list[int] = Field([5, 10], min_length=1, description="num_per_phase values cycled through for /discovery (5-100)")
    seed: int = Field(0, description="Base seed; experiment i uses seed + i")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds")
    retries: int = Field(4, ge=0, description="Retries per request on 5xx/timeouts (never on 4xx)")
    physics_features: list[int] | None = Field(
        list(range(13)), description="Entries of the feature vector that describe the physics (a Jarvis lab: 0-12; "
        "13-15 are wall-clock seconds, size and depth); TRI and drift are recomputed on them. None = every entry")
    degenerate_retries: int = Field(3, ge=0, description="Fresh-seed requests for an experiment whose response is "
                                    "degenerate (physics features all zero/equal, or a repeat of another's)")
    max_degenerate_share: float = Field(0.05, ge=0, le=1, description="Fail the stage when more of the plan than "
                                        "this stays degenerate after the fresh-seed requests")


class DegenerateLabError(LabError):
    """The lab kept answering with measurements that carry no physics."""


class PlannedExperiment(BaseModel):
    """One call to make; ``id`` is stable so a resumed harvest knows what is done."""

    id: str
    kind: Kind
    request: dict


def plan_experiments(cfg: HarvestConfig) -> list[PlannedExperiment]:
    """The deterministic list of experiments the config asks for."""
    sizes, depths = cfg.system_sizes, cfg.depths
    plan: list[PlannedExperiment] = []
    for p, phase in enumerate(PHASES):
        for i in range(cfg.phase_runs_per_type):
            bias = None if i % 2 == 0 else round(0.1 + 0.8 * ((i * 7) % 9) / 8, 3)
            req = {"phase_type": phase, "system_size": sizes[i % len(sizes)], "depth": depths[(i // len(sizes)) % len(depths)],
                   "seed": cfg.seed + 1000 * p + i, "bias": bias}
            plan.append(PlannedExperiment(id=f"phase-{phase}-{i:03d}", kind="phase", request=req))
    for i in range(cfg.tri_runs):
        req = {"phase_type": PHASES[i % 4], "system_size": sizes[(i // 4) % len(sizes)], "depth": depths[i % len(depths)],
               "bias": [0.6, 0.7, 0.8, 0.9][(i // 4) % 4], "seed": cfg.seed + 5000 + i}
        plan.append(PlannedExperiment(id=f"tri-{i:03d}", kind="tri", request=req))
    for i in range(cfg.discovery_runs):
        phases = list(PHASES) if i % 3 else list(PHASES[: 2 + i % 3])
        req = {"phases": phases, "num_per_phase": cfg.discovery_per_phase[i % len(cfg.discovery_per_phase)],
               "k": len(phases) if i % 2 == 0 else max(2, len(phases) - 1), "iterations": 10 + 5 * (i % 4)}
        plan.append(PlannedExperiment(id=f"discovery-{i:03d}", kind="discovery", request=req))
    for i in range(cfg.drift_runs):
        req = {"phase_type": PHASES[i % 4], "system_size": sizes[(i // 4) % len(sizes)], "base_depth": [2, 4, 6][i % 3],
               "seed": cfg.seed + 9000 + i, "depth_factors": [1, 2, 3] if i % 2 == 0 else [1, 2, 4]}
        plan.append(PlannedExperiment(id=f"drift-{i:03d}", kind="replay_drift", request=req))
    return plan


def _load_done(log: Path) -> dict[str, dict]:
    """Results already harvested by an interrupted run (a torn last line and rejected rows, which a re-run
    asks again, are ignored)."""
    done: dict[str, dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "rejected" not in row:
                done[row["id"]] = row
    return done


def reseeded(item: PlannedExperiment, rng: random.Random) -> PlannedExperiment:
    """The same experiment with a fresh seed (drawn per harvest: a lab that zeroes repeats has seen the old ones)."""
    if "seed" not in item.request:
        return item
    return item.model_copy(update={"request": {**item.request, "seed": rng.randrange(10**6, 2**31)}})


def _call(client: LabClient, item: PlannedExperiment) -> dict:
    response = getattr(client, ENDPOINT[item.kind])(**item.request)
    return {"id": item.id, "kind": item.kind, "endpoint": "/" + ENDPOINT[item.kind],
            "request": item.request, "response": response.model_dump(mode="json")}


def harvest(cfg: HarvestConfig, inputs: None, out_dir: Path) -> Path:
    """Run the plan against the lab and write ``experiments.jsonl`` (one row per planned experiment)."""
    out_dir = Path(out_dir)
    key = stage_key(harvest, cfg, inputs, out_dir)
    if cached(out_dir, key):
        return out_dir
    plan = plan_experiments(cfg)
    work_log = out_dir.with_name(f".{out_dir.name}.work-{key}.jsonl")
    done = _load_done(work_log)
    todo = [item for item in plan if item.id not in done]
    with stage_output(STAGE, out_dir, key, cfg, inputs) as out, _lab(cfg) as url:
        client = LabClient(url, timeout=cfg.timeout_s, retries=cfg.retries)
        health = client.health()
        say(f"[harvest] lab {url}: {health.status}; {len(done)} done earlier, {len(todo)} to run")
        seen: dict[tuple, str] = {}
        for row in done.values():
            remember(row, cfg.physics_features, seen)
        with open(work_log, "a") as log, StageProgress(f"harvest {len(todo)} experiments", len(todo)) as progress, \
                ThreadPoolExecutor(cfg.concurrency) as pool:
            screening = _Screening(cfg, seen, log)
            pending = {pool.submit(_call, client, item): (item, item) for item in todo}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        planned, asked = pending.pop(fut)
                        retry = screening.take(planned, asked, fut.result(), done)
                        if retry is not None:
                            pending[pool.submit(_call, client, retry)] = (planned, retry)
                        else:
                            progress.advance()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # what finished is in the work log for the re-run
                raise
        rejects = screening.rejects
        share = len(rejects) / max(1, len(plan))
        if share > cfg.max_degenerate_share:
            raise DegenerateLabError(
                f"the lab at {url} answered {screening.degenerate} of {screening.calls} requests with degenerate "
                f"measurements, and {len(rejects)} of {len(plan)} planned experiments ({share:.0%} > "
                f"harvest.max_degenerate_share {cfg.max_degenerate_share}) stayed degenerate after "
                f"{cfg.degenerate_retries} fresh seeds each (first: {rejects[0]['id']}: {rejects[0]['reason']}). "
                "A Jarvis lab answers a request it has already served in the same process with all-zero features: "
                "restart the lab server, or check harvest.physics_features against your lab's feature layout")
        rows = [done[item.id] for item in plan if item.id in done]
        with open(out.tmp / "experiments.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        with open(out.tmp / "rejects.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rejects)
        out.counts = {kind: sum(r["kind"] == kind for r in rows) for kind in ENDPOINT}
        out.counts.update(total=len(rows), degenerate_responses=screening.degenerate,
                          substituted=sum("substituted_for" in r for r in rows), rejected=len(rejects))
        out.metrics = {"retries": client.retries_used, "resumed_from_earlier_run": len(plan) - len(todo)}
        out.extra["lab"] = {"url": url if cfg.lab_url else "reference lab (loopback)", "health": health.model_dump(mode="json")}
    if screening.degenerate:
        say(f"[harvest] {screening.degenerate} degenerate response(s): {out.counts['substituted']} experiment(s) "
            f"re-run with a fresh seed, {len(rejects)} rejected (rejects.jsonl)")
    os.remove(work_log)
    publish_table("harvest", counts_table(out.counts, out.metrics), f"Experiments harvested from {url}")
    return out_dir


class _Screening:
    """Decides, response by response, whether a row is kept, asked again with a fresh seed, or rejected."""

    def __init__(self, cfg: HarvestConfig, seen: dict[tuple, str], log) -> None:
        self.cfg, self.seen, self.log = cfg, seen, log
        self.rng = random.Random()  # fresh seeds differ between harvests of the same plan
        self.attempts: dict[str, int] = {}
        self.first_reason: dict[str, str] = {}
        self.rejects: list[dict] = []
        self.calls = self.degenerate = 0

    def take(self, planned: PlannedExperiment, asked: PlannedExperiment, row: dict, done: dict) -> PlannedExperiment | None:
        """Keep ``row`` (into ``done`` and the work log) or return the request to send instead."""
        self.calls += 1
        reason = screen(row, self.cfg.physics_features, self.seen)
        if reason is None:
            if asked is not planned:
                row["substituted_for"] = {"request": planned.request, "reason": self.first_reason[planned.id]}
            row["physics"] = physics_view(row, self.cfg.physics_features)
            remember(row, self.cfg.physics_features, self.seen)
            self._log(row)
            done[row["id"]] = row
            return None
        self.degenerate += 1
        self.first_reason.setdefault(planned.id, reason)
        tries = self.attempts[planned.id] = self.attempts.get(planned.id, 0) + 1
        retry = reseeded(asked, self.rng)
        if tries <= self.cfg.degenerate_retries and retry is not asked:
            return retry
        reject = {"id": planned.id, "endpoint": row["endpoint"], "request": asked.request, "reason": reason,
                  "attempts": tries, "rejected": True}
        self.rejects.append(reject)
        self._log(reject)
        return None

    def _log(self, row: dict) -> None:
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()


@contextlib.contextmanager
def _lab(cfg: HarvestConfig):
    if cfg.lab_url:
        yield cfg.lab_url.rstrip("/")
        return
    from adapters.lab.lab_server import reference_lab

    say("[harvest] no lab URL configured: starting labtune's reference lab on loopback")
    with reference_lab() as url:
        yield url


def _lab_still_failing(task, task_run, state) -> bool:
    """Retry the whole stage only when the lab kept answering 5xx (it resumes from its work log); 4xx,
    bad responses and an unreachable lab fail at once with their message."""
    return isinstance(state.result(raise_on_failure=False), LabServerError)


@task(name=STAGE, cache_key_fn=prefect_cache_key, persist_result=True, retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_lab_still_failing)
def harvest_experiments(cfg: HarvestConfig, inputs: None, out_dir: Path) -> Path:
    """Prefect task: harvest the configured experiments from the lab."""
    return harvest(cfg, inputs, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m tasks.ben_lab.harvest_experiments", __doc__, HarvestConfig)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--lab-url", help="Jarvis-compatible lab URL (default: start the reference lab)")
    args = parser.parse_args(argv)
    cfg = config_from_args(HarvestConfig, args, parser, lab_url=args.lab_url)
    try:
        print(harvest(cfg, None, args.out))
    except LabError as e:  # the lab's answer or its absence: one line for the user, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
