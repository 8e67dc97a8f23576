"""uvicorn, in the gateway's process and on its event loop, serving the OpenAI routes on their own port.

The socket is bound here (a taken port fails with OSError at start-up, like the gRPC port) and handed to uvicorn,
whose own signal handling is left out: the gateway's SIGTERM handler owns the shutdown order (health NOT_SERVING ->
refuse new requests -> drain -> executor shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import uvicorn

from trt_gateway.config import ServerConfig
from trt_gateway.openai_api.routes import build_app
from trt_gateway.server.gateway import Gateway

log = logging.getLogger("trt_gateway.openai")


class HttpServer:
    def __init__(self, gateway: Gateway, config: ServerConfig) -> None:
        self._config = config
        tls = config.tls
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                build_app(gateway),
                lifespan="off",
                log_level="warning",
                access_log=False,  # request lines could carry user data in query strings; metrics count requests
                ssl_certfile=tls.cert_file or None,
                ssl_keyfile=tls.key_file or None,
                ssl_ca_certs=tls.client_ca_file or None,
                ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
            )
        )
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and start accepting. Returns the bound port."""
        cfg = self._config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it every response
        # written in two parts (headers, then body) waits out the client's delayed ACK: +40 ms per request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.bind((cfg.host, cfg.http_port))  # no SO_REUSEPORT: a second server on a taken port must fail
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {cfg.host}:{cfg.http_port} for HTTP: {exc.strerror}") from exc
        sock.listen(2048)
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = self._uvicorn
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[sock])
        self._ticker = asyncio.create_task(server.main_loop())  # keeps the Date header fresh; ends on should_exit
        log.info("OpenAI-compatible HTTP on %s:%d", cfg.host, self.port)
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let open responses finish within `grace_s`, then cancel them. Safe to call twice."""
        if self._socket is None:
            return
        server, sock, self._socket = self._uvicorn, self._socket, None
        server.config.timeout_graceful_shutdown = max(int(grace_s), 1)
        server.should_exit = True
        if self._ticker is not None:
            await self._ticker
        await server.shutdown(sockets=[sock])
