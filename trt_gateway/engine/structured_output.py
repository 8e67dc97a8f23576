"""Guided decoding (structured output) with xgrammar: JSON schema, regex, EBNF grammar, or a choice of strings.

A request's constraint is compiled once into a token-level automaton (`CompiledGrammar`; the compiler caches by
constraint, so a schema used again compiles in microseconds), and each guided sequence owns a `GrammarMatcher` that
follows its output tokens. Every step, each guided logits row gets a bitmask of the tokens the grammar allows next;
the sampler sets the others to -inf before anything else, so guided and unguided requests share a batch and every
sampling mode (greedy, top-k/p, penalties, speculation) only ever picks allowed tokens. When the grammar is complete
it allows only the stop tokens; accepting one terminates the matcher and ends the sequence.

Speculative decoding: row j of a verify step is masked with the state after the first j drafts, which the matcher
accepts tentatively and then rolls back; a draft the grammar forbids is never accepted (its probability is 0), so
the rows after it are never used.

xgrammar (and the transformers tokenizer wrapper it reads vocabularies through) is imported on first use, so an
engine that never sees a guided request does not pay for it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence as SequenceOf
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trt_gateway import errors
from trt_gateway.types import GuidedDecoding

if TYPE_CHECKING:
    from trt_gateway.engine.sequence import Sequence

KINDS = ("json_schema", "regex", "grammar", "choice")


def available() -> bool:
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True


class GrammarBackend:
    """Compiles constraints for one tokenizer and vocabulary size. Thread-safe: compile() runs in worker threads."""

    def __init__(self, tokenizer_file: Path, vocab_size: int, stop_token_ids: SequenceOf[int]) -> None:
        self._tokenizer_file = tokenizer_file
        self.vocab_size = vocab_size
        self._stop_token_ids = list(stop_token_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr
                from transformers import PreTrainedTokenizerFast

                if not self._tokenizer_file.is_file():
                    raise errors.FailedPrecondition(
                        f"guided decoding needs the model's tokenizer.json, not found at {self._tokenizer_file}",
                        field="guided",
                    )
                if self._tokenizer_file.suffix == ".gguf":
                    from trt_gateway.engine.gguf_tokenizer import gguf_tokenizer

                    tokenizer = PreTrainedTokenizerFast(tokenizer_object=gguf_tokenizer(self._tokenizer_file))
                else:
                    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(self._tokenizer_file))
                info = xgr.TokenizerInfo.from_huggingface(
                    tokenizer, vocab_size=self.vocab_size, stop_token_ids=self._stop_token_ids
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=True)
            return self._compiler

    def compile(self, guided: GuidedDecoding) -> Any:
        """-> an xgrammar CompiledGrammar. Raises errors.InvalidArgument naming the field, with xgrammar's reason."""
        kind = guided.kind
        if kind is None:
            raise ValueError("no guided decoding constraint to compile")
        compiler = self._get_compiler()
        try:
            if kind == "json_schema":
                assert guided.json_schema is not None
                # Strict keeps to the schema (no extra properties); compact separators stop tiny models from
                # wandering off into whitespace, while any_whitespace=False keeps the output parseable either way.
                return compiler.compile_json_schema(guided.json_schema, any_whitespace=False, strict_mode=True)
            if kind == "regex":
                return compiler.compile_regex(guided.regex)
            if kind == "grammar":
                return compiler.compile_grammar(guided.grammar)
            return compiler.compile_grammar(choice_grammar(guided.choice))
        except RuntimeError as exc:
            raise errors.InvalidArgument(f"guided.{kind}: {_reason(exc)}", field=f"guided.{kind}") from exc

    def matcher(self, compiled: Any) -> Any:
        import xgrammar as xgr

        return xgr.GrammarMatcher(compiled)  # rollback depth is unlimited in xgrammar >= 0.1.25


def choice_grammar(choices: SequenceOf[str]) -> str:
    """An EBNF grammar accepting exactly one of the strings."""
    return "root ::= " + " | ".join(_ebnf_literal(c) for c in choices)


def _ebnf_literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


_LOG_PREFIX = re.compile(r"^\[[\d:]+\] [^:]+:\d+: ")


def _reason(exc: BaseException) -> str:
    """xgrammar's message without its C++ source location prefix."""
    return _LOG_PREFIX.sub("", str(exc).strip()).strip() or type(exc).__name__


def fill_bitmask(
    seqs: SequenceOf[Sequence], drafts: SequenceOf[SequenceOf[int]], vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """The [R, ceil(V / 32)] int32 allowed-token bitmask of a step's logits rows, or None when no row is guided.

    seqs[i] owns len(drafts[i]) + 1 consecutive rows: row j is its state after drafts[i][:j]. Unguided rows allow
    everything.
    """
    if not any(s.grammar is not None for s in seqs):
        return None
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(sum(len(d) + 1 for d in drafts), vocab_size)  # all allowed
    row = 0
    for seq, toks in zip(seqs, drafts, strict=True):
        matcher = seq.grammar
        if matcher is None:
            row += len(toks) + 1
            continue
        accepted = 0
        for j in range(len(toks) + 1):
            if accepted == j:  # rows past a forbidden draft are never used: leave them open
                matcher.fill_next_token_bitmask(bitmask, row + j)
            if j < len(toks) and accepted == j and not matcher.is_terminated() and matcher.accept_token(toks[j]):
                accepted += 1
        if accepted:
            matcher.rollback(accepted)
        row += len(toks) + 1
    return bitmask.to(device, non_blocking=True)


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place: forbidden tokens -> -inf. logits [R, V] float32; bitmask [R, ceil(V / 32)] int32."""
    import xgrammar as xgr

    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=logits.shape[-1])
