"""Host time of one decode step, per phase, on the CPU alone. Prints JSON.

At large batch the host work of a decode step (scheduling, input layout, bookkeeping) approaches the GPU's forward
time, and async scheduling can only hide it while it stays below. This times that host work without a GPU: a real
`LLMEngine` (tiny random model, device cpu) holds the sequences, but the model never runs; sampled tokens are made up,
which changes no host path a decode takes. Per batch size it times (median over steps, milliseconds):

- async steady state (what a saturated engine does per step): `schedule_next` (the step after the in-flight one),
  `prepare_placeholders` (`ModelRunner.prepare(placeholders=True)`: the input layout with ids still on the device),
  `postprocess` (append each sampled token, stop checks, prefix-cache publishing);
- the synchronous path: `schedule` and `prepare` (ids known);
- `layout_only`: `forward_batch.layout` on pre-built decode chunks, without the chunk building of `prepare`.

    python benchmarks/host_step_bench.py                       # batches 1,64,256,1024 (a minute or two)
    python benchmarks/host_step_bench.py --batch-sizes 1,4 --steps 3

Contexts start at --min-context..--max-context tokens (random per sequence); block_size 16 by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.forward_batch import Chunk, layout
from trt_gateway.engine.scheduler import SchedulerOutput
from trt_gateway.engine.sequence import SampledToken
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

TINY: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 2048,
    "eos_token_id": 2,
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,64,256,1024")
    p.add_argument("--steps", type=int, default=21, help="timed steps per phase and batch size")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--min-context", type=int, default=130)
    p.add_argument("--max-context", type=int, default=200, help="contexts then grow by about 2 x steps tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-prefix-caching", action="store_true", help="postprocess then publishes no blocks")
    return p.parse_args(argv)


def make_engine(args: argparse.Namespace, max_batch: int) -> LLMEngine:
    model_dir = Path(tempfile.mkdtemp(prefix="host-step-bench-"))
    (model_dir / "config.json").write_text(json.dumps(TINY))
    tokens = max(max_batch * (args.max_context + 4 * args.steps + 8), 512)
    return LLMEngine(
        EngineConfig(
            model=str(model_dir), load_format="dummy", device="cpu", dtype="float32", block_size=args.block_size,
            max_num_seqs=max_batch, max_num_batched_tokens=max(8192, max_batch), max_model_len=512,
            num_kv_blocks=tokens // args.block_size + max_batch + 8, cpu_threads=1,
            enable_prefix_caching=not args.no_prefix_caching,
        )
    )  # fmt: skip


def fill(engine: LLMEngine, batch: int, args: argparse.Namespace, rng: random.Random) -> None:
    """`batch` running sequences, every prompt computed (without running the model): the next step decodes all."""
    for i in range(batch):
        n = rng.randint(args.min_context, args.max_context)
        request = GenerateRequest(
            request_id=f"b{batch}-{i}", model="m", prompt=Prompt(), sampling=SamplingParams(temperature=0.0),
            stopping=StoppingCriteria(max_tokens=10 * args.steps + 16, ignore_eos=True),
        )  # fmt: skip
        engine.add_request(request, [rng.randrange(3, 500) for _ in range(n)])
    sched = engine.scheduler
    while sched.waiting or any(not s.is_decoding for s in sched.running):
        out = sched.schedule()
        sched.postprocess(out, fake_samples(out, rng))


def fake_samples(out: SchedulerOutput, rng: random.Random) -> dict[int, tuple[SampledToken, ...]]:
    return {item.seq.seq_id: (SampledToken(rng.randrange(3, 500)),) for item in out.scheduled if item.samples}


def timed(into: list[float], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    into.append(time.perf_counter() - began)
    return result


def bench_batch(engine: LLMEngine, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + batch)
    fill(engine, batch, args, rng)
    sched, runner = engine.scheduler, engine.model_runner
    times: dict[str, list[float]] = {k: [] for k in ("schedule_next", "prepare_placeholders", "postprocess")}
    # async steady state: prev is in flight; schedule and lay out the next one, then retire prev
    prev = sched.schedule()
    for _ in range(args.steps):
        nxt = timed(times["schedule_next"], sched.schedule_next, prev)
        assert nxt is not None and len(nxt.scheduled) == batch, "every sequence should keep decoding"
        timed(times["prepare_placeholders"], runner.prepare, nxt.scheduled, placeholders=True)
        samples = fake_samples(prev, rng)
        timed(times["postprocess"], sched.postprocess, prev, samples)
        prev = nxt
    sched.postprocess(prev, fake_samples(prev, rng))
    # the synchronous path
    times["schedule"], times["prepare"] = [], []
    for _ in range(args.steps):
        out = timed(times["schedule"], sched.schedule)
        timed(times["prepare"], runner.prepare, out.scheduled)
        sched.postprocess(out, fake_samples(out, rng))
    # the layout alone, on the chunks prepare(placeholders=True) would build
    out = sched.schedule()  # gives each sequence the block its next token needs
    chunks = [Chunk([0], item.start, item.seq.block_table, num_logits=1) for item in out.scheduled]
    times["layout_only"] = []
    for _ in range(args.steps):
        timed(times["layout_only"], layout, chunks, runner.block_size, runner.device)
    sched.postprocess(out, fake_samples(out, rng))
    contexts = [s.num_tokens for s in sched.running]
    for seq in list(sched.running):
        engine.abort(seq.request_id)
    engine.apply_pending()
    return {
        "batch": batch,
        "context_tokens": [min(contexts), max(contexts)],
        "median_ms": {k: round(statistics.median(v) * 1e3, 4) for k, v in times.items()},
        "async_step_host_ms": round(
            sum(statistics.median(times[k]) for k in ("schedule_next", "prepare_placeholders", "postprocess")) * 1e3, 4
        ),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    torch.set_num_threads(1)
    engine = make_engine(args, max(sizes))
    results = [bench_batch(engine, b, args) for b in sizes]
    print(json.dumps({
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "block_size": args.block_size, "steps": args.steps, "results": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
