"""LLMEngine behaviour: stop rules, abort/finish, validation, seeds, priority, errors, block accounting."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import EOS, make_engine, make_request, prompts, run_until_done, tokens_of

from trt_gateway import errors
from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.types import FinishReason


@pytest.fixture
def engine(llama):
    return make_engine(llama.path)


def test_max_tokens_finishes_with_length_and_usage(engine):
    engine.add_request(make_request("a", max_tokens=5, stopping={"ignore_eos": True}), [5, 6, 7])
    outs = run_until_done(engine)["a"]
    assert [len(o.new_token_ids) for o in outs] == [1] * 5
    assert [o.finish_reason for o in outs] == [None] * 4 + [FinishReason.LENGTH]
    assert outs[-1].usage.prompt_tokens == 3 and outs[-1].usage.completion_tokens == 5
    assert outs[-1].queue_time_s >= 0


def test_stop_token_id_finishes_and_is_reported(engine):
    engine.add_request(make_request("probe", max_tokens=6, stopping={"ignore_eos": True}), [5, 6, 7])
    third = tokens_of(run_until_done(engine)["probe"])[2]
    engine.add_request(
        make_request("a", max_tokens=6, stopping={"stop_token_ids": (third,), "ignore_eos": True}), [5, 6, 7]
    )
    outs = run_until_done(engine)["a"]
    assert tokens_of(outs)[-1] == third and len(tokens_of(outs)) <= 3
    assert outs[-1].finish_reason is FinishReason.STOP_TOKEN and outs[-1].matched_stop_token_id == third


def test_eos_stops_unless_ignored_and_min_tokens_delays_it(engine):
    force_eos = {"logit_bias": {EOS: 100.0}}  # the largest bias a request may set
    engine.add_request(make_request("eos", sampling=force_eos), [5, 6])
    engine.add_request(make_request("ignore", max_tokens=4, sampling=force_eos, stopping={"ignore_eos": True}), [5, 6])
    engine.add_request(make_request("min", sampling=force_eos, stopping={"min_tokens": 3}), [5, 6])
    outs = run_until_done(engine)
    assert tokens_of(outs["eos"]) == [EOS] and outs["eos"][-1].finish_reason is FinishReason.STOP_TOKEN
    assert tokens_of(outs["ignore"]) == [EOS] * 4 and outs["ignore"][-1].finish_reason is FinishReason.LENGTH
    assert len(tokens_of(outs["min"])) == 4 and EOS not in tokens_of(outs["min"])[:3]
    assert outs["min"][-1].matched_stop_token_id == EOS


def test_context_window_full_finishes_with_length(llama):
    engine = make_engine(llama.path, max_model_len=12)
    engine.add_request(make_request("a", max_tokens=100, stopping={"ignore_eos": True}), list(range(3, 12)))
    outs = run_until_done(engine)["a"]
    assert len(tokens_of(outs)) == 3 and outs[-1].finish_reason is FinishReason.LENGTH


def test_abort_frees_blocks_of_running_and_waiting_requests(llama):
    engine = make_engine(llama.path, max_num_seqs=1)
    total = engine.num_total_blocks
    engine.add_request(make_request("running", max_tokens=50), list(range(3, 20)))
    engine.add_request(make_request("waiting", max_tokens=50), list(range(3, 20)))
    engine.step()
    engine.step()
    assert engine.num_free_blocks < total
    engine.abort("running")
    engine.abort("waiting")
    engine.abort("unknown")  # ignored
    outs = engine.step()
    assert {(o.request_id, o.finish_reason) for o in outs} == {
        ("running", FinishReason.CANCELLED),
        ("waiting", FinishReason.CANCELLED),
    }
    assert engine.num_free_blocks == total and not engine.has_unfinished()


def test_finish_for_a_stop_string_ends_the_request(engine):
    engine.add_request(make_request("a", max_tokens=50, stopping={"ignore_eos": True}), [5, 6, 7])
    first = engine.step()
    engine.finish("a", FinishReason.STOP_STRING)
    outs = engine.step()
    assert len(first) == 1 and first[0].finish_reason is None
    assert outs[0].finish_reason is FinishReason.STOP_STRING and outs[0].new_token_ids == ()
    assert outs[0].usage.completion_tokens == 1
    assert engine.num_free_blocks == engine.num_total_blocks


def test_out_of_memory_fails_the_step_requests_without_leaking(engine, monkeypatch):
    engine.add_request(make_request("a", max_tokens=5), [5, 6, 7])
    engine.step()

    def oom(_, after=None):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine.model_runner, "launch", oom)
    outs = engine.step()
    assert outs[0].finish_reason is FinishReason.ERROR
    assert isinstance(outs[0].error, errors.ResourceExhausted)
    assert engine.num_free_blocks == engine.num_total_blocks and not engine.has_unfinished()


@pytest.mark.parametrize(
    ("prompt", "request_kwargs", "field"),
    [
        ([], {}, "prompt"),
        (list(range(3, 300)), {}, "prompt"),  # longer than max_model_len=256
        ([5, 9999], {}, "token_ids"),
        ([5], {"temperature": -1.0}, "sampling.temperature"),
        ([5], {"sampling": {"top_p": 0.0}}, "sampling.top_p"),
        ([5], {"top_logprobs": 1000}, "response.top_logprobs"),
        ([5], {"sampling": {"logit_bias": {9999: 1.0}}}, "sampling.logit_bias"),
        ([5], {"max_tokens": 0}, "stopping.max_tokens"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(engine, prompt, request_kwargs, field):
    with pytest.raises(errors.InvalidArgument) as exc:
        engine.add_request(make_request("bad", **request_kwargs), prompt)
    assert exc.value.field == field
    assert not engine.has_unfinished()


def test_duplicate_request_id_is_refused(engine):
    engine.add_request(make_request("a"), [5])
    with pytest.raises(errors.AlreadyExists):
        engine.add_request(make_request("a"), [6])


def test_seeded_sampling_does_not_depend_on_the_batch(llama):
    sampling = {"seed": 42, "top_k": 20}
    prompt = prompts(1, [9], seed=11)[0]
    alone = make_engine(llama.path)
    alone.add_request(make_request("x", max_tokens=12, temperature=1.0, sampling=sampling), prompt)
    want = tokens_of(run_until_done(alone)["x"])

    crowded = make_engine(llama.path, max_num_batched_tokens=6)  # chunked, with other traffic
    for i, p in enumerate(prompts(3, [4, 13, 7], seed=12)):
        crowded.add_request(make_request(f"o{i}", max_tokens=15, temperature=1.3), p)
    crowded.step()
    crowded.add_request(make_request("x", max_tokens=12, temperature=1.0, sampling=sampling), prompt)
    assert tokens_of(run_until_done(crowded)["x"]) == want

    other_seed = make_engine(llama.path)
    other_seed.add_request(
        make_request("x", max_tokens=12, temperature=1.0, sampling={"seed": 43, "top_k": 20}), prompt
    )
    assert tokens_of(run_until_done(other_seed)["x"]) != want


def test_priority_runs_first_when_slots_are_scarce(llama):
    engine = make_engine(llama.path, max_num_seqs=1)
    engine.add_request(make_request("low", max_tokens=3), [5, 6])
    engine.add_request(make_request("high", max_tokens=3, priority=10), [7, 8])
    finished = [o.request_id for _ in range(20) for o in engine.step() if o.finished]
    assert finished == ["high", "low"]


def test_cpu_threads_sets_torch_threads(llama):
    before = torch.get_num_threads()
    try:
        make_engine(llama.path, cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(EngineConfigError, match="cpu_threads"):
        make_engine(llama.path, cpu_threads=-1)


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 1e-6, 9.9e-6])
def test_a_temperature_below_the_greedy_epsilon_decodes_greedily(llama, temperature):
    """1e-45 once divided the logits into inf / nan and ended the request at once with EOS. Below
    GREEDY_TEMPERATURE (1e-5) a temperature means greedy, alone and in a batch with sampled rows."""
    prompt = prompts(1, [7], seed=5)[0]
    greedy = make_engine(llama.path)
    greedy.add_request(make_request("g", max_tokens=12, temperature=0.0), prompt)
    want = tokens_of(run_until_done(greedy)["g"])
    assert len(want) == 12  # the tiny model does not end at once: a wrong EOS would show

    alone = make_engine(llama.path)
    alone.add_request(make_request("t", max_tokens=12, temperature=temperature), prompt)
    assert tokens_of(run_until_done(alone)["t"]) == want

    mixed = make_engine(llama.path)  # a sampled row in the batch: the per-row temperature path
    mixed.add_request(make_request("s", max_tokens=12, temperature=0.9, sampling={"seed": 1}), prompts(1, [5])[0])
    mixed.add_request(make_request("t", max_tokens=12, temperature=temperature), prompt)
    assert tokens_of(run_until_done(mixed)["t"]) == want
