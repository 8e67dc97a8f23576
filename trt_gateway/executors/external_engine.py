"""What the trtllm and vllm executors share around their engine: one served model, the gateway's adapter registry,
the table of running requests, and health that goes DEAD for good.

Both engines (TensorRT-LLM's `LLM`, vLLM's `AsyncLLM`) are driven from the gateway's event loop, serve one model under
one name and know adapters only per request. One request, in the shared part (`generate`):
1. refuse a model name other than the served one, and a request id that is still running;
2. pin the adapter the request names (adapter_registry.pinned), so that Unload refuses it until the request ends;
3. stream the subclass's deltas (`_stream`: submit to the engine and convert its outputs; however the stream ends,
   drop the request from `_requests` and abort it in the engine if it has not finished);
4. an EngineDead from anywhere in the stream marks the executor DEAD: the server then goes NOT_SERVING and exits.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

from trt_gateway import errors, validation
from trt_gateway.config import ExecutorConfig
from trt_gateway.executors.adapter_registry import Adapter, AdapterRegistry, pinned
from trt_gateway.executors.base import Executor, Health
from trt_gateway.types import AdapterInfo, Capabilities, ExecutorLoad, GenerateRequest, TokenDelta

R = TypeVar("R", bound=AdapterRegistry)
T = TypeVar("T")


class Speculation(Protocol):
    """A validated speculative config, as each engine's options module describes it."""

    @property
    def capability(self) -> str: ...

    @property
    def num_draft_tokens(self) -> int: ...


class ExternalEngineExecutor(Executor, Generic[R]):
    dead_message = "the engine is gone"  # EngineDead's message once the engine has died

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.served_name = config.served_name or Path(config.model.rstrip("/")).name
        self.adapters: R | None = None  # the subclass's registry, when adapter roots are configured (LoRA on)
        self._health = Health.STARTING
        self._requests: dict[str, Any] = {}  # gateway request id -> the subclass's handle of the running request

    @classmethod
    def from_config(cls, config: ExecutorConfig) -> Self:
        """The entry point's factory (`trt_gateway.executors.<name>:<Class>.from_config`)."""
        return cls(config)

    @abc.abstractmethod
    def _stream(self, request: GenerateRequest, adapter: Adapter | None) -> AsyncGenerator[TokenDelta, None]:
        """Submit one request (its adapter pinned) and stream its deltas (step 3 in the module docstring)."""

    def _ready(self, engine: T | None) -> T:
        """The engine, when it may take work: EngineDead once it has died, Unavailable before start."""
        if self.health() is Health.DEAD:
            raise errors.EngineDead(self.dead_message)
        if engine is None:
            raise errors.Unavailable(f"the {self.name} executor has not started")
        return engine

    def _capabilities(self, spec: Speculation | None) -> Capabilities:
        """The capabilities every external engine reports alike (adapters, speculation); the subclass adds the rest
        with `dataclasses.replace`."""
        lora, on = self.config.lora, self.adapters is not None
        return Capabilities(
            lora=on,
            max_lora_rank=lora.max_lora_rank if on else 0,
            max_loras=lora.max_loras if on else 0,
            speculative=spec.capability if spec else "",
            num_draft_tokens=spec.num_draft_tokens if spec else 0,
        )

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self._check_model(request.model)
        if request.request_id in self._requests:
            raise validation.duplicate_request_id(request.request_id)
        with pinned(self.adapters, request.adapter) as adapter:
            stream = self._stream(request, adapter)
            try:
                async with contextlib.aclosing(stream):
                    async for delta in stream:
                        yield delta
            except errors.EngineDead:
                self._health = Health.DEAD
                raise

    # -- load -----------------------------------------------------------------------------------------------------

    def current_load(self) -> ExecutorLoad:
        """The gateway's own view (requests it has submitted, adapters they pin), overlaid with what the engine's
        statistics say (`_engine_load`): its running and waiting counts and the KV cache's shape and use."""
        running = tuple(sorted(a.name for a in self.adapters.infos() if a.active_requests)) if self.adapters else ()
        base = ExecutorLoad(num_running=len(self._requests), max_loras=self.config.lora.max_loras if self.adapters else 0,
                            running_adapters=running)
        return dataclasses.replace(base, **self._engine_load())

    def _engine_load(self) -> dict[str, Any]:
        """ExecutorLoad fields the engine's own statistics give (none by default)."""
        return {}

    # -- adapters -------------------------------------------------------------------------------------------------

    def _registry(self, model: str) -> R:
        self._check_model(model)
        if self.adapters is None:
            raise errors.Unimplemented("LoRA is off for this model (no adapter roots configured)", field="adapter")
        return self.adapters

    def list_adapters(self, model: str) -> Sequence[AdapterInfo]:
        return self._registry(model).infos()
