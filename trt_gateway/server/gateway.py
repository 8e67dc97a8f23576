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

from trt_gateway import errors, reasoning, tool_calls, validation
from trt_gateway.config import GatewayConfig
from trt_gateway.executors.base import Executor
from trt_gateway.server import generation
from trt_gateway.server.admission import Admission
from trt_gateway.server.auth import Caller, Keys
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

    def model(self, name: str, caller: Caller | None = None) -> ServedModel:
        """The served model called `name` ("" = the default), if the caller's key may use it: its scope is checked
        before existence and only the models it may use are listed, so a key learns nothing of the others."""
        validation.model_name(name, self.limits)
        if not self.models:
            raise errors.Unavailable("the server is starting: models are loading")
        if caller is not None:
            caller.check_model(name or self.default, default=not name)
        info = self.models.get(name or self.default)
        if info is None:
            raise validation.unknown_model(name, [m.name for m in self.visible_models(caller)])
        return info

    def visible_models(self, caller: Caller | None) -> list[ServedModel]:
        return [m for m in self.models.values() if caller is None or caller.may_use_model(m.name)]

    def load(self) -> Load:
        executor = self.executor.current_load() if self.models else None
        return Load(self.default, self.admission.queued, self.admission.inflight, executor)

    def adapters(self, info: ServedModel, caller: Caller) -> list[AdapterInfo]:
        """The model's adapters the caller's key may use; their server paths only for an admin key."""
        found = self.executor.list_adapters(info.name) if info.capabilities.lora else ()
        shown = [a for a in found if caller.may_use_adapter(a.name)]
        return shown if caller.admin else [dataclasses.replace(a, path="") for a in shown]

    # -- generation -----------------------------------------------------------------------------------------------

    def check(self, request: GenerateRequest, info: ServedModel, n: int, caller: Caller) -> GenerateRequest:
        """The one request check and the caller's key against the model and adapter. Returns the request to run:
        its id in the caller's namespace (auth.py), and a forced tool call adds the guided decoding that enforces
        it."""
        self.admission.check_open()  # draining: refused before an HTTP stream sends its 200
        validation.check_request(request, info, self.limits, n=n)
        caller.check_model(info.name)
        caller.check_adapter(request.adapter or "")
        constrained = tool_calls.constrain(request)
        if constrained is not request:
            validation.guided_supported(constrained, info)
            validation.guided_size(constrained.guided, self.limits, "tools")
        return dataclasses.replace(constrained, request_id=caller.owned_id(request.request_id))

    def start(
        self,
        request: GenerateRequest,
        n: int,
        progress: generation.Progress,
        shown_id: str,
        *,
        reasoning_split: bool = True,
    ) -> AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None]:
        """(output index, delta) until every output finished. Close it to abort what is still running.
        `request` is what `check` returned; `shown_id` is the id its caller knows it by (for error messages).

        Each output's text goes through the reasoning parser (unless `reasoning_split` is off: text completions
        keep the model's text whole, as vLLM's do), then its content through the tool-call parser."""
        fmt = self.config.server.reasoning_parser if reasoning_split and request.guided.kind is None else None
        tools = tool_calls.parser_for(request, self.config.server.tool_call_parser) is not None
        run_request = request
        if fmt is not None and reasoning.needs_prompt_text(fmt) and request.prompt.text is None:
            # Where the output starts (inside a think block the template opened, or not) is read off the rendered
            # prompt, which only the executor knows: it returns it with the first delta, which _Split then hides.
            run_request = dataclasses.replace(request, response=dataclasses.replace(request.response, echo=True))
        deltas = generation.run(self.executor, self.admission, self.registry, run_request, n, progress, shown_id=shown_id)
        if fmt is None and not tools:
            return deltas
        return _split_outputs(deltas, request, fmt, self.config.server.tool_call_parser)

    def clock(self, info: ServedModel, progress: generation.Progress, n: int) -> TokenClock:
        return TokenClock(self.metrics.model(info.name), progress, [0.0] * n)

    async def abort(self, request_id: str, caller: Caller) -> bool:
        """Abort the caller's own request `request_id`; another key's request of that id is not found."""
        return await self.abort_owned(caller.owned_id(request_id))

    async def abort_owned(self, owned_id: str) -> bool:
        """Abort by the id `check` gave the request (the server's own aborts: stalled streams)."""
        return await generation.abort(self.executor, self.registry, owned_id)

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


class _Split:
    """One output's text through its parsers: reasoning first, then the content through the tool-call parser."""

    def __init__(self, request: GenerateRequest, fmt: str | None, tool_format: str) -> None:
        self._request, self._fmt = request, fmt
        self._reasoning: reasoning.ReasoningParser | None = None
        self._tools = tool_calls.parser_for(request, tool_format)

    def delta(self, delta: TokenDelta) -> TokenDelta | None:
        """The delta as the caller sees it, or None when nothing of it is left to send."""
        r = self._request.response
        if delta.prompt is not None and self._fmt is not None and self._reasoning is None:
            self._reasoning = reasoning.parser(self._fmt, self._prompt_text(delta.prompt.text))
            if not r.echo:  # asked for by start(), not by the caller
                prompt = dataclasses.replace(delta.prompt, text="") if r.prompt_token_ids else None
                delta = dataclasses.replace(delta, prompt=prompt)
                if prompt is None and not (delta.text or delta.token_ids or delta.logprobs or delta.finish):
                    return None
        if self._fmt is not None and self._reasoning is None:
            self._reasoning = reasoning.parser(self._fmt, self._prompt_text(None))
        thought, content = self._reasoning.push(delta.text) if self._reasoning and delta.text else ("", delta.text)
        if delta.finish is not None and self._reasoning is not None:
            more_thought, more_content = self._reasoning.finish()
            thought, content = thought + more_thought, content + more_content
        calls: tuple[ToolCall, ...] = ()
        if self._tools is not None:
            content = self._tools.push(content) if content else ""
            if delta.finish is not None:
                rest, calls = self._tools.finish()
                content += rest
        return dataclasses.replace(delta, text=content, reasoning=thought, tool_calls=calls)

    def _prompt_text(self, rendered: str | None) -> str | None:
        text = self._request.prompt.text
        return text if text is not None else rendered


async def _split_outputs(
    deltas: AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None],
    request: GenerateRequest,
    fmt: str | None,
    tool_format: str,
) -> AsyncGenerator[tuple[int, TokenDelta | generation.Queued], None]:
    """Each output's deltas through its own `_Split`: text as it is certain, the calls on the last delta."""
    splits: dict[int, _Split] = {}
    async with contextlib.aclosing(deltas):
        async for index, delta in deltas:
            if isinstance(delta, generation.Queued):
                yield index, delta
                continue
            split = splits.get(index)
            if split is None:
                split = splits[index] = _Split(request, fmt, tool_format)
            out = split.delta(delta)
            if out is not None:
                yield index, out
