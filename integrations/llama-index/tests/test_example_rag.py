"""The offline RAG example: retrieval picks the right document, and the gateway LLM is asked with it (and only it)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index_instrumentation.event_handlers import BaseEventHandler

from llama_index.llms.trt_gateway import TrtGateway

QUESTIONS = {
    "with": "How does the with statement release resources like files?",
    "decorators": "What is a decorator and the @wrapper syntax?",
    "comprehensions": "How do I create lists concisely with a comprehension?",
}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "examples" / "offline_rag.py"
    spec = importlib.util.spec_from_file_location("offline_rag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ChatStarts(BaseEventHandler):
    messages: list[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "ChatStarts"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            self.messages.append("\n".join(m.content or "" for m in event.messages))


@pytest.fixture
def prompts() -> Any:
    handler = ChatStarts(messages=[])
    get_dispatcher().add_event_handler(handler)
    yield handler.messages
    get_dispatcher().event_handlers.remove(handler)


def test_retrieval_picks_the_right_document(example: ModuleType) -> None:
    retriever = example.build_index().as_retriever(similarity_top_k=1)
    for title, question in QUESTIONS.items():
        (hit,) = retriever.retrieve(question)
        assert hit.node.metadata["title"] == title, question


def test_answer_is_grounded_in_the_retrieved_document(example: ModuleType, prompts: list[str]) -> None:
    llm = TrtGateway(temperature=0, max_tokens=16)
    response = example.build_query_engine(llm).query(QUESTIONS["with"])
    assert [n.node.metadata["title"] for n in response.source_nodes] == ["with"]
    (prompt,) = prompts  # one LLM call, through the chat path (the demo model has a chat template)
    assert example.DOCUMENTS["with"] in prompt and QUESTIONS["with"] in prompt
    assert not any(text in prompt for title, text in example.DOCUMENTS.items() if title != "with")
    assert str(response).strip()  # the tiny model's answer: present, not necessarily wise


async def test_streaming_async_query(example: ModuleType, prompts: list[str]) -> None:
    llm = TrtGateway(temperature=0, max_tokens=16)
    engine = example.build_index().as_query_engine(llm=llm, similarity_top_k=1, streaming=True, use_async=True)
    response = await engine.aquery(QUESTIONS["decorators"])
    deltas = [d async for d in response.async_response_gen()]
    assert len([d for d in deltas if d]) > 1
    assert response.source_nodes[0].node.metadata["title"] == "decorators"
    assert example.DOCUMENTS["decorators"] in prompts[0]


def test_main_prints_source_and_answer(example: ModuleType, demo_target: str) -> None:
    out = io.StringIO()
    assert example.main(["--target", demo_target, "--max-tokens", "12"], out=out) == 0
    first, *rest = out.getvalue().splitlines()
    assert first.startswith("[retrieved: with ")
    assert "".join(rest).strip()
