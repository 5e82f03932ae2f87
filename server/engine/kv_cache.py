"""The KV block manager: which cache blocks are free, and each sequence's block table."""
from __future__ import annotations

import math
import threading

from server.engine.params import DEFAULT_KV_CACHE_GB, KVCacheConfig


class BlockManager:
    """Fixed-size blocks of the paged KV cache.

    A sequence reserves, when admitted, every block it could ever need (prompt + max_new_tokens), so a
    running sequence never waits for a block and is never preempted; it takes them from the free list
    only as its tokens arrive. Freed blocks are reused first (a stack), so the cache memory the process
    touches stays as small as the load needs.
    """

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))
        self._unreserved = num_blocks
        self._lock = threading.Lock()  # the gauges read from another thread

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def reserve(self, blocks: int) -> bool:
        """Set aside `blocks` for a sequence being admitted; False if they are not all available."""
        with self._lock:
            if blocks > self._unreserved:
                return False
            self._unreserved -= blocks
            return True

    def grow(self, table: list[int], tokens: int) -> None:
        """Extend a block table (within its reservation) so it holds `tokens` tokens."""
        need = self.blocks_for(tokens) - len(table)
        if need > 0:
            with self._lock:
                table.extend(self._free.pop() for _ in range(need))

    def release(self, table: list[int], reserved: int) -> None:
        """Give a finished sequence's blocks and the rest of its reservation back."""
        with self._lock:
            self._free.extend(reversed(table))
            self._unreserved += reserved
        table.clear()

    def used(self) -> int:
        """Blocks holding some sequence's tokens."""
        with self._lock:
            return self.num_blocks - len(self._free)

    def reserved(self) -> int:
        with self._lock:
            return self.num_blocks - self._unreserved


def cache_blocks(config: KVCacheConfig, bytes_per_block: int, block_size: int, max_batch: int,
                 context_length: int) -> int:
    """How many blocks the KV cache gets (see KVCacheConfig)."""
    if config.blocks:
        return config.blocks
    if config.gb:
        return max(1, int(config.gb * 2**30 // bytes_per_block))
    whole = max_batch * math.ceil(context_length / block_size)
    return max(1, min(whole, int(DEFAULT_KV_CACHE_GB * 2**30 // bytes_per_block)))
