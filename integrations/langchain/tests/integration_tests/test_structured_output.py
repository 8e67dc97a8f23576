"""`with_structured_output` on the demo model, end to end through the native engine's guided decoding.

The schemas bound every field (string lengths, integer ranges, enums, list sizes): guided decoding makes every token
follow the schema, but only a bounded field is sure to end within `max_tokens` on a model this small.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import pytest
from langchain_core.exceptions import OutputParserException
from pydantic import BaseModel, Field
from trt_gateway import errors
from typing_extensions import TypedDict

from langchain_trt_gateway import ChatTrtGateway

SEEDS = range(20)
PROMPT = "Describe a pet and its owner."


class Pet(BaseModel):
    """A pet."""

    name: str = Field(min_length=1, max_length=10, description="the pet's name")
    species: Literal["cat", "dog", "parrot"]
    age: int = Field(ge=0, le=30)
    tags: list[Annotated[str, Field(max_length=8)]] = Field(default_factory=list, max_length=2)


class Owner(BaseModel):
    """A pet owner (a nested model: its schema has $defs)."""

    name: str = Field(max_length=8)
    pet: Pet
    verified: bool


class Point(TypedDict):
    x: int
    y: int


POINT_SCHEMA = {
    "title": "point",
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": 0}},
    "required": ["x", "y"],
}


def demo(**kwargs: Any) -> ChatTrtGateway:
    return ChatTrtGateway(**{"model": "demo", "max_tokens": 160, **kwargs})


async def test_pydantic_output_is_valid_for_every_seed() -> None:
    async def one(seed: int) -> dict[str, Any]:
        chain = demo(temperature=0.7, seed=seed).with_structured_output(Owner, include_raw=True)
        return await chain.ainvoke(PROMPT)  # type: ignore[return-value]

    results = await asyncio.gather(*(one(s) for s in SEEDS))  # one engine batch
    for seed, result in zip(SEEDS, results, strict=True):
        assert result["parsing_error"] is None, (seed, result["raw"].content)
        assert isinstance(result["parsed"], Owner), seed
        assert result["raw"].response_metadata["finish_reason"] == "stop_token"
    assert len({r["raw"].content for r in results}) > 1, "sampling with different seeds gave one output"


def test_invoke_and_stream_agree_greedy() -> None:
    chain = demo().with_structured_output(Owner)  # no temperature given: a structured call is greedy
    done = chain.invoke(PROMPT)
    assert isinstance(done, Owner)
    streamed = list(chain.stream(PROMPT))
    assert streamed and all(isinstance(p, Owner) for p in streamed)  # partial objects only once they validate
    assert streamed[-1] == done


async def test_astream_dict_schema() -> None:
    chain = demo().with_structured_output(POINT_SCHEMA)
    parts = [p async for p in chain.astream("Where is it?")]
    assert parts and all(isinstance(p, dict) for p in parts)
    assert set(parts[-1]) == {"x", "y"} and -9 <= parts[-1]["x"] <= 9 and parts[-1]["y"] >= 0
    assert parts[-1] == await chain.ainvoke("Where is it?")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_every_schema_kind(method: Literal["json_schema", "function_calling"]) -> None:
    llm = demo()
    point = llm.with_structured_output(Point, method=method).invoke("Where is it?")
    assert isinstance(point, dict) and set(point) == {"x", "y"}
    assert all(isinstance(v, int) for v in point.values())
    pet = llm.with_structured_output(Pet, method=method, strict=True).invoke("A pet?")
    assert isinstance(pet, Pet)


def test_json_mode_gives_a_json_object() -> None:
    # Any object (only the parse is checked); bounded by a short answer's worth of tokens, it may be cut, and says so.
    result = demo(temperature=0.7, seed=3, max_tokens=48).with_structured_output(method="json_mode", include_raw=True)
    out = result.invoke('Reply with JSON like {"a": 1}.')
    assert out["parsing_error"] is None or "max_tokens" in str(out["parsing_error"])
    assert out["parsed"] is None or isinstance(out["parsed"], dict)


def test_cut_output_is_an_error_not_a_repair() -> None:
    llm = demo(max_tokens=12)
    with pytest.raises(OutputParserException, match="cut off at max_tokens"):
        llm.with_structured_output(Owner).invoke(PROMPT)
    with pytest.raises(OutputParserException, match="cut off at max_tokens"):
        list(llm.with_structured_output(Owner).stream(PROMPT))
    raw = demo(max_tokens=3).with_structured_output(POINT_SCHEMA, include_raw=True).invoke("Where?")
    assert raw["parsed"] is None and "cut off at max_tokens" in str(raw["parsing_error"])
    assert raw["raw"].response_metadata["finish_reason"] == "length"


def test_bad_schema_is_refused_with_the_reason() -> None:
    bad = {"title": "bad", "type": "object", "properties": {"a": {"type": "strang"}}}
    with pytest.raises(errors.InvalidArgument, match='guided.json_schema: Unsupported type "strang"') as info:
        demo().with_structured_output(bad).invoke("x")
    assert info.value.field == "guided.json_schema"
