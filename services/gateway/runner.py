"""The gateway as a module of the process: uvicorn on its own thread, channels to gRPC.

The request body is bounded before it is read (Content-Length, then the bytes as they arrive),
so a client cannot make the gateway buffer more than `gateway.max_body_bytes`. The upstream
channels carry no key of their own: each call carries its caller's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
import time
from typing import Any

import grpc
import uvicorn

from services.config import Settings
from services.gateway.app import Upstream, create_app
from services.gateway.errors import error_response
from services.server import is_loopback
from teran_client.channels import ChannelSecurity, open_channel
from teran_client.client import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)
DEFAULT_PORT = 8080
START_TIMEOUT_S = 20.0

Scope = dict[str, Any]
Receive = Any
Send = Any


class BodyLimit:
    """ASGI middleware: 413 for a body past `limit` bytes, before the app reads any of it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        response = error_response(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"body: {size} bytes, more than gateway.max_body_bytes ({self.limit} bytes)",
            "body",
            413,
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send, length.decode())
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await self._refuse(scope, receive, send, f"over {self.limit}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)


def gateway_port(settings: Settings) -> int:
    """The configured port; unset: 8080, or a free one when gRPC takes a free one too."""
    if settings.gateway.port is not None:
        return settings.gateway.port
    return 0 if settings.server.grpc_port == 0 else DEFAULT_PORT


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with proto IPPROTO_TCP, because asyncio sets TCP_NODELAY
    only on connections whose socket says so (socket.create_server's says 0). Without it, a
    keep-alive response's body waited for the client's delayed ACK of its headers: 40 ms on
    every request after a connection's first (benchmarks/bench_gateway.py found it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def check_gateway_exposure(settings: Settings) -> None:
    cfg = settings.gateway
    if is_loopback(cfg.host) or cfg.tls_cert_file is not None:
        return
    if not settings.server.auth.allow_insecure:
        raise ValueError(
            f"gateway.host {cfg.host} is not a loopback address and there is no TLS "
            "(gateway.tls_cert_file): configure it, or set server.auth.allow_insecure when "
            "something in front of the gateway encrypts"
        )
    log.warning("INSECURE: gateway on %s without TLS (server.auth.allow_insecure)", cfg.host)


class Gateway:
    """A started gateway: its URL, and `close()` to stop serving and close the channels."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str,
                 channels: list[grpc.Channel]) -> None:  # fmt: skip
        self.server = server
        self.thread = thread
        self.url = url
        self.channels = channels

    @classmethod
    def start(
        cls, settings: Settings, own_address: str | None, security: ChannelSecurity
    ) -> Gateway:
        """Serve on gateway.host/port, calling `gateway.upstream` (or `own_address`)."""
        cfg = settings.gateway
        check_gateway_exposure(settings)
        security = dataclasses.replace(security, api_key=None)  # callers' own keys only
        ranker_address = cfg.upstream or own_address
        if ranker_address is None:
            raise ValueError("gateway.upstream is not set and this process serves no gRPC API")
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        ranker = open_channel(ranker_address, security, options=options)
        images = ranker
        if cfg.image_upstream and cfg.image_upstream != ranker_address:
            images = open_channel(cfg.image_upstream, security, options=options)
        channels = list({id(c): c for c in (ranker, images)}.values())
        app = BodyLimit(
            create_app(Upstream(ranker, images, cfg.timeout_s), cfg.max_upload_bytes),
            cfg.max_body_bytes,
        )
        sock = listen(cfg.host, gateway_port(settings))
        tls: dict[str, Any] = {}
        if cfg.tls_cert_file is not None:
            tls = {"ssl_certfile": str(cfg.tls_cert_file), "ssl_keyfile": str(cfg.tls_key_file)}
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="gateway", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the gateway did not start on {cfg.host}")
            time.sleep(0.02)
        port = sock.getsockname()[1]
        scheme = "https" if tls else "http"
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        url = f"{scheme}://{host}:{port}"
        log.info("gateway on %s (gRPC at %s)", url, ranker_address)
        return cls(server, thread, url, channels)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        for channel in self.channels:
            channel.close()
