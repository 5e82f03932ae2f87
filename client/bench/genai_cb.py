"""openvino-genai's ContinuousBatchingPipeline fed by N closed-loop streams, exactly as the server is loaded.

One driver thread (the caller's) steps the pipeline; after each step it reads every handle's new tokens
(their arrival time is the end of that step) and, when a request is finished, gives its stream the next
request at once, as a client of the server sends its next request when its answer is complete. So both
engines see the same arrivals. Prompts are rendered with the chat template and tokenized as the server does
(no added special tokens): both engines get the same token ids. `ignore_eos` and min_new_tokens make every
request yield exactly `tokens` tokens, greedy.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.engine.model import render
from client.bench.load import LevelResult, RequestTiming


@dataclass
class _Live:
    """A request in flight: which prompt, when it was added, its tokens and their arrival times."""

    index: int
    handle: object
    start: float
    ids: list[int] = field(default_factory=list)
    arrivals_ms: list[float] = field(default_factory=list)


class GenAICB:
    name = "genai-cb"
    title = "openvino-genai ContinuousBatchingPipeline, in process"
    mode = "level N: N closed-loop streams through add_request, as the server's"

    def __init__(self, model_dir: str | Path, ov_config: dict, device: str = "CPU", cache_gb: int = 1):
        import openvino_genai
        from transformers import AutoTokenizer

        self._genai = openvino_genai
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = cache_gb  # GB, as the server's default KV cache (1 GB)
        self.pipe = openvino_genai.ContinuousBatchingPipeline(str(model_dir), scheduler, device, dict(ov_config))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._request_ids = itertools.count()
        self._encoded: dict[str, object] = {}

    def _input(self, prompt: str):
        import openvino as ov

        if prompt not in self._encoded:
            ids = self.tokenizer(render(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]
            self._encoded[prompt] = ov.Tensor(np.array([ids], dtype=np.int64))
        return self._encoded[prompt]

    def _config(self, tokens: int):
        cfg = self._genai.GenerationConfig()
        cfg.max_new_tokens = cfg.min_new_tokens = tokens
        cfg.do_sample = False
        cfg.ignore_eos = True
        return cfg

    def closed_loop(self, prompts: list[str], tokens: int, concurrency: int, count: int) -> LevelResult:
        """`count` requests (prompt i: prompts[i % len]) through `concurrency` streams."""
        cfg = self._config(tokens)
        todo = iter(range(count))
        live: list[_Live] = []
        timings: list[RequestTiming] = []
        errors: list[str] = []
        ids_of: dict[int, list[int]] = {}

        def send() -> None:
            i = next(todo, None)
            if i is not None:
                handle = self.pipe.add_request(next(self._request_ids), self._input(prompts[i % len(prompts)]), cfg)
                live.append(_Live(i, handle, time.perf_counter()))

        running = self._genai.GenerationStatus.RUNNING
        start = time.perf_counter()
        for _ in range(concurrency):
            send()
        while live:
            self.pipe.step()
            now = time.perf_counter()
            for r in list(live):
                if r.handle.can_read():
                    new = [t for out in r.handle.read().values() for t in out.generated_ids]
                    if new:
                        r.ids += new
                        r.arrivals_ms.append((now - r.start) * 1000)
                status = r.handle.get_status()
                if status == running:
                    continue
                live.remove(r)
                if status == self._genai.GenerationStatus.FINISHED:
                    timings.append(RequestTiming.from_arrivals(r.index, r.arrivals_ms, (now - r.start) * 1000,
                                                               len(r.ids)))
                    ids_of[r.index] = r.ids
                else:
                    errors.append(f"request ended {status.name}")
                send()
        wall = time.perf_counter() - start
        for t in timings:  # outside the clock: the server streams text, but its decoding is not what we time
            t.text = self.tokenizer.decode(ids_of[t.prompt_index], skip_special_tokens=True)
        return LevelResult.of(concurrency, wall, sorted(timings, key=lambda t: t.prompt_index), errors)
