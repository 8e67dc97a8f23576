"""The Llama-family decoder over a flattened batch of tokens and a paged KV cache: Llama 2/3, Mistral (sliding
window), Qwen2/2.5, Qwen3 (per-head q/k norms), Gemma and Gemma2 (their norms, GeGLU, embedding scale; Gemma2's
norms after attention and MLP, soft-capping and alternating windows). What differs is read from `ModelConfig`.

Module and parameter names mirror HF's `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj.weight`, ...), so a
checkpoint's state dict loads with `load_state_dict(assign=True)` and no renaming. Every projection is a
`layers.linear.Linear`, the multi-LoRA hook.

Tokens of all sequences in a step are concatenated along one axis T; `positions` [T] and `AttentionMetadata` say
which sequence and position each token is, and the optional `LoraBatch` which adapter slot (None: no token has one).

After loading, `fuse_projections()` computes q/k/v and gate/up as one matmul each (`FusedLinear`), and the residual
stream is carried beside the hidden states so every norm also does the add before it (`RMSNorm.forward_add`).
`use_kernels` (CUDA) swaps norms, rotary, SwiGLU, attention and one-row projections for Triton kernels; the
arithmetic stays HF's. Gemma's norms and GeGLU have no kernel and take the torch path on every device.
"""

from __future__ import annotations

import torch
from torch import nn

from trt_gateway.engine.layers.activation import gelu_tanh_and_mul, silu_and_mul
from trt_gateway.engine.layers.attention import Attention, AttentionMetadata, AttentionShape
from trt_gateway.engine.layers.linear import FusedLinear, Linear
from trt_gateway.engine.layers.lora import LoraBatch
from trt_gateway.engine.layers.norm import RMSNorm
from trt_gateway.engine.layers.rotary import RotaryEmbedding
from trt_gateway.engine.model_config import ModelConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, use_kernels: bool = False, layer: int = 0) -> None:
        super().__init__()
        self.use_kernels = use_kernels
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = Linear(cfg.hidden_size, q_size, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.o_proj = Linear(q_size, cfg.hidden_size, bias=cfg.o_bias)
        shape = AttentionShape(
            scale=cfg.attention_scale or self.head_dim**-0.5,
            window=cfg.window_of(layer),
            softcap=cfg.attn_logit_softcap,
        )
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, use_kernels, shape)
        if cfg.qk_norm:  # Qwen3: over each head's D values of q and k, before RoPE
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, use_kernels)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, use_kernels)
        self.qk_norm = cfg.qk_norm
        self.qkv: FusedLinear | None = None  # set by fuse_projections
        # Shared by all layers and built on the real device by the loader; its buffers are non-persistent, so it
        # is not part of the state dict the checkpoint must provide.
        self.rotary = rotary

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata, lora: LoraBatch | None = None
    ) -> torch.Tensor:
        """positions: [T]; x: [T, hidden] -> [T, hidden]"""
        tokens = x.shape[0]
        if self.qkv is not None:
            q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
            qkv = self.qkv(x, lora)  # [T, q + 2 kv]; q, k, v below are views of it
            q = qkv[:, :q_size].view(tokens, self.num_heads, self.head_dim)
            k = qkv[:, q_size : q_size + kv_size].view(tokens, self.num_kv_heads, self.head_dim)
            v = qkv[:, q_size + kv_size :].view(tokens, self.num_kv_heads, self.head_dim)
        else:
            q = self.q_proj(x, lora).view(tokens, self.num_heads, self.head_dim)
            k = self.k_proj(x, lora).view(tokens, self.num_kv_heads, self.head_dim)
            v = self.v_proj(x, lora).view(tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:  # the norm kernel takes rows: one per (token, head)
            q = self.q_norm(q.reshape(-1, self.head_dim)).view(tokens, self.num_heads, self.head_dim)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view(tokens, self.num_kv_heads, self.head_dim)
        if self.use_kernels:  # one launch rotates q and k and stores k and v in the paged cache
            q, k = self.rotary(positions, q, k, use_kernels=True, cache=self.attn.kv_write(v, meta))
            out = self.attn(q, k, v, meta, kv_written=True)  # [T, H, D]
        else:
            q, k = self.rotary(positions, q, k)
            out = self.attn(q, k, v, meta)
        return self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim), lora)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, use_kernels: bool = False) -> None:
        super().__init__()
        self.use_kernels = use_kernels
        self.gelu = cfg.hidden_act == "gelu_pytorch_tanh"
        self.gate_up: FusedLinear | None = None  # set by fuse_projections
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, lora: LoraBatch | None = None) -> torch.Tensor:
        """x: [T, hidden] -> [T, hidden]"""
        if self.gate_up is not None:
            gate_up = self.gate_up(x, lora)
        else:
            gate_up = torch.cat([self.gate_proj(x, lora), self.up_proj(x, lora)], dim=-1)
        act = gelu_tanh_and_mul(gate_up) if self.gelu else silu_and_mul(gate_up, self.use_kernels)
        return self.down_proj(act, lora)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, use_kernels: bool = False, layer: int = 0) -> None:
        super().__init__()
        self.input_layernorm = _norm(cfg, use_kernels)
        self.self_attn = LlamaAttention(cfg, rotary, use_kernels, layer)
        self.post_attention_layernorm = _norm(cfg, use_kernels)
        self.mlp = LlamaMLP(cfg, use_kernels)
        self.sandwich = cfg.sandwich_norms
        if cfg.sandwich_norms:  # Gemma2: the attention and MLP outputs are normed before they join the residual
            self.pre_feedforward_layernorm = _norm(cfg, use_kernels)
            self.post_feedforward_layernorm = _norm(cfg, use_kernels)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
        lora: LoraBatch | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: the previous layer's output, not yet added to `residual` (None for the first layer, whose input is
        the embedding). -> (this layer's output, the residual stream before it), summed by the next norm."""
        if residual is None:
            residual, h = x, self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm.forward_add(x, residual)
        h = self.self_attn(positions, h, meta, lora)
        if self.sandwich:
            h = self.post_attention_layernorm(h)
            h, residual = self.pre_feedforward_layernorm.forward_add(h, residual)
            return self.post_feedforward_layernorm(self.mlp(h, lora)), residual
        h, residual = self.post_attention_layernorm.forward_add(h, residual)
        return self.mlp(h, lora), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, use_kernels: bool = False) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.embed_scale = cfg.embed_scale
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, rotary, use_kernels, i) for i in range(cfg.num_hidden_layers)
        )
        self.norm = _norm(cfg, use_kernels)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, lora: LoraBatch | None = None
    ) -> torch.Tensor:
        """input_ids, positions: [T] -> hidden states [T, hidden] (after the final norm)"""
        x = self.embed_tokens(input_ids)
        if self.embed_scale is not None:  # Gemma: the scale rounded to the activation dtype first, as HF does; a
            # Python number, not a tensor, so a CUDA graph capture has nothing to copy to the device
            x = x * float(torch.tensor(self.embed_scale, dtype=x.dtype))
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta, lora)
        if residual is None:  # no layers
            return self.norm(x)
        return self.norm.forward_add(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, use_kernels: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.use_kernels = use_kernels
        self.model = LlamaModel(cfg, rotary, use_kernels)
        # With tied embeddings the loader points lm_head.weight at embed_tokens.weight after loading.
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, Linear):
                module.use_kernels = use_kernels

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, lora: LoraBatch | None = None
    ) -> torch.Tensor:
        return self.model(input_ids, positions, meta, lora)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] (only the rows that sample) -> logits [N, vocab] in float32."""
        logits = self.lm_head(hidden).float()
        cap = self.config.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def fuse_projections(self) -> None:
        """After the weights are loaded: q/k/v and gate/up as one matmul each (the parts' weights become views)."""
        for layer in self.model.layers:
            assert isinstance(layer, LlamaDecoderLayer)
            attn, mlp = layer.self_attn, layer.mlp
            attn.qkv = FusedLinear([attn.q_proj, attn.k_proj, attn.v_proj])
            mlp.gate_up = FusedLinear([mlp.gate_proj, mlp.up_proj])

    def attention_layers(self) -> list[Attention]:
        return [module for module in self.modules() if isinstance(module, Attention)]


def _norm(cfg: ModelConfig, use_kernels: bool) -> RMSNorm:
    return RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, use_kernels, unit_offset=cfg.gemma_norms)
