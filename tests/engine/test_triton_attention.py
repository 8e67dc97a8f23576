"""The Triton paged decode kernel against the torch path. Without a GPU it runs in Triton's interpreter (numpy on
the CPU): correctness only; speed belongs to the GPU benchmarks, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from trt_gateway.engine.layers.attention import decode_attention  # noqa: E402
from trt_gateway.engine.layers.triton_attention import paged_decode_attention  # noqa: E402

# Triton decides at import time whether kernels (and its own helpers) are interpreted, and other tests import it
# first (xgrammar does), so on a machine without a GPU the kernel tests run in a child process started with
# TRITON_INTERPRET=1.
CHILD = os.environ.get("TRITON_INTERPRET") == "1"
DIRECT = torch.cuda.is_available() or CHILD
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.bfloat16 if torch.cuda.is_available() else torch.float16  # numpy (the interpreter) has no bfloat16
direct = pytest.mark.skipif(not DIRECT, reason="runs in the interpreter child (test_in_the_triton_interpreter)")


@pytest.mark.skipif(DIRECT, reason="the kernel tests run directly")
def test_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        env=env,
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed" in done.stdout.splitlines()[-1]  # every kernel case ran (the wrapper itself is skipped)


def random_case(heads: int, kv_heads: int, head_dim: int, block_size: int, lens: list[int], dtype=torch.float32):
    g = torch.Generator().manual_seed(heads * 100 + kv_heads * 10 + block_size)
    num_blocks = sum(-(-n // block_size) for n in lens) + 3
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(DEVICE, dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(DEVICE, dtype)
    perm = torch.randperm(num_blocks, generator=g).tolist()  # blocks scattered, as after churn
    width = max(-(-n // block_size) for n in lens)
    tables, used = [], 0
    for n in lens:
        need = -(-n // block_size)
        tables.append(perm[used : used + need] + [0] * (width - need))
        used += need
    q = torch.randn(len(lens), heads, head_dim, generator=g).to(DEVICE, dtype)
    return q, k_cache, v_cache, torch.tensor(tables, device=DEVICE), torch.tensor(lens, device=DEVICE)


@direct
@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, block_size",
    [(4, 4, 16, 4), (8, 2, 32, 16), (32, 8, 64, 16), (6, 1, 16, 8)],
    ids=["mha", "gqa4", "llama3-shape", "mqa"],
)
def test_matches_the_torch_path(heads, kv_heads, head_dim, block_size):
    lens = [1, 5, 17, 64, 70]
    q, k, v, tables, ctx = random_case(heads, kv_heads, head_dim, block_size, lens)
    scale = head_dim**-0.5
    want = decode_attention(q, k, v, tables, ctx, scale)
    got = paged_decode_attention(q, k, v, tables, ctx, scale, block_n=16)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@direct
def test_half_precision_within_rounding():
    q, k, v, tables, ctx = random_case(8, 2, 32, 16, [3, 40], dtype=HALF)
    want = decode_attention(q.float(), k.float(), v.float(), tables, ctx, 32**-0.5)
    got = paged_decode_attention(q, k, v, tables, ctx, 32**-0.5, block_n=16)
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)
