"""The one gRPC server a process runs, whatever services it hosts.

Built once with its interceptors (metrics outermost, so every refusal is counted with its code;
then decoding, authentication and admission), grpc.health.v1 and server reflection; services
register their servicers on it. On SIGTERM the health status turns NOT_SERVING first (load
balancers stop sending), in-flight RPCs get `shutdown_grace_s` to finish, then the server stops.

A loopback address may serve without keys or TLS (the single-process demo); any other address
needs both, or `server.auth.allow_insecure`, which is logged loudly.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.config import ServerCfg
from services.decoding import CORE_LIMIT_FACTOR, DecodingInterceptor
from services.metrics import MetricsInterceptor
from services.security.admission import AdmissionInterceptor, pool_size
from services.security.auth import AuthInterceptor
from services.security.keys import KeyRing
from services.security.tls import server_credentials

log = logging.getLogger(__name__)

OVERALL = ""
"""The health service name that stands for the whole server (readiness)."""
LIVENESS = "liveness"
"""SERVING while the process runs, whatever its dependencies do (liveness probes)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(cfg: ServerCfg) -> None:
    """Refuse to serve a reachable address without keys and TLS, unless told to (loudly)."""
    if is_loopback(cfg.host):
        return
    missing = [
        what
        for what, there in (("API keys (server.auth.keys_file)", cfg.auth.keys_file),
                            ("TLS (server.tls.cert_file)", cfg.tls.cert_file))
        if there is None
    ]  # fmt: skip
    if not missing:
        return
    if not cfg.auth.allow_insecure:
        raise ValueError(
            f"server.host {cfg.host} is not a loopback address and there is no "
            f"{' and no '.join(missing)}: configure them, or set server.auth.allow_insecure "
            "when something in front of this server authenticates and encrypts"
        )
    for what in missing:
        log.warning("INSECURE: serving %s without %s (server.auth.allow_insecure)", cfg.host, what)


class GrpcServer:
    def __init__(self, cfg: ServerCfg) -> None:
        check_exposure(cfg)
        self.cfg = cfg
        limit = cfg.max_message_mb << 20
        self.keys = KeyRing(cfg.auth.keys_file) if cfg.auth.keys_file is not None else None
        interceptors: list[grpc.ServerInterceptor] = [
            MetricsInterceptor(),
            DecodingInterceptor(limit),
        ]
        if self.keys is not None:
            interceptors.append(
                AuthInterceptor(self.keys, cfg.limits.default_rate_per_s, cfg.limits.default_burst)
            )
        interceptors.append(AdmissionInterceptor(cfg.limits))
        workers = pool_size(cfg.limits)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit * CORE_LIMIT_FACTOR),
                ("grpc.max_send_message_length", limit),
            ],
            # a backstop past the admission limits: nothing ever waits for a thread
            maximum_concurrent_rpcs=workers,
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._services: list[str] = []
        address = f"{cfg.host}:{cfg.grpc_port}"
        if cfg.tls.enabled:
            self.port = self.server.add_secure_port(address, server_credentials(cfg.tls))
        else:
            self.port = self.server.add_insecure_port(address)
        self.health_server: grpc.Server | None = None
        self.health_port: int | None = None
        if cfg.health_port is not None:
            self.health_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
                maximum_concurrent_rpcs=16,
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{cfg.host}:{cfg.health_port}")
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def add_service(self, full_name: str) -> None:
        """Record a registered service for health and reflection."""
        self._services.append(full_name)

    def set_serving(self, serving: bool, services: Iterable[str] | None = None) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [OVERALL, *(services if services is not None else self._services)]:
            self.health.set(name, status)

    def start(self) -> None:
        if self.cfg.auth.reflection != "off":
            reflection.enable_server_reflection(
                [*self._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME],
                self.server,
            )  # fmt: skip
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.set_serving(True)
        log.info("gRPC on %s serving %s", self.address, ", ".join(self._services))

    def stop(self, grace: float | None = None) -> None:
        """Graceful: NOT_SERVING, drain in-flight RPCs for the grace period, stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.cfg.shutdown_grace_s if grace is None else grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0)

    def wait(self) -> None:
        self.server.wait_for_termination()
