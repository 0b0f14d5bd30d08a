"""llama.cpp through its own tools: the HF→GGUF converters (run as subprocesses) and llama-cpp-python.

The converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, with ``conversion/`` and
``gguf-py/``) come from a llama.cpp checkout: an explicit path, ``$LLAMA_CPP_DIR``, or
``<venv>/share/llama.cpp`` as written by ``python -m adapters.models.llama_cpp_source .venv/share/llama.cpp``
(``make setup`` runs it). ``llama_cpp`` is imported lazily so importing this module stays cheap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

ENV_VAR = "LLAMA_CPP_DIR"
HF_CONVERTER = "convert_hf_to_gguf.py"
LORA_CONVERTER = "convert_lora_to_gguf.py"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
FETCH_HINT = "python -m adapters.models.llama_cpp_source .venv/share/llama.cpp (or `make setup`)"


class LlamaCppError(RuntimeError):
    """llama.cpp is missing, a conversion failed, or a GGUF cannot be used."""


def default_llama_cpp_dir() -> Path:
    """Where ``make setup`` puts the converters: ``<sys.prefix>/share/llama.cpp``."""
    return Path(sys.prefix) / "share" / "llama.cpp"


def resolve_llama_cpp_dir(explicit: str | Path | None = None) -> Path:
    """The llama.cpp dir holding the converters: ``explicit`` → ``$LLAMA_CPP_DIR`` → ``<sys.prefix>/share/llama.cpp``."""
    if explicit:
        path, source = Path(explicit).expanduser(), "the configured llama_cpp_dir"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        path, source = default_llama_cpp_dir(), "the default location"
    if not (path / HF_CONVERTER).is_file():
        raise LlamaCppError(
            f"no llama.cpp converters at {path} ({source}): {HF_CONVERTER} is missing. "
            f"Get them with `{FETCH_HINT}`, or point llama_cpp_dir / ${ENV_VAR} at your own llama.cpp checkout."
        )
    return path.resolve()


def converter_env(llama_cpp_dir: Path) -> dict[str, str]:
    """Environment for the converters: llama.cpp's own ``gguf-py`` and ``conversion`` ahead of site-packages."""
    env = dict(os.environ)
    # The converter must write with the gguf-py of its own commit, not a pip-installed gguf.
    env.pop("NO_LOCAL_GGUF", None)
    paths = [str(llama_cpp_dir), str(llama_cpp_dir / "gguf-py")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run_converter(args: list[str], llama_cpp_dir: Path, what: str, outfile: Path, timeout: float | None) -> float:
    """Run one converter script; returns its wall time. A failure raises with the stderr tail."""
    outfile = Path(outfile)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    partial = outfile.with_name(f".{outfile.name}.partial")
    cmd = [sys.executable, *args, "--outfile", str(partial)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=llama_cpp_dir, env=converter_env(llama_cpp_dir),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise LlamaCppError(f"{what} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-25:])
        hint = ""
        if "ModuleNotFoundError" in tail:
            hint = "\n(a Python package the converter imports is missing from this environment; install it and retry)"
        raise LlamaCppError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n--- stderr tail ---\n{tail}{hint}")
    os.replace(partial, outfile)
    return seconds


def convert_hf(model_dir: Path, outfile: Path, outtype: str, *, llama_cpp_dir: Path,
               timeout: float | None = 3600) -> float:
    """Convert a HF transformers model dir to one GGUF with llama.cpp's ``convert_hf_to_gguf.py``; returns seconds."""
    if outtype not in OUTTYPES:
        raise LlamaCppError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    if not (Path(model_dir) / "config.json").is_file():
        raise LlamaCppError(f"{model_dir} is not a HF model dir (no config.json)")
    args = [HF_CONVERTER, str(Path(model_dir).resolve()), "--outtype", outtype]
    return _run_converter(args, llama_cpp_dir, f"GGUF conversion of {model_dir} ({outtype})", outfile, timeout)


def convert_lora(adapter_dir: Path, base_dir: Path, outfile: Path, *, outtype: str = "f16",
                 llama_cpp_dir: Path, timeout: float | None = 3600) -> float:
    """Convert a PEFT LoRA adapter dir to a GGUF adapter against ``base_dir``; returns seconds."""
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise LlamaCppError(f"{adapter_dir} is not a PEFT adapter dir (no adapter_config.json)")
    if not (Path(base_dir) / "config.json").is_file():
        raise LlamaCppError(f"LoRA base {base_dir} is not a local HF model dir (no config.json)")
    args = [LORA_CONVERTER, str(Path(adapter_dir).resolve()), "--base", str(Path(base_dir).resolve()),
            "--outtype", outtype]
    return _run_converter(args, llama_cpp_dir, f"LoRA GGUF conversion of {adapter_dir}", outfile, timeout)


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise LlamaCppError(f"llama-cpp-python is not importable ({e}); pip install llama-cpp-python") from None
    return llama_cpp


class GgufModel:
    """A GGUF loaded in llama-cpp-python (optionally with a LoRA GGUF on top), for greedy and logit checks.

    One thread by default: with two threads on two shared cores, llama.cpp's threads spin-wait on
    each other whenever another process holds a core (measured 150x slower). ``logits_all=True`` keeps
    the logits of every position (``next_token_logits``); it costs ``n_ctx × n_vocab`` floats.
    """

    def __init__(self, path: Path, *, n_ctx: int = 2048, n_threads: int = 1, lora_path: Path | None = None,
                 n_gpu_layers: int = 0, logits_all: bool = False):
        llama_cpp = _import_llama_cpp()
        self.path = Path(path)
        if not self.path.is_file():
            raise LlamaCppError(f"GGUF {self.path} does not exist")
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False,
                lora_path=str(lora_path) if lora_path else None, n_gpu_layers=n_gpu_layers, logits_all=logits_all,
            )
        except (ValueError, RuntimeError) as e:
            raise LlamaCppError(f"llama.cpp could not load {self.path}"
                                f"{f' with LoRA {lora_path}' if lora_path else ''}: {e}") from None
        self.n_ctx = n_ctx
        self.logits_all = logits_all

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF's key/value metadata as llama.cpp reports it (values are strings)."""
        return dict(self.llm.metadata)

    @property
    def chat_template(self) -> str | None:
        """The embedded chat template (``tokenizer.chat_template``), or None when the GGUF has none."""
        return self.llm.metadata.get("tokenizer.chat_template")

    def token_text(self, token_id: int) -> str:
        """The text of one (possibly special) token."""
        if token_id < 0:
            return ""
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    @property
    def bos_token(self) -> str:
        return self.token_text(self.llm.token_bos())

    @property
    def eos_token(self) -> str:
        return self.token_text(self.llm.token_eos())

    def tokenize(self, text: str) -> list[int]:
        """Token ids of an already-templated prompt (special tokens parsed, no extra BOS), as llama.cpp chat does."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def greedy(self, prompt_ids: Sequence[int], max_tokens: int, stop_ids: Iterable[int] = (),
               stop_when: Callable[[list[int]], bool] | None = None, check_every: int = 8) -> list[int]:
        """Greedy (argmax) continuation of ``prompt_ids``; includes the stop token when one is produced.

        ``stop_when(tokens so far)``, asked every ``check_every`` tokens, ends generation early (e.g. once a
        code block is closed).
        """
        if len(prompt_ids) + max_tokens > self.n_ctx:
            raise LlamaCppError(f"prompt of {len(prompt_ids)} tokens + {max_tokens} new ones exceeds n_ctx={self.n_ctx}")
        stops = set(stop_ids)
        out: list[int] = []
        self.llm.reset()
        for token in self.llm.generate(list(prompt_ids), temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                       repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if token in stops or len(out) >= max_tokens:
                break
            if stop_when is not None and len(out) % check_every == 0 and stop_when(out):
                break
        return out

    def next_token_logits(self, ids: Sequence[int]):
        """Logits ``[len(ids), n_vocab]`` (numpy float32) for the token after each prefix of ``ids`` (teacher forcing)."""
        if not self.logits_all:
            raise LlamaCppError(f"{self.path}: per-position logits need GgufModel(..., logits_all=True)")
        if not 0 < len(ids) <= self.n_ctx:
            raise LlamaCppError(f"{len(ids)} tokens do not fit n_ctx={self.n_ctx} (need 1 to n_ctx)")
        self.llm.reset()
        self.llm.eval(list(ids))
        return self.llm.scores[: len(ids)].copy()

    def close(self) -> None:
        """Free the model now (llama-cpp-python's own finaliser can fail at interpreter exit)."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None

    def __enter__(self) -> "GgufModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_chat_template(template: str, messages: list[dict], *, bos_token: str, eos_token: str,
                         add_generation_prompt: bool = True) -> str:
    """Render a Jinja chat template as llama-cpp-python does (sandboxed Jinja, HF's trim/lstrip settings)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token,
                                    add_generation_prompt=add_generation_prompt)
    return formatter(messages=messages).prompt


class GgufChat:
    """A chat model on a GGUF in llama.cpp: its own chat template, greedy replies up to EOS."""

    def __init__(self, path: Path, *, n_ctx: int = 4096, n_threads: int = 2, lora_path: Path | None = None,
                 n_gpu_layers: int = 0):
        self.model = GgufModel(path, n_ctx=n_ctx, n_threads=n_threads, lora_path=lora_path, n_gpu_layers=n_gpu_layers)
        self.template = self.model.chat_template
        self.tokens_generated = 0  # over every reply, for throughput figures
        if not self.template:
            self.model.close()
            raise LlamaCppError(f"{path} has no chat template (tokenizer.chat_template); re-export it with the export stage")

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """All tokens of the templated prompt (possibly more than fit in the context)."""
        prompt = render_chat_template(self.template, messages, bos_token=self.model.bos_token, eos_token=self.model.eos_token)
        return self.model.tokenize(prompt)

    def prompt_ids(self, messages: list[dict], max_tokens: int) -> list[int]:
        """The templated prompt's tokens, keeping the most recent ones that leave room for ``max_tokens``."""
        return self.prompt_tokens(messages)[-(self.model.n_ctx - max_tokens):]

    def reply(self, messages: list[dict], max_tokens: int, stop_when: Callable[[str], bool] | None = None) -> str:
        """The greedy reply, ended at EOS, ``max_tokens`` or once ``stop_when(text so far)`` holds."""
        eos = self.model.llm.token_eos()
        check = (lambda ids: stop_when(self.model.detokenize(ids))) if stop_when else None
        out = self.model.greedy(self.prompt_ids(messages, max_tokens), max_tokens, stop_ids=[eos], stop_when=check)
        self.tokens_generated += len(out)
        return self.model.detokenize([t for t in out if t != eos])

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> "GgufChat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
