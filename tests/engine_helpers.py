"""Helpers of the engine tests: tiny HF model variants, device cases with their tolerances, an engine factory and
request helpers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from trt_gateway.engine import EngineConfig, LLMEngine, StepOutput
from trt_gateway.types import GenerateRequest, Prompt, ResponseOptions, SamplingParams, StoppingCriteria

VOCAB = 256
EOS = 2
MAX_POS = 256

# Name -> (HF class name, config kwargs). Each variant exercises a different part of the loader and model.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # Llama 2 shape: multi-head attention, untied lm_head, default RoPE.
    "llama": ("Llama", dict(num_attention_heads=4, num_key_value_heads=4)),
    # Qwen2: q/k/v biases, tied embeddings, GQA.
    "qwen2": ("Qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    # Llama 3 shape: GQA (4 query heads per KV head), explicit head_dim, llama3 RoPE scaling that matters at these
    # positions (original context 32 << MAX_POS).
    "llama3_gqa": (
        "Llama",
        dict(
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
    ),
    # Mistral with a window larger than the context: full attention is exact there.
    "mistral": ("Mistral", dict(num_attention_heads=4, num_key_value_heads=1, sliding_window=512)),
    # Mistral whose window (8 tokens, two blocks of 4) is far shorter than the golden prompts: the window matters.
    "mistral_swa": ("Mistral", dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=8)),
    # Qwen3: per-head q/k RMSNorm before RoPE, no biases, tied embeddings, head_dim != hidden / heads.
    "qwen3": (
        "Qwen3",
        dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    ),
    # Gemma: (1 + weight) norms, embeddings times sqrt(hidden), GeGLU (tanh GELU), MQA, head_dim 32 != 64 / 4.
    # Untied here (real Gemmas tie, a path qwen2/qwen3 cover): a tiny random model whose lm_head is its scaled
    # embedding only ever predicts its input token again, which would make weak golden tests.
    "gemma": ("Gemma", dict(num_attention_heads=4, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False)),
    # Gemma2: also norms after attention and MLP, soft-capped scores and logits (small caps, so they bite on this
    # tiny model), query_pre_attn_scalar != head_dim, and layer 0 slides (window 8) while layer 1 sees everything.
    "gemma2": (
        "Gemma2",
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=8,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=4.0,
            tie_word_embeddings=False,
            # SDPA cannot soft-cap scores: transformers 5.17 (the H200's) picked it by default and its reference
            # was 0.79 off in the logits; eager is the literal Gemma2 maths on every version.
            attn_implementation="eager",
        ),
    ),
}
# Kinds whose norm weights HF initialises to a constant: perturbed so that a wrong norm formula shows.
_PERTURBED_NORMS = ("qwen3", "gemma", "gemma2")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    hf_model: torch.nn.Module  # float32, CPU, eval


def build_hf_model(kind: str, **overrides: Any) -> torch.nn.Module:
    import transformers

    family, extra = VARIANTS[kind]
    config_cls = getattr(transformers, f"{family}Config")
    model_cls = getattr(transformers, f"{family}ForCausalLM")
    kwargs: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=MAX_POS,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=0,
        # Larger than the default 0.02 so the random model has peaked, non-degenerate next-token distributions.
        initializer_range=0.15,
    )
    kwargs.update(extra)
    kwargs.update(overrides)
    torch.manual_seed(1234)
    model = model_cls(config_cls(**kwargs)).eval()
    if kind == "qwen2":  # Qwen2 inits biases to zero; make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    if kind in _PERTURBED_NORMS:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.add_(torch.randn_like(param) * 0.2)
    return model


@dataclass(frozen=True)
class DeviceCase:
    device: str
    dtype: str
    logits_atol: float  # max |engine logits - HF logits| allowed
    tie_gap: float  # a greedy token may differ from HF only where HF's top-2 logits are closer than this


CPU_FP32 = DeviceCase("cpu", "float32", logits_atol=1e-4, tie_gap=0.0)
# bf16 keeps 8 mantissa bits: logits of magnitude ~5 round in steps of ~0.02, and two different kernels drift apart
# by a few steps. A token may flip only where HF's top-2 gap is within both sides' error: 2 x logits_atol.
CPU_BF16 = DeviceCase("cpu", "bfloat16", logits_atol=0.15, tie_gap=0.3)
CUDA_BF16 = DeviceCase("cuda", "bfloat16", logits_atol=0.15, tie_gap=0.3)
# float32 on CUDA runs the Triton kernels and CUDA graphs with float32 activations: differences come from
# accumulation order only (and TF32 where a kernel's float32 dot uses it), so far tighter than bf16.
CUDA_FP32 = DeviceCase("cuda", "float32", logits_atol=2e-3, tie_gap=4e-3)

# A test (or parameter) that needs a GPU: marked `gpu` (pytest -m gpu selects them) and skipped without CUDA.
NEEDS_CUDA = (pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))


# float32 on the CPU and, where there is one, on the GPU: for tests parametrised over `case`
FP32_ON_EACH_DEVICE = [pytest.param(CPU_FP32, id="cpu"), pytest.param(CUDA_FP32, id="cuda", marks=NEEDS_CUDA)]


def needs_cuda(test: Any) -> Any:
    for mark in NEEDS_CUDA:
        test = mark(test)
    return test


def make_engine(path: Path, case: DeviceCase = CPU_FP32, **overrides: Any) -> LLMEngine:
    kwargs: dict[str, Any] = dict(
        model=str(path), device=case.device, dtype=case.dtype, block_size=4, max_num_seqs=8, max_num_batched_tokens=256
    )
    kwargs.update(overrides)
    return LLMEngine(EngineConfig(**kwargs))


def make_request(
    request_id: str,
    *,
    max_tokens: int = 16,
    temperature: float = 0.0,
    logprobs: bool = False,
    top_logprobs: int = 0,
    priority: int = 0,
    adapter: str | None = None,
    sampling: dict[str, Any] | None = None,
    stopping: dict[str, Any] | None = None,
) -> GenerateRequest:
    return GenerateRequest(
        request_id=request_id,
        model="tiny",
        prompt=Prompt(),
        sampling=SamplingParams(temperature=temperature, **(sampling or {})),
        stopping=StoppingCriteria(max_tokens=max_tokens, **(stopping or {})),
        response=ResponseOptions(logprobs=logprobs, top_logprobs=top_logprobs),
        adapter=adapter,
        priority=priority,
    )


def run_until_done(engine: LLMEngine, max_steps: int = 10_000) -> dict[str, list[StepOutput]]:
    """Step until nothing is left; outputs grouped by request id."""
    results: dict[str, list[StepOutput]] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return results
        for out in engine.step():
            results.setdefault(out.request_id, []).append(out)
    raise AssertionError(f"engine did not finish in {max_steps} steps")


def tokens_of(outputs: Iterable[StepOutput]) -> list[int]:
    return [t for out in outputs for t in out.new_token_ids]


def prompts(n: int, lengths: Iterable[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # Avoid EOS and the special ids 0..2 in prompts.
    return [torch.randint(3, VOCAB, (length,), generator=g).tolist() for length in list(lengths)[:n]]


FP8_LAYOUTS = ("compressed-tensors-channel", "fp8-tensor")


def write_fp8_checkpoint(ckpt: Checkpoint, path: Path, layout: str) -> Path:
    """Write `ckpt` as an FP8 checkpoint the way vLLM / llm-compressor lay one out: each decoder projection's weight
    in float8_e4m3fn with a weight_scale beside it, everything else as saved, and a quantization_config.

    layout: "compressed-tensors-channel" (scales [N, 1], a static input_scale too) or "fp8-tensor" (one scale per
    tensor, quant_method "fp8"). The scales are computed here, independently of the engine's own quantizer."""
    import json

    from safetensors.torch import save_file

    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    state: dict[str, torch.Tensor] = {}
    for name, tensor in ckpt.hf_model.state_dict().items():
        module = name.removesuffix(".weight")
        if not (name.endswith(".weight") and module.rsplit(".", 1)[-1] in projections):
            state[name] = tensor.detach().to(torch.bfloat16).contiguous()
            continue
        w = tensor.detach().float()
        per_channel = layout == "compressed-tensors-channel"
        amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().amax().reshape(1)
        scale = amax / 448.0
        state[name] = (w / (scale if per_channel else scale[0])).to(torch.float8_e4m3fn)
        state[f"{module}.weight_scale"] = scale.contiguous()
        if per_channel:
            state[f"{module}.input_scale"] = torch.tensor([0.05])
    if "lm_head.weight" in state and ckpt.hf_model.config.tie_word_embeddings:
        del state["lm_head.weight"]
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"))
    config = json.loads((ckpt.path / "config.json").read_text())
    if layout == "compressed-tensors-channel":
        config["quantization_config"] = {
            "quant_method": "compressed-tensors",
            "format": "float-quantized",
            "config_groups": {
                "group_0": {
                    "targets": ["Linear"],
                    "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
                    "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False},
                }
            },
            "ignore": ["lm_head"],
        }
    else:
        config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    (path / "config.json").write_text(json.dumps(config))
    return path


def dequantized_state(fp8_dir: Path) -> dict[str, torch.Tensor]:
    """An FP8 checkpoint's tensors with every FP8 weight multiplied out (float32), scales dropped."""
    from safetensors.torch import load_file

    raw = load_file(str(fp8_dir / "model.safetensors"))
    out = {}
    for name, tensor in raw.items():
        if name.endswith((".weight_scale", ".input_scale")):
            continue
        if tensor.dtype == torch.float8_e4m3fn:
            scale = raw[name.removesuffix(".weight") + ".weight_scale"].float()
            out[name] = tensor.float() * (scale if scale.dim() == 2 else scale.reshape(1, 1))
        else:
            out[name] = tensor.float()
    return out
