"""What `--model` names, checked before anything loads: one clear refusal for each way it can be wrong.

A new user tries a hub id, a typo, a single weights file or a half-copied folder; each gets its own one-line error
saying what is expected instead (all ConfigError: `serve` exits 2). What a present checkpoint holds (architecture,
tensor shapes, corrupt bytes) is judged later by the engine, which names the file or config key at fault.
"""

from __future__ import annotations

import re
from pathlib import Path

from trt_gateway.config import ConfigError

WHERE = "executor.model (--model)"
# "org/name" or "org/name@rev" with hub-legal characters: what users paste from a model page.
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[\w.-]+)?")


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID_RE.fullmatch(text)) and not text.startswith((".", "~"))


def check(model: str) -> Path:
    """The local checkpoint `model` names: a directory (HF layout, or one holding a .gguf file) or a .gguf file.
    Raises ConfigError, one line, for a hub id, a missing path, or a path that holds no checkpoint."""
    path = Path(model).expanduser()
    if not path.exists():
        if looks_like_hub_id(model):
            raise ConfigError(
                f"{WHERE}: {model!r} is not a local path, and trt-gateway has no model hub: download the checkpoint "
                f"first (e.g. `huggingface-cli download {model.split('@')[0]} --local-dir DIR` where the hub is "
                "reachable) and pass --model DIR, or pass a .gguf file; with no --model, serve runs "
                "SmolLM2-135M-Instruct (`trt-gateway fetch-model`)"
            )
        raise ConfigError(f"{WHERE}: no such file or directory: {model}")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return path
        raise ConfigError(
            f"{WHERE}: {model} is a file; pass the checkpoint directory (config.json, tokenizer.json, "
            "*.safetensors) or a .gguf file"
        )
    if not path.is_dir():
        raise ConfigError(f"{WHERE}: {model} is neither a file nor a directory")
    if any(path.glob("*.gguf")):
        return path
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise ConfigError(
            f"{WHERE}: {model} is not a checkpoint directory: no {' or '.join(missing)} (an HF checkpoint has "
            "config.json, tokenizer.json and *.safetensors; a GGUF checkpoint is one .gguf file)"
        )
    return path
