"""The OpenAI-compatible HTTP API, driven by the official `openai` SDK (sync, async, streaming, errors) against a real
gateway on loopback: the echo executor (scripted bytes) for exact expectations, the native demo model for a real one.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.testing import LiveGateway

KEY = "sk-test"


@pytest.fixture(scope="module")
def echo_gateway() -> Iterator[LiveGateway]:
    gateway = LiveGateway(
        EchoExecutor({"script": "Hello world"}), server={"http": True, "http_port": 0, "api_keys": [KEY]}
    )
    with gateway:
        yield gateway


@pytest.fixture(scope="module")
def echo_url(echo_gateway: LiveGateway) -> str:
    return f"http://127.0.0.1:{echo_gateway.server.http_port}"


@pytest.fixture(scope="module")
def client(echo_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=echo_url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(echo_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=echo_url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def test_chat_completion(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], max_tokens=32)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Hello world"
    assert choice.finish_reason == "stop" and r.object == "chat.completion" and r.model == "echo"
    assert r.usage is not None and r.usage.completion_tokens == len("Hello world") + 1  # + EOS
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 0


def test_completion_with_length_stop_and_n(client: openai.OpenAI) -> None:
    r = client.completions.create(model="echo", prompt="x", max_tokens=5, n=2)
    assert [c.text for c in r.choices] == ["Hello", "Hello"] and [c.index for c in r.choices] == [0, 1]
    assert {c.finish_reason for c in r.choices} == {"length"}
    r = client.completions.create(model="echo", prompt="x", max_tokens=32, stop=[" wor"])
    assert r.choices[0].text == "Hello" and r.choices[0].finish_reason == "stop"


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello world"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


async def test_async_completion_stream(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.completions.create(model="echo", prompt="x", max_tokens=5, stream=True)
    texts = [c.choices[0].text async for c in stream]
    assert "".join(texts) == "Hello"


def test_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], max_tokens=3, logprobs=True, top_logprobs=1
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [t.token for t in content] == ["H", "e", "l"] and all(len(t.top_logprobs) == 1 for t in content)  # echo knows one
    c = client.completions.create(model="echo", prompt="x", max_tokens=3, logprobs=1)
    assert c.choices[0].logprobs is not None and c.choices[0].logprobs.tokens == ["H", "e", "l"]
    assert c.choices[0].logprobs.text_offset == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"temperature": 5000.0}, openai.BadRequestError, "temperature"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
        ({"model": "nope"}, openai.NotFoundError, "model"),
        ({"extra_body": {"top_kk": 3}}, openai.BadRequestError, "top_kk"),
        ({"n": 99}, openai.BadRequestError, "n"),
    ],
)
def test_errors_map_to_sdk_exceptions(client: openai.OpenAI, kwargs: dict, error: type, param: str) -> None:
    args = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(error) as exc:
        client.chat.completions.create(**args)
    body = exc.value.body  # type: ignore[attr-defined]
    assert body["param"] == param and param in body["message"], body


def test_wrong_key_is_401(echo_url: str) -> None:
    with openai.OpenAI(base_url=echo_url + "/v1", api_key="wrong", max_retries=0) as c, pytest.raises(
        openai.AuthenticationError
    ):
        c.models.list()


def test_models_health_version_metrics(client: openai.OpenAI, echo_url: str) -> None:
    assert [m.id for m in client.models.list()] == ["echo"]
    assert httpx.get(echo_url + "/health").status_code == 200
    assert httpx.get(echo_url + "/version").json()["version"]
    client.completions.create(model="echo", prompt="x", max_tokens=2)
    metrics = httpx.get(echo_url + "/metrics").text
    assert 'trt_gateway_requests_total{code="OK",method="http.completions"}' in metrics


def test_raw_sse_framing(echo_url: str) -> None:
    body = {"model": "echo", "prompt": "x", "max_tokens": 2, "stream": True}
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": "sse-1"}
    with httpx.stream("POST", echo_url + "/v1/completions", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream") and r.headers["x-request-id"] == "sse-1"
        raw = "".join(r.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert "".join(c["choices"][0]["text"] for c in chunks) == "He" and chunks[0]["id"] == "cmpl-sse-1"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"


def test_bad_json_is_400(echo_url: str) -> None:
    r = httpx.post(echo_url + "/v1/chat/completions", content=b"{nope", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_disconnect_aborts_the_request() -> None:
    gateway = LiveGateway(EchoExecutor({"token_delay_s": 0.05}), server={"http": True, "http_port": 0})
    with gateway:
        url = f"http://127.0.0.1:{gateway.server.http_port}/v1/completions"
        body = {"model": "echo", "prompt": "abc", "max_tokens": 500, "ignore_eos": True, "stream": True}
        async with httpx.AsyncClient() as http, http.stream("POST", url, json=body) as r:
            async for _ in r.aiter_text():
                break  # first bytes received, then the client goes away
        registry = gateway.server.servicer.registry
        for _ in range(100):
            if len(registry) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(registry) == 0  # the executor request was aborted, not left running 25 s


def test_real_model_through_the_sdk() -> None:
    demo = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo" / "target"
    gateway = LiveGateway(NativeExecutor(demo, options={"device": "cpu"}), server={"http": True, "http_port": 0})
    with gateway, openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.server.http_port}/v1", api_key="none", max_retries=0
    ) as c:
        r = c.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
        )
        again = c.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0, stream=True
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in again if chunk.choices)
    assert r.choices[0].message.content and streamed == r.choices[0].message.content  # greedy: same text



def test_http_socket_is_tcp_so_responses_are_not_delayed(echo_gateway: LiveGateway) -> None:
    """asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP; without it each response waits out
    the client's delayed ACK (measured: 44 ms instead of 1.5 ms per request on loopback)."""
    listening = echo_gateway.server.http._socket
    assert listening is not None and listening.proto == socket.IPPROTO_TCP
