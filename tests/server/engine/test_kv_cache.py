"""The block manager alone: block keys, reference counts, the LRU of idle cached blocks, admission's cost; the cache's
size and the max_batch it holds."""
from server.engine.kv_cache import (AVERAGE_REQUEST_TOKENS, ROOT, SIZING_BATCH, BlockManager, block_keys, cache_blocks,
                                    chain, default_max_batch)
from server.engine.params import KVCacheConfig


def cached_sequence(m: BlockManager, tokens: list[int]) -> list[int]:
    """Run a sequence's blocks through the manager as the core does: admit, fill, key, release."""
    table = []
    assert m.admit([], m.blocks_for(len(tokens)), None)
    m.grow(table, len(tokens))
    for block, key in zip(table, block_keys(tokens, m.block_size)):
        m.register(block, key)
    blocks = list(table)
    m.release(table, 0)
    return blocks


def test_a_key_chains_its_parent_so_it_names_the_whole_prefix():
    a = block_keys([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    b = block_keys([1, 2, 3, 4, 5, 6, 0, 8, 9, 9, 9, 9], 4)
    assert len(a) == 2  # the partial block [9] has no key
    assert a[0] == b[0] and a[1] != b[1]
    assert b[2] != block_keys([9, 9, 9, 9], 4)[0]  # same tokens, another prefix and position
    assert a[1] == chain(chain(ROOT, [1, 2, 3, 4]), [5, 6, 7, 8])


def test_the_least_recently_freed_block_goes_first_and_a_sequence_tail_before_its_head():
    m = BlockManager(4, 2)
    a, b = [1, 2, 3, 4], [5, 6, 7, 8]
    a_blocks, b_blocks = cached_sequence(m, a), cached_sequence(m, b)
    assert m.cached() == 4 and m.used() == 0 and m.reserved() == 0
    m.check([], 0)
    order = []
    assert m.admit([], 3, None)
    table = []
    for n in (1, 2, 3):
        m.grow(table, 2 * n)
        order.append(table[-1])
    assert order == [a_blocks[1], a_blocks[0], b_blocks[1]]
    assert m.match(block_keys(a, 2), 2) == [] and m.match(block_keys(b, 2), 2) == [b_blocks[0]]
    m.check([table], 0)


def test_a_held_block_is_never_evicted_even_after_one_of_two_holders_leaves():
    m = BlockManager(4, 2)
    keys = block_keys([1, 2, 3, 4], 2)
    shared = cached_sequence(m, [1, 2, 3, 4])
    one, two = list(m.match(keys, 2)), list(m.match(keys, 2))
    assert m.admit(one, 0, None) and m.admit(two, 2, None)
    m.release(one, 0)  # ref 2 -> 1
    m.check([two], 2)
    m.grow(two, 8)  # takes the two clean blocks, never the held ones
    assert two[:2] == shared and set(two[2:]).isdisjoint(shared) and m.match(keys, 2) == shared
    m.release(two, 0)
    m.check([], 0)
    assert m.used() == 0 and m.reserved() == 0 and m.cached() == 2


def test_admission_counts_an_idle_hit_once_and_a_held_hit_not_at_all():
    m = BlockManager(4, 2)
    keys = block_keys([1, 2, 3, 4], 2)
    cached_sequence(m, [1, 2, 3, 4])
    hits = m.match(keys, 2)
    assert m.admit(hits, 1, None) and m.reserved() == 3  # the idle hits cost a block each: 2 + 1
    assert m.admit(list(hits), 1, None)  # a second prompt sharing them, held now: costs only its private block
    assert m.reserved() == 4
    m.release(list(hits), 1)
    assert m.reserved() == 3
    assert m.admit(m.match(keys, 2), 1, None)  # held by the first: costs only its private block
    assert m.reserved() == 4 and not m.admit([], 1, None) and m.reserved() == 4


def test_a_second_registration_of_a_key_leaves_its_block_unkeyed():
    m = BlockManager(4, 2)
    first, second = cached_sequence(m, [1, 2]), cached_sequence(m, [1, 2])
    assert first != second and m.cached() == 1 and m.match(block_keys([1, 2], 2), 1) == first
    m.check([], 0)


def test_caching_off_keys_nothing():
    m = BlockManager(4, 2, caching=False)
    cached_sequence(m, [1, 2, 3, 4])
    assert m.cached() == 0 and m.match(block_keys([1, 2, 3, 4], 2), 2) == []
    m.check([], 0)


def test_a_partial_entry_is_kept_while_idle_and_forgotten_when_taken_or_evicted():
    m = BlockManager(3, 4)
    assert m.admit([], 2, None)
    table = []
    m.grow(table, 6)  # one full block and two tokens of the next
    m.register(table[0], block_keys([1, 2, 3, 4], 4)[0])
    parent, tail = block_keys([1, 2, 3, 4], 4)[0], table[1]
    m.release(table, 0, (tail, parent, [5, 6]))
    m.check([], 0)
    assert m.cached() == 2 and m.match_partial(parent, [5, 7, 8]) == (tail, 1)
    assert m.match_partial(parent, [6]) is None and m.match_partial(ROOT, [5, 6]) is None
    assert m.admit([], 3, None)
    table = []
    m.grow(table, 12)  # the clean block, then the LRU: the partial tail goes with its entry
    assert tail in table and m.match_partial(parent, [5, 6]) is None
    m.check([table], 0)


def test_a_partial_hit_is_taken_by_one_prompt_and_then_found_no_more():
    m = BlockManager(8, 4)
    assert m.admit([], 1, None)
    table = []
    m.grow(table, 3)
    tail = table[0]
    m.release(table, 0, (tail, ROOT, [1, 2, 3]))
    assert m.match_partial(ROOT, [1, 2, 3, 4]) == (tail, 3)
    first = []
    assert m.admit(first, 2, (tail, 3)) and first == [tail]
    # The same cost as without the hit: 2 blocks. Its entry is forgotten (the block is written on): the next
    # prompt with the same start computes it afresh, and nobody writes a block another holds.
    assert m.reserved() == 2 and m.match_partial(ROOT, [1, 2, 3]) is None
    m.check([first], 1)


BLOCK_BYTES = 737_280  # the default model's f16 block: 30 layers x K and V x 3 heads x 32 tokens x 64 x 2 bytes


def test_an_unset_max_batch_sizes_the_cache_as_8_whole_contexts_and_then_follows_from_it():
    unset = cache_blocks(KVCacheConfig(), BLOCK_BYTES, 32, 0, 1024)  # 8 x 1024 tokens: under the 1 GB cap
    assert unset == cache_blocks(KVCacheConfig(), BLOCK_BYTES, 32, SIZING_BATCH, 1024) == 8 * 32
    assert default_max_batch(unset, 32) == 256 // (AVERAGE_REQUEST_TOKENS // 32) == 16
    # The default model's 8192-token context: capped at 1 GB, 1456 blocks, 91 average requests; 0.5 GB: 45.
    assert cache_blocks(KVCacheConfig(), BLOCK_BYTES, 32, 0, 8192) == 1456
    assert default_max_batch(1456, 32) == 91 and default_max_batch(cache_blocks(
        KVCacheConfig(gb=0.5), BLOCK_BYTES, 32, 0, 8192), 32) == 45


def test_a_set_max_batch_or_cache_size_wins_and_a_tiny_cache_still_runs_one():
    assert cache_blocks(KVCacheConfig(), BLOCK_BYTES, 32, 2, 1024) == 2 * 32
    assert cache_blocks(KVCacheConfig(blocks=40), BLOCK_BYTES, 32, 0, 8192) == 40
    assert default_max_batch(40, 32) == 2 and default_max_batch(5, 32) == 1
    assert default_max_batch(40, 16) == 1  # 512 tokens are 32 blocks of 16
