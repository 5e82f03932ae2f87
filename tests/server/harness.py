"""Real servers on free loopback ports, started as `python -m server` subprocesses, and call helpers."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess with its log file; helpers to call it and to stop it."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, http_port: int = 0):
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.http_url = f"http://127.0.0.1:{http_port}" if http_port else ""  # with start_server(http=True)
        self.log_path = log_path
        self.channel = grpc.insecure_channel(self.address)
        self.stub = llm_pb2_grpc.LLMServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def health(self, service: str = "") -> int:
        return self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_serving(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.health() == STATUS.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not SERVING after {timeout} s:\n{self.log()}")

    def threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError("no thread count")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_server(model_dir, workdir: Path, config: dict | None = None, args: tuple = (), env: dict | None = None,
                 wait: bool = True, http: bool = False, fault_marker: str | None = None) -> ServerProcess:
    """Start `python -m server` on a free port with the servable_stream profile, or `config` merged into it;
    with `http`, the OpenAI-compatible HTTP API too, on another free port (`server.http_url`); with
    `fault_marker`, prompts holding it fail mid-generation (tests/faults.py)."""
    servable = json.loads((ROOT / "servable_stream" / "config.json").read_text())
    for key, value in (config or {}).items():
        servable[key] = {**servable[key], **value} if isinstance(value, dict) else value
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(servable))
    port = free_port()
    http_port = free_port() if http else 0
    if http:
        args = ("--http-port", str(http_port), *args)
    log_path = workdir / "server.log"
    entry = ["tests.faults", fault_marker] if fault_marker else ["server"]
    cmd = [sys.executable, "-m", *entry, "--config_path", str(config_path), "--port", str(port),
           "--model", str(model_dir), "--cache-dir", str(ROOT / "models" / ".ov_cache"), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    server = ServerProcess(proc, port, log_path, http_port)
    if wait:
        server.wait_serving()
    return server


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
