"""Fixtures of the engine and golden tests (imported by tests/engine/conftest.py and tests/golden/conftest.py): tiny
random HF checkpoints built in code and the parametrised device.

Checkpoints are built once per session (per folder that imports them: a fraction of a second) with a fixed seed and
saved with save_pretrained (safetensors) to a temp dir; the HF model object is kept as the golden reference. Nothing
is downloaded. Helpers live in engine_helpers.py.
"""

from __future__ import annotations

import pytest
from engine_helpers import (
    CPU_BF16,
    CPU_FP32,
    CUDA_BF16,
    CUDA_FP32,
    NEEDS_CUDA,
    VARIANTS,
    Checkpoint,
    DeviceCase,
    build_hf_model,
)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checkpoint]:
    out = {}
    for kind in VARIANTS:
        model = build_hf_model(kind)
        path = tmp_path_factory.mktemp(kind)
        model.save_pretrained(path)
        out[kind] = Checkpoint(kind, path, model)
    return out


@pytest.fixture(scope="session")
def llama(checkpoints: dict[str, Checkpoint]) -> Checkpoint:
    return checkpoints["llama"]


@pytest.fixture(
    params=[
        CPU_FP32,
        CPU_BF16,
        pytest.param(CUDA_BF16, marks=NEEDS_CUDA),
        pytest.param(CUDA_FP32, marks=NEEDS_CUDA),
    ],
    ids=lambda case: f"{case.device}-{case.dtype}",
)
def device_case(request: pytest.FixtureRequest) -> DeviceCase:
    return request.param
