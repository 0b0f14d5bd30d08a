"""Fetch llama.cpp's Python GGUF converters from the llama-cpp-python source tarball on PyPI.

    python -m adapters.models.llama_cpp_source .venv/share/llama.cpp     (what `make setup` runs)

Downloads the sdist with pip (no build, no dependencies) and extracts only what the
converters need from ``vendor/llama.cpp/``: ``convert_*.py``, ``conversion/``, ``gguf-py/``,
``models/templates/`` (chat templates some converters embed) and the requirements files.
The C/C++ sources stay in the tarball. The version matches the installed llama-cpp-python
unless ``--version`` says otherwise, so the GGUF writer and the runtime come from one commit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGE = "llama-cpp-python"
VENDOR = "vendor/llama.cpp/"
# Paths under vendor/llama.cpp/ that the converters read at run time.
KEEP_DIRS = ("conversion/", "gguf-py/gguf/", "models/templates/", "requirements/")
KEEP_FILES = ("gguf-py/pyproject.toml", "gguf-py/LICENSE", "LICENSE", "requirements.txt")


def wanted(rel: str) -> bool:
    """Whether a path relative to vendor/llama.cpp/ belongs to the converters."""
    if "/" not in rel:
        return (rel.startswith("convert_") and rel.endswith(".py")) or rel in KEEP_FILES
    return rel.startswith(KEEP_DIRS) or rel in KEEP_FILES


def installed_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def download_sdist(version: str, dest: Path) -> Path:
    """Download the llama-cpp-python sdist with pip; returns the tarball path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{PACKAGE}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tarballs = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 and not tarballs:
        raise SystemExit(f"pip download of {PACKAGE}=={version} failed:\n{proc.stderr[-2000:]}")
    if not tarballs:
        raise SystemExit(f"pip download finished but left no {PACKAGE} sdist in {dest}")
    return tarballs[0]


def extract_converters(tarball: Path, dest: Path) -> int:
    """Extract the converter files of vendor/llama.cpp/ into ``dest`` (atomically); returns the file count."""
    dest = dest.resolve()
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    n = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1].startswith(VENDOR) or not member.isfile():
                continue
            rel = parts[1][len(VENDOR):]
            if not wanted(rel) or "/tests/" in f"/{rel}" or ".." in rel.split("/"):
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
    if not (tmp / "convert_hf_to_gguf.py").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{tarball.name} has no {VENDOR}convert_hf_to_gguf.py; this version cannot be used")
    (tmp / "SOURCE").write_text(f"{tarball.name}\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="directory to create, e.g. .venv/share/llama.cpp (replaced if present)")
    parser.add_argument("--version", help=f"{PACKAGE} version (default: the installed one)")
    parser.add_argument("--sdist", type=Path, help="use this already-downloaded sdist instead of calling pip")
    args = parser.parse_args(argv)

    if args.sdist:
        tarball = args.sdist
        n = extract_converters(tarball, args.dest)
    else:
        version = args.version or installed_version()
        if not version:
            parser.error(f"{PACKAGE} is not installed; pass --version X.Y.Z")
        with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as tmp:
            tarball = download_sdist(version, Path(tmp))
            n = extract_converters(tarball, args.dest)
    print(f"extracted {n} converter files from {tarball.name} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
