"""KServe tensors <-> prompts and replies, as plain functions (no server): the demo's three request forms, the
reply shapes, the parameters, the errors naming the input and the element."""
from __future__ import annotations

import struct

import pytest

from server.engine.errors import QueueFull, ValidationError
from server.errors import ModelNotFound
from server.kserve import protocol as kp


def prefixed(*texts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


def test_length_prefixed_prompts_of_the_2024_1_client():
    got = kp.raw_prompts(prefixed("Who is Albert Einstein?".encode(), "Ça va?".encode()), 2)
    assert got == kp.Prompts(("Who is Albert Einstein?", "Ça va?"), plain=False)


def test_plain_text_of_the_2024_0_one_prompt_client_shape_one():
    assert kp.raw_prompts(b"What is the theory of relativity?", 1) == kp.Prompts(
        ("What is the theory of relativity?",), plain=True)


def test_plain_text_of_the_2023_3_client_shape_its_length():
    text = "What is the theory of relativity?"
    assert kp.raw_prompts(text.encode(), len(text)) == kp.Prompts((text,), plain=True)
    # its shape counted characters: the same when the text is not ASCII
    assert kp.raw_prompts("Qu'est-ce que la relativité?".encode(), len("Qu'est-ce que la relativité?")).plain


@pytest.mark.parametrize("buffer, count, field", [
    (prefixed(b"hello") + struct.pack("<I", 100) + b"x", 2, "pre_prompt[1]"),  # a length running past the end
    (prefixed(b"hello"), 3, "pre_prompt[1]"),  # fewer elements than the shape says
    (prefixed(b"a", b"b") + b"junk", 2, "pre_prompt"),  # bytes left over
    (prefixed(b"ok", b"\xff\xfe"), 2, "pre_prompt[1]"),  # invalid UTF-8 in an element
    (b"\xff\xfe plain", 1, "pre_prompt"),  # invalid UTF-8 in a plain prompt
])
def test_bad_buffers_name_the_input_and_the_element(buffer, count, field):
    with pytest.raises(ValidationError) as caught:
        kp.raw_prompts(buffer, count)
    assert caught.value.field == field


def test_inputs_are_found_by_name_and_checked():
    assert kp.find_prompt_input(["x", "pre_prompt"]) == 1
    with pytest.raises(ValidationError, match="no input named pre_prompt"):
        kp.find_prompt_input(["prompt"])
    with pytest.raises(ValidationError, match="pre_prompt.datatype: expected BYTES"):
        kp.check_tensor("FP32", [1])
    with pytest.raises(ValidationError, match="pre_prompt.shape"):
        kp.check_tensor("BYTES", [0])
    assert kp.check_tensor("BYTES", [1, 3]) == 3
    with pytest.raises(ValidationError, match="pre_prompt.shape: says 2 elements, but 1"):
        kp.element_prompts(["a"], 2)


def test_parameters_take_our_names_and_kinds():
    params = kp.sampling({"max_new_tokens": 8, "temperature": 1, "do_sample": True, "stop": "END", "seed": 3})
    assert params.given == {"max_new_tokens": 8, "temperature": 1.0, "do_sample": True, "stop": ("END",), "seed": 3}
    assert kp.sampling({"stop": ["a", "b"]}).given == {"stop": ("a", "b")}
    for bad, field in (({"temperature": "hot"}, "parameters.temperature"), ({"max_new_tokens": 1.5}, "parameters.max_new_tokens"),
                       ({"do_sample": 1}, "parameters.do_sample"), ({"max_new_tokens": True}, "parameters.max_new_tokens"),
                       ({"beam_width": 4}, "parameters.beam_width")):
        with pytest.raises(ValidationError) as caught:
            kp.sampling(bad)
        assert caught.value.field == field


def test_engine_errors_are_said_in_kserve_names():
    assert kp.kserve_message(ValidationError("prompts[1]", "must not be empty")) == "pre_prompt[1]: must not be empty"
    assert kp.kserve_message(ValidationError("max_new_tokens", "must be at least 1")) == \
        "parameters.max_new_tokens: must be at least 1"
    assert str(kp.renamed(ValidationError("prompts", "9 given"))) == "pre_prompt: 9 given"
    assert kp.kserve_message(QueueFull("the queue is full")) == "the queue is full"


def test_models_are_checked_by_name_and_version():
    kp.check_model("python_model", "", ("python_model", "smollm2"))
    kp.check_model("smollm2", "1", ("python_model", "smollm2"))
    with pytest.raises(ModelNotFound):
        kp.check_model("other", "", ("python_model",))
    with pytest.raises(ModelNotFound):
        kp.check_model("python_model", "2", ("python_model",))


def test_unary_reply_completion_first_then_token_count():
    completion, count = kp.whole_reply(["Paris.", "Tokyo."], 7, plain=False)
    assert (completion.name, completion.datatype, completion.shape) == ("completion", "BYTES", (2,))
    assert completion.raw == prefixed(b"Paris.", b"Tokyo.")
    assert (count.name, count.datatype, count.shape, count.raw) == ("token_count", "INT32", (1,), struct.pack("<i", 7))
    (plain,) = kp.whole_reply(["Paris."], 7, plain=True)  # the plain-text clients read raw text
    assert (plain.name, plain.datatype, plain.shape, plain.raw) == ("completion", "UINT8", (6,), b"Paris.")


def test_stream_replies_one_output_each_then_the_count_with_empty_completions_then_end_signal():
    (delta,) = kp.delta_reply(3, 1, "Tok", plain=False)
    assert delta.shape == (3,) and delta.raw == prefixed(b"", b"Tok", b"")
    last, end = kp.final_replies(3, 12, plain=False)
    assert [o.name for o in last] == ["completion", "token_count"] and last[0].raw == prefixed(b"", b"", b"")
    assert [(o.name, o.datatype, o.shape, o.raw) for o in end] == [("end_signal", "UINT8", (0,), b"")]
    # the plain-text clients know only completion and end_signal
    assert [[o.name for o in m] for m in kp.final_replies(1, 12, plain=True)] == [["end_signal"]]
