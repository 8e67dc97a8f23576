"""Start-up: options, AsyncEngineArgs, feature detection, the install hint without vLLM, and start-up failures."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from vllm_helpers import collect, executor_config, req, started

from trt_gateway import errors
from trt_gateway.config import ConfigError
from trt_gateway.executors import registry
from trt_gateway.executors.base import Health
from trt_gateway.executors.vllm import VllmExecutor
from trt_gateway.types import GuidedDecoding, Prompt, StoppingCriteria


async def test_engine_args(model_dir: str, control: Any) -> None:
    options = {"tensor_parallel_size": 2, "dtype": "bfloat16", "max_model_len": 256, "gpu_memory_utilization": 0.8,
               "max_num_seqs": 64, "enable_prefix_caching": False, "enforce_eager": True, "load_format": "dummy",
               "seed": 3, "max_top_logprobs": 5, "stream_interval": 2, "extra_engine_args": {"async_scheduling": True}}
    executor = await started(model_dir, options=options, served_name="llama")
    args = control.engine_args[-1]
    assert (args.model, args.served_model_name, args.tensor_parallel_size, args.dtype) == (model_dir, "llama", 2,
                                                                                          "bfloat16")
    assert (args.max_model_len, args.gpu_memory_utilization, args.max_num_seqs) == (256, 0.8, 64)
    assert (args.enable_prefix_caching, args.enforce_eager, args.load_format, args.seed) == (False, True, "dummy", 3)
    assert (args.max_logprobs, args.stream_interval, args.async_scheduling) == (5, 2, True)
    assert args.enable_log_requests is False and args.disable_log_stats is False
    info = executor.models()[0]
    assert (info.name, info.max_context_length, info.capabilities.max_top_logprobs) == ("llama", 256, 5)


async def test_defaults_are_vllms(model_dir: str, control: Any) -> None:
    await started(model_dir)
    args = control.engine_args[-1]
    assert (args.dtype, args.max_model_len, args.enable_prefix_caching, args.load_format) == ("auto", None, None, "auto")
    assert args.speculative_config is None and not args.enable_lora
    assert args.structured_outputs_config.backend == "auto"  # vLLM's default object, left alone


async def test_registered_as_an_entry_point(model_dir: str) -> None:
    assert registry.available()["vllm"] == "trt_gateway.executors.vllm:VllmExecutor.from_config"
    assert isinstance(registry.create(executor_config(model_dir)), VllmExecutor)


async def test_engine_core_is_spawned_not_forked(model_dir: str, control: Any) -> None:
    await started(model_dir)
    assert control.engines[-1].vllm_config.extra["multiproc_method"] == "spawn"
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


async def test_start_in_a_thread(model_dir: str, control: Any) -> None:
    executor = await started(model_dir, options={"start_in_thread": True})
    assert executor.health() is Health.SERVING and len(await collect(executor, req())) > 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bogus": 1}, "executor.options.bogus: unknown vllm option"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be >= 1"),
        ({"enforce_eager": "yes"}, "enforce_eager must be bool"),
        ({"gpu_memory_utilization": 1.5}, r"gpu_memory_utilization must be in \(0, 1\]"),
        ({"scheduling_policy": "lifo"}, "scheduling_policy must be one of"),
        ({"extra_engine_args": {"max_num_seqs": 4}}, "set it as a vllm option"),
        ({"extra_engine_args": {"enable_log_requests": True}}, "request logging is the gateway's"),
        ({"extra_engine_args": {"no_such_arg": 1}}, "has no AsyncEngineArgs field 'no_such_arg'"),
        ({"dtype": None}, "dtype may not be null"),
    ],
)
def test_bad_options(model_dir: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VllmExecutor.from_config(executor_config(model_dir, options=options))


def test_bad_model_path() -> None:
    with pytest.raises(ConfigError, match="executor.model: no such directory"):
        VllmExecutor.from_config(executor_config("/no/such/model"))


def test_without_vllm_the_error_says_how_to_install(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees where it is not installed
    with pytest.raises(ConfigError, match=r"needs vLLM.*pip install 'trt-gateway\[vllm\]'.*docs/vllm.md"):
        registry.create(executor_config(model_dir))


async def test_start_failures_are_config_errors(model_dir: str, control: Any) -> None:
    control.init_error = RuntimeError("CUDA out of memory")
    executor = VllmExecutor.from_config(executor_config(model_dir))
    with pytest.raises(ConfigError, match="vLLM could not load .*RuntimeError: CUDA out of memory"):
        await executor.start()
    control.init_error = None
    too_long = VllmExecutor.from_config(executor_config(model_dir, options={"max_model_len": 4096}))
    with pytest.raises(ConfigError, match="greater than the derived max_model_len"):
        await too_long.start()
    with pytest.raises(errors.Unavailable):
        too_long.models()


async def test_guided_backend_choice(model_dir: str, control: Any) -> None:
    await started(model_dir, options={"guided_decoding_backend": "guidance"})
    assert control.engine_args[-1].structured_outputs_config.backend == "guidance"
    with pytest.raises(ConfigError, match="guided_decoding_backend"):
        VllmExecutor.from_config(executor_config(model_dir, options={"guided_decoding_backend": "nope"}))
    off = await started(model_dir, options={"guided_decoding_backend": None})
    assert off.models()[0].capabilities.guided == ()


async def test_skip_tokenizer_init_serves_token_ids(model_dir: str, control: Any) -> None:
    executor = await started(model_dir, options={"skip_tokenizer_init": True, "load_format": "dummy"})
    caps = executor.models()[0].capabilities
    assert not caps.tokenize and not caps.chat_template and caps.guided == ()
    deltas = await collect(executor, req(prompt=Prompt(token_ids=(5, 6, 7))))
    assert [t for d in deltas for t in d.token_ids] == [5, 6, 7, 2] and all(d.text == "" for d in deltas)
    assert control.submissions[-1]["params"].detokenize is False
    for request, field in [(req("text"), "text"), (req(stopping=StoppingCriteria(stop=("x",))), "stopping.stop"),
                           (req(prompt=Prompt(token_ids=(5,)), guided=GuidedDecoding(regex="a")), "guided.regex")]:
        with pytest.raises(errors.Unimplemented) as err:
            await collect(executor, request)
        assert err.value.field == field
    with pytest.raises(errors.Unimplemented):
        await executor.tokenize("tiny-llama", text="x")
