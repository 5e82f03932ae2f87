"""Request checks are plain functions: each bad field is named, good requests get the defaults."""
import math
from dataclasses import replace

import pytest

from server.engine.errors import ValidationError
from server.engine.params import GenerationParams, Limits
from server.engine.types import GenerationRequest, GivenParams, Message
from server.engine.validation import (check_inputs, check_lengths, check_sampling_tokens, check_token_ids,
                                      openai_defaults, resolve_params)

LIMITS = Limits(max_batch=4, max_prompt_tokens=100, max_new_tokens_cap=50, max_stop_strings=2, max_stop_length=5)
DEFAULTS = GenerationParams(max_new_tokens=20)


def params(**kw) -> GenerationRequest:
    return GenerationRequest(prompts=("hi",), params=GivenParams(**kw))


def field_of(fn, *args) -> str:
    with pytest.raises(ValidationError) as caught:
        fn(*args)
    return caught.value.field


def test_defaults_fill_unset_fields():
    p = resolve_params(params(), DEFAULTS, LIMITS)
    assert (p.max_new_tokens, p.min_new_tokens, p.do_sample, p.temperature, p.top_p) == (20, 0, False, 1.0, 1.0)


def test_resolved_params_are_the_defaults_with_the_request_own_values():
    # The servable's stop strings (the model's markers) are added to the request's and not held to its limits.
    defaults = GenerationParams(max_new_tokens=20, stop=("<|im_end|>", "a", "b"))
    p = resolve_params(params(top_k=5, stop=("x",)), defaults, LIMITS)
    assert p == replace(defaults, top_k=5, do_sample=True, stop=("x", "<|im_end|>", "a", "b"))


def test_a_name_that_is_no_parameter_is_refused():
    with pytest.raises(TypeError, match="tempreature"):
        GivenParams(tempreature=0.5)


def test_a_sampling_parameter_turns_sampling_on_unless_told_otherwise():
    assert resolve_params(params(temperature=0.7), DEFAULTS, LIMITS).do_sample
    assert not resolve_params(params(temperature=0.7, do_sample=False), DEFAULTS, LIMITS).do_sample
    assert not resolve_params(params(temperature=0.0, do_sample=True), DEFAULTS, LIMITS).do_sample


@pytest.mark.parametrize(("kw", "field"), [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_p": math.nan}, "top_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"repetition_penalty": -1.0}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 51}, "max_new_tokens"),
    ({"max_new_tokens": 5, "min_new_tokens": 6}, "min_new_tokens"),
    ({"seed": 2**64 - 1}, "seed"),
    ({"stop": ("a", "b", "c")}, "stop"),
    ({"stop": ("toolong",)}, "stop[0]"),
    ({"stop": ("ok", "")}, "stop[1]"),
])
def test_bad_parameter_names_its_field(kw, field):
    assert field_of(resolve_params, params(**kw), DEFAULTS, LIMITS) == field


@pytest.mark.parametrize(("request_", "field"), [
    (GenerationRequest(), "prompts"),
    (GenerationRequest(prompts=("a",), conversations=((Message("user", "b"),),)), "prompts"),
    (GenerationRequest(prompts=("a", "\n\t ")), "prompts[1]"),
    (GenerationRequest(prompts=("a",) * 5), "prompts"),
    (GenerationRequest(conversations=((),)), "conversations[0].messages"),
    (GenerationRequest(conversations=((Message("user", "a"), Message("robot", "b")),)), "conversations[0].messages[1].role"),
    (GenerationRequest(conversations=((Message("user", "a"),),), raw=True), "raw"),
])
def test_bad_inputs_name_their_field(request_, field):
    assert field_of(check_inputs, request_, LIMITS) == field


def test_lengths_check_the_prompt_limit_and_the_context():
    p = resolve_params(params(max_new_tokens=50), DEFAULTS, LIMITS)
    check_lengths("prompts", [100, 10], p, LIMITS, context_length=150)
    assert field_of(check_lengths, "prompts", [10, 101], p, LIMITS, 1000) == "prompts[1]"
    assert field_of(check_lengths, "conversations", [60], p, LIMITS, 100) == "conversations[0]"


def test_logprob_counts_token_ids_and_max_new_tokens_zero():
    limits = Limits(max_batch=8)
    for name in ("logprobs", "prompt_logprobs"):
        with pytest.raises(ValidationError) as caught:
            check_inputs(GenerationRequest(prompts=("hi",), **{name: 21}), limits)
        assert caught.value.field == name
    check_inputs(GenerationRequest(prompt_ids=((1, 2),), logprobs=20, prompt_logprobs=0), limits)
    with pytest.raises(ValidationError) as caught:
        check_inputs(GenerationRequest(prompts=("hi",), prompt_ids=((1,),)), limits)
    assert caught.value.field == "prompts"
    with pytest.raises(ValidationError) as caught:
        check_token_ids("prompt_ids[1]", [0, 5, 64], vocab_size=64)
    assert caught.value.field == "prompt_ids[1][2]"
    zero = GivenParams(max_new_tokens=0)
    assert resolve_params(GenerationRequest(prompts=("hi",), params=zero, prompt_logprobs=0),
                          GenerationParams(), limits).max_new_tokens == 0
    with pytest.raises(ValidationError, match="at least 1"):
        resolve_params(GenerationRequest(prompts=("hi",), params=zero), GenerationParams(), limits)


def test_ignore_eos_runs_to_max_new_tokens():
    p = resolve_params(GenerationRequest(prompts=("hi",), params=GivenParams(ignore_eos=True, max_new_tokens=9)),
                       GenerationParams(), Limits(max_batch=8))
    assert p.min_new_tokens == 9


@pytest.mark.parametrize(("kw", "field"), [
    ({"min_new_tokens": -1}, "min_new_tokens"),
    ({"top_k": -1}, "top_k"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"max_new_tokens": 5.0}, "max_new_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": False}, "temperature"),
    ({"do_sample": 1}, "do_sample"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"seed": -1}, "seed"),
    ({"stop": "abc"}, "stop"),  # one string, not three one-letter stops
    ({"stop": ("a", 3)}, "stop"),
])
def test_the_in_process_api_is_held_to_every_bound_and_type(kw, field):
    """Without a transport in front (AsyncEngine used in-process), the engine itself refuses what gRPC's types and
    the HTTP schema would."""
    assert field_of(resolve_params, params(**kw), DEFAULTS, LIMITS) == field


def test_an_integer_is_a_number_and_a_list_of_stops_will_do():
    p = resolve_params(params(temperature=1, stop=["x"]), DEFAULTS, LIMITS)
    assert p.temperature == 1 and p.stop == ("x",)


@pytest.mark.parametrize(("request_", "field"), [
    (GenerationRequest(prompts=(b"hi",)), "prompts[0]"),
    (GenerationRequest(conversations=((Message("user", None),),)), "conversations[0].messages[0].content"),
    (GenerationRequest(conversations=((Message(3, "hi"),),)), "conversations[0].messages[0].role"),
    (GenerationRequest(prompts=("hi",), system_prompt=3), "system_prompt"),
    (GenerationRequest(prompts=("hi",), logprobs=True), "logprobs"),
    (GenerationRequest(prompts=("hi",), logprobs=21), "logprobs"),
    (GenerationRequest(prompts=("hi",), prompt_logprobs=-1), "prompt_logprobs"),
])
def test_in_process_inputs_are_checked_too(request_, field):
    assert field_of(check_inputs, request_, Limits(max_batch=8)) == field


def test_token_ids_are_integers_in_the_vocabulary():
    check_token_ids("prompt_ids[0]", [0, 63], vocab_size=64)
    for ids, at in (([0, -1], 1), ([1, True], 1), ([1.0], 0), (["5"], 0)):
        assert field_of(check_token_ids, "prompt_ids[0]", ids, 64) == f"prompt_ids[0][{at}]"


@pytest.mark.parametrize(("kw", "field"), [
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"frequency_penalty": math.nan}, "frequency_penalty"),
    ({"min_p": 1.5}, "min_p"),
    ({"min_p": math.inf}, "min_p"),
    ({"logit_bias": {5: 101}}, "logit_bias"),
    ({"logit_bias": {5: math.nan}}, "logit_bias"),
    ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"logit_bias": {i: 1 for i in range(5000)}}, "logit_bias"),  # a huge map: refused before any work
    ({"logit_bias": [5, 6]}, "logit_bias"),
    ({"stop_token_ids": 5}, "stop_token_ids"),
    ({"stop_token_ids": [1.0]}, "stop_token_ids"),
    ({"stop_token_ids": list(range(1000))}, "stop_token_ids"),
    ({"include_stop_str_in_output": 1}, "include_stop_str_in_output"),
])
def test_sampling_fields_out_of_range_name_their_field(kw, field):
    assert field_of(resolve_params, params(**kw), DEFAULTS, LIMITS) == field


def test_sampling_fields_resolve_to_plain_tuples_and_their_tokens_are_in_the_vocabulary():
    p = resolve_params(params(logit_bias={7: -100, 3: 2.5}, stop_token_ids=[4, 4, 9], min_p=0.1), DEFAULTS, LIMITS)
    assert (p.logit_bias, p.stop_token_ids, p.min_p, p.do_sample) == (((7, -100), (3, 2.5)), (4, 9), 0.1, False)
    check_sampling_tokens(p, vocab_size=10)
    assert field_of(check_sampling_tokens, replace(p, logit_bias=((10, 1.0),)), 10) == "logit_bias"
    assert field_of(check_sampling_tokens, replace(p, stop_token_ids=(1, 12)), 10) == "stop_token_ids[1]"


# ---------------------------------------------------------------- the OpenAI API's defaults

SERVABLE = GenerationParams(max_new_tokens=20, temperature=0.8, top_k=7, do_sample=False)
# Qwen3's generation_config.json, with what vLLM does not take from it (do_sample, ids, max_length).
QWEN3 = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": [151645, 151643],
         "max_length": 32768, "transformers_version": "4.51.0"}


def test_openai_defaults_take_the_model_file_over_the_servable_and_sample():
    defaults, taken = openai_defaults(SERVABLE, QWEN3, LIMITS)
    assert taken == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert defaults == replace(SERVABLE, temperature=0.6, top_p=0.95, top_k=20, do_sample=True)
    # without a file (or generation_config servable): the servable's values, sampling still (OpenAI has no do_sample)
    assert openai_defaults(SERVABLE, {}, LIMITS) == (replace(SERVABLE, do_sample=True), {})
    # the servable's do_sample: false stays gRPC's default
    assert not resolve_params(params(), SERVABLE, LIMITS).do_sample


def test_a_request_on_openai_defaults_samples_unless_temperature_0_and_its_own_values_win():
    defaults, _ = openai_defaults(SERVABLE, QWEN3, LIMITS)
    p = resolve_params(params(), defaults, LIMITS)
    assert (p.do_sample, p.temperature, p.top_p, p.top_k, p.max_new_tokens) == (True, 0.6, 0.95, 20, 20)
    assert not resolve_params(params(temperature=0), defaults, LIMITS).do_sample
    p = resolve_params(params(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=5), defaults, LIMITS)
    assert (p.do_sample, p.temperature, p.top_p, p.top_k, p.max_new_tokens) == (True, 1.0, 1.0, 0, 5)


def test_the_model_file_max_new_tokens_and_min_p_are_taken_and_capped():
    defaults, taken = openai_defaults(SERVABLE, {"max_new_tokens": 4096, "min_p": 0.05, "repetition_penalty": 1.1},
                                      LIMITS)
    assert taken == {"max_new_tokens": 50, "min_p": 0.05, "repetition_penalty": 1.1}  # LIMITS' cap: 50
    assert (defaults.max_new_tokens, defaults.min_p, defaults.repetition_penalty) == (50, 0.05, 1.1)


@pytest.mark.parametrize("file, field", [
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": -1}, "top_k"),
    ({"top_k": 2.5}, "top_k"), ({"min_p": 2}, "min_p"), ({"repetition_penalty": "1.1"}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": float("nan")}, "temperature"),
])
def test_a_model_file_value_no_request_could_send_is_named(file, field):
    assert field_of(openai_defaults, SERVABLE, file, LIMITS) == field

