"""Shared fixtures: the real default model in every precision, built once and cached under models/."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach the model hub; set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from modelcheck import DEFAULT_MODEL, MODELS_DIR, OV_CACHE, REPO

# Servers the tests start without --cache-dir compile into this worker's cache too.
os.environ["OV_CACHE_DIR"] = str(OV_CACHE)

# A shell without job control starts background jobs with Ctrl-C ignored, and the scripts the tests
# start would inherit that: the tests that press Ctrl-C (SIGINT) need it to reach them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The fast lane (`make test-fast`: pytest -m "not model"): a test that reaches the model, a server or a script
# built on it, or a container, through any of these fixtures is marked `model` here, whatever its file.
MODEL_FIXTURES = {"fp32_model_dir", "run_cli", "image", "triton"}


def pytest_collection_modifyitems(items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


def _model(precision: str) -> Path:
    from filelock import FileLock

    from modelprep.compress import parameters
    from modelprep.pipeline import default_int4, ensure_model
    from modelprep.store import is_complete, model_dir, read_manifest

    cached = model_dir(DEFAULT_MODEL, precision, MODELS_DIR)
    MODELS_DIR.mkdir(exist_ok=True)
    # `make test` runs two pytest workers: the first to need a precision builds it, the other waits for it.
    with FileLock(MODELS_DIR / f".{precision}.lock"):
        # A compressed directory cached from before compress_model.py checked against FP32 is rebuilt, with the check;
        # so is an INT4 one cached with other parameters than the registry's (they changed with the measured recipe).
        wanted = parameters("int4", default_int4(DEFAULT_MODEL))
        stale = precision != "fp32" and is_complete(cached) and (
            not read_manifest(cached).fidelity or precision == "int4" and read_manifest(cached).compression != wanted)
        return ensure_model(DEFAULT_MODEL, precision, MODELS_DIR, force=stale)


@pytest.fixture(scope="session")
def fp32_model_dir() -> Path:
    return _model("fp32")


@pytest.fixture(scope="session")
def fp16_model_dir(fp32_model_dir) -> Path:
    return _model("fp16")


@pytest.fixture(scope="session")
def int8_model_dir(fp32_model_dir) -> Path:
    return _model("int8")


@pytest.fixture(scope="session")
def int4_model_dir(fp32_model_dir) -> Path:
    return _model("int4")


@pytest.fixture(scope="session")
def tiny_models(fp32_model_dir, tmp_path_factory):
    """Tiny random-weight models of every registry architecture (tests/tinymodels.py), built on demand, once
    per session: `tiny_models.model(name)` is registry model NAME's FP32 directory."""
    from tinymodels import TinyModels

    return TinyModels(tmp_path_factory.mktemp("tiny"), fp32_model_dir)


@pytest.fixture
def scratch_models(tmp_path, fp32_model_dir) -> Path:
    """A models dir holding (a link to) the cached FP32 model, so CLI outputs land in tmp_path."""
    (tmp_path / DEFAULT_MODEL).symlink_to(fp32_model_dir, target_is_directory=True)
    return tmp_path


@pytest.fixture
def run_cli():
    """Run download_model.py / compress_model.py as a user would; returns the CompletedProcess."""

    def run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run


def pytest_terminal_summary(terminalreporter):
    from modelcheck import RECORDED

    if RECORDED:
        terminalreporter.section("compressed models against FP32 (the check compress_model.py records)")
        for line in RECORDED:
            terminalreporter.write_line(line)
