"""The embedded engine against HF transformers, in one run on one GPU, printed as JSON with ratios.

Model: the Llama-3-8B architecture with random bf16 weights (only a config.json is written; the engine builds its
weights on the device with `load_format="dummy"`, HF with `from_config`), or a checkpoint given with --model-dir.
Prompts are random token ids from a seeded generator (ids in [1000, vocab - 1000)); every request is greedy and
ignores EOS, and the script checks that each produced exactly the tokens it asked for (a mismatch is reported in the
JSON, on stderr, and by exit code 1). Each phase runs in its own child process, so that each gets the whole GPU:

  engine     `trt_gateway.engine.LLMEngine` driven directly with token-id prompts (offline, like vLLM's
             `LLM.generate`), after a warm-up (start-up and warm-up times are reported apart):
             - batch 1: one request of --input-len prompt tokens and --itl-tokens output tokens, --repeats times;
               time to first token (submit to the step that returned it) and decode tok/s = 1 / inter-token
               latency, (t_last - t_first) / (N - 1) from per-step timestamps (prefill excluded); medians;
             - saturated: --requests requests of --input-len / --output-len all submitted at once: output tok/s;
             - each --concurrency level C: C requests kept in flight (the next submitted when one finishes) over
               min(--requests, C x --requests-per-slot) requests: output tok/s (C >= --requests: the saturated run).
  hf-static  HF `model.generate(input_ids [B, input_len], max_new_tokens=min_new_tokens=T, do_sample=False)` for
             each B in --hf-batch-sizes (T = --output-len, but --hf-b1-tokens at B = 1, because HF's batch 1 is
             ~11 tok/s on an H100): output tok/s = B x T / time; at B = 1 also the decode tok/s, (T - 1) / (t(T) -
             t(1)), the counterpart of the engine's batch-1 figure.
  hf-cb      HF continuous batching, `model.generate_batch(...)` over --hf-cb-requests requests of --input-len /
             --output-len: output tok/s over the generation window (first request created to last finished), and
             over the whole call (which includes HF's manager start-up and CUDA-graph warm-up).

Ratios: engine / HF at batch 1 (decode tok/s) and saturated (the engine's saturated figure against the best HF
figure of any phase), and the engine against vLLM 0.26.0 measured on the same H100 model earlier (157 tok/s at batch
1, 11,634 output tok/s for 1,024 x 128/128) and the goals (180 and 14,000): those are constants, labelled
"reference, not measured in this run"; they are comparable only for the default workload on an H100.

On the GPU (one device command may run 10 minutes; a phase per command when the whole run does not fit):

    python benchmarks/engine_bench.py --result-file $OUT/engine_bench.json                 # all, ~2.5 min on an H100
    python benchmarks/engine_bench.py --phases engine --result-file $OUT/engine.json
    python benchmarks/engine_bench.py --phases hf-static,hf-cb --result-file $OUT/hf.json
    python benchmarks/engine_bench.py --merge engine.json hf.json                           # one JSON, with ratios

On a CPU, as a smoke test only (tiny random model; the figures mean nothing):

    python benchmarks/engine_bench.py --device cpu --tiny --requests 8 --concurrency 1,4 --output-len 8

Nothing here asserts a speed; compare figures only between runs on the same machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `trt_gateway` importable from a plain checkout (the GPU machine installs nothing)
PHASES = ("engine", "hf-static", "hf-cb")
ENV_KEYS = ("gpu", "device", "torch", "transformers", "python", "host")
# Meta-Llama-3-8B's config.json (the architecture only; the weights are random).
LLAMA3_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu",
    "bos_token_id": 128000, "eos_token_id": 128001, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "attention_bias": False, "initializer_range": 0.02,
}  # fmt: skip
# A tiny Llama of the same shape family (GQA), for CPU smoke tests.
TINY: dict[str, Any] = {
    **LLAMA3_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 2048, "bos_token_id": 1,
    "eos_token_id": 2, "initializer_range": 0.15,
}  # fmt: skip
REFERENCE: dict[str, Any] = {
    "note": "reference, not measured in this run",
    "source": "issue 10: vLLM 0.26.0 on the same H100, Llama-3-8B architecture, random bf16 weights",
    "workload": "batch 1: decode tok/s; saturated: 1,024 requests x 128 input / 128 output tokens, ignore_eos",
    "vllm_batch1_decode_tok_s": 157.0,
    "vllm_saturated_output_tok_s": 11634.0,
    "goal_batch1_decode_tok_s": 180.0,
    "goal_saturated_output_tok_s": 14000.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--phase",
        choices=("all", *PHASES),
        default="all",
        help="'all' runs --phases, each in a child process, and merges them; one phase runs here",
    )
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases that 'all' runs, in order")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="merge result files of earlier runs (e.g. one per phase) into one JSON with ratios; no run",
    )
    p.add_argument(
        "--model-dir",
        default="",
        help="a Llama checkpoint directory (config.json, *.safetensors optional: without them the "
        "weights are random); default: a temporary directory with Meta-Llama-3-8B's config.json",
    )
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of the 8B (CPU smoke tests)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bfloat16", "float16", "float32"),
        help="auto: bfloat16 on CUDA, float32 on CPU (both the engine and HF)",
    )
    p.add_argument(
        "--quantization",
        default="",
        choices=("", "fp8"),
        help="engine: 'fp8' quantizes the decoder projections at load (Hopper GPUs; HF phases stay unquantized)",
    )
    p.add_argument(
        "--kv-cache-dtype", default="auto", choices=("auto", "fp8"), help="engine: 'fp8' stores the KV cache in FP8"
    )
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens of every request")
    p.add_argument("--output-len", type=int, default=128, help="output tokens of every throughput request")
    p.add_argument("--requests", type=int, default=1024, help="engine: requests of the saturated run")
    p.add_argument(
        "--concurrency",
        default="1,16,64,256,1024",
        help="engine: comma-separated in-flight levels (>= --requests: the saturated run)",
    )
    p.add_argument(
        "--requests-per-slot", type=int, default=4, help="engine: a level C runs min(--requests, C x this) requests"
    )
    p.add_argument("--itl-tokens", type=int, default=256, help="engine: output tokens of the batch-1 requests")
    p.add_argument("--repeats", type=int, default=3, help="engine: batch-1 measurements; medians are reported")
    p.add_argument(
        "--warmup-tokens",
        type=int,
        default=16,
        help="engine: output tokens of the warm-up batch (the largest level's size, all at once)",
    )
    p.add_argument("--max-num-seqs", type=int, default=0, help="engine: running batch (0: the largest level)")
    p.add_argument("--max-num-batched-tokens", type=int, default=8192, help="engine: tokens per step")
    p.add_argument("--max-model-len", type=int, default=2048, help="engine: prompt + output tokens of a sequence")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="engine: fraction of free memory")
    p.add_argument("--threads", type=int, default=0, help="CPU only: torch threads (0: torch's default)")
    p.add_argument(
        "--cuda-graph-max-batch", type=int, default=0, help="engine: largest decode batch in CUDA graphs (0: default)"
    )
    p.add_argument("--hf-batch-sizes", default="1,64,256", help="hf-static: comma-separated batch sizes")
    p.add_argument("--hf-b1-tokens", type=int, default=32, help="hf-static: output tokens at batch 1 (HF is slow)")
    p.add_argument("--hf-cb-requests", type=int, default=256, help="hf-cb: requests given to generate_batch")
    p.add_argument(
        "--hf-attn",
        default="sdpa",
        help="HF attn_implementation of the model (generate_batch may switch to a paged variant itself)",
    )
    p.add_argument(
        "--step-timeline",
        action="store_true",
        help="engine: also summarise the saturated run step by step (prefill-carrying against decode-only steps)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase-timeout-s", type=float, default=0.0, help="'all': kill a phase after this (0: never)")
    p.add_argument("--result-file", default="", help="also write the JSON here ('all' rewrites it after each phase)")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[engine_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def model_dir(args: argparse.Namespace) -> tuple[str, bool]:
    """(directory, whether this run made it and removes it)."""
    if args.model_dir:
        return str(args.model_dir), False
    path = Path(tempfile.mkdtemp(prefix="engine-bench-")) / ("llama-tiny" if args.tiny else "llama-3-8b-dummy")
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY if args.tiny else LLAMA3_8B))
    return str(path), True


def has_weights(model: str) -> bool:
    return any(Path(model).glob("*.safetensors"))


def model_config(model: str) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((Path(model) / "config.json").read_text())
    return cfg


def make_prompts(args: argparse.Namespace, vocab_size: int, count: int, salt: int = 0) -> list[list[int]]:
    lo, hi = (1000, vocab_size - 1000) if vocab_size >= 4000 else (3, vocab_size)
    rng = random.Random(args.seed * 1_000_003 + salt)
    return [[rng.randrange(lo, hi) for _ in range(args.input_len)] for _ in range(count)]


def resolve_device(args: argparse.Namespace) -> tuple[str, str]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return device, dtype


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "none (cpu)"
    return {
        "gpu": gpu,
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# -- phase: the embedded engine -----------------------------------------------------------------------------------


class EngineDriver:
    """Feeds an `LLMEngine` token-id prompts, keeping a number in flight; per-request token counts and times."""

    def __init__(self, engine: Any, device: str) -> None:
        self.engine = engine
        self.device = device
        self.failures: list[str] = []

    def run(self, prompts: list[list[int]], max_tokens: int, concurrency: int, tag: str) -> dict[str, Any]:
        from trt_gateway.types import FinishReason, GenerateRequest, Prompt, SamplingParams, StoppingCriteria

        engine = self.engine
        submitted: dict[str, float] = {}
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        counts: dict[str, int] = {}
        reasons: dict[str, str] = {}
        next_index = 0

        def submit() -> None:
            nonlocal next_index
            rid = f"{tag}-{next_index}"
            request = GenerateRequest(
                request_id=rid, model="bench", prompt=Prompt(), sampling=SamplingParams(temperature=0.0),
                stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
            )  # fmt: skip
            counts[rid] = 0
            submitted[rid] = time.perf_counter()
            engine.add_request(request, prompts[next_index])
            next_index += 1

        synchronize(self.device)
        start = time.perf_counter()
        while next_index < min(concurrency, len(prompts)):
            submit()
        while engine.has_unfinished():
            outputs = engine.step()
            now = time.perf_counter()
            for out in outputs:
                if out.new_token_ids:
                    counts[out.request_id] += len(out.new_token_ids)
                    first.setdefault(out.request_id, now)
                    last[out.request_id] = now
                if out.finish_reason is not None:
                    reasons[out.request_id] = out.finish_reason.value
                    if out.error is not None:
                        reasons[out.request_id] += f" ({out.error})"
                    if next_index < len(prompts):
                        submit()
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        bad = [
            f"{tag}: {rid}: {n} tokens (asked {max_tokens}), finish {reasons.get(rid)}"
            for rid, n in counts.items()
            if n != max_tokens or reasons.get(rid) != FinishReason.LENGTH.value
        ]
        if len(counts) != len(prompts):
            bad.append(f"{tag}: {len(counts)} of {len(prompts)} requests ran")
        for line in bad[:10]:
            log(f"TOKEN COUNT MISMATCH {line}")
        self.failures.extend(bad)
        tokens = sum(counts.values())
        return {
            "requests": len(prompts),
            "concurrency": min(concurrency, len(prompts)),
            "output_tokens": tokens,
            "elapsed_s": round(elapsed, 4),
            "output_tok_s": round(tokens / elapsed, 2),
            "exact": not bad,
            "_submitted": submitted,
            "_first": first,
            "_last": last,
        }


def record_steps(engine: Any) -> list[tuple[float, int, int]]:
    """(launch time, tokens, sequences) of every step the scheduler hands out from now on (async steps included)."""
    steps: list[tuple[float, int, int]] = []
    scheduler = engine.scheduler

    def recorded(inner: Any) -> Any:
        def wrapped(*a: Any, **kw: Any) -> Any:
            out = inner(*a, **kw)
            if out is not None and not out.is_empty:
                steps.append((time.perf_counter(), out.num_batched_tokens, len(out.scheduled)))
            return out

        return wrapped

    for name in ("schedule", "schedule_next"):
        setattr(scheduler, name, recorded(getattr(scheduler, name)))
    return steps


def summarise_steps(steps: list[tuple[float, int, int]], end: float) -> dict[str, Any]:
    """A step lasts from its launch to the next one's (the GPU runs them back to back when the host keeps up)."""
    starts = [s[0] for s in steps]
    rows = [(nxt - t, tokens, seqs) for (t, tokens, seqs), nxt in zip(steps, [*starts[1:], end], strict=True)]
    prefill = [r for r in rows if r[1] > r[2]]
    decode = [r for r in rows if r[1] == r[2]]
    by_batch: dict[str, list[float]] = {}
    for dt, _, seqs in decode:
        bucket = "1024+" if seqs >= 1024 else f"{1 << (seqs.bit_length() - 1)}-{(1 << seqs.bit_length()) - 1}"
        by_batch.setdefault(bucket, []).append(dt)
    return {
        "steps": len(rows),
        "prefill_steps": len(prefill), "prefill_s": round(sum(r[0] for r in prefill), 4),
        "prefill_step_tokens": sum(r[1] for r in prefill),
        "prefill_step_ms_median": round(1000 * median([r[0] for r in prefill]), 3) if prefill else None,
        "decode_steps": len(decode), "decode_s": round(sum(r[0] for r in decode), 4),
        "decode_step_ms_by_batch": {k: {"steps": len(v), "median_ms": round(1000 * median(v), 3)} for k, v in
                                    sorted(by_batch.items(), key=lambda kv: -len(kv[1]))},
        "method": "a step lasts from its launch to the next step's launch (scheduler.schedule / schedule_next)",
    }  # fmt: skip


def public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def run_engine(args: argparse.Namespace, model: str, device: str, dtype: str) -> dict[str, Any]:
    from trt_gateway.engine import EngineConfig, LLMEngine

    vocab = int(model_config(model)["vocab_size"])
    levels = sorted(set(ints(args.concurrency)))
    largest = min(max([*levels, args.requests]), args.requests)
    options: dict[str, Any] = dict(
        model=model, device=device, dtype=dtype, max_num_seqs=args.max_num_seqs or largest,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization, enable_prefix_caching=False, seed=args.seed,
        cpu_threads=args.threads if device == "cpu" else 0, quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype,
    )  # fmt: skip
    if args.cuda_graph_max_batch:
        options["cuda_graph_max_batch"] = args.cuda_graph_max_batch
    if not has_weights(model):
        options["load_format"] = "dummy"
    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(**options))
    synchronize(device)
    startup_s = time.perf_counter() - t0
    log(f"engine: ready in {startup_s:.1f}s, {engine.num_total_blocks} KV blocks")
    driver = EngineDriver(engine, device)

    t0 = time.perf_counter()
    driver.run(make_prompts(args, vocab, 1, salt=1), 4, 1, "warm1")
    driver.run(make_prompts(args, vocab, largest, salt=2), args.warmup_tokens, largest, "warm")
    warmup_s = time.perf_counter() - t0
    log(f"engine: warm-up ({largest} requests x {args.warmup_tokens} tokens) {warmup_s:.1f}s")

    ttfts, itls = [], []
    n = args.itl_tokens
    for r, prompt in enumerate(make_prompts(args, vocab, args.repeats, salt=3)):
        one = driver.run([prompt], n, 1, f"b1-{r}")
        rid = f"b1-{r}-0"
        if rid in one["_first"]:
            ttfts.append(one["_first"][rid] - one["_submitted"][rid])
            if n > 1:
                itls.append((one["_last"][rid] - one["_first"][rid]) / (n - 1))
    batch1 = {
        "input_len": args.input_len, "output_tokens": n, "repeats": args.repeats,
        "decode_tok_s": round(1 / median(itls), 2) if itls else None,
        "itl_ms": round(1000 * median(itls), 3) if itls else None,
        "ttft_ms": round(1000 * median(ttfts), 3) if ttfts else None,
        "itl_ms_samples": [round(1000 * x, 3) for x in itls], "ttft_ms_samples": [round(1000 * x, 3) for x in ttfts],
        "method": "per-step timestamps: itl = (t_last - t_first) / (N - 1); ttft = submit to first token; medians",
    }  # fmt: skip
    log(f"engine: batch 1: {batch1['decode_tok_s']} tok/s, ttft {batch1['ttft_ms']} ms")

    everything = make_prompts(args, vocab, args.requests, salt=4)
    steps = record_steps(engine) if args.step_timeline else None
    saturated = public(driver.run(everything, args.output_len, args.requests, "sat"))
    if steps is not None:
        saturated["step_timeline"] = summarise_steps(steps, time.perf_counter())
        steps.clear()
    log(f"engine: saturated {args.requests} x {args.output_len}: {saturated['output_tok_s']} tok/s")
    per_level = []
    for level in levels:
        if level >= args.requests:
            per_level.append({**saturated, "concurrency": level})
            continue
        count = min(args.requests, level * args.requests_per_slot)
        result = public(driver.run(everything[:count], args.output_len, level, f"c{level}"))
        per_level.append({**result, "concurrency": level})
        log(f"engine: concurrency {level} ({count} requests): {result['output_tok_s']} tok/s")
    return {
        "startup_s": round(startup_s, 2), "warmup_s": round(warmup_s, 2),
        "warmup": f"1 request x 4 tokens, then {largest} requests x {args.warmup_tokens} tokens at once",
        "load_format": options.get("load_format", "safetensors"), "dtype": dtype,
        "quantization": args.quantization or "none", "kv_cache_dtype": args.kv_cache_dtype,
        "kv_blocks": engine.num_total_blocks, "block_size": engine.config.block_size,
        "max_num_seqs": options["max_num_seqs"], "max_num_batched_tokens": args.max_num_batched_tokens,
        "max_model_len": args.max_model_len, "enable_prefix_caching": False,
        "batch1": batch1, "saturated": saturated, "concurrency": per_level,
        "token_counts_ok": not driver.failures, "token_count_failures": driver.failures[:20],
    }  # fmt: skip


# -- phases: HF transformers --------------------------------------------------------------------------------------


def build_hf(args: argparse.Namespace, model: str, device: str, dtype: str) -> tuple[Any, float]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    hf: Any
    t0 = time.perf_counter()
    if has_weights(model):
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, attn_implementation=args.hf_attn)
        hf = hf.to(device)
    else:
        config = AutoConfig.from_pretrained(model)
        torch.manual_seed(args.seed)
        with torch.device(device):
            hf = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=args.hf_attn)
    hf.eval()
    synchronize(device)
    return hf, time.perf_counter() - t0


def run_hf_static(args: argparse.Namespace, model: str, device: str, dtype: str) -> dict[str, Any]:
    import torch

    hf, build_s = build_hf(args, model, device, dtype)
    log(f"hf-static: model built in {build_s:.1f}s")
    vocab = int(model_config(model)["vocab_size"])
    failures: list[str] = []

    def generate(batch: int, tokens: int) -> float:
        ids = torch.tensor(make_prompts(args, vocab, batch, salt=5), device=device)
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=0,
            )
        synchronize(device)
        elapsed = time.perf_counter() - t0
        made = out.shape[1] - ids.shape[1]
        if made != tokens or out.shape[0] != batch:
            failures.append(f"hf-static batch {batch}: {tuple(out.shape)} for {tokens} new tokens")
            log(f"TOKEN COUNT MISMATCH {failures[-1]}")
        return elapsed

    runs = []
    for batch in ints(args.hf_batch_sizes):
        tokens = args.hf_b1_tokens if batch == 1 else args.output_len
        generate(batch, 2)  # warm-up: allocator, kernels, cuBLAS plans of this batch size
        elapsed = generate(batch, tokens)
        row: dict[str, Any] = {
            "batch_size": batch,
            "output_len": tokens,
            "elapsed_s": round(elapsed, 4),
            "output_tok_s": round(batch * tokens / elapsed, 2),
        }
        if batch == 1 and tokens > 1:
            t1 = generate(1, 1)
            row["t1_s"] = round(t1, 4)
            row["decode_tok_s"] = round((tokens - 1) / (elapsed - t1), 2) if elapsed > t1 else None
            row["ttft_ms"] = round(1000 * t1, 3)
        runs.append(row)
        log(f"hf-static: batch {batch} x {tokens}: {row['output_tok_s']} tok/s")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {
        "build_s": round(build_s, 2),
        "attn_implementation": args.hf_attn,
        "dtype": dtype,
        "input_len": args.input_len,
        "runs": runs,
        "note": f"batch 1 generates --hf-b1-tokens={args.hf_b1_tokens} tokens (HF's batch 1 is slow), the "
        f"others --output-len={args.output_len}; one 2-token warm-up per batch size; no repeats",
        "token_counts_ok": not failures,
        "token_count_failures": failures,
    }


def run_hf_cb(args: argparse.Namespace, model: str, device: str, dtype: str) -> dict[str, Any]:
    import transformers
    from transformers import GenerationConfig

    hf, build_s = build_hf(args, model, device, dtype)
    if not hasattr(hf, "generate_batch"):
        raise RuntimeError(
            f"transformers {transformers.__version__} has no `generate_batch` (continuous "
            "batching); install a release that has it (5.17 and 5.23 do)"
        )
    log(f"hf-cb: model built in {build_s:.1f}s")
    vocab = int(model_config(model)["vocab_size"])

    def config(tokens: int) -> Any:  # eos_token_id -1: no EOS, every request runs to max_new_tokens
        return GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)

    t0 = time.perf_counter()
    # Warm-up of the process (CUDA context, kernels); the timed call captures its own CUDA graphs before it starts
    # its requests (`warmup`, in 5.17 and 5.23), outside the generation window.
    hf.generate_batch(
        make_prompts(args, vocab, 4, salt=6), generation_config=config(4), progress_bar=False, warmup=False
    )
    warmup_s = time.perf_counter() - t0
    prompts = make_prompts(args, vocab, args.hf_cb_requests, salt=4)
    synchronize(device)
    t0 = time.perf_counter()
    outputs = hf.generate_batch(prompts, generation_config=config(args.output_len), progress_bar=False)
    synchronize(device)
    wall = time.perf_counter() - t0
    results = list(outputs.values())
    tokens = sum(len(o.generated_tokens) for o in results)
    failures = [
        f"hf-cb {o.request_id}: {len(o.generated_tokens)} tokens, error {o.error}"
        for o in results
        if len(o.generated_tokens) != args.output_len or o.error
    ]
    if len(results) != len(prompts):
        failures.append(f"hf-cb: {len(results)} of {len(prompts)} requests returned")
    for line in failures[:10]:
        log(f"TOKEN COUNT MISMATCH {line}")
    ends = [o.lifespan[1] for o in results if o.lifespan[1] > 0]
    starts = [o.created_time for o in results]
    window = max(ends) - min(starts) if ends and starts and max(ends) > min(starts) else wall
    log(f"hf-cb: {len(prompts)} x {args.output_len}: {tokens / window:.1f} tok/s ({wall:.1f}s call)")
    return {"build_s": round(build_s, 2), "warmup_s": round(warmup_s, 2), "dtype": dtype,
            "attn_implementation": str(getattr(hf.config, "_attn_implementation", args.hf_attn)),
            "requests": len(prompts), "input_len": args.input_len, "output_len": args.output_len,
            "output_tokens": tokens, "generation_s": round(window, 4), "output_tok_s": round(tokens / window, 2),
            "wall_s": round(wall, 4), "output_tok_s_wall": round(tokens / wall, 2),
            "note": "generation_s: first request created to last finished; wall_s: the whole generate_batch call, "
                    "with HF's manager start-up and CUDA-graph warm-up",
            "token_counts_ok": not failures, "token_count_failures": failures[:20]}  # fmt: skip


# -- one phase here; all phases in children; the summary ------------------------------------------------------------

RUNNERS = {"engine": run_engine, "hf-static": run_hf_static, "hf-cb": run_hf_cb}


def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    model, made = model_dir(args)
    try:
        device, dtype = resolve_device(args)
        if device == "cpu" and args.threads:
            import torch

            torch.set_num_threads(args.threads)
        need = args.input_len + max(args.output_len, args.itl_tokens, args.hf_b1_tokens)
        if need > args.max_model_len:
            raise SystemExit(f"--max-model-len {args.max_model_len} < input + output tokens ({need})")
        t0 = time.perf_counter()
        figures = RUNNERS[args.phase](args, model, device, dtype)
        figures["phase_s"] = round(time.perf_counter() - t0, 2)
        return {"env": environment(device), "model": model_info(args, model), "phases": {args.phase: figures}}
    finally:
        if made:
            shutil.rmtree(Path(model).parent, ignore_errors=True)


def model_info(args: argparse.Namespace, model: str) -> dict[str, Any]:
    cfg = model_config(model)
    name = {json.dumps(TINY): "tiny", json.dumps(LLAMA3_8B): "llama-3-8b"}.get(json.dumps(cfg), "custom")
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")
    return {"name": name, "weights": "checkpoint" if has_weights(model) else "random", **{k: cfg.get(k) for k in keys}}


def run_all(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise SystemExit(f"unknown phases {unknown}; choose from {PHASES}")
    model, made = model_dir(args)
    parts: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    summary: dict[str, Any] = {}
    try:
        for phase in phases:
            with tempfile.TemporaryDirectory(prefix="engine-bench-phase-") as tmp:
                out = Path(tmp) / "phase.json"
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    *argv,
                    "--phase",
                    phase,
                    "--result-file",
                    str(out),
                    "--model-dir",
                    model,
                ]
                log(f"phase {phase}: starting")
                t0 = time.perf_counter()
                try:
                    proc = subprocess.run(cmd, timeout=args.phase_timeout_s or None, check=False)
                    code: int | str = proc.returncode
                except subprocess.TimeoutExpired:
                    code = f"killed after {args.phase_timeout_s:.0f}s"
                log(f"phase {phase}: exit {code} after {time.perf_counter() - t0:.1f}s")
                if out.exists():
                    parts.append(json.loads(out.read_text()))
                if code not in (0, 1) or not out.exists():  # 1: it ran, but token counts were wrong
                    errors[phase] = f"child exit {code}" + ("" if out.exists() else ", no result")
            summary = summarize(args, parts, errors)
            write(args, summary)
    finally:
        if made:
            shutil.rmtree(Path(model).parent, ignore_errors=True)
    return summary


def summarize(args: argparse.Namespace | None, parts: list[dict[str, Any]], errors: dict[str, str]) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    env: dict[str, Any] = {}
    model: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    for part in parts:  # raw parts of phase children, or summaries of earlier runs (--merge)
        phases.update(part.get("phases", {}))
        env = env or part.get("env") or {k: part[k] for k in ENV_KEYS if k in part}
        model = model or part.get("model", {})
        workload = workload or part.get("workload", {})
        errors = {**part.get("errors", {}), **errors}
    if args is not None:
        workload = {
            k: getattr(args, k)
            for k in (
                "input_len",
                "output_len",
                "requests",
                "concurrency",
                "requests_per_slot",
                "itl_tokens",
                "repeats",
                "hf_batch_sizes",
                "hf_b1_tokens",
                "hf_cb_requests",
                "max_num_batched_tokens",
                "max_model_len",
                "seed",
            )
        }
    engine, static, cb = phases.get("engine"), phases.get("hf-static"), phases.get("hf-cb")
    ratios: dict[str, Any] = {}
    e_b1 = engine["batch1"]["decode_tok_s"] if engine else None
    e_sat = engine["saturated"]["output_tok_s"] if engine else None
    hf_b1 = None
    candidates: list[tuple[float, str]] = []
    for row in static["runs"] if static else []:
        if row["batch_size"] == 1:
            hf_b1 = row.get("decode_tok_s") or row["output_tok_s"]
        candidates.append((row["output_tok_s"], f"hf-static batch {row['batch_size']}"))
    if cb:
        candidates.append((cb["output_tok_s"], f"hf-cb {cb['requests']} requests"))
    best = max(candidates) if candidates else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    ratios["engine_vs_hf_batch1"] = ratio(e_b1, hf_b1)
    ratios["engine_vs_hf_saturated"] = ratio(e_sat, best[0] if best else None)
    ratios["hf_best_saturated"] = {"output_tok_s": best[0], "source": best[1]} if best else None
    comparable = bool(model.get("name") == "llama-3-8b" and "H100" in str(env.get("gpu", ""))
                      and workload.get("input_len") == 128 and workload.get("output_len") == 128
                      and workload.get("requests") == 1024)  # fmt: skip
    reference = {
        **REFERENCE,
        "comparable_to_this_run": comparable,
        "engine_vs_vllm_batch1": ratio(e_b1, REFERENCE["vllm_batch1_decode_tok_s"]),
        "engine_vs_vllm_saturated": ratio(e_sat, REFERENCE["vllm_saturated_output_tok_s"]),
        "engine_vs_goal_batch1": ratio(e_b1, REFERENCE["goal_batch1_decode_tok_s"]),
        "engine_vs_goal_saturated": ratio(e_sat, REFERENCE["goal_saturated_output_tok_s"]),
    }
    ok = all(p.get("token_counts_ok", True) for p in phases.values())
    return {
        "benchmark": "engine_bench", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **env, "model": model, "workload": workload,
        "engine_batch1_decode_tok_s": e_b1, "engine_batch1_ttft_ms": engine["batch1"]["ttft_ms"] if engine else None,
        "engine_saturated_output_tok_s": e_sat, "hf_batch1_decode_tok_s": hf_b1,
        "ratios": ratios, "reference": reference, "token_counts_ok": ok, "errors": errors, "phases": phases,
    }  # fmt: skip


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.result_file:
        Path(args.result_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result_file).write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        result = summarize(None, parts, {})
        write(args, result)
    elif args.phase == "all":
        result = run_all(args, argv)
    else:
        part = run_phase(args)
        part["workload"] = summarize(args, [], {})["workload"]
        ok = all(p.get("token_counts_ok", True) for p in part["phases"].values())
        if args.result_file:  # a child of 'all': the raw part, which its parent reads (and --merge can)
            Path(args.result_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.result_file).write_text(json.dumps(part, indent=1) + "\n")
            log(f"phase {args.phase}: {json.dumps(part['phases'][args.phase])}")
            return 0 if ok else 1
        result = summarize(args, [part], {})
    print(json.dumps(result, indent=1))
    if not result["token_counts_ok"]:
        log("FAILED: some requests did not produce exactly the tokens they asked for (token_count_failures)")
    return 0 if result["token_counts_ok"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
