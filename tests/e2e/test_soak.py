"""A bounded soak: thousands of streamed requests through the real gateway and engine, with random client cancels,
deadlines, Abort RPCs, LoRA adapters (two and none, mixed in every batch), n > 1 and sampling settings, at high
concurrency. Afterwards nothing may have leaked: no KV block, no admission slot, no registry entry, no adapter pin,
no asyncio task, no thread; and memory must be flat."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from pathlib import Path

import grpc
import torch
from gateway_testing import poll, running, target

from trt_gateway.config import LoraConfig
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

REQUESTS = 1500
CONCURRENCY = 48
WORDS = "the for statement is used to iterate over a sequence list tuple string dictionary".split()


def own_threads() -> int:
    """Threads other than asyncio's default-executor pool (bounded, reused; adapter reads run there) and tqdm's monitor."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith(("asyncio_", "tqdm_monitor")))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


ADAPTERS = ("", "s1", "s2")  # the base model and two LoRA adapters share every batch


def make_adapters(base: Path, root: Path) -> dict[str, str]:
    """Two random PEFT adapters for the tiny model (B is random too, so they change the output)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    out = {}
    for seed, name in enumerate(ADAPTERS[1:]):
        torch.manual_seed(seed)
        model = get_peft_model(
            LlamaForCausalLM.from_pretrained(base),
            PeftLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
        )
        model.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


async def one(stub: pb_grpc.GatewayStub, rng: random.Random, i: int, outcomes: dict[str, int]) -> None:
    request = pb.GenerateRequest(
        request_id=f"soak-{i}",
        adapter=rng.choice(ADAPTERS),
        text=" ".join(rng.choices(WORDS, k=rng.randint(1, 40))),
        sampling=pb.SamplingParams(temperature=rng.choice([0.0, 0.7, 1.0]), top_k=rng.choice([0, 20]), seed=i),
        stopping=pb.StoppingCriteria(max_tokens=rng.randint(1, 24), ignore_eos=rng.random() < 0.5),
        n=2 if rng.random() < 0.05 else 1,
        priority=rng.randint(-2, 2),
    )
    action = rng.random()
    timeout = rng.uniform(0.01, 0.3) if action < 0.15 else 30.0
    call = stub.GenerateStream(request, timeout=timeout)
    try:
        if action > 0.9:  # somebody else aborts it by id
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.05), lambda: asyncio.ensure_future(
                stub.Abort(pb.AbortRequest(request_id=f"soak-{i}"))))
        read = 0
        async for _chunk in call:
            read += 1
            if 0.15 <= action < 0.4 and read >= rng.randint(1, 3):
                call.cancel()  # the client walks away mid-stream
                outcomes["client_cancelled"] += 1
                return
        outcomes["completed"] += 1
    except grpc.aio.AioRpcError as exc:
        outcomes[exc.code().name] += 1


async def test_soak_leaks_nothing(tiny, tmp_path: Path) -> None:
    lora = LoraConfig(adapter_roots=(str(tmp_path),), adapters=make_adapters(tiny[0], tmp_path), max_loras=2)
    options = {"max_num_seqs": 16, "max_num_batched_tokens": 256}
    executor = NativeExecutor(tiny[0], options=options, lora=lora)
    admission = {"max_inflight": 32, "max_queued": 4096}
    lora_section = {"adapter_roots": list(lora.adapter_roots), "adapters": dict(lora.adapters), "max_loras": 2}
    async with running(executor, admission=admission, executor={"lora": lora_section}) as server:
        engine = executor.front.engine
        async with grpc.aio.insecure_channel(target(server)) as channel:
            stub = pb_grpc.GatewayStub(channel)
            rng = random.Random(1234)
            outcomes = {"completed": 0, "client_cancelled": 0, "CANCELLED": 0, "DEADLINE_EXCEEDED": 0}
            tasks_before = len(asyncio.all_tasks())
            sem = asyncio.Semaphore(CONCURRENCY)

            async def bounded(i: int) -> None:
                async with sem:
                    await one(stub, rng, i, outcomes)

            await asyncio.gather(*(bounded(i) for i in range(300)))  # warm-up: caches, allocator and thread pools
            gc.collect()
            threads_warm = own_threads()
            rss_warm = rss_mb()
            await asyncio.gather(*(bounded(i) for i in range(300, REQUESTS)))
            gc.collect()
            rss_end = rss_mb()

            assert sum(outcomes.values()) == REQUESTS
            assert outcomes["completed"] > REQUESTS // 2, outcomes
            assert outcomes["DEADLINE_EXCEEDED"] > 0 and outcomes["client_cancelled"] > 0, outcomes
            # Everything the requests held is back, within a few engine steps.
            assert await poll(lambda: engine.num_free_blocks == engine.num_total_blocks, timeout=5), (
                engine.num_free_blocks, engine.num_total_blocks)
            assert not engine.has_unfinished()
            assert all(a.active_requests == 0 for a in executor.list_adapters(executor.models()[0].name))
            assert len(server.servicer.registry) == 0
            assert server.servicer.admission.inflight == 0 and server.servicer.admission.queued == 0
            assert await poll(lambda: len(asyncio.all_tasks()) <= tasks_before, timeout=5), (
                len(asyncio.all_tasks()), tasks_before)
            assert own_threads() <= threads_warm, sorted(t.name for t in threading.enumerate())
            assert rss_end - rss_warm < 64, f"RSS grew {rss_end - rss_warm:.1f} MB over {REQUESTS - 300} requests"
            print(f"soak: {outcomes}, RSS {rss_warm:.0f} -> {rss_end:.0f} MB")
        # A normal request still works afterwards.
        async with grpc.aio.insecure_channel(target(server)) as channel:
            done = await pb_grpc.GatewayStub(channel).Generate(pb.GenerateRequest(text="after the soak"))
            assert done.outputs[0].finish_reason != pb.FINISH_REASON_UNSPECIFIED
