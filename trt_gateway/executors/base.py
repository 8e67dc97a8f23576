"""The Executor contract: the one seam between the gRPC server and a backend.

An executor serves one or more named models. The server has already validated a request against `ServedModel`
(limits and capabilities) before `generate` sees it; the executor still owns everything that needs the tokenizer
(prompt length against the context window, chat templates, stop strings).

Cancellation contract: the server iterates `generate(...)`. When the RPC is cancelled, it closes the iterator (raising
`GeneratorExit` / `CancelledError` inside it) AND calls `abort(request_id)`; both must be safe, idempotent, and must
free the request's resources (KV blocks) by the executor's next step.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Sequence
from typing import Any

from trt_gateway import errors
from trt_gateway.types import AdapterInfo, ChatMessage, ExecutorLoad, GenerateRequest, ServedModel, TokenDelta


class Health(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DEAD = "dead"  # fatal: the process should exit so a supervisor restarts it


class Executor(abc.ABC):
    """Base class for backends. Subclasses register under the entry-point group `trt_gateway.executors`."""

    name: str = "abstract"
    served_name: str = ""  # the one model name clients use, for executors that serve one model
    _info: ServedModel | None = None  # that model, once started

    def _check_model(self, model: str) -> None:
        """For one-model executors: any other model name is NOT_FOUND."""
        if model != self.served_name:
            raise errors.NotFound(f"model {model!r} is not served by this executor", field="model")

    @abc.abstractmethod
    async def start(self) -> None:
        """Load models; called once on the server's event loop before it accepts requests."""

    def models(self) -> Sequence[ServedModel]:
        """The models this executor serves, the first being the default. One-model executors set `_info` at start."""
        if self._info is None:
            raise errors.Unavailable(f"the {self.name} executor has not started")
        return (self._info,)

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        """Stream deltas for one output sequence. The last delta carries `finish`.

        Raise a `GatewayError` for a per-request failure (before or after the first delta); raise `EngineDead` when
        the backend is gone for good.
        """

    @abc.abstractmethod
    async def abort(self, request_id: str) -> bool:
        """Abort a running or queued request. Idempotent; True if it was still running."""

    @abc.abstractmethod
    def health(self) -> Health: ...

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the backend. In-flight requests have been drained or aborted by the server already."""

    # Optional surfaces. The defaults refuse with UNIMPLEMENTED, which the server forwards as is.

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        raise errors.Unimplemented(f"executor {self.name!r} cannot tokenize")

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        raise errors.Unimplemented(f"executor {self.name!r} does not support LoRA adapters")

    async def unload_adapter(self, model: str, name: str) -> None:
        raise errors.Unimplemented(f"executor {self.name!r} does not support LoRA adapters")

    def list_adapters(self, model: str) -> Sequence[AdapterInfo]:
        return ()

    def current_load(self) -> ExecutorLoad | None:
        """Load figures for routers (`/metrics`); None when the executor cannot tell."""
        return None

    def register_metrics(self, registry: Any) -> None:  # noqa: B027 - an optional hook: most executors have none
        """Add the executor's own Prometheus collectors to the server's registry (a CollectorRegistry)."""
