"""The Gateway servicer: thin. Each RPC is validate -> convert -> executor -> convert, inside the RPC boundary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from trt_gateway import adapter_paths, validation
from trt_gateway import types as t
from trt_gateway.config import GatewayConfig
from trt_gateway.executors.base import Executor
from trt_gateway.log import request_id_var
from trt_gateway.server import boundary, coalesce, convert, generation
from trt_gateway.server.auth import Caller
from trt_gateway.server.gateway import Gateway
from trt_gateway.server.metrics import Metrics
from trt_gateway.server.watchdog import StallWatchdog
from trt_gateway.types import Finish, FinishReason, ServedModel, TokenDelta, Usage
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

log = logging.getLogger("trt_gateway.server")


async def _settled(task: asyncio.Future[None]) -> None:
    """Wait for `task` to end, whatever its outcome (the RPC's own outcome is what gets reported)."""
    if not task.done():
        await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()  # retrieved: asyncio would log it as never retrieved


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, config: GatewayConfig, executor: Executor, metrics: Metrics) -> None:
        self.config = config
        self.limits = config.limits
        self.executor = executor
        self.metrics = metrics
        self.gateway = Gateway(config, executor, metrics)
        self.admission = self.gateway.admission
        self.registry = self.gateway.registry
        self.keys = self.gateway.keys
        self._background: set[asyncio.Task[object]] = set()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def set_ready(self, models: Sequence[ServedModel]) -> None:
        self.gateway.set_ready(models)

    def _model(self, name: str, caller: Caller | None = None) -> ServedModel:
        return self.gateway.model(name, caller)

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        return self.keys.caller(context.invocation_metadata())

    # -- generation -----------------------------------------------------------------------------------------------

    async def _start(self, msg: pb.GenerateRequest, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        progress = generation.Progress()
        caller = self._caller(context)
        info = self._model(msg.model, caller)
        rid = msg.request_id or boundary.metadata_request_id(context)
        if rid:  # a client's id is checked; ours is not held to the client's length limit
            validation.request_id(rid, self.limits)
        else:
            rid = boundary.new_request_id()
        request_id_var.set(rid)
        request = convert.generate_request(msg, rid, info.name, validation.default_max_tokens(info, self.limits))
        request = self.gateway.check(request, info, max(msg.n, 1), caller)
        if self.config.server.log_requests:  # opt-in only: prompts may hold user data
            log.info("prompt: %r", msg.text or list(msg.token_ids) or [(m.role, m.content) for m in msg.messages])
        # Sent while the executor starts, so its round trip (~0.1 ms on an idle loop, more under load) overlaps
        # admission and the first token. The caller awaits it before its first write and on every way out.
        metadata = asyncio.ensure_future(context.send_initial_metadata(((boundary.REQUEST_ID_KEY, rid),)))
        deltas = self.gateway.start(request, max(msg.n, 1), progress, rid)
        return info, request.request_id, rid, progress, deltas, metadata

    def _timings(self, progress: generation.Progress, finish: Finish | None) -> pb.Timings:
        now = time.monotonic()
        queue_s = progress.queue_s + (finish.queue_time_s if finish else 0.0)
        ttft = (progress.first_token_at - progress.arrived) if progress.first_token_at else 0.0
        return pb.Timings(
            queue_time_ms=queue_s * 1e3, time_to_first_token_ms=ttft * 1e3, total_time_ms=(now - progress.arrived) * 1e3
        )

    @boundary.stream("GenerateStream")
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        info, owned_id, rid, progress, deltas, metadata = await self._start(request, context)
        n = max(request.n, 1)
        tokens, finished, sent = [0] * n, set(), False
        texts: list[list[str]] | None = [[] for _ in range(n)] if self.config.server.log_requests else None
        clock = self.gateway.clock(info, progress, n)
        stall_s = self.config.server.stall_timeout_s
        # A client that stops reading blocks our yield (gRPC flow control): the watchdog aborts such a request.
        watchdog = StallWatchdog(stall_s, lambda: self._stalled(owned_id, stall_s)) if stall_s else None
        # Deltas that queue up while a yield is blocked leave as one chunk (coalesce.py): nothing waits for them.
        items = coalesce.coalesce(deltas, self.config.server.stream_coalesce_tokens)
        self.metrics.active_streams.inc()
        try:
            async with contextlib.aclosing(items):  # closed even if gRPC stops iterating us without an exception
                async for index, delta in items:
                    if isinstance(delta, generation.Queued):
                        chunk = pb.GenerateStreamResponse(request_id=rid, queue_position=delta.position)
                    else:
                        clock.observe(index, delta, request.adapter)
                        tokens[index] += len(delta.token_ids)
                        chunk = convert.stream_chunk(rid, index, delta, request.adapter)
                        if delta.finish is not None:
                            finished.add(index)
                            chunk.timings.CopyFrom(self._timings(progress, delta.finish))
                        if texts is not None:
                            self._log_output(texts, index, delta)
                    if not sent:
                        await metadata  # the first write must follow it, or gRPC would send empty metadata too
                        sent = True
                    if watchdog is not None:
                        watchdog.writing()
                    yield chunk
                    if watchdog is not None:
                        watchdog.written()
        except Exception:  # a GatewayError or a bug (INTERNAL at the boundary): either way the outputs ended
            # After the first chunk, each unfinished output gets a terminal ERROR chunk (with the usage so far)
            # before the status, so a client never has to guess whether an output ended.
            if sent:
                for index in sorted(set(range(n)) - finished):
                    error = Finish(FinishReason.ERROR, Usage(completion_tokens=tokens[index]))
                    chunk = convert.stream_chunk(rid, index, TokenDelta(finish=error), request.adapter)
                    chunk.timings.CopyFrom(self._timings(progress, None))
                    yield chunk
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self.metrics.active_streams.dec()
            await _settled(metadata)  # before the boundary sends a status, which must not race it

    def _stalled(self, owned_id: str, stall_s: float) -> None:
        log.warning("client read nothing for %.0fs: aborting request %s to free its KV cache", stall_s,
                    request_id_var.get())
        self.metrics.rejected.labels("stalled").inc()
        task = asyncio.ensure_future(self.gateway.abort_owned(owned_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _log_output(texts: list[list[str]], index: int, delta: TokenDelta) -> None:
        texts[index].append(delta.text)
        if delta.finish is not None:
            log.info("output[%d] (%s): %r", index, delta.finish.reason.value, "".join(texts[index]))

    @boundary.unary("Generate")
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        info, _, rid, progress, deltas, metadata = await self._start(request, context)
        n = max(request.n, 1)
        per_output: list[list[TokenDelta]] = [[] for _ in range(n)]
        prompt = None
        clock = self.gateway.clock(info, progress, n)
        self.metrics.active_streams.inc()
        try:
            async with contextlib.aclosing(deltas):
                async for index, delta in deltas:
                    if isinstance(delta, generation.Queued):
                        continue  # queue positions are for streams only
                    clock.observe(index, delta, request.adapter)
                    per_output[index].append(delta)
                    prompt = prompt or delta.prompt
            await metadata
        finally:
            self.metrics.active_streams.dec()
            await _settled(metadata)
        outputs = [convert.output(i, ds, request.adapter) for i, ds in enumerate(per_output)]
        if self.config.server.log_requests:
            for o in outputs:
                log.info("output[%d] (%s): %r", o.index, pb.FinishReason.Name(o.finish_reason), o.text)
        response = pb.GenerateResponse(request_id=rid, outputs=outputs, usage=convert.total_usage(outputs))
        if prompt is not None:
            response.prompt.CopyFrom(convert.prompt_info(prompt))
        response.timings.CopyFrom(self._timings(progress, next((d.finish for d in per_output[0] if d.finish), None)))
        return response

    @boundary.unary("Abort")
    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        if not request.request_id:
            raise validation.fail("empty", "request_id")
        validation.request_id(request.request_id, self.limits)
        return pb.AbortResponse(found=await self.gateway.abort(request.request_id, self._caller(context)))

    # -- models and tokens ----------------------------------------------------------------------------------------

    @boundary.unary("Tokenize")
    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        info = self._model(request.model, self._caller(context))
        prompt = t.Prompt(text=request.text or None, messages=convert.messages(request.messages) or None)
        validation.prompt_input(prompt, self.limits, info.vocab_size)
        if not info.capabilities.tokenize:
            raise validation.unsupported("text", "tokenization", info)
        ids = await self.executor.tokenize(
            info.name,
            text=prompt.text,
            messages=prompt.messages,
            add_special_tokens=request.add_special_tokens if request.HasField("add_special_tokens") else True,
        )
        return pb.TokenizeResponse(token_ids=ids, count=len(ids))

    @boundary.unary("ListModels")
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        self._model("")  # UNAVAILABLE while starting
        return pb.ListModelsResponse(
            models=[
                convert.model_info(m, self.limits, default=m.name == self.gateway.default)
                for m in self.gateway.visible_models(self._caller(context))
            ]
        )

    @boundary.unary("GetModelInfo")
    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        info = self._model(request.model, self._caller(context))
        return convert.model_info(info, self.limits, default=info.name == self.gateway.default)

    # -- adapters -------------------------------------------------------------------------------------------------

    def _lora_model(self, name: str, caller: Caller, *, lifecycle: str = "") -> ServedModel:
        """The model, if it serves adapters. `lifecycle` names a Load/Unload RPC: those need an admin key, and
        adapter roots, whatever the executor (FAILED_PRECONDITION naming the config key, as docs/api.md says)."""
        if lifecycle:
            caller.check_admin(lifecycle)
        info = self._model(name, caller)
        if lifecycle and not self.config.executor.lora.adapter_roots:
            raise adapter_paths.no_roots()
        if not info.capabilities.lora:
            raise validation.unsupported("adapter", "LoRA adapters", info)
        return info

    @boundary.unary("ListAdapters")
    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdaptersResponse:
        caller = self._caller(context)
        info = self._lora_model(request.model, caller)
        return pb.ListAdaptersResponse(adapters=[convert.adapter_info(a) for a in self.gateway.adapters(info, caller)])

    @boundary.unary("LoadAdapter")
    async def LoadAdapter(self, request: pb.LoadAdapterRequest, context: grpc.aio.ServicerContext) -> pb.AdapterInfo:
        caller = self._caller(context)
        info = self._lora_model(request.model, caller, lifecycle="LoadAdapter")
        adapter_paths.check_name(request.name)
        caller.check_adapter(request.name)
        path = adapter_paths.confine(request.path, self.config.executor.lora.adapter_roots)
        return convert.adapter_info(await self.executor.load_adapter(info.name, request.name, path))

    @boundary.unary("UnloadAdapter")
    async def UnloadAdapter(
        self, request: pb.UnloadAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadAdapterResponse:
        caller = self._caller(context)
        info = self._lora_model(request.model, caller, lifecycle="UnloadAdapter")
        adapter_paths.check_name(request.name)
        caller.check_adapter(request.name)
        await self.executor.unload_adapter(info.name, request.name)
        return pb.UnloadAdapterResponse()
