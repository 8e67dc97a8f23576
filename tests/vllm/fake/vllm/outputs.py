"""`vllm.outputs` (0.26): RequestOutput and CompletionOutput, with RequestOutput.add as the output collector uses it."""

from __future__ import annotations

from collections.abc import MutableSequence
from collections.abc import Sequence as GenericSequence
from dataclasses import dataclass
from typing import Any


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: GenericSequence[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Any]] | None
    routed_experts: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None

    def finished(self) -> bool:
        return self.finish_reason is not None


class RequestOutput:
    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int] | None,
                 prompt_logprobs: Any, outputs: list[CompletionOutput], finished: bool, metrics: Any = None,
                 lora_request: Any = None, encoder_prompt: str | None = None,
                 encoder_prompt_token_ids: list[int] | None = None, num_cached_tokens: int | None = None,
                 num_cache_creation_tokens: int | None = None, *, kv_transfer_params: dict[str, Any] | None = None,
                 ec_transfer_params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = lora_request
        self.encoder_prompt = encoder_prompt
        self.encoder_prompt_token_ids = encoder_prompt_token_ids
        self.num_cached_tokens = num_cached_tokens
        self.num_cache_creation_tokens = num_cache_creation_tokens
        self.kv_transfer_params = kv_transfer_params
        self.ec_transfer_params = ec_transfer_params

    def add(self, next_output: RequestOutput, aggregate: bool) -> None:
        """Merge a later output into this one (DELTA: concatenate; otherwise: replace). As in vLLM 0.26, the
        request-level fields (num_cached_tokens, metrics) stay the first output's."""
        self.finished |= next_output.finished
        self.kv_transfer_params = next_output.kv_transfer_params
        self.ec_transfer_params = next_output.ec_transfer_params
        for nxt in next_output.outputs:
            for i, cur in enumerate(self.outputs):
                if cur.index == nxt.index:
                    if aggregate:
                        cur.text += nxt.text
                        if not isinstance(cur.token_ids, MutableSequence):
                            cur.token_ids = list(cur.token_ids)
                        cur.token_ids.extend(nxt.token_ids)
                        if nxt.logprobs:
                            assert cur.logprobs is not None
                            cur.logprobs.extend(nxt.logprobs)
                        cur.cumulative_logprob = nxt.cumulative_logprob
                        cur.finish_reason = nxt.finish_reason
                        cur.stop_reason = nxt.stop_reason
                    else:
                        self.outputs[i] = nxt
                    break
            else:
                self.outputs.append(nxt)
