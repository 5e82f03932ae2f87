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

from client.bench import load
from client.bench.rounds import Results, median
from client.connection import ClientError
from client.launcher import ServerFailed, TAIL_LINES, free_port

PEERS_DIR = Path("peers")  # relative to the repository (gitignored)
MODEL_NAME = "smollm2-135m-instruct"
NOT_BUILT = "llama.cpp peer not built (make peers): skipped"
SERVER_HTTP, LLAMACPP = "server-http", "llama.cpp"  # the engine names of the comparison's rounds


@dataclass
class LlamaCpp:
    """Where `make peers` puts the llama.cpp peer; `model`: another GGUF than the default model's (sizes.py)."""

    root: Path = PEERS_DIR
    model: Path | None = None

    @property
    def server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def quantize(self) -> Path:
        return self.root / "bin" / "llama-quantize"

    @property
    def gguf(self) -> Path:
        return self.model or self.root / f"{MODEL_NAME}-Q8_0.gguf"

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


# ---------------------------------------------------------------- the comparison: the same client on both

def render(http_url: str, prompts: list[str], metadata=()) -> list[list[int]]:
    """Each prompt as one user message in the model's chat template, as token ids (our server's /tokenize): what
    both servers are sent, so both start from the same tokens."""
    import httpx

    ids = []
    for prompt in prompts:
        try:
            response = httpx.post(f"{http_url}/tokenize", json={"messages": [{"role": "user", "content": prompt}]},
                                  headers=dict(metadata), timeout=30)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the HTTP API at {http_url} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ClientError(f"/tokenize at {http_url} answered {response.status_code}: {response.text[:200]}")
        ids.append(response.json()["tokens"])
    return ids


def completions(name: str, url: str, metadata, prompt_ids: list[list[int]], *, tokens: int, requests: int,
                warmup: int, timeout: float | None):
    """A step of the rounds: the level on an OpenAI-compatible server's /v1/completions (warmed up the first time)."""
    warm = []

    def step(level: int, r: int) -> dict:
        cfg = load.LoadConfig(url="", prompts=[], tokens=tokens, levels=[level], requests=requests,
                              warmup=0 if warm else warmup, timeout=timeout, metadata=metadata,
                              protocol="completions", http_url=url, prompt_ids=prompt_ids)
        warm.append(True)
        ((result,),) = load.run_protocols([cfg], progress=lambda line: None)
        return {name: result}
    return step


def vs_llamacpp(results: Results) -> dict[int, float | None]:
    """Per level: our server's tokens/s over HTTP / llama.cpp's, the median of the per-round ratios."""
    return {level: median(r[SERVER_HTTP].output_tokens_per_s / r[LLAMACPP].output_tokens_per_s
                          for r in per_round if r[LLAMACPP].output_tokens_per_s)
            for level, per_round in results.items() if per_round and LLAMACPP in per_round[0]}
