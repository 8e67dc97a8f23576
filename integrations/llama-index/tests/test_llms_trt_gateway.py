"""TrtGateway against live gateways: all eight entry points on the demo model, and adapters, guided JSON, auth and
concurrency on the scripted executor (see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.prompts import PromptTemplate
from llama_index_instrumentation.event_handlers import BaseEventHandler
from pydantic import BaseModel
from trt_gateway import errors
from trt_gateway.testing import ALIAS, API_KEY, JSON_REPLY, REPLY

from llama_index.llms.trt_gateway import TrtGateway

PROMPT = "The for statement"
MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="You document Python."),
    ChatMessage(role=MessageRole.USER, content="What does the for statement do?"),
]
MAX_TOKENS = 12


def demo(**kwargs: Any) -> TrtGateway:
    return TrtGateway(**{"model": "demo", "temperature": 0, "max_tokens": MAX_TOKENS, **kwargs})


def scripted_llm(target: str, **kwargs: Any) -> TrtGateway:
    return TrtGateway(target=target, model="scripted", api_key=API_KEY, **kwargs)


class Events(BaseEventHandler):
    events: list[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)


@pytest.fixture
def events() -> Iterator[Events]:
    handler = Events(events=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler
    dispatcher.event_handlers.remove(handler)


def check_usage(raw: dict[str, Any] | None, completion_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    assert isinstance(raw, dict)
    usage = raw["usage"]
    assert usage["completion_tokens"] == completion_tokens and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + completion_tokens
    return raw


def check_stream(items: list[Any], text_of: Any) -> str:
    """Cumulative text plus a delta per item; `raw` (with usage) only on the last item."""
    assert len([i for i in items if i.delta]) > 1, "expected several token deltas"
    text = ""
    for item in items:
        text += item.delta
        assert text_of(item) == text
    assert all(i.raw is None for i in items[:-1])
    check_usage(items[-1].raw)
    return text


def test_is_a_native_llm() -> None:
    assert issubclass(TrtGateway, BaseLLM) and not issubclass(TrtGateway, CustomLLM)


def test_metadata_comes_from_the_server() -> None:
    meta = TrtGateway().metadata
    assert (meta.context_window, meta.num_output, meta.is_chat_model, meta.model_name) == (1024, 256, True, "demo")
    assert meta.is_function_calling_model  # the gateway's tools (test_function_calling.py)
    assert demo(max_tokens=100, context_window=800).metadata.num_output == 100
    assert demo(context_window=800).metadata.context_window == 800
    with pytest.raises(ValueError, match="below the context window"):
        _ = demo(max_tokens=1024).metadata


# -- the eight entry points on the demo model -----------------------------------------------------------------------


def test_complete_and_stream_complete(events: Events) -> None:
    llm = demo()
    done = llm.complete(PROMPT)
    raw = check_usage(done.raw)
    assert raw["finish_reason"] == "length" and raw["model"] == "demo" and raw["adapter"] is None
    items = list(llm.stream_complete(PROMPT))
    assert check_stream(items, lambda i: i.text) == done.text  # greedy: the same tokens either way
    assert events.count(LLMCompletionStartEvent) == 2 and events.count(LLMCompletionEndEvent) == 2


def test_chat_and_stream_chat_use_the_server_template(events: Events) -> None:
    llm = demo()
    done = llm.chat(MESSAGES)
    assert done.message.role == MessageRole.ASSISTANT and done.message.content
    # The prompt the server counted is the chat template's rendering, not messages_to_prompt's.
    rendered = llm.client.tokenize(
        messages=[{"role": m.role.value, "content": m.content} for m in MESSAGES], model="demo"
    )
    assert check_usage(done.raw)["usage"]["prompt_tokens"] == len(rendered)
    items = list(llm.stream_chat(MESSAGES))
    assert check_stream(items, lambda i: i.message.content) == done.message.content
    assert events.count(LLMChatStartEvent) == 2 and events.count(LLMChatEndEvent) == 2


async def test_async_entry_points_are_async(monkeypatch: pytest.MonkeyPatch, events: Events) -> None:
    llm = demo()
    _ = llm.metadata  # sync; the async entry points must not touch the blocking client below
    monkeypatch.setattr(TrtGateway, "client", property(lambda self: pytest.fail("blocking client used")))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        completion = await llm.acomplete(PROMPT)
        items = [i async for i in await llm.astream_complete(PROMPT)]
        assert check_stream(items, lambda i: i.text) == completion.text
        chat = await llm.achat(MESSAGES)
        chat_items = [i async for i in await llm.astream_chat(MESSAGES)]
        assert check_stream(chat_items, lambda i: i.message.content) == chat.message.content
    finally:
        task.cancel()
    assert ticks >= 4, "the event loop was blocked"
    check_usage(completion.raw)
    check_usage(chat.raw)
    assert events.count(LLMCompletionStartEvent) == 2 and events.count(LLMChatStartEvent) == 2


async def test_async_entry_points_match_sync() -> None:
    llm = demo()
    assert (await llm.acomplete(PROMPT)).text == llm.complete(PROMPT).text
    assert (await llm.achat(MESSAGES)).message.content == llm.chat(MESSAGES).message.content


def test_formatted_and_completion_to_prompt() -> None:
    llm = demo(completion_to_prompt=lambda p: f"# {p}\n")
    templated = llm.complete(PROMPT)
    assert templated.text == demo().complete(f"# {PROMPT}\n").text
    assert llm.complete(PROMPT, formatted=True).text == demo().complete(PROMPT).text


def test_per_call_model_stop_and_errors() -> None:
    llm = demo(max_tokens=24)
    full = llm.complete(PROMPT).text
    assert llm.complete(PROMPT, model=ALIAS).raw["model"] == ALIAS
    words = full.split()
    assert len(words) > 2
    stop = words[len(words) // 2]
    cut = llm.complete(PROMPT, stop=[stop])
    assert cut.text == full[: full.index(stop)]
    assert cut.raw["finish_reason"] == "stop_string" and cut.raw["matched_stop"] == stop
    assert "".join(i.delta for i in llm.stream_complete(PROMPT, stop=[stop])) == cut.text
    assert demo(max_tokens=24, stop=[stop]).complete(PROMPT, stop=[]).text == full
    with pytest.raises(TypeError, match="adaptor"):
        llm.complete(PROMPT, adaptor="x")
    with pytest.raises(errors.NotFound):
        llm.complete(PROMPT, model="no-such-model")
    with pytest.raises(ValueError, match="text only"):
        llm.chat([ChatMessage(role="user", blocks=[TextBlock(text="hi"), ImageBlock(url="https://example.com/a.png")])])


def test_token_counting_handler_reads_raw_usage() -> None:
    counter = TokenCountingHandler()
    llm = demo(callback_manager=CallbackManager([counter]))
    done = llm.complete(PROMPT)
    assert counter.completion_llm_token_count == done.raw["usage"]["completion_tokens"] == MAX_TOKENS
    assert counter.prompt_llm_token_count == done.raw["usage"]["prompt_tokens"]


# -- what the demo model cannot show: the scripted executor -----------------------------------------------------------


def test_adapter_selection_and_speculative_usage(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    llm = scripted_llm(target, adapter="a1")
    done = llm.complete("Hi")
    assert done.text == REPLY and done.raw["adapter"] == "a1"
    assert done.raw["usage"]["draft_tokens"] == 8 and done.raw["usage"]["accepted_tokens"] == 6
    items = list(llm.stream_chat([ChatMessage(role="user", content="Hi")], adapter="sql-lora"))
    assert items[-1].message.content == REPLY and items[-1].raw["adapter"] == "sql-lora"
    assert [r.adapter for r in executor.requests] == ["a1", "sql-lora"]


async def test_async_calls_run_concurrently(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.05
    llm = scripted_llm(target)
    done = await asyncio.gather(*(llm.acomplete(p) for p in "abcd"))
    assert [d.text for d in done] == [REPLY] * 4
    assert executor.peak_in_flight == 4


class Person(BaseModel):
    name: str
    age: int


def test_structured_predict_uses_guided_json(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    person = scripted_llm(target).structured_predict(Person, PromptTemplate("Who is {who}?"), who="Ada")
    assert person == Person(**JSON_REPLY)
    assert '"age"' in executor.requests[-1].guided.json_schema


async def test_astructured_predict(scripted: tuple[str, Any]) -> None:
    target, _ = scripted
    person = await scripted_llm(target).astructured_predict(Person, PromptTemplate("Who is {who}?"), who="Ada")
    assert person == Person(**JSON_REPLY)


def test_structured_predict_is_greedy_unless_told(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    scripted_llm(target).structured_predict(Person, PromptTemplate("Who is {who}?"), who="Ada")
    assert executor.requests[-1].sampling.temperature == 0
    scripted_llm(target, temperature=0.6).structured_predict(Person, PromptTemplate("Who is {who}?"), who="Ada")
    assert executor.requests[-1].sampling.temperature == pytest.approx(0.6)


def test_structured_predict_refused_without_guided_decoding(echo_target: str) -> None:
    with pytest.raises(errors.Unimplemented, match="guided decoding by json_schema.*'echo'"):
        TrtGateway(target=echo_target).structured_predict(Person, PromptTemplate("Who is {who}?"), who="Ada")


def test_api_key_and_timeout(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    with pytest.raises(errors.Unauthenticated):
        TrtGateway(target=target, model="scripted").complete("Hi")
    executor.word_delay_s = 0.5
    with pytest.raises(errors.DeadlineExceeded):
        scripted_llm(target, timeout=0.2).complete("Hi")
    assert "test-key" not in repr(scripted_llm(target)) and "test-key" not in str(scripted_llm(target).to_dict())
