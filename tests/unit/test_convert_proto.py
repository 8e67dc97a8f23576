"""convert: protobuf -> types with documented defaults ("unset" differs from zero), and chunks / outputs back."""

from __future__ import annotations

from trt_gateway import types as t
from trt_gateway.config import LimitsConfig
from trt_gateway.server import convert
from trt_gateway.v1 import gateway_pb2 as pb

LIMITS = LimitsConfig(default_max_tokens=77)


def test_unset_fields_take_the_documented_defaults() -> None:
    r = convert.generate_request(pb.GenerateRequest(text="hi"), "rid", "m", LIMITS.default_max_tokens)
    assert r.request_id == "rid" and r.model == "m"
    assert r.prompt == t.Prompt(text="hi")
    assert r.sampling == t.SamplingParams(temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=None)
    assert r.stopping.max_tokens == 77
    assert r.response == t.ResponseOptions()
    assert r.guided.kind is None
    assert r.speculative == t.SpeculativeOptions(enabled=True, num_draft_tokens=None)
    assert r.adapter is None and r.priority == 0


def test_zero_is_not_unset() -> None:
    msg = pb.GenerateRequest(
        token_ids=[1, 2],
        sampling=pb.SamplingParams(temperature=0.0, seed=0, top_p=0.5, logit_bias={3: -1.5}),
        stopping=pb.StoppingCriteria(max_tokens=5, min_tokens=2, stop=["x"], stop_token_ids=[9], include_stop=True,
                                     ignore_eos=True),
        response=pb.ResponseOptions(top_logprobs=3, echo=True),
        guided=pb.GuidedDecoding(choice=["a", "b"]),
        speculative=pb.SpeculativeOptions(disable=True, num_draft_tokens=2),
        adapter="sql",
        priority=-4,
    )
    r = convert.generate_request(msg, "rid", "m", LIMITS.default_max_tokens)
    assert r.prompt.token_ids == (1, 2) and r.prompt.text is None and r.prompt.messages is None
    assert r.sampling.temperature == 0.0 and r.sampling.seed == 0 and r.sampling.top_p == 0.5
    assert r.sampling.logit_bias == {3: -1.5}
    assert r.stopping == t.StoppingCriteria(5, 2, ("x",), (9,), True, True)
    assert r.response.logprobs and r.response.top_logprobs == 3 and r.response.echo  # top_logprobs implies logprobs
    assert r.guided.kind == "choice" and r.guided.choice == ("a", "b")
    assert r.speculative == t.SpeculativeOptions(enabled=False, num_draft_tokens=2)
    assert r.adapter == "sql" and r.priority == -4


def test_messages() -> None:
    msg = pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content="hi")])
    r = convert.generate_request(msg, "rid", "m", LIMITS.default_max_tokens)
    assert r.prompt.messages == (t.ChatMessage("user", "hi"),)


def test_every_finish_reason_maps() -> None:
    for reason in t.FinishReason:
        assert convert.finish_reason(reason) != pb.FINISH_REASON_UNSPECIFIED


def test_chunk_and_output_folding() -> None:
    lp = t.TokenLogprob(104, "h", -0.5, (t.TopLogprob(104, "h", -0.5), t.TopLogprob(105, "i", -1.0)))
    deltas = [
        t.TokenDelta(prompt=t.PromptInfo(num_tokens=2, token_ids=(1, 2), text="ab")),
        t.TokenDelta(text="h", token_ids=(104,), logprobs=(lp,)),
        t.TokenDelta(text="i", token_ids=(105,)),
        t.TokenDelta(finish=t.Finish(t.FinishReason.STOP_TOKEN, t.Usage(2, 3, 1, 4, 2), matched_stop_token_id=0)),
    ]
    first = convert.stream_chunk("rid", 1, deltas[0])
    assert first.request_id == "rid" and first.index == 1 and first.prompt.text == "ab"
    assert not convert.stream_chunk("rid", 1, deltas[1]).HasField("prompt")
    last = convert.stream_chunk("rid", 1, deltas[3])
    assert last.finish_reason == pb.FINISH_REASON_STOP_TOKEN
    assert last.HasField("matched_stop_token_id") and last.matched_stop_token_id == 0  # id 0 is still "set"
    assert last.usage == pb.Usage(prompt_tokens=2, completion_tokens=3, cached_tokens=1, draft_tokens=4,
                                  accepted_tokens=2)
    out = convert.output(1, deltas)
    assert out.index == 1 and out.text == "hi" and list(out.token_ids) == [104, 105]
    assert [x.token_id for x in out.logprobs[0].top_logprobs] == [104, 105]
    assert out.finish_reason == pb.FINISH_REASON_STOP_TOKEN and out.matched_stop_token_id == 0
    no_stop = convert.output(0, [t.TokenDelta(finish=t.Finish(t.FinishReason.LENGTH, t.Usage()))])
    assert not no_stop.HasField("matched_stop_token_id")


def test_total_usage_counts_the_prompt_once() -> None:
    outs = [
        pb.Output(usage=pb.Usage(prompt_tokens=5, completion_tokens=3, cached_tokens=2, draft_tokens=4,
                                 accepted_tokens=1)),
        pb.Output(usage=pb.Usage(prompt_tokens=5, completion_tokens=7, cached_tokens=5, draft_tokens=2,
                                 accepted_tokens=2)),
    ]
    total = convert.total_usage(outs)
    assert total == pb.Usage(prompt_tokens=5, completion_tokens=10, cached_tokens=5, draft_tokens=6, accepted_tokens=3)
    assert convert.total_usage([]) == pb.Usage()
