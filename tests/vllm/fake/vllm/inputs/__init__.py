"""`vllm.inputs`: prompt TypedDicts."""

from __future__ import annotations

from typing import TypedDict


class TextPrompt(TypedDict, total=False):
    prompt: str


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]
