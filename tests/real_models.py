"""Where the tests find the real SmolLM2-135M-Instruct GGUF, when this machine has it. Tests that need it skip
otherwise, so the suite stays offline-safe.

$TRT_GATEWAY_SMOLLM2_GGUF (a file path) wins; else the default-model cache (`trt-gateway fetch-model`):
$TRT_GATEWAY_CACHE, else $XDG_CACHE_HOME/trt-gateway/models, else ~/.cache/trt-gateway/models, each holding
SmolLM2-135M-Instruct.Q4_1.gguf.
"""

from __future__ import annotations

import os
from pathlib import Path

SMOLLM2_ENV = "TRT_GATEWAY_SMOLLM2_GGUF"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Chat prompts whose greedy answers docs/engine.md records.
SMOLLM2_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Explain what a GPU is in one sentence."}],
]  # fmt: skip


def smollm2_gguf() -> Path | None:
    if os.environ.get(SMOLLM2_ENV):
        path = Path(os.environ[SMOLLM2_ENV]).expanduser()
        return path if path.is_file() else None
    if os.environ.get("TRT_GATEWAY_CACHE"):
        cache = Path(os.environ["TRT_GATEWAY_CACHE"]).expanduser()
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trt-gateway" / "models"
    path = cache / SMOLLM2_FILE
    return path if path.is_file() else None
