"""Paged KV-cache bookkeeping: fixed-size blocks, reference counts and automatic prefix caching.

A block holds `block_size` consecutive tokens of one or more sequences. A full, computed block is published in the
prefix cache under a chained hash: hash(parent block's hash, this block's token ids), where the first block's parent
is derived from the sequence's cache salt (its LoRA adapter, say), so equal tokens under different adapters never
share KV. Two sequences with the same first n full blocks therefore find the same n blocks.

A block whose ref count drops to 0 goes to the free queue but keeps its hash: it can still be hit (and revived)
until the allocator evicts it. The queue evicts in order: blocks without a hash first, then cached blocks oldest
first, a freed sequence's tail before its head (the head is likelier to be shared).

Verbs (nano-vllm's, generalised to "n new tokens" so prefill chunks and decodes are the same call):
`match_prefix` -> `can_allocate`/`allocate` when a sequence is admitted, `can_append`/`may_append` every later step,
`cache_full_blocks` after the step computed the KV, `deallocate` on finish, abort or preemption.
"""

from __future__ import annotations

from collections import OrderedDict

from trt_gateway.engine.sequence import Sequence

_ROOT = "trt-gateway-kv"  # seeds the chain so an unsalted first block never collides with a salted one


def first_parent_hash(cache_salt: str | None) -> int:
    return hash((_ROOT, cache_salt))


def hash_block(parent_hash: int, token_ids: tuple[int, ...]) -> int:
    return hash((parent_hash, token_ids))


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "parent_hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None  # set once published in the prefix cache
        self.parent_hash: int | None = None  # kept to verify a hit (a 64-bit hash may collide)
        self.token_ids: tuple[int, ...] = ()

    def reset(self) -> None:
        self.hash, self.parent_hash, self.token_ids = None, None, ()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # eviction order, first out
        self.cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds, including cached ones that could still be hit."""
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- prefix cache ----------------------------------------------------------------------------------------------
    def compute_hashes(self, seq: Sequence) -> list[int]:
        """Extend seq.block_hashes to cover every full block of its tokens (prompt and generated)."""
        bs = self.block_size
        hashes = seq.block_hashes
        parent = hashes[-1] if hashes else first_parent_hash(seq.cache_salt)
        for i in range(len(hashes), seq.num_tokens // bs):
            parent = hash_block(parent, tuple(seq.token_ids[i * bs : (i + 1) * bs]))
            hashes.append(parent)
        return hashes

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Block ids of the longest cached prefix of seq. Holds no reference: pass the result to allocate.

        The last token is never served from the cache: its logits are needed to sample the next token.
        """
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        max_blocks = (seq.num_tokens - 1) // bs
        hits: list[int] = []
        parent = first_parent_hash(seq.cache_salt)
        for i, h in enumerate(self.compute_hashes(seq)[:max_blocks]):
            block_id = self.cached.get(h)
            if block_id is None:
                break
            block = self.blocks[block_id]
            if block.parent_hash != parent or block.token_ids != tuple(seq.token_ids[i * bs : (i + 1) * bs]):
                break  # hash collision: treat as a miss
            hits.append(block_id)
            parent = h
        return hits

    # -- allocation ------------------------------------------------------------------------------------------------
    def can_allocate(self, seq: Sequence, hits: list[int], num_new_tokens: int) -> bool:
        """Whether seq (holding no blocks) can take the cached blocks `hits` plus room for num_new_tokens more."""
        needed = self.blocks_needed(len(hits) * self.block_size + num_new_tokens) - len(hits)
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # hits sitting in the free queue
        return needed + revived <= len(self.free)

    def allocate(self, seq: Sequence, hits: list[int], num_new_tokens: int) -> None:
        """Give seq the cached blocks `hits` (their tokens count as computed) and blocks for num_new_tokens more."""
        if seq.block_table:
            raise RuntimeError(f"{seq!r} already holds blocks")
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
        seq.block_table = list(hits)
        seq.num_registered_blocks = len(hits)
        seq.num_computed_tokens = len(hits) * self.block_size
        self.may_append(seq, num_new_tokens)

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        needed = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        return needed <= len(self.free)

    def may_append(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow seq's block table to hold num_new_tokens more tokens (no-op while the last block has room)."""
        needed = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        if needed > len(self.free):
            raise RuntimeError(f"{seq!r} needs {needed} blocks, {len(self.free)} free: call can_append first")
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())

    def deallocate(self, seq: Sequence) -> None:
        # Reversed, so the tail of the sequence is evicted before its (more shareable) head.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:
                    self.free.move_to_end(block_id, last=False)  # nothing worth keeping: reuse it first
        seq.block_table = []
        seq.num_registered_blocks = 0

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Publish seq's blocks that are full and computed. Call after the step that computed their KV."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        if num_full <= seq.num_registered_blocks:
            return
        hashes = self.compute_hashes(seq)
        bs = self.block_size
        for i in range(seq.num_registered_blocks, num_full):
            h = hashes[i]
            if h in self.cached:
                continue  # identical content computed by another sequence first: keep that copy
            block = self.blocks[seq.block_table[i]]
            block.hash = h
            block.parent_hash = hashes[i - 1] if i else first_parent_hash(seq.cache_salt)
            block.token_ids = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            self.cached[h] = block.block_id
        seq.num_registered_blocks = num_full

    def _take_free_block(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:  # evict its cached content
            if self.cached.get(block.hash) == block_id:
                del self.cached[block.hash]
            block.reset()
        block.ref_count = 1
        return block_id
