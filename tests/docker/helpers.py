"""Calls to the Docker client, shared by the fixtures and the tests of tests/docker/."""
from __future__ import annotations

import os
import subprocess
import time

from modelcheck import REPO


def docker_cli() -> str:
    # Debian's client, as the Makefile picks it: another one on the PATH may want buildx for BuildKit.
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def make_build(image: str) -> float:
    """`make docker-build` (engine, base image, build), as a user runs it; seconds taken."""
    start = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", "docker-build", f"IMAGE={image}"], cwd=REPO,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"make docker-build failed:\n{result.stdout[-6000:]}{result.stderr[-6000:]}"
    return time.monotonic() - start
