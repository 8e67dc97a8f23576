"""external_engine and adapter_registry: what the trtllm and vllm executors share around their engine, on a stand-in
engine: duplicate ids, the adapter pinned for exactly the request's life, EngineDead -> DEAD, readiness, capabilities."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import doubles
import pytest

from trt_gateway import errors
from trt_gateway.config import ExecutorConfig, LoraConfig
from trt_gateway.executors.adapter_registry import Adapter, AdapterRegistry, pinned
from trt_gateway.executors.base import Health
from trt_gateway.executors.external_engine import ExternalEngineExecutor
from trt_gateway.types import GenerateRequest, Prompt, Residency, TokenDelta


class StandIn(ExternalEngineExecutor[AdapterRegistry]):
    name = "standin"
    dead_message = "the stand-in engine is gone"

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self.engine: object | None = None
        self.fail_with: Exception | None = None
        self.gate = asyncio.Event()
        if config.lora.adapter_roots:
            self.adapters = AdapterRegistry(self.served_name, config.lora.max_lora_rank)

    async def start(self) -> None:
        self.engine, self._health = object(), Health.SERVING

    def health(self) -> Health:
        return self._health

    async def shutdown(self) -> None: ...

    async def abort(self, request_id: str) -> bool:
        return False

    async def _stream(self, request: GenerateRequest, adapter: Adapter | None) -> AsyncGenerator[TokenDelta, None]:
        self._ready(self.engine)
        self._requests[request.request_id] = adapter
        try:
            yield TokenDelta(text=adapter.name if adapter else "base")
            await self.gate.wait()
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            del self._requests[request.request_id]


def write_adapter(path: Path) -> str:
    return doubles.write_adapter(path.parent, path.name, modules=("q_proj",))


@pytest.fixture
def executor(tmp_path: Path) -> StandIn:
    return StandIn(ExecutorConfig(name="standin", model=str(tmp_path / "tiny-model/"),
                                  lora=LoraConfig(adapter_roots=(str(tmp_path),), max_loras=2, max_lora_rank=16)))


def req(rid: str = "r1", adapter: str | None = None) -> GenerateRequest:
    return GenerateRequest(rid, "tiny-model", Prompt(text="hi"), adapter=adapter)


async def test_readiness_and_model_name(executor: StandIn) -> None:
    assert executor.served_name == "tiny-model"  # the checkpoint directory's name, trailing slash or not
    with pytest.raises(errors.Unavailable, match="the standin executor has not started"):
        await anext(executor.generate(req()))
    with pytest.raises(errors.NotFound):
        await anext(executor.generate(GenerateRequest("r", "other", Prompt(text="hi"))))
    await executor.start()
    executor._health = Health.DEAD
    with pytest.raises(errors.EngineDead, match="the stand-in engine is gone"):
        await anext(executor.generate(req()))


async def test_adapter_pinned_for_the_request_and_duplicate_ids_refused(executor: StandIn, tmp_path: Path) -> None:
    await executor.start()
    registry = executor._registry("tiny-model")
    registry.load("sql", write_adapter(tmp_path / "sql"))
    stream = executor.generate(req(adapter="sql"))
    assert (await anext(stream)).text == "sql"
    assert executor.list_adapters("tiny-model")[0].residency is Residency.GPU
    with pytest.raises(errors.AlreadyExists):
        await anext(executor.generate(req(adapter="sql")))
    with pytest.raises(errors.FailedPrecondition, match="in use"):
        registry.unload("sql")
    await stream.aclose()  # the server closes the stream on cancel, deadline or disconnect
    assert executor._requests == {} and executor.list_adapters("tiny-model")[0].residency is Residency.DISK
    assert registry.unload("sql").name == "sql" and "sql" not in registry


async def test_engine_dead_mid_stream_marks_the_executor_dead(executor: StandIn) -> None:
    await executor.start()
    executor.fail_with = errors.EngineDead("gone")
    stream = executor.generate(req())
    await anext(stream)
    executor.gate.set()
    with pytest.raises(errors.EngineDead):
        await anext(stream)
    assert executor.health() is Health.DEAD and executor._requests == {}


async def test_a_failed_request_leaves_the_executor_serving(executor: StandIn) -> None:
    await executor.start()
    executor.fail_with = errors.InvalidArgument("bad")
    executor.gate.set()
    with pytest.raises(errors.InvalidArgument):
        async for _ in executor.generate(req()):
            pass
    assert executor.health() is Health.SERVING


def test_capabilities_of_adapters_and_speculation(executor: StandIn, tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Spec:
        capability: str = "ngram"
        num_draft_tokens: int = 4

    caps = executor._capabilities(Spec())
    assert (caps.lora, caps.max_loras, caps.max_lora_rank, caps.speculative, caps.num_draft_tokens) == (
        True, 2, 16, "ngram", 4)
    off = StandIn(ExecutorConfig(name="standin", model=str(tmp_path)))
    caps = off._capabilities(None)
    assert (caps.lora, caps.max_loras, caps.max_lora_rank, caps.speculative, caps.num_draft_tokens) == (
        False, 0, 0, "", 0)
    with pytest.raises(errors.Unimplemented, match="LoRA is off"):
        off.list_adapters(off.served_name)


def test_pinned_without_adapter_or_without_lora() -> None:
    with pinned(None, None) as adapter:
        assert adapter is None
    with pytest.raises(errors.Unimplemented, match="adapter: LoRA is off"), pinned(None, "sql"):
        pass


def test_pinned_releases_on_failure(tmp_path: Path) -> None:
    registry = AdapterRegistry("m", 16)
    registry.load("sql", write_adapter(tmp_path / "sql"))
    with pytest.raises(RuntimeError), pinned(registry, "sql"):
        assert registry.infos()[0].active_requests == 1
        raise RuntimeError("the request failed")
    assert registry.infos()[0].active_requests == 0


def test_lora_request_of_the_engine(tmp_path: Path) -> None:
    adapter = AdapterRegistry("m", 16).load("sql", write_adapter(tmp_path / "sql"))

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

        def __post_init__(self) -> None:
            assert self.lora_int_id >= 1, "id must be positive"  # vLLM checks with assert
            if not Path(self.lora_path).is_dir():
                raise ValueError("lora_path does not exist")  # TensorRT-LLM with ValueError

    assert adapter.lora_request(LoRARequest) == LoRARequest("sql", adapter.int_id, adapter.path)
    gone = Adapter("gone", str(tmp_path / "gone"), 2, 8, 16.0, ())
    with pytest.raises(errors.FailedPrecondition, match="adapter 'gone': lora_path does not exist"):
        gone.lora_request(LoRARequest)
    with pytest.raises(errors.FailedPrecondition, match="id must be positive"):
        Adapter("zero", adapter.path, 0, 8, 16.0, ()).lora_request(LoRARequest)
