"""Terminal chat with a trained lab model that can run lab experiments.

The model answers through Ollama when the flow installed it there, else through llama.cpp on the
exported GGUF. Lab experiments run two ways, and their JSON result goes back into the chat:
  * you type a shortcut:  /run phase_type=spt_cluster system_size=16   (/tri, /discovery, /drift too)
  * the model writes a one-line tool call:  CALL run_phase_experiment {"phase_type": "spt_cluster"}

    python -m flows.ben_lab chat [--lab-url URL] [--profile local]
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Protocol

import yaml

ENDPOINTS = {"run": "run_phase_experiment", "tri": "tri", "discovery": "discovery", "drift": "replay_drift"}
CALL = re.compile(r"^\s*CALL\s+(run_phase_experiment|tri|discovery|replay_drift)\s*(\{.*\})?\s*$", re.MULTILINE)
TOOL_HINT = ("You can run lab experiments. To run one, answer with a single line "
             'CALL <endpoint> {json params}, e.g. CALL run_phase_experiment {"phase_type": "spt_cluster", "system_size": 16}; '
             "endpoints: run_phase_experiment, tri, discovery, replay_drift. You will get the JSON result back.")
MAX_TOOL_ROUNDS = 2


class ChatModel(Protocol):
    def reply(self, messages: list[dict], max_tokens: int) -> str: ...


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


def chat_turn(model: ChatModel, run_lab: Callable[[str, dict], dict], history: list[dict], text: str,
              say: Callable[[str], None], max_tokens: int = 200) -> None:
    """One user turn: run a shortcut experiment or ask the model, executing its tool calls (bounded)."""
    call = parse_shortcut(text)
    if call:
        result = run_lab(*call)
        say(f"[lab] {call[0]} → {json.dumps(result)}")
        history.append({"role": "user", "content": f"Lab result of {call[0]} {json.dumps(call[1])}: {json.dumps(result)}\n"
                                                   "What do these measurements show?"})
    else:
        history.append({"role": "user", "content": text})
    for _ in range(MAX_TOOL_ROUNDS + 1):
        answer = model.reply(history, max_tokens).strip()
        history.append({"role": "assistant", "content": answer})
        say(answer)
        call = parse_tool_call(answer)
        if not call:
            return
        result = run_lab(*call)
        say(f"[lab] {call[0]} → {json.dumps(result)}")
        history.append({"role": "user", "content": f"Result: {json.dumps(result)}"})


class OllamaChat:
    """The installed Ollama model (its Modelfile carries the template and stop tokens)."""

    def __init__(self, host: str, model: str):
        from adapters.ollama import OllamaServer

        self.server, self.model = OllamaServer(host), model
        self.server.ping()

    def reply(self, messages: list[dict], max_tokens: int) -> str:
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
    from adapters.llama_cpp import GgufChat

    return GgufChat(Path(path)), f"llama.cpp on {path}"


def chat(project: str, config_model, args, stdin=sys.stdin, say: Callable[[str], None] = print) -> int:
    """The interactive loop behind ``python -m flows.<project> chat``."""
    from adapters.lab_client import LabClient, LabError
    from adapters.lab_server import reference_lab
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
            except (LabError, TypeError) as e:  # a bad call is shown to the user and the model; the chat goes on
                return {"error": str(e)}

        say(f"labtune chat — {where}. Shortcuts: /run /tri /discovery /drift key=value ...; 'quit' to leave.")
        history = [{"role": "system", "content": f"{cfg.describe.system_prompt} {TOOL_HINT}"}]
        for line in stdin:
            text = line.strip()
            if text in {"quit", "exit"}:
                break
            if text:
                try:
                    chat_turn(model, run_lab, history, text, say)
                except ValueError as e:
                    say(f"error: {e}")
    return 0
