"""`GatewayClient`: the blocking client, over a sync gRPC channel. Mirrors `AsyncGatewayClient` method for method."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc
import tenacity
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trt_gateway.client import _convert
from trt_gateway.client._base import BaseClient, CallMetadata, Deadline, error_from_rpc, replay_first
from trt_gateway.client._convert import GenerateParams, MessageLike, Unpack
from trt_gateway.client.streaming import First, Stream
from trt_gateway.client.types import Completion, ModelInfo
from trt_gateway.types import AdapterInfo
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

T = TypeVar("T")


class GatewayClient(BaseClient):
    """A blocking client for a trt-gateway server at `target` ("host:port").

    Every method takes `timeout` (seconds for the whole call, retries included; default: the client's) and
    `metadata` (extra gRPC metadata). Errors are the typed exceptions of `trt_gateway.errors`.
    """

    def _connect(self) -> None:
        creds, opts = self.options.credentials(), self.options.grpc_options()
        self._channel = (
            grpc.secure_channel(self.target, creds, opts) if creds else grpc.insecure_channel(self.target, opts)
        )
        self._stub = pb_grpc.GatewayStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _retrying(self, deadline: Deadline, attempt: Callable[[], T]) -> T:
        # The first attempt runs bare: tenacity's machinery costs ~50 us a call, paid only once a retry is possible.
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001 - re-raised unless the policy retries it
            if not self.retry_policy.should_retry(exc):
                raise
            first = replay_first(exc)

        def again() -> T:
            first()  # raises the first attempt's error once, so tenacity counts it: the same waits and stops
            return attempt()

        return tenacity.Retrying(**self.retry_policy.tenacity_kwargs(deadline))(again)

    def _unary(self, method: str, request: Any, timeout: float | None, metadata: CallMetadata) -> Any:
        """Call the Gateway RPC `method`, retrying retryable errors within the call's deadline."""
        deadline, md = self._deadline(timeout), self._metadata(metadata)
        rpc = getattr(self._stub, method)

        def attempt() -> Any:
            try:
                return rpc(request, timeout=deadline.attempt_timeout(), metadata=md)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc) from exc

        return self._retrying(deadline, attempt)

    # -- generation ---------------------------------------------------------------------------------------------

    def generate(
        self,
        text: str | None = None,
        *,
        timeout: float | None = None,
        metadata: CallMetadata = None,
        **params: Unpack[GenerateParams],
    ) -> Completion:
        """Generate and return every output once finished. Keyword arguments are the request fields."""
        request = _convert.generate_request(text, **params)
        return _convert.completion(self._unary("Generate", request, timeout, metadata))

    def stream(
        self,
        text: str | None = None,
        *,
        timeout: float | None = None,
        metadata: CallMetadata = None,
        **params: Unpack[GenerateParams],
    ) -> Stream:
        """Stream chunks as tokens are produced. Opens lazily (on `with` or the first `next`)."""
        request = _convert.generate_request(text, **params)
        md = self._metadata(metadata)

        def open_call() -> tuple[Any, First]:
            deadline = self._deadline(timeout)  # starts when the stream opens, and covers the whole stream

            def attempt() -> tuple[Any, First]:
                call = self._stub.GenerateStream(request, timeout=deadline.attempt_timeout(), metadata=md)
                try:
                    return call, next(call, None)
                except grpc.RpcError as exc:
                    raise error_from_rpc(exc) from exc
                except BaseException:
                    call.cancel()
                    raise

            return self._retrying(deadline, attempt)

        return Stream(open_call, request.request_id or None)

    def abort(self, request_id: str, *, timeout: float | None = None, metadata: CallMetadata = None) -> bool:
        """Abort a running request by id; False if it was unknown or already finished."""
        resp = self._unary("Abort", pb.AbortRequest(request_id=request_id), timeout, metadata)
        return bool(resp.found)

    # -- models and tokens --------------------------------------------------------------------------------------

    def tokenize(
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
        return list(self._unary("Tokenize", request, timeout, metadata).token_ids)

    def models(self, *, timeout: float | None = None, metadata: CallMetadata = None) -> list[ModelInfo]:
        resp = self._unary("ListModels", pb.ListModelsRequest(), timeout, metadata)
        return [_convert.model_info(m) for m in resp.models]

    def model_info(self, model: str = "", *, timeout: float | None = None, metadata: CallMetadata = None) -> ModelInfo:
        request = pb.GetModelInfoRequest(model=model)
        return _convert.model_info(self._unary("GetModelInfo", request, timeout, metadata))

    # -- adapters -----------------------------------------------------------------------------------------------

    def adapters(
        self, model: str = "", *, timeout: float | None = None, metadata: CallMetadata = None
    ) -> list[AdapterInfo]:
        resp = self._unary("ListAdapters", pb.ListAdaptersRequest(model=model), timeout, metadata)
        return [_convert.adapter_info(a) for a in resp.adapters]

    def load_adapter(
        self, name: str, path: str, *, model: str = "", timeout: float | None = None, metadata: CallMetadata = None
    ) -> AdapterInfo:
        request = pb.LoadAdapterRequest(model=model, name=name, path=path)
        return _convert.adapter_info(self._unary("LoadAdapter", request, timeout, metadata))

    def unload_adapter(
        self, name: str, *, model: str = "", timeout: float | None = None, metadata: CallMetadata = None
    ) -> None:
        self._unary("UnloadAdapter", pb.UnloadAdapterRequest(model=model, name=name), timeout, metadata)

    # -- health -------------------------------------------------------------------------------------------------

    def health(self, service: str = "", *, timeout: float | None = None, metadata: CallMetadata = None) -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... Not retried: a probe reports what it sees."""
        request = health_pb2.HealthCheckRequest(service=service)
        timeout = self._deadline(timeout).attempt_timeout()
        try:
            resp = self._health.Check(request, timeout=timeout, metadata=self._metadata(metadata))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return _convert.health_status(resp)
