"""`tensorrt_llm.executor.result` [RES]: cumulative outputs with diff properties, abort, async iteration."""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tensorrt_llm import _fake


class Logprob(NamedTuple):
    logprob: float
    rank: int | None = None


@dataclass
class SpeculativeDecodingMetrics:
    acceptance_rate: float = 0.0
    total_accepted_draft_tokens: int = 0
    total_draft_tokens: int = 0


@dataclass
class RequestPerfMetrics:
    timing_metrics: Any = None
    kv_cache_metrics: Any = None
    speculative_decoding: SpeculativeDecodingMetrics = field(default_factory=SpeculativeDecodingMetrics)


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[Any] = field(default_factory=list)
    prompt_logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    generation_logits: Any = None
    additional_context_outputs: Any = None
    additional_generation_outputs: Any = None
    disaggregated_params: Any = None
    request_perf_metrics: Any = None
    _last_text_len: int = field(default=0, init=False, repr=False)
    _last_token_ids_len: int = field(default=0, init=False, repr=False)
    _last_logprobs_len: int = field(default=0, init=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len :]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]

    @property
    def logprobs_diff(self) -> list[Any]:
        return self.logprobs[self._last_logprobs_len :]


@dataclass
class Response:
    """One engine response for one request (internal)."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: BaseException | None = None
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


def has_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class GenerationResult:
    """GenerationResultBase + GenerationResult + DetokenizedGenerationResultBase, folded into one class."""

    def _init(self, request_id: int, sampling_params: Any, executor: Any, prompt_token_ids: list[int],
              tokenizer: Any, streaming: bool) -> None:
        self.request_id = request_id
        self.sampling_params = sampling_params
        self._executor = weakref.ref(executor)
        self.prompt_token_ids = prompt_token_ids
        self.tokenizer = tokenizer
        self._streaming = streaming
        self._outputs = [CompletionOutput(i) for i in range(sampling_params.best_of or 1)]
        self._done = False
        self._aborted = False
        self.aqueue: asyncio.Queue[Response] | None = asyncio.Queue() if has_event_loop() else None
        self.decoding_iter = 0
        self.cached_tokens = 0
        self.avg_decoded_tokens_per_iter: float | None = None
        self.metrics_dict: dict[str, float] = {}
        self.disaggregated_params = None
        self.context_logits = None
        self.mm_embedding_handle = None
        self._draft = 0
        self._accepted = 0

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def outputs(self) -> list[CompletionOutput]:
        return self._outputs[: self.sampling_params.n]

    def abort(self) -> None:
        executor = self._executor()
        assert executor is not None, "The executor is already destroyed"
        _fake.CONTROL.abort_calls.append(self.request_id)
        executor.abort_request(self.request_id)
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def __hash__(self) -> int:
        return hash(self.request_id)

    # engine side
    def _enqueue(self, response: Response) -> None:
        if self.aqueue is not None:
            self.aqueue.put_nowait(response)

    def _handle_response(self, response: Response) -> None:
        if response.error is not None:
            self._done = True
            raise response.error
        sp = self.sampling_params
        self.decoding_iter += 1
        self._draft += response.draft_tokens
        self._accepted += response.accepted_tokens
        for out in self._outputs:
            # The diff markers are set just before the response is merged.
            out._last_text_len = len(out.text)
            out._last_token_ids_len = len(out.token_ids)
            out._last_logprobs_len = len(out.logprobs)
            out.token_ids.extend(response.tokens)
            out.logprobs.extend(response.logprobs)
            if response.final:
                out.finish_reason = response.finish_reason
                out.stop_reason = response.stop_reason
                if isinstance(out.stop_reason, int) and not sp.include_stop_str_in_output:
                    if out.token_ids and out.token_ids[-1] == out.stop_reason:
                        out.token_ids.pop()  # stop token ids are trimmed on the final response
                self._done = True
            if sp.detokenize and self.tokenizer is not None:
                out.text = self.tokenizer.decode(out.token_ids, skip_special_tokens=sp.skip_special_tokens)
            if sp.return_perf_metrics:
                rate = self._accepted / self._draft if self._draft else 0.0
                out.request_perf_metrics = RequestPerfMetrics(
                    timing_metrics={"arrival_time": 0.0, "first_token_time": time.monotonic()},
                    speculative_decoding=SpeculativeDecodingMetrics(rate, self._accepted, self._draft),
                )
            stops = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
            for stop in stops:
                idx = out.text.find(stop)
                if idx >= 0 and out.finish_reason != "cancelled":
                    out.text = out.text[: idx + len(stop)] if sp.include_stop_str_in_output else out.text[:idx]
                    out.finish_reason, out.stop_reason = "stop", stop
                    if not self._done:
                        self.abort()
                    self._done = True
                    break

    # consumer side
    def __aiter__(self) -> GenerationResult:
        return self

    async def __anext__(self) -> GenerationResult:
        assert self.aqueue is not None, "generate_async was called without a running event loop"
        if self._done:
            raise StopAsyncIteration
        self._handle_response(await self.aqueue.get())
        return self

    async def aresult(self) -> GenerationResult:
        while not self._done:
            await self.__anext__()
        return self

    def __await__(self) -> Any:
        return self.aresult().__await__()

    def result(self, timeout: float | None = None) -> GenerationResult:
        raise NotImplementedError("the double does not simulate blocking result(); iterate with async for")


class IterationResult:
    """What get_stats_async returns: an async iterable of stats dicts that ends after `timeout` s of silence."""

    def __init__(self, source: Any, timeout: float) -> None:
        self._source = source
        self._timeout = timeout

    def __aiter__(self) -> IterationResult:
        return self

    async def __anext__(self) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout
        while not self._source:
            if time.monotonic() >= deadline:
                raise StopAsyncIteration
            await asyncio.sleep(0.005)
        return self._source.popleft()
