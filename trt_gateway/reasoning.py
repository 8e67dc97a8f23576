"""Reasoning output: splitting a model's text into its reasoning (a `<think>...</think>` block) and its content.

Formats (`server.reasoning_parser`; None = no splitting, the text is returned as the model wrote it):
- "deepseek_r1": the output starts inside the block, because DeepSeek-R1's chat template opens it in the generation
  prompt; a `<think>` the model writes itself at the start is dropped. Everything up to `</think>` is reasoning.
- "qwen3": the output is reasoning only inside a block, which is open from the start when the rendered prompt ends
  inside one (templates that open `<think>` for the model: Qwen3 thinking models, QwQ) or when the output itself
  starts with `<think>`. Any other output is content, untouched.
An output that ends before `</think>` (max_tokens) is all reasoning. The tags are removed; the text between them and
after them is otherwise kept as written (whitespace included), so reasoning + content loses nothing but the tags.

Constrained outputs (guided decoding, forced tool calls) are never split: the constraint starts at the first token,
so such an output cannot hold a think block.

Streaming: text is released as soon as it is known which side it is on; only a possible partial tag at the end of a
delta (e.g. "</th") is held back until the next delta says what it is.
"""

from __future__ import annotations

import enum

from trt_gateway.stopping import partial_suffix

PARSERS = ("deepseek_r1", "qwen3")
OPEN, CLOSE = "<think>", "</think>"


class _State(enum.Enum):
    START = "start"  # the output's beginning: whitespace and a possible `<think>` are held
    REASONING = "reasoning"
    CONTENT = "content"


class ReasoningParser:
    """One output's splitter. `inside`: the output starts inside the think block (the prompt opened it)."""

    def __init__(self, inside: bool) -> None:
        self._inside = inside
        self._state = _State.START
        self._buf = ""  # held text: the output's opening, or a possible partial `</think>`

    def push(self, text: str) -> tuple[str, str]:
        """Feed output text; return the (reasoning, content) that is now certain."""
        reasoning = content = ""
        if self._state is _State.START:
            self._buf += text
            head = self._buf.lstrip()
            if OPEN.startswith(head):  # still only whitespace and part of `<think>`: wait
                return "", ""
            if head.startswith(OPEN):  # the model opened the block itself
                text, self._buf = head[len(OPEN) :], ""
                self._state = _State.REASONING
            else:
                text, self._buf = self._buf, ""
                self._state = _State.REASONING if self._inside else _State.CONTENT
        if self._state is _State.REASONING:
            self._buf += text
            end = self._buf.find(CLOSE)
            if end < 0:
                keep = partial_suffix(self._buf, CLOSE)
                reasoning, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
                return reasoning, ""
            reasoning, text, self._buf = self._buf[:end], self._buf[end + len(CLOSE) :], ""
            self._state = _State.CONTENT
        if self._state is _State.CONTENT:
            content = text
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """The output ended: the held text, as (reasoning, content)."""
        rest, self._buf = self._buf, ""
        if self._state is _State.START:
            return (rest, "") if self._inside else ("", rest)
        return (rest, "") if self._state is _State.REASONING else ("", rest)


def prompt_opens(prompt_text: str) -> bool:
    """Whether a rendered prompt ends inside a think block (the template opened it for the model)."""
    return prompt_text.rfind(OPEN) > prompt_text.rfind(CLOSE)


def needs_prompt_text(fmt: str) -> bool:
    """Whether the parser must see the rendered prompt to know where the output starts."""
    return fmt == "qwen3"


def parser(fmt: str, prompt_text: str | None) -> ReasoningParser:
    """The parser of one output. `prompt_text`: the rendered prompt, where known (None: not known)."""
    if fmt == "deepseek_r1":
        return ReasoningParser(inside=True)
    return ReasoningParser(inside=prompt_text is not None and prompt_opens(prompt_text))
