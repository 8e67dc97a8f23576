"""Structured prediction on the demo model, through the native engine's guided JSON decoding. The schema bounds
every field: guided decoding makes every token follow it, but only a bounded field is sure to end within
`max_tokens` on a model this small."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field
from trt_gateway import errors

from llama_index.llms.trt_gateway import TrtGateway

PROMPT = PromptTemplate("Describe a pet called {name}.")


class Pet(BaseModel):
    """A pet."""

    name: str = Field(min_length=1, max_length=10)
    species: Literal["cat", "dog", "parrot"]
    age: int = Field(ge=0, le=30)


def demo(**kwargs: Any) -> TrtGateway:
    return TrtGateway(**{"model": "demo", "max_tokens": 96, **kwargs})


async def test_valid_for_every_seed() -> None:
    pets = await asyncio.gather(
        *(demo(temperature=0.7, seed=s).astructured_predict(Pet, PROMPT, name="Rex") for s in range(10))
    )
    assert all(isinstance(p, Pet) for p in pets)
    assert len({p.model_dump_json() for p in pets}) > 1, "sampling with different seeds gave one output"


def test_structured_predict_stream_and_structured_llm() -> None:
    llm = demo()  # no temperature: structured calls are greedy
    pet = llm.structured_predict(Pet, PROMPT, name="Rex")
    assert isinstance(pet, Pet)
    parts = list(llm.stream_structured_predict(Pet, PROMPT, name="Rex"))
    assert parts and Pet.model_validate(parts[-1].model_dump()) == pet
    response = llm.as_structured_llm(Pet).chat([ChatMessage(role="user", content="Describe a pet called Rex.")])
    assert isinstance(response.raw, Pet)
    assert Pet.model_validate_json(response.message.content or "") == response.raw


async def test_cut_output_is_reported_as_such() -> None:
    with pytest.raises(ValueError, match="cut off at max_tokens"):
        demo(max_tokens=6).structured_predict(Pet, PROMPT, name="Rex")
    with pytest.raises(ValueError, match="cut off at max_tokens"):
        await demo(max_tokens=6).astructured_predict(Pet, PROMPT, name="Rex")


def test_bad_schema_is_refused_with_the_reason() -> None:
    class Bad(BaseModel):
        n: int = Field(ge=5, le=1)  # an empty range

    with pytest.raises(errors.InvalidArgument, match="guided.json_schema") as info:
        demo().structured_predict(Bad, PROMPT, name="Rex")
    assert info.value.field == "guided.json_schema"
