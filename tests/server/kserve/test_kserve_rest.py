"""KServe v2 over REST on the HTTP port: the demo's curl, health and metadata, bad input in KServe's error shape;
and, on servers of their own, the API key, the waiting-queue limit and the drain for both KServe transports."""
from __future__ import annotations

import shutil
import signal
import subprocess
import threading

import grpc
import httpx
import pytest

from proto import kserve_pb2, kserve_pb2_grpc
from tests.server.harness import request, start_server, wait_until
from tests.server.kserve.test_kserve_grpc import PROMPTS, counted, infer_request, metrics

MODEL = "smollm2-135m-instruct"
# The OVMS demo README's curl, verbatim but for the address.
DEMO_BODY = '{"inputs":[{"name":"pre_prompt","shape":[1],"datatype":"BYTES","data":["What is the theory of relativity?"]}]}'


def body(*prompts: str, **parameters) -> dict:
    b = {"inputs": [{"name": "pre_prompt", "shape": [len(prompts)], "datatype": "BYTES", "data": list(prompts)}]}
    return {**b, "parameters": parameters} if parameters else b


def test_the_demo_s_curl(kserve_server):
    url = f"{kserve_server.http_url}/v2/models/python_model/infer"
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-s", "-d", DEMO_BODY, url], capture_output=True, text=True, timeout=120)
        reply = httpx.Response(200, content=out.stdout).json()
    else:
        reply = httpx.post(url, content=DEMO_BODY, timeout=120).json()
    assert reply["model_name"] == "python_model"
    completion, count = reply["outputs"]
    assert (completion["name"], completion["datatype"], completion["shape"]) == ("completion", "BYTES", [1])
    assert (count["name"], count["datatype"], count["shape"]) == ("token_count", "INT32", [1])
    ours = kserve_server.stub.Generate(request("What is the theory of relativity?"), timeout=60).completions[0]
    assert completion["data"] == [ours.text] and count["data"] == [ours.completion_tokens]
    assert ours.text.startswith("The theory of relativity is")


def test_rest_grpc_and_our_api_agree_on_a_batch_with_parameters_and_versions(kserve_server):
    url = f"{kserve_server.http_url}/v2/models/{MODEL}/versions/1/infer"
    reply = httpx.post(url, json={**body(*PROMPTS, max_new_tokens=12), "id": "req-7"}, timeout=120).json()
    assert reply["id"] == "req-7" and reply["model_name"] == MODEL
    ours = kserve_server.stub.Generate(request(*PROMPTS, max_new_tokens=12), timeout=60).completions
    assert reply["outputs"][0]["data"] == [c.text for c in ours]
    assert reply["outputs"][1]["data"] == [sum(c.completion_tokens for c in ours)] and ours[1].completion_tokens == 12


def test_health_and_metadata(kserve_server):
    base = kserve_server.http_url
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    for name in ("python_model", MODEL):
        assert httpx.get(f"{base}/v2/models/{name}/ready").status_code == 200
    meta = httpx.get(f"{base}/v2/models/python_model").json()
    assert meta["inputs"] == [{"name": "pre_prompt", "datatype": "BYTES", "shape": [-1]}]
    assert httpx.get(f"{base}/v2/models/python_model/versions/1").json()["versions"] == ["1"]
    assert httpx.get(f"{base}/v2").json()["name"] == "llm-grpc-server"
    for path in ("/v2/models/other", "/v2/models/other/ready", "/v2/models/python_model/versions/2"):
        r = httpx.get(base + path)
        assert r.status_code == 404 and "error" in r.json(), path


BAD = {
    "unknown model": ("other", body("hi"), 404, "other"),
    "not JSON": ("python_model", "{", 400, "not valid JSON"),
    "missing pre_prompt": ("python_model", {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                                                        "data": ["hi"]}]}, 400, "no input named pre_prompt"),
    "wrong datatype": ("python_model", {"inputs": [{**body("hi")["inputs"][0], "datatype": "FP32"}]}, 400,
                       "pre_prompt.datatype"),
    "shape against data": ("python_model", {"inputs": [{**body("hi")["inputs"][0], "shape": [2]}]}, 400,
                           "pre_prompt.shape"),
    "not a string": ("python_model", body("hi", 7), 400, "pre_prompt[1]: expected a string"),
    "empty prompt": ("python_model", body("hi", ""), 400, "pre_prompt[1]: must not be empty"),
    "parameter kind": ("python_model", body("hi", top_k="many"), 400, "parameters.top_k"),
    "parameter value": ("python_model", body("hi", temperature=-1), 400, "parameters.temperature"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_in_kserve_s_shape(kserve_server, case):
    model, payload, status, detail = BAD[case]
    url = f"{kserve_server.http_url}/v2/models/{model}/infer"
    r = httpx.post(url, content=payload, timeout=60) if isinstance(payload, str) else httpx.post(url, json=payload, timeout=60)
    assert r.status_code == status and detail in r.json()["error"], r.text


def test_a_rest_client_that_leaves_cancels_its_generation(kserve_server):
    before = counted(kserve_server, "infer", "CANCELLED")
    story = body("Tell me a long story.", max_new_tokens=512, min_new_tokens=512)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{kserve_server.http_url}/v2/models/python_model/infer", json=story, timeout=1.0)
    assert wait_until(lambda: counted(kserve_server, "infer", "CANCELLED") == before + 1)
    assert wait_until(lambda: metrics(kserve_server)[("llm_requests_running", ())] == 0)


def test_rest_calls_are_counted_under_kserve(kserve_server):
    httpx.post(f"{kserve_server.http_url}/v2/models/python_model/infer", json=body("hi", max_new_tokens=2), timeout=60)
    assert counted(kserve_server, "infer", "OK") >= 1


# ---------------------------------------------------------------- API key, a full queue, the drain

KEY = "kserve-test-key"


@pytest.fixture(scope="module")
def guarded(fp32_model_dir, tmp_path_factory):
    """An API key, one batch of one prompt and one waiting place, metrics."""
    from client.launcher import free_port

    port = free_port()
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("kserve-guarded"), http=True,
                     args=("--api-key", KEY, "--metrics-port", str(port)),
                     config={"limits": {"max_batch": 1, "max_waiting": 1}})
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    s.kserve = kserve_pb2_grpc.GRPCInferenceServiceStub(s.channel)
    yield s
    s.stop()


def test_the_api_key_guards_kserve_but_its_health(guarded, triton):
    auth = (("authorization", f"Bearer {KEY}"),)
    k = guarded.kserve
    for call in (lambda m: k.ModelInfer(infer_request(b"hi", max_new_tokens=2), timeout=30, metadata=m),
                 lambda m: list(k.ModelStreamInfer(iter([infer_request(b"hi", max_new_tokens=2)]), timeout=30, metadata=m)),
                 lambda m: k.ModelMetadata(kserve_pb2.ModelMetadataRequest(name="python_model"), timeout=30, metadata=m)):
        with pytest.raises(grpc.RpcError) as caught:
            call(())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(auth)
    assert k.ServerReady(kserve_pb2.ServerReadyRequest(), timeout=10).ready  # probes need no key
    refused = triton(guarded.address, "-p", "hi")
    assert "UNAUTHENTICATED" in refused["status"]
    assert triton(guarded.address, "--api-key", KEY, "--parameter", "max_new_tokens=3", "-p", "hi")["token_count"] == 3
    base = f"{guarded.http_url}/v2"
    assert httpx.post(f"{base}/models/python_model/infer", json=body("hi")).status_code == 401
    assert httpx.get(f"{base}/models/python_model").status_code == 401
    assert httpx.get(f"{base}/health/ready").status_code == 200 and httpx.get(f"{base}/health/live").status_code == 200
    ok = httpx.post(f"{base}/models/python_model/infer", json=body("hi", max_new_tokens=2),
                    headers={"authorization": f"Bearer {KEY}"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["outputs"][1]["data"] == [2]
    assert KEY not in guarded.log()


def test_a_full_queue_is_resource_exhausted_over_grpc_and_429_over_rest(guarded):
    auth = (("authorization", f"Bearer {KEY}"),)
    long = infer_request(b"Tell me a long story.", max_new_tokens=256, min_new_tokens=256)
    running = guarded.kserve.ModelStreamInfer(iter([long]), timeout=300, metadata=auth)
    first = next(running)  # the one batch place is taken
    waiting = guarded.kserve.ModelInfer.future(infer_request(b"hi", max_new_tokens=2), timeout=300, metadata=auth)
    assert wait_until(lambda: metrics(guarded)[("llm_requests_waiting", ())] == 1)
    with pytest.raises(grpc.RpcError) as caught:
        guarded.kserve.ModelInfer(infer_request(b"hi", max_new_tokens=2), timeout=30, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue" in caught.value.details()
    r = httpx.post(f"{guarded.http_url}/v2/models/python_model/infer", json=body("hi", max_new_tokens=2),
                   headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 429 and "queue" in r.json()["error"]
    rest = [first, *running]
    assert rest[-1].infer_response.outputs[0].name == "end_signal"
    assert list(waiting.result().outputs[1].shape) == [1]
    assert counted(guarded, "ModelInfer", "RESOURCE_EXHAUSTED") == 1 and counted(guarded, "infer", "RESOURCE_EXHAUSTED") == 1


def test_draining_says_not_ready_and_lets_the_running_call_finish(guarded):
    auth = (("authorization", f"Bearer {KEY}"),)
    long = infer_request(b"Tell me a long story.", max_new_tokens=64, min_new_tokens=64)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        reply=guarded.kserve.ModelInfer(long, timeout=120, metadata=auth)))
    thread.start()
    assert wait_until(lambda: metrics(guarded)[("llm_requests_running", ())] == 1)
    guarded.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: not guarded.kserve.ServerReady(kserve_pb2.ServerReadyRequest(), timeout=5).ready)
    assert httpx.get(f"{guarded.http_url}/v2/health/ready").status_code == 503
    with pytest.raises(grpc.RpcError) as caught:
        guarded.kserve.ModelInfer(infer_request(b"hi", max_new_tokens=2), timeout=30, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    thread.join(120)
    count = result["reply"].raw_output_contents[1]
    assert int.from_bytes(count, "little") == 64
    assert guarded.proc.wait(60) == 0
