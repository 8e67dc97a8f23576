"""Where a decode step's time goes: host phases, GPU kernels, and the gap between them. Prints JSON.

For each batch size, the engine (dummy weights of the given architecture, default Llama-3-8B) first prefills that
many prompts, then runs decode-only steps, timed three ways:
- wall time per `engine.step()` (synchronised), the number that decides tokens/s;
- the host phases inside it (`scheduler.schedule`, `model_runner.launch` split into input layout, forward + logits
  and sampling, `model_runner.collect` (the device-to-host copy), and `scheduler.postprocess`), each timed with a
  synchronise before and after so GPU work is charged to the phase that launched it (those synchronisations also
  stop async scheduling from overlapping anything: the plain step time is measured separately);
- torch.profiler's per-kernel CUDA time for a few steps: the GPU-busy time per step and the top kernels.

    python benchmarks/engine_profile.py --batch-sizes 1,64,256        # on the GPU (about a minute)
    python benchmarks/engine_profile.py --tiny --device cpu --batch-sizes 1,4

Nothing here asserts anything; the numbers say what to optimise next.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

LLAMA3_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "eos_token_id": 128001, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
TINY: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 1024,
    "eos_token_id": 2,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="timed decode steps per batch size")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 2-layer toy config (CPU smoke runs)")
    p.add_argument("--cuda-graph-max-batch", type=int, default=1024)  # the engine's default
    p.add_argument("--no-kernels", action="store_true", help="the plain torch paths (no Triton, no graphs)")
    p.add_argument("--quantization", default="", choices=("", "fp8"), help="'fp8': FP8 weights (Hopper GPUs)")
    p.add_argument(
        "--graphed-kernels",
        action="store_true",
        help="profile the graphed steps themselves (CUPTI reports the kernels of a graph replay on recent CUDA) "
        "instead of eager steps of the same batch",
    )
    p.add_argument("--top", type=int, default=12, help="kernels listed per batch size")
    return p.parse_args()


class PhaseTimer:
    """Wraps methods so each call's synchronised wall time adds to its phase."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.enabled = False

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Any, phase: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            self.sync()
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.totals[phase] += time.perf_counter() - began

        return call

    def wrap(self, obj: Any, name: str, phase: str) -> None:
        setattr(obj, name, self.timed(getattr(obj, name), phase))

    def wrap_callable(self, obj: Any, name: str, phase: str) -> None:
        """For an attribute that is called (`runner.sampler(...)`): dunder calls bypass instance attributes."""
        inner = getattr(obj, name)
        call = self.timed(inner, phase)

        class Timed:
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return call(*args, **kwargs)

            def __getattr__(self, attr: str) -> Any:
                return getattr(inner, attr)

        setattr(obj, name, Timed())


def request(i: int, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"r{i}", model="m", prompt=Prompt(), sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
    )


def profile_batch(engine: LLMEngine, batch: int, args: argparse.Namespace, timer: PhaseTimer) -> dict[str, Any]:
    g = torch.Generator().manual_seed(batch)
    vocab = engine.vocab_size
    total_steps = 2 * args.steps + 2 * args.profile_steps + 4
    for i in range(batch):
        prompt = torch.randint(min(1000, vocab // 4), vocab - min(1000, vocab // 4), (args.input_len,), generator=g)
        engine.add_request(request(i, total_steps + 2), prompt.tolist())
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(2):  # warm
        engine.step()
    walls = []
    timer.totals.clear()
    timer.enabled = True
    for _ in range(args.steps):
        timer.sync()
        began = time.perf_counter()
        engine.step()
        timer.sync()
        walls.append(time.perf_counter() - began)
    timer.enabled = False
    phases = {k: round(v / args.steps * 1e3, 3) for k, v in sorted(timer.totals.items())}
    walls_plain = []
    for _ in range(args.steps):  # again without the phase syncs: the real step time
        timer.sync()
        began = time.perf_counter()
        engine.step()
        timer.sync()
        walls_plain.append(time.perf_counter() - began)
    kernels: dict[str, Any] = {}
    if engine.device.type == "cuda" and args.profile_steps:
        # Kernels inside a graph replay are invisible to the profiler: profile eager steps of the same batch (their
        # GPU time is the graph's plus launch gaps), and report the graphed step's wall time beside it.
        runner = engine.model_runner
        graphs, runner.graphs = runner.graphs, (runner.graphs if args.graphed_kernels else None)
        kernels = kernel_table(engine, args)
        runner.graphs = graphs
    for seq in list(engine.scheduler.running) + list(engine.scheduler.waiting):
        engine.abort(seq.request_id)
    while engine.has_unfinished():
        engine.step()
    step_ms = statistics.median(walls_plain) * 1e3
    return {
        "batch": batch,
        "step_ms_median": round(step_ms, 3),
        "decode_tok_s": round(batch / step_ms * 1e3, 1),
        "step_ms_with_phase_syncs": round(statistics.median(walls) * 1e3, 3),
        "phases_ms_per_step": phases,
        **kernels,
    }


def kernel_table(engine: LLMEngine, args: argparse.Namespace) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    engine.step()  # the eager path's first step compiles nothing new, but keep it out of the table
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        for _ in range(args.profile_steps):
            engine.step()
        torch.cuda.synchronize()
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for event in prof.events():
        time_us = getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0)
        if time_us <= 0 or getattr(event, "device_type", None) is None or "CUDA" not in str(event.device_type):
            continue
        entry = per_kernel[event.name]
        entry[0] += time_us
        entry[1] += 1
    rows = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])
    busy_us = sum(t for t, _ in per_kernel.values()) / args.profile_steps
    how = "graphed" if args.graphed_kernels else "eager"
    return {
        f"{how}_gpu_busy_ms_per_step": round(busy_us / 1e3, 3),
        f"{how}_kernels_per_step": round(sum(c for _, c in per_kernel.values()) / args.profile_steps, 1),
        f"top_kernels_{how}": [
            {"kernel": name[:80], "ms_per_step": round(t / args.profile_steps / 1e3, 3), "calls_per_step": c / args.profile_steps}
            for name, (t, c) in rows[: args.top]
        ],
    }


def main() -> None:
    args = parse_args()
    model_dir = Path(tempfile.mkdtemp(prefix="engine-profile-"))
    (model_dir / "config.json").write_text(json.dumps(TINY if args.tiny else LLAMA3_8B))
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    began = time.perf_counter()
    engine = LLMEngine(
        EngineConfig(
            model=str(model_dir), load_format="dummy", device=args.device,
            dtype="bfloat16" if args.device.startswith("cuda") else "float32",
            max_num_seqs=max(sizes), max_num_batched_tokens=8192, max_model_len=1024, enable_prefix_caching=False,
            cuda_graph_max_batch=args.cuda_graph_max_batch, kernels=not args.no_kernels,
            quantization=args.quantization,
        )
    )
    start_s = time.perf_counter() - began
    timer = PhaseTimer(engine.device)
    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(engine.scheduler, "postprocess", "postprocess")
    runner = engine.model_runner
    timer.wrap(runner, "prepare", "run.layout")
    if runner.graphs is not None:
        timer.wrap(runner.graphs, "run", "run.graph_replay")
    timer.wrap(runner.model, "forward", "run.eager_forward")
    timer.wrap(runner.model, "compute_logits", "run.eager_logits")
    timer.wrap_callable(runner, "sampler", "run.sample")
    timer.wrap(runner, "launch", "run.launch (total)")
    timer.wrap(runner, "collect", "run.collect")
    results = [profile_batch(engine, b, args, timer) for b in sizes]
    print(json.dumps({
        "device": torch.cuda.get_device_name() if engine.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "kernels": engine.use_kernels,
        "quantization": args.quantization or "none",
        "cuda_graphs": runner.graphs.describe() if runner.graphs is not None else "off",
        "engine_start_s": round(start_s, 1),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
