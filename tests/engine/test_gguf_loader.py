"""GGUF start-up paths: which file `--model` names, clear refusals, the rotary permutation, and the sentencepiece
vocabulary (built like HF's, checked against HF's tokenizer on the same file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trt_gateway.engine import EngineConfig, EngineConfigError, LLMEngine
from trt_gateway.engine.gguf_checkpoint import find_gguf, permute_rotary, unpermute_rotary
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.executors.native import DEMO_MODEL

gguf = pytest.importorskip("gguf")
from gguf_files import write_gguf  # noqa: E402  (needs gguf)


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(DEMO_MODEL, tmp_path_factory.mktemp("demo-gguf") / "demo.gguf", "Q8_0")


def test_find_gguf_accepts_the_file_or_a_folder_holding_one(demo_gguf: Path, tmp_path: Path) -> None:
    assert find_gguf(demo_gguf) == demo_gguf
    assert find_gguf(demo_gguf.parent) == demo_gguf
    assert find_gguf(DEMO_MODEL) is None  # an HF folder stays an HF folder
    shutil.copy(demo_gguf, tmp_path / "a.gguf")
    shutil.copy(demo_gguf, tmp_path / "b.gguf")
    with pytest.raises(EngineConfigError, match=r"2 GGUF files \(a.gguf, b.gguf\); name one"):
        find_gguf(tmp_path)


def test_engine_serves_a_folder_holding_one_gguf(demo_gguf: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(demo_gguf.parent), device="cpu", dtype="float32"))
    assert engine.model_config.architecture == "LlamaForCausalLM"
    assert engine.model_config.tie_word_embeddings and engine.eos_token_ids == (2,)


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(EngineConfigError, match="is not a readable GGUF file"):
        ModelConfig.from_pretrained(bad)


def _metadata_only(path: Path, arch: str, **extra_tensors: int) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (("block_count", 1), ("embedding_length", 8), ("feed_forward_length", 16),
                       ("context_length", 32), ("attention.head_count", 2)):  # fmt: skip
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_token_list(["a", "b"])
    for name, size in extra_tensors.items():
        writer.add_tensor(name.replace("__", "."), torch.zeros(size).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_architecture_and_llama3_rope_factors_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="GGUF architecture 'gpt2' is not supported") as err:
        ModelConfig.from_pretrained(_metadata_only(tmp_path / "gpt2.gguf", "gpt2"))
    assert err.value.field == "gguf:general.architecture"
    with pytest.raises(EngineConfigError, match="rope_freqs"):
        ModelConfig.from_pretrained(_metadata_only(tmp_path / "l3.gguf", "llama", rope_freqs__weight=4))


def test_missing_weights_are_listed(tmp_path: Path) -> None:
    path = _metadata_only(tmp_path / "empty.gguf", "llama", token_embd__weight=16)
    with pytest.raises(EngineConfigError, match="missing weights"):
        LLMEngine(EngineConfig(model=str(path), device="cpu", dtype="float32"))


def test_unpermute_inverts_llama_cpp_permutation() -> None:
    weights = torch.arange(6 * 8 * 3, dtype=torch.float32).reshape(48, 3)
    permuted = permute_rotary(weights, 6)
    assert not torch.equal(permuted, weights)
    assert torch.equal(unpermute_rotary(permuted, 6), weights)
    # Head 0, head_dim 8: rows (0, 4) are a rotary pair in HF's order and neighbours in llama.cpp's.
    assert torch.equal(permuted[:2], weights[[0, 4]])


def test_sentencepiece_vocabulary_tokenises_like_hf(tmp_path: Path) -> None:
    """A Llama-2 style file: sentencepiece tokens with scores and no merges (they are derived), BOS added."""
    from transformers import AutoTokenizer

    from trt_gateway.engine.gguf_tokenizer import gguf_tokenizer

    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)],
              "\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581h", "el", "ll", "lo", "\u2581w", "or", "ld",
              "\u2581he", "llo", "\u2581hello", "\u2581wor", "\u2581world"]  # fmt: skip
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *[-float(i) for i in range(len(pieces) - 259)]]
    types = [2, 3, 3, *[6] * 256, *[1] * (len(pieces) - 259)]
    path = tmp_path / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_uint32("llama.context_length", 32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    hf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = gguf_tokenizer(path)
    for text in ["hello world", " hello  world", "hello wörld", "held</s>low"]:
        assert ours.encode(text).ids == hf(text).input_ids, text
        assert ours.decode(ours.encode(text).ids) == hf.decode(hf(text).input_ids, skip_special_tokens=True), text
    assert ours.encode("hello").ids[0] == 1  # BOS, as llama.cpp adds to sentencepiece vocabularies by default


def test_guided_decoding_reads_the_gguf_vocabulary(demo_gguf: Path) -> None:
    """xgrammar gets the vocabulary from the GGUF (there is no tokenizer.json): regex-guided sampling matches."""
    import dataclasses
    import re

    from engine_helpers import make_request, run_until_done, tokens_of

    from trt_gateway.engine.gguf_tokenizer import gguf_tokenizer
    from trt_gateway.types import GuidedDecoding

    engine = LLMEngine(EngineConfig(model=str(demo_gguf), device="cpu", dtype="float32"))
    tokenizer = gguf_tokenizer(demo_gguf)
    pattern = r"(yes|no), [a-z]{2,6}\."
    ids = tokenizer.encode("Answer: ").ids
    for seed in range(4):
        request = make_request(f"g{seed}", max_tokens=40, temperature=1.0, sampling={"seed": seed})
        engine.add_request(dataclasses.replace(request, guided=GuidedDecoding(regex=pattern)), ids)
    for rid, outputs in run_until_done(engine).items():
        text = tokenizer.decode(tokens_of(outputs))
        assert re.fullmatch(pattern, text), (rid, text)
