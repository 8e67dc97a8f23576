"""The double's engine core (not a vLLM module): a scripted model stepped by a task on the event loop.

Per step and request, in vLLM's order: sample the next token(s) (several with speculation), apply the token-level
stops (EOS unless ignore_eos, stop_token_ids, max_tokens, max_model_len; none before min_tokens), detokenize, check
stop strings over the new text and cut the text there, hold back the tail that could still become a stop string,
then put a RequestOutput (DELTA or cumulative) into the request's collector. Stats go to the stat loggers per step.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from vllm import _fake
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine import FinishReason
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, RequestStateStats, SchedulerStats
from vllm.v1.spec_decode.metrics import SpecDecodingStats


@dataclass
class CoreRequest:
    request_id: str  # internal
    external_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: Any
    lora_request: Any
    collector: Any
    cached: int = 0
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    text: str = ""  # detokenized output, cut at a matched stop string
    sent: int = 0  # characters of `text` already emitted
    sent_ids: int = 0
    steps: int = 0
    stats: RequestStateStats = field(default_factory=RequestStateStats)
    finish: FinishReason | None = None
    stop_reason: int | str | None = None


class EngineCore:
    def __init__(self, vllm_config: Any, stat_loggers: list[Any], tokenizer: Any) -> None:
        self.config = vllm_config
        self.loggers = stat_loggers
        self.tokenizer = tokenizer
        self.requests: dict[str, CoreRequest] = {}
        self.seen_prompts: list[tuple[int, ...]] = []
        self.steps = 0
        self.dead = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, req: CoreRequest) -> None:
        if self.config.cache_config.enable_prefix_caching:
            req.cached = self._cached_tokens(req.prompt_ids)
            self.seen_prompts.append(tuple(req.prompt_ids))
        req.stats = RequestStateStats(arrival_time=time.time(), queued_ts=time.monotonic())
        self.requests[req.request_id] = req
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        self.wake.set()

    def _cached_tokens(self, ids: list[int]) -> int:
        best = 0
        for seen in self.seen_prompts:
            n = next((i for i, (a, b) in enumerate(zip(seen, ids, strict=False)) if a != b), min(len(seen), len(ids)))
            best = max(best, n)
        best = min(best, len(ids) - 1)  # the last prompt token is always computed
        return best // _fake.BLOCK_SIZE * _fake.BLOCK_SIZE

    def remove(self, request_id: str) -> CoreRequest | None:
        req = self.requests.pop(request_id, None)
        if req is not None:
            _fake.CONTROL.engine_aborted.append(request_id)
        return req

    async def _run(self) -> None:
        try:
            while not self.dead:
                if not self.requests:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                await asyncio.sleep(_fake.CONTROL.step_delay_s)
                self.step()
        except asyncio.CancelledError:
            pass

    # -- one engine step -------------------------------------------------------------------------------------------

    def step(self) -> None:
        control = self.config.speculative_config
        self.steps += 1
        if _fake.CONTROL.fail_after_steps is not None and self.steps > _fake.CONTROL.fail_after_steps:
            self.die()
            return
        iteration, prefix = IterationStats(), PrefixCacheStats()
        spec = SpecDecodingStats.new(control.num_speculative_tokens) if control else None
        running = len(self.requests)
        for req in list(self.requests.values()):
            if req.steps == 0:
                req.stats.scheduled_ts = time.monotonic()
                prompt = iteration.prompt_token_stats
                prompt.total += len(req.prompt_ids)
                prompt.computed += len(req.prompt_ids) - req.cached
                prompt.local_cache_hit += req.cached
                prompt.cached_tokens += req.cached
                prefix.requests += 1
                prefix.queries += len(req.prompt_ids)
                prefix.hits += req.cached
            if req.external_id in _fake.CONTROL.fail_requests:
                self.requests.pop(req.request_id)
                req.collector.put(RuntimeError(f"scripted failure of request {req.external_id}"))
                continue
            new = self._sample(req, spec)
            iteration.num_generation_tokens += len(new)
            self._emit(req, new)
        scheduler = SchedulerStats(num_running_reqs=running, num_waiting_reqs=0, step_counter=self.steps,
                                   kv_cache_usage=min(1.0, running / 64), prefix_cache_stats=prefix,
                                   spec_decoding_stats=spec)
        for logger in self.loggers:
            logger.record(scheduler, iteration, mm_cache_stats=None, engine_idx=0)

    def die(self) -> None:
        self.dead = True
        for req in self.requests.values():
            req.collector.put(EngineDeadError())
        self.requests.clear()

    def _script_tokens(self, req: CoreRequest) -> list[int]:
        """The scripted step's tokens; None-script: echo the prompt (without BOS), then EOS."""
        script, sp = _fake.CONTROL.script, req.params
        if script is not None:
            if req.steps < len(script):
                return list(script[req.steps])
            return list(script[req.steps % len(script)]) if sp.ignore_eos else [_fake.EOS]
        body = [t for t in req.prompt_ids if t != _fake.BOS] or [_fake.OFFSET]
        if req.steps < len(body):
            return [body[req.steps]]
        return [body[req.steps % len(body)]] if sp.ignore_eos else [_fake.EOS]

    def _sample(self, req: CoreRequest, spec: SpecDecodingStats | None) -> list[int]:
        tokens = self._script_tokens(req)
        req.steps += 1
        if spec is not None and _fake.CONTROL.script is None:  # speculation: accepted drafts arrive in one step
            k = spec.num_spec_tokens
            accepted = k if _fake.CONTROL.accepted_per_step is None else min(k, _fake.CONTROL.accepted_per_step)
            for _ in range(accepted):
                tokens += self._script_tokens(req)
                req.steps += 1
            spec.observe_draft(k, accepted)
        # token-level stops, token by token: what follows a stop is dropped
        sp, max_len = req.params, self.config.model_config.max_model_len
        out: list[int] = []
        for token in tokens:
            out.append(token)
            req.output_ids.append(token)
            n = len(req.output_ids)
            if n > sp.min_tokens:
                if token == _fake.EOS and not sp.ignore_eos:
                    req.finish = FinishReason.STOP
                    break
                if token in sp.stop_token_ids:
                    req.finish, req.stop_reason = FinishReason.STOP, token
                    break
            if (sp.max_tokens is not None and n >= sp.max_tokens) or len(req.prompt_ids) + n >= max_len:
                req.finish = FinishReason.LENGTH
                break
        if req.external_id in _fake.CONTROL.error_finish_requests:
            req.finish = FinishReason.ERROR
        if sp.logprobs is not None:
            for token in out:
                entry = {token: Logprob(-0.25, 1, _fake.decode([token]))}
                for rank in range(2, sp.logprobs + 1):
                    alt = _fake.OFFSET + (token + rank) % 256
                    entry.setdefault(alt, Logprob(-0.25 * rank * rank, rank, _fake.decode([alt])))
                req.logprobs.append(entry)
        return out

    def _emit(self, req: CoreRequest, new: list[int]) -> None:
        sp = req.params
        # detokenize: special tokens, and a stop token unless include_stop_str_in_output, are not text
        if sp.detokenize and self.tokenizer is not None:
            ids = req.output_ids
            if req.finish is FinishReason.STOP and req.stop_reason is not None and not sp.include_stop_str_in_output:
                ids = ids[:-1]
            before = len(req.text)
            req.text = _fake.decode(ids)
            new_chars = len(req.text) - before
            matched = self._stop_string(req, new_chars) if sp.stop else None
            if matched is not None:
                req.finish, req.stop_reason = FinishReason.STOP, matched
        finished = req.finish is not None
        if finished:
            self.requests.pop(req.request_id, None)
        self._put(req, new, finished)

    def _stop_string(self, req: CoreRequest, new_chars: int) -> str | None:
        """vLLM's check_stop_strings: search the new text (and the stop's length before it); cut there."""
        sp = req.params
        for stop in sp.stop:
            start = max(0, len(req.text) - new_chars - len(stop) + 1)
            index = req.text.find(stop, start)
            if index >= 0:
                cut = index + len(stop) if sp.include_stop_str_in_output else index
                req.text = req.text[:cut]
                return str(stop)
        return None

    def _put(self, req: CoreRequest, new: list[int], finished: bool) -> None:
        sp = req.params
        delta = sp.output_kind == RequestOutputKind.DELTA
        if not finished and sp.output_kind == RequestOutputKind.FINAL_ONLY:
            return
        hold = 0 if finished else sp.output_text_buffer_length  # a tail that may still become a stop string
        end = max(req.sent, len(req.text) - hold)
        text = req.text[req.sent:end] if delta else req.text[:end]
        req.sent = end
        ids = new if delta else list(req.output_ids)
        lps = None
        if sp.logprobs is not None:
            lps = req.logprobs[len(req.logprobs) - len(new):] if delta else list(req.logprobs)
        req.stats.num_generation_tokens += len(new)
        now = time.monotonic()
        req.stats.first_token_ts = req.stats.first_token_ts or now
        req.stats.last_token_ts = now
        completion = CompletionOutput(
            index=0, text=text, token_ids=ids, cumulative_logprob=None, logprobs=lps,
            finish_reason=str(req.finish) if finished else None,
            stop_reason=req.stop_reason if finished else None,
        )
        req.collector.put(RequestOutput(
            request_id=req.external_id, prompt=req.prompt, prompt_token_ids=req.prompt_ids, prompt_logprobs=None,
            outputs=[completion], finished=finished, metrics=req.stats, lora_request=req.lora_request,
            num_cached_tokens=req.cached,
        ))

    def abort_output(self, req: CoreRequest) -> None:
        """The final "abort" output vLLM >= 0.10.1 puts into an aborted request's collector."""
        req.finish = FinishReason.ABORT
        self._put(req, [], finished=True)


_ids = itertools.count(1)


def internal_id(external: str) -> str:
    """vLLM appends a random suffix to the caller's id (so external ids may repeat); the double counts."""
    return f"{external}-{next(_ids):08x}"
