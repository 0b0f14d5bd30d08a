"""Records that teach the lab itself, not one readout: what TRI and drift are, the four phases and their
signatures in this lab, how to design a large-TRI experiment, what discovery's clustering says.

Every number comes from this harvest (its calibration report and rows) and is checked like every other
answer. Each topic is asked in several phrasings; the user's own verification prompts (``EVAL_PROMPTS``)
are evaluation and are never among them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Callable

from tasks.ben_lab.calibrate_phases import has_scale
from tasks.ben_lab.lab_questions import pick

PHASES = ("ising_symmetry_breaking", "spt_cluster", "trivial_product", "pseudorandom")

# The user's verification prompts (their guide) and the facts a right answer states: each fact is a set of
# alternative phrasings, any one of which counts. "{best_phase}" is filled from the harvest.
EVAL_PROMPTS: dict[str, list[list[str]]] = {
    "Explain what TRI measures in a quantum phase experiment": [
        ["bias"], ["reverse", "1 - bias", "1-bias", "opposite"], ["distance", "l2", "differ"], ["feature"]],
    "What's the difference between Ising symmetry-breaking and SPT cluster phases?": [
        ["string order"], ["correlation length", "long-range", "zz order"], ["local order", "symmetry-broken",
                                                                             "symmetry breaking", "magnetization"],
        ["topolog", "symmetry-protected", "hidden"]],
    "How do I interpret high vs low replay drift?": [
        ["depth", "deeper"], ["stable"], ["sensitive", "changes", "change"], ["first run", "distance", "features"]],
    "Design an experiment to maximize TRI": [
        ["/tri", "tri endpoint", " tri "], ["{best_phase}"], ["bias"], ["system_size", "system size", "sites"]],
    "What are the four phase types in Ben Lab?": [[p] for p in PHASES],
}


def concept_records(calibration: dict, rows: list[dict], fmt: Callable[[float], str]) -> list[tuple[str, str, dict]]:
    """(question, answer, grounding) for every topic and phrasing this harvest can support."""
    typical = calibration.get("typical", {})
    out: list[tuple[str, str, dict]] = []
    tri_rows = [r for r in rows if r["kind"] == "tri" and "physics" in r]
    drift_rows = [r for r in rows if r["kind"] == "replay_drift" and "physics" in r]
    if tri_rows:
        out += _ask(TRI_QUESTIONS, *_tri_definition(calibration["tri"], fmt))
        out += _ask(DESIGN_QUESTIONS, *_tri_design(tri_rows, fmt))
    if drift_rows:
        out += _ask(DRIFT_QUESTIONS, *_drift_reading(calibration["final_drift"], drift_rows, fmt))
    if len(typical) == len(PHASES):
        out += _ask(PHASE_LIST_QUESTIONS, *_phase_list(typical, fmt))
        out += _ask(ISING_SPT_QUESTIONS, *_ising_vs_spt(typical, fmt))
    purity = _discovery_purity([r for r in rows if r["kind"] == "discovery"])
    if purity:
        out += _ask(DISCOVERY_QUESTIONS, *_discovery(purity, fmt))
    return out


TRI_QUESTIONS = ("What does the TRI endpoint compute?", "How is the time-reversal index defined in this lab?",
                 "What is TRI, and how is it calculated here?", "Tell me what a TRI value in ben-lab stands for.",
                 "What quantity does /tri return, and what does it tell me?", "What is the TRI in Ben Lab?",
                 "Describe the time-reversal index of a phase experiment.", "What does TRI tell me about a quantum phase?")
DESIGN_QUESTIONS = ("Which experiment gave the largest TRI in this harvest?",
                    "How should I set up a /tri run to get a large time-reversal asymmetry?",
                    "Which phase, bias and size make TRI largest in this lab?",
                    "I want the biggest TRI I can get. What should I run?",
                    "Plan a TRI experiment that gives a large value.", "How do I get a high TRI in Ben Lab?",
                    "Suggest settings for a /tri run with the largest possible asymmetry.")
DRIFT_QUESTIONS = ("What does replay drift measure?", "How should I read a replay drift result?",
                   "What does a large drift in /replay_drift mean, and what does a small one mean?",
                   "Is a small replay drift good or bad?", "Explain replay drift in Ben Lab.",
                   "What does it mean when the drift is high?", "How do I read low and high drift values?")
PHASE_LIST_QUESTIONS = ("Which phases can this lab prepare?", "List the phase types the lab supports.",
                        "What phase_type values does run_phase_experiment accept, and how do they look?",
                        "Name the phases of this lab and their signatures.", "Which phase types does Ben Lab have?",
                        "What phases can I prepare in ben-lab?", "Tell me the lab's phase types.")
ISING_SPT_QUESTIONS = ("How do I tell an Ising symmetry-broken run from an SPT cluster run?",
                       "Ising or SPT cluster: which measurement separates them?",
                       "Compare the ising_symmetry_breaking and spt_cluster phases.",
                       "What distinguishes the cluster SPT phase from the ordered Ising phase?",
                       "How is the SPT cluster phase different from the Ising phase?",
                       "Explain Ising symmetry breaking versus the SPT cluster state.",
                       "What sets the Ising and SPT phases apart in Ben Lab?")
DISCOVERY_QUESTIONS = ("What does the discovery clustering tell me about the phases?",
                       "How well does /discovery separate the phases?",
                       "Which phases does the unsupervised clustering keep apart, and which does it mix?",
                       "What did clustering find in Ben Lab?", "Explain what /discovery reports.")


# Every question is also asked twice more, in registers a user might type: three exposures of each answer
# without repeating a record (the mix drops exact copies), and a model that answers however it is asked.
ASIDES = ("Briefly: ", "For my lab notebook: ", "A new student asks: ", "In plain words, ", "Quick question. ",
          "Remind me: ")


def _ask(questions: tuple[str, ...], answer: str, ctx: dict) -> list[tuple[str, str, dict]]:
    asked = []
    for q in questions:
        first = pick(q, len(ASIDES))
        second = (first + 1 + pick(q[::-1], len(ASIDES) - 1)) % len(ASIDES)
        asked += [(q, answer, ctx)] + [(ASIDES[i] + q[0].lower() + q[1:], answer, ctx) for i in (first, second)]
    return asked


def _tri_definition(scale: dict, fmt) -> tuple[str, dict]:
    a = ("TRI, the time-reversal index, runs the same experiment twice with the same seed: once with the preparation "
         "tilted to bias b and once to the reverse bias 1 - b. It reports the L2 distance between the two feature "
         "vectors, so it measures how differently the state responds to the opposite tilt: 0 means the phase is "
         "symmetric under the reversal, a large value means the reversal leaves a clear mark.")
    if has_scale(scale):
        a += (f" In this lab TRI on the physics features has median {fmt(scale['q50'])}; half of the runs lie between "
              f"{fmt(scale['q25'])} and {fmt(scale['q75'])}.")
    return a, {"tri_scale": scale, "constants": [0, 1]}


def _tri_design(tri_rows: list[dict], fmt) -> tuple[str, dict]:
    best = max(tri_rows, key=lambda r: r["physics"]["tri"])
    means = _mean_by_phase(tri_rows, lambda r: r["physics"]["tri"])
    top = max(means, key=means.get)
    req = best["request"]
    a = (f"Use /tri on {top}: its TRI runs have the largest mean, {fmt(means[top])} on the physics features "
         f"(" + ", ".join(f"{p} {fmt(v)}" for p, v in sorted(means.items()) if p != top) + "). "
         f"The largest single TRI in this harvest, {fmt(best['physics']['tri'])}, came from {req['phase_type']} with "
         f"bias {fmt(req['bias'])}, system_size {fmt(req['system_size'])} and depth {fmt(req['depth'])}. A bias far from "
         f"{fmt(0.5)} makes the forward and reverse preparations most different.")
    return a, {"mean_tri_by_phase": means, "best": best["physics"], "request": req, "constants": [0.5]}


def _mean_by_phase(rows: list[dict], value: Callable[[dict], float]) -> dict[str, float]:
    by_phase = defaultdict(list)
    for r in rows:
        by_phase[r["request"]["phase_type"]].append(value(r))
    return {p: statistics.fmean(v) for p, v in by_phase.items()}


def _drift_reading(scale: dict, drift_rows: list[dict], fmt) -> tuple[str, dict]:
    means = _mean_by_phase(drift_rows, lambda r: r["physics"]["drift"][-1])
    steady, shaky = min(means, key=means.get), max(means, key=means.get)
    a = ("Replay drift replays one experiment at deeper and deeper circuits (base depth times each factor) and reports "
         "the distance of each replay's features from the first run. Low drift means the phase is stable: deeper "
         "evolution leaves its measurements unchanged. High drift means the phase is sensitive to depth: the state keeps "
         "changing as the circuit grows.")
    if has_scale(scale):
        a += (f" In this lab a final drift below {fmt(scale['q25'])} is low and above {fmt(scale['q75'])} is high. "
              f"The most stable phase here is {steady} (mean final drift {fmt(means[steady])}), the most sensitive "
              f"{shaky} ({fmt(means[shaky])}).")
    return a, {"drift_scale": scale, "mean_final_drift_by_phase": means}


def _phase_list(typical: dict, fmt) -> tuple[str, dict]:
    m = lambda p, k: fmt(typical[p][k]["median"])  # noqa: E731
    a = ("The lab prepares four phase types: "
         f"ising_symmetry_breaking, a symmetry-broken cat state with correlations across the chain (median correlation "
         f"length {m('ising_symmetry_breaking', 'correlation_length')}); "
         f"spt_cluster, the symmetry-protected topological cluster state with string order (median {m('spt_cluster', 'string_order')}); "
         f"trivial_product, an unentangled product state (median entanglement {m('trivial_product', 'entropy_proxy')}); "
         f"and pseudorandom, a scrambled state of random gates (median randomness score {m('pseudorandom', 'randomness_score')}).")
    return a, {"typical": typical}


def _ising_vs_spt(typical: dict, fmt) -> tuple[str, dict]:
    m = lambda p, k: fmt(typical[p][k]["median"])  # noqa: E731
    a = ("The Ising symmetry-breaking phase has a local order parameter: long-range ZZ order, so its correlation length "
         f"spans the chain (median {m('ising_symmetry_breaking', 'correlation_length')} here) while its string order stays "
         f"near zero ({m('ising_symmetry_breaking', 'string_order')}). The SPT cluster phase has no local order parameter "
         "and is symmetry-protected topological: its order is hidden in the non-local string order "
         f"(median {m('spt_cluster', 'string_order')}), with a short correlation length "
         f"({m('spt_cluster', 'correlation_length')}). String order separates them.")
    return a, {"typical": typical}


def _discovery_purity(rows: list[dict]) -> dict[str, float]:
    """Per phase: the share of its runs that landed in clusters where that phase is the majority."""
    kept, total = defaultdict(int), defaultdict(int)
    for r in rows:
        for stats in r["response"]["cluster_label_stats"]:
            if not stats:
                continue
            top = max(stats, key=stats.get)
            for phase, n in stats.items():
                total[phase] += n
                kept[phase] += n if phase == top else 0
    return {p: kept[p] / total[p] for p in sorted(total) if total[p]}


def _discovery(purity: dict[str, float], fmt) -> tuple[str, dict]:
    clean = [p for p, v in purity.items() if v >= 0.9]
    mixed = [p for p, v in purity.items() if v < 0.9]
    a = ("/discovery runs k-means on the feature vectors of runs from several phases and reports how many runs of each "
         "phase landed in each cluster. The share of a phase's runs that sit in clusters where it is the majority: "
         + ", ".join(f"{p} {fmt(v)}" for p, v in purity.items()) + ". ")
    a += (f"{', '.join(clean)} separate cleanly" if clean else "No phase separates cleanly")
    a += (f"; {', '.join(mixed)} {'shares' if len(mixed) == 1 else 'share'} clusters with other phases." if mixed else ".")
    return a, {"purity": purity}
