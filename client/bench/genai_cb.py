"""openvino-genai's ContinuousBatchingPipeline fed by N closed-loop streams, exactly as the server is loaded.

`closed_loop`: one driver thread (the caller's) steps the pipeline; after each step it reads every handle's new
tokens (their arrival time is the end of that step) and, when a request is finished, gives its stream the next
request at once, as a client of the server sends its next request when its answer is complete. So both
engines see the same arrivals. `chat`: a stepping thread and one thread per conversation, as a server is
driven (see there). Prompts are rendered with the chat template and tokenized as the server does
(no added special tokens): both engines get the same token ids. `ignore_eos` and min_new_tokens make every
request yield exactly `tokens` tokens, greedy.
"""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.engine.model import render
from client.bench.load import ChatTurn, LevelResult, RequestTiming


@dataclass
class _Live:
    """A request in flight: which prompt, when it was added, its tokens and their arrival times."""

    index: int
    handle: object
    start: float
    ids: list[int] = field(default_factory=list)
    arrivals_ms: list[float] = field(default_factory=list)
    status: object = None  # once it ended
    ended: threading.Event = field(default_factory=threading.Event)


class _Core:
    """One stepping thread over the pipeline, fed by streams on other threads (`submit` blocks until the
    request ended); it stops once every stream has left."""

    def __init__(self, pipe, running, open_streams: int):
        self.pipe = pipe
        self.running = running  # GenerationStatus.RUNNING
        self.error: BaseException | None = None
        self._open = open_streams
        self._inbox: list[tuple[_Live, int, object, object]] = []  # (request, id, input ids, config)
        self._cond = threading.Condition()

    def submit(self, live: _Live, request_id: int, ids, cfg) -> _Live:
        with self._cond:
            if self.error is not None:
                raise RuntimeError("openvino-genai: the stepping thread failed") from self.error
            self._inbox.append((live, request_id, ids, cfg))
            self._cond.notify()
        live.ended.wait()
        if self.error is not None:
            raise RuntimeError("openvino-genai: the stepping thread failed") from self.error
        return live

    def leave(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def run(self) -> None:
        live: list[_Live] = []
        arrived: list = []
        try:
            while True:
                with self._cond:
                    while not (self._inbox or live) and self._open:
                        self._cond.wait()
                    if not (self._inbox or live):
                        return
                    arrived, self._inbox = self._inbox, []
                for r, request_id, ids, cfg in arrived:
                    r.handle = self.pipe.add_request(request_id, ids, cfg)
                    live.append(r)
                if self.pipe.has_non_finished_requests():
                    self.pipe.step()
                for r, status, _ in _ended(live, self.running):
                    r.status = status
                    r.ended.set()
        except BaseException as exc:  # no stream may wait forever on a request that cannot end
            with self._cond:
                self.error = exc
                waiting = live + [r for r, *_ in arrived + self._inbox]
            for r in waiting:
                r.ended.set()


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
        load.ChatTurn's.

        Driven as a server with one core thread drives it (OVMS's executor): a stepping thread loops `step()`
        while `has_non_finished_requests()`; each conversation runs on its own thread and submits its turn when
        it is ready, so a turn waits behind the step in flight as it would in a server. A turn's clock starts
        when it is due (every first turn at the start, a later one when the step that ended the previous answer
        returned, as the server's client sends its next turn on the previous answer's last message) and stops
        when the step that brought its first token returns. The conversations hand their requests to the
        stepping thread, which adds them at the start of its next step, where genai's own `step()` would take
        them anyway: `add_request` locks only the awaiting queue, not the prefix-cache restore it runs first
        (pipeline_impl.cpp). The Python binding of `step()` keeps the GIL, so a conversation thread does not
        run during a step: a clock started on that thread would leave out the wait behind the step in flight
        (and the first turns' wait behind the first prompt), which the server's client counts; hence the
        clock starts when the turn is due, not when its thread gets to it.
        """
        from server.engine.types import Message

        cfg = self._config(tokens)
        core = _Core(self.pipe, self._genai.GenerationStatus.RUNNING, open_streams=len(questions))

        began = time.perf_counter()

        def conversation(c: int) -> list[ChatTurn]:
            answers: list[str] = []
            done = []
            due = began  # when this conversation's turn is due
            try:
                for t in range(len(questions[c])):
                    messages = tuple(Message(*m) for m in history(questions[c][:t + 1], answers))
                    ids = self._input(messages, system)
                    r = core.submit(_Live(c, None, due), next(self._request_ids), ids, cfg)
                    if r.status != self._genai.GenerationStatus.FINISHED:
                        raise RuntimeError(f"openvino-genai: a chat turn ended {r.status.name}")
                    answers.append(self.tokenizer.decode(r.ids, skip_special_tokens=True))
                    done.append(ChatTurn(c, t + 1, r.arrivals_ms[0], ids.get_shape()[1], None, answers[-1]))
                    due = r.start + r.arrivals_ms[-1] / 1000  # the step that ended this answer returned then
            finally:
                core.leave()
            return done

        stepping = threading.Thread(target=core.run, name="genai-step", daemon=True)
        stepping.start()
        try:
            with ThreadPoolExecutor(len(questions)) as pool:
                return [turn for turns in pool.map(conversation, range(len(questions))) for turn in turns]
        finally:
            stepping.join()
            if core.error is not None:
                raise core.error

    def _drive(self, live: list[_Live], done) -> None:
        """Step the pipeline until nothing is in flight; each request's tokens are timed at the end of the
        step that brought them, and `done(request, status, now)` is told when one ends."""
        while live:
            self.pipe.step()
            for r, status, now in _ended(live, self._genai.GenerationStatus.RUNNING):
                done(r, status, now)


def _ended(live: list[_Live], running) -> list[tuple[_Live, object, float]]:
    """Right after a step: every request's new tokens, timed now (the end of the step that brought them);
    the requests that ended leave `live` and are returned with their status and that time."""
    now = time.perf_counter()
    ended = []
    for r in list(live):
        if r.handle.can_read():
            new = [t for out in r.handle.read().values() for t in out.generated_ids]
            if new:
                r.ids += new
                r.arrivals_ms.append((now - r.start) * 1000)
        status = r.handle.get_status()
        if status != running:
            live.remove(r)
            ended.append((r, status, now))
    return ended
