"""The tokenizer and chat template a GGUF file describes in its metadata, as a `tokenizers.Tokenizer`.

A GGUF has no tokenizer.json: it stores the vocabulary (`tokenizer.ggml.tokens`, with a type and a score per
token), the BPE merges, the special token ids and the chat template under llama.cpp's keys. Two vocabularies are
rebuilt, the same way HF transformers rebuilds them (`from_pretrained(..., gguf_file=...)`), so both tokenise alike:

- `gpt2`: byte-level BPE (Llama 3, Qwen2, SmolLM, ...). Tokens are already spelt in the byte alphabet; the text is
  split with the pre-tokeniser's regex where `tokenizer.ggml.pre` names a known one, else GPT-2's.
- `llama`: sentencepiece BPE with byte fallback (Llama 2, Mistral, TinyLlama). Files often carry no merges; they
  are then derived from the vocabulary, best score first.

Tokens typed CONTROL become special added tokens (never split, skipped when decoding), USER_DEFINED ones plain
added tokens. BOS/EOS are added around a text prompt as the file's `add_bos_token` / `add_eos_token` say.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from trt_gateway.engine.chat_template import ChatTemplate
from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.gguf_checkpoint import GgufMetadata, read_metadata

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types
_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                "pad_token": "padding_token_id"}  # fmt: skip

# tokenizer.ggml.pre -> the regex its merges were learned with (llama.cpp's pre-tokeniser table). Any other name
# falls back to GPT-2's split, as HF does.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"), _LLAMA3),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2),
}


def gguf_tokenizer(path: str | Path) -> Tokenizer:
    meta = read_metadata(path)
    kind = meta.values.get("tokenizer.ggml.model")
    tokens: list[str] = list(meta.values.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise EngineConfigError("the GGUF file has no vocabulary", field="gguf:tokenizer.ggml.tokens")
    types: list[int] = list(meta.values.get("tokenizer.ggml.token_type") or [])
    if kind == "gpt2":
        tokenizer = _byte_level(tokens, _merges(meta, tokens), meta.values.get("tokenizer.ggml.pre"))
    elif kind == "llama":
        tokenizer = _sentencepiece(tokens, _merges(meta, tokens))
    else:
        raise EngineConfigError(
            f"GGUF tokenizer {kind!r} is not supported; supported: gpt2 (byte-level BPE), llama (sentencepiece BPE)",
            field="gguf:tokenizer.ggml.model",
        )
    _add_typed_tokens(tokenizer, tokens, types, byte_level=kind == "gpt2")
    _set_post_processor(tokenizer, meta, tokens, kind)
    return tokenizer


def gguf_chat_template(path: str | Path) -> ChatTemplate:
    """The template in `tokenizer.chat_template` (None when the file has none: text prompts still work), with the
    special tokens it may name."""
    meta = read_metadata(path)
    tokens = meta.values.get("tokenizer.ggml.tokens") or []
    special = {}
    for key, id_key in _SPECIAL_IDS.items():
        token_id = meta.values.get(f"tokenizer.ggml.{id_key}")
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            special[key] = tokens[token_id]
    source = meta.values.get("tokenizer.chat_template")
    return ChatTemplate(source if isinstance(source, str) else None, special_tokens=special, origin=str(path))


def _byte_level(tokens: list[str], merges: list[tuple[str, str]], pre: Any) -> Tokenizer:
    alphabet = _byte_alphabet()
    letters = set(alphabet.values())
    # A token outside the byte alphabet (a mislabelled control token, say) is respelt byte by byte so it can still
    # be looked up; the real vocabulary is all in the alphabet already.
    vocab = {
        (t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8"))): i for i, t in enumerate(tokens)
    }
    tokenizer = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False, byte_fallback=False))  # fmt: skip
    split = PRE_TOKENIZER_SPLITS.get(pre) if isinstance(pre, str) else None
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece(tokens: list[str], merges: list[tuple[str, str]]) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=True, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tokenizer


def _merges(meta: GgufMetadata, tokens: list[str]) -> list[tuple[str, str]]:
    listed = meta.values.get("tokenizer.ggml.merges")
    if listed:
        pairs = [tuple(m.split(" ", 1)) for m in listed]
        return [(p[0], p[1]) for p in pairs if len(p) == 2]
    scores = meta.values.get("tokenizer.ggml.scores")
    if not scores:
        raise EngineConfigError("the GGUF vocabulary has neither merges nor scores", field="gguf:tokenizer.ggml.merges")
    return derive_merges(tokens, scores)


def derive_merges(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """Merges implied by a scored vocabulary: every split of a token into two tokens is a merge ranked by the
    token's score (higher first); ties keep vocabulary order, then shorter left and right halves rank later.
    This is the order HF's `generate_merges` gives, so both tokenisers merge alike."""
    ids = {t: i for i, t in enumerate(tokens)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, score in zip(tokens, scores, strict=False):
        found = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in ids and token[k:] in ids]
        found.sort(key=lambda pair: (ids[pair[0]], ids[pair[1]]))
        ranked.extend((float(score), len(left), len(right), left, right) for left, right in found)
    ranked.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)  # stable: equal keys keep their order
    return [(left, right) for _, _, _, left, right in ranked]


def _add_typed_tokens(tokenizer: Tokenizer, tokens: list[str], types: list[int], *, byte_level: bool) -> None:
    letters = set(_byte_alphabet().values()) if byte_level else None
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types, strict=False)
        if kind == _CONTROL and (letters is None or set(t) <= letters)
    ]
    if control:
        tokenizer.add_special_tokens(control)
    vocab = tokenizer.get_vocab()
    user = [AddedToken(t, normalized=False, special=False) for t, kind in zip(tokens, types, strict=False)
            if kind == _USER_DEFINED and t in vocab]  # fmt: skip
    if user:
        tokenizer.add_tokens(user)


def _set_post_processor(tokenizer: Tokenizer, meta: GgufMetadata, tokens: list[str], kind: str) -> None:
    add_bos = meta.values.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = kind == "llama"  # llama.cpp adds BOS to sentencepiece vocabularies that do not say otherwise
    add_eos = bool(meta.values.get("tokenizer.ggml.add_eos_token", False))
    pieces: dict[str, int] = {}

    def special(id_key: str) -> str | None:
        token_id = meta.values.get(f"tokenizer.ggml.{id_key}")
        if not isinstance(token_id, int) or not 0 <= token_id < len(tokens):
            return None
        pieces[tokens[token_id]] = token_id
        return tokens[token_id]

    bos = special("bos_token_id") if add_bos else None
    eos = special("eos_token_id") if add_eos else None
    single = " ".join([*([f"{bos}:0"] if bos else []), "$A:0", *([f"{eos}:0"] if eos else [])])
    pair = " ".join([single, *([f"{bos}:1"] if bos else []), "$B:1", *([f"{eos}:1"] if eos else [])])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(pieces.items())
    )


@functools.cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for themselves, the rest are
    mapped in order onto code points from 256 up."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    table = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table
