"""One TensorRT-LLM `RequestOutput`, streamed as gateway `TokenDelta`s.

`async for out in result` yields the same object, mutated, once per engine response. Per response:
1. copy `text_diff` and `token_ids_diff` at once (the next response overwrites them); either may hold several
   tokens (speculative decoding, `stream_interval`), and the final response may carry content and EOS together;
2. pass the text through the gateway's StopStringMatcher, so no part of a stop string is ever sent: TensorRT-LLM
   truncates its cumulative `text` only when the whole stop string is there, after earlier diffs already held its
   start;
3. on the final response emit its content and the finish (reason, matched stop, usage with spec-decoding counts).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from trt_gateway import errors
from trt_gateway.executors.request_output import logprobs, prompt_info
from trt_gateway.executors.trtllm.params import finish_reason, spec_counts
from trt_gateway.stopping import StopStringMatcher
from trt_gateway.types import Finish, FinishReason, GenerateRequest, TokenDelta, Usage

log = logging.getLogger(__name__)


async def deltas(
    request: GenerateRequest,
    result: Any,
    decode: Callable[[list[int]], str],
    fatal_errors: tuple[type[BaseException], ...],
    request_errors: tuple[type[BaseException], ...],
) -> AsyncGenerator[TokenDelta, None]:
    stop = StopStringMatcher(request.stopping.stop, include_stop=request.stopping.include_stop)
    r = request.response
    want_prompt = r.prompt_token_ids or r.echo
    released = seen_logprobs = 0  # characters sent; logprob entries converted
    try:
        async for out in result:
            completion = out.outputs[0]
            text, ids = stop.push(completion.text_diff), tuple(completion.token_ids_diff)  # copies (step 1)
            lps: tuple = ()
            if r.logprobs:
                new = list(completion.logprobs)[seen_logprobs:]
                lps = logprobs(new, ids, r.top_logprobs, lambda t: decode([t]))
                seen_logprobs += len(lps)
            prompt = prompt_info(out, r.prompt_token_ids, r.echo, decode) if want_prompt else None
            want_prompt = False
            if stop.matched is not None and not out.finished:
                abort_result(result)  # the gateway saw the stop string first; end the TensorRT-LLM request too
            elif out.finished and stop.matched is None:
                if isinstance(completion.stop_reason, str):
                    # TensorRT-LLM matched a stop string and truncated its text, possibly behind text_diff's back
                    # (step 2); what it kept beyond what was sent is the rest of the output.
                    text = completion.text[released:]
                else:
                    text += stop.flush()  # no stop string can complete any more: release the held tail
            if stop.matched is not None or out.finished:
                yield TokenDelta(text, ids, lps, prompt, _finish(out, completion, stop))
                return
            if text or ids or prompt:
                released += len(text)
                yield TokenDelta(text, ids, lps, prompt)
    except errors.GatewayError:
        raise
    except fatal_errors as exc:
        raise errors.EngineDead(f"TensorRT-LLM failed: {exc}") from exc
    except request_errors as exc:
        raise errors.Internal(f"TensorRT-LLM failed the request: {exc}") from exc
    raise errors.Internal("TensorRT-LLM ended the stream without a final response")


def _finish(out: Any, completion: Any, stop: StopStringMatcher) -> Finish:
    if stop.matched is not None:
        reason, matched, token = FinishReason.STOP_STRING, stop.matched, None
    else:
        reason, matched, token = finish_reason(completion)
    draft, accepted = spec_counts(completion)
    usage = Usage(
        prompt_tokens=len(out.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids),
        cached_tokens=int(getattr(out, "cached_tokens", 0) or 0),
        draft_tokens=draft,
        accepted_tokens=accepted,
    )
    return Finish(reason, usage, matched_stop=matched, matched_stop_token_id=token)


def abort_result(result: Any) -> None:
    """`RequestOutput.abort()`, once; stopping the iteration alone would leave the request running on the GPU."""
    try:
        if not (hasattr(result, "aborted") and result.aborted()):
            result.abort()
    except Exception:  # noqa: BLE001 - e.g. the executor weakref is gone at shutdown; the request dies with it
        log.warning("RequestOutput.abort() failed for TensorRT-LLM request %s", getattr(result, "request_id", "?"),
                    exc_info=True)
