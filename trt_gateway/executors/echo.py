"""The echo executor: instant, scripted tokens for tests and benchmarks. Never the default.

Its tokenizer is bytes: token id = UTF-8 byte value, and id 256 is EOS. It emits the script (the `script` option, or
else the prompt itself) one byte-token at a time, then EOS; with `ignore_eos` it repeats the script until
`max_tokens`. Sampling parameters are accepted and have no effect (the script is deterministic), which makes the
gateway's own overhead measurable with no model in the way.

Options: `script` (str), `token_delay_s` (float, sleep between tokens), `max_context` (int), `model_name` (str).
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from trt_gateway import __version__, adapter_files, errors, validation
from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors import adapter_registry
from trt_gateway.executors.base import Executor, Health
from trt_gateway.stopping import StopStringMatcher
from trt_gateway.types import (
    AdapterInfo,
    Capabilities,
    ChatMessage,
    ExecutorLoad,
    Finish,
    FinishReason,
    GenerateRequest,
    PromptInfo,
    Residency,
    ServedModel,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

EOS = 256
VOCAB_SIZE = 257


def render_chat(messages: Sequence[ChatMessage]) -> str:
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "


class EchoExecutor(Executor):
    name = "echo"

    def __init__(self, options: Mapping[str, Any] | None = None, *, max_lora_rank: int = 64, max_loras: int = 8) -> None:
        options = dict(options or {})
        self.script: str | None = options.pop("script", None)
        self.token_delay_s = float(options.pop("token_delay_s", 0.0))
        self.max_context = int(options.pop("max_context", 4096))
        self.model_name = str(options.pop("model_name", "echo"))
        if options:
            raise ConfigError(f"executor.options: unknown echo option(s): {', '.join(sorted(options))}")
        self._health = Health.STARTING
        self._aborted: set[str] = set()
        self._running: set[str] = set()
        self._adapters: dict[str, AdapterInfo] = {}
        self._active_by_adapter: dict[str, int] = {}
        self.aborts: list[str] = []  # every abort call, in order: tests assert cancellation reached the executor
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras

    @classmethod
    def from_config(cls, config: ExecutorConfig) -> EchoExecutor:
        options = dict(config.options)
        if config.served_name:
            options.setdefault("model_name", config.served_name)
        return cls(options, max_lora_rank=config.lora.max_lora_rank, max_loras=config.lora.max_loras)

    async def start(self) -> None:
        self._health = Health.SERVING

    def models(self) -> Sequence[ServedModel]:
        caps = Capabilities(
            lora=True,
            max_lora_rank=self.max_lora_rank,
            max_loras=self.max_loras,
            logprobs=True,
            max_top_logprobs=20,
            chat_template=True,
        )
        return (
            ServedModel(
                name=self.model_name,
                executor=self.name,
                executor_version=__version__,
                max_context_length=self.max_context,
                vocab_size=VOCAB_SIZE,
                eos_token_ids=(EOS,),
                capabilities=caps,
                ready=self._health is Health.SERVING,
            ),
        )

    def current_load(self) -> ExecutorLoad:
        adapters = tuple(sorted(name for name, count in self._active_by_adapter.items() if count))
        return ExecutorLoad(num_running=len(self._running), max_loras=self.max_loras, running_adapters=adapters)

    def health(self) -> Health:
        return self._health

    def kill(self) -> None:
        """Simulate a dead engine (tests)."""
        self._health = Health.DEAD

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        self._check_model(model)
        return list((render_chat(messages) if messages else text or "").encode())

    def _check_model(self, model: str) -> None:
        if model != self.model_name:
            raise errors.NotFound(f"model {model!r} is not served by this echo executor", field="model")

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        p = request.prompt
        if p.token_ids is not None:
            return list(p.token_ids)
        return list((render_chat(p.messages) if p.messages else p.text or "").encode())

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        if self._health is Health.DEAD:
            raise errors.EngineDead("the echo executor is dead")
        self._check_model(request.model)
        if request.adapter and request.adapter not in self._adapters:
            raise errors.NotFound(f"adapter {request.adapter!r} is not loaded", field="adapter")
        prompt = self._prompt_ids(request)
        if len(prompt) >= self.max_context:
            raise validation.context_exceeded(request.prompt, len(prompt), self.max_context)
        rid = request.request_id
        if rid in self._running:
            raise validation.duplicate_request_id(rid)
        self._running.add(rid)
        if request.adapter:
            self._active_by_adapter[request.adapter] = self._active_by_adapter.get(request.adapter, 0) + 1
        try:
            async for delta in self._run(request, prompt):
                yield delta
        finally:
            self._running.discard(rid)
            self._aborted.discard(rid)
            if request.adapter:
                self._active_by_adapter[request.adapter] -= 1

    async def _run(self, request: GenerateRequest, prompt: list[int]) -> AsyncIterator[TokenDelta]:
        script = list((self.script if self.script is not None else _decode(prompt)).encode())
        budget = min(request.stopping.max_tokens, self.max_context - len(prompt))
        stop = StopStringMatcher(request.stopping.stop, include_stop=request.stopping.include_stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        r = request.response
        if r.prompt_token_ids or r.echo:
            yield TokenDelta(
                prompt=PromptInfo(
                    num_tokens=len(prompt),
                    token_ids=tuple(prompt) if r.prompt_token_ids else (),
                    text=_decode(prompt) if r.echo else "",
                )
            )
        generated = 0
        while True:
            if request.request_id in self._aborted:
                yield self._finish(FinishReason.CANCELLED, prompt, generated, flush=stop.flush())
                return
            if generated >= budget:
                yield self._finish(FinishReason.LENGTH, prompt, generated, flush=stop.flush())
                return
            at_end = not script or (generated >= len(script) and not request.stopping.ignore_eos)
            token = EOS if at_end else script[generated % len(script)]
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            else:
                await asyncio.sleep(0)  # a scheduling point, so cancellation and other streams can run
            generated += 1
            if token == EOS or token in request.stopping.stop_token_ids:
                keep = token != EOS and request.stopping.include_stop
                text = stop.flush() + (decoder.decode(bytes([token])) if keep else "")
                yield self._finish(
                    FinishReason.STOP_TOKEN, prompt, generated, flush=text, stop_token=token, keep=keep
                )
                return
            text = stop.push(decoder.decode(bytes([token])))
            matched = stop.matched
            lp: tuple[TokenLogprob, ...] = ()
            if r.logprobs:  # built only when asked for: this loop is the benchmarks' token source
                lp = (TokenLogprob(token, chr(token), 0.0, (TopLogprob(token, chr(token), 0.0),)[: r.top_logprobs]),)
            if matched is not None:
                yield TokenDelta(text=text, token_ids=(token,), logprobs=lp)
                yield self._finish(FinishReason.STOP_STRING, prompt, generated, matched=matched)
                return
            yield TokenDelta(text=text, token_ids=(token,), logprobs=lp)

    def _finish(
        self,
        reason: FinishReason,
        prompt: list[int],
        generated: int,
        *,
        flush: str = "",
        matched: str = "",
        stop_token: int | None = None,
        keep: bool = False,
    ) -> TokenDelta:
        usage = Usage(prompt_tokens=len(prompt), completion_tokens=generated)
        finish = Finish(
            reason, usage, matched_stop=matched, matched_stop_token_id=stop_token, queue_time_s=0.0
        )
        return TokenDelta(text=flush, token_ids=(stop_token,) if keep and stop_token is not None else (), finish=finish)

    async def abort(self, request_id: str) -> bool:
        self.aborts.append(request_id)
        if request_id in self._running:
            self._aborted.add(request_id)
            return True
        return False

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        self._check_model(model)
        try:  # no symlink followed, no file contents in the error (adapter_files.py), as the real executors
            cfg = json.loads(adapter_files.read_file(path, "adapter_config.json", 1 << 20))
        except adapter_files.Unreadable as exc:
            raise errors.InvalidArgument(f"path: adapter at {path}: {exc.reason}", field="path") from None
        except ValueError:
            raise errors.InvalidArgument("path: adapter_config.json is not valid JSON", field="path") from None
        if not isinstance(cfg, dict):
            raise errors.InvalidArgument("path: adapter_config.json must hold a JSON object", field="path")
        rank = cfg.get("r", 0) if isinstance(cfg.get("r", 0), int) else 0
        if not 1 <= rank <= self.max_lora_rank:
            raise errors.InvalidArgument(
                f"adapter rank r={rank} is outside [1, max_lora_rank={self.max_lora_rank}]", field="path"
            )
        existing = self._adapters.get(name)
        if existing is not None and existing.path != path:
            raise errors.AlreadyExists(f"adapter {name!r} is already loaded from {existing.path}", field="name")
        modules = cfg.get("target_modules") or ()
        info = AdapterInfo(
            name=name,
            path=path,
            model=model,
            rank=rank,
            alpha=adapter_registry.lora_alpha(cfg, rank),
            target_modules=tuple(sorted(modules)) if isinstance(modules, list) else (str(modules),),
            residency=Residency.CPU,
        )
        self._adapters[name] = info
        return info

    async def unload_adapter(self, model: str, name: str) -> None:
        self._check_model(model)
        if name not in self._adapters:
            raise errors.NotFound(f"adapter {name!r} is not loaded", field="name")
        if self._active_by_adapter.get(name, 0):
            raise errors.FailedPrecondition(
                f"adapter {name!r} is in use by {self._active_by_adapter[name]} request(s); retry when they finish",
                field="name",
            )
        del self._adapters[name]

    def list_adapters(self, model: str) -> Sequence[AdapterInfo]:
        self._check_model(model)
        return [
            AdapterInfo(**{**_fields(a), "active_requests": self._active_by_adapter.get(a.name, 0)})
            for a in self._adapters.values()
        ]

    async def shutdown(self) -> None:
        for rid in list(self._running):
            self._aborted.add(rid)
        self._health = Health.STARTING


def _decode(ids: Sequence[int]) -> str:
    """Prompt ids to text; EOS (256) and other non-byte ids carry no text (bytes() would raise on them)."""
    return bytes(t for t in ids if 0 <= t < 256).decode(errors="replace")


def _fields(a: AdapterInfo) -> dict[str, Any]:
    return {name: getattr(a, name) for name in a.__dataclass_fields__}
