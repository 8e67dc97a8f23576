"""Triton kernels for the engine's hot path: paged attention (decode and varlen prefill), RMSNorm (with the fused
residual add), rotary embeddings and the SwiGLU activation.

One module per concept; each public function has a torch reference in `engine/layers/` whose numerics it reproduces
(see each module's docstring). Nothing here is imported by this package on purpose: importing triton is slow and may
fail on CPU-only installs, so callers ask `available()` first and import the kernel modules only when they use them.
"""

from __future__ import annotations

import functools


@functools.cache
def available() -> bool:
    """True when triton can be imported (a CUDA build of torch ships it; the kernels also need a CUDA device, or
    TRITON_INTERPRET=1 for the slow CPU interpreter that the tests use)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
