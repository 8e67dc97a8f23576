"""Golden references from HF transformers, and the comparisons the golden tests share (llm.c style: compare,
print the worst difference, fail beyond a stated tolerance)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from engine_helpers import Checkpoint, DeviceCase, make_request, tokens_of

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


def save_peft_adapter(base: torch.nn.Module, path: Path, seed: int, **lora_kwargs) -> torch.nn.Module:
    """A PEFT LoRA on a copy of `base` with random A and B (init_lora_weights=False), saved to `path`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(init_lora_weights=False, lora_dropout=0.0, **lora_kwargs)
    model = get_peft_model(copy.deepcopy(base), config).eval()
    with torch.no_grad():  # nn.Linear's default init gives B ~ U(+-1/sqrt(r)): scale it so outputs stay sensible
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    model.save_pretrained(path)
    return model


@torch.inference_mode()
def peft_greedy(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences[0, len(prompt) :].tolist(), torch.cat([x.float() for x in out.logits])


def check_against_hf(ckpt, case, engine_outputs, request_prompts, max_tokens, check_logprobs=False):
    for rid, prompt in request_prompts.items():
        outs = engine_outputs[rid]
        want, want_logits = hf_greedy(ckpt, case, prompt, max_tokens)
        got = tokens_of(outs)
        assert_same_greedy(got, want, want_logits, case.tie_gap, f"{ckpt.name}/{rid}")
        assert outs[-1].finished and outs[-1].usage.completion_tokens == len(got)
        if check_logprobs and got == want:
            logprobs = [lp for out in outs for lp in out.logprobs]
            ref = want_logits.log_softmax(-1)
            got_lp = torch.tensor([lp.logprob for lp in logprobs])
            assert_close(
                got_lp,
                ref[torch.arange(len(want)), torch.tensor(want)],
                case.logits_atol,
                f"{ckpt.name}/{rid} chosen-token logprobs",
            )
            got_top = torch.tensor([[v for _, v in lp.top] for lp in logprobs])
            assert_close(got_top, ref.topk(5, dim=-1).values, case.logits_atol, f"{ckpt.name}/{rid} top-5 logprobs")
