"""Baselines in the benchmark's own process, on the same model directory and prompts as the server.

Level 1 is one stream: the requests one after another. Level N: batches of N prompts, one after another:
- `inprocess`: optimum-intel's `OVModelForCausalLM.generate` on one left-padded batch (the seed notebooks'
  way), on the servable's ov_config, templated as the server does; token times from a streamer's clock.
- `genai`: openvino-genai `LLMPipeline.generate` on the list of prompts (its continuous-batching scheduler);
  TTFT from its perf metrics, the end from the client clock.
- `genai-cb`: openvino-genai `ContinuousBatchingPipeline` fed by N closed-loop streams (genai_cb.py); the
  serving benchmark runs its levels in turns with the server's (rounds.py), the others' here, once.
Prompts get the chat template as the server applies it (server.engine.model.render, for the openvino-genai
baselines).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from client.bench.load import LevelResult, RequestTiming, requests_at

BASELINES = ("inprocess", "genai", "genai-cb")


class InProcess:
    """optimum-intel's `OVModelForCausalLM.generate` in this process (the seed notebooks' way), on the servable's
    ov_config, with the server's chat template: one request of N prompts is one left-padded batch."""

    name = "inprocess"
    title = "optimum-intel OVModelForCausalLM.generate, in process"
    mode = "level 1: one stream; level N: batches of N prompts"

    def __init__(self, model_dir: str | Path, servable: str | Path | None, device: str = "CPU"):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        from server.config import load

        settings = load({"model": str(model_dir), "device": device,
                         "config_path": str(servable) if servable else None})
        from server.engine.precision import runtime_options

        # The server's numerics: its own options (f32 on CPUs) under the servable's.
        options = runtime_options(settings.device, settings.ov_config, settings.batch_invariant)
        self.model = OVModelForCausalLM.from_pretrained(settings.model, device=settings.device,
                                                        ov_config={"CACHE_DIR": settings.cache_dir, **options})
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
        self.tokenizer.padding_side = "left"
        self.system_prompt = None  # as the server, which adds none

    def batch(self, prompts: list[str], tokens: int, first_index: int = 0) -> tuple[float, list[RequestTiming]]:
        from transformers.generation.streamers import BaseStreamer

        from server.engine.model import render

        texts = [render(self.tokenizer, p, self.system_prompt) for p in prompts]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        steps: list[float] = []  # ms from the start of each new token (all rows at once)

        class Clock(BaseStreamer):
            def put(self, value):  # the first call carries the prompts
                steps.append((time.perf_counter() - start) * 1000)

            def end(self):
                pass

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        start = time.perf_counter()
        out = self.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                  pad_token_id=pad, streamer=Clock())
        end = time.perf_counter()
        arrivals, e2e = steps[1:], (end - start) * 1000
        width = inputs["input_ids"].shape[1]
        timings = [RequestTiming.from_arrivals(first_index + i, arrivals, e2e, len(arrivals),
                                               self.tokenizer.decode(out[i, width:], skip_special_tokens=True))
                   for i in range(len(prompts))]
        return end - start, timings


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


def load(name: str, model_dir: str | Path, ov_config: dict, device: str = "CPU", servable: str | Path | None = None):
    """A baseline on this model directory; `servable` (the server's settings) configures `inprocess`, `ov_config`
    the openvino-genai ones."""
    if name == "inprocess":
        return InProcess(model_dir, servable, device)
    if name == "genai":
        return GenAI(model_dir, device)
    if name == "genai-cb":
        from client.bench.genai_cb import GenAICB

        # Prefix caching as the servable has it (on unless it says otherwise): the bench's prompts share their
        # first block (the default system prompt), so both engines reuse it or neither does.
        kv_cache = json.loads(Path(servable).read_text()).get("kv_cache", {}) if servable else {}
        return GenAICB(model_dir, ov_config, device, prefix_caching=kv_cache.get("prefix_caching", True))
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


def run_levels(engine, prompts: list[str], tokens: int, levels: list[int], requests: int, warmup: int,
               progress=print) -> list[LevelResult]:
    """Level N: batches of N prompts one after another (N = 1: one stream), as many requests as the server got."""
    for i in range(max(warmup, 1)):
        engine.batch([prompts[i % len(prompts)]], tokens)
    results = []
    for level in levels:
        walls, timings = 0.0, []
        for first in range(0, requests_at(level, requests), level):
            wall, got = engine.batch([prompts[(first + i) % len(prompts)] for i in range(level)], tokens, first)
            walls += wall
            timings += got
        results.append(LevelResult.of(level, walls, timings))
        progress(f"{engine.name:<9} level {level}: {len(timings)} requests, {walls:.1f} s")
    return results
