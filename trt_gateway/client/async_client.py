"""`AsyncGatewayClient`: the asyncio client, over a `grpc.aio` channel. Mirrors `GatewayClient` method for method."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc
import tenacity
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trt_gateway.client import _convert
from trt_gateway.client._base import BaseClient, CallMetadata, Deadline, error_from_rpc, replay_first
from trt_gateway.client._convert import GenerateParams, MessageLike, Unpack
from trt_gateway.client.streaming import AsyncStream, First
from trt_gateway.client.types import Completion, ModelInfo
from trt_gateway.types import AdapterInfo
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncGatewayClient(BaseClient):
    """An asyncio client for a trt-gateway server at `target` ("host:port").

    Every method takes `timeout` (seconds for the whole call, retries included; default: the client's) and
    `metadata` (extra gRPC metadata). Errors are the typed exceptions of `trt_gateway.errors`.
    """

    def _connect(self) -> None:
        # The aio channel is made on first use, inside a running event loop: grpc.aio binds a channel to the loop
        # it was made in, and a client is often built outside any loop (module level, a framework's __init__).
        self._credentials = self.options.credentials()  # read certificate files now: fail at construction
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stubs(self) -> tuple[Any, Any]:
        """(Gateway stub, Health stub) on a channel of the running loop; a new loop gets a new channel."""
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            creds, opts = self._credentials, self.options.grpc_options()
            self._channel = (
                grpc.aio.secure_channel(self.target, creds, opts)
                if creds
                else grpc.aio.insecure_channel(self.target, opts)
            )
            self._loop = loop
            self._stub = pb_grpc.GatewayStub(self._channel)
            self._health = health_pb2_grpc.HealthStub(self._channel)
        return self._stub, self._health

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and self._loop is asyncio.get_running_loop():
            await channel.close()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------------------------------------

    async def _retrying(self, deadline: Deadline, attempt: Callable[[], Awaitable[T]]) -> T:
        # The first attempt runs bare: tenacity's machinery costs ~50 us a call, paid only once a retry is possible.
        try:
            return await attempt()
        except Exception as exc:  # noqa: BLE001 - re-raised unless the policy retries it
            if not self.retry_policy.should_retry(exc):
                raise
            first = replay_first(exc)

        async def again() -> T:
            first()  # raises the first attempt's error once, so tenacity counts it: the same waits and stops
            return await attempt()

        return await tenacity.AsyncRetrying(**self.retry_policy.tenacity_kwargs(deadline))(again)

    async def _unary(self, method: str, request: Any, timeout: float | None, metadata: CallMetadata) -> Any:
        """Call the Gateway RPC `method`, retrying retryable errors within the call's deadline."""
        deadline, md = self._deadline(timeout), self._metadata(metadata)
        rpc = getattr(self._stubs()[0], method)

        async def attempt() -> Any:
            try:
                return await rpc(request, timeout=deadline.attempt_timeout(), metadata=md)
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from exc

        return await self._retrying(deadline, attempt)

    # -- generation ---------------------------------------------------------------------------------------------

    async def generate(
        self,
        text: str | None = None,
        *,
        timeout: float | None = None,
        metadata: CallMetadata = None,
        **params: Unpack[GenerateParams],
    ) -> Completion:
        """Generate and return every output once finished. Keyword arguments are the request fields."""
        request = _convert.generate_request(text, **params)
        return _convert.completion(await self._unary("Generate", request, timeout, metadata))

    def stream(
        self,
        text: str | None = None,
        *,
        timeout: float | None = None,
        metadata: CallMetadata = None,
        **params: Unpack[GenerateParams],
    ) -> AsyncStream:
        """Stream chunks as tokens are produced. Not a coroutine: use `async with` / `async for` on the result;
        it opens lazily (on `async with` or the first `__anext__`)."""
        request = _convert.generate_request(text, **params)
        md = self._metadata(metadata)

        async def open_call() -> tuple[Any, First]:
            deadline = self._deadline(timeout)  # starts when the stream opens, and covers the whole stream

            async def attempt() -> tuple[Any, First]:
                call = self._stubs()[0].GenerateStream(request, timeout=deadline.attempt_timeout(), metadata=md)
                try:
                    first = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise error_from_rpc(exc) from exc
                except BaseException:
                    call.cancel()
                    raise
                return call, None if first is grpc.aio.EOF else first

            return await self._retrying(deadline, attempt)

        return AsyncStream(open_call, request.request_id or None)

    async def abort(self, request_id: str, *, timeout: float | None = None, metadata: CallMetadata = None) -> bool:
        """Abort a running request by id; False if it was unknown or already finished."""
        resp = await self._unary("Abort", pb.AbortRequest(request_id=request_id), timeout, metadata)
        return bool(resp.found)

    # -- models and tokens --------------------------------------------------------------------------------------

    async def tokenize(
        self,
        text: str | None = None,
        *,
        messages: Iterable[MessageLike] | None = None,
        model: str = "",
        add_special_tokens: bool = True,
        timeout: float | None = None,
        metadata: CallMetadata = None,
    ) -> list[int]:
        request = _convert.tokenize_request(text, messages, model, add_special_tokens)
        return list((await self._unary("Tokenize", request, timeout, metadata)).token_ids)

    async def models(self, *, timeout: float | None = None, metadata: CallMetadata = None) -> list[ModelInfo]:
        resp = await self._unary("ListModels", pb.ListModelsRequest(), timeout, metadata)
        return [_convert.model_info(m) for m in resp.models]

    async def model_info(
        self, model: str = "", *, timeout: float | None = None, metadata: CallMetadata = None
    ) -> ModelInfo:
        request = pb.GetModelInfoRequest(model=model)
        return _convert.model_info(await self._unary("GetModelInfo", request, timeout, metadata))

    # -- adapters -----------------------------------------------------------------------------------------------

    async def adapters(
        self, model: str = "", *, timeout: float | None = None, metadata: CallMetadata = None
    ) -> list[AdapterInfo]:
        resp = await self._unary("ListAdapters", pb.ListAdaptersRequest(model=model), timeout, metadata)
        return [_convert.adapter_info(a) for a in resp.adapters]

    async def load_adapter(
        self, name: str, path: str, *, model: str = "", timeout: float | None = None, metadata: CallMetadata = None
    ) -> AdapterInfo:
        request = pb.LoadAdapterRequest(model=model, name=name, path=path)
        return _convert.adapter_info(await self._unary("LoadAdapter", request, timeout, metadata))

    async def unload_adapter(
        self, name: str, *, model: str = "", timeout: float | None = None, metadata: CallMetadata = None
    ) -> None:
        request = pb.UnloadAdapterRequest(model=model, name=name)
        await self._unary("UnloadAdapter", request, timeout, metadata)

    # -- health -------------------------------------------------------------------------------------------------

    async def health(self, service: str = "", *, timeout: float | None = None, metadata: CallMetadata = None) -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... Not retried: a probe reports what it sees."""
        request = health_pb2.HealthCheckRequest(service=service)
        timeout = self._deadline(timeout).attempt_timeout()
        try:
            resp = await self._stubs()[1].Check(request, timeout=timeout, metadata=self._metadata(metadata))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        return _convert.health_status(resp)
