"""The KV block manager: which cache blocks are free, which hold a reusable prefix, and who holds each block."""
from __future__ import annotations

import hashlib
import math
import threading
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

    A sequence is promised, when admitted, every private block it could ever need (prompt + max_new_tokens
    less its hits), so a running sequence never waits for a block and is never preempted.
    `_unreserved` = free blocks - blocks promised and not yet allocated.
    """

    def __init__(self, num_blocks: int, block_size: int, caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = caching
        self._ref = [0] * num_blocks
        self._key: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}  # key -> its block (the first registered; no dedup)
        self._clean = list(range(num_blocks - 1, -1, -1))
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._promised = 0
        self._lock = threading.Lock()  # the gauges read from another thread

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

    def admit(self, plans: list[tuple[list[int], int]]) -> bool:
        """Admit a call, all of its prompts or none: per prompt (its hit blocks, private blocks to promise).
        An idle hit block leaves the free pool, so it costs one block, once however many prompts share it;
        a block already held costs nothing. False if the cost exceeds what is unreserved."""
        with self._lock:
            idle = {b for hits, _ in plans for b in hits if self._ref[b] == 0}
            private = sum(n for _, n in plans)
            if private + len(idle) > self._unreserved:
                return False
            for hits, _ in plans:
                for block in hits:
                    self._hold(block)
            self._promised += private
            return True

    def extend_hit(self, table: list[int], keys: Sequence[bytes], limit: int) -> int:
        """Append to a table whose blocks are all full the cached blocks that continue it (up to `limit` in
        all); each replaces one promised private block. Returns how many it took."""
        taken = 0
        with self._lock:
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
        with self._lock:
            for _ in range(need):
                table.append(self._allocate())
            self._promised -= need
        return need

    def register(self, block: int, key: bytes) -> None:
        """Key a full block whose KV is computed. The first block of a key wins: a later one stays unkeyed."""
        if not self.caching or key in self._cached or self._key[block] is not None:
            return
        with self._lock:
            self._key[block] = key
            self._cached[key] = block

    def release(self, table: list[int], unallocated: int) -> None:
        """Drop a finished sequence's hold on its blocks, tail first (so its tail is evicted before its
        head), and the private blocks it was promised but never took."""
        with self._lock:
            for block in reversed(table):
                self._ref[block] -= 1
                if self._ref[block] == 0:
                    if self._key[block] is None:
                        self._clean.append(block)
                    else:
                        self._lru[block] = None
            self._promised -= unallocated
        table.clear()

    def drop_cache(self) -> None:
        """Forget every key (after a failed step, when nothing runs): every free block is clean again."""
        with self._lock:
            for key, block in self._cached.items():
                self._key[block] = None
            self._cached.clear()
            self._clean.extend(self._lru)
            self._lru.clear()

    def used(self) -> int:
        """Blocks held by some sequence."""
        with self._lock:
            return self.num_blocks - len(self._clean) - len(self._lru)

    def reserved(self) -> int:
        """Blocks held or promised: 0 when idle."""
        with self._lock:
            return self.num_blocks - self._unreserved

    def cached(self) -> int:
        """Free blocks kept for reuse."""
        with self._lock:
            return len(self._lru)

    def check(self, tables: Iterable[list[int]], promised: int) -> None:
        """Assert the invariants, given every running sequence's table and Σ of their outstanding promises."""
        with self._lock:
            refs = [0] * self.num_blocks
            for table in tables:
                for block in table:
                    refs[block] += 1
            assert refs == self._ref, "a block's ref count differs from the tables holding it"
            clean, lru = set(self._clean), set(self._lru)
            assert len(clean) == len(self._clean) and not clean & lru, "a free block listed twice"
            free = {b for b in range(self.num_blocks) if self._ref[b] == 0}
            assert clean | lru == free, "a free block is lost, or a held block is free"
            assert all(self._key[b] is not None for b in lru) and all(self._key[b] is None for b in clean)
            assert {b: k for b, k in enumerate(self._key) if k is not None} == {b: k for k, b in self._cached.items()}
            assert self._promised == promised and self._unreserved >= 0, "promises differ or exceed the free blocks"

    def _hold(self, block: int) -> None:
        if self._ref[block] == 0:
            del self._lru[block]
        self._ref[block] += 1

    def _allocate(self) -> int:
        if self._clean:
            block = self._clean.pop()
        else:  # evict the least recently used cached block
            block, _ = self._lru.popitem(last=False)
            del self._cached[self._key[block]]
            self._key[block] = None
        self._ref[block] = 1
        return block


def cache_blocks(config: KVCacheConfig, bytes_per_block: int, block_size: int, max_batch: int,
                 context_length: int) -> int:
    """How many blocks the KV cache gets (see KVCacheConfig)."""
    if config.blocks:
        return config.blocks
    if config.gb:
        return max(1, int(config.gb * 2**30 // bytes_per_block))
    whole = max_batch * math.ceil(context_length / block_size)
    return max(1, min(whole, int(DEFAULT_KV_CACHE_GB * 2**30 // bytes_per_block)))
