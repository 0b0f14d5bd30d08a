"""Stage ``install``: Modelfile + Ollama API calls, against a loopback HTTP server speaking Ollama's endpoints."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.models.ollama import OllamaError
from tasks.training.install_ollama import InstallConfig, ollama_template, run
from tasks.common.stage import read_manifest, write_json_atomic

ROOT = Path(__file__).resolve().parents[2]


class FakeOllama:
    """Ollama's blob/create/generate/tags endpoints on loopback; records every request.

    ``script[(method, path_prefix)]`` is a list of status codes answered (with an error body)
    before the endpoint starts behaving, to exercise retries.
    """

    def __init__(self, port: int = 0):
        self.requests: list[dict] = []
        self.blobs: dict[str, int] = {}
        self.models: dict[str, dict] = {}
        self.script: dict[tuple[str, str], list[int]] = {}
        self.chat_replies: list[str] = []  # answers of /api/chat, in order
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _reply(self, status: int, payload: dict | None = None) -> None:
                body = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body() if self.command == "POST" else b""
                is_blob = self.path.startswith("/api/blobs/")
                fake.requests.append({"method": self.command, "path": self.path,
                                      "json": None if is_blob or not body else json.loads(body),
                                      "bytes": len(body)})
                for (method, prefix), statuses in fake.script.items():
                    if self.command == method and self.path.startswith(prefix) and statuses:
                        status = statuses.pop(0)
                        return self._reply(status, {"error": f"scripted failure {status}"})
                route = (self.command, self.path.split("/sha256:")[0] if is_blob else self.path)
                if route == ("GET", "/api/tags"):
                    return self._reply(200, {"models": [{"name": n} for n in fake.models]})
                if route == ("HEAD", "/api/blobs"):
                    return self._reply(200 if self.path.split("/")[-1] in fake.blobs else 404)
                if route == ("POST", "/api/blobs"):
                    digest = self.path.split("/")[-1]
                    if digest != "sha256:" + hashlib.sha256(body).hexdigest():
                        return self._reply(400, {"error": "digest mismatch"})
                    fake.blobs[digest] = len(body)
                    return self._reply(201)
                if route == ("POST", "/api/create"):
                    req = json.loads(body)
                    for digest in [*req.get("files", {}).values(), *req.get("adapters", {}).values()]:
                        if digest not in fake.blobs:
                            return self._reply(400, {"error": f"unknown blob {digest}"})
                    fake.models[req["model"]] = req
                    return self._reply(200, {"status": "success"})
                if route == ("POST", "/api/generate"):
                    req = json.loads(body)
                    if req["model"] not in fake.models:
                        return self._reply(404, {"error": f"model '{req['model']}' not found"})
                    return self._reply(200, {"model": req["model"], "created_at": "2025-01-01T00:00:00Z",
                                             "response": "I help with lab experiments.", "done": True})
                if route == ("POST", "/api/chat"):
                    req = json.loads(body)
                    content = fake.chat_replies.pop(0) if fake.chat_replies else "No more scripted replies."
                    return self._reply(200, {"model": req["model"], "created_at": "2025-01-01T00:00:00Z",
                                             "message": {"role": "assistant", "content": content}, "done": True})
                return self._reply(404, {"error": f"no route {route}"})

            do_GET = do_POST = do_HEAD = _handle

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def calls(self, method: str, prefix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ollama():
    server = FakeOllama()
    yield server
    server.close()


@pytest.fixture(scope="module")
def smollm_template() -> str:
    """The chat template shipped in the embedded SmolLM2 GGUF."""
    from llama_cpp import Llama

    from adapters.models.base_models import embedded_gguf

    llm = Llama(str(embedded_gguf()), vocab_only=True, verbose=False)
    try:
        return llm.metadata["tokenizer.chat_template"]
    finally:
        llm.close()


@pytest.fixture
def export_dir(tmp_path, smollm_template) -> Path:
    """A finished export stage output; the GGUFs are small stand-in files (the server does not parse them)."""
    d = tmp_path / "export"
    d.mkdir()
    gguf = {"f16": "model-f16.gguf", "q8_0": "model-q8_0.gguf", "adapter": "adapter-f16.gguf", "base": "base-f16.gguf"}
    for i, name in enumerate(gguf.values()):
        (d / name).write_bytes(b"GGUF" + bytes([i]) * 50_000)
    (d / "chat_template.jinja").write_text(smollm_template)
    write_json_atomic(d / "manifest.json", {"stage": "export", "key": "k", "gguf": gguf, "chat_template": "chat_template.jinja",
                                            "tokens": {"bos": "<|im_start|>", "eos": "<|im_end|>"}})
    return d


def _cfg(host: str, **kw) -> InstallConfig:
    return InstallConfig(model_name="ben-lab", host=host, system="You are Ben's lab assistant.",
                         retry_backoff_s=0.01, **kw)


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_merged_mode_uploads_creates_and_checks(ollama, export_dir, tmp_path):
    out = run(_cfg(ollama.host), export_dir, tmp_path / "install")

    manifest = read_manifest(out)
    assert manifest["installed"] is True and manifest["reason"] is None
    assert manifest["blobs"] == {"model-q8_0.gguf": _sha(export_dir / "model-q8_0.gguf")}
    uploads = ollama.calls("POST", "/api/blobs/")
    assert [u["path"] for u in uploads] == [f"/api/blobs/{_sha(export_dir / 'model-q8_0.gguf')}"]
    assert uploads[0]["bytes"] == (export_dir / "model-q8_0.gguf").stat().st_size

    (create,) = ollama.calls("POST", "/api/create")
    body = create["json"]
    assert body["model"] == "ben-lab" and body["files"] == manifest["blobs"] and "adapters" not in body
    assert body["system"] == "You are Ben's lab assistant."
    assert body["parameters"] == {"stop": ["<|im_end|>", "<|im_start|>"], "temperature": 0.2, "top_p": 0.9}
    assert body["template"] == ollama_template((export_dir / "chat_template.jinja").read_text())
    assert "You are a helpful AI assistant named SmolLM" in body["template"]  # the template's default system turn

    (gen,) = ollama.calls("POST", "/api/generate")
    assert gen["json"]["model"] == "ben-lab" and gen["json"]["prompt"] == InstallConfig.model_fields["check_prompt"].default
    assert manifest["check"]["response"] == "I help with lab experiments."

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM {(export_dir / 'model-q8_0.gguf').resolve()}\n")
    assert f'TEMPLATE """{body["template"]}"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|im_start|>"' in modelfile
    assert 'SYSTEM """You are Ben\'s lab assistant."""' in modelfile and "ADAPTER" not in modelfile


def test_adapter_mode_sends_base_and_adapter(ollama, export_dir, tmp_path):
    out = run(_cfg(ollama.host, mode="adapter"), export_dir, tmp_path / "install")

    (create,) = ollama.calls("POST", "/api/create")
    assert create["json"]["files"] == {"base-f16.gguf": _sha(export_dir / "base-f16.gguf")}
    assert create["json"]["adapters"] == {"adapter-f16.gguf": _sha(export_dir / "adapter-f16.gguf")}
    modelfile = (out / "Modelfile").read_text().splitlines()
    assert modelfile[:2] == [f"FROM {(export_dir / 'base-f16.gguf').resolve()}",
                             f"ADAPTER {(export_dir / 'adapter-f16.gguf').resolve()}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_keeps_files_prints_command_and_retries_next_run(export_dir, tmp_path, capsys):
    port = _free_port()
    cfg = _cfg(f"http://127.0.0.1:{port}", retries=1)
    out = run(cfg, export_dir, tmp_path / "install")

    manifest = read_manifest(out)
    command = f"ollama create ben-lab -f {(tmp_path / 'install' / 'Modelfile').resolve()}"
    assert manifest["installed"] is False and "127.0.0.1" in manifest["reason"]
    assert manifest["command"] == command
    assert command in capsys.readouterr().out
    assert (out / "Modelfile").read_text().startswith("FROM ")
    assert all((export_dir / f).exists() for f in ("model-q8_0.gguf", "chat_template.jinja"))

    server = FakeOllama(port)  # the server comes up: the same config is not a cache hit
    try:
        run(cfg, export_dir, tmp_path / "install")
        assert read_manifest(out)["installed"] is True
        assert len(server.calls("POST", "/api/create")) == 1
    finally:
        server.close()


def test_5xx_is_retried_with_backoff(ollama, export_dir, tmp_path):
    ollama.script[("POST", "/api/create")] = [500, 503]
    out = run(_cfg(ollama.host), export_dir, tmp_path / "install")
    assert read_manifest(out)["installed"] is True
    assert len(ollama.calls("POST", "/api/create")) == 3


def test_4xx_fails_at_once_with_the_servers_message(ollama, export_dir, tmp_path):
    ollama.script[("POST", "/api/create")] = [400]
    with pytest.raises(OllamaError, match="scripted failure 400"):
        run(_cfg(ollama.host), export_dir, tmp_path / "install")
    assert len(ollama.calls("POST", "/api/create")) == 1
    assert not (tmp_path / "install").exists()


def test_bad_config_and_inputs_are_named(export_dir, tmp_path):
    with pytest.raises(ValidationError, match="model_name"):
        InstallConfig(model_name="ben lab")
    with pytest.raises(ValidationError, match="extra"):
        InstallConfig(model_name="ben-lab", temprature=0.1)
    with pytest.raises(ValueError, match="no merged GGUF of type 'q4_k'"):
        run(_cfg("http://127.0.0.1:9", quant="q4_k"), export_dir, tmp_path / "install")
    manifest = read_manifest(export_dir)
    del manifest["gguf"]["adapter"]
    write_json_atomic(export_dir / "manifest.json", manifest)
    with pytest.raises(ValueError, match="export_adapter was false"):
        run(_cfg("http://127.0.0.1:9", mode="adapter"), export_dir, tmp_path / "install")


def test_non_chatml_template_is_refused_with_a_hint():
    llama3 = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
              "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    with pytest.raises(ValueError, match="not ChatML.*set template:"):
        ollama_template(llama3)


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "tasks.training.install_ollama", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "model_name (required)" in proc.stdout and "--set" in proc.stdout
