"""One prompt's text on the output side: incremental decoding and stop strings, off the core's thread."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import TextIteratorStreamer

from server.engine.types import Finished, FinishReason, Logprob, TextDelta, Usage


@dataclass(frozen=True)
class _Pending:
    """A generated token's logprob whose text is not all sent yet: its text is the answer's [start:end]."""

    token: int
    logprob: float
    top: tuple
    start: int
    end: int
    ending: bool  # end-of-sequence or a stop token (kept only with include_stop)


class TokenStreamer(TextIteratorStreamer):
    """One prompt's text stream, pushed to its call's collector instead of the parent's queue.

    Unlike its parent it flushes at every decodable token, not at word ends, and decodes incrementally:
    each token decodes only a short window (the tokens since the last flush and the ones before them, for
    context), never the whole completion again. A token that ends half-way through a multi-byte character
    is held until the character completes; text that might begin a stop string is held until it cannot.
    (tokenizers' DecodeStream gives the same text token by token, but drops an answer's last, incomplete
    character, which this sends as U+FFFD as a whole decode does: measured on 205 texts, 2 differed so.)
    It counts the prompt's completion tokens (end-of-sequence included) and sends its one Finished event.

    Logprobs are spelt as OpenAI's: each token's `token` is the text it added to the answer (with the tokens before
    it as context), so the tokens spell the text exactly; a token that holds part of a character adds nothing, the one
    that completes it adds the character (their own bytes are in `token_bytes`). The ending token (end-of-sequence, a
    stop token) and the tokens past a stop string's start are left out, unless `include_stop`: then the stop string
    stays in the text and the ending token in the logprobs.
    """

    def __init__(self, tokenizer, index: int, prompt_ids: list[int], stop: tuple[str, ...], eos_token_ids,
                 sink, arrival: float, stop_token_ids=(), include_stop: bool = False, ending_logprob: bool = False):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        self.index = index
        self.prompt_ids = prompt_ids
        self.stop = stop
        self.eos = frozenset(eos_token_ids)
        self.stop_token_ids = frozenset(stop_token_ids)  # end the answer as end-of-sequence does (the core's rule)
        self.include_stop = include_stop
        # The ending token's logprob (its text "") even without include_stop: echo's, as lm-evaluation-harness reads
        # the logprob after the prompt's, whatever token it is.
        self.ending_logprob = include_stop or ending_logprob
        self.sink = sink  # takes events: the call's collector
        self.arrival = arrival
        self.token_ids: list[int] = []  # the completion's tokens, end-of-sequence ones left out
        self.completion_tokens = 0
        self.text = ""
        self.sent = 0  # characters of `text` already sent
        self.first_token_at: float | None = None
        self.cached_tokens = 0  # set by the output side from the core's first output
        self.queued_at: float | None = None  # set by the engine: when it entered the core's waiting queue
        self.admitted_at: float | None = None  # set by the output side: when a step admitted it
        self.proposed = self.accepted = 0  # speculation's proposals for it, and the ones kept (the output side's)
        self.finish_reason: FinishReason | None = None
        self.prefix_offset = 0  # window start: context for the tokens being decoded
        self.read_offset = 0  # tokens before this are already text
        self._logprobs: list[_Pending] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def put(self, token: int, now: float, last: bool = False, logprob=None) -> None:
        """The prompt's next token (`last`: the core ended the prompt with it); may finish the prompt on a
        stop string."""
        if self.finished:
            return
        if self.first_token_at is None:
            self.first_token_at = now
        self.completion_tokens += 1
        ending = token in self.eos or token in self.stop_token_ids
        if ending and not self.include_stop:
            if logprob is not None and self.ending_logprob:
                self._logprobs.append(_Pending(token, logprob.logprob, logprob.top, len(self.text), len(self.text), True))
            return
        start = len(self.text)
        if not ending or token in self.stop_token_ids:  # end-of-sequence never has text; a stop token may
            self.token_ids.append(token)
            self.text += self._decode_new(force=last)
        if logprob is not None:
            self._logprobs.append(_Pending(token, logprob.logprob, logprob.top, start, len(self.text), ending))
        cut = stop_position(self.text, self.stop, self.sent)
        if cut >= 0:
            matched = next(s for s in self.stop if self.text.startswith(s, cut)) if self.include_stop else ""
            self.text = self.text[:cut + len(matched)]
            self.finish(FinishReason.STOP_SEQUENCE, now)
        elif not last:
            safe = len(self.text) - held_back(self.text, self.stop)
            if safe > self.sent:
                self.on_finalized_text(self.text[self.sent:safe])
                self.sent = safe

    def prompt_logprobs(self, values) -> None:
        """The prompt's logprobs (sampler.TokenLogprob of its tokens after the first), sent before any text."""
        first = self._logprob(self.prompt_ids[0], None)
        self.sink.put(TextDelta(self.index, "", (), (first, *(self._logprob(v.token_id, v.logprob, v.top) for v in values)),
                                len(self.prompt_ids), self.completion_tokens))

    def _logprob(self, token: int, logprob: float | None, top=()) -> Logprob:
        own_bytes = getattr(self.tokenizer, "token_bytes", None)  # ours (tokenizer.py); not transformers'
        return Logprob(token, self.tokenizer.decode([token]), logprob, tuple(self._logprob(t, lp) for t, lp in top),
                       own_bytes(token) if own_bytes else None)

    def _decode_new(self, force: bool) -> str:
        ids = self.token_ids
        decode = self.tokenizer.decode
        before = decode(ids[self.prefix_offset:self.read_offset], **self.decode_kwargs)
        after = decode(ids[self.prefix_offset:], **self.decode_kwargs)
        if (after.endswith("\ufffd") and not force) or len(after) <= len(before):
            return ""  # half of a multi-byte character, or nothing printable yet: wait for more
        self.prefix_offset, self.read_offset = self.read_offset, len(ids)
        return after[len(before):]

    def finish(self, reason: FinishReason, now: float) -> None:
        """Send what is left (past any stop string cut) and end the prompt."""
        if self.finished:
            return
        self.finish_reason = reason
        self.on_finalized_text(self.text[self.sent:], stream_end=True)
        self.sent = len(self.text)
        first = self.first_token_at if self.first_token_at is not None else now

        def since_arrival(at: float | None) -> float | None:
            return None if at is None else (at - self.arrival) * 1000.0

        self.sink.put(Finished(self.index, reason, Usage(
            prompt_tokens=len(self.prompt_ids), completion_tokens=self.completion_tokens,
            ttft_ms=since_arrival(first), total_ms=since_arrival(now), cached_tokens=self.cached_tokens,
            queued_ms=since_arrival(self.queued_at), admitted_ms=since_arrival(self.admitted_at),
            proposed_tokens=self.proposed, accepted_tokens=self.accepted)))

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Send `text` (the answer up to self.sent + len(text)) with the logprobs of the tokens that end in it; at
        the end, with every one left whose text is in the answer (a token cut by a stop string: its part before)."""
        if stream_end:  # past a stop string's cut: only the ending token (include_stop) or what decoded to nothing
            upto, cut = len(self.text), self.finish_reason == FinishReason.STOP_SEQUENCE
            done = [p for p in self._logprobs if p.start < upto or p.ending or (p.start == p.end and not cut)]
            self._logprobs = []
        else:
            upto = self.sent + len(text)
            n = next((j for j, p in enumerate(self._logprobs) if p.end > upto), len(self._logprobs))
            done, self._logprobs = self._logprobs[:n], self._logprobs[n:]
        logprobs = tuple(self._spelt(p, upto) for p in done)
        if text or logprobs:
            self.sink.put(TextDelta(self.index, text, logprobs, None, len(self.prompt_ids), self.completion_tokens))

    def _spelt(self, p: _Pending, cut: int) -> Logprob:
        """A generated token's Logprob, its text the part of the answer it added (up to `cut`): its own bytes, unless
        a stop string cut it."""
        own = self._logprob(p.token, p.logprob, p.top)
        text = self.text[p.start:min(p.end, cut)]
        return Logprob(p.token, text, p.logprob, own.top, own.token_bytes if p.end <= cut else text.encode("utf-8"))


def stop_position(text: str, stops: tuple[str, ...], start: int) -> int:
    """Where the earliest stop string begins in text[start - longest:], or -1."""
    if not stops:
        return -1
    from_ = max(0, start - max(len(s) for s in stops) + 1)
    hits = [p for p in (text.find(s, from_) for s in stops) if p >= 0]
    return min(hits) if hits else -1


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might begin a stop string, and so must not be sent yet."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
