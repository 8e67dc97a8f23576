"""Async scheduling (the next decode step launched before the current step's tokens reach the host) changes when
work is queued, never what is computed: the same requests give the same tokens, finish reasons and logprobs with
and without it, through stop tokens, length limits, aborts, stop strings, new arrivals, seeded sampling,
min_tokens and logit bias, and every block is freed at the end. On the CPU nothing overlaps, but the pipeline runs
the same code (one step computes a row that a stop token already ended, and drops it)."""

from __future__ import annotations

import torch
from engine_helpers import make_engine, make_request, needs_cuda, prompts, run_until_done, tokens_of

from trt_gateway.types import FinishReason


def _scenario(engine, stop_token: int):
    """Arrivals at several steps, an abort and a stop-string finish mid-flight; -> outputs by request id."""
    p = prompts(7, [5, 12, 3, 20, 8, 9, 4], seed=11)
    requests = {
        "greedy": make_request("greedy", max_tokens=14, logprobs=True, top_logprobs=3),
        "stops": make_request("stops", max_tokens=30, stopping={"stop_token_ids": [stop_token]}),
        "sampled": make_request("sampled", max_tokens=12, temperature=0.9, sampling={"seed": 7, "top_p": 0.9}),
        "min_tokens": make_request(
            "min_tokens", max_tokens=10, stopping={"min_tokens": 6, "stop_token_ids": [stop_token]}
        ),
        "biased": make_request("biased", max_tokens=9, sampling={"logit_bias": {stop_token: 2.0, 7: -5.0}}),
        "aborted": make_request("aborted", max_tokens=40),
        "stop_string": make_request("stop_string", max_tokens=40),
    }
    arrivals = {0: ["greedy", "stops", "aborted"], 2: ["sampled", "stop_string"], 5: ["min_tokens", "biased"]}
    prompt_of = dict(zip(requests, p, strict=True))
    outputs: dict[str, list] = {}
    step = 0
    while step < 6 or engine.has_unfinished():
        for rid in arrivals.get(step, []):
            engine.add_request(requests[rid], prompt_of[rid])
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        # Ended by the client and by a stop string after a fixed number of their own tokens (not of steps: async
        # scheduling admits a request one step later when a launched step is in flight).
        if len(tokens_of(outputs.get("aborted", []))) == 3 and not outputs["aborted"][-1].finished:
            engine.abort("aborted")
        if len(tokens_of(outputs.get("stop_string", []))) == 4 and not outputs["stop_string"][-1].finished:
            engine.finish("stop_string", FinishReason.STOP_STRING)
        step += 1
        assert step < 500
    return outputs


def _stop_token(llama) -> int:
    """A token the greedy request produces mid-run, so the stop-token request really stops early."""
    engine = make_engine(llama.path)
    engine.add_request(make_request("probe", max_tokens=30), prompts(7, [5, 12], seed=11)[1])
    return tokens_of(run_until_done(engine)["probe"])[4]


def _summary(outputs):
    """Tokens, finish reason and usage by request; logprobs apart (batches differ, so they may differ in the last
    float32 bits)."""
    return {
        rid: (tokens_of(outs), outs[-1].finish_reason, outs[-1].usage.completion_tokens)
        for rid, outs in outputs.items()
    }


def _logprobs(outputs):
    return {rid: torch.tensor([lp.logprob for o in outs for lp in o.logprobs]) for rid, outs in outputs.items()}


def test_async_scheduling_gives_the_same_results(llama):
    stop = _stop_token(llama)
    sync = make_engine(llama.path, async_scheduling=False)
    pipelined = make_engine(llama.path, async_scheduling=True)
    want_out, got_out = _scenario(sync, stop), _scenario(pipelined, stop)
    want, got = _summary(want_out), _summary(got_out)
    assert got == want
    for rid, lp in _logprobs(want_out).items():
        assert torch.allclose(_logprobs(got_out)[rid], lp, atol=1e-4), rid
    assert len(want["greedy"][0]) == 14 and len(_logprobs(want_out)["greedy"]) == 14
    assert want["aborted"][0] == got["aborted"][0] and len(want["aborted"][0]) == 3
    assert len(want["stop_string"][0]) == 4
    assert want["stops"][1] is FinishReason.STOP_TOKEN and len(want["stops"][0]) < 30
    assert want["aborted"][1] is FinishReason.CANCELLED and want["stop_string"][1] is FinishReason.STOP_STRING
    assert sync.num_async_steps == 0 and pipelined.num_async_steps > 10  # the pipeline really ran
    for engine in (sync, pipelined):
        assert not engine.has_unfinished() and engine.num_free_blocks == engine.num_total_blocks


def test_penalties_and_grammars_are_scheduled_the_ordinary_way(llama):
    engine = make_engine(llama.path, async_scheduling=True)
    engine.add_request(make_request("a", max_tokens=8, sampling={"repetition_penalty": 1.3}), [5, 6, 7])
    engine.add_request(make_request("b", max_tokens=8), [8, 9])
    outputs = run_until_done(engine)
    assert engine.num_async_steps == 0  # one row needs its history on the host: no step launched early
    reference = make_engine(llama.path, async_scheduling=False)
    reference.add_request(make_request("a", max_tokens=8, sampling={"repetition_penalty": 1.3}), [5, 6, 7])
    reference.add_request(make_request("b", max_tokens=8), [8, 9])
    assert _summary(outputs) == _summary(run_until_done(reference))


def test_out_of_memory_launching_the_next_step_falls_back(llama, monkeypatch):
    engine = make_engine(llama.path, async_scheduling=True)
    runner = engine.model_runner
    real_launch = runner.launch
    failures = {"n": 0}

    def launch(step, after=None):
        if after is not None and failures["n"] < 3:
            failures["n"] += 1
            raise torch.OutOfMemoryError("simulated")
        return real_launch(step, after)

    monkeypatch.setattr(runner, "launch", launch)
    engine.add_request(make_request("a", max_tokens=10), [5, 6, 7])
    out = run_until_done(engine)["a"]
    assert len(tokens_of(out)) == 10 and out[-1].finish_reason is FinishReason.LENGTH
    assert failures["n"] == 3 and engine.num_async_steps > 0
    assert engine.num_free_blocks == engine.num_total_blocks


@needs_cuda
def test_async_scheduling_is_on_by_default_on_cuda(llama):
    assert make_engine(llama.path, device="cuda", dtype="float32").async_scheduling
    assert not make_engine(llama.path).async_scheduling
