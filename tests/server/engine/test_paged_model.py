"""The paged model's compiled copies: a step goes to the copy that last ran its token count, and every copy reads and
writes the one KV cache (the real model, batch-invariant numerics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from server.engine.model import LoadedModel
from server.engine.paged_model import PagedModel, StepInputs


@pytest.fixture(scope="module")
def loaded(fp32_model_dir):
    return LoadedModel.load(fp32_model_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY"}, batch_invariant=True, graphs=2)


def step(paged: PagedModel, ids: list[int], past: int) -> np.ndarray:
    n, blocks = len(ids), math.ceil((past + len(ids)) / paged.block_size)
    return paged.forward(StepInputs(
        input_ids=np.array(ids, dtype=np.int64), position_ids=np.arange(past, past + n, dtype=np.int64),
        past_lens=np.array([past], dtype=np.int32), subsequence_begins=np.array([0, n], dtype=np.int32),
        block_indices=np.arange(blocks, dtype=np.int32), block_indices_begins=np.array([0, blocks], dtype=np.int32),
        max_context_len=past + n, sampled=np.array([n - 1], dtype=np.int64)))


def test_each_token_count_keeps_the_copy_that_last_ran_it(loaded):
    paged = PagedModel(loaded.paged)
    assert len(loaded.paged) == 2
    first = paged._request_for(1)
    assert paged._request_for(5) is not first  # a new size takes the copy used least recently
    assert paged._request_for(1) is first and paged._request_for(1) is first
    fives = paged._request_for(5)
    assert fives is not first
    assert paged._request_for(3) is first  # least recently used: the 1-token copy gives way
    assert paged._request_for(5) is fives


def test_a_long_step_always_runs_on_the_first_copy(loaded):
    # A copy keeps buffers for the largest step it ran: only one copy may grow them.
    paged = PagedModel(loaded.paged, small=8)
    first = paged._request_for(9)
    assert first is paged._request_for(200)
    ones = paged._request_for(1)  # a small size takes the copy used least recently: not the first
    assert ones is not first
    assert paged._request_for(40) is first  # though it last ran another size and another copy ran since
    assert paged._request_for(1) is ones and paged._request_for(2) is first  # the first is again least recent
    assert paged._request_for(300) is first


def test_the_copies_share_the_cache_and_give_one_graphs_logits(loaded):
    prompt = list(range(1000, 1040))
    one, two = PagedModel(loaded.paged[:1]), PagedModel(loaded.paged)
    runs = []
    for paged in (one, two):
        paged.allocate(8)
        logits = [step(paged, prompt, 0)]
        past, token = len(prompt), int(logits[0].argmax())
        for n in (1, 3, 1, 2, 1):  # sizes alternate between the copies; each reads what the other wrote
            ids = [token] * n
            logits.append(step(paged, ids, past))
            past, token = past + n, int(logits[-1].argmax())
        runs.append(logits)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_token_counts_above_a_decode_step_fall_into_few_sizes_no_coarser_than_a_block():
    from server.engine.paged_model import EXACT_TOKENS, padded_tokens

    sizes = {padded_tokens(n, 32) for n in range(1, 513)}
    assert len(sizes) <= 60  # the plugin keeps kernels per token count: 512 counts would each keep theirs
    for n in range(1, 2049):
        padded = padded_tokens(n, 32)
        assert padded == n if n <= EXACT_TOKENS else n <= padded < n + 32 and padded <= n * 1.22
        assert padded_tokens(n, 16) - n < 16  # the padding fits one block
    assert padded_tokens(1, 32, pad_single=True) == 2 and padded_tokens(2, 32, pad_single=True) == 2


def test_a_padded_step_answers_as_the_same_step_unpadded_and_leaves_the_same_cache(loaded, monkeypatch):
    # 45 prompt tokens run as 48 (3 padding tokens in the padding block, past the cache's last): against the same
    # step run at 45 (batch-invariant numerics), the logits and the next token's must agree.
    import server.engine.paged_model as paged_model

    prompt = list(range(1000, 1045))
    runs = []
    for pad in (True, False):
        if not pad:
            monkeypatch.setattr(paged_model, "padded_tokens", lambda tokens, block_size, pad_single=False: tokens)
        paged = PagedModel(loaded.paged[:1])
        paged.allocate(8)
        first = step(paged, prompt, 0)
        assert paged._first.get_tensor("input_ids").get_shape() == [48 if pad else 45]
        runs.append((first, step(paged, [int(first.argmax())], len(prompt))))
    for padded, exact in zip(*runs):
        np.testing.assert_allclose(padded, exact, rtol=0, atol=1e-5)


def _anonymous_bytes() -> int:
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Anonymous line in /proc/self/smaps_rollup")


def test_the_kv_cache_is_resident_from_its_allocation(loaded):
    # Written through at allocation, so the server's memory is taken at its start and stays flat as the cache fills.
    paged = PagedModel(loaded.paged[:1])
    blocks = (64 << 20) // paged.bytes_per_block
    before = _anonymous_bytes()
    paged.allocate(blocks)
    assert _anonymous_bytes() - before >= 0.9 * blocks * paged.bytes_per_block
