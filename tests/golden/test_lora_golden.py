"""Golden tests for multi-LoRA: mixed batches through LLMEngine against HF transformers + PEFT, token for token.

Three random PEFT adapters on one tiny random Llama (random B too, so each adapter changes the output):
    wide   r=8,  alpha=16, all seven projections           scaling alpha / r
    narrow r=4,  alpha=8,  q_proj and v_proj, rsLoRA        scaling alpha / sqrt(r)
    mlp    r=16, alpha=32, o_proj, gate_proj, up_proj, down_proj
Tolerance, CPU float32: logits max |diff| <= 1e-4 at every generated position (worst seen ~4e-6; printed, run -s),
and greedy tokens identical to PEFT's `generate(do_sample=False)` for every request in the batch. CUDA float32
(two tests, GPU only): engine_helpers.CUDA_FP32's tolerances against the same CPU PEFT reference. Each test runs
twice: with the per-row gather (bgmv) and with the per-adapter segments (sgmv) forced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_golden import assert_close, assert_same_greedy, peft_greedy, save_peft_adapter
from engine_helpers import (
    CPU_FP32,
    FP32_ON_EACH_DEVICE,
    DeviceCase,
    build_hf_model,
    make_engine,
    make_request,
    prompts,
    run_until_done,
    tokens_of,
)

from trt_gateway.engine.layers import lora as batched

ADAPTERS = {
    "wide": dict(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    ),
    "narrow": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True),
    "mlp": dict(r=16, lora_alpha=32, target_modules=["o_proj", "gate_proj", "up_proj", "down_proj"]),
}
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def lora_setup(tmp_path_factory):
    base = build_hf_model("llama")
    root = tmp_path_factory.mktemp("lora-golden")
    base.save_pretrained(root / "base")
    refs = {"": base}
    for i, (name, kwargs) in enumerate(ADAPTERS.items()):
        refs[name] = save_peft_adapter(base, root / name, seed=100 + i, **kwargs)
    return root, refs


def lora_engine(root: Path, **overrides):
    engine = make_engine(root / "base", max_loras=overrides.pop("max_loras", 4), max_lora_rank=16, **overrides)
    for name in ADAPTERS:
        engine.lora.register(name, str(root / name))
    return engine


def record_logits(engine) -> dict[str, list[torch.Tensor]]:
    """Capture the logits each request sampled from, step by step (wraps the runner's prepare, the lm head and, on
    CUDA, the graph replays that steps without adapters take)."""
    runner, seen = engine.model_runner, {}
    prepare, compute = runner.prepare, runner.model.compute_logits
    order: list[str] = []

    def record(logits):
        for rid, row in zip(order, logits, strict=True):
            seen.setdefault(rid, []).append(row.detach().clone())

    def spy_prepare(scheduled, **kwargs):
        inputs = prepare(scheduled, **kwargs)
        order[:] = [item.seq.request_id for item in scheduled if item.samples]
        return inputs

    def spy_compute(hidden):
        logits = compute(hidden)
        record(logits)
        return logits

    runner.prepare, runner.model.compute_logits = spy_prepare, spy_compute
    if runner.graphs is not None:
        replay = runner.graphs.run

        def spy_replay(batch):
            logits = replay(batch)
            record(logits[batch.logit_rows])
            return logits

        runner.graphs.run = spy_replay
    return seen


def check_requests(refs, requests, outputs, logits, what, case: DeviceCase = CPU_FP32):
    """Tokens equal to PEFT's (a fork only at a near-tie of PEFT's logits, case.tie_gap: 0 on the CPU) and logits
    within case.logits_atol up to and including the first fork."""
    for rid, (adapter, prompt) in requests.items():
        want, want_logits = peft_greedy(refs[adapter or ""], prompt, MAX_TOKENS)
        got, name = tokens_of(outputs[rid]), f"{what}/{rid} ({adapter or 'base'})"
        assert_same_greedy(got, want, want_logits, case.tie_gap, name)
        n = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), len(want) - 1) + 1
        assert_close(torch.stack(logits[rid])[:n].cpu(), want_logits[:n], case.logits_atol, f"{name} logits")


@pytest.fixture(params=["bgmv", "sgmv"])
def kernel(request, monkeypatch):
    monkeypatch.setattr(batched, "BGMV_MAX_ELEMENTS", 1 << 40 if request.param == "bgmv" else 0)
    return request.param


def test_adapters_change_the_output(lora_setup):
    _, refs = lora_setup
    prompt = prompts(1, [9], seed=7)[0]
    outputs = {name: tuple(peft_greedy(model, prompt, MAX_TOKENS)[0]) for name, model in refs.items()}
    assert len(set(outputs.values())) == len(outputs), outputs  # otherwise the golden tests prove little


@pytest.mark.parametrize("case", FP32_ON_EACH_DEVICE)
def test_mixed_batch_matches_peft(lora_setup, kernel, case):
    """On CUDA: fused q/k/v and gate/up with LoRA per part, the Triton kernels, and graphs for the base-only steps;
    PEFT stays on the CPU in float32 as the reference."""
    root, refs = lora_setup
    engine = lora_engine(root, case=case)
    logits = record_logits(engine)
    ps = prompts(6, [7, 13, 7, 21, 4, 10], seed=11)
    requests = {  # adapter A, adapter B, none, A again, C, and the same prompt as the first under no adapter
        "a1": ("wide", ps[0]),
        "b": ("narrow", ps[1]),
        "base": (None, ps[2]),
        "a2": ("wide", ps[3]),
        "c": ("mlp", ps[4]),
        "base-same": (None, ps[0]),
    }
    for rid, (adapter, prompt) in requests.items():
        engine.add_request(make_request(rid, max_tokens=MAX_TOKENS, adapter=adapter), prompt)
    outputs = run_until_done(engine)
    check_requests(refs, requests, outputs, logits, f"mixed/{kernel}", case)
    assert engine.num_free_blocks == engine.num_total_blocks
    assert all(a.active_requests == 0 for a in engine.lora.list())


@pytest.mark.parametrize("case", FP32_ON_EACH_DEVICE)
def test_requests_joining_mid_flight_and_chunked_prefill_match_peft(lora_setup, kernel, case):
    root, refs = lora_setup
    engine = lora_engine(
        root, case=case, max_num_batched_tokens=16
    )  # long prompts are prefilled in chunks beside decodes
    logits = record_logits(engine)
    ps = prompts(5, [30, 5, 26, 3, 9], seed=12)
    requests = {
        "a": ("narrow", ps[0]),
        "b": (None, ps[1]),
        "c": ("mlp", ps[2]),
        "d": ("wide", ps[3]),
        "e": ("narrow", ps[4]),
    }
    arrivals = {0: "ab", 2: "c", 4: "de"}
    outputs: dict = {}
    step = 0
    while step < 5 or engine.has_unfinished():
        for rid in arrivals.get(step, ""):
            adapter, prompt = requests[rid]
            engine.add_request(make_request(rid, max_tokens=MAX_TOKENS, adapter=adapter), prompt)
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        step += 1
    check_requests(refs, requests, outputs, logits, f"joining/{kernel}", case)


def test_one_slot_shared_by_turns_matches_peft(lora_setup):
    """max_loras=1: adapters take turns in the one slot; a rewrite must clear the previous adapter's modules."""
    root, refs = lora_setup
    engine = lora_engine(root, max_loras=1)
    logits = record_logits(engine)
    ps = prompts(4, [6, 8, 5, 7], seed=13)
    requests = {"w": ("wide", ps[0]), "n": ("narrow", ps[1]), "base": (None, ps[2]), "m": ("mlp", ps[3])}
    for rid, (adapter, prompt) in requests.items():
        engine.add_request(make_request(rid, max_tokens=MAX_TOKENS, adapter=adapter), prompt)
    running_adapters = []
    outputs: dict = {}
    while engine.has_unfinished():
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        running_adapters.append({s.lora.name for s in engine.scheduler.running if s.lora is not None})
    assert max(len(names) for names in running_adapters) == 1  # never two adapters running with one slot
    check_requests(refs, requests, outputs, logits, "one-slot")


def test_bgmv_and_sgmv_agree_with_a_per_row_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 8, 32, generator=g)
    b = torch.randn(4, 24, 8, generator=g)
    a[0], b[0] = 0, 0  # slot 0: no adapter
    x = torch.randn(10, 32, generator=g)
    slots = [0, 2, 2, 1, 0, 3, 1, 2, 0, 3]
    lb = batched.LoraBatch.build(slots, {1: 8, 2: 3, 3: 5}, torch.device("cpu"))
    want = torch.stack([b[s] @ (a[s] @ x[i]) for i, s in enumerate(slots)])
    assert torch.allclose(batched.bgmv(x, a, b, lb.token_slots), want, atol=1e-5)
    assert torch.allclose(batched.sgmv(x, a, b, lb.groups), want, atol=1e-5)
    assert lb.rank == 8 and batched.LoraBatch.build([0, 0], {}, torch.device("cpu")) is None
