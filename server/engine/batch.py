"""One running batch: its rows (one per prompt) and the padded tensors the model takes."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from server.engine.params import GenerationParams
from server.engine.types import Finished, FinishReason, TextDelta, Usage


@dataclass(eq=False)
class Row:
    handle: object  # RequestHandle: the request this prompt belongs to
    index: int  # position of the prompt in its request
    prompt_ids: list[int]
    params: GenerationParams  # resolved: the request's own values over the servable's defaults
    generator: torch.Generator | None = None
    token_ids: list[int] = field(default_factory=list)
    completion_tokens: int = 0
    sent: int = 0  # characters of `text` already sent
    text: str = ""
    first_token_at: float | None = None
    finish_reason: FinishReason | None = None
    finished_at: float = 0.0

    def __post_init__(self):
        if self.params.do_sample:
            seed = self.params.seed if self.params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            self.generator = torch.Generator().manual_seed(seed)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def send(self, text: str) -> None:
        if text:
            self.handle.emit(TextDelta(self.index, text))

    def finish(self, reason: FinishReason) -> None:
        if self.finished:
            return
        self.finish_reason = reason
        self.finished_at = now = time.monotonic()
        first = self.first_token_at if self.first_token_at is not None else now
        self.handle.emit(Finished(self.index, reason, Usage(
            prompt_tokens=len(self.prompt_ids), completion_tokens=self.completion_tokens,
            ttft_ms=(first - self.handle.arrival) * 1000.0, total_ms=(now - self.handle.arrival) * 1000.0,
        )))

    def fail(self, exc: Exception) -> None:
        """Fail this row's whole request; its other rows stop too."""
        self.handle.fail(exc)


def pad_left(rows: list[Row], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, left-padded so every row's next token lands in the last column."""
    width = max(len(r.prompt_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.prompt_ids)
        ids[i, width - n:] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, width - n:] = 1
    return ids, mask
