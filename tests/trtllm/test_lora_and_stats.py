"""LoRA: the executor's registry (stable ids, validation, residency) and LoRARequests; iteration stats -> gauges."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from trtllm_helpers import collect, req, started, write_adapter

from trt_gateway import errors
from trt_gateway.types import Residency, StoppingCriteria


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "adapters"


@pytest.fixture
async def executor(model_dir: str, root: Path) -> Any:
    write_adapter(root, "sql", r=8)
    return await started(model_dir, lora={"adapter_roots": [str(root)], "max_lora_rank": 16, "max_loras": 2,
                                          "max_cpu_loras": 4})


async def test_capabilities(executor: Any) -> None:
    caps = executor.models()[0].capabilities
    assert (caps.lora, caps.max_lora_rank, caps.max_loras) == (True, 16, 2)


async def test_load_list_unload_with_stable_ids(executor: Any, root: Path) -> None:
    sql = str(root / "sql")
    info = await executor.load_adapter("tiny-llama", "sql", sql)
    assert (info.name, info.rank, info.alpha, info.target_modules) == ("sql", 8, 16.0, ("q_proj", "v_proj"))
    assert info.residency is Residency.DISK  # registered; TensorRT-LLM loads it on first use
    await executor.load_adapter("tiny-llama", "sql", sql)  # idempotent: same name, same path
    await executor.load_adapter("tiny-llama", "chat", write_adapter(root, "chat", r=4))
    assert {a.name: executor.adapters._adapters[a.name].int_id for a in executor.list_adapters("tiny-llama")} == {
        "sql": 1, "chat": 2}
    await executor.unload_adapter("tiny-llama", "sql")
    await executor.load_adapter("tiny-llama", "sql", sql)
    assert executor.adapters._adapters["sql"].int_id == 3  # never reused: the PEFT cache keys on the id
    with pytest.raises(errors.NotFound):
        await executor.unload_adapter("tiny-llama", "nope")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda root: write_adapter(root, "big", r=32), errors.InvalidArgument, "r=32 is outside"),
        (lambda root: write_adapter(root, "noweights", weights=False), errors.InvalidArgument, "adapter_model"),
        (lambda root: str(root / "missing"), errors.InvalidArgument, "does not exist"),
        # TensorRT-LLM reads the weights itself: the gateway checks dtypes and values first (a NaN made outputs empty)
        (lambda root: write_adapter(root, "nan", fill=float("nan")), errors.InvalidArgument, "NaN or infinite"),
        (lambda root: write_adapter(root, "bool", dtype="bool"), errors.InvalidArgument, "dtype BOOL"),
    ],
)
async def test_bad_adapters(executor: Any, root: Path, make: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        await executor.load_adapter("tiny-llama", "bad", make(root))


async def test_same_name_other_path_is_already_exists(executor: Any, root: Path) -> None:
    await executor.load_adapter("tiny-llama", "sql", str(root / "sql"))
    with pytest.raises(errors.AlreadyExists):
        await executor.load_adapter("tiny-llama", "sql", write_adapter(root, "sql2"))


async def test_request_carries_lora_request_and_pins_the_adapter(executor: Any, root: Path, control: Any) -> None:
    await executor.load_adapter("tiny-llama", "sql", str(root / "sql"))
    control.step_delay_s = 0.005
    gen = executor.generate(req(adapter="sql", stopping=StoppingCriteria(ignore_eos=True, max_tokens=100)))
    await gen.__anext__()
    lora = control.submissions[-1]["lora_request"]
    assert (type(lora).__name__, lora.lora_name, lora.lora_int_id, lora.lora_path) == (
        "LoRARequest", "sql", 1, str(root / "sql"))
    (info,) = executor.list_adapters("tiny-llama")
    assert (info.residency, info.active_requests) == (Residency.GPU, 1)
    with pytest.raises(errors.FailedPrecondition, match="in use"):
        await executor.unload_adapter("tiny-llama", "sql")
    await gen.aclose()
    assert executor.list_adapters("tiny-llama")[0].active_requests == 0
    await executor.unload_adapter("tiny-llama", "sql")


async def test_unknown_or_vanished_adapter(executor: Any, root: Path, control: Any) -> None:
    with pytest.raises(errors.NotFound):
        await collect(executor, req(adapter="nope"))
    await executor.load_adapter("tiny-llama", "sql", str(root / "sql"))
    shutil.rmtree(root / "sql")
    with pytest.raises(errors.FailedPrecondition, match="disappeared"):
        await collect(executor, req(adapter="sql"))
    assert control.submissions == []  # validated before LoRARequest (whose __post_init__ would raise)


async def test_lora_off_refuses_adapter_rpcs(model_dir: str) -> None:
    executor = await started(model_dir)
    with pytest.raises(errors.Unimplemented):
        await executor.load_adapter("tiny-llama", "sql", "/x")
    with pytest.raises(errors.Unimplemented):
        executor.list_adapters("tiny-llama")


# -- stats ---------------------------------------------------------------------------------------------------------


async def test_stats_feed_gauges_with_one_consumer(model_dir: str, control: Any) -> None:
    executor = await started(model_dir)  # stats_interval_s 0.01 (helpers.FAST)
    registry = CollectorRegistry()
    executor.register_metrics(registry)
    await collect(executor, req("abcd"))
    for _ in range(100):
        if registry.get_sample_value("trt_gateway_trtllm_iterations_total"):
            break
        await asyncio.sleep(0.01)
    assert registry.get_sample_value("trt_gateway_trtllm_iterations_total") == 5  # 4 tokens + EOS step
    assert registry.get_sample_value("trt_gateway_trtllm_kv_cache_max_blocks") == 100
    assert registry.get_sample_value("trt_gateway_trtllm_iteration_latency_seconds") == pytest.approx(0.0025)
    assert registry.get_sample_value("trt_gateway_trtllm_kv_cache_hit_rate") == 0.25
    assert executor.stats.latest["iter"] == 5 and not executor.llm._executor.stats  # drained by the one poller
    await executor.shutdown()
    assert executor.stats._task is None


async def test_stats_off(model_dir: str) -> None:
    executor = await started(model_dir, options={"stats_interval_s": 0})
    assert "enable_iter_perf_stats" not in executor.llm_kwargs and executor.stats._task is None


async def test_current_load_from_the_iteration_stats(model_dir: str, control: Any) -> None:
    executor = await started(model_dir)
    before = executor.current_load()
    assert (before.kv_cache_usage, before.block_size, before.num_blocks) == (0.0, 0, 0)  # no stats yet
    await collect(executor, req("abcd"))
    for _ in range(100):
        if executor.stats.latest.get("iter") == 5:
            break
        await asyncio.sleep(0.01)
    load = executor.current_load()  # the double's last entry (its final step): 100 blocks of 32 tokens
    assert (load.num_running, load.num_waiting) == (executor.stats.latest["numActiveRequests"], 0)
    assert (load.block_size, load.num_blocks) == (32, 100)
    assert load.kv_cache_usage == executor.stats.latest["kvCacheStats"]["usedNumBlocks"] / 100
    await executor.shutdown()
