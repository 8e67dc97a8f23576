"""IncrementalDetokenizer: UTF-8 characters split across byte-level tokens, leading spaces, special tokens, batches.

Tokenizers are trained here in milliseconds, on ASCII-only text so that emoji and CJK characters are forced into
several byte tokens (the case under test), plus the committed demo tokenizer through transformers' AutoTokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trt_gateway.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer

DEMO_TOKENIZER = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo" / "target"
CORPUS = ["The for statement is used to iterate over the elements of a sequence, hello world."] * 20
SPECIALS = ["<s>", "</s>"]
TEXTS = [
    "Hello world",
    "  two leading spaces and trailing ones  ",
    "emoji 😀 and 👩‍👩‍👧 family",
    "中文字符 mixed with ASCII",
    "café naïve ﬁ ligature \u0301combining",
    "tabs\tand\nnewlines\n\n",
    "😀😀😀",
]


@pytest.fixture(scope="module")
def byte_level() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def metaspace() -> Tokenizer:
    # SentencePiece-style: the decoder drops the space of the first token of each decode call.
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", *SPECIALS], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def demo():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(DEMO_TOKENIZER)


def ids_of(tokenizer, text: str) -> list[int]:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def run(tokenizer, ids: list[int], prompt: list[int] = (), chunk: int = 1, skip: bool = True) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=skip)
    deltas = [detok.push(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    deltas.append(detok.flush())
    assert "".join(deltas) == detok.text
    return deltas


@pytest.mark.parametrize("name", ["byte_level", "demo"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
@pytest.mark.parametrize("text", TEXTS)
def test_deltas_join_to_the_full_decode_and_never_hold_broken_characters(request, name, chunk, text) -> None:
    tokenizer = request.getfixturevalue(name)
    ids = ids_of(tokenizer, text)
    deltas = run(tokenizer, ids, chunk=chunk)
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_emoji_split_across_tokens_is_held_until_complete(byte_level) -> None:
    ids = ids_of(byte_level, "a😀")
    assert len(ids) == 5, "the emoji must span 4 byte tokens for this test to mean anything"
    detok = IncrementalDetokenizer(byte_level)
    assert [detok.push(i) for i in ids] == ["a", "", "", "", "😀"]


def test_cjk_split_across_tokens(byte_level) -> None:
    ids = ids_of(byte_level, "中文")
    assert len(ids) == 6  # 3 bytes each
    assert run(byte_level, ids) == ["", "", "中", "", "", "文", ""]


def test_batch_ending_mid_character_emits_the_complete_characters_before_it(byte_level) -> None:
    ids = ids_of(byte_level, "ok 😀")
    detok = IncrementalDetokenizer(byte_level)
    assert detok.push(ids[:-2]) == "ok "
    assert detok.push(ids[-2:]) == "😀"


def test_flush_releases_an_incomplete_character_that_will_never_complete(byte_level) -> None:
    ids = ids_of(byte_level, "x😀")[:-1]  # generation stopped after 3 of the emoji's 4 bytes
    detok = IncrementalDetokenizer(byte_level)
    assert detok.push(ids) == "x"
    assert detok.flush() == byte_level.decode(ids)[1:]
    assert detok.flush() == ""


def test_leading_space_kept_with_a_decoder_that_strips_it(metaspace) -> None:
    prompt = ids_of(metaspace, "hello")
    generated = ids_of(metaspace, "hello world")[len(prompt) :]
    assert metaspace.decode(generated) == "world"  # the naive per-call decode loses the space
    assert "".join(run(metaspace, generated, prompt=prompt)) == " world"


@pytest.mark.parametrize("name", ["byte_level", "metaspace"])
def test_leading_spaces_of_every_token_survive(request, name) -> None:
    tokenizer = request.getfixturevalue(name)
    prompt = ids_of(tokenizer, "The for")
    full = ids_of(tokenizer, "The for statement is used to iterate")
    deltas = run(tokenizer, full[len(prompt) :], prompt=prompt)
    assert "".join(deltas) == " statement is used to iterate"
    assert sum(d.startswith(" ") for d in deltas) >= 4


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens_skipped_or_kept(byte_level, skip) -> None:
    eos = byte_level.token_to_id("</s>")
    ids = ids_of(byte_level, "the end") + [eos] + ids_of(byte_level, " more")
    text = "".join(run(byte_level, ids, skip=skip))
    assert text == ("the end more" if skip else "the end</s> more")


def test_special_token_between_byte_tokens_of_the_prompt_context(demo) -> None:
    # The chat template's assistant opener ends the prompt; the reply's first token keeps its text.
    rendered = demo.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    prompt = ids_of(demo, rendered)
    assert prompt[-2] == demo.convert_tokens_to_ids("<|assistant|>")
    reply = ids_of(demo, 'The "for" statement 😀') + [demo.eos_token_id]
    assert "".join(run(demo, reply, prompt=prompt)) == 'The "for" statement 😀'


def test_token_ids_and_text_properties(byte_level) -> None:
    prompt = ids_of(byte_level, "hello")
    ids = ids_of(byte_level, " world😀")
    detok = IncrementalDetokenizer(byte_level, prompt)
    detok.push(ids[:-1])
    assert detok.token_ids == ids[:-1]
    assert detok.text == " world"
    detok.push(ids[-1])
    assert detok.text == " world😀"
