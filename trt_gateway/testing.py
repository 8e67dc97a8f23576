"""A gateway in the test process: for tests of clients, LangChain chains or LlamaIndex pipelines against the real
gRPC server on loopback, without a separate process or a GPU.

    from trt_gateway.executors.echo import EchoExecutor
    from trt_gateway.testing import LiveGateway

    with LiveGateway(EchoExecutor()) as target:        # "127.0.0.1:<free port>"
        GatewayClient(target).generate("hi")

- `LiveGateway`: a started `GatewayServer` on 127.0.0.1, its event loop in a daemon thread, so that both blocking
  calls and calls from another event loop (pytest-asyncio's) reach it;
- `TwoNameDemo`: the embedded engine on a model, served under its own name and as `ALIAS` (how a two-model
  deployment looks to a client);
- `Scripted`: an echo-based executor that replies `REPLY` word by word (`JSON_REPLY` under guided JSON decoding),
  reports guided decoding, speculative decoding and its statistics, and records each request: what a tiny model
  cannot show deterministically.

The LangChain and LlamaIndex adapters' test suites run on these.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from trt_gateway.config import from_mapping
from trt_gateway.executors.base import Executor
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.types import Finish, FinishReason, GenerateRequest, ServedModel, TokenDelta, Usage

ALIAS = "demo-b"
API_KEY = "test-key"
REPLY = "Hello from the scripted gateway."
JSON_REPLY = {"name": "Ada", "age": 36}


class LiveGateway:
    """A started GatewayServer on 127.0.0.1:<free port>, served by a loop in a daemon thread."""

    def __init__(self, executor: Executor, /, **config: Any) -> None:
        self.executor = executor
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-gateway", daemon=True)
        server = {"host": "127.0.0.1", "port": 0, "grace_period_s": 0.5, "http": False, **config.pop("server", {})}
        self.server = GatewayServer(
            from_mapping({"server": server, "executor": {"name": executor.name, **config.pop("executor", {})}, **config}),
            executor,
        )

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=120)
        return f"127.0.0.1:{self.server.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.5), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class TwoNameDemo(NativeExecutor):
    """The demo model, served as "demo" (the default) and as "demo-b"."""

    def models(self) -> Sequence[ServedModel]:
        (info,) = super().models()
        return (info, dataclasses.replace(info, name=ALIAS))

    def _check_model(self, model: str) -> None:
        super()._check_model(self.served_name if model == ALIAS else model)


class Recording(EchoExecutor):
    """The echo executor replying with a fixed `script` (e.g. text with a `<tool_call>` block for the server to
    parse), keeping every request it was given in `requests`."""

    def __init__(self, script: str) -> None:
        super().__init__({"script": script})
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self.requests.append(request)
        async for delta in super().generate(request):
            yield delta


class Scripted(EchoExecutor):
    """Replies REPLY word by word (or JSON_REPLY under guided JSON decoding) and reports speculative statistics."""

    def __init__(self) -> None:
        super().__init__({"model_name": "scripted"})
        self.requests: list[GenerateRequest] = []
        self.word_delay_s = 0.0  # tests slow it down to observe concurrency and deadlines
        self.in_flight = 0
        self.peak_in_flight = 0

    def models(self) -> Sequence[ServedModel]:
        (info,) = super().models()
        caps = dataclasses.replace(info.capabilities, guided=("json_schema",), speculative="ngram", num_draft_tokens=4)
        return (dataclasses.replace(info, capabilities=caps),)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self._check_model(request.model)
        self.requests.append(request)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            reply = json.dumps(JSON_REPLY) if request.guided.json_schema else REPLY
            words = reply.split(" ")
            budget = min(len(words), request.stopping.max_tokens)
            for i, word in enumerate(words[:budget]):
                await asyncio.sleep(self.word_delay_s)
                text = word if i == 0 else " " + word
                if i < budget - 1:
                    yield TokenDelta(text=text, token_ids=(i,))
                    continue
                reason = FinishReason.STOP_TOKEN if budget == len(words) else FinishReason.LENGTH
                usage = Usage(prompt_tokens=7, completion_tokens=budget, draft_tokens=8, accepted_tokens=6)
                yield TokenDelta(text=text, token_ids=(i,), finish=Finish(reason, usage))
        finally:
            self.in_flight -= 1
