"""Baselines in the benchmark's own process, on the same model directory and prompts as the server.

Level 1 is one stream: the requests one after another. Level N: batches of N prompts, one after another:
- `inprocess`: optimum-intel `OVModelForCausalLM.generate`, one left-padded batch; token times from a streamer.
- `genai`: openvino-genai `LLMPipeline.generate` on the list of prompts (its continuous-batching scheduler);
  TTFT from its perf metrics, the end from the client clock.
- `genai-cb`: openvino-genai `ContinuousBatchingPipeline` fed by N closed-loop streams (genai_cb.py).
Prompts get the chat template exactly as the server applies it.
"""
from __future__ import annotations

import time
from pathlib import Path

from client.bench.load import LevelResult, RequestTiming

BASELINES = ("inprocess", "genai", "genai-cb")


def render(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)


class InProcess:
    """OVModelForCausalLM.generate with the servable's OpenVINO config."""

    name = "inprocess"
    title = "OVModelForCausalLM.generate, in process"
    mode = "level 1: one stream; level N: batches of N prompts"

    def __init__(self, model_dir: str | Path, ov_config: dict, device: str = "CPU"):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        self.model = OVModelForCausalLM.from_pretrained(str(model_dir), device=device, ov_config=dict(ov_config),
                                                        compile=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.tokenizer.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            (eos[0] if isinstance(eos, list) else eos)

    def batch(self, prompts: list[str], tokens: int, first_index: int = 0) -> tuple[float, list[RequestTiming]]:
        import torch
        from transformers.generation.streamers import BaseStreamer

        class Clock(BaseStreamer):
            """Arrival time of each generated step (the first put is the prompt)."""

            def __init__(self):
                self.times: list[float] = []
                self.prompt_seen = False

            def put(self, value):
                if self.prompt_seen:
                    self.times.append(time.perf_counter())
                self.prompt_seen = True

            def end(self):
                pass

        texts = [render(self.tokenizer, p) for p in prompts]
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        clock = Clock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                      num_beams=1, pad_token_id=self.pad_id, streamer=clock)
        end = time.perf_counter()
        new = out[:, enc["input_ids"].shape[1]:]
        arrivals = [(t - start) * 1000 for t in clock.times]
        timings = [
            RequestTiming.from_arrivals(first_index + i, arrivals, (end - start) * 1000, int(new.shape[1]),
                                        self.tokenizer.decode(row, skip_special_tokens=True))
            for i, row in enumerate(new)
        ]
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


def load(name: str, model_dir: str | Path, ov_config: dict, device: str = "CPU"):
    if name == "inprocess":
        return InProcess(model_dir, ov_config, device)
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
