"""Token choosing and stopping rules, per row of a batch, so requests with different parameters share one batch."""
from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

NEG_INF = float("-inf")


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> None:
    # Same rule as transformers' RepetitionPenaltyLogitsProcessor, on one row, in place.
    picked = scores.gather(0, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    scores.scatter_(0, seen, picked)


def sample(scores: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> int:
    """One token from one row's scores: temperature, then top-k, then nucleus (top-p)."""
    logits = scores
    scores = scores / temperature
    if 0 < top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, NEG_INF)
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= top_p  # keep the smallest set whose mass reaches top_p
        scores = scores.scatter(0, order, ordered.masked_fill(drop, NEG_INF))
    probs = scores.softmax(-1)
    if not torch.isfinite(probs).all():
        # A tiny temperature or penalty overflowed the scores: take the limit, the most likely token.
        return int(torch.argmax(logits))
    return int(torch.multinomial(probs, 1, generator=generator))


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


def needs_own_choice(row) -> bool:
    """Sampling or a repetition penalty: the row's token cannot come from a plain argmax of its logits."""
    p = row.params
    return p.do_sample or p.repetition_penalty != 1.0


def choose_greedy(logits: np.ndarray, rows, eos: list[int]) -> list[int]:
    """Every row's greedy token at once; rows short of min_new_tokens cannot end yet. Changes `logits`."""
    early = [i for i, row in enumerate(rows) if len(row.token_ids) < row.params.min_new_tokens]
    if early:
        logits[np.ix_(early, eos)] = NEG_INF
    return logits.argmax(axis=1).tolist()


def choose(scores: torch.Tensor, row, eos) -> int:
    """One row's next token under its own parameters; `scores` (one row of logits) is changed in place."""
    p = row.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(row.prompt_ids + row.token_ids, dtype=torch.long)
        apply_repetition_penalty(scores, seen, p.repetition_penalty)
    if len(row.token_ids) < p.min_new_tokens:
        scores[eos] = NEG_INF
    if p.do_sample:
        return sample(scores, p.temperature, p.top_k, p.top_p, row.generator)
    return int(torch.argmax(scores))


class RowLogitsProcessor(LogitsProcessor):
    """Applies each row's own parameters; the chosen token's score becomes the only finite one, so the
    greedy selection transformers runs picks it."""

    def __init__(self, rows, eos_token_ids: tuple[int, ...]):
        self.rows = rows
        self.eos = torch.tensor(eos_token_ids, dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for r, row in enumerate(self.rows):
            if row.finished or not needs_own_choice(row) and len(row.token_ids) >= row.params.min_new_tokens:
                continue
            try:
                token = choose(scores[r], row, self.eos)
                scores[r].fill_(NEG_INF)
                scores[r, token] = 0.0
            except Exception as exc:  # one row's failure fails its own request only
                row.fail(exc)
        return scores


class RowStoppingCriteria(StoppingCriteria):
    """A row is done when the streamer has given it a finish reason (end, length, stop string, cancel)."""

    def __init__(self, rows, eos_token_ids: tuple[int, ...]):
        self.rows = rows
        # transformers pads finished rows only when a criterion carries `eos_token_id`.
        self.eos_token_id = torch.tensor(eos_token_ids)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        return torch.tensor([row.finished for row in self.rows], dtype=torch.bool)
