"""The checkpoint facts trtllm and vllm read alike (executors/hf_checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from trt_gateway.config import ConfigError
from trt_gateway.executors.hf_checkpoint import ChatTokenizer, check_model_path, eos_token_ids, read_json
from trt_gateway.types import ChatMessage


def test_model_path_rule(tmp_path: Path) -> None:
    check_model_path(str(tmp_path), "executor.model", "vLLM")
    check_model_path("meta-llama/Llama-3.1-8B", "executor.model", "vLLM")  # a hub id the engine fetches itself
    (tmp_path / "f").write_text("x")
    for bad, words in ((str(tmp_path / "f"), "not a directory"), ("./nothing", "no such directory"), ("", "required")):
        with pytest.raises(ConfigError, match=words):
            check_model_path(bad, "executor.model", "vLLM")


def test_read_json_and_eos(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(tmp_path / "missing.json") == {} and read_json(tmp_path / "list.json") == {}
    model = read_json(tmp_path / "config.json")
    assert eos_token_ids({}, model, None) == (2, 7)
    assert eos_token_ids({"eos_token_id": 5}, model, None) == (5,)  # generation_config wins
    assert eos_token_ids({}, {}, SimpleNamespace(eos_token_id=9)) == (9,)


def test_chat_tokenizer_reaches_through_a_wrapper() -> None:
    from transformers import AutoTokenizer

    demo = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo" / "target"
    hf = AutoTokenizer.from_pretrained(demo)
    wrapped = SimpleNamespace(tokenizer=hf, encode=hf.encode, decode=hf.decode)  # TensorRT-LLM's wrapper shape
    messages = [ChatMessage("user", "Hi")]
    want = hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True, add_generation_prompt=True)
    for tok in (ChatTokenizer(hf), ChatTokenizer(wrapped)):
        assert tok.has_template and tok.render(messages) == list(getattr(want, "input_ids", want))
