"""Real servers on free loopback ports, started as `python -m server` subprocesses (client/launcher.py), and
call helpers."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import openai
from grpc_health.v1 import health_pb2

from client.launcher import LaunchedServer
from modelcheck import OV_CACHE
from proto import llm_pb2, llm_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
STATUS = health_pb2.HealthCheckResponse


def wait_until(condition, timeout: float = 30.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class ServerProcess(LaunchedServer):
    """client/launcher.py's server with the tests' conveniences: an LLMService stub, its thread count."""

    def start(self) -> ServerProcess:
        super().start()
        self.stub = llm_pb2_grpc.LLMServiceStub(self.channel)
        return self

    def threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError("no thread count")


def start_server(model_dir, workdir: Path, config: dict | None = None, args: tuple = (), env: dict | None = None,
                 wait: bool = True, http: bool = False, fault_marker: str | None = None) -> ServerProcess:
    """Start `python -m server` on a free port with the servable_stream profile, or `config` merged into it;
    with `http`, the OpenAI-compatible HTTP API too, on another free port (`server.http_url`); with
    `fault_marker`, prompts holding it fail mid-generation (tests/faults.py)."""
    servable = json.loads((ROOT / "servable_stream" / "config.json").read_text())
    for key, value in (config or {}).items():
        servable[key] = {**servable.get(key, {}), **value} if isinstance(value, dict) else value
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(servable))
    server = ServerProcess(
        ["--config_path", config_path, "--model", model_dir, "--cache-dir", OV_CACHE, *args],
        workdir / "server.log", http=http, entry=("tests.faults", fault_marker) if fault_marker else ("server",),
        env=env, cwd=ROOT, ready_timeout=180)
    return server.serve() if wait else server.start()


def request(*prompts: str, **fields) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(prompts=list(prompts), **fields)


def stream_texts(responses) -> tuple[dict[int, str], dict[int, llm_pb2.GenerateStreamResponse]]:
    """Concatenated text per prompt index, and each prompt's final message."""
    texts: dict[int, str] = {}
    finals: dict[int, llm_pb2.GenerateStreamResponse] = {}
    for r in responses:
        assert r.index not in finals, f"prompt {r.index} got a message after its final one"
        texts[r.index] = texts.get(r.index, "") + r.text
        if r.finish_reason:
            finals[r.index] = r
    return texts, finals


@contextmanager
def openai_client(server):
    """The official client on a server's HTTP API. No retries: a refusal must reach the test as it was sent."""
    with openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c
