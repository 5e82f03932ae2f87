"""Helpers for the robustness tests: prompts with known answers, gauges, concurrent calls, recorded figures.

Imported by name (`from tests.robustness.common import ...`), never from a conftest.
"""
from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from client.launcher import free_port
from tests.server.harness import ROOT, request, start_server, stream_texts  # noqa: F401 (ROOT re-exported)

Code = grpc.StatusCode
# Greedy answers that are short, end on the end-of-sequence token and stay the same in any batch.
CAPITALS = ("France", "Japan", "Germany", "Russia", "Egypt", "the United Kingdom", "Italy", "Spain")
CAPITAL_PROMPTS = tuple(f"What is the capital of {c}?" for c in CAPITALS)

FIGURES: list[str] = []  # shown in the terminal summary


def record(title: str, **figures) -> None:
    line = f"{title}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    FIGURES.append(line)


def start_metered(model_dir, workdir: Path, config: dict | None = None, env: dict | None = None, args: tuple = (),
                  fault_marker: str | None = None):
    """A server with its Prometheus endpoint on a free loopback port (`.metrics_url`)."""
    port = free_port()
    s = start_server(model_dir, workdir, config=config, env=env, args=("--metrics-port", str(port), *args),
                     fault_marker=fault_marker)
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return s


def gauges(server) -> tuple[float, float]:
    """(llm_requests_running, llm_requests_waiting) scraped from the server's metrics endpoint."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values["llm_requests_running"], values["llm_requests_waiting"]


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def call(stub, rpc: str, req, timeout: float) -> list[tuple[str, str]]:
    """One call; [(text, finish_reason)] per prompt in request order. Raises grpc.RpcError."""
    if rpc == "Generate":
        response = stub.Generate(req, timeout=timeout)
        assert [c.index for c in response.completions] == list(range(len(response.completions)))
        return [(c.text, c.finish_reason) for c in response.completions]
    texts, finals = stream_texts(stub.GenerateStream(req, timeout=timeout))
    assert sorted(finals) == list(range(len(finals)))
    return [(texts.get(i, ""), finals[i].finish_reason) for i in sorted(finals)]


def solo_answers(stub, prompts, **fields) -> dict[str, str]:
    """Each prompt alone, one at a time: the reference answers."""
    return {p: stub.Generate(request(p, **fields), timeout=60).completions[0].text for p in prompts}


def run_all(jobs, concurrency: int, budget: float) -> list:
    """Run callables on `concurrency` threads; each result is its return value or the exception raised.
    The whole run is bounded by `budget` seconds."""
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(job) for job in jobs]
        done, pending = wait(futures, timeout=budget)
        for f in pending:
            f.cancel()
        assert not pending, f"{len(pending)} of {len(futures)} calls still running after {budget} s"
    return [f.exception() or f.result() for f in futures]


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out
