"""One raw infer step of the server's compiled paged model: one sequence decoding at a ~100-token context.

It is the floor of the server's TPOT at one stream (the model alone: no scheduling, token choice,
streaming or gRPC). The model is loaded and compiled as the server does (server.engine's LoadedModel),
a prompt of `context` tokens fills the cache, then single-token steps are timed, as EngineCore builds them.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np


class RawStep:
    """The server's compiled paged model on the server's default cache, loaded once and timed as often as asked
    (once per round of the serving benchmark)."""

    def __init__(self, model_dir: str | Path, ov_config: dict, device: str = "CPU", context: int = 68):
        from server.engine.kv_cache import cache_blocks
        from server.engine.model import LoadedModel
        from server.engine.paged_model import PagedModel
        from server.engine.params import KVCacheConfig, Limits

        model = LoadedModel.load(model_dir, device, ov_config)
        self.paged = PagedModel(model.paged)
        # The cache the server allocates by default, so the step runs on the same memory layout.
        self.paged.allocate(cache_blocks(KVCacheConfig(), self.paged.bytes_per_block, self.paged.block_size,
                                         Limits().max_batch, model.info.context_length))
        self.context = context

    def _step(self, ids: list[int], past: int) -> np.ndarray:
        from server.engine.paged_model import StepInputs

        n = len(ids)
        blocks = math.ceil((past + n) / self.paged.block_size)
        return self.paged.forward(StepInputs(
            input_ids=np.array(ids, dtype=np.int64),
            position_ids=np.arange(past, past + n, dtype=np.int64),
            past_lens=np.array([past], dtype=np.int32),
            subsequence_begins=np.array([0, n], dtype=np.int32),
            block_indices=np.arange(blocks, dtype=np.int32),
            block_indices_begins=np.array([0, blocks], dtype=np.int32),
            max_context_len=past + n,
            sampled=np.array([n - 1], dtype=np.int64),
        ))

    def measure(self, warmup: int = 4, steps: int = 64) -> float:
        """Median ms of `steps` decode steps at contexts context + warmup .. + steps (~100 by default)."""
        # Which tokens fill the context does not change the work of a step; each call fills it again.
        token = int(self._step(list(range(1000, 1000 + self.context)), 0).argmax())
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            token = int(self._step([token], self.context + i).argmax())
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times[warmup:]))
