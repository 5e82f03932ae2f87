"""The image built and run for real by a Docker engine: `make docker-test` (DOCKER_TEST=1) runs these;
`make test` skips them, since building takes minutes and needs an engine that only root may start."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.docker.helpers import Container, docker, make_build

FIGURES = pytest.StashKey[list]()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DOCKER_TEST") == "1":
        # The first test builds the image (twice: cold, then cached); a cold build alone can take 15 minutes.
        for item in items:
            item.add_marker(pytest.mark.timeout(2700))
        return
    skip = pytest.mark.skip(reason="builds and runs the Docker image: run by `make docker-test`")
    for item in items:
        if "tests/docker/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


def pytest_configure(config):
    config.stash[FIGURES] = []


def pytest_terminal_summary(terminalreporter):
    lines = terminalreporter.config.stash[FIGURES]
    if lines:
        terminalreporter.write_sep("-", "docker figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def figures(request) -> list[str]:
    """Lines for the closing summary."""
    return request.config.stash[FIGURES]


@pytest.fixture(scope="session")
def image(figures) -> str:
    name = os.environ.get("DOCKER_TEST_IMAGE", "llm-grpc-server")
    first = make_build(name)
    cached = make_build(name)  # nothing changed: every layer from the cache
    size = int(docker("image", "inspect", "-f", "{{.Size}}", name).stdout)
    figures.append(f"build: {first:.0f} s (this run), {cached:.1f} s with every layer cached; "
                   f"image {name}: {size / 1e9:.2f} GB")
    return name


@pytest.fixture(scope="session")
def cache_volume():
    name = f"llm-test-cache-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def containers():
    """Containers a test module started: removed, whatever happened, when the module is done."""
    made: list[Container] = []
    yield made
    for box in made:
        docker("rm", "-f", box.name, check=False)
