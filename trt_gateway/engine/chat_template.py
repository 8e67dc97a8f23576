"""Render chat messages into a prompt with the checkpoint's own jinja chat template.

The template comes from the checkpoint (tokenizer_config.json's `chat_template`, or a `chat_template.jinja` file
beside it, which recent transformers write instead). It is rendered in jinja2's immutable sandbox, because a
checkpoint is data from elsewhere and its template must not reach Python internals. The variables are the ones HF
templates expect: `messages`, `add_generation_prompt`, `bos_token`, `eos_token` (and the other special tokens), and
a `raise_exception(message)` function templates use to refuse a conversation.

A checkpoint without a template, a template that does not compile, and a template that refuses or fails on the
messages are all reported when messages are rendered, as `InvalidArgument` on the `messages` field: prompts given as
text still work with such a checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trt_gateway.errors import InvalidArgument
from trt_gateway.types import ChatMessage

logger = logging.getLogger(__name__)

# A message as callers hold it: the gateway's dataclass, a (role, content) pair, or a {"role", "content"} mapping.
MessageLike = ChatMessage | tuple[str, str] | Mapping[str, Any]
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token")


class TemplateRaised(Exception):
    """What `raise_exception` in a template raises; its message is the template author's, meant for the user."""


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(
        self, source: str | None, *, special_tokens: Mapping[str, str] | None = None, origin: str = ""
    ) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._origin = origin or "the model"
        self._compiled: jinja2.Template | None = None
        self._compile_error: str | None = None
        if source is not None:
            try:
                self._compiled = _environment().from_string(source)
            except jinja2.TemplateError as exc:
                # Kept, not raised: the model still serves text prompts; chat requests get this message.
                self._compile_error = f"{type(exc).__name__}: {exc}"
                logger.warning("chat template of %s does not compile: %s", self._origin, self._compile_error)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ChatTemplate:
        """Read the template and special tokens of an HF checkpoint folder. A missing template is not an error here."""
        folder = Path(path)
        config = _read_json(folder / "tokenizer_config.json")
        source = _pick_template(config.get("chat_template"))
        jinja_file = folder / "chat_template.jinja"
        if source is None and jinja_file.is_file():
            source = jinja_file.read_text(encoding="utf-8")
        special = {key: text for key in SPECIAL_TOKEN_KEYS if (text := _token_text(config.get(key))) is not None}
        if "bos_token" not in special or "eos_token" not in special:
            # Older checkpoints keep the tokens only in special_tokens_map.json.
            mapping = _read_json(folder / "special_tokens_map.json")
            for key in SPECIAL_TOKEN_KEYS:
                if key not in special and (text := _token_text(mapping.get(key))) is not None:
                    special[key] = text
        return cls(source, special_tokens=special, origin=str(folder))

    @property
    def available(self) -> bool:
        """Whether chat messages can be rendered at all."""
        return self._compiled is not None

    def render(self, messages: Iterable[MessageLike], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages`, ending with the assistant's turn opener when add_generation_prompt."""
        if self._compiled is None:
            if self._compile_error is not None:
                reason = f"its chat template is invalid ({self._compile_error})"
            else:
                reason = "it has no chat template"
            raise InvalidArgument(
                f"{self._origin} cannot take chat messages: {reason}; send text instead", field="messages"
            )
        variables = {
            "bos_token": "",
            "eos_token": "",
            **self.special_tokens,
            **extra,
            "messages": [_as_dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._compiled.render(**variables)
        except TemplateRaised as exc:
            raise InvalidArgument(f"messages rejected by the chat template: {exc}", field="messages") from exc
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidArgument(
                f"chat template failed on these messages: {type(exc).__name__}: {exc}", field="messages"
            ) from exc


def _environment() -> ImmutableSandboxedEnvironment:
    # The same options transformers uses, so templates written for HF render identically here.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    return env


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    # jinja2's own tojson escapes HTML characters, which would change the prompt; HF templates expect plain JSON.
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _as_dict(message: MessageLike) -> dict[str, Any]:
    if isinstance(message, ChatMessage):
        return {"role": message.role, "content": message.content}
    if isinstance(message, tuple):
        role, content = message
        return {"role": role, "content": content}
    return dict(message)


def _pick_template(value: Any) -> str | None:
    # Either one template string, or a list of {"name", "template"} where "default" is the chat one.
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        chosen = named.get("default")
        return chosen if isinstance(chosen, str) else None
    return None


def _token_text(value: Any) -> str | None:
    # Special tokens are saved either as a string or as a serialised AddedToken {"content": "<s>", ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError included
        from trt_gateway.engine.engine_config import EngineConfigError

        raise EngineConfigError(f"{path} is not a readable JSON file ({exc})", field="model") from exc
    return data if isinstance(data, dict) else {}
