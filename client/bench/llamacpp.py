"""The llama.cpp peer of the serving benchmark: where `make peers` (peers.py) puts it, and its server started on a
free loopback port for a run (`llama-server`, the default model as a Q8_0 GGUF), stopped after.

The benchmark measures it and our server alike: the same prompts as token ids on /v1/completions, streamed, greedy,
end-of-sequence ignored so every answer is exactly the asked number of tokens (load.py, protocol "completions").
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from client.launcher import ServerFailed, TAIL_LINES, free_port

PEERS_DIR = Path("peers")  # relative to the repository (gitignored)
MODEL_NAME = "smollm2-135m-instruct"
NOT_BUILT = "llama.cpp peer not built (make peers): skipped"


@dataclass
class LlamaCpp:
    """Where `make peers` puts the llama.cpp peer."""

    root: Path = PEERS_DIR

    @property
    def server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def quantize(self) -> Path:
        return self.root / "bin" / "llama-quantize"

    @property
    def gguf(self) -> Path:
        return self.root / f"{MODEL_NAME}-Q8_0.gguf"

    @property
    def log(self) -> Path:
        return self.root / "build.log"

    def built(self) -> bool:
        return self.server.is_file() and os.access(self.server, os.X_OK) and self.gguf.is_file()


def server_command(peer: LlamaCpp, port: int, slots: int, prompt_tokens: int, new_tokens: int,
                   threads: int = 2, no_repack: bool = False) -> list[str]:
    """llama-server on loopback with `slots` sequences at once (-np) and `threads` threads (our server's 2 cores).
    The context (-c) is shared by the slots: slots x (longest prompt + new tokens), so no slot runs out of room.
    `no_repack`: weights as they are in the file, no CPU-specific layout (see has_amx)."""
    return [str(peer.server), "-m", str(peer.gguf), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-np", str(slots), "-c", str(slots * (prompt_tokens + new_tokens)), "--no-webui",
            *(["--no-repack"] if no_repack else [])]


def has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has AMX. There llama.cpp's repacking hands Q8_0 matmuls to its AMX kernel, and this build
    (llama-cpp-python 0.3.36's tree) dies of SIGSEGV in ggml_backend_amx_mul_mat at its first decode on this
    project's AMX machines (2026-12-02); without repacking it runs its AVX-512 kernels."""
    try:
        return " amx_int8" in cpuinfo.read_text()
    except OSError:
        return False


class LlamaCppServer:
    """`llama-server` for as long as the `with` lasts, its output in `log_path`; ServerFailed (one line and the log's
    tail) if it exits or does not answer /health in time."""

    def __init__(self, peer: LlamaCpp, log_path: str | Path, slots: int, prompt_tokens: int, new_tokens: int,
                 ready_timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = server_command(peer, self.port, slots, prompt_tokens, new_tokens, no_repack=has_amx())
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LlamaCppServer:
        import httpx

        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise self._failed(f"exited with code {self.proc.returncode}")
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:  # 503 while loading
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() >= deadline:
                    raise self._failed(f"did not answer /health after {self.ready_timeout:g} s")
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _failed(self, reason: str) -> ServerFailed:
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        return ServerFailed(reason, self.log_path, tail, name="llama.cpp's server")
