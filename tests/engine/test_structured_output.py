"""Guided decoding in the engine, on the demo model (its real tokenizer): every output follows its constraint.

JSON fields are bounded (max_length, ge/le, max_items): guided decoding makes every token legal, but an 8M-parameter
model can ramble inside an unbounded string until max_tokens; bounded schemas always complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Annotated, Literal

import pytest
from engine_helpers import make_engine, make_request, run_until_done, tokens_of
from pydantic import BaseModel, Field

from trt_gateway import errors
from trt_gateway.engine.structured_output import choice_grammar
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.types import FinishReason, GuidedDecoding, SpeculativeOptions

DEMO_DRAFT = DEMO_MODEL.parent / "draft"
SEEDS = range(16)


class Address(BaseModel):
    city: str = Field(max_length=16)
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)
    height_m: float = Field(ge=0.3, le=2.5)
    role: Literal["admin", "user", "guest"]
    active: bool
    tags: list[Annotated[str, Field(max_length=10)]] = Field(max_length=3)
    address: Address


SCHEMA = json.dumps(Person.model_json_schema())


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json"))


def guided_request(rid: str, guided: GuidedDecoding, seed: int, temperature: float = 0.8, **kw):
    request = make_request(
        rid, max_tokens=kw.pop("max_tokens", 400), temperature=temperature, sampling={"seed": seed}, **kw
    )
    return dataclasses.replace(request, guided=guided)


def texts(engine, tokenizer, requests, prompt: str = "Person record: ") -> dict[str, tuple[str, FinishReason]]:
    ids = tokenizer.encode(prompt).ids
    for request in requests:
        engine.add_request(request, ids)
    out = run_until_done(engine)
    return {rid: (tokenizer.decode(tokens_of(o)), o[-1].finish_reason) for rid, o in out.items()}


@pytest.mark.parametrize(
    "spec",
    [{}, {"speculative_mode": "ngram"}, {"speculative_mode": "draft", "draft_model": str(DEMO_DRAFT)}],
    ids=["plain", "ngram", "draft"],
)
def test_json_schema_output_always_validates(tokenizer, spec):
    engine = make_engine(DEMO_MODEL, block_size=16, max_num_seqs=16, speculative_max_batch=16, **spec)
    requests = [guided_request(f"p{s}", GuidedDecoding(json_schema=SCHEMA), s) for s in SEEDS]
    for rid, (text, reason) in texts(engine, tokenizer, requests).items():
        assert reason is FinishReason.STOP_TOKEN, (rid, text)
        Person.model_validate_json(text)  # raises on anything off-schema
    if spec:
        assert engine.speculation.stats.draft_tokens > 0


def test_regex_and_choice_outputs_always_match(tokenizer):
    engine = make_engine(DEMO_MODEL, block_size=16, max_num_seqs=32)
    pattern = r"[A-Z][a-z]{2,8} [0-9]{1,3}(\.[0-9]{2})?"
    choices = ("yes", "no", "it depends", 'say "maybe"')
    requests = [guided_request(f"re{s}", GuidedDecoding(regex=pattern), s, temperature=1.0) for s in SEEDS]
    requests += [guided_request(f"ch{s}", GuidedDecoding(choice=choices), s, temperature=1.0) for s in SEEDS]
    out = texts(engine, tokenizer, requests)
    for rid, (text, reason) in out.items():
        assert reason is FinishReason.STOP_TOKEN, (rid, text)
        if rid.startswith("re"):
            assert re.fullmatch(pattern, text), text
        else:
            assert text in choices, text
    assert len({text for rid, (text, _) in out.items() if rid.startswith("ch")}) > 1  # sampling still samples


def test_grammar_output_follows_the_ebnf(tokenizer):
    grammar = 'root ::= "(" expr ")"\nexpr ::= num | num " + " expr\nnum ::= [1-9] [0-9]?'
    engine = make_engine(DEMO_MODEL, block_size=16)
    requests = [
        guided_request(f"g{s}", GuidedDecoding(grammar=grammar), s, temperature=1.0, max_tokens=200) for s in range(8)
    ]
    for _rid, (text, reason) in texts(engine, tokenizer, requests).items():
        if reason is FinishReason.STOP_TOKEN:
            assert re.fullmatch(r"\([1-9][0-9]?( \+ [1-9][0-9]?)*\)", text), text
        else:  # the grammar is recursive: a long sum may meet max_tokens, but never leaves the language
            assert re.fullmatch(r"\([1-9][0-9]?( \+ [1-9][0-9]?)*( \+ ?[1-9]?)?", text), text


def test_guided_and_unguided_requests_share_a_batch(tokenizer):
    """The unguided requests of a mixed batch produce what they produce alone; guided ones still validate."""
    plain = [make_request(f"u{s}", max_tokens=30, temperature=0.9, sampling={"seed": s}) for s in range(6)]
    alone = texts(make_engine(DEMO_MODEL, block_size=16), tokenizer, plain)
    guided = [guided_request(f"p{s}", GuidedDecoding(json_schema=SCHEMA), s) for s in range(6)]
    mixed = texts(make_engine(DEMO_MODEL, block_size=16, max_num_seqs=12), tokenizer, plain + guided)
    for rid, result in alone.items():
        assert mixed[rid] == result
    for s in range(6):
        Person.model_validate_json(mixed[f"p{s}"][0])


def test_greedy_guided_output_is_the_same_with_speculation(tokenizer):
    def requests():
        return [
            guided_request(f"p{s}", GuidedDecoding(json_schema=SCHEMA), s, temperature=0.0) for s in range(2)
        ]
    base = texts(make_engine(DEMO_MODEL, block_size=16), tokenizer, requests())
    for spec in ({"speculative_mode": "ngram"}, {"speculative_mode": "draft", "draft_model": str(DEMO_DRAFT)}):
        assert texts(make_engine(DEMO_MODEL, block_size=16, **spec), tokenizer, requests()) == base


def test_a_stop_token_the_grammar_completes_with_ends_the_output_even_with_min_tokens(tokenizer):
    engine = make_engine(DEMO_MODEL, block_size=16)
    request = guided_request("c", GuidedDecoding(choice=("yes", "no")), 0, stopping={"min_tokens": 5})
    text, reason = texts(engine, tokenizer, [request])["c"]
    assert text in ("yes", "no") and reason is FinishReason.STOP_TOKEN


@pytest.mark.parametrize(
    "guided, field, reason",
    [
        (GuidedDecoding(json_schema='{"type": "objekt"}'), "guided.json_schema", "Unsupported type"),
        (GuidedDecoding(json_schema="{not json"), "guided.json_schema", ""),
        (GuidedDecoding(regex="([a-z]"), "guided.regex", "parenthesis"),
        (GuidedDecoding(grammar='root ::= "a" |'), "guided.grammar", "EBNF"),
        # Compiled by xgrammar without complaint, but nothing can ever match: refused before the first step.
        (GuidedDecoding(regex=r"[^\x00-\U0010FFFF]"), "guided.regex", "matches no text"),
        (GuidedDecoding(grammar='root ::= root "a"'), "guided.grammar", "matches no text"),
    ],
)
def test_bad_constraints_are_invalid_argument_with_the_reason(guided, field, reason):
    engine = make_engine(DEMO_MODEL, block_size=16)
    with pytest.raises(errors.InvalidArgument) as err:
        engine.add_request(guided_request("bad", guided, 0), [5, 6, 7])
    assert err.value.field == field and reason in err.value.message
    assert "/project/cpp" not in err.value.message  # xgrammar's source location is stripped
    assert not engine.has_unfinished()


def test_compiled_grammars_are_cached_by_constraint():
    engine = make_engine(DEMO_MODEL, block_size=16)
    backend = engine.structured
    backend.compile(GuidedDecoding(json_schema=SCHEMA))
    size = backend._get_compiler().get_cache_size_bytes()
    backend.compile(GuidedDecoding(json_schema=SCHEMA))
    assert backend._get_compiler().get_cache_size_bytes() == size > 0


def test_the_compiled_grammar_cache_is_bounded():
    # It was unbounded: every distinct constraint a client sent stayed in memory for the server's lifetime.
    engine = make_engine(DEMO_MODEL, block_size=16, guided_cache_bytes=64 << 10)
    backend = engine.structured
    for i in range(40):
        backend.compile(GuidedDecoding(choice=[f"option {i} {j}" for j in range(20)]))
    # Unbounded, these 40 take ~330 kB; xgrammar evicts after an insert, so it may pass the bound by one entry.
    assert 0 < backend._get_compiler().get_cache_size_bytes() <= (64 << 10) + (16 << 10)


def test_choice_grammar_escapes_literals():
    assert choice_grammar(['a"b', "c\\d", "e\nf", "\x00|"]) == 'root ::= "a\\"b" | "c\\\\d" | "e\\x0af" | "\\x00|"'


def test_opting_out_of_speculation_still_guides(tokenizer):
    engine = make_engine(DEMO_MODEL, block_size=16, speculative_mode="ngram")
    request = dataclasses.replace(
        guided_request("p", GuidedDecoding(json_schema=SCHEMA), 1), speculative=SpeculativeOptions(enabled=False)
    )
    Person.model_validate_json(texts(engine, tokenizer, [request])["p"][0])


def test_a_grammar_dead_end_fails_only_that_request():
    """If a grammar ever refuses the sampled token, that sequence ends with ERROR (INVALID_ARGUMENT naming the
    constraint: it left no token to pick), the engine and the rest of the batch go on."""
    from trt_gateway.engine.sequence import SampledToken, Sequence

    class Refusing:  # the matcher surface Sequence uses
        def is_terminated(self) -> bool:
            return False

        def accept_token(self, token: int) -> bool:
            return False

    request = dataclasses.replace(make_request("r"), guided=GuidedDecoding(grammar='root ::= "a"'))
    seq = Sequence(request, [5, 6], arrival_index=0, eos_token_ids=(2,), seed=0)
    seq.grammar = Refusing()
    seq.append(SampledToken(9))
    assert seq.check_stop(max_model_len=100) is FinishReason.ERROR
    assert isinstance(seq.error, errors.InvalidArgument) and "allows no token" in seq.error.message
    assert seq.error.field == "guided.grammar"


def test_greedy_guided_output_is_the_same_on_a_prefix_cache_hit_in_a_batch_and_chunked(tokenizer):
    """Logits differ by ~1e-5 between these states (docs/engine.md, "What is deterministic"); greedy tokens must not,
    grammar or no grammar: the second request reuses the first one's prompt blocks, the third also shares its steps
    with sampled requests, the last engine prefills in 16-token chunks."""
    prompt = "Person record for the staff directory, filled in from the onboarding form: "

    def greedy(rid: str) -> object:
        return guided_request(rid, GuidedDecoding(json_schema=SCHEMA), 0, temperature=0.0)

    others = [make_request(f"o{s}", max_tokens=20, temperature=0.9, sampling={"seed": s}) for s in range(3)]
    engine = make_engine(DEMO_MODEL, block_size=4)
    cold = texts(engine, tokenizer, [greedy("cold")], prompt)["cold"]
    assert cold[1] is FinishReason.STOP_TOKEN
    engine.add_request(greedy("warm"), tokenizer.encode(prompt).ids)
    warm = run_until_done(engine)["warm"]
    assert warm[-1].usage.cached_tokens >= 12 and tokenizer.decode(tokens_of(warm)) == cold[0]
    assert texts(engine, tokenizer, [*others, greedy("batch")], prompt)["batch"] == cold
    chunked = make_engine(DEMO_MODEL, block_size=4, max_num_batched_tokens=16)
    assert texts(chunked, tokenizer, [greedy("chunked"), *others], prompt)["chunked"] == cold
