"""What the two external backends (trtllm, vllm) read the same way from an HF-style checkpoint and its tokenizer:
the checkpoint path rule, config.json / generation_config.json, the EOS ids, and chat rendering through the
tokenizer's own template. The native engine has its own loader (engine/model_config.py, engine/chat_template.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trt_gateway import tool_calls
from trt_gateway.config import ConfigError
from trt_gateway.types import ChatMessage, Tool

HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_path(path: str, where: str, engine: str) -> None:
    """A local checkpoint directory, or an HF repo id ("org/name") that the engine downloads itself."""
    if not path:
        raise ConfigError(f"{where} is required: a checkpoint directory or an HF repo id for {engine}")
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{where}: {path} is not a directory")
        return
    if p.is_absolute() or path.startswith(".") or not HF_REPO_RE.fullmatch(path):
        raise ConfigError(f"{where}: no such directory: {path}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not an object (engine dirs may lack either file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def eos_token_ids(generation: dict[str, Any], model: dict[str, Any], tokenizer: Any) -> tuple[int, ...]:
    """generation_config.json wins over config.json, which wins over the tokenizer; each may hold one id or a list."""
    eos = generation.get("eos_token_id", model.get("eos_token_id", getattr(tokenizer, "eos_token_id", None)))
    return tuple(eos) if isinstance(eos, list) else (eos,) if isinstance(eos, int) else ()


class ChatTokenizer:
    """An HF tokenizer, or an engine's wrapper of one (TensorRT-LLM's keeps it in `.tokenizer`), used for chat
    rendering, encoding and decoding."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _hf(self, attr: str) -> Any:
        found = getattr(self.tokenizer, attr, None)
        return found if found is not None else getattr(getattr(self.tokenizer, "tokenizer", None), attr, None)

    @property
    def has_template(self) -> bool:
        return bool(self._hf("apply_chat_template") and self._hf("chat_template"))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[Tool] = ()) -> list[int]:
        """Chat messages (and tools: through the template when it takes them, else described in a system turn)."""
        conversation, extra = tool_calls.chat_inputs(messages, tools, self._hf("chat_template"))
        text = self._hf("apply_chat_template")(conversation, tokenize=False, add_generation_prompt=True, **extra)
        return self.encode(text, False)  # the template writes BOS itself where the model wants one

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids))
