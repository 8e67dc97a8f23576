"""Incremental detokenization: token ids in, text deltas out, never a broken character, never a lost space.

Decoding one token at a time goes wrong in two ways:
- A byte-level BPE token can hold part of a UTF-8 character (an emoji is 4 bytes, often 2-4 tokens). Decoded alone
  it yields U+FFFD, and the character must not be emitted until its last byte has arrived.
- Decoders are not additive. SentencePiece-style decoders drop the leading space of the first token of a decode call,
  and some tokenizers merge across tokens, so decode(a) + decode(b) != decode(a + b).

So, as in vLLM and TGI, each step decodes a small window twice: the tokens already emitted from `prefix_offset` to
`read_offset`, and the same window extended by the new token. The text delta is what the longer decode adds. Starting
the window a few tokens back (prompt tokens included) gives the decoder the context it needs for spacing. While the
longer decode ends in U+FFFD the token is held (read_offset does not move) and emitted with a later token.

Pure Python: works with anything that has `decode(ids, skip_special_tokens=...)`, that is a `tokenizers.Tokenizer` or
a `transformers` tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens kept in front of the first window: enough for any decoder's spacing rules, few enough to be cheap.
CONTEXT_TOKENS = 5


class TextDecoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns one request's generated token ids into text deltas.

    `push` takes one id or several (speculative decoding accepts many at once) and returns the new text; `flush`
    returns whatever is still held when the request finishes. `text` is everything emitted so far.
    """

    def __init__(
        self,
        tokenizer: TextDecoder,
        prompt_token_ids: Sequence[int] = (),
        *,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        context = list(prompt_token_ids[-CONTEXT_TOKENS:])
        self._ids: list[int] = context  # window context, then every generated id
        self._num_context = len(context)
        # Invariant: ids[prefix_offset:read_offset] decode to text already accounted for (as context or emitted).
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._text_parts: list[str] = []

    @property
    def text(self) -> str:
        """All text emitted so far (held-back bytes excluded)."""
        return "".join(self._text_parts)

    @property
    def token_ids(self) -> list[int]:
        """The generated ids pushed so far (prompt context excluded)."""
        return self._ids[self._num_context :]

    def push(self, token_ids: int | Iterable[int]) -> str:
        """Add generated ids; return the text they complete (possibly "", when a character is still partial)."""
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        # One id at a time: a batch that ends mid-character still emits the complete characters before it.
        delta = "".join(self._step(token_id) for token_id in ids)
        self._text_parts.append(delta)
        return delta

    def flush(self) -> str:
        """At finish: emit held tokens even if they end in an incomplete character (they will never complete)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        delta = _suffix_after(full_text, prefix_text)
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self._text_parts.append(delta)
        return delta

    def _step(self, token_id: int) -> str:
        self._ids.append(token_id)
        # 1. Decode what was already accounted for, and the same window with everything held plus the new token.
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        # 2. Nothing new (a skipped special token), or the last character is still partial: hold, offsets unchanged.
        if len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR):
            return ""
        # 3. Emit the difference and slide the window: what was read becomes the next prefix.
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return _suffix_after(full_text, prefix_text)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special) if ids else ""


def _suffix_after(full_text: str, prefix_text: str) -> str:
    # Normally full_text starts with prefix_text. A decoder that rewrites earlier text once more tokens follow (space
    # clean-up rules) breaks that; emitting from the prefix's length, as vLLM does, loses at most that rewrite.
    return full_text[len(prefix_text) :]
