"""Wire messages <-> engine data, as plain functions (no server): the proto and GenerationParams agree."""
from proto import llm_pb2
from server.grpc import convert
from server.engine.params import PARAMETERS
from server.engine.types import Completion, Finished, FinishReason, Logprob, TextDelta, Usage


def test_every_generation_parameter_is_a_request_field_the_server_can_tell_unset():
    fields = llm_pb2.GenerateRequest.DESCRIPTOR.fields_by_name
    for name in PARAMETERS:
        assert name in fields, f"GenerationParams.{name} has no field in GenerateRequest"
        assert fields[name].has_presence or fields[name].is_repeated, f"GenerateRequest.{name} is not optional"


def test_set_parameters_are_given_even_at_zero_and_unset_ones_are_not():
    msg = llm_pb2.GenerateRequest(prompts=["hi"], max_new_tokens=5, temperature=0.0, do_sample=False, seed=0,
                                  stop=["a", "b"], system_prompt="be brief")
    request = convert.to_request(msg)
    assert request.params.given == {"max_new_tokens": 5, "temperature": 0.0, "do_sample": False, "seed": 0,
                                    "stop": ("a", "b")}
    assert request.system_prompt == "be brief" and request.prompts == ("hi",)
    assert convert.to_request(llm_pb2.GenerateRequest(prompts=["hi"])).params.given == {}


def test_usage_goes_out_in_both_messages():
    usage = Usage(prompt_tokens=7, completion_tokens=3, ttft_ms=1.5, total_ms=4.0, cached_tokens=4)
    (c,) = convert.to_response([Completion(0, "hello", FinishReason.LENGTH, usage)]).completions
    final = convert.to_stream_message(Finished(1, FinishReason.STOP, usage))
    for msg in (c, final):
        assert (msg.prompt_tokens, msg.completion_tokens, msg.ttft_ms, msg.total_ms, msg.cached_tokens) == (7, 3, 1.5, 4.0, 4)
    assert c.text == "hello" and c.finish_reason == llm_pb2.LENGTH
    assert final.index == 1 and final.finish_reason == llm_pb2.STOP


def test_top_logprobs_and_per_token_logprobs_go_both_ways():
    assert convert.to_request(llm_pb2.GenerateRequest(prompts=["hi"], top_logprobs=0)).logprobs == 0
    assert convert.to_request(llm_pb2.GenerateRequest(prompts=["hi"])).logprobs is None
    lp = Logprob(5, " a", -0.5, (Logprob(5, " a", -0.5), Logprob(7, " b", -1.25)))
    (msg,) = convert.to_stream_message(TextDelta(0, " a", (lp,))).logprobs
    assert (msg.token_id, msg.token, msg.logprob) == (5, " a", -0.5)
    assert [(t.token_id, t.token, t.logprob) for t in msg.top_logprobs] == [(5, " a", -0.5), (7, " b", -1.25)]
    usage = Usage(1, 1, 1.0, 1.0)
    (c,) = convert.to_response([Completion(0, " a", FinishReason.LENGTH, usage, (lp,))]).completions
    assert c.logprobs[0].token == " a"


def test_the_sampling_fields_arrive_as_the_engine_takes_them():
    msg = llm_pb2.GenerateRequest(prompts=["hi"], presence_penalty=0.5, frequency_penalty=0.0, logit_bias={7: -100},
                                  min_p=0.25, stop_token_ids=[3, 4], include_stop_str_in_output=True)
    assert convert.to_request(msg).params.given == {
        "presence_penalty": 0.5, "frequency_penalty": 0.0, "logit_bias": {7: -100.0}, "min_p": 0.25,
        "stop_token_ids": (3, 4), "include_stop_str_in_output": True}
