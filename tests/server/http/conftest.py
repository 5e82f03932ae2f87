"""Fixtures: a real server with the OpenAI-compatible HTTP API, and the official `openai` client on it."""
import pytest

from client.launcher import free_port
from tests.server.harness import openai_client, start_server

FAULT = "FAIL-HERE"  # a prompt holding it fails mid-generation (tests/faults.py)


@pytest.fixture(scope="session")
def http_server(fp32_model_dir, tmp_path_factory):
    """gRPC and HTTP on one process and one engine, with metrics and the fault marker, and prompt-lookup
    speculation on: every answer must be what it would be without it."""
    metrics = free_port()
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("http-server"), http=True,
                     config={"speculation": {"max_tokens": 4}},
                     args=("--metrics-port", str(metrics), "--batch-invariant"), fault_marker=FAULT)
    s.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(http_server):
    with openai_client(http_server) as c:
        yield c
