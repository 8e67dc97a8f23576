"""Validated configuration: frozen dataclasses, filled from a TOML/JSON file and CLI flags, checked once.

Every error names the offending key (dotted path) and why, so a typo in a config file fails at start-up rather than
being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range."""


ADAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = ""  # server certificate chain (PEM); TLS is on when set
    key_file: str = ""
    client_ca_file: str = ""  # when set, clients must present a certificate signed by this CA (mTLS)

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self, where: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{where}: cert_file and key_file must be set together")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError(f"{where}.client_ca_file needs cert_file and key_file (mTLS runs over TLS)")
        for name in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"{where}.{name}: no such file: {value}")


@dataclass(frozen=True)
class LimitsConfig:
    """Per-request limits the server enforces before a request reaches the executor."""

    max_n: int = 8
    max_stop: int = 16
    max_stop_length: int = 256
    max_tokens: int = 8192  # upper bound for max_tokens (the context window may lower it)
    default_max_tokens: int = 256
    max_prompt_chars: int = 1_000_000
    max_prompt_tokens: int = 131_072  # token_ids input length
    max_messages: int = 1024
    max_logit_bias: int = 1024
    max_top_logprobs: int = 20
    max_request_id_length: int = 128
    max_tools: int = 128
    max_model_name_length: int = 256  # `model` (or, over HTTP, an adapter's name) longer than this is refused unread
    # Guided decoding: compile cost grows with the constraint, so its size is bounded before anything compiles.
    max_guided_chars: int = 65_536  # json_schema, regex or grammar text; the choices' characters together
    max_guided_choices: int = 1024
    # A prompt text longer than the context window times this cannot fit, so it is refused before it is tokenized.
    # Generous: the longest token of common vocabularies is under 100 characters (the demo model's is 93).
    max_chars_per_token: int = 128

    def validate(self, where: str) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ConfigError(f"{where}.{f.name} must be >= 1, got {getattr(self, f.name)}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f"{where}.default_max_tokens must be <= max_tokens ({self.max_tokens})")


@dataclass(frozen=True)
class AdmissionConfig:
    """The bounded admission queue in front of the executor."""

    max_inflight: int = 256  # requests handed to the executor at once (it batches and queues them itself)
    max_queued: int = 1024  # requests waiting in the gateway beyond that; more get RESOURCE_EXHAUSTED
    max_queued_tokens: int = 4_000_000  # tokens those waiting requests may need (prompt + max_tokens x n)
    retry_after_s: float = 1.0  # base of the retry-after hint sent with RESOURCE_EXHAUSTED

    def validate(self, where: str) -> None:
        if self.max_inflight < 1:
            raise ConfigError(f"{where}.max_inflight must be >= 1, got {self.max_inflight}")
        if self.max_queued < 0:
            raise ConfigError(f"{where}.max_queued must be >= 0, got {self.max_queued}")
        if self.max_queued_tokens < 1:
            raise ConfigError(f"{where}.max_queued_tokens must be >= 1, got {self.max_queued_tokens}")
        if self.retry_after_s <= 0:
            raise ConfigError(f"{where}.retry_after_s must be > 0, got {self.retry_after_s}")


@dataclass(frozen=True)
class LoraConfig:
    adapter_roots: tuple[str, ...] = ()  # adapter paths must lie under one of these directories
    adapters: Mapping[str, str] = field(default_factory=dict)  # preloaded: name -> directory
    max_loras: int = 8  # adapters resident in executor slots at once
    max_cpu_loras: int = 32  # adapters cached in host memory
    max_lora_rank: int = 64

    def validate(self, where: str) -> None:
        for name in ("max_loras", "max_cpu_loras", "max_lora_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_cpu_loras < self.max_loras:
            raise ConfigError(f"{where}.max_cpu_loras must be >= max_loras ({self.max_loras})")
        for name in self.adapters:
            if not ADAPTER_NAME_RE.fullmatch(name):
                raise ConfigError(f"{where}.adapters: invalid adapter name {name!r} (must match {ADAPTER_NAME_RE.pattern})")
        if self.adapters and not self.adapter_roots:
            raise ConfigError(f"{where}.adapters needs at least one adapter root (--adapter-root)")


@dataclass(frozen=True)
class SpeculativeConfig:
    mode: str = ""  # "" (off), "ngram" or "draft"
    draft_model: str = ""  # checkpoint directory, for mode "draft"
    num_draft_tokens: int = 4
    max_batch: int = 8  # draft only while at most this many sequences run (0: never); a full batch gains nothing

    def validate(self, where: str) -> None:
        if self.mode not in ("", "ngram", "draft"):
            raise ConfigError(f"{where}.mode must be one of '', 'ngram', 'draft', got {self.mode!r}")
        if self.mode == "draft" and not self.draft_model:
            raise ConfigError(f"{where}.draft_model is required when mode is 'draft' (--draft-model)")
        if not 1 <= self.num_draft_tokens <= 16:
            raise ConfigError(f"{where}.num_draft_tokens must be in [1, 16], got {self.num_draft_tokens}")
        if self.max_batch < 0:
            raise ConfigError(f"{where}.max_batch must be >= 0 (0: never draft), got {self.max_batch}")


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "native"  # an entry point in the group "trt_gateway.executors"
    model: str = ""  # checkpoint directory; empty = the embedded demo model
    served_name: str = ""  # the name clients use; default: the checkpoint directory's name
    options: Mapping[str, Any] = field(default_factory=dict)  # executor-specific settings, passed through as is
    lora: LoraConfig = field(default_factory=LoraConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)


@dataclass(frozen=True)
class ScopedApiKey:
    """An API key limited to some models and adapters. "*" allows any; "" in adapters allows the base model.
    `admin` also lets it load and unload adapters (within its scope) and see adapters' server paths."""

    key: str
    models: tuple[str, ...] = ("*",)
    adapters: tuple[str, ...] = ("*",)
    admin: bool = False


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0  # a separate Prometheus port; 0 = none (the HTTP port serves /metrics too)
    http: bool = True  # the OpenAI-compatible HTTP API (docs/openai.md), on its own port
    http_port: int = 8000  # 0 picks a free one
    grace_period_s: float = 30.0  # in-flight streams get this long to finish on SIGTERM
    api_keys: tuple[str, ...] = ()  # when set, calls must send "authorization: Bearer <key>"
    scoped_api_keys: tuple[ScopedApiKey, ...] = ()  # keys limited to some models / adapters
    stall_timeout_s: float = 30.0  # a stream whose client reads nothing for this long is aborted (0 = never)
    log_requests: bool = False  # log prompts and outputs (off by default: they may hold user data)
    max_message_bytes: int = 64 * 1024 * 1024
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    # A stream's deltas that queue up while its client (or the server) lags leave as one chunk of at most this many
    # tokens; nothing is ever held back to wait for more (docs/streaming.md). 1 = one chunk per executor delta.
    stream_coalesce_tokens: int = 64
    # "uvloop" runs the server on uvloop (`pip install uvloop`; not a dependency). Measured no clear gain with
    # grpc.aio on a 2-core box (docs/streaming.md), so the default stays the standard asyncio loop.
    event_loop: str = "asyncio"
    # How unforced tool calls are written in the model's text (tool_calls.py): "hermes" (<tool_call> blocks: Hermes,
    # Qwen) or "llama3_json" (a bare JSON call: Llama 3.1+). Forced calls are constrained and need no format.
    tool_call_parser: str = "hermes"
    # How the model's reasoning is marked (reasoning.py): "deepseek_r1" or "qwen3" split a <think>...</think> block
    # out of the text as `reasoning`; None leaves the text as the model wrote it.
    reasoning_parser: str | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)

    def validate(self, where: str) -> None:
        if self.stream_coalesce_tokens < 1:
            raise ConfigError(f"{where}.stream_coalesce_tokens must be >= 1, got {self.stream_coalesce_tokens}")
        if self.tool_call_parser not in ("hermes", "llama3_json"):
            raise ConfigError(f"{where}.tool_call_parser must be 'hermes' or 'llama3_json', got {self.tool_call_parser!r}")
        if self.reasoning_parser is not None and self.reasoning_parser not in ("deepseek_r1", "qwen3"):
            raise ConfigError(
                f"{where}.reasoning_parser must be 'deepseek_r1' or 'qwen3' (or unset), got {self.reasoning_parser!r}"
            )
        if self.event_loop not in ("asyncio", "uvloop"):
            raise ConfigError(f"{where}.event_loop must be 'asyncio' or 'uvloop', got {self.event_loop!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{where}.port must be in [0, 65535], got {self.port}")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"{where}.http_port must be in [0, 65535], got {self.http_port}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{where}.metrics_port must be in [0, 65535], got {self.metrics_port}")
        if self.grace_period_s < 0:
            raise ConfigError(f"{where}.grace_period_s must be >= 0, got {self.grace_period_s}")
        if self.stall_timeout_s < 0:
            raise ConfigError(f"{where}.stall_timeout_s must be >= 0, got {self.stall_timeout_s}")
        for i, scoped in enumerate(self.scoped_api_keys):
            if not scoped.key:
                raise ConfigError(f"{where}.scoped_api_keys[{i}].key must not be empty")
        if any(not key for key in self.api_keys):
            raise ConfigError(f"{where}.api_keys must not hold an empty key")
        self.tls.validate(f"{where}.tls")


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)

    def validated(self) -> GatewayConfig:
        self.server.validate("server")
        self.limits.validate("limits")
        self.admission.validate("admission")
        self.executor.lora.validate("executor.lora")
        self.executor.speculative.validate("executor.speculative")
        return self


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or JSON (.json) config file into a plain mapping."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table at the top level")
    return data


def from_mapping(data: Mapping[str, Any]) -> GatewayConfig:
    """Build and validate a GatewayConfig from nested mappings (a parsed file merged with CLI overrides)."""
    return _build(GatewayConfig, data, "").validated()


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into `base` (CLI flags over the config file)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in ("options", "adapters"):
            out[key] = merge(out[key], value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])}; known keys: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
