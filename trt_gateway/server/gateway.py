"""The protocol-neutral gateway: served models, the request check, authorization, admission, fan-out and metrics.

gRPC (`servicer.py`) and the OpenAI HTTP API (`trt_gateway/openai_api`) are two doors into this one object, so a
request is checked, authorized, queued and counted the same way whichever door it came through. Each door converts
its wire format into `types.GenerateRequest` before calling `start`, and its deltas back out afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from trt_gateway import errors, tool_calls, validation
from trt_gateway.config import GatewayConfig
from trt_gateway.executors.base import Executor
from trt_gateway.server import generation
from trt_gateway.server.admission import Admission
from trt_gateway.server.auth import Keys
from trt_gateway.server.metrics import Load, Metrics, ModelMetrics, RouterCollector
from trt_gateway.types import AdapterInfo, GenerateRequest, ServedModel, TokenDelta, ToolCall

Metadata = Sequence[tuple[str, str | bytes]]
log = logging.getLogger("trt_gateway.server")


@dataclass
class TokenClock:
    """Per-output token timing of one call, feeding the TTFT and inter-token-latency histograms."""

    model: ModelMetrics
    progress: generation.Progress
    last: list[float]

    def observe(self, index: int, delta: TokenDelta, adapter: str) -> None:
        k = len(delta.token_ids)
        if k:
            now = time.monotonic()
            if self.last[index] == 0.0:
                self.model.ttft_seconds.observe(now - self.progress.arrived)
            else:
                gap = (now - self.last[index]) / k
                for _ in range(k):  # several tokens in one delta (speculation, coalescing) share the gap
                    self.model.itl_seconds.observe(gap)
            self.last[index] = now
        if delta.finish is not None:
            self.model.finished(delta.finish.usage, adapter)


class Gateway:
    def __init__(self, config: GatewayConfig, executor: Executor, metrics: Metrics) -> None:
        self.config = config
        self.limits = config.limits
        self.executor = executor
        self.metrics = metrics
        self.admission = Admission(config.admission, metrics)
        self.registry = generation.Registry()
        self.keys = Keys(config.server)
        self.models: dict[str, ServedModel] = {}
        self.default = ""
        self.draining = False
        self.cut_off = False  # the drain's grace is over: calls still running are being ended by the server
        metrics.registry.register(RouterCollector(self.load))

    # -- state ----------------------------------------------------------------------------------------------------

    def set_ready(self, models: Sequence[ServedModel]) -> None:
        self.models = {m.name: m for m in models}
        self.default = models[0].name

    @property
    def ready(self) -> bool:
        """Serving: models loaded, not draining, executor alive."""
        return bool(self.models) and not self.draining

    def model(self, name: str) -> ServedModel:
        """The served model called `name` ("" = the default)."""
        if not self.models:
            raise errors.Unavailable("the server is starting: models are loading")
        info = self.models.get(name or self.default)
        if info is None:
            raise validation.unknown_model(name, list(self.models))
        return info

    def load(self) -> Load:
        executor = self.executor.current_load() if self.models else None
        return Load(self.default, self.admission.queued, self.admission.inflight, executor)

    def adapters(self, info: ServedModel) -> Sequence[AdapterInfo]:
        return self.executor.list_adapters(info.name) if info.capabilities.lora else ()

    # -- generation -----------------------------------------------------------------------------------------------

    def check(self, request: GenerateRequest, info: ServedModel, n: int, metadata: Metadata | None) -> GenerateRequest:
        """The one request check and the caller's key against the model and adapter. Returns the request to run:
        a forced tool call adds the guided decoding that enforces it."""
        self.admission.check_open()  # draining: refused before an HTTP stream sends its 200
        validation.check_request(request, info, self.limits, n=n)
        self.keys.authorize(metadata, model=info.name, adapter=request.adapter or "")
        constrained = tool_calls.constrain(request)
        if constrained is not request:
            validation.guided_supported(constrained, info)
        return constrained

    def start(
        self, request: GenerateRequest, n: int, progress: generation.Progress
    ) -> AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None]:
        """(output index, delta) until every output finished. Close it to abort what is still running."""
        deltas = generation.run(self.executor, self.admission, self.registry, request, n, progress)
        if tool_calls.parser_for(request, self.config.server.tool_call_parser) is None:
            return deltas
        return _with_tool_calls(deltas, request, self.config.server.tool_call_parser)

    def clock(self, info: ServedModel, progress: generation.Progress, n: int) -> TokenClock:
        return TokenClock(self.metrics.model(info.name), progress, [0.0] * n)

    async def abort(self, request_id: str) -> bool:
        return await generation.abort(self.executor, self.registry, request_id)

    # -- shutdown -------------------------------------------------------------------------------------------------

    async def drain(self, grace_s: float, cut_short: asyncio.Event) -> int:
        """Refuse new calls, let running and queued ones finish within `grace_s` (or until `cut_short` is set),
        then end the rest: each gets UNAVAILABLE saying the server shut down (after a final ERROR chunk on gRPC, an
        error event on HTTP), counted as `trt_gateway_rejected_total{reason="shutdown"}`. Returns how many were cut."""
        self.draining = True  # HTTP /health: 503
        self.admission.close()
        waits = [asyncio.ensure_future(self.registry.wait_empty()), asyncio.ensure_future(cut_short.wait())]
        try:
            await asyncio.wait(waits, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not self.registry:
            return 0
        self.cut_off = True
        why = "a second signal" if cut_short.is_set() else f"its grace period of {grace_s:g}s is over"

        def error() -> errors.GatewayError:
            self.metrics.rejected.labels("shutdown").inc()
            return errors.Unavailable(f"the server shut down before this request finished ({why}); retry it")

        cut = await generation.cut_off(self.executor, self.registry, error)
        log.warning("drain: %s; ended %d request(s) still running", why, cut)
        return cut


async def _with_tool_calls(
    deltas: AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None], request: GenerateRequest, fmt: str
) -> AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None]:
    """Each output's text through its tool-call parser: content as it is certain, the calls on the last delta."""
    parsers: dict[int, tool_calls.Parser] = {}
    async with contextlib.aclosing(deltas):
        async for index, delta in deltas:
            if isinstance(delta, generation.Queued):
                yield index, delta
                continue
            parser = parsers.get(index)
            if parser is None:
                made = tool_calls.parser_for(request, fmt)
                assert made is not None  # start() wraps only requests that have one
                parser = parsers[index] = made
            text = parser.push(delta.text) if delta.text else ""
            calls: tuple[ToolCall, ...] = ()
            if delta.finish is not None:
                rest, calls = parser.finish()
                text += rest
            yield index, dataclasses.replace(delta, text=text, tool_calls=calls)
