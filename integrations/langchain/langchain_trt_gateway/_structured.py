"""Parsing guided JSON output (`ChatTrtGateway.with_structured_output`).

Unlike LangChain's `JsonOutputParser`, a finished output is parsed strictly: that parser "repairs" truncated JSON
(it closes open strings and objects), which would turn an output cut at `max_tokens` into a plausible but wrong
object. Guided decoding makes every token follow the schema, so a finished output either parses and validates or was
cut before its end (finish_reason "length", or a stop string), and that is reported as such. While a stream is still
going, partial objects are yielded as they grow (for a pydantic schema, only those that already validate).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pydantic.v1
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers.transform import BaseCumulativeTransformOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.utils.json import parse_partial_json


def is_pydantic_class(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, (pydantic.BaseModel, pydantic.v1.BaseModel))


class GuidedJsonOutputParser(BaseCumulativeTransformOutputParser[Any]):
    """JSON text -> a dict, or an instance of `pydantic_object` (pydantic 2 or pydantic.v1)."""

    pydantic_object: Any = None

    @property
    def _type(self) -> str:
        return "trt_gateway_guided_json"

    def parse(self, text: str) -> Any:
        return self.parse_result([Generation(text=text)])

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        generation = result[0]
        text = generation.text
        finish_reason = _finish_reason(generation)
        if partial and finish_reason is None:  # a stream that is still going
            try:
                value = parse_partial_json(text) if text.strip() else None
            except json.JSONDecodeError:
                return None
            if value is None:
                return None
            try:
                return self._validate(value)
            except (pydantic.ValidationError, pydantic.v1.ValidationError):
                return None
        if finish_reason == "length":
            raise OutputParserException(
                "structured output was cut off at max_tokens before its JSON was complete: raise max_tokens, or bound "
                "the schema's strings and arrays (maxLength / maxItems, e.g. pydantic Field(max_length=...)); got "
                f"{_preview(text)}",
                llm_output=text,
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            cut = f" (finish_reason={finish_reason!r})" if finish_reason else ""
            raise OutputParserException(
                f"structured output is not complete JSON{cut}: {exc}; got {_preview(text)}", llm_output=text
            ) from exc
        try:
            return self._validate(value)
        except (pydantic.ValidationError, pydantic.v1.ValidationError) as exc:
            name = getattr(self.pydantic_object, "__name__", "the schema")
            raise OutputParserException(
                f"structured output does not validate as {name}: {exc}", llm_output=text
            ) from exc

    def _validate(self, value: Any) -> Any:
        cls = self.pydantic_object
        if cls is None:
            return value
        if issubclass(cls, pydantic.BaseModel):
            return cls.model_validate(value)
        return cls.parse_obj(value)  # pydantic.v1


def _finish_reason(generation: Generation) -> str | None:
    if isinstance(generation, ChatGeneration) and isinstance(generation.message, BaseMessage):
        reason = generation.message.response_metadata.get("finish_reason")
    else:
        reason = (generation.generation_info or {}).get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


def _preview(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
