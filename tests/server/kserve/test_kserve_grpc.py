"""KServe v2 over gRPC against the real default model: tritonclient (in its own process) sending what each OVMS
demo release sent, our own stubs for the health and metadata RPCs and for each bad input, in-stream errors,
cancellation and metrics."""
from __future__ import annotations

import struct

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from proto import kserve_pb2
from tests.server.harness import request, wait_until
from tests.server.kserve.conftest import FAULT

Code = grpc.StatusCode
MODEL = "smollm2-135m-instruct"
PROMPTS = ("What is the capital of France?", "Who is Albert Einstein?")


def metrics(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(server.metrics_url, timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def counted(server, rpc: str, code: str) -> float:
    return metrics(server).get(("llm_requests_total", (("code", code), ("protocol", "kserve"), ("rpc", rpc))), 0.0)


def infer_request(*elements: bytes, raw: bytes | None = None, shape=None, name="pre_prompt", datatype="BYTES",
                  model="python_model", **parameters) -> kserve_pb2.ModelInferRequest:
    """A ModelInferRequest as tritonclient builds one: the input's bytes in raw_input_contents."""
    if raw is None:
        raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    msg = kserve_pb2.ModelInferRequest(model_name=model, inputs=[kserve_pb2.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape or [len(elements)])], raw_input_contents=[raw])
    for key, value in parameters.items():
        kind = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}[type(value)]
        setattr(msg.parameters[key], kind, value)
    return msg


def elements(raw: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    return out


# ---------------------------------------------------------------- the demo's clients (tritonclient)

def test_unary_batch_of_two_prompts_completion_first_then_token_count(kserve_server, triton):
    got = triton(kserve_server.address, "-p", PROMPTS[0], "-p", PROMPTS[1])
    assert got["names"] == [["completion", "token_count"]]
    assert "Paris" in got["texts"][0] and "Einstein" in got["texts"][1]
    # the same two prompts through our own API, on the same engine, batch-invariant: the same texts and tokens
    ours = kserve_server.stub.Generate(request(*PROMPTS), timeout=120).completions
    assert got["texts"] == [c.text for c in ours]
    assert got["token_count"] == sum(c.completion_tokens for c in ours)


def test_stream_of_two_prompts_reassembles_to_the_unary_text_then_ends(kserve_server, triton):
    unary = triton(kserve_server.address, "-p", PROMPTS[0], "-p", PROMPTS[1])
    streamed = triton(kserve_server.address, "--stream", "-p", PROMPTS[0], "-p", PROMPTS[1])
    assert "error" not in streamed, streamed
    assert streamed["texts"] == unary["texts"] and streamed["token_count"] == unary["token_count"]
    names = streamed["names"]
    assert len(names) > 4 and all(n == ["completion"] for n in names[:-2])  # one output per delta message
    assert names[-2:] == [["completion", "token_count"], ["end_signal"]]


def test_the_2024_0_client_one_plain_prompt_and_several_prefixed_ones(kserve_server, triton):
    reference = triton(kserve_server.address, "-p", PROMPTS[0], "-p", PROMPTS[1])["texts"]
    one = triton(kserve_server.address, "--variant", "2024.0", "-p", PROMPTS[0])
    assert one["texts"] == [kserve_server.stub.Generate(request(PROMPTS[0]), timeout=60).completions[0].text]
    two = triton(kserve_server.address, "--variant", "2024.0", "-p", PROMPTS[0], "-p", PROMPTS[1])
    assert two["texts"] == reference
    for prompts in ([PROMPTS[0]], PROMPTS):
        streamed = triton(kserve_server.address, "--variant", "2024.0", "--stream", *(a for p in prompts for a in ("-p", p)))
        assert "error" not in streamed, streamed
        assert streamed["texts"] == (reference if len(prompts) == 2 else one["texts"])


def test_the_2023_3_client_single_plain_text_prompt(kserve_server, triton):
    solo = kserve_server.stub.Generate(request(PROMPTS[0]), timeout=60).completions[0].text
    unary = triton(kserve_server.address, "--variant", "2023.3", "-p", PROMPTS[0])
    assert unary["texts"] == [solo] and unary["names"] == [["completion"]]  # plain text, nothing else
    streamed = triton(kserve_server.address, "--variant", "2023.3", "--stream", "-p", PROMPTS[0])
    assert "error" not in streamed, streamed
    assert streamed["texts"] == [solo]
    assert {n for names in streamed["names"] for n in names} == {"completion", "end_signal"}


def test_a_client_that_half_closes_at_once_still_gets_its_answer_and_the_call_ends(kserve_server, triton):
    got = triton(kserve_server.address, "--stream", "--half-close-first", "-p", PROMPTS[0])
    assert "Paris" in got["texts"][0] and got["names"][-1] == ["end_signal"]


def test_parameters_steer_generation_by_our_names(kserve_server, triton):
    got = triton(kserve_server.address, "--parameter", "max_new_tokens=5", "-p", PROMPTS[1])
    assert got["token_count"] == 5
    ours = kserve_server.stub.Generate(request(PROMPTS[1], max_new_tokens=5), timeout=60).completions[0].text
    assert got["texts"] == [ours]


def test_health_and_metadata_through_tritonclient(kserve_server, triton):
    got = triton(kserve_server.address, "--health")
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["metadata"]["name"] == "python_model"
    assert [i["name"] for i in got["metadata"]["inputs"]] == ["pre_prompt"]
    assert [o["name"] for o in got["metadata"]["outputs"]] == ["completion", "token_count"]
    assert triton(kserve_server.address, "--model", MODEL, "-p", PROMPTS[0])["texts"][0]  # the served name works too
    missing = triton(kserve_server.address, "--model", "other", "-p", "hi")
    assert "NOT_FOUND" in missing["status"] and "other" in missing["error"]


# ---------------------------------------------------------------- health, metadata, reflection (our stubs)

def test_health_and_metadata_rpcs(kserve_server):
    k = kserve_server.kserve
    assert k.ServerLive(kserve_pb2.ServerLiveRequest(), timeout=10).live
    assert k.ServerReady(kserve_pb2.ServerReadyRequest(), timeout=10).ready
    for name in ("python_model", MODEL):
        assert k.ModelReady(kserve_pb2.ModelReadyRequest(name=name), timeout=10).ready
    assert k.ServerMetadata(kserve_pb2.ServerMetadataRequest(), timeout=10).name == "llm-grpc-server"
    meta = k.ModelMetadata(kserve_pb2.ModelMetadataRequest(name="python_model"), timeout=10)
    assert meta.versions == ["1"] and meta.inputs[0].datatype == "BYTES"
    for call, message in ((k.ModelReady, kserve_pb2.ModelReadyRequest), (k.ModelMetadata, kserve_pb2.ModelMetadataRequest)):
        with pytest.raises(grpc.RpcError) as caught:
            call(message(name="other"), timeout=10)
        assert caught.value.code() == Code.NOT_FOUND
    services = ProtoReflectionDescriptorDatabase(kserve_server.channel).get_services()
    assert "inference.GRPCInferenceService" in services and "llm.LLMService" in services


# ---------------------------------------------------------------- bad input

BAD = {
    "unknown model": (infer_request(b"hi", model="other"), Code.NOT_FOUND, "other"),
    "missing pre_prompt": (infer_request(b"hi", name="prompt"), Code.INVALID_ARGUMENT, "no input named pre_prompt"),
    "wrong datatype": (infer_request(b"hi", datatype="FP32"), Code.INVALID_ARGUMENT, "pre_prompt.datatype"),
    "prefix past the buffer": (infer_request(raw=struct.pack("<I", 2) + b"hi" + struct.pack("<I", 99) + b"x", shape=[2]),
                               Code.INVALID_ARGUMENT, "pre_prompt[1]: its length prefix says 99 bytes"),
    "invalid UTF-8": (infer_request(b"hi", b"\xff\xfe"), Code.INVALID_ARGUMENT, "pre_prompt[1]: not valid UTF-8"),
    "empty prompt": (infer_request(b"hi", b" "), Code.INVALID_ARGUMENT, "pre_prompt[1]: must not be empty"),
    "parameter kind": (infer_request(b"hi", temperature="hot"), Code.INVALID_ARGUMENT, "parameters.temperature"),
    "parameter value": (infer_request(b"hi", max_new_tokens=0), Code.INVALID_ARGUMENT, "parameters.max_new_tokens"),
    "unknown parameter": (infer_request(b"hi", beams=4), Code.INVALID_ARGUMENT, "parameters.beams"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_the_input_and_the_element(kserve_server, case):
    msg, code, detail = BAD[case]
    with pytest.raises(grpc.RpcError) as caught:
        kserve_server.kserve.ModelInfer(msg, timeout=30)
    assert caught.value.code() == code and detail in caught.value.details(), caught.value.details()


def test_inside_a_stream_an_error_is_the_stream_s_message_and_the_stream_goes_on(kserve_server):
    requests = [infer_request(b"hi", b"\xff"), infer_request(FAULT.encode() + b" please"),
                infer_request(PROMPTS[0].encode(), max_new_tokens=8)]
    replies = list(kserve_server.kserve.ModelStreamInfer(iter(requests), timeout=120))
    errors = [i for i, r in enumerate(replies) if r.error_message]
    assert len(errors) == 2 and errors[0] == 0
    assert replies[0].error_message.startswith("pre_prompt[1]: not valid UTF-8")
    assert "fault injected" in replies[errors[1]].error_message
    answers = [r.infer_response for r in replies[errors[1] + 1:]]  # the third request's, to its end
    assert answers[-1].outputs[0].name == "end_signal"
    text = "".join(elements(a.raw_output_contents[0])[0] for a in answers if a.outputs[0].name == "completion")
    assert text == kserve_server.stub.Generate(request(PROMPTS[0], max_new_tokens=8), timeout=60).completions[0].text


def test_a_failing_generation_is_internal_for_model_infer(kserve_server):
    with pytest.raises(grpc.RpcError) as caught:
        kserve_server.kserve.ModelInfer(infer_request(FAULT.encode()), timeout=60)
    assert caught.value.code() == Code.INTERNAL and "fault injected" in caught.value.details()


# ---------------------------------------------------------------- cancellation and metrics

def test_cancelling_a_stream_frees_its_place_and_is_counted(kserve_server):
    before = counted(kserve_server, "ModelStreamInfer", "CANCELLED")
    story = infer_request(b"Tell me a long story.", max_new_tokens=512, min_new_tokens=512)
    call = kserve_server.kserve.ModelStreamInfer(iter([story]), timeout=120)
    next(call)
    call.cancel()
    assert wait_until(lambda: counted(kserve_server, "ModelStreamInfer", "CANCELLED") == before + 1)
    assert wait_until(lambda: metrics(kserve_server)[("llm_requests_running", ())] == 0)


def test_calls_are_counted_and_logged_with_protocol_kserve(kserve_server):
    kserve_server.kserve.ModelInfer(infer_request(b"hi", max_new_tokens=2), timeout=60)
    list(kserve_server.kserve.ModelStreamInfer(iter([infer_request(b"hi", max_new_tokens=2)]), timeout=60))
    with pytest.raises(grpc.RpcError):
        kserve_server.kserve.ModelInfer(infer_request(b"hi", datatype="INT8"), timeout=60)
    assert counted(kserve_server, "ModelInfer", "OK") >= 1
    assert counted(kserve_server, "ModelStreamInfer", "OK") >= 1
    assert counted(kserve_server, "ModelInfer", "INVALID_ARGUMENT") >= 1
    assert "protocol=kserve rpc=ModelInfer prompts=1" in kserve_server.log()
