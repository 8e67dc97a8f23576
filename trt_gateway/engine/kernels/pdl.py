"""Programmatic dependent launch (PDL): on Hopper, the next kernel starts before the one before it has finished.

A batch-1 decode step is ~300 short kernels in a CUDA graph (an 8B model's projections take 7-65 us each on an
H200), and each boundary costs a few microseconds in which the GPU drains one grid and ramps up the next: the
per-call overhead that kept the small projections at 2.9 TB/s against 3.6 for the large ones
(docs/performance.md). With PDL the next grid is launched while the previous one's last programs still run, and its
programs may already load what does not depend on it (weights), then wait.

The contract every kernel here that takes `PDL` keeps (`launch_dependents` / `wait` below):
- `launch_dependents()` first: it only lets the next grid be scheduled; that grid still waits for this one;
- nothing an earlier kernel writes is read, and nothing at all is written, before `wait()`: `wait` returns once
  the previous grid has completed and its memory is visible, and because every PDL kernel waits before it can
  finish, everything earlier in the stream has completed too. Before `wait` a kernel may only read constants
  (weights), which nothing in the step writes. Writes wait too because the previous grid may still be reading
  memory this one is about to overwrite (the caching allocator reuses freed buffers in stream order);
- a kernel launched after a non-PDL kernel (cuBLAS, torch) simply starts when that one ends: `wait` returns at once.

Only kernels captured into CUDA graphs use it (the decode steps of up to `cuda_graph_max_batch` sequences). Eager
steps (prefill chunks, decode batches above the graphs) do not: there, on an H200 with FP8 weights, a decode step
of 1,024 sequences took 53 ms with PDL against 29 without (benchmarks/results/2026-12-04-h200-s7-pdl-everywhere-*), while
graphed steps were as fast or faster. The likely cause, not confirmed: the CUTLASS FP8 GEMMs torch calls take part
in PDL, and this side's kernels, launched early behind them, sit on the SMs the GEMM tiles need.

`TRT_GATEWAY_PDL=0` turns it off (an A/B switch for `benchmarks/`; results are identical either way). It is also
off in Triton's CPU interpreter and below compute capability 9.0, where the launch attribute does not exist.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU installs may lack it
    triton = None

# Read at import; benchmarks flip it in-process to time both ways on one machine.
ENABLED = os.environ.get("TRT_GATEWAY_PDL", "1") != "0"
# Triton reads TRITON_INTERPRET once, when it is imported; so does this module.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _hopper_or_newer(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


_FOR_GRAPHS: ContextVar[bool] = ContextVar("pdl_for_graphs", default=False)


@contextmanager
def for_graphs() -> Iterator[None]:
    """Kernels launched in this block use PDL (where `enabled`): wrap a graph's warm-up and its capture alike, so
    Triton compiles the PDL variants before the capture, not during it."""
    token = _FOR_GRAPHS.set(True)
    try:
        yield
    finally:
        _FOR_GRAPHS.reset(token)


def enabled(device: torch.device) -> bool:
    """Whether a kernel launched now on `device` uses PDL: only inside `for_graphs()`."""
    if not ENABLED or _INTERPRETED or device.type != "cuda" or not _FOR_GRAPHS.get():
        return False
    return _hopper_or_newer(device.index if device.index is not None else torch.cuda.current_device())


def launch(device: torch.device) -> dict[str, Any]:
    """Keyword arguments for a kernel launch: the `PDL` constexpr every kernel here takes, and Triton's launch flag."""
    return {"PDL": True, "launch_pdl": True} if enabled(device) else {"PDL": False}


if triton is not None:

    @triton.jit
    def launch_dependents(PDL: tl.constexpr):
        if PDL:
            gdc_launch_dependents()

    @triton.jit
    def wait(PDL: tl.constexpr):
        if PDL:
            gdc_wait()
