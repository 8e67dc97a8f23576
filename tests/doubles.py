"""The test doubles of TensorRT-LLM and vLLM: fake `tensorrt_llm` and `vllm` packages in tests/trtllm/fake and
tests/vllm/fake, each with a `_fake.CONTROL` that scripts the model and records what the executor asked for.

`install()` puts a double first on sys.path (before any real package); the fixtures give a test a freshly reset
double and shut down every engine it built. A model directory both doubles accept comes from `write_model`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

FAKES = {"trtllm": Path(__file__).resolve().parent / "trtllm" / "fake",
         "vllm": Path(__file__).resolve().parent / "vllm" / "fake"}


def install(backend: str) -> Path:
    """Put the double of `backend` ("trtllm" or "vllm") first on sys.path; its folder."""
    path = FAKES[backend]
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def write_model(path: Path, **config: Any) -> str:
    """A checkpoint directory as both doubles read it: config.json and generation_config.json, no weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "vocab_size": 259, "max_position_embeddings": 512, "eos_token_id": 2,
         **config}
    ))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2]}))
    return str(path)


def write_adapter(root: Path, name: str, r: int = 8, modules: Sequence[str] = ("q_proj", "v_proj"),
                  weights: bool = True, fill: float = 0.01, dtype: str = "float32") -> str:
    """A PEFT-layout LoRA directory for the doubles (which read no weights): a real safetensors file of small A/B
    tensors, since the gateway checks their dtypes and values at load (`fill` NaN or `dtype` int8 make it refuse)."""
    import safetensors.torch
    import torch

    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": 2 * r, "target_modules": list(modules)}))
    if weights:
        prefix = "base_model.model.model.layers.0.self_attn"
        tensors = {f"{prefix}.{m}.lora_{ab}.weight": torch.full((r, r), fill).to(getattr(torch, dtype))
                   for m in modules for ab in "AB"}
        safetensors.torch.save_file(tensors, str(path / "adapter_model.safetensors"))
    return str(path)


@pytest.fixture
def trtllm_control() -> Iterator[Any]:
    """The TensorRT-LLM double's `_fake.CONTROL`, reset; every LLM the test built is shut down afterwards."""
    install("trtllm")
    from tensorrt_llm import _fake

    _fake.reset()
    yield _fake.CONTROL
    for llm in _fake.CONTROL.llms:
        llm.shutdown()
    _fake.reset()


@pytest.fixture
def vllm_control(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The vLLM double's `_fake.CONTROL`, reset; every engine the test built is shut down afterwards."""
    install("vllm")
    from vllm import _fake

    _fake.reset()
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)  # the executor sets it; keep tests apart
    yield _fake.CONTROL
    for engine in _fake.CONTROL.engines:
        engine.shutdown()
    _fake.reset()
