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

Cost: a compile can take seconds (thousands of choices, a big schema), so `compile_async` runs it in the backend's
own threads, never the event loop's default pool nor the engine thread: xgrammar releases the GIL while it
compiles, and the threads run at a lower CPU priority, so plain requests keep their pace. Which compile runs next is
compile_lanes.py's policy: small constraints (and ones already compiled) in a lane of their own that big compiles
never hold, tenants taking turns, identical constraints compiled once. Each compile has a time budget counted from
submission; a compile whose every caller gave up (its client went away, the budget ran out) before it started is
dropped. One that has started cannot be interrupted: it finishes into xgrammar's cache, which is why the server
bounds the size of every constraint (`limits.max_guided_*`) before it gets here.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence as SequenceOf
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trt_gateway import errors
from trt_gateway.engine.compile_lanes import CompileLanes
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

    def __init__(
        self,
        tokenizer_file: Path,
        vocab_size: int,
        stop_token_ids: SequenceOf[int],
        *,
        compile_timeout_s: float = 10.0,
        compile_threads: int = 2,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self._tokenizer_file = tokenizer_file
        self.vocab_size = vocab_size
        self._stop_token_ids = list(stop_token_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()
        self.compile_timeout_s = compile_timeout_s
        self.cache_bytes = cache_bytes
        self._lanes = CompileLanes(compile_threads)
        # Compiles asked for, and those a thread started: the difference was shared, dropped, or still waits.
        self.submitted = 0
        self.started = 0

    async def compile_async(self, guided: GuidedDecoding, tenant: str = "") -> Any:
        """`compile` in the backend's threads (compile_lanes.py: `tenant` takes turns with the others) within the
        time budget. Cancelling the caller (or running out of budget) drops the compile if it has not started and
        nobody else waits for it. Raises ResourceExhausted when the budget runs out."""
        self.submitted += 1
        constraint = f"{guided.kind}\0{constraint_text(guided)}"
        compiling = self._lanes.run(constraint, tenant, partial(self._compile_started, guided))
        try:
            return await asyncio.wait_for(compiling, self.compile_timeout_s)
        except TimeoutError:
            # Not INVALID_ARGUMENT: the budget covers the wait behind other compiles, and a compile that started goes
            # on into the cache, so the same request sent again later may well succeed (the table makes it retryable).
            raise errors.ResourceExhausted(
                f"guided.{guided.kind}: the constraint did not compile within {self.compile_timeout_s:g} s "
                "(executor.options.guided_compile_timeout_s); a smaller constraint compiles faster",
                field=f"guided.{guided.kind}",
                retry_after_s=self.compile_timeout_s,
            ) from None

    def _compile_started(self, guided: GuidedDecoding) -> Any:
        with self._lock:
            self.started += 1
        return self.compile(guided)

    def shutdown(self) -> None:
        """On the event loop."""
        self._lanes.shutdown(errors.Unavailable("the engine is shutting down"))

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
                self._compiler = xgr.GrammarCompiler(
                    info, max_threads=2, cache_enabled=self.cache_bytes > 0, cache_limit_bytes=self.cache_bytes
                )
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
                compiled = compiler.compile_json_schema(guided.json_schema, any_whitespace=False, strict_mode=True)
            elif kind == "regex":
                compiled = compiler.compile_regex(guided.regex)
            elif kind == "grammar":
                compiled = compiler.compile_grammar(guided.grammar)
            else:
                compiled = compiler.compile_grammar(constraint_text(guided))
        # RuntimeError: xgrammar's parse errors; ValueError: text it cannot take (a lone surrogate from JSON).
        except (RuntimeError, ValueError) as exc:
            raise errors.InvalidArgument(f"guided.{kind}: {_reason(exc)}", field=f"guided.{kind}") from exc
        if not self._allows_a_token(compiled):
            # xgrammar compiles an empty character class or a rule that only refers to itself without complaint;
            # the first decoding step would then have no token to pick.
            raise errors.InvalidArgument(
                f"guided.{kind}: the constraint matches no text at all (an empty character class, or a rule that "
                "never ends, such as a left-recursive one?)",
                field=f"guided.{kind}",
            )
        return compiled

    def _allows_a_token(self, compiled: Any) -> bool:
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        self.matcher(compiled).fill_next_token_bitmask(bitmask, 0)
        return bool(bitmask.any())

    def matcher(self, compiled: Any) -> Any:
        import xgrammar as xgr

        return xgr.GrammarMatcher(compiled)  # rollback depth is unlimited in xgrammar >= 0.1.25


def constraint_text(guided: GuidedDecoding) -> str:
    """What xgrammar compiles (and caches by) for the constraint: its text, or the grammar of its choices."""
    if guided.kind == "choice":
        return choice_grammar(guided.choice)
    texts = {"json_schema": guided.json_schema, "regex": guided.regex, "grammar": guided.grammar}
    return texts.get(guided.kind or "") or ""


def choice_grammar(choices: SequenceOf[str]) -> str:
    """An EBNF grammar accepting exactly one of the strings."""
    return "root ::= " + " | ".join(_ebnf_literal(c) for c in choices)


def _ebnf_literal(text: str) -> str:
    """An EBNF string literal of `text`: backslash and quote escaped, control characters (NUL included) as \\xNN,
    everything else as is (xgrammar reads literals as UTF-8)."""
    return '"' + "".join(_EBNF_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


_EBNF_ESCAPES = {"\\": "\\\\", '"': '\\"'}


_LOG_PREFIX = re.compile(r"^\[[\d:]+\] [^:]+:\d+: ")


def _reason(exc: BaseException) -> str:
    """xgrammar's message without its C++ source location prefix, cut short: it may quote the constraint."""
    return errors.cut(_LOG_PREFIX.sub("", str(exc).strip()).strip() or type(exc).__name__, 400)



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
