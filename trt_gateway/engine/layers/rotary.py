"""Rotary position embeddings (RoPE), HF "rotate_half" layout, with the default, linear and llama3 frequency rules.

cos/sin are tabulated once in float32 for every position up to max_positions and indexed by each token's absolute
position, so prefill chunks, decodes and recomputed sequences all see exactly the values HF computes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from trt_gateway.engine.model_config import RopeConfig

if TYPE_CHECKING:  # the kernels import triton, which CPU installs may lack
    from trt_gateway.engine.kernels.rotary_store import KVWrite


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """[head_dim // 2] float32, the same arithmetic as transformers' rope init functions."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    if rope.rope_type == "linear":
        return inv_freq / rope.factor
    if rope.rope_type == "llama3":
        # Long wavelengths (beyond the original context) are slowed down by `factor`, short ones are kept, and the
        # band in between is interpolated smoothly.
        old_len = rope.original_max_position_embeddings
        low_freq_wavelen = old_len / rope.low_freq_factor
        high_freq_wavelen = old_len / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    cos: torch.Tensor  # [max_positions, head_dim] float32
    sin: torch.Tensor

    def __init__(self, rope: RopeConfig, head_dim: int, max_positions: int, device: torch.device) -> None:
        super().__init__()
        inv_freq = inverse_frequencies(rope, head_dim).to(device)
        positions = torch.arange(max_positions, dtype=torch.float32, device=device)
        freqs = positions[:, None] * inv_freq[None, :]  # [max_positions, head_dim // 2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [max_positions, head_dim]
        # Not part of the checkpoint: persistent=False keeps them out of state_dict / load_state_dict.
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(
        self,
        positions: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        use_kernels: bool = False,
        cache: KVWrite | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: [T] int64; q: [T, H, D]; k: [T, Hkv, D] -> rotated q, k (same shapes and dtype).

        use_kernels: rotate q and k in place in one Triton launch (CUDA), with the same roundings as below, and
        with `cache` also store the rotated k and the v into the paged KV cache in that launch."""
        if use_kernels:
            from trt_gateway.engine.kernels.rotary_store import apply_rotary_

            apply_rotary_(q, k, positions, self.cos, self.sin, cache)
            return q, k
        if cache is not None:
            raise ValueError("writing the KV cache during rotation needs the kernels")
        cos = self.cos[positions].to(q.dtype)[:, None, :]  # [T, 1, D], broadcast over heads
        sin = self.sin[positions].to(q.dtype)[:, None, :]
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
