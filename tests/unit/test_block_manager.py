"""Block manager: ref counts, prefix hits, hash chaining with a cache salt, eviction, no leaks."""

from __future__ import annotations

import pytest
from engine_helpers import make_request

from trt_gateway.engine.block_manager import BlockManager, first_parent_hash, hash_block
from trt_gateway.engine.sequence import Sequence

BS = 4
_ids = iter(range(10**6))


def seq(tokens: list[int], adapter: str | None = None) -> Sequence:
    return Sequence(
        make_request(f"r{next(_ids)}", adapter=adapter), tokens, arrival_index=next(_ids), eos_token_ids=(2,), seed=0
    )


def admit(bm: BlockManager, s: Sequence) -> list[int]:
    """Admit s with its whole remaining prompt, as the scheduler does, and mark it computed and published."""
    hits = bm.match_prefix(s)
    num_new = s.num_tokens - len(hits) * BS
    assert bm.can_allocate(s, hits, num_new)
    bm.allocate(s, hits, num_new)
    s.num_computed_tokens = s.num_tokens
    bm.cache_full_blocks(s)
    return hits


def test_allocate_and_deallocate_restore_every_block():
    bm = BlockManager(8, BS)
    s = seq(list(range(10, 20)))  # 10 tokens -> 3 blocks
    admit(bm, s)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    assert all(bm.blocks[b].ref_count == 1 for b in s.block_table)
    bm.deallocate(s)
    assert bm.num_free_blocks == 8 and s.block_table == []
    assert all(b.ref_count == 0 for b in bm.blocks)


def test_identical_prompt_hits_all_full_blocks_but_the_last_token():
    bm = BlockManager(16, BS)
    a = seq(list(range(10, 22)))  # 12 tokens: 3 full blocks
    admit(bm, a)
    b = seq(list(range(10, 22)))
    hits = admit(bm, b)
    # The last token must be recomputed for its logits, so only 2 of the 3 full blocks are reused.
    assert hits == a.block_table[:2]
    assert b.num_computed_tokens == 12 and b.block_table[:2] == a.block_table[:2]
    assert [bm.blocks[x].ref_count for x in a.block_table] == [2, 2, 1]
    bm.deallocate(a)
    assert [bm.blocks[x].ref_count for x in b.block_table[:2]] == [1, 1]
    bm.deallocate(b)
    assert bm.num_free_blocks == 16


def test_hash_chains_through_the_prefix():
    bm = BlockManager(16, BS)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    admit(bm, a)
    # Same second block, different first block: the chained hash differs, so no hit at all.
    b = seq([9, 9, 9, 9, 5, 6, 7, 8, 9])
    assert bm.match_prefix(b) == []
    h0 = hash_block(first_parent_hash(None), (1, 2, 3, 4))
    assert bm.compute_hashes(a)[:2] == [h0, hash_block(h0, (5, 6, 7, 8))]


def test_cache_salt_separates_adapters():
    bm = BlockManager(16, BS)
    admit(bm, seq(list(range(10, 19)), adapter="alpha"))
    assert bm.match_prefix(seq(list(range(10, 19)), adapter="beta")) == []
    assert bm.match_prefix(seq(list(range(10, 19)))) == []
    assert len(bm.match_prefix(seq(list(range(10, 19)), adapter="alpha"))) == 2


def test_freed_blocks_stay_cached_until_evicted():
    bm = BlockManager(4, BS)
    a = seq(list(range(10, 19)))  # 3 blocks, 2 full
    admit(bm, a)
    bm.deallocate(a)
    assert bm.num_free_blocks == 4
    b = seq(list(range(10, 19)))
    hits = admit(bm, b)  # revives the two cached blocks from the free queue
    assert len(hits) == 2 and bm.num_free_blocks == 1
    bm.deallocate(b)
    # A different 16-token prompt needs every block: the cached ones are evicted and forgotten.
    c = seq(list(range(100, 116)))
    admit(bm, c)
    assert bm.num_free_blocks == 0
    assert bm.match_prefix(seq(list(range(10, 19)))) == []
    bm.deallocate(c)
    assert bm.num_free_blocks == 4


def test_uncached_blocks_are_reused_before_cached_ones():
    bm = BlockManager(4, BS)
    a = seq(list(range(10, 16)))  # one full (cached) block, one partial (uncached)
    admit(bm, a)
    partial = a.block_table[1]
    bm.deallocate(a)
    d = seq([50, 51, 52])
    admit(bm, d)
    assert d.block_table == [partial]
    assert len(bm.match_prefix(seq(list(range(10, 16))))) == 1  # the full block survived


def test_can_append_and_may_append_grow_one_block_at_a_time():
    bm = BlockManager(3, BS)
    s = seq([5, 6, 7])
    admit(bm, s)
    assert len(s.block_table) == 1
    s.token_ids.append(8)
    assert bm.can_append(s, 1)
    bm.may_append(s, 1)  # position 3 still fits in block 0
    assert len(s.block_table) == 1
    s.num_computed_tokens = 4
    s.token_ids.append(9)
    bm.may_append(s, 1)
    assert len(s.block_table) == 2
    s.num_computed_tokens = 5
    assert bm.can_append(s, 7) and not bm.can_append(s, 8)
    with pytest.raises(RuntimeError):
        bm.may_append(s, 8)
    bm.deallocate(s)
    assert bm.num_free_blocks == 3


def test_can_allocate_counts_revived_hits_against_free_blocks():
    bm = BlockManager(3, BS)
    a = seq(list(range(10, 19)))
    admit(bm, a)
    bm.deallocate(a)
    b = seq(list(range(10, 19)))
    hits = bm.match_prefix(b)
    assert len(hits) == 2
    # 2 revived hits + 1 new block for the 9th token = all 3 blocks
    assert bm.can_allocate(b, hits, 1)
    assert not bm.can_allocate(b, hits, 5)


def test_prefix_caching_disabled_never_hits():
    bm = BlockManager(8, BS, enable_prefix_caching=False)
    admit(bm, seq(list(range(10, 19))))
    assert bm.match_prefix(seq(list(range(10, 19)))) == []
    assert bm.cached == {}
