"""Engine configuration: one frozen dataclass, validated once at construction.

Everything the engine needs to start (checkpoint path, device, memory budget, batching limits) lives here; nothing is
read from environment variables. Values that depend on the checkpoint or the device ("auto" dtype, default
max_model_len, the number of KV blocks) are resolved later by `llm_engine` and `kv_cache`, which raise
`EngineConfigError` naming the field to change when the combination cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MiB = 1 << 20

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SPECULATIVE_MODES = ("", "ngram", "draft")
LOAD_FORMATS = ("safetensors", "dummy")
QUANTIZATIONS = ("", "fp8")
KV_CACHE_DTYPES = ("auto", "fp8")
# (max_num_seqs, max_num_batched_tokens) when not configured. A CPU engine is compute-bound at a few sequences; on a
# GPU, decode steps are nearly free up to hundreds of sequences (an 8B model's step costs 6.3 ms at batch 1 and
# 10.3 ms at batch 256 on an H100), and 8,192-token prefill steps keep the matrix units busy.
DEVICE_DEFAULTS = {"cpu": (16, 2048), "cuda": (256, 8192)}


class EngineConfigError(ValueError):
    """The engine cannot start with this configuration or checkpoint. `field` names what to change."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


def refuse_mismatched_weights(
    source: str, missing: list[str], mismatched: list[str], unexpected: list[str], listed: int = 5
) -> None:
    """Raise one EngineConfigError listing (the first few of) what a checkpoint lacks, has of the wrong shape, or
    has that the model does not: safetensors checkpoints (loader.py) and GGUF files (gguf_checkpoint.py) alike."""

    def listing(items: list[str]) -> str:
        more = f" and {len(items) - listed} more" if len(items) > listed else ""
        return f"({len(items)}): {', '.join(items[:listed])}{more}"

    problems = [f"{what} {listing(items)}" for what, items in
                (("missing weights", missing), ("shape mismatch", mismatched), ("unexpected weights", sorted(unexpected)))
                if items]
    if problems:
        raise EngineConfigError(f"{source}: " + "; ".join(problems), field="model")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str  # directory of an HF-format checkpoint: config.json + *.safetensors
    # "dummy": random weights built on the device from config.json alone (benchmarks of an architecture whose
    # weights are not at hand; vLLM's load_format="dummy"). The outputs are meaningless text.
    load_format: str = "safetensors"
    device: str = "auto"  # "auto" picks cuda when available; "cuda" may carry an index ("cuda:1")
    dtype: str = "auto"  # "auto": float32 on CPU; the checkpoint's half type (else bfloat16) on CUDA
    # "fp8": decoder projections in FP8 E4M3 with per-channel scales (Hopper only; computes in bfloat16). "": as the
    # checkpoint is (an FP8 checkpoint is served in FP8 where the GPU can, else dequantized). docs/engine.md#fp8
    quantization: str = ""
    # "fp8": the KV cache in FP8 E4M3 (half the bytes: twice the tokens, half attention's reads), values stored as
    # they are (scale 1, saturating at +-448). "auto": the model's dtype. docs/engine.md#fp8-kv-cache
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None  # prompt + output tokens of one sequence; None: the model's max positions
    # Batch limits; 0 picks the device's default (`DEVICE_DEFAULTS`, applied by `for_device`).
    max_num_seqs: int = 0  # sequences in the running batch
    max_num_batched_tokens: int = 0  # tokens computed in one step (prefill chunks + decodes)
    block_size: int = 16  # tokens per KV block
    kv_cache_bytes: int | None = None  # CPU KV budget; None: enough for max_num_seqs full sequences, capped at 256 MiB
    gpu_memory_utilization: float = 0.9  # CUDA: fraction of the free memory (after loading weights) to use
    num_kv_blocks: int | None = None  # overrides both budgets (tests, benchmarks)
    enable_prefix_caching: bool = True
    max_top_logprobs: int = 20  # the most alternatives one position may ask for
    seed: int = 0  # draws the seeds of requests that set none
    # CPU: torch's intra-op threads for this process (0 = torch's default, one per core). On a CPU shared with other
    # work, spinning OpenMP threads make every step 10-100x slower; 1 keeps the engine steady there.
    cpu_threads: int = 0
    # CUDA: Triton kernels for attention, norms, rotary and SwiGLU (False: the plain torch paths, for comparison).
    kernels: bool = True
    # CUDA: replay decode-only steps of up to this many sequences from captured CUDA graphs (0: never; capped at
    # max_num_seqs). Needs the kernels. Larger decode batches, and steps with prompt chunks, drafts to verify or LoRA
    # adapters run eagerly. 1,024: eager decode of 1,024 sequences is host-bound (Llama-3-8B FP8 on an H200: 29-40 ms
    # a step eagerly, 23.5 ms graphed). The graphs share one logits buffer, max batch x vocab x 4 bytes (0.5 GB at
    # 1,024 x 128k), which the KV-cache budget leaves room for.
    cuda_graph_max_batch: int = 1024
    # Schedule and launch the next decode step before the current one's tokens reach the host, so host work overlaps
    # the GPU. None: on for CUDA. Steps with drafts, guided decoding or penalties (which need the token on the host)
    # and steps that admit new requests are scheduled the ordinary way.
    async_scheduling: bool | None = None
    max_loras: int = 0  # LoRA adapter slots in the model (adapters usable in one batch); 0 disables LoRA
    max_cpu_loras: int = 32  # adapters kept in host memory, slot residents included; must be >= max_loras
    max_lora_rank: int = 64  # slots are sized for this rank; adapters of a higher rank are refused
    speculative_mode: str = ""  # "" (off), "ngram" (prompt lookup) or "draft" (a small model, `draft_model`)
    draft_model: str | None = None  # checkpoint directory of the draft model; must share the target's vocabulary
    num_draft_tokens: int = 4  # tokens proposed per step and sequence (requests may lower it)
    speculative_max_batch: int = 8  # no drafting while more sequences than this run: a full batch is compute-bound
    ngram_max: int = 4  # prompt lookup matches the last ngram_max .. ngram_min tokens, longest first
    ngram_min: int = 2
    # Guided decoding: a constraint must compile within this budget (counted from submission, so waiting behind
    # other compiles counts); constraints over 4,096 characters compile in this many dedicated threads, smaller ones
    # in one more (compile_lanes.py).
    guided_compile_timeout_s: float = 10.0
    guided_compile_threads: int = 2
    # xgrammar's cache of compiled constraints (identical requests skip the compile); unbounded, every distinct
    # constraint a client sends would stay in memory for the server's lifetime.
    guided_cache_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        base_device = self.device.split(":", 1)[0]
        if base_device not in DEVICES:
            raise EngineConfigError(f"must be one of {DEVICES}, got {self.device!r}", field="device")
        if self.load_format not in LOAD_FORMATS:
            raise EngineConfigError(f"must be one of {LOAD_FORMATS}, got {self.load_format!r}", field="load_format")
        if self.quantization not in QUANTIZATIONS:
            raise EngineConfigError(f"must be one of {QUANTIZATIONS}, got {self.quantization!r}", field="quantization")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise EngineConfigError(
                f"must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}", field="kv_cache_dtype"
            )
        if self.dtype not in DTYPES:
            raise EngineConfigError(f"must be one of {DTYPES}, got {self.dtype!r}", field="dtype")
        if self.block_size < 1:
            raise EngineConfigError(f"must be >= 1, got {self.block_size}", field="block_size")
        for name, value in (("max_num_seqs", self.max_num_seqs), ("max_num_batched_tokens", self.max_num_batched_tokens)):
            if value < 0:
                raise EngineConfigError(f"must be >= 1 (0: the device's default), got {value}", field=name)
        if self.max_model_len is not None and self.max_model_len < 2:
            raise EngineConfigError(
                f"must be >= 2 (one prompt and one output token), got {self.max_model_len}", field="max_model_len"
            )
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise EngineConfigError(f"must be > 0, got {self.kv_cache_bytes}", field="kv_cache_bytes")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise EngineConfigError(
                f"must be in (0, 1], got {self.gpu_memory_utilization}", field="gpu_memory_utilization"
            )
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise EngineConfigError(f"must be >= 1, got {self.num_kv_blocks}", field="num_kv_blocks")
        if self.max_loras < 0:
            raise EngineConfigError(f"must be >= 0 (0 disables LoRA), got {self.max_loras}", field="max_loras")
        if self.max_loras and self.max_cpu_loras < self.max_loras:
            raise EngineConfigError(
                f"must be >= max_loras ({self.max_loras}), got {self.max_cpu_loras}", field="max_cpu_loras"
            )
        if self.max_lora_rank < 1:
            raise EngineConfigError(f"must be >= 1, got {self.max_lora_rank}", field="max_lora_rank")
        self._check_speculative()
        if self.cpu_threads < 0:
            raise EngineConfigError(f"must be >= 0 (0: torch's default), got {self.cpu_threads}", field="cpu_threads")
        if self.cuda_graph_max_batch < 0:
            raise EngineConfigError(
                f"must be >= 0 (0: no CUDA graphs), got {self.cuda_graph_max_batch}", field="cuda_graph_max_batch"
            )
        if self.max_top_logprobs < 0:
            raise EngineConfigError(f"must be >= 0, got {self.max_top_logprobs}", field="max_top_logprobs")
        if not self.guided_compile_timeout_s > 0:
            raise EngineConfigError(f"must be > 0, got {self.guided_compile_timeout_s}", field="guided_compile_timeout_s")
        if self.guided_cache_bytes < 0:
            raise EngineConfigError(f"must be >= 0, got {self.guided_cache_bytes}", field="guided_cache_bytes")
        if self.guided_compile_threads < 1:
            raise EngineConfigError(f"must be >= 1, got {self.guided_compile_threads}", field="guided_compile_threads")

    def for_device(self, device_type: str) -> EngineConfig:
        """This config with the batch limits left at 0 set to the device's defaults."""
        seqs, tokens = DEVICE_DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
        return replace(
            self,
            max_num_seqs=self.max_num_seqs or seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or tokens,
        )

    def _check_speculative(self) -> None:
        if self.speculative_mode not in SPECULATIVE_MODES:
            raise EngineConfigError(
                f"must be one of {SPECULATIVE_MODES}, got {self.speculative_mode!r}", field="speculative_mode"
            )
        if self.speculative_mode == "draft" and not self.draft_model:
            raise EngineConfigError("is required when speculative_mode is 'draft'", field="draft_model")
        if not 1 <= self.num_draft_tokens <= 16:
            raise EngineConfigError(f"must be in [1, 16], got {self.num_draft_tokens}", field="num_draft_tokens")
        if self.speculative_max_batch < 0:
            raise EngineConfigError(
                f"must be >= 0 (0: never draft), got {self.speculative_max_batch}", field="speculative_max_batch"
            )
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise EngineConfigError(
                f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min} and {self.ngram_max}", field="ngram_min"
            )
