"""The OpenAI-compatible HTTP routes, as a Starlette app over the same `Gateway` the gRPC servicer uses.

    POST /v1/chat/completions   POST /v1/completions   (both with "stream": true as server-sent events)
    GET  /v1/models             GET  /health           GET  /version        GET /metrics

One request, as numbered steps:
1. authenticate (`Authorization: Bearer <key>`, the gRPC keys) and resolve `model`: a served model, or the name of
   one of its LoRA adapters (as vLLM does), which then serves the request on its base model;
2. parse the body (`protocol`) and run the one request check and the key's scope (`Gateway.check`);
3. stream the gateway's deltas out as JSON (`responses`). A client that disconnects cancels the response, which
   closes the delta stream, which aborts the executor request and frees its KV blocks, as on gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trt_gateway import __version__, errors, validation
from trt_gateway.log import request_id_var
from trt_gateway.openai_api import protocol
from trt_gateway.openai_api.responses import DONE, Output, Shape, error_body, sse
from trt_gateway.server import boundary, coalesce, generation
from trt_gateway.server.auth import Caller
from trt_gateway.server.gateway import Gateway
from trt_gateway.tracing import TRACEPARENT_KEY, Trace
from trt_gateway.types import GenerateRequest, ServedModel, Usage

log = logging.getLogger("trt_gateway.openai")
OPEN_PATHS = ("/health", "/version", "/metrics")  # probes and scrapers need no key, as on gRPC
DISCONNECT_POLL_S = 0.5


def error_response(error: BaseException, request_id: str = "") -> JSONResponse:
    status, body = error_body(error)
    headers = {"x-request-id": request_id} if request_id else {}
    retry = error.retry_after_s if isinstance(error, errors.GatewayError) else None
    if status in (429, 503):
        headers["retry-after"] = str(max(1, round(retry or 1)))  # whole seconds, as the header is read
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(gateway: Gateway) -> Starlette:
    api = _Api(gateway)
    routes = [
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/version", api.version, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class _Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- probes ---------------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """200 when ready; 503 while loading, draining, or after the executor died."""
        return Response(status_code=200 if self.gateway.ready else 503)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": __version__})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- models ---------------------------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            caller = self._authenticate(request)
            self.gateway.model("")  # 503 while starting
        except errors.GatewayError as exc:
            return error_response(exc)
        data = []
        for info in self.gateway.visible_models(caller):  # only what this key may use (auth.py)
            data.append(_model_card(info.name, None, info))
            data.extend(_model_card(a.name, info.name, info) for a in self.gateway.adapters(info, caller))
        return JSONResponse({"object": "list", "data": data})

    # -- generation -----------------------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        rid = request.headers.get(boundary.REQUEST_ID_KEY) or boundary.new_request_id()
        trace = Trace(f"POST {request.url.path}", request.headers.get(TRACEPARENT_KEY), {"http.route": request.url.path})
        try:
            validation.request_id(rid, self.gateway.limits)
            request_id_var.set(rid)
            caller = self._authenticate(request)
            body = await _json(request)
            info, adapter = self._resolve(body.get("model") if isinstance(body, dict) else None, caller)
            parse = protocol.parse_chat if chat else protocol.parse_completion
            parsed = parse(body, request_id=rid, model=info.name,
                           default_max_tokens=validation.default_max_tokens(info, self.gateway.limits))
            req = parsed.request if adapter is None else _with_adapter(parsed.request, adapter)
            req = self.gateway.check(req, info, parsed.n, caller)
        except errors.GatewayError as exc:
            code = errors.row_for(exc).grpc_code.name
            self.gateway.metrics.requests.labels(_method(chat), code).inc()
            trace.end(code)
            return error_response(exc, rid)
        shape = Shape(chat, rid, str(body.get("model") or info.name), req.response.logprobs)
        progress = generation.Progress()
        deltas = self.gateway.start(req, parsed.n, progress, rid, reasoning_split=chat)
        clock = self.gateway.clock(info, progress, parsed.n)
        headers = {"x-request-id": rid}
        if parsed.stream:
            events = self._stream(shape, deltas, clock, req, parsed, chat, trace)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        code = "OK"
        try:
            outputs, prompt_text = await _until_disconnected(request, self._collect(deltas, clock, req, parsed.n))
        except errors.GatewayError as exc:
            code = errors.row_for(exc).grpc_code.name
            return error_response(exc, rid)
        finally:
            self.gateway.metrics.requests.labels(_method(chat), code).inc()
            trace.end(code)
        echo = prompt_text if req.response.echo else ""
        return JSONResponse(shape.whole(outputs, echo), headers=headers)

    async def _collect(self, deltas: Any, clock: Any, req: Any, n: int) -> tuple[list[Output], str]:
        outputs = [Output() for _ in range(n)]
        prompt_text = ""
        async with contextlib.aclosing(deltas):
            async for index, delta in deltas:
                if isinstance(delta, generation.Queued):
                    continue
                clock.observe(index, delta, req.adapter or "")
                if delta.prompt is not None:
                    prompt_text = delta.prompt.text
                outputs[index].add(delta)
        return outputs, prompt_text

    async def _stream(
        self, shape: Shape, deltas: Any, clock: Any, req: Any, parsed: protocol.Parsed, chat: bool, trace: Trace
    ) -> AsyncIterator[bytes]:
        finished: dict[int, Usage] = {}
        opened: set[int] = set()
        prefix: dict[int, str] = {}
        code = "OK"
        # Deltas that queue up while this response is being written leave as one event (server/coalesce.py), as
        # on gRPC: a busy server then writes fewer, larger events instead of falling further behind.
        items = coalesce.coalesce(deltas, self.gateway.config.server.stream_coalesce_tokens)
        try:
            async with contextlib.aclosing(items):
                async for index, delta in items:
                    if isinstance(delta, generation.Queued):
                        continue
                    clock.observe(index, delta, req.adapter or "")
                    if delta.prompt is not None and req.response.echo:  # echo: the prompt leads each choice
                        prefix = {i: delta.prompt.text for i in range(parsed.n)}
                    if chat and index not in opened:
                        opened.add(index)
                        yield sse(shape.first_chunk(index))
                    if delta.prompt is not None and not (delta.text or delta.token_ids or delta.finish):
                        continue
                    yield sse(shape.chunk(index, delta, prefix.pop(index, "")))
                    if delta.finish is not None:
                        finished[index] = delta.finish.usage
            if parsed.include_usage:
                yield sse(shape.usage_chunk([finished[i] for i in sorted(finished)]))
        except errors.GatewayError as exc:  # after the 200 went out, an error is an event the SDKs raise from
            code = errors.row_for(exc).grpc_code.name
            yield sse(error_body(exc)[1])
        except Exception as exc:  # noqa: BLE001 - a bug: logged here, reported without details
            log.exception("stream failed")
            code = "INTERNAL"
            yield sse(error_body(exc)[1])
        except (asyncio.CancelledError, GeneratorExit):  # the client went away: closing `deltas` aborted it
            code = "UNAVAILABLE" if self.gateway.cut_off else "CANCELLED"  # or the shutdown cancelled a stuck write
            raise
        finally:
            self.gateway.metrics.requests.labels(_method(chat), code).inc()
            trace.end(code)
        yield DONE

    # -- helpers --------------------------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> Caller:
        try:
            return self.gateway.keys.caller(_auth_metadata(request))
        except errors.Unauthenticated:
            raise errors.Unauthenticated("missing or invalid API key (Authorization: Bearer <key>)") from None

    def _resolve(self, name: Any, caller: Caller) -> tuple[ServedModel, str | None]:
        """(served model, adapter): `model` names a served model, or one of its adapters the key may use (others
        are not found, as if they did not exist)."""
        if name is not None and not isinstance(name, str):
            raise errors.InvalidArgument("model: must be a string", field="model")
        name = name or ""
        validation.model_name(name, self.gateway.limits)
        if not self.gateway.models or name in self.gateway.models or not name:
            return self.gateway.model(name, caller), None
        for info in self.gateway.visible_models(caller):
            if any(a.name == name for a in self.gateway.adapters(info, caller)):
                return info, name
        raise validation.unknown_model(name, [m.name for m in self.gateway.visible_models(caller)])


def _method(chat: bool) -> str:
    return "http.chat_completions" if chat else "http.completions"


def _auth_metadata(request: Request) -> list[tuple[str, str]]:
    value = request.headers.get("authorization")
    return [("authorization", value)] if value else []


def _with_adapter(request: GenerateRequest, adapter: str) -> GenerateRequest:
    return dataclasses.replace(request, adapter=adapter)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument(f"body: not valid JSON ({exc})", field="body") from exc


def _model_card(name: str, parent: str | None, info: ServedModel) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "trt-gateway", "root": info.name,
            "parent": parent, "max_model_len": info.max_context_length}


async def _until_disconnected(request: Request, work: Any) -> Any:
    """Run `work`; if the client goes away first, cancel it (which aborts the executor request)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait((task,), timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                raise errors.Cancelled("the client disconnected")
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

