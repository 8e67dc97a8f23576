"""Golden tests: the engine against HF transformers on tiny random checkpoints.

Tolerances (stated once, in engine_helpers.DeviceCase):
- CPU float32: logits max |diff| <= 1e-4 (worst seen 4.4e-6) and greedy tokens identical to HF
  generate(do_sample=False);
- bfloat16 (CPU, and CUDA when a GPU exists; HF runs in the same dtype on the same device): logits max |diff| <= 0.15
  (logits here span about +-5; worst seen 0.086 on CPU, 0.078 on an H100), and greedy tokens identical except after
  a position where HF's own top-2 logits are within 0.3 (= 2 x 0.15: a bf16 near-tie may fork the path).
Each comparison prints its worst difference (run with -s to see them).
"""

from __future__ import annotations

import pytest
from engine_golden import assert_close, check_against_hf, engine_logits, hf_logits
from engine_helpers import VARIANTS, make_engine, make_request, prompts, run_until_done, tokens_of

KINDS = list(VARIANTS)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_hf_for_prefill_chunks_and_decode(checkpoints, device_case, kind):
    ckpt = checkpoints[kind]
    engine = make_engine(ckpt.path, device_case)
    tokens = prompts(1, [24], seed=1)[0]
    want = hf_logits(ckpt, device_case, tokens)
    # one fresh prefill of 10, a chunk of 11 reading the first 10 from the paged cache, then three decodes
    got = engine_logits(engine, tokens, [10, 11, 1, 1, 1])
    assert_close(got[:10], want[:10], device_case.logits_atol, f"{kind} prefill logits")
    assert_close(got[10:21], want[10:21], device_case.logits_atol, f"{kind} chunked-prefill logits")
    assert_close(got[21:], want[21:], device_case.logits_atol, f"{kind} decode logits")
    assert engine.num_free_blocks == engine.num_total_blocks


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_single_requests_match_hf(checkpoints, device_case, kind):
    ckpt = checkpoints[kind]
    engine = make_engine(ckpt.path, device_case)
    request_prompts = dict(zip(["a", "b", "c"], prompts(3, [1, 9, 30], seed=2), strict=True))
    outputs = {}
    for rid, prompt in request_prompts.items():  # one at a time: batch of one
        engine.add_request(make_request(rid, max_tokens=20, logprobs=True, top_logprobs=5), prompt)
        outputs.update(run_until_done(engine))
    check_against_hf(ckpt, device_case, outputs, request_prompts, 20, check_logprobs=True)
    assert engine.num_free_blocks == engine.num_total_blocks


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_batch_joining_mid_flight_matches_hf(checkpoints, device_case, kind, async_scheduling):
    ckpt = checkpoints[kind]
    # async: each step launched before the previous one's tokens reach the host (the CUDA default)
    engine = make_engine(ckpt.path, device_case, async_scheduling=async_scheduling)
    request_prompts = dict(zip("abcdef", prompts(6, [5, 17, 3, 26, 11, 8], seed=3), strict=True))
    outputs: dict = {}
    schedule = {0: "ab", 3: "cd", 5: "e", 9: "f"}  # step index -> requests that arrive before it
    step = 0
    while step < 10 or engine.has_unfinished():
        for rid in schedule.get(step, ""):
            engine.add_request(make_request(rid, max_tokens=18, logprobs=True, top_logprobs=5), request_prompts[rid])
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        step += 1
    check_against_hf(ckpt, device_case, outputs, request_prompts, 18, check_logprobs=True)
    assert engine.num_free_blocks == engine.num_total_blocks
    assert (engine.num_async_steps > 0) == async_scheduling


def test_chunked_prefill_matches_hf(checkpoints, device_case, monkeypatch):
    ckpt = checkpoints["llama3_gqa"]
    # 7 tokens a step: every prompt is split into chunks, and decodes share steps with chunks
    engine = make_engine(ckpt.path, device_case, max_num_batched_tokens=7)
    request_prompts = dict(zip("abc", prompts(3, [30, 19, 5], seed=4), strict=True))
    for rid, prompt in request_prompts.items():
        engine.add_request(make_request(rid, max_tokens=12), prompt)
    seen_chunk: list[int] = []
    schedule = engine.scheduler.schedule

    def spy():
        out = schedule()
        assert out.num_batched_tokens <= 7
        seen_chunk.extend(s.num_new_tokens for s in out.scheduled if not s.samples)
        return out

    monkeypatch.setattr(engine.scheduler, "schedule", spy)
    outputs = run_until_done(engine)
    assert seen_chunk, "no prompt was chunked"
    check_against_hf(ckpt, device_case, outputs, request_prompts, 12)
    assert engine.num_free_blocks == engine.num_total_blocks


def test_prefix_cache_hits_give_identical_output(checkpoints, device_case):
    ckpt = checkpoints["qwen2"]
    engine = make_engine(ckpt.path, device_case)
    base = prompts(1, [21], seed=5)[0]
    sibling = base[:13] + prompts(1, [6], seed=6)[0]  # shares 3 full blocks (12 tokens) of 4
    engine.add_request(make_request("first", max_tokens=10), base)
    outputs = run_until_done(engine)
    # Same prompt again: 5 full blocks could be reused, the last token is always recomputed (20 of 21).
    engine.add_request(make_request("again", max_tokens=10), base)
    engine.add_request(make_request("sibling", max_tokens=10), sibling)
    outputs.update(run_until_done(engine))
    assert outputs["again"][-1].usage.cached_tokens == 20
    assert outputs["sibling"][-1].usage.cached_tokens == 12
    assert outputs["first"][-1].usage.cached_tokens == 0
    assert tokens_of(outputs["again"]) == tokens_of(outputs["first"])
    check_against_hf(ckpt, device_case, outputs, {"first": base, "again": base, "sibling": sibling}, 10)
    assert engine.num_free_blocks == engine.num_total_blocks


def test_prefix_cache_shared_with_a_running_sequence(checkpoints, device_case):
    ckpt = checkpoints["llama"]
    engine = make_engine(ckpt.path, device_case)
    prompt = prompts(1, [17], seed=7)[0]
    engine.add_request(make_request("a", max_tokens=12), prompt)
    outputs: dict = {}
    for out in engine.step():  # a's prompt is computed and its 4 full blocks published
        outputs.setdefault(out.request_id, []).append(out)
    engine.add_request(make_request("b", max_tokens=12), prompt)
    for rid, outs in run_until_done(engine).items():
        outputs.setdefault(rid, []).extend(outs)
    assert outputs["b"][-1].usage.cached_tokens == 16
    check_against_hf(ckpt, device_case, outputs, {"a": prompt, "b": prompt}, 12)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preemption_still_matches_hf(checkpoints, device_case, prefix_caching, monkeypatch):
    ckpt = checkpoints["llama3_gqa"]
    # 16 blocks of 4 tokens = one max_model_len sequence; four requests need ~40 tokens each
    engine = make_engine(
        ckpt.path, device_case, max_model_len=64, num_kv_blocks=16, enable_prefix_caching=prefix_caching
    )
    request_prompts = dict(zip("abcd", prompts(4, [10, 14, 12, 11], seed=8), strict=True))
    for rid, prompt in request_prompts.items():
        engine.add_request(make_request(rid, max_tokens=30, stopping={"ignore_eos": False}), prompt)
    preempted: list[str] = []
    schedule = engine.scheduler.schedule

    def spy():
        out = schedule()
        preempted.extend(s.request_id for s in out.preempted)
        return out

    monkeypatch.setattr(engine.scheduler, "schedule", spy)
    outputs = run_until_done(engine)
    assert preempted, "the tiny KV cache never forced a preemption"
    check_against_hf(ckpt, device_case, outputs, request_prompts, 30)
    assert engine.num_free_blocks == engine.num_total_blocks
