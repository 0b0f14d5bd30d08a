"""Guided tuning: before each trial the flow run pauses with the proposal; a person accepts, edits or stops.

The Prefect UI shows the proposal (with the surrogate's expected loss and the trials so far) and a
typed form pre-filled with the proposed values. Edited values must be choices of the search space;
an invalid answer is asked again with the reason. Nothing is written while the run is paused, so a
cancelled run leaves only finished trials behind, and a re-run continues from its journal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Literal

from pydantic import Field
from prefect.input import RunInput

from tasks.common.reporting import say
from tasks.tuning_agent.search_methods import Proposal
from tasks.tuning_agent.search_space import SearchSpace
from tasks.tuning_agent.tune_hyperparameters import Decision, TuneConfig


class TrialForm(RunInput):
    """The form a paused tuning run shows before a trial."""

    action: Literal["accept", "edit", "stop"] = Field("accept", description="accept: run the proposal; edit: run the "
                                                      "values below instead; stop: end the search and keep the best trial")
    values: dict = Field(default_factory=dict, description="Hyperparameters of the trial (pre-filled with the proposal); "
                                                           "for 'edit', change values to other choices of the search space")
    note: str = Field("", description="Why (kept in the journal)")


def proposal_markdown(proposal: Proposal, space: SearchSpace, journal: list[dict], method: str) -> str:
    """What the person reads: the proposal, why, the choices per hyperparameter and the trials so far."""
    expected = f"{proposal.expected_loss:.4f}" if proposal.expected_loss is not None else "n/a (no surrogate yet)"
    lines = [f"## {method}: trial {len(journal) + 1}", "",
             f"**Proposal**: `{space.label(proposal.point)}`  ", f"**Expected eval loss** (surrogate): {expected}  ",
             f"**Proposer**: {json.dumps(proposal.info, default=str) if proposal.info else method}", "",
             "| hyperparameter | proposed | choices |", "|---|---|---|"]
    for name, value in space.values(proposal.point).items():
        lines.append(f"| `{name}` | `{json.dumps(value)}` | {', '.join(f'`{json.dumps(c)}`' for c in space.dimensions[name])} |")
    if journal:
        best = min(e["best_eval_loss"] for e in journal)
        lines += ["", f"**Trials so far** (best {best:.4f}):", "", "| # | setting | eval loss | decision |", "|---|---|---|---|"]
        lines += [f"| {e['index'] + 1} | `{e['label']}` | {e['best_eval_loss']:.4f}{' (stopped early)' if e['stopped_early'] else ''} "
                  f"| {e['decision']} |" for e in journal]
    return "\n".join(lines)


def ask_in_ui(cfg: TuneConfig):
    """An ``ask`` for ``tune``: pause the flow run until a person answers validly about the proposal."""

    def ask(proposal: Proposal, space: SearchSpace, journal: list[dict], method: str) -> Decision:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.flow_runs import pause_flow_run

        if FlowRunContext.get() is None or TaskRunContext.get() is not None:
            raise RuntimeError("tune.mode 'guided' pauses a flow run: run the tuning-agent flow (python -m flows.tuning_agent "
                               "or its deployment), not the search function on its own")
        proposed = space.values(proposal.point)
        error = ""
        for attempt in itertools.count():
            fix = f"**Please fix:** {error}\n\n" if error else ""
            form = TrialForm.with_initial_data(description=fix + proposal_markdown(proposal, space, journal, method),
                                               values=proposed)
            say(f"[tune] waiting in the Prefect UI for a decision on {method} trial {len(journal) + 1} "
                f"({space.label(proposal.point)})")
            answer = pause_flow_run(wait_for_input=form, timeout=cfg.guide_timeout_s, poll_interval=cfg.guide_poll_interval_s,
                                    key=_pause_key(method, len(journal), proposed, attempt))
            if answer.action != "edit":
                return Decision(action=answer.action, note=answer.note)
            try:
                space.point_of(answer.values)
                return Decision(action="edit", values=answer.values, note=answer.note)
            except ValueError as e:
                error = str(e)

    return ask


def _pause_key(method: str, index: int, values: dict, attempt: int) -> str:
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"tune-{method}-{index}-{digest}-{attempt}"
