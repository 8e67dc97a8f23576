"""The vllm executor behind the real gRPC server on loopback: streaming, client cancel, deadline, Abort, model info,
guided decoding, LoRA, UNIMPLEMENTED fields and engine statistics on the server's registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway_testing import poll, running, target
from vllm import _fake
from vllm_helpers import executor_config, executor_section, write_adapter, write_model

from trt_gateway.executors.vllm import VllmExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

BOTH = pytest.mark.parametrize("final_output", [True, False], ids=["vllm>=0.10.1", "vllm<0.10.1"])


@asynccontextmanager
async def gateway(model: str, **section: Any) -> AsyncIterator[tuple[VllmExecutor, pb_grpc.GatewayStub, Any]]:
    executor = VllmExecutor.from_config(executor_config(model, **section))
    async with running(engine=executor, executor=executor_section(model, **section)) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield executor, pb_grpc.GatewayStub(channel), server


def long(request_id: str, **kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id=request_id, text="abcdefgh",
                              stopping=pb.StoppingCriteria(max_tokens=500, ignore_eos=True), **kwargs)


def engine_aborted(control: Any, rid: str) -> bool:
    return any(i.startswith(f"{rid}-") for i in control.engine_aborted)


async def test_stream_forwards_multi_token_steps(model_dir: str, control: Any) -> None:
    control.script = [_fake.encode("Hi "), _fake.encode("there"), [*_fake.encode("!"), _fake.EOS]]
    async with gateway(model_dir) as (_, stub, _server):
        chunks = [c async for c in stub.GenerateStream(pb.GenerateRequest(text="hello"))]
    assert "".join(c.text for c in chunks) == "Hi there!"
    assert sum(len(c.token_ids) for c in chunks) == 10
    last = chunks[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP_TOKEN and last.matched_stop_token_id == _fake.EOS
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 10)


async def test_client_cancel_aborts_the_vllm_request(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.01
    async with gateway(model_dir) as (executor, stub, _server):
        call = stub.GenerateStream(long("c-1"))
        await call.__aiter__().__anext__()
        call.cancel()
        assert await poll(lambda: engine_aborted(control, "c-1"))
        assert await poll(lambda: not executor._requests)


async def test_deadline_aborts_the_vllm_request(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.01
    async with gateway(model_dir) as (_, stub, _server):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.GenerateStream(long("d-1"), timeout=0.3):
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await poll(lambda: engine_aborted(control, "d-1"))


@BOTH
async def test_abort_rpc_ends_the_stream_cancelled(model_dir: str, control: Any, final_output: bool) -> None:
    control.step_delay_s = 0.01
    control.final_output_on_abort = final_output
    async with gateway(model_dir) as (executor, stub, _server):
        call = stub.GenerateStream(long("a-1"))
        it = call.__aiter__()
        await it.__anext__()
        assert (await stub.Abort(pb.AbortRequest(request_id="a-1"))).found is True

        async def drain() -> list[Any]:
            return [c async for c in it]

        rest = await asyncio.wait_for(drain(), 30)  # a bound for a hang (the stream ends at once), not a timing
        assert rest[-1].finish_reason == pb.FINISH_REASON_CANCELLED and rest[-1].usage.completion_tokens < 500
        assert await call.code() == grpc.StatusCode.OK
        assert engine_aborted(control, "a-1") and not executor._requests
        assert (await stub.Abort(pb.AbortRequest(request_id="a-1"))).found is False


async def test_model_info_and_per_request_speculation(model_dir: str, tmp_path: Path) -> None:
    draft = write_model(tmp_path / "eagle3-draft")
    spec = {"method": "eagle3", "model": draft, "num_speculative_tokens": 4}
    async with gateway(model_dir, options={"speculative": spec}) as (_, stub, _server):
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        assert (info.name, info.executor) == ("tiny-llama", "vllm")
        assert (info.capabilities.speculative, info.capabilities.num_draft_tokens) == ("eagle3", 4)
        assert list(info.capabilities.guided) == ["json_schema", "regex", "grammar", "choice"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="x", speculative=pb.SpeculativeOptions(disable=True)))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert ("error-field", "speculative.disable") in tuple(err.value.trailing_metadata() or ())


async def test_guided_choice_and_logit_bias_over_grpc(model_dir: str, control: Any) -> None:
    async with gateway(model_dir) as (_, stub, _server):
        await stub.Generate(pb.GenerateRequest(text="x", guided=pb.GuidedDecoding(choice=["yes", "no"]),
                                               sampling=pb.SamplingParams(logit_bias={5: 1.5})))
    params = control.submissions[-1]["params"]
    assert params.structured_outputs.choice == ["yes", "no"] and params.logit_bias == {5: 1.5}


async def test_invalid_prompt_is_invalid_argument(model_dir: str) -> None:
    async with gateway(model_dir, options={"max_model_len": 64}) as (_, stub, _server):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="x" * 100, stopping=pb.StoppingCriteria(max_tokens=8)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "maximum model length" in (err.value.details() or "")


async def test_lora_over_grpc(model_dir: str, tmp_path: Path, control: Any) -> None:
    root = tmp_path / "adapters"
    write_adapter(root, "sql")
    write_adapter(root, "chat", r=4)
    lora = {"adapter_roots": [str(root)], "adapters": {"sql": "sql"}, "max_lora_rank": 16}
    async with gateway(model_dir, lora=lora) as (_, stub, _server):
        listed = await stub.ListAdapters(pb.ListAdaptersRequest())
        assert [a.name for a in listed.adapters] == ["sql"]  # preloaded by the server at start-up
        loaded = await stub.LoadAdapter(pb.LoadAdapterRequest(name="chat", path="chat"))
        assert (loaded.rank, loaded.residency) == (4, pb.RESIDENCY_CPU)
        out = await stub.Generate(pb.GenerateRequest(text="hey", adapter="chat"))
        assert out.outputs[0].text == "hey" and out.usage.adapter == "chat"
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
    async with gateway(model_dir) as (_, stub, _server):
        out = await stub.Generate(pb.GenerateRequest(text="yo", n=3, sampling=pb.SamplingParams(seed=5)))
    assert [o.text for o in out.outputs] == ["yo"] * 3
    assert sorted(s["params"].seed for s in control.submissions) == [5, 6, 7]
    assert all(s["params"].n == 1 for s in control.submissions)


async def test_concurrent_streams_do_not_mix(model_dir: str, control: Any) -> None:
    control.step_delay_s = 0.002
    async with gateway(model_dir) as (_, stub, _server):
        outs = await asyncio.gather(*(stub.Generate(pb.GenerateRequest(text=t)) for t in ("one", "two", "three")))
    assert [o.outputs[0].text for o in outs] == ["one", "two", "three"]


async def test_engine_stats_reach_the_servers_metrics_registry(model_dir: str) -> None:
    async with gateway(model_dir) as (_, stub, server):
        await stub.Generate(pb.GenerateRequest(text="abc"))
        value = server.metrics.registry.get_sample_value("trt_gateway_vllm_generation_tokens_total")
        assert value is not None and value >= 4


async def test_engine_death_makes_the_server_not_serving(model_dir: str, control: Any) -> None:
    control.fail_after_steps = 1
    async with gateway(model_dir) as (executor, stub, server):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="abcdef"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await poll(lambda: server.engine_died)
