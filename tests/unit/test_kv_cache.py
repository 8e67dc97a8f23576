"""KV cache sizing from a byte budget (CPU), a fraction of free memory (CUDA), and the surplus cap."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import needs_cuda

from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError
from trt_gateway.engine.kv_cache import (
    SURPLUS_FACTOR,
    activation_bytes,
    bytes_per_block,
    fit_kv_cache,
    num_kv_blocks,
)
from trt_gateway.engine.model_config import parse_model_config

RAW = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32,
    "hidden_size": 64,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
CFG = parse_model_config(RAW)
CPU = torch.device("cpu")


def test_block_bytes_count_k_and_v_of_every_layer():
    # 2 (k, v) x 2 layers x 16 tokens x 2 kv heads x 16 head_dim x 4 bytes
    assert bytes_per_block(CFG, 16, torch.float32) == 2 * 2 * 16 * 2 * 16 * 4


def test_cpu_budget_in_bytes_sets_the_block_count():
    per_block = bytes_per_block(CFG, 16, torch.float32)
    config = EngineConfig(model="x", kv_cache_bytes=10 * per_block + 5, max_num_seqs=4)
    assert num_kv_blocks(config, CFG, CPU, torch.float32, max_model_len=64) == 10


def test_default_cpu_budget_fits_max_num_seqs_full_sequences():
    config = EngineConfig(model="x", max_num_seqs=3)
    assert num_kv_blocks(config, CFG, CPU, torch.float32, max_model_len=64) == 3 * 4


def test_huge_budgets_are_capped_at_the_surplus_factor():
    config = EngineConfig(model="x", kv_cache_bytes=1 << 40, max_num_seqs=2)
    assert num_kv_blocks(config, CFG, CPU, torch.float32, max_model_len=64) == SURPLUS_FACTOR * 2 * 4


def test_activation_estimate_counts_the_cuda_graphs_logits_buffer():
    """With the kernels (no KV gather) the graphs keep one [min(cuda_graph_max_batch, max_num_seqs), V] float32
    buffer for the engine's lifetime; the torch paths capture no graphs, and cuda_graph_max_batch=0 turns them off."""
    assert EngineConfig(model="x").cuda_graph_max_batch == 1024  # the default covers 1,024-sequence decode steps

    def estimate(gathers_kv: bool, **options: int) -> int:
        return activation_bytes(EngineConfig(model="x", **options), CFG, torch.bfloat16, 64, gathers_kv=gathers_kv)

    vocab_row = CFG.vocab_size * 4
    for seqs, graphed in ((2048, 1024), (128, 128)):  # the default batch, capped at max_num_seqs
        off = estimate(False, max_num_seqs=seqs, cuda_graph_max_batch=0)
        assert estimate(False, max_num_seqs=seqs) - off == graphed * vocab_row
        assert estimate(False, max_num_seqs=seqs, cuda_graph_max_batch=40) - off == 40 * vocab_row
        assert estimate(True, max_num_seqs=seqs) == estimate(True, max_num_seqs=seqs, cuda_graph_max_batch=0)


@needs_cuda
def test_cuda_budget_is_a_fraction_of_free_memory():
    device = torch.device("cuda")
    per_block = bytes_per_block(CFG, 16, torch.bfloat16)
    cap = SURPLUS_FACTOR * 128 * 4  # 128 sequences of 4 blocks, times the surplus factor
    estimate = activation_bytes(EngineConfig(model="x", max_num_seqs=128), CFG, torch.bfloat16, max_model_len=64)
    free, _ = torch.cuda.mem_get_info(device)  # first: the CUDA context this creates takes memory too
    # The fraction of this card's free memory that leaves half the cap's blocks after the activation estimate: on any
    # card, neither the estimate nor the cap decides the count.
    fraction = (estimate + cap // 2 * per_block) / free
    config = EngineConfig(model="x", gpu_memory_utilization=fraction, max_num_seqs=128)
    blocks = num_kv_blocks(config, CFG, device, torch.bfloat16, max_model_len=64)
    after, _ = torch.cuda.mem_get_info(device)

    def budget_rule(free_bytes: int) -> int:  # kv_cache: fraction x free - activations, in whole blocks
        return (int(free_bytes * fraction) - estimate) // per_block

    low, high = sorted((free, after))  # another process may take or give back memory meanwhile
    assert budget_rule(low) <= blocks <= budget_rule(high)
    assert 0 < blocks < cap


@needs_cuda
def test_cuda_budget_is_capped_at_the_surplus_factor():
    config = EngineConfig(model="x", gpu_memory_utilization=1.0, max_num_seqs=128)
    assert num_kv_blocks(config, CFG, torch.device("cuda"), torch.bfloat16, max_model_len=64) == SURPLUS_FACTOR * 128 * 4


def test_a_real_models_default_length_is_lowered_to_the_default_cpu_budget():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, 8,192 positions. One full sequence needs 384 MiB of float32 KV, more
    # than the 256 MiB CPU default: the "fails with default settings". Now it serves 5,824 tokens instead.
    smol = parse_model_config({**RAW, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                               "num_key_value_heads": 3, "max_position_embeddings": 8192})
    config = EngineConfig(model="x", max_num_seqs=16, block_size=16)
    blocks, length = fit_kv_cache(config, smol, CPU, torch.float32, max_model_len=8192)
    assert (blocks, length) == (364, 364 * 16)
    chosen = EngineConfig(model="x", max_num_seqs=16, block_size=16, max_model_len=8192)
    with pytest.raises(EngineConfigError, match="lower max_model_len"):
        fit_kv_cache(chosen, smol, CPU, torch.float32, max_model_len=8192)
