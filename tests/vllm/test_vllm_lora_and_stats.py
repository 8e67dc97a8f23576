"""LoRA: the registry in front of vLLM's adapter cache (add_lora / remove_lora, stable ids, residency) and
LoRARequests per request; engine statistics -> the server's Prometheus registry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from vllm_helpers import collect, executor_config, req, started, write_adapter

from trt_gateway import errors
from trt_gateway.executors.vllm import VllmExecutor
from trt_gateway.types import Residency, StoppingCriteria


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "adapters"


@pytest.fixture
async def executor(model_dir: str, root: Path) -> Any:
    write_adapter(root, "sql", r=8)
    return await started(model_dir, lora={"adapter_roots": [str(root)], "max_lora_rank": 16, "max_loras": 2,
                                          "max_cpu_loras": 4})


async def test_engine_args_and_capabilities(executor: Any, control: Any) -> None:
    args = control.engine_args[-1]
    assert (args.enable_lora, args.max_loras, args.max_lora_rank, args.max_cpu_loras) == (True, 2, 16, 4)
    caps = executor.models()[0].capabilities
    assert (caps.lora, caps.max_lora_rank, caps.max_loras) == (True, 16, 2)


async def test_load_list_unload_with_stable_ids(executor: Any, root: Path, control: Any) -> None:
    sql = str(root / "sql")
    info = await executor.load_adapter("tiny-llama", "sql", sql)
    assert (info.name, info.rank, info.alpha, info.target_modules) == ("sql", 8, 16.0, ("q_proj", "v_proj"))
    assert info.residency is Residency.CPU  # add_lora put it in vLLM's host cache
    op, lora = control.lora_calls[-1]
    assert op == "add" and (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("sql", 1, sql)
    await executor.load_adapter("tiny-llama", "sql", sql)  # idempotent: same name, same path, no second load
    assert len(control.lora_calls) == 1
    await executor.load_adapter("tiny-llama", "chat", write_adapter(root, "chat", r=4))
    await executor.unload_adapter("tiny-llama", "sql")
    assert control.lora_calls[-1] == ("remove", 1)
    await executor.load_adapter("tiny-llama", "sql", sql)
    assert control.lora_calls[-1][1].lora_int_id == 3  # never reused: vLLM caches weights by id
    assert [a.name for a in executor.list_adapters("tiny-llama")] == ["chat", "sql"]
    with pytest.raises(errors.NotFound):
        await executor.unload_adapter("tiny-llama", "nope")
    with pytest.raises(errors.AlreadyExists):
        await executor.load_adapter("tiny-llama", "sql", str(root / "chat"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: write_adapter(root, "big", r=32), "r=32 is outside"),  # the gateway's check
        (lambda root: write_adapter(root, "noweights", weights=False), "adapter_model"),
        (lambda root: str(root / "missing"), "does not exist"),
        # the engine reads the weights itself: the gateway checks dtypes and values first (a NaN made outputs empty)
        (lambda root: write_adapter(root, "nan", fill=float("nan")), "NaN or infinite"),
        (lambda root: write_adapter(root, "inf", fill=float("inf")), "NaN or infinite"),
        (lambda root: write_adapter(root, "int8", dtype="int8"), "dtype I8"),
    ],
)
async def test_bad_adapters(executor: Any, root: Path, make: Any, message: str, control: Any) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        await executor.load_adapter("tiny-llama", "bad", make(root))
    assert control.lora_calls == [] and executor.list_adapters("tiny-llama") == []


async def test_a_failure_inside_vllm_unregisters_the_adapter(executor: Any, root: Path, control: Any) -> None:
    control.engines[-1].vllm_config.lora_config.max_lora_rank = 4  # vLLM's own limit is lower than the gateway's
    with pytest.raises(errors.InvalidArgument, match="vLLM could not load adapter 'sql'.*greater than max_lora_rank"):
        await executor.load_adapter("tiny-llama", "sql", str(root / "sql"))
    assert executor.list_adapters("tiny-llama") == []


async def test_requests_carry_a_lora_request_and_pin_the_adapter(executor: Any, root: Path, control: Any) -> None:
    await executor.load_adapter("tiny-llama", "sql", str(root / "sql"))
    control.step_delay_s = 0.005
    stream = executor.generate(req("abc", adapter="sql", stopping=StoppingCriteria(max_tokens=50, ignore_eos=True)))
    await stream.__anext__()
    lora = control.submissions[-1]["lora_request"]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("sql", 1, str(root / "sql"))
    (info,) = executor.list_adapters("tiny-llama")
    assert (info.residency, info.active_requests) == (Residency.GPU, 1)
    with pytest.raises(errors.FailedPrecondition):
        await executor.unload_adapter("tiny-llama", "sql")
    await stream.aclose()
    assert executor.list_adapters("tiny-llama")[0].active_requests == 0
    await executor.unload_adapter("tiny-llama", "sql")


async def test_unknown_adapter_and_lora_off(executor: Any, model_dir: str) -> None:
    with pytest.raises(errors.NotFound):
        await collect(executor, req(adapter="nope"))
    plain = await started(model_dir)
    with pytest.raises(errors.Unimplemented):
        await collect(plain, req(adapter="sql"))
    with pytest.raises(errors.Unimplemented):
        await plain.load_adapter("tiny-llama", "sql", "/x")
    with pytest.raises(errors.Unimplemented):
        plain.list_adapters("tiny-llama")


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_engine_stats_reach_the_registry(model_dir: str, control: Any) -> None:
    executor = VllmExecutor.from_config(executor_config(model_dir))
    registry = CollectorRegistry()
    executor.register_metrics(registry)
    await executor.start()
    await collect(executor, req("x" * 40, stopping=StoppingCriteria(max_tokens=3)))
    await collect(executor, req("x" * 40, request_id="r2", stopping=StoppingCriteria(max_tokens=3)))
    assert _value(registry, "trt_gateway_vllm_generation_tokens_total") == 6
    assert _value(registry, "trt_gateway_vllm_prompt_tokens_total") == 41 + 41 - 32  # the second hit the cache
    assert _value(registry, "trt_gateway_vllm_prefix_cache_hits_total") == 32
    assert _value(registry, "trt_gateway_vllm_engine_steps_total") >= 3
    assert _value(registry, "trt_gateway_vllm_running_requests") >= 0
    assert _value(registry, "trt_gateway_vllm_kv_cache_usage") >= 0
    load = executor.current_load()  # the router gauges' source: vLLM's last SchedulerStats
    assert load.kv_cache_usage == executor.stats.latest["kv_cache_usage"] and load.num_waiting == 0
    assert load.num_running == int(executor.stats.latest["running_requests"]) and load.block_size == 0


def test_prompt_tokens_from_older_vllm_stats() -> None:
    """Before 0.26's IterationStats.prompt_token_stats, num_prompt_tokens was a plain field of prefilled tokens."""
    from types import SimpleNamespace

    from trt_gateway.executors.vllm.stats import EngineStats

    stats = EngineStats()
    stats.record(None, SimpleNamespace(num_prompt_tokens=7, num_generation_tokens=2, num_preempted_reqs=0))
    assert stats.latest["prompt_tokens"] == 7 and stats.latest["generation_tokens"] == 2


async def test_stats_off(model_dir: str, control: Any) -> None:
    executor = await started(model_dir, options={"log_stats": False})
    await collect(executor, req())
    assert control.engine_args[-1].disable_log_stats is True and executor.stats.latest == {}


async def test_stats_never_break_vllm(model_dir: str, control: Any) -> None:
    executor = await started(model_dir)
    executor.stats.record(object(), "not stats")  # unknown shapes are skipped, not raised
    await asyncio.sleep(0)
    assert len(await collect(executor, req())) > 1
