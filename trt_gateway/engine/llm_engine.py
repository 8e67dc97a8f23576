"""The synchronous engine: requests in, per-step token ids and logprobs out.

`step()` is three calls: `scheduler.schedule()` picks how many tokens each sequence computes, `model_runner`
computes them and samples (`launch`, then `collect`), `scheduler.postprocess()` appends tokens, checks stop
conditions and frees finished sequences' blocks. Text (detokenisation, stop strings, chat templates) is layered on top by the caller, which ends a
sequence early with `finish(request_id, FinishReason.STOP_STRING)`.

Requests come in as `EngineRequest`s (`input_processor`: checked, grammar compiled, adapter pinned); `add_request`
builds one on the spot for callers that use the engine directly.

LoRA (`max_loras > 0`): adapters live in `self.lora` (a `LoraRegistry`, safe to call from other threads). A request
naming one holds it (`LoraRef`) from `add` until it finishes; the scheduler gives it a slot while it runs.

Speculative decoding (`speculative_mode`): before scheduling, `SpeculationPlanner` gives decoding sequences draft
tokens (n-gram) or a draft count (draft model, which drafts inside the step); the step verifies them and a sequence
may advance by several tokens, reported together in one StepOutput.

Async scheduling (on CUDA by default): while step N's device work runs, the next step is scheduled and launched
from N's outputs on the device (`Scheduler.schedule_next`, `ModelRunner.launch(after=...)`), then N's tokens are
collected and post-processed. A sequence a stop token ends at N was computed once more at N+1; that row is dropped.
`step()` still returns the tokens of one step per call, in order.

Threading: one thread drives `add_request` and `step`. `abort` and `finish` may be called from any thread: they
only enqueue, and the next `step()` applies them first, freeing the KV blocks before it schedules anything.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trt_gateway import errors, validation
from trt_gateway.engine.block_manager import BlockManager
from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError
from trt_gateway.engine.gguf_checkpoint import find_gguf
from trt_gateway.engine.input_processor import EngineBounds, EngineRequest, prepare
from trt_gateway.engine.kv_cache import fit_kv_cache, resolve_kv_dtype
from trt_gateway.engine.loader import kernels_usable, load_model, resolve_device, resolve_dtype, resolve_fp8
from trt_gateway.engine.lora.registry import LoraRegistry
from trt_gateway.engine.lora.slots import LoraSlots
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.model_runner import Launched, ModelRunner
from trt_gateway.engine.scheduler import Scheduler, SchedulerOutput
from trt_gateway.engine.sequence import SampledToken, Sequence
from trt_gateway.engine.speculative.draft_model import DraftModel
from trt_gateway.engine.speculative.planner import SpeculationPlanner
from trt_gateway.engine.stats import EngineStats
from trt_gateway.engine.structured_output import GrammarBackend
from trt_gateway.types import ExecutorLoad, FinishReason, GenerateRequest, Usage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step produced for one request. The last output of a request has finish_reason set."""

    request_id: str
    new_token_ids: tuple[int, ...]  # includes a stop token / EOS that ended the sequence
    logprobs: tuple[SampledToken, ...]  # one per new token when the request asked for logprobs, else empty
    finish_reason: FinishReason | None
    usage: Usage  # totals so far; cached_tokens = prompt tokens served by the prefix cache
    queue_time_s: float  # arrival to first scheduling
    matched_stop_token_id: int | None = None
    error: errors.GatewayError | None = None  # set with FinishReason.ERROR

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        started = time.monotonic()
        self.device = resolve_device(config)
        self.config = config = config.for_device(self.device.type)
        self.model_config = ModelConfig.from_pretrained(config.model)
        if self.device.type == "cpu" and config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)  # process-wide: the engine is the process's only torch user
        self.fp8 = resolve_fp8(config, self.model_config, self.device)  # refuses fp8 off Hopper
        self.dtype = resolve_dtype(config, self.model_config, self.device, self.fp8)
        self.max_model_len = _max_model_len(config, self.model_config)
        self.use_kernels = config.kernels and kernels_usable(self.device, self.model_config)
        model = load_model(
            config.model,
            self.model_config,
            self.device,
            self.dtype,
            self.max_model_len,
            dummy=config.load_format == "dummy",
            use_kernels=self.use_kernels,
            fp8=self.fp8,
        )
        loaded = time.monotonic()
        self.lora = self._lora_registry(model)  # before sizing the KV cache: slots take device memory
        draft = self._draft_model()  # likewise: its weights first, then its KV shares the budget per block
        extra = draft.bytes_per_block(config.block_size) if draft is not None else 0
        self.kv_dtype = resolve_kv_dtype(config, self.dtype, self.device)
        num_blocks, self.max_model_len = fit_kv_cache(  # a default max_model_len may be lowered to what fits
            config, self.model_config, self.device, self.dtype, self.max_model_len,
            extra_bytes_per_block=extra, gathers_kv=not self.use_kernels, kv_dtype=self.kv_dtype,
        )
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            lora=self.lora,
        )
        self.model_runner = ModelRunner(
            config,
            self.model_config,
            model,
            num_blocks,
            self.device,
            self.dtype,
            draft,
            max_model_len=self.max_model_len,
            use_kernels=self.use_kernels,
            kv_dtype=self.kv_dtype,
        )
        self.speculation = (
            SpeculationPlanner(
                config.speculative_mode,
                config.num_draft_tokens,
                config.speculative_max_batch,
                ngram_min=config.ngram_min,
                ngram_max=config.ngram_max,
            )
            if config.speculative_mode
            else None
        )
        self.async_scheduling = (
            config.async_scheduling if config.async_scheduling is not None else self.device.type == "cuda"
        ) and self.speculation is None
        self._inflight: tuple[SchedulerOutput, Launched] | None = None  # launched, not yet collected
        self.num_async_steps = 0  # steps launched before their predecessor's tokens reached the host
        self._seqs: dict[str, Sequence] = {}
        self._pending: collections.deque[tuple[str, FinishReason]] = collections.deque()
        self._arrivals = 0
        self._rng = random.Random(config.seed)
        gguf_file = find_gguf(config.model)  # a GGUF file is its own tokenizer file
        self.structured = GrammarBackend(
            gguf_file or Path(config.model) / "tokenizer.json",
            self.model_config.vocab_size,
            self.eos_token_ids,
            compile_timeout_s=config.guided_compile_timeout_s,
            compile_threads=config.guided_compile_threads,
            cache_bytes=config.guided_cache_bytes,
        )
        now = time.monotonic()
        logger.info(
            "engine ready in %.1f s (weights %.1f s, KV cache and warm-up %.1f s): %s on %s/%s, max_model_len=%d, "
            "%d KV blocks of %d tokens, kernels %s, CUDA graphs %s",
            *(now - started, loaded - started, now - loaded),
            self.model_config.architecture,
            self.device,
            self.dtype,
            self.max_model_len,
            num_blocks,
            config.block_size,
            "triton" if self.use_kernels else "torch",
            self.model_runner.graphs.describe() if self.model_runner.graphs is not None else "off",
        )

    # -- facts for the layers above -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.model_config.vocab_size

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.model_config.eos_token_ids

    @property
    def num_total_blocks(self) -> int:
        return self.block_manager.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.block_manager.num_free_blocks

    def has_unfinished(self) -> bool:
        # A launched step is drained by one more step() even when everything it computed has finished meanwhile.
        return bool(self._seqs) or bool(self._pending) or self._inflight is not None

    @property
    def num_unfinished(self) -> int:
        return len(self._seqs)

    @property
    def bounds(self) -> EngineBounds:
        return EngineBounds(self.vocab_size, self.max_model_len, self.config.max_top_logprobs)

    def stats(self) -> EngineStats:
        """Counts for metrics, readable from any thread (each a single read; together they may be one step apart).
        KV usage counts prefix-cached blocks that no sequence holds as free."""
        running_seqs, waiting_seqs = list(self.scheduler.running), list(self.scheduler.waiting)
        running = {s.lora.name for s in running_seqs if s.lora is not None}
        waiting = {s.lora.name for s in waiting_seqs if s.lora is not None} - running
        total, free = self.block_manager.num_blocks, self.block_manager.num_free_blocks
        load = ExecutorLoad(
            num_running=len(running_seqs),
            num_waiting=len(waiting_seqs),
            kv_cache_usage=(total - free) / total if total else 0.0,
            block_size=self.config.block_size,
            num_blocks=total,
            max_loras=self.lora.max_loras if self.lora is not None else 0,
            running_adapters=tuple(sorted(running)),
            waiting_adapters=tuple(sorted(waiting)),
        )
        return EngineStats(load, self.speculation.stats.snapshot() if self.speculation is not None else None)

    # -- requests -----------------------------------------------------------------------------------------------
    def add_request(
        self, request: GenerateRequest, prompt_token_ids: SequenceOf[int], grammar: Any = None
    ) -> None:
        """Check, compile and pin here, then `add`: for callers driving the engine directly (tests, benchmarks).

        Raises errors.InvalidArgument naming the field when the request cannot be served. grammar: the request's
        compiled guided-decoding constraint, compiled here when not given.
        """
        self.add(prepare(request, prompt_token_ids, self.bounds, self.structured, self.lora, grammar))

    def add(self, prepared: EngineRequest) -> None:
        """Queue a prepared request; the engine now owns its adapter reference (released when it retires)."""
        request = prepared.request
        if request.request_id in self._seqs:
            prepared.release()
            raise validation.duplicate_request_id(request.request_id)
        seed = request.sampling.seed if request.sampling.seed is not None else self._rng.getrandbits(63)
        seq = Sequence(
            request, prepared.prompt_ids, arrival_index=self._arrivals, eos_token_ids=self.eos_token_ids, seed=seed
        )
        if prepared.lora is not None:
            seq.lora, seq.cache_salt = prepared.lora, prepared.lora.cache_salt
        if prepared.grammar is not None:
            seq.grammar = self.structured.matcher(prepared.grammar)
        self._arrivals += 1
        self._seqs[request.request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        """Cancel a request (thread-safe). The next step frees its blocks and reports FinishReason.CANCELLED."""
        self._pending.append((request_id, FinishReason.CANCELLED))

    def finish(self, request_id: str, reason: FinishReason = FinishReason.STOP_STRING) -> None:
        """End a request early for a reason found above the engine, e.g. a matched stop string (thread-safe)."""
        self._pending.append((request_id, reason))

    # -- the step -----------------------------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        outputs = self.apply_pending()
        if self._inflight is not None:
            scheduled, launched = self._inflight
            self._inflight = None
        else:
            if self.speculation is not None:
                running = self.scheduler.running
                self.speculation.plan(running, len(running), self.max_model_len)
            scheduled = self.scheduler.schedule()
            if scheduled.is_empty:
                return outputs
            try:
                launched = self.model_runner.launch(scheduled)
            except torch.OutOfMemoryError as exc:
                return outputs + self._fail(scheduled, exc)
        if self.async_scheduling:
            self._launch_next(scheduled, launched)
        try:
            sampled = self.model_runner.collect(launched)
        except torch.OutOfMemoryError as exc:
            return outputs + self._fail(scheduled, exc)
        if self.speculation is not None:
            for item in scheduled.scheduled:
                if item.num_spec and item.seq.seq_id in sampled:
                    self.speculation.stats.record(item.num_spec, len(sampled[item.seq.seq_id]) - 1)
        for seq, num_new in self.scheduler.postprocess(scheduled, sampled):
            outputs.append(self._output(seq, num_new=num_new, error=seq.error))
            if seq.is_finished:
                self._retire(seq)
        return outputs

    def _launch_next(self, scheduled: SchedulerOutput, launched: Launched) -> None:
        """Launch the step after `scheduled` now, fed on the device, when it needs nothing from the host."""
        if launched.done is not None or not all(_feeds_on_device(item.seq) for item in scheduled.scheduled):
            return
        nxt = self.scheduler.schedule_next(scheduled)
        if nxt is None:
            return
        try:
            self._inflight = (nxt, self.model_runner.launch(nxt, after=launched))
            self.num_async_steps += 1
        except torch.OutOfMemoryError:
            # The next step is scheduled the ordinary way instead (blocks taken for it stay with their sequences).
            logger.warning("launching the next decode step ran out of memory; scheduling it again")

    def apply_pending(self) -> list[StepOutput]:
        """Apply the aborts and finishes queued since the last step (step() does this first; the driving thread may
        call it between steps to free a request id at once). Returns the final outputs of the requests it ended."""
        outputs = []
        while self._pending:
            request_id, reason = self._pending.popleft()
            seq = self._seqs.get(request_id)
            if seq is None:
                continue  # already finished, or never known: nothing to free
            self.scheduler.finish(seq, reason)
            self._retire(seq)
            outputs.append(self._output(seq, num_new=0))
        return outputs

    def _fail(self, scheduled: SchedulerOutput, exc: BaseException) -> list[StepOutput]:
        """Out of device memory mid-step: fail the step's requests (retryable), keep the engine alive."""
        logger.warning(
            "step of %d tokens ran out of memory: failing %d requests",
            scheduled.num_batched_tokens,
            len(scheduled.scheduled),
        )
        outputs = []
        for item in scheduled.scheduled:
            seq = item.seq
            if seq.is_finished:
                continue
            self.scheduler.finish(seq, FinishReason.ERROR)
            self._retire(seq)
            error = errors.ResourceExhausted(f"out of device memory: {exc}", retry_after_s=1.0)
            outputs.append(self._output(seq, num_new=0, error=error))
        return outputs

    def _retire(self, seq: Sequence) -> None:
        """A finished sequence leaves the engine: forget it and let go of its adapter."""
        self._seqs.pop(seq.request_id, None)
        if seq.lora is not None:
            seq.lora.release()

    # -- speculative decoding -------------------------------------------------------------------------------------
    def _draft_model(self) -> DraftModel | None:
        c = self.config
        if c.speculative_mode != "draft":
            return None
        assert c.draft_model is not None  # EngineConfig checks it
        draft = DraftModel(
            c.draft_model, self.model_config, self.device, self.dtype, self.max_model_len, use_kernels=self.use_kernels
        )
        logger.info("speculative decoding: draft model %s, %d tokens per step", c.draft_model, c.num_draft_tokens)
        return draft

    # -- LoRA -----------------------------------------------------------------------------------------------------
    def _lora_registry(self, model: torch.nn.Module) -> LoraRegistry | None:
        c = self.config
        if not c.max_loras:
            return None
        slots = LoraSlots(model, c.max_loras, c.max_lora_rank, self.dtype, self.device)
        logger.info("LoRA: %d slots of rank %d (%.1f MiB)", c.max_loras, c.max_lora_rank, slots.nbytes / 2**20)
        return LoraRegistry(
            max_loras=c.max_loras,
            max_cpu_loras=c.max_cpu_loras,
            max_rank=c.max_lora_rank,
            modules=slots.module_shapes,
            write_slot=slots.write,
        )

    def _output(self, seq: Sequence, num_new: int, error: errors.GatewayError | None = None) -> StepOutput:
        new_ids = tuple(seq.token_ids[seq.num_tokens - num_new :]) if num_new else ()
        logprobs = tuple(seq.logprobs[len(seq.logprobs) - num_new :]) if num_new and seq.logprobs else ()
        return StepOutput(
            request_id=seq.request_id,
            new_token_ids=new_ids,
            logprobs=logprobs,
            finish_reason=seq.finish_reason,
            usage=seq.usage,
            queue_time_s=seq.queue_time_s,
            matched_stop_token_id=seq.matched_stop_token_id,
            error=error,
        )


def _feeds_on_device(seq: Sequence) -> bool:
    """Whether seq's next token can be sampled without its previous one on the host: no grammar to advance, no
    penalties over its history (bias, temperature, top-k/p, min-p, min_tokens and seeds only need counts)."""
    p = seq.request.sampling
    return seq.grammar is None and p.repetition_penalty == 1.0 and not p.presence_penalty and not p.frequency_penalty


def _max_model_len(config: EngineConfig, cfg: ModelConfig) -> int:
    limit = cfg.max_position_embeddings
    length = config.max_model_len or limit
    if length > limit:
        raise EngineConfigError(f"{length} exceeds the model's max_position_embeddings={limit}", field="max_model_len")
    return length
