"""Build, run and stop the gateway server.

Start-up order: listen first (health answers NOT_SERVING and RPCs get UNAVAILABLE while models load), start the
executor, preload adapters, then flip health to SERVING. Shutdown order (the drain): health NOT_SERVING -> refuse
new requests with UNAVAILABLE -> let in-flight and queued requests finish within the grace period -> end the rest
(a final ERROR chunk, then UNAVAILABLE) -> close the ports -> executor shutdown. The ports stay open through the drain,
so a probe sees NOT_SERVING (HTTP /health 503) instead of a refused connection, and a client retrying gets a clear
UNAVAILABLE. A second SIGTERM/SIGINT during the drain cuts it short and exits 128 + the signal number. If the executor
dies, health goes NOT_SERVING, in-flight streams end with UNAVAILABLE, and `serve` returns a non-zero exit code for
the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from trt_gateway import adapter_paths
from trt_gateway.config import ConfigError, GatewayConfig, ServerConfig
from trt_gateway.executors import registry
from trt_gateway.executors.base import Executor, Health
from trt_gateway.server.auth import ApiKeyInterceptor
from trt_gateway.server.decoding import add_gateway_servicer
from trt_gateway.server.metrics import Metrics
from trt_gateway.server.servicer import GatewayServicer
from trt_gateway.v1 import gateway_pb2

log = logging.getLogger("trt_gateway.server")

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name  # "trt_gateway.v1.Gateway"
EXIT_ENGINE_DEAD = 3
FLUSH_S = 1.0  # after the drain: how long the ports stay open for the last chunks to be written
FORCE_EXIT_S = 5.0  # after a second signal: exit without further cleanup if stopping takes longer than this
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_health_name(model: str) -> str:
    """The grpc.health.v1 service name of one model: "trt_gateway.v1.Gateway/<model>"."""
    return f"{SERVICE_NAME}/{model}"


def _server_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not silently share it
    ]


def _credentials(cfg: ServerConfig) -> grpc.ServerCredentials:
    tls = cfg.tls
    client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _check_port_free(host: str, port: int, what: str) -> None:
    """Refuse a port in use with one clear line before grpc tries it (grpc's own failure is a C-core log line plus
    "Failed to bind"). Binds as grpc does (SO_REUSEADDR), so a port held only by TIME_WAIT counts as free."""
    if not port:
        return
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return  # grpc reports the bad address itself
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} for {what}: {exc.strerror}") from exc


class GatewayServer:
    def __init__(self, config: GatewayConfig, executor: Executor | None = None) -> None:
        self.config = config
        self.executor = executor if executor is not None else registry.create(config.executor)
        self.metrics = Metrics()
        self.executor.register_metrics(self.metrics.registry)
        self.servicer = GatewayServicer(config, self.executor, self.metrics)
        self.health = health_aio.HealthServicer()
        self.port = 0
        self.engine_died = False
        self._server: grpc.aio.Server | None = None
        self._metrics_server: object | None = None
        self.http: Any = None  # the OpenAI-compatible HTTP server (openai_api/server.py), when configured
        self.http_port = 0
        self._monitor: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._cut_short = asyncio.Event()  # a second signal: the drain ends now

    async def start(self) -> int:
        """Listen, load the executor, go SERVING. Returns the bound port."""
        cfg = self.config.server
        keys = self.servicer.keys
        interceptors = [ApiKeyInterceptor(keys)] if keys.enabled else []
        server = grpc.aio.server(options=_server_options(cfg), interceptors=interceptors)
        add_gateway_servicer(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), server)
        address = f"{cfg.host}:{cfg.port}"
        _check_port_free(cfg.host, cfg.port, "gRPC")
        try:
            self.port = (server.add_secure_port(address, _credentials(cfg)) if cfg.tls.enabled
                         else server.add_insecure_port(address))
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise OSError(f"cannot listen on {address} for gRPC: {exc}") from exc
        if not self.port:
            raise OSError(f"cannot listen on {address}")
        await self._set_health(NOT_SERVING)
        await server.start()
        self._server = server
        self._start_metrics()
        try:
            await self._start_http()
        except BaseException:
            self._server = None
            await server.stop(0)
            self._stop_metrics()
            raise
        log.info("listening on %s:%d (%s), loading executor %r", cfg.host, self.port,
                 "TLS" if cfg.tls.enabled else "plaintext", self.executor.name)
        try:
            await self.executor.start()
            models = list(self.executor.models())
            await self._preload_adapters(models[0].name)
        except BaseException:
            # Not serving and never will: release the port and the metrics endpoint before the error propagates.
            self._server = None
            await server.stop(0)
            await self._stop_http()
            self._stop_metrics()
            await self.executor.shutdown()
            raise
        self.servicer.set_ready(models)
        await self._set_health(SERVING, models=[m.name for m in models])
        self._monitor = asyncio.create_task(self._watch_executor())
        log.info("serving %s", ", ".join(m.name for m in models))
        return self.port

    async def _preload_adapters(self, model: str) -> None:
        lora = self.config.executor.lora
        for name, path in lora.adapters.items():
            adapter_paths.check_name(name, "executor.lora.adapters")
            path = adapter_paths.confine(path, lora.adapter_roots, f"executor.lora.adapters.{name}", relative_to_cwd=True)
            await self.executor.load_adapter(model, name, path)

    async def _start_http(self) -> None:
        if not self.config.server.http:
            return
        from trt_gateway.openai_api.server import HttpServer  # starlette and uvicorn load only when it is on

        self.http = HttpServer(self.servicer.gateway, self.config.server)
        self.http_port = await self.http.start()

    async def _stop_http(self, grace_s: float = 0.0) -> None:
        if self.http is not None:
            await self.http.stop(grace_s)

    def _start_metrics(self) -> None:
        if not self.config.server.metrics_port:
            return
        from prometheus_client import start_http_server

        self._metrics_server, _ = start_http_server(
            self.config.server.metrics_port, addr=self.config.server.host, registry=self.metrics.registry
        )

    async def _set_health(self, status: int, models: list[str] | None = None) -> None:
        for name in ("", SERVICE_NAME, *(model_health_name(m) for m in models or self.servicer.gateway.models)):
            await self.health.set(name, status)

    async def _watch_executor(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.executor.health() is Health.DEAD:
                log.critical("executor %r died; going NOT_SERVING and shutting down", self.executor.name)
                self.engine_died = True
                self.servicer.gateway.draining = True  # HTTP /health: 503
                await self._set_health(NOT_SERVING)
                self._stopped.set()
                return

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown (the drain); safe to call twice."""
        if self._server is None:
            return
        server, self._server = self._server, None
        grace = self.config.server.grace_period_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()  # NOT_SERVING for every service, and it stays so
        log.info("draining: up to %.1fs for %d in-flight request(s); health NOT_SERVING, new requests UNAVAILABLE",
                 grace, len(self.servicer.registry))
        await self.servicer.gateway.drain(grace, self._cut_short)  # ports open: probes get answers
        # Every call has ended (or been ended): the last chunks get FLUSH_S to go out, then what is left (a health
        # Watch, a stream stuck in an executor that ignored its abort) is cancelled by gRPC / uvicorn.
        await asyncio.gather(server.stop(FLUSH_S), self._stop_http(FLUSH_S))
        if self._monitor is not None:
            self._monitor.cancel()
        await self.executor.shutdown()
        self._stop_metrics()
        self._stopped.set()
        log.info("stopped")

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()  # type: ignore[attr-defined]
            self._metrics_server.server_close()  # type: ignore[attr-defined]  # free the port, not just the thread
            self._metrics_server = None

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        """What SIGTERM does: `serve` starts the drain."""
        self._stopped.set()

    def cut_short(self) -> None:
        """End the drain now: requests still running get their shutdown error at once."""
        self._cut_short.set()


class _Signals:
    """SIGTERM/SIGINT: the first drains; a second cuts the drain short (one log line) and `serve` then exits
    128 + its number; if stopping still hangs FORCE_EXIT_S later (an executor that does not shut down), or on a
    third signal, the process exits there and then."""

    def __init__(self, server: GatewayServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.forced: signal.Signals | None = None
        self._timer: asyncio.TimerHandle | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self._server._stopped.is_set():
            log.info("%s: draining", sig.name)
            self._server.request_stop()
        elif self.forced is None:
            self.forced = sig
            log.warning("second %s during the drain: ending it now and exiting with code %d", sig.name, self.code)
            self._server.cut_short()
            self._timer = self._loop.call_later(FORCE_EXIT_S, _exit_now, self.code)
        else:
            _exit_now(self.code)

    @property
    def code(self) -> int:
        return 128 + self.forced if self.forced is not None else 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.remove_signal_handler(sig)


def _exit_now(code: int) -> None:
    logging.shutdown()  # flush the log first: os._exit skips every other cleanup
    os._exit(code)


async def serve(config: GatewayConfig, executor: Executor | None = None) -> int:
    """Run until SIGTERM/SIGINT or executor death. Returns the process exit code."""
    server = GatewayServer(config, executor)
    signals = _Signals(server)  # before start: a signal while the model loads stops the server once it has loaded
    try:
        await server.start()
        await server.wait_stopped()
        await server.stop(1.0 if server.engine_died else None)  # a dead engine has nothing left to drain
    finally:
        signals.close()
    if server.engine_died:
        return EXIT_ENGINE_DEAD
    return signals.code


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `server.event_loop` names; None = asyncio's own. uvloop is optional, never required."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError("server.event_loop = 'uvloop' needs the uvloop package: pip install uvloop") from exc
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(config: GatewayConfig, executor: Executor | None = None) -> int:
    """`serve` on the configured event loop, from synchronous code (the CLI). Returns the process exit code."""
    with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
        return runner.run(serve(config, executor))
