"""End to end with LoRA: the real gRPC server, the native executor, the demo model and the demo "uppercase" adapter.

- Two streams at once, one with the adapter and one without: each equals what HF transformers + PEFT generate.
- LoadAdapter / ListAdapters / UnloadAdapter while requests stream (unload of an adapter in use is refused).
- Every bad adapter -> INVALID_ARGUMENT with the reason (or NOT_FOUND / ALREADY_EXISTS), and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import torch
from gateway_testing import poll, running, target

from trt_gateway.config import LoraConfig
from trt_gateway.executors.native import DEMO_MODEL, NativeExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.types import Residency
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

DEMO_ADAPTERS = DEMO_MODEL.parent / "adapters"
UPPERCASE = DEMO_ADAPTERS / "uppercase"
PROMPTS = ["The for statement", "A list is"]
MAX_TOKENS = 20

pytestmark = pytest.mark.skipif(not (UPPERCASE / "adapter_model.safetensors").is_file(),
                                reason="demo adapter not trained (scripts/train_demo_adapter.py)")


@pytest.fixture(scope="module")
def references() -> dict[str, torch.nn.Module]:
    """The demo model in float32 (the engine's CPU dtype) without and with the adapter, as PEFT runs it."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(DEMO_MODEL), dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(DEMO_MODEL), dtype=torch.float32),
                                      str(UPPERCASE)).eval()
    return {"": base, "uppercase": tuned}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    lora = {"adapter_roots": [str(DEMO_ADAPTERS), str(tmp_path)], "adapters": {"uppercase": str(UPPERCASE)},
            "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 16}
    executor = NativeExecutor(DEMO_MODEL, options={"max_num_seqs": 8, "max_num_batched_tokens": 128},
                              lora=LoraConfig(**{**lora, "adapter_roots": tuple(lora["adapter_roots"])}))
    async with running(executor, executor={"lora": lora}) as srv:
        yield srv


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(target(server)) as channel:
        yield pb_grpc.GatewayStub(channel)


def greedy(text: str, adapter: str = "", max_tokens: int = MAX_TOKENS) -> pb.GenerateRequest:
    return pb.GenerateRequest(text=text, adapter=adapter, sampling=pb.SamplingParams(temperature=0.0),
                              stopping=pb.StoppingCriteria(max_tokens=max_tokens))


async def stream_ids(stub, request) -> tuple[list[int], str, pb.GenerateStreamResponse]:
    ids, text, last = [], "", None
    async for chunk in stub.GenerateStream(request):
        ids += chunk.token_ids
        text += chunk.text
        last = chunk
    return ids, text, last


@torch.inference_mode()
def reference(model: torch.nn.Module, prompt_ids: list[int], max_tokens: int = MAX_TOKENS) -> list[int]:
    out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_tokens, do_sample=False)
    return out[0, len(prompt_ids) :].tolist()


async def test_two_concurrent_streams_with_and_without_the_adapter_equal_peft(server, stub, references) -> None:
    for prompt in PROMPTS:
        (tuned, tuned_text, tuned_last), (plain, plain_text, plain_last) = await asyncio.gather(
            stream_ids(stub, greedy(prompt, "uppercase")), stream_ids(stub, greedy(prompt))
        )
        prompt_ids = list((await stub.Tokenize(pb.TokenizeRequest(text=prompt))).token_ids)
        assert tuned == reference(references["uppercase"], prompt_ids), f"{prompt!r} with the adapter"
        assert plain == reference(references[""], prompt_ids), f"{prompt!r} without the adapter"
        assert tuned_last.usage.adapter == "uppercase" and plain_last.usage.adapter == ""
        letters = [c for c in tuned_text if c.isalpha()]
        assert sum(c.isupper() for c in letters) > 0.8 * len(letters), tuned_text  # the visible effect
        assert sum(c.isupper() for c in plain_text) < 0.5 * sum(c.isalpha() for c in plain_text), plain_text
    sample = server.metrics.registry.get_sample_value
    assert sample("trt_gateway_adapter_requests_total", {"model": "demo", "adapter": "uppercase"}) == len(PROMPTS)
    assert sample("trt_gateway_adapter_completion_tokens_total", {"model": "demo", "adapter": "uppercase"}) > 0
    assert sample("trt_gateway_adapter_requests_total", {"model": "demo", "adapter": ""}) == len(PROMPTS)


async def test_lifecycle_under_concurrent_traffic(server, stub, tmp_path) -> None:
    shutil.copytree(UPPERCASE, tmp_path / "copy")
    listed = {a.name: a for a in (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters}
    assert set(listed) == {"uppercase"} and listed["uppercase"].rank > 0 and listed["uppercase"].model == "demo"
    solo = (await stub.Generate(greedy(PROMPTS[0], "uppercase"))).outputs[0].token_ids

    traffic = [asyncio.create_task(stream_ids(stub, greedy(p, a, max_tokens=48)))
               for p in PROMPTS for a in ("uppercase", "")]
    engine_lora = server.executor.front.engine.lora
    assert await poll(lambda: engine_lora.info("uppercase").active_requests > 0, timeout=30)  # traffic is running
    info = await stub.LoadAdapter(pb.LoadAdapterRequest(name="copy", path=str(tmp_path / "copy")))
    assert info.name == "copy" and info.residency == pb.RESIDENCY_CPU
    copy_out = (await stub.Generate(greedy(PROMPTS[0], "copy"))).outputs[0].token_ids
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="uppercase"))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "in use" in busy.value.details()
    await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="copy"))
    results = await asyncio.gather(*traffic)
    assert all(len(ids) > 0 for ids, _, _ in results)
    assert list(copy_out) == list(solo)  # same weights under another name: same tokens

    assert engine_lora.info("uppercase").active_requests == 0
    assert engine_lora.info("uppercase").residency is Residency.GPU
    await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="uppercase"))
    assert (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters == []
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.Generate(greedy(PROMPTS[0], "uppercase"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.LoadAdapter(pb.LoadAdapterRequest(name="uppercase", path=str(UPPERCASE)))
    assert (await stub.Generate(greedy(PROMPTS[0], "uppercase"))).outputs[0].token_ids == solo


def bad_adapters(root: Path) -> dict[str, str]:
    """name -> the reason the server must give, each a mutation of the demo adapter."""
    from safetensors.torch import load_file, save_file

    def copy(name: str) -> Path:
        shutil.copytree(UPPERCASE, root / name)
        return root / name

    def edit_config(name: str, **changes) -> None:
        file = copy(name) / "adapter_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))

    edit_config("rank-over-limit", r=32)
    edit_config("unknown-module", target_modules=["lm_head"])
    edit_config("not-lora", peft_type="PREFIX_TUNING")
    (copy("bad-json") / "adapter_config.json").write_text("{not json")
    (copy("no-weights") / "adapter_model.safetensors").unlink()
    (copy("no-config") / "adapter_config.json").unlink()
    rank = json.loads((UPPERCASE / "adapter_config.json").read_text())["r"]
    tensors = load_file(str(UPPERCASE / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"  # [rank, hidden 256]
    save_file({**tensors, key: tensors[key][:, :100].contiguous()}, str(copy("wrong-shape") / "adapter_model.safetensors"))
    return {
        "rank-over-limit": "exceeds the server's max_lora_rank 16",
        "unknown-module": "target_modules names 1 unknown module(s)",
        "not-lora": "peft_type is not 'LORA'",
        "bad-json": "not valid JSON",
        "no-weights": "adapter_model.safetensors is missing",
        "no-config": "adapter_config.json is missing",
        "wrong-shape": f"has shape [{rank}, 100], expected [{rank}, 256]",
    }


async def test_bad_adapters_are_refused_and_the_server_keeps_serving(server, stub, tmp_path) -> None:
    before = (await stub.Generate(greedy(PROMPTS[1]))).outputs[0].token_ids
    for name, reason in bad_adapters(tmp_path).items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.LoadAdapter(pb.LoadAdapterRequest(name=name, path=str(tmp_path / name)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert reason in info.value.details(), f"{name}: {info.value.details()}"
    refusals = [  # (name, path, code): path escapes, a path outside the roots, a bad name, a taken name
        ("escape", str(tmp_path / ".." / "x"), grpc.StatusCode.INVALID_ARGUMENT),
        ("outside", str(DEMO_MODEL), grpc.StatusCode.INVALID_ARGUMENT),
        ("bad name!", str(UPPERCASE), grpc.StatusCode.INVALID_ARGUMENT),
        ("uppercase", str(tmp_path / "wrong-shape"), grpc.StatusCode.ALREADY_EXISTS),
    ]
    for name, path, code in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.LoadAdapter(pb.LoadAdapterRequest(name=name, path=path))
        assert info.value.code() == code, name
    for call in (stub.Generate(greedy(PROMPTS[0], "never-loaded")),
                 stub.UnloadAdapter(pb.UnloadAdapterRequest(name="never-loaded"))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert [a.name for a in (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters] == ["uppercase"]
    assert (await stub.Generate(greedy(PROMPTS[1]))).outputs[0].token_ids == before
