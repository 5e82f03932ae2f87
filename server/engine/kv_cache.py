"""The KV block manager: which cache blocks are free, which hold a reusable prefix, and who holds each block."""
from __future__ import annotations

import hashlib
import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from server.engine.params import DEFAULT_KV_CACHE_GB, KVCacheConfig

# The parent key of a sequence's first block. Keys chain from position 0, so a block's key also fixes its
# position, and reused KV always lands where it was computed (RoPE keys are stored rotated).
ROOT = hashlib.sha256(b"llm-serving prefix cache").digest()


def chain(parent: bytes, tokens: Sequence[int]) -> bytes:
    """A full block's key: its parent's key and its token ids (sha256: crafted prompts cannot collide)."""
    return hashlib.sha256(parent + array("q", tokens).tobytes()).digest()


def block_keys(ids: Sequence[int], block_size: int) -> list[bytes]:
    """The keys of the full blocks of `ids` (a partial last block has none)."""
    keys, key = [], ROOT
    for start in range(0, len(ids) - block_size + 1, block_size):
        key = chain(key, ids[start:start + block_size])
        keys.append(key)
    return keys


class BlockManager:
    """Fixed-size blocks of the paged KV cache, shared by prefix (vLLM v1's automatic prefix caching).

    A block is held by `ref` block tables. A full block whose KV is computed gets a key (`register`); a new
    sequence starts from the longest chain of keyed blocks its prompt matches (`match`, `admit`). A block
    nobody holds is free: unkeyed ones on `_clean` (a stack, so touched memory stays small), keyed ones in
    `_lru`, oldest first, kept for reuse until their space is needed. A held block is in neither, so it is
    never evicted nor handed out.

    A sequence whose KV ends inside a block leaves that block, when it goes idle, as a partial entry under its
    parent's key (the key of the full block before it, or ROOT) with the token ids it holds (`release`). A
    later prompt that matches the chain up to that parent and begins its next block with m > 0 of those
    tokens starts m tokens further (`match_partial`): it takes the idle block itself and writes on after its
    m tokens (the entry is forgotten: its later slots get overwritten, and the next prompt finds it no more).
    Only idle blocks carry an entry, so an entry never lets anyone write a block another sequence holds.

    A sequence is promised, when admitted, every private block it could ever need (prompt + max_new_tokens
    less its hits), so a running sequence never waits for a block and is never preempted.
    `_unreserved` = free blocks - blocks promised and not yet allocated.

    Single-threaded: the scheduler's alone (the gauges get its counts in each step's SchedulerStats).
    """

    def __init__(self, num_blocks: int, block_size: int, caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = caching
        self._ref = [0] * num_blocks
        self._key: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}  # key -> its block (the first registered; no dedup)
        self._partial: dict[bytes, dict[int, tuple[int, ...]]] = {}  # parent key -> {idle block: its tokens}
        self._parent: list[bytes | None] = [None] * num_blocks  # a partial entry's parent key
        self._clean = list(range(num_blocks - 1, -1, -1))
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._promised = 0

    @property
    def _unreserved(self) -> int:
        return len(self._clean) + len(self._lru) - self._promised

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def match(self, keys: Sequence[bytes], limit: int) -> list[int]:
        """The cached blocks of the longest prefix of keys[:limit] (no side effects)."""
        hits = []
        if self.caching:
            for key in keys[:limit]:
                block = self._cached.get(key)
                if block is None:
                    break
                hits.append(block)
        return hits

    def admit(self, hits: list[int], need: int, partial: tuple[int, int] | None) -> bool:
        """Admit one prompt: its hit blocks, the blocks after them it needs, a partial hit (block, m) or None. An
        idle hit block leaves the free pool, so it costs one block (a block already held costs nothing); a
        partial hit's block continues the table in place of one of its private blocks. Appends it to `hits`.
        False, and nothing done, if the cost exceeds what is unreserved."""
        if need + sum(self._ref[b] == 0 for b in hits) > self._unreserved:
            return False
        for block in hits:
            self._hold(block)
        self._promised += need
        if partial is not None:
            self.take_partial(hits, partial[0])
        return True

    def match_partial(self, parent: bytes, tokens: Sequence[int]) -> tuple[int, int] | None:
        """The idle partial block under `parent` sharing the longest start with `tokens`: (block, m), m > 0."""
        best = None
        for block, held in self._partial.get(parent, {}).items() if self.caching else ():
            m = next((i for i, (a, b) in enumerate(zip(held, tokens)) if a != b), min(len(held), len(tokens)))
            if m and (best is None or m > best[1]):
                best = (block, m)
        return best

    def take_partial(self, table: list[int], block: int) -> None:
        """Append an idle partial block (from `match_partial`) to a table whose blocks are all full, in place
        of one promised private block; the table's sequence writes on after the tokens it matched."""
        self._take(block)
        table.append(block)
        self._promised -= 1

    def extend_hit(self, table: list[int], keys: Sequence[bytes], limit: int) -> int:
        """Append to a table whose blocks are all full the cached blocks that continue it (up to `limit` in
        all); each replaces one promised private block. Returns how many it took."""
        taken = 0
        for key in keys[len(table):limit] if self.caching else ():
            block = self._cached.get(key)
            if block is None:
                break
            self._hold(block)
            table.append(block)
            taken += 1
        self._promised -= taken
        return taken

    def grow(self, table: list[int], tokens: int) -> int:
        """Extend a block table (within its promise) so it holds `tokens` tokens; returns blocks allocated."""
        need = self.blocks_for(tokens) - len(table)
        if need <= 0:
            return 0
        for _ in range(need):
            table.append(self._allocate())
        self._promised -= need
        return need

    def register(self, block: int, key: bytes) -> None:
        """Key a full block whose KV is computed. The first block of a key wins: a later one stays unkeyed."""
        if not self.caching or key in self._cached or self._key[block] is not None:
            return
        self._key[block] = key
        self._cached[key] = block

    def release(self, table: list[int], unallocated: int,
                partial: tuple[int, bytes, Sequence[int]] | None = None) -> None:
        """Drop a finished sequence's hold on its blocks, tail first (so its tail is evicted before its
        head), and the private blocks it was promised but never took. `partial`: (block, parent key, tokens)
        of the block its KV ends inside; kept as a partial entry if the block goes idle."""
        for block in reversed(table):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                if partial is not None and block == partial[0] and self.caching:
                    self._parent[block] = partial[1]
                    self._partial.setdefault(partial[1], {})[block] = tuple(partial[2])
                if self._key[block] is None and self._parent[block] is None:
                    self._clean.append(block)
                else:
                    self._lru[block] = None
        self._promised -= unallocated
        table.clear()

    def drop_cache(self) -> None:
        """Forget every key (after a failed step, when nothing runs): every free block is clean again."""
        for key, block in self._cached.items():
            self._key[block] = None
        self._cached.clear()
        self._partial.clear()
        self._parent = [None] * self.num_blocks
        self._clean.extend(self._lru)
        self._lru.clear()

    def used(self) -> int:
        """Blocks held by some sequence."""
        return self.num_blocks - len(self._clean) - len(self._lru)

    def reserved(self) -> int:
        """Blocks held or promised: 0 when idle."""
        return self.num_blocks - self._unreserved

    def cached(self) -> int:
        """Free blocks kept for reuse."""
        return len(self._lru)

    def check(self, tables: Iterable[list[int]], promised: int) -> None:
        """Assert the invariants, given every running sequence's table and Σ of their outstanding promises."""
        refs = [0] * self.num_blocks
        for table in tables:
            for block in table:
                refs[block] += 1
        assert refs == self._ref, "a block's ref count differs from the tables holding it"
        clean, lru = set(self._clean), set(self._lru)
        assert len(clean) == len(self._clean) and not clean & lru, "a free block listed twice"
        free = {b for b in range(self.num_blocks) if self._ref[b] == 0}
        assert clean | lru == free, "a free block is lost, or a held block is free"
        assert all((self._key[b] is None) != (self._parent[b] is None) for b in lru), "an idle block kept for no reuse"
        assert all(self._key[b] is None and self._parent[b] is None for b in clean)
        assert {b: p for b, p in enumerate(self._parent) if p is not None} == \
            {b: p for p, entries in self._partial.items() for b in entries}, "partial entries differ"
        assert all(self._partial.values()) and all(self._ref[b] == 0 and 0 < len(self._partial[p][b]) < self.block_size
                                                   for b, p in enumerate(self._parent) if p is not None), \
            "a partial entry on a held block"
        assert {b: k for b, k in enumerate(self._key) if k is not None} == {b: k for k, b in self._cached.items()}
        assert self._promised == promised and self._unreserved >= 0, "promises differ or exceed the free blocks"

    def _hold(self, block: int) -> None:
        if self._ref[block] == 0:
            del self._lru[block]
        self._ref[block] += 1

    def _take(self, block: int) -> None:
        """Hold an idle partial block to write in it: its entry is forgotten."""
        self._hold(block)
        self._forget(block)

    def _forget(self, block: int) -> None:
        parent = self._parent[block]
        if parent is not None:
            entries = self._partial[parent]
            del entries[block]
            if not entries:
                del self._partial[parent]
            self._parent[block] = None

    def _allocate(self) -> int:
        if self._clean:
            block = self._clean.pop()
        else:  # evict the least recently used cached block
            block, _ = self._lru.popitem(last=False)
            if self._key[block] is not None:
                del self._cached[self._key[block]]
                self._key[block] = None
            self._forget(block)
        self._ref[block] = 1
        return block


# When neither the cache nor max_batch is given, the cache is sized for this many whole contexts (capped at
# DEFAULT_KV_CACHE_GB) and max_batch then follows from the cache, never the other way round.
SIZING_BATCH = 8
# An average request, for the max_batch the cache holds: a chat turn's prompt (system prompt and question, up to
# about 256 tokens) and an answer of the profiles' default max_new_tokens, 256. Sequences are admitted by the blocks
# they need, so shorter ones still run more at once, up to max_batch.
AVERAGE_REQUEST_TOKENS = 512


def cache_blocks(config: KVCacheConfig, bytes_per_block: int, block_size: int, max_batch: int,
                 context_length: int) -> int:
    """How many blocks the KV cache gets (see KVCacheConfig); max_batch 0: not set (see SIZING_BATCH)."""
    if config.blocks:
        return config.blocks
    if config.gb:
        return max(1, int(config.gb * 2**30 // bytes_per_block))
    whole = (max_batch or SIZING_BATCH) * math.ceil(context_length / block_size)
    return max(1, min(whole, int(DEFAULT_KV_CACHE_GB * 2**30 // bytes_per_block)))


def default_max_batch(num_blocks: int, block_size: int) -> int:
    """Sequences running at once when the servable does not say: as many average requests as the cache holds."""
    return max(1, num_blocks // math.ceil(AVERAGE_REQUEST_TOKENS / block_size))
