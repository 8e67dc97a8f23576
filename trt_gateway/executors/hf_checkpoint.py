"""An HF checkpoint as the trtllm and vllm executors see it: where it is, its config files, its tokenizer.

Both engines load the weights themselves. The gateway reads only what `ServedModel` needs (end-of-sequence ids, the
vocabulary size) from `config.json` and `generation_config.json`, and turns chat messages and text into token ids
through the engine's tokenizer: HF's own, or a wrapper that keeps it in `.tokenizer` (TensorRT-LLM's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_gateway import tool_calls
from trt_gateway.config import ConfigError
from trt_gateway.types import ChatMessage, Tool

HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_path(path: str, where: str, what: str) -> None:
    """A local checkpoint directory, or an HF repo id ("org/name") that the engine downloads itself.

    `where` is the config key errors name; `what` says what the key must hold, for the error when it is empty."""
    if not path:
        raise ConfigError(f"{where} is required: {what}")
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{where}: {path} is not a directory")
        return
    if p.is_absolute() or path.startswith(".") or not HF_REPO_RE.fullmatch(path):
        raise ConfigError(f"{where}: no such directory: {path}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when the file is missing, unreadable or not an object (an HF repo id that the
    engine downloaded elsewhere has no local files, and every fact read from them has a fallback)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class CheckpointFiles:
    """The two config files of a checkpoint directory, each {} where absent."""

    config: Mapping[str, Any]  # config.json, as written (a TensorRT engine directory's holds pretrained_config)
    generation: Mapping[str, Any]  # generation_config.json

    @classmethod
    def read(cls, model: str) -> CheckpointFiles:
        return cls(read_json(Path(model) / "config.json"), read_json(Path(model) / "generation_config.json"))

    def eos_token_ids(self, model_config: Mapping[str, Any], tokenizer: Any) -> tuple[int, ...]:
        """generation_config.json's eos_token_id, else the model config's, else the tokenizer's (an int or a list).

        `model_config`: `config`, or the part of it that describes the model (a TensorRT engine's pretrained_config).
        """
        tokenizer_eos = getattr(tokenizer, "eos_token_id", None)
        eos = self.generation.get("eos_token_id", model_config.get("eos_token_id", tokenizer_eos))
        return tuple(eos) if isinstance(eos, list) else (eos,) if isinstance(eos, int) else ()


def vocab_size(value: Any, model: str) -> int:
    """`value` (what the engine or the config said) as the vocabulary size; without one no ServedModel can be built."""
    if not isinstance(value, int):
        raise ConfigError(f"executor.model: cannot tell the vocabulary size of {model}")
    return value


# -- the tokenizer ---------------------------------------------------------------------------------------------------


def _hf(tokenizer: Any, attr: str) -> Any:
    """An attribute of the tokenizer, or of the HF tokenizer it wraps (`.tokenizer`)."""
    found = getattr(tokenizer, attr, None)
    return found if found is not None else getattr(getattr(tokenizer, "tokenizer", None), attr, None)


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(_hf(tokenizer, "apply_chat_template") and _hf(tokenizer, "chat_template"))


def encode(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def decode(tokenizer: Any, token_ids: list[int]) -> str:
    """The text of `token_ids`; "" without a tokenizer (token-id prompts and outputs only)."""
    return str(tokenizer.decode(token_ids)) if tokenizer is not None else ""


def render(tokenizer: Any, messages: Sequence[ChatMessage], tools: Sequence[Tool] = ()) -> list[int]:
    """Chat messages (and tools: through the template when it takes them, else described in a system turn) through
    the model's chat template, ending with the assistant's turn to speak."""
    conversation, extra = tool_calls.chat_inputs(messages, tools, _hf(tokenizer, "chat_template"))
    text = _hf(tokenizer, "apply_chat_template")(conversation, tokenize=False, add_generation_prompt=True, **extra)
    return encode(tokenizer, text, False)  # the template writes BOS itself where the model wants one


def tokenize(
    tokenizer: Any, text: str | None, messages: Sequence[ChatMessage] | None, add_special_tokens: bool
) -> list[int]:
    """The Tokenize RPC's answer: the rendered messages when given, else the text."""
    return render(tokenizer, messages) if messages else encode(tokenizer, text or "", add_special_tokens)
