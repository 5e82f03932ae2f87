"""The batch streamer with the real tokenizer: text as soon as it decodes, never half a character, stops cut."""
import pytest
import torch
from transformers import AutoTokenizer

from server.engine.batch import Row
from server.engine.engine import RequestHandle
from server.engine.params import GenerationParams
from server.engine.streamer import BatchTextStreamer
from server.engine.types import Finished, FinishReason, TextDelta

EOS = 2


@pytest.fixture(scope="module")
def tokenizer(fp32_model_dir):
    return AutoTokenizer.from_pretrained(fp32_model_dir)


def resolved(max_new_tokens=100, stop=()):
    return GenerationParams(max_new_tokens=max_new_tokens, stop=tuple(stop))


def run(tokenizer, texts, stop=(), max_new_tokens=100, eos=True):
    """Feed each text's tokens one step at a time, as generate would; returns each row's events."""
    handles, rows = [], []
    for i, _ in enumerate(texts):
        h = RequestHandle(resolved(max_new_tokens, stop), None, lambda h: None)
        h.attach([Row(h, 0, [1, 2, 3], h.params)])
        handles.append(h)
        rows.extend(h.rows)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([EOS] if eos else []) for t in texts]
    streamer = BatchTextStreamer(rows, tokenizer, (EOS,))
    streamer.put(torch.zeros((len(rows), 3), dtype=torch.long))
    for step in range(max(map(len, ids))):
        streamer.put(torch.tensor([seq[step] if step < len(seq) else EOS for seq in ids]))
    streamer.end()
    return [list(h.events(timeout=1)) for h in handles]


def test_multibyte_characters_arrive_whole(tokenizer):
    text = "Café crème, naïve 😀🚀 — 東京 and\nnew lines"
    (events,) = run(tokenizer, [text])
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert len(deltas) > 5  # sent piece by piece, not at the end
    assert events[-1].reason == FinishReason.STOP


def test_rows_of_one_batch_stream_separately_and_finish_on_their_own(tokenizer):
    short, long = run(tokenizer, ["Paris.", "The theory of relativity is a theory."])
    assert "".join(e.text for e in short if isinstance(e, TextDelta)) == "Paris."
    assert "".join(e.text for e in long if isinstance(e, TextDelta)) == "The theory of relativity is a theory."
    assert short[-1].usage.completion_tokens < long[-1].usage.completion_tokens


def test_stop_string_is_cut_and_never_sent_in_part(tokenizer):
    (events,) = run(tokenizer, ["The answer is 42. END of it"], stop=["END"])
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "The answer is 42. "
    assert all("E" not in d for d in deltas)
    assert events[-1].reason == FinishReason.STOP_SEQUENCE


def test_a_held_back_prefix_is_released_when_the_stop_does_not_follow(tokenizer):
    (events,) = run(tokenizer, ["Hello Earth and ENDless sky"], stop=["ENDX"])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello Earth and ENDless sky"


def test_length_limit(tokenizer):
    (events,) = run(tokenizer, ["one two three four five six seven"], max_new_tokens=3, eos=False)
    final = events[-1]
    assert isinstance(final, Finished) and final.reason == FinishReason.LENGTH and final.usage.completion_tokens == 3
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"


def test_token_streamer_flushes_every_token_and_decodes_a_short_window(tokenizer):
    """Each word arrives with its own token (not at word ends), and no decode sees the whole completion."""
    from server.engine.streamer import TokenStreamer

    h = RequestHandle(resolved(max_new_tokens=1000), None, lambda h: None)
    h.attach([Row(h, 0, [1, 2, 3], h.params)])
    streamer = TokenStreamer(h.rows[0], tokenizer, (EOS,))
    windows = []
    decode = tokenizer.decode

    def spy(ids, **kwargs):
        windows.append(len(ids))
        return decode(ids, **kwargs)

    streamer.tokenizer = type("Spy", (), {"decode": staticmethod(spy)})()
    text = " ".join(f"word{i}" for i in range(60))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for token in ids:
        streamer.put(token)
    streamer.put(EOS)
    events = list(h.events(timeout=1))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == text
    assert len(deltas) >= len(ids) - 1  # one piece per token (a token may only complete a character)
    assert max(windows) <= 4 < len(ids)
