"""answers.py: a chat answer read apart into reasoning, content and calls, whole and streamed."""
import pytest

from server.engine.tool_parsers import Hermes
from server.http.answers import AnswerFormat, Reader, message_fields, whole

THOUGHT_AND_CALL = ('<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", '
                    '"arguments": {"city": "Paris"}}\n</tool_call>')


def streamed(form: AnswerFormat, text: str, step: int) -> tuple[str, str, list]:
    reader, thought, content, calls = Reader(form), "", "", {}
    for p in [reader.feed(text[i:i + step]) for i in range(0, len(text), step)] + [reader.finish()]:
        thought, content = thought + p.reasoning, content + p.content
        for d in p.tool_calls:
            call = calls.setdefault(d["index"], ["", ""])
            call[0] += d.get("function", {}).get("name", "")
            call[1] += d.get("function", {}).get("arguments", "")
    return thought, content, [tuple(c) for c in calls.values()]


def test_a_thought_then_a_call_reads_as_reasoning_and_a_call_whole_and_streamed():
    form = AnswerFormat(Hermes(), thinking=False)
    piece = whole(form, THOUGHT_AND_CALL)
    assert piece.reasoning == "The user wants the weather." and piece.content == ""
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in piece.tool_calls] == [
        ("get_weather", '{"city": "Paris"}')]
    assert message_fields(piece, form) == {"reasoning": "The user wants the weather.",
                                           "reasoning_content": "The user wants the weather."}
    for step in (1, 4, 9):
        assert streamed(form, THOUGHT_AND_CALL, step) == ("The user wants the weather.", "",
                                                          [("get_weather", '{"city": "Paris"}')])


@pytest.mark.parametrize("form", [AnswerFormat(), AnswerFormat(Hermes())])
def test_a_model_that_does_not_think_has_no_reasoning_fields_and_think_tags_stay_content(form):
    piece = whole(form, "<think>x</think>y")
    assert (piece.reasoning, piece.content, message_fields(piece, form)) == ("", "<think>x</think>y", {})
