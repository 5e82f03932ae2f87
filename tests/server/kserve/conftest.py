"""Fixtures: a real server with every front door, and tritonclient run as the OVMS demo's clients ran it, in a
process of its own (its stubs and ours clash in one process)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.launcher import free_port
from proto import kserve_pb2_grpc
from tests.server.harness import ROOT, start_server

HERE = Path(__file__).parent
FAULT = "FAIL-HERE"  # a prompt holding it fails mid-generation (tests/faults.py)


@pytest.fixture(scope="session")
def kserve_server(fp32_model_dir, tmp_path_factory):
    """gRPC (LLMService and KServe) and HTTP (OpenAI and KServe REST) on one engine, batch-invariant (exact
    comparisons across calls and batch-mates), with metrics and the fault marker; the servable's default answer is
    short, as the demo's calls set no length."""
    metrics = free_port()
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("kserve-server"), http=True,
                     config={"batch_invariant": True, "generation": {"max_new_tokens": 32}},
                     args=("--metrics-port", str(metrics)), fault_marker=FAULT)
    s.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
    s.kserve = kserve_pb2_grpc.GRPCInferenceServiceStub(s.channel)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def triton():
    """Run tests/server/kserve/triton_client.py (tritonclient) against a gRPC address; its JSON report."""

    def run(url: str, *args: str, timeout: float = 300) -> dict:
        out = subprocess.run([sys.executable, str(HERE / "triton_client.py"), "--url", url, *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    return run

