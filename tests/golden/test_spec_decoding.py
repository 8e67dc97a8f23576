"""Speculative decoding in the engine: lossless against the same engine without it, under everything the engine does.

- greedy: identical tokens (and logprobs) with n-gram drafts, a different draft model and a perfect draft (the target
  itself), with batching, prefix caching, chunked prefill and preemption;
- sampling: the joint law of the first tokens matches the target's exactly (chi-square against HF probabilities);
- stops: max_tokens, stop tokens and min_tokens cut exactly where they do without speculation;
- load: no drafting while more than `speculative_max_batch` sequences run; requests may opt out or lower k;
- LoRA on the target with the demo draft model: identical greedy output.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_helpers import (
    FP32_ON_EACH_DEVICE,
    Checkpoint,
    DeviceCase,
    build_hf_model,
    make_engine,
    make_request,
    prompts,
    run_until_done,
    tokens_of,
)
from spec_stats import chi_square_p_value

from trt_gateway.engine.speculative.ngram import NgramProposer
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.types import SpeculativeOptions

DEMO_DRAFT = DEMO_MODEL.parent / "draft"
UPPERCASE = DEMO_MODEL.parent / "adapters" / "uppercase"


def noisy_target(tmp_path_factory: pytest.TempPathFactory, scale: float) -> Checkpoint:
    """The target with noise on every weight: a different model that agrees with it part of the time."""
    model = build_hf_model("llama")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=g) * scale)
    path = tmp_path_factory.mktemp("draft")
    model.save_pretrained(path)
    return Checkpoint("draft", path, model)


@pytest.fixture(scope="module")
def other_draft(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return noisy_target(tmp_path_factory, 0.05)


MODES = ["ngram", "draft-other", "draft-self"]


def spec_options(mode: str, llama: Checkpoint, other: Checkpoint, **extra) -> dict:
    if mode == "ngram":
        return dict(speculative_mode="ngram", ngram_min=1, **extra)
    draft = llama if mode == "draft-self" else other
    return dict(speculative_mode="draft", draft_model=str(draft.path), **extra)


def workload() -> list[list[int]]:
    """Random prompts, two sharing a prefix (prefix cache), and repetitive ones (n-gram lookups hit)."""
    base = prompts(4, [5, 9, 17, 30])
    shared = base[3][:24] + [7, 8, 9]
    loop = [11, 12, 13, 14] * 5
    return base + [shared, loop, loop[:-3]]


def generate(engine, ids: list[list[int]], **request) -> dict[str, list]:
    for i, prompt in enumerate(ids):
        engine.add_request(make_request(f"r{i}", **request), prompt)
    return run_until_done(engine)


def first_fork(got: list, want: list, tie_gap: float, what: str) -> int:
    """Index of the first differing token (len if none). A fork is allowed only where the reference's own top-2
    logprobs are within tie_gap: 0 on the CPU (exact), a kernel's rounding on CUDA (see DeviceCase)."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g.token_id != w.token_id:
            gap = w.top[0].logprob - w.top[1].logprob
            assert gap <= tie_gap, f"{what}: token {i}: spec {g.token_id}, plain {w.token_id} (gap {gap:.3g})"
            return i
    assert len(got) == len(want), f"{what}: spec made {len(got)} tokens, plain {len(want)}"
    return len(got)


@pytest.mark.parametrize("case", FP32_ON_EACH_DEVICE)
@pytest.mark.parametrize("mode", MODES)
def test_greedy_output_is_identical(mode: str, case: DeviceCase, llama: Checkpoint, other_draft: Checkpoint):
    """On CUDA the plain engine decodes through graphs, the decode kernel and async scheduling while verification
    runs the prefill kernel over k+1 tokens: the same math in another order, hence case's tolerances."""
    ids = workload()
    base = generate(
        make_engine(llama.path, case, max_num_batched_tokens=32), ids, max_tokens=40, logprobs=True, top_logprobs=2
    )
    engine = make_engine(llama.path, case, max_num_batched_tokens=32, **spec_options(mode, llama, other_draft))
    spec = generate(engine, ids, max_tokens=40, logprobs=True, top_logprobs=2)
    for rid, outs in base.items():
        want = [s for o in outs for s in o.logprobs]
        got = [s for o in spec[rid] for s in o.logprobs]
        n = first_fork(got, want, case.tie_gap, f"{mode}/{rid}")
        if n == len(got):
            assert tokens_of(spec[rid]) == tokens_of(outs), rid
        worst = max((abs(a.logprob - b.logprob) for a, b in zip(got[:n], want[:n], strict=True)), default=0.0)
        assert worst < max(1e-4, case.logits_atol), f"{mode}/{rid}: logprobs differ by {worst:.3g}"
    stats = engine.speculation.stats
    assert stats.accepted_tokens > 0, "no draft was ever accepted: the test would not exercise verification"
    assert any(len(o.new_token_ids) > 1 for outs in spec.values() for o in outs)  # several tokens in one step
    usage = [outs[-1].usage for outs in spec.values()]
    assert sum(u.draft_tokens for u in usage) == stats.draft_tokens
    assert sum(u.accepted_tokens for u in usage) == stats.accepted_tokens


@pytest.mark.parametrize("mode", ["ngram", "draft-self"])
def test_preemption_and_recompute_keep_output_identical(mode: str, llama: Checkpoint, other_draft: Checkpoint):
    ids = workload()
    small = dict(num_kv_blocks=32, max_model_len=128, max_num_seqs=7)  # 128 token slots for ~400 tokens of work
    base = generate(make_engine(llama.path, **small), ids, max_tokens=40)
    engine = make_engine(llama.path, **small, **spec_options(mode, llama, other_draft))
    preempt, preempted = engine.scheduler._preempt, []
    engine.scheduler._preempt = lambda seq: (preempted.append(seq.request_id), preempt(seq))[-1]
    spec = generate(engine, ids, max_tokens=40)
    assert preempted, "the cache was large enough: nothing tested preemption"
    assert {r: tokens_of(o) for r, o in spec.items()} == {r: tokens_of(o) for r, o in base.items()}
    assert engine.block_manager.num_free_blocks == engine.num_total_blocks
    assert engine.speculation.stats.accepted_tokens > 0


@pytest.mark.parametrize("mode", ["ngram", "draft-self"])
def test_stops_exactly_where_plain_decoding_stops(mode: str, llama: Checkpoint, other_draft: Checkpoint):
    ids = workload()
    plain = make_engine(llama.path)
    reference = {r: tokens_of(o) for r, o in generate(plain, ids, max_tokens=30, stopping={"ignore_eos": True}).items()}
    # max_tokens of every size: never one token more
    for max_tokens in (1, 2, 3, 5, 8):
        engine = make_engine(llama.path, **spec_options(mode, llama, other_draft))
        out = generate(engine, ids, max_tokens=max_tokens, stopping={"ignore_eos": True})
        for rid, outs in out.items():
            assert tokens_of(outs) == reference[rid][:max_tokens]
            assert outs[-1].usage.completion_tokens == max_tokens
    # a stop token met in the middle of an accepted run: the output ends at it, as without speculation
    rid = "r5"  # the repetitive prompt: long accepted runs
    stop = reference[rid][6]
    cut = reference[rid].index(stop) + 1
    for min_tokens in (0, cut + 1):
        engine = make_engine(llama.path, **spec_options(mode, llama, other_draft))
        engine.add_request(
            make_request(
                rid, max_tokens=30, stopping={"stop_token_ids": (stop,), "min_tokens": min_tokens, "ignore_eos": True}
            ),
            ids[5],
        )
        base = make_engine(llama.path)
        base.add_request(
            make_request(
                rid, max_tokens=30, stopping={"stop_token_ids": (stop,), "min_tokens": min_tokens, "ignore_eos": True}
            ),
            ids[5],
        )
        got, want = run_until_done(engine)[rid], run_until_done(base)[rid]
        assert tokens_of(got) == tokens_of(want)
        assert got[-1].finish_reason == want[-1].finish_reason
        assert got[-1].usage.completion_tokens == want[-1].usage.completion_tokens
        if min_tokens == 0:
            assert tokens_of(got) == reference[rid][:cut]


def test_drafting_stops_while_the_batch_is_large(llama: Checkpoint):
    engine = make_engine(llama.path, speculative_mode="draft", draft_model=str(llama.path), speculative_max_batch=2)
    loop = [11, 12, 13, 14] * 5
    for i, n in enumerate([4, 8, 40, 40]):  # two finish early; then the remaining two may draft
        engine.add_request(make_request(f"r{i}", max_tokens=n, stopping={"ignore_eos": True}), loop)
    stats = engine.speculation.stats
    while engine.has_unfinished():
        running, before = len(engine.scheduler.running), stats.draft_tokens
        engine.step()
        if running > 2:
            assert stats.draft_tokens == before, f"drafted with {running} sequences running"
    assert stats.draft_tokens > 0  # it did draft once the batch was small


def test_a_request_can_opt_out_or_lower_its_draft_length(llama: Checkpoint):
    engine = make_engine(llama.path, speculative_mode="draft", draft_model=str(llama.path), num_draft_tokens=4)
    loop = [11, 12, 13, 14] * 5
    options = {
        "off": SpeculativeOptions(enabled=False),
        "one": SpeculativeOptions(num_draft_tokens=1),
        "all": SpeculativeOptions(),
    }
    for name, opts in options.items():
        request = make_request(name, max_tokens=24, stopping={"ignore_eos": True})
        engine.add_request(dataclasses.replace(request, speculative=opts), loop)
    out = run_until_done(engine)
    usage = {rid: outs[-1].usage for rid, outs in out.items()}
    assert usage["off"].draft_tokens == 0 and all(len(o.new_token_ids) <= 1 for o in out["off"])
    assert 0 < usage["one"].draft_tokens and all(len(o.new_token_ids) <= 2 for o in out["one"])
    assert usage["all"].draft_tokens > usage["one"].draft_tokens
    assert tokens_of(out["off"]) == tokens_of(out["one"]) == tokens_of(out["all"])


SMALL_VOCAB = 6  # ids 0-2 are pad/bos/eos, as in the other tiny models


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Checkpoint]:
    """A target over 6 tokens and a perturbed copy as its draft: every draft is in the target's support and p and
    q differ, so acceptance, rejection and the residual redraw all carry weight in the output law."""
    target = build_hf_model("llama", vocab_size=SMALL_VOCAB, initializer_range=0.3)
    draft = build_hf_model("llama", vocab_size=SMALL_VOCAB, initializer_range=0.3)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in draft.parameters():
            param.add_(torch.randn(param.shape, generator=g) * 0.3)
    out = []
    for name, model in (("target", target), ("draft", draft)):
        path = tmp_path_factory.mktemp(f"small-{name}")
        model.save_pretrained(path)
        out.append(Checkpoint(name, path, model))
    return out[0], out[1]


@pytest.mark.parametrize("mode", ["ngram", "draft-other", "draft-self"])
def test_sampling_keeps_the_target_distribution(mode: str, small_vocab: tuple[Checkpoint, Checkpoint]):
    """Three tokens after a fixed prompt at temperature 0.8: 216 outcomes, exact probabilities from HF."""
    target, draft = small_vocab
    prompt = [3, 4, 5, 3, 4, 5, 3, 5, 4]  # repetitive: n-gram lookups find drafts
    n, temperature = 4000, 0.8
    engine = make_engine(target.path, max_num_seqs=64, **spec_options(mode, target, draft, speculative_max_batch=64))
    for i in range(n):
        request = make_request(
            f"s{i}", max_tokens=3, temperature=temperature, sampling={"seed": i}, stopping={"ignore_eos": True}
        )
        engine.add_request(request, prompt)
    out = run_until_done(engine)
    stats = engine.speculation.stats
    if mode == "draft-self":  # q == p: min(1, p/q) = 1, every draft is accepted (and the law is still p)
        assert 0 < stats.accepted_tokens == stats.draft_tokens
    else:  # both acceptance and the residual redraw happen
        assert 0 < stats.accepted_tokens < stats.draft_tokens

    def law(context: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return (target.hf_model(torch.tensor([context])).logits[0, -1].double() / temperature).softmax(-1)

    exact = torch.zeros(SMALL_VOCAB, SMALL_VOCAB, SMALL_VOCAB, dtype=torch.float64)
    for a, pa in enumerate(law(prompt).tolist()):
        for b, pb in enumerate(law(prompt + [a]).tolist()):
            exact[a, b] = pa * pb * law(prompt + [a, b])
    counts = torch.zeros_like(exact)
    for outs in out.values():
        counts[tuple(tokens_of(outs))] += 1
    assert chi_square_p_value(counts, exact) > 1e-3


@pytest.mark.skipif(not (UPPERCASE / "adapter_model.safetensors").is_file(), reason="demo adapter not trained")
def test_lora_on_the_target_with_the_demo_draft_model():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json"))
    texts = ["The for statement", "A list is a list is a list"]
    ids = [tok.encode(t).ids for t in texts]

    def run(**spec) -> dict[str, list[int]]:
        engine = make_engine(DEMO_MODEL, block_size=16, max_loras=2, max_lora_rank=16, **spec)
        engine.lora.register("uppercase", str(UPPERCASE))
        for i, prompt in enumerate(ids):
            for adapter in (None, "uppercase"):
                engine.add_request(make_request(f"{i}/{adapter}", max_tokens=24, adapter=adapter), prompt)
        return {rid: tokens_of(o) for rid, o in run_until_done(engine).items()}

    assert run(speculative_mode="draft", draft_model=str(DEMO_DRAFT)) == run()


def test_ngram_lookup_prefers_the_longest_most_recent_match():
    p = NgramProposer(ngram_min=1, ngram_max=3)
    assert p.propose([1, 2, 3, 9, 1, 2, 3, 7, 5, 2, 3], 2) == [7, 5]  # "2 3" recurs; its latest match is followed by 7
    assert p.propose([4, 1, 2, 3, 8, 8, 1, 2, 3], 3) == [8, 8, 1]  # "1 2 3" beats shorter suffixes
    assert p.propose([1, 2, 3, 4], 2) == []  # nothing recurs
    assert p.propose([5, 6, 5], 4) == [6, 5]  # runs into the end of the sequence: shorter
    assert NgramProposer(ngram_min=2, ngram_max=2).propose([7, 1, 7], 2) == []  # too short a match


def test_bad_speculative_configs_name_the_field(llama: Checkpoint, small_vocab: tuple[Checkpoint, Checkpoint]):
    from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError

    with pytest.raises(EngineConfigError, match="draft_model"):
        EngineConfig(model=str(llama.path), speculative_mode="draft")
    with pytest.raises(EngineConfigError, match="speculative_mode"):
        EngineConfig(model=str(llama.path), speculative_mode="eagle")
    with pytest.raises(EngineConfigError, match="num_draft_tokens"):
        EngineConfig(model=str(llama.path), speculative_mode="ngram", num_draft_tokens=0)
    with pytest.raises(EngineConfigError, match="draft_model: .*vocabulary has 6 tokens, the target's 256"):
        make_engine(llama.path, speculative_mode="draft", draft_model=str(small_vocab[1].path))
