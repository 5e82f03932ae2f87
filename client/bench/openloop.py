"""Open-loop load on the server: requests arrive as a Poisson process at a given rate, whatever the server's
state (as vLLM's serving benchmark does), so queueing shows up in TTFT instead of slowing the senders down.

Per rate: a fixed number of requests, arrival gaps drawn from an exponential distribution (seeded), each
request the same as in the closed loop (one prompt, `tokens` new tokens, greedy, streamed); the figures are
load.py's (TTFT, TPOT, ITL percentiles), plus the achieved requests/s and the most requests in flight.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import grpc

from client.bench import load
from proto import llm_pb2_grpc


@dataclass
class RateResult:
    rate: float  # offered, requests/s
    seed: int
    peak_in_flight: int
    level: load.LevelResult  # its concurrency field: peak_in_flight


def parse_rates(text: str) -> list[float]:
    """"0.5,1,2" -> [0.5, 1.0, 2.0]; ValueError names what is wrong."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        rates = []
    if not rates or any(not (0 < r < float("inf")) for r in rates):
        raise ValueError(f"expected positive numbers of requests/s separated by commas, got {text!r}")
    return rates


def arrival_offsets(rate: float, count: int, seed: int) -> list[float]:
    """Seconds from the start: the first request at 0, then exponential gaps of mean 1/rate."""
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def run(cfg: load.LoadConfig, rates: list[float], count: int, seed: int = 0, progress=print) -> list[RateResult]:
    return asyncio.run(_run(cfg, rates, count, seed, progress))


async def _run(cfg, rates, count, seed, progress) -> list[RateResult]:
    async with grpc.aio.insecure_channel(cfg.url) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        for i in range(cfg.warmup):
            await load._one(stub, cfg, i)
        results = []
        for rate in rates:
            result = await _rate(stub, cfg, rate, count, seed)
            progress(f"open loop {rate:g} req/s: {result.level.requests} requests, {result.level.errors} errors, "
                     f"{result.level.wall_s:.1f} s")
            results.append(result)
        return results


async def _rate(stub, cfg: load.LoadConfig, rate: float, count: int, seed: int) -> RateResult:
    timings: list[load.RequestTiming] = []
    errors: list[str] = []
    in_flight = peak = 0
    start = time.perf_counter()

    async def one(i: int, at: float) -> None:
        nonlocal in_flight, peak
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            timings.append(await load._one(stub, cfg, i))
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
        finally:
            in_flight -= 1

    await asyncio.gather(*(one(i, at) for i, at in enumerate(arrival_offsets(rate, count, seed))))
    wall = time.perf_counter() - start
    level = load.LevelResult.of(peak, wall, sorted(timings, key=lambda t: t.prompt_index), errors)
    return RateResult(rate, seed, peak, level)
