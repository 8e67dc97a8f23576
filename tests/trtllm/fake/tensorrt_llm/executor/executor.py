"""The double's engine: one asyncio task per request, producing scripted responses step by step."""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

from tensorrt_llm import _fake
from tensorrt_llm.executor.result import GenerationResult, Logprob, Response


class GenerationExecutor:
    def __init__(self, args: Any) -> None:
        self.args = args
        self._ids = itertools.count(1)
        self._cancelled: set[int] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._shutdown = False
        self._iter = 0
        self.stats: collections.deque[dict[str, Any]] = collections.deque(maxlen=args.iter_stats_max_iterations or 1000)

    def is_shutdown(self) -> bool:
        return self._shutdown

    def shutdown(self) -> None:
        self._shutdown = True
        for task in self._tasks.values():
            task.cancel()

    def abort_request(self, request_id: int) -> None:
        _fake.CONTROL.aborted.append(request_id)
        self._cancelled.add(request_id)

    def submit(self, result_cls: type[GenerationResult], sampling_params: Any, prompt_ids: list[int],
               tokenizer: Any, streaming: bool) -> GenerationResult:
        result = result_cls.__new__(result_cls)
        result._init(next(self._ids), sampling_params, self, prompt_ids, tokenizer, streaming)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return result  # no loop: nothing consumes it (the real one would serve result())
        self._tasks[result.request_id] = loop.create_task(self._run(result))
        return result

    async def _run(self, result: GenerationResult) -> None:
        try:
            await self._steps(result)
        finally:
            self._tasks.pop(result.request_id, None)

    def _script(self, prompt_ids: list[int]) -> list[list[int]]:
        if _fake.CONTROL.script is not None:
            return _fake.CONTROL.script
        return [[t] for t in prompt_ids if t >= _fake.OFFSET] + [[_fake.EOS]]

    async def _steps(self, result: GenerationResult) -> None:
        sp, control = result.sampling_params, _fake.CONTROL
        script = self._script(result.prompt_token_ids)
        spec = self.args.speculative_config
        draft_len = (getattr(spec, "max_draft_len", None) or 1) if spec is not None else 0
        generated = 0
        for step_index in itertools.count():
            await asyncio.sleep(control.step_delay_s)
            if result.request_id in self._cancelled:
                result._enqueue(Response(finish_reason="cancelled"))
                return
            if control.fail_after_steps is not None and step_index >= control.fail_after_steps:
                result._enqueue(Response(error=control.step_error or RuntimeError("double: step failed")))
                return
            tokens: list[int] = []
            response = Response()
            for token in script[step_index % len(script)]:
                below_min = generated < (sp.min_tokens or 0)
                if token == sp.end_id and not sp.ignore_eos and not below_min:
                    response.finish_reason = "stop"  # EOS ends the output and is not part of it
                    break
                tokens.append(token)
                generated += 1
                if token in (sp.stop_token_ids or ()) and not below_min:
                    response.finish_reason, response.stop_reason = "stop", token
                    break
                if generated >= sp.max_tokens:
                    response.finish_reason = "length"
                    break
            response.tokens = tokens
            if sp.logprobs:
                response.logprobs = [self._logprob(t, sp.logprobs) for t in tokens]
            if draft_len:
                response.draft_tokens = draft_len
                response.accepted_tokens = min(max(len(tokens) - 1, 0), draft_len)
            self._record_stats()
            result._enqueue(response)
            if response.final:
                return

    @staticmethod
    def _logprob(token: int, k: int) -> Any:
        if _fake.CONTROL.logprobs_as_floats:
            return -0.5
        top = {token: Logprob(-0.5, 1)}
        for rank in range(2, k + 1):  # alternatives: the next ids, less likely
            top[(token + rank - 1) % _fake.VOCAB_SIZE] = Logprob(-1.0 * rank, rank)
        return top

    def _record_stats(self) -> None:
        if not self.args.enable_iter_perf_stats:
            return
        self._iter += 1
        active = len(self._tasks)
        self.stats.append({
            "iter": self._iter, "iterLatencyMS": 2.5, "gpuMemUsage": 1 << 30, "numActiveRequests": active,
            "numQueuedRequests": 0,
            "inflightBatchingStats": {"numScheduledRequests": active, "numContextRequests": 0, "numGenRequests": active},
            "kvCacheStats": {"maxNumBlocks": 100, "freeNumBlocks": 100 - active, "usedNumBlocks": active,
                             "tokensPerBlock": 32, "cacheHitRate": 0.25, "reusedBlocks": 0},
            "specDecodingStats": {}, "timestamp": "00:00:00",
        })
