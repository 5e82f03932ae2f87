"""Baselines in the benchmark's own process, on the same model directory and prompts as the server.

Level 1 is one stream: the requests one after another. Level N: batches of N prompts, one after another:
- `inprocess`: the server's engine (server.engine) run with `engine: generate`: optimum-intel's
  `OVModelForCausalLM.generate` on one left-padded batch, loaded, templated and streamed as the server does;
  token times from its events.
- `genai`: openvino-genai `LLMPipeline.generate` on the list of prompts (its continuous-batching scheduler);
  TTFT from its perf metrics, the end from the client clock.
- `genai-cb`: openvino-genai `ContinuousBatchingPipeline` fed by N closed-loop streams (genai_cb.py).
Prompts get the chat template as the server applies it (server.engine.model.render, for the openvino-genai
baselines).
"""
from __future__ import annotations

import time
from pathlib import Path

from client.bench.load import LevelResult, RequestTiming

BASELINES = ("inprocess", "genai", "genai-cb")


class InProcess:
    """The server's own engine in this process: server.app's load_engine on the server's settings (the servable,
    then the environment) with `engine: generate`, so the loading, the chat template and the (absent) system
    prompt are the server's; one request of N prompts is one batch through transformers' `generate`."""

    name = "inprocess"
    title = "the server's generate engine (OVModelForCausalLM.generate), in process"
    mode = "level 1: one stream; level N: batches of N prompts"

    def __init__(self, model_dir: str | Path, servable: str | Path | None, device: str = "CPU", max_batch: int = 8):
        import dataclasses

        from server.app import load_engine
        from server.config import load

        settings = load({"model": str(model_dir), "device": device, "engine": "generate",
                         "config_path": str(servable) if servable else None})
        # One batch of N prompts must fit, whatever the servable's limit.
        limits = dataclasses.replace(settings.limits, max_batch=max(settings.limits.max_batch, max_batch))
        self.engine = load_engine(settings.model_copy(update={"limits": limits}), None)

    def batch(self, prompts: list[str], tokens: int, first_index: int = 0) -> tuple[float, list[RequestTiming]]:
        from server.engine.types import Finished, GenerationRequest, SamplingParams, TextDelta

        arrivals: list[list[float]] = [[] for _ in prompts]  # ms from the start, per prompt
        pieces: list[list[str]] = [[] for _ in prompts]
        ends: dict[int, tuple[float, int]] = {}  # prompt -> (ms, tokens)
        failures: list[str] = []

        def sink(event) -> None:  # on the engine's thread, as each event happens
            now = (time.perf_counter() - start) * 1000
            if isinstance(event, TextDelta):
                arrivals[event.index].append(now)
                pieces[event.index].append(event.text)
            elif isinstance(event, Finished):
                ends[event.index] = (now, event.usage.completion_tokens)
            else:
                failures.append(event.message)

        request = GenerationRequest(prompts=tuple(prompts), params=SamplingParams(
            max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False))
        start = time.perf_counter()
        self.engine.submit(request, sink).done.wait()
        end = time.perf_counter()
        if failures:
            raise RuntimeError(f"the in-process engine failed: {failures[0]}")
        timings = [RequestTiming.from_arrivals(first_index + i, arrivals[i], *ends[i], "".join(pieces[i]))
                   for i in range(len(prompts))]
        return end - start, timings

    def close(self) -> None:
        self.engine.close()


class GenAI:
    """openvino-genai LLMPipeline on the same directory (its own tokenizer models: openvino_tokenizer/detokenizer)."""

    name = "genai"
    title = "openvino-genai LLMPipeline, in process"
    mode = InProcess.mode

    def __init__(self, model_dir: str | Path, device: str = "CPU"):
        import openvino_genai
        from transformers import AutoTokenizer

        self.pipe = openvino_genai.LLMPipeline(str(model_dir), device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.config_type = openvino_genai.GenerationConfig

    def batch(self, prompts: list[str], tokens: int, first_index: int = 0) -> tuple[float, list[RequestTiming]]:
        cfg = self.config_type()
        cfg.max_new_tokens = tokens
        cfg.min_new_tokens = tokens
        cfg.do_sample = False
        cfg.apply_chat_template = False  # rendered here, as the server renders it
        from server.engine.model import render

        texts = [render(self.tokenizer, p) for p in prompts]
        start = time.perf_counter()
        result = self.pipe.generate(texts, cfg)
        end = time.perf_counter()
        ttft = result.perf_metrics.get_ttft().mean
        e2e = (end - start) * 1000
        timings = [
            RequestTiming(first_index + i, ttft, e2e, tokens, (e2e - ttft) / (tokens - 1) if tokens > 1 else None,
                          [], text)
            for i, text in enumerate(result.texts)
        ]
        return end - start, timings


def load(name: str, model_dir: str | Path, ov_config: dict, device: str = "CPU", servable: str | Path | None = None,
         max_batch: int = 8):
    """A baseline on this model directory; `servable` (the server's settings) configures `inprocess`, `ov_config`
    the openvino-genai ones; `max_batch`: the largest batch `inprocess` will be given."""
    if name == "inprocess":
        return InProcess(model_dir, servable, device, max_batch)
    if name == "genai":
        return GenAI(model_dir, device)
    if name == "genai-cb":
        from client.bench.genai_cb import GenAICB

        return GenAICB(model_dir, ov_config, device)
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


def run_levels(engine, prompts: list[str], tokens: int, levels: list[int], requests: int, warmup: int,
               progress=print) -> list[LevelResult]:
    """Level N: batches of N prompts one after another (N = 1: one stream), as many requests as the server got."""
    if hasattr(engine, "run_levels"):  # engines fed by closed-loop streams (genai-cb) run their own levels
        return engine.run_levels(prompts, tokens, levels, requests, warmup, progress)
    for i in range(max(warmup, 1)):
        engine.batch([prompts[i % len(prompts)]], tokens)
    results = []
    for level in levels:
        walls, timings = 0.0, []
        for first in range(0, -(-max(requests, 1) // level) * level, level):
            wall, got = engine.batch([prompts[(first + i) % len(prompts)] for i in range(level)], tokens, first)
            walls += wall
            timings += got
        results.append(LevelResult.of(level, walls, timings))
        progress(f"{engine.name:<9} level {level}: {len(timings)} requests, {walls:.1f} s")
    return results
