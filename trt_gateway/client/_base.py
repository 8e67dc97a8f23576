"""The sans-I/O core shared by `GatewayClient` and `AsyncGatewayClient`.

Everything here is pure: options and channel settings, the retry policy and deadline, status -> exception mapping,
and the shared client shell; `_convert` holds request building and response conversion. The two clients only add
the I/O (a sync or an aio channel, `tenacity.Retrying` or `tenacity.AsyncRetrying`), so their behaviour cannot drift
apart.
"""

from __future__ import annotations

import ipaddress
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import tenacity

from trt_gateway import errors

Metadata = Sequence[tuple[str, str]]
CallMetadata = Metadata | Mapping[str, str] | None  # the per-call `metadata` argument
PemSource = bytes | str | os.PathLike[str]  # PEM bytes, PEM text, or a file path

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's default too


# -- options -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientOptions:
    """Validated once when a client is built; every error names the option."""

    timeout: float | None = None  # default per-call deadline in seconds (covers retries); None = no deadline
    max_retries: int = 3  # retries of UNAVAILABLE / RESOURCE_EXHAUSTED before the first token
    api_key: str | None = None  # sent as "authorization: Bearer <key>"
    tls: bool = False  # on by itself when any certificate option is set
    root_certificates: PemSource | None = None  # CA bundle; None with TLS = the system roots
    client_certificate: PemSource | None = None  # mTLS: certificate chain, with client_key
    client_key: PemSource | None = None
    server_name_override: str | None = None  # TLS name to check instead of the target's host (tests, IP targets)
    metadata: Metadata = ()  # sent with every call
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive_time_s: float = 30.0  # ping an idle connection this often while calls are open
    keepalive_timeout_s: float = 10.0
    channel_options: Sequence[tuple[str, Any]] = ()  # raw grpc channel arguments, appended last (they win)
    # "round_robin" spreads calls over every address the target resolves to (several gateways behind one DNS name,
    # or a list of targets); None keeps gRPC's default (pick_first).
    load_balancing: str | None = None
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("client_certificate and client_key must be given together (mTLS)")
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1, got {self.max_message_bytes!r}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoff must satisfy 0 < initial_backoff_s <= max_backoff_s")

    @property
    def secure(self) -> bool:
        return self.tls or any(
            v is not None for v in (self.root_certificates, self.client_certificate, self.server_name_override)
        )

    def grpc_options(self) -> list[tuple[str, Any]]:
        opts: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
        ]
        if self.server_name_override:
            opts.append(("grpc.ssl_target_name_override", self.server_name_override))
        if self.load_balancing:
            opts.append(("grpc.lb_policy_name", self.load_balancing))
        return opts + list(self.channel_options)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (the same object serves sync and aio channels), or None for plaintext."""
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates, "root_certificates"),
            private_key=_pem(self.client_key, "client_key"),
            certificate_chain=_pem(self.client_certificate, "client_certificate"),
        )

    def call_metadata(self, extra: CallMetadata) -> tuple[tuple[str, str], ...]:
        md = list(self.metadata)
        if self.api_key:
            md.append(("authorization", f"Bearer {self.api_key}"))
        if extra:
            md.extend(extra.items() if isinstance(extra, Mapping) else extra)
        return tuple(md)


def _pem(source: PemSource | None, option: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ValueError(f"{option}: cannot read {source}: {exc.strerror}") from exc


# -- deadlines and retries -----------------------------------------------------------------------------------------


class Deadline:
    """One absolute deadline for a whole call, retries and backoff included."""

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def attempt_timeout(self) -> float | None:
        """The gRPC timeout for the next attempt; an expired deadline still gets a tiny positive one, so the
        server's DEADLINE_EXCEEDED (not a client-side exception) is what the caller sees."""
        left = self.remaining()
        return None if left is None else max(left, 0.001)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry UNAVAILABLE and RESOURCE_EXHAUSTED (the errors whose class says `retryable`), at most `max_retries`
    times, never past the deadline. Callers only wrap work done before the first token reached the user, so no
    output is ever produced twice."""

    max_retries: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    rand: Callable[[], float] = field(default=random.random, repr=False)  # uniform in [0, 1)

    def should_retry(self, exc: BaseException) -> bool:
        return isinstance(exc, errors.GatewayError) and exc.retryable

    def backoff_s(self, attempt: int, exc: BaseException | None) -> float:
        """Exponential backoff with equal jitter; the server's retry-after hint is a floor."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        wait = base * (0.5 + 0.5 * self.rand())
        hint = exc.retry_after_s if isinstance(exc, errors.GatewayError) else None
        return max(wait, hint) if hint else wait

    def should_stop(self, attempt: int, upcoming_sleep: float, deadline: Deadline) -> bool:
        """`attempt` calls were made; stop when retries are spent or the wait would outlast the deadline."""
        if attempt > self.max_retries:
            return True
        left = deadline.remaining()
        return left is not None and left <= upcoming_sleep

    def tenacity_kwargs(self, deadline: Deadline) -> dict[str, Any]:
        """Arguments for `tenacity.Retrying` / `tenacity.AsyncRetrying`; the last error is re-raised as is."""

        def wait(rs: tenacity.RetryCallState) -> float:
            return self.backoff_s(rs.attempt_number, rs.outcome.exception() if rs.outcome else None)

        def stop(rs: tenacity.RetryCallState) -> bool:
            return self.should_stop(rs.attempt_number, rs.upcoming_sleep, deadline)

        return {"retry": tenacity.retry_if_exception(self.should_retry), "wait": wait, "stop": stop, "reraise": True}


def replay_first(exc: BaseException) -> Callable[[], None]:
    """A callable that raises `exc` on its first call and does nothing after. The clients run a call's first attempt
    outside tenacity (its machinery is most of a short call's client-side cost) and, when that attempt failed with a
    retryable error, hand tenacity an attempt function that starts with this replay, so tenacity counts the first
    failure exactly as if it had made that attempt itself."""
    pending: list[BaseException] = [exc]

    def replay() -> None:
        if pending:
            raise pending.pop()

    return replay


def error_from_rpc(exc: grpc.RpcError) -> errors.GatewayError:
    """Turn a received status (sync `RpcError` or `AioRpcError`) into the typed error of the one table."""
    call = cast(grpc.Call, exc)
    metadata = cast("Sequence[tuple[str, str | bytes]]", tuple(call.trailing_metadata() or ()))
    return errors.from_status(call.code(), call.details(), metadata)


# -- the shared client shell ---------------------------------------------------------------------------------------


def _channel_target(target: str | Sequence[str]) -> tuple[str, bool]:
    """One gRPC target string, and whether it names several addresses."""
    if isinstance(target, str):
        return target, False
    addresses = list(target)
    if not addresses:
        raise ValueError("target: give at least one address")
    if len(addresses) == 1:
        return addresses[0], False
    # gRPC's static address list ("ipv4:a:p,b:p") takes IP literals only; several hosts by name need one DNS name.
    try:
        for address in addresses:
            host, _, port = address.rpartition(":")
            ipaddress.IPv4Address(host)
            int(port)
    except ValueError as exc:
        raise ValueError(
            f"target: a list must hold 'ipv4:port' addresses (got {address!r}); for host names use one DNS name "
            "that resolves to every gateway, e.g. 'dns:///gateways.internal:50051' with load_balancing='round_robin'"
        ) from exc
    return "ipv4:" + ",".join(addresses), True


class BaseClient:
    """Options and per-call plumbing; `GatewayClient` and `AsyncGatewayClient` add the channel."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = None,
        max_retries: int = 3,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        server_name_override: str | None = None,
        metadata: CallMetadata = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_time_s: float = 30.0,
        keepalive_timeout_s: float = 10.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        load_balancing: str | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        """`target` is "host:port" (or any gRPC target, e.g. "dns:///gateways.internal:50051"), or a list of
        "ip:port" addresses to balance over round-robin. Pass `options` to reuse a prepared ClientOptions; it
        replaces the keywords."""
        self.target, several = _channel_target(target)
        if several and load_balancing is None:
            load_balancing = "round_robin"
        self.options = options or ClientOptions(
            timeout=timeout,
            max_retries=max_retries,
            api_key=api_key,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            server_name_override=server_name_override,
            metadata=tuple(metadata.items() if isinstance(metadata, Mapping) else metadata or ()),
            max_message_bytes=max_message_bytes,
            keepalive_time_s=keepalive_time_s,
            keepalive_timeout_s=keepalive_timeout_s,
            channel_options=tuple(channel_options),
            load_balancing=load_balancing,
        )
        o = self.options
        self.retry_policy = RetryPolicy(o.max_retries, o.initial_backoff_s, o.max_backoff_s)
        self._connect()

    def _connect(self) -> None:
        """Create the channel and stubs (sync or aio)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(timeout if timeout is not None else self.options.timeout)

    def _metadata(self, extra: CallMetadata) -> tuple[tuple[str, str], ...]:
        return self.options.call_metadata(extra)
