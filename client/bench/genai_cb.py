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

    def __init__(self, model_dir: str | Path, ov_config: dict, device: str = "CPU", cache_gb: int = 1,
                 prefix_caching: bool = False, max_step_tokens: int | None = None, max_batch: int | None = None):
        import openvino_genai
        from transformers import AutoTokenizer

        self._genai = openvino_genai
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = cache_gb  # GB, as the server's default KV cache (1 GB)
        scheduler.enable_prefix_caching = prefix_caching
        if max_step_tokens:
            scheduler.max_num_batched_tokens = max_step_tokens
        if max_batch:
            scheduler.max_num_seqs = max_batch
        self.pipe = openvino_genai.ContinuousBatchingPipeline(str(model_dir), scheduler, device, dict(ov_config))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._request_ids = itertools.count()
        self._encoded: dict[str, object] = {}

    @classmethod
    def for_servable(cls, model_dir: str | Path, servable: dict, prefix_caching: bool, device: str = "CPU") -> GenAICB:
        """Configured as the servable configures our server: its compile options (with a KV cache of the
        server's f16, not genai's u8 default on CPUs), prompt tokens per step and running sequences."""
        from server.engine.precision import runtime_options

        ov_config = runtime_options(device, servable.get("ov_config", {}), servable.get("batch_invariant", False))
        ov_config.setdefault("KV_CACHE_PRECISION", "f16")
        return cls(model_dir, ov_config, device, prefix_caching=prefix_caching,
                   max_step_tokens=servable.get("scheduler", {}).get("max_step_tokens"),
                   max_batch=servable.get("limits", {}).get("max_batch"))

    def _input(self, prompt: str | tuple, system: str | None = None):
        import openvino as ov

        key = (prompt, system)
        if key not in self._encoded:
            ids = self.tokenizer(render(self.tokenizer, prompt, system), add_special_tokens=False)["input_ids"]
            self._encoded[key] = ov.Tensor(np.array([ids], dtype=np.int64))
        return self._encoded[key]

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

        def done(r: _Live, status, now: float) -> None:
            if status == self._genai.GenerationStatus.FINISHED:
                timings.append(RequestTiming.from_arrivals(r.index, r.arrivals_ms, (now - r.start) * 1000, len(r.ids)))
                ids_of[r.index] = r.ids
            else:
                errors.append(f"request ended {status.name}")
            send()

        start = time.perf_counter()
        for _ in range(concurrency):
            send()
        self._drive(live, done)
        wall = time.perf_counter() - start
        for t in timings:  # outside the clock: the server streams text, but its decoding is not what we time
            t.text = self.tokenizer.decode(ids_of[t.prompt_index], skip_special_tokens=True)
        return LevelResult.of(concurrency, wall, sorted(timings, key=lambda t: t.prompt_index), errors)

    def chat(self, system: str, questions: list[list[str]], tokens: int, history) -> list:
        """Conversation c asks questions[c] in turn, closed loop (its next turn goes when an answer is complete),
        the whole history each time: `history(questions, answers)` gives its (role, content) pairs. Returns
        chat.ChatTurn's; first-token time is the end of the step that brought the first token."""
        from client.bench.chat import ChatTurn
        from server.engine.types import Message

        cfg = self._config(tokens)
        answers: list[list[str]] = [[] for _ in questions]
        live: list[_Live] = []
        turns: list[ChatTurn] = []
        prompt_tokens: dict[int, int] = {}

        def send(c: int) -> None:
            messages = tuple(Message(*m) for m in history(questions[c][:len(answers[c]) + 1], answers[c]))
            ids = self._input(messages, system)
            prompt_tokens[c] = ids.get_shape()[1]
            live.append(_Live(c, self.pipe.add_request(next(self._request_ids), ids, cfg), time.perf_counter()))

        def done(r: _Live, status, now: float) -> None:
            if status != self._genai.GenerationStatus.FINISHED:
                raise RuntimeError(f"openvino-genai: a chat turn ended {status.name}")
            c = r.index
            answers[c].append(self.tokenizer.decode(r.ids, skip_special_tokens=True))
            turns.append(ChatTurn(c, len(answers[c]), r.arrivals_ms[0], prompt_tokens[c], None, answers[c][-1]))
            if len(answers[c]) < len(questions[c]):
                send(c)

        for c in range(len(questions)):
            send(c)
        self._drive(live, done)
        return turns

    def _drive(self, live: list[_Live], done) -> None:
        """Step the pipeline until nothing is in flight; each request's tokens are timed at the end of the
        step that brought them, and `done(request, status, now)` is told when one ends."""
        running = self._genai.GenerationStatus.RUNNING
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
                if status != running:
                    live.remove(r)
                    done(r, status, now)
