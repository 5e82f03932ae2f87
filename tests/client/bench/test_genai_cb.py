"""client/bench/genai_cb.py: openvino-genai's ContinuousBatchingPipeline driven as a server drives it."""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from client.bench.chat import history
from client.bench.genai_cb import GenAICB, _Core, _Live
from modelcheck import REPO

STEP_S = 0.05


class FakePipe:
    """Every running request gets one token a step (a step takes STEP_S); notes which threads call it and whether
    a call ever overlapped another."""

    def __init__(self, fail_at_step: int | None = None):
        self.threads: set[str] = set()
        self.overlapped = False
        self.steps = 0
        self.fail_at_step = fail_at_step
        self._handles = []
        self._busy = threading.Lock()

    @contextmanager
    def _call(self):
        self.threads.add(threading.current_thread().name)
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            self._busy.acquire()
        try:
            yield
        finally:
            self._busy.release()

    def add_request(self, request_id, ids, cfg):
        with self._call():
            handle = FakeHandle(cfg)
            self._handles.append(handle)
            return handle

    def has_non_finished_requests(self) -> bool:
        return any(h.status == "RUNNING" for h in self._handles)

    def step(self):
        with self._call():
            self.steps += 1
            if self.steps == self.fail_at_step:
                raise RuntimeError("the model failed")
            time.sleep(STEP_S)
            for h in self._handles:
                if h.status == "RUNNING":
                    h.new.append(len(h.new) + h.given)
                    if len(h.new) + h.given == h.tokens:
                        h.status = "FINISHED"


class FakeHandle:
    def __init__(self, tokens: int):
        self.tokens, self.given, self.new, self.status = tokens, 0, [], "RUNNING"

    def can_read(self) -> bool:
        return bool(self.new)

    def read(self):
        new, self.new = self.new, []
        self.given += len(new)
        return {0: SimpleNamespace(generated_ids=new)}

    def get_status(self):
        return self.status


def _serve(pipe: FakePipe, streams: int):
    core = _Core(pipe, "RUNNING", open_streams=streams)
    stepping = threading.Thread(target=core.run, name="stepping")
    stepping.start()
    return core, stepping


def test_one_thread_steps_and_adds_while_streams_submit_from_their_own_and_wait_behind_the_step_in_flight():
    pipe = FakePipe()
    core, stepping = _serve(pipe, streams=2)
    long = threading.Thread(target=lambda: (core.submit(_Live(0, None, time.perf_counter()), 0, None, 6), core.leave()))
    long.start()
    while pipe.steps < 2:  # the long request is decoding: a step is in flight or about to be
        time.sleep(0.001)
    late = core.submit(_Live(1, None, time.perf_counter()), 1, None, 2)
    core.leave()
    long.join()
    stepping.join()
    assert pipe.threads == {"stepping"} and not pipe.overlapped  # add_request and step: one thread, never at once
    assert late.status == "FINISHED" and late.ids == [0, 1] and len(late.arrivals_ms) == 2
    assert late.arrivals_ms[0] >= STEP_S * 1000  # at least the step that brought its first token
    assert core.error is None


def test_a_failed_step_fails_the_waiting_streams_instead_of_leaving_them_waiting():
    pipe = FakePipe(fail_at_step=2)
    core, stepping = _serve(pipe, streams=1)
    with pytest.raises(RuntimeError, match="stepping thread failed"):
        core.submit(_Live(0, None, time.perf_counter()), 0, None, 5)
    stepping.join(timeout=10)
    assert not stepping.is_alive() and "the model failed" in str(core.error)


def test_a_tiny_chat_through_the_real_pipeline(fp32_model_dir):
    servable = json.loads((REPO / "servable_stream" / "config.json").read_text())
    cb = GenAICB.for_servable(fp32_model_dir, servable, prefix_caching=True)
    questions = [["What is the capital of Japan?", "And of France?"], ["Name a colour.", "Another one?"]]
    turns = cb.chat("You are terse.", questions, 4, history)
    assert sorted((t.conversation, t.turn) for t in turns) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    by = {(t.conversation, t.turn): t for t in turns}
    for c in range(2):
        assert by[c, 2].prompt_tokens > by[c, 1].prompt_tokens  # the second turn carries the first and its answer
    assert all(t.ttft_ms > 0 and t.answer and t.cached_tokens is None and t.server_ttft_ms is None for t in turns)
