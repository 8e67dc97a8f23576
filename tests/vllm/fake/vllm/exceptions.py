"""`vllm.exceptions`: request validation errors are ValueErrors (until VLLMClientError arrived after 0.26)."""

from __future__ import annotations

from typing import Any


class VLLMValidationError(ValueError):
    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value
