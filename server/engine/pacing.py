"""How many prompts a step prefills: as many as keep the prompts' mean time to first token lowest.

A step costs about `fixed + per_token * tokens`. Prefilling j of k waiting prompts per step (each of about L
tokens, beside d decoding ones) gives first tokens after 1, 2, ... k/j such steps, each costing about
fixed + per_token * (d + j * L); the sum of the k first-token times is lowest at j = sqrt((fixed / per_token + d) *
k / L). On a GPU (or a CPU step dominated by reading the weights) the fixed part dominates and j covers every prompt:
one step takes them all, as vLLM's scheduler does. On a compute-bound CPU step, where each token costs about as much
as the whole fixed part, a burst of short prompts then starts a few per step instead of all in one long step, which
first-token times pay for (and, since their answers end in different steps, so do their next turns).
`StepCost` learns fixed / per_token from the steps the engine ran.
"""
from __future__ import annotations

import math

import numpy as np


class StepCost:
    """A least-squares fit of step time against the tokens it ran, recent steps weighing most."""

    def __init__(self, decay: float = 0.98, default_fixed_tokens: float = 8.0):
        self.decay = decay
        self.default = default_fixed_tokens
        self._sums = np.zeros(5)  # weight, tokens, seconds, tokens^2, tokens * seconds

    def add(self, tokens: int, seconds: float) -> None:
        self._sums = self.decay * self._sums + (1.0, tokens, seconds, tokens * tokens, tokens * seconds)

    def fixed_tokens(self) -> float:
        """A step's fixed cost in tokens' worth (fixed / per_token); the default until the fit has steps of
        different sizes; infinite when time does not grow with tokens."""
        w, t, y, tt, ty = self._sums
        spread = w * tt - t * t
        if w < 4 or spread <= 1e-6 * w * w:
            return self.default
        per_token = (w * ty - t * y) / spread
        if per_token * t <= 1e-6 * y:  # the tokens' part of the steps' time is nil
            return math.inf
        return max(0.0, (y - per_token * t) / w / per_token)


def prompts_per_step(fixed_tokens: float, decoding: int, remaining: list[int]) -> int:
    """How many of the prompts still prefilling (their `remaining` tokens, oldest first) this step should run
    beside `decoding` sequences: at least one."""
    if not remaining or math.isinf(fixed_tokens):
        return len(remaining)
    mean = sum(remaining) / len(remaining)
    return max(1, min(len(remaining), round(math.sqrt((fixed_tokens + decoding) * len(remaining) / mean))))
