"""A fake paged model for the core's unit tests: deterministic logits, no OpenVINO.

The next token after token t is t + 1 (mod VOCAB), so a prompt's answer is known in advance and EOS (the last
id) ends any prompt that counts up to it. Every step's inputs are kept and checked against the cache layout.
"""
from __future__ import annotations

import numpy as np

VOCAB = 64
EOS = VOCAB - 1


class FakeModel:
    def __init__(self, num_blocks: int = 64, block_size: int = 4, fail: bool = False):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.fail = fail
        self.steps = []  # the StepInputs of every forward

    def forward(self, step) -> np.ndarray:
        if self.fail:
            raise RuntimeError("the device is on fire")
        self.steps.append(step)
        tables = [step.block_indices[a:b] for a, b in zip(step.block_indices_begins, step.block_indices_begins[1:])]
        used = np.concatenate(tables) if tables else np.array([])
        assert len(set(used.tolist())) == len(used), "two sequences share a cache block"
        for i, (a, b) in enumerate(zip(step.subsequence_begins, step.subsequence_begins[1:])):
            assert step.position_ids[a] == step.past_lens[i]  # positions continue the cache
            assert len(tables[i]) * self.block_size >= step.past_lens[i] + (b - a)  # room for every token
        last = step.input_ids[step.sampled]
        logits = np.zeros((len(step.sampled), VOCAB), dtype=np.float32)
        logits[np.arange(len(last)), (last + 1) % VOCAB] = 5.0
        return logits


class FakeTokenizer:
    """Token t is the letter chr(ord('a') + t % 26); EOS decodes to nothing (a special token)."""

    def decode(self, ids, **kwargs) -> str:
        return "".join(chr(ord("a") + t % 26) for t in ids if t != EOS)
