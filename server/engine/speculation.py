"""Prompt-lookup speculation (openvino-genai's prompt lookup, vLLM's n-gram proposer): no second model.

A decoding prompt whose last n tokens appeared earlier in its prompt or answer proposes the tokens that followed
them there. The core runs its last token and the proposals in one step, takes logits at every one of them, and
keeps the proposals in order while they equal the token its own rules choose (core.py). An accepted proposal
costs little: on a CPU a step over a few tokens of one sequence costs about what a step over one does.
"""
from __future__ import annotations

import numpy as np

from server.engine.params import SpeculationConfig

RETRY_AFTER = 16  # steps a prompt whose proposals kept failing waits before it proposes again


def propose(tokens: np.ndarray, k: int, config: SpeculationConfig) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the longest n-gram (max_ngram down to
    min_ngram) that `tokens` ends with; [] when none occurred."""
    size = len(tokens)
    for n in range(min(config.max_ngram, size - 1), config.min_ngram - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(tokens[:size - 1], n)  # ends before the last token
        hits = np.flatnonzero((windows == tokens[size - n:]).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return tokens[start:start + k].tolist()
    return []


def adapt(k: int, proposed: int, accepted: int, limit: int, misses: int) -> tuple[int, int]:
    """The next proposal length, and the single-token refusals in a row, from this step's outcome: one more token
    after a run fully accepted, half after one fully refused; a refused single token waits RETRY_AFTER steps
    (counted up from a negative value), twice as long after each further one (up to 8 times), before it tries 1.
    A prompt starts at 1: a refused proposal costs its tokens' compute, which on a compute-bound CPU step is not
    small (one more token: +40% of a one-token step on the AVX2 machine here, and the step after it pays for the
    change of size too), so the length is earned, and answers whose proposals keep failing try ever less often."""
    if k < 0:
        return k + 1, misses
    if k == 0:
        return 1, misses
    if not proposed:
        return k, misses
    if accepted == proposed:
        return min(limit, k + 1), 0
    if accepted:
        return k, 0
    if k > 1:
        return k // 2, misses
    return -(RETRY_AFTER << min(misses, 3)), misses + 1
