"""Stage ``install``: the exported GGUF → an Ollama model, with the training chat template.

    python -m tasks.training.install_ollama EXPORT_DIR --out OUT_DIR --set model_name=ben-lab [--set mode=adapter]

Writes a Modelfile (FROM the merged GGUF, or FROM base + ADAPTER the LoRA GGUF; a TEMPLATE in
Ollama's Go syntax that renders like the training ChatML template; stop tokens, sampling
parameters, SYSTEM). When an Ollama server answers at ``host`` the model is created through the
official client (blobs + ``/api/create``) and checked with one short generation. Otherwise the
Modelfile is kept, the exact ``ollama create`` command is printed and the manifest says
``installed: false`` with the reason; the next run tries again (no cache hit on an uninstalled output).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from adapters.models.llama_cpp import render_chat_template
from adapters.models.ollama import CHATML_STOPS, OllamaServer, OllamaUnavailable, chatml_template, default_host, modelfile_text
from tasks.common.reporting import counts_table, publish_table, say
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser
from tasks.common.stage import cached, prefect_cache_key, read_manifest, stage_key, stage_output

STAGE = "install"
MODELFILE = "Modelfile"
RAW_TEXT_FIELDS = ("model_name", "host", "system", "template", "check_prompt")  # --set takes these verbatim


class InstallConfig(BaseModel):
    """Which GGUF becomes which Ollama model, and how it is prompted."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?(:[A-Za-z0-9._-]+)?$",
                            description="Ollama model name, e.g. ben-lab or ben-lab:v2")
    host: str = Field(default_factory=default_host, description="Ollama server; default $OLLAMA_HOST or http://127.0.0.1:11434")
    mode: Literal["merged", "adapter"] = Field(
        "merged", description="merged = FROM the merged GGUF; adapter = FROM base-f16.gguf + ADAPTER adapter-f16.gguf")
    quant: str = Field("q8_0", description="which merged GGUF (export outtype) mode=merged installs")
    system: str | None = Field(None, description="SYSTEM prompt; unset = the chat template's own default system turn")
    temperature: float = Field(0.2, ge=0, description="PARAMETER temperature")
    top_p: float = Field(0.9, gt=0, le=1, description="PARAMETER top_p")
    num_ctx: int | None = Field(None, ge=64, description="PARAMETER num_ctx; unset = Ollama's default")
    template: str | None = Field(None, description="Ollama Go TEMPLATE to use instead of the one derived from the "
                                 "(ChatML) training chat template")
    check_prompt: str = Field("In one sentence, what can you help me with?",
                              description="prompt of the post-install generate check")
    check_tokens: int = Field(32, ge=1, description="num_predict of the post-install check")
    timeout_s: float = Field(600, gt=0, description="per-request time limit (blob upload, create), seconds")
    retries: int = Field(3, ge=0, description="retries of connection errors, timeouts and 5xx answers (4xx never)")
    retry_backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles on each retry")


def run(cfg: InstallConfig, inputs: Path | list[Path], out_dir: Path) -> Path:
    """Write the Modelfile for the export stage output ``inputs`` and install it when Ollama answers."""
    export_dir = _single_input(inputs)
    out_dir = Path(out_dir)
    key = stage_key(run, cfg, inputs, out_dir)
    done = cached(out_dir, key)
    if done and done.get("installed"):
        return out_dir
    model_file, adapter_file = _gguf_files(cfg, export_dir)
    template = cfg.template or ollama_template_for(export_dir)
    params: dict = {"stop": list(CHATML_STOPS), "temperature": cfg.temperature, "top_p": cfg.top_p}
    if cfg.num_ctx:
        params["num_ctx"] = cfg.num_ctx
    modelfile = out_dir.resolve() / MODELFILE
    command = f"ollama create {shlex.quote(cfg.model_name)} -f {shlex.quote(str(modelfile))}"

    with stage_output(STAGE, out_dir, key, cfg, [export_dir]) as out:
        (out.tmp / MODELFILE).write_text(modelfile_text(model=model_file, adapter=adapter_file, template=template,
                                                        system=cfg.system, parameters=params))
        result = _install(cfg, model_file, adapter_file, template, params)
        out.counts.update(installed=int(result["installed"]), blobs=len(result.get("blobs", {})))
        out.metrics.update(result.pop("timings", {}))
        out.extra.update(result, command=command, model=cfg.model_name, host=cfg.host, mode=cfg.mode,
                         modelfile=str(modelfile), gguf={"model": str(model_file),
                                                         "adapter": str(adapter_file) if adapter_file else None})
    if not result["installed"]:
        say(f"[labtune] Ollama model NOT installed: {result['reason']}\n"
              f"[labtune] the Modelfile is kept; install it yourself with:\n    {command}")
    publish_table(f"{STAGE}-summary", counts_table(out.counts, out.metrics) +
                  [{"name": "installed", "value": result["installed"]}, {"name": "command", "value": command}],
                  f"Ollama install of {cfg.model_name}")
    return out_dir


def _installed_cache_key(context, parameters: dict) -> str | None:
    """Prefect cache key that never reuses an output whose model was not installed."""
    key = prefect_cache_key(context, parameters)
    manifest = read_manifest(Path(parameters["out_dir"])) if key else None
    return key if manifest and manifest.get("installed") else None


@task(name=STAGE, cache_key_fn=_installed_cache_key, persist_result=True)
def install_ollama(cfg: InstallConfig, inputs: Path | list[Path], out_dir: Path) -> Path:
    """Prefect task: write the Modelfile and install the model into Ollama when a server answers."""
    return run(cfg, inputs, out_dir)


def _single_input(inputs) -> Path:
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(paths) != 1:
        raise ValueError(f"install takes one input (the export stage dir), got {len(paths)}: {paths}")
    return Path(paths[0])


def _gguf_files(cfg: InstallConfig, export_dir: Path) -> tuple[Path, Path | None]:
    """The GGUF(s) the chosen mode installs, checked to exist."""
    manifest = read_manifest(export_dir)
    if not manifest or "gguf" not in manifest:
        raise FileNotFoundError(f"{export_dir}: no finished export (manifest.json with 'gguf'); run the export stage first")
    gguf = manifest["gguf"]
    if cfg.mode == "adapter":
        if "adapter" not in gguf or "base" not in gguf:
            raise ValueError(f"{export_dir}: the export has no adapter/base GGUF (export_adapter was false); "
                             "use mode: merged or re-export with export_adapter: true")
        names = [gguf["base"], gguf["adapter"]]
    else:
        if cfg.quant not in gguf:
            have = ", ".join(k for k in gguf if k not in ("adapter", "base"))
            raise ValueError(f"{export_dir}: no merged GGUF of type {cfg.quant!r} (have: {have}); set quant to one of them")
        names = [gguf[cfg.quant]]
    paths = [(export_dir / n).resolve() for n in names]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p} is listed in {export_dir}/manifest.json but missing; re-run the export stage")
    return (paths[0], paths[1]) if len(paths) == 2 else (paths[0], None)


def ollama_template_for(export_dir: Path) -> str:
    """The Go TEMPLATE equivalent to the chat template the export stage found in the GGUF."""
    manifest = read_manifest(export_dir) or {}
    path = export_dir / (manifest.get("chat_template") or "chat_template.jinja")
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the GGUF had no chat template; set template: to an Ollama Go template")
    tokens = manifest.get("tokens") or {}
    return ollama_template(path.read_text(), bos_token=tokens.get("bos", ""), eos_token=tokens.get("eos", ""))


def ollama_template(chat_template: str, *, bos_token: str = "", eos_token: str = "") -> str:
    """Translate a ChatML Jinja chat template to Ollama's Go syntax; ValueError for any other template."""
    def render(msgs: list[dict]) -> str:
        return render_chat_template(chat_template, msgs, bos_token=bos_token, eos_token=eos_token,
                                    add_generation_prompt=True)

    def chatml(msgs: list[dict]) -> str:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"

    probe = [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"},
             {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    got = render(probe)
    if got != chatml(probe):
        raise ValueError(f"the chat template is not ChatML (a probe conversation renders as {got!r}); "
                         "set template: to an Ollama Go template for it")
    prefix = render(probe[1:]).removesuffix(chatml(probe[1:]))
    if not prefix:
        return chatml_template(None)
    m = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", prefix, re.S)
    if not m:
        raise ValueError(f"the chat template adds {prefix!r} before conversations without a system turn, which "
                         "is not a ChatML system turn; set template: to an Ollama Go template for it")
    return chatml_template(m.group(1))


def _install(cfg: InstallConfig, model_file: Path, adapter_file: Path | None, template: str, params: dict) -> dict:
    """Upload, create and check; ``installed: False`` with the reason when no server answers."""
    with OllamaServer(cfg.host, timeout=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.retry_backoff_s) as server:
        try:
            server.ping()
        except OllamaUnavailable as e:
            return {"installed": False, "reason": str(e), "blobs": {}, "check": None}
        started = time.perf_counter()
        files = {model_file.name: server.push_blob(model_file)}
        adapters = {adapter_file.name: server.push_blob(adapter_file)} if adapter_file else {}
        upload_s = time.perf_counter() - started
        started = time.perf_counter()
        server.create(cfg.model_name, files=files, adapters=adapters, template=template, system=cfg.system,
                      parameters=params)
        create_s = time.perf_counter() - started
        started = time.perf_counter()
        response = server.generate(cfg.model_name, cfg.check_prompt, num_predict=cfg.check_tokens)
        check_s = time.perf_counter() - started
    return {"installed": True, "reason": None, "blobs": {**files, **adapters},
            "check": {"prompt": cfg.check_prompt, "response": response},
            "timings": {"upload_s": round(upload_s, 2), "create_s": round(create_s, 2), "check_s": round(check_s, 2)}}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m tasks.training.install_ollama", __doc__, InstallConfig)
    parser.add_argument("export_dir", type=Path, help="export stage output (GGUF files + manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="output dir of this stage (the Modelfile goes here)")
    args = parser.parse_args(argv)
    cfg = config_from_args(InstallConfig, args, parser, raw_keys=RAW_TEXT_FIELDS)
    out = run(cfg, args.export_dir, args.out)
    manifest = read_manifest(out)
    print(json.dumps({k: manifest.get(k) for k in ("installed", "reason", "command", "model", "check")}, indent=2))
    return 0


if __name__ == "__main__":
    run_stage_cli(main)
