"""Golden references from HF transformers, and the comparisons the golden tests share (llm.c style: compare,
print the worst difference, fail beyond a stated tolerance)."""

from __future__ import annotations

import copy

import torch
from engine_helpers import Checkpoint, DeviceCase, make_request

from trt_gateway.engine import LLMEngine
from trt_gateway.engine.scheduler import ScheduledSeq
from trt_gateway.engine.sequence import Sequence

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MODELS: dict[tuple[str, str, str], torch.nn.Module] = {}
_GREEDY: dict[tuple, tuple[list[int], torch.Tensor]] = {}


def hf_model(ckpt: Checkpoint, case: DeviceCase) -> torch.nn.Module:
    key = (ckpt.name, case.device, case.dtype)
    if key not in _MODELS:
        _MODELS[key] = copy.deepcopy(ckpt.hf_model).to(device=case.device, dtype=_DTYPES[case.dtype])
    return _MODELS[key]


@torch.inference_mode()
def hf_logits(ckpt: Checkpoint, case: DeviceCase, token_ids: list[int]) -> torch.Tensor:
    """Full forward: [n, V] float32 logits at every position."""
    ids = torch.tensor([token_ids], device=case.device)
    return hf_model(ckpt, case)(ids).logits[0].float().cpu()


@torch.inference_mode()
def hf_greedy(
    ckpt: Checkpoint, case: DeviceCase, prompt: list[int], max_new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """HF generate(do_sample=False): new tokens (ending with EOS if it stopped there) and their logits [n, V]."""
    key = (ckpt.name, case.device, case.dtype, tuple(prompt), max_new_tokens)
    if key not in _GREEDY:
        out = hf_model(ckpt, case).generate(
            torch.tensor([prompt], device=case.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        tokens = out.sequences[0, len(prompt) :].tolist()
        _GREEDY[key] = (tokens, torch.cat([x.float().cpu() for x in out.logits]))
    return _GREEDY[key]


def assert_same_greedy(got: list[int], want: list[int], want_logits: torch.Tensor, tie_gap: float, what: str) -> None:
    """Token for token, except that after a near-tie in HF's own logits (top-2 gap <= tie_gap) the paths may fork."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):  # lengths compared below
        if g != w:
            gap = float(want_logits[i, w] - want_logits[i, g])
            assert gap <= tie_gap, f"{what}: token {i}: engine {g}, HF {w} (HF logit gap {gap:.3g} > {tie_gap})"
            return
    assert len(got) == len(want), f"{what}: engine made {len(got)} tokens, HF {len(want)}: {got} vs {want}"


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str) -> float:
    worst = float((got.float() - want.float()).abs().max())
    print(f"{what}: max |diff| = {worst:.3g} (tolerance {atol})")
    assert worst <= atol, f"{what}: max |diff| {worst:.3g} > {atol}"
    return worst


@torch.inference_mode()
def engine_logits(engine: LLMEngine, token_ids: list[int], chunks: list[int]) -> torch.Tensor:
    """Run token_ids through the engine's model in the given chunk sizes (1 = the decode path), reading the KV of
    earlier chunks from the paged cache. -> [n, V] float32 logits at every position. Frees its blocks after."""
    assert sum(chunks) == len(token_ids)
    runner, bm = engine.model_runner, engine.block_manager
    seq = Sequence(make_request("probe"), token_ids, arrival_index=10**9, eos_token_ids=(), seed=0)
    rows = []
    try:
        for n in chunks:
            start = seq.num_computed_tokens
            if start == 0:
                bm.allocate(seq, [], n)
            else:
                bm.may_append(seq, n)
            inputs = runner.prepare((ScheduledSeq.of(seq, n),))
            hidden = runner.model(inputs.input_ids, inputs.positions, inputs.meta)
            rows.append(runner.model.compute_logits(hidden).cpu())
            seq.num_computed_tokens = start + n
    finally:
        bm.deallocate(seq)
    return torch.cat(rows)
