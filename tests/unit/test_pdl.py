"""When the Triton kernels use programmatic dependent launch (`engine/kernels/pdl.py`): only on a CUDA device of
compute capability 9.0 or newer, only inside `for_graphs()` (a graph's warm-up and capture), never with
TRT_GATEWAY_PDL=0. The kernels' results with PDL are checked on the GPU (tests/engine/test_gpu_paths.py: graph
replays against eager steps); this is the switch itself, on any machine."""

from __future__ import annotations

import pytest
import torch

from trt_gateway.engine.kernels import pdl

CUDA0 = torch.device("cuda", 0)  # a device object only: nothing runs on it here


@pytest.fixture
def hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdl, "_hopper_or_newer", lambda index: True)
    monkeypatch.setattr(pdl, "_INTERPRETED", False)
    monkeypatch.setattr(pdl, "ENABLED", True)


def test_only_inside_for_graphs(hopper: None) -> None:
    assert not pdl.enabled(CUDA0)
    assert pdl.launch(CUDA0) == {"PDL": False}
    with pdl.for_graphs():
        assert pdl.enabled(CUDA0)
        assert pdl.launch(CUDA0) == {"PDL": True, "launch_pdl": True}
    assert not pdl.enabled(CUDA0)  # the context is restored, also after nesting
    with pdl.for_graphs(), pdl.for_graphs():
        pass
    assert not pdl.enabled(CUDA0)


def test_never_on_the_cpu_older_gpus_the_interpreter_or_when_switched_off(
    hopper: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pdl.for_graphs():
        assert not pdl.enabled(torch.device("cpu"))
        monkeypatch.setattr(pdl, "ENABLED", False)
        assert not pdl.enabled(CUDA0)
        monkeypatch.setattr(pdl, "ENABLED", True)
        monkeypatch.setattr(pdl, "_INTERPRETED", True)
        assert not pdl.enabled(CUDA0)
        monkeypatch.setattr(pdl, "_INTERPRETED", False)
        monkeypatch.setattr(pdl, "_hopper_or_newer", lambda index: False)
        assert not pdl.enabled(CUDA0)
