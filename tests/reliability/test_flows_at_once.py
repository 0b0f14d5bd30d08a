"""Two ben-lab runs and a lift-sys run at once on one data dir, against a Prefect API server, with a fake
Anthropic key in their environment (lift-sys's teacher is the offline oracle, so no request uses it).

Once they have finished: every stage output is intact and was computed once, nothing temporary is left,
each run says honestly that Ollama was not there, and the key appears nowhere in what was written:
the data dir, Prefect's result storage, the API server's database (which holds the run logs) and the
runs' own terminal output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.common.stage import _finished, read_manifest

ROOT = Path(__file__).resolve().parents[2]
KEY = f"sk-ant-api03-labtune-{uuid.uuid4().hex}-reliability"
SMALL = ["sft.trainer.max_steps=2", "sft.trainer.save_steps=2", "sft.trainer.per_device_train_batch_size=2",
         "export.outtypes=[f16]", "export.export_adapter=false", "export.parity_prompts=1", "export.parity_tokens=8",
         "install.quant=f16", "install.retries=0"]
BEN_LAB = ["harvest.phase_runs_per_type=2", "harvest.tri_runs=4", "harvest.discovery_runs=1", "harvest.drift_runs=4",
           "harvest.system_sizes=[6, 8]", "harvest.depths=[1, 2]", "harvest.discovery_per_phase=[5]",
           "mix.val_fraction=0.2", *SMALL, "evaluate.enabled=false"]
LIFT_SYS = ["prompts.per_category=12", "generate_ir.n=2", "sft.trainer.max_length=512", "evaluate.max_prompts=2",
            "evaluate.max_tokens=32", *SMALL]
RUNS = {"ben-lab-1": ("ben_lab", BEN_LAB), "ben-lab-2": ("ben_lab", BEN_LAB), "lift-sys": ("lift_sys", LIFT_SYS)}
LEFTOVER = re.compile(r"^\..+\.(tmp-\d+.*|old-\d+.*|lock)$")


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory):
    import prefect.settings

    root = tmp_path_factory.mktemp("at_once")
    data, home, logs = root / "data", root / "prefect_home", root / "logs"
    logs.mkdir()
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(),
           "PREFECT_HOME": str(home), "OLLAMA_HOST": "http://127.0.0.1:9"}
    env.pop("LABTUNE_DATA_DIR", None)
    procs = {}
    for name, (module, overrides) in RUNS.items():
        cmd = [sys.executable, "-m", f"flows.{module}", "--data-dir", str(data)]
        for item in overrides:
            cmd += ["--set", item]
        with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        for proc in procs.values():
            proc.wait(timeout=3600)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    db_url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    return SimpleNamespace(data=data, home=home, logs=logs, procs=procs, db=Path(db_url.split(":///", 1)[1]),
                           text={name: (logs / f"{name}.out").read_text() + (logs / f"{name}.err").read_text()
                                 for name in RUNS})


def _stage_dirs(project_root: Path) -> list[Path]:
    return sorted(p.parent for p in project_root.rglob("manifest.json"))


@pytest.mark.slow
def test_two_flows_at_once_on_one_data_dir_complete_with_intact_outputs_computed_once(runs):
    for name, proc in runs.procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{runs.text[name][-4000:]}"
    for project in ("ben_lab", "lift_sys"):
        dirs = _stage_dirs(runs.data / project)
        assert len(dirs) >= 6, dirs
        for stage_dir in dirs:
            assert _finished(stage_dir, read_manifest(stage_dir)["key"]), f"{stage_dir} is damaged"
    leftovers = [p for p in runs.data.rglob("*") if LEFTOVER.match(p.name)]
    assert leftovers == [], "temp dirs, trash or locks left behind"
    assert len(list((runs.data / "cache" / "models").iterdir())) == 1, "one copy of the base model, complete"

    ben = runs.text["ben-lab-1"] + runs.text["ben-lab-2"]
    assert len(re.findall(r"\[harvest\] lab http://127\.0\.0\.1:\d+: healthy", ben)) == 1, "harvested once"
    writers = {read_manifest(d)["written_by"]["pid"] for d in _stage_dirs(runs.data / "ben_lab")}
    assert writers <= {runs.procs["ben-lab-1"].pid, runs.procs["ben-lab-2"].pid}


@pytest.mark.slow
def test_each_flow_says_ollama_was_not_there_and_prints_the_install_command(runs):
    for name, (module, _) in RUNS.items():
        model = "ben-lab" if module == "ben_lab" else "lift-sys"
        modelfile = runs.data / module / "install" / "Modelfile"
        assert "installed in Ollama: False" in runs.text[name]
        assert f"ollama create {model} -f {modelfile}" in runs.text[name]
        assert modelfile.read_text().startswith("FROM ")
        assert read_manifest(modelfile.parent)["installed"] is False


@pytest.mark.slow
def test_a_fake_api_key_appears_nowhere_in_what_the_runs_wrote(runs):
    storage = runs.home / "storage"
    assert storage.is_dir() and any(storage.iterdir()), "task results were persisted where we look"
    db_files = sorted(runs.db.parent.glob(runs.db.name + "*"))
    assert any(b"[harvest] lab" in p.read_bytes() for p in db_files), "the run logs are in the database we read"
    places = [runs.data, runs.home, runs.logs, *db_files]
    files = [f for place in places for f in ([place] if place.is_file() else place.rglob("*")) if f.is_file()]
    assert len(files) > 50
    secret = KEY.split("-labtune-")[1].split("-")[0].encode()  # its random part: catches partly masked copies too
    assert [str(f) for f in files if secret in f.read_bytes()] == []
