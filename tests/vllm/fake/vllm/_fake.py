"""Controls of the double (not part of the real API): the scripted model, timing, faults, and records for assertions.

The model is a byte tokenizer: token id = byte value + OFFSET, with PAD, BOS and EOS below. With no script, a request
echoes its prompt (without BOS) one token per engine step, then EOS; with `ignore_eos` it echoes on, round and round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAD, BOS, EOS = 0, 1, 2
OFFSET = 3
VOCAB_SIZE = 256 + OFFSET
SPECIAL = frozenset({PAD, BOS, EOS})
BLOCK_SIZE = 16  # prefix-cache hits are whole blocks, as in vLLM


@dataclass
class Control:
    script: list[list[int]] | None = None  # token ids per engine step, for every request
    step_delay_s: float = 0.0
    accepted_per_step: int | None = None  # with speculation: draft tokens accepted per step (default: all)
    init_error: BaseException | None = None  # raised by from_engine_args after argument validation
    fail_after_steps: int | None = None  # the engine core dies after this many steps (EngineDeadError)
    fail_requests: set[str] = field(default_factory=set)  # external ids whose first step raises inside vLLM
    error_finish_requests: set[str] = field(default_factory=set)  # external ids finished with "error"
    final_output_on_abort: bool = True  # vLLM >= 0.10.1 ends an aborted stream with finish_reason "abort"
    engines: list[Any] = field(default_factory=list)  # every AsyncLLM built
    engine_args: list[Any] = field(default_factory=list)  # every AsyncEngineArgs passed to from_engine_args
    submissions: list[dict[str, Any]] = field(default_factory=list)  # generate() arguments, after validation
    aborted: list[str] = field(default_factory=list)  # external or internal ids passed to AsyncLLM.abort
    engine_aborted: list[str] = field(default_factory=list)  # internal ids the engine core removed while running
    lora_calls: list[tuple[str, Any]] = field(default_factory=list)  # ("add", LoRARequest) / ("remove", id)


CONTROL = Control()


def reset() -> None:
    CONTROL.__init__()  # type: ignore[misc]


def encode(text: str) -> list[int]:
    return [b + OFFSET for b in text.encode()]


def decode(ids: list[int]) -> str:
    return bytes(t - OFFSET for t in ids if OFFSET <= t < VOCAB_SIZE).decode(errors="ignore")


class FakeTokenizer:
    """A byte tokenizer in the shape of the HF tokenizer vLLM hands out (encode/decode/apply_chat_template)."""

    eos_token_id = EOS
    bos_token_id = BOS
    pad_token_id = PAD
    vocab_size = VOCAB_SIZE
    max_token_id = VOCAB_SIZE - 1
    chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant: "

    def __len__(self) -> int:
        return VOCAB_SIZE

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        return ([BOS] if add_special_tokens else []) + encode(text)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return decode(list(token_ids))

    def apply_chat_template(self, conversation: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = True, **kwargs: Any) -> Any:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conversation)
        text += "assistant: " if add_generation_prompt else ""
        return self.encode(text, add_special_tokens=False) if tokenize else text
