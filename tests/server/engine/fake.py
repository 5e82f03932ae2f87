"""A fake paged model for the core's unit tests: deterministic logits, no OpenVINO.

The next token after token t is t + 1 (mod VOCAB), so a prompt's answer is known in advance and EOS (the last
id) ends any prompt that counts up to it. With `context=True` the next token also depends on every token the
sequence reads back through its cache, so a wrong or stale block changes the answer (and never gives EOS).

Every step's inputs are kept and checked against the cache layout, and a shadow cache records which token and
position each slot holds: a sequence may write only blocks no other sequence of the step holds, and every
slot it reads must hold the position it expects.
"""
from __future__ import annotations

import numpy as np

VOCAB = 64
EOS = VOCAB - 1


class FakeModel:
    def __init__(self, num_blocks: int = 64, block_size: int = 4, fail: bool = False, context: bool = False):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.fail = fail
        self.context = context
        self.steps = []  # the StepInputs of every forward
        self.kv_token = np.full((num_blocks, block_size), -1, dtype=np.int64)  # the shadow cache
        self.kv_position = np.full((num_blocks, block_size), -1, dtype=np.int64)

    def forward(self, step) -> np.ndarray:
        if self.fail:
            raise RuntimeError("the device is on fire")
        self.steps.append(step)
        size = self.block_size
        tables = [step.block_indices[a:b] for a, b in zip(step.block_indices_begins, step.block_indices_begins[1:])]
        spans = list(zip(step.subsequence_begins, step.subsequence_begins[1:]))
        written = [{int(t[p // size]) for p in range(past, past + b - a)}
                   for t, past, (a, b) in zip(tables, step.past_lens, spans)]
        for i, blocks in enumerate(written):
            others = {int(b) for j, t in enumerate(tables) if j != i for b in t}
            assert not blocks & others, "a sequence writes a block another sequence of the step holds"
        seen = []  # per sequence: every token it reads (its cache, then this step's)
        for t, past, (a, b) in zip(tables, step.past_lens, spans):
            assert step.position_ids[a] == past  # positions continue the cache
            assert len(t) * size >= past + (b - a)  # room for every token
            blocks, slots = t[np.arange(past) // size], np.arange(past) % size
            assert (self.kv_position[blocks, slots] == np.arange(past)).all(), "a slot read holds another position"
            seen.append([*self.kv_token[blocks, slots].tolist(), *step.input_ids[a:b].tolist()])
            positions = np.arange(past, past + b - a)
            self.kv_token[t[positions // size], positions % size] = step.input_ids[a:b]
            self.kv_position[t[positions // size], positions % size] = positions
        logits = np.zeros((len(step.sampled), VOCAB), dtype=np.float32)
        for row, at in enumerate(step.sampled.tolist()):  # a token row: what its sequence has read up to it
            i = next(i for i, (a, b) in enumerate(spans) if a <= at < b)
            logits[row, self.next_token(seen[i][:len(seen[i]) - (spans[i][1] - 1 - at)])] = 5.0
        return logits

    def next_token(self, tokens) -> int:
        """The token that follows `tokens` (all the sequence has read: its cache, then this step's)."""
        if self.context:
            return (tokens[-1] + 1 + sum((p + 1) * tok for p, tok in enumerate(tokens))) % EOS
        return (tokens[-1] + 1) % VOCAB


class FakeTokenizer:
    """Token t is the letter chr(ord('a') + t % 26); EOS decodes to nothing (a special token)."""

    def decode(self, ids, **kwargs) -> str:
        return "".join(chr(ord("a") + t % 26) for t in ids if t != EOS)


class FakeGrammarTokenizer:
    """FakeTokenizer's vocabulary as llguidance reads one (its TokenizerWrapper): token t is one letter, EOS special."""

    eos_token_id = EOS
    bos_token_id = None
    tokens = [chr(ord("a") + t % 26).encode() for t in range(EOS)] + [b"\xff<eos>"]
    special_token_ids = [EOS]

    def __call__(self, text):
        text = text.decode() if isinstance(text, bytes) else text
        return [ord(c) - ord("a") for c in text]


def fake_grammars():
    """The core's grammar machinery over the fake vocabulary."""
    import llguidance

    from server.engine.grammar import Grammars

    return Grammars(lambda: llguidance.LLTokenizer(llguidance.TokenizerWrapper(FakeGrammarTokenizer())))
