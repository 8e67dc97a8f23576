"""Offline behaviour of ChatTrtGateway and TrtGatewayLLM: message conversion, resolving one call, client options,
structured-output wiring. Nothing here reaches a server."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableBinding, RunnableSequence
from pydantic import BaseModel, ValidationError

from langchain_trt_gateway import ChatTrtGateway, TrtGatewayLLM
from langchain_trt_gateway.chat_models import to_gateway_messages


def test_messages_become_role_content_pairs() -> None:
    msgs = [
        SystemMessage("be brief"),
        HumanMessage([{"type": "text", "text": "hello "}, "there"], name="ada"),
        AIMessage("hi"),
        ChatMessage(role="critic", content="meh"),
        ToolMessage("42", tool_call_id="t1"),
    ]
    assert to_gateway_messages(msgs) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hi"},
        {"role": "critic", "content": "meh"},
        {"role": "tool", "content": "42", "tool_call_id": "t1"},
    ]


def test_non_text_blocks_are_refused() -> None:
    image = {"type": "image", "url": "https://example.com/cat.png"}
    with pytest.raises(ValueError, match=r"messages\[0\].*text only.*image"):
        to_gateway_messages([HumanMessage([{"type": "text", "text": "what is it?"}, image])])


@pytest.mark.parametrize("cls", [ChatTrtGateway, TrtGatewayLLM])
def test_call_resolution_precedence(cls: Any) -> None:
    llm = cls(model="m", adapter="a", temperature=0.5, max_tokens=8, stop=["x"], model_kwargs={"top_k": 5})
    call = llm._resolve(None, {})
    assert call.params == {"model": "m", "adapter": "a", "temperature": 0.5, "max_tokens": 8, "top_k": 5, "stop": ["x"]}
    assert call.timeout is None
    call = llm._resolve(["y"], {"model": "m2", "adapter": None, "top_k": 3, "timeout": 2.5, "stream": True})
    assert call.params == {"model": "m2", "temperature": 0.5, "max_tokens": 8, "top_k": 3, "stop": ["y"]}
    assert call.timeout == 2.5 and call.adapter is None
    assert "stop" not in llm._resolve([], {}).params  # [] means no stop at all
    with pytest.raises(TypeError, match="'adaptor'"):
        llm._resolve(None, {"adaptor": "x"})


def test_model_kwargs_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown request field"):
        ChatTrtGateway(model_kwargs={"n": 2})


def test_api_key_is_secret_and_client_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRT_GATEWAY_API_KEY", "from-env")
    llm = ChatTrtGateway(target="h:1")
    assert llm.api_key is not None and llm.api_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(llm) and "from-env" not in str(llm.model_dump())
    assert llm._clients is None  # nothing built, nothing connected, until the first call


def test_client_options_come_from_the_fields() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    llm = TrtGatewayLLM(
        target="h:1", timeout=7, max_retries=5, api_key="k", root_certificates=pem, server_name_override="gw.local"
    )
    options = llm.client.options
    assert (options.timeout, options.max_retries, options.api_key) == (7, 5, "k")
    assert options.secure and options.root_certificates == pem and options.server_name_override == "gw.local"
    assert llm.client is llm.client  # built once
    assert llm.async_client.options == options


def test_identifying_params_and_ls_params() -> None:
    llm = ChatTrtGateway(model="m", adapter="a", temperature=0.1, max_tokens=4, stop=["s"], model_kwargs={"seed": 3})
    assert llm._identifying_params["adapter"] == "a" and llm._identifying_params["seed"] == 3
    ls = llm._get_ls_params(stop=["t"], model="other")
    assert ls["ls_provider"] == "trt_gateway" and ls["ls_model_name"] == "other"
    assert ls["ls_stop"] == ["t"] and ls["ls_max_tokens"] == 4
    assert TrtGatewayLLM()._get_ls_params()["ls_model_type"] == "llm"


class Person(BaseModel):
    name: str


def test_structured_output_binds_guided_json() -> None:
    chain = ChatTrtGateway(model="m").with_structured_output(Person)
    assert isinstance(chain, RunnableSequence)
    bound = chain.first
    assert isinstance(bound, RunnableBinding)
    assert bound.kwargs["json_schema"]["properties"] == {"name": {"title": "Name", "type": "string"}}
    assert bound.kwargs["ls_structured_output_format"]["kwargs"]["method"] == "json_schema"
    json_mode = ChatTrtGateway().with_structured_output(method="json_mode").first  # type: ignore[attr-defined]
    assert json_mode.kwargs["json_schema"] == {"type": "object"}


def test_structured_output_argument_errors() -> None:
    llm = ChatTrtGateway()
    with pytest.raises(ValueError, match="method"):
        llm.with_structured_output(Person, method="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a schema"):
        llm.with_structured_output()
    with pytest.raises(ValueError, match="unexpected"):
        llm.with_structured_output(Person, tools=[])
