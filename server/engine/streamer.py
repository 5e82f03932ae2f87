"""Turns each prompt's new tokens into text as soon as it decodes, and decides when the prompt is done."""
from __future__ import annotations

import time

from transformers import TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from server.engine.tokens import held_back, stop_position
from server.engine.types import FinishReason


class TokenStreamer(TextIteratorStreamer):
    """One prompt's text stream, pushed to its request instead of the parent's queue.

    Unlike its parent it flushes at every decodable token, not at word ends, and decodes incrementally:
    each token decodes only a short window (the tokens since the last flush and the ones before them, for
    context), never the whole completion again. A token that ends half-way through a multi-byte character
    is held until the character completes; text that might begin a stop string is held until it cannot.
    """

    def __init__(self, row, tokenizer, eos_token_ids: tuple[int, ...]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        self.row = row
        self.eos = frozenset(eos_token_ids)
        self.prefix_offset = 0  # window start: context for the tokens being decoded
        self.read_offset = 0  # tokens before this are already text

    def put(self, token: int, now: float | None = None) -> None:
        """The prompt's next token; may finish the prompt (end, length, stop string, cancel)."""
        row = self.row
        if row.finished:
            return
        now = time.monotonic() if now is None else now
        if row.first_token_at is None:
            row.first_token_at = now
        if row.handle.cancelled:
            self.finish(FinishReason.CANCELLED)
            return
        row.completion_tokens += 1
        if token in self.eos:
            self.finish(FinishReason.STOP)
            return
        row.token_ids.append(token)
        at_length = len(row.token_ids) >= row.params.max_new_tokens
        row.text += self._decode_new(force=at_length)
        stops = row.params.stop
        cut = stop_position(row.text, stops, row.sent)
        if cut >= 0:
            row.text = row.text[:cut]
            self.finish(FinishReason.STOP_SEQUENCE)
        elif at_length:
            self.finish(FinishReason.LENGTH)
        else:
            safe = len(row.text) - held_back(row.text, stops)
            if safe > row.sent:
                self.on_finalized_text(row.text[row.sent:safe])
                row.sent = safe

    def _decode_new(self, force: bool) -> str:
        ids = self.row.token_ids
        decode = self.tokenizer.decode
        before = decode(ids[self.prefix_offset:self.read_offset], **self.decode_kwargs)
        after = decode(ids[self.prefix_offset:], **self.decode_kwargs)
        if (after.endswith("\ufffd") and not force) or len(after) <= len(before):
            return ""  # half of a multi-byte character, or nothing printable yet: wait for more
        self.prefix_offset, self.read_offset = self.read_offset, len(ids)
        return after[len(before):]

    def finish(self, reason: FinishReason) -> None:
        """Send what is left (past any stop string cut) and end the prompt."""
        row = self.row
        if row.finished:
            return
        self.on_finalized_text(row.text[row.sent:], stream_end=True)
        row.sent = len(row.text)
        row.finish(reason)

    def end(self) -> None:
        """Generation stopped with the prompt still open: it ran into its length limit."""
        self.finish(FinishReason.LENGTH)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.row.send(text)


class BatchTextStreamer(BaseStreamer):
    """transformers' `generate` streamer for a padded batch: each row's token goes to that row's TokenStreamer.

    transformers calls `put` once with the prompts, then once per step with one new token per row,
    before it evaluates the stopping criteria, so a finish decided here stops the row in the same step.
    """

    def __init__(self, rows, tokenizer, eos_token_ids: tuple[int, ...]):
        self.streamers = [TokenStreamer(row, tokenizer, eos_token_ids) for row in rows]
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompts
            self.prompt_seen = True
            return
        now = time.monotonic()
        for streamer, token in zip(self.streamers, value.tolist()):
            try:
                streamer.put(token, now)
            except Exception as exc:  # one row's failure fails its own request only
                streamer.row.fail(exc)

    def end(self) -> None:
        for streamer in self.streamers:
            streamer.end()
