"""The per-prompt streamer with the real tokenizer: text as soon as it decodes, never half a character, stops cut."""
import pytest
from transformers import AutoTokenizer

from server.engine.streamer import TokenStreamer, held_back, stop_position
from server.engine.types import Finished, FinishReason, TextDelta

EOS = 2


@pytest.fixture(scope="module")
def tokenizer(fp32_model_dir):
    return AutoTokenizer.from_pretrained(fp32_model_dir)


class Sink(list):
    put = list.append


def streamer(tokenizer, stop=(), sink=None):
    return TokenStreamer(tokenizer, 0, [1, 2, 3], tuple(stop), (EOS,), sink if sink is not None else Sink(), 0.0)


def run(tokenizer, texts, stop=(), max_new_tokens=100, eos=True):
    """Feed each text's tokens one step at a time, as the output side does; the core's rules end them
    (end of sequence, length). Returns each prompt's events."""
    streamers = [streamer(tokenizer, stop) for _ in texts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([EOS] if eos else []) for t in texts]
    for s, seq in zip(streamers, ids):
        for n, token in enumerate(seq[:max_new_tokens], 1):
            reason = FinishReason.STOP if token == EOS else FinishReason.LENGTH if n == max_new_tokens else None
            s.put(token, float(n), last=reason is not None)
            if reason is not None:
                s.finish(reason, float(n))
            if s.finished:
                break
    return [list(s.sink) for s in streamers]


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
    stream = streamer(tokenizer)
    windows = []
    decode = tokenizer.decode

    def spy(ids, **kwargs):
        windows.append(len(ids))
        return decode(ids, **kwargs)

    stream.tokenizer = type("Spy", (), {"decode": staticmethod(spy)})()
    text = " ".join(f"word{i}" for i in range(60))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for token in ids:
        stream.put(token, 1.0)
    stream.put(EOS, 2.0, last=True)
    stream.finish(FinishReason.STOP, 2.0)
    events = list(stream.sink)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == text
    assert len(deltas) >= len(ids) - 1  # one piece per token (a token may only complete a character)
    assert max(windows) <= 4 < len(ids)


def test_stop_position_finds_the_earliest_stop_from_where_sending_left_off():
    assert stop_position("Hello world. Bye.", (".", "Bye"), start=0) == 11
    assert stop_position("Hello world", (".",), start=0) == -1
    assert stop_position("Hello world", (), start=0) == -1
    # A stop string straddling what was already checked is still found.
    assert stop_position("abc<|end|>", ("<|end|>",), start=5) == 3


def test_held_back_keeps_a_possible_stop_prefix():
    assert held_back("The answer is <|e", ("<|end|>",)) == 3
    assert held_back("The answer is", ("<|end|>",)) == 0
    assert held_back("Paris. The", ("The end",)) == 3
    assert held_back("x", ("xy", "x")) == 1


def test_usage_counts_every_token_once_with_times_from_the_arrival():
    stream = TokenStreamer(None, 3, [1, 2, 3, 4], (), (EOS,), Sink(), arrival=10.0)
    stream.tokenizer = type("T", (), {"decode": staticmethod(lambda ids, **kw: "x" * len(ids))})()
    stream.queued_at, stream.admitted_at = 10.125, 10.25
    stream.put(7, 10.5)
    stream.put(EOS, 11.0, last=True)
    stream.finish(FinishReason.STOP, 11.0)
    final = stream.sink[-1]
    assert final.index == 3 and final.usage.prompt_tokens == 4 and final.usage.completion_tokens == 2
    assert (final.usage.queued_ms, final.usage.admitted_ms, final.usage.ttft_ms, final.usage.total_ms) == \
        (125.0, 250.0, 500.0, 1000.0)


def test_logprobs_carry_each_tokens_own_bytes(fp32_model_dir):
    """With the server's tokenizer, a token that is part of a character has its true bytes, its alternatives too;
    it adds no text (the token that completes the character adds it), so the tokens spell the text."""
    from server.engine.sampler import TokenLogprob
    from server.engine.tokenizer import Tokenizer

    ours = Tokenizer.load(fp32_model_dir)
    s = streamer(ours)
    ids = ours.encode("家族 😀", add_special_tokens=False)
    for n, token in enumerate(ids, 1):
        s.put(token, float(n), last=n == len(ids), logprob=TokenLogprob(token, -0.5, ((token, -0.5), (EOS, -2.0))))
    s.finish(FinishReason.LENGTH, 9.0)
    logprobs = [lp for e in s.sink if isinstance(e, TextDelta) for lp in e.logprobs]
    assert [lp.token_id for lp in logprobs] == ids and logprobs[0].token == ""
    assert "".join(lp.token for lp in logprobs) == "家族 😀"
    assert b"".join(lp.token_bytes for lp in logprobs) == "家族 😀".encode()
    assert [t.token_bytes for t in logprobs[0].top] == [logprobs[0].token_bytes, b"<|im_end|>"]


def spelt(tokenizer, text, stop=(), ending=EOS, include_stop=False, stop_token_ids=(), ending_logprob=False):
    """Feed `text`'s tokens, each with a logprob, then `ending` (None: the length limit ends it); returns the text
    sent and the logprobs sent, in order."""
    from server.engine.sampler import TokenLogprob

    s = TokenStreamer(tokenizer, 0, [1, 2, 3], tuple(stop), (EOS,), Sink(), 0.0, stop_token_ids, include_stop,
                      ending_logprob)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([ending] if ending is not None else [])
    for n, token in enumerate(ids, 1):
        last = n == len(ids)
        s.put(token, float(n), last=last, logprob=TokenLogprob(token, -0.5))
        if s.finished:
            break
        if last:
            s.finish(FinishReason.STOP if ending is not None else FinishReason.LENGTH, float(n))
    deltas = [e for e in s.sink if isinstance(e, TextDelta)]
    return "".join(e.text for e in deltas), [lp for e in deltas for lp in e.logprobs], deltas


@pytest.mark.parametrize("text, stop", [
    ("The capital of France is Paris.", ()),
    ("Café crème, naïve 😀🚀 — 東京 and\nnew lines", ()),
    ("The answer is 42. END of it", ("END",)),
    ("Paris. Rome", (". R",)),  # the stop string starts inside a token: that token's part before it stays
])
def test_logprob_tokens_spell_the_text_sent_without_the_end_or_the_stop_string(tokenizer, text, stop):
    sent, logprobs, deltas = spelt(tokenizer, text, stop)
    assert "".join(lp.token for lp in logprobs) == sent
    assert EOS not in [lp.token_id for lp in logprobs]
    for delta in deltas:  # every chunk carries the logprobs of the tokens that made its text
        assert "".join(lp.token for lp in delta.logprobs) == delta.text


def test_include_stop_str_in_output_keeps_the_stop_string_and_the_ending_token(tokenizer):
    sent, logprobs, _ = spelt(tokenizer, "The answer is 42. END of it", ("END",), include_stop=True)
    assert sent == "The answer is 42. END" and "".join(lp.token for lp in logprobs) == sent
    sent, logprobs, _ = spelt(tokenizer, "Paris.", include_stop=True)
    assert sent == "Paris." and logprobs[-1].token_id == EOS and logprobs[-1].token == ""


def test_a_stop_token_ends_the_text_without_its_own_unless_asked(tokenizer):
    dot = tokenizer(".", add_special_tokens=False)["input_ids"][0]
    sent, logprobs, _ = spelt(tokenizer, "Paris", ending=dot, stop_token_ids=(dot,))
    assert sent == "Paris" and dot not in [lp.token_id for lp in logprobs]
    sent, logprobs, _ = spelt(tokenizer, "Paris", ending=dot, stop_token_ids=(dot,), include_stop=True)
    assert sent == "Paris." and logprobs[-1].token == "."


def test_echo_keeps_the_ending_tokens_logprob_with_no_text(tokenizer):
    """lm-evaluation-harness reads the logprob after the prompt's, whatever the token: echo keeps the end's."""
    sent, logprobs, _ = spelt(tokenizer, "Paris.", ending_logprob=True)
    assert sent == "Paris." and logprobs[-1].token_id == EOS and logprobs[-1].token == ""
    assert "".join(lp.token for lp in logprobs) == sent
