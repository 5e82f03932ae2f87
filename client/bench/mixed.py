"""A mixed load, as a server meets it: closed-loop streams sending chat completions of random prompt and answer
lengths, streamed and not, sampled and greedy (seeded: the same run every time). For memory: the server's RSS under
it, against what its weights and KV cache account for (sizes.py)."""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

TEXT_FILE = Path(__file__).with_name("grounded.txt")  # ~1,400 words: prompts are random slices of it


@dataclass(frozen=True)
class MixedRequest:
    words: tuple[int, int]  # the prompt: words [start, end) of the text
    max_tokens: int
    stream: bool
    temperature: float


def requests(count: int, seed: int = 0, words: int = 1366, max_prompt_words: int = 900,
             max_tokens: int = 256) -> list[MixedRequest]:
    """`count` requests, prompts from a few words to `max_prompt_words`, answers 1 to `max_tokens` tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = min(int(rng.expovariate(1 / 150)) + 3, max_prompt_words, words)
        start = rng.randrange(0, words - length + 1)
        out.append(MixedRequest((start, start + length), rng.randint(1, max_tokens), rng.random() < 0.5,
                                0.0 if rng.random() < 0.5 else 0.8))
    return out


@dataclass
class MixedResult:
    requests: int
    errors: int
    completion_tokens: int
    wall_s: float
    error_messages: list[str]


def run(http_url: str, todo: list[MixedRequest], streams: int, metadata=(), timeout: float = 1800,
        text_file: Path = TEXT_FILE) -> MixedResult:
    return asyncio.run(_run(http_url, todo, streams, dict(metadata), timeout, text_file.read_text().split()))


async def _run(http_url, todo, streams, headers, timeout, text) -> MixedResult:
    import httpx

    queue = iter(todo)
    tokens, errors = [0], []

    async def worker(client):
        for req in queue:
            body = {"messages": [{"role": "user", "content": " ".join(text[req.words[0]:req.words[1]])}],
                    "max_tokens": req.max_tokens, "temperature": req.temperature, "stream": req.stream,
                    **({"stream_options": {"include_usage": True}} if req.stream else {})}
            try:
                if req.stream:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                        if response.status_code != 200:
                            await response.aread()
                            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                            continue
                        async for line in response.aiter_lines():
                            if line.startswith("data: {") and '"usage"' in line:
                                usage = json.loads(line[len("data: "):]).get("usage") or {}
                                tokens[0] += usage.get("completion_tokens", 0)
                else:
                    response = await client.post("/v1/chat/completions", json=body)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                        continue
                    tokens[0] += response.json()["usage"]["completion_tokens"]
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=http_url, timeout=timeout, headers=headers,
                                 limits=httpx.Limits(max_connections=None)) as client:
        await asyncio.gather(*(worker(client) for _ in range(streams)))
    return MixedResult(len(todo) - len(errors), len(errors), tokens[0], time.perf_counter() - start,
                       sorted(set(errors))[:5])
