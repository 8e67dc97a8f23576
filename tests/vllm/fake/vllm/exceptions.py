"""`vllm.exceptions` (0.26): request validation errors are ValueErrors (VLLMValidationError, or plain ValueError)."""

from __future__ import annotations

from typing import Any


class VLLMValidationError(ValueError):
    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        base = super().__str__()
        extras = [f"{k}={v}" for k, v in (("parameter", self.parameter), ("value", self.value)) if v is not None]
        return f"{base} ({', '.join(extras)})" if extras else base
