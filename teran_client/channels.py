"""Channels to a TERAN server: TLS (optionally with a client certificate, mTLS) and an API key
sent as `authorization: Bearer <key>` metadata on every call.

The key travels as metadata through a client interceptor rather than call credentials, so the
same code serves a TLS channel and the plaintext loopback of a single-process demo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc


@dataclass(frozen=True)
class ChannelSecurity:
    api_key: str | None = None
    tls: bool = False
    """Use TLS; implied by any of the files below."""
    ca_file: Path | None = None
    """PEM roots that signed the server's certificate (None: the system's roots)."""
    cert_file: Path | None = None
    """This client's certificate and key, for servers that require mTLS."""
    key_file: Path | None = None
    server_name: str | None = None
    """The name the server's certificate must carry, when it is not the address's host."""

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.ca_file, self.cert_file))

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class _BearerKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, key: str) -> None:
        self.header = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )  # fmt: skip

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


def open_channel(
    address: str,
    security: ChannelSecurity | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    security = security or ChannelSecurity()
    opts = list(options)
    if security.server_name:
        opts.append(("grpc.ssl_target_name_override", security.server_name))
    channel = (
        grpc.secure_channel(address, security.credentials(), options=opts)
        if security.uses_tls
        else grpc.insecure_channel(address, options=opts)
    )
    if security.api_key:
        return grpc.intercept_channel(channel, _BearerKey(security.api_key))
    return channel
