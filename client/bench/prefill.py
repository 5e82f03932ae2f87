"""Prefill speed: long prompts, one new token each, prompt tokens per second, two OpenAI-compatible servers in turns.

Every request anywhere (warm-up, every round, either server) has a prompt of its own: token ids drawn at random, the
first one different for every prompt, so neither server's prefix cache (ours, llama.cpp's per-slot prompt cache) can
reuse a block and every prompt token is computed. Sent as token ids on /v1/completions (load.py's "completions"
protocol, max_tokens 1, end of sequence ignored), so both servers see exactly the same tokens.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from client.bench import load
from client.bench.load import LevelResult
from client.bench.rounds import Results, median

FIRST_ID = 100  # above the vocabulary's control tokens (SmolLM2's are the first 17)


def unique_prompts(indices: Iterator[int], count: int, length: int, vocab_size: int) -> list[list[int]]:
    """`count` prompts of `length` token ids, prompt i starting with an id no other prompt starts with (i from
    `indices`, a counter shared by everything that sends prompts)."""
    span = vocab_size - FIRST_ID
    prompts = []
    for i in itertools.islice(indices, count):
        if i >= span:
            raise ValueError(f"more than {span} unique prompts asked")
        rng = random.Random(i)
        prompts.append([FIRST_ID + i] + [rng.randrange(FIRST_ID, vocab_size) for _ in range(length - 1)])
    return prompts


def prompt_tokens_per_s(result: LevelResult, length: int) -> float | None:
    return result.requests * length / result.wall_s if result.wall_s > 0 and result.requests else None


def step(name: str, url: str, metadata, indices: Iterator[int], *, length: int, requests: int, vocab_size: int,
         warmup: int = 1, timeout: float | None = 600):
    """A step of the rounds (rounds.alternate): the level's requests, each with a new prompt, on `url`'s
    /v1/completions; `warmup` requests first the first time (new prompts too)."""
    warm = []

    def run(level: int, r: int) -> dict:
        count = load.requests_at(level, requests)
        fresh = 0 if warm else warmup
        ids = unique_prompts(indices, fresh + count, length, vocab_size)
        cfg = load.LoadConfig(url="", prompts=[], tokens=1, levels=[level], requests=count, warmup=0,
                              timeout=timeout, metadata=metadata, protocol="completions", http_url=url,
                              prompt_ids=ids[fresh:])
        if fresh:
            warm_cfg = load.LoadConfig(url="", prompts=[], tokens=1, levels=[1], requests=fresh, warmup=0,
                                       timeout=timeout, metadata=metadata, protocol="completions", http_url=url,
                                       prompt_ids=ids[:fresh])
            load.run_protocols([warm_cfg], progress=lambda line: None)
        warm.append(True)
        ((result,),) = load.run_protocols([cfg], progress=lambda line: None)
        return {name: result}
    return run


def vs(results: Results, ours: str, theirs: str) -> dict[int, float | None]:
    """Per level: our prompt tokens/s over theirs (the same prompt length: the ratio of requests/s), the median of
    the per-round ratios; None where a side answered nothing."""
    def ratio(got) -> float | None:
        a, b = got[ours], got[theirs]
        if a.errors or b.errors or not a.requests or not b.requests:
            return None
        return a.requests_per_s / b.requests_per_s
    return {level: median(ratio(got) for got in per_round) for level, per_round in results.items()}
