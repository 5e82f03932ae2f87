"""A server of our own: `python -m server` on free loopback ports, for as long as it is needed.

The benchmarks (`--serve`, the memory benchmark) and the tests start servers through `LaunchedServer`: it
picks free ports (gRPC, and HTTP when asked), writes the server's output to a log file that stays after it
stopped, waits until the gRPC health service answers SERVING (raising `ServerFailed` with the log's last lines
if the process exits first or the wait times out), and stops the server with SIGTERM, killing it if it has
not exited in time; `stop()` returns the exit code. As a context manager it serves (starts and waits)
and stops.

Another module may stand in for `server` (`entry`): the tests' fault injector runs as
`python -m tests.faults MARKER <server flags>`.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
TAIL_LINES = 30


def free_port() -> int:
    """A TCP port free on the loopback interface at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerFailed(RuntimeError):
    """The server exited, or was not SERVING in time. `summary` is one line (for a command's error message);
    str() adds the log's last lines."""

    def __init__(self, reason: str, log_path: Path, tail: str, name: str = "the server"):
        self.reason, self.log_path, self.tail, self.name = reason, log_path, tail, name
        super().__init__(f"{self.summary}\n{tail}")

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self.tail.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    @property
    def summary(self) -> str:
        return f"{self.name} {self.reason}: {self.last_line} (log: {self.log_path})"


class LaunchedServer:
    """`python -m ENTRY ARGS --port P [--http-port H]` with its output in `log_path`.

    `args` are the server's flags but the ports; `env` is added to this process's environment (with
    HF_HUB_OFFLINE=1 unless given: a local server never reaches the model hub); `cwd` is where it runs
    (default: this process's directory, so relative paths in `args` mean the same to both).
    """

    def __init__(self, args: Sequence[str | os.PathLike], log_path: str | Path, *, http: bool = False,
                 entry: Sequence[str] = ("server",), env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, ready_timeout: float = 300.0, stop_timeout: float = 60.0):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.entry = list(entry)
        self.env = {"HF_HUB_OFFLINE": "1", **(env or {})}
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.http_port = free_port() if http else 0
        self.http_url = f"http://127.0.0.1:{self.http_port}" if http else ""  # the OpenAI-compatible API's base URL
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.health_stub = None  # replaceable before wait_serving(), e.g. by one on a TLS channel

    @property
    def command(self) -> list[str]:
        http = ["--http-port", str(self.http_port)] if self.http_port else []
        # The server's HTTP port defaults to 8000: 0 (off) unless asked, so servers side by side never collide on it;
        # first, so that an --http-port in `args` wins.
        off = [] if self.http_port else ["--http-port", "0"]
        return [sys.executable, "-m", *self.entry, *off, *self.args, "--port", str(self.port), *http]

    def start(self) -> LaunchedServer:
        """Start the process; returns at once (see wait_serving)."""
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        self.channel = grpc.insecure_channel(self.address)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        return self

    def health(self, service: str = "", timeout: float = 5) -> int:
        """The health service's status for `service` ("": the server as a whole); raises grpc.RpcError."""
        return self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def wait_serving(self, timeout: float | None = None) -> None:
        """Until the server is SERVING; ServerFailed if it exits first or `timeout` (default ready_timeout) passes."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise self._failed(f"exited with code {self.proc.returncode}")
            try:
                if self.health(timeout=2) == SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() >= deadline:
                raise self._failed(f"was not SERVING after {timeout:g} s")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _failed(self, reason: str) -> ServerFailed:
        return ServerFailed(reason, self.log_path, "\n".join(self.log().splitlines()[-TAIL_LINES:]))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server (SIGTERM: it drains and exits), kill it after stop_timeout; its exit code."""
        if self.channel is not None:
            self.channel.close()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def serve(self) -> LaunchedServer:
        """start() and wait_serving(); stopped again if that fails."""
        self.start()
        try:
            self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LaunchedServer:
        return self.serve()

    def __exit__(self, *exc) -> None:
        self.stop()
