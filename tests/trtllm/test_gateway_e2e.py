"""The trtllm executor behind the real gRPC server on loopback: streaming, cancel, Abort, deadlines, model info, LoRA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway_testing import poll, running, target
from tensorrt_llm import _fake
from trtllm_helpers import executor_config, executor_section, write_adapter, write_model

from trt_gateway.executors.trtllm import TrtllmExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc


@asynccontextmanager
async def gateway(model: str, **section: Any) -> AsyncIterator[tuple[TrtllmExecutor, pb_grpc.GatewayStub]]:
    executor = TrtllmExecutor.from_config(executor_config(model, **section))
    # One chunk per executor delta: these tests look at how engine steps map to deltas, which the server's
    # coalescing of lagging streams (tested in tests/server) would otherwise blur.
    server_section = {"stream_coalesce_tokens": 1}
    async with running(engine=executor, server=server_section, executor=executor_section(model, **section)) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield executor, pb_grpc.GatewayStub(channel)


def long(request_id: str, **kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id=request_id, text="abcdefgh",
                              stopping=pb.StoppingCriteria(max_tokens=500, ignore_eos=True), **kwargs)


async def test_stream_forwards_multi_token_steps(model_dir: str, control: Any) -> None:
    control.script = [_fake.encode("Hi "), _fake.encode("there"), [*_fake.encode("!"), _fake.EOS]]
    async with gateway(model_dir) as (_, stub):
        chunks = [c async for c in stub.GenerateStream(pb.GenerateRequest(text="hello"))]
    assert [c.text for c in chunks] == ["Hi ", "there", "!"]
    assert [len(c.token_ids) for c in chunks] == [3, 5, 1]
    last = chunks[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP_TOKEN
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 9)


async def test_client_cancel_aborts_the_tensorrt_llm_request(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.01
    async with gateway(model_dir) as (executor, stub):
        call = stub.GenerateStream(long("c-1"))
        await call.__aiter__().__anext__()
        call.cancel()
        assert await poll(lambda: control.abort_calls == [1])  # RequestOutput.abort() of the engine's request 1
        assert await poll(lambda: not executor._requests)
        assert control.aborted == [1]


async def test_deadline_aborts_the_tensorrt_llm_request(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.01
    async with gateway(model_dir) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.GenerateStream(long("d-1"), timeout=0.2):
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await poll(lambda: control.abort_calls == [1])


async def test_abort_rpc_ends_the_stream_cancelled(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.01
    async with gateway(model_dir) as (_, stub):
        call = stub.GenerateStream(long("a-1"))
        it = call.__aiter__()
        await it.__anext__()
        assert (await stub.Abort(pb.AbortRequest(request_id="a-1"))).found is True
        rest = [c async for c in it]
        assert rest[-1].finish_reason == pb.FINISH_REASON_CANCELLED and rest[-1].usage.completion_tokens < 500
        assert await call.code() == grpc.StatusCode.OK
        assert control.abort_calls == [1]


async def test_model_info_reports_speculation(model_dir: str, tmp_path: Path) -> None:
    draft = write_model(tmp_path / "eagle3-draft")
    spec = {"decoding_type": "Eagle3", "max_draft_len": 4, "speculative_model_dir": draft}
    async with gateway(model_dir, options={"speculative": spec, "guided_decoding_backend": "xgrammar"}) as (_, stub):
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        assert (info.name, info.executor) == ("tiny-llama", "trtllm")
        assert (info.capabilities.speculative, info.capabilities.num_draft_tokens) == ("eagle3", 4)
        assert list(info.capabilities.guided) == ["json_schema", "regex", "grammar", "choice"]
        # a field TensorRT-LLM cannot honour per request reaches the executor and comes back UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="x", speculative=pb.SpeculativeOptions(disable=True)))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert ("error-field", "speculative.disable") in tuple(err.value.trailing_metadata() or ())


async def test_logit_bias_is_unimplemented_over_grpc(model_dir: str) -> None:
    async with gateway(model_dir) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="x", sampling=pb.SamplingParams(logit_bias={5: 1.0})))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "logit_bias" in (err.value.details() or "")


async def test_lora_over_grpc(model_dir: str, tmp_path: Path, control: Any) -> None:
    root = tmp_path / "adapters"
    write_adapter(root, "sql")
    write_adapter(root, "chat", r=4)
    lora = {"adapter_roots": [str(root)], "adapters": {"sql": "sql"}}
    async with gateway(model_dir, lora=lora) as (_, stub):
        listed = await stub.ListAdapters(pb.ListAdaptersRequest())
        assert [a.name for a in listed.adapters] == ["sql"]  # preloaded by the server at start-up
        loaded = await stub.LoadAdapter(pb.LoadAdapterRequest(name="chat", path="chat"))
        assert (loaded.rank, loaded.residency) == (4, pb.RESIDENCY_DISK)
        out = await stub.Generate(pb.GenerateRequest(text="hey", adapter="chat"))
        assert out.outputs[0].text == "hey"
        lora_request = control.submissions[-1]["lora_request"]
        assert (lora_request.lora_name, lora_request.lora_int_id) == ("chat", 2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.LoadAdapter(pb.LoadAdapterRequest(name="evil", path="../../etc"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="chat"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="hey", adapter="chat"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_n_greater_than_one_fans_out(model_dir: str, control: Any) -> None:
    async with gateway(model_dir) as (_, stub):
        out = await stub.Generate(pb.GenerateRequest(text="yo", n=3, sampling=pb.SamplingParams(seed=5)))
    assert [o.text for o in out.outputs] == ["yo"] * 3
    assert sorted(s["sampling_params"].seed for s in control.submissions) == [5, 6, 7]
    assert all(s["sampling_params"].n == 1 for s in control.submissions)


async def test_concurrent_streams_do_not_mix(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.002
    async with gateway(model_dir) as (_, stub):
        outs = await asyncio.gather(*(stub.Generate(pb.GenerateRequest(text=t)) for t in ("one", "two", "three")))
    assert [o.outputs[0].text for o in outs] == ["one", "two", "three"]


async def test_iteration_stats_reach_the_servers_metrics_registry(model_dir: str, control: Any) -> None:
    executor = TrtllmExecutor.from_config(executor_config(model_dir, options={"stats_interval_s": 0.01}))
    async with running(engine=executor, executor=executor_section(model_dir)) as server:
        names = lambda: {m.name for m in server.metrics.registry.collect()}  # noqa: E731
        assert await poll(lambda: any(n.startswith("trt_gateway_trtllm_") for n in names()))
