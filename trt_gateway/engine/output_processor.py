"""The engine's output side: each request's `StepOutput`s become `TokenDelta`s (text detokenised incrementally, stop
strings held back until they can no longer match, logprobs with their token text).

This runs in the engine thread, right after the step that produced the tokens, because a stop string must end its
sequence before the next step computes another token: `end(request_id)` (the engine's `finish`) is applied first
thing in the next `step()`, so output never overshoots a stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from trt_gateway import errors
from trt_gateway.engine.detokenizer import IncrementalDetokenizer, TextDecoder
from trt_gateway.engine.llm_engine import StepOutput
from trt_gateway.stopping import StopStringMatcher
from trt_gateway.types import (
    Finish,
    FinishReason,
    GenerateRequest,
    PromptInfo,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)


@dataclass(eq=False)
class OutputState:
    """One request's text state. Owned by the engine thread."""

    request: GenerateRequest
    prompt_ids: list[int]
    detok: IncrementalDetokenizer
    stop: StopStringMatcher
    done: bool = False  # the final delta (or an error) has been produced


class OutputProcessor:
    def __init__(self, tokenizer: TextDecoder, end: Callable[[str, FinishReason], None]) -> None:
        self._tokenizer = tokenizer
        self._end = end  # ends a sequence the engine would otherwise continue (a matched stop string)

    def state(self, request: GenerateRequest, prompt_ids: list[int]) -> OutputState:
        stopping = request.stopping
        return OutputState(
            request=request,
            prompt_ids=prompt_ids,
            detok=IncrementalDetokenizer(self._tokenizer, prompt_ids),
            stop=StopStringMatcher(stopping.stop, include_stop=stopping.include_stop),
        )

    def process(self, state: OutputState, out: StepOutput) -> TokenDelta | errors.GatewayError | None:
        """The delta for one step's output (None: nothing to say yet), or the error that ended the request."""
        if out.error is not None:
            state.done = True
            return out.error
        request = state.request
        ids = out.new_token_ids
        usage = out.usage
        # The token that ended the sequence (EOS / a stop token id) is text only with include_stop.
        text_ids = ids
        if out.matched_stop_token_id is not None and not request.stopping.include_stop and ids:
            text_ids = ids[:-1]
        if len(text_ids) > 1 and request.stopping.stop:
            # Several tokens at once (accepted drafts): feed them one by one so that a stop string ends the output
            # at the token that completed it; the engine computed the rest, the caller never sees them.
            text = ""
            for i in range(len(text_ids)):
                text += state.stop.push(state.detok.push(text_ids[i : i + 1]))
                if state.stop.matched is not None:
                    dropped = len(ids) - (i + 1)
                    ids = ids[: i + 1]
                    usage = dataclasses.replace(usage, completion_tokens=usage.completion_tokens - dropped)
                    break
        else:
            text = state.stop.push(state.detok.push(text_ids)) if text_ids else ""
        reason = out.finish_reason
        if reason is not None and state.stop.matched is None:
            # Finished for another reason: release held bytes and text (the tail itself may complete a stop).
            text += state.stop.push(state.detok.flush())
            text += state.stop.flush()
        matched = state.stop.matched
        if matched is not None:
            if reason is None:
                self._end(request.request_id, FinishReason.STOP_STRING)
            reason = FinishReason.STOP_STRING
        logprobs = self._logprobs(out)[: len(ids)] if request.response.logprobs else ()
        if reason is None:
            return TokenDelta(text=text, token_ids=ids, logprobs=logprobs) if ids else None
        state.done = True
        finish = Finish(
            reason=reason,
            usage=usage,
            matched_stop=matched or "",
            matched_stop_token_id=out.matched_stop_token_id if reason is FinishReason.STOP_TOKEN else None,
            queue_time_s=out.queue_time_s,
        )
        return TokenDelta(text=text, token_ids=ids, logprobs=logprobs, finish=finish)

    def prompt_delta(self, state: OutputState) -> TokenDelta:
        """The first delta, for a request that asked for its prompt's ids or text back."""
        r = state.request.response
        ids = state.prompt_ids
        text = ""
        if r.echo:
            # A text prompt comes back as sent (decoding its ids would add the BOS the tokenizer put in front, as
            # '<s>hello'); ids and rendered chat messages come back decoded, special tokens and all, since the
            # template's markers are part of what the model saw.
            given = state.request.prompt.text
            text = given if given is not None else self._tokenizer.decode(ids, skip_special_tokens=False)
        return TokenDelta(
            prompt=PromptInfo(num_tokens=len(ids), token_ids=tuple(ids) if r.prompt_token_ids else (), text=text)
        )

    @staticmethod
    def cancelled(state: OutputState) -> TokenDelta:
        """The final delta of a request aborted before it reached the engine."""
        state.done = True
        return TokenDelta(finish=Finish(FinishReason.CANCELLED, Usage(prompt_tokens=len(state.prompt_ids))))

    def _logprobs(self, out: StepOutput) -> tuple[TokenLogprob, ...]:
        decode = self._tokenizer.decode
        return tuple(
            TokenLogprob(
                token_id=s.token_id,
                token=decode([s.token_id], skip_special_tokens=False),
                logprob=s.logprob if s.logprob is not None else 0.0,
                top=tuple(TopLogprob(t, decode([t], skip_special_tokens=False), lp) for t, lp in s.top),
            )
            for s in out.logprobs
        )
