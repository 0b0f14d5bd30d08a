"""Terminal chat with a trained lab model that can run lab experiments.

The model answers through Ollama when the flow installed it there, else through llama.cpp on the
exported GGUF. Lab experiments run two ways; their result is shown as a short table (numbers printed
as in the training answers) and that table, not the raw JSON, goes back to the model:
  * you type a shortcut:  /run phase_type=spt_cluster system_size=16   (/tri, /discovery, /drift too)
  * the model writes a one-line tool call:  CALL run_phase_experiment {"phase_type": "spt_cluster"}
Numbers in the model's answer that the conversation's lab results and your own turns do not contain
are flagged after it (``[check] ...``), and an answer that starts repeating itself is cut there.

    python -m flows.ben_lab chat [--lab-url URL] [--profile local]
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import yaml

from tasks.ben_lab.answer_checks import repetition_loop
from tasks.ben_lab.describe_experiments import fmt, grounding_numbers, unsupported_numbers

ENDPOINTS = {"run": "run_phase_experiment", "tri": "tri", "discovery": "discovery", "drift": "replay_drift"}
CALL = re.compile(r"^\s*CALL\s+(run_phase_experiment|tri|discovery|replay_drift)\s*(\{.*\})?\s*$", re.MULTILINE)
TOOL_HINT = ("You can run lab experiments. To run one, answer with a single line "
             'CALL <endpoint> {json params}, e.g. CALL run_phase_experiment {"phase_type": "spt_cluster", "system_size": 16}; '
             "endpoints: run_phase_experiment, tri, discovery, replay_drift. You will get the result back as a table.")
MAX_TOOL_ROUNDS = 2
# The longest training answer is 140 tokens (SmolLM2 tokenizer, a phase verdict with its reasons).
ANSWER_MAX_TOKENS = 160
# The number check applies while a lab result is among the last this many user turns.
RECENT_TURNS = 3
STOPPED = "[stopped: the answer repeated itself]"
NUMERIC = re.compile(r"-?\d+(?:\.\d+)?|none")
# The closing question of each endpoint's training question (tasks/ben_lab/describe_experiments.py).
QUESTIONS = {"run_phase_experiment": "What do the measurements say about the phase?",
             "tri": "How large is that TRI?",
             "discovery": "What did the clustering find?",
             "replay_drift": "Is this phase stable under deeper replays?"}
MEASURED = ("magnetization", "string_order", "correlation_length", "entropy_proxy", "randomness_score",
            "branch_count", "interfered_count")


class ChatModel(Protocol):
    def reply(self, messages: list[dict], max_tokens: int, stop_when: Callable[[str], bool] | None = None) -> str: ...


def parse_shortcut(line: str) -> tuple[str, dict] | None:
    """``/run phase_type=spt_cluster system_size=16`` → ("run_phase_experiment", {...}); None if not a shortcut."""
    parts = line.strip().split()
    if not parts or not parts[0].startswith("/") or parts[0][1:] not in ENDPOINTS:
        return None
    params = {}
    for item in parts[1:]:
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r} (e.g. /run phase_type=spt_cluster system_size=16)")
        k, v = item.split("=", 1)
        params[k] = yaml.safe_load(v)
    return ENDPOINTS[parts[0][1:]], params


def parse_tool_call(text: str) -> tuple[str, dict] | None:
    """The first ``CALL endpoint {json}`` line in a model reply, if any."""
    m = CALL.search(text)
    if not m:
        return None
    try:
        params = json.loads(m.group(2)) if m.group(2) else {}
    except json.JSONDecodeError:
        return None
    return (m.group(1), params) if isinstance(params, dict) else None


def lab_result_table(endpoint: str, result: dict) -> str:
    """The numbers of a lab result that matter, as a short aligned plain-text table; an error as one line."""
    if "error" in result:
        return f"{endpoint}: error: {' '.join(str(result['error']).split())}"
    return _TABLES[endpoint](result)


def lab_result_prompt(endpoint: str, result: dict) -> str:
    """What the model is given for a lab result: the table and the question its training asked about such a result."""
    if "error" in result:
        return f"The lab rejected {lab_result_table(endpoint, result)}. Correct the parameters, or answer without the lab."
    return f"I ran this lab experiment:\n{lab_result_table(endpoint, result)}\n{QUESTIONS[endpoint]}"


def ungrounded_numbers(answer: str, sources: list) -> list[str]:
    """Numbers quoted in ``answer`` that no source holds (printed as the describe stage prints them), once each."""
    return list(dict.fromkeys(unsupported_numbers(answer, grounding_numbers(*sources))))


@dataclass
class LabGrounding:
    """What a live answer may quote: this conversation's lab results (raw and as shown) and the user's turns."""

    sources: list = field(default_factory=list)
    turn: int = 0
    last_result_turn: int | None = None

    def user_turn(self, text: str) -> None:
        self.turn += 1
        self.sources.append(text)

    def lab_result(self, result: dict, table: str) -> None:
        if "error" not in result:
            self.sources += [result, table]
            self.last_result_turn = self.turn

    def unsupported(self, answer: str) -> list[str]:
        """Numbers of ``answer`` absent from the grounding; none when no lab result is in the recent context."""
        if self.last_result_turn is None or self.turn - self.last_result_turn >= RECENT_TURNS:
            return []
        return ungrounded_numbers(answer, self.sources)


def chat_turn(model: ChatModel, run_lab: Callable[[str, dict], dict], history: list[dict], text: str,
              say: Callable[[str], None], max_tokens: int = ANSWER_MAX_TOKENS, grounding: LabGrounding | None = None) -> None:
    """One user turn: run a shortcut experiment or ask the model, executing its tool calls (bounded).

    ``grounding`` carries the conversation's lab results from turn to turn (a fresh one checks this turn only)."""
    grounding = grounding if grounding is not None else LabGrounding()
    grounding.user_turn(text)
    call = parse_shortcut(text)
    if call:
        result = _run_and_show(run_lab, call, say, grounding)
        if "error" in result:  # the user's own call failed: they see why, and there is nothing to ask the model
            return
        history.append({"role": "user", "content": lab_result_prompt(call[0], result)})
    else:
        history.append({"role": "user", "content": text})
    for _ in range(MAX_TOOL_ROUNDS + 1):
        reply = model.reply(history, max_tokens, stop_when=lambda t: repetition_loop(t)[0]).strip()
        looped, cut = repetition_loop(reply)
        answer = reply[:cut].rstrip()
        history.append({"role": "assistant", "content": answer})  # a loop left in the context invites another
        say(answer)
        if looped:
            say(STOPPED)
        call = parse_tool_call(answer)
        if not call:
            invented = grounding.unsupported(answer)
            if invented:
                say(f"[check] numbers not in the lab result: {', '.join(invented)}")
            return
        result = _run_and_show(run_lab, call, say, grounding)
        history.append({"role": "user", "content": lab_result_prompt(call[0], result)})


def _run_and_show(run_lab: Callable[[str, dict], dict], call: tuple[str, dict], say: Callable[[str], None],
                  grounding: LabGrounding) -> dict:
    result = run_lab(*call)
    table = lab_result_table(call[0], result)
    say(f"[lab] {table}")
    grounding.lab_result(result, table)
    return result


def _cell(x) -> str:
    if x is None:
        return "none"
    return x if isinstance(x, str) else fmt(x)


def _table(rows: list[list], header: list[str] | None = None, indent: str = "  ") -> list[str]:
    """Rows as aligned columns: numeric columns right-aligned, the others left-aligned."""
    cells = [[_cell(x) for x in row] for row in rows]
    body = ([header] if header else []) + cells
    widths = [max(len(r[i]) for r in body) for i in range(len(body[0]))]
    numeric = [all(NUMERIC.fullmatch(r[i]) for r in cells) for i in range(len(widths))]
    return [indent + "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()
            for r in body]


def _title(endpoint: str, pairs: list[tuple[str, object]]) -> str:
    return f"{endpoint}: " + " ".join(f"{k}={_cell(v)}" for k, v in pairs)


def _phase_table(result: dict) -> str:
    s, params = result["summary"], result.get("params") or {}
    title = _title("run_phase_experiment", [(k, s[k]) for k in ("phase_type", "system_size", "depth", "seed")]
                   + [("bias", params.get("bias"))])
    return "\n".join([title, *_table([[k, s[k]] for k in MEASURED])])


def _tri_table(result: dict) -> str:
    params = result.get("params") or {}
    bias = params.get("bias")
    reverse = params.get("reverse_bias", None if bias is None else 1 - bias)  # the lab runs the reverse at 1 - bias
    title = _title("tri", [(k, params.get(k)) for k in ("phase_type", "system_size", "depth", "seed")])
    return "\n".join([title, *_table([["bias", bias], ["reverse_bias", reverse], ["TRI", result["TRI"]]])])


def _discovery_table(result: dict) -> str:
    rows, dominant, total = [], 0, 0
    for i, stats in enumerate(result["cluster_label_stats"], 1):
        size = sum(stats.values())
        top = max(stats.values(), default=0)
        dominant, total = dominant + top, total + size
        counts = ", ".join(f"{phase} {n}" for phase, n in sorted(stats.items(), key=lambda kv: -kv[1]) if n)
        rows.append([i, size, top / size if size else None, counts or "empty"])
    title = (f"discovery: {fmt(result['num_samples'])} samples of {fmt(len(result['phases']))} phases in "
             f"{fmt(result['num_clusters'])} clusters, overall purity {_cell(dominant / total if total else None)}")
    return "\n".join([title, *_table(rows, header=["cluster", "size", "purity", "phases"])])


def _drift_table(result: dict) -> str:
    title = _title("replay_drift", [("phase_type", result["phase_type"]), ("base_depth", result["base_depth"])])
    return "\n".join([title, *_table([[r["depth"], r["drift"]] for r in result["runs"]], header=["depth", "drift"])])


_TABLES: dict[str, Callable[[dict], str]] = {"run_phase_experiment": _phase_table, "tri": _tri_table,
                                              "discovery": _discovery_table, "replay_drift": _drift_table}


class OllamaChat:
    """The installed Ollama model (its Modelfile carries the template and stop tokens)."""

    def __init__(self, host: str, model: str):
        from adapters.models.ollama import OllamaServer

        self.server, self.model = OllamaServer(host), model
        self.server.ping()

    def reply(self, messages: list[dict], max_tokens: int, stop_when: Callable[[str], bool] | None = None) -> str:
        # Not streamed, so ``stop_when`` cannot end generation early; chat_turn still cuts a loop it finds.
        return self.server.chat(self.model, messages, num_predict=max_tokens)


def open_model(summary: dict, host: str) -> tuple[ChatModel, str]:
    """Ollama when the flow installed the model there, else llama.cpp on the exported GGUF."""
    if summary.get("installed"):
        name = summary.get("ollama_model") or summary["project"]
        return OllamaChat(host, name), f"Ollama model {name} at {host}"
    gguf = summary.get("gguf", {})
    path = gguf.get("q8_0") or gguf.get("f16")
    if not path or not Path(path).exists():
        raise RuntimeError("no exported GGUF found: run the flow first (python -m flows.ben_lab)")
    from adapters.models.llama_cpp import GgufChat

    return GgufChat(Path(path)), f"llama.cpp on {path}"


def chat(project: str, config_model, args, stdin=sys.stdin, say: Callable[[str], None] = print) -> int:
    """The interactive loop behind ``python -m flows.<project> chat``."""
    from adapters.lab.lab_client import LabClient, LabError
    from adapters.lab.lab_server import reference_lab
    from flows.config import load_config

    extra = {"data_dir": str(args.data_dir)} if args.data_dir else {}
    cfg = load_config(config_model, project, config=args.config, profile=args.profile, overrides=args.overrides, extra=extra)
    summary_file = cfg.data_dir.resolve() / project.replace("-", "_") / "summary.json"
    if not summary_file.exists():
        say(f"error: {summary_file} not found; run `python -m flows.{project.replace('-', '_')}` first")
        return 2
    summary = json.loads(summary_file.read_text())
    model, where = open_model(summary, cfg.install.host)
    lab_url = args.lab_url or cfg.harvest.lab_url
    with ExitStack() as stack:
        lab: dict = {}

        def run_lab(endpoint: str, params: dict) -> dict:
            if "client" not in lab:  # start the reference lab only when an experiment is asked for
                url = lab_url or stack.enter_context(reference_lab())
                lab["client"] = LabClient(url)
            try:
                return getattr(lab["client"], endpoint)(**params).model_dump(mode="json")
            except (LabError, TypeError) as e:  # a bad call is shown as one line (and to the model, if it made it)
                return {"error": str(e)}

        say(f"labtune chat — {where}. Shortcuts: /run /tri /discovery /drift key=value ...; 'quit' to leave.")
        history = [{"role": "system", "content": f"{cfg.describe.system_prompt} {TOOL_HINT}"}]
        grounding = LabGrounding()
        for line in stdin:
            text = line.strip()
            if text in {"quit", "exit"}:
                break
            if text:
                try:
                    chat_turn(model, run_lab, history, text, say, grounding=grounding)
                except ValueError as e:
                    say(f"error: {e}")
    return 0
