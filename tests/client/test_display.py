"""The stream client's in-place display, on a string instead of a terminal."""
from __future__ import annotations

import io

from client.display import Blocks, Live, wrap


def test_wrap_hard_wraps_at_the_width_and_keeps_empty_lines():
    assert wrap("abcdefg\n\nxy", 3) == ["abc", "def", "g", "", "xy"]


def test_live_redraws_in_place_and_ends_with_the_whole_blocks(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "10")
    out = io.StringIO()
    ticks = iter(range(1000))
    live = Live(["first?", "second?"], out, clock=lambda: next(ticks))
    for word in ["alpha ", "beta ", "gamma " * 30]:
        live.text(0, word)
        live.text(1, word.upper())
    live.finished(0)
    live.close()
    screen = out.getvalue()
    assert "\x1b[J" in screen  # redrawn in place
    final = screen.split("\x1b[J")[-1]
    assert final.startswith("==== Prompt: first? ====\n")
    assert "".join(final.split("==== Prompt: second? ====")[0].splitlines()[1:]).startswith("alpha beta gamma")
    assert ("gamma " * 30).strip() in "".join(final.splitlines())


def test_blocks_print_whole_blocks_as_prompts_finish_and_the_rest_at_close():
    out = io.StringIO()
    blocks = Blocks(["a?", "b?"], out)
    blocks.text(1, "B text")
    blocks.text(0, "A text")
    blocks.finished(1)
    assert out.getvalue() == "==== Prompt: b? ====\nB text\n\n"
    blocks.close()
    assert out.getvalue().endswith("==== Prompt: a? ==== (unfinished)\nA text\n\n")
