"""protobuf <-> types. Protobuf types stop here: the servicer hands executors `types.GenerateRequest` only."""

from __future__ import annotations

from collections.abc import Sequence

from trt_gateway import types as t
from trt_gateway.config import LimitsConfig
from trt_gateway.v1 import gateway_pb2 as pb

_FINISH: dict[t.FinishReason, pb.FinishReason] = {
    t.FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    t.FinishReason.STOP_TOKEN: pb.FINISH_REASON_STOP_TOKEN,
    t.FinishReason.STOP_STRING: pb.FINISH_REASON_STOP_STRING,
    t.FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    t.FinishReason.ERROR: pb.FINISH_REASON_ERROR,
}
_RESIDENCY = {t.Residency.GPU: pb.RESIDENCY_GPU, t.Residency.CPU: pb.RESIDENCY_CPU, t.Residency.DISK: pb.RESIDENCY_DISK}


def messages(msgs: Sequence[pb.ChatMessage]) -> tuple[t.ChatMessage, ...]:
    return tuple(
        t.ChatMessage(role=m.role, content=m.content, tool_calls=tool_calls_in(m.tool_calls), tool_call_id=m.tool_call_id)
        for m in msgs
    )


def tool_calls_in(calls: Sequence[pb.ToolCall]) -> tuple[t.ToolCall, ...]:
    return tuple(t.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls)


def tool_calls_out(calls: Sequence[t.ToolCall]) -> list[pb.ToolCall]:
    return [pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def generate_request(msg: pb.GenerateRequest, request_id: str, model: str, default_max_tokens: int) -> t.GenerateRequest:
    """Convert a request (checked afterwards, by `trt_gateway.validation`). Unset optional fields take the documented
    defaults: nothing a client left unset can fail a check."""
    s, st, r, g, sp = msg.sampling, msg.stopping, msg.response, msg.guided, msg.speculative
    prompt = t.Prompt(
        text=msg.text or None,
        token_ids=tuple(msg.token_ids) or None,
        messages=messages(msg.messages) or None,
    )
    return t.GenerateRequest(
        request_id=request_id,
        model=model,
        prompt=prompt,
        sampling=t.SamplingParams(
            temperature=s.temperature if s.HasField("temperature") else 1.0,
            top_p=s.top_p if s.HasField("top_p") else 1.0,
            top_k=s.top_k,
            min_p=s.min_p,
            repetition_penalty=s.repetition_penalty if s.HasField("repetition_penalty") else 1.0,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            seed=s.seed if s.HasField("seed") else None,
            logit_bias=dict(s.logit_bias),
        ),
        stopping=t.StoppingCriteria(
            max_tokens=st.max_tokens if st.HasField("max_tokens") else default_max_tokens,
            min_tokens=st.min_tokens,
            stop=tuple(st.stop),
            stop_token_ids=tuple(st.stop_token_ids),
            include_stop=st.include_stop,
            ignore_eos=st.ignore_eos,
        ),
        response=t.ResponseOptions(
            logprobs=r.logprobs or r.top_logprobs > 0,
            top_logprobs=r.top_logprobs,
            prompt_token_ids=r.prompt_token_ids,
            echo=r.echo,
            queue_position=r.queue_position,
        ),
        guided=t.GuidedDecoding(
            json_schema=g.json_schema or None, regex=g.regex or None, grammar=g.grammar or None, choice=tuple(g.choice)
        ),
        speculative=t.SpeculativeOptions(enabled=not sp.disable, num_draft_tokens=sp.num_draft_tokens or None),
        adapter=msg.adapter or None,
        priority=msg.priority,
        tools=tuple(t.Tool(name=x.name, description=x.description, parameters=x.parameters) for x in msg.tools),
        tool_choice=msg.tool_choice,
        parallel_tool_calls=msg.parallel_tool_calls if msg.HasField("parallel_tool_calls") else True,
    )


def finish_reason(reason: t.FinishReason) -> pb.FinishReason:
    return _FINISH[reason]


def usage(u: t.Usage, adapter: str = "") -> pb.Usage:
    return pb.Usage(
        adapter=adapter,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_tokens=u.cached_tokens,
        draft_tokens=u.draft_tokens,
        accepted_tokens=u.accepted_tokens,
    )


def logprobs(items: Sequence[t.TokenLogprob]) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token_id=lp.token_id,
            token=lp.token,
            logprob=lp.logprob,
            top_logprobs=[pb.TopLogprob(token_id=a.token_id, token=a.token, logprob=a.logprob) for a in lp.top],
        )
        for lp in items
    ]


def prompt_info(p: t.PromptInfo) -> pb.PromptInfo:
    return pb.PromptInfo(num_tokens=p.num_tokens, token_ids=p.token_ids, text=p.text)


def stream_chunk(request_id: str, index: int, delta: t.TokenDelta, adapter: str = "") -> pb.GenerateStreamResponse:
    # Once per chunk: only the fields that are set, so a plain token chunk builds nothing it does not send.
    chunk = pb.GenerateStreamResponse(request_id=request_id, index=index, text=delta.text, token_ids=delta.token_ids)
    if delta.logprobs:
        chunk.logprobs.extend(logprobs(delta.logprobs))
    if delta.prompt is not None:
        chunk.prompt.CopyFrom(prompt_info(delta.prompt))
    if delta.tool_calls:
        chunk.tool_calls.extend(tool_calls_out(delta.tool_calls))
    if delta.reasoning:
        chunk.reasoning = delta.reasoning
    if delta.finish is not None:
        f = delta.finish
        chunk.finish_reason = finish_reason(f.reason)
        chunk.matched_stop = f.matched_stop
        if f.matched_stop_token_id is not None:
            chunk.matched_stop_token_id = f.matched_stop_token_id
        chunk.usage.CopyFrom(usage(f.usage, adapter))
    return chunk


def output(index: int, deltas: Sequence[t.TokenDelta], adapter: str = "") -> pb.Output:
    """Fold one output's deltas into a unary `Output`."""
    out = pb.Output(index=index, text="".join(d.text for d in deltas), reasoning="".join(d.reasoning for d in deltas))
    for d in deltas:
        out.token_ids.extend(d.token_ids)
        out.logprobs.extend(logprobs(d.logprobs))
        out.tool_calls.extend(tool_calls_out(d.tool_calls))
        if d.finish is not None:
            out.finish_reason = finish_reason(d.finish.reason)
            out.matched_stop = d.finish.matched_stop
            if d.finish.matched_stop_token_id is not None:
                out.matched_stop_token_id = d.finish.matched_stop_token_id
            out.usage.CopyFrom(usage(d.finish.usage, adapter))
    return out


def total_usage(outputs: Sequence[pb.Output]) -> pb.Usage:
    total = pb.Usage(
        prompt_tokens=max((o.usage.prompt_tokens for o in outputs), default=0),
        adapter=outputs[0].usage.adapter if outputs else "",
    )
    for o in outputs:
        total.completion_tokens += o.usage.completion_tokens
        total.cached_tokens = max(total.cached_tokens, o.usage.cached_tokens)
        total.draft_tokens += o.usage.draft_tokens
        total.accepted_tokens += o.usage.accepted_tokens
    return total


def model_info(info: t.ServedModel, limits: LimitsConfig, *, default: bool) -> pb.ModelInfo:
    c = info.capabilities
    return pb.ModelInfo(
        name=info.name,
        executor=info.executor,
        executor_version=info.executor_version,
        max_context_length=info.max_context_length,
        vocab_size=info.vocab_size,
        eos_token_ids=info.eos_token_ids,
        capabilities=pb.Capabilities(
            lora=c.lora,
            max_lora_rank=c.max_lora_rank,
            max_loras=c.max_loras,
            speculative=c.speculative,
            num_draft_tokens=c.num_draft_tokens,
            guided=c.guided,
            logprobs=c.logprobs,
            max_top_logprobs=min(c.max_top_logprobs, limits.max_top_logprobs),
            chat_template=c.chat_template,
            tokenize=c.tokenize,
            seed=c.seed,
            penalties=c.penalties,
            logit_bias=c.logit_bias,
            min_p=c.min_p,
        ),
        limits=pb.Limits(
            max_n=limits.max_n,
            max_stop=limits.max_stop,
            max_stop_length=limits.max_stop_length,
            max_tokens=min(limits.max_tokens, info.max_context_length),
            default_max_tokens=limits.default_max_tokens,
            max_prompt_chars=limits.max_prompt_chars,
            max_logit_bias=limits.max_logit_bias,
        ),
        ready=info.ready,
        default=default,
    )


def adapter_info(a: t.AdapterInfo) -> pb.AdapterInfo:
    return pb.AdapterInfo(
        name=a.name,
        path=a.path,
        model=a.model,
        rank=a.rank,
        alpha=a.alpha,
        target_modules=a.target_modules,
        residency=_RESIDENCY[a.residency],
        slot=a.slot,
        active_requests=a.active_requests,
    )
