"""Calls to the Docker client, shared by the fixtures and the tests of tests/docker/."""
from __future__ import annotations

import os
import re
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.launcher import free_port
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


class Container:
    def __init__(self, name: str, port: int, http_port: int):
        self.name, self.port, self.url = name, port, f"127.0.0.1:{port}"
        self.http_url = f"http://127.0.0.1:{http_port}"  # the image's port 8000, published

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.name).stdout.strip()

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def load_time(self) -> tuple[float, str]:
        """The server's own figure, from its log: seconds to load and compile, and the cache state it saw."""
        found = re.search(r"load_time=([\d.]+)s model_cache=(\w+)", self.logs())
        assert found, self.logs()
        return float(found.group(1)), found.group(2)


def serving(url: str) -> bool:
    with grpc.insecure_channel(url) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def run_container(image: str, model_dir, volume: str | None) -> tuple[Container, float, float]:
    """`docker run -d` as docs/operations.md says, both ports published on loopback (and the cache on `volume`, if any);
    seconds until the health service answers SERVING from the host, and until Docker reports the container healthy
    (its check runs every 10 s)."""
    name = f"llm-test-{free_port()}"
    port, http_port = free_port(), free_port()
    start = time.monotonic()
    cache = ["-v", f"{volume}:/cache"] if volume else []
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:9000", "-p", f"127.0.0.1:{http_port}:8000", *cache,
           "-v", f"{REPO / 'servable_stream'}:/workspace:ro", "-v", f"{model_dir}:/model:ro", image)
    box = Container(name, port, http_port)
    ready = None
    while True:
        state = box.inspect("{{.State.Status}} {{.State.Health.Status}}")
        if ready is None and serving(box.url):
            ready = time.monotonic() - start
        if state == "running healthy":
            return box, ready or time.monotonic() - start, time.monotonic() - start
        assert state.startswith("running"), f"container {state}:\n{box.logs()}"
        assert time.monotonic() - start < 300, f"not healthy after 300 s ({state}):\n{box.logs()}"
        time.sleep(0.5)
