"""Controls of the double (not part of the real API): the scripted model, timing, and records for assertions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAD, BOS, EOS = 0, 1, 2
OFFSET = 3  # token id = byte value + OFFSET
VOCAB_SIZE = 256 + OFFSET


@dataclass
class Control:
    # Token ids per engine step for every request; None: echo the prompt's tokens one per step, then EOS.
    # With ignore_eos the script repeats until max_tokens.
    script: list[list[int]] | None = None
    step_delay_s: float = 0.0
    init_error: BaseException | None = None  # raised by LLM(...) after argument validation
    fail_after_steps: int | None = None  # the engine raises `step_error` after this many steps
    step_error: BaseException | None = None
    logprobs_as_floats: bool = False  # the TRT backend returns List[float] logprobs
    llms: list[Any] = field(default_factory=list)  # every LLM constructed
    submissions: list[dict[str, Any]] = field(default_factory=list)  # generate_async keyword arguments
    aborted: list[int] = field(default_factory=list)  # request ids passed to abort_request
    abort_calls: list[int] = field(default_factory=list)  # request ids whose RequestOutput.abort() was called


CONTROL = Control()


def reset() -> None:
    global CONTROL
    CONTROL.__init__()  # type: ignore[misc]


def encode(text: str) -> list[int]:
    return [b + OFFSET for b in text.encode()]


def decode(ids: list[int]) -> str:
    return bytes(t - OFFSET for t in ids if OFFSET <= t < VOCAB_SIZE).decode(errors="replace")
