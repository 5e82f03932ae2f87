"""The serving benchmark's load on the server: per-request timings, per-level figures (percentiles), closed-loop
streams per concurrency level over gRPC or the OpenAI-compatible HTTP API.

Every request asks for exactly `tokens` new tokens (min_new_tokens = max_new_tokens), greedy, one prompt.
Definitions, per level:
- TTFT: send -> first text (client clock); TPOT per request: (end - first text) / (tokens - 1);
- ITL: gaps between consecutive text messages; E2E: send -> final message;
- requests/s and output tokens/s: over the level's wall time (first send -> last answer).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from proto import llm_pb2, llm_pb2_grpc

PROMPTS_FILE = Path(__file__).with_name("prompts.txt")


def load_prompts(path: Path = PROMPTS_FILE) -> list[str]:
    prompts = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


@dataclass
class RequestTiming:
    """One request, times in ms from sending it."""

    prompt_index: int
    ttft_ms: float
    e2e_ms: float
    tokens: int
    tpot_ms: float | None
    gaps_ms: list[float] = field(default_factory=list)  # between text messages; empty where not observable
    text: str = ""

    @classmethod
    def from_arrivals(cls, prompt_index: int, arrivals_ms: list[float], e2e_ms: float, tokens: int,
                      text: str = "") -> RequestTiming:
        """From the arrival times of the text pieces (or tokens) and the end."""
        first = arrivals_ms[0] if arrivals_ms else e2e_ms
        tpot = (e2e_ms - first) / (tokens - 1) if tokens > 1 else None
        gaps = [b - a for a, b in zip(arrivals_ms, arrivals_ms[1:])]
        return cls(prompt_index, first, e2e_ms, tokens, tpot, gaps, text)


@dataclass
class ChatTurn:
    """One turn of a conversation of the chat benchmark (chat.py), by our server or openvino-genai (genai_cb.py)."""

    conversation: int
    turn: int  # from 1
    ttft_ms: float  # the client's clock: from before the request is rendered (genai) or sent (ours)
    prompt_tokens: int
    cached_tokens: int | None  # None: the engine does not say (openvino-genai)
    answer: str
    server_ttft_ms: float | None = None  # the server's own clock (its final message's ttft_ms); None: genai


@dataclass
class Percentiles:
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        return cls(*(percentile(values, q) for q in (50, 90, 99)))


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    itl_ms: Percentiles
    e2e_ms: Percentiles
    requests_per_s: float
    output_tokens_per_s: float
    timings: list[RequestTiming]
    error_messages: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, concurrency: int, wall_s: float, timings: list[RequestTiming], errors: list[str] = ()) -> LevelResult:
        return cls(
            concurrency=concurrency, requests=len(timings), errors=len(errors), wall_s=wall_s,
            ttft_ms=Percentiles.of([t.ttft_ms for t in timings]),
            tpot_ms=Percentiles.of([t.tpot_ms for t in timings if t.tpot_ms is not None]),
            itl_ms=Percentiles.of([g for t in timings for g in t.gaps_ms]),
            e2e_ms=Percentiles.of([t.e2e_ms for t in timings]),
            requests_per_s=len(timings) / wall_s if wall_s > 0 else 0.0,
            output_tokens_per_s=sum(t.tokens for t in timings) / wall_s if wall_s > 0 else 0.0,
            timings=timings, error_messages=sorted(set(errors))[:5],
        )


@dataclass
class LoadConfig:
    url: str
    prompts: list[str]
    tokens: int
    levels: list[int]
    requests: int  # per level, rounded up to a multiple of the level's concurrency
    warmup: int
    timeout: float | None
    metadata: tuple[tuple[str, str], ...] = ()
    protocol: str = "grpc"  # or "openai": the same load as HTTP streaming on /v1/chat/completions; or "completions":
    # `prompt_ids` on /v1/completions (any OpenAI-compatible server: ours beside llama.cpp's)
    http_url: str = ""  # the HTTP API's base URL, for "openai" and "completions"
    json_schema: str | None = None  # structured output: every answer is JSON that follows this schema (JSON text)
    prompt_ids: list[list[int]] = field(default_factory=list)  # for "completions": the prompts, rendered and tokenized


def add_workload_flags(p, tokens_help: str = "new tokens per request, forced (default 128)") -> None:
    """The flags the turn-taking benchmarks (variants.py, structured.py) share: tokens, prompts, JSON output."""
    p.add_argument("--max-new-tokens", type=int, default=128, help=tokens_help)
    p.add_argument("--prompts", default=str(PROMPTS_FILE), help="prompt file, one per line")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")


def requests_at(level: int, requests: int) -> int:
    """A level's request count: `requests` rounded up so that every stream sends as many."""
    return -(-max(requests, 1) // level) * level


# ---------------------------------------------------------------- load on the server

def run_protocols(cfgs: list[LoadConfig], progress=print) -> list[list[LevelResult]]:
    """Each config's levels. With several (protocols) they take turns, one round of `concurrency` requests
    each, so the drift of a shared machine touches them alike."""
    return asyncio.run(_run_levels(cfgs, progress))


async def _run_levels(cfgs: list[LoadConfig], progress) -> list[list[LevelResult]]:
    async with contextlib.AsyncExitStack() as stack:
        senders = [await stack.enter_async_context(_sender(cfg)) for cfg in cfgs]
        for cfg, send in zip(cfgs, senders):
            for i in range(cfg.warmup):
                try:
                    await send(i)
                except Exception as exc:  # noqa: BLE001 - any protocol's: the run cannot go on, one line says why
                    raise RequestFailed(f"a warm-up request to {cfg.http_url or cfg.url} failed: "
                                        f"{type(exc).__name__}: {exc}") from None
        results: list[list[LevelResult]] = [[] for _ in cfgs]
        for level in cfgs[0].levels:
            count = requests_at(level, cfgs[0].requests)
            rounds = [range(count)] if len(cfgs) == 1 else [range(i, i + level) for i in range(0, count, level)]
            parts: list[list] = [[] for _ in cfgs]
            for indices in rounds:
                for send, mine in zip(senders, parts):
                    mine.append(await _level(send, level, indices))
            for cfg, mine, out in zip(cfgs, parts, results):
                wall = sum(w for w, _, _ in mine)
                timings = sorted((t for _, ts, _ in mine for t in ts), key=lambda t: t.prompt_index)
                result = LevelResult.of(level, wall, timings, [e for _, _, es in mine for e in es])
                name = "server " if len(cfgs) == 1 else f"{cfg.protocol:<7}"
                progress(f"{name} concurrency {level}: {result.requests} requests, {result.errors} errors, "
                         f"{result.wall_s:.1f} s")
                out.append(result)
        return results


@contextlib.asynccontextmanager
async def _sender(cfg: LoadConfig):
    """An async function sending request i of the load over cfg's protocol, returning its timing."""
    if cfg.protocol in ("openai", "completions"):
        import httpx

        # "completions" compares servers: a connection per request, as llama.cpp's server may close one after a
        # streamed answer (a reused one then fails), so both sides pay the same connect on loopback.
        limits = httpx.Limits(max_connections=None,
                              max_keepalive_connections=0 if cfg.protocol == "completions" else 64)
        async with httpx.AsyncClient(base_url=cfg.http_url, timeout=cfg.timeout, limits=limits,
                                     headers=dict(cfg.metadata)) as client:
            one = _one_openai if cfg.protocol == "openai" else _one_completion
            yield lambda i: one(client, cfg, i)
    else:
        async with grpc.aio.insecure_channel(cfg.url) as channel:
            # Connected before the clock starts: a benchmark in rounds opens a channel per level and round.
            await asyncio.wait_for(channel.channel_ready(), cfg.timeout)
            stub = llm_pb2_grpc.LLMServiceStub(channel)
            yield lambda i: _one(stub, cfg, i)


class RequestFailed(Exception):
    """One request of the load failed (any protocol); counted as an error of its level."""


async def _level(send, concurrency: int, indices: range) -> tuple[float, list[RequestTiming], list[str]]:
    """A closed loop: `concurrency` streams, each sending its next request when its answer is complete."""
    todo = iter(indices)
    timings: list[RequestTiming] = []
    errors: list[str] = []

    async def worker():
        for i in todo:
            try:
                timings.append(await send(i))
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            except (RequestFailed, OSError) as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - httpx's transport errors, without importing it here
                errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, timings, errors


async def _one(stub, cfg: LoadConfig, i: int) -> RequestTiming:
    prompt = cfg.prompts[i % len(cfg.prompts)]
    request = llm_pb2.GenerateRequest(prompts=[prompt], max_new_tokens=cfg.tokens, min_new_tokens=cfg.tokens,
                                      do_sample=False, json_schema=cfg.json_schema)
    arrivals: list[float] = []
    pieces: list[str] = []
    tokens = 0
    start = time.perf_counter()
    async for msg in stub.GenerateStream(request, timeout=cfg.timeout, metadata=cfg.metadata):
        now = (time.perf_counter() - start) * 1000
        if msg.text:
            arrivals.append(now)
            pieces.append(msg.text)
        if msg.finish_reason:
            tokens = msg.completion_tokens
    end = (time.perf_counter() - start) * 1000
    return RequestTiming.from_arrivals(i, arrivals, end, tokens, "".join(pieces))


async def _one_openai(client, cfg: LoadConfig, i: int) -> RequestTiming:
    """The same request as `_one`, as an OpenAI chat completion streamed over HTTP (server-sent events)."""
    prompt = cfg.prompts[i % len(cfg.prompts)]
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": cfg.tokens, "min_tokens": cfg.tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if cfg.json_schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": json.loads(cfg.json_schema)}}
    return await _streamed(client, "/v1/chat/completions", body, i, lambda choice: choice["delta"].get("content"))


async def _one_completion(client, cfg: LoadConfig, i: int) -> RequestTiming:
    """The prompt's token ids (already rendered with the chat template) to /v1/completions, streamed, end-of-sequence
    ignored: the request every OpenAI-compatible server takes alike (ours, llama.cpp's), with no template or
    tokenizer of its own in the way."""
    body = {"prompt": cfg.prompt_ids[i % len(cfg.prompt_ids)], "max_tokens": cfg.tokens, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    return await _streamed(client, "/v1/completions", body, i, lambda choice: choice.get("text"))


async def _streamed(client, path: str, body: dict, i: int, text_of) -> RequestTiming:
    """POST `body` to `path` and time its server-sent events: `text_of(choice)` is a chunk's new text, the usage
    chunk counts the tokens."""
    arrivals: list[float] = []
    pieces: list[str] = []
    tokens = 0
    start = time.perf_counter()
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise RequestFailed(f"HTTP {response.status_code}: {message}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = (time.perf_counter() - start) * 1000
            msg = json.loads(line[len("data: "):])
            if msg.get("error"):
                raise RequestFailed(msg["error"].get("message", "error in the stream"))
            for choice in msg.get("choices", ()):
                text = text_of(choice)
                if text:
                    arrivals.append(now)
                    pieces.append(text)
            if msg.get("usage"):
                tokens = msg["usage"]["completion_tokens"]
    end = (time.perf_counter() - start) * 1000
    return RequestTiming.from_arrivals(i, arrivals, end, tokens, "".join(pieces))
