"""ChatTemplate: the demo checkpoint's template, agreement with transformers, and every failure as InvalidArgument."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_gateway.engine.chat_template import ChatTemplate
from trt_gateway.errors import InvalidArgument
from trt_gateway.types import ChatMessage

DEMO = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo"
CONVERSATION = [
    {"role": "system", "content": "You answer questions about Python."},
    {"role": "user", "content": "How does the `for` statement work?"},
    {"role": "assistant", "content": "It iterates over an iterable."},
    {"role": "user", "content": "And `while`? 😀"},
]


def checkpoint(tmp_path: Path, config: dict, **files: str) -> Path:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return tmp_path


@pytest.mark.parametrize("model", ["target", "draft"])
def test_demo_template_renders_role_tagged_turns(model: str) -> None:
    template = ChatTemplate.from_pretrained(DEMO / model)
    assert template.available
    assert template.render([("user", "Hi")]) == "<s><|user|>\nHi</s><|assistant|>\n"
    assert template.render([("user", "Hi")], add_generation_prompt=False) == "<s><|user|>\nHi</s>"


def test_demo_template_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO / "target")
    expected = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert ChatTemplate.from_pretrained(DEMO / "target").render(CONVERSATION) == expected


def test_message_forms_are_equivalent() -> None:
    template = ChatTemplate.from_pretrained(DEMO / "target")
    as_dicts = template.render([{"role": "user", "content": "x"}])
    assert template.render([ChatMessage("user", "x")]) == as_dicts
    assert template.render([("user", "x")]) == as_dicts


def test_unknown_role_is_invalid_argument_on_messages() -> None:
    template = ChatTemplate.from_pretrained(DEMO / "target")
    with pytest.raises(InvalidArgument) as info:
        template.render([("tool", "42")])
    assert info.value.field == "messages"
    assert "Unknown role: tool" in info.value.message


def test_checkpoint_without_template(tmp_path: Path) -> None:
    template = ChatTemplate.from_pretrained(checkpoint(tmp_path, {"eos_token": "</s>"}))
    assert not template.available
    with pytest.raises(InvalidArgument, match="has no chat template") as info:
        template.render([("user", "Hi")])
    assert info.value.field == "messages"


def test_checkpoint_without_tokenizer_config(tmp_path: Path) -> None:
    assert not ChatTemplate.from_pretrained(tmp_path).available


def test_template_that_does_not_compile(tmp_path: Path) -> None:
    template = ChatTemplate.from_pretrained(checkpoint(tmp_path, {"chat_template": "{% for m in messages %}"}))
    assert not template.available
    with pytest.raises(InvalidArgument, match="chat template is invalid") as info:
        template.render([("user", "Hi")])
    assert info.value.field == "messages"


def test_template_runtime_error_is_invalid_argument(tmp_path: Path) -> None:
    template = ChatTemplate("{{ messages[5]['content'] }}")
    with pytest.raises(InvalidArgument, match="chat template failed") as info:
        template.render([("user", "Hi")])
    assert info.value.field == "messages"


def test_sandbox_blocks_python_internals() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidArgument) as info:
        template.render([("user", "Hi")])
    assert info.value.field == "messages"


def test_sandbox_is_immutable() -> None:
    template = ChatTemplate(
        "{% set _ = messages.append({'role': 'user', 'content': 'injected'}) %}{{ messages|length }}"
    )
    with pytest.raises(InvalidArgument):
        template.render([("user", "Hi")])


def test_special_tokens_from_added_token_dicts_and_special_tokens_map(tmp_path: Path) -> None:
    path = checkpoint(
        tmp_path,
        {"chat_template": "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}", "bos_token": {"content": "<bos>"}},
        special_tokens_map__json=json.dumps({"eos_token": "<eos>", "pad_token": {"content": "<pad>"}}),
    )
    assert ChatTemplate.from_pretrained(path).render([]) == "<bos>|<eos>|<pad>"


def test_named_templates_and_jinja_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    named = {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
    assert ChatTemplate.from_pretrained(checkpoint(tmp_path / "a", named)).render([]) == "D"
    path = checkpoint(tmp_path / "b", {}, chat_template__jinja="{% for m in messages %}[{{ m.role }}]{% endfor %}")
    assert ChatTemplate.from_pretrained(path).render([("user", "x")]) == "[user]"


def test_hf_helpers_available_to_templates() -> None:
    template = ChatTemplate(
        "{{ messages | tojson }}{% if not messages[0].content %}{{ raise_exception('empty') }}{% endif %}"
    )
    assert template.render([("user", "é<")]) == '[{"role": "user", "content": "é<"}]'
    with pytest.raises(InvalidArgument, match="rejected by the chat template: empty"):
        template.render([("user", "")])


def test_whitespace_control_matches_hf_defaults() -> None:
    # trim_blocks + lstrip_blocks, as transformers sets them: block tags leave no blank lines behind.
    template = ChatTemplate("{% for m in messages %}\n  {{ m.content }}\n{% endfor %}")
    assert template.render([("user", "a"), ("user", "b")]) == "  a\n  b\n"


@pytest.mark.parametrize("model", ["target", "draft"])
def test_demo_checkpoint_special_tokens_agree(model: str) -> None:
    """The token the template ends a turn with is the one the model config and generation config stop on."""
    folder = DEMO / model
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    vocab = {t["content"]: t["id"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]}
    template = ChatTemplate.from_pretrained(folder)
    for key in ("bos", "eos", "pad"):
        token_id = vocab[template.special_tokens[f"{key}_token"]]
        assert config[f"{key}_token_id"] == generation[f"{key}_token_id"] == token_id
    assert template.render([("user", "x")], add_generation_prompt=False).endswith(template.special_tokens["eos_token"])
    assert config["vocab_size"] == 8192 and max(vocab.values()) < config["vocab_size"]
