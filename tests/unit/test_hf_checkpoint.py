"""hf_checkpoint: the model path rule, config.json / generation_config.json, EOS ids, vocabulary size, and chat
rendering through an engine's tokenizer (plain HF, or a wrapper keeping it in `.tokenizer` like TensorRT-LLM's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trt_gateway.config import ConfigError
from trt_gateway.executors import hf_checkpoint
from trt_gateway.executors.hf_checkpoint import CheckpointFiles, check_model_path
from trt_gateway.types import ChatMessage


class ByteTokenizer:
    """Bytes as token ids, BOS 1 when special tokens are added; a role-tagged chat template."""

    eos_token_id = 2
    chat_template = "{role}: {content}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + list(text.encode())

    def decode(self, token_ids: list[int]) -> str:
        return bytes(t for t in token_ids if t > 2).decode()

    def apply_chat_template(
        self, conversation: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool, **extra: Any
    ) -> str:
        assert not tokenize
        tools = "".join(f"[tool {t['function']['name']}]" for t in extra.get("tools", ()))
        turns = "".join(f"<{m['role']}>{m['content']}" for m in conversation)
        return tools + turns + ("<assistant>" if add_generation_prompt else "")


class Wrapper:
    """TensorRT-LLM's TransformersTokenizer shape: encode/decode forwarded, the chat template only on `.tokenizer`."""

    def __init__(self, inner: ByteTokenizer) -> None:
        self.tokenizer = inner
        self.encode = inner.encode
        self.decode = inner.decode


def test_model_path_is_a_directory_or_an_hf_repo_id(tmp_path: Path) -> None:
    check_model_path(str(tmp_path), "executor.model", "a checkpoint")
    check_model_path("meta-llama/Llama-3.1-8B-Instruct", "executor.model", "a checkpoint")
    (tmp_path / "file").write_text("x")
    cases = {
        "": "executor.model is required: a checkpoint",
        str(tmp_path / "file"): "is not a directory",
        str(tmp_path / "missing"): "no such directory",
        "./org/name": "no such directory",
        "not-a-repo-id": "no such directory",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            check_model_path(path, "executor.model", "a checkpoint")


def test_missing_or_malformed_files_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")  # JSON, but not an object
    (tmp_path / "generation_config.json").write_text("{not json")
    files = CheckpointFiles.read(str(tmp_path))
    assert files.config == {} and files.generation == {}
    assert CheckpointFiles.read(str(tmp_path / "absent")) == CheckpointFiles({}, {})


@pytest.mark.parametrize(
    ("generation", "config", "expected"),
    [
        ({"eos_token_id": [128001, 128009]}, {"eos_token_id": 7}, (128001, 128009)),  # generation_config wins
        ({}, {"eos_token_id": 7}, (7,)),
        ({}, {}, (2,)),  # the tokenizer's, last
    ],
)
def test_eos_ids_precedence(tmp_path: Path, generation: dict, config: dict, expected: tuple[int, ...]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    files = CheckpointFiles.read(str(tmp_path))
    assert files.eos_token_ids(files.config, ByteTokenizer()) == expected


def test_eos_ids_of_a_tensorrt_engine_directory_come_from_its_pretrained_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_config": {"eos_token_id": 5}, "build_config": {}}))
    files = CheckpointFiles.read(str(tmp_path))
    assert files.eos_token_ids(files.config["pretrained_config"], None) == (5,)


def test_vocab_size_must_be_known() -> None:
    assert hf_checkpoint.vocab_size(32000, "m") == 32000
    with pytest.raises(ConfigError, match="cannot tell the vocabulary size of m"):
        hf_checkpoint.vocab_size(None, "m")


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), Wrapper(ByteTokenizer())], ids=["hf", "wrapper"])
def test_chat_rendering_through_the_model_template(tokenizer: Any) -> None:
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))
    assert hf_checkpoint.has_chat_template(tokenizer)
    # no BOS added on top of the template's own text, and the assistant's turn is opened
    assert hf_checkpoint.render(tokenizer, messages) == list(b"<system>Be brief.<user>Hi<assistant>")
    assert hf_checkpoint.tokenize(tokenizer, None, messages, add_special_tokens=True) == list(
        b"<system>Be brief.<user>Hi<assistant>"
    )
    assert hf_checkpoint.tokenize(tokenizer, "ab", None, add_special_tokens=True) == [1, 97, 98]
    assert hf_checkpoint.tokenize(tokenizer, "ab", None, add_special_tokens=False) == [97, 98]


def test_no_template_and_no_tokenizer() -> None:
    bare = ByteTokenizer()
    bare.chat_template = None  # type: ignore[assignment]
    assert not hf_checkpoint.has_chat_template(bare)
    assert not hf_checkpoint.has_chat_template(None)
    assert hf_checkpoint.decode(None, [97]) == ""  # skip_tokenizer_init: token ids only
    assert hf_checkpoint.decode(ByteTokenizer(), [1, 104, 105, 2]) == "hi"


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), Wrapper(ByteTokenizer())], ids=["hf", "wrapper"])
def test_tools_reach_the_template_or_a_system_turn(tokenizer: Any) -> None:
    from trt_gateway.types import Tool

    messages, tools = (ChatMessage("user", "Hi"),), (Tool("get_weather"),)
    plain = bytes(hf_checkpoint.render(tokenizer, messages, tools)).decode()
    assert plain.startswith("<system>You may call these tools") and "get_weather" in plain  # the template ignores tools
    knows = ByteTokenizer()
    knows.chat_template = "{% for t in tools %}{{ t }}{% endfor %}"  # a template that reads `tools`
    assert bytes(hf_checkpoint.render(knows, messages, tools)).decode() == "[tool get_weather]<user>Hi<assistant>"
