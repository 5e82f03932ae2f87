"""The engine's front door: validate, tokenize, queue; hand back a Submission whose events the reader drains.

Three parts on two threads (vLLM v1's shape): the EngineCore (core.py) takes calls and aborts from any thread
and steps its Scheduler (scheduler.py); the loop thread here calls `step()` and hands each StepOutput to the
OutputProcessor (output.py), whose thread turns tokens into text while the model computes the next step.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from server.engine.core import ALL, EngineCore
from server.engine.errors import NotReady, ValidationError
from server.engine.grammar import Grammars
from server.engine.kv_cache import AVERAGE_REQUEST_TOKENS, cache_blocks, default_max_batch
from server.engine.model import LoadedModel
from server.engine.output import OutputProcessor, Submission, ThreadWaker
from server.engine.pacing import StepCost
from server.engine.paged_model import PagedModel
from server.engine.pages import release_file_pages
from server.engine.params import GenerationParams, KVCacheConfig, Limits, SchedulerConfig, SpeculationConfig
from server.engine.request import Request
from server.engine.step import SchedulerStats
from server.engine.streamer import TokenStreamer
from server.engine.types import Completion, Event, GenerationRequest, collect
from server.engine.validation import (check_cache, check_constraint, check_inputs, check_lengths, check_sampling_tokens,
                                      check_token_ids, check_tools, openai_defaults, resolve_params,
                                      MODEL_FILE_FIELDS)

log = logging.getLogger(__name__)


class Engine:
    """A loaded model with the engine that runs it. Usable in-process: `generate()` and `stream()`."""

    def __init__(self, model: LoadedModel, defaults: GenerationParams | None = None,
                 limits: Limits | None = None, scheduler: SchedulerConfig | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 kv_cache: KVCacheConfig | None = None, speculation: SpeculationConfig | None = None,
                 model_defaults: bool = True):
        """`model_defaults`: OpenAI API requests take the model's generation_config.json values (the servable's
        generation_config "auto"); False: the servable's only ("servable")."""
        self.model = model
        self.on_batch = on_batch  # called with each step's number of sequences, for metrics
        defaults = defaults or GenerationParams()
        self.defaults = dataclasses.replace(defaults, stop=tuple(dict.fromkeys((*defaults.stop, *model.info.stop))))
        limits = limits or Limits()
        self.openai_defaults = self._openai_defaults(limits, model_defaults)
        scheduler = scheduler or SchedulerConfig()
        self._accepting = True
        self._ids = itertools.count(1)
        kv_cache = kv_cache or KVCacheConfig()
        speculation = speculation or SpeculationConfig()
        paged = PagedModel(model.paged, small=speculation.max_step_tokens, pad_single=model.info.batch_invariant)
        paged.allocate(cache_blocks(kv_cache, paged.bytes_per_block, paged.block_size, limits.max_batch,
                                    model.info.context_length))
        paged.warm_up()
        release_file_pages(Path(model.info.path) / "openvino_model.bin")  # read once by the warm-up (pages.py)
        log.info("paged engine: %d compiled %s, KV cache of %d blocks x %d tokens, %s (%.0f MB), prefix caching %s, "
                 "speculation %s", paged.copies, "copy" if paged.copies == 1 else "copies (one per step size)",
                 paged.num_blocks, paged.block_size, paged.kv_precision,
                 paged.num_blocks * paged.bytes_per_block / 1e6, "on" if kv_cache.prefix_caching else "off",
                 f"up to {speculation.max_tokens} tokens ({speculation.min_ngram}-{speculation.max_ngram}-grams)"
                 if speculation.max_tokens else "off")
        if limits.max_batch:
            log.info("paged engine: max_batch %d (the servable's limits.max_batch)", limits.max_batch)
        else:
            limits = dataclasses.replace(limits, max_batch=default_max_batch(paged.num_blocks, paged.block_size))
            log.info("paged engine: max_batch %d (from the KV cache: %d blocks / %d per average request of %d "
                     "tokens; set limits.max_batch to choose)", limits.max_batch, paged.num_blocks,
                     math.ceil(AVERAGE_REQUEST_TOKENS / paged.block_size), AVERAGE_REQUEST_TOKENS)
        self.limits = limits
        self.grammars = Grammars.for_tokenizer(model.tokenizer, model.vocab_size, model.eos_token_ids)
        self.core = EngineCore(paged, model.eos_token_ids, limits, scheduler.max_step_tokens, kv_cache.prefix_caching,
                               self.grammars, speculation, StepCost() if scheduler.pacing else None,
                               reuse_answers=not model.info.batch_invariant if kv_cache.reuse_answers is None
                               else kv_cache.reuse_answers)
        self.output = OutputProcessor(self.core.abort)
        self._waker = ThreadWaker()
        self._thread = threading.Thread(target=self._loop, name="engine-core", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, waker=None, received: float | None = None) -> Submission:
        """Validate and queue; raises ValidationError, QueueFull or NotReady before any work starts.
        `waker` wakes the call's reader (output.LoopWaker for asyncio); default: a thread reads `events()`.
        `received` (time.monotonic): when the request reached the engine, if before this call; the
        server-side times (Usage) count from it."""
        arrival = time.monotonic() if received is None else received
        if not self._accepting:
            raise NotReady("the server is shutting down")
        check_inputs(request, self.limits)
        check_tools(request)
        check_constraint(request)
        params = resolve_params(request, self.openai_defaults if request.openai_defaults else self.defaults,
                                self.limits)
        check_sampling_tokens(params, self.model.vocab_size)
        matcher = self.grammars.matcher(request.constraint) if request.constraint else None
        if request.prompt_ids:
            field, prompt_ids = "prompt_ids", [list(ids) for ids in request.prompt_ids]
            for i, ids in enumerate(prompt_ids):
                check_token_ids(f"{field}[{i}]", ids, self.model.vocab_size)
        else:
            prompt_ids = [self.model.encode(t, request.raw) for t in self._render(request)]
            field = "prompts" if request.prompts else "conversations"
        lengths = [len(p) for p in prompt_ids]
        check_lengths(field, lengths, params, self.limits, self.model.info.context_length)
        check_cache(field, lengths, params, self.core.blocks.num_blocks, self.core.blocks.block_size)

        # One core request per prompt and sample (vLLM's fan-out of n): answer prompt * n + sample.
        call = Submission(next(self._ids), arrival, waker or self._waker, self.core.abort)
        samples = [params if params.seed is None or i == 0 else dataclasses.replace(params, seed=params.seed + i)
                   for i in range(request.n)]
        requests = [Request(next(self._ids), call.id, ids, sample, request.logprobs, request.prompt_logprobs,
                            matcher=matcher.deep_copy() if matcher else None)
                    for ids in prompt_ids for sample in samples]
        for index, r in enumerate(requests):
            call.streamers[r.id] = TokenStreamer(self.model.tokenizer, index, r.prompt_ids, params.stop,
                                                 self.model.eos_token_ids, call.collector, call.arrival,
                                                 params.stop_token_ids, params.include_stop_str_in_output,
                                                 ending_logprob=request.prompt_logprobs is not None)
        self.output.add(call)
        queued = time.monotonic()
        for streamer in call.streamers.values():
            streamer.queued_at = queued
        try:
            self.core.add(requests)
        except BaseException:
            self.output.remove(call)
            raise
        return call

    def _openai_defaults(self, limits: Limits, model_defaults: bool) -> GenerationParams:
        file = Path(self.model.info.path) / "generation_config.json"
        try:
            defaults, taken = openai_defaults(self.defaults, self.model.generation_config if model_defaults else {},
                                              limits)
        except ValidationError as exc:  # stops the start, in one line
            raise ValueError(f"{file}: {exc}; set generation_config to servable not to apply the file") from None
        if taken:
            source = f"{_show(taken)} from {file}, else the servable's generation"
        elif model_defaults:
            source = f"the servable's generation ({file} sets none of {', '.join(MODEL_FILE_FIELDS)})"
        else:
            source = "the servable's generation (generation_config servable: the model's file is not read)"
        log.info("OpenAI API defaults: %s; sampling unless temperature is 0 (gRPC and KServe: the servable's "
                 "generation, its do_sample)", source)
        return defaults

    def stream(self, request: GenerationRequest, timeout: float | None = None) -> Iterator[Event]:
        call = self.submit(request)
        try:
            yield from call.events(timeout)
        finally:
            call.cancel()

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> list[Completion]:
        """Whole completions in request order; raises RuntimeError if the engine failed the request."""
        return collect(self.stream(request, timeout))

    def counts(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        return self.core.counts()

    def stats(self) -> SchedulerStats:
        """The scheduler's state after the last step (what the gauges show)."""
        return self.core.stats

    def tokenize(self, request: GenerationRequest, add_special_tokens: bool | None = None) -> list[list[int]]:
        """The token ids each prompt (or conversation, rendered) of `request` would run as (`add_special_tokens`
        set: with or without the tokenizer's own special tokens instead); nothing is generated."""
        check_inputs(request, self.limits)
        check_tools(request)
        if request.prompt_ids:
            return [list(ids) for ids in request.prompt_ids]
        special = request.raw if add_special_tokens is None else add_special_tokens
        return [self.model.encode(text, special) for text in self._render(request)]

    def render(self, request: GenerationRequest) -> list[str]:
        """The text each prompt (or conversation, in the chat template) of `request` runs as; raises
        ValidationError as submit would."""
        check_inputs(request, self.limits)
        check_tools(request)
        return self._render(request)

    def _render(self, request: GenerationRequest) -> list[str]:
        return [self.model.render(item, request.system_prompt, request.raw, request.tools, request.chat_template_kwargs)
                for item in request.prompts or request.conversations]

    def tokenizer_info(self) -> dict:
        """The tokenizer's special tokens, chat template and length limit (vLLM's /tokenizer_info)."""
        tokenizer = self.model.tokenizer
        names = getattr(tokenizer, "special_tokens_map", {})
        return {"eos_token": names.get("eos_token"), "bos_token": names.get("bos_token"),
                "pad_token": names.get("pad_token"), "chat_template": tokenizer.chat_template,
                "model_max_length": self.model.info.context_length, "vocab_size": self.model.vocab_size}

    def detokenize(self, token_ids: list[int]) -> str:
        """The text of token ids (special tokens kept); raises ValidationError naming a bad index."""
        check_token_ids("tokens", token_ids, self.model.vocab_size)
        return self.model.tokenizer.decode(token_ids)

    def stop_accepting(self) -> None:
        self._accepting = False

    def close(self) -> None:
        """Stop: whatever still waits or runs is cancelled (the grace period is over), then the threads end."""
        self._accepting = False
        self.core.abort(ALL)
        self.core.close()
        self._thread.join(timeout=30)
        self.output.join(timeout=30)

    def _loop(self) -> None:
        while self.core.wait_for_work():
            self._step()
        self._step()  # closing: everything was aborted, and the cancellations go out
        self.output.put(None)

    def _step(self) -> None:
        try:
            output = self.core.step()
        except Exception as exc:  # a bug here must not leave requests hanging forever
            log.exception("engine step failed")
            output = self.core.fail_all(f"generation failed: {type(exc).__name__}: {exc}")
        if output.scheduled and self.on_batch:
            self.on_batch(output.scheduled)
        if output.outputs:
            self.output.put(output)


def _show(values: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())
