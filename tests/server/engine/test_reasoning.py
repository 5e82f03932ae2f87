"""reasoning.py and the template's variables (chat_template_kwargs), with the real templates of the thinking
families (tests/chattemplates.py): Qwen3's thinking turned off, DeepSeek-R1's opened in the prompt, Granite's
turned on; and `<think>` answers read apart into reasoning and content, whole and streamed."""
import pytest

from chattemplates import chat_templates
from server.engine import reasoning
from server.engine.errors import ValidationError
from server.engine.model import render
from server.engine.tokenizer import Tokenizer
from server.engine.types import Message

ASK = (Message("user", "What is 2 + 2?"),)


@pytest.fixture(scope="module")
def templates():
    return chat_templates()


@pytest.fixture(scope="module")
def tokenizer_with(fp32_model_dir):
    base = Tokenizer.load(fp32_model_dir)
    return lambda template: Tokenizer(base.backend, {"bos_token": "<s>", "eos_token": "</s>"}, template)


def test_qwen3_with_enable_thinking_false_renders_without_thinking(templates, tokenizer_with):
    qwen3 = tokenizer_with(templates["Qwen-Qwen3-0.6B"])
    thinking = render(qwen3, ASK)
    plain = render(qwen3, ASK, chat_template_kwargs={"enable_thinking": False})
    assert thinking.endswith("<|im_start|>assistant\n") and not reasoning.opened(thinking)
    # Off: the answer's thought is written, empty and closed, into the prompt, so the model answers at once.
    assert plain == thinking + "<think>\n\n</think>\n\n" and not reasoning.opened(plain)
    assert reasoning.detect(qwen3.chat_template)
    assert reasoning.parse("The answer is 4.", reasoning.opened(plain)) == ("", "The answer is 4.")
    assert reasoning.parse("<think>\nTwo and two.\n</think>\n\nThe answer is 4.", reasoning.opened(thinking)) == (
        "Two and two.", "The answer is 4.")


def test_deepseek_r1_opens_the_thought_in_the_prompt_so_its_answer_starts_inside_it(templates, tokenizer_with):
    r1 = tokenizer_with(templates["deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"])
    prompt = render(r1, ASK, chat_template_kwargs={"enable_thinking": True})
    assert prompt.endswith("<｜Assistant｜><think>\n") and reasoning.opened(prompt)
    assert reasoning.parse("Two and two.\n</think>\n\nThe answer is 4.", True) == ("Two and two.", "The answer is 4.")
    assert reasoning.parse("Two and two make", True) == ("Two and two make", "")  # cut short: all thought


def test_granite_thinks_when_asked_and_its_response_tags_go(templates, tokenizer_with):
    granite = tokenizer_with(templates["ibm-granite-granite-3.3-2B-Instruct"])
    assert "<think></think>" not in render(granite, ASK)
    assert "Write your thoughts between <think></think>" in render(granite, ASK, chat_template_kwargs={"thinking": True})
    assert reasoning.parse("<think>Two and two.</think><response>The answer is 4.</response>", False) == (
        "Two and two.", "The answer is 4.")


def test_a_template_variable_the_server_sets_is_refused_naming_it(templates, tokenizer_with):
    with pytest.raises(ValidationError) as caught:
        render(tokenizer_with(templates["Qwen-Qwen3-0.6B"]), ASK, chat_template_kwargs={"add_generation_prompt": False})
    assert caught.value.field == "chat_template_kwargs.add_generation_prompt"


ANSWERS = [  # (the prompt opened the thought, the answer, its reasoning, its content)
    (False, "<think>\nTwo and two.\n</think>\n\nThe answer is 4.", "Two and two.", "The answer is 4."),
    (True, "Two and two.\n</think>\n\nThe answer is 4.", "Two and two.", "The answer is 4."),
    (True, "Two and two make", "Two and two make", ""),
    (False, "The answer is 4.", "", "The answer is 4."),
    (False, "<think>a < b </thinking> </think>4 <response> </re", "a < b </thinking>", "4 <response> </re"),
    (False, "<think>x</think><response>4</response>", "x", "4"),
]


@pytest.mark.parametrize("opened, answer, thought, content", ANSWERS)
def test_reasoning_and_content_only_grow_as_the_answer_is_written_and_end_as_the_whole(opened, answer, thought,
                                                                                        content):
    assert reasoning.parse(answer, opened) == (thought, content)
    sent = ("", "")
    for end in range(len(answer) + 1):
        now = reasoning.parse(answer[:end], opened, final=False)
        assert now[0].startswith(sent[0]) and now[1].startswith(sent[1]) and "</think>" not in now[0]
        sent = now
    assert thought.startswith(sent[0]) and content.startswith(sent[1])
