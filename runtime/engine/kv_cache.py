"""The paged KV cache's bookkeeping: a pool of fixed-size blocks, a block table per slot, reference counts, and
automatic prefix caching. Pure Python over block numbers; the runners own the tensors the numbers index
(``runtime/engine/model.py``), and the scheduler decides who gets blocks (``runtime/engine/scheduler.py``).

Why pages: a contiguous cache per slot must reserve a sequence's longest possible length up front (or grow by
copying), so memory goes to tokens that may never exist and a full device crashes instead of queueing. Blocks of
:data:`BLOCK_SIZE` positions are taken as a sequence grows and given back when it leaves; the pool is sized once at
start-up from the device's memory (:func:`pool_blocks`), and when it runs out the scheduler makes sequences wait
or preempts the newest (vLLM's policy) instead of allocating more.

Prefix caching (vLLM's "automatic prefix caching"): a *full* block is named by a hash of its tokens and its
parent block's hash, so equal names mean equal prefixes up to and including that block. Once a block's positions
are all written, :meth:`PagedKVCache.commit` files it under that name; a new sequence whose prompt starts with the
same blocks takes them (:meth:`PagedKVCache.match_prefix`: reference count + 1) and prefills only the rest. A
block nobody holds any more keeps its name and its contents on an LRU list and is reused as is by the next
prompt that names it, or taken for new tokens (and forgotten) when the free list is empty: the oldest first.

Blocks are shared, never written while shared: a sequence writes only positions past what it matched, and the one
case where that would land in a shared block (a prompt made entirely of cached full blocks still has to compute
its last token, whose logits start generation) copies that block first (copy-on-write, :attr:`copy_block`).

Block 0 is never handed out: table entries past a sequence's blocks point at it, so a kernel reading a padded span
stays inside the pool.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

BLOCK_SIZE = 16
"""Positions per block: vLLM's default. Small enough that a sequence wastes at most 15 positions and prefixes are
shared at a fine grain, large enough that a block table stays short; a multiple of 8 (the native attention reads
eight keys at a time from one block)."""

NULL_BLOCK = 0


class OutOfBlocks(RuntimeError):
    """The pool has no free or evictable block left for this allocation (the scheduler's cue to wait or preempt)."""


def block_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The name of a full block: a cryptographic hash of its parent's name and its token ids. Not Python's
    ``hash``: tuple hashes of ints are predictable, and a tenant who could forge a collision would read another
    prompt's keys and values."""
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


ROOT_HASH = b"endpointctl-kv-v1"


class PagedKVCache:
    """Block pool bookkeeping for ``slots`` slots of up to ``max_blocks_per_seq`` blocks each.

    ``tables`` mirrors every slot's block list as an int32 tensor (rows = slots) for the kernels; unused entries
    are :data:`NULL_BLOCK`."""

    def __init__(self, *, num_blocks: int, slots: int, max_blocks_per_seq: int, prefix_caching: bool = True,
                 block_size: int = BLOCK_SIZE) -> None:
        if num_blocks < 2:
            raise ValueError("a KV pool needs at least 2 blocks (block 0 is reserved)")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.prefix_caching = prefix_caching
        self.refs = [0] * num_blocks
        self._free: deque[int] = deque(range(1, num_blocks))
        self._hash: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced named blocks, least recent first
        self._blocks: list[list[int]] = [[] for _ in range(slots)]
        self._names: list[list[bytes]] = [[] for _ in range(slots)]  # the names of each slot's leading blocks
        self.tables = torch.zeros((slots, max_blocks_per_seq), dtype=torch.int32)
        self.used = 0
        self.copy_block: Callable[[int, int], None] | None = None
        """Set by the runner that owns the tensors: copy block ``src``'s keys and values (every layer) to ``dst``."""
        self.zero_block: Callable[[int], None] | None = None
        """Set by a runner whose forward reads whole blocks (masked): zero a block as it is taken."""

    # ---- capacity ---------------------------------------------------------------------------------------
    @property
    def capacity_tokens(self) -> int:
        """Positions the pool holds (block 0 excluded): TGI's ``max_batch_total_tokens``."""
        return (self.num_blocks - 1) * self.block_size

    def available(self) -> int:
        """Blocks an allocation may take now: free ones and unreferenced cached ones."""
        return len(self._free) + len(self._evictable)

    def usage(self) -> float:
        """Fraction of the pool held by sequences (vLLM's ``kv_cache_usage_perc``)."""
        return self.used / (self.num_blocks - 1)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def blocks_needed(self, slot: int, tokens: int) -> int:
        """New blocks slot ``slot`` needs to hold ``tokens`` positions."""
        return max(0, self.blocks_for(tokens) - len(self._blocks[slot]))

    def blocks(self, slot: int) -> list[int]:
        return list(self._blocks[slot])

    # ---- allocation -------------------------------------------------------------------------------------
    def _take(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            del self._cached[self._hash[block]]
            self._hash[block] = None
        else:
            raise OutOfBlocks("no free KV block")
        if self.zero_block is not None:
            self.zero_block(block)
        self.refs[block] = 1
        self.used += 1
        return block

    def _hold(self, block: int) -> None:
        if self.refs[block] == 0:
            del self._evictable[block]
            self.used += 1
        self.refs[block] += 1

    def _drop(self, block: int) -> None:
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self.used -= 1
            if self._hash[block] is not None:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def _append(self, slot: int, block: int) -> None:
        table = self._blocks[slot]
        if len(table) >= self.tables.shape[1]:
            raise OutOfBlocks(f"slot {slot} is at its {self.tables.shape[1]}-block limit")
        self.tables[slot, len(table)] = block
        table.append(block)

    def allocate(self, slot: int, tokens: int) -> None:
        """Make slot ``slot`` hold at least ``tokens`` positions; all or nothing (raises OutOfBlocks)."""
        need = self.blocks_needed(slot, tokens)
        if need > self.available() or len(self._blocks[slot]) + need > self.tables.shape[1]:
            raise OutOfBlocks(f"{need} KV blocks needed, {self.available()} available")
        for _ in range(need):
            self._append(slot, self._take())

    def free(self, slot: int) -> None:
        """Give back every block of slot ``slot``, the last first: the LRU list then evicts a sequence's tail
        before its head, which other prompts are likelier to share."""
        for block in reversed(self._blocks[slot]):
            self._drop(block)
        if self._blocks[slot]:
            self.tables[slot].zero_()
        self._blocks[slot] = []
        self._names[slot] = []

    def move(self, src: int, dst: int) -> None:
        """Slot ``src``'s blocks become slot ``dst``'s (``dst``'s own are freed first); ``src`` is left empty."""
        if src == dst:
            return
        self.free(dst)
        self._blocks[dst], self._blocks[src] = self._blocks[src], []
        self._names[dst], self._names[src] = self._names[src], []
        self.tables[dst] = self.tables[src]
        self.tables[src].zero_()

    # ---- prefix caching -----------------------------------------------------------------------------------
    def match_prefix(self, slot: int, tokens: Sequence[int]) -> int:
        """Give empty slot ``slot`` the cached blocks that start ``tokens``; return how many positions they hold
        (at most ``len(tokens) - 1``: the last token is always computed, its logits start generation)."""
        if not self.prefix_caching or self._blocks[slot]:
            return 0
        size = self.block_size
        parent = ROOT_HASH
        hits: list[tuple[int, bytes]] = []
        for start in range(0, len(tokens) - size + 1, size):
            name = block_hash(parent, tokens[start:start + size])
            block = self._cached.get(name)
            if block is None:
                break
            hits.append((block, name))
            parent = name
        if not hits:
            return 0
        for block, name in hits:
            self._hold(block)
            self._append(slot, block)
            self._names[slot].append(name)
        matched = len(hits) * size
        if matched < len(tokens):
            return matched
        # Every position is cached, but the last token must still be computed, and it lies in the last matched
        # block: copy that block (copy-on-write) and recompute its last position in the copy, or, with no block
        # to copy into, give the block back and recompute it whole.
        shared = self._blocks[slot].pop()
        self._names[slot].pop()
        self.tables[slot, len(self._blocks[slot])] = NULL_BLOCK
        if self.copy_block is None or not self.available():
            self._drop(shared)
            return matched - size
        private = self._take()
        self.copy_block(shared, private)
        self._drop(shared)
        self._append(slot, private)
        return len(tokens) - 1

    def commit(self, slot: int, tokens: Sequence[int], written: int) -> None:
        """Name slot ``slot``'s full blocks among its first ``written`` positions (whose keys and values are now
        in the cache, computed from ``tokens``) so later prompts can share them."""
        if not self.prefix_caching:
            return
        names = self._names[slot]
        blocks = self._blocks[slot]
        size = self.block_size
        full = min(written // size, len(blocks))
        parent = names[-1] if names else ROOT_HASH
        for index in range(len(names), full):
            name = block_hash(parent, tokens[index * size:(index + 1) * size])
            block = blocks[index]
            if name not in self._cached and self._hash[block] is None:
                self._cached[name] = block
                self._hash[block] = name
            names.append(name)
            parent = name

    def cached_blocks(self) -> int:
        """Named blocks (held or evictable): what later prompts could reuse."""
        return len(self._cached)


# ---- sizing ----------------------------------------------------------------------------------------------

def kv_bytes_per_token(*, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Keys and values of one position over every layer."""
    return 2 * layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


@dataclass(frozen=True)
class PoolSize:
    """How many blocks the pool gets, and how that was decided (logged at start-up)."""

    num_blocks: int
    reason: str


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_headroom() -> int | None:
    """What the memory cgroup still allows this process (limit minus current use), where one is set."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_host_memory() -> int | None:
    """Bytes this process may still take: the smaller of the host's MemAvailable and the cgroup's headroom."""
    candidates = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(candidates) if candidates else None


def pool_blocks(*, device: torch.device, bytes_per_token: int, max_total_tokens: int, max_batch_size: int,
                max_batch_total_tokens: int | None, cpu_fraction: float, gpu_memory_utilization: float,
                cuda_mem_get_info: Callable[[], tuple[int, int]] | None = None,
                host_available: Callable[[], int | None] = available_host_memory,
                block_size: int = BLOCK_SIZE) -> PoolSize:
    """The pool's size, decided once at start-up (after the weights are loaded and a warm-up forward ran).

    * ``MAX_BATCH_TOTAL_TOKENS`` set: exactly that many positions, on any device.
    * CUDA: vLLM's rule, ``total * GPU_MEMORY_UTILIZATION`` minus what is in use now (weights, the warm-up's
      activations, other processes), all of the rest.
    * CPU: ``KV_CACHE_MEMORY_FRACTION`` of the memory still available (MemAvailable, or the cgroup's headroom if
      smaller), but no more than ``max_batch_size * max_total_tokens`` (every slot at full length).

    Never less than one sequence at full length (``max_total_tokens``): smaller, and a valid request could never
    run, so start-up fails with the numbers instead."""
    minimum = -(-max_total_tokens // block_size) + 1
    if max_batch_total_tokens is not None:
        blocks = -(-max_batch_total_tokens // block_size) + 1
        reason = f"MAX_BATCH_TOTAL_TOKENS={max_batch_total_tokens}"
    elif device.type == "cuda":
        free, total = (cuda_mem_get_info or torch.cuda.mem_get_info)()
        budget = int(total * gpu_memory_utilization) - (total - free)
        blocks = max(0, budget) // (bytes_per_token * block_size)
        reason = (f"GPU_MEMORY_UTILIZATION={gpu_memory_utilization}: {budget / 2**30:.2f} GiB of "
                  f"{total / 2**30:.2f} GiB ({free / 2**30:.2f} GiB free after loading)")
    else:
        available = host_available()
        ceiling = max_batch_size * max_total_tokens
        if available is None:
            blocks = -(-ceiling // block_size) + 1
            reason = "host memory unknown: every slot at full length"
        else:
            budget = int(available * cpu_fraction)
            blocks = min(budget // (bytes_per_token * block_size), -(-ceiling // block_size)) + 1
            reason = (f"KV_CACHE_MEMORY_FRACTION={cpu_fraction} of {available / 2**30:.2f} GiB available, "
                      f"at most {max_batch_size} x {max_total_tokens} positions")
    if blocks < minimum:
        raise OutOfBlocks(
            f"the KV cache pool ({reason}) holds {max(0, blocks - 1) * block_size} positions, fewer than one "
            f"sequence of MAX_TOTAL_TOKENS={max_total_tokens}; lower MAX_TOTAL_TOKENS or give the pool more memory"
        )
    return PoolSize(num_blocks=blocks, reason=reason)
