"""Turns each step's new tokens into text per row, as soon as it decodes, and decides when a row is done."""
from __future__ import annotations

import time

from transformers.generation.streamers import BaseStreamer

from server.engine.tokens import held_back, stop_position
from server.engine.types import FinishReason


class BatchTextStreamer(BaseStreamer):
    """A batch-aware TextIteratorStreamer: one text stream per row, pushed to that row's request.

    transformers calls `put` once with the prompt, then once per step with one new token per row,
    before it evaluates the stopping criteria, so a finish decided here stops the row in the same step.
    """

    def __init__(self, rows, tokenizer, eos_token_ids: tuple[int, ...]):
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos = frozenset(eos_token_ids)
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompts
            self.prompt_seen = True
            return
        now = time.monotonic()
        for row, token in zip(self.rows, value.tolist()):
            if row.finished:
                continue
            try:
                self._step(row, token, now)
            except Exception as exc:  # one row's failure fails its own request only
                row.fail(exc)

    def _step(self, row, token: int, now: float) -> None:
        if row.first_token_at is None:
            row.first_token_at = now
        if row.handle.cancelled:
            row.send(row.text[row.sent:])
            row.finish(FinishReason.CANCELLED)
            return
        row.completion_tokens += 1
        if token in self.eos:
            row.send(row.text[row.sent:])
            row.finish(FinishReason.STOP)
            return
        row.token_ids.append(token)
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        at_length = len(row.token_ids) >= row.params.max_new_tokens
        if text.endswith("\ufffd") and not at_length:
            return  # half of a multi-byte character: wait for the rest
        row.text = text
        stops = row.params.stop
        cut = stop_position(text, stops, row.sent)
        if cut >= 0:
            row.text = text[:cut]
            row.send(row.text[row.sent:])
            row.finish(FinishReason.STOP_SEQUENCE)
            return
        if at_length:
            row.send(text[row.sent:])
            row.sent = len(text)
            row.finish(FinishReason.LENGTH)
            return
        safe = len(text) - held_back(text, stops)
        if safe > row.sent:
            row.send(text[row.sent:safe])
            row.sent = safe

    def end(self) -> None:
        for row in self.rows:  # rows still open when generation stops ran into its length limit
            if not row.finished:
                row.send(row.text[row.sent:])
                row.finish(FinishReason.LENGTH)
