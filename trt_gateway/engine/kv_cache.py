"""Sizing and allocating the paged KV cache.

The cache is one tensor [2 (k, v), layers, num_blocks, block_size, Hkv, D]; each attention layer gets views of its
two slices. Its size comes from a byte budget:
- `num_kv_blocks` when configured (tests, benchmarks);
- CPU: `kv_cache_bytes`, default enough for max_num_seqs full-length sequences but at most 256 MiB;
- CUDA: gpu_memory_utilization x the memory free after loading the weights, less an estimate of the step's peak
  activations (with the torch attention path the padded decode gather is the big one; the kernels read in place)
  and of the CUDA graphs' static logits buffer.
Budgets are capped at SURPLUS_FACTOR x what max_num_seqs full-length sequences can use: beyond that, blocks only
hold more prefix cache, and each one costs host-side bookkeeping (a tiny model on an 80 GB GPU would otherwise get
millions). Blocks are sized in the cache's own element type: the model's, or FP8 E4M3 with `kv_cache_dtype="fp8"`
(`resolve_kv_dtype`), a byte per element, so the same budget buys twice the blocks of a bfloat16 cache.
One max_model_len sequence must fit (it could never finish otherwise): a max_model_len left at its default
(the model's maximum) is lowered to what fits, with a warning (`fit_kv_cache`); a chosen one is refused.
"""

from __future__ import annotations

import logging

import torch

from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError, MiB
from trt_gateway.engine.model_config import ModelConfig

DEFAULT_CPU_KV_BYTES = 256 * MiB
SURPLUS_FACTOR = 4
# The default max_model_len (the model's maximum) is lowered to what the cache holds, but a context shorter than
# this serves nothing useful: then start-up fails asking for a bigger budget instead.
MIN_AUTO_MODEL_LEN = 128

logger = logging.getLogger(__name__)


FP8_KV = torch.float8_e4m3fn


def resolve_kv_dtype(config: EngineConfig, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The cache's element type: the model's dtype, or FP8 E4M3 (`kv_cache_dtype="fp8"`). On a GPU the kernels
    convert FP8 with instructions of compute capability 8.9 (Ada, Hopper) and newer, so older GPUs refuse it."""
    if config.kv_cache_dtype != "fp8":
        return dtype
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        raise EngineConfigError(
            f"an FP8 KV cache needs compute capability 8.9 or newer; {name} has {major}.{minor}",
            field="kv_cache_dtype",
        )
    return FP8_KV


def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * cfg.head_dim * itemsize


def activation_bytes(
    config: EngineConfig, cfg: ModelConfig, dtype: torch.dtype, max_model_len: int, gathers_kv: bool = True
) -> int:
    """A generous estimate of one step's transient memory on top of weights and cache (CUDA graphs' pool
    included: it holds one decode step of the largest captured batch, far less than a full token budget), plus, where
    CUDA graphs are captured (the kernels, i.e. not gathers_kv, and cuda_graph_max_batch > 0), their static logits
    buffer: min(cuda_graph_max_batch, max_num_seqs) x vocab float32, held for the engine's lifetime."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    kv_width = cfg.num_key_value_heads * cfg.head_dim
    q_width = cfg.num_attention_heads * cfg.head_dim
    per_token = (4 * cfg.hidden_size + q_width + 2 * kv_width + 3 * cfg.intermediate_size) * itemsize
    decode_gather = 2 * config.max_num_seqs * max_model_len * kv_width * itemsize if gathers_kv else 0
    sampler = 6 * config.max_num_seqs * cfg.vocab_size * 4  # float32 logits, clones, sort, noise
    # CUDA graphs (captured with the kernels, i.e. when not gathers_kv) copy their logits into one static buffer.
    graphs = 0 if gathers_kv else min(config.cuda_graph_max_batch, config.max_num_seqs)
    graph_logits = graphs * cfg.vocab_size * 4
    return config.max_num_batched_tokens * per_token + decode_gather + sampler + graph_logits


def num_kv_blocks(
    config: EngineConfig,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_model_len: int,
    *,
    extra_bytes_per_block: int = 0,
    gathers_kv: bool = True,
    kv_dtype: torch.dtype | None = None,
) -> int:
    """extra_bytes_per_block: another cache indexed by the same blocks (the draft model's KV); gathers_kv: the torch
    attention path copies every decode's context per step (the kernels do not); kv_dtype: the cache's element type
    when not the model's `dtype` (an FP8 cache)."""
    num_blocks, field = _budget_blocks(
        config, cfg, device, dtype, max_model_len, extra_bytes_per_block, gathers_kv, kv_dtype or dtype
    )
    blocks_per_seq = -(-max_model_len // config.block_size)
    if num_blocks < blocks_per_seq:
        raise EngineConfigError(
            f"the KV cache holds {num_blocks} blocks ({num_blocks * config.block_size} tokens) but one "
            f"max_model_len={max_model_len} sequence needs {blocks_per_seq}: lower max_model_len (--max-model-len) "
            f"or raise {_flag(field)}",
            field=field,
        )
    return num_blocks


def fit_kv_cache(
    config: EngineConfig,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_model_len: int,
    *,
    extra_bytes_per_block: int = 0,
    gathers_kv: bool = True,
    kv_dtype: torch.dtype | None = None,
) -> tuple[int, int]:
    """(num_blocks, max_model_len). A max_model_len the user chose must fit as is; the default (the model's maximum)
    is lowered, with one warning, to what the cache holds, but not below min(MIN_AUTO_MODEL_LEN, the maximum)."""
    if config.max_model_len is None:
        blocks, field = _budget_blocks(
            config, cfg, device, dtype, max_model_len, extra_bytes_per_block, gathers_kv, kv_dtype or dtype
        )
        fitted = blocks * config.block_size
        if fitted < max_model_len:
            floor = min(MIN_AUTO_MODEL_LEN, max_model_len)
            if fitted < floor:
                raise EngineConfigError(
                    f"the KV cache holds only {fitted} tokens ({blocks} blocks of {config.block_size}), fewer than "
                    f"the {floor} one sequence needs at least: raise {_flag(field)}",
                    field=field,
                )
            logger.warning(
                "max_model_len lowered from %d (the model's maximum) to %d tokens, what the KV cache holds; raise %s "
                "for longer sequences", max_model_len, fitted, _flag(field),
            )
            max_model_len = fitted
    blocks = num_kv_blocks(config, cfg, device, dtype, max_model_len, extra_bytes_per_block=extra_bytes_per_block,
                           gathers_kv=gathers_kv, kv_dtype=kv_dtype)
    return blocks, max_model_len


def _budget_blocks(
    config: EngineConfig,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_model_len: int,
    extra_bytes_per_block: int,
    gathers_kv: bool,
    kv_dtype: torch.dtype,
) -> tuple[int, str]:
    """The blocks the configured budget buys at this max_model_len, and the field that sets the budget."""
    per_block = bytes_per_block(cfg, config.block_size, kv_dtype) + extra_bytes_per_block
    blocks_per_seq = -(-max_model_len // config.block_size)
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks, "num_kv_blocks"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * config.gpu_memory_utilization) - activation_bytes(
            config, cfg, dtype, max_model_len, gathers_kv
        )
        num_blocks = min(max(0, budget) // per_block, SURPLUS_FACTOR * config.max_num_seqs * blocks_per_seq)
        return num_blocks, "gpu_memory_utilization"
    default = min(DEFAULT_CPU_KV_BYTES, config.max_num_seqs * blocks_per_seq * per_block)
    budget = config.kv_cache_bytes if config.kv_cache_bytes is not None else default
    return min(budget // per_block, SURPLUS_FACTOR * config.max_num_seqs * blocks_per_seq), "kv_cache_bytes"


def _flag(field: str) -> str:
    return f"--option {field}=N" if field == "num_kv_blocks" else f"{field} (--{field.replace('_', '-')})"


def allocate_kv_cache(
    cfg: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """-> [2, layers, num_blocks, block_size, Hkv, D], zeroed (padding slots are read, then masked)."""
    shape = (2, cfg.num_hidden_layers, num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim)
    return torch.zeros(shape, dtype=dtype, device=device)
